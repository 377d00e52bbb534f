//! Scheduled snapshots: one per `backup.interval` for the whole cluster, whichever agents run or
//! restart. The interval's number (seconds since the epoch / interval) is claimed through an etcd
//! transaction on a key held by a lease: only one agent can hold the claim, and a claimer that
//! dies releases it when its lease expires, so another agent takes that interval's snapshot.
//! Once stored, `last` records the interval as done. Taken from a voting member, not the
//! leader's stream when another voter is up; then retention.

use super::{local_endpoint, Agent};
use crate::backup::{catalog, manifest::Manifest, retention, snapshotter, store::Store};
use crate::etcd::client::{self, Whoami};
use crate::etcd::lock;
use crate::tls::ClientMaterial;
use anyhow::{Context, Result};
use etcd_client::{Compare, CompareOp};
use object_store::ObjectStoreExt;
use std::time::{Duration, SystemTime};

/// The claim's lease; kept alive while the snapshot runs.
const CLAIM_TTL: i64 = 60;

/// The schedule's state in this agent.
pub(crate) struct SnapshotSchedule {
    pub store: Store,
    /// How many snapshots the store listed after the last retention here (0 until then).
    expected: usize,
}

impl SnapshotSchedule {
    pub(crate) fn new(store: Store) -> Self {
        SnapshotSchedule { store, expected: 0 }
    }

    /// With metrics served: report the newest snapshot the store holds as the last one, so that
    /// an agent that restarted does not read as "no snapshot yet" until it takes one itself.
    /// Bounded: the heal loop waits for it once, at its start.
    pub(crate) async fn with_known_snapshot(self, cfg: &crate::config::Config) -> Self {
        if cfg.metrics.listen.is_none() {
            return self;
        }
        let listing =
            tokio::time::timeout(KNOWN_SNAPSHOT_TIMEOUT, catalog::list(&self.store)).await;
        if let Ok(Ok(listing)) = listing {
            listing.warn_untrusted(&self.store);
            super::metrics::store_untrusted_objects(listing.untrusted.len());
            if let Some(e) = listing.newest_verified() {
                super::metrics::snapshot_stored(created_unix(&e.manifest), e.manifest.size);
            }
        }
        self
    }
}

/// How long the start of the heal loop waits for the store's listing (metrics only).
const KNOWN_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(10);

/// A manifest's creation time in seconds since the epoch (now, if it does not parse: it was
/// written by this version, so it always does).
fn created_unix(m: &Manifest) -> i64 {
    time::OffsetDateTime::parse(&m.created, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .unix_timestamp()
}

/// How long `status` and `doctor` wait for the store to list its snapshots.
const LIST_TIMEOUT: Duration = Duration::from_secs(20);

/// The newest verified snapshot in the store of `[backup]`, for `status` and `doctor`; `None`
/// without `[backup]`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct LastSnapshot {
    pub store: String,
    pub id: Option<String>,
    pub created: Option<String>,
    pub age_seconds: Option<i64>,
    /// Older than two `backup.interval`s (or none at all).
    pub stale: bool,
    pub error: Option<String>,
    /// Objects that look like manifests but are not to be trusted: never used.
    pub untrusted: Vec<crate::backup::catalog::Untrusted>,
    /// The delta segments of the newest chain; `None` with deltas off or no snapshot yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaStatus>,
}

/// The newest chain of delta segments, for `status` and `doctor`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct DeltaStatus {
    /// The full snapshot the chain extends.
    pub base: String,
    pub segments: usize,
    pub events: u64,
    /// The last revision the chain holds.
    pub last_revision: i64,
    /// When the newest segment was stored, and how long ago (the full snapshot's, without
    /// segments): with writes since, the RPO right now.
    pub newest_segment: Option<String>,
    pub newest_segment_age_seconds: i64,
    /// The cluster's revision (through the local member), when it answered.
    pub cluster_revision: Option<i64>,
    pub delta_interval_seconds: i64,
    /// Older than 3 x `backup.delta_interval` while the cluster holds revisions the chain
    /// does not.
    pub stale: bool,
}

/// Where the chain that extends `base` ends, and how far behind the cluster it is.
async fn delta_status(
    cfg: &crate::config::Config,
    store: &Store,
    base: &catalog::Entry,
) -> Option<DeltaStatus> {
    let interval = cfg.backup.as_ref()?.delta_interval?;
    let link = tokio::time::timeout(
        LIST_TIMEOUT,
        crate::backup::segment::tail(store, &base.manifest),
    )
    .await
    .ok()?
    .ok()?;
    let now = time::OffsetDateTime::now_utc();
    let newest_unix =
        super::deltas::newest_segment_unix(&link).unwrap_or_else(|| created_unix(&base.manifest));
    let age = now.unix_timestamp() - newest_unix;
    let cluster_revision = match super::client_material(cfg) {
        Ok(m) => client::status(&local_endpoint(cfg), &m)
            .await
            .ok()
            .and_then(|s| s.header().map(|h| h.revision())),
        Err(_) => None,
    };
    let last_revision = link.next_revision - 1;
    let behind = cluster_revision.map(|r| (r - last_revision).max(0));
    let seen = crate::decide::doctor::DeltaSeen {
        interval_secs: interval.as_secs() as i64,
        base: link.base.clone(),
        segments: link.segments,
        events: link.chain_events,
        newest_age: age,
        behind,
    };
    let stale = crate::decide::doctor::deltas_stale(&seen);
    Some(DeltaStatus {
        base: link.base,
        segments: link.segments,
        events: link.chain_events,
        last_revision,
        newest_segment: link.newest_segment,
        newest_segment_age_seconds: age,
        cluster_revision,
        delta_interval_seconds: interval.as_secs() as i64,
        stale,
    })
}

/// The newest snapshot in `store` (the one of `[backup]`, opened once by the caller).
pub(crate) async fn last_snapshot(
    cfg: &crate::config::Config,
    store: &super::StoreSlot,
) -> Option<LastSnapshot> {
    let b = cfg.backup.as_ref()?;
    let store = match store.get(cfg) {
        Ok(s) => s?,
        Err(e) => {
            return Some(LastSnapshot {
                store: b.url.to_string(),
                id: None,
                created: None,
                age_seconds: None,
                stale: true,
                error: Some(format!("{e:#}")),
                untrusted: vec![],
                delta: None,
            })
        }
    };
    let listed = match tokio::time::timeout(LIST_TIMEOUT, catalog::list(store)).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "listing {} did not finish within {LIST_TIMEOUT:?}",
            store.describe
        )),
    };
    let newest = listed.as_ref().ok().and_then(|l| l.newest_verified());
    let age = newest.and_then(|e| catalog::age_seconds(e, time::OffsetDateTime::now_utc()));
    let delta = match newest {
        Some(e) => delta_status(cfg, store, e).await,
        None => None,
    };
    Some(LastSnapshot {
        store: store.describe.clone(),
        id: newest.map(|e| e.manifest.id.clone()),
        created: newest.map(|e| e.manifest.created.clone()),
        age_seconds: age,
        stale: age.is_none_or(|a| a > 2 * b.interval.as_secs() as i64),
        untrusted: listed
            .as_ref()
            .map(|l| l.untrusted.clone())
            .unwrap_or_default(),
        error: listed.err().map(|e| format!("{e:#}")),
        delta,
    })
}

/// `snapshot save`: take one now, through the local member (or `endpoint`), into `store`.
pub(crate) async fn take_now(
    cfg: &crate::config::Config,
    store: &Store,
    age_recipients: &[String],
    endpoint: Option<String>,
) -> Result<Manifest> {
    let material = super::client_material(cfg)?;
    let endpoint = endpoint.unwrap_or_else(|| local_endpoint(cfg));
    snapshotter::take(
        store,
        age_recipients,
        &snapshotter::SnapshotSource {
            endpoint: &endpoint,
            material: &material,
        },
    )
    .await
}

fn keys(cluster: &str) -> (String, String) {
    let base = format!("/etcd-bootstrap/snapshots/{cluster}");
    (format!("{base}/last"), format!("{base}/claim"))
}

fn interval_number(interval: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() / interval.as_secs().max(1)
}

impl Agent<'_> {
    /// Called at every healthy tick of the heal loop: take this interval's snapshot if nobody
    /// has, and this agent wins the claim.
    pub(crate) async fn snapshot_tick(
        &self,
        sched: &mut SnapshotSchedule,
        material: &ClientMaterial,
        me: &Whoami,
    ) -> Result<()> {
        let cfg = self.cfg;
        let Some(b) = &cfg.backup else {
            return Ok(());
        };
        if me.is_learner {
            return Ok(());
        }
        let number = interval_number(b.interval);
        let (last_key, claim_key) = keys(&cfg.cluster.name);
        let mut c =
            client::connect(&[local_endpoint(cfg)], material, client::PROBE_TIMEOUT).await?;
        let last = client::bounded(
            "Range",
            client::PROBE_TIMEOUT,
            c.get(last_key.as_str(), None),
        )
        .await?;
        let last_value = last.kvs().first().map(|kv| kv.value().to_vec());
        let done: Option<u64> = last_value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok());
        if done.is_some_and(|d| d >= number) {
            return Ok(());
        }
        let me_name = crate::agent::env_value(cfg, "ETCD_NAME").unwrap_or_default();
        // The claim holds only while the last snapshot is still the one read above.
        let unchanged = match &last_value {
            Some(v) => Compare::value(last_key.as_str(), CompareOp::Equal, v.clone()),
            None => Compare::create_revision(last_key.as_str(), CompareOp::Equal, 0),
        };
        let Some(mut claim) = lock::try_lock(
            &[local_endpoint(cfg)],
            material,
            &claim_key,
            &me_name,
            CLAIM_TTL,
            vec![unchanged],
        )
        .await?
        else {
            return Ok(());
        };
        let source = self.snapshot_source(material, me).await;
        tracing::info!(interval = number, from = %source, store = %sched.store.describe, "taking the scheduled snapshot");
        let from = snapshotter::SnapshotSource {
            endpoint: &source,
            material,
        };
        let taken = {
            let take = snapshotter::take(&sched.store, &b.age_recipients, &from);
            tokio::pin!(take);
            loop {
                tokio::select! {
                    r = &mut take => break r,
                    _ = tokio::time::sleep(Duration::from_secs((CLAIM_TTL / 3) as u64)) => {
                        super::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
            }
        };
        let result = match taken {
            Ok(m) => {
                tracing::info!(id = %m.id, revision = m.revision, size = m.size, encrypted = m.encrypted, "snapshot stored");
                super::metrics::snapshot_stored(created_unix(&m), m.size);
                let put = claim
                    .client()
                    .put(last_key.as_str(), format!("{number} {}", m.id), None);
                client::bounded("Put", client::PROBE_TIMEOUT, put)
                    .await
                    .map(|_| ())
            }
            Err(e) => {
                super::metrics::snapshot_failed();
                Err(e.context("the scheduled snapshot failed; the next tick tries again"))
            }
        };
        claim.release().await;
        result?;
        self.apply_retention(sched).await
    }

    /// A voter that is not the leader, if one answers; else the local member.
    pub(super) async fn snapshot_source(&self, material: &ClientMaterial, me: &Whoami) -> String {
        let local = local_endpoint(self.cfg);
        if !me.is_leader() {
            return local;
        }
        if let Ok((mut c, _)) = client::who_is(&local, material).await {
            if let Ok(members) = crate::etcd::membership::list(&mut c).await {
                for m in members
                    .iter()
                    .filter(|m| !m.is_learner && m.id != me.member_id)
                {
                    if let Some(url) = m.client_urls.first() {
                        if client::check_health(url, material).await.is_ok() {
                            return url.clone();
                        }
                    }
                }
            }
        }
        local
    }

    async fn apply_retention(&self, sched: &mut SnapshotSchedule) -> Result<()> {
        let Some(b) = &self.cfg.backup else {
            return Ok(());
        };
        let listing = catalog::list(&sched.store).await?;
        listing.warn_untrusted(&sched.store);
        super::metrics::store_untrusted_objects(listing.untrusted.len());
        // Only signed snapshots count and are ever deleted: an untrusted object neither pushes
        // a real snapshot out nor is touched.
        let all = listing.entries;
        let ids: Vec<String> = all.iter().map(|e| e.manifest.id.clone()).collect();
        let doomed = match retention::to_delete(&ids, b.keep_last, b.keep_daily, sched.expected) {
            Ok(d) => d,
            Err(why) => {
                tracing::error!(store = %sched.store.describe, %why, "retention stopped");
                return Ok(());
            }
        };
        for id in &doomed {
            let Some(e) = all.iter().find(|e| &e.manifest.id == id) else {
                continue;
            };
            // The manifest first: without it the snapshot no longer exists.
            let manifest = sched
                .store
                .path(&crate::backup::manifest::manifest_name(id));
            sched
                .store
                .inner
                .delete(&manifest)
                .await
                .with_context(|| format!("deleting {manifest}"))?;
            let object = sched.store.path(&e.manifest.object);
            sched
                .store
                .inner
                .delete(&object)
                .await
                .with_context(|| format!("deleting {object}"))?;
            // Its delta segments with it: a chain never outlives the snapshot it extends.
            let segments = crate::backup::segment::delete_chain(&sched.store, id).await?;
            tracing::info!(%id, segments, "snapshot deleted by retention, with its delta segments");
        }
        // After the next snapshot at least these, plus that one, must be listed.
        sched.expected = ids.len() - doomed.len();
        Ok(())
    }
}
