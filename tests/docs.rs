//! The documentation an operator reads: a README short enough to find things in, links that lead
//! somewhere, and a configuration reference that names every key the binary accepts (and none it
//! refuses). Reads the files only; no lab.

use etcd_bootstrap::config::raw::{FLAGS_KEY, KEYS};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Lines outside ``` fences.
fn prose(text: &str) -> Vec<&str> {
    let mut inside = false;
    text.lines()
        .filter(|l| {
            if l.starts_with("```") {
                inside = !inside;
                return false;
            }
            !inside
        })
        .collect()
}

/// The anchors GitHub gives a file's headings: lower case, punctuation other than `-` and `_`
/// dropped, spaces to `-`.
fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .iter()
        .filter_map(|l| {
            let title = l.trim_start_matches('#');
            (title.len() < l.len() && title.starts_with(' ')).then(|| {
                title
                    .trim()
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect()
            })
        })
        .collect()
}

/// Every `](target)` of a file's prose.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    out
}

#[test]
fn the_readme_is_short_and_points_into_docs() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 400,
        "README.md has {lines} lines: keep it at 400 at most, and put the topic in docs/"
    );
    for section in [
        "## Contents",
        "## Quick start: the demo",
        "## Getting the binary",
        "## Booting a fleet",
        "## Commands",
        "## Configuration",
        "## Tests",
        "## Layout",
    ] {
        assert!(
            readme.lines().any(|l| l == section),
            "README.md has no {section:?} section"
        );
    }
    // Every port a member must open is named where a fleet is booted: a firewall made from that
    // section alone must let a cluster form (the agent port 2378 was once only in a config comment).
    let boot = readme
        .split("## Booting a fleet")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    for port in ["2379", "2380", "2378"] {
        assert!(
            boot.contains(port),
            "\"Booting a fleet\" does not name port {port}"
        );
    }
    // Every page of docs/ is reachable from the README.
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .filter_map(|l| l.split('#').next().map(str::to_string))
        .collect();
    for file in markdown_files().iter().skip(1) {
        let rel = file.strip_prefix(repo()).unwrap().display().to_string();
        assert!(
            linked.contains(&rel),
            "README.md does not link {rel}: nobody will find it"
        );
    }
}

#[test]
fn every_link_between_the_docs_leads_somewhere() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = fs::read_to_string(&file).unwrap();
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap_or(Path::new(".")).join(path)
            };
            if !dest.exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
                continue;
            }
            if !anchor.is_empty() {
                let dest_text = fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&dest_text).contains(anchor) {
                    broken.push(format!("{}: {target}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_configuration_reference_names_every_key_and_only_those() {
    let text = fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    let table = text
        .split("\n## Every key\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/configuration.md has no \"## Every key\" section");
    let documented: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |").map(|(k, _)| k.to_string()))
        .collect();
    let accepted: BTreeSet<String> = KEYS
        .iter()
        .map(|(s, k, _)| format!("{s}.{k}"))
        .chain([format!("{}.{}", FLAGS_KEY.0, FLAGS_KEY.1)])
        .collect();
    let missing: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md's table and the schema (src/config/raw.rs KEYS) differ:\n\
         accepted but not documented: {missing:?}\ndocumented but refused: {unknown:?}"
    );
}
