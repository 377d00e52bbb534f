//! The table tests' fixtures: peers `etcd<i>` at 10.0.0.<i>, their agents, their etcd's answers.

use super::{decide, Action, AgentAnswer, AgentReport, InitialCluster, Observations};
use crate::decide::restore::Snapshots;
use crate::model::cluster::{Answer, ClusterView, MemberView};
use crate::model::held::Held;
use crate::model::ids;
use crate::model::local::LocalState;
use crate::model::peer::Peer;
use crate::model::url::EtcdUrl;
use std::net::IpAddr;

/// Peer `i`: `etcd<i>` at 10.0.0.<i>.
pub(crate) fn peer(i: u8) -> Peer {
    let ip: IpAddr = format!("10.0.0.{i}").parse().unwrap();
    Peer {
        name: format!("etcd{i}"),
        peer_url: EtcdUrl::https(ip, 2380),
        client_url: EtcdUrl::https(ip, 2379),
        ips: vec![ip],
        dns_name: None,
    }
}

/// `n` peers, this node `etcd<me>` (or none of them): every other agent says it holds no data,
/// no etcd answers.
pub(crate) fn obs(n: u8, me: Option<u8>) -> Observations {
    Observations {
        local: LocalState::default(),
        cluster_name: "prod".into(),
        token_override: None,
        expected_size: None,
        peers: (1..=n).map(peer).collect(),
        unresolved: vec![],
        stable: true,
        me: me.map(peer),
        my_peer_url: me.map(|i| peer(i).peer_url),
        answers: vec![],
        my_nonce: me.map(|i| format!("n{i}")).unwrap_or_default(),
        agents: (1..=n)
            .filter(|i| Some(*i) != me)
            .map(|i| agent(i, None))
            .collect(),
        recorded_cluster: None,
        snapshots: Snapshots::Off,
    }
}

/// Peer `i`'s agent: nonce `n<i>`, holding data of `cluster` when given.
pub(crate) fn agent(i: u8, cluster: Option<u64>) -> AgentAnswer {
    AgentAnswer {
        peer_url: peer(i).peer_url.to_string(),
        name: format!("etcd{i}"),
        report: Ok(AgentReport {
            held: Held {
                cluster_name: "prod".into(),
                nonce: format!("n{i}"),
                cluster_id: cluster,
                member_id: cluster.map(|_| i as u64),
                raft_index: cluster.map(|_| 100),
                raft_term: None,
                revision: None,
                formation: None,
                restored_from: None,
                unreachable_since: Default::default(),
            },
            has_data: cluster.is_some(),
            now_unix_ms: None,
        }),
    }
}

/// What peer `i`'s agent says, to change it.
pub(crate) fn report_of(o: &mut Observations, i: u8) -> &mut AgentReport {
    let url = peer(i).peer_url.to_string();
    let a = o.agents.iter_mut().find(|a| a.peer_url == url).unwrap();
    a.report.as_mut().unwrap()
}

/// The agents of `hosts` say they hold data of `cluster`.
pub(crate) fn holding(o: &mut Observations, cluster: u64, hosts: &[u8]) {
    for &h in hosts {
        let a = agent(h, Some(cluster));
        o.agents.retain(|x| x.peer_url != a.peer_url);
        o.agents.push(a);
    }
}

/// `etcd<i>`'s entry in the membership of a cluster formed with `token`, started or not.
pub(crate) fn member(i: u8, started: bool, token: &str) -> MemberView {
    let url = peer(i).peer_url.to_string();
    MemberView {
        id: ids::member_id(std::slice::from_ref(&url), token),
        name: if started {
            format!("etcd{i}")
        } else {
            String::new()
        },
        peer_urls: vec![url],
        client_urls: if started {
            vec![peer(i).client_url.to_string()]
        } else {
            vec![]
        },
        is_learner: false,
    }
}

/// `etcd<from>`'s etcd answering as cluster `cluster_id` with `members` (the first leads).
pub(crate) fn answer(cluster_id: u64, from: u8, members: Vec<MemberView>) -> Answer {
    Answer::Cluster(ClusterView {
        endpoint: peer(from).client_url.to_string(),
        cluster_id,
        member_id: members[0].id,
        leader: members[0].id,
        is_learner: false,
        members,
    })
}

/// The new cluster `decide` forms from `o` (anything else fails the test).
pub(crate) fn planned(o: &Observations) -> InitialCluster {
    match decide(o) {
        Action::BootstrapNew(ic) => ic,
        other => panic!("expected BootstrapNew, got {other:?}"),
    }
}
