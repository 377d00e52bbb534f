//! `nospace`: no alarm raised, no member's database near the quota.

use super::fix::{compact, etcdctl, etcdctl_at, with_etcdctl};
use super::text::{bytes, label, short};
use super::{DoctorInput, Finding};

/// etcd raises NOSPACE, and then refuses every write, when a member's database reaches the
/// quota; 80% leaves time to compact and defragment first (the same default as
/// `maintenance.defrag_when`).
pub(crate) const QUOTA_WARN_PERCENT: i64 = 80;

/// etcd's quota when `quota-backend-bytes` is not set (or 0): 2 GiB in 3.4, 3.5 and 3.6.
pub(crate) const DEFAULT_QUOTA_BYTES: i64 = 2 << 30;

/// No alarm is raised, and no member's database is near the quota. etcd rule: at the quota a
/// member raises NOSPACE, and the whole cluster then takes only reads and deletes until the
/// alarm is disarmed; CORRUPT means a member's data differs from the others'.
pub(crate) fn nospace(o: &DoctorInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let quota_text = match o.quota {
        Some(q) => bytes(q),
        None => "unlimited".into(),
    };
    match &o.alarms {
        Err(e) => out.push(Finding::fail(
            "nospace",
            format!("cannot read etcd's alarms: {e}"),
            "make a member answer first (see the checks above), then run `etcd-bootstrap doctor` again",
        )),
        Ok(alarms) => {
            for a in alarms {
                let (what, fix) = match a.alarm.as_str() {
                    "NOSPACE" => (
                        format!("NOSPACE alarm raised by {}: the cluster takes only reads and deletes", a.member),
                        format!(
                            "free space, then disarm: {} (compacting drops the history before the current revision: watchers behind it list again). If the data needs the room, raise [etcd.flags] quota-backend-bytes (now {quota_text}) on every member first",
                            with_etcdctl(
                                &etcdctl(o),
                                &[compact(o), "defrag --cluster".into(), "alarm disarm".into()]
                            )
                        ),
                    ),
                    "CORRUPT" => (
                        format!("CORRUPT alarm raised by {}: a member's data differs from the others'", a.member),
                        format!(
                            "replace the member whose data differs: stop its agent, move its data dir aside and start the agent again (it rejoins with the others' data); then {} alarm disarm",
                            etcdctl(o)
                        ),
                    ),
                    other => (
                        format!("{other} alarm raised by {}", a.member),
                        format!("see etcd's log on {}; {} alarm disarm once it is dealt with", a.member, etcdctl(o)),
                    ),
                };
                out.push(Finding::fail("nospace", what, fix));
            }
        }
    }
    let mut largest: Option<(i64, String)> = None;
    if let Some(q) = o.quota {
        for m in &o.members {
            let Some(db) = m.db else { continue };
            if largest.as_ref().is_none_or(|(s, _)| db.size > *s) {
                largest = Some((db.size, short(m)));
            }
            if db.size * 100 > q * QUOTA_WARN_PERCENT {
                let one = m
                    .client_url
                    .as_deref()
                    .map(|u| etcdctl_at(o, u))
                    .unwrap_or_else(|| etcdctl(o));
                out.push(Finding::fail(
                    "nospace",
                    format!(
                        "{}'s database is {} of the {} quota ({}%): at the quota etcd raises NOSPACE and refuses writes",
                        label(m),
                        bytes(db.size),
                        bytes(q),
                        db.size * 100 / q.max(1)
                    ),
                    format!(
                        "compact, then defragment it: {}; or raise [etcd.flags] quota-backend-bytes on every member (etcd advises at most 8 GiB)",
                        with_etcdctl(&one, &[compact(o), "defrag".into()])
                    ),
                ));
            }
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "nospace",
            match largest {
                Some((s, who)) => format!(
                    "no alarm; every database under {QUOTA_WARN_PERCENT}% of the {quota_text} quota (largest: {who}, {})",
                    bytes(s)
                ),
                None => format!("no alarm (quota {quota_text})"),
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::doctor::fixtures::*;
    use crate::decide::doctor::{Alarm, Db};

    /// (what the row is, the change to the healthy observation, the failing finding's `what`
    /// fragment and exact `fix`, or None: the check passes).
    fn table() -> Vec<Row> {
        vec![
            ("nospace: no alarm, small databases", |_| {}, None),
            (
                "nospace: a NOSPACE alarm",
                |o| o.alarms = Ok(vec![Alarm { member: "etcd2".into(), alarm: "NOSPACE".into() }]),
                Some((
                    "NOSPACE alarm raised by etcd2: the cluster takes only reads and deletes",
                    format!("free space, then disarm: E='{CTL}'; $E compact 1234; $E defrag --cluster; $E alarm disarm (compacting drops the history before the current revision: watchers behind it list again). If the data needs the room, raise [etcd.flags] quota-backend-bytes (now 2.0 GiB) on every member first"),
                )),
            ),
            (
                "nospace: a database at 90% of the quota",
                |o| o.members[1].db = Some(Db { size: DEFAULT_QUOTA_BYTES / 10 * 9, in_use: DEFAULT_QUOTA_BYTES / 10 * 9 }),
                Some((
                    "etcd2 (https://10.0.0.12:2380)'s database is 1.8 GiB of the 2.0 GiB quota (89%)",
                    "compact, then defragment it: E='etcdctl --endpoints https://10.0.0.12:2379 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt --key /etc/etcd/pki/client.key'; $E compact 1234; $E defrag; or raise [etcd.flags] quota-backend-bytes on every member (etcd advises at most 8 GiB)".into(),
                )),
            ),
            (
                "nospace: quotas off, a big database is fine",
                |o| {
                    o.quota = None;
                    o.members[1].db = Some(Db { size: 9 << 30, in_use: 9 << 30 });
                },
                None,
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(nospace, table());
    }
}
