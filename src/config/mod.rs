//! The configuration: read (see `load`), schema-checked (see `raw`), then validated into one
//! typed value before any work starts. Each section's file holds its struct and its validation;
//! `validate` below runs them in order, then the checks across sections (`single_line`,
//! `written_files`). Every error names the key and where its value came from.

pub(crate) mod backup;
pub(crate) mod cluster;
pub(crate) mod discovery;
pub(crate) mod etcd;
pub(crate) mod heal;
pub(crate) mod load;
pub(crate) mod maintenance;
pub(crate) mod member;
pub(crate) mod metrics;
pub mod raw;
mod single_line;
pub(crate) mod tls;
pub(crate) mod upgrade;
mod written_files;

use crate::error::ConfigError;
use crate::util::time::Units;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use cluster::ClusterConfig;
pub(crate) use discovery::{DiscoveryConfig, StaticPeer};
pub use etcd::{ContainerRuntime, EtcdConfig, ServiceManagerKind};
pub(crate) use heal::HealConfig;
pub(crate) use load::DEFAULT_CONFIG_PATH;
pub(crate) use member::MemberConfig;
pub(crate) use single_line::control_char;
pub(crate) use tls::{parse_subject, TlsConfig, TlsMode, TlsSources, PINNABLE};

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub(crate) cluster: ClusterConfig,
    pub(crate) member: MemberConfig,
    pub(crate) discovery: DiscoveryConfig,
    pub(crate) tls: TlsConfig,
    pub etcd: EtcdConfig,
    pub(crate) heal: HealConfig,
    /// `[backup]`, when `backup.url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backup: Option<backup::BackupConfig>,
    pub(crate) maintenance: maintenance::MaintenanceConfig,
    pub(crate) metrics: metrics::MetricsConfig,
    pub(crate) upgrade: upgrade::UpgradeConfig,
    /// The files that were read, in merge order.
    #[serde(skip)]
    pub(crate) files: Vec<PathBuf>,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

use crate::util::time::format_duration;

/// The longest duration accepted. Every duration ends up added to a clock (a deadline, a
/// certificate's notAfter); one near `u64::MAX` seconds ("500000000000y") would overflow it and
/// abort the program instead of being reported here.
const MAX_DURATION: Duration = Duration::from_secs(36_525 * 86_400);

impl Config {
    /// Read files, drop-ins and the environment, then validate.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let merged = load::load(path, env)?;
        validate(merged)
    }

    /// What is allowed but probably not meant (an even cluster size), one line each, for
    /// `check-config`.
    pub(crate) fn warnings(&self) -> Vec<String> {
        cluster::warnings(&self.cluster, &self.discovery)
    }

    /// The effective configuration as TOML, for `check-config`.
    pub(crate) fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The keys (`heal.interval`, `etcd.flags.heartbeat-interval`; a whole list or an absent section
/// as one key) whose effective value differs between `a` and `b`: what a reload changes.
pub(crate) fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value::Object;
        match (a, b) {
            (Object(x), Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = serde_json::Value::Null;
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(
                        &key,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let value = |c: &Config| serde_json::to_value(c).unwrap_or(serde_json::Value::Null);
    let mut out = vec![];
    walk("", &value(a), &value(b), &mut out);
    out
}

struct Validator<'a> {
    merged: &'a load::Merged,
}

impl Validator<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(key, self.merged.source_of(key), message)
    }

    fn path(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        let v = value.unwrap_or_else(|| default.to_string());
        let p = PathBuf::from(&v);
        if !p.is_absolute() {
            return Err(self.err(key, format!("must be an absolute path, got {v:?}")));
        }
        Ok(p)
    }

    fn port(&self, key: &str, value: Option<i64>, default: u16) -> Result<u16, ConfigError> {
        match value {
            None => Ok(default),
            Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
            Some(p) => Err(self.err(key, format!("{p} is not a port number (1-65535)"))),
        }
    }

    /// A duration in s, m, h or d (`crate::util::time::parse_duration`).
    fn duration(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        self.duration_in(key, value, default, Units::Coarse)
    }

    /// The same, also in ms: for a check interval, where a sub-second value makes sense.
    fn duration_ms(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        self.duration_in(key, value, default, Units::WithMs)
    }

    fn duration_in(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
        units: Units,
    ) -> Result<Duration, ConfigError> {
        let v = value.unwrap_or_else(|| default.to_string());
        let d = crate::util::time::parse_duration(&v, units).map_err(|e| self.err(key, e))?;
        if d.is_zero() {
            return Err(self.err(key, "must be longer than zero"));
        }
        if d > MAX_DURATION {
            return Err(self.err(
                key,
                format!("{v:?} is longer than 100 years (36525d); write e.g. \"365d\""),
            ));
        }
        Ok(d)
    }

    fn name(&self, key: &str, value: &str) -> Result<(), ConfigError> {
        if value.is_empty()
            || value.len() > 63
            || !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(self.err(
                key,
                format!("{value:?} must be 1-63 characters of letters, digits, '-', '_' or '.'"),
            ));
        }
        Ok(())
    }

    /// A file this configuration reads whole (a certificate, a key, credentials): a regular file,
    /// small, and readable now.
    fn readable_file(&self, key: &str, path: &Path) -> Result<(), ConfigError> {
        let cannot =
            |e: std::io::Error| self.err(key, format!("cannot read {}: {e}", path.display()));
        let meta = std::fs::metadata(path).map_err(cannot)?;
        if !meta.is_file() {
            return Err(self.err(key, format!("{} is not a regular file", path.display())));
        }
        if meta.len() > crate::util::fs::PEM_LIMIT {
            return Err(self.err(
                key,
                format!(
                    "{} is larger than {} bytes; is this the right file?",
                    path.display(),
                    crate::util::fs::PEM_LIMIT
                ),
            ));
        }
        std::fs::File::open(path).map(|_| ()).map_err(cannot)
    }

    /// Key material (a CA key, a signer's auth key, an age identity, cloud credentials): readable
    /// by its owner only, as every key etcd-bootstrap writes is (0600).
    fn private_file(&self, key: &str, path: &Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        self.readable_file(key, path)?;
        let meta = std::fs::metadata(path)
            .map_err(|e| self.err(key, format!("cannot read {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(self.err(
                key,
                format!(
                    "{} is open to group or others (mode {mode:04o}); key material must be readable by its owner only: chmod 600 {}",
                    path.display(),
                    path.display()
                ),
            ));
        }
        Ok(())
    }
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}
fn validate(merged: load::Merged) -> Result<Config, ConfigError> {
    let v = Validator { merged: &merged };
    let raw = raw::RawConfig::from_table(merged.table.clone())
        .map_err(|e| ConfigError::new(e.key, "merged configuration", e.message))?;
    single_line::single_line_values(&v)?;
    let cluster = cluster::validate(&v, raw.cluster)?;
    let member = member::validate(&v, raw.member)?;
    let discovery = discovery::validate(&v, raw.discovery)?;
    cluster::check_peers(&v, &cluster, &discovery)?;
    let tls = tls::validate(&v, raw.tls)?;
    let etcd = etcd::validate(&v, raw.etcd)?;
    let heal = heal::validate(&v, raw.heal, &discovery, &tls)?;
    let backup = backup::validate(&v, raw.backup)?;
    let maintenance = maintenance::validate(&v, raw.maintenance)?;
    let metrics = metrics::validate(&v, raw.metrics, &member)?;
    let upgrade = upgrade::validate(&v, raw.upgrade)?;

    let cfg = Config {
        cluster,
        member,
        discovery,
        tls,
        etcd,
        heal,
        backup,
        maintenance,
        metrics,
        upgrade,
        files: merged.files.clone(),
    };
    written_files::check_written_files(&v, &cfg)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn setup(body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "x").unwrap();
        std::fs::write(dir.path().join("ca.key"), "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("ca.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let body = body.replace("@DIR@", &dir.path().display().to_string());
        let p = dir.path().join("config.toml");
        std::fs::write(&p, body).unwrap();
        (dir, p)
    }

    pub(super) const GOOD: &str = r#"
[cluster]
name = "prod"
size = 3
[discovery]
srv_domain = "lab.test"
[tls]
ca_cert = "@DIR@/ca.crt"
ca_key = "@DIR@/ca.key"
[etcd.flags]
heartbeat-interval = 200
"#;

    /// What a reload changed, key by key: a flag as its own key, an added section as one key.
    #[test]
    fn changed_keys_name_each_key() {
        let (_d, p) = setup(GOOD);
        let a = Config::load(Some(&p), &[]).unwrap();
        assert_eq!(changed_keys(&a, &a.clone()), Vec::<String>::new());
        let mut b = a.clone();
        b.heal.interval = Duration::from_secs(3);
        b.etcd.flags.insert("snapshot-count".into(), "5000".into());
        b.discovery.seeds = vec![];
        assert_eq!(
            changed_keys(&a, &b),
            ["etcd.flags.snapshot-count", "heal.interval"]
        );
        let env = [(
            "ETCD_BOOTSTRAP_BACKUP_URL".to_string(),
            "file:///b".to_string(),
        )];
        if let Ok(c) = Config::load(Some(&p), &env) {
            assert_eq!(changed_keys(&a, &c), ["backup"]);
        }
    }

    #[test]
    fn good_config_gets_defaults() {
        let (_d, p) = setup(GOOD);
        let c = Config::load(Some(&p), &[]).unwrap();
        assert_eq!(c.member.client_port, 2379);
        assert_eq!(c.member.data_dir, PathBuf::from("/var/lib/etcd"));
        assert_eq!(c.discovery.timeout, Duration::from_secs(600));
        assert_eq!(c.etcd.flags["heartbeat-interval"], "200");
        assert_eq!(c.tls.mode, TlsMode::LocalCa);
        let text = c.to_toml();
        assert!(text.contains("srv_domain = \"lab.test\""), "{text}");
        assert!(text.contains("timeout = \"10m\""), "{text}");
    }

    /// Each bad value is reported against its own key.
    #[test]
    fn bad_values_name_their_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[cluster]\nname = \"prod\"",
                "[cluster]\nname = \"pr od\"",
                "cluster.name",
            ),
            ("size = 3", "size = 0", "cluster.size"),
            (
                "[discovery]",
                "[member]\nclient_port = 70000\n[discovery]",
                "member.client_port",
            ),
            (
                "[discovery]",
                "[member]\npeer_port = 2379\n[discovery]",
                "member.peer_port",
            ),
            (
                "[discovery]",
                "[member]\nadvertise_address = \"x\"\n[discovery]",
                "member.advertise_address",
            ),
            (
                "[discovery]",
                "[member]\ndata_dir = \"rel/dir\"\n[discovery]",
                "member.data_dir",
            ),
            (
                "srv_domain = \"lab.test\"",
                "srv_domain = \"lab test\"",
                "discovery.srv_domain",
            ),
            (
                "srv_domain = \"lab.test\"",
                "peers = [\"a=https://10.0.0.1:2380/\"]",
                "discovery.peers",
            ),
            (
                "srv_domain = \"lab.test\"",
                "peers = [\"a=http://10.0.0.1:2380\"]",
                "discovery.peers",
            ),
            (
                "srv_domain = \"lab.test\"",
                "peers = [\"a=https://10.0.0.1:2380\", \"b=https://h.test:2380\"]",
                "discovery.peers",
            ),
            (
                "srv_domain = \"lab.test\"",
                "peers = [\"a=https://10.0.0.1:2380\", \"a=https://10.0.0.2:2380\"]",
                "discovery.peers",
            ),
            (
                "srv_domain = \"lab.test\"",
                "srv_domain = \"lab.test\"\ntimeout = \"soon\"",
                "discovery.timeout",
            ),
            (
                "srv_domain = \"lab.test\"",
                "srv_domain = \"lab.test\"\nnameservers = [\"x\"]",
                "discovery.nameservers",
            ),
            (
                "srv_domain = \"lab.test\"",
                "srv_domain = \"\"",
                "discovery.srv_domain",
            ),
            ("[tls]", "[tls]\nmode = \"magic\"", "tls.mode"),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "ca_key = \"@DIR@/missing.key\"",
                "tls.ca_key",
            ),
            ("ca_key = \"@DIR@/ca.key\"", "", "tls.ca_key"),
            (
                "heartbeat-interval = 200",
                "initial-cluster = \"x\"",
                "etcd.flags.initial-cluster",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nservice_manager = \"upstart\"\n[etcd.flags]",
                "etcd.service_manager",
            ),
            (
                "[etcd.flags]",
                "[heal]\ninterval = \"0s\"\n[etcd.flags]",
                "heal.interval",
            ),
            (
                "[etcd.flags]",
                "[heal]\nremove_dead_after = \"1s\"\n[etcd.flags]",
                "heal.remove_dead_after",
            ),
            ("[tls]", "[tls]\nmode = \"cfssl\"", "tls.ca_key"),
            ("ca_key = \"@DIR@/ca.key\"", "mode = \"cfssl\"", "tls.cfssl_url"),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "mode = \"cfssl\"\ncfssl_url = \"http://10.0.0.1:8888\"",
                "tls.cfssl_url",
            ),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "mode = \"cfssl\"\ncfssl_url = \"https://10.0.0.1:8888\"\ncfssl_auth_key_file = \"/nonexistent\"",
                "tls.cfssl_auth_key_file",
            ),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "ca_key = \"@DIR@/ca.key\"\ncfssl_profiles = [\"server=x\"]",
                "tls.cfssl_profiles",
            ),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "mode = \"cfssl\"\ncfssl_url = \"https://10.0.0.1:8888\"\ncfssl_profiles = [\"router=x\"]",
                "tls.cfssl_profiles",
            ),
            ("[tls]", "[tls]\nmode = \"files\"", "tls.ca_key"),
            (
                "ca_cert = \"@DIR@/ca.crt\"\nca_key = \"@DIR@/ca.key\"",
                "mode = \"files\"\nca_cert = \"@DIR@/ca.crt\"",
                "tls.server_cert",
            ),
            (
                "ca_cert = \"@DIR@/ca.crt\"\nca_key = \"@DIR@/ca.key\"",
                "mode = \"files\"\nca_cert = \"http://10.0.0.1/ca.crt\"",
                "tls.ca_cert",
            ),
            (
                "ca_cert = \"@DIR@/ca.crt\"\nca_key = \"@DIR@/ca.key\"",
                "mode = \"files\"\nca_cert = \"ca.crt\"",
                "tls.ca_cert",
            ),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "ca_key = \"@DIR@/ca.key\"\nserver_cert = \"@DIR@/ca.crt\"",
                "tls.server_cert",
            ),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "ca_key = \"@DIR@/ca.key\"\nsha256_pins = [\"server.crt=abc\"]",
                "tls.sha256_pins",
            ),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "ca_key = \"@DIR@/ca.key\"\napiserver_client_subject = \"O=x\"",
                "tls.apiserver_client_subject",
            ),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "ca_key = \"@DIR@/ca.key\"\napiserver_client_subject = \"CN=a,C=US\"",
                "tls.apiserver_client_subject",
            ),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "ca_key = \"@DIR@/ca.key\"\nca_overlap = \"a while\"",
                "tls.ca_overlap",
            ),
            (
                "[etcd.flags]",
                "[etcd]\ndownload_url = \"https://x.test/etcd.tar.gz\"\n[etcd.flags]",
                "etcd.sha256",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nservice_manager = \"container\"\n[etcd.flags]",
                "etcd.image",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nservice_manager = \"static-pod\"\nimage = \"\"\n[etcd.flags]",
                "etcd.image",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nservice_manager = \"container\"\nimage = \"etcd:3.5 --privileged\"\n[etcd.flags]",
                "etcd.image",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nservice_manager = \"container\"\nimage = \"etcd:3.5\"\ncontainer_runtime = \"rkt\"\n[etcd.flags]",
                "etcd.container_runtime",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nservice_manager = \"static-pod\"\nimage = \"etcd:3.5\"\nmanifest_path = \"etcd.yaml\"\n[etcd.flags]",
                "etcd.manifest_path",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nsha256 = \"00\"\n[etcd.flags]",
                "etcd.download_url",
            ),
            (
                "[etcd.flags]",
                "[etcd]\ndownload_url = \"https://x.test/e.tar.gz\"\nsha256 = \"xyz\"\n[etcd.flags]",
                "etcd.sha256",
            ),
            (
                "[etcd.flags]",
                "[etcd]\ndownload_url = \"ftp://x.test/e.tar.gz\"\nsha256 = \"@SUM@\"\n[etcd.flags]",
                "etcd.download_url",
            ),
            (
                "[etcd.flags]",
                "[etcd]\ninstall_dir = \"bin\"\n[etcd.flags]",
                "etcd.install_dir",
            ),
            // A control character in any value, whatever its kind.
            (
                "[discovery]",
                "[member]\ndata_dir = \"/var/lib/etcd\\nETCD_FORCE_NEW_CLUSTER=true\"\n[discovery]",
                "member.data_dir",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nbinary = \"/usr/bin/etcd\\nExecStartPre=/bin/sh\"\n[etcd.flags]",
                "etcd.binary",
            ),
            (
                "heartbeat-interval = 200",
                "heartbeat-interval = \"200\\r\"",
                "etcd.flags.heartbeat-interval",
            ),
            (
                "srv_domain = \"lab.test\"",
                "srv_domain = \"lab.test\"\nnameservers = [\"10.0.0.2\\u0000\"]",
                "discovery.nameservers",
            ),
            // A data dir that is not a directory of its own.
            (
                "[discovery]",
                "[member]\ndata_dir = \"/\"\n[discovery]",
                "member.data_dir",
            ),
            (
                "[discovery]",
                "[member]\ndata_dir = \"@DIR@\"\n[discovery]",
                "member.data_dir",
            ),
            (
                "[discovery]",
                "[member]\ndata_dir = \"@DIR@/ca.key\"\n[discovery]",
                "member.data_dir",
            ),
            // Files rewritten on every start that the config also reads, or each other.
            (
                "[etcd.flags]",
                "[etcd]\nenv_file = \"@DIR@/config.toml\"\n[etcd.flags]",
                "etcd.env_file",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nenv_file = \"@DIR@/./ca.key\"\n[etcd.flags]",
                "etcd.env_file",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nunit_path = \"/etc/etcd/pki/server.crt\"\n[etcd.flags]",
                "etcd.unit_path",
            ),
            (
                "[etcd.flags]",
                "[etcd]\nunit_path = \"/etc/etcd/etcd.env\"\n[etcd.flags]",
                "etcd.env_file",
            ),
            // Renewal needs several checks inside a certificate's last third.
            (
                "ca_key = \"@DIR@/ca.key\"",
                "ca_key = \"@DIR@/ca.key\"\ncert_validity = \"2m\"",
                "tls.cert_validity",
            ),
            (
                "[etcd.flags]",
                "[heal]\ninterval = \"40d\"\n[etcd.flags]",
                "heal.interval",
            ),
            // [metrics]: an IP literal and a port of its own.
            (
                "[etcd.flags]",
                "[metrics]\nlisten = \"localhost:9479\"\n[etcd.flags]",
                "metrics.listen",
            ),
            (
                "[etcd.flags]",
                "[metrics]\nlisten = \"127.0.0.1\"\n[etcd.flags]",
                "metrics.listen",
            ),
            (
                "[etcd.flags]",
                "[metrics]\nlisten = \"127.0.0.1:0\"\n[etcd.flags]",
                "metrics.listen",
            ),
            (
                "[etcd.flags]",
                "[metrics]\nlisten = \"0.0.0.0:2380\"\n[etcd.flags]",
                "metrics.listen",
            ),
            (
                "[etcd.flags]",
                "[metrics]\nlisten = \"127.0.0.1:2381\"\n[etcd.flags]",
                "metrics.listen",
            ),
            (
                "[etcd.flags]",
                "[metrics]\nlisten = \"10.0.0.5:2378\"\n[etcd.flags]",
                "metrics.listen",
            ),
            (
                "[etcd.flags]",
                "[metrics]\nlisten = 9479\n[etcd.flags]",
                "metrics.listen",
            ),
        ];
        for (from, to, key) in cases {
            assert!(GOOD.contains(from), "case pattern {from:?} not in GOOD");
            let (_d, p) = setup(
                &GOOD
                    .replacen(from, to, 1)
                    .replace("@SUM@", &"ab".repeat(32)),
            );
            let e = Config::load(Some(&p), &[]).expect_err(&format!("{key} should fail"));
            assert_eq!(e.key, *key, "{e}");
            assert!(!e.source.is_empty(), "{e}");
        }
    }

    /// A duration that would overflow a clock is a config error, not a panic.
    #[test]
    fn overflowing_durations_are_config_errors() {
        for (from, to, key) in [
            (
                "srv_domain = \"lab.test\"",
                "srv_domain = \"lab.test\"\ntimeout = \"500000000000y\"",
                "discovery.timeout",
            ),
            (
                "srv_domain = \"lab.test\"",
                "srv_domain = \"lab.test\"\ntimeout = \"99999999999999999999999y\"",
                "discovery.timeout",
            ),
            (
                "[etcd.flags]",
                "[heal]\nremove_dead_after = \"18446744073709551615s\"\n[etcd.flags]",
                "heal.remove_dead_after",
            ),
            (
                "ca_key = \"@DIR@/ca.key\"",
                "ca_key = \"@DIR@/ca.key\"\nca_overlap = \"36890d\"",
                "tls.ca_overlap",
            ),
        ] {
            let (_d, p) = setup(&GOOD.replacen(from, to, 1));
            let e = Config::load(Some(&p), &[]).expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
        let (_d, p) = setup(&GOOD.replacen(
            "srv_domain = \"lab.test\"",
            "srv_domain = \"lab.test\"\ntimeout = \"36525d\"",
            1,
        ));
        assert!(Config::load(Some(&p), &[]).is_ok(), "100 years is accepted");
        let (_d, p) = setup(&GOOD.replacen(
            "srv_domain = \"lab.test\"",
            "srv_domain = \"lab.test\"\ntimeout = \"36526d\"",
            1,
        ));
        assert!(
            Config::load(Some(&p), &[]).is_err(),
            "over 100 years is refused"
        );
    }

    /// What `check-config` prints is a config that loads to the same result, in every TLS mode,
    /// with the list-valued keys (`cfssl_profiles`, `sha256_pins`, the files-mode sources) set.
    #[test]
    fn check_config_output_reads_back() {
        let pin = "ab".repeat(32);
        let bodies = [
            GOOD.to_string(),
            format!("{GOOD}[heal]\ninterval = \"1500ms\"\nremove_dead_after = \"\"\n[backup]\nurl = \"file:///var/backups/etcd\"\n[metrics]\nlisten = \"127.0.0.1:9479\"\n"),
            GOOD.replace(
                "ca_key = \"@DIR@/ca.key\"",
                "mode = \"cfssl\"\ncfssl_url = \"https://10.0.0.1:8888\"\ncfssl_profiles = [\"peer=p\", \"server=s\"]",
            ),
            GOOD.replace(
                "ca_key = \"@DIR@/ca.key\"",
                &format!("mode = \"files\"\nserver_cert = \"@DIR@/ca.crt\"\nserver_key = \"@DIR@/ca.key\"\npeer_cert = \"https://x.test/peer.crt\"\npeer_key = \"@DIR@/ca.key\"\nclient_cert = \"@DIR@/ca.crt\"\nclient_key = \"@DIR@/ca.key\"\nsha256_pins = [\"peer.crt={pin}\"]"),
            ),
        ];
        for body in bodies {
            let (_d, p) = setup(&body);
            let first = Config::load(Some(&p), &[]).unwrap().to_toml();
            std::fs::write(&p, &first).unwrap();
            let again = Config::load(Some(&p), &[]).unwrap_or_else(|e| {
                panic!("check-config's output does not read back: {e}\n{first}")
            });
            assert_eq!(again.to_toml(), first);
        }
    }

    /// A control character set through the environment names the variable.
    #[test]
    fn a_control_character_from_the_environment_names_the_variable() {
        let (_d, p) = setup(GOOD);
        let env = vec![(
            "ETCD_BOOTSTRAP_ETCD_BINARY".to_string(),
            "/usr/bin/etcd\nExecStartPre=/bin/sh".to_string(),
        )];
        let e = Config::load(Some(&p), &env).unwrap_err();
        assert_eq!(e.key, "etcd.binary");
        assert!(e.source.contains("ETCD_BOOTSTRAP_ETCD_BINARY"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }

    #[test]
    fn env_error_names_the_variable() {
        let (_d, p) = setup(GOOD);
        let env = vec![(
            "ETCD_BOOTSTRAP_MEMBER_CLIENT_PORT".to_string(),
            "0".to_string(),
        )];
        let e = Config::load(Some(&p), &env).unwrap_err();
        assert_eq!(e.key, "member.client_port");
        assert!(
            e.source.contains("ETCD_BOOTSTRAP_MEMBER_CLIENT_PORT"),
            "{e}"
        );
    }
}
