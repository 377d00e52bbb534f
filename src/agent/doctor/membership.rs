//! Who the members are and whose etcd answers: discovery read once, the client endpoints probed,
//! the membership taken from a member that answers (else from the identity record).

use crate::agent::local_endpoint;
use crate::config::Config;
use crate::discovery;
use crate::etcd::client;
use crate::etcd::datadir::Record;
use crate::model::cluster::{Answer, ClusterView, MemberView};
use crate::model::peer::Peer;
use crate::tls::ClientMaterial;
use std::collections::HashMap;
use std::time::Duration;

/// One read of discovery (SRV lookups are 3 s x 2 attempts each; a static list resolves names).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Discovery read at once with a probe of this node's etcd and the members its identity record
/// names, then the membership (`see_members`).
pub(super) async fn find(
    cfg: &Config,
    record: &Record,
    material: &ClientMaterial,
) -> (DiscoveryRead, MembershipSeen) {
    let my_id = record.member();
    let mut first: Vec<String> = vec![local_endpoint(cfg)];
    first.extend(
        record
            .members
            .iter()
            .filter(|m| u64::from_str_radix(&m.id, 16).ok() != my_id)
            .filter_map(|m| m.client_urls.first().cloned()),
    );
    let (discovered, answers) =
        tokio::join!(read_discovery(cfg), client::probe_all(&first, material));
    let mut answers: HashMap<String, Answer> = first.into_iter().zip(answers).collect();
    let seen = see_members(record, material, &mut answers, &discovered).await;
    (discovered.0, seen)
}

/// Whether each member answers as a member of `cluster` at the URL it is asked at (this node's
/// own member locally), and why not.
pub(super) fn reach(
    cfg: &Config,
    my_id: Option<u64>,
    views: &[MemberView],
    cluster: Option<u64>,
    answers: &HashMap<String, Answer>,
) -> Vec<(bool, Option<String>)> {
    views
        .iter()
        .map(
            |m| match url_of(cfg, my_id, m).and_then(|u| answers.get(&u)) {
                Some(Answer::Cluster(v)) if cluster.is_none_or(|c| c == v.cluster_id) => {
                    (true, None)
                }
                Some(Answer::Cluster(v)) => (
                    false,
                    Some(format!(
                        "answers as cluster {:x}, not {:x}",
                        v.cluster_id,
                        cluster.unwrap_or_default()
                    )),
                ),
                Some(Answer::NoAnswer(why)) => (false, Some(why.clone())),
                None if m.client_urls.is_empty() => (false, Some("never started".into())),
                None => (false, Some("not asked".into())),
            },
        )
        .collect()
}

/// The ID and the URL asked of each member that answers.
pub(super) fn up_urls(
    cfg: &Config,
    my_id: Option<u64>,
    views: &[MemberView],
    reach: &[(bool, Option<String>)],
) -> Vec<(u64, String)> {
    views
        .iter()
        .zip(reach)
        .filter(|(_, (ok, _))| *ok)
        .filter_map(|(m, _)| Some((m.id, url_of(cfg, my_id, m)?)))
        .collect()
}

/// The URL a member is asked at: this node's own member locally.
fn url_of(cfg: &Config, my_id: Option<u64>, m: &MemberView) -> Option<String> {
    if Some(m.id) == my_id {
        Some(local_endpoint(cfg))
    } else {
        m.client_urls.first().cloned()
    }
}

/// Discovery, when it lists peers: its description, and the peers it found with the targets
/// that did not resolve, or why it could not be read.
pub(super) type DiscoveryRead = Option<(String, Result<(Vec<Peer>, Vec<String>), String>)>;

/// Discovery read once, and every client endpoint it names (for a node that was never a
/// member to find the cluster through).
async fn read_discovery(cfg: &Config) -> (DiscoveryRead, Vec<String>) {
    let d = &cfg.discovery;
    if d.srv_domain.is_none() && d.peers.is_empty() {
        return (None, vec![]);
    }
    let sources = match discovery::sources(cfg) {
        Ok(s) => s,
        Err(e) => return (Some(("discovery".into(), Err(format!("{e:#}")))), vec![]),
    };
    let describe = sources
        .iter()
        .map(|s| s.describe())
        .filter(|s| s != "discovery.seeds")
        .collect::<Vec<_>>()
        .join(" + ");
    match tokio::time::timeout(DISCOVERY_TIMEOUT, discovery::read_all(&sources)).await {
        Err(_) => (
            Some((
                describe,
                Err(format!("no answer within {DISCOVERY_TIMEOUT:?}")),
            )),
            vec![],
        ),
        Ok(Err(e)) => (Some((describe, Err(format!("{e:#}")))), vec![]),
        Ok(Ok(found)) => {
            let endpoints = found.endpoints_except("");
            (
                Some((describe, Ok((found.peers, found.unresolved)))),
                endpoints,
            )
        }
    }
}

/// The membership and every answer of the probes.
pub(super) struct MembershipSeen {
    pub(super) cluster: Option<u64>,
    pub(super) members: Vec<MemberView>,
    pub(super) from_record: bool,
    pub(super) answers: HashMap<String, Answer>,
}

/// The membership: the member list of a member that answers as this node's cluster (the
/// leader's when it answered), else the last-known one of the identity record. Members not
/// asked yet are probed too.
async fn see_members(
    record: &Record,
    material: &ClientMaterial,
    answers: &mut HashMap<String, Answer>,
    discovered: &(DiscoveryRead, Vec<String>),
) -> MembershipSeen {
    let mut cluster = record.cluster();
    let pick = |answers: &HashMap<String, Answer>, cluster: Option<u64>| -> Option<ClusterView> {
        answers
            .values()
            .filter_map(|a| match a {
                Answer::Cluster(v)
                    if !v.members.is_empty() && cluster.is_none_or(|c| c == v.cluster_id) =>
                {
                    Some(v.clone())
                }
                _ => None,
            })
            .max_by_key(|v| (client::leads(v.member_id, v.leader), v.leader != 0))
    };
    let mut live = pick(answers, cluster);
    if live.is_none() && record.members.is_empty() {
        // A node that never became a member (a joiner that waits): the cluster is where
        // discovery points.
        let more: Vec<String> = discovered
            .1
            .iter()
            .filter(|e| !answers.contains_key(*e))
            .cloned()
            .collect();
        let got = client::probe_all(&more, material).await;
        answers.extend(more.into_iter().zip(got));
        live = pick(answers, cluster);
    }
    let (members, from_record) = match &live {
        Some(v) => {
            cluster = Some(v.cluster_id);
            (v.members.clone(), false)
        }
        None => (
            record
                .members
                .iter()
                .filter_map(|m| {
                    Some(MemberView {
                        id: u64::from_str_radix(&m.id, 16).ok()?,
                        name: m.name.clone(),
                        peer_urls: m.peer_urls.clone(),
                        client_urls: m.client_urls.clone(),
                        // The record does not say; a learner counted as a voter only makes
                        // the quorum look harder to reach.
                        is_learner: false,
                    })
                })
                .collect(),
            true,
        ),
    };
    let my_id = record.member();
    let missing: Vec<String> = members
        .iter()
        .filter(|m| Some(m.id) != my_id)
        .filter_map(|m| m.client_urls.first().cloned())
        .filter(|u| !answers.contains_key(u))
        .collect();
    let got = client::probe_all(&missing, material).await;
    answers.extend(missing.into_iter().zip(got));
    MembershipSeen {
        cluster,
        members,
        from_record,
        answers: std::mem::take(answers),
    }
}
