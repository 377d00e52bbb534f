//! Certificates: one interface (`Signer`), one provider per mode, one `match` that picks it.
//! Which files need (re-)issuing is decided here for every mode alike: a certificate is kept while
//! it parses, matches its key, chains to the current CA, has the right usages, covers the SANs this
//! member needs and has more than a third of its lifetime left.
//!
//! Work is split into `plan` (compute every file's content, in memory) and `apply` (write the
//! changed ones atomically), so that `etcd-bootstrap plan` can show and use the material without
//! writing anything.

pub mod ca;
mod ca_key;
mod cfssl;
mod files;
mod inspect;
mod local_ca;
pub mod served;
pub mod signature;

use crate::config::{Config, TlsMode};
use crate::model::tls::{CertFacts, TlsPaths};
use crate::util::fs::{self, Written};
use anyhow::{Context, Result};
use futures::future::BoxFuture;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use inspect::{not_after_unix, CertInfo};

/// The kinds of certificate a member holds, named as kubeadm names their files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// Served on the client port.
    Server,
    /// Presented and served on the peer port: needs serverAuth and clientAuth.
    Peer,
    /// Used by etcd-bootstrap (and operators with etcdctl) to talk to etcd.
    Client,
    /// For kube-apiserver (`tls.apiserver_client`), kubeadm's `apiserver-etcd-client`.
    ApiserverClient,
}

impl CertKind {
    /// The certificates every member holds.
    pub const ALL: [CertKind; 3] = [CertKind::Server, CertKind::Peer, CertKind::Client];

    pub fn file_stem(self) -> &'static str {
        match self {
            CertKind::Server => "server",
            CertKind::Peer => "peer",
            CertKind::Client => "client",
            CertKind::ApiserverClient => "apiserver-etcd-client",
        }
    }

    /// The name `tls.cfssl_profiles` uses for this kind.
    pub fn profile_name(self) -> &'static str {
        match self {
            CertKind::ApiserverClient => "apiserver-client",
            k => k.file_stem(),
        }
    }

    fn is_client_only(self) -> bool {
        matches!(self, CertKind::Client | CertKind::ApiserverClient)
    }

    /// The certificates this configuration keeps.
    pub fn wanted(cfg: &Config) -> Vec<CertKind> {
        let mut kinds = CertKind::ALL.to_vec();
        if cfg.tls.apiserver_client {
            kinds.push(CertKind::ApiserverClient);
        }
        kinds
    }

    fn dir(self, cfg: &Config) -> &Path {
        match self {
            CertKind::ApiserverClient => &cfg.tls.apiserver_client_dir,
            _ => &cfg.tls.dir,
        }
    }

    pub fn cert_path(self, cfg: &Config) -> PathBuf {
        self.dir(cfg).join(format!("{}.crt", self.file_stem()))
    }

    pub fn key_path(self, cfg: &Config) -> PathBuf {
        self.dir(cfg).join(format!("{}.key", self.file_stem()))
    }
}

/// What this member's certificates must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub member_name: String,
    /// The address in this member's peer and client URLs.
    pub advertise: IpAddr,
    pub dns_names: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
    /// A DNS name that only peer certificates carry (`peer_role_name`), where this node issues
    /// its certificates from the fleet CA (local-ca): etcd can then require it of every peer
    /// (`--peer-cert-allowed-hostname`), so that a client certificate of the same CA (etcdctl's,
    /// kube-apiserver's) is never accepted on the peer port.
    pub peer_role: Option<String>,
}

/// The peer-only DNS name of cluster `cluster` (`<cluster>.peer.etcd-bootstrap.internal`), or
/// `None` when the cluster's name does not make a DNS name.
pub fn peer_role_name(cluster: &str) -> Option<String> {
    let name = format!(
        "{}.peer.etcd-bootstrap.internal",
        cluster.to_ascii_lowercase()
    );
    crate::model::url::is_dns_name(&name).then_some(name)
}

impl Identity {
    /// SANs for the member name, its SRV target name, the SRV domain, the hostname, the advertise
    /// IP, localhost, 127.0.0.1, ::1 and `tls.extra_sans` (etcd checks the peer certificate
    /// against the address a peer connects from; clients may use the SRV domain or loopback).
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
            if crate::model::url::is_dns_name(n) {
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
            advertise,
            dns_names,
            ips,
            // Only where this node issues from the CA: a signer's profile or pre-issued files may
            // not allow the name, and a certificate that cannot be issued is worse than a
            // peer port that also accepts the CA's client certificates.
            peer_role: matches!(cfg.tls.mode, crate::config::tls::TlsMode::LocalCa)
                .then(|| peer_role_name(&cfg.cluster.name))
                .flatten(),
        }
    }
}

/// Issues certificates for keys made on this node.
pub trait Signer: Send + Sync {
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
pub trait CertSource: Send + Sync {
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
pub async fn source(cfg: &Config) -> Result<Box<dyn CertSource>> {
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
pub async fn check_offline(cfg: &Config) -> Result<Vec<String>> {
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
    /// The CA certificate changed: etcd reads its trusted CAs only at start, so it must restart.
    pub ca_changed: bool,
}

/// PEM material for a client connection.
#[derive(Debug, Clone)]
pub struct ClientMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl ClientMaterial {
    fn read(ca: &Path, cert: &Path, key: &Path) -> Result<ClientMaterial> {
        let read =
            |path: &Path| fs::read_pem(path).with_context(|| format!("reading {}", path.display()));
        Ok(ClientMaterial {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }

    /// Read the peer certificate, key and CA from `dir` (the agent endpoint's identity).
    pub fn peer_from_dir(dir: &Path) -> Result<ClientMaterial> {
        let p = TlsPaths::new(dir);
        Self::read(&p.ca, &p.peer_cert, &p.peer_key)
    }

    /// Read the client certificate, key and CA from `dir`.
    pub fn from_dir(dir: &Path) -> Result<ClientMaterial> {
        let p = TlsPaths::new(dir);
        Self::read(&p.ca, &p.client_cert, &p.client_key)
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

    /// A certificate, its key and the CA as they will be, usable before anything is written.
    fn material(&self, ca: &Path, cert: &Path, key: &Path) -> Result<ClientMaterial> {
        let get = |path: &Path| {
            self.content_of(path)
                .map(str::to_string)
                .with_context(|| format!("{} is not in the TLS plan", path.display()))
        };
        Ok(ClientMaterial {
            ca_pem: get(ca)?,
            cert_pem: get(cert)?,
            key_pem: get(key)?,
        })
    }

    /// The peer certificate as it will be (the agent endpoint's identity, both ways).
    pub fn peer_material(&self, dir: &Path) -> Result<ClientMaterial> {
        let p = TlsPaths::new(dir);
        self.material(&p.ca, &p.peer_cert, &p.peer_key)
    }

    /// The client certificate as it will be.
    pub fn client_material(&self, dir: &Path) -> Result<ClientMaterial> {
        let p = TlsPaths::new(dir);
        self.material(&p.ca, &p.client_cert, &p.client_key)
    }

    /// Write what changed: keys 0600 before their certificates (a kill in between leaves a
    /// mismatched pair, which the next run detects and re-issues). etcd reads its leaf
    /// certificates at every handshake, so renewed ones are served without a restart; the
    /// server and peer keys belong to `etcd_owner` (the uid and gid etcd runs as) from the
    /// moment they are in place, or etcd could not read a renewed key.
    pub fn apply(&self, etcd_owner: Option<(u32, u32)>) -> Result<Vec<(PathBuf, Written)>> {
        let mut out = Vec::new();
        for f in self.changed() {
            let owner = etcd_owner.filter(|_| etcd_reads(&f.path));
            let w = fs::write_atomic_owned(&f.path, f.content.as_bytes(), f.mode, owner)?;
            out.push((f.path.clone(), w));
        }
        Ok(out)
    }
}

/// Whether etcd itself reads the key at `path` (its server and peer keys; the client key is the
/// agent's, a CA key the signer's).
fn etcd_reads(path: &Path) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    let p = TlsPaths::new(dir);
    path == p.server_key || path == p.peer_key
}

/// `local-ca` and `cfssl`: keys made here, certificates signed by a `Signer`.
struct Issuing(Box<dyn Signer>);

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

/// The content `ca.crt` should have.
struct Bundle {
    content: String,
    change: Option<String>,
    ca_changed: bool,
}

/// `ca.crt` holds the current CA and, for `tls.ca_overlap` after a change, the previous one: a
/// member that already switched keeps trusting peers and clients whose certificates the old CA
/// signed until they have switched too.
fn ca_bundle(current: &str, path: &Path, overlap: Duration, now: time::OffsetDateTime) -> Bundle {
    let on_disk = fs::read_pem(path).ok();
    let Some(on_disk) = on_disk else {
        return Bundle {
            content: current.to_string(),
            change: Some("missing".into()),
            ca_changed: false,
        };
    };
    let current_blocks = inspect::pem_blocks(current);
    let disk_blocks = inspect::pem_blocks(&on_disk);
    let still_valid = |b: &String| {
        inspect::info(b).is_ok_and(|i| i.expires_in_secs > 0) && !current_blocks.contains(b)
    };
    let same_ca = disk_blocks.starts_with(&current_blocks);
    let previous: Vec<String> = if same_ca {
        let written = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .map(time::OffsetDateTime::from);
        let in_overlap = written.is_some_and(|w| now < w + overlap);
        disk_blocks[current_blocks.len()..]
            .iter()
            .filter(|b| in_overlap && still_valid(b))
            .cloned()
            .collect()
    } else {
        disk_blocks
            .iter()
            .filter(|b| still_valid(b))
            .cloned()
            .collect()
    };
    let content = if previous.is_empty() {
        current.to_string()
    } else {
        let mut c = current_blocks.concat();
        c.push_str(&previous.concat());
        c
    };
    let change = if content == on_disk {
        None
    } else if same_ca {
        Some("the previous CA left the bundle (tls.ca_overlap ended, or it expired)".into())
    } else {
        Some("the CA changed; the previous CA stays trusted beside it for tls.ca_overlap".into())
    };
    Bundle {
        content,
        change,
        ca_changed: !same_ca,
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

/// Why the certificates on disk need renewing before etcd starts from them, judged from the files
/// alone (no CA or signer is asked): a certificate missing, unreadable, expired or, where this node
/// can issue, due for renewal.
pub fn due_on_disk(cfg: &Config, now: time::OffsetDateTime) -> Option<String> {
    for kind in CertKind::wanted(cfg) {
        let path = kind.cert_path(cfg);
        let parsed = match fs::read_pem(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| inspect::parse_pem(&pem))
        {
            Ok(p) => p,
            Err(e) => return Some(format!("{}: {e}", path.display())),
        };
        let cert = parsed.cert();
        if let Err(e) = inspect::check_dates(&cert, now) {
            return Some(format!("{}: {e}", path.display()));
        }
        if cfg.tls.mode != TlsMode::Files && inspect::due_for_renewal(&cert, now) {
            return Some(format!(
                "{}: less than a third of its lifetime left",
                path.display()
            ));
        }
    }
    None
}

/// The certificates this member keeps, by file name ("ca.crt", "server.crt", ...), and where
/// each is.
pub fn cert_files(cfg: &Config) -> Vec<(String, PathBuf)> {
    let paths = TlsPaths::new(&cfg.tls.dir);
    std::iter::once(("ca.crt".to_string(), paths.ca))
        .chain(
            CertKind::wanted(cfg)
                .into_iter()
                .map(|k| (format!("{}.crt", k.file_stem()), k.cert_path(cfg))),
        )
        .collect()
}

/// Expiry and subject of each certificate this configuration keeps, for `status`. For a CA bundle,
/// the first (current) CA.
pub fn describe(cfg: &Config) -> Vec<(String, Result<CertInfo, String>)> {
    cert_files(cfg)
        .into_iter()
        .map(|(name, p)| {
            let info = fs::read_pem(&p)
                .map_err(|e| e.to_string())
                .and_then(|pem| inspect::info(&pem));
            (name, info)
        })
        .collect()
}

/// One certificate file this configuration keeps, for `doctor`: `ca.crt` (its current CA) and
/// each leaf, with what it must cover when it is served (`Server`, `Peer`).
pub struct OnDisk {
    /// `server.crt`, ...
    pub file: String,
    pub path: PathBuf,
    /// `None` for `ca.crt`.
    pub kind: Option<CertKind>,
    pub facts: Result<CertFacts, String>,
}

pub fn on_disk(cfg: &Config) -> Vec<OnDisk> {
    let paths = TlsPaths::new(&cfg.tls.dir);
    std::iter::once(("ca.crt".to_string(), paths.ca, None))
        .chain(
            CertKind::wanted(cfg)
                .into_iter()
                .map(|k| (format!("{}.crt", k.file_stem()), k.cert_path(cfg), Some(k))),
        )
        .map(|(file, path, kind)| {
            let facts = fs::read_pem(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|pem| {
                    inspect::facts(&pem).map_err(|e| format!("{}: {e}", path.display()))
                });
            OnDisk {
                file,
                path,
                kind,
                facts,
            }
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

    /// etcd's server and peer keys are written as its user's (etcd reads a renewed key at the
    /// next handshake, without a restart); the agent's client key and the certificates are not.
    #[tokio::test]
    async fn etcds_keys_belong_to_its_user_from_the_start() {
        use std::os::unix::fs::MetadataExt;
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let f = fixture();
        let signer = source(&f.cfg).await.unwrap();
        let id = identity(&f.cfg, "10.0.0.1");
        let plan = signer.plan(&f.cfg, &id, now()).await.unwrap();
        plan.apply(Some((4242, 4343))).unwrap();
        let who = |name: &str| {
            let m = std::fs::metadata(f.cfg.tls.dir.join(name)).unwrap();
            (m.uid(), m.gid(), m.permissions().mode() & 0o777)
        };
        assert_eq!(who("server.key"), (4242, 4343, 0o600));
        assert_eq!(who("peer.key"), (4242, 4343, 0o600));
        assert_eq!(who("client.key"), (0, 0, 0o600));
        assert_eq!(who("server.crt"), (0, 0, 0o644));
    }

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
    async fn a_ca_change_keeps_the_old_ca_trusted_for_the_overlap() {
        let f = fixture();
        let id = identity(&f.cfg, "10.0.0.1");
        let old = source(&f.cfg).await.unwrap();
        let first = old.plan(&f.cfg, &id, now()).await.unwrap();
        assert!(!first.ca_changed, "a first install is not a CA change");
        first.apply(None).unwrap();
        let old_ca = std::fs::read_to_string(f.dir.path().join("ca/ca.crt")).unwrap();
        std::fs::remove_dir_all(f.dir.path().join("ca")).unwrap();
        ca::init(
            &f.dir.path().join("ca"),
            "new CA",
            Duration::from_secs(86400 * 3650),
        )
        .unwrap();
        let new_ca = std::fs::read_to_string(f.dir.path().join("ca/ca.crt")).unwrap();
        let new = source(&f.cfg).await.unwrap();
        let p = new.plan(&f.cfg, &id, now()).await.unwrap();
        assert!(p.ca_changed);
        p.apply(None).unwrap();
        let bundle = std::fs::read_to_string(f.cfg.tls.dir.join("ca.crt")).unwrap();
        let blocks = inspect::pem_blocks(&bundle);
        assert_eq!(blocks.len(), 2, "{bundle}");
        assert_eq!(blocks[0], inspect::pem_blocks(&new_ca)[0], "new CA first");
        assert_eq!(blocks[1], inspect::pem_blocks(&old_ca)[0], "old CA kept");
        // Settled: nothing to do, not a change any more.
        let again = new.plan(&f.cfg, &id, now()).await.unwrap();
        assert!(!again.ca_changed);
        assert!(changed(&again).is_empty(), "{:?}", changed(&again));
        // After the overlap the old CA leaves the bundle, without counting as a CA change.
        let later = now() + time::Duration::hours(73);
        let p = new.plan(&f.cfg, &id, later).await.unwrap();
        assert!(!p.ca_changed);
        let ca = p.files.iter().find(|f| f.path.ends_with("ca.crt")).unwrap();
        assert!(ca.change.is_some());
        assert_eq!(inspect::pem_blocks(&ca.content).len(), 1);
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
