//! No cluster answers: the initial cluster the discovered set forms, when the set is complete
//! enough, every other member says it holds no data (`evidence`), and what the cluster starts
//! from is known (`decide::restore`).

use super::action::{Action, WaitReason};
use super::evidence::{evidence, FormationEvidence};
use super::initial_cluster::{derive_token, formation, InitialCluster};
use super::observations::Observations;
use crate::decide::restore::{self, FormedPeer, NoSeed};
use crate::model::peer::Peer;

/// No etcd answers as a cluster: form the planned one, unless a peer holds data of anything but
/// it (then its etcd has to come back).
pub(super) fn when_none_answers(obs: &Observations) -> Action {
    let ic = match plan(obs) {
        Ok(ic) => ic,
        Err(action) => return action,
    };
    let holding = evidence(obs).holding_other_than(&ic);
    if holding.is_empty() {
        Action::BootstrapNew(ic)
    } else {
        Action::Wait(WaitReason::PeersHoldData(holding))
    }
}

/// The initial cluster for the discovered set, when the set is complete enough to form one.
pub(super) fn plan(obs: &Observations) -> Result<InitialCluster, Action> {
    let me = complete_set_with_me(obs)?;
    let mut members: Vec<(String, String)> = obs
        .peers
        .iter()
        .map(|p| (p.name.clone(), p.peer_url.to_string()))
        .collect();
    members.sort_by(|a, b| a.1.cmp(&b.1));
    let urls: Vec<String> = members.iter().map(|(_, u)| u.clone()).collect();
    let e = evidence(obs);
    e.all_asked()?;
    let formation = formation(&e.nonces);
    let seed = seed(obs, &e, &formation)?;
    let token = obs
        .token_override
        .clone()
        .unwrap_or_else(|| derive_token(&obs.cluster_name, &urls, &e.nonces, seed.as_deref()));
    Ok(InitialCluster {
        formation,
        members,
        token,
        my_name: me.name.clone(),
        seed,
    })
}

/// This node's entry, when discovery read the same complete set twice (no unresolved names, as
/// many peers as `cluster.size` when set) and this node is in it.
fn complete_set_with_me(obs: &Observations) -> Result<&Peer, Action> {
    if !obs.stable {
        return Err(Action::Wait(WaitReason::Unstable));
    }
    if !obs.unresolved.is_empty() {
        return Err(Action::Wait(WaitReason::Unresolved(obs.unresolved.clone())));
    }
    if obs.peers.is_empty() {
        return Err(Action::Wait(WaitReason::NoPeers));
    }
    let found = obs.peers.len();
    if let Some(expected) = obs.expected_size {
        if found < expected {
            return Err(Action::Wait(WaitReason::Incomplete { found, expected }));
        }
        if found > expected {
            return Err(Action::Refuse(format!(
                "discovery lists {found} peers but cluster.size is {expected}; refusing to guess which {expected} form the cluster (fix the records or cluster.size)"
            )));
        }
    }
    obs.me.as_ref().ok_or_else(|| {
        let found = obs
            .peers
            .iter()
            .map(|p| format!("{}={}", p.name, p.peer_url))
            .collect::<Vec<_>>()
            .join(", ");
        Action::Wait(WaitReason::NotInSet { found })
    })
}

/// What the new cluster of `formation` starts from (`decide::restore::seed`): the snapshot the
/// peers of the same formation restored (a late initial member follows them), else the newest
/// the store lists, or nothing. Refused when those peers started from different data; a wait
/// when the store cannot be listed.
fn seed(
    obs: &Observations,
    e: &FormationEvidence,
    formation: &str,
) -> Result<Option<String>, Action> {
    let formed: Vec<FormedPeer> = e
        .holding
        .iter()
        .filter(|h| h.formation.as_deref() == Some(formation))
        .map(|h| FormedPeer {
            who: h.who.clone(),
            restored_from: h.restored_from.clone(),
        })
        .collect();
    match restore::seed(&obs.snapshots, &formed) {
        Ok(seed) => Ok(seed),
        Err(why @ NoSeed::PeersDisagree(_)) => Err(Action::Refuse(why.to_string())),
        Err(why) => Err(Action::Wait(WaitReason::Seed(why))),
    }
}

#[cfg(test)]
mod tests {
    use crate::decide::bootstrap::fixtures::*;
    use crate::decide::bootstrap::{decide, Action, InitialCluster, Observations, WaitReason};
    use crate::decide::restore::Snapshots;

    #[test]
    fn complete_stable_set_forms_a_new_cluster_identically_on_every_node() {
        let ics: Vec<InitialCluster> = (1..=3).map(|i| planned(&obs(3, Some(i)))).collect();
        assert_eq!(
            ics[0].flag(),
            "etcd1=https://10.0.0.1:2380,etcd2=https://10.0.0.2:2380,etcd3=https://10.0.0.3:2380"
        );
        assert!(ics
            .iter()
            .all(|ic| ic.flag() == ics[0].flag() && ic.token == ics[0].token));
        assert_eq!(ics[1].my_name, "etcd2");
        assert!(ics[0].token.starts_with("prod-"));
        // Another peer set, another token.
        assert_ne!(planned(&obs(5, Some(1))).token, ics[0].token);
        let mut o = obs(3, Some(1));
        o.token_override = Some("fixed".into());
        assert_eq!(planned(&o).token, "fixed");
    }

    type Change = Box<dyn Fn(&mut Observations)>;

    #[test]
    fn waits_for_a_complete_stable_set_that_includes_this_node() {
        let table: Vec<(Change, WaitReason)> = vec![
            (Box::new(|o| o.stable = false), WaitReason::Unstable),
            (
                Box::new(|o| o.unresolved = vec!["etcd4.lab.test".into()]),
                WaitReason::Unresolved(vec!["etcd4.lab.test".into()]),
            ),
            (
                Box::new(|o| o.expected_size = Some(5)),
                WaitReason::Incomplete {
                    found: 3,
                    expected: 5,
                },
            ),
            (Box::new(|o| o.peers.clear()), WaitReason::NoPeers),
        ];
        for (change, reason) in table {
            let mut o = obs(3, Some(1));
            change(&mut o);
            assert_eq!(decide(&o), Action::Wait(reason));
        }
        let o = obs(3, None);
        assert!(matches!(
            decide(&o),
            Action::Wait(WaitReason::NotInSet { .. })
        ));
    }

    #[test]
    fn more_peers_than_cluster_size_is_refused() {
        let mut o = obs(4, Some(1));
        o.expected_size = Some(3);
        assert!(matches!(decide(&o), Action::Refuse(m) if m.contains("cluster.size is 3")));
    }

    /// Total loss with `backup.restore_on_bootstrap`: what the initial members start from.
    #[test]
    fn total_loss_restores_the_newest_snapshot_on_every_member_alike() {
        let listed = |ids: &[&str]| Snapshots::Listed(ids.iter().map(|s| s.to_string()).collect());
        let mut o = obs(3, Some(1));
        o.snapshots = listed(&["s2", "s1"]);
        let ic = planned(&o);
        assert_eq!(ic.seed.as_deref(), Some("s2"));
        // The snapshot is part of the token: another choice would be another cluster ID.
        let empty = planned(&obs(3, Some(1)));
        assert_ne!(ic.token, empty.token);
        assert_ne!(ic.cluster_id(), empty.cluster_id());
        // Every initial member computes the same.
        let mut o3 = obs(3, Some(3));
        o3.snapshots = listed(&["s2", "s1"]);
        assert_eq!(planned(&o3).cluster_id(), ic.cluster_id());

        // The store cannot be listed: wait, and refuse at the deadline; never form empty.
        o.snapshots = Snapshots::Unreadable("connection refused".into());
        match decide(&o) {
            Action::Wait(w @ WaitReason::Seed(_)) => {
                assert!(w.refuses_at_deadline());
                assert!(w.to_string().contains("connection refused"), "{w}");
            }
            other => panic!("{other:?}"),
        }

        // A late initial member: etcd1 and etcd2 restored s1 and formed; since then the
        // restored cluster took s3. The late member follows them, to the same cluster ID.
        let mut first = obs(3, Some(1));
        first.snapshots = listed(&["s1"]);
        let formed = planned(&first);
        let mut late = obs(3, Some(3));
        late.snapshots = listed(&["s3", "s1"]);
        holding(&mut late, formed.cluster_id(), &[1, 2]);
        for h in [1, 2] {
            let r = report_of(&mut late, h);
            r.held.formation = Some(formed.formation.clone());
            r.held.restored_from = Some("s1".into());
        }
        let ic3 = planned(&late);
        assert_eq!(ic3.seed.as_deref(), Some("s1"));
        assert_eq!(ic3.cluster_id(), formed.cluster_id());
        // Peers of this formation that started from different data: refused.
        report_of(&mut late, 2).held.restored_from = None;
        assert!(matches!(decide(&late), Action::Refuse(m) if m.contains("different data")));

        // A node with data never restores: it restarts.
        let mut o = obs(3, Some(1));
        o.snapshots = listed(&["s2"]);
        o.local.has_wal = true;
        o.local.has_member_dir = true;
        assert_eq!(decide(&o), Action::Restart);
        // Peers holding data of another formation (the old cluster's members are back): no
        // restore, no new cluster.
        let mut o = obs(3, Some(1));
        o.snapshots = listed(&["s2"]);
        holding(&mut o, 0xabc, &[2]);
        assert!(matches!(
            decide(&o),
            Action::Wait(WaitReason::PeersHoldData(_))
        ));
    }

    #[test]
    fn a_reformed_cluster_never_repeats_an_earlier_identity() {
        let first = planned(&obs(3, Some(1)));
        // Same peers, same name; one member drew a new nonce because its data was lost.
        let mut o = obs(3, Some(1));
        if let Ok(r) = &mut o.agents[0].report {
            r.held.nonce = "fresh".into();
        }
        let again = planned(&o);
        assert_eq!(first.flag(), again.flag());
        assert_ne!(first.token, again.token);
        assert_ne!(first.cluster_id(), again.cluster_id());
        // Every initial member computes the same token from the same nonces.
        let mut o3 = obs(3, Some(3));
        if let Ok(r) = &mut o3.agents[1].report {
            r.held.nonce = "fresh".into();
        }
        assert_eq!(planned(&o3).token, again.token);
    }
}
