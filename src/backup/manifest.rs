//! A snapshot's manifest, written last beside its data object: a snapshot without a manifest does
//! not exist. Names: `<UTC time>-r<revision>.db[.age]` and `<UTC time>-r<revision>.json`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `<UTC time>-r<revision>`, also the name of this manifest without `.json`.
    pub id: String,
    /// The data object's name, beside the manifest.
    pub object: String,
    /// SHA-256 of the stored bytes (what the store holds: ciphertext when encrypted).
    pub sha256: String,
    /// etcd's own SHA-256 of the database, from the snapshot stream's trailer.
    pub etcd_sha256: String,
    /// Bytes stored.
    pub size: u64,
    /// Bytes of etcd's snapshot stream (database and its 32-byte trailer).
    pub db_size: u64,
    /// The cluster's revision when the snapshot started (the snapshot holds at least it).
    pub revision: i64,
    pub cluster_id: String,
    pub member_count: usize,
    pub etcd_version: String,
    /// RFC 3339, UTC.
    pub created: String,
    /// The member whose snapshot stream this is, and the agent that took it.
    pub taken_from: String,
    pub taken_by: String,
    pub encrypted: bool,
}

/// `20261203T082500Z-r1204`: the time, sortable as text, and the revision.
pub fn id(t: time::OffsetDateTime, revision: i64) -> String {
    format!("{}-r{revision}", crate::util::time::utc_stamp(t))
}

pub fn object_name(id: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{id}.db.age")
    } else {
        format!("{id}.db")
    }
}

pub fn manifest_name(id: &str) -> String {
    format!("{id}.json")
}

/// The UTC day (`YYYYMMDD`) a snapshot id belongs to.
pub fn day_of(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
