//! What a node holds and last saw: the part its identity record (`etcd::datadir::Record`) and its
//! agent's answer to peers (`decide::bootstrap::report::AgentReport`) share, declared once so that
//! the two cannot drift apart. Both embed it flattened: its keys sit at the top level of their
//! JSON, as they always have.

use std::collections::BTreeMap;

/// A node's identity, the cluster and member its data belongs to, how far that data got and
/// where it came from, and (on the leader's node) the members it sees unreachable.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Held {
    pub cluster_name: String,
    /// Drawn at first boot and again whenever the data it formed with is gone; mixed into the
    /// token of a new cluster (see `decide::bootstrap::derive_token`).
    pub nonce: String,
    /// The cluster and member this node's data belongs to (hex in JSON, as etcdctl prints them).
    #[serde(default, with = "hex_id")]
    pub cluster_id: Option<u64>,
    #[serde(default, with = "hex_id")]
    pub member_id: Option<u64>,
    /// The raft index last seen on the healthy local member.
    #[serde(default)]
    pub raft_index: Option<u64>,
    /// The raft term the local member last saw with a leader, and the revision of its data
    /// (also read without a quorum: `Maintenance.Status` answers locally). Peers compare copies
    /// by them when no quorum can form (`decide::quorum_recovery`). Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_term: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The formation (digest of the initial members' nonces, `InitialCluster::formation`) of the
    /// cluster this node formed.
    #[serde(default)]
    pub formation: Option<String>,
    /// The snapshot that formation started from (every initial member restored the same one;
    /// `decide::restore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// Kept by the heal loop while this node's member leads: the members it finds unreachable,
    /// by ID (hex), and since when (Unix seconds). Empty on other nodes and absent from older
    /// agents; `doctor` on any node reads it to say since when a member is down.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreachable_since: BTreeMap<String, i64>,
}

/// IDs as etcdctl prints them (hex), so that the JSON reads like `member list`.
mod hex_id {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(id) => s.serialize_str(&format!("{id:x}")),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| u64::from_str_radix(&t, 16).map_err(serde::de::Error::custom))
            .transpose()
    }
}
