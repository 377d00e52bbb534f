//! The certificates `doctor` judges: this node's files and those the other members serve, each
//! with the addresses and names it must cover.

use super::membership::DiscoveryRead;
use crate::config::Config;
use crate::decide::doctor as d;
use crate::etcd::client;
use crate::etcd::datadir::Record;
use crate::model::cluster::MemberView;
use crate::model::tls::CertFacts;
use crate::model::url::EtcdUrl;
use crate::tls::{self, CertKind, ClientMaterial};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// The SRV target name of each peer URL discovery lists, when it lists them by SRV.
pub(super) fn srv_names(discovered: &DiscoveryRead) -> HashMap<String, String> {
    match discovered {
        Some((_, Ok((peers, _)))) => peers
            .iter()
            .filter_map(|p| Some((p.peer_url.to_string(), p.dns_name.clone()?)))
            .collect(),
        _ => HashMap::new(),
    }
}

/// A certificate another member serves: whose, which port's, at which address.
pub(super) struct Served {
    member: String,
    port_kind: &'static str,
    url: String,
    host: String,
    facts: Result<CertFacts, String>,
}

/// The certificates the other members that answer serve on their peer and client ports.
pub(super) async fn served_certificates(
    views: &[MemberView],
    reach: &[(bool, Option<String>)],
    my_id: Option<u64>,
    material: Option<&ClientMaterial>,
) -> Vec<Served> {
    let Some(material) = material else {
        return vec![];
    };
    let mut set = tokio::task::JoinSet::new();
    for (m, (reachable, _)) in views.iter().zip(reach) {
        if !reachable || Some(m.id) == my_id {
            continue;
        }
        let name = if m.name.is_empty() {
            format!("{:x}", m.id)
        } else {
            m.name.clone()
        };
        for (kind, url) in [
            ("peer", m.peer_urls.first()),
            ("client", m.client_urls.first()),
        ] {
            let Some(url) = url.cloned() else { continue };
            // etcd-bootstrap's URLs carry IPs; a member added by hand under a name is left out
            // (resolving it here would need another resolver than discovery's).
            let Some(parsed) = EtcdUrl::parse(&url).ok() else {
                continue;
            };
            let Some(ip) = parsed.ip() else { continue };
            let addr = SocketAddr::new(ip, parsed.port);
            let (name, m) = (name.clone(), material.clone());
            set.spawn(async move {
                let facts = tls::served::fetch(addr, &m, client::PROBE_TIMEOUT)
                    .await
                    .map_err(|e| format!("{e:#}"));
                Served {
                    member: name,
                    port_kind: kind,
                    url,
                    host: ip.to_string(),
                    facts,
                }
            });
        }
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(s) = r {
            out.push(s);
        }
    }
    out.sort_by(|a, b| (&a.member, a.port_kind).cmp(&(&b.member, b.port_kind)));
    out
}

/// This node's certificate files and those served by the others, with what each must cover.
pub(super) fn certificates(
    cfg: &Config,
    views: &[MemberView],
    my_id: Option<u64>,
    record: &Record,
    served: Vec<Served>,
    srv_name: impl Fn(&str) -> Option<String>,
) -> Vec<d::Cert> {
    // This member's URLs: its entry in the membership, else its record or etcd's environment.
    let me = views.iter().find(|m| Some(m.id) == my_id);
    let my_peer_url = me
        .and_then(|m| m.peer_urls.first().cloned())
        .or_else(|| record.peer_url.clone())
        .or_else(|| crate::agent::env_value(cfg, "ETCD_INITIAL_ADVERTISE_PEER_URLS"));
    let my_client_url = me
        .and_then(|m| m.client_urls.first().cloned())
        .or_else(|| crate::agent::env_value(cfg, "ETCD_ADVERTISE_CLIENT_URLS"));
    let host = |url: &Option<String>| -> Option<String> {
        let u = EtcdUrl::parse(url.as_deref()?).ok()?;
        Some(match u.ip() {
            Some(ip) => ip.to_string(),
            None => u.host.to_string(),
        })
    };
    let my_srv_name = my_peer_url.as_deref().and_then(&srv_name);
    let mut out: Vec<d::Cert> = tls::on_disk(cfg)
        .into_iter()
        .map(|f| {
            let must_cover: Vec<String> = match f.kind {
                // etcd-bootstrap itself talks to the local member at 127.0.0.1.
                Some(CertKind::Server) => host(&my_client_url)
                    .into_iter()
                    .chain([IpAddr::from([127, 0, 0, 1]).to_string()])
                    .chain(my_srv_name.clone())
                    .collect(),
                Some(CertKind::Peer) => host(&my_peer_url)
                    .into_iter()
                    .chain(my_srv_name.clone())
                    .collect(),
                _ => vec![],
            };
            d::Cert {
                what: format!("{} on this node", f.file),
                origin: match f.kind {
                    None => d::Origin::Ca,
                    // As in `tls.<stem>_cert` of `tls.mode = "files"`.
                    Some(k) => d::Origin::Local {
                        stem: k.profile_name().replace('-', "_"),
                    },
                },
                facts: f.facts,
                must_cover,
            }
        })
        .collect();
    for s in served {
        let peer_url = views
            .iter()
            .find(|m| m.client_urls.contains(&s.url) || m.peer_urls.contains(&s.url))
            .and_then(|m| m.peer_urls.first().cloned())
            .unwrap_or_default();
        out.push(d::Cert {
            what: format!(
                "the {} certificate {} serves at {}",
                s.port_kind, s.member, s.url
            ),
            origin: d::Origin::Served { member: s.member },
            facts: s.facts,
            must_cover: std::iter::once(s.host).chain(srv_name(&peer_url)).collect(),
        });
    }
    out
}
