//! The evidence a new cluster needs: every other member of the peer set, asked through its agent,
//! says it holds no data, or holds only data of the very cluster planned here (it started
//! first). A member that cannot be asked blocks the new cluster (wait); one that belongs to
//! another `cluster.name` refuses it; one that holds any other data makes it wait for that
//! data's etcd to come back (a new cluster would fork it).

use super::action::{Action, WaitReason};
use super::initial_cluster::InitialCluster;
use super::observations::Observations;
use super::report::AgentReport;

/// A peer that holds data: the cluster and formation it belongs to, the snapshot it was restored
/// from, and a description.
pub(super) struct DataHolder {
    pub cluster: Option<u64>,
    pub formation: Option<String>,
    pub restored_from: Option<String>,
    pub who: String,
}

/// The nonces of every initial member (this node's and each peer agent's), or who could not be
/// asked, who holds data, and who belongs to another cluster name.
pub(super) struct FormationEvidence {
    pub nonces: Vec<String>,
    pub unasked: Vec<String>,
    /// Peers that hold data.
    pub holding: Vec<DataHolder>,
    pub foreign: Vec<String>,
}

/// What the agents of the peer set (every discovered peer but this node) said.
pub(super) fn evidence(obs: &Observations) -> FormationEvidence {
    let mut e = FormationEvidence {
        nonces: vec![obs.my_nonce.clone()],
        unasked: vec![],
        holding: vec![],
        foreign: vec![],
    };
    let my_url = obs.me.as_ref().map(|m| m.peer_url.to_string());
    for p in &obs.peers {
        let url = p.peer_url.to_string();
        if Some(&url) == my_url.as_ref() {
            continue;
        }
        let who = format!("{}={url}", p.name);
        match obs
            .agents
            .iter()
            .find(|a| a.peer_url == url)
            .map(|a| &a.report)
        {
            None => e.unasked.push(format!("{who} (not asked)")),
            Some(Err(why)) => e.unasked.push(format!("{who} ({why})")),
            Some(Ok(r)) if r.held.cluster_name != obs.cluster_name => e.foreign.push(format!(
                "{who} belongs to cluster.name {:?}",
                r.held.cluster_name
            )),
            Some(Ok(r)) => {
                if r.has_data {
                    e.holding.push(holding(&who, r));
                }
                e.nonces.push(r.held.nonce.clone());
            }
        }
    }
    e
}

/// The peer `who` holds data, as its agent's report `r` describes it.
fn holding(who: &str, r: &AgentReport) -> DataHolder {
    let hex = |id: Option<u64>| id.map(|c| format!("{c:x}")).unwrap_or("?".into());
    DataHolder {
        cluster: r.held.cluster_id,
        formation: r.held.formation.clone(),
        restored_from: r.held.restored_from.clone(),
        who: format!(
            "{who} (cluster {}, member {}, raft index {})",
            hex(r.held.cluster_id),
            hex(r.held.member_id),
            r.held
                .raft_index
                .map(|c| c.to_string())
                .unwrap_or("unknown".into()),
        ),
    }
}

impl FormationEvidence {
    /// Whether every other member could be asked and is of this `cluster.name`: else the refusal
    /// (a member of another cluster name) or the wait (members that could not be asked).
    pub(crate) fn all_asked(&self) -> Result<(), Action> {
        if !self.foreign.is_empty() {
            return Err(Action::Refuse(format!(
                "peers of another cluster are in this node's peer set: {}; fix the DNS records or discovery.peers",
                self.foreign.join("; ")
            )));
        }
        if !self.unasked.is_empty() {
            return Err(Action::Wait(WaitReason::Unasked(self.unasked.clone())));
        }
        Ok(())
    }

    /// The peers holding data of anything but `ic`, the cluster planned here. A peer whose data
    /// belongs to that very cluster (the same peers and nonces give the same token, so the same
    /// ID, and the same formation) is an initial member that started first; etcd may not answer
    /// clients until a quorum has started.
    pub(crate) fn holding_other_than(self, ic: &InitialCluster) -> Vec<String> {
        self.holding
            .into_iter()
            .filter(|h| {
                h.cluster != Some(ic.cluster_id())
                    || h.formation.as_deref() != Some(ic.formation.as_str())
            })
            .map(|h| h.who)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::decide::bootstrap::fixtures::*;
    use crate::decide::bootstrap::{decide, Action, WaitReason};
    use crate::model::cluster::Answer;

    #[test]
    fn a_new_cluster_needs_every_member_to_say_it_holds_no_data() {
        // Every agent answers "no data": etcd not answering does not matter.
        let mut o = obs(3, Some(1));
        o.answers = vec![
            Answer::NoAnswer("refused".into()),
            Answer::NoAnswer("timeout".into()),
        ];
        assert!(matches!(decide(&o), Action::BootstrapNew(_)));

        // One member cannot be asked (down): no new cluster; it is named.
        let mut o = obs(3, Some(1));
        o.agents[1].report = Err("connection refused".into());
        match decide(&o) {
            Action::Wait(w @ WaitReason::Unasked(_)) => {
                assert!(w.refuses_at_deadline());
                assert!(w.to_string().contains("etcd3=https://10.0.0.3:2380"), "{w}");
            }
            other => panic!("{other:?}"),
        }
        // Not even found among the answers.
        let mut o = obs(3, Some(1));
        o.agents.pop();
        assert!(matches!(decide(&o), Action::Wait(WaitReason::Unasked(_))));

        // The wiped majority: this node and etcd2 are empty, etcd3 holds the data but its etcd
        // does not answer (no quorum, or stopped): wait, never form a new cluster over it.
        let mut o = obs(3, Some(1));
        holding(&mut o, 0xabc, &[3]);
        match decide(&o) {
            Action::Wait(w @ WaitReason::PeersHoldData(_)) => {
                assert!(w.refuses_at_deadline());
                assert!(w.to_string().contains("cluster abc"), "{w}");
            }
            other => panic!("{other:?}"),
        }

        // etcd2 already formed the cluster planned here (its record holds the planned ID) and
        // its etcd does not answer yet: this node is a late initial member, not a fork.
        let ic = planned(&obs(3, Some(1)));
        let mut o = obs(3, Some(1));
        holding(&mut o, ic.cluster_id(), &[2]);
        report_of(&mut o, 2).held.formation = Some(ic.formation.clone());
        assert_eq!(decide(&o), Action::BootstrapNew(ic.clone()));
        // The same cluster ID from an earlier formation (cluster.token fixed): that is old data.
        report_of(&mut o, 2).held.formation = Some("earlier".into());
        assert!(matches!(
            decide(&o),
            Action::Wait(WaitReason::PeersHoldData(_))
        ));

        // A member of another cluster name in the peer set: refused.
        let mut o = obs(3, Some(1));
        if let Ok(r) = &mut o.agents[0].report {
            r.held.cluster_name = "beta".into();
        }
        assert!(matches!(decide(&o), Action::Refuse(m) if m.contains("\"beta\"")));
    }
}
