//! Quorum lost with every member accounted for (issue 27): when no quorum of the last recorded
//! membership can form and the agent of *every* member of it answers, which copy the cluster
//! comes back from, and who acts. Pure, tested by its table.
//!
//! etcd rules relied on: a cluster of N voters commits nothing without floor(N/2)+1 of them, so
//! with fewer members holding data than that, nothing can come back on its own; raft's log with
//! the highest (term, index) holds every entry a majority ever committed among the copies left
//! (the election rule: a candidate needs a log at least as up to date, by last term then
//! index); `--force-new-cluster` keeps the local member's data and rewrites the membership to it
//! alone, so it is run on that copy, and on one member only (two would fork the cluster). The
//! term compared is the one the member last saw with a leader: a member without a quorum may
//! campaign and raise its current term (etcd 3.4 has no pre-vote by default) with no new entry.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The note an agent leaves beside its data dir when it carried an automatic recovery out
/// (`<data_dir>.auto-recovered`), for `doctor` and `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Recovered {
    /// UTC, sortable (`util::time::utc_stamp`).
    pub at: String,
    /// The decision, as logged: from which copy, the highest revision seen, revisions lost.
    pub what: String,
    /// Revisions behind the highest any member or the store had seen; `None`: unknown.
    pub lost: Option<i64>,
}

impl Decision {
    /// Revisions lost, when this decision recovers.
    pub(crate) fn lost(&self) -> Option<i64> {
        match self {
            Decision::Recover { lost, .. } => *lost,
            _ => None,
        }
    }
}

/// What one member's agent answered at its peer endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HoldingAnswer {
    /// No answer (down, unreachable, refused): why, for the message.
    Missing(String),
    /// It answered but cannot read its own identity record (503): it cannot tell what it holds.
    CannotTell(String),
    Report(Holding),
}

/// What a member's agent says it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Holding {
    pub cluster_name: String,
    /// The cluster its data (or record) belongs to; `None` for a node that never joined one.
    pub cluster_id: Option<u64>,
    pub has_data: bool,
    /// The raft term it last saw with a leader, and its raft index and revision.
    pub term: Option<u64>,
    pub index: Option<u64>,
    pub revision: Option<i64>,
}

/// One member of the last recorded membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberAnswer {
    pub id: u64,
    /// Its peer URL (or name), for messages.
    pub who: String,
    pub answer: HoldingAnswer,
}

/// The newest signed snapshot of this cluster in the store, when `[backup]` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorePoint {
    pub id: String,
    pub revision: i64,
    /// When it was taken (RFC 3339), for messages.
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inputs<'a> {
    pub cluster_name: &'a str,
    pub cluster_id: u64,
    pub members: &'a [MemberAnswer],
    /// Whether a quorum of the membership's etcd members answers (then nothing is lost).
    pub quorum_answers: bool,
    /// The newest signed snapshot of this cluster: `Ok(None)` without `[backup]` or when the
    /// store holds none, `Err` when the store could not be read (then nothing is compared).
    pub store: Result<Option<StorePoint>, String>,
    /// `heal.auto_recover`.
    pub auto_recover: bool,
}

/// Where the cluster comes back from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecoverFrom {
    /// A member's data: its agent runs `recover` (one start with `--force-new-cluster`); the
    /// others join it.
    Member {
        id: u64,
        who: String,
        term: Option<u64>,
        index: u64,
        revision: Option<i64>,
    },
    /// The store's snapshot is newer than every member's data: the total-loss restore path.
    Store(StorePoint),
}

/// The automatic recovery's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Not (yet) a case for it: why (names the agents that have not answered).
    Wait(String),
    /// Something only a person can settle (a foreign answer, an agent that cannot tell).
    Blocked(String),
    /// Recover from `source`. `highest`: the highest revision any member or the store has
    /// seen; `lost`: how many revisions behind it the chosen copy is (0 when none are lost,
    /// `None` when a revision is unknown).
    Recover {
        source: RecoverFrom,
        highest: Option<i64>,
        lost: Option<i64>,
    },
    /// `heal.auto_recover = false`: what it would have done.
    Off(Box<Decision>),
}

impl Decision {
    /// The member whose agent recovers, when one does.
    pub(crate) fn recovering_member(&self) -> Option<u64> {
        match self {
            Decision::Recover {
                source: RecoverFrom::Member { id, .. },
                ..
            } => Some(*id),
            _ => None,
        }
    }
}

impl fmt::Display for RecoverFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoverFrom::Member {
                id,
                who,
                term,
                index,
                revision,
            } => {
                write!(f, "member {id:x} ({who}), raft index {index}")?;
                if let Some(t) = term {
                    write!(f, ", term {t}")?;
                }
                if let Some(r) = revision {
                    write!(f, ", revision {r}")?;
                }
                Ok(())
            }
            RecoverFrom::Store(p) => write!(
                f,
                "snapshot {} of the store (revision {}, taken {})",
                p.id, p.revision, p.created
            ),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Wait(why) => write!(f, "automatic recovery waits: {why}"),
            Decision::Blocked(why) => write!(
                f,
                "automatic recovery blocked: {why}; fix that, or run `etcd-bootstrap recover` by hand"
            ),
            Decision::Recover {
                source,
                highest,
                lost,
            } => {
                write!(f, "automatic recovery from {source}")?;
                match (highest, lost) {
                    (Some(h), Some(l)) => {
                        write!(f, "; highest revision seen {h}, revisions lost: {l}")
                    }
                    _ => write!(f, "; revisions lost: unknown"),
                }
            }
            Decision::Off(would) => write!(
                f,
                "heal.auto_recover is false: nothing is done by itself (it would be: {would})"
            ),
        }
    }
}

/// The decision. Every agent computes it from the same evidence, so they agree on the one
/// member that acts ("lowest member ID among the holders of the best copy").
pub(crate) fn decide(i: &Inputs) -> Decision {
    let d = decide_enabled(i);
    if i.auto_recover {
        d
    } else {
        Decision::Off(Box::new(d))
    }
}

/// The decision as if `heal.auto_recover` were on. It waits while a quorum answers, while any
/// agent has not, while the store cannot be read, and while a quorum of members holds data (their
/// etcd forms by itself); it is blocked by answers only a person can settle; else it recovers.
fn decide_enabled(i: &Inputs) -> Decision {
    if i.members.is_empty() {
        return Decision::Wait("no membership is recorded beside the data dir".into());
    }
    if i.quorum_answers {
        return Decision::Wait(
            "a quorum of the members' etcd answers: it elects a leader by itself".into(),
        );
    }
    if let Some(wait) = unanswered(i) {
        return wait;
    }
    let holders = match holders(i) {
        Ok(holders) => holders,
        Err(blocked) => return blocked,
    };
    let store = match &i.store {
        Ok(s) => s,
        Err(e) => {
            return Decision::Wait(format!(
                "the snapshot store cannot be read ({e}): its newest snapshot may be newer than every member's data"
            ))
        }
    };
    let quorum = i.members.len() / 2 + 1;
    if holders.len() >= quorum {
        return Decision::Wait(format!(
            "{} of {} members hold data: a quorum of them can form once their etcd runs",
            holders.len(),
            i.members.len()
        ));
    }
    recover_from(&holders, store.as_ref())
}

/// The wait while any member's agent has not answered: every member must be accounted for.
fn unanswered(i: &Inputs) -> Option<Decision> {
    let missing: Vec<String> = i
        .members
        .iter()
        .filter_map(|m| match &m.answer {
            HoldingAnswer::Missing(why) => Some(format!("{} ({why})", m.who)),
            _ => None,
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(Decision::Wait(format!(
        "{} of {} members' agents have not answered: {}; every member must be accounted for",
        missing.len(),
        i.members.len(),
        missing.join(", ")
    )))
}

/// The members that hold data of this cluster, every agent having answered; blocked by any
/// answer only a person can settle: an agent that cannot read its identity, one of another
/// `cluster.name`, data of another cluster, data without a raft index.
fn holders<'a>(i: &Inputs<'a>) -> Result<Vec<(&'a MemberAnswer, &'a Holding)>, Decision> {
    let mut blocks = vec![];
    let mut holders = vec![];
    for m in i.members {
        match &m.answer {
            HoldingAnswer::Missing(_) => unreachable!("handled by `unanswered`"),
            HoldingAnswer::CannotTell(why) => blocks.push(format!(
                "the agent of {} cannot read its identity ({why})",
                m.who
            )),
            HoldingAnswer::Report(h) if h.cluster_name != i.cluster_name => blocks.push(format!(
                "the agent at {} belongs to cluster.name \"{}\", not \"{}\"",
                m.who, h.cluster_name, i.cluster_name
            )),
            HoldingAnswer::Report(h) if h.has_data && h.cluster_id != Some(i.cluster_id) => blocks
                .push(format!(
                    "{} holds data of cluster {}, not {:x}",
                    m.who,
                    h.cluster_id
                        .map(|c| format!("{c:x}"))
                        .unwrap_or("unknown".into()),
                    i.cluster_id
                )),
            HoldingAnswer::Report(h) if h.has_data && h.index.is_none() => blocks.push(format!(
                "{} holds data of this cluster but reports no raft index",
                m.who
            )),
            HoldingAnswer::Report(h) if h.has_data => holders.push((m, h)),
            HoldingAnswer::Report(_) => {}
        }
    }
    if blocks.is_empty() {
        Ok(holders)
    } else {
        Err(Decision::Blocked(blocks.join("; ")))
    }
}

/// The best copy among the holders: the highest (term, index), ties to the lowest member ID.
fn best_copy<'a>(
    holders: &[(&'a MemberAnswer, &'a Holding)],
) -> Option<(&'a MemberAnswer, &'a Holding)> {
    // Holders that lack a term (records of older versions) are compared by index alone, all of
    // them: mixing known and unknown terms would rank by a missing figure.
    let all_terms = holders.iter().all(|(_, h)| h.term.is_some());
    let key = |h: &Holding| {
        (
            if all_terms { h.term.unwrap_or(0) } else { 0 },
            h.index.unwrap_or(0),
        )
    };
    holders
        .iter()
        .max_by(|(a, ha), (b, hb)| key(ha).cmp(&key(hb)).then(b.id.cmp(&a.id)))
        .copied()
}

/// Recover from the best copy, or from the store's snapshot when it is newer than that copy (or
/// no member holds data); the revisions lost are counted from the highest any of them has seen.
fn recover_from(holders: &[(&MemberAnswer, &Holding)], store: Option<&StorePoint>) -> Decision {
    let best = best_copy(holders);
    let highest = holders
        .iter()
        .filter_map(|(_, h)| h.revision)
        .chain(store.map(|s| s.revision))
        .max();
    match (best, store) {
        (Some((_, h)), Some(s)) if h.revision.is_some_and(|r| s.revision > r) => {
            Decision::Recover {
                source: RecoverFrom::Store(s.clone()),
                highest,
                lost: highest.map(|hi| hi - s.revision),
            }
        }
        (Some((m, h)), _) => Decision::Recover {
            source: RecoverFrom::Member {
                id: m.id,
                who: m.who.clone(),
                term: h.term,
                index: h.index.unwrap_or(0),
                revision: h.revision,
            },
            highest,
            lost: match (highest, h.revision) {
                (Some(hi), Some(r)) => Some(hi - r),
                _ => None,
            },
        },
        (None, Some(s)) => Decision::Recover {
            source: RecoverFrom::Store(s.clone()),
            highest,
            lost: Some(0),
        },
        (None, None) => Decision::Blocked(
            "no member holds data and the store has no snapshot of this cluster".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: u64 = 0xc1;

    fn holder(term: u64, index: u64, revision: i64) -> HoldingAnswer {
        HoldingAnswer::Report(Holding {
            cluster_name: "lab".into(),
            cluster_id: Some(CLUSTER),
            has_data: true,
            term: Some(term),
            index: Some(index),
            revision: Some(revision),
        })
    }

    fn wiped() -> HoldingAnswer {
        HoldingAnswer::Report(Holding {
            cluster_name: "lab".into(),
            ..Default::default()
        })
    }

    fn m(id: u64, answer: HoldingAnswer) -> MemberAnswer {
        MemberAnswer {
            id,
            who: format!("etcd{id}"),
            answer,
        }
    }

    fn point(revision: i64) -> StorePoint {
        StorePoint {
            id: format!("s-r{revision}"),
            revision,
            created: "2026-12-07T03:00:00Z".into(),
        }
    }

    fn from_member(id: u64, lost: i64) -> Box<dyn Fn(&Decision) -> bool> {
        Box::new(
            move |d| matches!(d, Decision::Recover { source: RecoverFrom::Member { id: got, .. }, lost: Some(l), .. } if *got == id && *l == lost),
        )
    }

    fn waits(part: &'static str) -> Box<dyn Fn(&Decision) -> bool> {
        Box::new(move |d| matches!(d, Decision::Wait(w) if w.contains(part)))
    }

    fn blocked(part: &'static str) -> Box<dyn Fn(&Decision) -> bool> {
        Box::new(move |d| matches!(d, Decision::Blocked(w) if w.contains(part)))
    }

    #[test]
    fn decide_table() {
        type Case = (
            &'static str,
            Vec<MemberAnswer>,
            // None: the store cannot be read.
            Option<Option<StorePoint>>,
            Box<dyn Fn(&Decision) -> bool>,
        );
        let table: Vec<Case> = vec![
            (
                "all answer: the only holder recovers",
                vec![m(1, holder(3, 100, 40)), m(2, wiped()), m(3, wiped())],
                Some(None),
                from_member(1, 0),
            ),
            (
                "one missing: wait, naming it",
                vec![
                    m(1, holder(3, 100, 40)),
                    m(2, wiped()),
                    m(3, HoldingAnswer::Missing("connection refused".into())),
                ],
                Some(None),
                waits("1 of 3 members' agents have not answered: etcd3 (connection refused)"),
            ),
            (
                "a foreign cluster ID blocks",
                vec![
                    m(1, holder(3, 100, 40)),
                    m(
                        2,
                        HoldingAnswer::Report(Holding {
                            cluster_name: "lab".into(),
                            cluster_id: Some(0xf0),
                            has_data: true,
                            term: Some(9),
                            index: Some(900),
                            revision: Some(400),
                        }),
                    ),
                    m(3, wiped()),
                ],
                Some(None),
                blocked("etcd2 holds data of cluster f0, not c1"),
            ),
            (
                "another cluster.name blocks",
                vec![
                    m(1, holder(3, 100, 40)),
                    m(
                        2,
                        HoldingAnswer::Report(Holding {
                            cluster_name: "other".into(),
                            ..Default::default()
                        }),
                    ),
                    m(3, wiped()),
                ],
                Some(None),
                blocked("belongs to cluster.name \"other\""),
            ),
            (
                "cannot read my identity blocks",
                vec![
                    m(1, holder(3, 100, 40)),
                    m(2, HoldingAnswer::CannotTell("permission denied".into())),
                    m(3, wiped()),
                ],
                Some(None),
                blocked("the agent of etcd2 cannot read its identity (permission denied)"),
            ),
            (
                "a tie: the lowest member ID among the holders of the best copy",
                vec![
                    m(5, holder(3, 100, 40)),
                    m(2, holder(3, 100, 40)),
                    m(3, wiped()),
                    m(4, wiped()),
                    m(1, wiped()),
                ],
                Some(None),
                from_member(2, 0),
            ),
            (
                "the higher term wins over the higher index",
                vec![
                    m(1, holder(3, 120, 50)),
                    m(2, holder(4, 110, 48)),
                    m(3, wiped()),
                    m(4, wiped()),
                    m(5, wiped()),
                ],
                Some(None),
                from_member(2, 2),
            ),
            (
                "the store newer: the total-loss restore path from it",
                vec![m(1, holder(3, 100, 40)), m(2, wiped()), m(3, wiped())],
                Some(Some(point(55))),
                Box::new(
                    |d| matches!(d, Decision::Recover { source: RecoverFrom::Store(p), lost: Some(0), highest: Some(55) } if p.revision == 55),
                ),
            ),
            (
                "the store older: the member's data, nothing lost",
                vec![m(1, holder(3, 100, 40)), m(2, wiped()), m(3, wiped())],
                Some(Some(point(30))),
                from_member(1, 0),
            ),
            (
                "a quorum of holders: their etcd forms a quorum, no recovery",
                vec![
                    m(1, holder(3, 100, 40)),
                    m(2, holder(3, 100, 40)),
                    m(3, wiped()),
                ],
                Some(None),
                waits("2 of 3 members hold data"),
            ),
            (
                "the store cannot be read: wait",
                vec![m(1, holder(3, 100, 40)), m(2, wiped()), m(3, wiped())],
                None,
                waits("the snapshot store cannot be read (unreadable)"),
            ),
            (
                "nothing anywhere",
                vec![m(1, wiped()), m(2, wiped()), m(3, wiped())],
                Some(None),
                blocked("no member holds data"),
            ),
        ];
        for (name, members, store, want) in table {
            let got = decide(&Inputs {
                cluster_name: "lab",
                cluster_id: CLUSTER,
                members: &members,
                quorum_answers: false,
                store: store.ok_or_else(|| "unreadable".to_string()),
                auto_recover: true,
            });
            assert!(want(&got), "{name}: {got:?}");
        }
    }

    #[test]
    fn a_quorum_answering_or_the_key_off_acts_on_nothing() {
        let members = vec![m(1, holder(3, 100, 40)), m(2, wiped()), m(3, wiped())];
        let mut i = Inputs {
            cluster_name: "lab",
            cluster_id: CLUSTER,
            members: &members,
            quorum_answers: true,
            store: Ok(None),
            auto_recover: true,
        };
        assert!(matches!(decide(&i), Decision::Wait(w) if w.contains("quorum")));
        i.quorum_answers = false;
        i.auto_recover = false;
        let d = decide(&i);
        assert!(matches!(&d, Decision::Off(would) if would.recovering_member() == Some(1)));
        assert_eq!(d.recovering_member(), None);
        assert!(d.to_string().contains("heal.auto_recover is false"), "{d}");
    }

    #[test]
    fn the_message_says_from_which_copy_and_what_was_lost() {
        let members = vec![
            m(1, holder(3, 100, 40)),
            m(2, holder(2, 80, 35)),
            m(3, wiped()),
            m(4, wiped()),
            m(5, wiped()),
        ];
        let d = decide(&Inputs {
            cluster_name: "lab",
            cluster_id: CLUSTER,
            members: &members,
            quorum_answers: false,
            store: Ok(None),
            auto_recover: true,
        });
        assert_eq!(
            d.to_string(),
            "automatic recovery from member 1 (etcd1), raft index 100, term 3, revision 40; highest revision seen 40, revisions lost: 0"
        );
    }
}
