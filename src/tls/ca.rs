//! `etcd-bootstrap ca init --out DIR`: a CA for `tls.mode = "local-ca"`.

use crate::error::ConfigError;
use crate::util::fs;
use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Make `ca.crt` and `ca.key` (0600) in `out`. Refuses to overwrite an existing CA: replacing a
/// fleet's CA by accident would cut every member off from every other.
pub(crate) fn init(
    out: &Path,
    common_name: &str,
    validity: Duration,
) -> Result<(PathBuf, PathBuf)> {
    let cert_path = out.join("ca.crt");
    let key_path = out.join("ca.key");
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(ConfigError::new(
                "--out",
                out.display().to_string(),
                format!(
                    "{} already exists; refusing to overwrite a CA (move it away first)",
                    p.display()
                ),
            )
            .into());
        }
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generating the CA key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "etcd-bootstrap");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::try_from(validity).context("CA validity")?;
    params.serial_number = Some(super::issuing::random_serial()?);
    let cert = params.self_signed(&key).context("self-signing the CA")?;
    fs::write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    fs::write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}
