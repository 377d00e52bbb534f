//! The heal loop, as an explicit state machine: every `heal.interval` a tick observes the markers
//! and the local member's health, `step` (pure, table-tested) says what to do, and the loop does
//! it. Moving the data aside needs a majority's word (`decide::removed`); another cluster
//! answering is logged loudly and changes nothing; the pause marker stops every membership change
//! without stopping etcd. Each tick runs the jobs of every state (a recovery asked for, a
//! fleet-wide restore, database maintenance, certificate renewal), then the one `Step`:
//! `healthy` holds what a healthy member does, `unhealthy` what an unhealthy one asks and does.

mod healthy;
mod unhealthy;

use super::auto_recover::AutoRecovery;
use super::maintenance::MaintenanceSchedule;
use super::metrics::{self, HealAction};
use super::restore::Followed;
use super::rollout::Rollout;
use super::snapshots::SnapshotSchedule;
use super::{local_endpoint, notify, Agent};
use crate::backup::store::Store;
use crate::decide::dead_member;
use crate::decide::restore::FleetRequest;
use crate::etcd::client;
use crate::etcd::datadir;
use crate::tls::ClientMaterial;
use anyhow::Result;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Healthy,
    Unhealthy,
    /// The pause marker exists: nothing is added, removed or moved.
    Paused,
    /// The data is already aside: joining again at every tick until it works.
    Rejoining,
}

/// What one tick observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tick {
    pub left: bool,
    pub paused: bool,
    pub healthy: bool,
    pub heal_enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
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

pub(crate) fn step(state: State, t: Tick) -> (State, Step) {
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
pub(crate) struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Shutdown {
    pub(crate) fn new() -> Result<Self> {
        use anyhow::Context;
        Ok(Shutdown {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Why the heal loop returned.
pub(crate) enum HealExit {
    /// A signal or `leave`: etcd is stopped, the agent ends.
    Stopped,
    /// SIGHUP: read the configuration again, then go on (with the client material in use).
    Reload(ClientMaterial),
}

/// What the heal loop carries from one tick to the next.
struct Memory {
    state: State,
    /// The client material in use (renewed certificates replace it).
    material: ClientMaterial,
    /// The raft index at the last healthy tick (named in a moved-aside copy's note).
    last_index: Option<u64>,
    dead: dead_member::Tracker,
    last_quorum_report: Option<Instant>,
    auto: AutoRecovery,
    /// Fleet-wide restore requests: the id of the last one this node was not named in (logged
    /// once), and the current one (to explain other clusters answering while it is under way).
    not_named: Option<String>,
    current_restore: Option<FleetRequest>,
    maintenance: MaintenanceSchedule,
    pruning: healthy::Pruning,
    rollout: Rollout,
    schedule: Option<SnapshotSchedule>,
}

/// What a job tells the rest of its tick.
#[derive(PartialEq)]
enum Flow {
    Go,
    NextTick,
}

impl Agent<'_> {
    /// Keep etcd running and healthy until a signal or `leave`; return at SIGHUP for a reload.
    /// Beside it, the delta segments (`deltas`), which run for as long as the heal loop does.
    /// The snapshot store is opened once, here, and shared by every job.
    pub(crate) async fn heal_loop(
        &self,
        material: ClientMaterial,
        shutdown: &mut Shutdown,
        hangup: &mut tokio::signal::unix::Signal,
    ) -> Result<HealExit> {
        let store = self.store().unwrap_or_else(|e| {
            tracing::error!(error = %format!("{e:#}"), "cannot open the snapshot store; no scheduled snapshots, delta segments or fleet-wide restores from this agent until it is restarted or reloaded");
            None
        });
        let delta_store = store.filter(|_| {
            self.cfg
                .backup
                .as_ref()
                .is_some_and(|b| b.delta_interval.is_some())
        });
        tokio::select! {
            r = self.heal_ticks(material, store, shutdown, hangup) => r,
            never = self.delta_loop(delta_store) => match never {},
        }
    }

    async fn heal_ticks(
        &self,
        material: ClientMaterial,
        store: Option<&Store>,
        shutdown: &mut Shutdown,
        hangup: &mut tokio::signal::unix::Signal,
    ) -> Result<HealExit> {
        let schedule = match store {
            Some(s) => Some(
                SnapshotSchedule::new(s.clone())
                    .with_known_snapshot(self.cfg)
                    .await,
            ),
            None => None,
        };
        let mut mem = Memory {
            state: State::Healthy,
            material,
            last_index: None,
            dead: dead_member::Tracker::default(),
            last_quorum_report: None,
            auto: AutoRecovery::default(),
            not_named: None,
            current_restore: None,
            maintenance: MaintenanceSchedule::default(),
            pruning: healthy::Pruning::default(),
            rollout: Rollout::default(),
            schedule,
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.heal.interval) => {}
                _ = shutdown.wait() => {
                    tracing::info!("signal received; stopping etcd");
                    notify(&[sd_notify::NotifyState::Stopping]);
                    self.manager.stop().await?;
                    return Ok(HealExit::Stopped);
                }
                _ = hangup.recv() => return Ok(HealExit::Reload(mem.material)),
            }
            if let Some(exit) = self.tick(&mut mem, store, shutdown).await? {
                return Ok(exit);
            }
        }
    }

    /// One tick: the jobs of every state, then the step for the member's health.
    async fn tick(
        &self,
        mem: &mut Memory,
        store: Option<&Store>,
        shutdown: &mut Shutdown,
    ) -> Result<Option<HealExit>> {
        let cfg = self.cfg;
        let data_dir = &cfg.member.data_dir;
        notify(&[sd_notify::NotifyState::Watchdog]);
        if super::recover::request_path(data_dir).exists() {
            // A recovery stops and starts etcd and can outlast WatchdogSec on a slow disk.
            tokio::select! {
                _ = self.answer_recover_request(&mem.material) => {}
                never = keep_watchdog_fed(cfg.heal.interval) => match never {},
            }
        }
        if let Some(store) = store {
            if self.restore_job(mem, store).await == Flow::NextTick {
                return Ok(None);
            }
        }
        // Also without a healthy local member: the NOSPACE alarm makes every member report
        // itself unhealthy, and clearing it is this job's.
        if let Err(e) = self
            .maintenance_tick(&mem.material, &mut mem.maintenance)
            .await
        {
            tracing::warn!(error = %format!("{e:#}"), "database maintenance (defrag, NOSPACE); trying again at the next tick");
        }
        let mut renewed = Some(mem.material.clone());
        if let Err(e) = self.renew_certificates(true, &mut renewed).await {
            tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed; the current certificates stay in place; trying again after heal.interval");
        }
        if let Some(m) = renewed {
            mem.material = m;
        }
        let health = client::check_health(&local_endpoint(cfg), &mem.material).await;
        metrics::local_health(&health);
        let tick = Tick {
            left: datadir::left_marker(data_dir).exists(),
            paused: datadir::pause_marker(data_dir).exists(),
            healthy: health.is_ok(),
            heal_enabled: cfg.heal.enabled,
        };
        let (next, todo) = step(mem.state, tick);
        log_transition(mem.state, next, &health);
        mem.state = next;
        let rejoin = match todo {
            Step::Exit => {
                tracing::info!("this node left the cluster (`etcd-bootstrap leave`); stopping etcd and exiting");
                self.manager.stop().await?;
                return Ok(Some(HealExit::Stopped));
            }
            Step::Idle => false,
            Step::Maintain => {
                if let Ok(me) = health {
                    if !self.maintain(mem, store, &me, shutdown).await {
                        tracing::info!("signal received during a rollout's restart; stopping etcd (the rollout goes on at the agent's next start)");
                        notify(&[sd_notify::NotifyState::Stopping]);
                        self.manager.stop().await?;
                        return Ok(Some(HealExit::Stopped));
                    }
                }
                false
            }
            Step::AskWhetherRemoved => self.ask_whether_removed(mem).await?,
            Step::Rejoin => true,
        };
        if rejoin {
            return self.rejoin(mem, shutdown).await;
        }
        Ok(None)
    }

    /// A fleet-wide restore request in the store: follow it (bounded by its own steps; the
    /// watchdog is fed meanwhile). `NextTick` when etcd now runs from restored data, or is
    /// stopped with its data aside for a restore that could not be finished yet.
    async fn restore_job(&self, mem: &mut Memory, store: &Store) -> Flow {
        let followed = tokio::select! {
            r = self.follow_restore_request(store) => r,
            never = keep_watchdog_fed(self.cfg.heal.interval) => match never {},
        };
        match followed {
            Ok((f, current)) => {
                mem.current_restore = current;
                match f {
                    Followed::Restored(_) => {
                        // etcd runs from the restored data; it is healthy once a majority of the
                        // members have followed the request.
                        mem.state = State::Unhealthy;
                        return Flow::NextTick;
                    }
                    Followed::NotAMember(id) if mem.not_named.as_ref() != Some(&id) => {
                        tracing::warn!(request = %id, "a fleet-wide restore request does not name this member (it joined after the request was made): its data is left as it is; once the restored cluster runs, remove this member's data by hand (or `etcd-bootstrap leave`) to let it join that cluster");
                        mem.not_named = Some(id);
                    }
                    _ => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "following the fleet-wide restore request failed; trying again after heal.interval");
                if super::restore::under_way(&self.cfg.member.data_dir).unwrap_or(false) {
                    // etcd is stopped and its data is aside: nothing else to do here.
                    return Flow::NextTick;
                }
            }
        }
        Flow::Go
    }

    /// The data is aside: join again (bounded by discovery.timeout, which can outlast
    /// WatchdogSec: the watchdog is fed meanwhile). A signal stops etcd and ends the loop.
    async fn rejoin(&self, mem: &mut Memory, shutdown: &mut Shutdown) -> Result<Option<HealExit>> {
        let healed = tokio::select! {
            r = self.converge() => r,
            never = keep_watchdog_fed(self.cfg.heal.interval) => match never {},
            _ = shutdown.wait() => {
                self.manager.stop().await?;
                return Ok(Some(HealExit::Stopped));
            }
        };
        match healed {
            Ok(m) => {
                mem.material = m;
                mem.state = State::Healthy;
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
        Ok(None)
    }
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
