//! `[discovery]`: how the member finds its peers: SRV records, a static list of peers, or seed
//! client URLs, and the DNS servers and time it gives that. The section's struct and its
//! validation live together; every bad value is one line naming its key.

use super::{ser_duration, Validator};
use crate::error::ConfigError;
use crate::model::url::{is_dns_name, EtcdUrl};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StaticPeer {
    pub name: String,
    pub url: EtcdUrl,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DiscoveryConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srv_domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srv_name: Option<String>,
    #[serde(serialize_with = "ser_peers")]
    pub peers: Vec<StaticPeer>,
    #[serde(serialize_with = "ser_display_list")]
    pub seeds: Vec<EtcdUrl>,
    pub nameservers: Vec<SocketAddr>,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

fn ser_display_list<S: serde::Serializer>(v: &[EtcdUrl], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|u| u.to_string()))
}

fn ser_peers<S: serde::Serializer>(v: &[StaticPeer], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|p| format!("{}={}", p.name, p.url)))
}

pub(super) fn validate(
    v: &Validator<'_>,
    raw: super::raw::RawDiscovery,
) -> Result<DiscoveryConfig, ConfigError> {
    let (srv_domain, srv_name) = srv(v, raw.srv_domain, raw.srv_name)?;
    let peers = static_peers(v, raw.peers.unwrap_or_default())?;
    let seeds = seeds(v, raw.seeds.unwrap_or_default())?;
    if srv_domain.is_some() && !peers.is_empty() {
        return Err(v.err(
            "discovery.peers",
            "both discovery.srv_domain and discovery.peers are set; choose one source of peers",
        ));
    }
    if srv_domain.is_none() && peers.is_empty() && seeds.is_empty() {
        return Err(v.err(
            "discovery.srv_domain",
            "no way to find peers: set discovery.srv_domain, discovery.peers or discovery.seeds",
        ));
    }
    let nameservers = nameservers(v, raw.nameservers.unwrap_or_default())?;
    Ok(DiscoveryConfig {
        srv_domain,
        srv_name,
        peers,
        seeds,
        nameservers,
        timeout: v.duration("discovery.timeout", raw.timeout, "10m")?,
    })
}

/// SRV discovery: `discovery.srv_domain` (a DNS domain, lowercased, without the final dot) and
/// `discovery.srv_name`, which only goes with it.
fn srv(
    v: &Validator<'_>,
    srv_domain: Option<String>,
    srv_name: Option<String>,
) -> Result<(Option<String>, Option<String>), ConfigError> {
    let srv_domain = srv_domain
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    if let Some(dom) = &srv_domain {
        if !is_dns_name(dom) || !dom.contains('.') {
            return Err(v.err(
                "discovery.srv_domain",
                format!("{dom:?} is not a DNS domain"),
            ));
        }
    }
    let srv_name = srv_name.filter(|s| !s.is_empty());
    if let Some(n) = &srv_name {
        if !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(v.err(
                "discovery.srv_name",
                format!("{n:?} may hold only letters, digits and '-'"),
            ));
        }
        if srv_domain.is_none() {
            return Err(v.err(
                "discovery.srv_name",
                "is only meaningful with discovery.srv_domain",
            ));
        }
    }
    Ok((srv_domain, srv_name))
}

/// A static list of peers: `NAME=https://HOST:PORT` each, no name or URL twice, and all by IP
/// or all by host name.
fn static_peers(v: &Validator<'_>, entries: Vec<String>) -> Result<Vec<StaticPeer>, ConfigError> {
    let mut peers = Vec::new();
    for entry in entries {
        let (pname, url) = entry.split_once('=').ok_or_else(|| {
            v.err(
                "discovery.peers",
                format!("{entry:?}: expected NAME=https://HOST:PORT"),
            )
        })?;
        v.name("discovery.peers", pname)
            .map_err(|e| v.err("discovery.peers", format!("{entry:?}: {}", e.message)))?;
        let url = EtcdUrl::parse(url).map_err(|m| v.err("discovery.peers", m))?;
        if url.scheme != "https" {
            return Err(v.err(
                "discovery.peers",
                format!("{entry:?}: peer URLs must be https (mTLS on the peer port)"),
            ));
        }
        peers.push(StaticPeer {
            name: pname.to_string(),
            url,
        });
    }
    let mut seen_names = BTreeSet::new();
    let mut seen_urls = BTreeSet::new();
    for p in &peers {
        if !seen_names.insert(p.name.clone()) {
            return Err(v.err(
                "discovery.peers",
                format!("the name {:?} is listed twice", p.name),
            ));
        }
        if !seen_urls.insert(p.url.to_string()) {
            return Err(v.err(
                "discovery.peers",
                format!("the URL {} is listed twice", p.url),
            ));
        }
    }
    let hosts_kinds: BTreeSet<bool> = peers.iter().map(|p| p.url.ip().is_some()).collect();
    if hosts_kinds.len() > 1 {
        return Err(v.err(
            "discovery.peers",
            "mixes IP addresses and host names; use one form for every peer (etcd derives member IDs from the exact URL text)",
        ));
    }
    Ok(peers)
}

/// Seed client URLs, https each.
fn seeds(v: &Validator<'_>, entries: Vec<String>) -> Result<Vec<EtcdUrl>, ConfigError> {
    let mut seeds = Vec::new();
    for s in entries {
        let url = EtcdUrl::parse(&s).map_err(|m| v.err("discovery.seeds", m))?;
        if url.scheme != "https" {
            return Err(v.err(
                "discovery.seeds",
                format!("{s:?}: seed client URLs must be https"),
            ));
        }
        seeds.push(url);
    }
    Ok(seeds)
}

/// `discovery.nameservers`: IP or IP:PORT (port 53 when none is given).
fn nameservers(v: &Validator<'_>, entries: Vec<String>) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut nameservers = Vec::new();
    for ns in entries {
        let addr = ns
            .parse::<SocketAddr>()
            .or_else(|_| ns.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| {
                v.err(
                    "discovery.nameservers",
                    format!("{ns:?} is not IP or IP:PORT (IPv6 with port: [addr]:53)"),
                )
            })?;
        nameservers.push(addr);
    }
    Ok(nameservers)
}
