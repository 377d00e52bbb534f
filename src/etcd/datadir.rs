//! The data dir and what lives beside it:
//! - it is never deleted: a removed member's or an interrupted start's data is moved aside to
//!   `<data_dir>.removed-<UTC timestamp>`, with a note of its cluster and raft index; old copies
//!   are pruned by `decide::prune` (by the time in their name and `heal.keep_moved_aside`, within
//!   a disk-use limit; never one that is ahead of the running member of the same cluster);
//! - `<data_dir>.identity.json`: this node's identity record (its nonce, the cluster and member
//!   it last belonged to, that cluster's membership), which survives a wiped data dir;
//! - `<data_dir>.left` (written by `leave`) and `<data_dir>.pause` (written by an operator);
//! - `<data_dir>.auto-recovered`: the note of the last automatic recovery carried out here
//!   (`agent::auto_recover`).
//! - `<data_dir>.config-rejected`: why the running agent refused a reloaded configuration;
//! - `<data_dir>.applied`: the fingerprint of what etcd was last started with.

use crate::decide::prune;
use crate::model::datadir::MOVED_NOTE;
use crate::model::held::Held;
use crate::util::fs;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// While this file exists the heal loop neither re-adds this member nor removes any member, and
/// etcd keeps running: for an operator working on the cluster by hand.
pub(crate) fn pause_marker(data_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pause", data_dir.display()))
}

/// The one-line reason the running agent refused the configuration it was last asked to load
/// (`systemctl reload`): it keeps running on the one it had. `status` and `doctor` show it; an
/// accepted configuration removes it.
pub(crate) fn config_rejected_marker(data_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.config-rejected", data_dir.display()))
}

/// The first line of a one-line note beside the data dir, if it exists (bounded read).
fn note_line(path: &Path) -> Option<String> {
    let text = crate::util::fs::read_bounded_text(path, 16 * 1024).ok()?;
    Some(text.lines().next().unwrap_or("").trim().to_string())
}

/// What `config_rejected_marker` holds, if it exists.
pub(crate) fn config_rejected(data_dir: &Path) -> Option<String> {
    note_line(&config_rejected_marker(data_dir))
}

/// Why a rollout of this member's change halted cluster-wide (a member was not healthy on the
/// new etcd and was put back), one line, while it stands: `status`, `doctor` and `/metrics`
/// show it; the agent removes it when the halt is lifted (a new change).
pub(crate) fn rollout_halted_marker(data_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.rollout-halted", data_dir.display()))
}

/// What `rollout_halted_marker` holds, if it exists.
pub(crate) fn rollout_halted(data_dir: &Path) -> Option<String> {
    note_line(&rollout_halted_marker(data_dir))
}

/// The fingerprint of what etcd runs with (its files, binary, release, image: written when the
/// agent starts or restarts it). A configuration whose fingerprint differs is rolled.
pub(crate) fn applied_path(data_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.applied", data_dir.display()))
}

pub(crate) fn read_applied(data_dir: &Path) -> Option<String> {
    let text = crate::util::fs::read_bounded_text(&applied_path(data_dir), 1024).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

pub(crate) fn write_applied(data_dir: &Path, fingerprint: &str) -> Result<()> {
    crate::util::fs::write_atomic(
        &applied_path(data_dir),
        format!("{fingerprint}\n").as_bytes(),
        0o644,
    )?;
    Ok(())
}

pub(crate) fn record_path(data_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.identity.json", data_dir.display()))
}

/// A member of the last-known membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecordedMember {
    pub id: String,
    /// Empty for a member that has not started (and in records of older versions).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// This node's identity record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Record {
    /// Its nonce, the cluster and member this node last belonged to, how far its data got and
    /// where it came from, the members it sees unreachable while it leads.
    #[serde(flatten)]
    pub held: Held,
    /// A data dir has existed since `nonce` was drawn: once that data is gone, a new nonce.
    #[serde(default)]
    pub nonce_used: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub peer_url: Option<String>,
    #[serde(default)]
    pub members: Vec<RecordedMember>,
    /// A fleet-wide restore this node is carrying out, and how far it got (see
    /// `decide::restore::fleet_step`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<crate::decide::restore::InProgress>,
    /// The last fleet-wide restore request this node finished (or gave up on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_finished: Option<String>,
    /// The peer-only name (`tls::peer_role_name`) every member was seen to serve in its peer
    /// certificate: from then on etcd requires it of its peers (`agent::peer_roles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_role: Option<String>,
}

impl Record {
    pub(crate) fn cluster(&self) -> Option<u64> {
        self.held.cluster_id
    }

    pub(crate) fn member(&self) -> Option<u64> {
        self.held.member_id
    }

    pub(crate) fn load(data_dir: &Path) -> Result<Option<Record>> {
        let path = record_path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!(
                    "{} is not an identity record; move it away to start over",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Write it when it changed (atomically, 0600).
    pub(crate) fn save(&self, data_dir: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("a record serializes");
        text.push('\n');
        fs::write_atomic(&record_path(data_dir), text.as_bytes(), 0o600)?;
        Ok(())
    }

    /// The record for this start: the stored one, with a new nonce when the data the old nonce
    /// went into is gone (a new cluster formed now must not repeat the old one's IDs).
    pub(crate) fn for_start(data_dir: &Path, cluster_name: &str, has_data: bool) -> Result<Record> {
        let mut r = Record::load(data_dir)?.unwrap_or_default();
        if r.held.nonce.is_empty() || (r.nonce_used && !has_data) {
            r.held.nonce = crate::util::hex::random_hex();
            r.nonce_used = false;
        }
        r.nonce_used |= has_data;
        r.held.cluster_name = cluster_name.to_string();
        r.save(data_dir)?;
        Ok(r)
    }
}

/// Written by `leave` before the member is removed: the node was decommissioned on purpose, so
/// neither `run` nor the heal loop may add it back.
pub(crate) fn left_marker(data_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.left", data_dir.display()))
}

#[derive(Serialize, Deserialize)]
struct MovedNote {
    reason: String,
    raft_index: Option<u64>,
    cluster_id: Option<String>,
    member_id: Option<String>,
}

fn hex_id(s: &Option<String>) -> Option<u64> {
    s.as_deref().and_then(|h| u64::from_str_radix(h, 16).ok())
}

/// Move `data_dir` aside (if it exists), noting `reason` and the raft index it was at when known.
/// Nothing is deleted here: `prune` runs once the member is healthy again and its raft index is
/// known.
pub(crate) fn move_aside(
    data_dir: &Path,
    reason: &str,
    raft_index: Option<u64>,
) -> Result<Option<PathBuf>> {
    if !data_dir.exists() {
        return Ok(None);
    }
    let stamp = crate::util::time::utc_stamp(time::OffsetDateTime::now_utc());
    let mut target = PathBuf::from(format!("{}.removed-{stamp}", data_dir.display()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{}.removed-{stamp}-{n}", data_dir.display()));
        n += 1;
    }
    let record = Record::load(data_dir).ok().flatten().unwrap_or_default();
    let note = MovedNote {
        reason: reason.to_string(),
        raft_index: raft_index.or(record.held.raft_index),
        cluster_id: record.cluster().map(|id| format!("{id:x}")),
        member_id: record.member().map(|id| format!("{id:x}")),
    };
    // The note goes in before the move, so every moved-aside copy has one.
    let note_text = serde_json::to_string_pretty(&note).expect("a note serializes");
    fs::write_atomic(&data_dir.join(MOVED_NOTE), note_text.as_bytes(), 0o600)?;
    std::fs::rename(data_dir, &target)
        .with_context(|| format!("moving {} to {}", data_dir.display(), target.display()))?;
    tracing::warn!(from = %data_dir.display(), to = %target.display(), %reason, raft_index = ?note.raft_index, "data dir moved aside");
    Ok(Some(target))
}

/// The moved-aside copies beside `data_dir`, each with what its note says (cluster, raft index)
/// and the bytes it takes on disk. A copy without a readable note has neither.
pub(crate) fn moved_copies(data_dir: &Path) -> Result<Vec<prune::MovedCopy>> {
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let prefix = format!(
        "{}.removed-",
        data_dir
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let copies = std::fs::read_dir(parent)
        .with_context(|| format!("listing {}", parent.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| {
            let note = std::fs::read(e.path().join(MOVED_NOTE))
                .ok()
                .and_then(|b| serde_json::from_slice::<MovedNote>(&b).ok());
            prune::MovedCopy {
                cluster: note.as_ref().and_then(|n| hex_id(&n.cluster_id)),
                raft_index: note.and_then(|n| n.raft_index),
                size: disk_bytes(&e.path()),
                name: e.file_name().to_string_lossy().into_owned(),
            }
        })
        .collect();
    Ok(copies)
}

/// Bytes `path` takes on disk (allocated blocks, as `du` counts), symlinks not followed; what
/// cannot be read counts 0.
fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks().saturating_mul(512);
    if !meta.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| disk_bytes(&e.path()))
                .fold(0u64, u64::saturating_add)
        })
        .unwrap_or(0);
    own.saturating_add(children)
}

/// How full the file system holding `path` is (`None` when it cannot be read).
pub(crate) fn disk_use(path: &Path) -> Option<prune::DiskUse> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a statvfs that outlives the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some(prune::DiskUse {
        used: (st.f_blocks as u64)
            .saturating_sub(st.f_bfree as u64)
            .saturating_mul(unit),
        available: (st.f_bavail as u64).saturating_mul(unit),
    })
}

/// Delete the moved-aside copies (`copies`, from `moved_copies`) that `decide::prune` allows,
/// given the running member and whether the store holds a verified snapshot of its cluster.
/// Returns the plan (the caller logs the copies kept, and why, when it wants to); each deletion
/// is logged here.
pub(crate) fn prune(
    data_dir: &Path,
    copies: &[prune::MovedCopy],
    running: prune::Running,
    has_verified_snapshot: bool,
    limits: prune::Limits,
) -> Result<prune::PrunePlan> {
    if copies.is_empty() {
        return Ok(prune::PrunePlan::default());
    }
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let plan = prune::plan(&prune::PruneInput {
        copies,
        running,
        has_verified_snapshot,
        disk: disk_use(parent),
        limits,
    });
    for (name, why) in &plan.delete {
        let p = parent.join(name);
        tracing::warn!(path = %p.display(), %why, "pruning a moved-aside data dir");
        std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(plan)
}

/// Log why each copy that stays stays (once per change of the plan: the heal loop prunes at
/// every healthy tick).
pub(crate) fn log_kept(data_dir: &Path, plan: &prune::PrunePlan) {
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    for (name, why) in &plan.kept {
        tracing::info!(path = %parent.join(name).display(), %why, "keeping a moved-aside data dir");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// An identity record with every field set, as it is on disk: records written by older
    /// agents must still read, and older agents must read ours.
    fn full_record() -> Value {
        json!({
            "cluster_name": "prod",
            "nonce": "9f86d081884c7d65",
            "nonce_used": true,
            "cluster_id": "3d2ca84ca24e47e4",
            "member_id": "a1",
            "name": "etcd-1",
            "peer_url": "https://10.0.0.1:2380",
            "members": [
                {"id": "a1", "name": "etcd-1", "peer_urls": ["https://10.0.0.1:2380"], "client_urls": ["https://10.0.0.1:2379"]},
                {"id": "b2", "peer_urls": ["https://10.0.0.2:2380"], "client_urls": []},
            ],
            "raft_index": 4200,
            "raft_term": 7,
            "revision": 3100,
            "formation": "c0ffee",
            "restored_from": "2024-05-01T00-00-00Z.db",
            "restore": {
                "request": {
                    "id": "20240501T000000Z-abcd",
                    "snapshot": "2024-05-01T00-00-00Z.db",
                    "requested": "2024-05-01T00:00:00Z",
                    "by": "etcd-1",
                    "from_cluster": "3d2ca84ca24e47e4",
                    "members": [{"name": "etcd-1", "peer_url": "https://10.0.0.1:2380", "client_url": "https://10.0.0.1:2379"}],
                    "token": "prod-0123456789ab",
                    "cluster": "prod",
                },
                "phase": "moved",
            },
            "restore_finished": "20240401T000000Z-0000",
            "unreachable_since": {"b2": 1714521000},
            "peer_role": "etcd-peer.prod",
        })
    }

    #[test]
    fn the_json_of_a_full_record_stays_as_it_is() {
        let record: Record = serde_json::from_value(full_record()).unwrap();
        assert_eq!(serde_json::to_value(&record).unwrap(), full_record());
        assert_eq!(record.cluster(), Some(0x3d2ca84ca24e47e4));
        assert_eq!(record.member(), Some(0xa1));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("etcd");
        record.save(&data).unwrap();
        assert_eq!(Record::load(&data).unwrap(), Some(record));
    }

    /// A record of an older agent, without the fields added since, still reads; unset fields
    /// are written as before (`null`, or left out for the newer ones).
    #[test]
    fn an_older_agents_record_reads() {
        let old =
            json!({"cluster_name": "prod", "nonce": "n1", "cluster_id": "ff", "raft_index": 9});
        let record: Record = serde_json::from_value(old).unwrap();
        assert_eq!(record.cluster(), Some(0xff));
        assert_eq!(record.member(), None);
        assert_eq!(
            serde_json::to_value(&record).unwrap(),
            json!({
                "cluster_name": "prod",
                "nonce": "n1",
                "nonce_used": false,
                "cluster_id": "ff",
                "member_id": null,
                "name": null,
                "peer_url": null,
                "members": [],
                "raft_index": 9,
                "formation": null,
            })
        );
        let bare: Record =
            serde_json::from_value(json!({"cluster_name": "", "nonce": ""})).unwrap();
        assert_eq!(bare, Record::default());
        assert!(serde_json::from_value::<Record>(json!({"nonce": "n1"})).is_err());
    }

    #[test]
    fn moves_aside_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("etcd");
        // The first copy is the most valuable: its raft index is ahead of the running member's.
        let indexes = [900u64, 10, 20, 30, 40];
        let mut moved = vec![];
        for (i, idx) in indexes.iter().enumerate() {
            std::fs::create_dir_all(data.join("member/wal")).unwrap();
            std::fs::write(data.join("marker"), i.to_string()).unwrap();
            let to = move_aside(&data, "test", Some(*idx)).unwrap().unwrap();
            assert!(!data.exists());
            assert_eq!(
                std::fs::read_to_string(to.join("marker")).unwrap(),
                i.to_string()
            );
            moved.push(to);
        }
        // Nothing is deleted while moving.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
        let running = prune::Running {
            cluster: None,
            raft_index: Some(100),
        };
        let limits = prune::Limits {
            keep: 3,
            max_disk_percent: 100,
        };
        prune(&data, &moved_copies(&data).unwrap(), running, false, limits).unwrap();
        let left: Vec<PathBuf> = moved.iter().filter(|p| p.exists()).cloned().collect();
        // The newest three, plus the one ahead of the running member; the one at 10 is gone.
        assert_eq!(
            left,
            vec![
                moved[0].clone(),
                moved[2].clone(),
                moved[3].clone(),
                moved[4].clone()
            ]
        );
        assert!(move_aside(&data, "test", None).unwrap().is_none());
    }

    /// The note of each copy names the cluster of the identity record at the time of the move;
    /// after restores, copies of earlier clusters go down to `keep`, and the newest of them (the
    /// way back) only once the running cluster has a verified snapshot.
    #[test]
    fn copies_know_their_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("etcd");
        let mut moved = vec![];
        // Clusters a, b, c, each moved aside at a raft index far ahead of the restored d's.
        for cluster in [0xa, 0xb, 0xc] {
            std::fs::create_dir_all(data.join("member/wal")).unwrap();
            std::fs::write(data.join("member/wal/0.wal"), vec![7u8; 64 * 1024]).unwrap();
            let mut record = Record::default();
            record.held.cluster_id = Some(cluster);
            record.held.raft_index = Some(5000);
            record.save(&data).unwrap();
            moved.push(move_aside(&data, "restore", None).unwrap().unwrap());
        }
        let copies = moved_copies(&data).unwrap();
        assert_eq!(copies.len(), 3);
        for c in &copies {
            assert!(c.size >= 64 * 1024, "{c:?}");
            assert_eq!(c.raft_index, Some(5000));
        }
        let mut clusters: Vec<u64> = copies.iter().filter_map(|c| c.cluster).collect();
        clusters.sort();
        assert_eq!(clusters, vec![0xa, 0xb, 0xc]);
        let d = prune::Running {
            cluster: Some(0xd),
            raft_index: Some(20),
        };
        let keep0 = prune::Limits {
            keep: 0,
            max_disk_percent: 100,
        };
        let plan = prune(&data, &copies, d, false, keep0).unwrap();
        assert_eq!(plan.delete.len(), 2, "{plan:?}");
        let left: Vec<&PathBuf> = moved.iter().filter(|p| p.exists()).collect();
        assert_eq!(left, vec![&moved[2]], "the way back stays");
        prune(&data, &moved_copies(&data).unwrap(), d, true, keep0).unwrap();
        assert!(moved.iter().all(|p| !p.exists()));
        assert!(disk_use(dir.path()).is_some_and(|u| u.used > 0 && u.available > 0));
    }
}
