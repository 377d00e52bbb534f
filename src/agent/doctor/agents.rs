//! What the other members' agents answer: what each holds, its clock, and whom the leader's
//! agent saw unreachable since when.

use super::name_of;
use crate::agent::endpoint::{self, Timing};
use crate::config::Config;
use crate::decide::bootstrap::AgentReport;
use crate::decide::doctor as d;
use crate::decide::recover::AgentSeen;
use crate::etcd::datadir::Record;
use crate::model::cluster::MemberView;
use crate::model::url::EtcdUrl;
use crate::tls::ClientMaterial;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

/// What the other members' agents answered, by peer URL.
pub(super) type AgentAnswers = HashMap<String, Result<(AgentReport, Timing), String>>;

/// Every other member's agent (at its peer address, `member.agent_port`), timed.
pub(super) async fn ask_agents(
    cfg: &Config,
    others: &[&MemberView],
    material: Option<&ClientMaterial>,
) -> AgentAnswers {
    let Some(material) = material else {
        return HashMap::new();
    };
    let mut set = tokio::task::JoinSet::new();
    for m in others {
        let Some(url) = m.peer_urls.first().cloned() else {
            continue;
        };
        let Some(ip) = EtcdUrl::parse(&url).ok().and_then(|u| u.ip()) else {
            continue;
        };
        let addr = SocketAddr::new(ip, cfg.member.agent_port);
        let m = material.clone();
        set.spawn(async move {
            let r = endpoint::ask_timed(addr, &m)
                .await
                .map_err(|e| format!("{e:#}"));
            (url, r)
        });
    }
    let mut out = HashMap::new();
    while let Some(r) = set.join_next().await {
        if let Ok((url, answer)) = r {
            out.insert(url, answer);
        }
    }
    out
}

/// Since when each member is unreachable: the earliest any leader's agent (this node's own
/// record included) noted, by member ID in hex.
pub(super) fn down_since(record: &Record, agents: &AgentAnswers) -> BTreeMap<String, i64> {
    let mut down_since: BTreeMap<String, i64> = record.held.unreachable_since.clone();
    for (report, _) in agents.values().filter_map(|a| a.as_ref().ok()) {
        for (id, t) in &report.held.unreachable_since {
            let e = down_since.entry(id.clone()).or_insert(*t);
            *e = (*e).min(*t);
        }
    }
    down_since
}

/// What the agent at `peer_url` holds, when it answered for this cluster.
pub(super) fn agent_seen(cfg: &Config, agents: &AgentAnswers, peer_url: &str) -> Option<AgentSeen> {
    agents
        .get(peer_url)
        .and_then(|a| a.as_ref().ok())
        .filter(|(r, _)| r.held.cluster_name == cfg.cluster.name)
        .map(|(r, _)| AgentSeen {
            has_data: r.has_data,
            raft_index: r.held.raft_index,
        })
}

/// Every other member's clock against this node's, from its agent's answer and its timing.
pub(super) fn clocks(
    others: &[&MemberView],
    agents: &AgentAnswers,
    views: &[MemberView],
) -> Vec<d::Clock> {
    others
        .iter()
        .map(|m| {
            let url = m.peer_urls.first().cloned().unwrap_or_default();
            let measured = match agents.get(&url) {
                None => Err("no agent to ask".to_string()),
                Some(Err(_)) => Err("its agent does not answer".to_string()),
                Some(Ok((r, timing))) => match r.now_unix_ms {
                    Some(t) => Ok(timing.offset_of(t)),
                    None => Err("its agent is an older version".to_string()),
                },
            };
            d::Clock {
                who: name_of(views, m.id),
                measured,
            }
        })
        .collect()
}
