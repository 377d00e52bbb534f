//! Bringing the local member up: observe, decide, act, until it is a healthy voter; then settle
//! (record who it is, take the bootstrap flags out of etcd's environment, prune old copies).
//! `bring_up` holds the paths that start etcd: restart from disk, a new cluster, a join.

mod bring_up;

use super::auto_recover::AutoStep;
use super::metrics::{self, HealAction, MemberState};
use super::{env_value, local_endpoint, Agent};
use crate::decide::{self, removed::RemovalVerdict};
use crate::etcd::client::{self, Whoami};
use crate::etcd::datadir::{self, Record, RecordedMember};
use crate::etcd::render::{self, ClusterState, LocalMember};
use crate::etcd::{membership, progress};
use crate::failpoint;
use crate::tls::ClientMaterial;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// What to check when the local member never becomes healthy.
const NO_QUORUM_HINT: &str = "etcd serves clients only once it has joined through raft, which needs a quorum of its members: start the members that are down, see `etcd-bootstrap status` and etcd's log";

/// How often a member that is coming up is checked for having been removed.
const REMOVED_CHECK: Duration = Duration::from_secs(1);

/// The identity record a decision rests on. A record that is absent is "no record" (a new node,
/// or one an older version wrote): the default. One that exists but cannot be read (I/O error,
/// permissions, out of file descriptors, not JSON) is "cannot tell": an error, never the
/// default, since a node without a record may be taken for a node without a cluster (its
/// cluster, member and membership are what the record holds). The caller logs it and tries
/// again later.
pub(crate) fn record_for_decision(data_dir: &std::path::Path) -> Result<Record> {
    Ok(Record::load(data_dir)
        .with_context(|| {
            format!(
                "cannot tell who this member is: its identity record ({}) cannot be read",
                datadir::record_path(data_dir).display()
            )
        })?
        .unwrap_or_default())
}

/// This member's name and address as it runs: from its identity record, else from the
/// environment file an earlier version wrote.
pub(crate) fn current_member(cfg: &crate::config::Config) -> Result<LocalMember> {
    member_of(cfg, &record_for_decision(&cfg.member.data_dir)?)
}

fn member_of(cfg: &crate::config::Config, record: &Record) -> Result<LocalMember> {
    let name = record
        .name
        .clone()
        .or_else(|| env_value(cfg, "ETCD_NAME"))
        .context(
            "this member's name is neither in its identity record nor in etcd's environment file",
        )?;
    let url = record
        .peer_url
        .clone()
        .or_else(|| env_value(cfg, "ETCD_INITIAL_ADVERTISE_PEER_URLS"))
        .context("this member's peer URL is neither in its identity record nor in etcd's environment file")?;
    let ip = crate::model::url::EtcdUrl::parse(&url)
        .map_err(|m| anyhow::anyhow!("{url}: {m}"))?
        .ip()
        .with_context(|| format!("{url} has no IP address"))?;
    Ok(LocalMember { name, ip })
}

impl Agent<'_> {
    /// Bring the local member up, make sure it is a voter, wait until it is healthy. If, while
    /// it comes up, a majority of its membership says it was removed (a restart from the data of
    /// a removed member), move the data aside and go again.
    pub(crate) async fn converge(&self) -> Result<ClientMaterial> {
        let cfg = self.cfg;
        for round in 0..3 {
            let (material, voters) = self.bring_up().await?;
            let deadline = Instant::now() + cfg.discovery.timeout;
            let ready = async {
                self.ensure_voter(&material, voters, deadline).await?;
                wait_healthy(&local_endpoint(cfg), &material, deadline).await
            };
            let removed = async {
                // A member restarted from its data waits here for a quorum: when none can form
                // and every member's agent answers, the automatic recovery acts from here too.
                let mut auto = super::auto_recover::AutoRecovery::default();
                loop {
                    tokio::time::sleep(REMOVED_CHECK).await;
                    // `recover` run by hand while this member waits for a quorum (after a
                    // restart, the heal loop has not begun): carried out here.
                    if super::recover::pending_request(&cfg.member.data_dir) {
                        return AutoStep::AnswerRecoverRequest;
                    }
                    if !progress::local_without_leader(cfg.member.metrics_port).await
                        && client::check_health(&local_endpoint(cfg), &material)
                            .await
                            .is_ok()
                    {
                        continue;
                    }
                    match self.removal_verdict(&material).await {
                        RemovalVerdict::Removed(reason)
                            if !datadir::pause_marker(&cfg.member.data_dir).exists() =>
                        {
                            return AutoStep::MoveAside(reason);
                        }
                        RemovalVerdict::Undecided(_) if cfg.heal.enabled => {
                            if let Some(step) = self.auto_recover_tick(&material, &mut auto).await {
                                return step;
                            }
                        }
                        _ => {}
                    }
                }
            };
            let interrupted = tokio::select! {
                r = ready => {
                    let me = r?;
                    metrics::member_state(MemberState::Voter);
                    self.settle(&material, &me).await?;
                    return Ok(material);
                }
                step = removed => step,
            };
            match interrupted {
                AutoStep::RecoverHere(decision) => {
                    // Outside the select: `ready` would take the one-off etcd's health for
                    // the member's. Then the member starts again from its (recovered) data.
                    self.auto_recover_here(&material, &decision).await;
                }
                AutoStep::AnswerRecoverRequest => {
                    self.answer_recover_request(&material).await;
                }
                AutoStep::MoveAside(reason) => {
                    tracing::warn!(%reason, round, "the member being started is no longer part of the cluster; moving its data aside and joining again");
                    self.manager.stop().await?;
                    datadir::move_aside(&cfg.member.data_dir, &reason, None)?;
                    metrics::heal_action(HealAction::MoveAside);
                }
            }
        }
        bail!("the local member was removed again each time it was started; see the logs of the other members")
    }

    /// Note that etcd was just (re)started with the files of the configuration in force.
    fn note_applied(&self) {
        let cfg = self.cfg;
        match super::reload::fingerprint(cfg) {
            Ok(f) => {
                if let Err(e) = datadir::write_applied(&cfg.member.data_dir, &f) {
                    tracing::warn!(error = %format!("{e:#}"), "cannot note what etcd runs with");
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot tell what etcd runs with"),
        }
    }

    /// An agent restarted with a changed configuration never restarts a running, healthy etcd
    /// by itself (a fleet-wide restart of the agents would restart every etcd at once): when the
    /// local member answers healthy (so its cluster has a quorum) and its files would change,
    /// they are left as they are and the change is rolled by the heal loop, as after a reload.
    /// Not with `process`: its etcd is the agent's child and did not outlive the agent.
    async fn leave_running_etcd(
        &self,
        spec: &render::EtcdSpec,
        material: &ClientMaterial,
    ) -> Result<bool> {
        let cfg = self.cfg;
        if cfg.etcd.service_manager == crate::config::ServiceManagerKind::Process {
            return Ok(false);
        }
        let on_disk = self
            .manager
            .render(spec)?
            .iter()
            .all(|a| std::fs::read_to_string(&a.path).is_ok_and(|t| t == a.content));
        let desired = super::reload::fingerprint(cfg)?;
        if on_disk {
            // Nothing to change (or an older agent wrote the files): what runs is what is
            // rendered.
            if datadir::read_applied(&cfg.member.data_dir).is_none() {
                datadir::write_applied(&cfg.member.data_dir, &desired)?;
            }
            return Ok(false);
        }
        if datadir::read_applied(&cfg.member.data_dir).as_deref() == Some(desired.as_str()) {
            // The configuration did not change; the files did (by hand): written again, as
            // always.
            return Ok(false);
        }
        if client::check_health(&local_endpoint(cfg), material)
            .await
            .is_err()
        {
            return Ok(false);
        }
        tracing::info!("etcd runs and is healthy, with other files than the configuration renders: it is not restarted now; the change is rolled one member at a time");
        Ok(true)
    }

    /// If the local member is a learner, promote it through a voting member once it has caught up.
    async fn ensure_voter(
        &self,
        material: &ClientMaterial,
        mut voters: Vec<String>,
        deadline: Instant,
    ) -> Result<()> {
        let cfg = self.cfg;
        let local = local_endpoint(cfg);
        let (my_id, is_learner) = loop {
            match client::who_is(&local, material).await {
                    Ok((_, me)) => break (me.member_id, me.is_learner),
                    Err(e) if Instant::now() >= deadline => {
                        return Err(e.context(format!(
                            "the local member did not become healthy within discovery.timeout: it did not answer ({NO_QUORUM_HINT})"
                        )))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
        };
        if !is_learner {
            return Ok(());
        }
        metrics::member_state(MemberState::Learner);
        if voters.is_empty() {
            let found = crate::discovery::read_all(&self.observer.sources).await?;
            voters = found.endpoints_except(
                &env_value(cfg, "ETCD_ADVERTISE_CLIENT_URLS").unwrap_or_default(),
            );
        }
        tracing::info!(member = %format!("{my_id:x}"), "local member is a learner; promoting it once it is in sync");
        failpoint::hit("join:before-promote");
        let mut c = membership::connect(&voters, material).await?;
        membership::promote(&mut c, my_id, deadline).await
    }

    /// The member is a healthy voter: record who it is (the cluster it belongs to, its
    /// membership, and that its nonce has been used), take the bootstrap flags out of etcd's
    /// environment (etcd started by hand over an empty data dir must not form anything), and
    /// prune moved-aside copies (`decide::prune`).
    pub(crate) async fn settle(&self, material: &ClientMaterial, me: &Whoami) -> Result<()> {
        let cfg = self.cfg;
        self.refresh_record(material, me).await?;
        let member = current_member(cfg)?;
        let spec = render::spec(cfg, &member, &ClusterState::FromDisk)?;
        // Not while a changed configuration waits for its rollout: etcd's files stay those it
        // runs with until its turn (`rollout`).
        let waiting = datadir::read_applied(&cfg.member.data_dir)
            .is_some_and(|a| super::reload::fingerprint(cfg).is_ok_and(|d| d != a));
        if waiting {
            tracing::info!("the configuration in force changes etcd's files: they are written when this member's turn in the rollout comes");
        } else if self.manager.install(&spec)? {
            tracing::info!(env_file = %cfg.etcd.env_file.display(), "the member has joined: bootstrap flags removed from etcd's environment (ETCD_INITIAL_CLUSTER_STATE=existing only)");
        }
        // The store is not asked here (a start must not wait on it): as if the running cluster
        // had no verified snapshot, the conservative answer; the heal loop asks.
        let data_dir = &cfg.member.data_dir;
        let copies = datadir::moved_copies(data_dir)?;
        let plan = datadir::prune(
            data_dir,
            &copies,
            crate::decide::prune::Running {
                cluster: Some(me.cluster_id),
                raft_index: Some(me.raft_index),
            },
            false,
            cfg.heal.prune_limits(),
        )?;
        datadir::log_kept(data_dir, &plan);
        Ok(())
    }

    /// Keep the identity record in step with the running member.
    pub(crate) async fn refresh_record(
        &self,
        material: &ClientMaterial,
        me: &Whoami,
    ) -> Result<()> {
        let cfg = self.cfg;
        let mut c =
            client::connect(&[local_endpoint(cfg)], material, client::PROBE_TIMEOUT).await?;
        let members = membership::list(&mut c).await?;
        let mut record = Record::load(&cfg.member.data_dir)?.unwrap_or_default();
        let before = record.clone();
        record.held.cluster_name = cfg.cluster.name.clone();
        record.held.cluster_id = Some(me.cluster_id);
        record.held.member_id = Some(me.member_id);
        record.name = env_value(cfg, "ETCD_NAME").or(record.name);
        record.peer_url = env_value(cfg, "ETCD_INITIAL_ADVERTISE_PEER_URLS").or(record.peer_url);
        record.nonce_used = true;
        record.members = members
            .iter()
            .map(|m| RecordedMember {
                id: format!("{:x}", m.id),
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                client_urls: m.client_urls.clone(),
            })
            .collect();
        // The raft index too, at every healthy check: peers ask for it (through the agent
        // endpoint) to tell which member is furthest ahead when etcd itself cannot answer.
        record.held.raft_index = Some(me.raft_index);
        record.held.raft_term = Some(me.raft_term);
        record.held.revision = Some(me.revision);
        if record != before {
            record.save(&cfg.member.data_dir)?;
            if before.held.cluster_id != record.held.cluster_id || before.members != record.members
            {
                let hex = |id: Option<u64>| id.map(|id| format!("{id:x}"));
                tracing::info!(cluster = ?hex(record.held.cluster_id), member = ?hex(record.held.member_id), members = record.members.len(), "identity record updated");
            }
        }
        Ok(())
    }

    /// Whether a majority of this member's last-known membership says it was removed.
    pub(crate) async fn removal_verdict(&self, material: &ClientMaterial) -> RemovalVerdict {
        let cfg = self.cfg;
        // "Cannot tell" is not "no record": with no record, the membership would come from
        // discovery instead of the one this member last recorded.
        let record = match record_for_decision(&cfg.member.data_dir) {
            Ok(r) => r,
            Err(e) => return RemovalVerdict::Undecided(format!("{e:#}")),
        };
        let Some(my_url) = record
            .peer_url
            .clone()
            .or_else(|| env_value(cfg, "ETCD_INITIAL_ADVERTISE_PEER_URLS"))
        else {
            return RemovalVerdict::Undecided("this member's peer URL is unknown".into());
        };
        let live = if progress::local_without_leader(cfg.member.metrics_port).await {
            None
        } else {
            client::who_is(&local_endpoint(cfg), material)
                .await
                .ok()
                .map(|(_, me)| me.cluster_id)
        };
        let my_cluster = live.or(record.cluster());
        let (endpoints, known): (Vec<String>, usize) = if record.members.is_empty() {
            // No record of the membership (an older version wrote this node): discovery's view.
            let Ok(found) = crate::discovery::read_all(&self.observer.sources).await else {
                return RemovalVerdict::Undecided("discovery failed".into());
            };
            let own = env_value(cfg, "ETCD_ADVERTISE_CLIENT_URLS").unwrap_or_default();
            let eps = found.endpoints_except(&own);
            let known = found.peers.len().max(eps.len() + 1);
            (eps, known)
        } else {
            let eps = record
                .members
                .iter()
                .filter(|m| !m.peer_urls.contains(&my_url))
                .filter_map(|m| m.client_urls.first().cloned())
                .collect();
            (eps, record.members.len())
        };
        let answers = client::probe_all(&endpoints, material).await;
        decide::removed::verdict(&my_url, my_cluster, known, &answers)
    }
}

/// Wait until the local member is healthy, bounded by `deadline`.
async fn wait_healthy(
    endpoint: &str,
    material: &ClientMaterial,
    deadline: Instant,
) -> Result<Whoami> {
    let mut last = String::new();
    loop {
        match client::check_health(endpoint, material).await {
            Ok(me) => return Ok(me),
            Err(e) => {
                let msg = format!("{e:#}");
                if msg != last {
                    tracing::info!(%endpoint, state = %msg, "waiting for the local member to be healthy");
                    last = msg;
                }
            }
        }
        if Instant::now() >= deadline {
            bail!("the local member did not become healthy within discovery.timeout (last: {last}; {NO_QUORUM_HINT})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the agents do by themselves about a dead member, for the message of a joiner that waits.
pub(crate) fn dead_member_policy(cfg: &crate::config::Config) -> String {
    let h = &cfg.heal;
    match h.remove_dead_after {
        Some(d) if h.enabled => {
            let d = crate::util::time::format_duration(d);
            if h.remove_dead_by_default {
                format!("Otherwise the leader's agent removes it by itself once it has been unreachable for {d} (heal.remove_dead_after) and is gone from the SRV records.")
            } else {
                format!("Otherwise the leader's agent removes it by itself once it has been unreachable for {d} (heal.remove_dead_after) and is gone from discovery or a node waits to join.")
            }
        }
        _ => "The agents will not remove it by themselves (heal.remove_dead_after is off).".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_record_is_cannot_tell_and_an_absent_one_is_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        // Absent: no record, the default.
        assert_eq!(record_for_decision(&data_dir).unwrap(), Record::default());
        // Present and readable.
        let mut r = Record::default();
        r.held.cluster_id = Some(0x3d2ca84ca24e47e4);
        r.save(&data_dir).unwrap();
        assert_eq!(record_for_decision(&data_dir).unwrap(), r);
        // Not JSON (a torn write by hand, a disk error): cannot tell, naming the file.
        let path = datadir::record_path(&data_dir);
        std::fs::write(&path, b"{\"cluster_id\": ").unwrap();
        let e = format!("{:#}", record_for_decision(&data_dir).unwrap_err());
        assert!(
            e.contains("cannot tell") && e.contains(&path.display().to_string()),
            "{e}"
        );
        // Not readable at all (here: a directory; the same path for EACCES, EMFILE, EIO).
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = format!("{:#}", record_for_decision(&data_dir).unwrap_err());
        assert!(e.contains("cannot tell"), "{e}");
    }
}
