//! `fragmentation`: free pages in a member's database file worth a defragmentation.

use super::fix::{etcdctl, etcdctl_at};
use super::text::{bytes, label};
use super::{DoctorInput, Finding};

/// Free pages (dbSize - dbSizeInUse) worth a defragmentation: above 200 MiB the file is much
/// bigger than the data (and counts against the quota, which looks at the file size), ...
pub(crate) const FRAGMENTED_FREE_BYTES: i64 = 200 << 20;
/// ... or more than half of the file, ...
pub(crate) const FRAGMENTED_SHARE_PERCENT: i64 = 50;
/// ... when that half is itself more than 64 MiB: a small database is routinely half free after
/// a compaction, and defragmenting it (which blocks that member's reads and writes) buys
/// nothing.
pub(crate) const FRAGMENTED_SHARE_FLOOR: i64 = 64 << 20;

/// Free pages in a member's database file (dbSize - dbSizeInUse): space a compaction freed but
/// the file still holds until a defragmentation, which counts against the quota.
pub(crate) fn fragmentation(o: &DoctorInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut measured = 0;
    for m in &o.members {
        let Some(db) = m.db else { continue };
        measured += 1;
        let free = (db.size - db.in_use).max(0);
        let fragmented = free > FRAGMENTED_FREE_BYTES
            || (free * 100 > db.size * FRAGMENTED_SHARE_PERCENT && free > FRAGMENTED_SHARE_FLOOR);
        if !fragmented {
            continue;
        }
        let one = m
            .client_url
            .as_deref()
            .map(|u| etcdctl_at(o, u))
            .unwrap_or_else(|| etcdctl(o));
        out.push(Finding::fail(
            "fragmentation",
            format!(
                "{}: {} of its {} database file is free pages ({} in use)",
                label(m),
                bytes(free),
                bytes(db.size),
                bytes(db.in_use)
            ),
            format!(
                "defragment it, one member at a time (it blocks that member's reads and writes meanwhile): {one} defrag"
            ),
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "fragmentation",
            format!(
                "no database of the {measured} that answered holds more than {} (or over half of it, above {}) in free pages",
                bytes(FRAGMENTED_FREE_BYTES),
                bytes(FRAGMENTED_SHARE_FLOOR)
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::doctor::fixtures::*;
    use crate::decide::doctor::Db;

    /// (what the row is, the change to the healthy observation, the failing finding's `what`
    /// fragment and exact `fix`, or None: the check passes).
    fn table() -> Vec<Row> {
        vec![
            ("fragmentation: little free", |_| {}, None),
            (
                "fragmentation: a small database half free is fine",
                |o| o.members[0].db = Some(Db { size: 40 << 20, in_use: 10 << 20 }),
                None,
            ),
            (
                "fragmentation: 300 MiB free",
                |o| o.members[1].db = Some(Db { size: 1 << 30, in_use: 724 << 20 }),
                Some((
                    "etcd2 (https://10.0.0.12:2380): 300 MiB of its 1.0 GiB database file is free pages (724 MiB in use)",
                    "defragment it, one member at a time (it blocks that member's reads and writes meanwhile): etcdctl --endpoints https://10.0.0.12:2379 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt --key /etc/etcd/pki/client.key defrag".into(),
                )),
            ),
            (
                "fragmentation: 100 of 150 MiB free",
                |o| o.members[2].db = Some(Db { size: 150 << 20, in_use: 50 << 20 }),
                Some(("etcd3 (https://10.0.0.13:2380): 100 MiB of its 150 MiB database file", "defragment it, one member at a time (it blocks that member's reads and writes meanwhile): etcdctl --endpoints https://10.0.0.13:2379 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt --key /etc/etcd/pki/client.key defrag".into())),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(fragmentation, table());
    }
}
