//! Reading certificates back: is an existing one still right for this member?

use super::{CertKind, Identity};
use crate::model::tls::CertFacts;
use base64::Engine;
use serde::Serialize;
use std::fs::Metadata;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// A parsed certificate that owns its bytes.
pub(crate) struct Parsed {
    pem: Pem,
}

impl Parsed {
    pub(crate) fn cert(&self) -> X509Certificate<'_> {
        self.pem
            .parse_x509()
            .expect("parsed once already in parse_pem")
    }
}

pub(crate) fn parse_pem(pem: &str) -> Result<Parsed, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if pem.label != "CERTIFICATE" {
        return Err(format!(
            "PEM block is {:?}, expected CERTIFICATE",
            pem.label
        ));
    }
    pem.parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(Parsed { pem })
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct CertInfo {
    pub subject: String,
    pub not_after: String,
    /// Seconds until expiry (negative when expired).
    pub expires_in_secs: i64,
}

pub(crate) fn info(pem: &str) -> Result<CertInfo, String> {
    let parsed = parse_pem(pem)?;
    let cert = parsed.cert();
    let not_after = cert.validity().not_after.timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.to_string(),
        expires_in_secs: not_after - now,
    })
}

/// When the (first) certificate in `pem` expires, in seconds since the epoch.
pub(crate) fn not_after_unix(pem: &str) -> Result<i64, String> {
    Ok(parse_pem(pem)?.cert().validity().not_after.timestamp())
}

fn facts_of(cert: &X509Certificate<'_>) -> CertFacts {
    let (dns_names, ips) = sans(cert);
    CertFacts {
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        ips,
    }
}

/// The facts of the first certificate in `pem` (the current CA of a bundle).
pub(crate) fn facts(pem: &str) -> Result<CertFacts, String> {
    Ok(facts_of(&parse_pem(pem)?.cert()))
}

/// The facts of a DER certificate (one a server presented).
pub(crate) fn facts_der(der: &[u8]) -> Result<CertFacts, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(facts_of(&cert))
}

/// The PEM blocks of `text`, each re-encoded the same way so that blocks compare equal when their
/// contents do.
pub(crate) fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for pem in Pem::iter_from_buffer(text.as_bytes()).map_while(Result::ok) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pem.contents);
        let mut block = format!("-----BEGIN {}-----\n", pem.label);
        for line in b64.as_bytes().chunks(64) {
            block.push_str(std::str::from_utf8(line).unwrap_or_default());
            block.push('\n');
        }
        block.push_str(&format!("-----END {}-----\n", pem.label));
        out.push(block);
    }
    out
}

/// Every certificate of a CA file (a bundle during a CA change).
pub(crate) fn parse_bundle(pem: &str) -> Result<Vec<Parsed>, String> {
    let blocks = pem_blocks(pem);
    if blocks.is_empty() {
        return Err("holds no PEM block".into());
    }
    blocks.iter().map(|b| parse_pem(b)).collect()
}

/// The certificate in `cert_pem`, when `key_pem` is its private key.
pub(crate) fn check_pair(cert_pem: &str, key_pem: &str) -> Result<Parsed, String> {
    let parsed = parse_pem(cert_pem)?;
    if public_key_of(key_pem)? != parsed.cert().public_key().raw {
        return Err("the certificate does not match its key".into());
    }
    Ok(parsed)
}

/// The SubjectPublicKeyInfo (DER) of a PEM private key in any of the forms signers write:
/// PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY", cfssl's) or PKCS#1 ("RSA PRIVATE KEY").
pub(crate) fn public_key_of(key_pem: &str) -> Result<Vec<u8>, String> {
    use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
    let der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("the key is not a PEM private key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("the key is not a usable ECDSA, Ed25519 or RSA key: {e}"))?;
    signing
        .public_key()
        .map(|k| k.as_ref().to_vec())
        .ok_or_else(|| "cannot derive the public key of the key".to_string())
}

/// Signed by one of `cas`.
pub(crate) fn check_chain(cert: &X509Certificate<'_>, cas: &[&Parsed]) -> Result<(), String> {
    let signed = cas.iter().any(|ca| {
        let ca = ca.cert();
        cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
    });
    if signed {
        Ok(())
    } else {
        Err(format!("not signed by the CA (issuer {})", cert.issuer()))
    }
}

/// Within its validity period.
pub(crate) fn check_dates(
    cert: &X509Certificate<'_>,
    now: time::OffsetDateTime,
) -> Result<(), String> {
    let t = now.unix_timestamp();
    if t >= cert.validity().not_after.timestamp() {
        return Err(format!("expired on {}", cert.validity().not_after));
    }
    if t < cert.validity().not_before.timestamp() {
        return Err(format!("not valid before {}", cert.validity().not_before));
    }
    Ok(())
}

/// Less than a third of its lifetime left: time to renew.
pub(crate) fn due_for_renewal(cert: &X509Certificate<'_>, now: time::OffsetDateTime) -> bool {
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    na - now.unix_timestamp() < (na - nb) / 3
}

/// Carries the extended key usages `kind` needs.
pub(crate) fn check_usage(cert: &X509Certificate<'_>, kind: CertKind) -> Result<(), String> {
    let eku = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .map(|e| (e.value.server_auth, e.value.client_auth))
        .unwrap_or((false, false));
    let want = if kind.is_client_only() {
        (false, true)
    } else {
        (true, true)
    };
    if (want.0 && !eku.0) || (want.1 && !eku.1) {
        return Err(if want.0 {
            "lacks the serverAuth and clientAuth extended key usages".into()
        } else {
            "lacks the clientAuth extended key usage".into()
        });
    }
    Ok(())
}

/// Covers every name and address in `dns_names` and `ips`.
pub(crate) fn check_sans<'n>(
    cert: &X509Certificate<'_>,
    dns_names: impl IntoIterator<Item = &'n String>,
    ips: impl IntoIterator<Item = &'n IpAddr>,
) -> Result<(), String> {
    let (dns, have_ips) = sans(cert);
    let missing: Vec<String> = dns_names
        .into_iter()
        .filter(|n| !dns.contains(n))
        .cloned()
        .chain(
            ips.into_iter()
                .filter(|ip| !have_ips.contains(ip))
                .map(|ip| ip.to_string()),
        )
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("does not cover {}", missing.join(", ")))
    }
}

/// `Ok` when the pair on disk can stay; otherwise why it must be re-issued.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_existing(
    cert_pem: &str,
    key_pem: &str,
    ca: &Parsed,
    kind: CertKind,
    identity: &Identity,
    expected_cn: &str,
    now: time::OffsetDateTime,
    key_meta: Option<Metadata>,
) -> Result<(), String> {
    let parsed = check_pair(cert_pem, key_pem)?;
    let cert = parsed.cert();
    if key_meta.is_some_and(|m| m.permissions().mode() & 0o077 != 0) {
        return Err("the key file is readable by others".into());
    }
    check_chain(&cert, &[ca]).map_err(|_| "not signed by the current CA".to_string())?;
    check_dates(&cert, now)?;
    if due_for_renewal(&cert, now) {
        return Err("less than a third of its lifetime left".into());
    }
    check_usage(&cert, kind)?;
    if !kind.is_client_only() {
        check_sans(&cert, &identity.dns_names, &identity.ips)?;
    }
    if kind == CertKind::Peer {
        check_sans(&cert, &identity.peer_role, &[])?;
    }
    if cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        != Some(expected_cn)
    {
        return Err("issued for another name".into());
    }
    Ok(())
}

fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns.push(n.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (dns, ips)
}
