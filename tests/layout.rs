//! The layering of `src/`: every import points down. The order is the one written in the README's
//! "Layout" section (its `text` block: `a -> b, c -> d`, top to bottom, `,` for folders side by
//! side, plus a `leaves:` line); this test reads it from there, so the README and the check cannot
//! drift apart. It scans every `src/**/*.rs` for references into another top-level module
//! (`crate::x::…`, `use crate::{x::…, y::…}`, `super::super::…` that climbs out of its folder,
//! `etcd_bootstrap::x` in main.rs) and fails naming file:line and the arrow when one goes up, goes
//! sideways to a folder on the same layer, or leaves a leaf. A circle between folders always needs
//! such an arrow; `no_circle_between_folders` names any circle on its own, from the imports alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layer order: each top-level module's rank (0 = top) and the leaves.
#[derive(Debug)]
struct Order {
    rank: BTreeMap<String, usize>,
    leaves: BTreeSet<String>,
}

/// Reads the first ```text block of the README's "## Layout" section.
fn parse_order(readme: &str) -> Order {
    let section = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("README.md has no \"## Layout\" section");
    let section = section.split("\n## ").next().unwrap();
    let block = section
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the README's Layout section has no ```text block with the layer order");
    let mut rank = BTreeMap::new();
    let mut leaves = BTreeSet::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("leaves:") {
            leaves.extend(rest.split(',').map(|s| s.trim().to_string()));
        } else {
            assert!(
                rank.is_empty(),
                "two layer-order lines in the README: {line}"
            );
            for (i, layer) in line.split("->").enumerate() {
                for name in layer.split(',').map(str::trim) {
                    assert!(
                        rank.insert(name.to_string(), i).is_none(),
                        "{name} twice in the layer order"
                    );
                }
            }
        }
    }
    assert!(
        !rank.is_empty(),
        "no layer order in the README's Layout block"
    );
    Order { rank, leaves }
}

/// One reference from a file into a top-level module.
#[derive(Debug, PartialEq)]
struct Ref {
    line: usize,
    target: String,
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s.bytes().position(|c| !is_ident(c)).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named right after a path prefix that reached the crate root: either
/// `x::…` / `x` or a group `{x::…, y::{…}, …}`.
fn roots_after(rest: &str) -> Vec<String> {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut items = vec![String::new()];
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(String::new());
                    continue;
                }
                _ => {}
            }
            items.last_mut().unwrap().push(c);
        }
        items
            .iter()
            .map(|i| ident(i.trim()).to_string())
            .filter(|i| !i.is_empty() && i != "self")
            .collect()
    } else {
        vec![ident(rest).to_string()]
    }
}

/// The module path of a file under src/ (`tls/files.rs` -> [tls, files], `tls/mod.rs` -> [tls]).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.strip_suffix(".rs").unwrap();
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    } else if stem == "main" {
        parts.push("main".to_string());
    }
    parts
}

/// Every reference in `text` (a file whose module path is `path`) into a top-level module, as
/// (line, top). Comment lines are skipped; inline `mod x {` blocks (rustfmt closes them at the
/// same indent) count for `super::`.
fn references(text: &str, path: &[String]) -> Vec<Ref> {
    // The code with comment lines blanked, and for each line the depth of inline modules.
    let mut code = String::new();
    let mut depth_at = Vec::new();
    let mut open: Vec<String> = Vec::new(); // the indent of each open inline module
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if open.last().is_some_and(|i| i == indent) && trimmed.starts_with('}') {
            open.pop();
        }
        depth_at.push(open.len());
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let is_mod = words.len() >= 3
            && words[words.len() - 1] == "{"
            && words[words.len() - 3] == "mod"
            && words[..words.len() - 3]
                .iter()
                .all(|w| w.starts_with("pub") || w.starts_with("#["));
        if is_mod {
            open.push(indent.to_string());
        }
        if !trimmed.starts_with("//") {
            code.push_str(line);
        }
        code.push('\n');
    }
    let line_of = |at: usize| code[..at].bytes().filter(|&b| b == b'\n').count() + 1;
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut push = |at: usize, rest: &str| {
        let line = line_of(at);
        for target in roots_after(rest) {
            out.push(Ref { line, target });
        }
    };
    // A path starts here: not in the middle of a name or a path (a leading `::` is allowed).
    let starts_path = |at: usize| {
        let at = if code[..at].ends_with("::") {
            at - 2
        } else {
            at
        };
        at == 0 || !(is_ident(bytes[at - 1]) || bytes[at - 1] == b':')
    };
    for prefix in ["crate::", "etcd_bootstrap::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(prefix) {
            let at = from + i;
            from = at + prefix.len();
            if starts_path(at) && (at == 0 || bytes[at - 1] != b'$') {
                push(at, &code[from..]);
            }
        }
    }
    let mut from = 0;
    while let Some(i) = code[from..].find("super::") {
        let at = from + i;
        let mut end = at;
        let mut hops = 0;
        while code[end..].starts_with("super::") {
            hops += 1;
            end += "super::".len();
        }
        from = end;
        if !starts_path(at) {
            continue;
        }
        let depth = path.len() + depth_at[line_of(at) - 1];
        if hops >= depth {
            push(at, &code[end..]);
        }
    }
    out.sort_by_key(|r| r.line);
    out
}

/// Every .rs file under `dir`, relative to `root`.
fn rust_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(root, &p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p.strip_prefix(root).unwrap().to_path_buf());
        }
    }
}

/// (file, line, from, to) for every reference from one top-level module into another.
fn cross_references() -> Vec<(String, usize, String, String)> {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for rel in files {
        let path = module_path(&rel);
        let Some(from) = path.first().cloned() else {
            continue; // lib.rs: the crate root only declares the modules
        };
        let text = fs::read_to_string(src.join(&rel)).unwrap();
        for r in references(&text, &path) {
            if r.target != from {
                let file = format!("src/{}", rel.display());
                out.push((file, r.line, from.clone(), r.target));
            }
        }
    }
    out
}

/// Why an arrow `from -> to` breaks the order, if it does.
fn violation(order: &Order, from: &str, to: &str) -> Option<String> {
    if order.leaves.contains(to) {
        return None;
    }
    if order.leaves.contains(from) {
        return Some(format!("the leaf {from} imports {to}"));
    }
    let (Some(&f), Some(&t)) = (order.rank.get(from), order.rank.get(to)) else {
        let missing = if order.rank.contains_key(from) {
            to
        } else {
            from
        };
        return Some(format!("{missing} is not in the README's layer order"));
    };
    match f.cmp(&t) {
        std::cmp::Ordering::Less => None,
        std::cmp::Ordering::Equal => Some(format!("{to} is side by side with {from}")),
        std::cmp::Ordering::Greater => Some(format!("up: {to} is above {from}")),
    }
}

#[test]
fn every_import_points_down() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let order = parse_order(&readme);
    let mut bad = Vec::new();
    for (file, line, from, to) in cross_references() {
        if let Some(why) = violation(&order, &from, &to) {
            bad.push(format!("{file}:{line}: {from} -> {to} ({why})"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} import(s) against the layer order of the README's Layout section:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn every_module_is_in_the_order() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let order = parse_order(&readme);
    let lib = fs::read_to_string(repo().join("src/lib.rs")).unwrap();
    let mut modules: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))
        })
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    modules.insert("main".to_string());
    let known: BTreeSet<String> = order.rank.keys().chain(&order.leaves).cloned().collect();
    let missing: Vec<_> = modules.difference(&known).collect();
    let stale: Vec<_> = known.difference(&modules).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "the README's layer order and src/ differ: not in the order {missing:?}, not in src {stale:?}"
    );
}

#[test]
fn no_circle_between_folders() {
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (file, line, from, to) in cross_references() {
        graph
            .entry(from)
            .or_default()
            .entry(to)
            .or_insert(format!("{file}:{line}"));
    }
    // Depth-first search; a back edge closes a circle, reported with one import per arrow.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        stack.push(node.to_string());
        for (next, at) in graph.get(node).into_iter().flatten() {
            if let Some(i) = stack.iter().position(|s| s == next) {
                let mut ring: Vec<String> = stack[i..].to_vec();
                ring.push(next.clone());
                circles.push(format!("{} (closed by {at})", ring.join(" -> ")));
            } else if !done.contains(next) {
                visit(next, graph, stack, done, circles);
            }
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if !done.contains(node) {
            visit(node, &graph, &mut Vec::new(), &mut done, &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "circle(s) between top-level modules:\n{}",
        circles.join("\n")
    );
}

// The scanner itself, on made-up sources, so that a blind scanner cannot pass the tests above.

fn targets(text: &str, path: &[&str]) -> Vec<(usize, String)> {
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    references(text, &path)
        .into_iter()
        .map(|r| (r.line, r.target))
        .collect()
}

#[test]
fn scanner_finds_every_form_of_reference() {
    let text = "\
use crate::config::Config;
use crate::{
    tls::TlsPaths,
    discovery::{self, Source},
};
// use crate::agent::Ignored;
fn f() -> crate::etcd::X { $crate::ignored(); not_crate::x(); }
use super::super::backup::Thing;
use super::sibling;
#[cfg(test)]
mod tests {
    use super::super::sibling;
    use super::super::super::{model::Peer, util};
}
";
    assert_eq!(
        targets(text, &["decide", "doctor"]),
        vec![
            (1, "config".to_string()),
            (2, "tls".to_string()),
            (2, "discovery".to_string()),
            (7, "etcd".to_string()),
            (8, "backup".to_string()),
            (13, "model".to_string()),
            (13, "util".to_string()),
        ]
    );
    // From a top-level file one `super::` is the crate root.
    assert_eq!(
        targets("use super::tls::x;\n", &["cli"]),
        vec![(1, "tls".to_string())]
    );
    assert_eq!(
        targets(
            "etcd_bootstrap::cli::main()\n::etcd_bootstrap::cli::x\n",
            &["main"]
        ),
        vec![(1, "cli".to_string()), (2, "cli".to_string())]
    );
}

#[test]
fn order_rules() {
    let order =
        parse_order("x\n## Layout\n\ntext\n\n```text\na -> b, c -> d\nleaves: e\n```\n\n## Next\n");
    assert_eq!(violation(&order, "a", "d"), None);
    assert_eq!(violation(&order, "b", "e"), None);
    assert!(violation(&order, "d", "a").unwrap().starts_with("up"));
    assert!(violation(&order, "b", "c")
        .unwrap()
        .contains("side by side"));
    assert!(violation(&order, "e", "d").unwrap().contains("leaf"));
    assert!(violation(&order, "a", "z").unwrap().contains("not in"));
    assert_eq!(module_path(Path::new("tls/mod.rs")), vec!["tls"]);
    assert_eq!(
        module_path(Path::new("agent/metrics/server.rs")),
        vec!["agent", "metrics", "server"]
    );
    assert_eq!(module_path(Path::new("cli.rs")), vec!["cli"]);
}

// ---------------------------------------------------------------------------------------------
// Small rooms: no production file over MAX_FILE_LINES lines and no production function over
// MAX_FN_LINES. "Production" is a file's text before its inline `#[cfg(test)] mod … {` (table
// tests stay beside the code they specify and do not count); a file that its folder declares
// under `#[cfg(test)]` (shared test fixtures) is not production at all.
// ---------------------------------------------------------------------------------------------

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 120;

/// The lines of `text` before its inline test module.
fn production(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    for i in 0..lines.len() {
        let next = lines.get(i + 1).map(|l| l.trim_start()).unwrap_or("");
        let next = next.strip_prefix("pub(crate) ").unwrap_or(next);
        let next = next.strip_prefix("pub(super) ").unwrap_or(next);
        if lines[i].trim() == "#[cfg(test)]" && next.starts_with("mod ") && next.ends_with('{') {
            return lines[..i].to_vec();
        }
    }
    lines
}

/// The modules `text` declares under `#[cfg(test)]` from files of their own (`mod fixtures;`).
fn test_only_modules(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| {
            let d = w[1];
            let d = d.strip_prefix("pub(crate) ").unwrap_or(d);
            let d = d.strip_prefix("pub(super) ").unwrap_or(d);
            d.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(|n| n.trim().to_string())
        })
        .collect()
}

/// Blanks out comments, string and character literals (keeping line breaks), so that braces in
/// them do not count.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            text[i + 2..].find("*/").map_or(rest.len(), |e| e + 4)
        } else if rest.starts_with(b"r#\"") || rest.starts_with(b"r\"") {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let open = 2 + hashes;
            text[i + open..]
                .find(&close)
                .map_or(rest.len(), |e| open + e + close.len())
        } else if rest[0] == b'"' && (i == 0 || !is_ident(b[i - 1])) {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            (j + 1).min(rest.len())
        } else if rest[0] == b'\'' && rest.len() > 2 && (rest[1] == b'\\' || rest[2] == b'\'') {
            // A character literal ('{', '\n', '\''); a lifetime ('a) has no closing quote there.
            let mut j = if rest[1] == b'\\' { 3 } else { 2 };
            while j < rest.len() && rest[j] != b'\'' {
                j += 1;
            }
            (j + 1).min(rest.len())
        } else {
            out.push(rest[0] as char);
            i += 1;
            continue;
        };
        blank(&mut out, &rest[..end]);
        i += end;
    }
    out
}

/// (first line, length in lines, name) of a function.
type Function = (usize, usize, String);

/// Every `fn` with a body in `lines`.
fn functions(lines: &[&str]) -> Vec<Function> {
    let code = code_only(&lines.join("\n"));
    let code: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in code.iter().enumerate() {
        let Some(at) = line.find("fn ").filter(|&at| {
            let before = line[..at].trim_end();
            before.is_empty()
                || before.ends_with(|c: char| c.is_whitespace() || c == ')')
                || ["pub", "async", "const", "unsafe", "extern"]
                    .iter()
                    .any(|k| before.ends_with(k))
        }) else {
            continue;
        };
        let name = ident(&line[at + 3..]).to_string();
        if name.is_empty() {
            continue;
        }
        // Its body: from the first `{` (before any `;`, which ends a declaration) to its match.
        let (mut depth, mut opened) = (0i32, false);
        'lines: for (j, l) in code.iter().enumerate().skip(i) {
            let from = if j == i { at } else { 0 };
            for c in l[from..].chars() {
                match c {
                    ';' if !opened => break 'lines,
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
                if opened && depth == 0 {
                    out.push((i + 1, j - i + 1, name.clone()));
                    break 'lines;
                }
            }
        }
    }
    out
}

/// Per production file: (path, production lines, its functions).
fn production_files() -> Vec<(String, usize, Vec<Function>)> {
    let src = repo().join("src");
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    files.sort();
    let texts: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|rel| (rel.clone(), fs::read_to_string(src.join(rel)).unwrap()))
        .collect();
    let mut test_only = BTreeSet::new();
    for (rel, text) in &texts {
        let dir = match rel.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => rel.parent().unwrap().to_path_buf(),
            _ => rel.with_extension(""),
        };
        for m in test_only_modules(text) {
            test_only.insert(dir.join(format!("{m}.rs")));
            test_only.insert(dir.join(&m).join("mod.rs"));
        }
    }
    texts
        .iter()
        .filter(|(rel, _)| !test_only.contains(*rel))
        .map(|(rel, text)| {
            let lines = production(text);
            (
                format!("src/{}", rel.display()),
                lines.len(),
                functions(&lines),
            )
        })
        .collect()
}

#[test]
fn every_production_file_and_function_is_small() {
    let files = production_files();
    let mut over = Vec::new();
    for (file, lines, fns) in &files {
        if *lines > MAX_FILE_LINES {
            over.push(format!(
                "{file}: {lines} production lines (at most {MAX_FILE_LINES}): split it by job"
            ));
        }
        for (line, len, name) in fns {
            if *len > MAX_FN_LINES {
                over.push(format!(
                    "{file}:{line}: fn {name} is {len} lines (at most {MAX_FN_LINES}): split it into named steps"
                ));
            }
        }
    }
    // The figures the layout is judged by, printed for `cargo test --test layout -- --nocapture`.
    let largest = files.iter().max_by_key(|f| f.1).unwrap();
    let longest = files
        .iter()
        .flat_map(|(f, _, fns)| fns.iter().map(move |g| (g.1, f, &g.2)))
        .max()
        .unwrap();
    println!(
        "{} production files, {} lines; largest {} ({} lines); longest fn {} in {} ({} lines)",
        files.len(),
        files.iter().map(|f| f.1).sum::<usize>(),
        largest.0,
        largest.1,
        longest.2,
        longest.1,
        longest.0
    );
    assert!(over.is_empty(), "rooms too big:\n{}", over.join("\n"));
}

#[test]
fn sizes_are_measured_as_written() {
    let text = "fn a() {\n    let s = \"}\";\n    let c = '{';\n    // }\n    b();\n}\n\
                pub(crate) async fn b<'x>(v: &'x str) -> usize\nwhere\n{\n    v.len()\n}\n\
                fn decl();\nstruct S { f: fn() }\n#[cfg(test)]\nmod tests {\n    fn t() {}\n}\n";
    let lines = production(text);
    assert_eq!(lines.len(), 13, "the inline test module does not count");
    assert_eq!(
        functions(&lines),
        vec![(1, 6, "a".to_string()), (7, 5, "b".to_string())]
    );
    assert_eq!(
        test_only_modules("#[cfg(test)]\npub(crate) mod fixtures;\nmod real;\n"),
        vec!["fixtures"]
    );
}
