//! Reading the CA key users already have: PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY", as
//! `openssl ecparam -genkey` and cfssl's ECDSA CA write it) or PKCS#1 ("RSA PRIVATE KEY", as
//! `cfssl gencert -initca` with an RSA request writes it).
//!
//! The signing library (ring) loads PKCS#8 only, so SEC1 and PKCS#1 keys are wrapped in a PKCS#8
//! envelope (RFC 5208: version 0, the algorithm identifier, the key as an octet string) in memory;
//! the file on disk is never rewritten.

use rcgen::{KeyPair, PKCS_RSA_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use yasna::models::ObjectIdentifier;
use yasna::Tag;

const ID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
const P384: &[u64] = &[1, 3, 132, 0, 34];

/// The CA's signing key from `pem` (a file may hold other blocks too, e.g. the "EC PARAMETERS"
/// that `openssl ecparam -genkey` writes first). The error is one line saying which forms work.
pub(crate) fn parse(pem: &str) -> Result<KeyPair, String> {
    const FORMS: &str = "PKCS#8 \"PRIVATE KEY\" (ECDSA P-256/P-384, Ed25519, RSA 2048-4096), SEC1 \"EC PRIVATE KEY\" (P-256, P-384) or PKCS#1 \"RSA PRIVATE KEY\" (2048-4096 bits)";
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("holds no unencrypted PEM private key ({e}); accepted: {FORMS}"))?;
    match der {
        PrivateKeyDer::Pkcs8(k) => KeyPair::try_from(&k)
            .map_err(|e| format!("is not a usable PKCS#8 key ({e}); accepted: {FORMS}")),
        PrivateKeyDer::Sec1(k) => {
            let curve = sec1_curve(k.secret_sec1_der())
                .map_err(|m| format!("is not a usable SEC1 \"EC PRIVATE KEY\": {m}"))?;
            let wrapped = pkcs8(ID_EC_PUBLIC_KEY, Some(curve), k.secret_sec1_der());
            KeyPair::try_from(&PrivatePkcs8KeyDer::from(wrapped)).map_err(|e| {
                format!("is not a usable SEC1 \"EC PRIVATE KEY\" ({e}); it must carry its public key, as openssl and cfssl write it")
            })
        }
        PrivateKeyDer::Pkcs1(k) => {
            let wrapped = pkcs8(RSA_ENCRYPTION, None, k.secret_pkcs1_der());
            KeyPair::from_pkcs8_der_and_sign_algo(
                &PrivatePkcs8KeyDer::from(wrapped),
                &PKCS_RSA_SHA256,
            )
            .map_err(|e| {
                format!("is not a usable PKCS#1 \"RSA PRIVATE KEY\" ({e}); RSA keys must have 2048 to 4096 bits")
            })
        }
        _ => Err(format!("is not a supported key form; accepted: {FORMS}")),
    }
}

/// The named curve of a SEC1 ECPrivateKey (RFC 5915: version 1, the private key, [0] the curve,
/// [1] the public key), P-256 or P-384 only.
fn sec1_curve(der: &[u8]) -> Result<&'static [u64], String> {
    let oid = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            r.next().read_u8()?;
            r.next().read_bytes()?;
            let curve = r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_oid()))?;
            r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_bitvec_bytes()))?;
            Ok(curve)
        })
    })
    .map_err(|e| format!("malformed DER ({e})"))?
    .ok_or("it names no curve")?;
    [P256, P384]
        .into_iter()
        .find(|c| oid.components().as_slice() == *c)
        .ok_or_else(|| format!("curve {oid} is not supported (P-256 or P-384 only)"))
}

/// A PKCS#8 PrivateKeyInfo around `key`, with `algorithm` and its parameter (a curve OID, or NULL
/// for RSA as RFC 8017 asks).
fn pkcs8(algorithm: &[u64], curve: Option<&[u64]>, key: &[u8]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next().write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(algorithm));
                match curve {
                    Some(c) => w.next().write_oid(&ObjectIdentifier::from_slice(c)),
                    None => w.next().write_null(),
                }
            });
            w.next().write_bytes(key);
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use std::process::Command;

    /// A key written by the real openssl CLI (`args`), as users make them.
    fn openssl(args: &[&str]) -> String {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The same key in PKCS#8, as `openssl pkcs8 -topk8` converts it.
    fn to_pkcs8(pem: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, pem).unwrap();
        openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", p.to_str().unwrap()])
    }

    fn assert_same_key_as_pkcs8(pem: &str, label: &str) {
        assert!(pem.contains(label), "{pem}");
        let ours = parse(pem).unwrap_or_else(|e| panic!("{label}: {e}"));
        let reference = KeyPair::from_pem(&to_pkcs8(pem)).unwrap();
        assert_eq!(
            ours.subject_public_key_info(),
            reference.subject_public_key_info()
        );
        assert_eq!(ours.algorithm(), reference.algorithm());
    }

    #[test]
    fn sec1_from_ecparam_genkey_with_its_parameters_block() {
        for curve in ["prime256v1", "secp384r1"] {
            let pem = openssl(&["ecparam", "-name", curve, "-genkey"]);
            assert!(pem.contains("BEGIN EC PARAMETERS"), "{pem}");
            assert_same_key_as_pkcs8(&pem, "BEGIN EC PRIVATE KEY");
        }
    }

    #[test]
    fn pkcs1_rsa_of_2048_and_4096_bits() {
        for bits in ["2048", "4096"] {
            let pem = openssl(&["genrsa", "-traditional", bits]);
            assert_same_key_as_pkcs8(&pem, "BEGIN RSA PRIVATE KEY");
        }
    }

    #[test]
    fn pkcs8_as_before() {
        let pem = to_pkcs8(&openssl(&["ecparam", "-name", "prime256v1", "-genkey"]));
        assert!(parse(&pem).is_ok());
    }

    #[test]
    fn unsupported_keys_say_what_is_accepted() {
        let small = openssl(&["genrsa", "-traditional", "1024"]);
        assert!(parse(&small).unwrap_err().contains("2048 to 4096"));
        let p521 = openssl(&["ecparam", "-name", "secp521r1", "-genkey"]);
        let err = parse(&p521).unwrap_err();
        assert!(
            err.contains("1.3.132.0.35") && err.contains("P-256 or P-384"),
            "{err}"
        );
        let cert_only = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";
        assert!(parse(cert_only).unwrap_err().contains("RSA PRIVATE KEY"));
    }
}
