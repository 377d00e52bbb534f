//! What the store holds: the signed manifests of a cluster's snapshots (a data object without a
//! manifest is not a snapshot), newest first by what they sign (never by a name's text), whether
//! each data object is there at its size, and the objects that are not to be trusted.

use super::manifest::Manifest;
use super::signed;
use super::store::{ReadError, Store};
use anyhow::{Context, Result};
use futures::TryStreamExt;
use std::collections::BTreeMap;

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Entry {
    #[serde(flatten)]
    pub manifest: Manifest,
    /// The data object is listed with the size the manifest gives.
    pub verified: bool,
}

/// An object that looks like a manifest but is not to be trusted (unsigned, badly signed,
/// misnamed, too large, of another cluster, from the future): never used, reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Untrusted {
    pub object: String,
    pub why: String,
}

/// What the store holds for this cluster.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Listing {
    /// Signed manifests, newest first by their signed time and revision.
    pub entries: Vec<Entry>,
    pub untrusted: Vec<Untrusted>,
}

impl Listing {
    /// The newest snapshot whose data object is there at the manifest's size.
    pub(crate) fn newest_verified(&self) -> Option<&Entry> {
        self.entries.iter().find(|e| e.verified)
    }

    /// Log each untrusted object (they are never used; somebody wrote them by hand).
    pub(crate) fn warn_untrusted(&self, store: &Store) {
        for u in &self.untrusted {
            tracing::warn!(store = %store.describe, object = %u.object, why = %u.why, "an object in the snapshot store is not trusted and is ignored: whoever can write the bucket wrote it, or it is not of this version; check the bucket's access");
        }
    }
}

/// Every object directly in the cluster's directory of the store (snapshots and their
/// manifests; not the restore requests below it), from one listing.
async fn objects(store: &Store) -> Result<Vec<object_store::ObjectMeta>> {
    let depth = store.dir.parts().count() + 1;
    let all: Vec<object_store::ObjectMeta> = store
        .inner
        .list(Some(&store.dir))
        .try_collect()
        .await
        .with_context(|| format!("listing {}", store.describe))?;
    Ok(all
        .into_iter()
        .filter(|o| o.location.parts().count() == depth)
        .collect())
}

/// Read and check every manifest. Every read is bounded; a manifest counts only when it is
/// signed by a member of this cluster's CA and passes `Manifest::check`.
pub(crate) async fn list(store: &Store) -> Result<Listing> {
    let anchor = store.anchor()?;
    let objects = objects(store).await?;
    let sizes: BTreeMap<String, u64> = objects
        .iter()
        .filter_map(|o| Some((o.location.filename()?.to_string(), o.size)))
        .collect();
    let now = time::OffsetDateTime::now_utc();
    let mut out = Listing::default();
    for o in &objects {
        let Some(name) = o.location.filename() else {
            continue;
        };
        let Some(stored_as) = name.strip_suffix(".json") else {
            continue;
        };
        let untrusted = |why: String| Untrusted {
            object: name.to_string(),
            why,
        };
        if let Err(e) = super::manifest::parse_id(stored_as) {
            out.untrusted.push(untrusted(e));
            continue;
        }
        if o.size > signed::MAX_BYTES {
            out.untrusted.push(untrusted(format!(
                "{} bytes, too large to be a manifest; not read",
                o.size
            )));
            continue;
        }
        let bytes = match store.get_bounded(&o.location, signed::MAX_BYTES).await {
            Ok(Some((b, _))) => b,
            // Deleted since the listing (retention elsewhere).
            Ok(None) => continue,
            Err(ReadError::TooLarge(_)) => {
                out.untrusted
                    .push(untrusted("too large to be a manifest; not read".into()));
                continue;
            }
            Err(ReadError::Failed(e)) => return Err(e),
        };
        let manifest: Manifest = match signed::open(super::manifest::KIND, &bytes, &anchor, now)
            .and_then(|m: Manifest| m.check(stored_as, &store.cluster).map(|_| m))
        {
            Ok(m) => m,
            Err(why) => {
                out.untrusted.push(untrusted(why));
                continue;
            }
        };
        let verified = sizes.get(&manifest.object) == Some(&manifest.size);
        out.entries.push(Entry { manifest, verified });
    }
    out.entries
        .sort_by_key(|e| std::cmp::Reverse(e.manifest.newness()));
    Ok(out)
}

/// The ids of the complete, signed snapshots (a manifest and its data object at its size),
/// newest first: what a new cluster can be restored from.
pub(crate) async fn complete_ids(store: &Store) -> Result<Vec<String>> {
    let listing = list(store).await?;
    listing.warn_untrusted(store);
    Ok(listing
        .entries
        .into_iter()
        .filter(|e| e.verified)
        .map(|e| e.manifest.id)
        .collect())
}

/// The newest signed snapshot whose data object is there at the manifest's size.
pub(crate) async fn newest_verified(store: &Store) -> Result<Option<Entry>> {
    Ok(list(store).await?.newest_verified().cloned())
}

/// Seconds since the snapshot was created, by its manifest.
pub(crate) fn age_seconds(entry: &Entry, now: time::OffsetDateTime) -> Option<i64> {
    time::OffsetDateTime::parse(
        &entry.manifest.created,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
    .map(|t| (now - t).whole_seconds())
}

/// `latest` (the newest signed, complete snapshot) or an id (refused unless it is one, and a
/// signed one: an untrusted object says why).
pub(crate) async fn find(store: &Store, which: &str) -> Result<Entry> {
    if which != "latest" {
        super::manifest::parse_id(which).map_err(anyhow::Error::msg)?;
    }
    let listing = list(store).await?;
    listing.warn_untrusted(store);
    let found = if which == "latest" {
        listing.newest_verified().cloned()
    } else {
        if let Some(u) = listing
            .untrusted
            .iter()
            .find(|u| u.object.strip_suffix(".json") == Some(which))
        {
            anyhow::bail!(
                "snapshot {which} in {} is not trusted and is never used: {}",
                store.describe,
                u.why
            );
        }
        listing.entries.into_iter().find(|e| e.manifest.id == which)
    };
    found.with_context(|| format!("no signed snapshot {which:?} in {}", store.describe))
}
