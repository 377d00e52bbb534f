//! The snapshot store: one interface (object_store's `ObjectStore`) and a factory that picks S3
//! or a local directory from `backup.url`. Objects of a cluster live under `<prefix>/<cluster>/`.

use crate::config::backup::{read_credentials, BackupConfig, StoreUrl};
use anyhow::{Context, Result};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use std::sync::Arc;

pub struct Store {
    pub inner: Arc<dyn ObjectStore>,
    /// `<prefix>/<cluster.name>`
    pub dir: ObjectPath,
    pub describe: String,
}

impl Store {
    pub fn path(&self, name: &str) -> ObjectPath {
        self.dir.clone().join(name)
    }
}

pub fn open(cfg: &BackupConfig, cluster_name: &str) -> Result<Store> {
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
            })
        }
    }
}
