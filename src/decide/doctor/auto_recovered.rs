//! `auto_recovery`: what an automatic recovery on this node did.

use super::{DoctorInput, Finding};

/// An automatic recovery happened on this node (`decide::quorum_recovery`): from which copy,
/// and whether history was lost. Revisions lost fail the check: writes acknowledged to clients
/// in that window are gone, which someone has to know about.
pub(crate) fn auto_recovered(o: &DoctorInput) -> Vec<Finding> {
    let Some((r, note)) = &o.last_auto_recovery else {
        return vec![];
    };
    match r.lost {
        Some(0) => vec![Finding::ok(
            "auto_recovery",
            format!("automatic recovery at {}: {}", r.at, r.what),
        )],
        lost => vec![Finding::fail(
            "auto_recovery",
            format!(
                "automatic recovery at {} lost {} revisions: {}",
                r.at,
                lost.map(|l| l.to_string()).unwrap_or("an unknown number of".into()),
                r.what
            ),
            format!("writes made in those revisions before the quorum was lost are gone: check what your clients wrote then; delete {note} once that is settled"),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::doctor::fixtures::*;

    /// (what the row is, the change to the healthy observation, the failing finding's `what`
    /// fragment and exact `fix`, or None: the check passes).
    fn table() -> Vec<Row> {
        vec![
            (
                "auto_recovery: nothing lost",
                |o| {
                    o.last_auto_recovery = Some((
                        crate::decide::quorum_recovery::Recovered {
                            at: "20270115T070000Z".into(),
                            what: "automatic recovery from member 1".into(),
                            lost: Some(0),
                        },
                        "/var/lib/etcd.auto-recovered".into(),
                    ))
                },
                None,
            ),
            (
                "auto_recovery: revisions lost",
                |o| {
                    o.last_auto_recovery = Some((
                        crate::decide::quorum_recovery::Recovered {
                            at: "20270115T070000Z".into(),
                            what: "automatic recovery from member 1".into(),
                            lost: Some(7),
                        },
                        "/var/lib/etcd.auto-recovered".into(),
                    ))
                },
                Some((
                    "automatic recovery at 20270115T070000Z lost 7 revisions",
                    "writes made in those revisions before the quorum was lost are gone: check what your clients wrote then; delete /var/lib/etcd.auto-recovered once that is settled".into(),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(auto_recovered, table());
    }

    /// No automatic recovery happened: no line about it.
    #[test]
    fn no_auto_recovery_no_line() {
        assert!(auto_recovered(&healthy()).is_empty());
    }
}
