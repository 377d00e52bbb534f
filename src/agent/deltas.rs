//! Delta segments between full snapshots (`backup::segment`): one agent cluster-wide, the one
//! holding the delta claim (a key on a lease, like the snapshot claim, held for as long as the
//! agent keeps it alive), watches the whole keyspace and uploads a segment every
//! `backup.delta_interval`, or sooner once `backup.delta_max_bytes` of keys and values are waiting.
//!
//! Nothing is taken from memory: each segment starts with a new watch at the revision after the
//! end of the newest chain as the store holds it (the newest verified full snapshot, then its
//! newest signed segment), so an agent that takes over after a leader change or a kill -9 goes on
//! exactly where the last upload ended: no gap, no overlap. etcd's rule relied on: a watch from
//! revision R delivers every event from R on, in revision order, each revision's events in one
//! response (no `fragment`), unless R is compacted, which the response says
//! (`compact_revision`). Then the history is gone: a full snapshot is taken at once, logged and
//! counted, and the next chain starts from it. A chain longer than `backup.delta_max_events` is
//! closed the same way.

use super::{local_endpoint, Agent};
use crate::backup::manifest::Manifest;
use crate::backup::segment::{self, Event, Link};
use crate::backup::{catalog, snapshotter, store::Store};
use crate::etcd::client;
use crate::etcd::lock::{self, LeaseLock};
use anyhow::{Context, Result};
use etcd_client::{EventType, WatchOptions};
use std::time::{Duration, Instant};

/// The delta claim's lease: another agent takes over this long after the holder stops.
const CLAIM_TTL: i64 = 15;
/// Watch responses may hold many revisions of large values while the watch catches up.
const WATCH_MESSAGE_LIMIT: usize = 256 * 1024 * 1024;

/// The claim, while this agent holds it: the one lease lock (`etcd::lock`).
type Claim = LeaseLock;

fn claim_key(cluster: &str) -> String {
    format!("/etcd-bootstrap/snapshots/{cluster}/delta-claim")
}

/// Why a full snapshot is taken outside the schedule (the label of its metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FullReason {
    /// The watch met a compacted revision: the history since the chain's end is gone.
    Compacted,
    /// The chain holds more than `backup.delta_max_events` events.
    ChainTooLong,
    /// The newest full snapshot is of another cluster ID (the cluster was restored since): its
    /// revisions say nothing about this cluster's.
    ClusterChanged,
}

impl FullReason {
    pub(crate) const ALL: [FullReason; 3] = [
        FullReason::Compacted,
        FullReason::ChainTooLong,
        FullReason::ClusterChanged,
    ];
    pub(crate) fn label(self) -> &'static str {
        match self {
            FullReason::Compacted => "compacted",
            FullReason::ChainTooLong => "chain_too_long",
            FullReason::ClusterChanged => "cluster_changed",
        }
    }
}

/// What one round did.
enum Round {
    /// Not the holder (or not a voter, or no full snapshot yet): wait a while.
    Idle,
    /// Watched for an interval (and uploaded what came): go on at once.
    Watched,
}

impl Agent<'_> {
    /// Runs beside the heal loop for as long as the agent does; never returns. Does nothing
    /// without `[backup]` or with `backup.delta_interval = ""`.
    pub(crate) async fn delta_loop(&self, store: Option<&Store>) -> std::convert::Infallible {
        let (Some(b), Some(store)) = (&self.cfg.backup, store) else {
            return std::future::pending().await;
        };
        let Some(interval) = b.delta_interval else {
            return std::future::pending().await;
        };
        let mut claim: Option<Claim> = None;
        loop {
            let round = self.delta_round(store, interval, &mut claim).await;
            match round {
                Ok(Round::Watched) => continue,
                Ok(Round::Idle) => {}
                Err(e) => {
                    super::metrics::delta_failed();
                    tracing::warn!(error = %format!("{e:#}"), "delta segment; trying again after backup.delta_interval");
                    if let Some(c) = claim.take() {
                        c.release().await;
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Take or keep the claim: `false` when another agent holds it.
    async fn hold_delta_claim(&self, claim: &mut Option<Claim>) -> Result<bool> {
        if let Some(c) = claim.as_mut() {
            if c.still_held().await {
                return Ok(true);
            }
            tracing::warn!("the delta claim's lease could not be kept alive; claiming again");
            *claim = None;
        }
        let cfg = self.cfg;
        let material = super::client_material(cfg)?;
        let (_, me) = client::who_is(&local_endpoint(cfg), &material).await?;
        if me.is_learner {
            return Ok(false);
        }
        let key = claim_key(&cfg.cluster.name);
        let holder = super::node_name(cfg);
        let endpoints = [local_endpoint(cfg)];
        let Some(held) =
            lock::try_lock(&endpoints, &material, &key, &holder, CLAIM_TTL, vec![]).await?
        else {
            return Ok(false);
        };
        tracing::info!(key = %key, "holding the delta claim: this agent uploads the delta segments");
        *claim = Some(held);
        Ok(true)
    }

    /// One round: hold the claim, find where the chain ends, close it with a full snapshot when
    /// it cannot go on, else watch from its end for an interval and upload what came.
    async fn delta_round(
        &self,
        store: &Store,
        interval: Duration,
        claim: &mut Option<Claim>,
    ) -> Result<Round> {
        let started = Instant::now();
        let Some(b) = &self.cfg.backup else {
            return Ok(Round::Idle);
        };
        if !self.hold_delta_claim(claim).await? {
            return Ok(Round::Idle);
        }
        // Where the chain ends, by the store.
        let listing = catalog::list(store).await?;
        let Some(base) = listing.newest_verified() else {
            // The schedule takes the first full snapshot as soon as the cluster forms.
            return Ok(Round::Idle);
        };
        let link = segment::tail(store, &base.manifest).await?;
        super::metrics::delta_chain(&link);
        if link.chain_events >= b.delta_max_events {
            self.full_snapshot_now(
                store,
                FullReason::ChainTooLong,
                &format!(
                    "the chain of {} holds {} events, backup.delta_max_events is {}",
                    link.base, link.chain_events, b.delta_max_events
                ),
            )
            .await?;
            return Ok(Round::Watched);
        }
        let Some(c) = claim.as_mut() else {
            return Ok(Round::Idle);
        };
        let cluster_id = cluster_id(c.client()).await?;
        if cluster_id != base.manifest.cluster_id {
            self.full_snapshot_now(
                store,
                FullReason::ClusterChanged,
                &format!(
                    "the newest full snapshot {} is of cluster {}, this cluster is {cluster_id} (restored since)",
                    link.base, base.manifest.cluster_id
                ),
            )
            .await?;
            return Ok(Round::Watched);
        }
        // Asked before the watch, as a plain read: the rule does not hang on how a watch
        // reports a compacted start (3.4 and 3.5 cancel it, with the reason).
        let how = if history_compacted(c.client(), link.next_revision).await? {
            "past it".to_string()
        } else {
            let deadline = tokio::time::Instant::from_std(started + interval);
            let watched =
                watch_keyspace(c.client(), link.next_revision, deadline, b.delta_max_bytes).await?;
            match watched.compacted {
                Some(compact) => format!("up to {compact}"),
                None if watched.events.is_empty() => return Ok(Round::Watched),
                None => {
                    return self
                        .store_segment(
                            store,
                            claim,
                            &base.manifest,
                            &link,
                            &b.age_recipients,
                            watched.events,
                        )
                        .await
                }
            }
        };
        self.full_snapshot_now(
            store,
            FullReason::Compacted,
            &format!(
                "the chain of {} ends at revision {}, but etcd compacted its history {how}: the events since are gone",
                link.base,
                link.next_revision - 1
            ),
        )
        .await?;
        Ok(Round::Watched)
    }

    /// Upload `events` as the next segment of the chain that ends at `link`, if this agent still
    /// holds the claim and the chain still ends there: nobody else uploaded meanwhile (the
    /// claim's lease may have run out while the store was slow).
    async fn store_segment(
        &self,
        store: &Store,
        claim: &mut Option<Claim>,
        base: &Manifest,
        link: &Link,
        recipients: &[String],
        events: Vec<Event>,
    ) -> Result<Round> {
        if !self.hold_delta_claim(claim).await? {
            tracing::warn!(
                "the delta claim was lost while watching; this segment is left to the new holder"
            );
            return Ok(Round::Idle);
        }
        if segment::tail(store, base).await? != *link {
            tracing::warn!("the chain changed while watching; this segment is left out");
            return Ok(Round::Watched);
        }
        let m = segment::upload(store, recipients, link, &segment::group(events)).await?;
        tracing::debug!(segment = %m.id, base = %m.base, events = m.events, size = m.size, "delta segment stored");
        super::metrics::delta_segment_stored(&m, link.segments + 1);
        Ok(Round::Watched)
    }

    /// A full snapshot outside the schedule, now; logged with why, and counted.
    async fn full_snapshot_now(&self, store: &Store, reason: FullReason, why: &str) -> Result<()> {
        let Some(b) = &self.cfg.backup else {
            return Ok(());
        };
        tracing::warn!(reason = reason.label(), %why, "taking a full snapshot now: the delta chain cannot go on");
        super::metrics::delta_full_snapshot(reason.label());
        let material = super::client_material(self.cfg)?;
        let me = client::check_health(&local_endpoint(self.cfg), &material).await?;
        let source = self.snapshot_source(&material, &me).await;
        let m = snapshotter::take(
            store,
            &b.age_recipients,
            &snapshotter::SnapshotSource {
                endpoint: &source,
                material: &material,
            },
        )
        .await
        .context("the full snapshot that starts a new chain failed")?;
        tracing::info!(id = %m.id, revision = m.revision, "full snapshot stored; a new delta chain starts from it");
        super::metrics::snapshot_stored(
            crate::backup::signed::parse_time(&m.created)
                .map(|t| t.unix_timestamp())
                .unwrap_or_default(),
            m.size,
        );
        Ok(())
    }
}

/// What one watch brought: the events in watch order, and the revision etcd compacted its
/// history up to when the watch met a compacted revision (then the events are incomplete).
struct WatchBatch {
    events: Vec<Event>,
    compacted: Option<i64>,
}

/// The cluster ID the member behind `etcd` reports, in hex.
async fn cluster_id(etcd: &mut etcd_client::Client) -> Result<String> {
    let status =
        client::bounded("Maintenance.Status", client::PROBE_TIMEOUT, etcd.status()).await?;
    Ok(format!(
        "{:x}",
        status.header().map(|h| h.cluster_id()).unwrap_or(0)
    ))
}

/// Whether etcd no longer has revision `from` in its history (compacted past it), asked with a
/// range read at that revision before the watch (etcd refuses a read at a compacted revision).
/// A revision etcd has not reached yet (the chain is up to date) is not compacted. A watch that
/// was open before a compaction keeps getting its events: that is no hole.
async fn history_compacted(etcd: &mut etcd_client::Client, from: i64) -> Result<bool> {
    let now = client::bounded("Range", client::PROBE_TIMEOUT, etcd.get(vec![0u8], None))
        .await?
        .header()
        .map_or(0, |h| h.revision());
    if from > now {
        return Ok(false);
    }
    let at = etcd_client::GetOptions::new()
        .with_revision(from)
        .with_limit(1)
        .with_keys_only();
    match client::bounded(
        "Range",
        client::PROBE_TIMEOUT,
        etcd.get(vec![0u8], Some(at)),
    )
    .await
    {
        Ok(_) => Ok(false),
        Err(e) if format!("{e:#}").contains("required revision has been compacted") => Ok(true),
        Err(e) => Err(e.context(format!("reading revision {from}"))),
    }
}

/// Watch the whole keyspace from revision `from` until `deadline`, or until `max_bytes` of keys
/// and values came, or until the watch meets a compacted revision.
async fn watch_keyspace(
    etcd: &mut etcd_client::Client,
    from: i64,
    deadline: tokio::time::Instant,
    max_bytes: u64,
) -> Result<WatchBatch> {
    let mut watch = etcd
        .watch_client()
        .max_decoding_message_size(WATCH_MESSAGE_LIMIT);
    let options = WatchOptions::new()
        .with_all_keys()
        .with_start_revision(from);
    let mut stream = client::bounded(
        "Watch",
        client::PROBE_TIMEOUT,
        watch.watch(vec![0u8], Some(options)),
    )
    .await?;
    let mut events: Vec<Event> = vec![];
    let mut bytes = 0u64;
    let mut compacted: Option<i64> = None;
    while bytes < max_bytes {
        let msg = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => break,
            Ok(m) => m.with_context(|| format!("watching the keyspace from revision {from}"))?,
        };
        let Some(resp) = msg else {
            anyhow::bail!("the watch from revision {from} ended without a reason");
        };
        if resp.compact_revision() > 0 {
            compacted = Some(resp.compact_revision());
            break;
        }
        if resp.canceled() {
            anyhow::bail!(
                "etcd cancelled the watch from revision {from}: {}",
                resp.cancel_reason()
            );
        }
        for ev in resp.events().iter().filter_map(event) {
            bytes += ev.bytes() as u64;
            events.push(ev);
        }
    }
    // Closing the stream cancels the watch.
    drop(stream);
    Ok(WatchBatch { events, compacted })
}

/// One event of etcd's watch as a segment's; `None` without a key-value.
fn event(e: &etcd_client::Event) -> Option<Event> {
    let kv = e.kv()?;
    Some(match e.event_type() {
        EventType::Put => Event::Put {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            lease: kv.lease(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
        },
        EventType::Delete => Event::Delete {
            key: kv.key().to_vec(),
            mod_revision: kv.mod_revision(),
        },
    })
}

/// A chain's length and its newest segment, for metrics, `status` and `doctor`.
pub(crate) fn newest_segment_unix(link: &Link) -> Option<i64> {
    link.newest_segment
        .as_deref()
        .and_then(crate::backup::signed::parse_time)
        .map(|t| t.unix_timestamp())
}
