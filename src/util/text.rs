//! Text for people: what comes from places an attacker can write (object names in the store,
//! what a peer answers), made safe to print on a terminal or into a log line; sizes.

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

/// A size in bytes for people, in binary units: "1.2 GiB", "512 MiB", "64 KiB".
pub(crate) fn size_text(b: u64) -> String {
    let f = b as f64;
    if b >= 1 << 30 {
        format!("{:.1} GiB", f / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.0} MiB", f / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", f / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(super::size_text(3 << 29), "1.5 GiB");
        assert_eq!(super::size_text(200 << 20), "200 MiB");
        assert_eq!(super::size_text(2048), "2 KiB");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::printable("a\x1b[2Jb\nc", 100), "a\\u{1b}[2Jb\\nc");
        assert_eq!(super::printable("abcdef", 3), "abc…");
    }
}
