//! The first-boot decision's entry: the local data dir first (a WAL: restart; `member/` without
//! one: move it aside), then what the peers' etcd answered: no cluster (`new_cluster`), one
//! (`join`), or two (refused: a split needs an operator).

use super::action::Action;
use super::join::when_one_answers;
use super::new_cluster::when_none_answers;
use super::observations::Observations;
use crate::model::cluster::{Answer, ClusterView};
use crate::model::local::LocalState;
use std::collections::BTreeMap;

/// What to do with the local member.
pub(crate) fn decide(obs: &Observations) -> Action {
    if let Some(action) = from_the_data_dir(&obs.local) {
        return action;
    }
    match one_cluster(&obs.answers) {
        Err(refusal) => refusal,
        Ok(None) => when_none_answers(obs),
        Ok(Some((cluster_id, views))) => when_one_answers(obs, cluster_id, &views),
    }
}

/// Data in the data dir decides alone: a WAL is restarted whatever else is seen.
fn from_the_data_dir(local: &LocalState) -> Option<Action> {
    if local.has_wal {
        return Some(Action::Restart);
    }
    if local.has_member_dir {
        // Nothing was committed without a WAL; keep it aside rather than start over it.
        return Some(Action::MoveAside(
            "the data dir holds member/ without a WAL (an interrupted start)".into(),
        ));
    }
    None
}

/// The cluster the peers' etcd answer as, with each endpoint's view of it: none, one, or a
/// refusal when they answer as two different clusters.
fn one_cluster(answers: &[Answer]) -> Result<Option<(u64, Vec<&ClusterView>)>, Action> {
    let mut by_id: BTreeMap<u64, Vec<&ClusterView>> = BTreeMap::new();
    for a in answers {
        if let Answer::Cluster(c) = a {
            by_id.entry(c.cluster_id).or_default().push(c);
        }
    }
    if by_id.len() > 1 {
        let desc = by_id
            .iter()
            .map(|(id, views)| {
                let eps: Vec<&str> = views.iter().map(|v| v.endpoint.as_str()).collect();
                format!("cluster {id:x} at {}", eps.join(" "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Action::Refuse(format!(
            "peers answer as two different clusters ({desc}); a split like this needs an operator"
        )));
    }
    Ok(by_id.into_iter().next())
}

#[cfg(test)]
mod tests {
    use crate::decide::bootstrap::fixtures::*;
    use crate::decide::bootstrap::{decide, Action};
    use crate::model::cluster::Answer;

    #[test]
    fn wal_means_restart_whatever_else_is_seen() {
        let mut o = obs(3, Some(1));
        o.local.has_wal = true;
        o.local.has_member_dir = true;
        o.stable = false;
        o.answers = vec![
            answer(1, 2, vec![member(2, true, "x")]),
            answer(2, 3, vec![member(3, true, "y")]),
        ];
        assert_eq!(decide(&o), Action::Restart);
    }

    #[test]
    fn member_dir_without_wal_is_moved_aside() {
        let mut o = obs(3, Some(1));
        o.local.has_member_dir = true;
        assert!(matches!(decide(&o), Action::MoveAside(_)));
    }

    #[test]
    fn two_clusters_answering_is_refused() {
        let mut o = obs(3, Some(1));
        o.answers = vec![
            answer(0xaa, 2, vec![member(2, true, "x")]),
            Answer::NoAnswer("connection refused".into()),
            answer(0xbb, 3, vec![member(3, true, "y")]),
        ];
        match decide(&o) {
            Action::Refuse(m) => {
                assert!(m.contains("cluster aa") && m.contains("cluster bb"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
