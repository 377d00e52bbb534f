//! Gathering what `decide` looks at: the data dir, the peers, what each peer answers. Also works
//! out this member's name, address and certificates (in memory), which the action then uses.

use crate::agent::endpoint::{self, Endpoint};
use crate::config::Config;
use crate::decide::bootstrap::{AgentAnswer, Observations};
use crate::decide::Snapshots;
use crate::discovery::{self, Discovered, Source};
use crate::error::Refused;
use crate::etcd::client;
use crate::etcd::datadir::Record;
use crate::etcd::render::LocalMember;
use crate::model::cluster::Answer;
use crate::model::local::LocalState;
use crate::model::peer::Peer;
use crate::tls::{self, CertSource, Identity, TlsPlan};
use anyhow::{Context, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Pause between the two discovery reads that must agree.
const STABILITY_PAUSE: Duration = Duration::from_millis(250);
/// The same when the read before it already was the complete set that `cluster.size` asks for,
/// every target resolved. The second read still has to agree, so a set that changes between
/// the reads is still caught (and read again with the longer pause); what the longer pause buys
/// is only more time for a set that is still incomplete to fill up, which a complete set does
/// not need. It cuts 200 ms off the start of every member of a new cluster.
const COMPLETE_PAUSE: Duration = Duration::from_millis(50);

/// How long to wait before reading discovery again, after reading `d`.
fn stability_pause(expected: Option<usize>, d: &Discovered) -> Duration {
    match expected {
        Some(n) if d.unresolved.is_empty() && d.peers.len() == n => COMPLETE_PAUSE,
        _ => STABILITY_PAUSE,
    }
}

pub(crate) struct Observer<'a> {
    pub cfg: &'a Config,
    pub sources: Vec<Box<dyn Source>>,
    pub certs: Box<dyn CertSource>,
    /// `run`: this node's agent endpoint, served with the planned peer certificate, and the
    /// identity record kept on disk. `None` for `plan`, which writes and binds nothing.
    pub endpoint: Option<Arc<Endpoint>>,
    /// The snapshot store, opened once (`Agent::store`).
    pub store: super::StoreSlot,
}

pub(crate) struct Observed {
    pub obs: Observations,
    pub discovered: Discovered,
    pub me: LocalMember,
    pub tls: TlsPlan,
}

pub(crate) fn local_state(data_dir: &Path) -> LocalState {
    LocalState {
        has_wal: data_dir.join("member/wal").is_dir(),
        has_member_dir: data_dir.join("member").exists(),
    }
}

/// The short host name, read from the kernel (no NSS).
pub(crate) fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().split('.').next().unwrap_or("").to_string())
        .filter(|h| !h.is_empty())
}

impl<'a> Observer<'a> {
    pub(crate) async fn new(cfg: &'a Config) -> Result<Self> {
        Ok(Observer {
            cfg,
            sources: discovery::sources(cfg)?,
            certs: {
                let certs = tls::source(cfg).await?;
                certs.precheck(cfg, time::OffsetDateTime::now_utc()).await?;
                certs
            },
            endpoint: None,
            store: super::StoreSlot::default(),
        })
    }

    pub(crate) fn with_endpoint(mut self, endpoint: Arc<Endpoint>) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    pub(crate) async fn observe(&self) -> Result<Observed> {
        let cfg = self.cfg;
        let local = local_state(&cfg.member.data_dir);
        let record = match &self.endpoint {
            Some(_) => Record::for_start(&cfg.member.data_dir, &cfg.cluster.name, local.has_wal)?,
            None => Record::load(&cfg.member.data_dir)?.unwrap_or_default(),
        };
        let read =
            discovery::read_stable(&self.sources, |d| stability_pause(cfg.cluster.size, d), 4)
                .await;
        crate::agent::metrics::discovery_read(&read.as_ref().map(|(d, _)| d));
        let (discovered, stable) = read?;
        let local_ips = discovery::local_addresses()?;
        let me = discovery::find_self(
            &discovered.peers,
            &local_ips,
            cfg.member.advertise_address,
            cfg.member.peer_port,
        )?
        .cloned();
        let hostname = hostname();
        let (member, my_peer_url) = local_member(cfg, me.as_ref(), &local_ips, &hostname)?;
        let ip = member.ip;
        let identity = Identity::new(
            cfg,
            &member.name,
            ip,
            me.as_ref().and_then(|p| p.dns_name.as_deref()),
            hostname.as_deref(),
        );
        let tls = self
            .certs
            .plan(cfg, &identity, time::OffsetDateTime::now_utc())
            .await?;
        let peer_material = tls.peer_material(&cfg.tls.dir)?;
        if let Some(ep) = &self.endpoint {
            ep.serve(SocketAddr::new(ip, cfg.member.agent_port), &peer_material)
                .await?;
        }
        let (answers, agents) = if local.has_wal {
            (vec![], vec![])
        } else {
            let material = tls.client_material(&cfg.tls.dir)?;
            ask_peers(cfg, &discovered, &member, &material, &peer_material).await
        };
        log_answers(&agents, &answers);
        // Only a node without data, to which no cluster answers, may form (or restore) a cluster.
        let snapshots =
            if local.has_member_dir || answers.iter().any(|a| matches!(a, Answer::Cluster(_))) {
                Snapshots::Off
            } else {
                restorable(cfg, &self.store, &peer_material).await
            };
        let obs = Observations {
            local,
            cluster_name: cfg.cluster.name.clone(),
            token_override: cfg.cluster.token.clone(),
            expected_size: cfg.cluster.size,
            peers: discovered.peers.clone(),
            unresolved: discovered.unresolved.clone(),
            stable,
            me,
            my_peer_url,
            answers,
            my_nonce: record.held.nonce.clone(),
            agents,
            recorded_cluster: record.cluster(),
            snapshots,
        };
        Ok(Observed {
            obs,
            discovered,
            me: member,
            tls,
        })
    }
}

/// This node's member name and address, and its peer URL when known: what discovery says of
/// it, else `member.name`/`member.advertise_address`, else the host name and the first local
/// address. A `member.name` other than discovery's is refused: the names in
/// --initial-cluster must agree on every node.
fn local_member(
    cfg: &Config,
    me: Option<&Peer>,
    local_ips: &[IpAddr],
    hostname: &Option<String>,
) -> Result<(LocalMember, Option<crate::model::url::EtcdUrl>)> {
    let name = match (me, &cfg.member.name) {
        (Some(p), Some(n)) if &p.name != n => {
            return Err(Refused(format!(
                "member.name is {n:?} but discovery names this node {:?} ({}); the names in --initial-cluster must agree on every node: drop member.name or make them match",
                p.name, p.peer_url
            ))
            .into())
        }
        (Some(p), _) => p.name.clone(),
        (None, Some(n)) => n.clone(),
        (None, None) => hostname.clone().context(
            "cannot tell this member's name: set member.name (no host name and not found in discovery)",
        )?,
    };
    let ip: IpAddr = match (cfg.member.advertise_address, me) {
        (Some(a), _) => a,
        (None, Some(p)) => p.ips[0],
        (None, None) => *local_ips
            .iter()
            .find(|ip| ip.is_ipv4())
            .or(local_ips.first())
            .context("this machine has no non-loopback address")?,
    };
    let my_peer_url = me.map(|p| p.peer_url.clone()).or_else(|| {
        cfg.member
            .advertise_address
            .map(|a| crate::model::url::EtcdUrl::https(a, cfg.member.peer_port))
    });
    Ok((LocalMember { name, ip }, my_peer_url))
}

/// A node without data asks every other discovered peer's etcd which cluster it is in, and
/// every peer's agent (also the hosts of seeds and SRV client records) what it holds.
async fn ask_peers(
    cfg: &Config,
    discovered: &Discovered,
    member: &LocalMember,
    material: &tls::ClientMaterial,
    peer_material: &tls::ClientMaterial,
) -> (Vec<Answer>, Vec<AgentAnswer>) {
    let endpoints = discovered.endpoints_except(&member.client_url(cfg).to_string());
    let own = member.peer_url(cfg).to_string();
    let mut to_ask: Vec<(String, String, SocketAddr)> = discovered
        .peers
        .iter()
        .filter(|p| p.peer_url.to_string() != own)
        .map(|p| {
            let addr = SocketAddr::new(p.ips[0], cfg.member.agent_port);
            (p.peer_url.to_string(), p.name.clone(), addr)
        })
        .collect();
    // Seeds and SRV client records: their hosts' agents confirm which cluster they are.
    for e in &discovered.client_endpoints {
        if let Some(ip) = e.ip().filter(|ip| *ip != member.ip) {
            if !to_ask.iter().any(|(_, _, a)| a.ip() == ip) {
                let addr = SocketAddr::new(ip, cfg.member.agent_port);
                to_ask.push((e.to_string(), e.to_string(), addr));
            }
        }
    }
    tokio::join!(
        client::probe_all(&endpoints, material),
        ask_agents(to_ask, peer_material)
    )
}

fn log_answers(agents: &[AgentAnswer], answers: &[Answer]) {
    for a in agents {
        match &a.report {
            Ok(r) => tracing::info!(
                peer = %a.peer_url,
                cluster_name = %r.held.cluster_name,
                has_data = r.has_data,
                cluster = %r.held.cluster_id.map(|c| format!("{c:x}")).unwrap_or_default(),
                "peer's agent answers"
            ),
            Err(why) => {
                tracing::info!(peer = %a.peer_url, %why, "peer's agent does not answer")
            }
        }
    }
    for a in answers {
        match a {
            Answer::Cluster(c) => tracing::info!(
                endpoint = %c.endpoint,
                cluster = %format!("{:x}", c.cluster_id),
                members = c.members.len(),
                leader = c.leader != 0,
                "peer answers as a cluster member"
            ),
            Answer::NoAnswer(why) => tracing::debug!(%why, "peer does not answer"),
        }
    }
}

/// How long one listing of the snapshot store may take.
const STORE_LIST_TIMEOUT: Duration = Duration::from_secs(20);

/// The snapshots a new cluster could start from (`backup.restore_on_bootstrap`): the signed,
/// complete ones (one listing of the store and each manifest, read bounded).
async fn restorable(
    cfg: &Config,
    store: &super::StoreSlot,
    peer_material: &tls::ClientMaterial,
) -> Snapshots {
    let Some(b) = cfg.backup.as_ref().filter(|b| b.restore_on_bootstrap) else {
        return Snapshots::Off;
    };
    let listed = async {
        // Signatures are checked against the CA of this node's TLS plan: on a first boot it is
        // not written to tls.dir yet.
        let store = store
            .get(cfg)?
            .context("[backup] without a store")?
            .clone()
            .with_material(peer_material.clone());
        crate::backup::catalog::complete_ids(&store).await
    };
    match tokio::time::timeout(STORE_LIST_TIMEOUT, listed).await {
        Ok(Ok(ids)) => Snapshots::Listed(ids),
        Ok(Err(e)) => Snapshots::Unreadable(format!("{e:#}")),
        Err(_) => Snapshots::Unreadable(format!(
            "listing {} took longer than {STORE_LIST_TIMEOUT:?}",
            b.url
        )),
    }
}

/// Ask each `(peer URL, name, agent address)` for its report, all at once.
pub(crate) async fn ask_agents(
    to_ask: Vec<(String, String, SocketAddr)>,
    material: &tls::ClientMaterial,
) -> Vec<AgentAnswer> {
    let mut set = tokio::task::JoinSet::new();
    for (i, (peer_url, name, addr)) in to_ask.into_iter().enumerate() {
        let m = material.clone();
        set.spawn(async move {
            let report = endpoint::ask(addr, &m).await.map_err(|e| format!("{e:#}"));
            (
                i,
                AgentAnswer {
                    peer_url,
                    name,
                    report,
                },
            )
        });
    }
    let mut out: Vec<(usize, AgentAnswer)> = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(pair) = r {
            out.push(pair);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, a)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(peers: u8, unresolved: usize) -> Discovered {
        Discovered {
            peers: (1..=peers)
                .map(crate::decide::bootstrap::fixtures::peer)
                .collect(),
            unresolved: (0..unresolved).map(|i| format!("etcd{i}.x")).collect(),
            client_endpoints: vec![],
        }
    }

    #[test]
    fn short_pause_only_for_a_complete_resolved_set_of_the_expected_size() {
        assert_eq!(stability_pause(Some(3), &read(3, 0)), COMPLETE_PAUSE);
        assert_eq!(stability_pause(Some(3), &read(2, 0)), STABILITY_PAUSE);
        assert_eq!(stability_pause(Some(3), &read(3, 1)), STABILITY_PAUSE);
        assert_eq!(stability_pause(Some(3), &read(4, 0)), STABILITY_PAUSE);
        assert_eq!(stability_pause(None, &read(3, 0)), STABILITY_PAUSE);
    }
}
