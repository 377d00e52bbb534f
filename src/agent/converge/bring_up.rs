//! The paths that start etcd: restart from its own data (nothing to discover or ask), or
//! observe and decide until a decision starts it: a new cluster (from nothing or from a
//! snapshot of the store), or a join of an existing one (as a learner; also adopting a member
//! added but never started, and replacing this node's stale member).

use super::{member_of, record_for_decision};
use crate::agent::metrics::{self, HealAction};
use crate::agent::{notify, Agent};
use crate::backup::verify::FetchError;
use crate::decide::bootstrap::{self, Action, InitialCluster, WaitReason};
use crate::decide::Snapshots;
use crate::error::{ConfigError, Refused};
use crate::etcd::datadir::{self, Record};
use crate::etcd::membership;
use crate::etcd::render::{self, ClusterState, LocalMember};
use crate::failpoint;
use crate::tls::ClientMaterial;
use crate::util::retry::Backoff;
use anyhow::{bail, Result};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Between observations while waiting: 1 s, with jitter. A wiped member waiting for the cluster
/// to come back (an automatic recovery) joins at the next observation after it does; one
/// observation a second (DNS, a probe and an agent's answer per peer) costs the peers little.
fn observe_backoff(deadline: Instant) -> Backoff {
    Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).until(deadline)
}

/// What starting etcd gives the caller: the client material to talk to it and, after a join,
/// the voting members to ask for promotion.
type Started = (ClientMaterial, Vec<String>);

/// One observation and decision round's outcome: start etcd in this state (with the voters to
/// ask after a join), or observe again.
enum RoundOutcome {
    Start(ClusterState, Vec<String>),
    Again,
}

impl Agent<'_> {
    /// Decide what to do and start etcd accordingly.
    pub(super) async fn bring_up(&self) -> Result<Started> {
        if let Some(started) = self.restart_from_disk().await? {
            return Ok(started);
        }
        let cfg = self.cfg;
        let deadline = Instant::now() + cfg.discovery.timeout;
        let mut pause = observe_backoff(deadline);
        // Snapshots that failed an integrity check here: never chosen again by this run.
        let mut bad_snapshots: BTreeSet<String> = Default::default();
        loop {
            let Some(mut observed) = self.observe_for_decision(&mut pause).await? else {
                continue;
            };
            if let Snapshots::Listed(ids) = &mut observed.obs.snapshots {
                ids.retain(|id| !bad_snapshots.contains(id));
            }
            let action = self.decided(&observed);
            let material = observed.tls.client_material(&cfg.tls.dir)?;
            let (state, voters) = match self
                .act(action, &observed, &material, &mut pause, deadline)
                .await?
            {
                RoundOutcome::Start(state, voters) => (state, voters),
                RoundOutcome::Again => continue,
            };
            for f in observed.tls.changed() {
                tracing::info!(file = %f.path.display(), reason = f.change.as_deref().unwrap_or(""), "writing certificate material");
            }
            let etcd_owner = crate::etcd::user::of_config(cfg)?.map(|u| u.ids());
            observed.tls.apply(etcd_owner)?;
            failpoint::hit("new:after-certs");
            if let ClusterState::New(ic) = &state {
                if !self
                    .prepare_new(ic, &observed.me, &mut bad_snapshots, &mut pause)
                    .await?
                {
                    continue;
                }
            }
            self.start_etcd(&observed.me, &state).await?;
            return Ok((material, voters));
        }
    }

    /// The restart path: data and certificates are there; nothing to discover or ask. etcd's
    /// environment is rendered again from the current config (so that a changed [etcd.flags]
    /// reaches etcd), without bootstrap flags: with a WAL etcd ignores them. `None`: not this
    /// path (no WAL, no certificates, or the record names no member of this node).
    async fn restart_from_disk(&self) -> Result<Option<Started>> {
        let cfg = self.cfg;
        let manager = self.manager.as_ref();
        let local = crate::agent::observe::local_state(&cfg.member.data_dir);
        let tls_paths = crate::model::tls::TlsPaths::new(&cfg.tls.dir);
        if !(local.has_wal && tls_paths.client_cert.is_file()) {
            return Ok(None);
        }
        // An unreadable record stops here (the caller retries): without it this member cannot
        // tell whether to restart from its data, and the discovery path must not be taken on a
        // guess.
        let record = record_for_decision(&cfg.member.data_dir)?;
        let Ok(me) = member_of(cfg, &record) else {
            return Ok(None);
        };
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
            return Ok(Some((material, vec![])));
        }
        let changed = manager.install(&spec)?;
        if changed {
            tracing::info!(env_file = %cfg.etcd.env_file.display(), "etcd's environment rendered from the current configuration");
        }
        manager.start(changed).await?;
        self.note_applied();
        Ok(Some((material, vec![])))
    }

    /// One observation. `None`: it failed in a way worth retrying (after the pause); errors that
    /// no retry mends (a refusal, a configuration error, a fatal one) and a failure past
    /// discovery.timeout end the bring-up.
    async fn observe_for_decision(
        &self,
        pause: &mut Backoff,
    ) -> Result<Option<crate::agent::observe::Observed>> {
        let cfg = self.cfg;
        match self.observer.observe().await {
            Ok(observed) => {
                tracing::info!(
                    peers = %observed.discovered.describe(),
                    stable = observed.obs.stable,
                    me = %format!("{}={}", observed.me.name, observed.me.peer_url(cfg)),
                    "observed"
                );
                Ok(Some(observed))
            }
            Err(e)
                if e.chain()
                    .any(|c| c.is::<Refused>() || c.is::<ConfigError>())
                    || e.downcast_ref::<crate::error::Fatal>().is_some() =>
            {
                Err(e)
            }
            Err(e) => {
                if pause.expired() {
                    return Err(e.context(format!(
                        "gave up after discovery.timeout ({})",
                        crate::util::time::format_duration(cfg.discovery.timeout)
                    )));
                }
                tracing::warn!(error = %format!("{e:#}"), "observation failed; retrying");
                pause.wait().await;
                Ok(None)
            }
        }
    }

    /// The decision for what was observed; one that changes the membership waits while the
    /// pause marker exists.
    fn decided(&self, observed: &crate::agent::observe::Observed) -> Action {
        let mut action = bootstrap::decide(&observed.obs);
        let changes_membership = matches!(
            action,
            Action::Join { .. } | Action::AdoptUnstarted { .. } | Action::ReplaceStale { .. }
        );
        let marker = datadir::pause_marker(&self.cfg.member.data_dir);
        if changes_membership && marker.exists() {
            action = Action::Wait(WaitReason::Unconfirmed(format!(
                "paused by {}: no member is added or removed while it exists ({})",
                marker.display(),
                crate::agent::describe(&action)
            )));
        }
        tracing::info!(action = %crate::agent::describe(&action), "decided");
        action
    }

    /// Carry out the decision up to the start of etcd.
    async fn act(
        &self,
        action: Action,
        observed: &crate::agent::observe::Observed,
        material: &ClientMaterial,
        pause: &mut Backoff,
        deadline: Instant,
    ) -> Result<RoundOutcome> {
        let cfg = self.cfg;
        match action {
            Action::Restart => Ok(RoundOutcome::Start(ClusterState::FromDisk, vec![])),
            Action::BootstrapNew(ic) => Ok(RoundOutcome::Start(ClusterState::New(ic), vec![])),
            Action::MoveAside(why) => {
                tracing::warn!(reason = %why, "moving the data dir aside");
                datadir::move_aside(&cfg.member.data_dir, &why, None)?;
                metrics::heal_action(HealAction::MoveAside);
                Ok(RoundOutcome::Again)
            }
            Action::Wait(reason) => {
                if pause.expired() {
                    let msg = format!(
                        "gave up after discovery.timeout ({}): {reason}",
                        crate::util::time::format_duration(cfg.discovery.timeout)
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
                Ok(RoundOutcome::Again)
            }
            Action::Refuse(why) => Err(Refused(why).into()),
            Action::Join { .. } | Action::AdoptUnstarted { .. } | Action::ReplaceStale { .. } => {
                self.join(action, observed, material, deadline).await
            }
        }
    }

    /// Join the cluster `action` names: add this node as a learner (after removing its stale
    /// member, for `ReplaceStale`), or adopt the member already added for it.
    async fn join(
        &self,
        action: Action,
        observed: &crate::agent::observe::Observed,
        material: &ClientMaterial,
        deadline: Instant,
    ) -> Result<RoundOutcome> {
        let cfg = self.cfg;
        let (Action::Join { endpoints, .. }
        | Action::AdoptUnstarted { endpoints, .. }
        | Action::ReplaceStale { endpoints, .. }) = &action
        else {
            bail!("not a join: {}", crate::agent::describe(&action));
        };
        let my_url = observed.me.peer_url(cfg).to_string();
        let mut c = membership::connect(endpoints, material).await?;
        let mut report = membership::WaitReport::new(
            material.clone(),
            cfg.tls.dir.clone(),
            super::dead_member_policy(cfg),
        );
        let (my_id, members) = match action {
            Action::ReplaceStale { member_id, .. } => {
                tracing::warn!(member = %format!("{member_id:x}"), "this node's data is gone: removing its stale member, then adding it again");
                membership::remove(&mut c, member_id, deadline).await?;
                failpoint::hit("join:after-remove");
                failpoint::hit("join:before-add");
                membership::add_learner(&mut c, &my_url, Some(member_id), deadline, &mut report)
                    .await?
            }
            Action::AdoptUnstarted { member_id, .. } => {
                (member_id, membership::list(&mut c).await?)
            }
            _ => {
                failpoint::hit("join:before-add");
                membership::add_learner(&mut c, &my_url, None, deadline, &mut report).await?
            }
        };
        failpoint::hit("join:after-add");
        let initial_cluster = membership::initial_cluster(&members, my_id, &observed.me.name);
        Ok(RoundOutcome::Start(
            ClusterState::Existing { initial_cluster },
            endpoints.clone(),
        ))
    }

    /// Before etcd creates any data of a new cluster: the identity record names it (the peers'
    /// agents report this cluster ID for it, so that the other initial members recognise the
    /// cluster they are forming), and a seed snapshot becomes the data. `false`: observe again
    /// (the snapshot failed its integrity check and is never chosen again, or restoring it
    /// failed before discovery.timeout).
    async fn prepare_new(
        &self,
        ic: &InitialCluster,
        me: &LocalMember,
        bad_snapshots: &mut BTreeSet<String>,
        pause: &mut Backoff,
    ) -> Result<bool> {
        let cfg = self.cfg;
        record_formation(cfg, ic, me)?;
        let Some(id) = &ic.seed else {
            return Ok(true);
        };
        match self.restore_seed(ic, id, me).await {
            Ok(()) => Ok(true),
            Err(FetchError::Integrity(why)) => {
                tracing::error!(snapshot = %id, %why, "this snapshot fails its integrity check and is skipped; trying the next newest");
                bad_snapshots.insert(id.clone());
                Ok(false)
            }
            Err(FetchError::Failed(e)) => {
                if pause.expired() {
                    return Err(e.context(format!(
                        "restoring snapshot {id} failed until discovery.timeout ({})",
                        crate::util::time::format_duration(cfg.discovery.timeout)
                    )));
                }
                tracing::warn!(snapshot = %id, error = %format!("{e:#}"), "restoring the snapshot failed; retrying");
                pause.wait().await;
                Ok(false)
            }
        }
    }

    /// Write etcd's files for `state` and start it (a new cluster's member after its turn).
    async fn start_etcd(&self, me: &LocalMember, state: &ClusterState) -> Result<()> {
        let manager = self.manager.as_ref();
        let spec = render::spec(self.cfg, me, state)?;
        let changed = manager.install(&spec)?;
        failpoint::hit("new:after-env");
        if let ClusterState::New(ic) = state {
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
        Ok(())
    }

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

/// Note in the identity record the cluster and member this node is about to form.
fn record_formation(
    cfg: &crate::config::Config,
    ic: &InitialCluster,
    me: &LocalMember,
) -> Result<()> {
    let mut record = Record::load(&cfg.member.data_dir)?.unwrap_or_default();
    let my_url = me.peer_url(cfg).to_string();
    record.held.cluster_id = Some(ic.cluster_id());
    record.held.member_id = Some(crate::model::ids::member_id(
        std::slice::from_ref(&my_url),
        &ic.token,
    ));
    record.name = Some(me.name.clone());
    record.peer_url = Some(my_url);
    record.held.formation = Some(ic.formation.clone());
    record.held.restored_from = ic.seed.clone();
    record.save(&cfg.member.data_dir)
}
