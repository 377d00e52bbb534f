//! Reading certificates back: is an existing one still right for this member?

use super::{Identity, Kind};
use rcgen::{KeyPair, PublicKeyData};
use serde::Serialize;
use std::fs::Metadata;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

/// A parsed certificate that owns its bytes.
pub struct Parsed {
    pem: Pem,
}

impl Parsed {
    pub fn cert(&self) -> X509Certificate<'_> {
        self.pem
            .parse_x509()
            .expect("parsed once already in parse_pem")
    }
}

pub fn parse_pem(pem: &str) -> Result<Parsed, String> {
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
pub struct CertInfo {
    pub subject: String,
    pub not_after: String,
    /// Seconds until expiry (negative when expired).
    pub expires_in_secs: i64,
}

pub fn info(pem: &str) -> Result<CertInfo, String> {
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

/// `Ok` when the pair on disk can stay; otherwise why it must be re-issued.
pub fn check_existing(
    cert_pem: &str,
    key_pem: &str,
    ca: &Parsed,
    kind: Kind,
    identity: &Identity,
    now: time::OffsetDateTime,
    key_meta: Option<Metadata>,
) -> Result<(), String> {
    let parsed = parse_pem(cert_pem)?;
    let cert = parsed.cert();
    let key = KeyPair::from_pem(key_pem).map_err(|e| format!("the key does not parse: {e}"))?;
    if key.subject_public_key_info() != cert.public_key().raw {
        return Err("the certificate does not match its key".into());
    }
    if key_meta.is_some_and(|m| m.permissions().mode() & 0o077 != 0) {
        return Err("the key file is readable by others".into());
    }
    let ca_cert = ca.cert();
    if cert.issuer() != ca_cert.subject()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Err("not signed by the current CA".into());
    }
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    let t = now.unix_timestamp();
    if t >= na {
        return Err("expired".into());
    }
    if t < nb {
        return Err("not valid yet".into());
    }
    if na - t < (na - nb) / 3 {
        return Err("less than a third of its lifetime left".into());
    }
    let eku = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .map(|e| (e.value.server_auth, e.value.client_auth))
        .unwrap_or((false, false));
    let want = match kind {
        Kind::Client => (false, true),
        Kind::Server | Kind::Peer => (true, true),
    };
    if (want.0 && !eku.0) || (want.1 && !eku.1) {
        return Err("missing serverAuth/clientAuth usage".into());
    }
    if kind != Kind::Client {
        let (dns, ips) = sans(&cert);
        let missing: Vec<String> = identity
            .dns_names
            .iter()
            .filter(|n| !dns.contains(n))
            .cloned()
            .chain(
                identity
                    .ips
                    .iter()
                    .filter(|ip| !ips.contains(ip))
                    .map(|ip| ip.to_string()),
            )
            .collect();
        if !missing.is_empty() {
            return Err(format!("does not cover {}", missing.join(", ")));
        }
    }
    if cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        != Some(expected_cn(kind, identity).as_str())
    {
        return Err("issued for another member name".into());
    }
    Ok(())
}

fn expected_cn(kind: Kind, identity: &Identity) -> String {
    match kind {
        Kind::Client => format!("{}-client", identity.member_name),
        _ => identity.member_name.clone(),
    }
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
