//! Gathering what `decide` looks at: the data dir, the peers, what each peer answers. Also works
//! out this member's name, address and certificates (in memory), which the action then uses.

use crate::config::Config;
use crate::decide::{Answer, LocalState, Observations};
use crate::discovery::{self, Discovered, Source};
use crate::error::Refused;
use crate::etcd::client;
use crate::etcd::render::LocalMember;
use crate::tls::{self, CertSource, Identity, TlsPlan};
use anyhow::{Context, Result};
use std::net::IpAddr;
use std::path::Path;
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

pub struct Observer<'a> {
    pub cfg: &'a Config,
    pub sources: Vec<Box<dyn Source>>,
    pub certs: Box<dyn CertSource>,
}

pub struct Observed {
    pub obs: Observations,
    pub discovered: Discovered,
    pub me: LocalMember,
    pub identity: Identity,
    pub tls: TlsPlan,
}

pub fn local_state(data_dir: &Path) -> LocalState {
    LocalState {
        has_wal: data_dir.join("member/wal").is_dir(),
        has_member_dir: data_dir.join("member").exists(),
    }
}

/// The short host name, read from the kernel (no NSS).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().split('.').next().unwrap_or("").to_string())
        .filter(|h| !h.is_empty())
}

impl<'a> Observer<'a> {
    pub async fn new(cfg: &'a Config) -> Result<Self> {
        Ok(Observer {
            cfg,
            sources: discovery::sources(cfg)?,
            certs: {
                let certs = tls::source(cfg).await?;
                certs.precheck(cfg, time::OffsetDateTime::now_utc()).await?;
                certs
            },
        })
    }

    pub async fn observe(&self) -> Result<Observed> {
        let cfg = self.cfg;
        let local = local_state(&cfg.member.data_dir);
        let (discovered, stable) =
            discovery::read_stable(&self.sources, |d| stability_pause(cfg.cluster.size, d), 4)
                .await?;
        let local_ips = discovery::local_addresses()?;
        let me = discovery::find_self(
            &discovered.peers,
            &local_ips,
            cfg.member.advertise_address,
            cfg.member.peer_port,
        )?
        .cloned();
        let hostname = hostname();
        let name = match (&me, &cfg.member.name) {
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
        let ip: IpAddr = match (cfg.member.advertise_address, &me) {
            (Some(a), _) => a,
            (None, Some(p)) => p.ips[0],
            (None, None) => *local_ips
                .iter()
                .find(|ip| ip.is_ipv4())
                .or(local_ips.first())
                .context("this machine has no non-loopback address")?,
        };
        let my_peer_url = me.as_ref().map(|p| p.peer_url.clone()).or_else(|| {
            cfg.member
                .advertise_address
                .map(|a| crate::urls::EtcdUrl::https(a, cfg.member.peer_port))
        });
        let member = LocalMember { name, ip };
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
        let answers = if local.has_wal {
            vec![]
        } else {
            let material = tls.client_material(&cfg.tls.dir)?;
            let endpoints = discovered.endpoints_except(&member.client_url(cfg).to_string());
            probe_all(&endpoints, &material).await
        };
        for a in &answers {
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
        };
        Ok(Observed {
            obs,
            discovered,
            me: member,
            identity,
            tls,
        })
    }
}

async fn probe_all(endpoints: &[String], material: &tls::ClientMaterial) -> Vec<Answer> {
    let mut set = tokio::task::JoinSet::new();
    for (i, e) in endpoints.iter().enumerate() {
        let e = e.clone();
        let m = material.clone();
        set.spawn(async move { (i, client::probe(&e, &m).await) });
    }
    let mut out: Vec<(usize, Answer)> = Vec::new();
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
            peers: (1..=peers).map(crate::decide::tests::peer).collect(),
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
