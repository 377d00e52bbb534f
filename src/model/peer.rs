//! A peer: what `discovery` found, what `decide` and `tls` read.

use super::url::EtcdUrl;
use std::net::IpAddr;

/// One etcd server found by discovery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Peer {
    pub name: String,
    /// Exactly as it goes into `--initial-cluster`.
    pub peer_url: EtcdUrl,
    /// Where its clients connect (mTLS).
    pub client_url: EtcdUrl,
    /// The addresses the peer URL's host stands for (the IP itself for IP URLs).
    pub ips: Vec<IpAddr>,
    /// The DNS name it was found under (SRV target or the URL's host name), for certificate SANs.
    pub dns_name: Option<String>,
}
