//! Uploading the next segment of a chain: its data object streamed (encrypted) into a multipart
//! upload first, then its manifest, signed with this member's key, last: a segment without a
//! manifest does not exist.

use super::chain::Link;
use super::format::{self, Revision, MAGIC};
use super::manifest::{SegmentManifest, KIND};
use super::names::{chain_dir, id, object_name};
use crate::backup::manifest;
use crate::backup::signed;
use crate::backup::snapshotter::{complete_upload, SealedUpload, CHUNK};
use crate::backup::store::Store;
use anyhow::{bail, Context, Result};
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

/// Upload `revisions` (ascending, all at or after `link.next_revision`, not empty) as the next
/// segment of the chain that ends at `link`: the data object streamed first, its signed
/// manifest last. Returns the manifest.
pub(crate) async fn upload(
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
    let streamed = stream(&mut writer, recipients, revisions).await;
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

/// The magic line and one line per revision, encrypted to `recipients` (if any), into `writer`
/// with at most `IN_FLIGHT` parts in flight; the SHA-256 (hex) and size of the bytes written.
async fn stream(
    writer: &mut WriteMultipart,
    recipients: &[String],
    revisions: &[Revision],
) -> Result<(String, u64)> {
    let mut upload = SealedUpload::new(writer, recipients)?;
    upload.write(MAGIC).await?;
    for r in revisions {
        upload.write(&format::line(r)?).await?;
    }
    upload.finish().await
}
