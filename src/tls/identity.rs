//! What a member's certificates are and what they must say: the kinds a member holds (`CertKind`,
//! named and placed as kubeadm does) and this member's names and addresses (`Identity`).

use crate::config::Config;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The kinds of certificate a member holds, named as kubeadm names their files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CertKind {
    /// Served on the client port.
    Server,
    /// Presented and served on the peer port: needs serverAuth and clientAuth.
    Peer,
    /// Used by etcd-bootstrap (and operators with etcdctl) to talk to etcd.
    Client,
    /// For kube-apiserver (`tls.apiserver_client`), kubeadm's `apiserver-etcd-client`.
    ApiserverClient,
}

impl CertKind {
    /// The certificates every member holds.
    pub(crate) const ALL: [CertKind; 3] = [CertKind::Server, CertKind::Peer, CertKind::Client];

    pub(crate) fn file_stem(self) -> &'static str {
        match self {
            CertKind::Server => "server",
            CertKind::Peer => "peer",
            CertKind::Client => "client",
            CertKind::ApiserverClient => "apiserver-etcd-client",
        }
    }

    /// The name `tls.cfssl_profiles` uses for this kind.
    pub(crate) fn profile_name(self) -> &'static str {
        match self {
            CertKind::ApiserverClient => "apiserver-client",
            k => k.file_stem(),
        }
    }

    pub(super) fn is_client_only(self) -> bool {
        matches!(self, CertKind::Client | CertKind::ApiserverClient)
    }

    /// The certificates this configuration keeps.
    pub(crate) fn wanted(cfg: &Config) -> Vec<CertKind> {
        let mut kinds = CertKind::ALL.to_vec();
        if cfg.tls.apiserver_client {
            kinds.push(CertKind::ApiserverClient);
        }
        kinds
    }

    fn dir(self, cfg: &Config) -> &Path {
        match self {
            CertKind::ApiserverClient => &cfg.tls.apiserver_client_dir,
            _ => &cfg.tls.dir,
        }
    }

    pub(crate) fn cert_path(self, cfg: &Config) -> PathBuf {
        self.dir(cfg).join(format!("{}.crt", self.file_stem()))
    }

    pub(crate) fn key_path(self, cfg: &Config) -> PathBuf {
        self.dir(cfg).join(format!("{}.key", self.file_stem()))
    }
}

/// What this member's certificates must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub member_name: String,
    /// The address in this member's peer and client URLs.
    pub advertise: IpAddr,
    pub dns_names: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
    /// A DNS name that only peer certificates carry (`peer_role_name`), where this node issues
    /// its certificates from the fleet CA (local-ca): etcd can then require it of every peer
    /// (`--peer-cert-allowed-hostname`), so that a client certificate of the same CA (etcdctl's,
    /// kube-apiserver's) is never accepted on the peer port.
    pub peer_role: Option<String>,
}

/// The peer-only DNS name of cluster `cluster` (`<cluster>.peer.etcd-bootstrap.internal`), or
/// `None` when the cluster's name does not make a DNS name.
pub(crate) fn peer_role_name(cluster: &str) -> Option<String> {
    let name = format!(
        "{}.peer.etcd-bootstrap.internal",
        cluster.to_ascii_lowercase()
    );
    crate::model::url::is_dns_name(&name).then_some(name)
}

impl Identity {
    /// SANs for the member name, its SRV target name, the SRV domain, the hostname, the advertise
    /// IP, localhost, 127.0.0.1, ::1 and `tls.extra_sans` (etcd checks the peer certificate
    /// against the address a peer connects from; clients may use the SRV domain or loopback).
    pub(crate) fn new(
        cfg: &Config,
        member_name: &str,
        advertise: IpAddr,
        dns_name: Option<&str>,
        hostname: Option<&str>,
    ) -> Identity {
        let mut dns_names = BTreeSet::from(["localhost".to_string()]);
        let mut ips = BTreeSet::from([
            advertise,
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ]);
        let candidates = [
            Some(member_name),
            dns_name,
            cfg.discovery.srv_domain.as_deref(),
            hostname,
        ];
        for n in candidates.into_iter().flatten() {
            if crate::model::url::is_dns_name(n) {
                dns_names.insert(n.to_ascii_lowercase());
            }
        }
        for san in &cfg.tls.extra_sans {
            match san.parse::<IpAddr>() {
                Ok(ip) => {
                    ips.insert(ip);
                }
                Err(_) => {
                    dns_names.insert(san.to_ascii_lowercase());
                }
            }
        }
        Identity {
            member_name: member_name.to_string(),
            advertise,
            dns_names,
            ips,
            // Only where this node issues from the CA: a signer's profile or pre-issued files may
            // not allow the name, and a certificate that cannot be issued is worse than a
            // peer port that also accepts the CA's client certificates.
            peer_role: matches!(cfg.tls.mode, crate::config::tls::TlsMode::LocalCa)
                .then(|| peer_role_name(&cfg.cluster.name))
                .flatten(),
        }
    }
}
