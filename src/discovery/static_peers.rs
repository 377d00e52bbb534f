//! `discovery.peers`: a fixed list, the Terraform case where every address is known at plan time.
//! URLs are used exactly as written (etcd hashes their text); host names are resolved only to
//! recognise this node among them.

use super::{Discovered, Source};
use crate::config::StaticPeer;
use crate::model::peer::Peer;
use crate::model::url::{EtcdUrl, Host};
use anyhow::Result;
use futures::future::BoxFuture;
use hickory_resolver::TokioResolver;

pub(crate) struct StaticSource {
    peers: Vec<StaticPeer>,
    client_port: u16,
    resolver: TokioResolver,
}

impl StaticSource {
    pub(crate) fn new(peers: &[StaticPeer], client_port: u16, resolver: TokioResolver) -> Self {
        StaticSource {
            peers: peers.to_vec(),
            client_port,
            resolver,
        }
    }
}

impl Source for StaticSource {
    fn describe(&self) -> String {
        "discovery.peers".into()
    }

    fn discover(&self) -> BoxFuture<'_, Result<Discovered>> {
        Box::pin(async move {
            let mut out = Discovered::default();
            for p in &self.peers {
                let (ips, dns_name) = match &p.url.host {
                    Host::Ip(ip) => (vec![*ip], None),
                    Host::Name(name) => match super::srv::resolve(&self.resolver, name).await? {
                        ips if ips.is_empty() => {
                            out.unresolved.push(name.clone());
                            continue;
                        }
                        ips => (ips, Some(name.clone())),
                    },
                };
                out.peers.push(Peer {
                    name: p.name.clone(),
                    peer_url: p.url.clone(),
                    client_url: EtcdUrl {
                        scheme: "https".into(),
                        host: p.url.host.clone(),
                        port: self.client_port,
                    },
                    ips,
                    dns_name,
                });
            }
            out.merge(Discovered::default());
            Ok(out)
        })
    }
}
