//! `local-ca` and `cfssl`: keys made on this node, certificates signed by a `Signer`. Decides which
//! files to keep and which to (re-)issue, and what an issued leaf says (`leaf_params`).

use super::bundle::ca_bundle;
use super::{inspect, CertKind, CertSource, Identity, PlannedFile, Signer, TlsPlan};
use crate::config::Config;
use crate::model::tls::TlsPaths;
use crate::util::fs;
use anyhow::{Context, Result};
use futures::future::BoxFuture;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use std::time::Duration;

/// `local-ca` and `cfssl`: keys made here, certificates signed by a `Signer`.
pub(super) struct Issuing(pub(super) Box<dyn Signer>);

impl CertSource for Issuing {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn plan<'a>(
        &'a self,
        cfg: &'a Config,
        identity: &'a Identity,
        now: time::OffsetDateTime,
    ) -> BoxFuture<'a, Result<TlsPlan>> {
        Box::pin(issue_plan(cfg, self.0.as_ref(), identity, now))
    }
}

async fn issue_plan(
    cfg: &Config,
    signer: &dyn Signer,
    identity: &Identity,
    now: time::OffsetDateTime,
) -> Result<TlsPlan> {
    let paths = TlsPaths::new(&cfg.tls.dir);
    let ca_pem = signer.ca_pem().to_string();
    let ca = inspect::parse_pem(&ca_pem)
        .map_err(|m| anyhow::anyhow!("parsing the CA certificate: {m}"))?;
    let bundle = ca_bundle(&ca_pem, &paths.ca, cfg.tls.ca_overlap, now);
    let mut files = vec![PlannedFile {
        path: paths.ca.clone(),
        content: bundle.content,
        mode: 0o644,
        change: bundle.change,
    }];
    for kind in CertKind::wanted(cfg) {
        let cert_path = kind.cert_path(cfg);
        let key_path = kind.key_path(cfg);
        let existing = (fs::read_pem(&cert_path).ok(), fs::read_pem(&key_path).ok());
        let expected_cn = expected_cn(cfg, kind, identity);
        let verdict = match &existing {
            (Some(cert), Some(key)) => inspect::check_existing(
                cert,
                key,
                &ca,
                kind,
                identity,
                &expected_cn,
                now,
                key_path.metadata().ok(),
            ),
            _ => Err("missing".to_string()),
        };
        match verdict {
            Ok(()) => {
                let (cert, key) = existing;
                files.push(PlannedFile {
                    path: key_path,
                    content: key.unwrap_or_default(),
                    mode: 0o600,
                    change: None,
                });
                files.push(PlannedFile {
                    path: cert_path,
                    content: cert.unwrap_or_default(),
                    mode: 0o644,
                    change: None,
                });
            }
            Err(reason) => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                    .context("generating an ECDSA P-256 key")?;
                let params = leaf_params(cfg, kind, identity, now, cfg.tls.cert_validity)?;
                let cert = signer.sign(kind, &params, &key).await.map_err(|e| {
                    e.context(crate::error::Fatal(format!(
                        "issuing the {} certificate via {}",
                        kind.file_stem(),
                        signer.describe()
                    )))
                })?;
                tracing::debug!(file = %cert_path.display(), %reason, "certificate to issue");
                files.push(PlannedFile {
                    path: key_path,
                    content: key.serialize_pem(),
                    mode: 0o600,
                    change: Some(reason.clone()),
                });
                files.push(PlannedFile {
                    path: cert_path,
                    content: cert,
                    mode: 0o644,
                    change: Some(reason),
                });
            }
        }
    }
    Ok(TlsPlan {
        files,
        ca_changed: bundle.ca_changed,
    })
}

/// The CN a certificate of `kind` is issued with.
fn expected_cn(cfg: &Config, kind: CertKind, identity: &Identity) -> String {
    match kind {
        CertKind::Client => format!("{}-client", identity.member_name),
        CertKind::ApiserverClient => {
            crate::config::parse_subject(&cfg.tls.apiserver_client_subject)
                .unwrap_or_default()
                .into_iter()
                .find(|(a, _)| a == "CN")
                .map(|(_, v)| v)
                .unwrap_or_default()
        }
        CertKind::Server | CertKind::Peer => identity.member_name.clone(),
    }
}

fn leaf_params(
    cfg: &Config,
    kind: CertKind,
    identity: &Identity,
    now: time::OffsetDateTime,
    validity: Duration,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if kind == CertKind::ApiserverClient {
        for (attr, value) in crate::config::parse_subject(&cfg.tls.apiserver_client_subject)
            .map_err(|m| anyhow::anyhow!("tls.apiserver_client_subject: {m}"))?
        {
            let t = match attr.as_str() {
                "CN" => DnType::CommonName,
                "O" => DnType::OrganizationName,
                _ => DnType::OrganizationalUnitName,
            };
            dn.push(t, value);
        }
    } else {
        dn.push(DnType::CommonName, expected_cn(cfg, kind, identity));
        dn.push(DnType::OrganizationName, "etcd-bootstrap");
    }
    params.distinguished_name = dn;
    // Backdated a little: clocks of freshly booted VMs are not always in step. A tenth of the
    // lifetime at most, so that short-lived certificates are not renewed at once.
    let validity = time::Duration::try_from(validity).context("certificate validity")?;
    params.not_before = now - std::cmp::min(time::Duration::minutes(5), validity / 10);
    params.not_after = now + validity;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = if kind.is_client_only() {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    };
    if !kind.is_client_only() {
        let peer_role = identity.peer_role.iter().filter(|_| kind == CertKind::Peer);
        for n in identity.dns_names.iter().chain(peer_role) {
            params.subject_alt_names.push(SanType::DnsName(
                n.as_str()
                    .try_into()
                    .with_context(|| format!("SAN {n:?}"))?,
            ));
        }
        for ip in &identity.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
    }
    Ok(params)
}

pub(crate) fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for a certificate serial number"))?;
    bytes[0] &= 0x7f; // a positive INTEGER
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::{changed, fixture, identity, now};
    use crate::tls::{ca, describe, source};
    use std::net::IpAddr;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn issues_everything_once_then_keeps_it() {
        let f = fixture();
        let signer = source(&f.cfg).await.unwrap();
        let id = identity(&f.cfg, "10.0.0.1");
        let first = signer.plan(&f.cfg, &id, now()).await.unwrap();
        assert_eq!(changed(&first).len(), 7);
        first.apply(None).unwrap();
        let key = f.cfg.tls.dir.join("server.key");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = signer.plan(&f.cfg, &id, now()).await.unwrap();
        assert!(
            changed(&again).is_empty(),
            "re-run re-issued {:?}",
            changed(&again)
        );
        // The server certificate carries every SAN the member needs.
        let pem = std::fs::read_to_string(f.cfg.tls.dir.join("server.crt")).unwrap();
        let parsed = inspect::parse_pem(&pem).unwrap();
        let text = format!("{:?}", parsed.cert().subject_alternative_name());
        for want in [
            "etcd1",
            "etcd1.lab.test",
            "lab.test",
            "vm-1",
            "localhost",
            "etcd.example.com",
        ] {
            assert!(
                text.contains(&format!("DNSName(\"{want}\")")),
                "{want} missing: {text}"
            );
        }
        for want in ["10.0.0.1", "127.0.0.1", "::1", "192.0.2.7"] {
            let ip: IpAddr = want.parse().unwrap();
            let bytes = match ip {
                IpAddr::V4(v) => v.octets().to_vec(),
                IpAddr::V6(v) => v.octets().to_vec(),
            };
            assert!(
                text.contains(&format!("IPAddress({bytes:?})")),
                "{want} missing: {text}"
            );
        }
    }

    #[tokio::test]
    async fn reissues_what_is_no_longer_right() {
        let f = fixture();
        let signer = source(&f.cfg).await.unwrap();
        let id = identity(&f.cfg, "10.0.0.1");
        signer
            .plan(&f.cfg, &id, now())
            .await
            .unwrap()
            .apply(None)
            .unwrap();

        // A new address: server and peer certificates must cover it; the client one has no SANs.
        let moved = signer
            .plan(&f.cfg, &identity(&f.cfg, "10.0.0.2"), now())
            .await
            .unwrap();
        assert_eq!(
            changed(&moved),
            vec!["server.key", "server.crt", "peer.key", "peer.crt"]
        );
        assert!(moved
            .files
            .iter()
            .any(|f| f.change.as_deref() == Some("does not cover 10.0.0.2")));

        // Two thirds of the lifetime gone.
        let later = now() + time::Duration::days(250);
        assert_eq!(
            changed(&signer.plan(&f.cfg, &id, later).await.unwrap()).len(),
            6
        );

        // A key that does not belong to its certificate, and a key readable by others.
        let dir = &f.cfg.tls.dir;
        std::fs::copy(dir.join("peer.key"), dir.join("server.key")).unwrap();
        std::fs::set_permissions(
            dir.join("client.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let p = signer.plan(&f.cfg, &id, now()).await.unwrap();
        assert_eq!(
            changed(&p),
            vec!["server.key", "server.crt", "client.key", "client.crt"]
        );
        p.apply(None).unwrap();

        // Another CA: everything is re-issued.
        std::fs::rename(f.dir.path().join("ca"), f.dir.path().join("old-ca")).unwrap();
        ca::init(
            &f.dir.path().join("ca"),
            "new CA",
            Duration::from_secs(86400 * 3650),
        )
        .unwrap();
        let new_signer = signer_for(&f.cfg).await;
        let p = new_signer.plan(&f.cfg, &id, now()).await.unwrap();
        assert_eq!(changed(&p).len(), 7);
    }

    /// The peer role: only the peer certificate names it; a peer certificate issued before it
    /// existed (an upgrade) is re-issued, in place, and nothing else is.
    #[tokio::test]
    async fn only_the_peer_certificate_names_the_peer_role() {
        let f = fixture();
        let signer = source(&f.cfg).await.unwrap();
        let id = identity(&f.cfg, "10.0.0.1");
        assert_eq!(
            id.peer_role.as_deref(),
            Some("t.peer.etcd-bootstrap.internal")
        );
        signer
            .plan(&f.cfg, &id, now())
            .await
            .unwrap()
            .apply(None)
            .unwrap();
        let read = |name: &str| {
            inspect::facts(&std::fs::read_to_string(f.cfg.tls.dir.join(name)).unwrap()).unwrap()
        };
        let role = "t.peer.etcd-bootstrap.internal".to_string();
        assert!(read("peer.crt").dns_names.contains(&role));
        assert!(!read("server.crt").dns_names.contains(&role));
        assert!(read("client.crt").dns_names.is_empty());
        // As a version without peer roles issued it: only the peer pair is re-issued.
        let mut old = id.clone();
        old.peer_role = None;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = f.cfg.clone();
        cfg.tls.dir = dir.path().join("pki");
        signer
            .plan(&cfg, &old, now())
            .await
            .unwrap()
            .apply(None)
            .unwrap();
        let p = signer.plan(&cfg, &id, now()).await.unwrap();
        assert_eq!(changed(&p), vec!["peer.key", "peer.crt"]);
    }

    async fn signer_for(cfg: &Config) -> Box<dyn CertSource> {
        source(cfg).await.unwrap()
    }

    /// The CA key removed after the first issue (signing power kept off the node): the node keeps
    /// its certificates and restarts; only a renewal that is due needs the key, and says so.
    #[tokio::test]
    async fn a_ca_key_removed_after_the_first_issue() {
        let f = fixture();
        let id = identity(&f.cfg, "10.0.0.1");
        let key = f.dir.path().join("ca/ca.key");
        std::fs::rename(&key, f.dir.path().join("kept.key")).unwrap();
        // Before any certificate was issued, a missing key is a config error.
        let cfg_path = f.cfg.files[0].clone();
        let err = Config::load(Some(&cfg_path), &[]).err().unwrap();
        assert!(err.to_string().contains("`tls.ca_key`"), "{err}");
        std::fs::rename(f.dir.path().join("kept.key"), &key).unwrap();
        source(&f.cfg)
            .await
            .unwrap()
            .plan(&f.cfg, &id, now())
            .await
            .unwrap()
            .apply(None)
            .unwrap();
        std::fs::remove_file(&key).unwrap();
        let cfg = Config::load(Some(&cfg_path), &[]).unwrap();
        let keyless = source(&cfg).await.unwrap();
        let p = keyless.plan(&cfg, &id, now()).await.unwrap();
        assert!(changed(&p).is_empty(), "{:?}", changed(&p));
        // A year on, the leaves are due: the renewal fails naming the key, nothing is written.
        let later = now() + time::Duration::days(365);
        let err = keyless.plan(&cfg, &id, later).await.err().unwrap();
        assert_eq!(crate::error::exit_code_for(&err), 2);
        assert!(
            format!("{err:#}").contains("`tls.ca_key`") && format!("{err:#}").contains("is gone"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn a_ca_key_that_does_not_match_is_a_config_error() {
        let f = fixture();
        ca::init(
            &f.dir.path().join("other"),
            "other",
            Duration::from_secs(86400),
        )
        .unwrap();
        std::fs::copy(
            f.dir.path().join("other/ca.key"),
            f.dir.path().join("ca/ca.key"),
        )
        .unwrap();
        let err = source(&f.cfg).await.err().unwrap();
        assert_eq!(crate::error::exit_code_for(&err), 2);
        assert!(format!("{err:#}").contains("`tls.ca_key`"), "{err:#}");
    }

    #[tokio::test]
    async fn an_apiserver_client_certificate_with_the_configured_subject() {
        let mut f = fixture();
        f.cfg.tls.apiserver_client = true;
        f.cfg.tls.apiserver_client_subject =
            "CN=kube-apiserver-etcd-client,O=system:masters".into();
        f.cfg.tls.apiserver_client_dir = f.dir.path().join("kube");
        let id = identity(&f.cfg, "10.0.0.1");
        let s = source(&f.cfg).await.unwrap();
        s.plan(&f.cfg, &id, now())
            .await
            .unwrap()
            .apply(None)
            .unwrap();
        let pem =
            std::fs::read_to_string(f.dir.path().join("kube/apiserver-etcd-client.crt")).unwrap();
        let parsed = inspect::parse_pem(&pem).unwrap();
        let subject = parsed.cert().subject().to_string();
        assert!(
            subject.contains("CN=kube-apiserver-etcd-client"),
            "{subject}"
        );
        assert!(subject.contains("O=system:masters"), "{subject}");
        inspect::check_usage(&parsed.cert(), CertKind::ApiserverClient).unwrap();
        assert!(inspect::check_usage(&parsed.cert(), CertKind::Server).is_err());
        let key = f.dir.path().join("kube/apiserver-etcd-client.key");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = s.plan(&f.cfg, &id, now()).await.unwrap();
        assert!(changed(&again).is_empty(), "{:?}", changed(&again));
        let names: Vec<String> = describe(&f.cfg).into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"apiserver-etcd-client.crt".to_string()));
    }

    #[test]
    fn short_lived_certificates_are_not_due_at_once() {
        let f = fixture();
        let id = identity(&f.cfg, "10.0.0.1");
        let t = now();
        let p = leaf_params(&f.cfg, CertKind::Server, &id, t, Duration::from_secs(120)).unwrap();
        assert_eq!(p.not_after - p.not_before, time::Duration::seconds(132));
    }
}
