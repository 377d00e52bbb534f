//! `members`: every member's etcd answers.

use super::fix::etcdctl;
use super::text::{label, since};
use super::{CheckedMember, DoctorInput, Finding};

/// Every member's etcd answers. An unreachable one is named with since when, and how to bring it
/// back or remove it.
pub(crate) fn members(o: &DoctorInput) -> Vec<Finding> {
    let down: Vec<&CheckedMember> = o.members.iter().filter(|m| !m.reachable).collect();
    if down.is_empty() {
        return vec![Finding::ok(
            "members",
            format!("{n} of {n} members answer", n = o.members.len()),
        )];
    }
    down.into_iter()
        .map(|m| {
            let remove = format!("{} member remove {:x}", etcdctl(o), m.id);
            if m.name.is_empty() {
                return Finding::fail(
                    "members",
                    format!(
                        "member {:x} ({}) was added but never started{}",
                        m.id,
                        m.peer_url,
                        since(m, o.now)
                    ),
                    format!("start the node it was added for (`etcd-bootstrap run` there), or remove the entry on a healthy member: {remove}"),
                );
            }
            let role = if m.is_learner { "learner " } else { "" };
            let why = m.error.as_deref().unwrap_or("no answer");
            let start = if m.is_self {
                "start this node's agent (`systemctl start etcd-bootstrap`, or `etcd-bootstrap run`); its log says why etcd does not answer".to_string()
            } else {
                "if its VM is up, start its agent there (`systemctl start etcd-bootstrap`, or `etcd-bootstrap run`)".to_string()
            };
            Finding::fail(
                "members",
                format!("{role}{} does not answer ({why}){}", label(m), since(m, o.now)),
                format!(
                    "{start}; if it is gone for good, remove it on a healthy member: {remove}. {}",
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

    /// (what the row is, the change to the healthy observation, the failing finding's `what`
    /// fragment and exact `fix`, or None: the check passes).
    fn table() -> Vec<Row> {
        vec![
            ("members: all answer", |_| {}, None),
            (
                "members: one down, since known",
                |o| down(o, 2, Some(NOW - 300)),
                Some((
                    "etcd3 (https://10.0.0.13:2380) does not answer (connection refused), unreachable since 20270115T075500Z (5m ago)",
                    format!("if its VM is up, start its agent there (`systemctl start etcd-bootstrap`, or `etcd-bootstrap run`); if it is gone for good, remove it on a healthy member: {CTL_12} member remove 103. {POLICY}"),
                )),
            ),
            (
                "members: added, never started",
                |o| {
                    o.members[2].name.clear();
                    o.members[2].client_url = None;
                    down(o, 2, None);
                },
                Some((
                    "member 103 (https://10.0.0.13:2380) was added but never started",
                    format!("start the node it was added for (`etcd-bootstrap run` there), or remove the entry on a healthy member: {CTL_12} member remove 103"),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(members, table());
    }
}
