//! What a peer's agent says about its node: the JSON of its endpoint on `member.agent_port`.

use crate::model::held::Held;

/// What a peer's agent says about its node (its endpoint on `member.agent_port`). It answers
/// before etcd runs, so it is the evidence for "nobody holds data".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct AgentReport {
    /// Its identity, cluster, member and progress: what its identity record holds, with the raft
    /// index and revision brought up to date from its running etcd (`agent::reporter`).
    #[serde(flatten)]
    pub held: Held,
    /// `<data_dir>/member` exists.
    pub has_data: bool,
    /// The responder's clock when it answered (Unix ms), for `doctor`'s clock-skew check.
    /// Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_unix_ms: Option<i64>,
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
