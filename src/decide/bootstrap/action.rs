//! What the first-boot decision decides, and why it waits.

use super::initial_cluster::InitialCluster;
use crate::decide::restore::NoSeed;
use std::fmt;

/// What to do with the local member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// The data dir has a WAL: start etcd as it is.
    Restart,
    /// Form a new cluster with the peers (or be a late initial member of the one forming).
    BootstrapNew(InitialCluster),
    /// A cluster runs without this node: add it as a learner, start `existing`, promote.
    Join {
        cluster_id: u64,
        endpoints: Vec<String>,
    },
    /// This node's peer URL was added but never started: start `existing` as that member.
    AdoptUnstarted {
        cluster_id: u64,
        member_id: u64,
        endpoints: Vec<String>,
    },
    /// This node's member has run before but its data is gone: remove the stale entry, re-add.
    ReplaceStale {
        cluster_id: u64,
        member_id: u64,
        endpoints: Vec<String>,
    },
    /// The data dir holds an interrupted start (`member/` without a WAL): move it aside, look again.
    MoveAside(String),
    Wait(WaitReason),
    Refuse(String),
}

/// Why the decision waits (and looks again) rather than act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WaitReason {
    /// Two consecutive discovery reads differed.
    Unstable,
    /// Named targets that do not resolve yet.
    Unresolved(Vec<String>),
    /// Discovery found nobody.
    NoPeers,
    /// This node is not in the discovered set.
    NotInSet { found: String },
    /// Fewer peers than `cluster.size`.
    Incomplete { found: usize, expected: usize },
    /// No etcd answers, and these peers' agents could not be asked whether they hold data.
    Unasked(Vec<String>),
    /// No etcd answers, but these peers hold data: their etcd has to come back (or be recovered);
    /// forming a new cluster would fork the data.
    PeersHoldData(Vec<String>),
    /// A cluster answers, but no agent of it confirms it is `cluster.name`'s.
    Unconfirmed(String),
    /// A new cluster would be formed, but what it starts from cannot be told yet.
    Seed(NoSeed),
}

impl WaitReason {
    /// Waits that end in a refusal (exit 3) rather than a failure when they time out: going on
    /// would mean guessing about data or identity.
    pub(crate) fn refuses_at_deadline(&self) -> bool {
        matches!(
            self,
            WaitReason::NotInSet { .. }
                | WaitReason::Unasked(_)
                | WaitReason::PeersHoldData(_)
                | WaitReason::Unconfirmed(_)
                | WaitReason::Seed(_)
        )
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::Unstable => write!(f, "the peer set changed between two reads"),
            WaitReason::Unresolved(t) => write!(f, "SRV targets without an address: {}", t.join(", ")),
            WaitReason::NoPeers => write!(f, "no peers found and no cluster answered"),
            WaitReason::NotInSet { found } => write!(
                f,
                "this node is not among the discovered peers ({found}); check its address against the DNS records or discovery.peers, or set member.advertise_address"
            ),
            WaitReason::Incomplete { found, expected } => {
                write!(f, "{found} of {expected} peers found (cluster.size = {expected})")
            }
            WaitReason::Unasked(who) => write!(
                f,
                "no cluster answers and these members could not be asked whether they hold data: {}; a new cluster is formed only when every member says it holds none: bring them (their etcd-bootstrap, port member.agent_port) back, or recover the cluster from the member that holds data",
                who.join("; ")
            ),
            WaitReason::PeersHoldData(who) => write!(
                f,
                "no cluster answers but these members hold data: {}; start etcd-bootstrap on them so that their etcd comes back (a new cluster would fork the data); if a majority is lost for good, recover from the member with the highest raft index",
                who.join("; ")
            ),
            WaitReason::Unconfirmed(what) => write!(f, "{what}"),
            WaitReason::Seed(why) => write!(f, "{why}"),
        }
    }
}
