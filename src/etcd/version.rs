//! Which etcd release will run: read from the binary (`etcd --version`) or from the image's tag.
//! The flags etcd takes change between releases (3.6 turned the `--experimental-*` switches into
//! `--feature-gates`), so what is rendered depends on it.

use crate::config::{Config, ServiceManagerKind};
use std::path::Path;
use std::time::Duration;

pub(crate) use crate::model::etcd_version::EtcdVersion;

impl EtcdVersion {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_that_is_not_there_is_unknown() {
        assert_eq!(EtcdVersion::of_binary(Path::new("/nonexistent/etcd")), None);
    }
}
