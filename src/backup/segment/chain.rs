//! Where a chain ends, as the store says (`tail`: what the next segment must name and start at),
//! and deleting a chain with the snapshot it extends (`delete_chain`).

use super::manifest::read_manifest;
use super::names::{chain_objects, parse_id};
use crate::backup::manifest::Manifest;
use crate::backup::store::Store;
use anyhow::Result;
use object_store::ObjectStoreExt;

/// Where a chain ends, as the store says: what the next segment must name and start at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub base: String,
    /// The last object of the chain (the base snapshot or its newest segment) and its SHA-256.
    pub previous: String,
    pub previous_sha256: String,
    /// The first revision the next segment covers.
    pub next_revision: i64,
    /// Events in the chain so far.
    pub chain_events: u64,
    /// Segments in the chain (by the names listed).
    pub segments: usize,
    /// When the newest segment was created (RFC 3339); `None` without segments.
    pub newest_segment: Option<String>,
}

impl Link {
    /// The start of a chain: the full snapshot itself. Its revision is the cluster's revision
    /// when the snapshot started (the snapshot holds at least it), so the chain goes on from the
    /// next one; a replay skips what the snapshot already holds.
    pub(crate) fn base(m: &Manifest) -> Link {
        Link {
            base: m.id.clone(),
            previous: m.id.clone(),
            previous_sha256: m.sha256.clone(),
            next_revision: m.revision + 1,
            chain_events: 0,
            segments: 0,
            newest_segment: None,
        }
    }
}

/// Where the chain of `base` ends, by what the store holds: its newest segment whose signed
/// manifest checks out (untrusted ones are skipped, and logged), else the base itself. Only the
/// newest manifest is read, so this stays cheap however long the chain is.
pub(crate) async fn tail(store: &Store, base: &Manifest) -> Result<Link> {
    let objects = chain_objects(store, &base.id).await?;
    let mut ids: Vec<(i64, i64, String)> = objects
        .iter()
        .filter_map(|o| {
            o.location
                .filename()?
                .strip_suffix(".json")
                .map(String::from)
        })
        .filter_map(|s| {
            let (_, first, last) = parse_id(&s).ok()?;
            Some((last, first, s))
        })
        .collect();
    let segments = ids.len();
    ids.sort();
    let anchor = store.anchor()?;
    let now = time::OffsetDateTime::now_utc();
    for (_, _, seg) in ids.iter().rev() {
        match read_manifest(store, &base.id, seg, &anchor, now).await {
            Ok(Some(m)) => {
                return Ok(Link {
                    base: base.id.clone(),
                    previous: m.id.clone(),
                    previous_sha256: m.sha256.clone(),
                    next_revision: m.last_revision + 1,
                    chain_events: m.chain_events,
                    segments,
                    newest_segment: Some(m.created),
                })
            }
            Ok(None) => continue,
            Err(why) => {
                tracing::warn!(store = %store.describe, base = %base.id, segment = %seg, %why, "a segment manifest is not trusted and is ignored");
            }
        }
    }
    Ok(Link::base(base))
}

/// Delete every segment of the chain that extends `base` (retention, once `base` itself is
/// deleted: a segment never outlives the snapshot it extends). Manifests first, so that no
/// segment is left that looks whole; returns how many objects went.
pub(crate) async fn delete_chain(store: &Store, base: &str) -> Result<usize> {
    let mut objects = chain_objects(store, base).await?;
    objects.sort_by_key(|o| !o.location.as_ref().ends_with(".json"));
    for o in &objects {
        match store.inner.delete(&o.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("deleting {}", o.location))),
        }
    }
    Ok(objects.len())
}
