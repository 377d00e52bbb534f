//! Certificates: one interface (`Signer`), one provider per mode, one `match` that picks it.
//! Which files need (re-)issuing is decided here for every mode alike: a certificate is kept while
//! it parses, matches its key, chains to the current CA, has the right usages, covers the SANs this
//! member needs and has more than a third of its lifetime left.
//!
//! Work is split into `plan` (compute every file's content, in memory) and `apply` (write the
//! changed ones atomically), so that `etcd-bootstrap plan` can show and use the material without
//! writing anything.

pub mod ca;
mod cfssl;
mod inspect;
mod local_ca;

use crate::config::{Config, TlsMode};
use crate::discovery::BoxFuture;
use crate::fsutil::{self, Written};
use anyhow::{Context, Result};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use inspect::CertInfo;

/// The kinds of certificate a member holds, named as kubeadm names their files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Served on the client port.
    Server,
    /// Presented and served on the peer port: needs serverAuth and clientAuth.
    Peer,
    /// Used by etcd-bootstrap (and operators with etcdctl) to talk to etcd.
    Client,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Server, Kind::Peer, Kind::Client];

    pub fn file_stem(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::Peer => "peer",
            Kind::Client => "client",
        }
    }
}

/// What this member's certificates must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub member_name: String,
    pub dns_names: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

impl Identity {
    /// SANs for the member name, its SRV target name, the SRV domain, the hostname, the advertise
    /// IP, localhost, 127.0.0.1, ::1 and `tls.extra_sans` (etcd-rules.md 19, 21).
    pub fn new(
        cfg: &Config,
        member_name: &str,
        advertise: IpAddr,
        dns_name: Option<&str>,
        hostname: Option<&str>,
    ) -> Identity {
        let mut dns_names = BTreeSet::from(["localhost".to_string()]);
        let mut ips = BTreeSet::from([
            advertise,
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ]);
        let candidates = [
            Some(member_name),
            dns_name,
            cfg.discovery.srv_domain.as_deref(),
            hostname,
        ];
        for n in candidates.into_iter().flatten() {
            if crate::urls::is_dns_name(n) {
                dns_names.insert(n.to_ascii_lowercase());
            }
        }
        for san in &cfg.tls.extra_sans {
            match san.parse::<IpAddr>() {
                Ok(ip) => {
                    ips.insert(ip);
                }
                Err(_) => {
                    dns_names.insert(san.to_ascii_lowercase());
                }
            }
        }
        Identity {
            member_name: member_name.to_string(),
            dns_names,
            ips,
        }
    }
}

/// Issues certificates for keys made on this node.
pub trait Signer {
    fn describe(&self) -> String;
    /// The CA certificate (PEM) that every member and client trusts.
    fn ca_pem(&self) -> &str;
    /// Sign `params` for `key` (the private key stays here).
    fn sign<'a>(
        &'a self,
        params: &'a CertificateParams,
        key: &'a KeyPair,
    ) -> BoxFuture<'a, Result<String>>;
}

/// The signer the configuration asks for.
pub async fn signer(cfg: &Config) -> Result<Box<dyn Signer>> {
    match cfg.tls.mode {
        TlsMode::LocalCa => Ok(Box::new(local_ca::LocalCa::load(&cfg.tls)?)),
        TlsMode::Cfssl => Ok(Box::new(cfssl::Cfssl::connect(&cfg.tls).await?)),
    }
}

/// One file of the TLS directory, as it should be.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub path: PathBuf,
    pub content: String,
    pub mode: u32,
    /// Why it is (re)written, or `None` when the file on disk is already right.
    pub change: Option<String>,
}

/// The TLS directory as it should be after this run.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    pub files: Vec<PlannedFile>,
}

/// Paths of the material etcd and clients use.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsPaths {
    pub fn new(dir: &Path) -> TlsPaths {
        TlsPaths {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            peer_cert: dir.join("peer.crt"),
            peer_key: dir.join("peer.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        }
    }
}

/// PEM material for a client connection.
#[derive(Debug, Clone)]
pub struct ClientMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl ClientMaterial {
    /// Read the client certificate, key and CA from `dir`.
    pub fn from_dir(dir: &Path) -> Result<ClientMaterial> {
        let p = TlsPaths::new(dir);
        let read = |path: &Path| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        Ok(ClientMaterial {
            ca_pem: read(&p.ca)?,
            cert_pem: read(&p.client_cert)?,
            key_pem: read(&p.client_key)?,
        })
    }
}

impl TlsPlan {
    pub fn changed(&self) -> impl Iterator<Item = &PlannedFile> {
        self.files.iter().filter(|f| f.change.is_some())
    }

    fn content_of(&self, path: &Path) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.content.as_str())
    }

    /// The client certificate as it will be, usable before anything is written.
    pub fn client_material(&self, dir: &Path) -> Result<ClientMaterial> {
        let p = TlsPaths::new(dir);
        let get = |path: &Path| {
            self.content_of(path)
                .map(str::to_string)
                .with_context(|| format!("{} is not in the TLS plan", path.display()))
        };
        Ok(ClientMaterial {
            ca_pem: get(&p.ca)?,
            cert_pem: get(&p.client_cert)?,
            key_pem: get(&p.client_key)?,
        })
    }

    /// Write what changed: keys 0600 before their certificates (a kill in between leaves a
    /// mismatched pair, which the next run detects and re-issues).
    pub fn apply(&self) -> Result<Vec<(PathBuf, Written)>> {
        let mut out = Vec::new();
        for f in self.changed() {
            let w = fsutil::write_atomic(&f.path, f.content.as_bytes(), f.mode)?;
            out.push((f.path.clone(), w));
        }
        Ok(out)
    }
}

/// Work out the TLS directory for `identity`: keep what is still right, issue the rest.
pub async fn plan(
    cfg: &Config,
    signer: &dyn Signer,
    identity: &Identity,
    now: time::OffsetDateTime,
) -> Result<TlsPlan> {
    let dir = &cfg.tls.dir;
    let paths = TlsPaths::new(dir);
    let ca_pem = signer.ca_pem().to_string();
    let ca = inspect::parse_pem(&ca_pem)
        .map_err(|m| anyhow::anyhow!("parsing the CA certificate: {m}"))?;
    let mut files = Vec::new();
    let on_disk_ca = std::fs::read_to_string(&paths.ca).ok();
    files.push(PlannedFile {
        path: paths.ca.clone(),
        content: ca_pem.clone(),
        mode: 0o644,
        change: match on_disk_ca {
            Some(c) if c == ca_pem => None,
            Some(_) => Some("the CA certificate differs".into()),
            None => Some("missing".into()),
        },
    });
    for kind in Kind::ALL {
        let cert_path = dir.join(format!("{}.crt", kind.file_stem()));
        let key_path = dir.join(format!("{}.key", kind.file_stem()));
        let existing = (
            std::fs::read_to_string(&cert_path).ok(),
            std::fs::read_to_string(&key_path).ok(),
        );
        let verdict = match &existing {
            (Some(cert), Some(key)) => inspect::check_existing(
                cert,
                key,
                &ca,
                kind,
                identity,
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
                let params = leaf_params(kind, identity, now, cfg.tls.cert_validity)?;
                let cert = signer.sign(&params, &key).await.map_err(|e| {
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
    Ok(TlsPlan { files })
}

fn leaf_params(
    kind: Kind,
    identity: &Identity,
    now: time::OffsetDateTime,
    validity: Duration,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let cn = match kind {
        Kind::Client => format!("{}-client", identity.member_name),
        _ => identity.member_name.clone(),
    };
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "etcd-bootstrap");
    params.distinguished_name = dn;
    // Backdated a little: clocks of freshly booted VMs are not always in step.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::try_from(validity).context("certificate validity")?;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = match kind {
        Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Kind::Server | Kind::Peer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    if kind != Kind::Client {
        for n in &identity.dns_names {
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

/// Expiry and subject of each certificate in `dir`, for `status`.
pub fn describe_dir(dir: &Path) -> Vec<(String, Result<CertInfo, String>)> {
    let paths = TlsPaths::new(dir);
    [
        ("ca.crt", paths.ca),
        ("server.crt", paths.server_cert),
        ("peer.crt", paths.peer_cert),
        ("client.crt", paths.client_cert),
    ]
    .into_iter()
    .map(|(name, p)| {
        let info = std::fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|pem| inspect::info(&pem));
        (name.to_string(), info)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Fixture {
        dir: tempfile::TempDir,
        cfg: Config,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        ca::init(
            &dir.path().join("ca"),
            "test CA",
            Duration::from_secs(86400 * 3650),
        )
        .unwrap();
        let d = dir.path().display();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            format!(
                "[cluster]\nname = \"t\"\n[discovery]\nsrv_domain = \"lab.test\"\n[tls]\ndir = \"{d}/pki\"\nca_cert = \"{d}/ca/ca.crt\"\nca_key = \"{d}/ca/ca.key\"\nextra_sans = [\"etcd.example.com\", \"192.0.2.7\"]\n"
            ),
        )
        .unwrap();
        let cfg = Config::load(Some(&p), &[]).unwrap();
        Fixture { dir, cfg }
    }

    fn identity(cfg: &Config, ip: &str) -> Identity {
        Identity::new(
            cfg,
            "etcd1",
            ip.parse().unwrap(),
            Some("etcd1.lab.test"),
            Some("vm-1"),
        )
    }

    fn changed(plan: &TlsPlan) -> Vec<String> {
        plan.changed()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn now() -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc()
    }

    #[tokio::test]
    async fn issues_everything_once_then_keeps_it() {
        let f = fixture();
        let signer = signer(&f.cfg).await.unwrap();
        let id = identity(&f.cfg, "10.0.0.1");
        let first = plan(&f.cfg, signer.as_ref(), &id, now()).await.unwrap();
        assert_eq!(changed(&first).len(), 7);
        first.apply().unwrap();
        let key = f.cfg.tls.dir.join("server.key");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = plan(&f.cfg, signer.as_ref(), &id, now()).await.unwrap();
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
        let signer = signer(&f.cfg).await.unwrap();
        let id = identity(&f.cfg, "10.0.0.1");
        plan(&f.cfg, signer.as_ref(), &id, now())
            .await
            .unwrap()
            .apply()
            .unwrap();

        // A new address: server and peer certificates must cover it; the client one has no SANs.
        let moved = plan(
            &f.cfg,
            signer.as_ref(),
            &identity(&f.cfg, "10.0.0.2"),
            now(),
        )
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
            changed(&plan(&f.cfg, signer.as_ref(), &id, later).await.unwrap()).len(),
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
        let p = plan(&f.cfg, signer.as_ref(), &id, now()).await.unwrap();
        assert_eq!(
            changed(&p),
            vec!["server.key", "server.crt", "client.key", "client.crt"]
        );
        p.apply().unwrap();

        // Another CA: everything is re-issued.
        std::fs::rename(f.dir.path().join("ca"), f.dir.path().join("old-ca")).unwrap();
        ca::init(
            &f.dir.path().join("ca"),
            "new CA",
            Duration::from_secs(86400 * 3650),
        )
        .unwrap();
        let new_signer = signer_for(&f.cfg).await;
        let p = plan(&f.cfg, new_signer.as_ref(), &id, now()).await.unwrap();
        assert_eq!(changed(&p).len(), 7);
    }

    async fn signer_for(cfg: &Config) -> Box<dyn Signer> {
        signer(cfg).await.unwrap()
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
        let err = signer(&f.cfg).await.err().unwrap();
        assert_eq!(crate::error::exit_code_for(&err), 2);
        assert!(format!("{err:#}").contains("`tls.ca_key`"), "{err:#}");
    }
}
