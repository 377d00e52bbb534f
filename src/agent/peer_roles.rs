//! Peer roles: etcd's peer port trusts the CA bundle, so by default any certificate of the CA
//! with clientAuth (etcdctl's `client.crt`, kube-apiserver's) is accepted there as a peer. Where
//! this node issues its certificates from the CA (local-ca), peer certificates carry a name no
//! other certificate has (`tls::peer_role_name`), and etcd can require it of every peer
//! (`--peer-cert-allowed-hostname`, which etcd applies to its outgoing peer connections too).
//!
//! Requiring it before every member presents it would cut this member off from the others, so
//! it is switched on in two steps: the heal loop records in the identity record that every
//! member of the membership serves a peer certificate with the name (`tick` below); etcd's
//! environment carries the flag from its next start by the agent on (`etcd::render`). A member
//! that joins later gets the name in its certificate at issue.

use super::Agent;
use crate::etcd::client;
use crate::etcd::datadir::Record;
use crate::etcd::membership;
use crate::tls::ClientMaterial;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::time::Duration;

/// How long one member may take to present its peer certificate.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

impl Agent<'_> {
    /// At a healthy tick: record the peer role once every member serves it.
    pub(crate) async fn peer_roles_tick(&self, material: &ClientMaterial) -> Result<()> {
        let cfg = self.cfg;
        let Some(name) = crate::tls::peer_role_name(&cfg.cluster.name)
            .filter(|_| matches!(cfg.tls.mode, crate::config::tls::TlsMode::LocalCa))
        else {
            return Ok(());
        };
        let data_dir = &cfg.member.data_dir;
        let Some(mut record) = Record::load(data_dir)? else {
            return Ok(());
        };
        if record.peer_role.as_deref() == Some(name.as_str()) {
            return Ok(());
        }
        let (mut c, _) = client::who_is(&super::local_endpoint(cfg), material).await?;
        let members = membership::list(&mut c).await?;
        let peer = ClientMaterial::peer_from_dir(&cfg.tls.dir)?;
        for m in &members {
            if !m.started() {
                return Ok(());
            }
            let Some(url) = m.peer_urls.first() else {
                return Ok(());
            };
            let parsed = crate::model::url::EtcdUrl::parse(url).map_err(anyhow::Error::msg)?;
            let ip = parsed
                .ip()
                .with_context(|| format!("{url}: a peer URL without an IP address"))?;
            let addr = SocketAddr::new(ip, parsed.port);
            let facts = crate::tls::served::fetch(addr, &peer, FETCH_TIMEOUT).await?;
            if !facts.dns_names.contains(&name) {
                // Not yet (its agent has not renewed it yet, or cannot: then never).
                return Ok(());
            }
        }
        record.peer_role = Some(name.clone());
        record.save(data_dir)?;
        tracing::info!(peer_role = %name, members = members.len(), "every member's peer certificate names the peer role: etcd requires it of its peers from its next start, so that no other certificate of the CA is taken for a peer");
        Ok(())
    }
}
