//! DNS SRV discovery with etcd's own record names (etcd itself drops targets that do not resolve):
//! `_etcd-server-ssl[-NAME]._tcp.DOMAIN` lists the peers, `_etcd-client-ssl[-NAME]._tcp.DOMAIN` the
//! client endpoints. Every target must resolve; one that does not is reported, never dropped, so
//! that two nodes cannot compute different clusters from partial answers.

use super::{BoxFuture, Discovered, Peer, Source};
use crate::urls::EtcdUrl;
use anyhow::{Context, Result};
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A resolver that asks `nameservers` (or those of /etc/resolv.conf) and caches nothing, so that
/// two consecutive reads really are two reads.
pub fn resolver(nameservers: &[SocketAddr]) -> Result<TokioResolver> {
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
pub async fn resolve(resolver: &TokioResolver, name: &str) -> Result<Vec<IpAddr>> {
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

pub struct SrvSource {
    server_record: String,
    client_record: String,
    resolver: TokioResolver,
    client_port: u16,
}

impl SrvSource {
    pub fn new(
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
            let mut names: Vec<&str> = out.peers.iter().map(|p| p.name.as_str()).collect();
            names.sort();
            if names.windows(2).any(|w| w[0] == w[1]) {
                anyhow::bail!(
                    "two SRV targets share the first label of their name ({}); member names would collide",
                    names.join(", ")
                );
            }
            out.merge(Discovered::default());
            Ok(out)
        })
    }
}
