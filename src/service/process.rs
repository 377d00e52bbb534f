//! `etcd.service_manager = "process"`: etcd as a supervised child (containers, tests, the lab).
//! It gets exactly the environment of the environment file, as under systemd; an unexpected exit
//! restarts it with backoff; stopping sends SIGTERM, then SIGKILL after a grace period. If
//! etcd-bootstrap itself dies, the kernel sends etcd SIGTERM (PR_SET_PDEATHSIG), so a re-run never
//! finds a stray etcd holding the data dir.

use super::{Artifact, Owner, ServiceManager};
use crate::config::Config;
use crate::error::ConfigError;
use crate::etcd::render::{self, EtcdSpec};
use crate::util::retry::Backoff;
use anyhow::{Context, Result};
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const STOP_GRACE: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The environment file's comment that names the binary (`render`).
const BINARY_LINE: &str = "# etcd binary: ";

/// The binary an environment file written by `render` names.
pub(super) fn binary_in(env_text: &str) -> Option<PathBuf> {
    env_text
        .lines()
        .find_map(|l| l.strip_prefix(BINARY_LINE))
        .map(|p| PathBuf::from(p.trim_end()))
}

pub(crate) struct Process {
    binary: PathBuf,
    env_path: PathBuf,
    stop_tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    owner: Owner,
}

impl Process {
    pub(crate) fn new(cfg: &Config) -> Self {
        Process {
            binary: cfg.etcd.binary.clone(),
            env_path: cfg.etcd.env_file.clone(),
            stop_tx: watch::channel(false).0,
            task: Mutex::new(None),
            owner: Owner::new(cfg),
        }
    }
}

fn spawn_etcd(
    binary: &std::path::Path,
    env: &[(String, String)],
    ids: Option<(u32, u32)>,
) -> std::io::Result<tokio::process::Child> {
    super::etcd_command(binary, env, ids).spawn()
}

/// Between restarts of etcd: 1 s doubling to 30 s, with jitter; reset after a minute of running.
fn restart_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), MAX_BACKOFF)
}

async fn supervise(
    binary: PathBuf,
    env: Vec<(String, String)>,
    ids: Option<(u32, u32)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = restart_backoff();
    loop {
        if *stop.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        let mut child = match spawn_etcd(&binary, &env, ids) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(binary = %binary.display(), error = %e, "cannot start etcd");
                tokio::select! {
                    _ = backoff.wait() => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        tracing::info!(pid = child.id(), "etcd started");
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if *stop.borrow() {
                    return;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = restart_backoff();
                }
                let delay = backoff.next_delay();
                tracing::warn!(%status, retry_in = ?delay, "etcd exited; restarting it");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
            _ = stop.changed() => {
                if let Some(pid) = child.id() {
                    // SAFETY: plain kill(2) on our own child's pid, which has not been reaped.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(_) => tracing::info!("etcd stopped"),
                    Err(_) => {
                        tracing::warn!("etcd did not stop within {STOP_GRACE:?}; killing it");
                        let _ = child.kill().await;
                    }
                }
                return;
            }
        }
    }
}

impl ServiceManager for Process {
    /// The running child (and its supervisor, which restarts it with the binary and environment
    /// it was started with) is kept; the next start uses the new binary and environment file.
    fn reconfigure(&mut self, cfg: &Config) {
        self.binary = cfg.etcd.binary.clone();
        self.env_path = cfg.etcd.env_file.clone();
        self.owner = Owner::new(cfg);
    }

    fn describe(&self) -> String {
        format!("supervised process {}", self.binary.display())
    }

    /// The environment file, with the binary it is run with in a comment: the file says all
    /// that etcd runs with, so that putting back a previous file (a rollout's rollback) puts
    /// back the previous binary too.
    fn render(&self, spec: &EtcdSpec) -> Result<Vec<Artifact>, ConfigError> {
        render::one_line(
            "etcd.binary",
            &self.binary.display().to_string(),
            &self.env_path,
        )?;
        let text = format!(
            "{}{BINARY_LINE}{}\n",
            spec.env_text(),
            self.binary.display()
        );
        Ok(vec![Artifact::new(&self.env_path, 0o644, text)])
    }

    fn start(&self, changed: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let running = self
                .task
                .lock()
                .expect("poisoned")
                .as_ref()
                .is_some_and(|t| !t.is_finished());
            if running && changed {
                tracing::info!("configuration changed; restarting etcd");
                self.stop().await?;
            }
            let text = std::fs::read_to_string(&self.env_path)
                .with_context(|| format!("reading {}", self.env_path.display()))?;
            let env = render::parse_env(&text);
            let binary = binary_in(&text).unwrap_or_else(|| self.binary.clone());
            let ids = self.owner.prepare()?;
            let mut task = self.task.lock().expect("poisoned");
            if task.as_ref().is_some_and(|t| !t.is_finished()) {
                return Ok(());
            }
            self.stop_tx.send_replace(false);
            *task = Some(tokio::spawn(supervise(
                binary,
                env,
                ids,
                self.stop_tx.subscribe(),
            )));
            Ok(())
        })
    }

    fn one_off(&self, env: &[(String, String)]) -> Result<tokio::process::Command> {
        let ids = self.owner.prepare()?;
        Ok(super::etcd_command(&self.binary, env, ids))
    }

    fn owner(&self) -> &Owner {
        &self.owner
    }

    fn stop(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.stop_tx.send_replace(true);
            let task = self.task.lock().expect("poisoned").take();
            if let Some(t) = task {
                let _ = t.await;
            }
            Ok(())
        })
    }
}
