//! Reading configuration fragments: the main file, drop-ins in `config.d/` (name order), then
//! `ETCD_BOOTSTRAP_<SECTION>_<KEY>` environment variables. Each fragment is checked against the
//! schema on its own (so an unknown key or a wrong type names the file it is in), then merged key by
//! key, remembering where every key came from for later error messages.

use super::raw::{self, ValueKind};
use crate::error::ConfigError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/etcd-bootstrap/config.toml";
pub(crate) const ENV_PREFIX: &str = "ETCD_BOOTSTRAP_";
/// The most a config file or drop-in may hold: real ones are a few KiB; `--config /dev/zero` or
/// a wrong path must not be read whole.
pub(crate) const CONFIG_LIMIT: u64 = 1 << 20;
/// Variables with our prefix that are not config keys.
const RESERVED_ENV: &[&str] = &["ETCD_BOOTSTRAP_LOG", "ETCD_BOOTSTRAP_FAILPOINT"];

/// The merged, schema-checked configuration and where each `section.key` came from.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    pub table: Table,
    pub sources: BTreeMap<String, String>,
    pub files: Vec<PathBuf>,
}

impl Merged {
    pub(crate) fn source_of(&self, key: &str) -> String {
        self.sources
            .get(key)
            .cloned()
            .unwrap_or_else(|| "the built-in default".to_string())
    }
}

/// Read the main file (`explicit` = given with `--config`, so it must exist), its drop-ins and the
/// environment.
pub(crate) fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Merged, ConfigError> {
    let (main, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let mut merged = Merged::default();
    match crate::util::fs::read_bounded_text(&main, CONFIG_LIMIT) {
        Ok(text) => merge_file(&mut merged, &main, &text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
        Err(e) => {
            return Err(ConfigError::new(
                "--config",
                main.display().to_string(),
                format!("cannot read the config file: {e}"),
            ))
        }
    }
    let dropin_dir = main.parent().unwrap_or(Path::new("/")).join("config.d");
    for file in dropins(&dropin_dir)? {
        let text = crate::util::fs::read_bounded_text(&file, CONFIG_LIMIT).map_err(|e| {
            ConfigError::new(
                "config.d",
                file.display().to_string(),
                format!("cannot read: {e}"),
            )
        })?;
        merge_file(&mut merged, &file, &text)?;
    }
    merge_env(&mut merged, env)?;
    Ok(merged)
}

fn dropins(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(ConfigError::new(
                "config.d",
                dir.display().to_string(),
                format!("cannot list drop-in directory: {e}"),
            ))
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| {
                ConfigError::new(
                    "config.d",
                    dir.display().to_string(),
                    format!("cannot list drop-in directory: {e}"),
                )
            })?
            .path();
        if path.extension().is_some_and(|x| x == "toml") {
            names.push(path);
        }
    }
    names.sort();
    let mut files = Vec::new();
    for path in names {
        // A `*.toml` that is not a readable file was meant to be read: skipping it silently
        // would run with a config the operator did not write.
        let bad = |msg: String| ConfigError::new("config.d", path.display().to_string(), msg);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => files.push(path),
            Ok(m) if m.is_dir() => {
                return Err(bad(
                    "is a directory, not a drop-in file; drop-ins are *.toml files".into(),
                ))
            }
            Ok(_) => return Err(bad("is not a regular file".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bad(
                    "is a dangling symlink (its target does not exist)".into()
                ))
            }
            Err(e) => return Err(bad(format!("cannot read: {e}"))),
        }
    }
    Ok(files)
}

fn merge_file(merged: &mut Merged, path: &Path, text: &str) -> Result<(), ConfigError> {
    let source = path.display().to_string();
    let table: Table = toml::from_str(text).map_err(|e| toml_error(&source, text, &e))?;
    // Check this fragment alone against the schema, so the message names this file.
    raw::RawConfig::check(&table).map_err(|e| {
        let key = e.key.clone();
        ConfigError::new(key, source.clone(), e.message)
    })?;
    merge_table(merged, table, &source);
    merged.files.push(path.to_path_buf());
    Ok(())
}

fn toml_error(source: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    let at = match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{source}:{line}")
        }
        None => source.to_string(),
    };
    ConfigError::new("(syntax)", at, format!("invalid TOML: {message}"))
}

/// Later fragments override earlier ones key by key; `[etcd.flags]` merges flag by flag.
fn merge_table(merged: &mut Merged, table: Table, source: &str) {
    for (section, value) in table {
        let Value::Table(keys) = value else { continue };
        let target = merged
            .table
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(target) = target else {
            continue;
        };
        for (key, value) in keys {
            match (target.get_mut(&key), value) {
                (Some(Value::Table(old)), Value::Table(new)) => {
                    for (k, v) in new {
                        merged
                            .sources
                            .insert(format!("{section}.{key}.{k}"), source.to_string());
                        old.insert(k, v);
                    }
                }
                (_, value) => {
                    if let Value::Table(t) = &value {
                        for k in t.keys() {
                            merged
                                .sources
                                .insert(format!("{section}.{key}.{k}"), source.to_string());
                        }
                    }
                    merged
                        .sources
                        .insert(format!("{section}.{key}"), source.to_string());
                    target.insert(key, value);
                }
            }
        }
    }
}

fn merge_env(merged: &mut Merged, env: &[(String, String)]) -> Result<(), ConfigError> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !RESERVED_ENV.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (name, text) in vars {
        let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        let found = raw::KEYS
            .iter()
            .find(|(section, key, _)| rest == format!("{section}_{key}"));
        let Some((section, key, kind)) = found else {
            return Err(ConfigError::new(
                name.clone(),
                "environment",
                format!(
                    "unknown variable; config keys are set as {ENV_PREFIX}<SECTION>_<KEY>, e.g. \
                     ETCD_BOOTSTRAP_MEMBER_DATA_DIR"
                ),
            ));
        };
        let value = env_value(*kind, text).map_err(|msg| {
            ConfigError::new(
                format!("{section}.{key}"),
                format!("environment variable {name}"),
                msg,
            )
        })?;
        let mut section_table = Table::new();
        section_table.insert(key.to_string(), value);
        let mut table = Table::new();
        table.insert(section.to_string(), Value::Table(section_table));
        merge_table(merged, table, &format!("environment variable {name}"));
    }
    Ok(())
}

fn env_value(kind: ValueKind, text: &str) -> Result<Value, String> {
    let text = text.trim();
    match kind {
        ValueKind::Str => Ok(Value::String(text.to_string())),
        ValueKind::Int => text
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("expected a whole number, got {text:?}")),
        ValueKind::Bool => match text {
            "true" | "1" | "yes" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {text:?}")),
        },
        ValueKind::List => {
            if text.starts_with('[') {
                let doc: Table = toml::from_str(&format!("v = {text}"))
                    .map_err(|e| format!("expected a TOML array of strings: {}", e.message()))?;
                match doc.get("v") {
                    Some(Value::Array(a)) if a.iter().all(Value::is_str) => {
                        Ok(Value::Array(a.clone()))
                    }
                    _ => Err("expected a TOML array of strings".to_string()),
                }
            } else {
                Ok(Value::Array(
                    text.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn dropins_override_in_name_order_and_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(
            &main,
            "[cluster]\nname = \"a\"\nsize = 3\n[etcd.flags]\nheartbeat-interval = 100\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("config.d")).unwrap();
        std::fs::write(
            dir.path().join("config.d/20-b.toml"),
            "[cluster]\nname = \"b\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.d/10-a.toml"),
            "[cluster]\nname = \"x\"\n[etcd.flags]\nelection-timeout = 1000\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("config.d/ignored.txt"), "garbage").unwrap();
        let m = load(Some(&main), &env(&[("ETCD_BOOTSTRAP_CLUSTER_SIZE", "5")])).unwrap();
        let cluster = m.table["cluster"].as_table().unwrap();
        assert_eq!(cluster["name"].as_str(), Some("b"));
        assert_eq!(cluster["size"].as_integer(), Some(5));
        assert!(m.source_of("cluster.name").ends_with("20-b.toml"));
        assert_eq!(
            m.source_of("cluster.size"),
            "environment variable ETCD_BOOTSTRAP_CLUSTER_SIZE"
        );
        let flags = m.table["etcd"]["flags"].as_table().unwrap();
        assert_eq!(flags.len(), 2, "flags merge flag by flag");
        assert_eq!(m.files.len(), 3);
    }

    #[test]
    fn unknown_key_names_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(&main, "[member]\ndata_dri = \"/x\"\n").unwrap();
        let e = load(Some(&main), &[]).unwrap_err();
        assert_eq!(e.key, "member.data_dri");
        assert!(e.source.ends_with("config.toml"));
    }

    #[test]
    fn wrong_type_is_reported_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(&main, "[member]\nclient_port = \"x\"\n").unwrap();
        let e = load(Some(&main), &[]).unwrap_err();
        assert_eq!(e.key, "member.client_port");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(&main, "[cluster]\nname = \"a\"\nsize = = 3\n").unwrap();
        let e = load(Some(&main), &[]).unwrap_err();
        assert!(e.source.ends_with("config.toml:3"), "{e}");
    }

    /// A `*.toml` drop-in that cannot be read as a file is an error naming it, not skipped.
    #[test]
    fn a_dropin_that_is_not_a_file_is_an_error() {
        for make in ["directory", "dangling symlink"] {
            let dir = tempfile::tempdir().unwrap();
            let main = dir.path().join("config.toml");
            std::fs::write(&main, "[cluster]\nname = \"a\"\n").unwrap();
            let d = dir.path().join("config.d");
            std::fs::create_dir(&d).unwrap();
            let bad = d.join("20-site.toml");
            match make {
                "directory" => std::fs::create_dir(&bad).unwrap(),
                _ => std::os::unix::fs::symlink(d.join("gone.toml"), &bad).unwrap(),
            }
            let e = load(Some(&main), &[]).unwrap_err();
            assert_eq!(e.key, "config.d", "{make}: {e}");
            assert!(e.source.ends_with("20-site.toml"), "{make}: {e}");
            assert!(e.message.contains(make), "{make}: {e}");
        }
    }

    /// `--config /dev/zero` fails at the size limit instead of reading forever.
    #[test]
    fn an_endless_or_huge_config_file_is_refused() {
        let e = load(Some(Path::new("/dev/zero")), &[]).unwrap_err();
        assert_eq!(e.key, "--config");
        assert!(e.message.contains("larger than"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        let mut text = String::from("[cluster]\nname = \"a\"\n");
        text.push_str(&"#".repeat(CONFIG_LIMIT as usize));
        std::fs::write(&main, text).unwrap();
        let e = load(Some(&main), &[]).unwrap_err();
        assert!(e.message.contains("larger than"), "{e}");
    }

    #[test]
    fn env_overrides_are_typed() {
        let m = load(Some(Path::new("/nonexistent-dir-for-test/x.toml")), &[]);
        assert!(m.is_err(), "an explicit missing --config is an error");
        let e = merge_env(
            &mut Merged::default(),
            &env(&[("ETCD_BOOTSTRAP_MEMBER_PEER_PORT", "abc")]),
        )
        .unwrap_err();
        assert_eq!(e.key, "member.peer_port");
        let e = merge_env(
            &mut Merged::default(),
            &env(&[("ETCD_BOOTSTRAP_MEMBER_NAMEX", "a")]),
        )
        .unwrap_err();
        assert_eq!(e.key, "ETCD_BOOTSTRAP_MEMBER_NAMEX");
        let mut m = Merged::default();
        merge_env(
            &mut m,
            &env(&[
                (
                    "ETCD_BOOTSTRAP_DISCOVERY_PEERS",
                    "a=https://10.0.0.1:2380, b=https://10.0.0.2:2380",
                ),
                ("ETCD_BOOTSTRAP_HEAL_ENABLED", "false"),
                ("ETCD_BOOTSTRAP_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(m.table["discovery"]["peers"].as_array().unwrap().len(), 2);
        assert_eq!(m.table["heal"]["enabled"].as_bool(), Some(false));
    }
}
