//! `etcd.service_manager = "systemd"`: unit + environment file, daemon-reload, and a non-blocking
//! start (a blocking start of an initial member waits for a quorum that the other members cannot
//! form until they start too). etcd's unit is never enabled: only the agent starts it, on every
//! boot, once it has decided from the disk and the peers (an enabled unit would start etcd over a
//! wiped data dir before anyone looked). A unit enabled by an earlier version is disabled.

use super::{Artifact, Owner, RunAs, ServiceManager};
use crate::config::Config;
use crate::error::ConfigError;
use crate::etcd::render::{one_line, EtcdSpec};
use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) struct Systemd {
    unit: Unit,
    env_path: PathBuf,
    binary: PathBuf,
    owner: Owner,
}

impl Systemd {
    pub(crate) fn new(cfg: &Config) -> Self {
        Systemd {
            unit: Unit::new(&cfg.etcd.unit_path),
            env_path: cfg.etcd.env_file.clone(),
            binary: cfg.etcd.binary.clone(),
            owner: Owner::new(cfg),
        }
    }
}

/// The systemd unit, in the spirit of the classic guides, sandboxed: etcd needs no privilege
/// (its ports are above 1024), writes only under its data dir, and reads its certificates.
pub(crate) fn unit_text(
    env_file: &Path,
    binary: &Path,
    unit_path: &Path,
    run_as: &RunAs,
    data_dir: &Path,
) -> Result<String, ConfigError> {
    let env = env_file.display().to_string();
    let binary = binary.display().to_string();
    let data = data_dir.display().to_string();
    one_line("etcd.env_file", &env, unit_path)?;
    one_line("etcd.binary", &binary, unit_path)?;
    one_line("member.data_dir", &data, unit_path)?;
    if data.contains(char::is_whitespace) {
        return Err(ConfigError::new(
            "member.data_dir",
            format!("{} as it would be written", unit_path.display()),
            format!("{data:?} holds a space, which ReadWritePaths= in etcd's unit cannot carry"),
        ));
    }
    let user = match run_as {
        RunAs::Agent => String::new(),
        RunAs::User(u) => format!("User={0}\nGroup={0}\n", u.name),
        RunAs::Missing(name) => format!("User={name}\nGroup={name}\n"),
    };
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
{user}\
EnvironmentFile={env}\n\
ExecStart={binary}\n\
Restart=always\n\
RestartSec=5s\n\
TimeoutStartSec=600\n\
LimitNOFILE=65536\n\
# Sandbox: etcd-bootstrap gives etcd's user the data dir and the server and peer keys before\n\
# every start. etcd writes nowhere else; a flag that names another writable path (a log file)\n\
# needs a drop-in with ReadWritePaths= for it.\n\
ReadWritePaths={data}\n\
ProtectSystem=strict\n\
ProtectHome=yes\n\
PrivateTmp=yes\n\
PrivateDevices=yes\n\
ProtectKernelTunables=yes\n\
ProtectKernelModules=yes\n\
ProtectKernelLogs=yes\n\
ProtectControlGroups=yes\n\
ProtectClock=yes\n\
ProtectHostname=yes\n\
ProtectProc=invisible\n\
ProcSubset=pid\n\
NoNewPrivileges=yes\n\
CapabilityBoundingSet=\n\
AmbientCapabilities=\n\
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
RestrictNamespaces=yes\n\
RestrictRealtime=yes\n\
RestrictSUIDSGID=yes\n\
LockPersonality=yes\n\
MemoryDenyWriteExecute=yes\n\
RemoveIPC=yes\n\
KeyringMode=private\n\
DevicePolicy=closed\n\
UMask=0077\n\
SystemCallArchitectures=native\n\
SystemCallFilter=@system-service\n\
SystemCallFilter=~@privileged\n\
# A call outside the filter fails rather than killing etcd.\n\
SystemCallErrorNumber=EPERM\n",
    ))
}

/// A unit etcd-bootstrap starts and stops (shared with the `container` manager).
pub(super) struct Unit {
    pub path: PathBuf,
    pub name: String,
}

impl Unit {
    pub(crate) fn new(path: &Path) -> Unit {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "etcd.service".into());
        Unit {
            path: path.to_path_buf(),
            name,
        }
    }

    pub(crate) async fn start(&self, changed: bool) -> Result<()> {
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

    pub(crate) async fn stop(&self) -> Result<()> {
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
                unit_text(
                    &self.env_path,
                    &self.binary,
                    &self.unit.path,
                    &self.owner.run_as(),
                    &self.owner.data_dir,
                )?,
            ),
        ])
    }

    fn start(&self, changed: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.owner.prepare()?;
            self.unit.start(changed).await
        })
    }

    fn owner(&self) -> &Owner {
        &self.owner
    }

    fn stop(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.unit.stop())
    }

    fn one_off(&self, env: &[(String, String)]) -> Result<tokio::process::Command> {
        let ids = self.owner.prepare()?;
        Ok(super::etcd_command(&self.binary, env, ids))
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
        let data = Path::new("/var/lib/etcd");
        let text = |env: &Path, bin: &Path, data: &Path| {
            unit_text(env, bin, unit, &RunAs::Missing("etcd".into()), data)
        };
        let good = text(env, Path::new("/usr/bin/etcd"), data).unwrap();
        assert!(good.contains("ExecStart=/usr/bin/etcd\n"));
        assert!(good.contains("User=etcd\nGroup=etcd\n"));
        assert!(good.contains("ReadWritePaths=/var/lib/etcd\n"));
        let bad = Path::new("/usr/bin/etcd\nExecStartPre=/bin/sh -c true");
        assert_eq!(text(env, bad, data).unwrap_err().key, "etcd.binary");
        let bad_env = Path::new("/etc/etcd/etcd.env\0");
        assert_eq!(
            text(bad_env, Path::new("/usr/bin/etcd"), data)
                .unwrap_err()
                .key,
            "etcd.env_file"
        );
        for bad_data in ["/var/lib/my etcd", "/var/lib/etcd\nUser=root"] {
            assert_eq!(
                text(env, Path::new("/usr/bin/etcd"), Path::new(bad_data))
                    .unwrap_err()
                    .key,
                "member.data_dir"
            );
        }
    }
}
