//! `etcd.service_manager = "systemd"`: unit + environment file, daemon-reload, and a non-blocking
//! start (a blocking start of an initial member waits for a quorum that the other members cannot
//! form until they start too). etcd's unit is never enabled: only the agent starts it, on every
//! boot, once it has decided from the disk and the peers (an enabled unit would start etcd over a
//! wiped data dir before anyone looked). A unit enabled by an earlier version is disabled.

use super::{Artifact, ServiceManager};
use crate::config::Config;
use crate::error::ConfigError;
use crate::etcd::render::{one_line, EtcdSpec};
use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Systemd {
    unit: Unit,
    env_path: PathBuf,
    binary: PathBuf,
}

impl Systemd {
    pub fn new(cfg: &Config) -> Self {
        Systemd {
            unit: Unit::new(&cfg.etcd.unit_path),
            env_path: cfg.etcd.env_file.clone(),
            binary: cfg.etcd.binary.clone(),
        }
    }
}

/// The systemd unit, in the spirit of the classic guides.
pub fn unit_text(env_file: &Path, binary: &Path, unit_path: &Path) -> Result<String, ConfigError> {
    let env = env_file.display().to_string();
    let binary = binary.display().to_string();
    one_line("etcd.env_file", &env, unit_path)?;
    one_line("etcd.binary", &binary, unit_path)?;
    Ok(format!(
        "# Written by etcd-bootstrap: edits are overwritten.\n\
[Unit]\n\
Description=etcd key-value store (managed by etcd-bootstrap)\n\
Documentation=https://etcd.io/docs/\n\
After=network-online.target\n\
Wants=network-online.target\n\
\n\
[Service]\n\
# etcd signals READY only once it has joined through raft, which needs a quorum: joining\n\
# members can take a while, so the start timeout is generous.\n\
# No [Install] section: etcd-bootstrap starts this unit on every boot after it has looked at\n\
# the data dir and the peers; systemd never starts it on its own.\n\
Type=notify\n\
EnvironmentFile={env}\n\
ExecStart={binary}\n\
Restart=always\n\
RestartSec=5s\n\
TimeoutStartSec=600\n\
LimitNOFILE=65536\n",
    ))
}

/// A unit etcd-bootstrap starts and stops (shared with the `container` manager).
pub(super) struct Unit {
    pub path: PathBuf,
    pub name: String,
}

impl Unit {
    pub fn new(path: &Path) -> Unit {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "etcd.service".into());
        Unit {
            path: path.to_path_buf(),
            name,
        }
    }

    pub async fn start(&self, changed: bool) -> Result<()> {
        systemctl(&["daemon-reload"]).await?;
        // "static" (no [Install] section, as rendered) exits 0 too: only "enabled" counts.
        let enabled = systemctl(&["is-enabled", &self.name]).await;
        if enabled.as_deref().is_ok_and(|s| s == "enabled") {
            tracing::warn!(unit = %self.name, "etcd's unit is enabled; disabling it: only etcd-bootstrap starts etcd");
            systemctl(&["disable", &self.name]).await?;
        }
        let active = systemctl(&["is-active", &self.name]).await.is_ok();
        if active && changed {
            tracing::info!(unit = %self.name, "configuration changed; restarting etcd");
            systemctl(&["restart", "--no-block", &self.name]).await?;
        } else {
            systemctl(&["start", "--no-block", &self.name]).await?;
        }
        Ok(())
    }

    pub async fn stop(&self) -> Result<()> {
        systemctl(&["stop", &self.name]).await?;
        Ok(())
    }
}

async fn systemctl(args: &[&str]) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("systemctl")
            .args(args)
            .output(),
    )
    .await
    .with_context(|| format!("systemctl {} did not finish in 60 s", args.join(" ")))?
    .with_context(|| format!("running systemctl {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl ServiceManager for Systemd {
    fn reconfigure(&mut self, cfg: &Config) {
        *self = Self::new(cfg);
    }

    fn describe(&self) -> String {
        format!("systemd unit {}", self.unit.name)
    }

    fn render(&self, spec: &EtcdSpec) -> Result<Vec<Artifact>, ConfigError> {
        Ok(vec![
            Artifact::new(&self.env_path, 0o644, spec.env_text()),
            Artifact::new(
                &self.unit.path,
                0o644,
                unit_text(&self.env_path, &self.binary, &self.unit.path)?,
            ),
        ])
    }

    fn start(&self, changed: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.unit.start(changed))
    }

    fn stop(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.unit.stop())
    }

    fn one_off(&self, env: &[(String, String)]) -> Result<tokio::process::Command> {
        Ok(super::etcd_command(&self.binary, env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path changed after validation cannot add a line to the unit.
    #[test]
    fn a_control_character_never_reaches_the_unit() {
        let unit = Path::new("/etc/systemd/system/etcd.service");
        let env = Path::new("/etc/etcd/etcd.env");
        assert!(unit_text(env, Path::new("/usr/bin/etcd"), unit)
            .unwrap()
            .contains("ExecStart=/usr/bin/etcd\n"));
        let bad = Path::new("/usr/bin/etcd\nExecStartPre=/bin/sh -c true");
        assert_eq!(unit_text(env, bad, unit).unwrap_err().key, "etcd.binary");
        let bad_env = Path::new("/etc/etcd/etcd.env\0");
        assert_eq!(
            unit_text(bad_env, Path::new("/usr/bin/etcd"), unit)
                .unwrap_err()
                .key,
            "etcd.env_file"
        );
    }
}
