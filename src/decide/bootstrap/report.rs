//! What a peer's agent says about its node: the JSON of its endpoint on `member.agent_port`.

/// What a peer's agent says about its node (its endpoint on `member.agent_port`). It answers
/// before etcd runs, so it is the evidence for "nobody holds data".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AgentReport {
    pub cluster_name: String,
    /// Drawn at first boot and again whenever the data it formed with is gone.
    pub nonce: String,
    /// `<data_dir>/member` exists.
    pub has_data: bool,
    /// The cluster its data belongs to: the running etcd's answer, else its identity record.
    #[serde(default, with = "hex_id")]
    pub cluster_id: Option<u64>,
    #[serde(default, with = "hex_id")]
    pub member_id: Option<u64>,
    /// The raft index recorded at the last healthy check of the local member.
    #[serde(default)]
    pub raft_index: Option<u64>,
    /// The raft term last seen with a leader and the revision of its data (absent from older
    /// agents): what `decide::quorum_recovery` compares copies by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_term: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The formation its data came from (`InitialCluster::formation`), when it formed a cluster.
    #[serde(default)]
    pub formation: Option<String>,
    /// The snapshot its data was restored from when the cluster formed (`decide::restore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// The responder's clock when it answered (Unix ms), for `doctor`'s clock-skew check.
    /// Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_unix_ms: Option<i64>,
    /// On the leader's node: the members its agent sees unreachable, by ID (hex), and since when
    /// (Unix seconds), from its identity record. Absent from older agents and other nodes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub unreachable_since: std::collections::BTreeMap<String, i64>,
}

/// IDs as etcdctl prints them (hex), so that the endpoint's JSON reads like `member list`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The JSON peers exchange, every field set: older agents must read ours, and we theirs.
    fn full() -> Value {
        json!({
            "cluster_name": "prod",
            "nonce": "9f86d081884c7d65",
            "has_data": true,
            "cluster_id": "3d2ca84ca24e47e4",
            "member_id": "a1",
            "raft_index": 4200,
            "raft_term": 7,
            "revision": 3100,
            "formation": "c0ffee",
            "restored_from": "2024-05-01T00-00-00Z.db",
            "now_unix_ms": 1714521600000i64,
            "unreachable_since": {"b2": 1714521000, "c3": 1714521500},
        })
    }

    #[test]
    fn the_json_of_a_full_report_stays_as_it_is() {
        let report: AgentReport = serde_json::from_value(full()).unwrap();
        assert_eq!(serde_json::to_value(&report).unwrap(), full());
        let text = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<AgentReport>(&text).unwrap(), report);
    }

    /// IDs unknown: `null` (not absent); the newer fields are left out when unset.
    #[test]
    fn the_json_of_a_bare_report_stays_as_it_is() {
        let bare = json!({
            "cluster_name": "prod",
            "nonce": "9f86d081884c7d65",
            "has_data": false,
            "cluster_id": null,
            "member_id": null,
            "raft_index": null,
            "formation": null,
        });
        let report: AgentReport = serde_json::from_value(bare.clone()).unwrap();
        assert_eq!(serde_json::to_value(&report).unwrap(), bare);
    }

    /// An older agent's answer, without the fields added since, still reads.
    #[test]
    fn an_older_agents_report_reads() {
        let old =
            json!({"cluster_name": "prod", "nonce": "n1", "has_data": true, "cluster_id": "ff"});
        let report: AgentReport = serde_json::from_value(old).unwrap();
        let back = serde_json::to_value(&report).unwrap();
        assert_eq!(back["cluster_id"], json!("ff"));
        assert_eq!(back["member_id"], Value::Null);
        assert!(back.get("unreachable_since").is_none());
        assert!(
            serde_json::from_value::<AgentReport>(json!({"nonce": "n1", "has_data": true}))
                .is_err()
        );
        assert!(serde_json::from_value::<AgentReport>(json!({"cluster_name": "prod", "nonce": "n1", "has_data": true, "cluster_id": "not hex"})).is_err());
    }
}
