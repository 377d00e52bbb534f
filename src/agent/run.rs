//! The agent from its start to its stop (`etcd-bootstrap run`): what must be there first (etcd
//! installed, not a node that left), the metrics endpoint, the agent's own endpoint, a
//! fleet-wide restore that names this node before etcd is started from its data, converging to a
//! healthy voter, then (unless `once`) the heal loop until a signal.

use super::heal::{HealExit, Shutdown};
use super::reload::ConfigSource;
use super::Agent;
use crate::agent::observe::Observer;
use crate::config::Config;
use crate::error::{ConfigError, Refused};
use crate::etcd::datadir;
use crate::service;
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Instant;

/// Bring the local member up and keep it healthy; with `once`, return as soon as it is a healthy
/// voter.
pub(crate) async fn run(cfg: &Config, once: bool, source: ConfigSource) -> Result<()> {
    // First of all: SIGHUP's default action ends the process, and `systemctl reload` may come at
    // any moment, also while etcd is being installed or started. A reload asked for before the
    // heal loop runs is taken up by it.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    before_start(cfg).await?;
    let mut shutdown = Shutdown::new()?;
    let endpoint = Arc::new(super::endpoint::Endpoint::new(super::reporter(cfg)));
    let agent = Agent {
        cfg,
        observer: Observer::new(cfg).await?.with_endpoint(endpoint.clone()),
        manager: service::manager(cfg),
    };
    // This configuration is in force: a rejection noted by an earlier run no longer applies.
    super::reload::clear_rejected(cfg);
    let started = Instant::now();
    // Before etcd is started from its data: a fleet-wide restore that names this node (it was
    // down when it was asked for, or this agent was killed in the middle of one) comes first,
    // or etcd would come back with data the rest of the cluster no longer runs.
    if let Some(store) = agent.store()? {
        match agent.follow_restore_request(store).await {
            Ok(_) => {}
            Err(e) if super::restore::under_way(&cfg.member.data_dir)? => {
                return Err(e.context("a fleet-wide restore of this member is under way and could not be finished; etcd is not started from anything else (run again: it resumes)"));
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not check the store for a fleet-wide restore request; going on, the heal loop checks again");
            }
        }
    }

    let material = tokio::select! {
        r = agent.converge() => match r {
            Ok(m) => m,
            Err(e) => {
                let _ = agent.manager.stop().await;
                return Err(e);
            }
        },
        _ = shutdown.wait() => {
            tracing::info!("signal received; stopping");
            agent.manager.stop().await?;
            return Ok(());
        }
    };
    tracing::info!(elapsed = ?started.elapsed(), "local member is a healthy voter");
    super::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("etcd member healthy"),
    ]);
    if once {
        return Ok(());
    }
    // The heal loop, until a signal; at SIGHUP, again with the configuration read anew when it
    // is accepted, else with the one in force. The service manager (which supervises a running
    // etcd) carries over: a reload never stops etcd by itself.
    let Agent { mut manager, .. } = agent;
    let mut current = cfg.clone();
    let mut material = material;
    loop {
        let agent = Agent {
            cfg: &current,
            observer: Observer::new(&current)
                .await?
                .with_endpoint(endpoint.clone()),
            manager,
        };
        let exit = agent.heal_loop(material, &mut shutdown, &mut hangup).await;
        manager = agent.manager;
        let m = match exit? {
            HealExit::Stopped => return Ok(()),
            HealExit::Reload(m) => m,
        };
        material = m;
        tracing::info!("SIGHUP: reading the configuration again");
        match accept(&current, &source).await {
            Ok(next) => {
                manager.reconfigure(&next);
                super::reload::clear_rejected(&next);
                current = next;
                tracing::info!("configuration reloaded");
            }
            Err(why) => {
                tracing::error!(reason = %why, "config rejected: the agent keeps running on the configuration it had; fix it and reload again");
                super::reload::note_rejected(&current, &why);
            }
        }
    }
}

/// What comes before anything is started, in this order: etcd installed when asked for; an
/// etcd binary there (unless the image brings it); not a node that left; `/metrics` served (the
/// member's state is visible while it comes up); a warning for unencrypted snapshots.
async fn before_start(cfg: &Config) -> Result<()> {
    super::rollout::halt::Saved::put_back_interrupted(cfg)?;
    if crate::etcd::install::another_release_configured(cfg) {
        // etcd may run the installed release: a new one is installed by the rollout, under its
        // lock, one member at a time (`agent::rollout`), never at an agent's start.
        tracing::info!(url = cfg.etcd.download_url.as_deref().unwrap_or(""), "etcd.download_url names another release than the one installed: it is installed and rolled one member at a time");
    } else {
        install_now(cfg).await?;
    }
    before_start_checks(cfg).await
}

async fn install_now(cfg: &Config) -> Result<()> {
    match crate::etcd::install::ensure(cfg).await? {
        crate::etcd::install::Outcome::NotConfigured => {}
        crate::etcd::install::Outcome::AlreadyInstalled(why) => {
            tracing::debug!(%why, "etcd already installed")
        }
        crate::etcd::install::Outcome::Installed(files) => tracing::info!(
            files = %files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" "),
            "installed etcd"
        ),
    }
    Ok(())
}

async fn before_start_checks(cfg: &Config) -> Result<()> {
    // With an image, etcd is in the image; etcd.binary (and the snapshot tools beside it) on the
    // host are needed only to verify and restore snapshots, which say so themselves.
    if !cfg.etcd.service_manager.runs_image() && !cfg.etcd.binary.is_file() {
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
    let marker = datadir::left_marker(&cfg.member.data_dir);
    if marker.exists() {
        return Err(Refused(format!(
            "this node left the cluster (`etcd-bootstrap leave`); delete {} to let it join again",
            marker.display()
        ))
        .into());
    }
    super::metrics::server::start(cfg).await?;
    if let Some(b) = &cfg.backup {
        if b.age_recipients.is_empty() {
            tracing::warn!(store = %b.url, "backup.age_recipients is empty: snapshots are stored unencrypted and hold every key in the clear (Kubernetes Secrets included); set age recipients");
        }
    }
    Ok(())
}

/// The configuration read again, if it can replace `current` in this running agent: it is
/// valid, its certificate source passes the checks of a start, and it changes nothing a running
/// member cannot change (`decide::change`). What it asks of etcd is logged; a change etcd needs a
/// restart for is then rolled by the heal loop, one member at a time.
async fn accept(current: &Config, source: &ConfigSource) -> Result<Config, String> {
    use crate::decide::change::{classify, Change};
    let next = source.load()?;
    Observer::new(&next)
        .await
        .map_err(|e| super::reload::one_line(&format!("{e:#}")))?;
    let keys = crate::config::changed_keys(current, &next);
    let differs = super::reload::rendered_differs(current, &next)
        .map_err(|e| super::reload::one_line(&format!("{e:#}")))?;
    match classify(&keys, differs) {
        Change::Refused { key, why } => {
            return Err(format!("{key} cannot change on a running member: {why}"))
        }
        Change::Unchanged => tracing::info!("the configuration read again is the one in force"),
        Change::AtOnce { keys } => {
            tracing::info!(keys = %keys.join(" "), "taken up at once; etcd keeps running")
        }
        Change::RestartEtcd { keys } => {
            tracing::info!(keys = %keys.join(" "), "etcd must be restarted for this change: rolled one member at a time")
        }
    }
    Ok(next)
}
