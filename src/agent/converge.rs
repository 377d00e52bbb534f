//! Bringing the local member up: observe, decide, act, until it is a healthy voter; then settle
//! (record who it is, take the bootstrap flags out of etcd's environment, prune old copies).

use super::auto_recover::AutoStep;
use super::metrics::{self, HealAction, MemberState};
use super::{env_value, local_endpoint, notify, Agent};
use crate::backup::verify::FetchError;
use crate::decide::bootstrap::{self, Action, InitialCluster, WaitReason};
use crate::decide::{self, removed::RemovalVerdict};
use crate::error::{ConfigError, Refused};
use crate::etcd::client::{self, Whoami};
use crate::etcd::datadir::{self, Record, RecordedMember};
use crate::etcd::membership;
use crate::etcd::render::{self, ClusterState, LocalMember};
use crate::failpoint;
use crate::tls::ClientMaterial;
use crate::util::retry::Backoff;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What to check when the local member never becomes healthy.
const NO_QUORUM_HINT: &str = "etcd serves clients only once it has joined through raft, which needs a quorum of its members: start the members that are down, see `etcd-bootstrap status` and etcd's log";

/// How often a member that is coming up is checked for having been removed.
const REMOVED_CHECK: Duration = Duration::from_secs(5);

/// Between observations while waiting: 1 s, 2 s, then 3 s, with jitter.
fn observe_backoff(deadline: Instant) -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(3)).until(deadline)
}

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
pub fn current_member(cfg: &crate::config::Config) -> Result<LocalMember> {
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
    pub async fn converge(&self) -> Result<ClientMaterial> {
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
                    if client::check_health(&local_endpoint(cfg), &material)
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

    /// Decide what to do and start etcd accordingly. Returns the client material to talk to it
    /// and, after a join, the voting members to ask for promotion.
    async fn bring_up(&self) -> Result<(ClientMaterial, Vec<String>)> {
        let cfg = self.cfg;
        let manager = self.manager.as_ref();
        let local = crate::agent::observe::local_state(&cfg.member.data_dir);
        let tls_paths = crate::model::tls::TlsPaths::new(&cfg.tls.dir);
        // The restart path: data and certificates are there; nothing to discover or ask. etcd's
        // environment is rendered again from the current config (so that a changed
        // [etcd.flags] reaches etcd), without bootstrap flags: with a WAL etcd ignores them.
        if local.has_wal && tls_paths.client_cert.is_file() {
            // An unreadable record stops here (the caller retries): without it this member
            // cannot tell whether to restart from its data, and the discovery path must not be
            // taken on a guess.
            let record = record_for_decision(&cfg.member.data_dir)?;
            if let Ok(me) = member_of(cfg, &record) {
                tracing::info!(data_dir = %cfg.member.data_dir.display(), "WAL present: restarting etcd from its own data");
                if let Some(why) = crate::tls::due_on_disk(cfg, time::OffsetDateTime::now_utc()) {
                    tracing::info!(reason = %why, "certificates need renewing before etcd starts");
                    let mut material = None;
                    if let Err(e) = self.renew_certificates(false, &mut material).await {
                        tracing::warn!(error = %format!("{e:#}"), "renewing before the start failed; starting etcd with the certificates in place, the heal loop tries again");
                    }
                }
                if let Some(ep) = &self.observer.endpoint {
                    let peer = ClientMaterial::peer_from_dir(&cfg.tls.dir)?;
                    ep.serve(SocketAddr::new(me.ip, cfg.member.agent_port), &peer)
                        .await?;
                }
                let spec = render::spec(cfg, &me, &ClusterState::FromDisk)?;
                let material = ClientMaterial::from_dir(&cfg.tls.dir)?;
                if self.leave_running_etcd(&spec, &material).await? {
                    manager.start(false).await?;
                    return Ok((material, vec![]));
                }
                let changed = manager.install(&spec)?;
                if changed {
                    tracing::info!(env_file = %cfg.etcd.env_file.display(), "etcd's environment rendered from the current configuration");
                }
                manager.start(changed).await?;
                self.note_applied();
                return Ok((material, vec![]));
            }
        }

        let deadline = Instant::now() + cfg.discovery.timeout;
        let mut pause = observe_backoff(deadline);
        // Snapshots that failed an integrity check here: never chosen again by this run.
        let mut bad_snapshots: std::collections::BTreeSet<String> = Default::default();
        loop {
            let mut observed = match self.observer.observe().await {
                Ok(o) => o,
                Err(e)
                    if e.chain()
                        .any(|c| c.is::<Refused>() || c.is::<ConfigError>())
                        || e.downcast_ref::<crate::error::Fatal>().is_some() =>
                {
                    return Err(e)
                }
                Err(e) => {
                    if pause.expired() {
                        return Err(e.context(format!(
                            "gave up after discovery.timeout ({})",
                            crate::config::format_duration(cfg.discovery.timeout)
                        )));
                    }
                    tracing::warn!(error = %format!("{e:#}"), "observation failed; retrying");
                    pause.wait().await;
                    continue;
                }
            };
            tracing::info!(
                peers = %observed.discovered.describe(),
                stable = observed.obs.stable,
                me = %format!("{}={}", observed.me.name, observed.me.peer_url(cfg)),
                "observed"
            );
            if let decide::Snapshots::Listed(ids) = &mut observed.obs.snapshots {
                ids.retain(|id| !bad_snapshots.contains(id));
            }
            let mut action = bootstrap::decide(&observed.obs);
            let changes_membership = matches!(
                action,
                Action::Join { .. } | Action::AdoptUnstarted { .. } | Action::ReplaceStale { .. }
            );
            let marker = datadir::pause_marker(&cfg.member.data_dir);
            if changes_membership && marker.exists() {
                action = Action::Wait(WaitReason::Unconfirmed(format!(
                    "paused by {}: no member is added or removed while it exists ({})",
                    marker.display(),
                    super::describe(&action)
                )));
            }
            tracing::info!(action = %super::describe(&action), "decided");
            let material = observed.tls.client_material(&cfg.tls.dir)?;
            let mut voters = vec![];
            let state = match action {
                Action::Restart => ClusterState::FromDisk,
                Action::BootstrapNew(ic) => ClusterState::New(ic),
                Action::MoveAside(why) => {
                    tracing::warn!(reason = %why, "moving the data dir aside");
                    datadir::move_aside(&cfg.member.data_dir, &why, None)?;
                    metrics::heal_action(HealAction::MoveAside);
                    continue;
                }
                Action::Wait(reason) => {
                    if pause.expired() {
                        let msg = format!(
                            "gave up after discovery.timeout ({}): {reason}",
                            crate::config::format_duration(cfg.discovery.timeout)
                        );
                        if reason.refuses_at_deadline() {
                            return Err(Refused(msg).into());
                        }
                        bail!("{msg}; fix discovery (DNS records, discovery.peers) or raise discovery.timeout, then re-run");
                    }
                    notify(&[sd_notify::NotifyState::Status(&format!(
                        "waiting: {reason}"
                    ))]);
                    pause.wait().await;
                    continue;
                }
                Action::Refuse(why) => return Err(Refused(why).into()),
                Action::Join { ref endpoints, .. }
                | Action::AdoptUnstarted { ref endpoints, .. }
                | Action::ReplaceStale { ref endpoints, .. } => {
                    let my_url = observed.me.peer_url(cfg).to_string();
                    let mut c = membership::connect(endpoints, &material).await?;
                    let mut report = membership::WaitReport::new(
                        material.clone(),
                        cfg.tls.dir.clone(),
                        dead_member_policy(cfg),
                    );
                    let (my_id, members) = match action {
                        Action::ReplaceStale { member_id, .. } => {
                            tracing::warn!(member = %format!("{member_id:x}"), "this node's data is gone: removing its stale member, then adding it again");
                            membership::remove(&mut c, member_id, deadline).await?;
                            failpoint::hit("join:after-remove");
                            failpoint::hit("join:before-add");
                            membership::add_learner(
                                &mut c,
                                &my_url,
                                Some(member_id),
                                deadline,
                                &mut report,
                            )
                            .await?
                        }
                        Action::AdoptUnstarted { member_id, .. } => {
                            (member_id, membership::list(&mut c).await?)
                        }
                        _ => {
                            failpoint::hit("join:before-add");
                            membership::add_learner(&mut c, &my_url, None, deadline, &mut report)
                                .await?
                        }
                    };
                    failpoint::hit("join:after-add");
                    voters = endpoints.clone();
                    ClusterState::Existing {
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
            let etcd_owner = crate::etcd::user::of_config(cfg)?.map(|u| u.ids());
            observed.tls.apply(etcd_owner)?;
            failpoint::hit("new:after-certs");
            if let ClusterState::New(ic) = &state {
                // Before etcd creates any data: the peers' agents report this cluster ID for
                // it, so that the other initial members recognise the cluster they are forming.
                record_formation(cfg, ic, &observed.me)?;
                if let Some(id) = &ic.seed {
                    match self.restore_seed(ic, id, &observed.me).await {
                        Ok(()) => {}
                        Err(FetchError::Integrity(why)) => {
                            tracing::error!(snapshot = %id, %why, "this snapshot fails its integrity check and is skipped; trying the next newest");
                            bad_snapshots.insert(id.clone());
                            continue;
                        }
                        Err(FetchError::Failed(e)) => {
                            if pause.expired() {
                                return Err(e.context(format!(
                                    "restoring snapshot {id} failed until discovery.timeout ({})",
                                    crate::config::format_duration(cfg.discovery.timeout)
                                )));
                            }
                            tracing::warn!(snapshot = %id, error = %format!("{e:#}"), "restoring the snapshot failed; retrying");
                            pause.wait().await;
                            continue;
                        }
                    }
                }
            }
            let spec = render::spec(cfg, &observed.me, &state)?;
            let changed = manager.install(&spec)?;
            failpoint::hit("new:after-env");
            if let ClusterState::New(ic) = &state {
                let delay = ic.start_delay();
                if !delay.is_zero() {
                    tracing::info!(?delay, "new cluster: waiting my turn to start etcd");
                    tokio::time::sleep(delay).await;
                }
            }
            tracing::info!(manager = %manager.describe(), changed, "starting etcd");
            manager.start(changed).await?;
            self.note_applied();
            if matches!(state, ClusterState::Existing { .. }) {
                failpoint::hit("join:after-start");
            }
            return Ok((material, voters));
        }
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
    pub async fn settle(&self, material: &ClientMaterial, me: &Whoami) -> Result<()> {
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
    pub async fn refresh_record(&self, material: &ClientMaterial, me: &Whoami) -> Result<()> {
        let cfg = self.cfg;
        let mut c =
            client::connect(&[local_endpoint(cfg)], material, client::PROBE_TIMEOUT).await?;
        let members = membership::list(&mut c).await?;
        let mut record = Record::load(&cfg.member.data_dir)?.unwrap_or_default();
        let before = record.clone();
        record.cluster_name = cfg.cluster.name.clone();
        record.cluster_id = Some(format!("{:x}", me.cluster_id));
        record.member_id = Some(format!("{:x}", me.member_id));
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
        record.raft_index = Some(me.raft_index);
        record.raft_term = Some(me.raft_term);
        record.revision = Some(me.revision);
        if record != before {
            record.save(&cfg.member.data_dir)?;
            if before.cluster_id != record.cluster_id || before.members != record.members {
                tracing::info!(cluster = ?record.cluster_id, member = ?record.member_id, members = record.members.len(), "identity record updated");
            }
        }
        Ok(())
    }

    /// Whether a majority of this member's last-known membership says it was removed.
    pub async fn removal_verdict(&self, material: &ClientMaterial) -> RemovalVerdict {
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
        let live = client::who_is(&local_endpoint(cfg), material)
            .await
            .ok()
            .map(|(_, me)| me.cluster_id);
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

/// Note in the identity record the cluster and member this node is about to form.
impl Agent<'_> {
    /// Total loss: every initial member restores snapshot `id` as its data, with the new
    /// cluster's flags, before its first start.
    async fn restore_seed(
        &self,
        ic: &InitialCluster,
        id: &str,
        me: &LocalMember,
    ) -> Result<(), FetchError> {
        let cfg = self.cfg;
        let (Some(b), Some(store)) = (&cfg.backup, self.store()?) else {
            return Err(anyhow::anyhow!("a snapshot to restore, but no [backup]").into());
        };
        let entry = crate::backup::catalog::find(store, id).await?;
        let m = &entry.manifest;
        tracing::warn!(snapshot = %id, created = %m.created, revision = m.revision, from_cluster = %m.cluster_id, "every member is without data and the store holds snapshots of this cluster: restoring the newest verified one instead of forming an empty cluster");
        notify(&[sd_notify::NotifyState::Status(&format!(
            "restoring snapshot {id}"
        ))]);
        let peer_url = me.peer_url(cfg).to_string();
        let flag = ic.flag();
        let target = crate::backup::restorer::Target {
            data_dir: &cfg.member.data_dir,
            name: &me.name,
            peer_url: &peer_url,
            initial_cluster: &flag,
            token: &ic.token,
        };
        let started = Instant::now();
        let r = crate::backup::restorer::restore(
            store,
            &entry,
            b.age_identity_file.as_deref(),
            &cfg.etcd.binary,
            &target,
        )
        .await?;
        metrics::heal_action(HealAction::Restore);
        tracing::info!(snapshot = %id, keys = r.total_keys, revision = r.revision, revision_after = r.revision_after, tool = %r.tool, elapsed = ?started.elapsed(), "snapshot restored as this member's data");
        Ok(())
    }
}

fn record_formation(
    cfg: &crate::config::Config,
    ic: &InitialCluster,
    me: &LocalMember,
) -> Result<()> {
    let mut record = Record::load(&cfg.member.data_dir)?.unwrap_or_default();
    let my_url = me.peer_url(cfg).to_string();
    record.cluster_id = Some(format!("{:x}", ic.cluster_id()));
    record.member_id = Some(format!(
        "{:x}",
        crate::model::ids::member_id(std::slice::from_ref(&my_url), &ic.token)
    ));
    record.name = Some(me.name.clone());
    record.peer_url = Some(my_url);
    record.formation = Some(ic.formation.clone());
    record.restored_from = ic.seed.clone();
    record.save(&cfg.member.data_dir)
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
            let d = crate::config::format_duration(d);
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
        let r = Record {
            cluster_id: Some("3d2ca84ca24e47e4".into()),
            ..Record::default()
        };
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
