//! Finding the peers. One small interface, one provider per folder file, one `match` that picks
//! them; the results are merged and read again until two consecutive reads agree.

mod seeds;
mod srv;
mod static_peers;

use crate::config::Config;
use crate::model::peer::Peer;
use crate::model::url::EtcdUrl;
use anyhow::{bail, Result};
use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

/// What one read of all sources found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Discovered {
    /// Sorted by peer URL, deduplicated.
    pub peers: Vec<Peer>,
    /// Targets that were named but did not resolve: the set is not complete while any are left.
    pub unresolved: Vec<String>,
    /// Client endpoints of a running cluster (SRV client records, seeds).
    pub client_endpoints: Vec<EtcdUrl>,
}

impl Discovered {
    fn merge(&mut self, other: Discovered) {
        self.peers.extend(other.peers);
        self.unresolved.extend(other.unresolved);
        self.client_endpoints.extend(other.client_endpoints);
        self.peers.sort();
        self.peers.dedup_by(|a, b| a.peer_url == b.peer_url);
        self.unresolved.sort();
        self.unresolved.dedup();
        self.client_endpoints.sort();
        self.client_endpoints.dedup();
    }

    /// Every client endpoint found (peers' client URLs, SRV client records, seeds) except
    /// `own`, sorted and deduplicated: the places to ask about the cluster.
    pub(crate) fn endpoints_except(&self, own: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .peers
            .iter()
            .map(|p| p.client_url.to_string())
            .chain(self.client_endpoints.iter().map(ToString::to_string))
            .filter(|e| e != own)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// A short description for logs: `etcd1=https://10.0.0.11:2380, ...`.
    pub(crate) fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .peers
            .iter()
            .map(|p| format!("{}={}", p.name, p.peer_url))
            .collect();
        parts.extend(self.unresolved.iter().map(|u| format!("{u} (unresolved)")));
        if parts.is_empty() {
            "no peers".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A place peers are listed.
pub(crate) trait Source: Send + Sync {
    /// For logs and errors: "DNS SRV _etcd-server-ssl._tcp.example.com".
    fn describe(&self) -> String;
    fn discover(&self) -> BoxFuture<'_, Result<Discovered>>;
}

/// The sources the configuration asks for.
pub(crate) fn sources(cfg: &Config) -> Result<Vec<Box<dyn Source>>> {
    let mut out: Vec<Box<dyn Source>> = Vec::new();
    let d = &cfg.discovery;
    if let Some(domain) = &d.srv_domain {
        out.push(Box::new(srv::SrvSource::new(
            domain,
            d.srv_name.as_deref(),
            &d.nameservers,
            cfg.member.client_port,
        )?));
    }
    if !d.peers.is_empty() {
        out.push(Box::new(static_peers::StaticSource::new(
            &d.peers,
            cfg.member.client_port,
            srv::resolver(&d.nameservers)?,
        )));
    }
    if !d.seeds.is_empty() {
        out.push(Box::new(seeds::SeedSource::new(&d.seeds)));
    }
    Ok(out)
}

/// Read every source once and merge. An error from any source fails the read (the caller retries):
/// a partial view must never be mistaken for the whole set.
pub(crate) async fn read_all(sources: &[Box<dyn Source>]) -> Result<Discovered> {
    let mut all = Discovered::default();
    for s in sources {
        let found = s.discover().await.map_err(|e| e.context(s.describe()))?;
        all.merge(found);
    }
    Ok(all)
}

/// Read until two consecutive reads agree (at most `attempts` reads, `pause` apart). Returns the
/// last read and whether it was stable.
pub(crate) async fn read_stable(
    sources: &[Box<dyn Source>],
    pause: impl Fn(&Discovered) -> Duration,
    attempts: usize,
) -> Result<(Discovered, bool)> {
    let mut previous = read_all(sources).await?;
    for _ in 1..attempts.max(2) {
        tokio::time::sleep(pause(&previous)).await;
        let next = read_all(sources).await?;
        if next == previous {
            return Ok((next, true));
        }
        tracing::info!(
            before = %previous.describe(),
            now = %next.describe(),
            "discovery changed between two reads; reading again"
        );
        previous = next;
    }
    Ok((previous, false))
}

/// Non-loopback addresses of this machine's interfaces.
pub(crate) fn local_addresses() -> Result<Vec<IpAddr>> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map_err(|e| anyhow::anyhow!("listing network interfaces: {e}"))?
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback())
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// Which discovered peer is this node: the one whose peer URL is at one of our addresses (the
/// advertise address when configured) on our peer port. `None` when no peer matches.
pub(crate) fn find_self<'a>(
    peers: &'a [Peer],
    local_ips: &[IpAddr],
    advertise: Option<IpAddr>,
    peer_port: u16,
) -> Result<Option<&'a Peer>> {
    let mine: BTreeSet<IpAddr> = match advertise {
        Some(a) => BTreeSet::from([a]),
        None => local_ips.iter().copied().collect(),
    };
    let matches: Vec<&Peer> = peers
        .iter()
        .filter(|p| p.peer_url.port == peer_port && p.ips.iter().any(|ip| mine.contains(ip)))
        .collect();
    match matches.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => bail!(
            "this node matches several discovered peers ({}); set member.advertise_address to pick one",
            many.iter()
                .map(|p| p.peer_url.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, ip: &str) -> Peer {
        let ip: IpAddr = ip.parse().unwrap();
        Peer {
            name: name.into(),
            peer_url: EtcdUrl::https(ip, 2380),
            client_url: EtcdUrl::https(ip, 2379),
            ips: vec![ip],
            dns_name: None,
        }
    }

    #[test]
    fn finds_self_by_ip_and_port() {
        let peers = vec![peer("a", "10.0.0.1"), peer("b", "10.0.0.2")];
        let local: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "192.168.1.5".parse().unwrap()];
        assert_eq!(
            find_self(&peers, &local, None, 2380).unwrap().unwrap().name,
            "b"
        );
        assert!(find_self(&peers, &local, None, 2390).unwrap().is_none());
        assert!(
            find_self(&peers, &local, Some("10.0.0.9".parse().unwrap()), 2380)
                .unwrap()
                .is_none()
        );
        let both: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert!(find_self(&peers, &both, None, 2380).is_err());
        assert_eq!(
            find_self(&peers, &both, Some("10.0.0.1".parse().unwrap()), 2380)
                .unwrap()
                .unwrap()
                .name,
            "a"
        );
    }

    #[test]
    fn merge_sorts_and_dedups() {
        let mut d = Discovered {
            peers: vec![peer("b", "10.0.0.2")],
            ..Default::default()
        };
        d.merge(Discovered {
            peers: vec![peer("a", "10.0.0.1"), peer("b", "10.0.0.2")],
            unresolved: vec!["x.test".into()],
            ..Default::default()
        });
        assert_eq!(d.peers.len(), 2);
        assert_eq!(d.peers[0].name, "a");
        assert_eq!(
            d.describe(),
            "a=https://10.0.0.1:2380, b=https://10.0.0.2:2380, x.test (unresolved)"
        );
    }
}
