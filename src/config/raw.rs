//! The configuration schema as it is written: every key optional, types checked, meaning not yet.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::{Table, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    List,
}

/// Every settable key, its section and type. Environment overrides and fragment checks use it;
/// a unit test keeps it in step with the structs below.
pub const KEYS: &[(&str, &str, Kind)] = &[
    ("cluster", "name", Kind::Str),
    ("cluster", "size", Kind::Int),
    ("cluster", "token", Kind::Str),
    ("member", "name", Kind::Str),
    ("member", "advertise_address", Kind::Str),
    ("member", "data_dir", Kind::Str),
    ("member", "client_port", Kind::Int),
    ("member", "peer_port", Kind::Int),
    ("member", "metrics_port", Kind::Int),
    ("member", "agent_port", Kind::Int),
    ("discovery", "srv_domain", Kind::Str),
    ("discovery", "srv_name", Kind::Str),
    ("discovery", "peers", Kind::List),
    ("discovery", "seeds", Kind::List),
    ("discovery", "nameservers", Kind::List),
    ("discovery", "timeout", Kind::Str),
    ("tls", "mode", Kind::Str),
    ("tls", "dir", Kind::Str),
    ("tls", "ca_cert", Kind::Str),
    ("tls", "ca_key", Kind::Str),
    ("tls", "extra_sans", Kind::List),
    ("tls", "cert_validity", Kind::Str),
    ("tls", "cfssl_url", Kind::Str),
    ("tls", "cfssl_auth_key_file", Kind::Str),
    ("tls", "cfssl_profile", Kind::Str),
    ("tls", "signer_ca", Kind::Str),
    ("tls", "cfssl_profiles", Kind::List),
    ("tls", "server_cert", Kind::Str),
    ("tls", "server_key", Kind::Str),
    ("tls", "peer_cert", Kind::Str),
    ("tls", "peer_key", Kind::Str),
    ("tls", "client_cert", Kind::Str),
    ("tls", "client_key", Kind::Str),
    ("tls", "apiserver_client_cert", Kind::Str),
    ("tls", "apiserver_client_key", Kind::Str),
    ("tls", "sha256_pins", Kind::List),
    ("tls", "apiserver_client", Kind::Bool),
    ("tls", "apiserver_client_subject", Kind::Str),
    ("tls", "apiserver_client_dir", Kind::Str),
    ("tls", "ca_overlap", Kind::Str),
    ("etcd", "binary", Kind::Str),
    ("etcd", "service_manager", Kind::Str),
    ("etcd", "unit_path", Kind::Str),
    ("etcd", "env_file", Kind::Str),
    ("etcd", "download_url", Kind::Str),
    ("etcd", "sha256", Kind::Str),
    ("etcd", "install_dir", Kind::Str),
    ("etcd", "image", Kind::Str),
    ("etcd", "container_runtime", Kind::Str),
    ("etcd", "manifest_path", Kind::Str),
    ("heal", "enabled", Kind::Bool),
    ("heal", "interval", Kind::Str),
    ("heal", "remove_dead_after", Kind::Str),
    ("heal", "keep_moved_aside", Kind::Int),
    ("heal", "moved_aside_max_disk_percent", Kind::Int),
    ("backup", "url", Kind::Str),
    ("backup", "s3_endpoint", Kind::Str),
    ("backup", "s3_region", Kind::Str),
    ("backup", "s3_credentials_file", Kind::Str),
    ("backup", "ca_file", Kind::Str),
    ("backup", "interval", Kind::Str),
    ("backup", "keep_last", Kind::Int),
    ("backup", "keep_daily", Kind::Int),
    ("backup", "age_recipients", Kind::List),
    ("backup", "age_identity_file", Kind::Str),
    ("backup", "restore_on_bootstrap", Kind::Bool),
    ("maintenance", "defrag_when", Kind::Str),
    ("maintenance", "interval", Kind::Str),
    ("maintenance", "window", Kind::Str),
    ("maintenance", "disarm_nospace", Kind::Bool),
    ("metrics", "listen", Kind::Str),
];

/// `[etcd.flags]`: extra etcd flags, `flag-name = value`.
pub const FLAGS_KEY: (&str, &str) = ("etcd", "flags");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub key: String,
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub member: RawMember,
    #[serde(default)]
    pub discovery: RawDiscovery,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub etcd: RawEtcd,
    #[serde(default)]
    pub heal: RawHeal,
    #[serde(default)]
    pub backup: RawBackup,
    #[serde(default)]
    pub maintenance: RawMaintenance,
    #[serde(default)]
    pub metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    pub defrag_when: Option<String>,
    pub interval: Option<String>,
    pub window: Option<String>,
    pub disarm_nospace: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: Option<String>,
    pub size: Option<i64>,
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    pub name: Option<String>,
    pub advertise_address: Option<String>,
    pub data_dir: Option<String>,
    pub client_port: Option<i64>,
    pub peer_port: Option<i64>,
    pub metrics_port: Option<i64>,
    pub agent_port: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub srv_domain: Option<String>,
    pub srv_name: Option<String>,
    pub peers: Option<Vec<String>>,
    pub seeds: Option<Vec<String>>,
    pub nameservers: Option<Vec<String>>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub mode: Option<String>,
    pub dir: Option<String>,
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub extra_sans: Option<Vec<String>>,
    pub cert_validity: Option<String>,
    pub cfssl_url: Option<String>,
    pub cfssl_auth_key_file: Option<String>,
    pub cfssl_profile: Option<String>,
    pub signer_ca: Option<String>,
    pub cfssl_profiles: Option<Vec<String>>,
    pub server_cert: Option<String>,
    pub server_key: Option<String>,
    pub peer_cert: Option<String>,
    pub peer_key: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub apiserver_client_cert: Option<String>,
    pub apiserver_client_key: Option<String>,
    pub sha256_pins: Option<Vec<String>>,
    pub apiserver_client: Option<bool>,
    pub apiserver_client_subject: Option<String>,
    pub apiserver_client_dir: Option<String>,
    pub ca_overlap: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    pub binary: Option<String>,
    pub service_manager: Option<String>,
    pub unit_path: Option<String>,
    pub env_file: Option<String>,
    pub download_url: Option<String>,
    pub sha256: Option<String>,
    pub install_dir: Option<String>,
    pub image: Option<String>,
    pub container_runtime: Option<String>,
    pub manifest_path: Option<String>,
    pub flags: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeal {
    pub enabled: Option<bool>,
    pub interval: Option<String>,
    pub remove_dead_after: Option<String>,
    pub keep_moved_aside: Option<i64>,
    pub moved_aside_max_disk_percent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    pub url: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_credentials_file: Option<String>,
    pub ca_file: Option<String>,
    pub interval: Option<String>,
    pub keep_last: Option<i64>,
    pub keep_daily: Option<i64>,
    pub age_recipients: Option<Vec<String>>,
    pub age_identity_file: Option<String>,
    pub restore_on_bootstrap: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<String>,
}

impl RawConfig {
    /// Check one fragment: known sections and keys, right types. Names the first bad key.
    pub fn check(table: &Table) -> Result<(), SchemaError> {
        for (section, value) in table {
            if !KEYS.iter().any(|(s, _, _)| s == section) {
                return Err(SchemaError {
                    key: section.clone(),
                    message:
                        "unknown section; known: [cluster] [member] [discovery] [tls] [etcd] [heal] [backup] [maintenance] [metrics]"
                            .into(),
                });
            }
            let Value::Table(keys) = value else {
                return Err(SchemaError {
                    key: section.clone(),
                    message: format!("expected a table ([{section}]), got a {}", value.type_str()),
                });
            };
            for (key, value) in keys {
                let full = format!("{section}.{key}");
                if (section.as_str(), key.as_str()) == FLAGS_KEY {
                    check_flags(value)?;
                    continue;
                }
                let Some((_, _, kind)) = KEYS.iter().find(|(s, k, _)| s == section && k == key)
                else {
                    let known: Vec<&str> = KEYS
                        .iter()
                        .filter(|(s, _, _)| s == section)
                        .map(|(_, k, _)| *k)
                        .collect();
                    return Err(SchemaError {
                        key: full,
                        message: format!("unknown key; [{section}] takes: {}", known.join(", ")),
                    });
                };
                let ok = match kind {
                    Kind::Str => value.is_str(),
                    Kind::Int => value.is_integer(),
                    Kind::Bool => value.is_bool(),
                    Kind::List => value
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_str)),
                };
                if !ok {
                    let want = match kind {
                        Kind::Str => "a string",
                        Kind::Int => "a whole number",
                        Kind::Bool => "true or false",
                        Kind::List => "an array of strings",
                    };
                    return Err(SchemaError {
                        key: full,
                        message: format!("expected {want}, got a {}", value.type_str()),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn from_table(table: Table) -> Result<RawConfig, SchemaError> {
        Self::check(&table)?;
        Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| SchemaError {
                key: "(config)".into(),
                message: e.message().to_string(),
            })
    }
}

fn check_flags(value: &Value) -> Result<(), SchemaError> {
    let Value::Table(flags) = value else {
        return Err(SchemaError {
            key: "etcd.flags".into(),
            message: "expected a table of etcd flags, e.g. [etcd.flags] heartbeat-interval = 100"
                .into(),
        });
    };
    for (flag, v) in flags {
        if !(v.is_str() || v.is_integer() || v.is_bool()) {
            return Err(SchemaError {
                key: format!("etcd.flags.{flag}"),
                message: format!(
                    "expected a string, number or boolean, got a {}",
                    v.type_str()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key in KEYS is accepted by the serde structs with a value of its kind.
    #[test]
    fn keys_table_matches_structs() {
        for (section, key, kind) in KEYS {
            let value = match kind {
                Kind::Str => Value::String("x".into()),
                Kind::Int => Value::Integer(1),
                Kind::Bool => Value::Boolean(true),
                Kind::List => Value::Array(vec![Value::String("x".into())]),
            };
            let mut s = Table::new();
            s.insert(key.to_string(), value);
            let mut t = Table::new();
            t.insert(section.to_string(), Value::Table(s));
            RawConfig::from_table(t).unwrap_or_else(|e| panic!("{section}.{key}: {e:?}"));
        }
    }

    #[test]
    fn flags_table_is_checked() {
        let t: Table = toml::from_str("[etcd.flags]\nx = [1]\n").unwrap();
        assert_eq!(RawConfig::check(&t).unwrap_err().key, "etcd.flags.x");
        let t: Table = toml::from_str("[etcd.flags]\nheartbeat-interval = 100\n").unwrap();
        assert!(RawConfig::from_table(t).is_ok());
        let t: Table = toml::from_str("[bogus]\nx = 1\n").unwrap();
        assert_eq!(RawConfig::check(&t).unwrap_err().key, "bogus");
    }
}
