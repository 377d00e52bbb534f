//! The configuration: read (see `load`), schema-checked (see `raw`), then validated here into one
//! typed value before any work starts. Every error names the key and where its value came from.

pub mod backup;
pub mod load;
pub mod maintenance;
pub mod metrics;
pub mod raw;

use crate::error::ConfigError;
use crate::model::url::{is_dns_name, EtcdUrl};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use load::DEFAULT_CONFIG_PATH;

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub member: MemberConfig,
    pub discovery: DiscoveryConfig,
    pub tls: TlsConfig,
    pub etcd: EtcdConfig,
    pub heal: HealConfig,
    /// `[backup]`, when `backup.url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<backup::BackupConfig>,
    pub maintenance: maintenance::MaintenanceConfig,
    pub metrics: metrics::MetricsConfig,
    /// The files that were read, in merge order.
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberConfig {
    /// Empty: the name found for this node in discovery, else the short hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<IpAddr>,
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    /// The agent's own endpoint (mTLS with the peer certificate), where peers' agents ask
    /// whether this node holds data before anyone forms a new cluster.
    pub agent_port: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct StaticPeer {
    pub name: String,
    pub url: EtcdUrl,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srv_domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srv_name: Option<String>,
    #[serde(serialize_with = "ser_peers")]
    pub peers: Vec<StaticPeer>,
    #[serde(serialize_with = "ser_display_list")]
    pub seeds: Vec<EtcdUrl>,
    pub nameservers: Vec<SocketAddr>,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    LocalCa,
    Cfssl,
    Files,
}

/// The pre-issued material of `tls.mode = "files"`: each an absolute path or an https URL.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TlsSources {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub peer_cert: String,
    pub peer_key: String,
    pub client_cert: String,
    pub client_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_client_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_client_key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsConfig {
    pub mode: TlsMode,
    pub dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<PathBuf>,
    pub extra_sans: Vec<String>,
    #[serde(serialize_with = "ser_duration")]
    pub cert_validity: Duration,
    /// cfssl: the signer's base URL (https).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cfssl_url: Option<String>,
    /// cfssl: file holding the shared HMAC key in hex; without it the unauthenticated /sign is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cfssl_auth_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cfssl_profile: Option<String>,
    /// PEM to trust for the signer's HTTPS (default: the system roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer_ca: Option<PathBuf>,
    /// cfssl: a profile per certificate kind (`server`, `peer`, `client`, `apiserver-client`),
    /// overriding `cfssl_profile`.
    pub cfssl_profiles: BTreeMap<String, String>,
    /// files: where each certificate and key comes from (`ca_cert` is the CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<TlsSources>,
    /// files: SHA-256 (hex) a fetched file must have, by destination file name.
    pub sha256_pins: BTreeMap<String, String>,
    /// Also keep a client certificate for kube-apiserver (kubeadm's external etcd).
    pub apiserver_client: bool,
    pub apiserver_client_subject: String,
    pub apiserver_client_dir: PathBuf,
    /// After the CA changes, how long the previous CA stays trusted beside the new one.
    #[serde(serialize_with = "ser_duration")]
    pub ca_overlap: Duration,
}

/// The kinds of certificate `tls.cfssl_profiles` can name.
pub const CERT_KINDS: [&str; 4] = ["server", "peer", "client", "apiserver-client"];

/// The destination file names in `tls.dir` that `tls.sha256_pins` can name.
pub const PINNABLE: [&str; 9] = [
    "ca.crt",
    "server.crt",
    "server.key",
    "peer.crt",
    "peer.key",
    "client.crt",
    "client.key",
    "apiserver-etcd-client.crt",
    "apiserver-etcd-client.key",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceManagerKind {
    Systemd,
    Process,
    Container,
    StaticPod,
}

impl ServiceManagerKind {
    /// Managers that run `etcd.image` rather than `etcd.binary`.
    pub fn runs_image(self) -> bool {
        matches!(
            self,
            ServiceManagerKind::Container | ServiceManagerKind::StaticPod
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContainerRuntime {
    Podman,
    Docker,
}

impl ContainerRuntime {
    pub fn program(self) -> &'static str {
        match self {
            ContainerRuntime::Podman => "podman",
            ContainerRuntime::Docker => "docker",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EtcdConfig {
    pub binary: PathBuf,
    pub service_manager: ServiceManagerKind,
    pub unit_path: PathBuf,
    pub env_file: PathBuf,
    /// Install etcd from this release tarball (verified against `sha256`) into `install_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub install_dir: PathBuf,
    /// The image the `container` and `static-pod` managers run (required by them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `container` only; None: podman if it is installed, else docker (looked up at run time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<ContainerRuntime>,
    /// `static-pod` only: where kubelet reads the pod.
    pub manifest_path: PathBuf,
    /// Extra etcd flags, `flag-name -> value` as etcd takes it on its command line.
    pub flags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealConfig {
    pub enabled: bool,
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Remove a member unreachable for longer than this (`decide::dead_member`). Default "5m"
    /// with SRV discovery, off with static peers or seeds; "" turns it off.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub remove_dead_after: Option<Duration>,
    /// The default is in force (the key was not set): a member is removed only on both signals,
    /// unreachable AND gone from the SRV records. Set explicitly, a node waiting to join also
    /// counts as the second signal.
    #[serde(skip)]
    pub remove_dead_by_default: bool,
}

/// `heal.remove_dead_after` when the key is not set and discovery is by SRV records: long
/// enough that a reboot or a DNS hiccup never costs a member, short enough that a rolling
/// replacement is not held up for long.
pub const REMOVE_DEAD_AFTER_SRV_DEFAULT: Duration = Duration::from_secs(300);

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

/// A duration in the largest whole unit that `humantime` reads back ("365d", "90s", "1500ms").
pub fn format_duration(d: Duration) -> String {
    let (secs, ms) = (d.as_secs(), d.subsec_millis());
    if ms != 0 || secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, len) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs % len == 0 {
            return format!("{}{unit}", secs / len);
        }
    }
    format!("{secs}s")
}

fn ser_display_list<S: serde::Serializer>(v: &[EtcdUrl], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|u| u.to_string()))
}

fn ser_peers<S: serde::Serializer>(v: &[StaticPeer], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|p| format!("{}={}", p.name, p.url)))
}

/// The longest duration accepted. Every duration ends up added to a clock (a deadline, a
/// certificate's notAfter); one near `u64::MAX` seconds ("500000000000y") would overflow it and
/// abort the program instead of being reported here. (A year is 365.25 days, as in `humantime`.)
const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// The first control character (newline, carriage return, NUL, ...) in `value`. Values end up as
/// lines of etcd's environment file and unit: a line break in one would add a line of the
/// writer's choosing (`ETCD_FORCE_NEW_CLUSTER=true`, `ExecStartPre=`).
pub fn control_char(value: &str) -> Option<char> {
    value.chars().find(|c| c.is_control())
}

/// Every string in the configuration (values, list items, `[etcd.flags]` values) is one line of
/// text without control characters.
fn single_line_values(v: &Validator<'_>) -> Result<(), ConfigError> {
    let check = |key: &str, text: &str| match control_char(text) {
        None => Ok(()),
        Some(c) => Err(v.err(
            key,
            format!(
                "{text:?} holds a control character ({c:?}); config values are single-line text \
                 (in etcd's environment file or unit a line break would start a line of its own)"
            ),
        )),
    };
    for (section, keys) in &v.merged.table {
        let Some(keys) = keys.as_table() else {
            continue;
        };
        for (key, value) in keys {
            let full = format!("{section}.{key}");
            match value {
                toml::Value::String(s) => check(&full, s)?,
                toml::Value::Array(items) => {
                    for s in items.iter().filter_map(toml::Value::as_str) {
                        check(&full, s)?;
                    }
                }
                toml::Value::Table(flags) => {
                    for (flag, value) in flags {
                        if let Some(s) = value.as_str() {
                            check(&format!("{full}.{flag}"), s)?;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// `member.data_dir` is moved aside whole when the member heals and is handed to etcd: it must be
/// a directory of its own, holding nothing but etcd's data (or nothing yet).
fn check_data_dir(v: &Validator<'_>, dir: &Path) -> Result<(), ConfigError> {
    let key = "member.data_dir";
    if dir.parent().is_none() || dir.file_name().is_none() {
        return Err(v.err(
            key,
            format!(
                "{:?} is not a directory of its own (it is moved aside whole when the member heals); use e.g. /var/lib/etcd",
                dir.display()
            ),
        ));
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Ok(m) if !m.is_dir() => {
            return Err(v.err(
                key,
                format!("{} exists and is not a directory", dir.display()),
            ))
        }
        _ => {}
    }
    let foreign = crate::datadir::foreign_entries(dir)
        .map_err(|e| v.err(key, format!("cannot list {}: {e}", dir.display())))?;
    if !foreign.is_empty() {
        let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
        return Err(v.err(
            key,
            format!(
                "{} holds files that are not etcd's ({}{}); it is moved aside whole when the member heals: give etcd a directory of its own, e.g. /var/lib/etcd",
                dir.display(),
                shown.join(", "),
                if foreign.len() > shown.len() { ", ..." } else { "" }
            ),
        ));
    }
    Ok(())
}

/// `path` as the file it names: symlinks in its existing part resolved, so that two spellings of
/// one file compare equal.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// `etcd.env_file` and `etcd.unit_path` are rewritten on every start: neither may be a file the
/// configuration reads (a config file, a certificate, a key, the etcd binary), a file written in
/// `tls.dir`, or the other one.
fn check_written_files(v: &Validator<'_>, cfg: &Config) -> Result<(), ConfigError> {
    let mut inputs: Vec<(String, PathBuf)> = cfg
        .files
        .iter()
        .map(|f| (format!("the config file {}", f.display()), f.clone()))
        .collect();
    let t = &cfg.tls;
    for (key, p) in [
        ("tls.ca_cert", &t.ca_cert),
        ("tls.ca_key", &t.ca_key),
        ("tls.cfssl_auth_key_file", &t.cfssl_auth_key_file),
        ("tls.signer_ca", &t.signer_ca),
    ] {
        if let Some(p) = p {
            inputs.push((key.to_string(), p.clone()));
        }
    }
    if let Some(s) = &t.sources {
        for (key, location) in [
            ("tls.ca_cert", Some(&s.ca)),
            ("tls.server_cert", Some(&s.server_cert)),
            ("tls.server_key", Some(&s.server_key)),
            ("tls.peer_cert", Some(&s.peer_cert)),
            ("tls.peer_key", Some(&s.peer_key)),
            ("tls.client_cert", Some(&s.client_cert)),
            ("tls.client_key", Some(&s.client_key)),
            (
                "tls.apiserver_client_cert",
                s.apiserver_client_cert.as_ref(),
            ),
            ("tls.apiserver_client_key", s.apiserver_client_key.as_ref()),
        ] {
            if let Some(l) = location.filter(|l| !l.starts_with("https://")) {
                inputs.push((key.to_string(), PathBuf::from(l)));
            }
        }
    }
    for dir_key in ["tls.dir", "tls.apiserver_client_dir"] {
        let dir = if dir_key == "tls.dir" {
            &t.dir
        } else {
            &t.apiserver_client_dir
        };
        for name in PINNABLE {
            inputs.push((format!("{name} in {dir_key}"), dir.join(name)));
        }
    }
    if let Some(b) = &cfg.backup {
        for (key, p) in [
            ("backup.s3_credentials_file", &b.s3_credentials_file),
            ("backup.ca_file", &b.ca_file),
            ("backup.age_identity_file", &b.age_identity_file),
        ] {
            if let Some(p) = p {
                inputs.push((key.to_string(), p.clone()));
            }
        }
    }
    inputs.push(("etcd.binary".to_string(), cfg.etcd.binary.clone()));
    let written = [
        ("etcd.env_file", &cfg.etcd.env_file),
        ("etcd.unit_path", &cfg.etcd.unit_path),
        ("etcd.manifest_path", &cfg.etcd.manifest_path),
    ];
    for (i, (key, path)) in written.iter().enumerate() {
        let target = resolved(path);
        let others = written[i + 1..]
            .iter()
            .map(|(k, p)| (k.to_string(), p.to_path_buf()));
        for (what, input) in inputs.iter().cloned().chain(others) {
            if resolved(&input) == target {
                return Err(v.err(
                    key,
                    format!(
                        "{} is also {what}: etcd-bootstrap rewrites {key} on every start and would overwrite it; give {key} a path of its own",
                        path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Flags the bootstrapper owns: setting them in `[etcd.flags]` would break its guarantees.
const MANAGED_FLAGS: &[&str] = &[
    "name",
    "data-dir",
    "wal-dir",
    "listen-peer-urls",
    "listen-client-urls",
    "listen-metrics-urls",
    "advertise-client-urls",
    "initial-advertise-peer-urls",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "discovery",
    "discovery-srv",
    "discovery-srv-name",
    "force-new-cluster",
    "strict-reconfig-check",
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "peer-cert-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "peer-client-cert-auth",
    "auto-tls",
    "peer-auto-tls",
];

impl Config {
    /// Read files, drop-ins and the environment, then validate.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let merged = load::load(path, env)?;
        validate(merged)
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
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

    fn duration(
        &self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let v = value.unwrap_or_else(|| default.to_string());
        let d = humantime::parse_duration(&v).map_err(|e| {
            self.err(
                key,
                format!("{v:?} is not a duration ({e}); write e.g. \"30s\", \"10m\", \"1h\""),
            )
        })?;
        if d.is_zero() {
            return Err(self.err(key, "must be longer than zero"));
        }
        if d > MAX_DURATION {
            return Err(self.err(
                key,
                format!("{v:?} is longer than 100 years; write e.g. \"365d\""),
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

/// A pre-issued file's location: an absolute path or an https URL.
fn check_location(v: &Validator<'_>, key: &str, value: &str) -> Result<(), ConfigError> {
    if let Some(rest) = value.strip_prefix("https://") {
        if rest.is_empty() || rest.starts_with('/') || value.contains(char::is_whitespace) {
            return Err(v.err(key, format!("{value:?} is not a valid https URL")));
        }
        return Ok(());
    }
    if value.contains("://") {
        return Err(v.err(
            key,
            format!("{value:?}: only absolute paths and https URLs are accepted (key material is never fetched in the clear)"),
        ));
    }
    let p = Path::new(value);
    if !p.is_absolute() {
        return Err(v.err(
            key,
            format!("must be an absolute path or an https URL, got {value:?}"),
        ));
    }
    v.readable_file(key, p)
}

/// `[registry[:port]/]path[:tag][@sha256:digest]`, loosely: the runtime checks the rest. It
/// lands in a unit's command line and a manifest, so nothing but the characters a reference
/// can hold.
pub fn is_image_reference(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && !s.starts_with(['-', '/', ':', '@', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// `CN=name,O=group,OU=unit` into attribute pairs; CN required, O and OU may repeat.
pub fn parse_subject(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let (attr, value) = part.trim().split_once('=').ok_or_else(|| {
            format!("{text:?}: expected CN=...,O=... (comma-separated ATTR=value)")
        })?;
        let attr = attr.trim().to_ascii_uppercase();
        let value = value.trim();
        if !["CN", "O", "OU"].contains(&attr.as_str()) {
            return Err(format!(
                "{text:?}: attribute {attr:?} is not one of CN, O, OU"
            ));
        }
        if value.is_empty() {
            return Err(format!("{text:?}: {attr} has an empty value"));
        }
        out.push((attr, value.to_string()));
    }
    if out.iter().filter(|(a, _)| a == "CN").count() != 1 {
        return Err(format!("{text:?}: needs exactly one CN"));
    }
    Ok(out)
}

fn validate(merged: load::Merged) -> Result<Config, ConfigError> {
    let v = Validator { merged: &merged };
    let raw = raw::RawConfig::from_table(merged.table.clone())
        .map_err(|e| ConfigError::new(e.key, "merged configuration", e.message))?;
    single_line_values(&v)?;

    // [cluster]
    let name = raw.cluster.name.ok_or_else(|| {
        v.err(
            "cluster.name",
            "is required (it names the cluster and seeds its token)",
        )
    })?;
    v.name("cluster.name", &name)?;
    let size = match raw.cluster.size {
        None => None,
        Some(n) if (1..=15).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(v.err(
                "cluster.size",
                format!("{n} is not a cluster size (1-15 voting members)"),
            ))
        }
    };
    let token = match raw.cluster.token.filter(|t| !t.is_empty()) {
        Some(t) => {
            v.name("cluster.token", &t)?;
            Some(t)
        }
        None => None,
    };

    // [member]
    let member_name = raw.member.name.filter(|n| !n.is_empty());
    if let Some(n) = &member_name {
        v.name("member.name", n)?;
    }
    let advertise_address = match raw.member.advertise_address.filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
            v.err(
                "member.advertise_address",
                format!("{a:?} is not an IP address"),
            )
        })?),
    };
    if advertise_address.is_some_and(|a| a.is_unspecified() || a.is_loopback()) {
        return Err(v.err(
            "member.advertise_address",
            "must be an address other members can reach (not 0.0.0.0, :: or loopback)",
        ));
    }
    let data_dir = v.path("member.data_dir", raw.member.data_dir, "/var/lib/etcd")?;
    check_data_dir(&v, &data_dir)?;
    let member = MemberConfig {
        name: member_name,
        advertise_address,
        data_dir,
        client_port: v.port("member.client_port", raw.member.client_port, 2379)?,
        peer_port: v.port("member.peer_port", raw.member.peer_port, 2380)?,
        metrics_port: v.port("member.metrics_port", raw.member.metrics_port, 2381)?,
        agent_port: v.port("member.agent_port", raw.member.agent_port, 2378)?,
    };
    let ports = BTreeSet::from([
        member.client_port,
        member.peer_port,
        member.metrics_port,
        member.agent_port,
    ]);
    if ports.len() != 4 {
        return Err(v.err(
            "member.peer_port",
            "client_port, peer_port, metrics_port and agent_port must all differ",
        ));
    }

    // [discovery]
    let d = raw.discovery;
    let srv_domain = d
        .srv_domain
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    if let Some(dom) = &srv_domain {
        if !is_dns_name(dom) || !dom.contains('.') {
            return Err(v.err(
                "discovery.srv_domain",
                format!("{dom:?} is not a DNS domain"),
            ));
        }
    }
    let srv_name = d.srv_name.filter(|s| !s.is_empty());
    if let Some(n) = &srv_name {
        if !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(v.err(
                "discovery.srv_name",
                format!("{n:?} may hold only letters, digits and '-'"),
            ));
        }
        if srv_domain.is_none() {
            return Err(v.err(
                "discovery.srv_name",
                "is only meaningful with discovery.srv_domain",
            ));
        }
    }
    let mut peers = Vec::new();
    for entry in d.peers.unwrap_or_default() {
        let (pname, url) = entry.split_once('=').ok_or_else(|| {
            v.err(
                "discovery.peers",
                format!("{entry:?}: expected NAME=https://HOST:PORT"),
            )
        })?;
        v.name("discovery.peers", pname)
            .map_err(|e| v.err("discovery.peers", format!("{entry:?}: {}", e.message)))?;
        let url = EtcdUrl::parse(url).map_err(|m| v.err("discovery.peers", m))?;
        if url.scheme != "https" {
            return Err(v.err(
                "discovery.peers",
                format!("{entry:?}: peer URLs must be https (mTLS on the peer port)"),
            ));
        }
        peers.push(StaticPeer {
            name: pname.to_string(),
            url,
        });
    }
    let mut seen_names = BTreeSet::new();
    let mut seen_urls = BTreeSet::new();
    for p in &peers {
        if !seen_names.insert(p.name.clone()) {
            return Err(v.err(
                "discovery.peers",
                format!("the name {:?} is listed twice", p.name),
            ));
        }
        if !seen_urls.insert(p.url.to_string()) {
            return Err(v.err(
                "discovery.peers",
                format!("the URL {} is listed twice", p.url),
            ));
        }
    }
    let hosts_kinds: BTreeSet<bool> = peers.iter().map(|p| p.url.ip().is_some()).collect();
    if hosts_kinds.len() > 1 {
        return Err(v.err(
            "discovery.peers",
            "mixes IP addresses and host names; use one form for every peer (etcd derives member IDs from the exact URL text)",
        ));
    }
    let mut seeds = Vec::new();
    for s in d.seeds.unwrap_or_default() {
        let url = EtcdUrl::parse(&s).map_err(|m| v.err("discovery.seeds", m))?;
        if url.scheme != "https" {
            return Err(v.err(
                "discovery.seeds",
                format!("{s:?}: seed client URLs must be https"),
            ));
        }
        seeds.push(url);
    }
    if srv_domain.is_some() && !peers.is_empty() {
        return Err(v.err(
            "discovery.peers",
            "both discovery.srv_domain and discovery.peers are set; choose one source of peers",
        ));
    }
    if srv_domain.is_none() && peers.is_empty() && seeds.is_empty() {
        return Err(v.err(
            "discovery.srv_domain",
            "no way to find peers: set discovery.srv_domain, discovery.peers or discovery.seeds",
        ));
    }
    let mut nameservers = Vec::new();
    for ns in d.nameservers.unwrap_or_default() {
        let addr = ns
            .parse::<SocketAddr>()
            .or_else(|_| ns.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| {
                v.err(
                    "discovery.nameservers",
                    format!("{ns:?} is not IP or IP:PORT (IPv6 with port: [addr]:53)"),
                )
            })?;
        nameservers.push(addr);
    }
    let discovery = DiscoveryConfig {
        srv_domain,
        srv_name,
        peers,
        seeds,
        nameservers,
        timeout: v.duration("discovery.timeout", d.timeout, "10m")?,
    };

    // [tls]
    let t = raw.tls;
    let mode = match t.mode.as_deref().unwrap_or("local-ca") {
        "local-ca" => TlsMode::LocalCa,
        "cfssl" => TlsMode::Cfssl,
        "files" => TlsMode::Files,
        m => {
            return Err(v.err(
                "tls.mode",
                format!("{m:?} is not one of \"local-ca\", \"cfssl\", \"files\""),
            ))
        }
    };
    let ca_cert = t
        .ca_cert
        .clone()
        .filter(|s| !s.is_empty() && mode != TlsMode::Files)
        .map(PathBuf::from);
    let ca_key = t.ca_key.filter(|s| !s.is_empty()).map(PathBuf::from);
    let dir = v.path("tls.dir", t.dir, "/etc/etcd/pki")?;
    match mode {
        TlsMode::LocalCa => {
            for (key, p) in [("tls.ca_cert", &ca_cert), ("tls.ca_key", &ca_key)] {
                let p = p.as_ref().ok_or_else(|| {
                    v.err(key, "is required with tls.mode = \"local-ca\" (make a CA with `etcd-bootstrap ca init --out DIR`)")
                })?;
                if !p.is_absolute() {
                    return Err(v.err(
                        key,
                        format!("must be an absolute path, got {:?}", p.display()),
                    ));
                }
                if key == "tls.ca_key" {
                    // Removed after the first issue, to keep signing power off the node: the
                    // certificates in tls.dir stay; only a renewal needs the key again.
                    let removed_after_issue =
                        !p.exists() && crate::tls::TlsPaths::new(&dir).client_cert.is_file();
                    if !removed_after_issue {
                        v.private_file(key, p)?;
                    }
                } else {
                    v.readable_file(key, p)?;
                }
            }
        }
        TlsMode::Cfssl | TlsMode::Files => {
            if ca_key.is_some() {
                return Err(v.err(
                    "tls.ca_key",
                    format!(
                        "must not be set with tls.mode = {:?}: the CA key never needs to be on a member in this mode",
                        if mode == TlsMode::Cfssl { "cfssl" } else { "files" }
                    ),
                ));
            }
        }
    }
    let cfssl_url = t.cfssl_url.filter(|s| !s.is_empty());
    let cfssl_auth_key_file = t
        .cfssl_auth_key_file
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let signer_ca = t.signer_ca.filter(|s| !s.is_empty()).map(PathBuf::from);
    if mode == TlsMode::Files {
        if let Some(p) = &signer_ca {
            v.readable_file("tls.signer_ca", p)?;
        }
    }
    if mode == TlsMode::Cfssl {
        let url = cfssl_url.as_deref().ok_or_else(|| {
            v.err(
                "tls.cfssl_url",
                "is required with tls.mode = \"cfssl\" (e.g. https://signer.example.com:8888)",
            )
        })?;
        let parsed =
            EtcdUrl::parse(url.trim_end_matches('/')).map_err(|m| v.err("tls.cfssl_url", m))?;
        if parsed.scheme != "https" {
            return Err(v.err(
                "tls.cfssl_url",
                "must be https: the certificates it returns are trusted by the whole cluster",
            ));
        }
        if let Some(p) = &cfssl_auth_key_file {
            v.private_file("tls.cfssl_auth_key_file", p)?;
        }
        if let Some(p) = &signer_ca {
            v.readable_file("tls.signer_ca", p)?;
        }
    }
    let extra_sans = t.extra_sans.unwrap_or_default();
    for san in &extra_sans {
        if san.parse::<IpAddr>().is_err() && !is_dns_name(san.trim_start_matches("*.")) {
            return Err(v.err(
                "tls.extra_sans",
                format!("{san:?} is neither an IP address nor a DNS name"),
            ));
        }
    }
    let mut cfssl_profiles = BTreeMap::new();
    for entry in t.cfssl_profiles.unwrap_or_default() {
        let (kind, profile) = entry
            .split_once('=')
            .filter(|(k, p)| CERT_KINDS.contains(k) && !p.is_empty())
            .ok_or_else(|| {
                v.err(
                    "tls.cfssl_profiles",
                    format!(
                        "{entry:?}: expected KIND=PROFILE with KIND one of {}",
                        CERT_KINDS.join(", ")
                    ),
                )
            })?;
        cfssl_profiles.insert(kind.to_string(), profile.to_string());
    }
    if !cfssl_profiles.is_empty() && mode != TlsMode::Cfssl {
        return Err(v.err(
            "tls.cfssl_profiles",
            "is only used with tls.mode = \"cfssl\"",
        ));
    }
    let apiserver_client = t.apiserver_client.unwrap_or(false);
    let location = |key: &str, value: Option<String>| -> Result<Option<String>, ConfigError> {
        let Some(value) = value.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        if mode != TlsMode::Files {
            if key == "tls.ca_cert" {
                return Ok(Some(value));
            }
            return Err(v.err(key, "is only used with tls.mode = \"files\""));
        }
        check_location(&v, key, &value)?;
        Ok(Some(value))
    };
    let ca_source = location("tls.ca_cert", t.ca_cert.clone())?;
    let server_cert = location("tls.server_cert", t.server_cert)?;
    let server_key = location("tls.server_key", t.server_key)?;
    let peer_cert = location("tls.peer_cert", t.peer_cert)?;
    let peer_key = location("tls.peer_key", t.peer_key)?;
    let client_cert = location("tls.client_cert", t.client_cert)?;
    let client_key = location("tls.client_key", t.client_key)?;
    let apiserver_client_cert = location("tls.apiserver_client_cert", t.apiserver_client_cert)?;
    let apiserver_client_key = location("tls.apiserver_client_key", t.apiserver_client_key)?;
    let sources = if mode == TlsMode::Files {
        // A missing key has no source of its own: name where files mode was asked for.
        let need = |key: &str, value: Option<String>| {
            value.ok_or_else(|| {
                ConfigError::new(
                    key,
                    merged.source_of("tls.mode"),
                    "is required with tls.mode = \"files\" (an absolute path or an https URL)",
                )
            })
        };
        if apiserver_client {
            need("tls.apiserver_client_cert", apiserver_client_cert.clone())?;
            need("tls.apiserver_client_key", apiserver_client_key.clone())?;
        } else if apiserver_client_cert.is_some() || apiserver_client_key.is_some() {
            return Err(v.err(
                "tls.apiserver_client",
                "must be true when tls.apiserver_client_cert/key are set",
            ));
        }
        Some(TlsSources {
            ca: need("tls.ca_cert", ca_source)?,
            server_cert: need("tls.server_cert", server_cert)?,
            server_key: need("tls.server_key", server_key)?,
            peer_cert: need("tls.peer_cert", peer_cert)?,
            peer_key: need("tls.peer_key", peer_key)?,
            client_cert: need("tls.client_cert", client_cert)?,
            client_key: need("tls.client_key", client_key)?,
            apiserver_client_cert,
            apiserver_client_key,
        })
    } else {
        None
    };
    let mut sha256_pins = BTreeMap::new();
    for entry in t.sha256_pins.unwrap_or_default() {
        let (file, hex) = entry.split_once('=').ok_or_else(|| {
            v.err(
                "tls.sha256_pins",
                format!("{entry:?}: expected FILE=SHA256HEX, e.g. \"server.crt=9f86d0...\""),
            )
        })?;
        if !PINNABLE.contains(&file) {
            return Err(v.err(
                "tls.sha256_pins",
                format!("{file:?} is not one of {}", PINNABLE.join(", ")),
            ));
        }
        if !is_sha256_hex(hex) {
            return Err(v.err(
                "tls.sha256_pins",
                format!("{entry:?}: the digest must be 64 hex digits"),
            ));
        }
        sha256_pins.insert(file.to_string(), hex.to_ascii_lowercase());
    }
    if !sha256_pins.is_empty() && mode != TlsMode::Files {
        return Err(v.err("tls.sha256_pins", "is only used with tls.mode = \"files\""));
    }
    let apiserver_client_subject = t
        .apiserver_client_subject
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "CN=kube-apiserver-etcd-client".to_string());
    parse_subject(&apiserver_client_subject)
        .map_err(|m| v.err("tls.apiserver_client_subject", m))?;
    let apiserver_client_dir = match t.apiserver_client_dir.filter(|s| !s.is_empty()) {
        None => dir.clone(),
        Some(d) => v.path("tls.apiserver_client_dir", Some(d), "")?,
    };
    let tls = TlsConfig {
        mode,
        dir,
        ca_cert,
        ca_key,
        extra_sans,
        cert_validity: v.duration("tls.cert_validity", t.cert_validity, "365d")?,
        cfssl_url,
        cfssl_auth_key_file,
        cfssl_profile: t.cfssl_profile.filter(|s| !s.is_empty()),
        signer_ca,
        cfssl_profiles,
        sources,
        sha256_pins,
        apiserver_client,
        apiserver_client_subject,
        apiserver_client_dir,
        ca_overlap: v.duration("tls.ca_overlap", t.ca_overlap, "72h")?,
    };
    if tls.cert_validity < Duration::from_secs(60) {
        return Err(v.err("tls.cert_validity", "must be at least 1 minute"));
    }

    // [etcd]
    let e = raw.etcd;
    // "" is the default too, so that a template can leave the choice empty.
    let service_manager = match e
        .service_manager
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or("systemd")
    {
        "systemd" => ServiceManagerKind::Systemd,
        "process" => ServiceManagerKind::Process,
        "container" => ServiceManagerKind::Container,
        "static-pod" => ServiceManagerKind::StaticPod,
        m => {
            return Err(v.err(
                "etcd.service_manager",
                format!(
                    "{m:?} is not one of \"systemd\", \"process\", \"container\", \"static-pod\""
                ),
            ))
        }
    };
    let image = e.image.filter(|s| !s.is_empty());
    if let Some(image) = &image {
        if !is_image_reference(image) {
            return Err(v.err(
                "etcd.image",
                format!(
                    "{image:?} is not an image reference such as \"registry.k8s.io/etcd:3.5.15-0\""
                ),
            ));
        }
    } else if service_manager.runs_image() {
        return Err(v.err(
            "etcd.image",
            "is required with etcd.service_manager = \"container\" or \"static-pod\" (the image that holds etcd, e.g. \"registry.k8s.io/etcd:3.5.15-0\")",
        ));
    }
    let container_runtime = match e.container_runtime.as_deref().unwrap_or("") {
        "" => None,
        "podman" => Some(ContainerRuntime::Podman),
        "docker" => Some(ContainerRuntime::Docker),
        r => {
            return Err(v.err(
                "etcd.container_runtime",
                format!(
                    "{r:?} is not one of \"podman\", \"docker\" (or empty: whichever is installed)"
                ),
            ))
        }
    };
    let manifest_path = v.path(
        "etcd.manifest_path",
        e.manifest_path,
        "/etc/kubernetes/manifests/etcd.yaml",
    )?;
    let mut flags = BTreeMap::new();
    for (flag, value) in e.flags.unwrap_or_default() {
        let key = format!("etcd.flags.{flag}");
        let flag = flag.trim_start_matches('-').to_string();
        if flag.is_empty()
            || !flag
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(v.err(
                &key,
                "etcd flag names are lowercase words joined by '-', e.g. heartbeat-interval",
            ));
        }
        if MANAGED_FLAGS.contains(&flag.as_str()) {
            return Err(v.err(
                &key,
                format!("--{flag} is set by etcd-bootstrap itself and cannot be overridden"),
            ));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => return Err(v.err(&key, format!("unsupported value {other}"))),
        };
        flags.insert(flag, text);
    }
    let install_dir = v.path("etcd.install_dir", e.install_dir, "/usr/local/bin")?;
    let download_url = e.download_url.filter(|s| !s.is_empty());
    let sha256 = e.sha256.filter(|s| !s.is_empty());
    match (&download_url, &sha256) {
        (Some(url), Some(sum)) => {
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || url.contains(char::is_whitespace)
            {
                return Err(v.err(
                    "etcd.download_url",
                    format!("{url:?} is not an http(s) URL of an etcd release tarball"),
                ));
            }
            if !is_sha256_hex(sum) {
                return Err(v.err(
                    "etcd.sha256",
                    "must be the tarball's SHA-256 as 64 hex digits (from the release's SHA256SUMS)",
                ));
            }
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                "etcd.sha256",
                merged.source_of("etcd.download_url"),
                "is required with etcd.download_url: nothing is installed without a checksum",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "etcd.download_url",
                merged.source_of("etcd.sha256"),
                "is required with etcd.sha256 (or remove etcd.sha256)",
            ))
        }
        (None, None) => {}
    }
    let default_binary = match download_url {
        Some(_) => install_dir.join("etcd").display().to_string(),
        None => "/usr/bin/etcd".to_string(),
    };
    let etcd = EtcdConfig {
        binary: v.path("etcd.binary", e.binary, &default_binary)?,
        download_url,
        sha256: sha256.map(|s| s.to_ascii_lowercase()),
        install_dir,
        service_manager,
        unit_path: v.path(
            "etcd.unit_path",
            e.unit_path,
            "/etc/systemd/system/etcd.service",
        )?,
        env_file: v.path("etcd.env_file", e.env_file, "/etc/etcd/etcd.env")?,
        image,
        container_runtime,
        manifest_path,
        flags,
    };

    // [heal]
    let interval = v.duration("heal.interval", raw.heal.interval, "15s")?;
    let remove_dead_by_default =
        raw.heal.remove_dead_after.is_none() && discovery.srv_domain.is_some();
    let remove_dead_after = match raw.heal.remove_dead_after.filter(|s| !s.is_empty()) {
        None if remove_dead_by_default => Some(REMOVE_DEAD_AFTER_SRV_DEFAULT.max(interval * 2)),
        None => None,
        Some(text) => {
            let d = v.duration("heal.remove_dead_after", Some(text), "")?;
            if d < interval * 2 {
                return Err(v.err(
                    "heal.remove_dead_after",
                    "must be at least two heal.interval: a member is judged dead only after several checks",
                ));
            }
            Some(d)
        }
    };
    // Renewal starts when a third of a certificate's lifetime is left and is tried once per
    // heal.interval (also with heal.enabled = false): leave several tries, and time to fix a
    // failing signer, inside that third.
    if interval.saturating_mul(10) > tls.cert_validity {
        // Name the one that was set; when both were, the interval (the usual mistake).
        let key = if merged.sources.contains_key("heal.interval")
            || !merged.sources.contains_key("tls.cert_validity")
        {
            "heal.interval"
        } else {
            "tls.cert_validity"
        };
        return Err(v.err(
            key,
            format!(
                "heal.interval ({}) must be at most a tenth of tls.cert_validity ({}): certificates are renewed in the last third of their lifetime, checked once per heal.interval",
                format_duration(interval),
                format_duration(tls.cert_validity)
            ),
        ));
    }
    let heal = HealConfig {
        enabled: raw.heal.enabled.unwrap_or(true),
        interval,
        remove_dead_after,
        remove_dead_by_default,
    };
    let backup = backup::validate(&v, raw.backup)?;
    let maintenance = maintenance::validate(&v, raw.maintenance)?;
    let metrics = metrics::validate(&v, raw.metrics, &member)?;

    let cfg = Config {
        cluster: ClusterConfig { name, size, token },
        member,
        discovery,
        tls,
        etcd,
        heal,
        backup,
        maintenance,
        metrics,
        files: merged.files.clone(),
    };
    check_written_files(&v, &cfg)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(body: &str) -> (tempfile::TempDir, PathBuf) {
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

    const GOOD: &str = r#"
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

    /// A rolling replacement completes with default settings under SRV discovery: dead members
    /// are removed after 5 minutes on both signals. Static peers keep their slots (off), and ""
    /// turns it off.
    #[test]
    fn remove_dead_after_defaults_on_with_srv_only() {
        let load = |body: &str| {
            let (_d, p) = setup(body);
            Config::load(Some(&p), &[]).unwrap().heal
        };
        let srv = load(GOOD);
        assert_eq!(srv.remove_dead_after, Some(Duration::from_secs(300)));
        assert!(srv.remove_dead_by_default);
        let statics = load(&GOOD.replace(
            "srv_domain = \"lab.test\"",
            "peers = [\"a=https://10.0.0.1:2380\"]",
        ));
        assert_eq!(statics.remove_dead_after, None);
        let off = load(&format!("{GOOD}[heal]\nremove_dead_after = \"\"\n"));
        assert_eq!(off.remove_dead_after, None);
        let set = load(&format!("{GOOD}[heal]\nremove_dead_after = \"90s\"\n"));
        assert_eq!(set.remove_dead_after, Some(Duration::from_secs(90)));
        assert!(!set.remove_dead_by_default);
        // A long heal.interval moves the default out to two intervals.
        let slow = load(&format!("{GOOD}[heal]\ninterval = \"10m\"\n"));
        assert_eq!(slow.remove_dead_after, Some(Duration::from_secs(1200)));
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

    /// `[metrics] listen`: off by default; an address whose IP cannot be one etcd or the agent
    /// endpoint listens on may share their port numbers; shown by check-config as written.
    #[test]
    fn metrics_listen() {
        let load = |extra: &str, env: &[(String, String)]| {
            let (_d, p) = setup(&format!("{GOOD}{extra}"));
            Config::load(Some(&p), env).map(|c| (c.metrics.listen, c.to_toml()))
        };
        let (off, text) = load("", &[]).unwrap();
        assert_eq!(off, None);
        assert!(text.contains("[metrics]\nlisten = \"\"\n"), "{text}");
        for ok in [
            "127.0.0.1:9479",
            "[::1]:9479",
            // etcd's peer port is not on loopback; 127.0.0.2 is not where etcd listens.
            "127.0.0.1:2380",
            "127.0.0.2:2379",
        ] {
            let (on, text) = load(&format!("[metrics]\nlisten = \"{ok}\"\n"), &[]).unwrap();
            assert_eq!(on, Some(ok.parse().unwrap()));
            assert!(text.contains(&format!("listen = \"{ok}\"")), "{text}");
        }
        // A member address set explicitly: another address of this machine may reuse the port.
        let set =
            "[member]\nadvertise_address = \"10.0.0.6\"\n[metrics]\nlisten = \"10.0.0.5:2380\"\n";
        assert!(load(set, &[]).is_ok());
        let same = set.replace("10.0.0.5", "10.0.0.6");
        let e = load(&same, &[]).unwrap_err();
        assert_eq!(e.key, "metrics.listen");
        assert!(e.message.contains("member.peer_port"), "{e}");
        let env = vec![(
            "ETCD_BOOTSTRAP_METRICS_LISTEN".to_string(),
            "metrics.example.com:9479".to_string(),
        )];
        let e = load("", &env).unwrap_err();
        assert_eq!(e.key, "metrics.listen");
        assert!(e.source.contains("ETCD_BOOTSTRAP_METRICS_LISTEN"), "{e}");
        assert!(e.message.contains("not a host name"), "{e}");
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
                "ca_key = \"@DIR@/ca.key\"\nca_overlap = \"101y\"",
                "tls.ca_overlap",
            ),
        ] {
            let (_d, p) = setup(&GOOD.replacen(from, to, 1));
            let e = Config::load(Some(&p), &[]).expect_err(key);
            assert_eq!(e.key, key, "{e}");
        }
        let (_d, p) = setup(&GOOD.replacen(
            "srv_domain = \"lab.test\"",
            "srv_domain = \"lab.test\"\ntimeout = \"100y\"",
            1,
        ));
        assert!(Config::load(Some(&p), &[]).is_ok(), "100 years is accepted");
    }

    /// Key material open to group or others is refused, naming the file and its mode.
    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        for mode in [0o640, 0o604, 0o660] {
            let (d, p) = setup(GOOD);
            let key = d.path().join("ca.key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Config::load(Some(&p), &[]).unwrap_err();
            assert_eq!(e.key, "tls.ca_key", "{e}");
            assert!(e.message.contains(&format!("mode {mode:04o}")), "{e}");
            assert!(e.message.contains(&key.display().to_string()), "{e}");
        }
        let (d, p) = setup(&GOOD.replacen(
            "ca_cert = \"@DIR@/ca.crt\"\nca_key = \"@DIR@/ca.key\"",
            "mode = \"cfssl\"\ncfssl_url = \"https://10.0.0.1:8888\"\ncfssl_auth_key_file = \"@DIR@/ca.crt\"",
            1,
        ));
        let e = Config::load(Some(&p), &[]).unwrap_err();
        assert_eq!(e.key, "tls.cfssl_auth_key_file", "{e}");
        let auth = d.path().join("ca.crt");
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).unwrap();
        Config::load(Some(&p), &[]).unwrap();
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
    fn an_etcd_download_puts_the_binary_in_install_dir() {
        let sum = "ab".repeat(32);
        let (_d, p) = setup(&GOOD.replace(
            "[etcd.flags]",
            &format!("[etcd]\ndownload_url = \"https://x.test/etcd-v3.5.30-linux-amd64.tar.gz\"\nsha256 = \"{sum}\"\ninstall_dir = \"/opt/etcd\"\n[etcd.flags]"),
        ));
        let c = Config::load(Some(&p), &[]).unwrap();
        assert_eq!(c.etcd.binary, PathBuf::from("/opt/etcd/etcd"));
        assert_eq!(c.etcd.sha256.as_deref(), Some(sum.as_str()));
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
