//! `tls.mode = "local-ca"`: the node holds the CA certificate and key and signs its own leaves.

use super::{CertKind, Signer};
use crate::config::TlsConfig;
use crate::error::ConfigError;
use crate::model::tls::TlsPaths;
use anyhow::{Context, Result};
use futures::future::BoxFuture;
use rcgen::{CertificateParams, Issuer, KeyPair};

pub(crate) struct LocalCa {
    ca_pem: String,
    /// `None` when the key file was removed after the first issue (a way to keep signing power
    /// off the node between CA deliveries): what is on disk is kept, nothing new can be signed.
    issuer: Option<Issuer<'static, KeyPair>>,
    key_path: std::path::PathBuf,
}

impl LocalCa {
    pub(crate) fn load(tls: &TlsConfig) -> Result<LocalCa> {
        let cert_path = tls.ca_cert.as_ref().context("tls.ca_cert is not set")?;
        let key_path = tls.ca_key.as_ref().context("tls.ca_key is not set")?;
        let bad = |key: &str, path: &std::path::Path, msg: String| {
            ConfigError::new(key, path.display().to_string(), msg)
        };
        let ca_pem = crate::util::fs::read_pem(cert_path)
            .map_err(|e| bad("tls.ca_cert", cert_path, format!("cannot read: {e}")))?;
        let parsed =
            super::inspect::parse_pem(&ca_pem).map_err(|m| bad("tls.ca_cert", cert_path, m))?;
        let is_ca = parsed
            .cert()
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(bad(
                "tls.ca_cert",
                cert_path,
                "is not a CA certificate (basicConstraints CA:TRUE missing)".into(),
            )
            .into());
        }
        if !key_path.exists() && TlsPaths::new(&tls.dir).client_cert.is_file() {
            return Ok(LocalCa {
                ca_pem,
                issuer: None,
                key_path: key_path.clone(),
            });
        }
        let key_pem = crate::util::fs::read_pem(key_path)
            .map_err(|e| bad("tls.ca_key", key_path, format!("cannot read: {e}")))?;
        let key = super::ca_key::parse(&key_pem).map_err(|m| bad("tls.ca_key", key_path, m))?;
        use rcgen::PublicKeyData;
        if key.subject_public_key_info() != parsed.cert().public_key().raw {
            return Err(bad(
                "tls.ca_key",
                key_path,
                format!(
                    "does not belong to the CA certificate {}",
                    cert_path.display()
                ),
            )
            .into());
        }
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| {
            bad(
                "tls.ca_cert",
                cert_path,
                format!("cannot be used to sign: {e}"),
            )
        })?;
        Ok(LocalCa {
            ca_pem,
            issuer: Some(issuer),
            key_path: key_path.clone(),
        })
    }
}

impl Signer for LocalCa {
    fn describe(&self) -> String {
        "the local CA".into()
    }

    fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn sign<'a>(
        &'a self,
        kind: CertKind,
        params: &'a CertificateParams,
        key: &'a KeyPair,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let Some(issuer) = &self.issuer else {
                return Err(ConfigError::new(
                    "tls.ca_key",
                    self.key_path.display().to_string(),
                    format!("is gone (removed after the first issue?): the {} certificate needs re-issuing and cannot be signed on this node; deliver the CA key again, or a new CA through tls.ca_cert and tls.ca_key", kind.file_stem()),
                )
                .into());
            };
            Ok(params.signed_by(key, issuer)?.pem())
        })
    }
}
