//! The TLS directory as it should be (`TlsPlan`, computed in memory by a `CertSource`) and
//! writing what changed (`apply`).

use super::ClientMaterial;
use crate::model::tls::TlsPaths;
use crate::util::fs::{self, Written};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One file of the TLS directory, as it should be.
#[derive(Debug, Clone)]
pub(crate) struct PlannedFile {
    pub path: PathBuf,
    pub content: String,
    pub mode: u32,
    /// Why it is (re)written, or `None` when the file on disk is already right.
    pub change: Option<String>,
}

/// The TLS directory as it should be after this run.
#[derive(Debug, Clone)]
pub(crate) struct TlsPlan {
    pub files: Vec<PlannedFile>,
    /// The CA certificate changed: etcd reads its trusted CAs only at start, so it must restart.
    pub ca_changed: bool,
}

impl TlsPlan {
    pub(crate) fn changed(&self) -> impl Iterator<Item = &PlannedFile> {
        self.files.iter().filter(|f| f.change.is_some())
    }

    fn content_of(&self, path: &Path) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.content.as_str())
    }

    /// A certificate, its key and the CA as they will be, usable before anything is written.
    fn material(&self, ca: &Path, cert: &Path, key: &Path) -> Result<ClientMaterial> {
        let get = |path: &Path| {
            self.content_of(path)
                .map(str::to_string)
                .with_context(|| format!("{} is not in the TLS plan", path.display()))
        };
        Ok(ClientMaterial {
            ca_pem: get(ca)?,
            cert_pem: get(cert)?,
            key_pem: get(key)?,
        })
    }

    /// The peer certificate as it will be (the agent endpoint's identity, both ways).
    pub(crate) fn peer_material(&self, dir: &Path) -> Result<ClientMaterial> {
        let p = TlsPaths::new(dir);
        self.material(&p.ca, &p.peer_cert, &p.peer_key)
    }

    /// The client certificate as it will be.
    pub(crate) fn client_material(&self, dir: &Path) -> Result<ClientMaterial> {
        let p = TlsPaths::new(dir);
        self.material(&p.ca, &p.client_cert, &p.client_key)
    }

    /// Write what changed: keys 0600 before their certificates (a kill in between leaves a
    /// mismatched pair, which the next run detects and re-issues). etcd reads its leaf
    /// certificates at every handshake, so renewed ones are served without a restart; the
    /// server and peer keys belong to `etcd_owner` (the uid and gid etcd runs as) from the
    /// moment they are in place, or etcd could not read a renewed key.
    pub(crate) fn apply(&self, etcd_owner: Option<(u32, u32)>) -> Result<Vec<(PathBuf, Written)>> {
        let mut out = Vec::new();
        for f in self.changed() {
            let owner = etcd_owner.filter(|_| etcd_reads(&f.path));
            let w = fs::write_atomic_owned(&f.path, f.content.as_bytes(), f.mode, owner)?;
            out.push((f.path.clone(), w));
        }
        Ok(out)
    }
}

/// Whether etcd itself reads the key at `path` (its server and peer keys; the client key is the
/// agent's, a CA key the signer's).
fn etcd_reads(path: &Path) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    let p = TlsPaths::new(dir);
    path == p.server_key || path == p.peer_key
}

#[cfg(test)]
mod tests {
    use crate::tls::source;
    use crate::tls::testing::{fixture, identity, now};
    use std::os::unix::fs::PermissionsExt;

    /// etcd's server and peer keys are written as its user's (etcd reads a renewed key at the
    /// next handshake, without a restart); the agent's client key and the certificates are not.
    #[tokio::test]
    async fn etcds_keys_belong_to_its_user_from_the_start() {
        use std::os::unix::fs::MetadataExt;
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let f = fixture();
        let signer = source(&f.cfg).await.unwrap();
        let id = identity(&f.cfg, "10.0.0.1");
        let plan = signer.plan(&f.cfg, &id, now()).await.unwrap();
        plan.apply(Some((4242, 4343))).unwrap();
        let who = |name: &str| {
            let m = std::fs::metadata(f.cfg.tls.dir.join(name)).unwrap();
            (m.uid(), m.gid(), m.permissions().mode() & 0o777)
        };
        assert_eq!(who("server.key"), (4242, 4343, 0o600));
        assert_eq!(who("peer.key"), (4242, 4343, 0o600));
        assert_eq!(who("client.key"), (0, 0, 0o600));
        assert_eq!(who("server.crt"), (0, 0, 0o644));
    }
}
