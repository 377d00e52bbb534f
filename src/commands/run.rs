//! `etcd-bootstrap run`: observe, decide, act; then keep etcd running and watched.

use crate::config::{Config, ServiceManagerKind};
use crate::decide::{self, Action, WaitReason};
use crate::error::{ConfigError, Refused};
use crate::etcd::{client, render};
use crate::observe::{self, Observer};
use crate::service::{self, ServiceManager};
use crate::tls::ClientMaterial;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

pub async fn run(cfg: Config, once: bool) -> Result<()> {
    if once && cfg.etcd.service_manager == ServiceManagerKind::Process {
        return Err(ConfigError::new(
            "--once",
            "command line",
            "needs etcd.service_manager = \"systemd\": with \"process\" etcd lives only as long as etcd-bootstrap",
        )
        .into());
    }
    if !cfg.etcd.binary.is_file() {
        return Err(ConfigError::new(
            "etcd.binary",
            "",
            format!(
                "{} does not exist; install etcd or point etcd.binary at it",
                cfg.etcd.binary.display()
            ),
        )
        .into());
    }
    let mut shutdown = Shutdown::new()?;
    let manager = service::manager(&cfg);
    let started = Instant::now();

    let material = tokio::select! {
        r = bring_up(&cfg, manager.as_ref()) => r?,
        _ = shutdown.wait() => {
            tracing::info!("signal received before etcd was started; exiting");
            return Ok(());
        }
    };
    let local = local_endpoint(&cfg);
    let deadline = Instant::now() + cfg.discovery.timeout;
    tokio::select! {
        r = wait_healthy(&local, &material, deadline) => {
            if let Err(e) = r {
                let _ = manager.stop().await;
                return Err(e);
            }
        }
        _ = shutdown.wait() => {
            manager.stop().await?;
            return Ok(());
        }
    }
    tracing::info!(elapsed = ?started.elapsed(), "local member is healthy");
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("etcd member healthy"),
    ]);
    if once {
        return Ok(());
    }
    watch(&cfg, manager.as_ref(), &material, &mut shutdown).await
}

/// Decide what to do and start etcd accordingly. Returns the client material to talk to it.
async fn bring_up(cfg: &Config, manager: &dyn ServiceManager) -> Result<ClientMaterial> {
    let local = observe::local_state(&cfg.member.data_dir);
    let tls_paths = crate::tls::TlsPaths::new(&cfg.tls.dir);
    // The restart path: data and configuration are there; nothing to discover or ask.
    if local.has_wal && cfg.etcd.env_file.is_file() && tls_paths.client_cert.is_file() {
        tracing::info!(data_dir = %cfg.member.data_dir.display(), "WAL present: restarting etcd from its own data");
        let env = std::fs::read_to_string(&cfg.etcd.env_file)
            .with_context(|| format!("reading {}", cfg.etcd.env_file.display()))?;
        let changed = manager.install(&env, &render::unit(cfg))?;
        manager.start(changed).await?;
        return ClientMaterial::from_dir(&cfg.tls.dir);
    }

    let observer = Observer::new(cfg)?;
    let deadline = Instant::now() + cfg.discovery.timeout;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let observed = match observer.observe().await {
            Ok(o) => o,
            Err(e)
                if e.chain()
                    .any(|c| c.is::<Refused>() || c.is::<ConfigError>()) =>
            {
                return Err(e)
            }
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(e.context(format!(
                        "gave up after discovery.timeout ({})",
                        crate::config::format_duration(cfg.discovery.timeout)
                    )));
                }
                tracing::warn!(error = %format!("{e:#}"), "observation failed; retrying");
                pause(attempt).await;
                continue;
            }
        };
        tracing::info!(
            peers = %observed.discovered.describe(),
            stable = observed.obs.stable,
            me = %format!("{}={}", observed.me.name, observed.me.peer_url(cfg)),
            "observed"
        );
        let action = decide::decide(&observed.obs);
        tracing::info!(action = %describe(&action), "decided");
        let state = match action {
            Action::Restart => render::ClusterState::FromDisk,
            Action::BootstrapNew(ic) => render::ClusterState::New(ic),
            Action::Wait(reason) => {
                if Instant::now() >= deadline {
                    let msg = format!(
                        "gave up after discovery.timeout ({}): {reason}",
                        crate::config::format_duration(cfg.discovery.timeout)
                    );
                    if matches!(reason, WaitReason::NotInSet { .. }) {
                        return Err(Refused(msg).into());
                    }
                    bail!("{msg}; fix discovery (DNS records, discovery.peers) or raise discovery.timeout, then re-run");
                }
                notify(&[sd_notify::NotifyState::Status(&format!(
                    "waiting: {reason}"
                ))]);
                pause(attempt).await;
                continue;
            }
            Action::Refuse(why) => return Err(Refused(why).into()),
            Action::Join { .. } | Action::AdoptUnstarted { .. } | Action::ReplaceStale { .. } => {
                bail!(
                    "a running cluster answered and this node must join it ({}), which this version does not support yet; nothing was changed",
                    describe(&action)
                );
            }
        };
        let material = observed.tls.client_material(&cfg.tls.dir)?;
        for (path, written) in observed.tls.apply()? {
            tracing::info!(file = %path.display(), ?written, "certificate material written");
        }
        let env = render::env_file(cfg, &observed.me, &state);
        let changed = manager.install(&env, &render::unit(cfg))?;
        tracing::info!(manager = %manager.describe(), changed, "starting etcd");
        manager.start(changed).await?;
        return Ok(material);
    }
}

/// Backoff with jitter between observations: 1 s, 2 s, then 3-5 s.
async fn pause(attempt: u32) {
    let base = match attempt {
        0 | 1 => 1000,
        2 => 2000,
        _ => 3000,
    };
    let jitter = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % 1000) as u64;
    let extra = if attempt > 2 { jitter * 2 } else { jitter / 2 };
    tokio::time::sleep(Duration::from_millis(base + extra)).await;
}

pub fn local_endpoint(cfg: &Config) -> String {
    format!("https://127.0.0.1:{}", cfg.member.client_port)
}

async fn wait_healthy(endpoint: &str, material: &ClientMaterial, deadline: Instant) -> Result<()> {
    let mut last = String::new();
    loop {
        match client::check_health(endpoint, material).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let msg = format!("{e:#}");
                if msg != last {
                    tracing::info!(%endpoint, state = %msg, "waiting for the local member to be healthy");
                    last = msg;
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("the local member did not become healthy in time (last: {last}); see etcd's log");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Keep etcd running; report health changes. (Self-healing builds on this loop.)
async fn watch(
    cfg: &Config,
    manager: &dyn ServiceManager,
    material: &ClientMaterial,
    shutdown: &mut Shutdown,
) -> Result<()> {
    let endpoint = local_endpoint(cfg);
    let mut healthy = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.heal.interval) => {}
            _ = shutdown.wait() => {
                tracing::info!("signal received; stopping etcd");
                notify(&[sd_notify::NotifyState::Stopping]);
                manager.stop().await?;
                return Ok(());
            }
        }
        notify(&[sd_notify::NotifyState::Watchdog]);
        let now = client::check_health(&endpoint, material).await;
        match (&now, healthy) {
            (Ok(_), false) => {
                tracing::info!("local member is healthy again");
                notify(&[sd_notify::NotifyState::Status("etcd member healthy")]);
            }
            (Err(e), true) => {
                tracing::warn!(error = %format!("{e:#}"), "local member is not healthy");
                notify(&[sd_notify::NotifyState::Status("etcd member unhealthy")]);
            }
            _ => {}
        }
        healthy = now.is_ok();
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd (no NOTIFY_SOCKET) this does nothing.
    let _ = sd_notify::notify(false, states);
}

pub fn describe(action: &Action) -> String {
    match action {
        Action::Restart => "restart from the data on disk".into(),
        Action::BootstrapNew(ic) => format!(
            "form a new cluster as {} (initial cluster {}, token {}, cluster ID {:x})",
            ic.my_name,
            ic.flag(),
            ic.token,
            ic.cluster_id()
        ),
        Action::Join { cluster_id, endpoints } => {
            format!("join cluster {cluster_id:x} as a learner through {}", endpoints.join(","))
        }
        Action::AdoptUnstarted { cluster_id, member_id, .. } => {
            format!("start as the added-but-unstarted member {member_id:x} of cluster {cluster_id:x}")
        }
        Action::ReplaceStale { cluster_id, member_id, .. } => format!(
            "replace this node's stale member {member_id:x} in cluster {cluster_id:x} (its data is gone)"
        ),
        Action::Wait(r) => format!("wait: {r}"),
        Action::Refuse(r) => format!("refuse: {r}"),
    }
}

/// SIGTERM / SIGINT, as a future that can be awaited repeatedly.
pub struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub fn new() -> Result<Self> {
        Ok(Shutdown {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
