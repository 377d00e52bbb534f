//! One cluster answers: once it is confirmed to be this node's, replace this node's stale entry
//! (it ran with data that is gone), start as a late initial member of the cluster our peer set
//! forms, adopt this node's added but unstarted entry, or join as a new member.

use super::action::{Action, WaitReason};
use super::new_cluster::plan;
use super::observations::{AgentAnswer, Observations};
use super::report::AgentReport;
use crate::model::cluster::ClusterView;

/// The peers' etcd answer as the one cluster `cluster_id` (`views`: each endpoint's answer).
pub(super) fn when_one_answers(
    obs: &Observations,
    cluster_id: u64,
    views: &[&ClusterView],
) -> Action {
    if let Some(refusal) = not_our_cluster(obs, cluster_id) {
        return refusal;
    }
    let (view, endpoints) = membership(views);
    let my_url = obs
        .me
        .as_ref()
        .map(|m| m.peer_url.to_string())
        .or_else(|| obs.my_peer_url.as_ref().map(ToString::to_string));
    let mine = my_url
        .as_ref()
        .and_then(|u| view.members.iter().find(|m| m.peer_urls.contains(u)));

    if let Some(m) = mine.filter(|m| m.started()) {
        // It ran with data that is no longer here: such a member is gone for good (etcd
        // refuses it with "member has already been bootstrapped"); remove it, re-add it.
        return Action::ReplaceStale {
            cluster_id,
            member_id: m.id,
            endpoints,
        };
    }
    let planned = plan(obs);
    if let (Ok(ic), Some(m)) = (&planned, mine) {
        // Only an entry with the ID etcd derives from this URL and the token is an initial
        // member; one made by MemberAdd (a learner that never started) must be adopted.
        if ic.cluster_id() == cluster_id && !m.is_learner && ic.member_ids().contains(&m.id) {
            // The cluster our peer set forms, already started by faster peers, lists this node
            // as an initial member that has not started: start with the same flags. (Not listed
            // at all means it was removed: that is a join, never `new`.)
            return Action::BootstrapNew(ic.clone());
        }
    }
    if my_url.is_none() {
        return match planned {
            Err(action) => action,
            Ok(_) => Action::Refuse(
                "a cluster answers but this node's own peer URL is unknown; set member.advertise_address".into(),
            ),
        };
    }
    match mine {
        Some(m) => Action::AdoptUnstarted {
            cluster_id,
            member_id: m.id,
            endpoints,
        },
        None => Action::Join {
            cluster_id,
            endpoints,
        },
    }
}

/// The view whose membership is believed (a voter with a leader is preferred) and the voters'
/// client endpoints (learners are not used as endpoints).
fn membership<'a>(views: &[&'a ClusterView]) -> (&'a ClusterView, Vec<String>) {
    let view = views
        .iter()
        .copied()
        .max_by_key(|v| (!v.is_learner, v.leader != 0, v.members.len()))
        .expect("non-empty group");
    let endpoints: Vec<String> = views
        .iter()
        .filter(|v| !v.is_learner)
        .map(|v| v.endpoint.clone())
        .collect();
    (view, endpoints)
}

/// Before anything joins the cluster `cluster_id` (or removes a member of it): is it this node's?
/// The identity record must not name another cluster, no agent of it may belong to another
/// `cluster.name`, and at least one agent of it must confirm ours.
fn not_our_cluster(obs: &Observations, cluster_id: u64) -> Option<Action> {
    if let Some(recorded) = obs.recorded_cluster.filter(|r| *r != cluster_id) {
        return Some(Action::Refuse(format!(
            "cluster {cluster_id:x} answers, but this node last belonged to cluster {recorded:x} (its identity record); if {cluster_id:x} is the right cluster, delete the identity record beside member.data_dir and run again"
        )));
    }
    let of_it: Vec<(&AgentAnswer, &AgentReport)> = obs
        .agents
        .iter()
        .filter_map(|a| a.report.as_ref().ok().map(|r| (a, r)))
        .filter(|(_, r)| r.held.cluster_id == Some(cluster_id))
        .collect();
    let foreign: Vec<String> = of_it
        .iter()
        .filter(|(_, r)| r.held.cluster_name != obs.cluster_name)
        .map(|(a, r)| {
            format!(
                "{} ({}) says it is cluster.name {:?}",
                a.name, a.peer_url, r.held.cluster_name
            )
        })
        .collect();
    if !foreign.is_empty() {
        return Some(Action::Refuse(format!(
            "cluster {cluster_id:x} is not this node's cluster {:?}: {}; fix discovery (DNS records, discovery.peers, seeds)",
            obs.cluster_name,
            foreign.join("; ")
        )));
    }
    if of_it.is_empty() {
        return Some(Action::Wait(WaitReason::Unconfirmed(format!(
            "cluster {cluster_id:x} answers, but no etcd-bootstrap agent of it (port member.agent_port) confirms that it is cluster {:?}; joining only a cluster that says it is ours",
            obs.cluster_name
        ))));
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::decide::bootstrap::fixtures::*;
    use crate::decide::bootstrap::{decide, Action, WaitReason};
    use crate::model::cluster::Answer;
    use crate::model::ids;

    #[test]
    fn a_forming_cluster_of_our_own_peer_set_is_joined_as_initial_member() {
        let ic = planned(&obs(3, Some(1)));
        let mut o = obs(3, Some(3));
        // etcd1 and etcd2 already run; etcd3 was listed at bootstrap but has not started.
        let members = vec![
            member(1, true, &ic.token),
            member(2, true, &ic.token),
            member(3, false, &ic.token),
        ];
        o.answers = vec![
            answer(ic.cluster_id(), 1, members.clone()),
            answer(ic.cluster_id(), 2, members),
        ];
        holding(&mut o, ic.cluster_id(), &[1, 2]);
        assert!(matches!(decide(&o), Action::BootstrapNew(x) if x.my_name == "etcd3"));
    }

    #[test]
    fn a_removed_member_of_its_own_initial_cluster_joins_rather_than_bootstraps() {
        let ic = planned(&obs(3, Some(1)));
        let mut o = obs(3, Some(3));
        let members = vec![member(1, true, &ic.token), member(2, true, &ic.token)];
        o.answers = vec![answer(ic.cluster_id(), 1, members)];
        holding(&mut o, ic.cluster_id(), &[1, 2]);
        assert!(
            matches!(decide(&o), Action::Join { .. }),
            "{:?}",
            decide(&o)
        );
    }

    #[test]
    fn an_added_but_unstarted_learner_of_our_own_cluster_is_adopted_not_bootstrapped() {
        let ic = planned(&obs(3, Some(1)));
        let mut o = obs(3, Some(3));
        // etcd3 was removed, then re-added as a learner (MemberAdd gives it a new ID), and the
        // agent died before starting etcd.
        let mut learner = member(3, false, "not-the-token");
        learner.is_learner = true;
        let members = vec![
            member(1, true, &ic.token),
            member(2, true, &ic.token),
            learner.clone(),
        ];
        o.answers = vec![answer(ic.cluster_id(), 1, members)];
        holding(&mut o, ic.cluster_id(), &[1, 2]);
        assert_eq!(
            decide(&o),
            Action::AdoptUnstarted {
                cluster_id: ic.cluster_id(),
                member_id: learner.id,
                endpoints: vec!["https://10.0.0.1:2379".into()]
            }
        );
    }

    #[test]
    fn only_our_own_cluster_is_joined() {
        let members = vec![member(1, true, "old"), member(2, true, "old")];
        let cid = ids::cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>());
        // A node of cluster "beta" pointed at a "prod" node: prod's agent names its cluster.
        let mut o = obs(3, Some(3));
        o.cluster_name = "beta".into();
        o.answers = vec![answer(cid, 1, members.clone())];
        holding(&mut o, cid, &[1, 2]);
        match decide(&o) {
            Action::Refuse(m) => assert!(m.contains("\"prod\""), "{m}"),
            other => panic!("{other:?}"),
        }
        // No agent confirms the cluster: wait (and refuse at the deadline).
        let mut o = obs(3, Some(3));
        o.answers = vec![answer(cid, 1, members.clone())];
        assert!(matches!(
            decide(&o),
            Action::Wait(WaitReason::Unconfirmed(_))
        ));
        // The identity record names another cluster: refused.
        let mut o = obs(3, Some(3));
        o.answers = vec![answer(cid, 1, members.clone())];
        holding(&mut o, cid, &[1, 2]);
        o.recorded_cluster = Some(cid ^ 1);
        assert!(matches!(decide(&o), Action::Refuse(m) if m.contains("identity record")));
        // ...and the same cluster: joined.
        o.recorded_cluster = Some(cid);
        assert!(matches!(decide(&o), Action::Join { .. }));
    }

    #[test]
    fn lost_data_of_a_started_member_is_a_stale_self_even_in_its_own_cluster() {
        let ic = planned(&obs(3, Some(1)));
        let mut o = obs(3, Some(1));
        let members = vec![
            member(1, true, &ic.token),
            member(2, true, &ic.token),
            member(3, true, &ic.token),
        ];
        o.answers = vec![answer(ic.cluster_id(), 2, members.clone())];
        holding(&mut o, ic.cluster_id(), &[2, 3]);
        assert_eq!(
            decide(&o),
            Action::ReplaceStale {
                cluster_id: ic.cluster_id(),
                member_id: members[0].id,
                endpoints: vec!["https://10.0.0.2:2379".into()]
            }
        );
    }

    #[test]
    fn another_cluster_means_join_adopt_or_replace() {
        // The cluster was formed by etcd1..3 with token "old"; SRV now lists 4 members.
        let members = vec![
            member(1, true, "old"),
            member(2, true, "old"),
            member(3, true, "old"),
        ];
        let cid = ids::cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>());
        let mut o = obs(4, Some(4));
        o.answers = vec![answer(cid, 1, members.clone())];
        holding(&mut o, cid, &[1, 2, 3]);
        assert!(matches!(decide(&o), Action::Join { cluster_id, .. } if cluster_id == cid));

        let mut with_unstarted = members.clone();
        with_unstarted.push(member(4, false, "old"));
        o.answers = vec![answer(cid, 1, with_unstarted.clone())];
        assert!(
            matches!(decide(&o), Action::AdoptUnstarted { member_id, .. } if member_id == with_unstarted[3].id)
        );

        let mut o = obs(4, Some(2));
        o.answers = vec![answer(cid, 1, members.clone())];
        holding(&mut o, cid, &[1, 3]);
        assert!(
            matches!(decide(&o), Action::ReplaceStale { member_id, .. } if member_id == members[1].id)
        );

        // Seeds only: not in any peer set, but the own URL is known.
        let mut o = obs(0, None);
        o.my_peer_url = Some(peer(9).peer_url);
        o.answers = vec![answer(cid, 1, members.clone())];
        holding(&mut o, cid, &[1]);
        assert!(matches!(decide(&o), Action::Join { .. }));
        // ...and unknown: cannot join.
        o.my_peer_url = None;
        assert!(matches!(decide(&o), Action::Wait(WaitReason::NoPeers)));
    }

    #[test]
    fn learners_are_not_used_as_endpoints() {
        let members = vec![member(1, true, "old"), member(2, true, "old")];
        let mut o = obs(3, Some(3));
        let mut learner = match answer(7, 2, members.clone()) {
            Answer::Cluster(c) => c,
            _ => unreachable!(),
        };
        learner.is_learner = true;
        o.answers = vec![answer(7, 1, members), Answer::Cluster(learner)];
        holding(&mut o, 7, &[1, 2]);
        match decide(&o) {
            Action::Join { endpoints, .. } => {
                assert_eq!(endpoints, vec!["https://10.0.0.1:2379".to_string()])
            }
            other => panic!("{other:?}"),
        }
    }
}
