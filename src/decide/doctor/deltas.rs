//! `delta`: the newest delta segment is recent, or the chain holds every revision.

use super::{DeltaSeen, DoctorInput, Finding};
use crate::util::time::age_text;

/// The newest delta segment is stale when older than this many `backup.delta_interval`s while
/// the cluster has writes the store does not (Gardener's BackupReady rule).
pub(crate) const DELTA_STALE_INTERVALS: i64 = 3;

/// Older than `DELTA_STALE_INTERVALS` x `backup.delta_interval` while the cluster holds
/// revisions the chain does not (or its revision is not known).
pub(crate) fn deltas_stale(d: &DeltaSeen) -> bool {
    d.newest_age > DELTA_STALE_INTERVALS * d.interval_secs && d.behind != Some(0)
}

/// With delta segments on: the newest one is younger than `DELTA_STALE_INTERVALS` x
/// `backup.delta_interval`, or the chain already holds every revision of the cluster (no
/// writes since: nothing to upload).
pub(crate) fn deltas(o: &DoctorInput) -> Vec<Finding> {
    let Some(d) = o.snapshot.as_ref().and_then(|s| s.deltas.as_ref()) else {
        return vec![Finding::ok(
            "delta",
            "no delta segments to check (no [backup], backup.delta_interval = \"\", or no full snapshot to extend yet)",
        )];
    };
    let store = o.snapshot.as_ref().map(|s| s.store.as_str()).unwrap_or("");
    let chain = format!(
        "{} delta segment(s), {} event(s), in the chain of {} in {store}",
        d.segments, d.events, d.base
    );
    if deltas_stale(d) {
        let behind = match d.behind {
            Some(n) => format!("the cluster holds {n} revision(s) more"),
            None => "the cluster's revision could not be read".to_string(),
        };
        return vec![Finding::fail(
            "delta",
            format!(
                "the newest delta segment is {} old, more than {DELTA_STALE_INTERVALS} x backup.delta_interval ({}), and {behind}: {chain}",
                age_text(d.newest_age),
                age_text(d.interval_secs)
            ),
            "the agent holding the delta claim uploads a segment every backup.delta_interval: look for \"delta segment\" and \"delta claim\" in the agents' logs, and check that the store answers (`etcd-bootstrap snapshot verify` walks the chain)",
        )];
    }
    let newest = if d.segments == 0 {
        "no segment yet".to_string()
    } else {
        format!("the newest is {} old", age_text(d.newest_age))
    };
    let behind = match d.behind {
        Some(0) => "; every revision of the cluster is in the store".to_string(),
        Some(n) => format!("; {n} revision(s) not in the store yet"),
        None => String::new(),
    };
    vec![Finding::ok("delta", format!("{chain}: {newest}{behind}"))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::doctor::fixtures::*;

    /// (what the row is, the change to the healthy observation, the failing finding's `what`
    /// fragment and exact `fix`, or None: the check passes).
    fn table() -> Vec<Row> {
        vec![
            ("delta: fresh", |_| {}, None),
            (
                "delta: off",
                |o| o.snapshot.as_mut().unwrap().deltas = None,
                None,
            ),
            (
                "delta: old, but every revision is in the store (no writes since)",
                |o| {
                    let d = o.snapshot.as_mut().unwrap().deltas.as_mut().unwrap();
                    d.newest_age = 3600;
                    d.behind = Some(0);
                },
                None,
            ),
            (
                "delta: older than three intervals with writes not in the store",
                |o| o.snapshot.as_mut().unwrap().deltas.as_mut().unwrap().newest_age = 16,
                Some((
                    "the newest delta segment is 16s old, more than 3 x backup.delta_interval (5s), and the cluster holds 3 revision(s) more: 12 delta segment(s), 340 event(s), in the chain of 20270115T080000Z-r90 in s3://b/etcd",
                    "the agent holding the delta claim uploads a segment every backup.delta_interval: look for \"delta segment\" and \"delta claim\" in the agents' logs, and check that the store answers (`etcd-bootstrap snapshot verify` walks the chain)".into(),
                )),
            ),
            (
                "delta: older than three intervals, the cluster's revision unknown",
                |o| {
                    let d = o.snapshot.as_mut().unwrap().deltas.as_mut().unwrap();
                    d.newest_age = 16;
                    d.behind = None;
                },
                Some((
                    "the newest delta segment is 16s old, more than 3 x backup.delta_interval (5s), and the cluster's revision could not be read: 12 delta segment(s), 340 event(s), in the chain of 20270115T080000Z-r90 in s3://b/etcd",
                    "the agent holding the delta claim uploads a segment every backup.delta_interval: look for \"delta segment\" and \"delta claim\" in the agents' logs, and check that the store answers (`etcd-bootstrap snapshot verify` walks the chain)".into(),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(deltas, table());
    }
}
