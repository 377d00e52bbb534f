//! DNS SRV discovery with etcd's own record names (etcd itself drops targets that do not resolve):
//! `_etcd-server-ssl[-NAME]._tcp.DOMAIN` lists the peers, `_etcd-client-ssl[-NAME]._tcp.DOMAIN` the
//! client endpoints. Every target must resolve; one that does not is reported, never dropped, so
//! that two nodes cannot compute different clusters from partial answers.

use super::{Discovered, Source};
use crate::model::peer::Peer;
use crate::model::url::EtcdUrl;
use anyhow::{Context, Result};
use futures::future::BoxFuture;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A resolver that asks `nameservers` (or those of /etc/resolv.conf) and caches nothing, so that
/// two consecutive reads really are two reads.
pub(crate) fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().context("reading /etc/resolv.conf")?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                ns
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 2;
    builder.build().context("building the DNS resolver")
}

/// The addresses of `name`, sorted; empty when the name does not exist or has no address.
pub(crate) async fn resolve(resolver: &TokioResolver, name: &str) -> Result<Vec<IpAddr>> {
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    match resolver.lookup_ip(fqdn.as_str()).await {
        Ok(lookup) => {
            let mut ips: Vec<IpAddr> = lookup.iter().collect();
            ips.sort();
            ips.dedup();
            Ok(ips)
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(vec![]),
        Err(e) => Err(anyhow::Error::new(e).context(format!("resolving {name}"))),
    }
}

/// `(target, port)` of the SRV records at `name`; empty when there are none.
async fn srv_records(resolver: &TokioResolver, name: &str) -> Result<Vec<(String, u16)>> {
    match resolver.srv_lookup(name).await {
        Ok(lookup) => {
            let mut out: Vec<(String, u16)> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some((
                        srv.target
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                        srv.port,
                    )),
                    _ => None,
                })
                .collect();
            out.sort();
            out.dedup();
            Ok(out)
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(vec![]),
        Err(e) => Err(anyhow::Error::new(e).context(format!("looking up SRV {name}"))),
    }
}

/// Every SRV target must stand for a member of its own: two targets sharing the first label of
/// their name would be two members of one name; two resolving to one address are one VM listed
/// twice (often a stale record whose address was reused by a new VM), which would put one node
/// into the initial cluster twice.
fn distinct_members(peers: &[Peer]) -> Result<()> {
    let mut names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        anyhow::bail!(
            "two SRV targets share the first label of their name ({}); member names would collide",
            names.join(", ")
        );
    }
    let target = |p: &Peer| p.dns_name.clone().unwrap_or_else(|| p.name.clone());
    for (i, a) in peers.iter().enumerate() {
        for b in &peers[i + 1..] {
            if let Some(ip) = a.ips.iter().find(|ip| b.ips.contains(ip)) {
                anyhow::bail!(
                    "the SRV targets {} and {} both resolve to {ip}: one node cannot be two members; remove the stale record (or give each its own address)",
                    target(a),
                    target(b)
                );
            }
        }
    }
    Ok(())
}

pub(crate) struct SrvSource {
    server_record: String,
    client_record: String,
    resolver: TokioResolver,
    client_port: u16,
}

impl SrvSource {
    pub(crate) fn new(
        domain: &str,
        srv_name: Option<&str>,
        nameservers: &[SocketAddr],
        client_port: u16,
    ) -> Result<Self> {
        let suffix = srv_name.map(|n| format!("-{n}")).unwrap_or_default();
        Ok(SrvSource {
            server_record: format!("_etcd-server-ssl{suffix}._tcp.{domain}."),
            client_record: format!("_etcd-client-ssl{suffix}._tcp.{domain}."),
            resolver: resolver(nameservers)?,
            client_port,
        })
    }
}

impl Source for SrvSource {
    fn describe(&self) -> String {
        format!("DNS SRV {}", self.server_record.trim_end_matches('.'))
    }

    fn discover(&self) -> BoxFuture<'_, Result<Discovered>> {
        Box::pin(async move {
            let mut out = Discovered::default();
            let servers = srv_records(&self.resolver, &self.server_record).await?;
            let clients = srv_records(&self.resolver, &self.client_record).await?;
            for (target, port) in &servers {
                let ips = resolve(&self.resolver, target).await?;
                // One address per member: the peer URL is built from it, and two nodes must
                // build the same text.
                let Some(ip) = ips.first().copied() else {
                    out.unresolved.push(target.clone());
                    continue;
                };
                if ips.len() > 1 {
                    tracing::warn!(%target, ?ips, using = %ip, "SRV target has several addresses; using the lowest");
                }
                let client_port = clients
                    .iter()
                    .find(|(t, _)| t == target)
                    .map(|(_, p)| *p)
                    .unwrap_or(self.client_port);
                out.peers.push(Peer {
                    name: target.split('.').next().unwrap_or(target).to_string(),
                    peer_url: EtcdUrl::https(ip, *port),
                    client_url: EtcdUrl::https(ip, client_port),
                    ips: vec![ip],
                    dns_name: Some(target.clone()),
                });
            }
            for (target, port) in &clients {
                match resolve(&self.resolver, target).await?.first() {
                    Some(ip) => out.client_endpoints.push(EtcdUrl::https(*ip, *port)),
                    None => {
                        tracing::warn!(%target, "SRV client target does not resolve; ignoring it")
                    }
                }
            }
            distinct_members(&out.peers)?;
            out.merge(Discovered::default());
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(target: &str, ip: &str, port: u16) -> Peer {
        let ip: IpAddr = ip.parse().unwrap();
        Peer {
            name: target.split('.').next().unwrap().to_string(),
            peer_url: EtcdUrl::https(ip, port),
            client_url: EtcdUrl::https(ip, 2379),
            ips: vec![ip],
            dns_name: Some(target.to_string()),
        }
    }

    #[test]
    fn two_targets_on_one_address_are_refused_naming_both() {
        let ok = [
            peer("etcd1.lab.test", "10.0.0.1", 2380),
            peer("etcd2.lab.test", "10.0.0.2", 2380),
        ];
        distinct_members(&ok).unwrap();
        // Another port does not make another node.
        for port in [2380, 2390] {
            let bad = [
                peer("etcd1.lab.test", "10.0.0.1", 2380),
                peer("old-etcd.lab.test", "10.0.0.1", port),
            ];
            let e = distinct_members(&bad).unwrap_err().to_string();
            assert!(
                e.contains("etcd1.lab.test") && e.contains("old-etcd.lab.test"),
                "{e}"
            );
            assert!(e.contains("10.0.0.1"), "{e}");
        }
        let same_name = [
            peer("etcd1.lab.test", "10.0.0.1", 2380),
            peer("etcd1.other.test", "10.0.0.2", 2380),
        ];
        assert!(distinct_members(&same_name)
            .unwrap_err()
            .to_string()
            .contains("first label"));
    }
}
