//! Everything the first-boot decision looks at, and what each peer's agent answered.

use super::report::AgentReport;
use crate::decide::restore::Snapshots;
use crate::model::cluster::Answer;
use crate::model::local::LocalState;
use crate::model::peer::Peer;
use crate::model::url::EtcdUrl;

/// One peer's agent, asked at its peer URL's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentAnswer {
    pub peer_url: String,
    pub name: String,
    /// The report, or why there is none (down, TLS refused, not an agent, ...).
    pub report: Result<AgentReport, String>,
}

/// Everything the decision looks at.
#[derive(Debug, Clone)]
pub(crate) struct Observations {
    pub local: LocalState,
    pub cluster_name: String,
    pub token_override: Option<String>,
    /// `cluster.size`, when set.
    pub expected_size: Option<usize>,
    pub peers: Vec<Peer>,
    pub unresolved: Vec<String>,
    /// Two consecutive discovery reads agreed.
    pub stable: bool,
    /// This node's entry among `peers`.
    pub me: Option<Peer>,
    /// This node's peer URL even when it is not among `peers` (joining through seeds).
    pub my_peer_url: Option<EtcdUrl>,
    pub answers: Vec<Answer>,
    /// This node's current nonce (see `AgentReport::nonce`).
    pub my_nonce: String,
    /// What the other peers' agents said (every discovered peer but this node).
    pub agents: Vec<AgentAnswer>,
    /// The cluster this node last belonged to (its identity record), if any.
    pub recorded_cluster: Option<u64>,
    /// What a new cluster could be restored from (`backup.restore_on_bootstrap`).
    pub snapshots: Snapshots,
}
