//! What the heal loop does at a healthy tick: keep the identity record current, roll the
//! configuration in force when it is this member's turn, take the scheduled snapshot, prune
//! moved-aside copies, check the peer certificates' role, and (on the leader's node) watch the
//! members for a dead one.

use super::{keep_watchdog_fed, Memory};
use crate::agent::metrics::{self, HealAction};
use crate::agent::{local_endpoint, Agent};
use crate::backup::catalog;
use crate::backup::store::Store;
use crate::decide::{dead_member, prune};
use crate::etcd::datadir;
use crate::etcd::{client, membership};
use crate::tls::ClientMaterial;
use anyhow::Result;
use std::time::{Duration, Instant};

/// The store is listed at most every this many `heal.interval`s to learn whether it holds a
/// verified snapshot of the running cluster, and only while that decides whether a copy of an
/// earlier cluster may be pruned (after a restore, until the restored cluster's first snapshot).
const SNAPSHOT_LOOK_EVERY_TICKS: u32 = 5;

/// How long one such listing may take.
const SNAPSHOT_LOOK_TIMEOUT: Duration = Duration::from_secs(20);

/// What pruning at healthy ticks remembers.
#[derive(Debug, Default)]
pub(super) struct Pruning {
    /// The running cluster the store was seen to hold a verified snapshot of (it keeps one:
    /// retention deletes a snapshot only after a newer one is stored).
    snapshot_of: Option<u64>,
    /// When the store was last listed, and for which cluster.
    looked: Option<(u64, Instant)>,
    /// The copies kept at the last tick (logged again, with why, when they change).
    kept: Vec<String>,
}

impl Agent<'_> {
    /// Every job of a healthy tick, each on its own: one that fails is logged and tried again at
    /// the next tick, and never keeps the others from running.
    /// False when SIGTERM or SIGINT came while a rollout restarted etcd (which can take up to
    /// upgrade.member_timeout): the caller stops.
    pub(super) async fn maintain(
        &self,
        mem: &mut Memory,
        store: Option<&Store>,
        me: &client::Whoami,
        shutdown: &mut super::Shutdown,
    ) -> bool {
        let cfg = self.cfg;
        mem.last_index = Some(me.raft_index);
        if let Err(e) = self.refresh_record(&mem.material, me).await {
            tracing::warn!(error = %format!("{e:#}"), "updating the identity record failed");
        }
        // A restart of etcd for the configuration in force, when it is this member's turn;
        // bounded by upgrade.member_timeout, which can outlast WatchdogSec.
        // A stop asked for meanwhile is not held up by it: the roll is left where it is (its
        // lock's lease expires; the next start of the agent goes on with it).
        let rolled = tokio::select! {
            r = self.rollout_tick(&mem.material, me, &mut mem.rollout) => r,
            never = keep_watchdog_fed(cfg.heal.interval) => match never {},
            _ = shutdown.wait() => return false,
        };
        if let Err(e) = rolled {
            tracing::warn!(error = %format!("{e:#}"), "rolling the configuration in force; trying again at the next tick");
        }
        if let Some(sched) = mem.schedule.as_mut() {
            if let Err(e) = self.snapshot_tick(sched, &mem.material, me).await {
                tracing::warn!(error = %format!("{e:#}"), "scheduled snapshot");
            }
        }
        if let Err(e) = self.prune_tick(me, store, &mut mem.pruning).await {
            tracing::warn!(error = %format!("{e:#}"), "pruning moved-aside data dirs failed; trying again at the next tick");
        }
        if let Err(e) = self.peer_roles_tick(&mem.material).await {
            tracing::debug!(error = %format!("{e:#}"), "checking the members' peer certificates for the peer role; trying again at the next tick");
        }
        let policy = cfg.heal.remove_dead_after.filter(|_| cfg.heal.enabled);
        if let Err(e) = self
            .watch_members(&mem.material, me, &mut mem.dead, policy)
            .await
        {
            tracing::warn!(error = %format!("{e:#}"), "dead-member check failed");
        }
        true
    }

    /// At a healthy tick: prune moved-aside copies (`decide::prune`). The store is listed only
    /// when its answer matters (a copy of an earlier cluster is on disk, and no verified snapshot
    /// of the running cluster was seen yet), at most every `SNAPSHOT_LOOK_EVERY_TICKS` ticks;
    /// without `[backup]` the running cluster never has one.
    async fn prune_tick(
        &self,
        me: &client::Whoami,
        store: Option<&Store>,
        st: &mut Pruning,
    ) -> Result<()> {
        let cfg = self.cfg;
        let data_dir = &cfg.member.data_dir;
        // A fleet-wide restore under way moves data itself; its copies wait for the next tick.
        if crate::agent::restore::under_way(data_dir)? {
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
        if !me.is_leader() {
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
async fn holds_verified_snapshot_of(store: &Store, cluster: u64) -> bool {
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
            let since = record
                .held
                .unreachable_since
                .get(&key)
                .copied()
                .unwrap_or(now);
            (key, since)
        })
        .collect();
    if next != record.held.unreachable_since {
        record.held.unreachable_since = next;
        record.save(data_dir)?;
    }
    Ok(())
}
