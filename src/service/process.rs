//! `etcd.service_manager = "process"`: etcd as a supervised child (containers, tests, the lab).
//! It gets exactly the environment of the environment file, as under systemd; an unexpected exit
//! restarts it with backoff; stopping sends SIGTERM, then SIGKILL after a grace period. If
//! etcd-bootstrap itself dies, the kernel sends etcd SIGTERM (PR_SET_PDEATHSIG), so a re-run never
//! finds a stray etcd holding the data dir.

use super::ServiceManager;
use crate::config::Config;
use crate::discovery::BoxFuture;
use crate::etcd::render;
use crate::util::fs as fsutil;
use crate::util::retry::Backoff;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const STOP_GRACE: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Process {
    binary: PathBuf,
    env_path: PathBuf,
    stop_tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Process {
    pub fn new(cfg: &Config) -> Self {
        Process {
            binary: cfg.etcd.binary.clone(),
            env_path: cfg.etcd.env_file.clone(),
            stop_tx: watch::channel(false).0,
            task: Mutex::new(None),
        }
    }
}

fn spawn_etcd(
    binary: &PathBuf,
    env: &[(String, String)],
) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Between restarts of etcd: 1 s doubling to 30 s, with jitter; reset after a minute of running.
fn restart_backoff() -> Backoff {
    Backoff::new(Duration::from_secs(1), MAX_BACKOFF)
}

async fn supervise(binary: PathBuf, env: Vec<(String, String)>, mut stop: watch::Receiver<bool>) {
    let mut backoff = restart_backoff();
    loop {
        if *stop.borrow() {
            return;
        }
        let started = std::time::Instant::now();
        let mut child = match spawn_etcd(&binary, &env) {
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
    fn describe(&self) -> String {
        format!("supervised process {}", self.binary.display())
    }

    fn install(&self, env_file: &str, _unit: &str) -> Result<bool> {
        Ok(fsutil::write_atomic(&self.env_path, env_file.as_bytes(), 0o644)?.changed())
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
            let mut task = self.task.lock().expect("poisoned");
            if task.as_ref().is_some_and(|t| !t.is_finished()) {
                return Ok(());
            }
            self.stop_tx.send_replace(false);
            *task = Some(tokio::spawn(supervise(
                self.binary.clone(),
                env,
                self.stop_tx.subscribe(),
            )));
            Ok(())
        })
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
