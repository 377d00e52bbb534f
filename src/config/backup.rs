//! `[backup]`: where snapshots go, how often, how many are kept, and who can read them. The
//! section's struct and its validation live together; every bad value is one line naming its key.

use super::Validator;
use crate::error::ConfigError;
use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Where the snapshots of `cluster.name` are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreUrl {
    /// `s3://BUCKET/PREFIX`
    S3 { bucket: String, prefix: String },
    /// `file:///ABSOLUTE/PATH`
    File { dir: PathBuf },
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StoreUrl::File { dir } => write!(f, "file://{}", dir.display()),
        }
    }
}

/// Printed as the URL it was written as, so that `check-config`'s output reads back.
impl Serialize for StoreUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct BackupConfig {
    pub url: StoreUrl,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_credentials_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(serialize_with = "super::ser_duration")]
    pub interval: Duration,
    pub keep_last: usize,
    pub keep_daily: usize,
    pub age_recipients: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_identity_file: Option<PathBuf>,
    pub restore_on_bootstrap: bool,
    /// How often the snapshot agent uploads a delta segment; `None` ("" in the file): no deltas.
    #[serde(serialize_with = "ser_opt_duration")]
    pub delta_interval: Option<Duration>,
    /// A segment is uploaded early once its keys and values reach this many bytes.
    #[serde(serialize_with = "ser_size")]
    pub delta_max_bytes: u64,
    /// A chain with more events than this is closed by a new full snapshot.
    pub delta_max_events: u64,
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&crate::util::time::format_duration(*d)),
        None => s.serialize_str(""),
    }
}

/// A size as the file takes it ("8MiB"), in the largest binary unit that divides it.
fn ser_size<S: serde::Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    let text = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        .iter()
        .find(|(_, unit)| *n > 0 && n.is_multiple_of(*unit))
        .map(|(name, unit)| format!("{}{name}", n / unit))
        .unwrap_or_else(|| n.to_string());
    s.serialize_str(&text)
}

/// S3 bucket names: 3-63 characters of lowercase letters, digits, '-' and '.'.
fn is_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && !b.starts_with(['-', '.'])
        && !b.ends_with(['-', '.'])
}

fn parse_url(v: &Validator<'_>, text: &str) -> Result<StoreUrl, ConfigError> {
    let key = "backup.url";
    if let Some(rest) = text.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !is_bucket(bucket) {
            return Err(v.err(key, format!("{bucket:?} is not an S3 bucket name (3-63 lowercase letters, digits, '-', '.')")));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.chars().any(|c| c.is_control() || c == '\\')
            || prefix.contains("//")
        {
            return Err(v.err(key, format!("{prefix:?} is not a usable object prefix")));
        }
        return Ok(StoreUrl::S3 {
            bucket: bucket.to_string(),
            prefix,
        });
    }
    if let Some(path) = text.strip_prefix("file://") {
        let dir = PathBuf::from(path);
        if !dir.is_absolute() || path.split('/').any(|p| p == "..") {
            return Err(v.err(
                key,
                format!("file:// needs an absolute path (file:///var/backups/etcd), got {text:?}"),
            ));
        }
        return Ok(StoreUrl::File { dir });
    }
    Err(v.err(
        key,
        format!("{text:?}: expected \"s3://BUCKET/PREFIX\" or \"file:///ABSOLUTE/PATH\""),
    ))
}

/// `https://host[:port]`; plain http only towards this machine (loopback).
fn parse_endpoint(v: &Validator<'_>, text: &str) -> Result<String, ConfigError> {
    let key = "backup.s3_endpoint";
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| v.err(key, format!("{text:?}: expected https://host:port")))?;
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains('/') || hostport.contains('?') {
        return Err(v.err(
            key,
            format!("{text:?}: expected https://host:port, without a path"),
        ));
    }
    let host = match hostport.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => hostport
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(hostport),
    };
    match scheme {
        "https" => {}
        "http" => {
            let loopback =
                host == "localhost" || IpAddr::from_str(host).is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(v.err(
                    key,
                    format!("{text:?}: plain http would send credentials and snapshots in the clear; use https (http is allowed only on loopback)"),
                ));
            }
        }
        _ => return Err(v.err(key, format!("{text:?}: expected https://host:port"))),
    }
    Ok(format!("{scheme}://{hostport}"))
}

/// The `[default]` keys of an AWS shared-credentials file.
pub(crate) fn read_credentials(path: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut in_default = false;
    let (mut id, mut secret) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_default = line == "[default]";
            continue;
        }
        if !in_default {
            continue;
        }
        if let Some((k, val)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(val.trim().to_string()),
                "aws_secret_access_key" => secret = Some(val.trim().to_string()),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(i), Some(s)) if !i.is_empty() && !s.is_empty() => Ok((i, s)),
        _ => Err(format!(
            "{} has no [default] aws_access_key_id and aws_secret_access_key",
            path.display()
        )),
    }
}

pub(super) fn validate(
    v: &Validator<'_>,
    raw: super::raw::RawBackup,
) -> Result<Option<BackupConfig>, ConfigError> {
    let Some(url_text) = raw.url.as_deref().filter(|u| !u.is_empty()) else {
        nothing_without_a_store(v, &raw)?;
        return Ok(None);
    };
    let url = parse_url(v, url_text)?;
    let (s3_endpoint, s3_region, s3_credentials_file) = s3_access(
        v,
        matches!(url, StoreUrl::S3 { .. }),
        raw.s3_endpoint,
        raw.s3_region,
        raw.s3_credentials_file,
    )?;
    let ca_file = ca_file(v, raw.ca_file)?;
    let interval = v.duration("backup.interval", raw.interval, "30m")?;
    if interval < Duration::from_secs(5) {
        return Err(v.err("backup.interval", "must be at least 5s"));
    }
    let count =
        |key: &str, value: Option<i64>, default: i64, min: i64| match value.unwrap_or(default) {
            n if (min..=10_000).contains(&n) => Ok(n as usize),
            n => Err(v.err(key, format!("{n} is out of range ({min}-10000)"))),
        };
    let keep_last = count("backup.keep_last", raw.keep_last, 24, 1)?;
    let keep_daily = count("backup.keep_daily", raw.keep_daily, 7, 0)?;
    let age_recipients = age_recipients(v, raw.age_recipients.unwrap_or_default())?;
    let age_identity_file = age_identity_file(v, raw.age_identity_file)?;
    let (delta_interval, delta_max_bytes, delta_max_events) = deltas(
        v,
        raw.delta_interval,
        raw.delta_max_bytes,
        raw.delta_max_events,
    )?;
    Ok(Some(BackupConfig {
        url,
        s3_endpoint,
        s3_region,
        s3_credentials_file,
        ca_file,
        interval,
        keep_last,
        keep_daily,
        age_recipients,
        age_identity_file,
        restore_on_bootstrap: raw.restore_on_bootstrap.unwrap_or(true),
        delta_interval,
        delta_max_bytes,
        delta_max_events,
    }))
}

/// Without `backup.url`: nothing else in `[backup]` means anything without a store.
fn nothing_without_a_store(
    v: &Validator<'_>,
    raw: &super::raw::RawBackup,
) -> Result<(), ConfigError> {
    for (key, set) in [
        ("backup.s3_endpoint", raw.s3_endpoint.is_some()),
        (
            "backup.s3_credentials_file",
            raw.s3_credentials_file.is_some(),
        ),
        (
            "backup.age_recipients",
            raw.age_recipients.as_ref().is_some_and(|r| !r.is_empty()),
        ),
        ("backup.age_identity_file", raw.age_identity_file.is_some()),
    ] {
        if set {
            return Err(v.err(
                key,
                "is set but backup.url is not: set backup.url (s3://BUCKET/PREFIX or file:///PATH)",
            ));
        }
    }
    Ok(())
}

/// The S3 store's endpoint (only with an s3:// URL), region and credentials: a private
/// shared-credentials file, or the AWS_* environment, for an s3:// URL.
fn s3_access(
    v: &Validator<'_>,
    is_s3: bool,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_credentials_file: Option<String>,
) -> Result<(Option<String>, String, Option<PathBuf>), ConfigError> {
    let s3_endpoint = match s3_endpoint.filter(|s| !s.is_empty()) {
        Some(_) if !is_s3 => {
            return Err(v.err("backup.s3_endpoint", "only goes with an s3:// backup.url"))
        }
        Some(e) => Some(parse_endpoint(v, &e)?),
        None => None,
    };
    let s3_region = s3_region.unwrap_or_else(|| "us-east-1".into());
    if s3_region.is_empty()
        || !s3_region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(v.err(
            "backup.s3_region",
            format!("{s3_region:?} is not a region name"),
        ));
    }
    let s3_credentials_file = match s3_credentials_file.filter(|s| !s.is_empty()) {
        Some(p) => {
            let p = v.path("backup.s3_credentials_file", Some(p), "")?;
            v.private_file("backup.s3_credentials_file", &p)?;
            read_credentials(&p).map_err(|m| v.err("backup.s3_credentials_file", m))?;
            Some(p)
        }
        None => None,
    };
    if is_s3
        && s3_credentials_file.is_none()
        && (std::env::var("AWS_ACCESS_KEY_ID").is_err()
            || std::env::var("AWS_SECRET_ACCESS_KEY").is_err())
    {
        return Err(v.err(
            "backup.s3_credentials_file",
            "is required for an s3:// backup.url unless AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set",
        ));
    }
    Ok((s3_endpoint, s3_region, s3_credentials_file))
}

/// `backup.ca_file`: a PEM certificate to trust for the store's HTTPS.
fn ca_file(v: &Validator<'_>, ca_file: Option<String>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(p) = ca_file.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let p = v.path("backup.ca_file", Some(p), "")?;
    let pem = crate::util::fs::read_pem(&p).map_err(|e| {
        v.err(
            "backup.ca_file",
            format!("cannot read {}: {e}", p.display()),
        )
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(v.err(
            "backup.ca_file",
            format!("{} is not a PEM certificate", p.display()),
        ));
    }
    Ok(Some(p))
}

/// `backup.age_recipients`: each an age public key.
fn age_recipients(v: &Validator<'_>, recipients: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for r in &recipients {
        age::x25519::Recipient::from_str(r).map_err(|e| {
            v.err(
                "backup.age_recipients",
                format!("{r:?} is not an age public key (age1...): {e}"),
            )
        })?;
    }
    Ok(recipients)
}

/// `backup.age_identity_file`: private, holding a usable age identity.
fn age_identity_file(
    v: &Validator<'_>,
    file: Option<String>,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(p) = file.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let p = v.path("backup.age_identity_file", Some(p), "")?;
    v.private_file("backup.age_identity_file", &p)?;
    let ids = age::IdentityFile::from_file(p.display().to_string())
        .map_err(|e| v.err("backup.age_identity_file", format!("{}: {e}", p.display())))?;
    if ids.into_identities().is_err() {
        return Err(v.err(
            "backup.age_identity_file",
            format!(
                "{} holds no usable age identity (AGE-SECRET-KEY-1...)",
                p.display()
            ),
        ));
    }
    Ok(Some(p))
}

/// Delta segments: how often one is uploaded (`None`: no deltas), the size that uploads one
/// early, and the events that close a chain.
fn deltas(
    v: &Validator<'_>,
    delta_interval: Option<String>,
    delta_max_bytes: Option<String>,
    delta_max_events: Option<i64>,
) -> Result<(Option<Duration>, u64, u64), ConfigError> {
    // "" turns deltas off; otherwise at least 1s (a new watch each second is the finest that
    // makes sense against etcd).
    let delta_interval = match delta_interval {
        Some(t) if t.is_empty() => None,
        t => {
            let d = v.duration("backup.delta_interval", t, "5s")?;
            if d < Duration::from_secs(1) {
                return Err(v.err(
                    "backup.delta_interval",
                    "must be at least 1s; \"\" turns deltas off",
                ));
            }
            Some(d)
        }
    };
    let max_bytes_text = delta_max_bytes.unwrap_or_else(|| "8MiB".into());
    let delta_max_bytes = crate::decide::defrag::bytes(&max_bytes_text)
        .map_err(|e| v.err("backup.delta_max_bytes", e))?;
    // etcd's default request limit is 1.5 MiB, so one event may be that large; a segment is
    // held in memory while the watch fills it.
    if !(64 * 1024..=256 * 1024 * 1024).contains(&delta_max_bytes) {
        return Err(v.err(
            "backup.delta_max_bytes",
            format!("{max_bytes_text:?} is out of range (64KiB-256MiB)"),
        ));
    }
    let delta_max_events = match delta_max_events.unwrap_or(1_000_000) {
        n if (1..=1_000_000_000).contains(&n) => n as u64,
        n => {
            return Err(v.err(
                "backup.delta_max_events",
                format!("{n} is out of range (1-1000000000)"),
            ))
        }
    };
    Ok((delta_interval, delta_max_bytes, delta_max_events))
}
