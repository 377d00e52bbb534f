//! `etcd.service_manager = "systemd"`: unit + environment file, daemon-reload, and a non-blocking
//! start (a blocking start of an initial member waits for a quorum that the other members cannot
//! form until they start too). etcd's unit is never enabled: only the agent starts it, on every
//! boot, once it has decided from the disk and the peers (an enabled unit would start etcd over a
//! wiped data dir before anyone looked). A unit enabled by an earlier version is disabled.

use super::ServiceManager;
use crate::config::Config;
use crate::discovery::BoxFuture;
use crate::util::fs as fsutil;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

pub struct Systemd {
    unit_path: PathBuf,
    env_path: PathBuf,
    unit_name: String,
}

impl Systemd {
    pub fn new(cfg: &Config) -> Self {
        let unit_name = cfg
            .etcd
            .unit_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "etcd.service".into());
        Systemd {
            unit_path: cfg.etcd.unit_path.clone(),
            env_path: cfg.etcd.env_file.clone(),
            unit_name,
        }
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
    fn describe(&self) -> String {
        format!("systemd unit {}", self.unit_name)
    }

    fn install(&self, env_file: &str, unit: &str) -> Result<bool> {
        let env = fsutil::write_atomic(&self.env_path, env_file.as_bytes(), 0o644)?;
        let unit_written = fsutil::write_atomic(&self.unit_path, unit.as_bytes(), 0o644)?;
        Ok(env.changed() || unit_written.changed())
    }

    fn start(&self, changed: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            systemctl(&["daemon-reload"]).await?;
            // "static" (no [Install] section, as rendered) exits 0 too: only "enabled" counts.
            let enabled = systemctl(&["is-enabled", &self.unit_name]).await;
            if enabled.as_deref().is_ok_and(|s| s == "enabled") {
                tracing::warn!(unit = %self.unit_name, "etcd's unit is enabled; disabling it: only etcd-bootstrap starts etcd");
                systemctl(&["disable", &self.unit_name]).await?;
            }
            let active = systemctl(&["is-active", &self.unit_name]).await.is_ok();
            if active && changed {
                tracing::info!(unit = %self.unit_name, "configuration changed; restarting etcd");
                systemctl(&["restart", "--no-block", &self.unit_name]).await?;
            } else {
                systemctl(&["start", "--no-block", &self.unit_name]).await?;
            }
            Ok(())
        })
    }

    fn stop(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            systemctl(&["stop", &self.unit_name]).await?;
            Ok(())
        })
    }
}
