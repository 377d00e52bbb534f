//! The fleet-wide restore request in the store, where every agent can read it also when etcd has
//! no quorum: `<cluster dir>/restore/request.json` (one at a time; `decide::restore::may_request`
//! says when a new one may replace it), and each member's progress beside it in
//! `<cluster dir>/restore/<request id>/<member name>.json`, for `restore` to show.
//!
//! The store is not trusted: the request and every progress note are signed (`signed`) by the
//! member that wrote them, and one that is not is never followed. The request is written with a
//! conditional write: created only when there is none, or replacing exactly the version that was
//! read, so that of two `restore` commands that race, one fails cleanly instead of both being
//! told they won while the members follow whichever they read first.

use super::signed::{self, Payload};
use super::store::{ReadError, Store};
use crate::decide::restore::FleetRequest;
use anyhow::{Context, Result};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

/// The kinds of signed object written here.
const REQUEST: &str = "restore-request";
const PROGRESS: &str = "restore-progress";

fn dir(store: &Store) -> ObjectPath {
    store.dir.clone().join("restore")
}

fn request_path(store: &Store) -> ObjectPath {
    dir(store).join("request.json")
}

fn progress_dir(store: &Store, request_id: &str) -> ObjectPath {
    dir(store).join(request_id)
}

impl Payload for FleetRequest {
    fn signer(&self) -> &str {
        &self.by
    }
    fn signed_at(&self) -> Option<time::OffsetDateTime> {
        signed::parse_time(&self.requested)
    }
}

/// A member's progress with a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RequestProgress {
    pub member: String,
    /// "checking", "restoring", "started", "failed: ..." or "retrying: ...".
    pub state: String,
    pub at: String,
}

impl RequestProgress {
    pub(crate) fn failed(&self) -> bool {
        self.state.starts_with("failed")
    }
}

impl Payload for RequestProgress {
    fn signer(&self) -> &str {
        &self.member
    }
    fn signed_at(&self) -> Option<time::OffsetDateTime> {
        signed::parse_time(&self.at)
    }
}

/// `YYYYMMDDTHHMMSSZ-<6 hex>`, as `restore` makes them: the id becomes an object path.
fn request_id_ok(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 23
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// A member name as etcd's `--name` and this request's object names take it.
fn member_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && name != "."
        && name != ".."
}

/// What a signed request must also be: of this cluster, its names in their patterns, its token
/// the one its contents derive, its URLs plain etcd URLs.
fn check(r: &FleetRequest, cluster: &str) -> Result<(), String> {
    if r.cluster != cluster {
        return Err(format!(
            "a request of cluster {:?}, not {cluster:?}",
            r.cluster
        ));
    }
    if !request_id_ok(&r.id) {
        return Err(format!("{:?} is not a request id", r.id));
    }
    super::manifest::parse_id(&r.snapshot)?;
    let from = r
        .old_cluster_id()
        .ok_or("it does not name the cluster it restores")?;
    for m in &r.members {
        if !member_name_ok(&m.name) {
            return Err(format!("{:?} is not a member name", m.name));
        }
        for u in [&m.peer_url, &m.client_url] {
            crate::model::url::EtcdUrl::parse(u).map_err(|e| format!("{u:?}: {e}"))?;
        }
    }
    let again = FleetRequest::new(
        cluster,
        &r.id,
        &r.snapshot,
        &r.requested,
        &r.by,
        from,
        r.members.clone(),
    );
    if again != *r {
        return Err("its token or member order is not the one its contents give".into());
    }
    Ok(())
}

/// What `request.json` holds.
#[derive(Debug)]
pub(crate) enum Current {
    None,
    /// A signed request of this cluster, and the version read (to replace exactly it).
    Trusted(FleetRequest, UpdateVersion),
    /// Something else: never followed; a new request may replace it.
    Untrusted {
        why: String,
        version: UpdateVersion,
    },
}

impl Current {
    /// The request to follow, if any: an untrusted object is logged and ignored.
    pub(crate) fn trusted(self, store: &Store) -> Option<FleetRequest> {
        match self {
            Current::None => None,
            Current::Trusted(r, _) => Some(r),
            Current::Untrusted { why, .. } => {
                tracing::warn!(store = %store.describe, object = %request_path(store), %why, "the restore request in the store is not trusted and is ignored: whoever can write the bucket wrote it; check the bucket's access");
                None
            }
        }
    }
}

/// The current request, checked.
pub(crate) async fn read(store: &Store) -> Result<Current> {
    let path = request_path(store);
    let (bytes, version) = match store.get_bounded(&path, signed::MAX_BYTES).await {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(Current::None),
        Err(ReadError::TooLarge(n)) => {
            // Its version is needed to replace it: a HEAD reads no body.
            let meta = store
                .inner
                .head(&path)
                .await
                .with_context(|| format!("reading {path} in {}", store.describe))?;
            return Ok(Current::Untrusted {
                why: format!("more than {n} bytes"),
                version: UpdateVersion {
                    e_tag: meta.e_tag,
                    version: meta.version,
                },
            });
        }
        Err(ReadError::Failed(e)) => return Err(e),
    };
    let anchor = store.anchor()?;
    let now = time::OffsetDateTime::now_utc();
    Ok(
        match signed::open::<FleetRequest>(REQUEST, &bytes, &anchor, now)
            .and_then(|r| check(&r, &store.cluster).map(|_| r))
        {
            Ok(r) => Current::Trusted(r, version),
            Err(why) => Current::Untrusted { why, version },
        },
    )
}

/// Why writing a request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// Another request was written since this one's check: nothing was written.
    #[error("another restore request was written to {0} at the same moment; this one was not written: see `etcd-bootstrap status` for the one the members follow")]
    Raced(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Write `request`, signed: created when `replaces` is `None` (there was none), else replacing
/// exactly the version that was read.
pub(crate) async fn write(
    store: &Store,
    request: &FleetRequest,
    replaces: Option<UpdateVersion>,
) -> Result<(), WriteError> {
    let key = store.signing_key()?;
    let body = signed::seal(REQUEST, request, &key)?;
    let path = request_path(store);
    let mode = match replaces {
        None => PutMode::Create,
        Some(v) => PutMode::Update(v),
    };
    let put = store
        .inner
        .put_opts(
            &path,
            PutPayload::from(body.clone()),
            PutOptions {
                mode: mode.clone(),
                ..Default::default()
            },
        )
        .await;
    match put {
        Ok(_) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. })
        | Err(object_store::Error::Precondition { .. }) => {
            Err(WriteError::Raced(store.describe.clone()))
        }
        // A local directory cannot replace conditionally: compare the version, then replace
        // (one host owns a file store; the window is the time between two system calls).
        Err(object_store::Error::NotImplemented { .. }) => {
            let PutMode::Update(v) = mode else {
                unreachable!("create is implemented everywhere")
            };
            let now = store
                .inner
                .head(&path)
                .await
                .with_context(|| format!("reading {path} in {}", store.describe))?;
            if now.e_tag != v.e_tag {
                return Err(WriteError::Raced(store.describe.clone()));
            }
            store
                .inner
                .put(&path, PutPayload::from(body))
                .await
                .with_context(|| format!("writing the restore request to {}", store.describe))?;
            Ok(())
        }
        Err(e) => Err(WriteError::Failed(anyhow::Error::new(e).context(format!(
            "writing the restore request to {}",
            store.describe
        )))),
    }
}

/// Note a member's progress, signed (best effort: the restore goes on without it).
pub(crate) async fn report(store: &Store, request_id: &str, member: &str, state: &str) {
    let key = match store.signing_key() {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot sign this member's restore progress; not noted in the store");
            return;
        }
    };
    let p = RequestProgress {
        member: key.name().into(),
        state: state.into(),
        at: super::manifest::rfc3339(time::OffsetDateTime::now_utc()),
    };
    if key.name() != member {
        tracing::warn!(member, signer = key.name(), "this member's certificate names another member; its progress is noted under the certificate's name");
    }
    let path = progress_dir(store, request_id).join(format!("{}.json", key.name()));
    let body = match signed::seal(PROGRESS, &p, &key) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot sign this member's restore progress");
            return;
        }
    };
    if let Err(e) = store.inner.put(&path, PutPayload::from(body)).await {
        tracing::warn!(error = %e, object = %path, "could not note this member's restore progress in the store");
    }
}

/// Every member's signed progress with a request (unsigned notes are left out: whoever can
/// write the bucket could otherwise make `restore` report a failure, or let a new request in).
pub(crate) async fn progress(store: &Store, request_id: &str) -> Result<Vec<RequestProgress>> {
    if !request_id_ok(request_id) {
        anyhow::bail!("{request_id:?} is not a request id");
    }
    let anchor = store.anchor()?;
    let dir = progress_dir(store, request_id);
    let objects: Vec<object_store::ObjectMeta> =
        store
            .inner
            .list(Some(&dir))
            .try_collect()
            .await
            .with_context(|| format!("listing {dir} in {}", store.describe))?;
    let now = time::OffsetDateTime::now_utc();
    let mut out = Vec::new();
    for o in objects {
        let Some(stem) = o.location.filename().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if o.size > signed::MAX_BYTES {
            continue;
        }
        let Ok(Some((bytes, _))) = store.get_bounded(&o.location, signed::MAX_BYTES).await else {
            continue;
        };
        match signed::open::<RequestProgress>(PROGRESS, &bytes, &anchor, now) {
            Ok(p) if p.member == stem => out.push(p),
            Ok(_) | Err(_) => {
                tracing::warn!(object = %o.location, "a restore progress note in the store is not signed by the member it names; ignored");
            }
        }
    }
    out.sort_by(|a, b| a.member.cmp(&b.member));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::restore::RequestMember;

    fn request(id: &str) -> FleetRequest {
        let members = (1..=3)
            .map(|i| RequestMember {
                name: format!("etcd{i}"),
                peer_url: format!("https://10.0.0.1{i}:2380"),
                client_url: format!("https://10.0.0.1{i}:2379"),
            })
            .collect();
        FleetRequest::new(
            "prod",
            id,
            "20261203T082500Z-r1204",
            "2026-12-03T15:00:00Z",
            "etcd1",
            0xabc,
            members,
        )
    }

    #[test]
    fn check_table() {
        let id = "20261203T150000Z-0a1b2c";
        assert_eq!(check(&request(id), "prod"), Ok(()));
        type Change = Box<dyn Fn(&mut FleetRequest)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|r| r.cluster = "staging".into()), "cluster"),
            (Box::new(|r| r.id = "../../x".into()), "request id"),
            (Box::new(|r| r.snapshot = "../snap".into()), "snapshot id"),
            (
                Box::new(|r| r.members[0].name = "a\nb".into()),
                "member name",
            ),
            (
                Box::new(|r| r.members[0].peer_url = "https://x:2380/path".into()),
                "https",
            ),
            (Box::new(|r| r.token = "prod-\n[Service]".into()), "token"),
            (Box::new(|r| r.from_cluster = None), "restores"),
        ];
        for (i, (change, why)) in cases.iter().enumerate() {
            let mut r = request(id);
            change(&mut r);
            let err = check(&r, "prod").unwrap_err();
            assert!(err.contains(why), "case {i}: {err}");
        }
    }

    #[test]
    fn request_ids() {
        assert!(request_id_ok("20261203T150000Z-0a1b2c"));
        for bad in [
            "",
            "20261203T150000Z-0a1b2",
            "20261203T150000Z-0a1b2C",
            "../../../etc/x",
            "20261203T150000Z-0a1b2c/..",
        ] {
            assert!(!request_id_ok(bad), "{bad}");
        }
    }
}
