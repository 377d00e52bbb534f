//! Delta segments: every change to the keyspace between two full snapshots, uploaded every few
//! seconds, so that a total loss costs seconds of writes instead of a whole `backup.interval`.
//!
//! A segment's data object holds, in revision order, each revision's events (puts with key, value,
//! lease, create/mod revision and version; deletes), one JSON line per revision after a magic line,
//! encrypted to the same age recipients as full snapshots and streamed into a multipart upload.
//! Its manifest, a signed envelope like a snapshot's (`signed`), is written last: a segment without
//! one does not exist. Each manifest names the revisions it covers, `first_revision` to
//! `last_revision` (every event of those revisions is in it: the watch that filled it started at
//! `first_revision`), the object before it in the chain (the full snapshot it extends, or the
//! segment before) and that object's SHA-256: a hash chain back to the full snapshot.
//!
//! Layout: `<cluster dir>/segments/<snapshot id>/<segment id>.json` and `.seg[.age]`, below the
//! cluster's directory, so the snapshot catalog (which lists its directory only) never sees them,
//! and retention deletes a chain with the snapshot it extends. Segment ids are
//! `<UTC time>-r<first revision>-<last revision>`, as strict as snapshot ids.

use super::manifest::{self, Manifest};
use super::signed;
use super::snapshotter::{complete_upload, Encoder, CHUNK, IN_FLIGHT};
use super::store::{ReadError, Store};
use anyhow::{bail, Context, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use ring::digest;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// The kind of signed object a segment's manifest is.
pub const KIND: &str = "segment-manifest";

/// The first line of a segment's plain text: what it is and the version of its format.
pub const MAGIC: &[u8] = b"etcd-bootstrap segment v1\n";

/// Keys and values are bytes to etcd: base64 in the JSON lines.
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// One change to the keyspace, as etcd's watch reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Put {
        #[serde(with = "b64")]
        key: Vec<u8>,
        #[serde(with = "b64")]
        value: Vec<u8>,
        /// The lease the key is attached to (0: none).
        lease: i64,
        create_revision: i64,
        mod_revision: i64,
        version: i64,
    },
    Delete {
        #[serde(with = "b64")]
        key: Vec<u8>,
        mod_revision: i64,
    },
}

impl Event {
    /// Bytes of key and value: what `backup.delta_max_bytes` counts.
    pub fn bytes(&self) -> usize {
        match self {
            Event::Put { key, value, .. } => key.len() + value.len(),
            Event::Delete { key, .. } => key.len(),
        }
    }

    pub fn mod_revision(&self) -> i64 {
        match self {
            Event::Put { mod_revision, .. } | Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// Every event of one revision (etcd applies them as one transaction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    pub revision: i64,
    pub events: Vec<Event>,
}

/// Events in watch order as revisions, each revision's events together.
pub fn group(events: Vec<Event>) -> Vec<Revision> {
    let mut out: Vec<Revision> = vec![];
    for e in events {
        let rev = e.mod_revision();
        match out.last_mut() {
            Some(last) if last.revision == rev => last.events.push(e),
            _ => out.push(Revision {
                revision: rev,
                events: vec![e],
            }),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentManifest {
    /// `<UTC time>-r<first>-<last>`, also the name of this manifest without `.json`.
    pub id: String,
    /// The full snapshot this segment's chain extends.
    pub base: String,
    /// The data object's name, beside the manifest.
    pub object: String,
    /// SHA-256 of the stored bytes (ciphertext when encrypted).
    pub sha256: String,
    pub size: u64,
    /// Every event of these revisions, and no other, is in the segment.
    pub first_revision: i64,
    pub last_revision: i64,
    /// Events in this segment, and in the chain up to and including it.
    pub events: u64,
    pub chain_events: u64,
    /// The object before this one in the chain (the base snapshot's id or a segment's id), and
    /// the SHA-256 of its stored bytes as its own signed manifest gives it.
    pub previous: String,
    pub previous_sha256: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The agent that uploaded it: the member whose key signed this manifest.
    pub taken_by: String,
    pub encrypted: bool,
    pub cluster: String,
}

impl signed::Payload for SegmentManifest {
    fn signer(&self) -> &str {
        &self.taken_by
    }
    fn signed_at(&self) -> Option<time::OffsetDateTime> {
        signed::parse_time(&self.created)
    }
}

fn is_sha256(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl SegmentManifest {
    /// Everything a signed segment manifest must also be: stored under its id, in its base's
    /// directory, its object named from its id, its id agreeing with its time and revisions, of
    /// this cluster, hashes of the right form.
    pub fn check(&self, stored_as: &str, base: &str, cluster: &str) -> Result<(), String> {
        let (stamp, first, last) = parse_id(&self.id)?;
        if self.id != stored_as {
            return Err(format!(
                "it names segment {:?} but is stored as {stored_as:?}",
                self.id
            ));
        }
        if self.base != base {
            return Err(format!(
                "it extends snapshot {:?} but is stored under {base:?}",
                self.base
            ));
        }
        if self.object != object_name(&self.id, self.encrypted) {
            return Err(format!(
                "its data object {:?} is not the one its id names",
                self.object
            ));
        }
        let created = signed::parse_time(&self.created)
            .ok_or_else(|| format!("created {:?} is not RFC 3339", self.created))?;
        if crate::util::time::utc_stamp(created) != stamp
            || first != self.first_revision
            || last != self.last_revision
        {
            return Err(format!(
                "its id {} does not match its time {} and revisions {}-{}",
                self.id, self.created, self.first_revision, self.last_revision
            ));
        }
        if self.cluster != cluster {
            return Err(format!(
                "it is a segment of cluster {:?}, not {cluster:?}",
                self.cluster
            ));
        }
        if parse_id(&self.previous).is_err() && manifest::parse_id(&self.previous).is_err() {
            return Err(format!(
                "its previous object {:?} is neither a snapshot nor a segment id",
                self.previous
            ));
        }
        for (what, h) in [
            ("sha256", &self.sha256),
            ("previous_sha256", &self.previous_sha256),
        ] {
            if !is_sha256(h) {
                return Err(format!("its {what} is not a SHA-256 in hex"));
            }
        }
        if self.events == 0 || self.chain_events < self.events || self.size == 0 {
            return Err(format!(
                "{} events ({} in the chain) in {} bytes is not a segment",
                self.events, self.chain_events, self.size
            ));
        }
        Ok(())
    }
}

/// A segment id's parts, when `id` is exactly `YYYYMMDDTHHMMSSZ-r<first>-<last>` with a real UTC
/// time and `first <= last`, nothing else.
pub fn parse_id(id: &str) -> Result<(&str, i64, i64), String> {
    let bad = || format!("{id:?} is not a segment id (YYYYMMDDTHHMMSSZ-r<first>-<last>)");
    let (head, last) = id.rsplit_once('-').ok_or_else(bad)?;
    let (stamp, first) = manifest::parse_id(head).map_err(|_| bad())?;
    if last.is_empty() || last.len() > 19 || !last.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let last: i64 = last.parse().map_err(|_| bad())?;
    if first < 1 || last < first {
        return Err(bad());
    }
    Ok((stamp, first, last))
}

pub fn id(t: time::OffsetDateTime, first: i64, last: i64) -> String {
    format!("{}-r{first}-{last}", crate::util::time::utc_stamp(t))
}

pub fn object_name(id: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{id}.seg.age")
    } else {
        format!("{id}.seg")
    }
}

/// `<cluster dir>/segments/<base>`: the segments of the chain that extends snapshot `base`.
pub fn chain_dir(store: &Store, base: &str) -> ObjectPath {
    store.path("segments").join(base)
}

/// Where a chain ends, as the store says: what the next segment must name and start at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
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
    pub fn base(m: &Manifest) -> Link {
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

/// Every object name directly in the chain directory of `base`.
async fn chain_objects(store: &Store, base: &str) -> Result<Vec<object_store::ObjectMeta>> {
    let dir = chain_dir(store, base);
    let depth = dir.parts().count() + 1;
    let all: Vec<object_store::ObjectMeta> = store
        .inner
        .list(Some(&dir))
        .try_collect()
        .await
        .with_context(|| format!("listing {dir} in {}", store.describe))?;
    Ok(all
        .into_iter()
        .filter(|o| o.location.parts().count() == depth)
        .collect())
}

/// Read and check the signed manifest of segment `seg` of chain `base`.
async fn read_manifest(
    store: &Store,
    base: &str,
    seg: &str,
    anchor: &crate::tls::signature::TrustAnchor,
    now: time::OffsetDateTime,
) -> Result<Option<SegmentManifest>, String> {
    let path = chain_dir(store, base).join(format!("{seg}.json"));
    let bytes = match store.get_bounded(&path, signed::MAX_BYTES).await {
        Ok(Some((b, _))) => b,
        Ok(None) => return Ok(None),
        Err(ReadError::TooLarge(_)) => return Err("too large to be a manifest; not read".into()),
        Err(ReadError::Failed(e)) => return Err(format!("{e:#}")),
    };
    signed::open(KIND, &bytes, anchor, now)
        .and_then(|m: SegmentManifest| m.check(seg, base, &store.cluster).map(|_| m))
        .map(Some)
}

/// Where the chain of `base` ends, by what the store holds: its newest segment whose signed
/// manifest checks out (untrusted ones are skipped, and logged), else the base itself. Only the
/// newest manifest is read, so this stays cheap however long the chain is.
pub async fn tail(store: &Store, base: &Manifest) -> Result<Link> {
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
pub async fn delete_chain(store: &Store, base: &str) -> Result<usize> {
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

/// Upload `revisions` (ascending, all at or after `link.next_revision`, not empty) as the next
/// segment of the chain that ends at `link`: the data object streamed first, its signed
/// manifest last. Returns the manifest.
pub async fn upload(
    store: &Store,
    recipients: &[String],
    link: &Link,
    revisions: &[Revision],
) -> Result<SegmentManifest> {
    let key = store.signing_key()?;
    let Some(last) = revisions.last().map(|r| r.revision) else {
        bail!("a segment needs at least one event");
    };
    if revisions.first().map(|r| r.revision) < Some(link.next_revision)
        || revisions.windows(2).any(|w| w[0].revision >= w[1].revision)
    {
        bail!(
            "segment events out of order or before revision {} (the chain's next); not uploaded",
            link.next_revision
        );
    }
    let events: u64 = revisions.iter().map(|r| r.events.len() as u64).sum();
    let created = time::OffsetDateTime::now_utc();
    let id = id(created, link.next_revision, last);
    let encrypted = !recipients.is_empty();
    let object_name = object_name(&id, encrypted);
    let dir = chain_dir(store, &link.base);
    let object = dir.clone().join(object_name.as_str());
    let upload = store
        .inner
        .put_multipart(&object)
        .await
        .with_context(|| format!("starting the upload of {object} to {}", store.describe))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
    let streamed = async {
        let mut enc = Encoder::new(recipients)?;
        let mut hash = digest::Context::new(&digest::SHA256);
        let mut size = 0u64;
        let mut line = MAGIC.to_vec();
        let mut iter = revisions.iter();
        loop {
            let out = enc.write(&line)?;
            hash.update(&out);
            size += out.len() as u64;
            writer.write(&out);
            writer
                .wait_for_capacity(IN_FLIGHT)
                .await
                .context("uploading a part")?;
            match iter.next() {
                Some(r) => {
                    line = serde_json::to_vec(r)?;
                    line.push(b'\n');
                }
                None => break,
            }
        }
        let out = enc.finish()?;
        hash.update(&out);
        size += out.len() as u64;
        writer.write(&out);
        writer
            .wait_for_capacity(0)
            .await
            .context("uploading the last parts")?;
        anyhow::Ok((crate::util::hex::hex(hash.finish().as_ref()), size))
    }
    .await;
    let (sha256, size) = complete_upload(writer, streamed, &object).await?;
    let m = SegmentManifest {
        id: id.clone(),
        base: link.base.clone(),
        object: object_name,
        sha256,
        size,
        first_revision: link.next_revision,
        last_revision: last,
        events,
        chain_events: link.chain_events + events,
        previous: link.previous.clone(),
        previous_sha256: link.previous_sha256.clone(),
        created: manifest::rfc3339(created),
        taken_by: key.name().to_string(),
        encrypted,
        cluster: store.cluster.clone(),
    };
    let text = signed::seal(KIND, &m, &key)?;
    let path = dir.join(format!("{id}.json"));
    store
        .inner
        .put(&path, PutPayload::from(text))
        .await
        .with_context(|| format!("writing the segment manifest {path}"))?;
    Ok(m)
}

/// The revisions in a segment's stored bytes (decrypted with `identity_file` when encrypted).
pub fn decode(
    stored: &[u8],
    encrypted: bool,
    identity_file: Option<&Path>,
) -> Result<Vec<Revision>> {
    let plain = if encrypted {
        let identity_file =
            identity_file.context("the segment is encrypted: set backup.age_identity_file")?;
        let identities = age::IdentityFile::from_file(identity_file.display().to_string())
            .with_context(|| format!("reading {}", identity_file.display()))?
            .into_identities()
            .with_context(|| format!("{} holds no usable identity", identity_file.display()))?;
        let decryptor = age::Decryptor::new_buffered(stored).context("not an age file")?;
        let mut reader = decryptor
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .context(
                "decrypting (is backup.age_identity_file the key of one of the recipients?)",
            )?;
        let mut out = vec![];
        reader.read_to_end(&mut out).context("decrypting")?;
        out
    } else {
        stored.to_vec()
    };
    let body = plain
        .strip_prefix(MAGIC)
        .context("not a segment of this format (its first line is not the segment magic)")?;
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_slice(l).with_context(|| format!("revision line {}", i + 1)))
        .collect()
}

/// Where a chain breaks: the object (a segment id, or the snapshot id) and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainBreak {
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
pub struct ChainReport {
    pub base: String,
    pub segments: usize,
    pub events: u64,
    /// The revisions covered: the base snapshot's, and the last segment's last.
    pub first_revision: i64,
    pub last_revision: i64,
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
pub async fn verify_chain(
    store: &Store,
    base: &Manifest,
    identity_file: Option<&Path>,
) -> Result<ChainReport, ChainBreak> {
    let brk = |object: &str, why: String| ChainBreak {
        object: object.to_string(),
        why,
    };
    match hash_object(store, &store.path(&base.object)).await {
        Ok(Some((sha, size))) if sha == base.sha256 && size == base.size => {}
        Ok(Some((sha, size))) => {
            return Err(brk(
                &base.id,
                format!("the snapshot's stored bytes do not match its manifest (sha256 {sha}, {size} bytes; the manifest says {}, {} bytes)", base.sha256, base.size),
            ))
        }
        Ok(None) => return Err(brk(&base.id, "the snapshot's data object is missing".into())),
        Err(e) => return Err(brk(&base.id, e)),
    }
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
    let ids: std::collections::BTreeSet<&str> = segments.iter().map(|m| m.id.as_str()).collect();
    let mut link = Link::base(base);
    for m in &segments {
        if m.previous != link.previous {
            if !ids.contains(m.previous.as_str()) && m.previous != base.id {
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
            return Err(brk(
                &m.id,
                format!(
                    "{what}: it covers {}-{} after {}, but the chain holds up to {} and ends at {}",
                    m.first_revision,
                    m.last_revision,
                    m.previous,
                    link.next_revision - 1,
                    link.previous
                ),
            ));
        }
        if m.previous_sha256 != link.previous_sha256 {
            return Err(brk(
                &m.id,
                format!("the hash chain breaks: it gives {} the SHA-256 {}, but its own manifest says {}", m.previous, m.previous_sha256, link.previous_sha256),
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
        let path = chain_dir(store, &base.id).join(m.object.as_str());
        let bytes = match download(store, &path, m.size).await {
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
        if !m.encrypted || identity_file.is_some() {
            let revisions = decode(&bytes, m.encrypted, identity_file)
                .map_err(|e| brk(&m.id, format!("{e:#}")))?;
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
        }
        link = Link {
            base: base.id.clone(),
            previous: m.id.clone(),
            previous_sha256: m.sha256.clone(),
            next_revision: m.last_revision + 1,
            chain_events: m.chain_events,
            segments: link.segments + 1,
            newest_segment: Some(m.created.clone()),
        };
    }
    Ok(ChainReport {
        base: base.id.clone(),
        segments: link.segments,
        events: link.chain_events,
        first_revision: base.revision,
        last_revision: link.next_revision - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::signed::tests::Pki;
    use age::secrecy::ExposeSecret;

    fn put(key: &[u8], value: &[u8], rev: i64, lease: i64) -> Event {
        Event::Put {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            create_revision: rev,
            mod_revision: rev,
            version: 1,
        }
    }

    fn del(key: &[u8], rev: i64) -> Event {
        Event::Delete {
            key: key.to_vec(),
            mod_revision: rev,
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        pki: Pki,
        store: Store,
        identity: std::path::PathBuf,
        recipient: String,
        base: Manifest,
        segments: Vec<SegmentManifest>,
    }

    impl Fixture {
        fn seg_path(&self, m: &SegmentManifest, name: &str) -> std::path::PathBuf {
            self.root
                .join("prod/segments")
                .join(&self.base.id)
                .join(name.replace("{}", &m.id))
        }
    }

    /// A signed full snapshot at revision 10 and three encrypted segments: 11-12, 13, 14-15.
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let pki = Pki::new();
        let store =
            crate::backup::store::local_for_test(&root, "prod", pki.member_material("etcd1"));
        let key = age::x25519::Identity::generate();
        let identity = root.join("identity.txt");
        std::fs::write(&identity, format!("{}\n", key.to_string().expose_secret())).unwrap();
        let recipient = key.to_public().to_string();

        let now = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
        let base_id = manifest::id(now, 10);
        let data = b"a full snapshot, as far as the chain is concerned".to_vec();
        let base = Manifest {
            id: base_id.clone(),
            object: manifest::object_name(&base_id, true),
            sha256: crate::util::sha256::sha256_hex(&data),
            etcd_sha256: "b".repeat(64),
            size: data.len() as u64,
            db_size: 1024 + 32,
            revision: 10,
            cluster_id: "1234".into(),
            member_count: 3,
            etcd_version: "3.5.30".into(),
            created: manifest::rfc3339(now),
            taken_from: "https://10.0.0.1:2379".into(),
            taken_by: "etcd1".into(),
            encrypted: true,
            cluster: "prod".into(),
        };
        store
            .inner
            .put(&store.path(&base.object), PutPayload::from(data))
            .await
            .unwrap();
        let sealed = signed::seal(manifest::KIND, &base, &pki.member("etcd1")).unwrap();
        store
            .inner
            .put(
                &store.path(&manifest::manifest_name(&base_id)),
                PutPayload::from(sealed),
            )
            .await
            .unwrap();
        let batches = vec![
            vec![
                put(b"/a", b"1", 11, 0),
                put(b"/b", &[0, 255, 10, 13], 12, 0x1234),
                del(b"/a", 12),
            ],
            vec![put(b"\xff\x00binary key", b"2", 13, 0)],
            vec![del(b"/b", 14), put(b"/c", &vec![7u8; 100_000], 15, 0)],
        ];
        let mut segments = vec![];
        for b in batches {
            let link = tail(&store, &base).await.unwrap();
            segments.push(
                upload(&store, std::slice::from_ref(&recipient), &link, &group(b))
                    .await
                    .unwrap(),
            );
        }
        Fixture {
            _dir: dir,
            root,
            pki,
            store,
            identity,
            recipient,
            base,
            segments,
        }
    }

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
        type Break = fn(&Fixture) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>;
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

    #[test]
    fn only_strict_segment_ids_parse() {
        assert_eq!(
            parse_id("20261203T082500Z-r11-15"),
            Ok(("20261203T082500Z", 11, 15))
        );
        for bad in [
            "",
            "20261203T082500Z-r11",
            "20261203T082500Z-r15-11",
            "20261203T082500Z-r0-1",
            "20261203T082500Z-r11-15.json",
            "20261203T082500Z-r11-15/..",
            "../20261203T082500Z-r11-15",
            "20261203T082500Z-r11-",
            "20261203T082500Z-r11-+5",
            "20261303T082500Z-r11-15",
            "20261203T082500Z-r11-1234567890123456789012",
        ] {
            assert!(parse_id(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn check_refuses_what_does_not_agree() {
        let good = SegmentManifest {
            id: "20261203T082500Z-r11-15".into(),
            base: "20261203T080000Z-r10".into(),
            object: "20261203T082500Z-r11-15.seg.age".into(),
            sha256: "a".repeat(64),
            size: 100,
            first_revision: 11,
            last_revision: 15,
            events: 5,
            chain_events: 5,
            previous: "20261203T080000Z-r10".into(),
            previous_sha256: "b".repeat(64),
            created: "2026-12-03T08:25:00Z".into(),
            taken_by: "etcd1".into(),
            encrypted: true,
            cluster: "prod".into(),
        };
        let (id, base) = ("20261203T082500Z-r11-15", "20261203T080000Z-r10");
        assert_eq!(good.check(id, base, "prod"), Ok(()));
        type Change = fn(&mut SegmentManifest);
        let cases: Vec<(Change, &str)> = vec![
            (|m| m.base = "20261203T070000Z-r9".into(), "extends"),
            (|m| m.object = "../../x".into(), "data object"),
            (|m| m.last_revision = 16, "does not match"),
            (|m| m.cluster = "staging".into(), "not \"prod\""),
            (|m| m.previous = "../x".into(), "previous object"),
            (|m| m.previous_sha256 = "x".into(), "previous_sha256"),
            (|m| m.events = 0, "not a segment"),
            (|m| m.id = "20261203T082500Z-r11-16".into(), "stored as"),
        ];
        for (i, (change, why)) in cases.into_iter().enumerate() {
            let mut m = good.clone();
            change(&mut m);
            let err = m.check(id, base, "prod").unwrap_err();
            assert!(err.contains(why), "case {i}: {err}");
        }
    }

    #[test]
    fn events_group_by_revision() {
        let g = group(vec![
            put(b"a", b"", 3, 0),
            del(b"b", 3),
            put(b"c", b"", 4, 0),
        ]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].events.len(), 2);
        assert_eq!(g[1].revision, 4);
    }
}
