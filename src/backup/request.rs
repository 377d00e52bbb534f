//! The fleet-wide restore request in the store, where every agent can read it also when etcd has
//! no quorum: `<cluster dir>/restore/request.json` (one at a time; `decide::restore::may_request`
//! says when a new one may replace it), and each member's progress beside it in
//! `<cluster dir>/restore/<request id>/<member name>.json`, for `restore` to show.
//!
//! The request is written with a plain PUT (S3-compatible servers differ in their support for
//! conditional writes): two `restore` commands that race both pass the check, and the later write
//! wins. That cannot fork the cluster: each request has its own token and so its own cluster ID,
//! and every agent follows the request that is current when it looks, so all end on the later one
//! and the command that lost sees its request superseded.

use super::store::Store;
use crate::decide::restore::FleetRequest;
use anyhow::{Context, Result};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

/// Requests are small; anything larger is not one of ours.
const LIMIT: usize = 1 << 20;

fn dir(store: &Store) -> ObjectPath {
    store.dir.clone().join("restore")
}

fn request_path(store: &Store) -> ObjectPath {
    dir(store).join("request.json")
}

fn progress_dir(store: &Store, request_id: &str) -> ObjectPath {
    dir(store).join(request_id)
}

/// A member's progress with a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub member: String,
    /// "checking", "restoring", "started", "failed: ..." or "retrying: ...".
    pub state: String,
    pub at: String,
}

impl Progress {
    pub fn failed(&self) -> bool {
        self.state.starts_with("failed")
    }
}

async fn get_small(store: &Store, path: &ObjectPath) -> Result<Option<Vec<u8>>> {
    match store.inner.get(path).await {
        Ok(r) => {
            if r.meta.size > LIMIT as u64 {
                anyhow::bail!(
                    "{path} in {}: {} bytes, too large",
                    store.describe,
                    r.meta.size
                );
            }
            let bytes = r.bytes().await.with_context(|| format!("reading {path}"))?;
            Ok(Some(bytes.to_vec()))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path} in {}", store.describe)),
    }
}

/// The current request, if any.
pub async fn read(store: &Store) -> Result<Option<FleetRequest>> {
    let path = request_path(store);
    let Some(bytes) = get_small(store, &path).await? else {
        return Ok(None);
    };
    let r: FleetRequest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{path} in {} is not a restore request", store.describe))?;
    if r.members.is_empty() || r.snapshot.is_empty() || r.token.is_empty() {
        anyhow::bail!(
            "{path} in {} names no members, snapshot or token",
            store.describe
        );
    }
    Ok(Some(r))
}

pub async fn write(store: &Store, request: &FleetRequest) -> Result<()> {
    let body = serde_json::to_vec_pretty(request)?;
    store
        .inner
        .put(&request_path(store), PutPayload::from(body))
        .await
        .with_context(|| format!("writing the restore request to {}", store.describe))?;
    Ok(())
}

/// Note a member's progress (best effort: the restore goes on without it).
pub async fn report(store: &Store, request_id: &str, member: &str, state: &str) {
    let p = Progress {
        member: member.into(),
        state: state.into(),
        at: super::manifest::rfc3339(time::OffsetDateTime::now_utc()),
    };
    let path = progress_dir(store, request_id).join(format!("{member}.json"));
    let body = serde_json::to_vec(&p).expect("progress serializes");
    if let Err(e) = store.inner.put(&path, PutPayload::from(body)).await {
        tracing::warn!(error = %e, object = %path, "could not note this member's restore progress in the store");
    }
}

/// Every member's progress with a request.
pub async fn progress(store: &Store, request_id: &str) -> Result<Vec<Progress>> {
    let dir = progress_dir(store, request_id);
    let objects: Vec<object_store::ObjectMeta> =
        store
            .inner
            .list(Some(&dir))
            .try_collect()
            .await
            .with_context(|| format!("listing {dir} in {}", store.describe))?;
    let mut out = Vec::new();
    for o in objects {
        if let Some(bytes) = get_small(store, &o.location).await? {
            if let Ok(p) = serde_json::from_slice::<Progress>(&bytes) {
                out.push(p);
            }
        }
    }
    out.sort_by(|a, b| a.member.cmp(&b.member));
    Ok(out)
}
