//! Restoring a snapshot as this member's data: download and check it (`verify::fetch`), then
//! etcd's own `snapshot restore` with this member's name and peer URL and the cluster's
//! `--initial-cluster` and token (etcd derives the member and cluster IDs from those alone, so
//! every member restoring the same snapshot with the same flags forms one cluster).
//!
//! Nothing half-restored is ever etcd's data: everything happens in a work directory inside the
//! data dir (the same file system, also when the data dir is a mount point), and `member/` appears
//! in the data dir by one rename at the end. A crash leaves only the work directory, which the
//! next attempt clears.

use super::catalog::Entry;
use super::store::Store;
use super::verify::{self, FetchError, SnapshotTool};
use crate::model::datadir::WORK_DIR;
use anyhow::Context;
use std::path::Path;

/// How far a restore moves the revision forward (etcdutl `--bump-revision`, with
/// `--mark-compacted`): more than any cluster writes between two snapshots, so that no revision a
/// watcher (kube-apiserver's cache) has seen is handed out again with other contents. Marking
/// it compacted makes watchers that are behind re-list instead of missing events.
pub(crate) const BUMP_REVISION: u64 = 1_000_000_000;

/// This member, as `snapshot restore` needs it.
pub(crate) struct Target<'a> {
    pub data_dir: &'a Path,
    pub name: &'a str,
    pub peer_url: &'a str,
    pub initial_cluster: &'a str,
    pub token: &'a str,
}

#[derive(Debug)]
pub(crate) struct Restored {
    /// The snapshot's revision, and the cluster's after the restore.
    pub revision: i64,
    pub revision_after: i64,
    pub total_keys: u64,
    pub tool: String,
}

/// Restore `entry` as this member's data: `prepare`, then `install`. Refused when the data dir
/// already has a `member/`.
pub(crate) async fn restore(
    store: &Store,
    entry: &Entry,
    identity_file: Option<&Path>,
    etcd_binary: &Path,
    target: &Target<'_>,
) -> Result<Restored, FetchError> {
    let member = target.data_dir.join("member");
    if member.exists() {
        return Err(FetchError::Failed(anyhow::anyhow!(
            "{} exists: a snapshot is never restored over data",
            member.display()
        )));
    }
    let (prepared, restored) = prepare(store, entry, identity_file, etcd_binary, target).await?;
    crate::failpoint::hit("restore:before-move");
    install(&prepared, target.data_dir)?;
    Ok(restored)
}

/// Download and check the snapshot and restore it into the work directory inside the data dir;
/// whatever else the data dir holds (a running member's data) is left alone. Returns where the
/// restored `member/` is.
pub(crate) async fn prepare(
    store: &Store,
    entry: &Entry,
    identity_file: Option<&Path>,
    etcd_binary: &Path,
    target: &Target<'_>,
) -> Result<(std::path::PathBuf, Restored), FetchError> {
    crate::util::fs::ensure_dir(target.data_dir, 0o700)?;
    let work = target.data_dir.join(WORK_DIR);
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("clearing {} (an earlier attempt)", work.display()))?;
    }
    crate::util::fs::ensure_dir(&work, 0o700)?;
    let db = verify::fetch(store, entry, identity_file, &work).await?;
    let tool = SnapshotTool::beside(etcd_binary)?;
    let (revision, total_keys, _) = tool.status(&db)?;
    let out = work.join("data");
    let (db_arg, out_arg) = (db.display().to_string(), out.display().to_string());
    let bump = BUMP_REVISION.to_string();
    let mut args = vec![
        "snapshot",
        "restore",
        &db_arg,
        "--data-dir",
        &out_arg,
        "--name",
        target.name,
        "--initial-cluster",
        target.initial_cluster,
        "--initial-cluster-token",
        target.token,
        "--initial-advertise-peer-urls",
        target.peer_url,
    ];
    let help = tool
        .run(&["snapshot", "restore", "--help"])
        .unwrap_or_default();
    let bumps = help.contains("--bump-revision");
    if bumps {
        args.extend(["--bump-revision", &bump, "--mark-compacted"]);
    } else {
        tracing::warn!(tool = %tool.path.display(), "this etcd's snapshot tool cannot move the revision forward (etcdutl --bump-revision, etcd 3.5): revisions handed out after the snapshot will be handed out again; restart kube-apiserver so that its watch cache re-lists");
    }
    tool.run(&args)?;
    // The downloaded file is no longer needed; the restored data is.
    let _ = std::fs::remove_file(&db);
    Ok((
        out.join("member"),
        Restored {
            revision,
            revision_after: if bumps {
                revision + BUMP_REVISION as i64
            } else {
                revision
            },
            total_keys,
            tool: tool.path.display().to_string(),
        },
    ))
}

/// Make a prepared `member/` the data dir's, by one rename (the same file system: it was
/// prepared inside the data dir, or inside the copy the data dir was moved aside to), then clear
/// the work directory.
pub(crate) fn install(prepared: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let member = data_dir.join("member");
    if member.exists() {
        anyhow::bail!(
            "{} exists: a snapshot is never restored over data",
            member.display()
        );
    }
    crate::util::fs::ensure_dir(data_dir, 0o700)?;
    std::fs::rename(prepared, &member).with_context(|| {
        format!(
            "moving the restored data from {} into place at {}",
            prepared.display(),
            member.display()
        )
    })?;
    crate::util::fs::sync_dir(data_dir)?;
    let _ = std::fs::remove_dir_all(data_dir.join(WORK_DIR));
    Ok(())
}
