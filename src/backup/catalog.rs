//! What the store holds: the manifests of a cluster's snapshots (a data object without a
//! manifest is not a snapshot), newest first, and whether each data object is there at its size.

use super::manifest::Manifest;
use super::store::Store;
use anyhow::{Context, Result};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use std::collections::BTreeMap;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    #[serde(flatten)]
    pub manifest: Manifest,
    /// The data object is listed with the size the manifest gives.
    pub verified: bool,
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

pub async fn list(store: &Store) -> Result<Vec<Entry>> {
    let objects = objects(store).await?;
    let sizes: BTreeMap<String, u64> = objects
        .iter()
        .filter_map(|o| Some((o.location.filename()?.to_string(), o.size)))
        .collect();
    let mut out = Vec::new();
    for o in &objects {
        let Some(name) = o.location.filename() else {
            continue;
        };
        if !name.ends_with(".json") {
            continue;
        }
        let bytes = store
            .inner
            .get(&o.location)
            .await
            .with_context(|| format!("reading {}", o.location))?
            .bytes()
            .await
            .with_context(|| format!("reading {}", o.location))?;
        let manifest: Manifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(object = %o.location, error = %e, "not a snapshot manifest; ignored");
                continue;
            }
        };
        let verified = sizes.get(&manifest.object) == Some(&manifest.size);
        out.push(Entry { manifest, verified });
    }
    out.sort_by(|a, b| b.manifest.id.cmp(&a.manifest.id));
    Ok(out)
}

/// The ids of the complete snapshots (a manifest and its data object), newest first, from one
/// listing of the store (no object is read): what a new cluster can be restored from.
pub async fn complete_ids(store: &Store) -> Result<Vec<String>> {
    let names: std::collections::BTreeSet<String> = objects(store)
        .await?
        .iter()
        .filter_map(|o| o.location.filename().map(String::from))
        .collect();
    let mut ids: Vec<String> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".json"))
        .filter(|id| {
            [false, true]
                .iter()
                .any(|enc| names.contains(&super::manifest::object_name(id, *enc)))
        })
        .map(String::from)
        .collect();
    ids.sort_by(|a, b| b.cmp(a));
    Ok(ids)
}

/// The newest snapshot whose data object is there at the manifest's size.
pub async fn newest_verified(store: &Store) -> Result<Option<Entry>> {
    Ok(list(store).await?.into_iter().find(|e| e.verified))
}

/// Seconds since the snapshot was created, by its manifest.
pub fn age_seconds(entry: &Entry, now: time::OffsetDateTime) -> Option<i64> {
    time::OffsetDateTime::parse(
        &entry.manifest.created,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
    .map(|t| (now - t).whole_seconds())
}

/// `latest` or an id.
pub async fn find(store: &Store, which: &str) -> Result<Entry> {
    let all = list(store).await?;
    let found = if which == "latest" {
        all.into_iter().find(|e| e.verified)
    } else {
        all.into_iter().find(|e| e.manifest.id == which)
    };
    found.with_context(|| format!("no snapshot {which:?} in {}", store.describe))
}
