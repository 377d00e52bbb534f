//! `snapshot` (and `store-trust`): the newest verified snapshot is recent, and the store holds
//! nothing untrusted.

use super::{DoctorInput, Finding};
use crate::util::time::age_text;

/// The newest snapshot is stale when older than this many `backup.interval`s: one interval can
/// be missed (a leader change, a restart at the wrong moment), two in a row cannot.
pub(crate) const SNAPSHOT_STALE_INTERVALS: i64 = 2;

/// The newest verified snapshot is younger than `SNAPSHOT_STALE_INTERVALS` x `backup.interval`.
pub(crate) fn snapshot(o: &DoctorInput) -> Vec<Finding> {
    let Some(s) = &o.snapshot else {
        return vec![Finding::ok(
            "snapshot",
            "no [backup] store configured: no snapshots to check",
        )];
    };
    let take = "take one now: `etcd-bootstrap snapshot save`";
    let mut out = Vec::new();
    if let Some((object, why)) = s.untrusted.first() {
        out.push(Finding::fail(
            "store-trust",
            format!(
                "{} object(s) in {} are not trusted and are never used, e.g. {}: {}",
                s.untrusted.len(),
                s.store,
                crate::util::text::printable(object, 120),
                crate::util::text::printable(why, 200)
            ),
            "whoever can write the bucket wrote them (or they were stored by a version that did not sign): rotate the bucket's credentials if you did not, then delete them (`etcd-bootstrap snapshot list` marks them UNTRUSTED)",
        ));
    }
    out.extend(match &s.newest {
        Err(e) => vec![Finding::fail(
            "snapshot",
            format!("cannot list {}: {e}", s.store),
            "check backup.url, its credentials and that the store answers from this node (`etcd-bootstrap snapshot list` shows the same error)",
        )],
        Ok(None) => vec![Finding::fail(
            "snapshot",
            format!("no verified snapshot in {}", s.store),
            format!("the agents take one per backup.interval from a healthy cluster; {take}"),
        )],
        Ok(Some((id, age))) => {
            let limit = SNAPSHOT_STALE_INTERVALS * s.interval_secs;
            if *age > limit {
                vec![Finding::fail(
                    "snapshot",
                    format!(
                        "the newest snapshot {id} in {} is {} old, more than {SNAPSHOT_STALE_INTERVALS} x backup.interval ({})",
                        s.store,
                        age_text(*age),
                        age_text(s.interval_secs)
                    ),
                    format!("the agents take one per backup.interval from a healthy cluster: look for \"scheduled snapshot\" in their logs; {take}"),
                )]
            } else {
                vec![Finding::ok(
                    "snapshot",
                    format!("the newest snapshot {id} in {} is {} old", s.store, age_text(*age)),
                )]
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::doctor::fixtures::*;

    /// (what the row is, the change to the healthy observation, the failing finding's `what`
    /// fragment and exact `fix`, or None: the check passes).
    fn table() -> Vec<Row> {
        vec![
            ("snapshot: fresh", |_| {}, None),
            ("snapshot: no [backup]", |o| o.snapshot = None, None),
            (
                "snapshot: older than two intervals",
                |o| o.snapshot.as_mut().unwrap().newest = Ok(Some(("s1".into(), 4000))),
                Some((
                    "the newest snapshot s1 in s3://b/etcd is 66m old, more than 2 x backup.interval (30m)",
                    "the agents take one per backup.interval from a healthy cluster: look for \"scheduled snapshot\" in their logs; take one now: `etcd-bootstrap snapshot save`".into(),
                )),
            ),
            (
                "snapshot: none at all",
                |o| o.snapshot.as_mut().unwrap().newest = Ok(None),
                Some((
                    "no verified snapshot in s3://b/etcd",
                    "the agents take one per backup.interval from a healthy cluster; take one now: `etcd-bootstrap snapshot save`".into(),
                )),
            ),
            (
                "snapshot: an untrusted object in the store",
                |o| {
                    o.snapshot.as_mut().unwrap().untrusted = vec![(
                        "20991231T235959Z-r9999.json".into(),
                        "not a signed object".into(),
                    )]
                },
                Some((
                    "1 object(s) in s3://b/etcd are not trusted and are never used, e.g. 20991231T235959Z-r9999.json: not a signed object",
                    "whoever can write the bucket wrote them (or they were stored by a version that did not sign): rotate the bucket's credentials if you did not, then delete them (`etcd-bootstrap snapshot list` marks them UNTRUSTED)".into(),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(snapshot, table());
    }
}
