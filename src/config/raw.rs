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

/// The Rust type a key of each kind deserializes into. The schema names a field's type by its
/// kind, so the struct field and the `KEYS` row cannot disagree.
mod value_type {
    pub(crate) type Str = String;
    pub(crate) type Int = i64;
    pub(crate) type Bool = bool;
    pub(crate) type List = Vec<String>;
}

/// Declares the schema once. From one list per section (`section => RawStruct { key: Kind, .. }`,
/// and `with table name` for a key that holds a table of its own) it generates:
/// - `KEYS`: every settable key, its section and kind, in declaration order (environment
///   overrides and fragment checks use it);
/// - `FLAGS_KEY`: the one table-valued key (a second would not compile: `check` knows only the
///   etcd flags);
/// - one `Raw*` struct per section (every key optional, unknown keys refused) and `RawConfig`
///   holding them (every section optional, unknown sections refused);
/// - `UNKNOWN_SECTION`: the message naming the known sections, in declaration order.
macro_rules! schema {
    ($(
        $section:ident => $raw:ident { $($key:ident: $kind:ident),* $(,)? }
        $(with table $table:ident)?;
    )*) => {
        /// Every settable key, its section and type (the `[etcd.flags]` table is `FLAGS_KEY`).
        pub const KEYS: &[(&str, &str, ValueKind)] = &[
            $($((stringify!($section), stringify!($key), ValueKind::$kind),)*)*
        ];

        $($(
            /// `[etcd.flags]`: extra etcd flags, `flag-name = value`.
            pub const FLAGS_KEY: (&str, &str) = (stringify!($section), stringify!($table));
        )?)*

        const UNKNOWN_SECTION: &str =
            concat!("unknown section; known:", $(" [", stringify!($section), "]",)*);

        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct RawConfig {
            $(
                #[serde(default)]
                pub $section: $raw,
            )*
        }

        $(
            #[derive(Debug, Default, Deserialize)]
            #[serde(deny_unknown_fields)]
            pub(crate) struct $raw {
                $(pub $key: Option<value_type::$kind>,)*
                $(pub $table: Option<BTreeMap<String, Value>>,)?
            }
        )*
    };
}

schema! {
    cluster => RawCluster {
        name: Str,
        size: Int,
        token: Str,
    };
    member => RawMember {
        name: Str,
        advertise_address: Str,
        data_dir: Str,
        client_port: Int,
        peer_port: Int,
        metrics_port: Int,
        agent_port: Int,
    };
    discovery => RawDiscovery {
        srv_domain: Str,
        srv_name: Str,
        peers: List,
        seeds: List,
        nameservers: List,
        timeout: Str,
    };
    tls => RawTls {
        mode: Str,
        dir: Str,
        ca_cert: Str,
        ca_key: Str,
        extra_sans: List,
        cert_validity: Str,
        cfssl_url: Str,
        cfssl_auth_key_file: Str,
        cfssl_profile: Str,
        signer_ca: Str,
        cfssl_profiles: List,
        server_cert: Str,
        server_key: Str,
        peer_cert: Str,
        peer_key: Str,
        client_cert: Str,
        client_key: Str,
        apiserver_client_cert: Str,
        apiserver_client_key: Str,
        sha256_pins: List,
        apiserver_client: Bool,
        apiserver_client_subject: Str,
        apiserver_client_dir: Str,
        ca_overlap: Str,
    };
    etcd => RawEtcd {
        binary: Str,
        service_manager: Str,
        unit_path: Str,
        env_file: Str,
        download_url: Str,
        sha256: Str,
        install_dir: Str,
        image: Str,
        container_runtime: Str,
        manifest_path: Str,
        user: Str,
    } with table flags;
    heal => RawHeal {
        enabled: Bool,
        interval: Str,
        remove_dead_after: Str,
        keep_moved_aside: Int,
        moved_aside_max_disk_percent: Int,
        auto_recover: Bool,
    };
    backup => RawBackup {
        url: Str,
        s3_endpoint: Str,
        s3_region: Str,
        s3_credentials_file: Str,
        ca_file: Str,
        interval: Str,
        keep_last: Int,
        keep_daily: Int,
        age_recipients: List,
        age_identity_file: Str,
        restore_on_bootstrap: Bool,
        delta_interval: Str,
        delta_max_bytes: Str,
        delta_max_events: Int,
    };
    maintenance => RawMaintenance {
        defrag_when: Str,
        interval: Str,
        window: Str,
        disarm_nospace: Bool,
    };
    metrics => RawMetrics {
        listen: Str,
    };
    upgrade => RawUpgrade {
        member_timeout: Str,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaError {
    pub key: String,
    pub message: String,
}

impl RawConfig {
    /// Check one fragment: known sections and keys, right types. Names the first bad key.
    pub(crate) fn check(table: &Table) -> Result<(), SchemaError> {
        for (section, value) in table {
            if !KEYS.iter().any(|(s, _, _)| s == section) {
                return Err(SchemaError {
                    key: section.clone(),
                    message: UNKNOWN_SECTION.into(),
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

    pub(crate) fn from_table(table: Table) -> Result<RawConfig, SchemaError> {
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

    const KINDS: [ValueKind; 4] = [
        ValueKind::Str,
        ValueKind::Int,
        ValueKind::Bool,
        ValueKind::List,
    ];

    fn value_of(kind: ValueKind) -> Value {
        match kind {
            ValueKind::Str => Value::String("x".into()),
            ValueKind::Int => Value::Integer(1),
            ValueKind::Bool => Value::Boolean(true),
            ValueKind::List => Value::Array(vec![Value::String("x".into())]),
        }
    }

    fn one_key(section: &str, key: &str, value: Value) -> Table {
        let mut s = Table::new();
        s.insert(key.to_string(), value);
        let mut t = Table::new();
        t.insert(section.to_string(), Value::Table(s));
        t
    }

    /// Every key in KEYS is accepted with a value of its kind, and the value reaches a field
    /// (exactly one field of the parsed config is set).
    #[test]
    fn every_key_is_accepted_with_a_value_of_its_kind() {
        for (section, key, kind) in KEYS {
            let raw = RawConfig::from_table(one_key(section, key, value_of(*kind)))
                .unwrap_or_else(|e| panic!("{section}.{key}: {e:?}"));
            let set = format!("{raw:?}").matches("Some(").count();
            assert_eq!(set, 1, "{section}.{key} sets {set} fields: {raw:?}");
        }
    }

    /// Setting every key in KEYS (and the flags table) leaves no field of any section unset:
    /// no struct field is missing from KEYS.
    #[test]
    fn keys_cover_every_field() {
        let mut t = Table::new();
        for (section, key, kind) in KEYS {
            let s = t
                .entry(section.to_string())
                .or_insert_with(|| Value::Table(Table::new()));
            s.as_table_mut()
                .unwrap()
                .insert(key.to_string(), value_of(*kind));
        }
        let flags: Table = toml::from_str("heartbeat-interval = 100").unwrap();
        t[FLAGS_KEY.0]
            .as_table_mut()
            .unwrap()
            .insert(FLAGS_KEY.1.to_string(), Value::Table(flags));
        let raw = RawConfig::from_table(t).unwrap();
        assert!(!format!("{raw:?}").contains("None"), "{raw:?}");
    }

    /// A value of any other kind is refused, naming the key and the kind it takes.
    #[test]
    fn a_value_of_another_kind_is_refused() {
        for (section, key, kind) in KEYS {
            for other in KINDS.iter().filter(|k| *k != kind) {
                let e = RawConfig::check(&one_key(section, key, value_of(*other))).unwrap_err();
                assert_eq!(e.key, format!("{section}.{key}"));
                assert!(e.message.starts_with("expected "), "{e:?}");
            }
        }
    }

    /// A key or section missing from the schema is refused by the check, with the known ones
    /// listed, and by the structs themselves.
    #[test]
    fn a_key_or_section_not_in_the_schema_is_refused() {
        let sections: Vec<&str> = KEYS.iter().map(|(s, _, _)| *s).collect();
        for section in &sections {
            let t = one_key(section, "nope", Value::String("x".into()));
            let e = RawConfig::check(&t).unwrap_err();
            assert_eq!(e.key, format!("{section}.nope"));
            assert!(
                e.message
                    .starts_with(&format!("unknown key; [{section}] takes: ")),
                "{e:?}"
            );
            let direct: Result<RawConfig, _> = Value::Table(t).try_into();
            assert!(direct.is_err(), "[{section}] accepts an unknown key");
        }
        let t = one_key("bogus", "x", Value::Integer(1));
        let e = RawConfig::check(&t).unwrap_err();
        assert_eq!(e.key, "bogus");
        assert_eq!(
            e.message,
            "unknown section; known: [cluster] [member] [discovery] [tls] [etcd] [heal] [backup] \
             [maintenance] [metrics] [upgrade]"
        );
        let direct: Result<RawConfig, _> = Value::Table(t).try_into();
        assert!(direct.is_err(), "an unknown section is accepted");
    }

    /// `ETCD_BOOTSTRAP_<SECTION>_<KEY>` names exactly one key.
    #[test]
    fn every_environment_name_is_one_key() {
        let mut names: Vec<String> = KEYS.iter().map(|(s, k, _)| format!("{s}_{k}")).collect();
        names.sort();
        let all = names.len();
        names.dedup();
        assert_eq!(names.len(), all, "two keys share an environment variable");
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
