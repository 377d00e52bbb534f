//! Which etcd release will run: read from the binary (`etcd --version`) or from the image's tag.
//! The flags etcd takes change between releases (3.6 turned the `--experimental-*` switches into
//! `--feature-gates`), so what is rendered depends on it.

use crate::config::{Config, ServiceManagerKind};
use std::fmt;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EtcdVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl EtcdVersion {
    pub(crate) const fn new(major: u32, minor: u32, patch: u32) -> Self {
        EtcdVersion {
            major,
            minor,
            patch,
        }
    }

    /// `3.5.30` (also `v3.5.30`, `3.5.15-0`: what follows the patch's digits is ignored).
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().trim_start_matches('v').splitn(3, '.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        Some(EtcdVersion::new(
            parts.next()??,
            parts.next()??,
            parts.next()??,
        ))
    }

    /// From `etcd --version`'s output ("etcd Version: 3.5.30").
    pub(crate) fn from_version_output(out: &str) -> Option<Self> {
        out.lines()
            .find_map(|l| l.strip_prefix("etcd Version: "))
            .and_then(EtcdVersion::parse)
    }

    /// From an image tag such as `registry.k8s.io/etcd:3.5.15-0` or `quay.io/coreos/etcd:v3.5.30`;
    /// None for a digest only or a tag like `latest`.
    pub(crate) fn from_image(image: &str) -> Option<Self> {
        let image = image.split('@').next()?;
        let last = image.rsplit('/').next()?;
        EtcdVersion::parse(last.split_once(':')?.1)
    }

    /// Runs `binary --version`, bounded: a binary that hangs counts as unknown.
    pub(crate) fn of_binary(binary: &Path) -> Option<Self> {
        let out = crate::util::process::output_within(
            std::process::Command::new(binary).arg("--version"),
            Duration::from_secs(10),
        )
        .ok()?;
        EtcdVersion::from_version_output(&String::from_utf8_lossy(&out.stdout))
    }

    /// The release this member's etcd runs: the image's tag for the container and static-pod
    /// managers, the binary's own answer otherwise. None when it cannot be told (logged once per
    /// binary or image).
    ///
    /// Remembered while the binary (path, size, modification time) or the image stays the same:
    /// every healthy heal tick renders etcd's files to compare them with what runs, and need not
    /// start `etcd --version` each time; a new binary installed at the same path is asked again.
    pub(crate) fn of_config(cfg: &Config) -> Option<Self> {
        use std::sync::Mutex;
        static SEEN: Mutex<Option<(String, Option<EtcdVersion>)>> = Mutex::new(None);
        let key = match cfg.etcd.service_manager {
            ServiceManagerKind::Container | ServiceManagerKind::StaticPod => {
                format!("image {}", cfg.etcd.image.as_deref().unwrap_or(""))
            }
            ServiceManagerKind::Systemd | ServiceManagerKind::Process => {
                let meta = std::fs::metadata(&cfg.etcd.binary).ok();
                format!(
                    "binary {} {:?} {:?}",
                    cfg.etcd.binary.display(),
                    meta.as_ref().map(|m| m.len()),
                    meta.and_then(|m| m.modified().ok())
                )
            }
        };
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, v)) = seen.as_ref() {
            if *k == key {
                return *v;
            }
        }
        let version = match cfg.etcd.service_manager {
            ServiceManagerKind::Container | ServiceManagerKind::StaticPod => {
                cfg.etcd.image.as_deref().and_then(EtcdVersion::from_image)
            }
            ServiceManagerKind::Systemd | ServiceManagerKind::Process => {
                EtcdVersion::of_binary(&cfg.etcd.binary)
            }
        };
        if version.is_none() {
            tracing::warn!(binary = %cfg.etcd.binary.display(), image = cfg.etcd.image.as_deref().unwrap_or(""), "cannot tell which etcd release will run (no `etcd --version` answer, or an image tag without a version): etcd's corruption checks are not switched on; set them in [etcd.flags]");
        }
        *seen = Some((key, version));
        version
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_output_tags_and_text() {
        let v = EtcdVersion::new;
        assert_eq!(
            EtcdVersion::from_version_output(
                "etcd Version: 3.5.30\nGit SHA: abc\nGo Version: go1.23\n"
            ),
            Some(v(3, 5, 30))
        );
        assert_eq!(EtcdVersion::from_version_output("etcd 3.5.30"), None);
        for (image, want) in [
            ("registry.k8s.io/etcd:3.5.15-0", Some(v(3, 5, 15))),
            ("quay.io/coreos/etcd:v3.5.30", Some(v(3, 5, 30))),
            ("localhost:5000/etcd:3.4.23", Some(v(3, 4, 23))),
            ("localhost:5000/etcd", None),
            ("etcd:latest", None),
            ("etcd@sha256:0123", None),
            ("etcd:3.5", None),
        ] {
            assert_eq!(EtcdVersion::from_image(image), want, "{image}");
        }
        assert!(v(3, 5, 5) > v(3, 4, 23) && v(3, 6, 0) > v(3, 5, 30));
        assert_eq!(v(3, 6, 1).to_string(), "3.6.1");
    }

    #[test]
    fn a_binary_that_is_not_there_is_unknown() {
        assert_eq!(EtcdVersion::of_binary(Path::new("/nonexistent/etcd")), None);
    }
}
