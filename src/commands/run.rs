//! `etcd-bootstrap run`: observe, decide, act; then keep etcd running and watched.

use crate::config::{Config, ServiceManagerKind};
use crate::datadir;
use crate::deadpeers;
use crate::decide::{self, Action, WaitReason};
use crate::error::{ConfigError, Refused};
use crate::etcd::{client, membership, render};
use crate::failpoint;
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
    match crate::install::ensure(&cfg).await? {
        crate::install::Outcome::NotConfigured => {}
        crate::install::Outcome::AlreadyInstalled(why) => {
            tracing::debug!(%why, "etcd already installed")
        }
        crate::install::Outcome::Installed(files) => tracing::info!(
            files = %files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" "),
            "installed etcd"
        ),
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
    let marker = datadir::left_marker(&cfg.member.data_dir);
    if marker.exists() {
        return Err(Refused(format!(
            "this node left the cluster (`etcd-bootstrap leave`); delete {} to let it join again",
            marker.display()
        ))
        .into());
    }
    let mut shutdown = Shutdown::new()?;
    let manager = service::manager(&cfg);
    let observer = Observer::new(&cfg).await?;
    let started = Instant::now();

    let material = tokio::select! {
        r = converge(&cfg, &observer, manager.as_ref()) => match r {
            Ok(m) => m,
            Err(e) => {
                let _ = manager.stop().await;
                return Err(e);
            }
        },
        _ = shutdown.wait() => {
            tracing::info!("signal received; stopping");
            manager.stop().await?;
            return Ok(());
        }
    };
    tracing::info!(elapsed = ?started.elapsed(), "local member is a healthy voter");
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("etcd member healthy"),
    ]);
    if once {
        return Ok(());
    }
    watch(&cfg, &observer, manager.as_ref(), material, &mut shutdown).await
}

/// Bring the local member up, make sure it is a voter, wait until it is healthy. If, while it
/// comes up, the peers say it was removed (a restart from the data of a removed member), move
/// the data aside and go again.
async fn converge(
    cfg: &Config,
    observer: &Observer<'_>,
    manager: &dyn ServiceManager,
) -> Result<ClientMaterial> {
    for round in 0..3 {
        let (material, voters) = bring_up(cfg, observer, manager).await?;
        let deadline = Instant::now() + cfg.discovery.timeout;
        let ready = async {
            ensure_voter(cfg, observer, &material, voters, deadline).await?;
            wait_healthy(&local_endpoint(cfg), &material, deadline).await
        };
        let removed = async {
            loop {
                tokio::time::sleep(REMOVED_CHECK).await;
                if client::check_health(&local_endpoint(cfg), &material)
                    .await
                    .is_ok()
                {
                    continue;
                }
                if let Some(reason) = removed_reason(cfg, observer, &material).await {
                    return reason;
                }
            }
        };
        tokio::select! {
            r = ready => return r.map(|_| material),
            reason = removed => {
                tracing::warn!(%reason, round, "the member being started is no longer part of the cluster; moving its data aside and joining again");
                manager.stop().await?;
                datadir::move_aside(&cfg.member.data_dir)?;
            }
        }
    }
    bail!("the local member was removed again each time it was started; see the logs of the other members")
}

/// How often a member that is coming up is checked for having been removed.
const REMOVED_CHECK: Duration = Duration::from_secs(5);

/// Decide what to do and start etcd accordingly. Returns the client material to talk to it and,
/// after a join, the voting members to ask for promotion.
async fn bring_up(
    cfg: &Config,
    observer: &Observer<'_>,
    manager: &dyn ServiceManager,
) -> Result<(ClientMaterial, Vec<String>)> {
    let local = observe::local_state(&cfg.member.data_dir);
    let tls_paths = crate::tls::TlsPaths::new(&cfg.tls.dir);
    // The restart path: data and configuration are there; nothing to discover or ask.
    if local.has_wal && cfg.etcd.env_file.is_file() && tls_paths.client_cert.is_file() {
        tracing::info!(data_dir = %cfg.member.data_dir.display(), "WAL present: restarting etcd from its own data");
        if let Some(why) = crate::tls::due_on_disk(cfg, time::OffsetDateTime::now_utc()) {
            tracing::info!(reason = %why, "certificates need renewing before etcd starts");
            let mut material = None;
            if let Err(e) = renew_certificates(cfg, observer, None, &mut material).await {
                tracing::warn!(error = %format!("{e:#}"), "renewing before the start failed; starting etcd with the certificates in place, the heal loop tries again");
            }
        }
        let env = std::fs::read_to_string(&cfg.etcd.env_file)
            .with_context(|| format!("reading {}", cfg.etcd.env_file.display()))?;
        let changed = manager.install(&env, &render::unit(cfg))?;
        manager.start(changed).await?;
        return Ok((ClientMaterial::from_dir(&cfg.tls.dir)?, vec![]));
    }

    let deadline = Instant::now() + cfg.discovery.timeout;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let observed = match observer.observe().await {
            Ok(o) => o,
            Err(e)
                if e.chain()
                    .any(|c| c.is::<Refused>() || c.is::<ConfigError>())
                    || e.downcast_ref::<crate::error::Fatal>().is_some() =>
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
                pause(attempt, deadline).await;
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
        let material = observed.tls.client_material(&cfg.tls.dir)?;
        let mut voters = vec![];
        let state = match action {
            Action::Restart => render::ClusterState::FromDisk,
            Action::BootstrapNew(ic) => render::ClusterState::New(ic),
            Action::MoveAside(why) => {
                tracing::warn!(reason = %why, "moving the data dir aside");
                datadir::move_aside(&cfg.member.data_dir)?;
                continue;
            }
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
                pause(attempt, deadline).await;
                continue;
            }
            Action::Refuse(why) => return Err(Refused(why).into()),
            Action::Join { ref endpoints, .. }
            | Action::AdoptUnstarted { ref endpoints, .. }
            | Action::ReplaceStale { ref endpoints, .. } => {
                let my_url = observed.me.peer_url(cfg).to_string();
                let mut c = membership::connect(endpoints, &material).await?;
                let (my_id, members) = match action {
                    Action::ReplaceStale { member_id, .. } => {
                        tracing::warn!(member = %format!("{member_id:x}"), "this node's data is gone: removing its stale member, then adding it again");
                        membership::remove(&mut c, member_id, deadline).await?;
                        failpoint::hit("join:after-remove");
                        failpoint::hit("join:before-add");
                        membership::add_learner(&mut c, &my_url, deadline).await?
                    }
                    Action::AdoptUnstarted { member_id, .. } => {
                        (member_id, membership::list(&mut c).await?)
                    }
                    _ => {
                        failpoint::hit("join:before-add");
                        membership::add_learner(&mut c, &my_url, deadline).await?
                    }
                };
                failpoint::hit("join:after-add");
                voters = endpoints.clone();
                render::ClusterState::Existing {
                    initial_cluster: membership::initial_cluster(
                        &members,
                        my_id,
                        &observed.me.name,
                    ),
                }
            }
        };
        for f in observed.tls.changed() {
            tracing::info!(file = %f.path.display(), reason = f.change.as_deref().unwrap_or(""), "writing certificate material");
        }
        observed.tls.apply()?;
        failpoint::hit("new:after-certs");
        let env = render::env_file(cfg, &observed.me, &state);
        let changed = manager.install(&env, &render::unit(cfg))?;
        failpoint::hit("new:after-env");
        if let render::ClusterState::New(ic) = &state {
            let delay = ic.start_delay();
            if !delay.is_zero() {
                tracing::info!(?delay, "new cluster: waiting my turn to start etcd");
                tokio::time::sleep(delay).await;
            }
        }
        tracing::info!(manager = %manager.describe(), changed, "starting etcd");
        manager.start(changed).await?;
        if matches!(state, render::ClusterState::Existing { .. }) {
            failpoint::hit("join:after-start");
        }
        return Ok((material, voters));
    }
}

/// If the local member is a learner, promote it through a voting member once it has caught up.
async fn ensure_voter(
    cfg: &Config,
    observer: &Observer<'_>,
    material: &ClientMaterial,
    mut voters: Vec<String>,
    deadline: Instant,
) -> Result<()> {
    let local = local_endpoint(cfg);
    let (my_id, is_learner) = loop {
        match client::who_is(&local, material).await {
            Ok((_, me)) => break (me.member_id, me.is_learner),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(
                    "the local member did not answer before discovery.timeout; see etcd's log",
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    if !is_learner {
        return Ok(());
    }
    if voters.is_empty() {
        let found = crate::discovery::read_all(&observer.sources).await?;
        voters = found
            .endpoints_except(&env_value(cfg, "ETCD_ADVERTISE_CLIENT_URLS").unwrap_or_default());
    }
    tracing::info!(member = %format!("{my_id:x}"), "local member is a learner; promoting it once it is in sync");
    failpoint::hit("join:before-promote");
    let mut c = membership::connect(&voters, material).await?;
    membership::promote(&mut c, my_id, deadline).await
}

/// A variable of etcd's environment file as etcd-bootstrap wrote it (this member's name, its
/// ETCD_INITIAL_ADVERTISE_PEER_URLS or ETCD_ADVERTISE_CLIENT_URLS).
fn env_value(cfg: &Config, var: &str) -> Option<String> {
    let env = std::fs::read_to_string(&cfg.etcd.env_file).ok()?;
    render::parse_env(&env)
        .into_iter()
        .find(|(k, _)| k == var)
        .map(|(_, v)| v)
}

/// Backoff with jitter between observations: 1 s, 2 s, then 3-5 s; never past `deadline`, so
/// that a wait bounded by discovery.timeout ends when it says.
async fn pause(attempt: u32, deadline: Instant) {
    let base = match attempt {
        0 | 1 => 1000,
        2 => 2000,
        _ => 3000,
    };
    let extra = membership::jitter(Duration::from_millis(if attempt > 2 { 2000 } else { 500 }));
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep((Duration::from_millis(base) + extra).min(left)).await;
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

/// Keep etcd running and healthy: every `heal.interval`, check the local member; when it is not
/// healthy, ask the peers whether it was removed (or belongs to another cluster) and, if so, move
/// its data aside and join again.
async fn watch(
    cfg: &Config,
    observer: &Observer<'_>,
    manager: &dyn ServiceManager,
    mut material: ClientMaterial,
    shutdown: &mut Shutdown,
) -> Result<()> {
    let endpoint = local_endpoint(cfg);
    let mut healthy = true;
    let mut rejoin_pending = false;
    let mut dead = deadpeers::Tracker::default();
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
        if datadir::left_marker(&cfg.member.data_dir).exists() {
            tracing::info!(
                "this node left the cluster (`etcd-bootstrap leave`); stopping etcd and exiting"
            );
            manager.stop().await?;
            return Ok(());
        }
        let mut renewed = Some(material.clone());
        if let Err(e) = renew_certificates(cfg, observer, Some(manager), &mut renewed).await {
            tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed; the current certificates stay in place; trying again after heal.interval");
        }
        if let Some(m) = renewed {
            material = m;
        }
        let now = client::check_health(&endpoint, &material).await;
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
        if healthy {
            if let (true, Some(limit)) = (cfg.heal.enabled, cfg.heal.remove_dead_after) {
                if let Err(e) = remove_dead_peer(cfg, observer, &material, &mut dead, limit).await {
                    tracing::warn!(error = %format!("{e:#}"), "dead-peer check failed");
                }
            }
            continue;
        }
        if !cfg.heal.enabled {
            continue;
        }
        if !rejoin_pending {
            let Some(reason) = removed_reason(cfg, observer, &material).await else {
                continue;
            };
            tracing::warn!(%reason, "the local member is no longer part of the cluster; healing: stop etcd, move its data aside, join again");
            notify(&[sd_notify::NotifyState::Status(&format!(
                "healing: {reason}"
            ))]);
            manager.stop().await?;
            failpoint::hit("heal:after-stop");
            datadir::move_aside(&cfg.member.data_dir)?;
            failpoint::hit("heal:after-move");
        }
        let healed = tokio::select! {
            r = converge(cfg, observer, manager) => r,
            never = keep_watchdog_fed(cfg.heal.interval) => match never {},
            _ = shutdown.wait() => {
                manager.stop().await?;
                return Ok(());
            }
        };
        match healed {
            Ok(m) => {
                material = m;
                rejoin_pending = false;
                healthy = true;
                tracing::info!("healed: the local member is a healthy voter again");
                notify(&[sd_notify::NotifyState::Status("etcd member healthy")]);
            }
            Err(e) => {
                // The data is already aside: keep trying to join at every interval.
                rejoin_pending = true;
                tracing::error!(error = %format!("{e:#}"), "re-joining failed; trying again after heal.interval");
                notify(&[sd_notify::NotifyState::Status("healing failed; retrying")]);
            }
        }
    }
}

/// Renew what is due: certificates with less than a third of their lifetime left or that no
/// longer cover this member's names, from a fresh read of the CA. etcd reads its leaf
/// certificates at every handshake, so those are replaced in place with no restart; a changed CA
/// is only read at start, so then etcd restarts (through `manager`, when it is running).
async fn renew_certificates(
    cfg: &Config,
    observer: &Observer<'_>,
    manager: Option<&dyn ServiceManager>,
    material: &mut Option<ClientMaterial>,
) -> Result<()> {
    let identity = current_identity(cfg, observer).await?;
    let source = crate::tls::source(cfg).await?;
    let plan = source
        .plan(cfg, &identity, time::OffsetDateTime::now_utc())
        .await?;
    if plan.changed().next().is_none() {
        return Ok(());
    }
    if plan.ca_changed && manager.is_some() {
        // Members that see a new CA at the same moment should not all restart together.
        let pause = membership::jitter(cfg.heal.interval);
        tracing::info!(
            ?pause,
            "the CA changed; renewing and restarting etcd after a random pause"
        );
        tokio::time::sleep(pause).await;
    }
    for f in plan.changed() {
        tracing::info!(file = %f.path.display(), reason = f.change.as_deref().unwrap_or(""), source = %source.describe(), "renewing certificate material");
    }
    plan.apply()?;
    *material = Some(ClientMaterial::from_dir(&cfg.tls.dir)?);
    if let (true, Some(manager)) = (plan.ca_changed, manager) {
        manager.start(true).await?;
        tracing::warn!("the CA changed: restarted etcd so that it trusts the new CA (the previous one stays trusted for tls.ca_overlap)");
    }
    Ok(())
}

/// This member's identity as its running configuration says: name and address from etcd's
/// environment file, the SRV target name from discovery, the host name from the kernel.
async fn current_identity(cfg: &Config, observer: &Observer<'_>) -> Result<crate::tls::Identity> {
    let get = |k: &str| {
        env_value(cfg, k).with_context(|| format!("{k} is not in {}", cfg.etcd.env_file.display()))
    };
    let name = get("ETCD_NAME")?;
    let peer_url = get("ETCD_INITIAL_ADVERTISE_PEER_URLS")?;
    let ip = crate::urls::EtcdUrl::parse(&peer_url)
        .map_err(|m| anyhow::anyhow!("{peer_url}: {m}"))?
        .ip()
        .with_context(|| format!("{peer_url} has no IP address"))?;
    let found = crate::discovery::read_all(&observer.sources)
        .await
        .context("reading discovery for this member's names")?;
    let dns_name = found
        .peers
        .iter()
        .find(|p| p.peer_url.to_string() == peer_url)
        .and_then(|p| p.dns_name.clone());
    Ok(crate::tls::Identity::new(
        cfg,
        &name,
        ip,
        dns_name.as_deref(),
        observe::hostname().as_deref(),
    ))
}

/// On the leader's node only: track unreachable members and remove one that the policy says is
/// dead (`heal.remove_dead_after`).
async fn remove_dead_peer(
    cfg: &Config,
    observer: &Observer<'_>,
    material: &ClientMaterial,
    tracker: &mut deadpeers::Tracker,
    limit: Duration,
) -> Result<()> {
    let (mut c, me) = client::who_is(&local_endpoint(cfg), material).await?;
    let my_id = me.member_id;
    if me.leader != my_id {
        *tracker = deadpeers::Tracker::default();
        return Ok(());
    }
    let members = membership::list(&mut c).await?;
    let mut health = Vec::new();
    for m in &members {
        let reachable = match m.client_urls.first() {
            _ if m.id == my_id => true,
            Some(url) => matches!(
                client::probe(url, material).await,
                decide::Answer::Cluster(_)
            ),
            None => false,
        };
        health.push(deadpeers::MemberHealth {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            is_learner: m.is_learner,
            reachable,
        });
    }
    let now = Instant::now();
    tracker.update(&health, now);
    let found = crate::discovery::read_all(&observer.sources).await?;
    let discovered = found.peers.iter().map(|p| p.peer_url.to_string()).collect();
    if let Some((id, why)) = deadpeers::pick(&health, tracker, now, limit, my_id, &discovered) {
        tracing::warn!(reason = %why, "removing a dead member (heal.remove_dead_after)");
        membership::remove(&mut c, id, now + cfg.heal.interval).await?;
    }
    Ok(())
}

/// Why the local member is out of the cluster, if the peers say so: a healthy voter's member list
/// without our peer URL, or a different cluster ID than ours (etcd-rules.md 13-14).
async fn removed_reason(
    cfg: &Config,
    observer: &Observer<'_>,
    material: &ClientMaterial,
) -> Option<String> {
    let my_url = env_value(cfg, "ETCD_INITIAL_ADVERTISE_PEER_URLS")?;
    let local_cluster = client::who_is(&local_endpoint(cfg), material)
        .await
        .ok()
        .map(|(_, me)| me.cluster_id);
    let found = crate::discovery::read_all(&observer.sources).await.ok()?;
    let endpoints =
        found.endpoints_except(&env_value(cfg, "ETCD_ADVERTISE_CLIENT_URLS").unwrap_or_default());
    for e in endpoints {
        if let decide::Answer::Cluster(view) = client::probe(&e, material).await {
            if view.is_learner || view.leader == 0 {
                continue;
            }
            if let Some(local) = local_cluster {
                if local != view.cluster_id {
                    return Some(format!(
                        "cluster ID mismatch: local {local:x}, {e} is in {:x}",
                        view.cluster_id
                    ));
                }
            }
            if !view.members.iter().any(|m| m.peer_urls.contains(&my_url)) {
                return Some(format!(
                    "{my_url} is not in the member list of cluster {:x} (asked {e})",
                    view.cluster_id
                ));
            }
            return None;
        }
    }
    None
}

/// A re-join can take longer than `WatchdogSec` (it is bounded by discovery.timeout instead):
/// keep the watchdog fed while it runs.
async fn keep_watchdog_fed(interval: Duration) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(interval).await;
        notify(&[sd_notify::NotifyState::Watchdog]);
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
        Action::MoveAside(r) => format!("move the data dir aside: {r}"),
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
