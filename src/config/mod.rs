//! The configuration: read (see `load`), schema-checked (see `raw`), then validated here into one
//! typed value before any work starts. Every error names the key and where its value came from.

pub mod load;
pub mod raw;

use crate::error::ConfigError;
use crate::urls::{is_dns_name, EtcdUrl};
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceManagerKind {
    Systemd,
    Process,
}

#[derive(Debug, Clone, Serialize)]
pub struct EtcdConfig {
    pub binary: PathBuf,
    pub service_manager: ServiceManagerKind,
    pub unit_path: PathBuf,
    pub env_file: PathBuf,
    /// Extra etcd flags, `flag-name -> value` as etcd takes it on its command line.
    pub flags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealConfig {
    pub enabled: bool,
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Opt-in: remove a member unreachable for longer than this (see `deadpeers`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_duration"
    )]
    pub remove_dead_after: Option<Duration>,
}

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

    fn readable_file(&self, key: &str, path: &Path) -> Result<(), ConfigError> {
        std::fs::File::open(path)
            .map(|_| ())
            .map_err(|e| self.err(key, format!("cannot read {}: {e}", path.display())))
    }
}

fn validate(merged: load::Merged) -> Result<Config, ConfigError> {
    let v = Validator { merged: &merged };
    let raw = raw::RawConfig::from_table(merged.table.clone())
        .map_err(|e| ConfigError::new(e.key, "merged configuration", e.message))?;

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
    let member = MemberConfig {
        name: member_name,
        advertise_address,
        data_dir: v.path("member.data_dir", raw.member.data_dir, "/var/lib/etcd")?,
        client_port: v.port("member.client_port", raw.member.client_port, 2379)?,
        peer_port: v.port("member.peer_port", raw.member.peer_port, 2380)?,
        metrics_port: v.port("member.metrics_port", raw.member.metrics_port, 2381)?,
    };
    let ports = BTreeSet::from([member.client_port, member.peer_port, member.metrics_port]);
    if ports.len() != 3 {
        return Err(v.err(
            "member.peer_port",
            "client_port, peer_port and metrics_port must all differ",
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
        m @ "files" => {
            return Err(v.err(
                "tls.mode",
                format!("{m:?} is not available in this version yet; use \"local-ca\""),
            ))
        }
        m => {
            return Err(v.err(
                "tls.mode",
                format!("{m:?} is not one of \"local-ca\", \"cfssl\", \"files\""),
            ))
        }
    };
    let ca_cert = t.ca_cert.filter(|s| !s.is_empty()).map(PathBuf::from);
    let ca_key = t.ca_key.filter(|s| !s.is_empty()).map(PathBuf::from);
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
                v.readable_file(key, p)?;
            }
        }
        TlsMode::Cfssl => {
            if ca_key.is_some() {
                return Err(v.err(
                    "tls.ca_key",
                    "must not be set with tls.mode = \"cfssl\": the CA key stays on the signer",
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
        for (key, p) in [
            ("tls.cfssl_auth_key_file", &cfssl_auth_key_file),
            ("tls.signer_ca", &signer_ca),
        ] {
            if let Some(p) = p {
                v.readable_file(key, p)?;
            }
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
    let tls = TlsConfig {
        mode,
        dir: v.path("tls.dir", t.dir, "/etc/etcd/pki")?,
        ca_cert,
        ca_key,
        extra_sans,
        cert_validity: v.duration("tls.cert_validity", t.cert_validity, "365d")?,
        cfssl_url,
        cfssl_auth_key_file,
        cfssl_profile: t.cfssl_profile.filter(|s| !s.is_empty()),
        signer_ca,
    };
    if tls.cert_validity < Duration::from_secs(60) {
        return Err(v.err("tls.cert_validity", "must be at least 1 minute"));
    }

    // [etcd]
    let e = raw.etcd;
    let service_manager = match e.service_manager.as_deref().unwrap_or("systemd") {
        "systemd" => ServiceManagerKind::Systemd,
        "process" => ServiceManagerKind::Process,
        m => {
            return Err(v.err(
                "etcd.service_manager",
                format!("{m:?} is not one of \"systemd\", \"process\""),
            ))
        }
    };
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
        if text.contains('\n') {
            return Err(v.err(&key, "must not contain a newline"));
        }
        flags.insert(flag, text);
    }
    let etcd = EtcdConfig {
        binary: v.path("etcd.binary", e.binary, "/usr/bin/etcd")?,
        service_manager,
        unit_path: v.path(
            "etcd.unit_path",
            e.unit_path,
            "/etc/systemd/system/etcd.service",
        )?,
        env_file: v.path("etcd.env_file", e.env_file, "/etc/etcd/etcd.env")?,
        flags,
    };

    // [heal]
    let interval = v.duration("heal.interval", raw.heal.interval, "15s")?;
    let remove_dead_after = match raw.heal.remove_dead_after.filter(|s| !s.is_empty()) {
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
    let heal = HealConfig {
        enabled: raw.heal.enabled.unwrap_or(true),
        interval,
        remove_dead_after,
    };

    Ok(Config {
        cluster: ClusterConfig { name, size, token },
        member,
        discovery,
        tls,
        etcd,
        heal,
        files: merged.files.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "x").unwrap();
        std::fs::write(dir.path().join("ca.key"), "x").unwrap();
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
        ];
        for (from, to, key) in cases {
            assert!(GOOD.contains(from), "case pattern {from:?} not in GOOD");
            let (_d, p) = setup(&GOOD.replacen(from, to, 1));
            let e = Config::load(Some(&p), &[]).expect_err(&format!("{key} should fail"));
            assert_eq!(e.key, *key, "{e}");
            assert!(!e.source.is_empty(), "{e}");
        }
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
