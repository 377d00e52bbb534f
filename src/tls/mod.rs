//! Certificates: one interface (`Signer`), one provider per mode, one `match` that picks it.
//! Which files need (re-)issuing is decided here for every mode alike: a certificate is kept while
//! it parses, matches its key, chains to the current CA, has the right usages, covers the SANs this
//! member needs and has more than a third of its lifetime left.
//!
//! Work is split into `plan` (compute every file's content, in memory) and `apply` (write the
//! changed ones atomically), so that `etcd-bootstrap plan` can show and use the material without
//! writing anything.
//!
//! Here: the two traits and the factory (`source`, `check_offline`). Beside them: `identity`
//! (`CertKind`, `Identity`), `plan` (`TlsPlan`, `apply`), `material` (`ClientMaterial`), `issuing`
//! (`local-ca` and `cfssl`: keep or re-issue, what a leaf says), `bundle` (`ca.crt` with the CA
//! overlap), `on_disk` (the certificates in place, for `run`, `status` and `doctor`), `files`
//! (pre-issued files) and `inspect` (parsing and the checks every mode makes).

mod bundle;
pub(crate) mod ca;
mod ca_key;
mod cfssl;
mod files;
mod identity;
mod inspect;
mod issuing;
mod local_ca;
mod material;
mod on_disk;
mod plan;
pub(crate) mod served;
pub(crate) mod signature;

use crate::config::{Config, TlsMode};
use anyhow::Result;
use futures::future::BoxFuture;
use issuing::Issuing;
use rcgen::{CertificateParams, KeyPair};

pub(crate) use identity::{peer_role_name, CertKind, Identity};
pub(crate) use inspect::{not_after_unix, CertInfo};
pub(crate) use material::ClientMaterial;
pub(crate) use on_disk::{cert_files, describe, due_on_disk, on_disk};
pub(crate) use plan::{PlannedFile, TlsPlan};

/// Issues certificates for keys made on this node.
pub(crate) trait Signer: Send + Sync {
    fn describe(&self) -> String;
    /// The CA certificate (PEM) that every member and client trusts.
    fn ca_pem(&self) -> &str;
    /// Sign `params` for `key` (the private key stays here).
    fn sign<'a>(
        &'a self,
        kind: CertKind,
        params: &'a CertificateParams,
        key: &'a KeyPair,
    ) -> BoxFuture<'a, Result<String>>;
}

/// Where a member's certificates come from: one provider per `tls.mode`.
pub(crate) trait CertSource: Send + Sync {
    fn describe(&self) -> String;
    /// Work out the TLS directory for `identity`: keep what is still right, get the rest.
    fn plan<'a>(
        &'a self,
        cfg: &'a Config,
        identity: &'a Identity,
        now: time::OffsetDateTime,
    ) -> BoxFuture<'a, Result<TlsPlan>>;

    /// Check what can be checked before this member's addresses are known, so that bad input
    /// is refused before discovery starts waiting.
    fn precheck<'a>(
        &'a self,
        _cfg: &'a Config,
        _now: time::OffsetDateTime,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// The certificate source the configuration asks for. Reads the CA now (the local CA's files, the
/// signer's `/info`, the pre-issued CA), so a renewal that calls this again sees a changed CA.
pub(crate) async fn source(cfg: &Config) -> Result<Box<dyn CertSource>> {
    match cfg.tls.mode {
        TlsMode::LocalCa => Ok(Box::new(Issuing(Box::new(local_ca::LocalCa::load(
            &cfg.tls,
        )?)))),
        TlsMode::Cfssl => Ok(Box::new(Issuing(Box::new(
            cfssl::Cfssl::connect(&cfg.tls).await?,
        )))),
        TlsMode::Files => Ok(Box::new(files::Files::new(&cfg.tls)?)),
    }
}

/// The checks of the TLS material that need no network, for `check-config`: the very checks
/// `run` and `plan` make when they load it (`source` and `CertSource::precheck`). local-ca: the
/// CA certificate is PEM and a CA, the CA key is a supported form and belongs to it. files: each
/// certificate and key is PEM, the key matches its certificate, which chains to the CA, has the
/// usages its role needs and is within its dates. Returns what was left for `run` to check.
pub(crate) async fn check_offline(cfg: &Config) -> Result<Vec<String>> {
    let now = time::OffsetDateTime::now_utc();
    match cfg.tls.mode {
        TlsMode::LocalCa => {
            local_ca::LocalCa::load(&cfg.tls)?;
            Ok(vec![])
        }
        TlsMode::Files => {
            let remote = cfg.tls.sources.as_ref().is_some_and(|s| {
                [
                    Some(&s.ca),
                    Some(&s.server_cert),
                    Some(&s.server_key),
                    Some(&s.peer_cert),
                    Some(&s.peer_key),
                    Some(&s.client_cert),
                    Some(&s.client_key),
                    s.apiserver_client_cert.as_ref(),
                    s.apiserver_client_key.as_ref(),
                ]
                .into_iter()
                .flatten()
                .any(|l| l.starts_with("https://"))
            });
            if remote {
                return Ok(vec![
                    "tls: files fetched over https are checked when run or plan fetches them"
                        .into(),
                ]);
            }
            files::Files::new(&cfg.tls)?.precheck(cfg, now).await?;
            Ok(vec![])
        }
        TlsMode::Cfssl => Ok(vec![
            "tls: the cfssl signer and its CA are checked when run or plan asks it".into(),
        ]),
    }
}

/// The local-CA fixture the tests of `plan`, `bundle` and `issuing` share.
#[cfg(test)]
mod testing;
