//! The PEM material a client connection (or the agent endpoint) presents and trusts, read from the
//! TLS directory. `TlsPlan::client_material`/`peer_material` give the same before it is written.

use crate::model::tls::TlsPaths;
use crate::util::fs;
use anyhow::{Context, Result};
use std::path::Path;

/// PEM material for a client connection.
#[derive(Debug, Clone)]
pub(crate) struct ClientMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl ClientMaterial {
    fn read(ca: &Path, cert: &Path, key: &Path) -> Result<ClientMaterial> {
        let read =
            |path: &Path| fs::read_pem(path).with_context(|| format!("reading {}", path.display()));
        Ok(ClientMaterial {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    /// Read the peer certificate, key and CA from `dir` (the agent endpoint's identity).
    pub(crate) fn peer_from_dir(dir: &Path) -> Result<ClientMaterial> {
        let p = TlsPaths::new(dir);
        Self::read(&p.ca, &p.peer_cert, &p.peer_key)
    }

    /// Read the client certificate, key and CA from `dir`.
    pub(crate) fn from_dir(dir: &Path) -> Result<ClientMaterial> {
        let p = TlsPaths::new(dir);
        Self::read(&p.ca, &p.client_cert, &p.client_key)
    }
}
