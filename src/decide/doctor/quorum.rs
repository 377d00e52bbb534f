//! `quorum`: a majority of the voting members answers.

use super::text::{label, since};
use super::{CheckedMember, DoctorInput, Finding};
use crate::decide::recover;
use crate::util::time::age_text;

/// A majority of the voting members answers. Without one: who is unreachable since when, and
/// the quorum-loss remedy (`decide::recover`). etcd rule: N voters need floor(N/2)+1.
pub(crate) fn quorum(o: &DoctorInput) -> Vec<Finding> {
    let voters: Vec<&CheckedMember> = o.members.iter().filter(|m| !m.is_learner).collect();
    if voters.is_empty() {
        return vec![Finding::fail(
            "quorum",
            "no membership is known: no member answered and the identity record lists none",
            "start this node's agent (`etcd-bootstrap run`) and check its log",
        )];
    }
    let seen: Vec<recover::MemberSeen> = voters
        .iter()
        .map(|m| recover::MemberSeen {
            id: m.id,
            who: label(m),
            is_self: m.is_self,
            etcd_answers: m.reachable,
            agent: m.agent,
        })
        .collect();
    let newest = o
        .snapshot
        .as_ref()
        .and_then(|s| s.newest.as_ref().ok().cloned().flatten())
        .map(|(id, age)| (id, age_text(age)));
    let needed = voters.len() / 2 + 1;
    match recover::quorum_loss(&seen, o.local_index, newest) {
        None => {
            let up = voters.iter().filter(|m| m.reachable).count();
            vec![Finding::ok(
                "quorum",
                format!(
                    "{up} of {} voting members answer ({needed} needed)",
                    voters.len()
                ),
            )]
        }
        Some(loss) => {
            let down: Vec<String> = voters
                .iter()
                .filter(|m| !m.reachable)
                .map(|m| format!("{}{}", label(m), since(m, o.now)))
                .collect();
            let from = if o.membership_from_record {
                " (membership from this node's identity record: no member answered)"
            } else {
                ""
            };
            vec![Finding::fail(
                "quorum",
                format!(
                    "quorum lost: {} of {} voting members unreachable ({}), {needed} needed{from}",
                    down.len(),
                    voters.len(),
                    down.join("; ")
                ),
                match &o.auto_recovery {
                    Some(a) => format!("{a}. {}", loss.remedy()),
                    None => loss.remedy(),
                },
            )]
        }
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
            ("quorum: healthy", |_| {}, None),
            ("quorum: one of three down keeps it", |o| down(o, 2, None), None),
            (
                "quorum: two of three down, with a snapshot",
                |o| {
                    down(o, 1, Some(NOW - 720));
                    down(o, 2, None);
                },
                Some((
                    "quorum lost: 2 of 3 voting members unreachable (etcd2 (https://10.0.0.12:2380), unreachable since 20270115T074800Z (12m ago); etcd3 (https://10.0.0.13:2380)), 2 needed",
                    "If the unreachable members come back, nothing needs doing. If they are lost for good: run `etcd-bootstrap recover` on etcd1 (https://10.0.0.11:2380) (keeps every key it has), or go back to snapshot 20270115T080000Z-r90: with the members' VMs there, `etcd-bootstrap restore --from 20270115T080000Z-r90` on any one of them; with VMs lost for good, give every member an empty data dir (new VMs, or stop every agent and move each data dir aside) and the agents restore it as they form the cluster again".into(),
                )),
            ),
            (
                "quorum: lost, with what the agents do by themselves",
                |o| {
                    down(o, 1, None);
                    down(o, 2, None);
                    o.auto_recovery = Some("automatic recovery waits: 1 of 3 members' agents have not answered: etcd3".into());
                },
                Some((
                    "quorum lost: 2 of 3",
                    "automatic recovery waits: 1 of 3 members' agents have not answered: etcd3. If the unreachable members come back, nothing needs doing. If they are lost for good: run `etcd-bootstrap recover` on etcd1 (https://10.0.0.11:2380) (keeps every key it has), or go back to snapshot 20270115T080000Z-r90: with the members' VMs there, `etcd-bootstrap restore --from 20270115T080000Z-r90` on any one of them; with VMs lost for good, give every member an empty data dir (new VMs, or stop every agent and move each data dir aside) and the agents restore it as they form the cluster again".into(),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(quorum, table());
    }
}
