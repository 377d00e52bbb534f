//! A snapshot's manifest, written last beside its data object: a snapshot without a manifest does
//! not exist. Names: `<UTC time>-r<revision>.db[.age]` and `<UTC time>-r<revision>.json`.
//!
//! The store is not trusted: a manifest is signed (`signed`), and its id and object name must
//! match one strict pattern and agree with what it signs (`Manifest::check`), so that no name
//! read from the store can point outside the cluster's directory or a scratch directory, and no
//! id can rank "newest" by its text alone.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
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
    /// The member whose snapshot stream this is, and the agent that took it: the member whose
    /// key signed this manifest.
    pub taken_from: String,
    pub taken_by: String,
    pub encrypted: bool,
    /// `cluster.name`: a manifest signed for one cluster is never used for another.
    pub cluster: String,
}

/// The kind of signed object a manifest is.
pub(crate) const KIND: &str = "snapshot-manifest";

impl super::signed::Payload for Manifest {
    fn signer(&self) -> &str {
        &self.taken_by
    }
    fn signed_at(&self) -> Option<time::OffsetDateTime> {
        super::signed::parse_time(&self.created)
    }
}

impl Manifest {
    /// Everything a signed manifest must also be: its id (the name it is stored under) in the
    /// one pattern, agreeing with its time and revision; its object named from its id; of this
    /// cluster; hashes and sizes of the right form.
    pub(crate) fn check(&self, stored_as: &str, cluster: &str) -> Result<(), String> {
        let (stamp, revision) = parse_id(&self.id)?;
        if self.id != stored_as {
            return Err(format!(
                "it names snapshot {:?} but is stored as {stored_as:?}",
                self.id
            ));
        }
        if self.object != object_name(&self.id, self.encrypted) {
            return Err(format!(
                "its data object {:?} is not the one its id names",
                self.object
            ));
        }
        let created = super::signed::parse_time(&self.created)
            .ok_or_else(|| format!("created {:?} is not RFC 3339", self.created))?;
        if crate::util::time::utc_stamp(created) != stamp || revision != self.revision {
            return Err(format!(
                "its id {} does not match its time {} and revision {}",
                self.id, self.created, self.revision
            ));
        }
        if self.cluster != cluster {
            return Err(format!(
                "it is a snapshot of cluster {:?}, not {cluster:?}",
                self.cluster
            ));
        }
        for (what, h) in [("sha256", &self.sha256), ("etcd_sha256", &self.etcd_sha256)] {
            if h.len() != 64
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!("its {what} is not a SHA-256 in hex"));
            }
        }
        // etcd's snapshot stream: whole 512-byte pages and a 32-byte trailer.
        if self.db_size < 32 || self.db_size % 512 != 32 {
            return Err(format!(
                "db_size {} is not an etcd snapshot's",
                self.db_size
            ));
        }
        if self.size == 0 || (!self.encrypted && self.size != self.db_size) {
            return Err(format!(
                "size {} does not fit db_size {}",
                self.size, self.db_size
            ));
        }
        Ok(())
    }

    /// The order "newest" goes by: the signed time, then the signed revision.
    pub(crate) fn newness(&self) -> (i64, i64) {
        let t = super::signed::parse_time(&self.created)
            .map(|t| t.unix_timestamp())
            .unwrap_or(i64::MIN);
        (t, self.revision)
    }
}

/// A snapshot id's parts, when `id` is exactly `YYYYMMDDTHHMMSSZ-r<revision>`: a real UTC time
/// and a revision of 1 to 19 digits, nothing else (no path separator, no dot, nothing after).
pub(crate) fn parse_id(id: &str) -> Result<(&str, i64), String> {
    let bad = || format!("{id:?} is not a snapshot id (YYYYMMDDTHHMMSSZ-r<revision>)");
    let (stamp, revision) = id.split_once("-r").ok_or_else(bad)?;
    let b = stamp.as_bytes();
    let stamp_ok = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    if !stamp_ok
        || revision.is_empty()
        || revision.len() > 19
        || !revision.bytes().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| stamp[r].parse::<u16>().unwrap_or(u16::MAX);
    let month = time::Month::try_from(num(4..6).min(255) as u8).map_err(|_| bad())?;
    time::Date::from_calendar_date(num(0..4) as i32, month, num(6..8).min(255) as u8)
        .map_err(|_| bad())?;
    time::Time::from_hms(
        num(9..11).min(255) as u8,
        num(11..13).min(255) as u8,
        num(13..15).min(255) as u8,
    )
    .map_err(|_| bad())?;
    let revision: i64 = revision.parse().map_err(|_| bad())?;
    Ok((stamp, revision))
}

/// `20261203T082500Z-r1204`: the time, sortable as text, and the revision.
pub(crate) fn id(t: time::OffsetDateTime, revision: i64) -> String {
    format!("{}-r{revision}", crate::util::time::utc_stamp(t))
}

pub(crate) fn object_name(id: &str, encrypted: bool) -> String {
    if encrypted {
        format!("{id}.db.age")
    } else {
        format!("{id}.db")
    }
}

pub(crate) fn manifest_name(id: &str) -> String {
    format!("{id}.json")
}

/// The UTC day (`YYYYMMDD`) a snapshot id (checked by `parse_id`) belongs to.
pub(crate) fn day_of(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strict_ids_parse() {
        assert_eq!(
            parse_id("20261203T082500Z-r1204"),
            Ok(("20261203T082500Z", 1204))
        );
        for bad in [
            "",
            "latest",
            "../20261203T082500Z-r1",
            "20261203T082500Z-r1/..",
            "/etc/passwd",
            "20261203T082500Z-r",
            "20261203T082500Z-r12a",
            "20261203T082500Z-r+1",
            "20261203T082500Z-r1.json",
            "20261203T082500Z-r12345678901234567890",
            "20261303T082500Z-r1",
            "20261203T256000Z-r1",
            "2026120xT082500Z-r1",
            "20261203T082500-r1",
            "x20261203T082500Z-r1",
        ] {
            assert!(parse_id(bad).is_err(), "{bad:?} parsed");
        }
    }

    fn good() -> Manifest {
        Manifest {
            id: "20261203T082500Z-r1204".into(),
            object: "20261203T082500Z-r1204.db.age".into(),
            sha256: "a".repeat(64),
            etcd_sha256: "b".repeat(64),
            size: 2000,
            db_size: 1024 + 32,
            revision: 1204,
            cluster_id: "1234".into(),
            member_count: 3,
            etcd_version: "3.5.30".into(),
            created: "2026-12-03T08:25:00Z".into(),
            taken_from: "https://10.0.0.1:2379".into(),
            taken_by: "etcd1".into(),
            encrypted: true,
            cluster: "prod".into(),
        }
    }

    #[test]
    fn check_table() {
        const ID: &str = "20261203T082500Z-r1204";
        let id = ID;
        assert_eq!(good().check(id, "prod"), Ok(()));
        type Change = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(Change, &str, &str)> = vec![
            (
                Box::new(|m| m.cluster = "staging".into()),
                id,
                "not \"prod\"",
            ),
            (
                Box::new(|m| m.object = "../../../../root/.ssh/authorized_keys".into()),
                id,
                "data object",
            ),
            (
                Box::new(|m| m.object = "/var/lib/etcd/member/snap/db".into()),
                id,
                "data object",
            ),
            (
                Box::new(|m| m.object = "20261203T082500Z-r1204.db".into()),
                id,
                "data object",
            ),
            (
                Box::new(|m| m.id = "20991231T235959Z-r9999".into()),
                id,
                "stored as",
            ),
            (Box::new(|m| m.revision = 9999), id, "does not match"),
            (
                Box::new(|m| m.created = "2099-12-31T23:59:59Z".into()),
                id,
                "does not match",
            ),
            (Box::new(|m| m.sha256 = "../x".into()), id, "sha256"),
            (Box::new(|m| m.db_size = 1), id, "db_size"),
            (
                Box::new(|m| {
                    m.encrypted = false;
                    m.object = format!("{ID}.db");
                }),
                id,
                "size",
            ),
        ];
        for (i, (change, stored_as, why)) in cases.iter().enumerate() {
            let mut m = good();
            change(&mut m);
            let err = m.check(stored_as, "prod").unwrap_err();
            assert!(err.contains(why), "case {i}: {err}");
        }
    }
}
