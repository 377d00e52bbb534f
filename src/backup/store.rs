//! The snapshot store: one interface (object_store's `ObjectStore`) and a factory that picks S3
//! or a local directory from `backup.url`. Objects of a cluster live under `<prefix>/<cluster>/`.
//! The store is not trusted: what is read from it counts only when signed (`signed`).

use crate::config::backup::{read_credentials, BackupConfig, StoreUrl};
use crate::model::tls::TlsPaths;
use crate::tls::signature::{SigningKey, TrustAnchor};
use crate::tls::ClientMaterial;
use anyhow::{Context, Result};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, UpdateVersion};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Cheap to clone: the connection is shared.
#[derive(Clone)]
pub(crate) struct Store {
    pub inner: Arc<dyn ObjectStore>,
    /// `<prefix>/<cluster.name>`
    pub dir: ObjectPath,
    pub describe: String,
    /// `cluster.name`: what signed objects must be of.
    pub cluster: String,
    /// The CA bundle that signatures are checked against, and this member's peer certificate
    /// and key that it signs with.
    keys: Keys,
}

/// Where the store's trust anchor and signing key come from.
#[derive(Clone)]
enum Keys {
    /// `tls.dir`, read at each use, so that renewals count at once.
    Dir(PathBuf),
    /// Material not written yet (a first boot's plan).
    Material(ClientMaterial),
}

impl Store {
    pub(crate) fn path(&self, name: &str) -> ObjectPath {
        self.dir.clone().join(name)
    }

    /// The same store, with the peer material of a plan not written to `tls.dir` yet.
    pub(crate) fn with_material(mut self, m: ClientMaterial) -> Store {
        self.keys = Keys::Material(m);
        self
    }

    /// What signatures on objects of this store are checked against: this node's CA bundle.
    pub(crate) fn anchor(&self) -> Result<TrustAnchor> {
        let (pem, from) = match &self.keys {
            Keys::Dir(dir) => {
                let path = TlsPaths::new(dir).ca;
                let pem = crate::util::fs::read_pem(&path).with_context(|| {
                    format!(
                        "reading {} (the CA bundle that the store's signed objects are checked against)",
                        path.display()
                    )
                })?;
                (pem, path.display().to_string())
            }
            Keys::Material(m) => (m.ca_pem.clone(), "the CA bundle".to_string()),
        };
        TrustAnchor::from_pem(&pem).map_err(|e| anyhow::anyhow!("{from}: {e}"))
    }

    /// This member's signing key: its peer certificate and key.
    pub(crate) fn signing_key(&self) -> Result<SigningKey> {
        let (m, from) = match &self.keys {
            Keys::Dir(dir) => (
                ClientMaterial::peer_from_dir(dir).context(
                    "reading the peer certificate and key that sign what this node stores",
                )?,
                TlsPaths::new(dir).peer_cert.display().to_string(),
            ),
            Keys::Material(m) => (m.clone(), "the peer certificate".to_string()),
        };
        SigningKey::new(&m.cert_pem, &m.key_pem)
            .map_err(|e| anyhow::anyhow!("{from}: cannot sign with it: {e}"))
    }
}

/// Why a bounded read gave up.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The object is larger than `limit`: nothing beyond the limit was read.
    TooLarge(u64),
    Failed(anyhow::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TooLarge(n) => write!(f, "more than {n} bytes, not read"),
            ReadError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl Store {
    /// A small object, read only up to `limit` bytes (a listing's size is the store's word,
    /// and the body is counted again as it comes): `None` when it is not there, with its
    /// version (to replace exactly that one).
    pub(crate) async fn get_bounded(
        &self,
        path: &ObjectPath,
        limit: u64,
    ) -> std::result::Result<Option<(Vec<u8>, UpdateVersion)>, ReadError> {
        let r = match self.inner.get(path).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => {
                return Err(ReadError::Failed(
                    anyhow::Error::new(e).context(format!("reading {path} in {}", self.describe)),
                ))
            }
        };
        if r.meta.size > limit {
            return Err(ReadError::TooLarge(limit));
        }
        let version = UpdateVersion {
            e_tag: r.meta.e_tag.clone(),
            version: r.meta.version.clone(),
        };
        let mut body = r.into_stream();
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ReadError::Failed(
                    anyhow::Error::new(e).context(format!("reading {path} in {}", self.describe)),
                )
            })?;
            if (out.len() + chunk.len()) as u64 > limit {
                return Err(ReadError::TooLarge(limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Some((out, version)))
    }
}

/// A directory store with this material, for tests.
#[cfg(test)]
pub(crate) fn local_for_test(dir: &Path, cluster: &str, m: ClientMaterial) -> Store {
    Store {
        inner: Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap()),
        dir: ObjectPath::from(cluster),
        describe: format!("file://{}/{cluster}", dir.display()),
        cluster: cluster.into(),
        keys: Keys::Material(m),
    }
}

pub(crate) fn open(cfg: &BackupConfig, cluster_name: &str, tls_dir: &Path) -> Result<Store> {
    let describe = format!("{}/{cluster_name}", cfg.url);
    match &cfg.url {
        StoreUrl::File { dir } => {
            crate::util::fs::ensure_dir(dir, 0o700)?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                .with_context(|| format!("opening {}", dir.display()))?;
            Ok(Store {
                inner: Arc::new(fs),
                dir: ObjectPath::from(cluster_name),
                describe,
                cluster: cluster_name.into(),
                keys: Keys::Dir(tls_dir.into()),
            })
        }
        StoreUrl::S3 { bucket, prefix } => {
            let (key_id, secret) = match &cfg.s3_credentials_file {
                Some(p) => read_credentials(p).map_err(anyhow::Error::msg)?,
                None => (
                    std::env::var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID is not set")?,
                    std::env::var("AWS_SECRET_ACCESS_KEY")
                        .context("AWS_SECRET_ACCESS_KEY is not set")?,
                ),
            };
            let allow_http = cfg
                .s3_endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"));
            let mut options = object_store::ClientOptions::new()
                .with_allow_http(allow_http)
                .with_timeout(std::time::Duration::from_secs(60))
                .with_connect_timeout(std::time::Duration::from_secs(10));
            if let Some(ca) = &cfg.ca_file {
                let pem = crate::util::fs::read_bounded(ca, crate::util::fs::PEM_LIMIT)
                    .with_context(|| format!("reading {}", ca.display()))?;
                for c in object_store::Certificate::from_pem_bundle(&pem)
                    .with_context(|| format!("{} holds no usable certificate", ca.display()))?
                {
                    options = options.with_root_certificate(c);
                }
            }
            let mut b = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&cfg.s3_region)
                .with_access_key_id(key_id)
                .with_secret_access_key(secret)
                .with_virtual_hosted_style_request(false)
                .with_client_options(options);
            if let Some(e) = &cfg.s3_endpoint {
                b = b.with_endpoint(e);
            }
            let s3 = b.build().context("configuring the S3 client")?;
            let dir = if prefix.is_empty() {
                ObjectPath::from(cluster_name)
            } else {
                ObjectPath::from(format!("{prefix}/{cluster_name}"))
            };
            Ok(Store {
                inner: Arc::new(s3),
                dir,
                describe,
                cluster: cluster_name.into(),
                keys: Keys::Dir(tls_dir.into()),
            })
        }
    }
}
