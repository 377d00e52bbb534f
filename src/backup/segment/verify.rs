//! Verifying a whole chain (`verify_chain`, for `snapshot verify`): the base snapshot's bytes,
//! then each segment in revision order: its signed manifest, its place in the chain, its stored
//! bytes, and (when it can be read) its events. The first object that breaks the chain is named.

use super::chain::Link;
use super::format::decode;
use super::manifest::{read_manifest, SegmentManifest};
use super::names::{chain_dir, chain_objects, parse_id};
use crate::backup::manifest::Manifest;
use crate::backup::store::Store;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use ring::digest;
use std::collections::BTreeSet;
use std::path::Path;

/// Where a chain breaks: the object (a segment id, or the snapshot id) and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ChainBreak {
    pub object: String,
    pub why: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.why)
    }
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ChainReport {
    pub base: String,
    pub segments: usize,
    pub events: u64,
    /// The revisions covered: the base snapshot's, and the last segment's last.
    pub first_revision: i64,
    pub last_revision: i64,
}

fn brk(object: &str, why: String) -> ChainBreak {
    ChainBreak {
        object: object.to_string(),
        why,
    }
}

/// Download `path`, at most `limit` bytes: its bytes, `None` when it is not there.
async fn download(store: &Store, path: &ObjectPath, limit: u64) -> Result<Option<Vec<u8>>, String> {
    let r = match store.inner.get(path).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(format!("reading {path}: {e}")),
    };
    let mut body = r.into_stream();
    let mut out = vec![];
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("reading {path}: {e}"))?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(format!("{path} is larger than its signed manifest says"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// The SHA-256 and size of a stored object, streamed; `None` when it is not there.
async fn hash_object(store: &Store, path: &ObjectPath) -> Result<Option<(String, u64)>, String> {
    let r = match store.inner.get(path).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(format!("reading {path}: {e}")),
    };
    let mut body = r.into_stream();
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("reading {path}: {e}"))?;
        hash.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok(Some((crate::util::hex::hex(hash.finish().as_ref()), size)))
}

/// Walk the chain from the full snapshot `base` through every segment of it in the store, and
/// name the first object that breaks it: the base's stored bytes not matching its manifest; an
/// unsigned or untrusted segment manifest; a segment whose previous object is missing, or whose
/// previous hash does not match; a gap or an overlap in revisions; a data object missing or not
/// matching its manifest (a flipped byte); with `identity_file` (or unencrypted), a segment whose
/// events are not in its revisions.
pub(crate) async fn verify_chain(
    store: &Store,
    base: &Manifest,
    identity_file: Option<&Path>,
) -> Result<ChainReport, ChainBreak> {
    check_base(store, base).await?;
    let segments = signed_segments(store, base).await?;
    let ids: BTreeSet<&str> = segments.iter().map(|m| m.id.as_str()).collect();
    let mut link = Link::base(base);
    for m in &segments {
        check_previous(m, &link, &ids, &base.id)?;
        check_continues(m, &link)?;
        let path = chain_dir(store, &base.id).join(m.object.as_str());
        let bytes = check_stored_bytes(store, &path, m).await?;
        if !m.encrypted || identity_file.is_some() {
            check_events(m, &bytes, identity_file)?;
        }
        link = after(&link, m);
    }
    Ok(ChainReport {
        base: base.id.clone(),
        segments: link.segments,
        events: link.chain_events,
        first_revision: base.revision,
        last_revision: link.next_revision - 1,
    })
}

/// The base snapshot's stored bytes match its manifest.
async fn check_base(store: &Store, base: &Manifest) -> Result<(), ChainBreak> {
    match hash_object(store, &store.path(&base.object)).await {
        Ok(Some((sha, size))) if sha == base.sha256 && size == base.size => Ok(()),
        Ok(Some((sha, size))) => Err(brk(
            &base.id,
            format!("the snapshot's stored bytes do not match its manifest (sha256 {sha}, {size} bytes; the manifest says {}, {} bytes)", base.sha256, base.size),
        )),
        Ok(None) => Err(brk(&base.id, "the snapshot's data object is missing".into())),
        Err(e) => Err(brk(&base.id, e)),
    }
}

/// Every segment manifest in the chain's directory, each signed and checked, in revision order;
/// a manifest that is misnamed or not trusted breaks the chain.
async fn signed_segments(
    store: &Store,
    base: &Manifest,
) -> Result<Vec<SegmentManifest>, ChainBreak> {
    let objects = chain_objects(store, &base.id)
        .await
        .map_err(|e| brk(&base.id, format!("{e:#}")))?;
    let anchor = store
        .anchor()
        .map_err(|e| brk(&base.id, format!("{e:#}")))?;
    let now = time::OffsetDateTime::now_utc();
    let mut segments = vec![];
    for o in &objects {
        let Some(name) = o.location.filename() else {
            continue;
        };
        let Some(seg) = name.strip_suffix(".json") else {
            continue;
        };
        if let Err(why) = parse_id(seg) {
            return Err(brk(name, format!("not trusted: {why}")));
        }
        match read_manifest(store, &base.id, seg, &anchor, now).await {
            Ok(Some(m)) => segments.push(m),
            Ok(None) => {}
            Err(why) => return Err(brk(seg, format!("its manifest is not trusted: {why}"))),
        }
    }
    segments.sort_by_key(|m| (m.first_revision, m.last_revision));
    Ok(segments)
}

/// `m` names the end of the chain so far as its previous object. When it does not: the object it
/// names is missing from the store, or `m` overlaps, leaves a gap or forks.
fn check_previous(
    m: &SegmentManifest,
    link: &Link,
    ids: &BTreeSet<&str>,
    base_id: &str,
) -> Result<(), ChainBreak> {
    if m.previous == link.previous {
        return Ok(());
    }
    if !ids.contains(m.previous.as_str()) && m.previous != base_id {
        return Err(brk(
            &m.previous,
            format!("missing segment: {} names it as the previous object, but the store does not hold it", m.id),
        ));
    }
    let what = if m.first_revision < link.next_revision {
        "an overlap in revisions"
    } else if m.first_revision > link.next_revision {
        "a gap in revisions"
    } else {
        "a fork"
    };
    Err(brk(
        &m.id,
        format!(
            "{what}: it covers {}-{} after {}, but the chain holds up to {} and ends at {}",
            m.first_revision,
            m.last_revision,
            m.previous,
            link.next_revision - 1,
            link.previous
        ),
    ))
}

/// `m` goes on from the end of the chain so far: the previous object's hash, the next revision,
/// the chain's count of events.
fn check_continues(m: &SegmentManifest, link: &Link) -> Result<(), ChainBreak> {
    if m.previous_sha256 != link.previous_sha256 {
        return Err(brk(
            &m.id,
            format!(
                "the hash chain breaks: it gives {} the SHA-256 {}, but its own manifest says {}",
                m.previous, m.previous_sha256, link.previous_sha256
            ),
        ));
    }
    if m.first_revision > link.next_revision {
        return Err(brk(
            &m.id,
            format!(
                "a gap in revisions: it starts at {} but the chain ends at {}",
                m.first_revision,
                link.next_revision - 1
            ),
        ));
    }
    if m.first_revision < link.next_revision {
        return Err(brk(
            &m.id,
            format!(
                "an overlap in revisions: it starts at {} but the chain already holds up to {}",
                m.first_revision,
                link.next_revision - 1
            ),
        ));
    }
    if m.chain_events != link.chain_events + m.events {
        return Err(brk(
            &m.id,
            format!(
                "it counts {} events in the chain, but the chain before it holds {} and it {}",
                m.chain_events, link.chain_events, m.events
            ),
        ));
    }
    Ok(())
}

/// The data object of `m` at `path`: there, and its bytes the ones its signed manifest hashes.
async fn check_stored_bytes(
    store: &Store,
    path: &ObjectPath,
    m: &SegmentManifest,
) -> Result<Vec<u8>, ChainBreak> {
    let bytes = match download(store, path, m.size).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Err(brk(
                &m.id,
                format!("its data object {} is missing", m.object),
            ))
        }
        Err(e) => return Err(brk(&m.id, e)),
    };
    let sha = crate::util::hex::hex(digest::digest(&digest::SHA256, &bytes).as_ref());
    if sha != m.sha256 || bytes.len() as u64 != m.size {
        return Err(brk(
            &m.id,
            format!("its stored bytes do not match its signed manifest (sha256 {sha}, {} bytes; the manifest says {}, {} bytes)", bytes.len(), m.sha256, m.size),
        ));
    }
    Ok(bytes)
}

/// The events in `bytes` are the `m.events` of revisions `m.first_revision..=m.last_revision`,
/// in order, each in its revision, the last one last.
fn check_events(
    m: &SegmentManifest,
    bytes: &[u8],
    identity_file: Option<&Path>,
) -> Result<(), ChainBreak> {
    let revisions =
        decode(bytes, m.encrypted, identity_file).map_err(|e| brk(&m.id, format!("{e:#}")))?;
    let n: u64 = revisions.iter().map(|r| r.events.len() as u64).sum();
    let in_range = revisions.windows(2).all(|w| w[0].revision < w[1].revision)
        && revisions.iter().all(|r| {
            (m.first_revision..=m.last_revision).contains(&r.revision)
                && r.events.iter().all(|e| e.mod_revision() == r.revision)
        })
        && revisions.last().map(|r| r.revision) == Some(m.last_revision);
    if n != m.events || !in_range {
        return Err(brk(
            &m.id,
            format!(
                "its events ({n}) are not the {} of revisions {}-{} its manifest gives",
                m.events, m.first_revision, m.last_revision
            ),
        ));
    }
    Ok(())
}

/// The chain once `m` (checked) is added to it.
fn after(link: &Link, m: &SegmentManifest) -> Link {
    Link {
        base: link.base.clone(),
        previous: m.id.clone(),
        previous_sha256: m.sha256.clone(),
        next_revision: m.last_revision + 1,
        chain_events: m.chain_events,
        segments: link.segments + 1,
        newest_segment: Some(m.created.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::segment::fixture::{del, fixture, put, ChainFixture};
    use crate::backup::segment::format::Revision;
    use crate::backup::segment::manifest::KIND;
    use crate::backup::segment::{delete_chain, group, tail, upload};
    use crate::backup::signed::{self, tests::Pki};

    #[tokio::test]
    async fn a_chain_verifies_and_reads_back() {
        let f = fixture().await;
        let report = verify_chain(&f.store, &f.base, Some(&f.identity))
            .await
            .unwrap();
        assert_eq!(
            report,
            ChainReport {
                base: f.base.id.clone(),
                segments: 3,
                events: 6,
                first_revision: 10,
                last_revision: 15,
            }
        );
        // Resuming goes by the store: the next segment starts at 16, after the third.
        let link = tail(&f.store, &f.base).await.unwrap();
        assert_eq!(link.next_revision, 16);
        assert_eq!(link.previous, f.segments[2].id);
        assert_eq!(link.previous_sha256, f.segments[2].sha256);
        assert_eq!(link.chain_events, 6);
        assert_eq!(link.segments, 3);
        // The chain: each names the one before and its hash.
        assert_eq!(f.segments[0].previous, f.base.id);
        assert_eq!(f.segments[0].previous_sha256, f.base.sha256);
        assert_eq!(f.segments[1].previous, f.segments[0].id);
        assert_eq!(f.segments[1].previous_sha256, f.segments[0].sha256);
        assert_eq!(
            (f.segments[0].first_revision, f.segments[0].last_revision),
            (11, 12)
        );
        // The stored bytes are age ciphertext, and decode to the events, grouped by revision.
        let stored = std::fs::read(f.seg_path(&f.segments[0], "{}.seg.age")).unwrap();
        assert!(stored.starts_with(b"age-encryption.org/v1"));
        let revs = decode(&stored, true, Some(&f.identity)).unwrap();
        assert_eq!(
            revs,
            vec![
                Revision {
                    revision: 11,
                    events: vec![put(b"/a", b"1", 11, 0)]
                },
                Revision {
                    revision: 12,
                    events: vec![put(b"/b", &[0, 255, 10, 13], 12, 0x1234), del(b"/a", 12)]
                },
            ]
        );
        // Without the identity: the structure and hashes are still checked.
        verify_chain(&f.store, &f.base, None).await.unwrap();
        // Retention: the chain goes with its snapshot, manifests and data objects.
        let f2 = fixture().await;
        assert_eq!(delete_chain(&f2.store, &f2.base.id).await.unwrap(), 6);
        assert_eq!(
            tail(&f2.store, &f2.base).await.unwrap(),
            Link::base(&f2.base)
        );
        // Out of order or before the chain's next revision: refused, nothing uploaded.
        let link = tail(&f.store, &f.base).await.unwrap();
        let r = std::slice::from_ref(&f.recipient);
        for bad in [
            vec![put(b"/x", b"", 15, 0)],
            vec![put(b"/x", b"", 17, 0), put(b"/y", b"", 16, 0)],
            vec![],
        ] {
            assert!(upload(&f.store, r, &link, &group(bad)).await.is_err());
        }
        assert_eq!(tail(&f.store, &f.base).await.unwrap(), link);
    }

    /// Each way a chain can break is named, with the object that breaks it.
    #[tokio::test]
    async fn a_broken_chain_names_the_object() {
        type Break =
            fn(&ChainFixture) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>;
        // (what is done to the store, the object named, why)
        let cases: Vec<(&str, Break, usize, &str)> = vec![
            (
                "flipped byte in a segment",
                |f| {
                    Box::pin(async move {
                        let p = f.seg_path(&f.segments[1], "{}.seg.age");
                        let mut b = std::fs::read(&p).unwrap();
                        let mid = b.len() / 2;
                        b[mid] ^= 1;
                        std::fs::write(&p, b).unwrap();
                    })
                },
                1,
                "do not match its signed manifest",
            ),
            (
                "missing segment",
                |f| {
                    Box::pin(async move {
                        std::fs::remove_file(f.seg_path(&f.segments[1], "{}.seg.age")).unwrap();
                        std::fs::remove_file(f.seg_path(&f.segments[1], "{}.json")).unwrap();
                    })
                },
                1,
                "missing segment",
            ),
            (
                "missing data object",
                |f| {
                    Box::pin(async move {
                        std::fs::remove_file(f.seg_path(&f.segments[2], "{}.seg.age")).unwrap();
                    })
                },
                2,
                "is missing",
            ),
            (
                "gap",
                |f| {
                    Box::pin(async move {
                        let mut link = tail(&f.store, &f.base).await.unwrap();
                        link.next_revision += 2;
                        upload(
                            &f.store,
                            std::slice::from_ref(&f.recipient),
                            &link,
                            &group(vec![put(b"/g", b"", 18, 0)]),
                        )
                        .await
                        .unwrap();
                    })
                },
                3,
                "a gap in revisions",
            ),
            (
                "overlap",
                |f| {
                    Box::pin(async move {
                        let mut link = tail(&f.store, &f.base).await.unwrap();
                        link.next_revision -= 1;
                        upload(
                            &f.store,
                            std::slice::from_ref(&f.recipient),
                            &link,
                            &group(vec![put(b"/o", b"", 16, 0)]),
                        )
                        .await
                        .unwrap();
                    })
                },
                3,
                "an overlap in revisions",
            ),
            (
                "unsigned manifest",
                |f| {
                    Box::pin(async move {
                        let p = f.seg_path(&f.segments[1], "{}.json");
                        std::fs::write(&p, serde_json::to_vec(&f.segments[1]).unwrap()).unwrap();
                    })
                },
                1,
                "not trusted",
            ),
            (
                "manifest signed under another CA",
                |f| {
                    Box::pin(async move {
                        let other = Pki::new();
                        let p = f.seg_path(&f.segments[1], "{}.json");
                        let sealed =
                            signed::seal(KIND, &f.segments[1], &other.member("etcd1")).unwrap();
                        std::fs::write(&p, sealed).unwrap();
                    })
                },
                1,
                "not signed by the CA",
            ),
            (
                "manifest changed after signing",
                |f| {
                    Box::pin(async move {
                        let p = f.seg_path(&f.segments[1], "{}.json");
                        let text = std::fs::read_to_string(&p).unwrap();
                        let changed = text.replace(&f.segments[1].sha256, &"0".repeat(64));
                        std::fs::write(&p, changed).unwrap();
                    })
                },
                1,
                "not trusted",
            ),
            (
                "hash chain",
                |f| {
                    Box::pin(async move {
                        let mut link = tail(&f.store, &f.base).await.unwrap();
                        link.previous_sha256 = "0".repeat(64);
                        upload(
                            &f.store,
                            std::slice::from_ref(&f.recipient),
                            &link,
                            &group(vec![put(b"/h", b"", 16, 0)]),
                        )
                        .await
                        .unwrap();
                    })
                },
                3,
                "the hash chain breaks",
            ),
            (
                "flipped byte in the base snapshot",
                |f| {
                    Box::pin(async move {
                        let p = f.root.join("prod").join(&f.base.object);
                        let mut b = std::fs::read(&p).unwrap();
                        b[0] ^= 1;
                        std::fs::write(&p, b).unwrap();
                    })
                },
                usize::MAX,
                "do not match its manifest",
            ),
        ];
        for (what, change, object, why) in cases {
            let f = fixture().await;
            change(&f).await;
            let err = verify_chain(&f.store, &f.base, Some(&f.identity))
                .await
                .unwrap_err();
            let named = if object == usize::MAX {
                f.base.id.clone()
            } else if object < f.segments.len() {
                f.segments[object].id.clone()
            } else {
                // The segment the change uploaded: the newest in the chain's directory.
                let mut names: Vec<String> =
                    std::fs::read_dir(f.root.join("prod/segments").join(&f.base.id))
                        .unwrap()
                        .filter_map(|e| {
                            e.unwrap()
                                .file_name()
                                .to_str()?
                                .strip_suffix(".json")
                                .map(String::from)
                        })
                        .filter(|n| !f.segments.iter().any(|s| &s.id == n))
                        .collect();
                assert_eq!(names.len(), 1, "{what}");
                names.pop().unwrap()
            };
            assert_eq!(err.object, named, "{what}: {err}");
            assert!(err.why.contains(why), "{what}: {err}");
            let _ = &f.pki;
        }
    }
}
