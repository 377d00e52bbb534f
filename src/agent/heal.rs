//! The heal loop, as an explicit state machine: every `heal.interval` a tick observes the markers
//! and the local member's health, `step` (pure, table-tested) says what to do, and the loop does
//! it. Moving the data aside needs a majority's word (`decide::removed`); another cluster
//! answering is logged loudly and changes nothing; the pause marker stops every membership change
//! without stopping etcd.

use super::auto_recover::AutoStep;
use super::metrics::{self, HealAction};
use super::restore::Followed;
use super::{local_endpoint, notify, Agent};
use crate::backup::catalog;
use crate::decide::removed::RemovalVerdict;
use crate::decide::{dead_member, prune};
use crate::etcd::datadir;
use crate::etcd::{client, membership};
use crate::failpoint;
use crate::tls::ClientMaterial;
use anyhow::Result;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

/// How often a member without a quorum repeats what it knows and what to run.
const QUORUM_REPORT_EVERY: Duration = Duration::from_secs(60);

/// The store is listed at most every this many `heal.interval`s to learn whether it holds a
/// verified snapshot of the running cluster, and only while that decides whether a copy of an
/// earlier cluster may be pruned (after a restore, until the restored cluster's first snapshot).
const SNAPSHOT_LOOK_EVERY_TICKS: u32 = 5;

/// How long one such listing may take.
const SNAPSHOT_LOOK_TIMEOUT: Duration = Duration::from_secs(20);

/// What pruning at healthy ticks remembers.
#[derive(Debug, Default)]
struct Pruning {
    /// The running cluster the store was seen to hold a verified snapshot of (it keeps one:
    /// retention deletes a snapshot only after a newer one is stored).
    snapshot_of: Option<u64>,
    /// When the store was last listed, and for which cluster.
    looked: Option<(u64, Instant)>,
    /// The copies kept at the last tick (logged again, with why, when they change).
    kept: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Healthy,
    Unhealthy,
    /// The pause marker exists: nothing is added, removed or moved.
    Paused,
    /// The data is already aside: joining again at every tick until it works.
    Rejoining,
}

/// What one tick observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    pub left: bool,
    pub paused: bool,
    pub healthy: bool,
    pub heal_enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `leave` ran: stop etcd and exit.
    Exit,
    Idle,
    /// Healthy: keep the identity record current; on the leader, apply the dead-member policy.
    Maintain,
    /// Unhealthy: ask the last-known membership whether this member was removed.
    AskWhetherRemoved,
    /// Join again (the data is aside).
    Rejoin,
}

pub fn step(state: State, t: Tick) -> (State, Step) {
    if t.left {
        return (state, Step::Exit);
    }
    if t.paused {
        let kept = if state == State::Rejoining {
            State::Rejoining
        } else {
            State::Paused
        };
        return (kept, Step::Idle);
    }
    match (state, t.healthy) {
        (State::Rejoining, _) if t.heal_enabled => (State::Rejoining, Step::Rejoin),
        (_, true) => (State::Healthy, Step::Maintain),
        (_, false) if t.heal_enabled => (State::Unhealthy, Step::AskWhetherRemoved),
        (_, false) => (State::Unhealthy, Step::Idle),
    }
}

/// SIGTERM / SIGINT, as a future that can be awaited repeatedly.
pub struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub fn new() -> Result<Self> {
        use anyhow::Context;
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

/// Why the heal loop returned.
pub enum HealExit {
    /// A signal or `leave`: etcd is stopped, the agent ends.
    Stopped,
    /// SIGHUP: read the configuration again, then go on (with the client material in use).
    Reload(ClientMaterial),
}

impl Agent<'_> {
    /// Keep etcd running and healthy until a signal or `leave`; return at SIGHUP for a reload.
    /// Beside it, the delta segments (`deltas`), which run for as long as the heal loop does.
    pub async fn heal_loop(
        &self,
        material: ClientMaterial,
        shutdown: &mut Shutdown,
        hangup: &mut tokio::signal::unix::Signal,
    ) -> Result<HealExit> {
        let cfg = self.cfg;
        let delta_store = cfg
            .backup
            .as_ref()
            .filter(|b| b.delta_interval.is_some())
            .and_then(|b| crate::backup::store::open(b, &cfg.cluster.name, &cfg.tls.dir).ok());
        tokio::select! {
            r = self.heal_loop_only(material, shutdown, hangup) => r,
            never = self.delta_loop(delta_store.as_ref()) => match never {},
        }
    }

    async fn heal_loop_only(
        &self,
        mut material: ClientMaterial,
        shutdown: &mut Shutdown,
        hangup: &mut tokio::signal::unix::Signal,
    ) -> Result<HealExit> {
        let cfg = self.cfg;
        let data_dir = &cfg.member.data_dir;
        let endpoint = local_endpoint(cfg);
        let mut state = State::Healthy;
        let mut dead = dead_member::Tracker::default();
        let mut last_index: Option<u64> = None;
        let mut last_quorum_report: Option<Instant> = None;
        let mut auto = super::auto_recover::AutoRecovery::default();
        // Fleet-wide restore requests: the id of the last one this node was not named in (logged
        // once), and the current one (to explain other clusters answering while it is under way).
        let restore_store = cfg
            .backup
            .as_ref()
            .and_then(|b| crate::backup::store::open(b, &cfg.cluster.name, &cfg.tls.dir).ok());
        let mut not_named: Option<String> = None;
        let mut current_restore: Option<crate::decide::restore::FleetRequest> = None;
        let mut maintenance = super::maintenance::MaintenanceSchedule::default();
        let mut pruning = Pruning::default();
        let mut rollout = super::rollout::Rollout::default();
        let mut schedule = match &cfg.backup {
            None => None,
            Some(b) => match crate::backup::store::open(b, &cfg.cluster.name, &cfg.tls.dir) {
                Ok(store) => Some(
                    super::snapshots::SnapshotSchedule::new(store)
                        .with_known_snapshot(cfg)
                        .await,
                ),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot open the snapshot store; no scheduled snapshots from this agent");
                    None
                }
            },
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(cfg.heal.interval) => {}
                _ = shutdown.wait() => {
                    tracing::info!("signal received; stopping etcd");
                    notify(&[sd_notify::NotifyState::Stopping]);
                    self.manager.stop().await?;
                    return Ok(HealExit::Stopped);
                }
                _ = hangup.recv() => return Ok(HealExit::Reload(material)),
            }
            notify(&[sd_notify::NotifyState::Watchdog]);
            if super::recover::request_path(data_dir).exists() {
                // A recovery stops and starts etcd and can outlast WatchdogSec on a slow disk.
                tokio::select! {
                    _ = self.answer_recover_request(&material) => {}
                    never = keep_watchdog_fed(cfg.heal.interval) => match never {},
                }
            }
            if let Some(store) = &restore_store {
                let followed = tokio::select! {
                    r = self.follow_restore_request(store) => r,
                    never = keep_watchdog_fed(cfg.heal.interval) => match never {},
                };
                match followed {
                    Ok((f, current)) => {
                        current_restore = current;
                        match f {
                            Followed::Restored(_) => {
                                // etcd runs from the restored data; it is healthy once a
                                // majority of the members have followed the request.
                                state = State::Unhealthy;
                                continue;
                            }
                            Followed::NotAMember(id) if not_named.as_ref() != Some(&id) => {
                                tracing::warn!(request = %id, "a fleet-wide restore request does not name this member (it joined after the request was made): its data is left as it is; once the restored cluster runs, remove this member's data by hand (or `etcd-bootstrap leave`) to let it join that cluster");
                                not_named = Some(id);
                            }
                            _ => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "following the fleet-wide restore request failed; trying again after heal.interval");
                        if super::restore::under_way(data_dir).unwrap_or(false) {
                            // etcd is stopped and its data is aside: nothing else to do here.
                            continue;
                        }
                    }
                }
            }
            // Also without a healthy local member: the NOSPACE alarm makes every member report
            // itself unhealthy, and clearing it is this job's.
            if let Err(e) = self.maintenance_tick(&material, &mut maintenance).await {
                tracing::warn!(error = %format!("{e:#}"), "database maintenance (defrag, NOSPACE); trying again at the next tick");
            }
            let mut renewed = Some(material.clone());
            if let Err(e) = self.renew_certificates(true, &mut renewed).await {
                tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed; the current certificates stay in place; trying again after heal.interval");
            }
            if let Some(m) = renewed {
                material = m;
            }
            let health = client::check_health(&endpoint, &material).await;
            metrics::local_health(&health);
            let tick = Tick {
                left: datadir::left_marker(data_dir).exists(),
                paused: datadir::pause_marker(data_dir).exists(),
                healthy: health.is_ok(),
                heal_enabled: cfg.heal.enabled,
            };
            let (next, todo) = step(state, tick);
            log_transition(state, next, &health);
            state = next;
            match todo {
                Step::Exit => {
                    tracing::info!("this node left the cluster (`etcd-bootstrap leave`); stopping etcd and exiting");
                    self.manager.stop().await?;
                    return Ok(HealExit::Stopped);
                }
                Step::Idle => continue,
                Step::Maintain => {
                    let Ok(me) = health else { continue };
                    last_index = Some(me.raft_index);
                    if let Err(e) = self.refresh_record(&material, &me).await {
                        tracing::warn!(error = %format!("{e:#}"), "updating the identity record failed");
                    }
                    // A restart of etcd for the configuration in force, when it is this
                    // member's turn; bounded by upgrade.member_timeout, which can outlast
                    // WatchdogSec.
                    let rolled = tokio::select! {
                        r = self.rollout_tick(&material, &me, &mut rollout) => r,
                        never = keep_watchdog_fed(cfg.heal.interval) => match never {},
                    };
                    if let Err(e) = rolled {
                        tracing::warn!(error = %format!("{e:#}"), "rolling the configuration in force; trying again at the next tick");
                    }
                    if let Some(sched) = schedule.as_mut() {
                        if let Err(e) = self.snapshot_tick(sched, &material, &me).await {
                            tracing::warn!(error = %format!("{e:#}"), "scheduled snapshot");
                        }
                    }
                    if let Err(e) = self
                        .prune_tick(&me, restore_store.as_ref(), &mut pruning)
                        .await
                    {
                        tracing::warn!(error = %format!("{e:#}"), "pruning moved-aside data dirs failed; trying again at the next tick");
                    }
                    if let Err(e) = self.peer_roles_tick(&material).await {
                        tracing::debug!(error = %format!("{e:#}"), "checking the members' peer certificates for the peer role; trying again at the next tick");
                    }
                    let policy = cfg.heal.remove_dead_after.filter(|_| cfg.heal.enabled);
                    if let Err(e) = self.watch_members(&material, &me, &mut dead, policy).await {
                        tracing::warn!(error = %format!("{e:#}"), "dead-member check failed");
                    }
                    continue;
                }
                Step::AskWhetherRemoved => match self.removal_verdict(&material).await {
                    RemovalVerdict::Removed(reason) => {
                        tracing::warn!(%reason, "the local member is no longer part of the cluster; healing: stop etcd, move its data aside, join again");
                        notify(&[sd_notify::NotifyState::Status(&format!(
                            "healing: {reason}"
                        ))]);
                        // The data is moved only once etcd is known to be gone. A stop that
                        // cannot tell (kubelet slow to take a static pod down) is tried again
                        // at the next tick, with the removal asked again; the agent stays up.
                        if let Err(e) = self.manager.stop().await {
                            tracing::error!(error = %format!("{e:#}"), "stopping etcd failed, so its data stays where it is; trying again after heal.interval");
                            continue;
                        }
                        failpoint::hit("heal:after-stop");
                        datadir::move_aside(data_dir, &reason, last_index)?;
                        metrics::heal_action(HealAction::MoveAside);
                        failpoint::hit("heal:after-move");
                        state = State::Rejoining;
                    }
                    RemovalVerdict::Foreign { what, clusters }
                        if current_restore
                            .as_ref()
                            .is_some_and(|r| clusters.iter().any(|c| r.is_either_side(*c))) =>
                    {
                        tracing::info!(%what, request = current_restore.as_ref().map(|r| r.id.as_str()).unwrap_or(""), "a fleet-wide restore is under way: members on the old and the restored data ignore each other until each has followed it");
                        continue;
                    }
                    RemovalVerdict::Foreign { what, .. } => {
                        tracing::error!(%what, "another cluster answers at this member's peers; refusing to move data or re-join: fix discovery");
                        notify(&[sd_notify::NotifyState::Status(
                            "refusing: another cluster answers; see the log",
                        )]);
                        continue;
                    }
                    RemovalVerdict::Member => continue,
                    RemovalVerdict::Undecided(why) => {
                        tracing::info!(%why, "unhealthy, but no majority says this member was removed: keeping its data and waiting");
                        // No quorum can form: with every member's agent answering, the
                        // automatic recovery brings the cluster back (decide::quorum_recovery).
                        match self.auto_recover_tick(&material, &mut auto).await {
                            Some(AutoStep::RecoverHere(decision)) => {
                                tokio::select! {
                                    _ = self.auto_recover_here(&material, &decision) => {}
                                    never = keep_watchdog_fed(cfg.heal.interval) => match never {},
                                }
                                continue;
                            }
                            Some(AutoStep::MoveAside(reason)) => {
                                tracing::warn!(%reason, "this member's copy is not the one the cluster came back from; moving its data aside and joining the recovered cluster");
                                if let Err(e) = self.manager.stop().await {
                                    tracing::error!(error = %format!("{e:#}"), "stopping etcd failed, so its data stays where it is; trying again after heal.interval");
                                    continue;
                                }
                                datadir::move_aside(data_dir, &reason, last_index)?;
                                metrics::heal_action(HealAction::MoveAside);
                                state = State::Rejoining;
                                continue;
                            }
                            None => {}
                        }
                        if last_quorum_report.is_none_or(|t| t.elapsed() >= QUORUM_REPORT_EVERY) {
                            last_quorum_report = Some(Instant::now());
                            let q = super::recover::quorum_report(cfg, &material).await;
                            // None: a quorum answers (or the membership could not be seen).
                            metrics::quorum(q.is_none());
                            if let Some(q) = q {
                                tracing::error!("{q}");
                                notify(&[sd_notify::NotifyState::Status(
                                    "quorum lost; see the log",
                                )]);
                            }
                        }
                        continue;
                    }
                },
                Step::Rejoin => {}
            }
            let healed = tokio::select! {
                r = self.converge() => r,
                never = keep_watchdog_fed(cfg.heal.interval) => match never {},
                _ = shutdown.wait() => {
                    self.manager.stop().await?;
                    return Ok(HealExit::Stopped);
                }
            };
            match healed {
                Ok(m) => {
                    material = m;
                    state = State::Healthy;
                    metrics::heal_action(HealAction::Rejoin);
                    tracing::info!("healed: the local member is a healthy voter again");
                    notify(&[sd_notify::NotifyState::Status("etcd member healthy")]);
                }
                Err(e) => {
                    // The data is already aside: keep trying to join at every interval.
                    tracing::error!(error = %format!("{e:#}"), "re-joining failed; trying again after heal.interval");
                    notify(&[sd_notify::NotifyState::Status("healing failed; retrying")]);
                }
            }
        }
    }

    /// At a healthy tick: prune moved-aside copies (`decide::prune`). The store is listed only
    /// when its answer matters (a copy of an earlier cluster is on disk, and no verified snapshot
    /// of the running cluster was seen yet), at most every `SNAPSHOT_LOOK_EVERY_TICKS` ticks;
    /// without `[backup]` the running cluster never has one.
    async fn prune_tick(
        &self,
        me: &client::Whoami,
        store: Option<&crate::backup::store::Store>,
        st: &mut Pruning,
    ) -> Result<()> {
        let cfg = self.cfg;
        let data_dir = &cfg.member.data_dir;
        // A fleet-wide restore under way moves data itself; its copies wait for the next tick.
        if super::restore::under_way(data_dir)? {
            return Ok(());
        }
        let copies = datadir::moved_copies(data_dir)?;
        if copies.is_empty() {
            st.kept.clear();
            return Ok(());
        }
        let running = prune::Running {
            cluster: Some(me.cluster_id),
            raft_index: Some(me.raft_index),
        };
        let mut has_snapshot = st.snapshot_of == Some(me.cluster_id);
        if !has_snapshot && prune::snapshot_matters(&copies, running) {
            if let Some(store) = store {
                let every = cfg.heal.interval * SNAPSHOT_LOOK_EVERY_TICKS;
                let due = st
                    .looked
                    .is_none_or(|(c, t)| c != me.cluster_id || t.elapsed() >= every);
                if due {
                    st.looked = Some((me.cluster_id, Instant::now()));
                    has_snapshot = holds_verified_snapshot_of(store, me.cluster_id).await;
                    if has_snapshot {
                        st.snapshot_of = Some(me.cluster_id);
                        tracing::info!(cluster = %format!("{:x}", me.cluster_id), store = %store.describe, "the store holds a verified snapshot of the running cluster: copies of earlier clusters may be pruned");
                    }
                }
            }
        }
        let plan = datadir::prune(
            data_dir,
            &copies,
            running,
            has_snapshot,
            cfg.heal.prune_limits(),
        )?;
        let kept: Vec<String> = plan.kept.iter().map(|(n, _)| n.clone()).collect();
        if kept != st.kept {
            datadir::log_kept(data_dir, &plan);
            st.kept = kept;
        }
        Ok(())
    }

    /// On the leader's node only: track unreachable members, note since when in the identity
    /// record (the agent endpoint reports it, for `doctor` on any node), and, with
    /// `heal.remove_dead_after` (`policy`), remove one that the policy says is dead.
    async fn watch_members(
        &self,
        material: &ClientMaterial,
        me: &client::Whoami,
        tracker: &mut dead_member::Tracker,
        policy: Option<Duration>,
    ) -> Result<()> {
        let cfg = self.cfg;
        let my_id = me.member_id;
        if me.leader != my_id {
            *tracker = dead_member::Tracker::default();
            note_unreachable(cfg, &[])?;
            return Ok(());
        }
        let mut c =
            client::connect(&[local_endpoint(cfg)], material, client::PROBE_TIMEOUT).await?;
        let members = membership::list(&mut c).await?;
        let urls: Vec<String> = members
            .iter()
            .map(|m| m.client_urls.first().cloned().unwrap_or_default())
            .collect();
        let answers = client::probe_all(&urls, material).await;
        let health: Vec<dead_member::MemberHealth> = members
            .iter()
            .zip(answers)
            .map(|(m, answer)| dead_member::MemberHealth {
                id: m.id,
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                is_learner: m.is_learner,
                // Never started (no client URL): unreachable.
                reachable: m.id == my_id
                    || (!m.client_urls.is_empty()
                        && matches!(answer, crate::model::cluster::Answer::Cluster(_))),
            })
            .collect();
        let now = Instant::now();
        tracker.update(&health, now);
        let down: Vec<u64> = health
            .iter()
            .filter(|m| !m.reachable)
            .map(|m| m.id)
            .collect();
        note_unreachable(cfg, &down)?;
        let Some(limit) = policy else {
            return Ok(());
        };
        let found = crate::discovery::read_all(&self.observer.sources).await;
        metrics::discovery_read(&found);
        let found = found?;
        let discovered = found.peers.iter().map(|p| p.peer_url.to_string()).collect();
        let second = if cfg.heal.remove_dead_by_default {
            dead_member::SecondSignal::GoneFromDiscovery
        } else {
            dead_member::SecondSignal::GoneOrJoinerWaiting
        };
        if let Some((id, why)) =
            dead_member::pick(&health, tracker, now, limit, my_id, &discovered, second)
        {
            tracing::warn!(reason = %why, "removing a dead member (heal.remove_dead_after)");
            membership::remove(&mut c, id, now + cfg.heal.interval).await?;
            metrics::heal_action(HealAction::RemoveDead);
        }
        Ok(())
    }
}

/// Whether `store` lists a verified snapshot (signed by a member, its data object there at the
/// manifest's size) of cluster `cluster`. A listing that fails or times out counts as no
/// (logged): copies then wait. An untrusted object never counts.
async fn holds_verified_snapshot_of(store: &crate::backup::store::Store, cluster: u64) -> bool {
    match tokio::time::timeout(SNAPSHOT_LOOK_TIMEOUT, catalog::list(store)).await {
        Ok(Ok(listing)) => listing.entries.iter().any(|e| {
            e.verified && u64::from_str_radix(&e.manifest.cluster_id, 16).ok() == Some(cluster)
        }),
        Ok(Err(e)) => {
            tracing::warn!(error = %format!("{e:#}"), "listing the store's snapshots for pruning failed; copies of earlier clusters stay for now");
            false
        }
        Err(_) => {
            tracing::warn!(store = %store.describe, "listing the store's snapshots for pruning did not finish within {SNAPSHOT_LOOK_TIMEOUT:?}; copies of earlier clusters stay for now");
            false
        }
    }
}

/// Keep `Record::unreachable_since` to exactly the members in `down`: the time a member was
/// first seen down stays as long as it stays down (also across a restart of this agent); one
/// that answers again leaves. Written only when it changes.
fn note_unreachable(cfg: &crate::config::Config, down: &[u64]) -> Result<()> {
    let data_dir = &cfg.member.data_dir;
    let Some(mut record) = datadir::Record::load(data_dir)? else {
        return Ok(());
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let next: std::collections::BTreeMap<String, i64> = down
        .iter()
        .map(|id| {
            let key = format!("{id:x}");
            let since = record.unreachable_since.get(&key).copied().unwrap_or(now);
            (key, since)
        })
        .collect();
    if next != record.unreachable_since {
        record.unreachable_since = next;
        record.save(data_dir)?;
    }
    Ok(())
}

fn log_transition(from: State, to: State, health: &Result<client::Whoami>) {
    if from == to {
        return;
    }
    match (from, to) {
        (_, State::Paused) => tracing::warn!("heal loop paused by the pause marker: no member is added, removed or moved until it is deleted; etcd keeps running"),
        (State::Paused, _) => tracing::info!("pause marker gone: the heal loop acts again"),
        (_, State::Unhealthy) => {
            if let Err(e) = health {
                tracing::warn!(error = %format!("{e:#}"), "local member is not healthy");
            }
            notify(&[sd_notify::NotifyState::Status("etcd member unhealthy")]);
        }
        (State::Unhealthy, State::Healthy) => {
            tracing::info!("local member is healthy again");
            notify(&[sd_notify::NotifyState::Status("etcd member healthy")]);
        }
        _ => {}
    }
}

/// A re-join can take longer than `WatchdogSec` (it is bounded by discovery.timeout instead):
/// keep the watchdog fed while it runs.
async fn keep_watchdog_fed(interval: Duration) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(interval).await;
        notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_table() {
        use State::*;
        use Step::*;
        let t = |left, paused, healthy, heal_enabled| Tick {
            left,
            paused,
            healthy,
            heal_enabled,
        };
        // (state, tick, expected state, expected step)
        let table = [
            (Healthy, t(false, false, true, true), Healthy, Maintain),
            (
                Healthy,
                t(false, false, false, true),
                Unhealthy,
                AskWhetherRemoved,
            ),
            (Healthy, t(false, false, false, false), Unhealthy, Idle),
            (Unhealthy, t(false, false, true, true), Healthy, Maintain),
            // The pause marker: nothing happens, whatever the health, and etcd keeps running.
            (Healthy, t(false, true, false, true), Paused, Idle),
            (Unhealthy, t(false, true, false, true), Paused, Idle),
            (
                Paused,
                t(false, false, false, true),
                Unhealthy,
                AskWhetherRemoved,
            ),
            // Data already aside: rejoin at every tick, unless paused.
            (Rejoining, t(false, false, false, true), Rejoining, Rejoin),
            (Rejoining, t(false, true, false, true), Rejoining, Idle),
            // leave wins over everything.
            (Rejoining, t(true, true, false, true), Rejoining, Exit),
            (Healthy, t(true, false, true, true), Healthy, Exit),
        ];
        for (i, (from, tick, to, todo)) in table.into_iter().enumerate() {
            assert_eq!(step(from, tick), (to, todo), "case {i}");
        }
    }
}
