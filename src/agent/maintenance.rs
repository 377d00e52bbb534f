//! Database maintenance by the agents, without cron: every `maintenance.interval` the leader's
//! agent defragments the members that `maintenance.defrag_when` picks, one at a time, followers
//! first, the leader last after handing leadership away (`decide::defrag::plan`); at every heal
//! tick it looks for the NOSPACE alarm and, once space can be freed, defragments and disarms it
//! (`decide::defrag::nospace`). `etcd-bootstrap defrag [--all]` runs the same job now.
//!
//! One job at a time across the cluster: the job holds a key under a lease in etcd (released
//! when it ends, or when its holder dies and the lease expires). While NOSPACE is raised etcd
//! refuses every write, the lease too: then only the leader's agent acts, which is one agent.

use super::{local_endpoint, notify, Agent};
use crate::decide::defrag::{self, Hold, MemberDb, Nospace};
use crate::etcd::lock::{self, LeaseLock};
use crate::etcd::maintenance::{self as ops, DbStatus};
use crate::etcd::{client, membership};
use crate::tls::ClientMaterial;
use crate::util::text::size_text;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// How long one member's defrag may take (it rewrites the whole database file).
const DEFRAG_LIMIT: Duration = Duration::from_secs(300);
/// How long a defragmented member may take to be healthy again, and leadership to move.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// The job's lock lease.
const LOCK_TTL: i64 = 60;
/// The first wait between two probing defrags under NOSPACE; it doubles up to 16 times this.
const PROBE_FIRST: Duration = Duration::from_secs(60);
/// How often an agent repeats that NOSPACE cannot be cleared without deleting data.
const CANNOT_FREE_EVERY: Duration = Duration::from_secs(60);

/// The maintenance state of one agent.
#[derive(Default)]
pub(crate) struct MaintenanceSchedule {
    last_run: Option<Instant>,
    last_cannot_free: Option<Instant>,
    /// Probing defrags under NOSPACE (see `clear_nospace`): how many, and when the next.
    probes: u32,
    next_probe: Option<Instant>,
}

/// One member defragmented.
#[derive(Debug, Clone)]
pub(crate) struct Defragged {
    pub name: String,
    pub was_leader: bool,
    pub before: u64,
    pub after: u64,
    pub took: Duration,
}

/// The members as the job sees them.
struct DbsSeen {
    dbs: Vec<MemberDb>,
    urls: Vec<(u64, String)>,
    unhealthy: Vec<String>,
}

impl DbsSeen {
    fn url(&self, id: u64) -> Option<&str> {
        self.urls
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, u)| u.as_str())
    }
}

fn quota(cfg: &crate::config::Config) -> u64 {
    cfg.etcd
        .flags
        .get("quota-backend-bytes")
        .and_then(|q| q.parse().ok())
        .filter(|q: &u64| *q > 0)
        .unwrap_or(defrag::DEFAULT_QUOTA)
}

impl Agent<'_> {
    /// At every heal tick: nothing unless this node's member leads; NOSPACE at once; the rule
    /// every `maintenance.interval`.
    pub(crate) async fn maintenance_tick(
        &self,
        material: &ClientMaterial,
        sched: &mut MaintenanceSchedule,
    ) -> Result<()> {
        let cfg = self.cfg;
        let local = local_endpoint(cfg);
        let me = ops::db_status(&local, material).await?;
        if !me.is_leader() {
            return Ok(());
        }
        let alarms = ops::nospace_alarms(&local, material).await?;
        super::metrics::nospace(!alarms.is_empty());
        if !alarms.is_empty() {
            return self.clear_nospace(material, &alarms, sched).await;
        }
        if sched
            .last_run
            .is_some_and(|t| t.elapsed() < cfg.maintenance.interval)
        {
            return Ok(());
        }
        sched.last_run = Some(Instant::now());
        if cfg.maintenance.defrag_when.is_none() {
            return Ok(());
        }
        let in_window = match &cfg.maintenance.window {
            None => true,
            Some((_, w)) => {
                let now = time::OffsetDateTime::now_utc();
                w.contains(now.hour() as u16 * 60 + now.minute() as u16)
            }
        };
        self.defrag_cluster(material, false, in_window).await?;
        Ok(())
    }

    /// Defragment what the rule picks (`all`: every member), one at a time, leader last.
    pub(crate) async fn defrag_cluster(
        &self,
        material: &ClientMaterial,
        all: bool,
        in_window: bool,
    ) -> Result<Vec<Defragged>> {
        let cfg = self.cfg;
        let seen = self.see_dbs(material).await?;
        let rule = cfg.maintenance.defrag_when.as_ref();
        let order = match defrag::plan(&seen.dbs, &seen.unhealthy, rule, quota(cfg), all, in_window)
        {
            Ok(o) => o,
            Err(Hold::NothingToDo) => {
                tracing::debug!("no member needs a defrag");
                return Ok(vec![]);
            }
            Err(Hold::OutsideWindow) => {
                tracing::debug!("outside maintenance.window: no defrag now");
                return Ok(vec![]);
            }
            Err(Hold::Unhealthy(who)) => {
                bail!("not defragmenting while a member is not healthy ({who}): a defrag takes one more member out for its duration")
            }
        };
        let Some(lock) = self.lock(material).await? else {
            tracing::info!(
                "another agent or `defrag` command is defragmenting; not starting a second one"
            );
            return Ok(vec![]);
        };
        let result = self.defrag_in_order(material, &seen, &order).await;
        lock.release().await;
        result
    }

    async fn see_dbs(&self, material: &ClientMaterial) -> Result<DbsSeen> {
        let cfg = self.cfg;
        let mut c =
            client::connect(&[local_endpoint(cfg)], material, client::PROBE_TIMEOUT).await?;
        let members = membership::list(&mut c).await?;
        let mut seen = DbsSeen {
            dbs: vec![],
            urls: vec![],
            unhealthy: vec![],
        };
        for m in &members {
            let who = if m.name.is_empty() {
                format!("{:x}", m.id)
            } else {
                m.name.clone()
            };
            let Some(url) = m.client_urls.first() else {
                seen.unhealthy.push(format!("{who} (never started)"));
                continue;
            };
            match ops::db_status(url, material).await {
                Ok(s) if s.leader != 0 && s.errors.is_empty() => {
                    seen.dbs.push(MemberDb {
                        id: m.id,
                        name: who,
                        db_size: s.db_size,
                        db_size_in_use: s.db_size_in_use,
                        is_leader: s.leader == m.id,
                        is_learner: m.is_learner,
                    });
                    seen.urls.push((m.id, url.clone()));
                }
                Ok(s) => seen.unhealthy.push(format!(
                    "{who}: {}",
                    if s.leader == 0 {
                        "no leader".to_string()
                    } else {
                        s.errors.join("; ")
                    }
                )),
                Err(e) => seen.unhealthy.push(format!("{who}: {e:#}")),
            }
        }
        Ok(seen)
    }

    async fn defrag_in_order(
        &self,
        material: &ClientMaterial,
        seen: &DbsSeen,
        order: &[MemberDb],
    ) -> Result<Vec<Defragged>> {
        let mut done = Vec::new();
        for (i, m) in order.iter().enumerate() {
            let url = seen.url(m.id).context("a member without a client URL")?;
            let mut was_leader = false;
            if m.is_leader {
                was_leader = true;
                self.hand_leadership_away(material, seen, m, url).await?;
            }
            let role = if was_leader {
                "leader, after handing leadership away"
            } else if m.is_learner {
                "learner"
            } else {
                "follower"
            };
            tracing::info!(member = %m.name, %role, position = %format!("{}/{}", i + 1, order.len()), size = %size_text(m.db_size), in_use = %size_text(m.db_size_in_use), "defragmenting member");
            notify(&[sd_notify::NotifyState::Status(&format!(
                "defragmenting {}",
                m.name
            ))]);
            let started = Instant::now();
            let defrag = ops::defragment(url, material, DEFRAG_LIMIT);
            tokio::pin!(defrag);
            loop {
                tokio::select! {
                    r = &mut defrag => { r.with_context(|| format!("defragmenting {}", m.name))?; break; }
                    _ = tokio::time::sleep(Duration::from_secs(10)) => notify(&[sd_notify::NotifyState::Watchdog]),
                }
            }
            let after = wait_settled(url, material).await.with_context(|| {
                format!("{} did not come back healthy after its defrag", m.name)
            })?;
            let took = started.elapsed();
            tracing::info!(member = %m.name, %role, before = %size_text(m.db_size), after = %size_text(after.db_size), reclaimed = %size_text(m.db_size.saturating_sub(after.db_size)), ?took, "member defragmented");
            super::metrics::defrag_done(&m.name, m.db_size.saturating_sub(after.db_size));
            done.push(Defragged {
                name: m.name.clone(),
                was_leader,
                before: m.db_size,
                after: after.db_size,
                took,
            });
        }
        notify(&[sd_notify::NotifyState::Status("etcd member healthy")]);
        Ok(done)
    }

    /// A defragmenting leader stalls every write of the cluster: move leadership to a healthy
    /// voter first, and wait until another member leads.
    async fn hand_leadership_away(
        &self,
        material: &ClientMaterial,
        seen: &DbsSeen,
        leader: &MemberDb,
        url: &str,
    ) -> Result<()> {
        let Some(to) = seen.dbs.iter().find(|d| d.id != leader.id && !d.is_learner) else {
            // A one-member cluster: nobody to hand it to; the defrag stalls it either way.
            return Ok(());
        };
        tracing::info!(from = %leader.name, to = %to.name, "moving leadership away before defragmenting the leader");
        ops::move_leader(url, material, to.id).await?;
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            if let Ok(s) = ops::db_status(url, material).await {
                if s.leader != 0 && s.leader != leader.id {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "leadership did not move away from {} within {SETTLE_LIMIT:?}",
                    leader.name
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// NOSPACE is raised: defragment where that frees enough, disarm once every member is under
    /// 90% of the quota, or say (once a minute) that only deleting data helps.
    async fn clear_nospace(
        &self,
        material: &ClientMaterial,
        alarms: &[u64],
        sched: &mut MaintenanceSchedule,
    ) -> Result<()> {
        let cfg = self.cfg;
        let quota = quota(cfg);
        let seen = self.see_dbs(material).await?;
        if !seen.unhealthy.is_empty() {
            bail!(
                "NOSPACE is raised, and not every member answers ({}); waiting",
                seen.unhealthy.join(", ")
            );
        }
        let mut verdict = defrag::nospace(&seen.dbs, quota);
        let mut seen = seen;
        if matches!(verdict, Nospace::CannotFree(_))
            && sched.next_probe.is_none_or(|t| Instant::now() >= t)
        {
            // dbSizeInUse lags behind a compaction until the backend commits again, and under
            // NOSPACE nothing more is written (seen on 3.5: 15 MiB "in use" a minute after every
            // key was deleted and compacted; etcd 3.4 lags also without NOSPACE). What a defrag
            // frees is only known by doing one: one follower, after 1, 2, 4, 8, then every 16
            // minutes while the alarm stays.
            let wait = PROBE_FIRST * 2u32.pow(sched.probes.min(4));
            sched.probes += 1;
            sched.next_probe = Some(Instant::now() + wait);
            let order = defrag::plan(&seen.dbs, &[], None, quota, true, true).unwrap_or_default();
            if let Some(first) = order.first().filter(|m| !m.is_leader) {
                tracing::info!(member = %first.name, next_in = ?wait, "NOSPACE and the in-use figures say a defrag cannot help, but they lag behind compaction: defragmenting one follower to see what a defrag frees");
                let probed = self
                    .defrag_in_order(material, &seen, std::slice::from_ref(first))
                    .await?;
                seen = self.see_dbs(material).await?;
                verdict = defrag::nospace(&seen.dbs, quota);
                let limit = quota / 100 * defrag::DISARM_BELOW_PERCENT;
                if probed.first().is_some_and(|p| p.after <= limit) {
                    // The same data on every member: what the follower gave back, the others
                    // give back too.
                    verdict = Nospace::Defrag(
                        seen.dbs
                            .iter()
                            .filter(|m| m.db_size > limit)
                            .map(|m| m.id)
                            .collect(),
                    );
                }
            }
        }
        match verdict {
            Nospace::CannotFree(why) => {
                if sched
                    .last_cannot_free
                    .is_none_or(|t| t.elapsed() >= CANNOT_FREE_EVERY)
                {
                    sched.last_cannot_free = Some(Instant::now());
                    tracing::error!(%why, "NOSPACE: etcd refuses every write, and a defrag cannot free enough space");
                    notify(&[sd_notify::NotifyState::Status(
                        "NOSPACE: delete keys and compact; see the log",
                    )]);
                }
                return Ok(());
            }
            Nospace::Defrag(ids) => {
                let order: Vec<MemberDb> = defrag::plan(&seen.dbs, &[], None, quota, true, true)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|m| ids.contains(&m.id))
                    .collect();
                tracing::warn!(members = %order.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(","), "NOSPACE: the live data fits under the quota again; defragmenting to give the space back");
                self.defrag_in_order(material, &seen, &order).await?;
                let again = self.see_dbs(material).await?;
                if defrag::nospace(&again.dbs, quota) != Nospace::Disarm {
                    return Ok(());
                }
            }
            Nospace::Disarm => {}
        }
        if !cfg.maintenance.disarm_nospace {
            tracing::warn!("NOSPACE: every member is under 90% of the quota again; maintenance.disarm_nospace = false: disarm it yourself (etcdctl alarm disarm)");
            return Ok(());
        }
        sched.probes = 0;
        sched.next_probe = None;
        let local = local_endpoint(cfg);
        for id in alarms {
            ops::disarm_nospace(&local, material, *id).await?;
        }
        let sizes = seen
            .dbs
            .iter()
            .map(|m| {
                format!(
                    "{} {} (in use {})",
                    m.name,
                    size_text(m.db_size),
                    size_text(m.db_size_in_use)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(members = alarms.len(), quota = %size_text(quota), %sizes, "NOSPACE alarm disarmed: every member is under 90% of the quota; etcd takes writes again");
        Ok(())
    }

    /// The cluster-wide maintenance lock, or `None` when someone else holds it.
    async fn lock(&self, material: &ClientMaterial) -> Result<Option<LeaseLock>> {
        let cfg = self.cfg;
        let key = format!("/etcd-bootstrap/maintenance/{}/defrag", cfg.cluster.name);
        let holder = crate::agent::node_name(cfg);
        lock::try_lock(
            &[local_endpoint(cfg)],
            material,
            &key,
            &holder,
            LOCK_TTL,
            vec![],
        )
        .await
    }
}

/// Wait until the member at `url` answers with a leader and no errors (other than NOSPACE).
async fn wait_settled(url: &str, material: &ClientMaterial) -> Result<DbStatus> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        match ops::db_status(url, material).await {
            Ok(s) if s.leader != 0 && s.errors.is_empty() => return Ok(s),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(s) => bail!(
                "still reports: leader {:x}, {}",
                s.leader,
                s.errors.join("; ")
            ),
            Err(e) => return Err(e),
        }
    }
}
