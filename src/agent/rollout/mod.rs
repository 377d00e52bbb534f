//! Rolling a change etcd must be restarted for (`decide::change`) through the cluster, one member
//! at a time, at the heal loop's healthy ticks. A member whose etcd runs with other files than
//! the configuration in force renders (the fingerprint in `<data_dir>.applied`) restarts its etcd
//! only
//! - while every member is healthy and none is a learner (etcd rule: N voters need floor(N/2)+1
//!   of them; one member down of a healthy cluster of three or more keeps the quorum, two do not);
//! - holding the rollout lock (`etcd::lock`): one member down at a time, across the cluster;
//! - the leader last: it waits while another member says its roll is pending, then hands its
//!   leadership to a healthy voter (MoveLeader) before it stops, so that no election is lost;
//! - and it keeps the lock until its etcd is healthy and caught up with the leader (raft index
//!   within `CAUGHT_UP`), at most `upgrade.member_timeout`.
//!
//! Before a member stops (`guard`): the release step must be one etcd allows from what every
//! member runs, the new etcd passes a trial start, and with `[backup]` a verified snapshot is
//! stored once per rollout. A member that is not healthy on the new etcd within the timeout is
//! put back on its previous files and binaries, and the rollout halts cluster-wide (`halt`) until
//! the configuration asks for another change.

mod guard;
pub(crate) mod halt;

use super::{local_endpoint, Agent};
use crate::decide::version_step;
use crate::etcd::client::{self, Whoami};
use crate::etcd::datadir;
use crate::etcd::lock;
use crate::etcd::membership;
use crate::etcd::render::{self, ClusterState};
use crate::etcd::version::EtcdVersion;
use crate::tls::ClientMaterial;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// The rollout lock's lease: a holder that dies releases it this long after.
const LOCK_TTL: i64 = 30;
/// A restarted member is caught up when its raft index is within this of the leader's.
const CAUGHT_UP: u64 = 100;
/// How long leadership may take to move.
const MOVE_LIMIT: Duration = Duration::from_secs(15);

/// What an agent remembers between ticks about its own pending roll.
#[derive(Debug, Default)]
pub(crate) struct Rollout {
    /// Since when this member's roll has been pending.
    pending_since: Option<Instant>,
    /// The fingerprint whose release step was refused (logged once).
    refused: Option<String>,
    /// This agent's first tick is done: a pending entry left by an agent killed in its roll
    /// (this member's, before a restart) has been removed.
    started: bool,
}

fn base(cluster: &str) -> String {
    format!("/etcd-bootstrap/rollout/{cluster}")
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Agent<'_> {
    /// At a healthy tick: nothing, unless etcd runs with other files than the configuration in
    /// force renders; then restart it when the rules above allow.
    pub(crate) async fn rollout_tick(
        &self,
        material: &ClientMaterial,
        me: &Whoami,
        st: &mut Rollout,
    ) -> Result<()> {
        let cfg = self.cfg;
        let data_dir = &cfg.member.data_dir;
        let desired = super::reload::fingerprint(cfg)?;
        let applied = datadir::read_applied(data_dir);
        let pending_key = format!("{}/pending/{:x}", base(&cfg.cluster.name), me.member_id);
        if applied.as_deref() == Some(desired.as_str()) {
            let showed_halt = datadir::rollout_halted(data_dir).is_some();
            if !showed_halt && st.pending_since.is_none() && st.started {
                return Ok(());
            }
            let mut c =
                client::connect(&[local_endpoint(cfg)], material, client::PROBE_TIMEOUT).await?;
            if showed_halt {
                // This member showed a halt: its configuration no longer asks for that change
                // (put back, or another one that is applied): lift it.
                halt::in_force(&mut c, cfg).await?;
            }
            if st.pending_since.take().is_some() || !std::mem::replace(&mut st.started, true) {
                client::bounded(
                    "Delete",
                    client::PROBE_TIMEOUT,
                    c.delete(pending_key.as_str(), None),
                )
                .await?;
            }
            return Ok(());
        }
        let since = *st.pending_since.get_or_insert_with(Instant::now);
        // Say so in etcd, with the time: the leader waits while another member's roll is
        // pending (a stale entry, of an agent that died, counts only for a few ticks).
        let mut c =
            client::connect(&[local_endpoint(cfg)], material, client::PROBE_TIMEOUT).await?;
        client::bounded(
            "Put",
            client::PROBE_TIMEOUT,
            c.put(pending_key.as_str(), now_secs().to_string(), None),
        )
        .await?;
        // Before anything else: a halted rollout of this change waits for another change,
        // whatever the members' health (the member that failed may still be coming back).
        if halt::in_force(&mut c, cfg).await?.is_some() || me.is_learner {
            return Ok(());
        }
        let members = membership::list(&mut c).await?;
        if let Some(l) = members.iter().find(|m| m.is_learner) {
            tracing::info!(learner = %l.name, "etcd must be restarted for the configuration in force; waiting: a learner is catching up");
            return Ok(());
        }
        let urls: Vec<(u64, String)> = members
            .iter()
            .map(|m| (m.id, m.client_urls.first().cloned().unwrap_or_default()))
            .collect();
        let health = futures::future::join_all(
            urls.iter()
                .map(|(_, u)| client::check_health(u.as_str(), material)),
        )
        .await;
        if let Some(((id, _), Err(e))) = urls.iter().zip(&health).find(|(_, h)| h.is_err()) {
            tracing::info!(member = %format!("{id:x}"), error = %format!("{e:#}"), "etcd must be restarted for the configuration in force; waiting: not every member is healthy");
            return Ok(());
        }
        let (step, to) = guard::step(cfg, &health);
        if let version_step::Step::Refused { why, path } = &step {
            let line = format!("etcd release change refused: {why}; allowed: {path}");
            if st.refused.as_deref() != Some(desired.as_str()) {
                tracing::error!(reason = %line, "etcd is not restarted for the configuration in force");
                super::reload::note_rejected(cfg, &line);
                st.refused = Some(desired.clone());
            }
            return Ok(());
        }
        if st.refused.take().is_some() {
            super::reload::clear_rejected(cfg);
        }
        if me.is_leader() && self.leader_waits(&mut c, &pending_key, since).await? {
            return Ok(());
        }
        let holder = super::node_name(cfg);
        let lock_key = format!("{}/lock", base(&cfg.cluster.name));
        let Some(held) = lock::try_lock(
            &[local_endpoint(cfg)],
            material,
            &lock_key,
            &holder,
            LOCK_TTL,
            vec![],
        )
        .await?
        else {
            return Ok(());
        };
        let result = self
            .restart_member(material, &mut c, &urls, &desired, to)
            .await;
        if result.is_ok() {
            st.pending_since = None;
            let _ = client::bounded(
                "Delete",
                client::PROBE_TIMEOUT,
                c.delete(pending_key.as_str(), None),
            )
            .await;
            self.end_when_none_pending(&mut c).await;
        }
        held.release().await;
        result
    }

    /// The leader's etcd restarts last: it waits while another member's roll is pending (an
    /// entry younger than three ticks: that of an agent that died counts only for a while), and
    /// for a few ticks of its own, for members that have not said so yet (the same change
    /// reaches every agent at about once).
    async fn leader_waits(
        &self,
        c: &mut etcd_client::Client,
        pending_key: &str,
        since: Instant,
    ) -> Result<bool> {
        let cfg = self.cfg;
        if since.elapsed() < cfg.heal.interval * 2 {
            return Ok(true);
        }
        let fresh = (cfg.heal.interval * 3).as_secs() as i64 + 1;
        let resp = client::bounded(
            "Range",
            client::PROBE_TIMEOUT,
            c.get(
                format!("{}/pending/", base(&cfg.cluster.name)),
                Some(etcd_client::GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let others = resp
            .kvs()
            .iter()
            .filter(|kv| kv.key() != pending_key.as_bytes())
            .filter(|kv| {
                std::str::from_utf8(kv.value())
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|t| now_secs() - t <= fresh)
            })
            .count();
        if others > 0 {
            tracing::debug!(
                others,
                "the leader's etcd restarts last: other members are pending"
            );
            return Ok(true);
        }
        Ok(false)
    }

    /// The last member of a rollout is done (no pending entry left): the next rollout takes
    /// its own snapshot first.
    async fn end_when_none_pending(&self, c: &mut etcd_client::Client) {
        let prefix = format!("{}/pending/", base(&self.cfg.cluster.name));
        let left = client::bounded(
            "Range",
            client::PROBE_TIMEOUT,
            c.get(
                prefix.as_str(),
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            ),
        )
        .await;
        if left.is_ok_and(|r| r.count() == 0) {
            tracing::info!("no member's roll is pending any more: the rollout is over");
            let _ = guard::forget_snapshot(c, self.cfg).await;
        }
    }

    /// Under the lock: the snapshot first, the new release installed and tried, leadership
    /// handed over if this member has it, etcd restarted with the files of the configuration in
    /// force; then it must be healthy and caught up, else it is put back and the rollout halts.
    async fn restart_member(
        &self,
        material: &ClientMaterial,
        c: &mut etcd_client::Client,
        urls: &[(u64, String)],
        desired: &str,
        to: Option<EtcdVersion>,
    ) -> Result<()> {
        let cfg = self.cfg;
        let local = local_endpoint(cfg);
        // Under the lock, again: the member that held it before may have just let it go.
        let me = client::check_health(&local, material).await?;
        self.snapshot_first(c, &local).await?;
        let member = super::converge::current_member(cfg)?;
        let spec = render::spec(cfg, &member, &ClusterState::FromDisk)?;
        let saved = halt::Saved::take(self.manager.as_ref(), &spec, cfg)?;
        let version = to.map_or("unknown".to_string(), |v| v.to_string());
        let halted = |reason: String| halt::Halted {
            member: member.name.clone(),
            version: version.clone(),
            reason,
            change: halt::change_id(cfg),
            at: now_secs(),
        };
        let endpoints: Vec<String> = urls.iter().map(|(_, u)| u.clone()).collect();
        if let Err(e) = self.install_and_try(&spec).await {
            saved.put_back(cfg)?;
            let h = halted(format!("{e:#}"));
            halt::halt(&endpoints, material, &cfg.cluster.name, &h).await?;
            bail!("{}", h.line());
        }
        saved.persist(cfg)?;
        if me.is_leader() {
            if let Err(e) = self.hand_over_leadership(material, &me, urls).await {
                halt::Saved::forget(cfg);
                return Err(e);
            }
        }
        let started = Instant::now();
        tracing::info!(manager = %self.manager.describe(), release = %version, "rolling the configuration in force: restarting this member's etcd (the rollout lock is held)");
        self.manager.install(&spec)?;
        self.manager.start(true).await?;
        datadir::write_applied(&cfg.member.data_dir, desired)?;
        if let Err(last) = wait_caught_up(&local, material, urls, cfg.upgrade.member_timeout).await
        {
            let reason = format!(
                "not healthy and caught up within upgrade.member_timeout ({}) after its restart (last: {last})",
                crate::util::time::format_duration(cfg.upgrade.member_timeout)
            );
            tracing::error!(%reason, "this member's etcd is put back on what it ran before; the rollout halts cluster-wide");
            saved.put_back(cfg)?;
            halt::Saved::forget(cfg);
            self.manager.start(true).await?;
            let h = halted(reason);
            halt::halt(&endpoints, material, &cfg.cluster.name, &h).await?;
            if let Err(e) = wait_caught_up(&local, material, urls, cfg.upgrade.member_timeout).await
            {
                tracing::error!(error = %e, "this member's etcd is not healthy on its previous files either");
            }
            bail!("{}", h.line());
        }
        halt::Saved::forget(cfg);
        crate::etcd::install::drop_previous(cfg);
        tracing::info!(took = ?started.elapsed(), "etcd restarted with the configuration in force: healthy and caught up; the rollout lock passes on");
        Ok(())
    }

    /// The release `etcd.download_url` names installed (the binaries it replaces kept), and the
    /// trial start of what etcd will run.
    async fn install_and_try(&self, spec: &crate::etcd::render::EtcdSpec) -> Result<()> {
        if crate::etcd::install::another_release_configured(self.cfg) {
            crate::etcd::install::ensure(self.cfg).await?;
        }
        self.trial_start(spec).await
    }

    /// MoveLeader to the healthy voter furthest ahead, and wait until it leads.
    async fn hand_over_leadership(
        &self,
        material: &ClientMaterial,
        me: &Whoami,
        urls: &[(u64, String)],
    ) -> Result<()> {
        let mut best: Option<(u64, u64)> = None;
        for (id, url) in urls.iter().filter(|(id, _)| *id != me.member_id) {
            if let Ok(w) = client::check_health(url, material).await {
                if best.is_none_or(|(_, idx)| w.raft_index > idx) {
                    best = Some((*id, w.raft_index));
                }
            }
        }
        let Some((target, _)) = best else {
            bail!("no other healthy voter to hand leadership to");
        };
        let local = local_endpoint(self.cfg);
        let mut c = client::connect(
            std::slice::from_ref(&local),
            material,
            client::PROBE_TIMEOUT,
        )
        .await?;
        tracing::info!(to = %format!("{target:x}"), "this member leads: handing leadership over before its etcd restarts");
        client::bounded("MoveLeader", MOVE_LIMIT, c.move_leader(target)).await?;
        let deadline = Instant::now() + MOVE_LIMIT;
        loop {
            if let Ok(w) = client::check_health(&local, material).await {
                if w.leader == target {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("leadership did not move to {target:x} within {MOVE_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Wait until `caught_up`, at most `limit`: the last reason it was not, else.
async fn wait_caught_up(
    local: &str,
    material: &ClientMaterial,
    urls: &[(u64, String)],
    limit: Duration,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match caught_up(local, material, urls).await {
            Ok(()) => return Ok(()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The local member is healthy and its raft index is within `CAUGHT_UP` of its leader's.
async fn caught_up(local: &str, material: &ClientMaterial, urls: &[(u64, String)]) -> Result<()> {
    let me = client::check_health(local, material).await?;
    let leader_url = urls
        .iter()
        .find(|(id, _)| *id == me.leader)
        .map(|(_, u)| u.clone())
        .context("the leader is not in the membership seen before the restart")?;
    let leader = if me.is_leader() {
        me.clone()
    } else {
        client::check_health(&leader_url, material).await?
    };
    let behind = leader.raft_index.saturating_sub(me.raft_index);
    if behind > CAUGHT_UP {
        bail!("{behind} raft entries behind the leader");
    }
    Ok(())
}
