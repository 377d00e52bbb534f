//! The configuration schema as it is written: every key optional, types checked, meaning not yet.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::{Table, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Str,
    Int,
    Bool,
    List,
}

/// Every settable key, its section and type. Environment overrides and fragment checks use it;
/// a unit test keeps it in step with the structs below.
pub const KEYS: &[(&str, &str, ValueKind)] = &[
    ("cluster", "name", ValueKind::Str),
    ("cluster", "size", ValueKind::Int),
    ("cluster", "token", ValueKind::Str),
    ("member", "name", ValueKind::Str),
    ("member", "advertise_address", ValueKind::Str),
    ("member", "data_dir", ValueKind::Str),
    ("member", "client_port", ValueKind::Int),
    ("member", "peer_port", ValueKind::Int),
    ("member", "metrics_port", ValueKind::Int),
    ("member", "agent_port", ValueKind::Int),
    ("discovery", "srv_domain", ValueKind::Str),
    ("discovery", "srv_name", ValueKind::Str),
    ("discovery", "peers", ValueKind::List),
    ("discovery", "seeds", ValueKind::List),
    ("discovery", "nameservers", ValueKind::List),
    ("discovery", "timeout", ValueKind::Str),
    ("tls", "mode", ValueKind::Str),
    ("tls", "dir", ValueKind::Str),
    ("tls", "ca_cert", ValueKind::Str),
    ("tls", "ca_key", ValueKind::Str),
    ("tls", "extra_sans", ValueKind::List),
    ("tls", "cert_validity", ValueKind::Str),
    ("tls", "cfssl_url", ValueKind::Str),
    ("tls", "cfssl_auth_key_file", ValueKind::Str),
    ("tls", "cfssl_profile", ValueKind::Str),
    ("tls", "signer_ca", ValueKind::Str),
    ("tls", "cfssl_profiles", ValueKind::List),
    ("tls", "server_cert", ValueKind::Str),
    ("tls", "server_key", ValueKind::Str),
    ("tls", "peer_cert", ValueKind::Str),
    ("tls", "peer_key", ValueKind::Str),
    ("tls", "client_cert", ValueKind::Str),
    ("tls", "client_key", ValueKind::Str),
    ("tls", "apiserver_client_cert", ValueKind::Str),
    ("tls", "apiserver_client_key", ValueKind::Str),
    ("tls", "sha256_pins", ValueKind::List),
    ("tls", "apiserver_client", ValueKind::Bool),
    ("tls", "apiserver_client_subject", ValueKind::Str),
    ("tls", "apiserver_client_dir", ValueKind::Str),
    ("tls", "ca_overlap", ValueKind::Str),
    ("etcd", "binary", ValueKind::Str),
    ("etcd", "service_manager", ValueKind::Str),
    ("etcd", "unit_path", ValueKind::Str),
    ("etcd", "env_file", ValueKind::Str),
    ("etcd", "download_url", ValueKind::Str),
    ("etcd", "sha256", ValueKind::Str),
    ("etcd", "install_dir", ValueKind::Str),
    ("etcd", "image", ValueKind::Str),
    ("etcd", "container_runtime", ValueKind::Str),
    ("etcd", "manifest_path", ValueKind::Str),
    ("etcd", "user", ValueKind::Str),
    ("heal", "enabled", ValueKind::Bool),
    ("heal", "interval", ValueKind::Str),
    ("heal", "remove_dead_after", ValueKind::Str),
    ("heal", "keep_moved_aside", ValueKind::Int),
    ("heal", "moved_aside_max_disk_percent", ValueKind::Int),
    ("heal", "auto_recover", ValueKind::Bool),
    ("backup", "url", ValueKind::Str),
    ("backup", "s3_endpoint", ValueKind::Str),
    ("backup", "s3_region", ValueKind::Str),
    ("backup", "s3_credentials_file", ValueKind::Str),
    ("backup", "ca_file", ValueKind::Str),
    ("backup", "interval", ValueKind::Str),
    ("backup", "keep_last", ValueKind::Int),
    ("backup", "keep_daily", ValueKind::Int),
    ("backup", "age_recipients", ValueKind::List),
    ("backup", "age_identity_file", ValueKind::Str),
    ("backup", "restore_on_bootstrap", ValueKind::Bool),
    ("backup", "delta_interval", ValueKind::Str),
    ("backup", "delta_max_bytes", ValueKind::Str),
    ("backup", "delta_max_events", ValueKind::Int),
    ("maintenance", "defrag_when", ValueKind::Str),
    ("maintenance", "interval", ValueKind::Str),
    ("maintenance", "window", ValueKind::Str),
    ("maintenance", "disarm_nospace", ValueKind::Bool),
    ("metrics", "listen", ValueKind::Str),
    ("upgrade", "member_timeout", ValueKind::Str),
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
    #[serde(default)]
    pub upgrade: RawUpgrade,
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
    pub user: Option<String>,
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
    pub auto_recover: Option<bool>,
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
    pub delta_interval: Option<String>,
    pub delta_max_bytes: Option<String>,
    pub delta_max_events: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpgrade {
    pub member_timeout: Option<String>,
}

impl RawConfig {
    /// Check one fragment: known sections and keys, right types. Names the first bad key.
    pub fn check(table: &Table) -> Result<(), SchemaError> {
        for (section, value) in table {
            if !KEYS.iter().any(|(s, _, _)| s == section) {
                return Err(SchemaError {
                    key: section.clone(),
                    message:
                        "unknown section; known: [cluster] [member] [discovery] [tls] [etcd] [heal] [backup] [maintenance] [metrics] [upgrade]"
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
                    ValueKind::Str => value.is_str(),
                    ValueKind::Int => value.is_integer(),
                    ValueKind::Bool => value.is_bool(),
                    ValueKind::List => value
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_str)),
                };
                if !ok {
                    let want = match kind {
                        ValueKind::Str => "a string",
                        ValueKind::Int => "a whole number",
                        ValueKind::Bool => "true or false",
                        ValueKind::List => "an array of strings",
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
                ValueKind::Str => Value::String("x".into()),
                ValueKind::Int => Value::Integer(1),
                ValueKind::Bool => Value::Boolean(true),
                ValueKind::List => Value::Array(vec![Value::String("x".into())]),
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
