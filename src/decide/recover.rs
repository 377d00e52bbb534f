//! When a majority of the members is lost for good: may this member be started alone with
//! `--force-new-cluster` (`etcd-bootstrap recover`), and what should an operator be told. Pure,
//! tested by its table.
//!
//! etcd rules relied on: a cluster of N voters needs floor(N/2)+1 of them to commit anything;
//! `--force-new-cluster` rewrites the membership to the local member alone and keeps its data,
//! so it is right only when no quorum can come back, and only on the member whose log is the
//! longest (the highest raft index): any other would drop entries that a majority once committed.

use std::fmt;

/// One member of the last-known membership, as seen from this node now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberSeen {
    pub id: u64,
    /// Name or peer URL, for messages.
    pub who: String,
    pub is_self: bool,
    /// Its etcd answers as a member of this cluster (it may still lack a leader).
    pub etcd_answers: bool,
    /// Its agent answered: whether it holds data and the raft index it recorded.
    pub agent: Option<AgentSeen>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AgentSeen {
    pub has_data: bool,
    pub raft_index: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecoveryVerdict {
    Proceed,
    Refuse(String),
}

/// Whether this member may recover the cluster alone. `local_index` is its own raft index (from
/// its identity record), `local_healthy` whether it can serve a linearizable read now.
pub(crate) fn may_recover(
    local_healthy: bool,
    local_index: Option<u64>,
    members: &[MemberSeen],
) -> RecoveryVerdict {
    if !members.iter().any(|m| m.is_self) {
        return RecoveryVerdict::Refuse(
            "this node is not in the last-known membership (its identity record); run recover on a member that is".into(),
        );
    }
    if local_healthy {
        return RecoveryVerdict::Refuse(
            "the local member is healthy: the cluster has a quorum and nothing needs recovering"
                .into(),
        );
    }
    let quorum = members.len() / 2 + 1;
    let answering: Vec<&str> = members
        .iter()
        .filter(|m| m.etcd_answers)
        .map(|m| m.who.as_str())
        .collect();
    if answering.len() >= quorum {
        return RecoveryVerdict::Refuse(format!(
            "{} of {} members answer ({}): a quorum can still form; wait for it or bring the others back instead of recovering",
            answering.len(),
            members.len(),
            answering.join(", ")
        ));
    }
    let mine = local_index.unwrap_or(0);
    if let Some((who, index)) = members
        .iter()
        .filter(|m| !m.is_self)
        .filter_map(|m| {
            let a = m.agent?;
            a.has_data.then_some((m.who.as_str(), a.raft_index?))
        })
        .max_by_key(|(_, i)| *i)
    {
        if index > mine {
            return RecoveryVerdict::Refuse(format!(
                "{who} holds data up to raft index {index}, beyond this member's {mine}: run `etcd-bootstrap recover` there instead, or its newer entries are lost"
            ));
        }
    }
    RecoveryVerdict::Proceed
}

/// Going back to the newest snapshot: with `restore --from` while the members' agents run (a
/// restored cluster needs a quorum of them), else through the total-loss path.
const RESTORE_BY_REPLACING: &str = "with the members' VMs there, `etcd-bootstrap restore --from {id}` on any one of them; with VMs lost for good, give every member an empty data dir (new VMs, or stop every agent and move each data dir aside) and the agents restore it as they form the cluster again";

/// What the agents' logs, `status` and `plan` say when a quorum is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuorumLoss {
    pub unreachable: Vec<String>,
    pub quorum: usize,
    pub members: usize,
    /// The member that holds the longest log among those that could be asked, and its index.
    pub highest: Option<(String, u64)>,
    /// The newest snapshot's id and age, when the store could be read.
    pub newest_snapshot: Option<(String, String)>,
}

impl QuorumLoss {
    /// What to do about it: wait for the unreachable members, or, if they are lost for good,
    /// the command that brings the cluster back (`doctor` gives this as the fix).
    pub(crate) fn remedy(&self) -> String {
        let mut f = String::from(
            "If the unreachable members come back, nothing needs doing. If they are lost for good: ",
        );
        match (&self.highest, &self.newest_snapshot) {
            (Some((who, _)), Some((id, _))) => f.push_str(&format!(
                "run `etcd-bootstrap recover` on {who} (keeps every key it has), or go back to snapshot {id}: {}",
                RESTORE_BY_REPLACING.replace("{id}", id)
            )),
            (Some((who, _)), None) => f.push_str(&format!(
                "run `etcd-bootstrap recover` on {who} (keeps every key it has)"
            )),
            (None, Some((id, _))) => f.push_str(&format!(
                "go back to snapshot {id}: {}",
                RESTORE_BY_REPLACING.replace("{id}", id)
            )),
            (None, None) => {
                f.push_str("run `etcd-bootstrap recover` on the member with the highest raft index")
            }
        }
        f
    }
}

impl fmt::Display for QuorumLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quorum lost: {} of {} members unreachable ({}), {} needed",
            self.unreachable.len(),
            self.members,
            self.unreachable.join(", "),
            self.quorum
        )?;
        if let Some((who, index)) = &self.highest {
            write!(f, "; the highest raft index is {index} on {who}")?;
        }
        match &self.newest_snapshot {
            Some((id, age)) => write!(f, "; newest snapshot {id} ({age} old)")?,
            None => write!(f, "; no snapshot known")?,
        }
        write!(f, ". {}", self.remedy())
    }
}

/// The quorum-loss report, or `None` when a quorum answers.
pub(crate) fn quorum_loss(
    members: &[MemberSeen],
    local_index: Option<u64>,
    newest_snapshot: Option<(String, String)>,
) -> Option<QuorumLoss> {
    let quorum = members.len() / 2 + 1;
    let answering = members.iter().filter(|m| m.etcd_answers).count();
    if members.is_empty() || answering >= quorum {
        return None;
    }
    let highest = members
        .iter()
        .filter_map(|m| {
            let index = if m.is_self {
                local_index?
            } else {
                let a = m.agent?;
                if !a.has_data {
                    return None;
                }
                a.raft_index?
            };
            Some((m.who.clone(), index))
        })
        .max_by_key(|(_, i)| *i);
    Some(QuorumLoss {
        unreachable: members
            .iter()
            .filter(|m| !m.etcd_answers)
            .map(|m| m.who.clone())
            .collect(),
        quorum,
        members: members.len(),
        highest,
        newest_snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, answers: bool, agent: Option<(bool, u64)>) -> MemberSeen {
        MemberSeen {
            id,
            who: format!("etcd{id}"),
            is_self: id == 1,
            etcd_answers: answers,
            agent: agent.map(|(has_data, i)| AgentSeen {
                has_data,
                raft_index: Some(i),
            }),
        }
    }

    #[test]
    fn may_recover_table() {
        let proceed = RecoveryVerdict::Proceed;
        // (local healthy, local index, members, expected: proceed or a refusal mentioning ...)
        let table: Vec<(bool, u64, Vec<MemberSeen>, Option<&str>)> = vec![
            // The survivor, two members gone for good (no etcd, no agent): recover.
            (
                false,
                100,
                vec![m(1, true, None), m(2, false, None), m(3, false, None)],
                None,
            ),
            // Their agents answer without data (VMs replaced, disks new): still recover.
            (
                false,
                100,
                vec![
                    m(1, true, None),
                    m(2, false, Some((false, 0))),
                    m(3, false, None),
                ],
                None,
            ),
            // The local member is healthy: nothing to recover.
            (
                true,
                100,
                vec![m(1, true, None), m(2, true, None), m(3, false, None)],
                Some("healthy"),
            ),
            // Two of three etcds answer: a quorum can form.
            (
                false,
                100,
                vec![m(1, true, None), m(2, true, None), m(3, false, None)],
                Some("quorum can still form"),
            ),
            // Another member's data is ahead: recover there.
            (
                false,
                100,
                vec![
                    m(1, true, None),
                    m(2, false, Some((true, 120))),
                    m(3, false, None),
                ],
                Some("etcd2 holds data up to raft index 120"),
            ),
            // ... and behind: here.
            (
                false,
                100,
                vec![
                    m(1, true, None),
                    m(2, false, Some((true, 90))),
                    m(3, false, None),
                ],
                None,
            ),
            // Five members, three lost: recover; with two answering it still is.
            (
                false,
                100,
                vec![
                    m(1, true, None),
                    m(2, true, None),
                    m(3, false, None),
                    m(4, false, None),
                    m(5, false, None),
                ],
                None,
            ),
            // Not in the membership at all.
            (
                false,
                100,
                vec![m(2, false, None), m(3, false, None)],
                Some("not in the last-known membership"),
            ),
        ];
        for (i, (healthy, index, members, want)) in table.into_iter().enumerate() {
            let got = may_recover(healthy, Some(index), &members);
            match want {
                None => assert_eq!(got, proceed, "case {i}"),
                Some(part) => {
                    assert!(
                        matches!(&got, RecoveryVerdict::Refuse(m) if m.contains(part)),
                        "case {i}: {got:?}"
                    )
                }
            }
        }
    }

    #[test]
    fn quorum_loss_says_what_to_run() {
        let members = vec![
            m(1, true, None),
            m(2, false, Some((true, 120))),
            m(3, false, None),
        ];
        assert_eq!(
            quorum_loss(
                &[m(1, true, None), m(2, true, None), m(3, false, None)],
                Some(1),
                None
            ),
            None
        );
        let q = quorum_loss(&members, Some(100), Some(("s1".into(), "5m".into()))).unwrap();
        assert_eq!(q.highest, Some(("etcd2".into(), 120)));
        let text = q.to_string();
        assert!(
            text.contains("2 of 3 members unreachable (etcd2, etcd3), 2 needed"),
            "{text}"
        );
        assert!(text.contains("`etcd-bootstrap recover` on etcd2"), "{text}");
        assert!(
            text.contains("go back to snapshot s1: with the members' VMs there, `etcd-bootstrap restore --from s1` on any one of them; with VMs lost for good, give every member an empty data dir"),
            "{text}"
        );
    }
}
