//! "Was I removed?": whether the heal loop may move this member's data aside and join again.
//!
//! Moving a data dir aside throws away this member's copy of the cluster, so it needs a majority
//! of this member's own last-known membership to say so, in its own cluster ID: each of them a
//! voter that knows a leader and whose member list no longer has this member's peer URL. One
//! peer's word is not enough (a stale DNS record, a partition). A peer answering with another
//! cluster ID is never a reason to move data: etcd members of different clusters ignore each
//! other ("cluster ID mismatch") and never tell one another what to do, so such an answer means
//! a wrong peer list or DNS record, which an operator has to fix.

use crate::model::cluster::{Answer, ClusterView};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemovalVerdict {
    /// A majority agrees this member was removed: heal.
    Removed(String),
    /// A voter with a leader lists this member: nothing to heal.
    Member,
    /// Not enough evidence either way: do nothing this round.
    Undecided(String),
    /// Only another cluster answered: refuse to act, loudly. `clusters`: the IDs that answered.
    Foreign { what: String, clusters: Vec<u64> },
}

/// `known_members`: the size of this member's last-known membership (itself included);
/// `answers`: what the other members' etcd said.
pub(crate) fn verdict(
    my_url: &str,
    my_cluster_id: Option<u64>,
    known_members: usize,
    answers: &[Answer],
) -> RemovalVerdict {
    let Some(mine) = my_cluster_id else {
        return RemovalVerdict::Undecided(
            "this member's own cluster ID is unknown (no answer from the local etcd and no identity record)".into(),
        );
    };
    let views: Vec<&ClusterView> = answers
        .iter()
        .filter_map(|a| match a {
            Answer::Cluster(c) => Some(c),
            Answer::NoAnswer(_) => None,
        })
        .collect();
    let authoritative = |v: &&&ClusterView| v.cluster_id == mine && !v.is_learner && v.leader != 0;
    let agree: Vec<&str> = views
        .iter()
        .filter(authoritative)
        .filter(|v| {
            !v.members
                .iter()
                .any(|m| m.peer_urls.iter().any(|u| u == my_url))
        })
        .map(|v| v.endpoint.as_str())
        .collect();
    let quorum = known_members.max(1) / 2 + 1;
    if agree.len() >= quorum {
        return RemovalVerdict::Removed(format!(
            "{my_url} is not in the member list of cluster {mine:x} according to {} of the {known_members} last-known members ({})",
            agree.len(),
            agree.join(", ")
        ));
    }
    if views.iter().filter(authoritative).any(|v| {
        v.members
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| u == my_url))
    }) {
        return RemovalVerdict::Member;
    }
    let foreign: Vec<&&ClusterView> = views.iter().filter(|v| v.cluster_id != mine).collect();
    if !foreign.is_empty() && agree.is_empty() {
        let what = foreign
            .iter()
            .map(|v| format!("{} answers as cluster {:x}", v.endpoint, v.cluster_id))
            .collect::<Vec<_>>()
            .join("; ");
        return RemovalVerdict::Foreign {
            what: format!(
                "{what} (this member is in cluster {mine:x}); check DNS records and discovery.peers: the data stays where it is"
            ),
            clusters: foreign.iter().map(|v| v.cluster_id).collect(),
        };
    }
    RemovalVerdict::Undecided(format!(
        "{} of the {quorum} members needed say {my_url} was removed from cluster {mine:x}",
        agree.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::MemberView;

    const ME: &str = "https://10.0.0.1:2380";

    fn view(from: u8, cluster: u64, leader: u64, listed: &[u8]) -> Answer {
        Answer::Cluster(ClusterView {
            endpoint: format!("https://10.0.0.{from}:2379"),
            cluster_id: cluster,
            member_id: from as u64,
            leader,
            is_learner: false,
            members: listed
                .iter()
                .map(|i| MemberView {
                    id: *i as u64,
                    name: format!("n{i}"),
                    peer_urls: vec![format!("https://10.0.0.{i}:2380")],
                    client_urls: vec![format!("https://10.0.0.{i}:2379")],
                    is_learner: false,
                })
                .collect(),
        })
    }

    fn down() -> Answer {
        Answer::NoAnswer("connection refused".into())
    }

    #[test]
    fn verdict_table() {
        use RemovalVerdict::*;
        let kind = |v: &RemovalVerdict| match v {
            Removed(_) => "removed",
            Member => "member",
            Undecided(_) => "undecided",
            Foreign { .. } => "foreign",
        };
        // (own cluster, known members, answers, expected)
        let table: Vec<(Option<u64>, usize, Vec<Answer>, &str)> = vec![
            // Both others, same cluster, with a leader, without me: removed.
            (
                Some(7),
                3,
                vec![view(2, 7, 2, &[2, 3]), view(3, 7, 2, &[2, 3])],
                "removed",
            ),
            // Only one of them says so, the other is down: one peer's word is not enough.
            (
                Some(7),
                3,
                vec![view(2, 7, 2, &[2, 3]), down()],
                "undecided",
            ),
            // One says removed, the other still lists me: member.
            (
                Some(7),
                3,
                vec![view(2, 7, 2, &[2, 3]), view(3, 7, 2, &[1, 2, 3])],
                "member",
            ),
            // Another cluster answers (a stale DNS record): never a reason to move data.
            (Some(7), 3, vec![view(9, 8, 9, &[9]), down()], "foreign"),
            (
                Some(7),
                3,
                vec![view(9, 8, 9, &[9]), view(8, 8, 9, &[8, 9])],
                "foreign",
            ),
            // Without a leader their lists do not count.
            (
                Some(7),
                3,
                vec![view(2, 7, 0, &[2, 3]), view(3, 7, 0, &[2, 3])],
                "undecided",
            ),
            // Own cluster unknown: nothing is decided.
            (
                None,
                3,
                vec![view(2, 7, 2, &[2, 3]), view(3, 7, 2, &[2, 3])],
                "undecided",
            ),
            // Five members: three of the four others must agree.
            (
                Some(7),
                5,
                vec![
                    view(2, 7, 2, &[2, 3, 4, 5]),
                    view(3, 7, 2, &[2, 3, 4, 5]),
                    down(),
                    down(),
                ],
                "undecided",
            ),
            (
                Some(7),
                5,
                vec![
                    view(2, 7, 2, &[2, 3, 4, 5]),
                    view(3, 7, 2, &[2, 3, 4, 5]),
                    view(4, 7, 2, &[2, 3, 4, 5]),
                    down(),
                ],
                "removed",
            ),
            // Nobody answers.
            (Some(7), 3, vec![down(), down()], "undecided"),
        ];
        for (i, (cluster, known, answers, want)) in table.into_iter().enumerate() {
            let got = verdict(ME, cluster, known, &answers);
            assert_eq!(kind(&got), want, "case {i}: {got:?}");
        }
    }
}
