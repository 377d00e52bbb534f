//! `[etcd]`: the etcd program and how it is run: the binary (or a release to install), the
//! service manager and its files, the image for the managers that run one, and extra flags. The
//! section's structs and its validation live together; every bad value is one line naming its key.

use super::{is_sha256_hex, Validator};
use crate::error::ConfigError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    pub(crate) fn runs_image(self) -> bool {
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
    pub(crate) fn program(self) -> &'static str {
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
    /// The user etcd runs as (`etcd::user`): "root", or "" (the `process` manager's default),
    /// leave it the agent's own user; see `runs_as`.
    pub user: String,
    /// Extra etcd flags, `flag-name -> value` as etcd takes it on its command line.
    pub flags: BTreeMap<String, String>,
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

pub(super) fn validate(
    v: &Validator<'_>,
    raw: super::raw::RawEtcd,
) -> Result<EtcdConfig, ConfigError> {
    let service_manager = service_manager(v, raw.service_manager.as_deref())?;
    let image = image(v, raw.image, service_manager)?;
    let container_runtime = container_runtime(v, raw.container_runtime.as_deref())?;
    let manifest_path = v.path(
        "etcd.manifest_path",
        raw.manifest_path,
        "/etc/kubernetes/manifests/etcd.yaml",
    )?;
    let flags = flags(v, raw.flags.unwrap_or_default())?;
    let user = validate_user(v, raw.user, service_manager)?;
    let install_dir = v.path("etcd.install_dir", raw.install_dir, "/usr/local/bin")?;
    let (download_url, sha256) = download(v, raw.download_url, raw.sha256)?;
    let default_binary = match download_url {
        Some(_) => install_dir.join("etcd").display().to_string(),
        None => "/usr/bin/etcd".to_string(),
    };
    Ok(EtcdConfig {
        binary: v.path("etcd.binary", raw.binary, &default_binary)?,
        download_url,
        sha256: sha256.map(|s| s.to_ascii_lowercase()),
        install_dir,
        service_manager,
        unit_path: v.path(
            "etcd.unit_path",
            raw.unit_path,
            "/etc/systemd/system/etcd.service",
        )?,
        env_file: v.path("etcd.env_file", raw.env_file, "/etc/etcd/etcd.env")?,
        image,
        container_runtime,
        manifest_path,
        user,
        flags,
    })
}

/// `etcd.service_manager`, `systemd` when unset.
fn service_manager(
    v: &Validator<'_>,
    manager: Option<&str>,
) -> Result<ServiceManagerKind, ConfigError> {
    // "" is the default too, so that a template can leave the choice empty.
    match manager.filter(|m| !m.is_empty()).unwrap_or("systemd") {
        "systemd" => Ok(ServiceManagerKind::Systemd),
        "process" => Ok(ServiceManagerKind::Process),
        "container" => Ok(ServiceManagerKind::Container),
        "static-pod" => Ok(ServiceManagerKind::StaticPod),
        m => Err(v.err(
            "etcd.service_manager",
            format!("{m:?} is not one of \"systemd\", \"process\", \"container\", \"static-pod\""),
        )),
    }
}

/// `etcd.image`: an image reference, required by the managers that run one.
fn image(
    v: &Validator<'_>,
    image: Option<String>,
    manager: ServiceManagerKind,
) -> Result<Option<String>, ConfigError> {
    let image = image.filter(|s| !s.is_empty());
    if let Some(image) = &image {
        if !is_image_reference(image) {
            return Err(v.err(
                "etcd.image",
                format!(
                    "{image:?} is not an image reference such as \"registry.k8s.io/etcd:3.5.15-0\""
                ),
            ));
        }
    } else if manager.runs_image() {
        return Err(v.err(
            "etcd.image",
            "is required with etcd.service_manager = \"container\" or \"static-pod\" (the image that holds etcd, e.g. \"registry.k8s.io/etcd:3.5.15-0\")",
        ));
    }
    Ok(image)
}

/// `etcd.container_runtime`; empty: whichever is installed (looked up at run time).
fn container_runtime(
    v: &Validator<'_>,
    runtime: Option<&str>,
) -> Result<Option<ContainerRuntime>, ConfigError> {
    match runtime.unwrap_or("") {
        "" => Ok(None),
        "podman" => Ok(Some(ContainerRuntime::Podman)),
        "docker" => Ok(Some(ContainerRuntime::Docker)),
        r => Err(v.err(
            "etcd.container_runtime",
            format!(
                "{r:?} is not one of \"podman\", \"docker\" (or empty: whichever is installed)"
            ),
        )),
    }
}

/// `[etcd.flags]`: etcd flag names, none of those the bootstrapper sets, with plain values.
fn flags(
    v: &Validator<'_>,
    raw: BTreeMap<String, toml::Value>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut flags = BTreeMap::new();
    for (flag, value) in raw {
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
    Ok(flags)
}

/// `etcd.download_url` and `etcd.sha256`: both or neither; an http(s) URL and a SHA-256.
fn download(
    v: &Validator<'_>,
    download_url: Option<String>,
    sha256: Option<String>,
) -> Result<(Option<String>, Option<String>), ConfigError> {
    let download_url = download_url.filter(|s| !s.is_empty());
    let sha256 = sha256.filter(|s| !s.is_empty());
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
                v.merged.source_of("etcd.download_url"),
                "is required with etcd.download_url: nothing is installed without a checksum",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "etcd.download_url",
                v.merged.source_of("etcd.sha256"),
                "is required with etcd.sha256 (or remove etcd.sha256)",
            ))
        }
        (None, None) => {}
    }
    Ok((download_url, sha256))
}

/// `etcd.user`: "etcd" by default, except with the `process` manager (there etcd is the agent's
/// child, and runs as the agent's user unless a user is named); "root" keeps etcd as root. A
/// name as `useradd` takes it, since it may be created.
fn validate_user(
    v: &Validator<'_>,
    raw: Option<String>,
    manager: ServiceManagerKind,
) -> Result<String, ConfigError> {
    let name = match raw.as_deref() {
        None | Some("") if manager == ServiceManagerKind::Process => return Ok(String::new()),
        None | Some("") => "etcd",
        Some(name) => name,
    };
    let valid = name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return Err(v.err(
            "etcd.user",
            format!("{name:?} is not a user name (lowercase letters, digits, '_' and '-', at most 32, starting with a letter or '_'), e.g. \"etcd\""),
        ));
    }
    Ok(name.to_string())
}

impl EtcdConfig {
    /// The unprivileged user etcd runs as, or None when it runs as the agent's own user.
    pub(crate) fn runs_as(&self) -> Option<&str> {
        Some(self.user.as_str()).filter(|u| !u.is_empty() && *u != "root")
    }
}

/// `[registry[:port]/]path[:tag][@sha256:digest]`, loosely: the runtime checks the rest. It
/// lands in a unit's command line and a manifest, so nothing but the characters a reference
/// can hold.
pub(crate) fn is_image_reference(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && !s.starts_with(['-', '/', ':', '@', '.'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{setup, GOOD};
    use crate::config::Config;
    use std::path::PathBuf;

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

    /// "etcd" unless the agent supervises etcd itself; "root" opts out; a name that could not
    /// be a user (or would reach useradd as an option) is refused.
    #[test]
    fn etcd_user_by_manager() {
        // manager, etcd.user as written, the user etcd runs as (Err: refused, naming the key)
        type Want = Result<Option<&'static str>, ()>;
        let long = "x".repeat(33);
        let cases: &[(&str, Option<&str>, Want)] = &[
            ("systemd", None, Ok(Some("etcd"))),
            ("systemd", Some(""), Ok(Some("etcd"))),
            ("static-pod", None, Ok(Some("etcd"))),
            ("process", None, Ok(None)),
            ("process", Some("etcd2"), Ok(Some("etcd2"))),
            ("systemd", Some("root"), Ok(None)),
            ("systemd", Some("-o"), Err(())),
            ("systemd", Some("Etcd"), Err(())),
            ("systemd", Some("a b"), Err(())),
            ("systemd", Some(&long), Err(())),
        ];
        for (manager, user, want) in cases {
            let image = if *manager == "static-pod" {
                "image = \"registry.k8s.io/etcd:3.5.15-0\"\n"
            } else {
                ""
            };
            let user_line = user.map(|u| format!("user = {u:?}\n")).unwrap_or_default();
            let (_d, p) = setup(&GOOD.replace(
                "[etcd.flags]",
                &format!("[etcd]\nservice_manager = {manager:?}\n{image}{user_line}[etcd.flags]"),
            ));
            match (Config::load(Some(&p), &[]), want) {
                (Ok(c), Ok(w)) => assert_eq!(c.etcd.runs_as(), *w, "{manager} {user:?}"),
                (Err(e), Err(())) => assert_eq!(e.key, "etcd.user", "{manager} {user:?}"),
                (got, _) => panic!("{manager} {user:?}: {:?}", got.map(|c| c.etcd.user)),
            }
        }
    }
}
