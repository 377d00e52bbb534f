//! Taking one snapshot: etcd's snapshot stream -> (age encryption) -> multipart upload, with flat
//! memory whatever the database size, then the manifest. etcd appends the SHA-256 of the
//! database as the stream's last 32 bytes; it is checked before the upload is completed, and any
//! failure aborts the upload, so no object that looks valid is left behind. The stored bytes are
//! the whole stream, trailer included, as `etcdctl snapshot save` writes it, so `etcdutl snapshot
//! restore` checks the hash again.

use super::manifest::{self, Manifest};
use super::store::Store;
use crate::etcd::client;
use crate::tls::ClientMaterial;
use anyhow::{bail, Context, Result};
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use ring::digest;
use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Parts of 5 MiB (S3's minimum), at most two in flight: memory stays near 15 MiB.
pub(super) const CHUNK: usize = 5 * 1024 * 1024;
pub(super) const IN_FLIGHT: usize = 2;
/// A stream that sends nothing for this long is given up.
const STALL: Duration = Duration::from_secs(30);

/// Complete a streamed multipart upload; when streaming failed, abort it instead, so that the
/// store keeps no orphaned parts, and return the streaming error.
pub(super) async fn complete_upload<T>(
    writer: WriteMultipart,
    streamed: Result<T>,
    object: &object_store::path::Path,
) -> Result<T> {
    let value = match streamed {
        Ok(v) => v,
        Err(e) => {
            if let Err(a) = writer.abort().await {
                tracing::warn!(error = %a, object = %object, "aborting the upload failed; the store may keep orphaned parts");
            }
            return Err(e);
        }
    };
    writer
        .finish()
        .await
        .with_context(|| format!("completing the upload of {object}"))?;
    Ok(value)
}

/// Bytes the encryptor has written, drained after every write.
#[derive(Clone, Default)]
pub(super) struct Drain(Arc<Mutex<Vec<u8>>>);

impl Write for Drain {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drain {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("poisoned"))
    }
}

/// The age encryption of a stream (or none, without recipients).
enum Encoder {
    Plain,
    Age(age::stream::StreamWriter<Drain>, Drain),
}

impl Encoder {
    fn new(recipients: &[String]) -> Result<Self> {
        let drain = Drain::default();
        if recipients.is_empty() {
            return Ok(Encoder::Plain);
        }
        let parsed: Vec<age::x25519::Recipient> = recipients
            .iter()
            .map(|r| {
                age::x25519::Recipient::from_str(r)
                    .map_err(|e| anyhow::anyhow!("backup.age_recipients: {r:?}: {e}"))
            })
            .collect::<Result<_>>()?;
        let encryptor =
            age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
                .context("setting up age encryption")?;
        let writer = encryptor
            .wrap_output(drain.clone())
            .context("starting age encryption")?;
        Ok(Encoder::Age(writer, drain))
    }

    fn write(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        match self {
            Encoder::Plain => Ok(data.to_vec()),
            Encoder::Age(w, d) => {
                w.write_all(data).context("encrypting")?;
                Ok(d.take())
            }
        }
    }

    fn finish(self) -> Result<Vec<u8>> {
        match self {
            Encoder::Plain => Ok(vec![]),
            Encoder::Age(w, d) => {
                w.finish().context("finishing age encryption")?;
                Ok(d.take())
            }
        }
    }
}

/// A stream encrypted to the recipients (if any) into a multipart upload, with at most
/// `IN_FLIGHT` parts in flight (flat memory whatever its size); it hashes and counts the bytes
/// stored. Snapshots and delta segments are both written through it.
pub(super) struct SealedUpload<'w> {
    writer: &'w mut WriteMultipart,
    enc: Encoder,
    hash: digest::Context,
    size: u64,
}

impl<'w> SealedUpload<'w> {
    pub(super) fn new(writer: &'w mut WriteMultipart, recipients: &[String]) -> Result<Self> {
        Ok(SealedUpload {
            writer,
            enc: Encoder::new(recipients)?,
            hash: digest::Context::new(&digest::SHA256),
            size: 0,
        })
    }

    fn store(&mut self, out: &[u8]) {
        self.hash.update(out);
        self.size += out.len() as u64;
        self.writer.write(out);
    }

    /// Encrypt `plain` and hand it to the upload, waiting while `IN_FLIGHT` parts are on the way.
    pub(super) async fn write(&mut self, plain: &[u8]) -> Result<()> {
        let out = self.enc.write(plain)?;
        self.store(&out);
        self.writer
            .wait_for_capacity(IN_FLIGHT)
            .await
            .context("uploading a part")
    }

    /// End the encryption and wait for every part: the SHA-256 (hex) and size of what is stored.
    pub(super) async fn finish(mut self) -> Result<(String, u64)> {
        let out = std::mem::replace(&mut self.enc, Encoder::Plain).finish()?;
        self.store(&out);
        self.writer
            .wait_for_capacity(0)
            .await
            .context("uploading the last parts")?;
        Ok((
            crate::util::hex::hex(self.hash.finish().as_ref()),
            self.size,
        ))
    }
}

/// Where the snapshot comes from (the manifest names the member whose key signs it as the one
/// that took it).
pub(crate) struct SnapshotSource<'a> {
    pub endpoint: &'a str,
    pub material: &'a ClientMaterial,
}

/// Take a snapshot through `src.endpoint` and store it; returns its manifest.
pub(crate) async fn take(
    store: &Store,
    recipients: &[String],
    src: &SnapshotSource<'_>,
) -> Result<Manifest> {
    // Before anything is streamed: a snapshot this node cannot sign would never be used.
    let key = store.signing_key()?;
    let (mut c, me) = client::who_is(src.endpoint, src.material).await?;
    if me.is_learner {
        bail!(
            "{} is a learner; snapshots are taken from voting members only",
            src.endpoint
        );
    }
    let status = client::bounded("Maintenance.Status", client::PROBE_TIMEOUT, c.status()).await?;
    let members =
        client::bounded("Cluster.MemberList", client::PROBE_TIMEOUT, c.member_list()).await?;
    let mut stream =
        client::bounded("Maintenance.Snapshot", client::PROBE_TIMEOUT, c.snapshot()).await?;
    let first = next(&mut stream)
        .await?
        .context("etcd sent an empty snapshot stream")?;
    // etcd leaves the snapshot stream's header revision at 0: the revision comes from the
    // status read just before the stream started, a lower bound of what the snapshot holds.
    let revision = status
        .header()
        .map(|h| h.revision())
        .filter(|r| *r > 0)
        .or_else(|| first.header().map(|h| h.revision()))
        .unwrap_or_default();
    let created = time::OffsetDateTime::now_utc();
    let id = manifest::id(created, revision);
    let encrypted = !recipients.is_empty();
    let object = store.path(&manifest::object_name(&id, encrypted));
    let upload = store
        .inner
        .put_multipart(&object)
        .await
        .with_context(|| format!("starting the upload of {object} to {}", store.describe))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK);
    let streamed = stream_snapshot(&mut writer, recipients, first, &mut stream).await;
    let Streamed {
        etcd_sha256,
        sha256,
        db_size,
        size,
    } = complete_upload(writer, streamed, &object).await?;

    let manifest = Manifest {
        id: id.clone(),
        object: manifest::object_name(&id, encrypted),
        sha256,
        etcd_sha256,
        size,
        db_size,
        revision,
        cluster_id: format!("{:x}", me.cluster_id),
        member_count: members.members().len(),
        etcd_version: status.version().to_string(),
        created: manifest::rfc3339(created),
        taken_from: src.endpoint.to_string(),
        taken_by: key.name().to_string(),
        encrypted,
        cluster: store.cluster.clone(),
    };
    let text = super::signed::seal(manifest::KIND, &manifest, &key)?;
    let path = store.path(&manifest::manifest_name(&id));
    store
        .inner
        .put(&path, PutPayload::from(text))
        .await
        .with_context(|| format!("writing the manifest {path}"))?;
    Ok(manifest)
}

/// What streaming a snapshot came to: the SHA-256 (hex) of the database, etcd's checksum, and of
/// the stored bytes; the database's size (the stream, trailer included) and the stored size.
struct Streamed {
    etcd_sha256: String,
    sha256: String,
    db_size: u64,
    size: u64,
}

/// etcd's snapshot stream, from its `first` message on, encrypted to `recipients` (if any) into
/// `writer` with at most `IN_FLIGHT` parts in flight; its last 32 bytes checked as the SHA-256 of
/// what came before them before the last part is written.
async fn stream_snapshot(
    writer: &mut WriteMultipart,
    recipients: &[String],
    first: etcd_client::SnapshotResponse,
    stream: &mut etcd_client::SnapshotStreaming,
) -> Result<Streamed> {
    let mut upload = SealedUpload::new(writer, recipients)?;
    let mut db_hash = digest::Context::new(&digest::SHA256);
    // The last 32 bytes seen, not yet hashed: at the end they are etcd's checksum.
    let mut tail: Vec<u8> = Vec::with_capacity(64);
    let mut total = 0u64;
    let mut blob = first.blob().to_vec();
    loop {
        total += blob.len() as u64;
        tail.extend_from_slice(&blob);
        if tail.len() > 32 {
            let n = tail.len() - 32;
            db_hash.update(&tail[..n]);
            tail.drain(..n);
        }
        upload.write(&blob).await?;
        match next(stream).await? {
            Some(m) => blob = m.blob().to_vec(),
            None => break,
        }
    }
    let db_sha = digest::Context::finish(db_hash);
    if total < 32 || total % 512 != 32 || tail != db_sha.as_ref() {
        bail!(
            "etcd's snapshot stream failed its SHA-256 check ({total} bytes); nothing was stored"
        );
    }
    let (sha256, size) = upload.finish().await?;
    Ok(Streamed {
        etcd_sha256: crate::util::hex::hex(db_sha.as_ref()),
        sha256,
        db_size: total,
        size,
    })
}

async fn next(
    stream: &mut etcd_client::SnapshotStreaming,
) -> Result<Option<etcd_client::SnapshotResponse>> {
    match tokio::time::timeout(STALL, stream.message()).await {
        Ok(r) => r.context("reading etcd's snapshot stream"),
        Err(_) => bail!("etcd's snapshot stream sent nothing for {STALL:?}"),
    }
}
