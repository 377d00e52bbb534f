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

pub async fn list(store: &Store) -> Result<Vec<Entry>> {
    let objects: Vec<object_store::ObjectMeta> = store
        .inner
        .list(Some(&store.dir))
        .try_collect()
        .await
        .with_context(|| format!("listing {}", store.describe))?;
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
