//! Where a member's TLS files live and what is known of a certificate: plain data that `config`
//! (validation), `decide` (`doctor`'s checks), `tls`, `etcd` and `agent` all read.

use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Paths of the material etcd and clients use.
#[derive(Debug, Clone)]
pub(crate) struct TlsPaths {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsPaths {
    pub(crate) fn new(dir: &Path) -> TlsPaths {
        TlsPaths {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            peer_cert: dir.join("peer.crt"),
            peer_key: dir.join("peer.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }
}

/// What `doctor` judges a certificate by: its validity period and the names it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CertFacts {
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// DNS SANs, lower case.
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
}
