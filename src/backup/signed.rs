//! Signed objects: every object in the store that an agent or a command acts on (snapshot
//! manifests, restore requests, restore progress) is written as an envelope
//! `{"kind", "payload", "signature"}` and counts only when the signature checks out
//! (`tls::signature`): the bucket's credentials alone must give an attacker nothing.
//!
//! The signature covers the kind and the payload's exact bytes (kept verbatim in the envelope,
//! readable as JSON), so an object of one kind cannot be passed off as another, and nothing in
//! the payload (cluster, names, sizes, hashes, revisions, times) can change without breaking it.
//! The payload names its signer and the time it was signed; the certificate must name the same
//! member and have been valid then, and that time may not lie in the future.

use crate::tls::signature::{Signature, SigningKey, TrustAnchor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Signed objects are small; a larger one is not read at all.
pub(crate) const MAX_BYTES: u64 = 64 * 1024;

/// How far in the future a signed time may be (clocks of members differ a little).
pub(crate) const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// What a payload must say about its signature.
pub(crate) trait Payload {
    /// The member that signed it (its certificate's common name).
    fn signer(&self) -> &str;
    /// When it was signed (RFC 3339 in the payload); `None` when it does not parse.
    fn signed_at(&self) -> Option<time::OffsetDateTime>;
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    kind: &'a str,
    payload: &'a RawValue,
    signature: Signature,
}

#[derive(Deserialize)]
struct EnvelopeIn<'a> {
    kind: String,
    #[serde(borrow)]
    payload: &'a RawValue,
    signature: Signature,
}

fn message(kind: &str, payload: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(payload.len() + kind.len() + 32);
    m.extend_from_slice(b"etcd-bootstrap signed object v1\0");
    m.extend_from_slice(kind.as_bytes());
    m.push(0);
    m.extend_from_slice(payload.as_bytes());
    m
}

/// `value` as a signed envelope of `kind`.
pub(crate) fn seal<T: Serialize>(
    kind: &str,
    value: &T,
    key: &SigningKey,
) -> anyhow::Result<Vec<u8>> {
    let payload = serde_json::to_string_pretty(value)?;
    let signature = key
        .sign(&message(kind, &payload))
        .map_err(anyhow::Error::msg)?;
    let raw = RawValue::from_string(payload)?;
    let out = serde_json::to_vec_pretty(&EnvelopeOut {
        kind,
        payload: &raw,
        signature,
    })?;
    Ok(out)
}

/// The payload of a signed envelope of `kind`, and who signed it; the error says why the object
/// is not to be trusted.
pub(crate) fn open<T: DeserializeOwned + Payload>(
    kind: &str,
    bytes: &[u8],
    anchor: &TrustAnchor,
    now: time::OffsetDateTime,
) -> Result<T, String> {
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!(
            "{} bytes, more than a signed object may have",
            bytes.len()
        ));
    }
    let env: EnvelopeIn<'_> = serde_json::from_slice(bytes)
        .map_err(|e| format!("not a signed object (unsigned, or written by hand): {e}"))?;
    if env.kind != kind {
        return Err(format!("a signed {:?}, not a {kind:?}", env.kind));
    }
    let value: T = serde_json::from_str(env.payload.get())
        .map_err(|e| format!("its payload is not a {kind}: {e}"))?;
    let at = value
        .signed_at()
        .ok_or("its time does not parse as RFC 3339")?;
    if at > now + CLOCK_SKEW {
        return Err(format!(
            "it says it was signed at {at}, in the future (now {now})"
        ));
    }
    let signer = anchor.verify(&message(kind, env.payload.get()), &env.signature, at)?;
    if signer != value.signer() {
        return Err(format!(
            "signed by {signer:?} but says it is by {:?}",
            value.signer()
        ));
    }
    Ok(value)
}

/// RFC 3339 text as a time.
pub(crate) fn parse_time(text: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    /// A CA and member keys, as `ca init` and the local-ca mode make them.
    pub(crate) struct Pki {
        pub ca_pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Pki {
        pub(crate) fn new() -> Pki {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec![]).unwrap();
            p.distinguished_name.push(DnType::CommonName, "test CA");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = p.self_signed(&key).unwrap();
            Pki {
                ca_pem: cert.pem(),
                issuer: Issuer::new(p, key),
            }
        }

        pub(crate) fn member(&self, name: &str) -> SigningKey {
            let m = self.member_material(name);
            SigningKey::new(&m.cert_pem, &m.key_pem).unwrap()
        }

        /// A member's peer certificate and key, with the CA, as a node holds them.
        pub(crate) fn member_material(&self, name: &str) -> crate::tls::ClientMaterial {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, &self.issuer).unwrap();
            crate::tls::ClientMaterial {
                ca_pem: self.ca_pem.clone(),
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        }

        pub(crate) fn anchor(&self) -> TrustAnchor {
            TrustAnchor::from_pem(&self.ca_pem).unwrap()
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note {
        by: String,
        at: String,
        text: String,
    }

    impl Payload for Note {
        fn signer(&self) -> &str {
            &self.by
        }
        fn signed_at(&self) -> Option<time::OffsetDateTime> {
            parse_time(&self.at)
        }
    }

    fn note(by: &str, at: time::OffsetDateTime) -> Note {
        Note {
            by: by.into(),
            at: crate::backup::manifest::rfc3339(at),
            text: "hello".into(),
        }
    }

    #[test]
    fn sealed_objects_open_and_tampered_ones_do_not() {
        let pki = Pki::new();
        let key = pki.member("etcd1");
        let now = time::OffsetDateTime::now_utc();
        let n = note("etcd1", now);
        let sealed = seal("note", &n, &key).unwrap();
        let back: Note = open("note", &sealed, &pki.anchor(), now).unwrap();
        assert_eq!(back, n);

        let text = String::from_utf8(sealed.clone()).unwrap();
        // (what an attacker with the bucket can do to it, and why it is refused)
        let cases: Vec<(String, &str)> = vec![
            (text.replace("hello", "hellO"), "does not verify"),
            (text.replace("\"etcd1\"", "\"etcd2\""), "does not verify"),
            (
                text.replace("\"kind\": \"note\"", "\"kind\": \"other\""),
                "not a \"note\"",
            ),
            (serde_json::to_string(&n).unwrap(), "not a signed object"),
            ("{}".into(), "not a signed object"),
        ];
        for (i, (bytes, why)) in cases.iter().enumerate() {
            let err = open::<Note>("note", bytes.as_bytes(), &pki.anchor(), now).unwrap_err();
            assert!(err.contains(why), "case {i}: {err}");
        }

        // Signed by another member than the one the payload names.
        let sealed = seal("note", &note("etcd2", now), &key).unwrap();
        let err = open::<Note>("note", &sealed, &pki.anchor(), now).unwrap_err();
        assert!(err.contains("signed by \"etcd1\""), "{err}");

        // A time in the future beyond the skew (a "newest for good" object).
        let later = now + time::Duration::hours(1);
        let sealed = seal("note", &note("etcd1", later), &key).unwrap();
        let err = open::<Note>("note", &sealed, &pki.anchor(), now).unwrap_err();
        assert!(err.contains("in the future"), "{err}");

        // Another cluster's CA: its members cannot sign for this one.
        let other = Pki::new();
        let sealed = seal("note", &n, &other.member("etcd1")).unwrap();
        let err = open::<Note>("note", &sealed, &pki.anchor(), now).unwrap_err();
        assert!(err.contains("not signed by the CA"), "{err}");

        // Too large to be read.
        let big = vec![b' '; MAX_BYTES as usize + 1];
        assert!(open::<Note>("note", &big, &pki.anchor(), now).is_err());
    }
}
