//! Signing and checking small objects with the cluster's PKI, so that a store an attacker can
//! write (the backup bucket) is never a root of trust: an object counts only when it carries a
//! signature by a key whose certificate the cluster's CA issued to a member.
//!
//! A member signs with its peer key (it never leaves the node). A signature is accepted when
//! the certificate that comes with it (1) was issued by a CA in this node's CA bundle, (2) is a
//! member's certificate: both serverAuth and clientAuth, as peer and server certificates are
//! (client certificates, kube-apiserver's included, carry clientAuth only and cannot sign),
//! (3) was valid at the time the object says it was signed, and (4) verifies the signature. The
//! certificate's common name (else its first DNS name) is the member that signed; callers check
//! it against the name the object gives.

use super::inspect::{self, Parsed};
use super::CertKind;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::SignatureScheme;
use std::sync::Arc;

/// The schemes a member signs with, by its key type; `name` is what a signed object records.
const SCHEMES: [(SignatureScheme, &str); 4] = [
    (SignatureScheme::ECDSA_NISTP256_SHA256, "ecdsa-p256-sha256"),
    (SignatureScheme::ECDSA_NISTP384_SHA384, "ecdsa-p384-sha384"),
    (SignatureScheme::ED25519, "ed25519"),
    (SignatureScheme::RSA_PKCS1_SHA256, "rsa-pkcs1-sha256"),
];

fn verification_alg(scheme: &str) -> Option<&'static dyn ring::signature::VerificationAlgorithm> {
    Some(match scheme {
        "ecdsa-p256-sha256" => &ring::signature::ECDSA_P256_SHA256_ASN1,
        "ecdsa-p384-sha384" => &ring::signature::ECDSA_P384_SHA384_ASN1,
        "ed25519" => &ring::signature::ED25519,
        "rsa-pkcs1-sha256" => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        _ => return None,
    })
}

/// A signature as a signed object carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Signature {
    pub scheme: String,
    /// Base64 (standard alphabet).
    pub value: String,
    /// The signer's certificate (PEM).
    pub certificate: String,
}

/// This member's signing identity: its peer certificate and key.
pub(crate) struct SigningKey {
    cert_pem: String,
    name: String,
    key: Arc<dyn rustls::sign::SigningKey>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .finish()
    }
}

impl SigningKey {
    /// From a certificate and its key (PKCS#8, SEC1 or PKCS#1 PEM). The certificate must be one
    /// that others will accept: a member's (serverAuth and clientAuth) with a common name.
    pub(crate) fn new(cert_pem: &str, key_pem: &str) -> Result<SigningKey, String> {
        let parsed = inspect::check_pair(cert_pem, key_pem)?;
        let cert = parsed.cert();
        inspect::check_usage(&cert, CertKind::Peer)?;
        let name = common_name(&cert).ok_or("the certificate has no common name or DNS name")?;
        let der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| format!("the key is not a PEM private key: {e}"))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| format!("the key cannot sign: {e}"))?;
        Ok(SigningKey {
            cert_pem: inspect::pem_blocks(cert_pem).swap_remove(0),
            name,
            key,
        })
    }

    /// The member name others will see as the signer (the certificate's common name).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Result<Signature, String> {
        let offered: Vec<SignatureScheme> = SCHEMES.iter().map(|(s, _)| *s).collect();
        let signer = self
            .key
            .choose_scheme(&offered)
            .ok_or("the key's type cannot sign with ECDSA, Ed25519 or RSA-SHA256")?;
        let scheme = SCHEMES
            .iter()
            .find(|(s, _)| *s == signer.scheme())
            .map(|(_, n)| n.to_string())
            .ok_or("unexpected signature scheme")?;
        let value = signer
            .sign(message)
            .map_err(|e| format!("signing failed: {e}"))?;
        Ok(Signature {
            scheme,
            value: base64::engine::general_purpose::STANDARD.encode(value),
            certificate: self.cert_pem.clone(),
        })
    }
}

/// The member a certificate names: its common name (as this project issues them), else its
/// first DNS name (pre-issued certificates often have no common name).
fn common_name(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(String::from);
    cn.or_else(|| {
        let ext = cert.subject_alternative_name().ok().flatten()?;
        ext.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) if !d.is_empty() => {
                Some(d.to_string())
            }
            _ => None,
        })
    })
}

/// What signatures are checked against: this node's CA bundle.
pub(crate) struct TrustAnchor {
    cas: Vec<Parsed>,
}

impl TrustAnchor {
    pub(crate) fn from_pem(ca_pem: &str) -> Result<TrustAnchor, String> {
        Ok(TrustAnchor {
            cas: inspect::parse_bundle(ca_pem)?,
        })
    }

    /// The name of the member that signed `message`, if `sig` is a valid signature over it by a
    /// member certificate of this CA that was valid at `signed_at` (the time the object gives).
    pub(crate) fn verify(
        &self,
        message: &[u8],
        sig: &Signature,
        signed_at: time::OffsetDateTime,
    ) -> Result<String, String> {
        let blocks = inspect::pem_blocks(&sig.certificate);
        if blocks.len() != 1 {
            return Err(format!(
                "the signature carries {} certificates, not one",
                blocks.len()
            ));
        }
        let parsed = inspect::parse_pem(&blocks[0])?;
        let cert = parsed.cert();
        let cas: Vec<&Parsed> = self.cas.iter().collect();
        inspect::check_chain(&cert, &cas)
            .map_err(|e| format!("the signer's certificate is {e}"))?;
        inspect::check_usage(&cert, CertKind::Peer).map_err(|e| {
            format!("the signer's certificate is not a member's: it {e} (client certificates cannot sign)")
        })?;
        inspect::check_dates(&cert, signed_at).map_err(|e| {
            format!(
                "the signer's certificate was not valid when the object says it was signed: {e}"
            )
        })?;
        let name =
            common_name(&cert).ok_or("the signer's certificate has no common name or DNS name")?;
        let alg = verification_alg(&sig.scheme)
            .ok_or_else(|| format!("unknown signature scheme {:?}", sig.scheme))?;
        let value = base64::engine::general_purpose::STANDARD
            .decode(sig.value.as_bytes())
            .map_err(|_| "the signature is not base64".to_string())?;
        ring::signature::UnparsedPublicKey::new(alg, &cert.public_key().subject_public_key.data)
            .verify(message, &value)
            .map_err(|_| format!("the signature does not verify (signer {name})"))?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    fn leaf(ca: &Ca, cn: &str, ekus: &[ExtendedKeyUsagePurpose]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![cn.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = ekus.to_vec();
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        let cert = p.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    const MEMBER: &[ExtendedKeyUsagePurpose] = &[
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    #[test]
    fn a_member_signs_and_the_cluster_checks() {
        let ca = ca("cluster CA");
        let (cert, key) = leaf(&ca, "etcd1", MEMBER);
        let signer = SigningKey::new(&cert, &key).unwrap();
        assert_eq!(signer.name(), "etcd1");
        let sig = signer.sign(b"hello").unwrap();
        assert_eq!(sig.scheme, "ecdsa-p256-sha256");
        let anchor = TrustAnchor::from_pem(&ca.pem).unwrap();
        assert_eq!(anchor.verify(b"hello", &sig, now()).unwrap(), "etcd1");

        // Another message, a flipped signature, another scheme name: refused.
        assert!(anchor.verify(b"hellO", &sig, now()).is_err());
        let mut bad = sig.clone();
        bad.value = base64::engine::general_purpose::STANDARD.encode([0u8; 64]);
        assert!(anchor.verify(b"hello", &bad, now()).is_err());
        let mut other = sig.clone();
        other.scheme = "ed25519".into();
        assert!(anchor.verify(b"hello", &other, now()).is_err());

        // Before the certificate was issued: refused.
        let long_ago = now() - time::Duration::days(3650);
        let err = anchor.verify(b"hello", &sig, long_ago).unwrap_err();
        assert!(err.contains("not valid when"), "{err}");
    }

    #[test]
    fn a_certificate_without_a_common_name_signs_as_its_dns_name() {
        let ca = ca("cluster CA");
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["etcd7.example.com".to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.extended_key_usages = MEMBER.to_vec();
        p.not_before = now() - time::Duration::days(1);
        let cert = p.signed_by(&key, &ca.issuer).unwrap();
        let signer = SigningKey::new(&cert.pem(), &key.serialize_pem()).unwrap();
        assert_eq!(signer.name(), "etcd7.example.com");
        let sig = signer.sign(b"m").unwrap();
        let anchor = TrustAnchor::from_pem(&ca.pem).unwrap();
        assert_eq!(
            anchor.verify(b"m", &sig, now()).unwrap(),
            "etcd7.example.com"
        );
    }

    #[test]
    fn another_ca_or_a_client_certificate_cannot_sign() {
        let ca1 = ca("cluster CA");
        let ca2 = ca("attacker CA");
        let anchor = TrustAnchor::from_pem(&ca1.pem).unwrap();

        let (cert, key) = leaf(&ca2, "etcd1", MEMBER);
        let sig = SigningKey::new(&cert, &key).unwrap().sign(b"x").unwrap();
        let err = anchor.verify(b"x", &sig, now()).unwrap_err();
        assert!(err.contains("not signed by the CA"), "{err}");

        // A client certificate of the right CA cannot even make a signing key...
        let (cert, key) = leaf(&ca1, "etcd1-client", &[ExtendedKeyUsagePurpose::ClientAuth]);
        assert!(SigningKey::new(&cert, &key).is_err());
        // ...and a signature made with its key by hand is refused.
        let der = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let k = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        let s = k
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        let forged = Signature {
            scheme: "ecdsa-p256-sha256".into(),
            value: base64::engine::general_purpose::STANDARD.encode(s.sign(b"x").unwrap()),
            certificate: cert,
        };
        let err = anchor.verify(b"x", &forged, now()).unwrap_err();
        assert!(err.contains("client certificates cannot sign"), "{err}");

        // Two certificates in one signature: refused.
        let (c1, k1) = leaf(&ca1, "etcd1", MEMBER);
        let mut two = SigningKey::new(&c1, &k1).unwrap().sign(b"x").unwrap();
        two.certificate = format!("{}{}", two.certificate, ca1.pem);
        assert!(anchor.verify(b"x", &two, now()).is_err());
    }
}
