//! `joins`: a node waiting to join is not held up by a dead member.

use super::fix::etcdctl;
use super::text::{label, short, since};
use super::{CheckedMember, DoctorInput, Finding};

/// A node waiting to join (listed by discovery, not a member) is not held up by a dead member.
/// etcd rules relied on: a member add is refused while any voter is not
/// connected to the member receiving it ("unhealthy cluster"), and while another learner is
/// there ("too many learner members"); a new member joins as a learner.
pub(crate) fn joins(o: &DoctorInput) -> Vec<Finding> {
    let blockers: Vec<&CheckedMember> = o.members.iter().filter(|m| !m.reachable).collect();
    if blockers.is_empty() {
        return vec![Finding::ok(
            "joins",
            "every member is connected: a new member can be added",
        )];
    }
    let listed: Vec<&str> = o.members.iter().map(|m| m.peer_url.as_str()).collect();
    let waiting: Vec<String> = match o.discovery.as_ref().map(|d| &d.read) {
        Some(Ok((peers, _))) => peers
            .iter()
            .filter(|p| !listed.contains(&p.as_str()))
            .cloned()
            .collect(),
        _ => vec![],
    };
    if waiting.is_empty() {
        return vec![Finding::ok(
            "joins",
            format!(
                "no node waits to join (a new member would be refused while {} is unreachable)",
                blockers
                    .iter()
                    .map(|m| short(m))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )];
    }
    blockers
        .into_iter()
        .map(|m| {
            let rule = if m.is_learner {
                "etcd takes one learner at a time and a new member joins as a learner"
            } else {
                "etcd refuses every member add while a voter is not connected (strict reconfiguration check)"
            };
            Finding::fail(
                "joins",
                format!(
                    "{} {} to join, blocked by {}{}: {rule}",
                    waiting.join(", "),
                    if waiting.len() == 1 { "waits" } else { "wait" },
                    label(m),
                    since(m, o.now)
                ),
                format!(
                    "if {} is gone for good, remove it on a healthy member: {} member remove {:x}. {}",
                    short(m),
                    etcdctl(o),
                    m.id,
                    o.dead_member_policy
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::doctor::fixtures::*;
    use crate::decide::doctor::quorum;

    /// (what the row is, the change to the healthy observation, the failing finding's `what`
    /// fragment and exact `fix`, or None: the check passes).
    fn table() -> Vec<Row> {
        vec![
            ("joins: every member connected", |_| {}, None),
            ("joins: a member down, nobody waiting", |o| down(o, 2, None), None),
            (
                "joins: a member down and a node waiting",
                |o| {
                    down(o, 2, Some(NOW - 60));
                    if let Some(d) = &mut o.discovery {
                        d.read.as_mut().unwrap().0.push("https://10.0.0.14:2380".into());
                    }
                },
                Some((
                    "https://10.0.0.14:2380 waits to join, blocked by etcd3 (https://10.0.0.13:2380), unreachable since 20270115T075900Z (60s ago): etcd refuses every member add while a voter is not connected",
                    format!("if etcd3 is gone for good, remove it on a healthy member: {CTL_12} member remove 103. {POLICY}"),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(joins, table());
    }

    #[test]
    fn a_learner_blocks_a_join_by_the_one_learner_rule() {
        let mut o = healthy();
        o.members[2].is_learner = true;
        down(&mut o, 2, None);
        if let Some(d) = &mut o.discovery {
            d.read
                .as_mut()
                .unwrap()
                .0
                .push("https://10.0.0.14:2380".into());
        }
        let got = joins(&o);
        assert!(
            got[0].what.contains("etcd takes one learner at a time"),
            "{}",
            got[0].what
        );
        // And it does not count against the quorum: both voters answer.
        let q = quorum(&o);
        assert!(
            q[0].ok && q[0].what == "2 of 2 voting members answer (2 needed)",
            "{q:?}"
        );
    }
}
