//! Following a fleet-wide restore request (`etcd-bootstrap restore --from`): at the agent's start
//! (before etcd is started from its old data) and at every heal tick, read the request from the
//! store; `decide::restore::fleet_step` says whether this node begins, resumes or ignores it.
//!
//! Carrying one out, each step recorded in the identity record before it is taken, so that a
//! crash resumes where it stopped (`Phase`):
//! 1. while etcd still runs: download the snapshot, check its hashes and decryption, restore it
//!    into the work directory with the request's `--initial-cluster` and token (a snapshot that
//!    fails its check stops the request here, with etcd untouched);
//! 2. `Stopping`: stop etcd, move the data dir aside (never deleted; pruned later like every
//!    moved-aside copy);
//! 3. `Moved`: the restored `member/` goes in by one rename;
//! 4. `Restored`: the record takes the restored cluster's identity; etcd is started. The members
//!    find a quorum once a majority of them have done the same.

use super::{local_endpoint, notify, Agent};
use crate::backup::restorer::{self, Target};
use crate::backup::store::Store;
use crate::backup::verify::FetchError;
use crate::backup::{catalog, request};
use crate::decide::restore::{
    fleet_step, FleetRequest, FleetStep, InProgress, Phase, RequestMember,
};
use crate::etcd::datadir::{self, Record, RecordedMember};
use crate::etcd::render::{self, ClusterState, LocalMember};
use crate::failpoint;
use crate::model::datadir::WORK_DIR;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long reading the request may hold up an agent's start (an unreachable store must not
/// keep a member down).
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// What following the request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Followed {
    /// Nothing to do.
    Nothing,
    /// The current request does not name this node.
    NotAMember(String),
    /// etcd was started from the restored data.
    Restored(String),
    /// The snapshot failed its check here: etcd was left as it was.
    GaveUp(String),
}

/// Whether this node began a fleet-wide restore and has not finished it (etcd is stopped, or its
/// restored data not started yet): then etcd must not be started from anything else.
pub(crate) fn under_way(data_dir: &Path) -> Result<bool> {
    Ok(Record::load(data_dir)?.is_some_and(|r| r.restore.is_some()))
}

fn my_peer_url(cfg: &crate::config::Config, record: &Record) -> Option<String> {
    record
        .peer_url
        .clone()
        .or_else(|| super::env_value(cfg, "ETCD_INITIAL_ADVERTISE_PEER_URLS"))
}

impl Agent<'_> {
    /// Read the request and do what `fleet_step` says; also returns the current request. `Err`
    /// when a restore was begun and could not be finished (etcd is then stopped, its old data
    /// aside): the caller must not start etcd otherwise, and tries again.
    pub(crate) async fn follow_restore_request(
        &self,
        store: &Store,
    ) -> Result<(Followed, Option<FleetRequest>)> {
        let cfg = self.cfg;
        let data_dir = &cfg.member.data_dir;
        let record = Record::load(data_dir)?.unwrap_or_default();
        let Some(my_url) = my_peer_url(cfg, &record) else {
            // Never bootstrapped: no data of any cluster to put back.
            return Ok((Followed::Nothing, None));
        };
        let current = match tokio::time::timeout(READ_TIMEOUT, request::read(store)).await {
            Ok(Ok(r)) => r.trusted(store),
            Ok(Err(e)) if record.restore.is_none() => return Err(e),
            Err(_) if record.restore.is_none() => {
                anyhow::bail!(
                    "reading the restore request from {} timed out",
                    store.describe
                )
            }
            // A restore begun here is finished without the store's word (its request is in
            // the record).
            _ => None,
        };
        // A request for this node's cluster must name only members the cluster recorded.
        let recorded: Vec<String> = record
            .members
            .iter()
            .filter_map(|m| m.peer_urls.first().cloned())
            .collect();
        let followable = current.as_ref().filter(|r| {
            if record.restore.is_some() || r.old_cluster_id() != record.cluster() {
                return true;
            }
            match crate::decide::restore::fits_membership(r, &recorded) {
                Ok(()) => true,
                Err(why) => {
                    tracing::error!(request = %r.id, %why, "not following the restore request");
                    false
                }
            }
        });
        let followed = match fleet_step(
            followable,
            &my_url,
            record.cluster(),
            record.restore_finished.as_deref(),
            record.restore.as_ref(),
        ) {
            FleetStep::Nothing => Followed::Nothing,
            FleetStep::NotAMember(r) => Followed::NotAMember(r.id),
            FleetStep::Begin(r) => self.carry_out(store, &r, &my_url, None).await?,
            FleetStep::Resume(InProgress { request, phase }) => {
                tracing::warn!(request = %request.id, snapshot = %request.snapshot, ?phase, "resuming a fleet-wide restore that was interrupted");
                self.carry_out(store, &request, &my_url, Some(phase))
                    .await?
            }
        };
        Ok((followed, current))
    }

    /// Carry out request `r` here, from `from` (`None`: from the start), step by step; each step
    /// is recorded before it is taken, so that a crash resumes where it stopped.
    async fn carry_out(
        &self,
        store: &Store,
        r: &FleetRequest,
        my_url: &str,
        from: Option<Phase>,
    ) -> Result<Followed> {
        let cfg = self.cfg;
        let me = r
            .member(my_url)
            .with_context(|| format!("restore request {} does not name {my_url}", r.id))?
            .clone();
        let backup = cfg
            .backup
            .as_ref()
            .context("a restore request, but no [backup]")?;
        let identity_file = backup.age_identity_file.as_deref();
        let flag = r.initial_cluster();
        let target = Target {
            data_dir: &cfg.member.data_dir,
            name: &me.name,
            peer_url: my_url,
            initial_cluster: &flag,
            token: &r.token,
        };
        let started = Instant::now();
        let mut phase = match from {
            Some(p) => p,
            None => {
                let prepared = self
                    .prepare(store, r, &me, &target, identity_file, started)
                    .await?;
                if let Some(gave_up) = prepared {
                    return Ok(gave_up);
                }
                Phase::Stopping
            }
        };
        if phase == Phase::Stopping {
            self.swap_data(store, r, &me).await?;
            phase = Phase::Moved;
        }
        if phase == Phase::Moved {
            self.make_sure_restored(store, r, &me, &target, identity_file)
                .await?;
            phase = Phase::Restored;
        }
        debug_assert_eq!(phase, Phase::Restored);
        self.start_restored(store, r, &me, my_url, started).await
    }

    /// Step 1, while etcd still runs: download the snapshot, check it and restore it into the
    /// work directory. `Some` when the request ends here for this node: the snapshot fails its
    /// check (etcd untouched, the request recorded as finished).
    async fn prepare(
        &self,
        store: &Store,
        r: &FleetRequest,
        me: &RequestMember,
        target: &Target<'_>,
        identity_file: Option<&Path>,
        started: Instant,
    ) -> Result<Option<Followed>> {
        let data_dir = &self.cfg.member.data_dir;
        tracing::warn!(request = %r.id, snapshot = %r.snapshot, by = %r.by, requested = %r.requested, "fleet-wide restore requested: putting this member back to the snapshot (its current data is moved aside, not deleted; keys written after the snapshot are gone from the cluster)");
        notify(&[sd_notify::NotifyState::Status(&format!(
            "restoring snapshot {} (request {})",
            r.snapshot, r.id
        ))]);
        request::report(store, &r.id, &me.name, "checking").await;
        let entry = catalog::find(store, &r.snapshot).await?;
        match restorer::prepare(store, &entry, identity_file, &self.cfg.etcd.binary, target).await {
            Ok((_, restored)) => {
                tracing::info!(request = %r.id, keys = restored.total_keys, revision = restored.revision, revision_after = restored.revision_after, elapsed = ?started.elapsed(), "snapshot downloaded, checked and restored into the work directory; etcd still runs");
                Ok(None)
            }
            Err(FetchError::Integrity(why)) => {
                tracing::error!(request = %r.id, snapshot = %r.snapshot, %why, "the snapshot fails its integrity check here: this member is NOT restored and etcd keeps running from its data; request another snapshot (etcd-bootstrap restore --from ID)");
                let _ = std::fs::remove_dir_all(data_dir.join(WORK_DIR));
                request::report(store, &r.id, &me.name, &format!("failed: {why}")).await;
                record_finished(data_dir, r)?;
                Ok(Some(Followed::GaveUp(why)))
            }
            Err(FetchError::Failed(e)) => {
                request::report(store, &r.id, &me.name, &format!("retrying: {e:#}")).await;
                Err(e.context(format!(
                    "preparing snapshot {} for restore request {}",
                    r.snapshot, r.id
                )))
            }
        }
    }

    /// `Stopping`: stop etcd, move the data dir aside, put the prepared `member/` in; then `Moved`.
    async fn swap_data(&self, store: &Store, r: &FleetRequest, me: &RequestMember) -> Result<()> {
        let data_dir = &self.cfg.member.data_dir;
        save_progress(data_dir, r, Phase::Stopping)?;
        request::report(store, &r.id, &me.name, "restoring").await;
        self.manager.stop().await?;
        failpoint::hit("fleet-restore:after-stop");
        // The prepared data is complete: it was prepared before `Stopping` was recorded.
        let prepared = if data_dir.join("member").exists() {
            let record = Record::load(data_dir)?.unwrap_or_default();
            let reason = format!(
                "fleet-wide restore request {} (snapshot {})",
                r.id, r.snapshot
            );
            datadir::move_aside(data_dir, &reason, record.held.raft_index)?
                .map(|moved| moved.join(WORK_DIR).join("data/member"))
        } else {
            Some(data_dir.join(WORK_DIR).join("data/member"))
        };
        if let Some(p) = prepared.filter(|p| p.is_dir()) {
            restorer::install(&p, data_dir)?;
        }
        save_progress(data_dir, r, Phase::Moved)?;
        failpoint::hit("fleet-restore:after-move");
        Ok(())
    }

    /// `Moved`: etcd stopped, the restored `member/` in place (restored again here when the
    /// swap was interrupted before it went in); then the record takes the restored cluster's
    /// identity (`Restored`).
    async fn make_sure_restored(
        &self,
        store: &Store,
        r: &FleetRequest,
        me: &RequestMember,
        target: &Target<'_>,
        identity_file: Option<&Path>,
    ) -> Result<()> {
        let cfg = self.cfg;
        // On a resume etcd may still run (under systemd it outlives the agent).
        self.manager.stop().await?;
        if !cfg.member.data_dir.join("member").exists() {
            // Interrupted before the restored data went in: do it all again here.
            let entry = catalog::find(store, &r.snapshot).await?;
            restorer::restore(store, &entry, identity_file, &cfg.etcd.binary, target)
                .await
                .map_err(FetchError::into_anyhow)?;
        }
        record_restored(cfg, r, me)
    }

    /// `Restored`: etcd started from the restored data, the request recorded as finished here.
    async fn start_restored(
        &self,
        store: &Store,
        r: &FleetRequest,
        me: &RequestMember,
        my_url: &str,
        started: Instant,
    ) -> Result<Followed> {
        let cfg = self.cfg;
        let ip = crate::model::url::EtcdUrl::parse(my_url)
            .ok()
            .and_then(|u| u.ip())
            .with_context(|| format!("{my_url} has no IP address"))?;
        let local = LocalMember {
            name: me.name.clone(),
            ip,
        };
        let spec = render::spec(cfg, &local, &ClusterState::FromDisk)?;
        self.manager.install(&spec)?;
        self.manager.start(true).await?;
        record_finished(&cfg.member.data_dir, r)?;
        request::report(store, &r.id, &me.name, "started").await;
        super::metrics::heal_action(super::metrics::HealAction::Restore);
        tracing::warn!(request = %r.id, snapshot = %r.snapshot, cluster = %format!("{:x}", r.cluster_id()), elapsed = ?started.elapsed(), endpoint = %local_endpoint(cfg), "etcd started from the restored snapshot; the cluster is back once a majority of its members have done the same");
        Ok(Followed::Restored(r.id.clone()))
    }
}

/// Request `r` is over here (restored, or given up): no restore under way, and `r` not to be
/// followed again.
fn record_finished(data_dir: &Path, r: &FleetRequest) -> Result<()> {
    let mut record = Record::load(data_dir)?.unwrap_or_default();
    record.restore = None;
    record.restore_finished = Some(r.id.clone());
    record.save(data_dir)
}

fn save_progress(data_dir: &Path, r: &FleetRequest, phase: Phase) -> Result<()> {
    let mut record = Record::load(data_dir)?.unwrap_or_default();
    record.restore = Some(InProgress {
        request: r.clone(),
        phase,
    });
    record.save(data_dir)
}

/// The restored data is in place: from now on this node belongs to the restored cluster (its
/// endpoint reports it, "was I removed?" asks its members).
fn record_restored(
    cfg: &crate::config::Config,
    r: &FleetRequest,
    me: &RequestMember,
) -> Result<()> {
    let data_dir = &cfg.member.data_dir;
    let mut record = Record::load(data_dir)?.unwrap_or_default();
    record.held.cluster_name = cfg.cluster.name.clone();
    record.held.cluster_id = Some(r.cluster_id());
    record.held.member_id = Some(r.member_id(&me.peer_url));
    record.name = Some(me.name.clone());
    record.peer_url = Some(me.peer_url.clone());
    record.members = r
        .members
        .iter()
        .map(|m| RecordedMember {
            id: format!("{:x}", r.member_id(&m.peer_url)),
            name: m.name.clone(),
            peer_urls: vec![m.peer_url.clone()],
            client_urls: vec![m.client_url.clone()],
        })
        .collect();
    record.held.raft_index = None;
    record.held.formation = None;
    record.held.restored_from = Some(r.snapshot.clone());
    record.nonce_used = true;
    record.restore = Some(InProgress {
        request: r.clone(),
        phase: Phase::Restored,
    });
    record.save(data_dir)
}
