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
//!   within `CAUGHT_UP`), at most `upgrade.member_timeout`. A member that does not come back
//!   keeps every other member from starting (they are not all healthy): the rollout stops there.

use super::{local_endpoint, Agent};
use crate::etcd::client::{self, Whoami};
use crate::etcd::datadir;
use crate::etcd::lock;
use crate::etcd::membership;
use crate::etcd::render::{self, ClusterState};
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
            if st.pending_since.take().is_some() {
                let mut c =
                    client::connect(&[local_endpoint(cfg)], material, client::PROBE_TIMEOUT)
                        .await?;
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
        if me.is_learner {
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
        let result = self.restart_member(material, &urls, &desired).await;
        if result.is_ok() {
            st.pending_since = None;
            let _ = client::bounded(
                "Delete",
                client::PROBE_TIMEOUT,
                c.delete(pending_key.as_str(), None),
            )
            .await;
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

    /// Under the lock: hand leadership over if this member has it, restart etcd with the files
    /// of the configuration in force, and wait until it is healthy and caught up.
    async fn restart_member(
        &self,
        material: &ClientMaterial,
        urls: &[(u64, String)],
        desired: &str,
    ) -> Result<()> {
        let cfg = self.cfg;
        let local = local_endpoint(cfg);
        // Under the lock, again: the member that held it before may have just let it go.
        let me = client::check_health(&local, material).await?;
        if me.is_leader() {
            self.hand_over_leadership(material, &me, urls).await?;
        }
        let started = Instant::now();
        let member = super::converge::current_member(cfg)?;
        let spec = render::spec(cfg, &member, &ClusterState::FromDisk)?;
        tracing::info!(manager = %self.manager.describe(), "rolling the configuration in force: restarting this member's etcd (the rollout lock is held)");
        self.manager.install(&spec)?;
        self.manager.start(true).await?;
        datadir::write_applied(&cfg.member.data_dir, desired)?;
        let deadline = started + cfg.upgrade.member_timeout;
        loop {
            let last = match caught_up(&local, material, urls).await {
                Ok(()) => break,
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "this member's etcd was not healthy and caught up within upgrade.member_timeout ({}) after its restart (last: {last}); the rollout stops here: no other member restarts while one is unhealthy",
                    crate::util::time::format_duration(cfg.upgrade.member_timeout)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tracing::info!(took = ?started.elapsed(), "etcd restarted with the configuration in force: healthy and caught up; the rollout lock passes on");
        Ok(())
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
