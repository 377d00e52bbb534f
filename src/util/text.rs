//! Text from places an attacker can write (object names in the store, what a peer answers),
//! made safe to print on a terminal or into a log line.

/// `s` with every control character (terminal escapes, newlines) written as an escape, and
/// cut to `max` characters.
pub(crate) fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::printable("a\x1b[2Jb\nc", 100), "a\\u{1b}[2Jb\\nc");
        assert_eq!(super::printable("abcdef", 3), "abc…");
    }
}
