//! The first-boot decision: what to do with the local member, as a pure function of what was
//! observed (the data dir, the discovered peers, what each peer's etcd and each peer's agent
//! answered). No I/O here; the table tests below are the specification.
//!
//! Two rules keep a cluster from forking:
//! - a new cluster is formed only when every member of the complete, stable peer set positively
//!   says, through its agent, that it holds no data; a member that cannot be asked blocks it;
//! - the token of a new cluster mixes in a nonce from every initial member, and a member draws a
//!   new nonce once the data it formed with is gone, so a re-formed cluster never gets the
//!   member and cluster IDs of an earlier one (etcd derives both from peer URLs and token only).

use super::restore::{self, FormedPeer, NoSeed, Snapshots};
use crate::model::cluster::{Answer, ClusterView};
use crate::model::ids;
use crate::model::local::LocalState;
use crate::model::peer::Peer;
use crate::model::url::EtcdUrl;
use crate::util::sha256::sha256_hex;
use std::collections::BTreeMap;
use std::fmt;

/// What a peer's agent says about its node (its endpoint on `member.agent_port`). It answers
/// before etcd runs, so it is the evidence for "nobody holds data".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentReport {
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

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(id) => s.serialize_str(&format!("{id:x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| u64::from_str_radix(&t, 16).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// One peer's agent, asked at its peer URL's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAnswer {
    pub peer_url: String,
    pub name: String,
    /// The report, or why there is none (down, TLS refused, not an agent, ...).
    pub report: Result<AgentReport, String>,
}

/// Everything the decision looks at.
#[derive(Debug, Clone)]
pub struct Observations {
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

/// The `--initial-cluster` of a new cluster: identical on every initial member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster {
    /// `(name, peer URL)`, sorted by URL.
    pub members: Vec<(String, String)>,
    pub token: String,
    pub my_name: String,
    /// A digest of the initial members' nonces: tells this formation from an earlier one of the
    /// same peers even when `cluster.token` fixes the token (and with it the cluster ID).
    pub formation: String,
    /// The snapshot every initial member restores before its first start, or `None`: empty.
    pub seed: Option<String>,
}

/// Between the etcd starts of two initial members of a new cluster; see `start_delay`.
pub const START_STAGGER: std::time::Duration = std::time::Duration::from_millis(100);

impl InitialCluster {
    /// How long this member waits before it starts etcd: its rank among the initial members
    /// (sorted by peer URL, the same on every node) times `START_STAGGER`. etcd started with
    /// `--initial-cluster-state new` first asks every other initial member's peer URL whether
    /// the cluster already exists, 1 s timeout each; a peer whose listener is open but which is
    /// still asking its own peers does not answer, so members started at the same instant often
    /// each wait 1 s per peer (measured: 2 s of 2.3 s for 3 members, 4 s for 5). Started 100 ms
    /// apart, each finds the earlier ones serving and the later ones not listening yet.
    pub fn start_delay(&self) -> std::time::Duration {
        let rank = self
            .members
            .iter()
            .position(|(n, _)| n == &self.my_name)
            .unwrap_or(0);
        START_STAGGER * rank as u32
    }

    pub fn flag(&self) -> String {
        self.members
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn member_ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .map(|(_, u)| ids::member_id(std::slice::from_ref(u), &self.token))
            .collect()
    }

    /// The cluster ID etcd will compute for this initial cluster.
    pub fn cluster_id(&self) -> u64 {
        ids::cluster_id(&self.member_ids())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
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
    pub fn refuses_at_deadline(&self) -> bool {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
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

/// The derived token: the cluster name plus a digest of the sorted peer URLs and the sorted
/// nonces of the initial members, so every initial member computes the same one, and each
/// formation gets a fresh one (a re-formed cluster never repeats an earlier cluster's IDs). A
/// restored cluster mixes in the snapshot it starts from (see `decide::restore`).
pub fn derive_token(
    cluster_name: &str,
    sorted_peer_urls: &[String],
    nonces: &[String],
    seed: Option<&str>,
) -> String {
    let mut nonces = nonces.to_vec();
    nonces.sort();
    let mut input = format!("{}|{}", sorted_peer_urls.join(","), nonces.join(","));
    if let Some(id) = seed {
        input.push_str(&format!("|restore:{id}"));
    }
    let digest = sha256_hex(input.as_bytes());
    format!("{cluster_name}-{}", &digest[..12])
}

/// A peer that holds data: the cluster and formation it belongs to, the snapshot it was restored
/// from, and a description.
struct Holding {
    cluster: Option<u64>,
    formation: Option<String>,
    restored_from: Option<String>,
    who: String,
}

/// The nonces of every initial member (this node's and each peer agent's), or who could not be
/// asked, who holds data, and who belongs to another cluster name.
struct Evidence {
    nonces: Vec<String>,
    unasked: Vec<String>,
    /// Peers that hold data.
    holding: Vec<Holding>,
    foreign: Vec<String>,
}

fn evidence(obs: &Observations) -> Evidence {
    let mut e = Evidence {
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
            Some(Ok(r)) if r.cluster_name != obs.cluster_name => e.foreign.push(format!(
                "{who} belongs to cluster.name {:?}",
                r.cluster_name
            )),
            Some(Ok(r)) => {
                if r.has_data {
                    e.holding.push(Holding {
                        cluster: r.cluster_id,
                        formation: r.formation.clone(),
                        restored_from: r.restored_from.clone(),
                        who: format!(
                            "{who} (cluster {}, member {}, raft index {})",
                            r.cluster_id.map(|c| format!("{c:x}")).unwrap_or("?".into()),
                            r.member_id.map(|c| format!("{c:x}")).unwrap_or("?".into()),
                            r.raft_index
                                .map(|c| c.to_string())
                                .unwrap_or("unknown".into()),
                        ),
                    });
                }
                e.nonces.push(r.nonce.clone());
            }
        }
    }
    e
}

/// The initial cluster for the discovered set, when the set is complete enough to form one.
fn initial_cluster(obs: &Observations) -> Result<InitialCluster, Action> {
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
    let Some(me) = &obs.me else {
        let found = obs
            .peers
            .iter()
            .map(|p| format!("{}={}", p.name, p.peer_url))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Action::Wait(WaitReason::NotInSet { found }));
    };
    let mut members: Vec<(String, String)> = obs
        .peers
        .iter()
        .map(|p| (p.name.clone(), p.peer_url.to_string()))
        .collect();
    members.sort_by(|a, b| a.1.cmp(&b.1));
    let urls: Vec<String> = members.iter().map(|(_, u)| u.clone()).collect();
    let e = evidence(obs);
    if !e.foreign.is_empty() {
        return Err(Action::Refuse(format!(
            "peers of another cluster are in this node's peer set: {}; fix the DNS records or discovery.peers",
            e.foreign.join("; ")
        )));
    }
    if !e.unasked.is_empty() {
        return Err(Action::Wait(WaitReason::Unasked(e.unasked)));
    }
    let mut nonces = e.nonces.clone();
    nonces.sort();
    let formation = sha256_hex(nonces.join(",").as_bytes())[..16].to_string();
    let formed: Vec<FormedPeer> = e
        .holding
        .iter()
        .filter(|h| h.formation.as_deref() == Some(formation.as_str()))
        .map(|h| FormedPeer {
            who: h.who.clone(),
            restored_from: h.restored_from.clone(),
        })
        .collect();
    let seed = match restore::seed(&obs.snapshots, &formed) {
        Ok(seed) => seed,
        Err(why @ NoSeed::PeersDisagree(_)) => return Err(Action::Refuse(why.to_string())),
        Err(why) => return Err(Action::Wait(WaitReason::Seed(why))),
    };
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

/// Before anything joins the cluster `cluster_id` (or removes a member of it): is it this node's?
/// The identity record must not name another cluster, no agent of it may belong to another
/// `cluster.name`, and at least one agent of it must confirm ours.
fn not_our_cluster(obs: &Observations, cluster_id: u64) -> Option<Action> {
    if let Some(recorded) = obs.recorded_cluster.filter(|r| *r != cluster_id) {
        return Some(Action::Refuse(format!(
            "cluster {cluster_id:x} answers, but this node last belonged to cluster {recorded:x} (its identity record); if {cluster_id:x} is the right cluster, delete the identity record beside member.data_dir and run again"
        )));
    }
    let of_it: Vec<(&AgentAnswer, &AgentReport)> = obs
        .agents
        .iter()
        .filter_map(|a| a.report.as_ref().ok().map(|r| (a, r)))
        .filter(|(_, r)| r.cluster_id == Some(cluster_id))
        .collect();
    let foreign: Vec<String> = of_it
        .iter()
        .filter(|(_, r)| r.cluster_name != obs.cluster_name)
        .map(|(a, r)| {
            format!(
                "{} ({}) says it is cluster.name {:?}",
                a.name, a.peer_url, r.cluster_name
            )
        })
        .collect();
    if !foreign.is_empty() {
        return Some(Action::Refuse(format!(
            "cluster {cluster_id:x} is not this node's cluster {:?}: {}; fix discovery (DNS records, discovery.peers, seeds)",
            obs.cluster_name,
            foreign.join("; ")
        )));
    }
    if of_it.is_empty() {
        return Some(Action::Wait(WaitReason::Unconfirmed(format!(
            "cluster {cluster_id:x} answers, but no etcd-bootstrap agent of it (port member.agent_port) confirms that it is cluster {:?}; joining only a cluster that says it is ours",
            obs.cluster_name
        ))));
    }
    None
}

pub fn decide(obs: &Observations) -> Action {
    if obs.local.has_wal {
        return Action::Restart;
    }
    if obs.local.has_member_dir {
        // Nothing was committed without a WAL; keep it aside rather than start over it.
        return Action::MoveAside(
            "the data dir holds member/ without a WAL (an interrupted start)".into(),
        );
    }

    let clusters: Vec<&ClusterView> = obs
        .answers
        .iter()
        .filter_map(|a| match a {
            Answer::Cluster(c) => Some(c),
            Answer::NoAnswer(_) => None,
        })
        .collect();
    let mut by_id: BTreeMap<u64, Vec<&ClusterView>> = BTreeMap::new();
    for c in &clusters {
        by_id.entry(c.cluster_id).or_default().push(c);
    }
    if by_id.len() > 1 {
        let desc = by_id
            .iter()
            .map(|(id, views)| {
                let eps: Vec<&str> = views.iter().map(|v| v.endpoint.as_str()).collect();
                format!("cluster {id:x} at {}", eps.join(" "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Action::Refuse(format!(
            "peers answer as two different clusters ({desc}); a split like this needs an operator"
        ));
    }

    let planned = initial_cluster(obs);
    let Some((&cluster_id, views)) = by_id.iter().next() else {
        return match planned {
            Ok(ic) => {
                // A peer whose data belongs to the very cluster planned here (the same peers and
                // nonces give the same token, so the same ID) is an initial member that started
                // first; etcd may not answer clients until a quorum has started.
                let holding: Vec<String> = evidence(obs)
                    .holding
                    .into_iter()
                    .filter(|h| {
                        h.cluster != Some(ic.cluster_id())
                            || h.formation.as_deref() != Some(ic.formation.as_str())
                    })
                    .map(|h| h.who)
                    .collect();
                if holding.is_empty() {
                    Action::BootstrapNew(ic)
                } else {
                    Action::Wait(WaitReason::PeersHoldData(holding))
                }
            }
            Err(action) => action,
        };
    };
    if let Some(refusal) = not_our_cluster(obs, cluster_id) {
        return refusal;
    }

    // One cluster answers. Prefer what a voter with a leader says about membership.
    let view = views
        .iter()
        .copied()
        .max_by_key(|v| (!v.is_learner, v.leader != 0, v.members.len()))
        .expect("non-empty group");
    let endpoints: Vec<String> = views
        .iter()
        .filter(|v| !v.is_learner)
        .map(|v| v.endpoint.clone())
        .collect();
    let my_url = obs
        .me
        .as_ref()
        .map(|m| m.peer_url.to_string())
        .or_else(|| obs.my_peer_url.as_ref().map(ToString::to_string));
    let mine = my_url
        .as_ref()
        .and_then(|u| view.members.iter().find(|m| m.peer_urls.contains(u)));

    if let Some(m) = mine {
        if m.started() {
            // It ran with data that is no longer here: such a member is gone for good (etcd
            // refuses it with "member has already been bootstrapped"); remove it, re-add it.
            return Action::ReplaceStale {
                cluster_id,
                member_id: m.id,
                endpoints,
            };
        }
    }
    if let (Ok(ic), Some(m)) = (&planned, mine) {
        // Only an entry with the ID etcd derives from this URL and the token is an initial
        // member; one made by MemberAdd (a learner that never started) must be adopted.
        if ic.cluster_id() == cluster_id && !m.is_learner && ic.member_ids().contains(&m.id) {
            // The cluster our peer set forms, already started by faster peers, lists this node
            // as an initial member that has not started: start with the same flags. (Not listed
            // at all means it was removed: that is a join, never `new`.)
            return Action::BootstrapNew(ic.clone());
        }
    }
    if my_url.is_none() {
        return match planned {
            Err(action) => action,
            Ok(_) => Action::Refuse(
                "a cluster answers but this node's own peer URL is unknown; set member.advertise_address".into(),
            ),
        };
    }
    match mine {
        Some(m) => Action::AdoptUnstarted {
            cluster_id,
            member_id: m.id,
            endpoints,
        },
        None => Action::Join {
            cluster_id,
            endpoints,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::cluster::MemberView;
    use std::net::IpAddr;

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

    fn obs(n: u8, me: Option<u8>) -> Observations {
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
    fn agent(i: u8, cluster: Option<u64>) -> AgentAnswer {
        AgentAnswer {
            peer_url: peer(i).peer_url.to_string(),
            name: format!("etcd{i}"),
            report: Ok(AgentReport {
                cluster_name: "prod".into(),
                nonce: format!("n{i}"),
                has_data: cluster.is_some(),
                cluster_id: cluster,
                member_id: cluster.map(|_| i as u64),
                raft_index: cluster.map(|_| 100),
                raft_term: None,
                revision: None,
                formation: None,
                restored_from: None,
                now_unix_ms: None,
                unreachable_since: Default::default(),
            }),
        }
    }

    fn report_of(o: &mut Observations, i: u8) -> &mut AgentReport {
        let url = peer(i).peer_url.to_string();
        let a = o.agents.iter_mut().find(|a| a.peer_url == url).unwrap();
        a.report.as_mut().unwrap()
    }

    /// The agents of `hosts` say they hold data of `cluster`.
    fn holding(o: &mut Observations, cluster: u64, hosts: &[u8]) {
        for &h in hosts {
            let a = agent(h, Some(cluster));
            o.agents.retain(|x| x.peer_url != a.peer_url);
            o.agents.push(a);
        }
    }

    fn member(i: u8, started: bool, token: &str) -> MemberView {
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

    fn answer(cluster_id: u64, from: u8, members: Vec<MemberView>) -> Answer {
        Answer::Cluster(ClusterView {
            endpoint: peer(from).client_url.to_string(),
            cluster_id,
            member_id: members[0].id,
            leader: members[0].id,
            is_learner: false,
            members,
        })
    }

    fn planned(o: &Observations) -> InitialCluster {
        match decide(o) {
            Action::BootstrapNew(ic) => ic,
            other => panic!("expected BootstrapNew, got {other:?}"),
        }
    }

    #[test]
    fn initial_members_start_etcd_staggered_by_their_rank() {
        let ic = |me: &str| InitialCluster {
            members: vec![
                ("b".into(), "https://10.0.0.1:2380".into()),
                ("a".into(), "https://10.0.0.2:2380".into()),
                ("c".into(), "https://10.0.0.3:2380".into()),
            ],
            token: "t".into(),
            my_name: me.into(),
            formation: String::new(),
            seed: None,
        };
        assert_eq!(ic("b").start_delay(), std::time::Duration::ZERO);
        assert_eq!(ic("a").start_delay(), START_STAGGER);
        assert_eq!(ic("c").start_delay(), 2 * START_STAGGER);
    }

    #[test]
    fn wal_means_restart_whatever_else_is_seen() {
        let mut o = obs(3, Some(1));
        o.local.has_wal = true;
        o.local.has_member_dir = true;
        o.stable = false;
        o.answers = vec![
            answer(1, 2, vec![member(2, true, "x")]),
            answer(2, 3, vec![member(3, true, "y")]),
        ];
        assert_eq!(decide(&o), Action::Restart);
    }

    #[test]
    fn member_dir_without_wal_is_moved_aside() {
        let mut o = obs(3, Some(1));
        o.local.has_member_dir = true;
        assert!(matches!(decide(&o), Action::MoveAside(_)));
    }

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

    #[test]
    fn two_clusters_answering_is_refused() {
        let mut o = obs(3, Some(1));
        o.answers = vec![
            answer(0xaa, 2, vec![member(2, true, "x")]),
            Answer::NoAnswer("connection refused".into()),
            answer(0xbb, 3, vec![member(3, true, "y")]),
        ];
        match decide(&o) {
            Action::Refuse(m) => {
                assert!(m.contains("cluster aa") && m.contains("cluster bb"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_forming_cluster_of_our_own_peer_set_is_joined_as_initial_member() {
        let ic = planned(&obs(3, Some(1)));
        let mut o = obs(3, Some(3));
        // etcd1 and etcd2 already run; etcd3 was listed at bootstrap but has not started.
        let members = vec![
            member(1, true, &ic.token),
            member(2, true, &ic.token),
            member(3, false, &ic.token),
        ];
        o.answers = vec![
            answer(ic.cluster_id(), 1, members.clone()),
            answer(ic.cluster_id(), 2, members),
        ];
        holding(&mut o, ic.cluster_id(), &[1, 2]);
        assert!(matches!(decide(&o), Action::BootstrapNew(x) if x.my_name == "etcd3"));
    }

    #[test]
    fn a_removed_member_of_its_own_initial_cluster_joins_rather_than_bootstraps() {
        let ic = planned(&obs(3, Some(1)));
        let mut o = obs(3, Some(3));
        let members = vec![member(1, true, &ic.token), member(2, true, &ic.token)];
        o.answers = vec![answer(ic.cluster_id(), 1, members)];
        holding(&mut o, ic.cluster_id(), &[1, 2]);
        assert!(
            matches!(decide(&o), Action::Join { .. }),
            "{:?}",
            decide(&o)
        );
    }

    #[test]
    fn an_added_but_unstarted_learner_of_our_own_cluster_is_adopted_not_bootstrapped() {
        let ic = planned(&obs(3, Some(1)));
        let mut o = obs(3, Some(3));
        // etcd3 was removed, then re-added as a learner (MemberAdd gives it a new ID), and the
        // agent died before starting etcd.
        let mut learner = member(3, false, "not-the-token");
        learner.is_learner = true;
        let members = vec![
            member(1, true, &ic.token),
            member(2, true, &ic.token),
            learner.clone(),
        ];
        o.answers = vec![answer(ic.cluster_id(), 1, members)];
        holding(&mut o, ic.cluster_id(), &[1, 2]);
        assert_eq!(
            decide(&o),
            Action::AdoptUnstarted {
                cluster_id: ic.cluster_id(),
                member_id: learner.id,
                endpoints: vec!["https://10.0.0.1:2379".into()]
            }
        );
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
            r.formation = Some(formed.formation.clone());
            r.restored_from = Some("s1".into());
        }
        let ic3 = planned(&late);
        assert_eq!(ic3.seed.as_deref(), Some("s1"));
        assert_eq!(ic3.cluster_id(), formed.cluster_id());
        // Peers of this formation that started from different data: refused.
        report_of(&mut late, 2).restored_from = None;
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
        report_of(&mut o, 2).formation = Some(ic.formation.clone());
        assert_eq!(decide(&o), Action::BootstrapNew(ic.clone()));
        // The same cluster ID from an earlier formation (cluster.token fixed): that is old data.
        report_of(&mut o, 2).formation = Some("earlier".into());
        assert!(matches!(
            decide(&o),
            Action::Wait(WaitReason::PeersHoldData(_))
        ));

        // A member of another cluster name in the peer set: refused.
        let mut o = obs(3, Some(1));
        if let Ok(r) = &mut o.agents[0].report {
            r.cluster_name = "beta".into();
        }
        assert!(matches!(decide(&o), Action::Refuse(m) if m.contains("\"beta\"")));
    }

    #[test]
    fn a_reformed_cluster_never_repeats_an_earlier_identity() {
        let first = planned(&obs(3, Some(1)));
        // Same peers, same name; one member drew a new nonce because its data was lost.
        let mut o = obs(3, Some(1));
        if let Ok(r) = &mut o.agents[0].report {
            r.nonce = "fresh".into();
        }
        let again = planned(&o);
        assert_eq!(first.flag(), again.flag());
        assert_ne!(first.token, again.token);
        assert_ne!(first.cluster_id(), again.cluster_id());
        // Every initial member computes the same token from the same nonces.
        let mut o3 = obs(3, Some(3));
        if let Ok(r) = &mut o3.agents[1].report {
            r.nonce = "fresh".into();
        }
        assert_eq!(planned(&o3).token, again.token);
    }

    #[test]
    fn only_our_own_cluster_is_joined() {
        let members = vec![member(1, true, "old"), member(2, true, "old")];
        let cid = ids::cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>());
        // A node of cluster "beta" pointed at a "prod" node: prod's agent names its cluster.
        let mut o = obs(3, Some(3));
        o.cluster_name = "beta".into();
        o.answers = vec![answer(cid, 1, members.clone())];
        holding(&mut o, cid, &[1, 2]);
        match decide(&o) {
            Action::Refuse(m) => assert!(m.contains("\"prod\""), "{m}"),
            other => panic!("{other:?}"),
        }
        // No agent confirms the cluster: wait (and refuse at the deadline).
        let mut o = obs(3, Some(3));
        o.answers = vec![answer(cid, 1, members.clone())];
        assert!(matches!(
            decide(&o),
            Action::Wait(WaitReason::Unconfirmed(_))
        ));
        // The identity record names another cluster: refused.
        let mut o = obs(3, Some(3));
        o.answers = vec![answer(cid, 1, members.clone())];
        holding(&mut o, cid, &[1, 2]);
        o.recorded_cluster = Some(cid ^ 1);
        assert!(matches!(decide(&o), Action::Refuse(m) if m.contains("identity record")));
        // ...and the same cluster: joined.
        o.recorded_cluster = Some(cid);
        assert!(matches!(decide(&o), Action::Join { .. }));
    }

    #[test]
    fn lost_data_of_a_started_member_is_a_stale_self_even_in_its_own_cluster() {
        let ic = planned(&obs(3, Some(1)));
        let mut o = obs(3, Some(1));
        let members = vec![
            member(1, true, &ic.token),
            member(2, true, &ic.token),
            member(3, true, &ic.token),
        ];
        o.answers = vec![answer(ic.cluster_id(), 2, members.clone())];
        holding(&mut o, ic.cluster_id(), &[2, 3]);
        assert_eq!(
            decide(&o),
            Action::ReplaceStale {
                cluster_id: ic.cluster_id(),
                member_id: members[0].id,
                endpoints: vec!["https://10.0.0.2:2379".into()]
            }
        );
    }

    #[test]
    fn another_cluster_means_join_adopt_or_replace() {
        // The cluster was formed by etcd1..3 with token "old"; SRV now lists 4 members.
        let members = vec![
            member(1, true, "old"),
            member(2, true, "old"),
            member(3, true, "old"),
        ];
        let cid = ids::cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>());
        let mut o = obs(4, Some(4));
        o.answers = vec![answer(cid, 1, members.clone())];
        holding(&mut o, cid, &[1, 2, 3]);
        assert!(matches!(decide(&o), Action::Join { cluster_id, .. } if cluster_id == cid));

        let mut with_unstarted = members.clone();
        with_unstarted.push(member(4, false, "old"));
        o.answers = vec![answer(cid, 1, with_unstarted.clone())];
        assert!(
            matches!(decide(&o), Action::AdoptUnstarted { member_id, .. } if member_id == with_unstarted[3].id)
        );

        let mut o = obs(4, Some(2));
        o.answers = vec![answer(cid, 1, members.clone())];
        holding(&mut o, cid, &[1, 3]);
        assert!(
            matches!(decide(&o), Action::ReplaceStale { member_id, .. } if member_id == members[1].id)
        );

        // Seeds only: not in any peer set, but the own URL is known.
        let mut o = obs(0, None);
        o.my_peer_url = Some(peer(9).peer_url);
        o.answers = vec![answer(cid, 1, members.clone())];
        holding(&mut o, cid, &[1]);
        assert!(matches!(decide(&o), Action::Join { .. }));
        // ...and unknown: cannot join.
        o.my_peer_url = None;
        assert!(matches!(decide(&o), Action::Wait(WaitReason::NoPeers)));
    }

    #[test]
    fn learners_are_not_used_as_endpoints() {
        let members = vec![member(1, true, "old"), member(2, true, "old")];
        let mut o = obs(3, Some(3));
        let mut learner = match answer(7, 2, members.clone()) {
            Answer::Cluster(c) => c,
            _ => unreachable!(),
        };
        learner.is_learner = true;
        o.answers = vec![answer(7, 1, members), Answer::Cluster(learner)];
        holding(&mut o, 7, &[1, 2]);
        match decide(&o) {
            Action::Join { endpoints, .. } => {
                assert_eq!(endpoints, vec!["https://10.0.0.1:2379".to_string()])
            }
            other => panic!("{other:?}"),
        }
    }
}
