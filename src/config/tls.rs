//! `[tls]`: where the member's certificates come from (`mode`: a local CA, a cfssl signer, or
//! pre-issued files), where they are kept, what they say and how long they last. The section's
//! structs and its validation live together; every bad value is one line naming its key.

use super::{is_sha256_hex, ser_duration, Validator};
use crate::error::ConfigError;
use crate::model::url::{is_dns_name, EtcdUrl};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TlsMode {
    LocalCa,
    Cfssl,
    Files,
}

/// The pre-issued material of `tls.mode = "files"`: each an absolute path or an https URL.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct TlsSources {
    /// Read from (and printed as) `tls.ca_cert`.
    #[serde(rename = "ca_cert")]
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
pub(crate) struct TlsConfig {
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
    #[serde(serialize_with = "ser_pairs")]
    pub cfssl_profiles: BTreeMap<String, String>,
    /// files: where each certificate and key comes from (`ca_cert` is the CA). Printed as the
    /// `tls.*` keys they are read from, so that `check-config`'s output reads back.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub sources: Option<TlsSources>,
    /// files: SHA-256 (hex) a fetched file must have, by destination file name.
    #[serde(serialize_with = "ser_pairs")]
    pub sha256_pins: BTreeMap<String, String>,
    /// Also keep a client certificate for kube-apiserver (kubeadm's external etcd).
    pub apiserver_client: bool,
    pub apiserver_client_subject: String,
    pub apiserver_client_dir: PathBuf,
    /// After the CA changes, how long the previous CA stays trusted beside the new one.
    #[serde(serialize_with = "ser_duration")]
    pub ca_overlap: Duration,
}

/// A map printed as the `KEY=VALUE` list it is written as (`tls.cfssl_profiles`,
/// `tls.sha256_pins`).
fn ser_pairs<S: serde::Serializer>(m: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.iter().map(|(k, v)| format!("{k}={v}")))
}

/// The kinds of certificate `tls.cfssl_profiles` can name.
pub(crate) const CERT_KINDS: [&str; 4] = ["server", "peer", "client", "apiserver-client"];

/// The destination file names in `tls.dir` that `tls.sha256_pins` can name.
pub(crate) const PINNABLE: [&str; 9] = [
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

pub(super) fn validate(
    v: &Validator<'_>,
    mut raw: super::raw::RawTls,
) -> Result<TlsConfig, ConfigError> {
    let mode = mode(v, raw.mode.as_deref())?;
    let ca_cert = raw
        .ca_cert
        .clone()
        .filter(|s| !s.is_empty() && mode != TlsMode::Files)
        .map(PathBuf::from);
    let ca_key = raw
        .ca_key
        .take()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let dir = v.path("tls.dir", raw.dir.take(), "/etc/etcd/pki")?;
    let cfssl_url = raw.cfssl_url.take().filter(|s| !s.is_empty());
    let cfssl_auth_key_file = raw
        .cfssl_auth_key_file
        .take()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let signer_ca = raw
        .signer_ca
        .take()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    match mode {
        TlsMode::LocalCa => local_ca(v, ca_cert.as_deref(), ca_key.as_deref(), &dir)?,
        TlsMode::Cfssl => cfssl(
            v,
            ca_key.as_deref(),
            cfssl_url.as_deref(),
            cfssl_auth_key_file.as_deref(),
            signer_ca.as_deref(),
        )?,
        TlsMode::Files => files(v, ca_key.as_deref(), signer_ca.as_deref())?,
    }
    let extra_sans = extra_sans(v, raw.extra_sans.take().unwrap_or_default())?;
    let cfssl_profiles = cfssl_profiles(v, mode, raw.cfssl_profiles.take().unwrap_or_default())?;
    let apiserver_client = raw.apiserver_client.unwrap_or(false);
    let sources = files_sources(v, mode, apiserver_client, &mut raw)?;
    let sha256_pins = sha256_pins(v, mode, raw.sha256_pins.take().unwrap_or_default())?;
    let (apiserver_client_subject, apiserver_client_dir) = apiserver_client_files(
        v,
        raw.apiserver_client_subject.take(),
        raw.apiserver_client_dir.take(),
        &dir,
    )?;
    let tls = TlsConfig {
        mode,
        dir,
        ca_cert,
        ca_key,
        extra_sans,
        cert_validity: v.duration("tls.cert_validity", raw.cert_validity, "365d")?,
        cfssl_url,
        cfssl_auth_key_file,
        cfssl_profile: raw.cfssl_profile.filter(|s| !s.is_empty()),
        signer_ca,
        cfssl_profiles,
        sources,
        sha256_pins,
        apiserver_client,
        apiserver_client_subject,
        apiserver_client_dir,
        ca_overlap: v.duration("tls.ca_overlap", raw.ca_overlap, "72h")?,
    };
    if tls.cert_validity < Duration::from_secs(60) {
        return Err(v.err("tls.cert_validity", "must be at least 1 minute"));
    }
    Ok(tls)
}

/// The apiserver client certificate's subject (`CN=...,O=...`) and its directory (`tls.dir` when
/// unset).
fn apiserver_client_files(
    v: &Validator<'_>,
    subject: Option<String>,
    dir: Option<String>,
    tls_dir: &Path,
) -> Result<(String, PathBuf), ConfigError> {
    let subject = subject
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "CN=kube-apiserver-etcd-client".to_string());
    parse_subject(&subject).map_err(|m| v.err("tls.apiserver_client_subject", m))?;
    let dir = match dir.filter(|s| !s.is_empty()) {
        None => tls_dir.to_path_buf(),
        Some(d) => v.path("tls.apiserver_client_dir", Some(d), "")?,
    };
    Ok((subject, dir))
}

/// `tls.mode`, `local-ca` when unset.
fn mode(v: &Validator<'_>, mode: Option<&str>) -> Result<TlsMode, ConfigError> {
    match mode.unwrap_or("local-ca") {
        "local-ca" => Ok(TlsMode::LocalCa),
        "cfssl" => Ok(TlsMode::Cfssl),
        "files" => Ok(TlsMode::Files),
        m => Err(v.err(
            "tls.mode",
            format!("{m:?} is not one of \"local-ca\", \"cfssl\", \"files\""),
        )),
    }
}

/// `local-ca`: the CA certificate and key, absolute and readable, the key by its owner only
/// (or gone once the certificates are issued).
fn local_ca(
    v: &Validator<'_>,
    ca_cert: Option<&Path>,
    ca_key: Option<&Path>,
    dir: &Path,
) -> Result<(), ConfigError> {
    for (key, p) in [("tls.ca_cert", ca_cert), ("tls.ca_key", ca_key)] {
        let p = p.ok_or_else(|| {
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
                !p.exists() && crate::model::tls::TlsPaths::new(dir).client_cert.is_file();
            if !removed_after_issue {
                v.private_file(key, p)?;
            }
        } else {
            v.readable_file(key, p)?;
        }
    }
    Ok(())
}

/// `cfssl` and `files`: no CA key on the member.
fn no_ca_key(v: &Validator<'_>, mode: TlsMode, ca_key: Option<&Path>) -> Result<(), ConfigError> {
    if ca_key.is_some() {
        return Err(v.err(
            "tls.ca_key",
            format!(
                "must not be set with tls.mode = {:?}: the CA key never needs to be on a member in this mode",
                if mode == TlsMode::Cfssl { "cfssl" } else { "files" }
            ),
        ));
    }
    Ok(())
}

/// `cfssl`: no CA key, the signer's https URL, its HMAC key file (private) and the CA for its
/// HTTPS.
fn cfssl(
    v: &Validator<'_>,
    ca_key: Option<&Path>,
    cfssl_url: Option<&str>,
    cfssl_auth_key_file: Option<&Path>,
    signer_ca: Option<&Path>,
) -> Result<(), ConfigError> {
    no_ca_key(v, TlsMode::Cfssl, ca_key)?;
    let url = cfssl_url.ok_or_else(|| {
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
    if let Some(p) = cfssl_auth_key_file {
        v.private_file("tls.cfssl_auth_key_file", p)?;
    }
    if let Some(p) = signer_ca {
        v.readable_file("tls.signer_ca", p)?;
    }
    Ok(())
}

/// `files`: no CA key, and the CA for fetching the files over HTTPS; where each file comes from is
/// `files_sources`.
fn files(
    v: &Validator<'_>,
    ca_key: Option<&Path>,
    signer_ca: Option<&Path>,
) -> Result<(), ConfigError> {
    no_ca_key(v, TlsMode::Files, ca_key)?;
    if let Some(p) = signer_ca {
        v.readable_file("tls.signer_ca", p)?;
    }
    Ok(())
}

/// `tls.extra_sans`: each an IP address or a DNS name (a leading `*.` allowed).
fn extra_sans(v: &Validator<'_>, extra_sans: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for san in &extra_sans {
        if san.parse::<IpAddr>().is_err() && !is_dns_name(san.trim_start_matches("*.")) {
            return Err(v.err(
                "tls.extra_sans",
                format!("{san:?} is neither an IP address nor a DNS name"),
            ));
        }
    }
    Ok(extra_sans)
}

/// `tls.cfssl_profiles` (`KIND=PROFILE`), for `cfssl` only.
fn cfssl_profiles(
    v: &Validator<'_>,
    mode: TlsMode,
    entries: Vec<String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut cfssl_profiles = BTreeMap::new();
    for entry in entries {
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
    Ok(cfssl_profiles)
}

/// `files`: where each pre-issued file comes from, every one required (the apiserver client's
/// pair with `tls.apiserver_client`). In the other modes these keys are refused, except
/// `tls.ca_cert`, which is then the local CA's certificate.
fn files_sources(
    v: &Validator<'_>,
    mode: TlsMode,
    apiserver_client: bool,
    raw: &mut super::raw::RawTls,
) -> Result<Option<TlsSources>, ConfigError> {
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
        check_location(v, key, &value)?;
        Ok(Some(value))
    };
    let ca_source = location("tls.ca_cert", raw.ca_cert.take())?;
    let server_cert = location("tls.server_cert", raw.server_cert.take())?;
    let server_key = location("tls.server_key", raw.server_key.take())?;
    let peer_cert = location("tls.peer_cert", raw.peer_cert.take())?;
    let peer_key = location("tls.peer_key", raw.peer_key.take())?;
    let client_cert = location("tls.client_cert", raw.client_cert.take())?;
    let client_key = location("tls.client_key", raw.client_key.take())?;
    let apiserver_client_cert = location(
        "tls.apiserver_client_cert",
        raw.apiserver_client_cert.take(),
    )?;
    let apiserver_client_key =
        location("tls.apiserver_client_key", raw.apiserver_client_key.take())?;
    if mode != TlsMode::Files {
        return Ok(None);
    }
    // A missing key has no source of its own: name where files mode was asked for.
    let need = |key: &str, value: Option<String>| {
        value.ok_or_else(|| {
            ConfigError::new(
                key,
                v.merged.source_of("tls.mode"),
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
    Ok(Some(TlsSources {
        ca: need("tls.ca_cert", ca_source)?,
        server_cert: need("tls.server_cert", server_cert)?,
        server_key: need("tls.server_key", server_key)?,
        peer_cert: need("tls.peer_cert", peer_cert)?,
        peer_key: need("tls.peer_key", peer_key)?,
        client_cert: need("tls.client_cert", client_cert)?,
        client_key: need("tls.client_key", client_key)?,
        apiserver_client_cert,
        apiserver_client_key,
    }))
}

/// `tls.sha256_pins` (`FILE=SHA256HEX`, FILE a name in `tls.dir`), for `files` only.
fn sha256_pins(
    v: &Validator<'_>,
    mode: TlsMode,
    entries: Vec<String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut sha256_pins = BTreeMap::new();
    for entry in entries {
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
    Ok(sha256_pins)
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

/// `CN=name,O=group,OU=unit` into attribute pairs; CN required, O and OU may repeat.
pub(crate) fn parse_subject(text: &str) -> Result<Vec<(String, String)>, String> {
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

#[cfg(test)]
mod tests {
    use crate::config::tests::{setup, GOOD};
    use crate::config::Config;

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
}
