//! `tls.mode = "files"`: pre-issued CA, certificates and keys, from local paths or https URLs
//! (optionally pinned by SHA-256). Nothing is signed here; everything is checked before use: each
//! certificate matches its key, chains to the CA, has the usages its role needs, is within its
//! validity and covers the addresses this member is reached at. A failed check names the key it
//! is about and exits 2.

use super::{inspect, CertKind, CertSource, Identity, PlannedFile, TlsPlan};
use crate::config::{Config, TlsConfig, TlsSources};
use crate::error::ConfigError;
use crate::model::tls::TlsPaths;
use anyhow::{Context, Result};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Pre-issued files are small; anything bigger is the wrong URL.
const MAX_FILE: usize = 1 << 20;

pub(crate) struct Files {
    sources: TlsSources,
    pins: BTreeMap<String, String>,
    http: reqwest::Client,
}

/// One fetched file: its config key, where it came from, its content.
struct Fetched {
    key: &'static str,
    location: String,
    text: String,
}

impl Fetched {
    fn bad(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.key, self.location.clone(), message)
    }
}

impl Files {
    pub(crate) fn new(tls: &TlsConfig) -> Result<Files> {
        let sources = tls
            .sources
            .clone()
            .context("tls.mode = \"files\" without sources")?;
        Ok(Files {
            sources,
            pins: tls.sha256_pins.clone(),
            http: crate::util::http::client(tls.signer_ca.as_deref(), Duration::from_secs(15))?,
        })
    }

    async fn fetch(&self, key: &'static str, file: &str, location: &str) -> Result<Fetched> {
        let bytes = if location.starts_with("https://") {
            crate::util::http::get(&self.http, location, MAX_FILE)
                .await
                .with_context(|| format!("fetching {key}"))?
        } else {
            crate::util::fs::read_bounded(std::path::Path::new(location), MAX_FILE as u64).map_err(
                |e| ConfigError::new(key, location.to_string(), format!("cannot read: {e}")),
            )?
        };
        if let Some(pin) = self.pins.get(file) {
            let got = crate::util::sha256::sha256_hex(&bytes);
            if &got != pin {
                return Err(ConfigError::new(
                    "tls.sha256_pins",
                    location.to_string(),
                    format!("{file} has SHA-256 {got}, but the pin says {pin}"),
                )
                .into());
            }
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| ConfigError::new(key, location.to_string(), "is not a text (PEM) file"))?;
        Ok(Fetched {
            key,
            location: location.to_string(),
            text,
        })
    }

    async fn fetch_all(&self, cfg: &Config) -> Result<Vec<(CertKind, Fetched, Fetched)>> {
        let s = &self.sources;
        let mut out = Vec::new();
        for kind in CertKind::wanted(cfg) {
            let (cert_key, key_key, cert_loc, key_loc) = match kind {
                CertKind::Server => (
                    "tls.server_cert",
                    "tls.server_key",
                    &s.server_cert,
                    &s.server_key,
                ),
                CertKind::Peer => ("tls.peer_cert", "tls.peer_key", &s.peer_cert, &s.peer_key),
                CertKind::Client => (
                    "tls.client_cert",
                    "tls.client_key",
                    &s.client_cert,
                    &s.client_key,
                ),
                CertKind::ApiserverClient => {
                    let (Some(c), Some(k)) = (&s.apiserver_client_cert, &s.apiserver_client_key)
                    else {
                        return Err(ConfigError::new(
                            "tls.apiserver_client_cert",
                            "",
                            "is required with tls.apiserver_client = true in tls.mode = \"files\"",
                        )
                        .into());
                    };
                    (
                        "tls.apiserver_client_cert",
                        "tls.apiserver_client_key",
                        c,
                        k,
                    )
                }
            };
            let stem = kind.file_stem();
            let cert = self
                .fetch(cert_key, &format!("{stem}.crt"), cert_loc)
                .await?;
            let key = self.fetch(key_key, &format!("{stem}.key"), key_loc).await?;
            out.push((kind, cert, key));
        }
        Ok(out)
    }
}

/// The names and addresses a certificate of `kind` must cover for this member to work: its
/// advertise address (peers and clients dial it), and 127.0.0.1 on the client port, where
/// etcd-bootstrap itself connects.
fn required_sans(kind: CertKind, identity: &Identity) -> Vec<IpAddr> {
    match kind {
        CertKind::Server => vec![identity.advertise, IpAddr::from([127, 0, 0, 1])],
        CertKind::Peer => vec![identity.advertise],
        CertKind::Client | CertKind::ApiserverClient => vec![],
    }
}

/// Check one certificate and key against the CA bundle: the message says which check failed.
/// Without `identity`, everything but the addresses it must cover.
fn check(
    kind: CertKind,
    cert: &Fetched,
    key: &Fetched,
    cas: &[inspect::Parsed],
    identity: Option<&Identity>,
    now: time::OffsetDateTime,
) -> Result<(), ConfigError> {
    let parsed = inspect::parse_pem(&cert.text).map_err(|m| cert.bad(m))?;
    inspect::check_pair(&cert.text, &key.text)
        .map_err(|m| key.bad(format!("{m} (certificate {})", cert.location)))?;
    let c = parsed.cert();
    let refs: Vec<&inspect::Parsed> = cas.iter().collect();
    inspect::check_chain(&c, &refs)
        .map_err(|m| cert.bad(format!("{m}: it does not chain to tls.ca_cert")))?;
    inspect::check_dates(&c, now).map_err(|m| cert.bad(m))?;
    inspect::check_usage(&c, kind).map_err(|m| {
        cert.bad(format!(
            "{m}, which the {} certificate needs",
            kind.file_stem()
        ))
    })?;
    let Some(identity) = identity else {
        return Ok(());
    };
    let ips = required_sans(kind, identity);
    inspect::check_sans(&c, std::iter::empty(), &ips).map_err(|m| {
        cert.bad(format!(
            "{m}: this member is reached at {}; re-issue it with these addresses as SANs",
            ips.iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        ))
    })?;
    if inspect::due_for_renewal(&c, now) {
        tracing::warn!(certificate = %cert.location, not_after = %c.validity().not_after, "less than a third of the lifetime of a pre-issued certificate is left; replace it at its source");
    }
    Ok(())
}

impl Files {
    /// Fetch the CA and every pair, and check them.
    async fn fetch_checked(
        &self,
        cfg: &Config,
        identity: Option<&Identity>,
        now: time::OffsetDateTime,
    ) -> Result<(Fetched, Vec<(CertKind, Fetched, Fetched)>)> {
        let ca = self
            .fetch("tls.ca_cert", "ca.crt", &self.sources.ca)
            .await?;
        let cas = inspect::parse_bundle(&ca.text).map_err(|m| ca.bad(m))?;
        let pairs = self.fetch_all(cfg).await?;
        for (kind, cert, key) in &pairs {
            check(*kind, cert, key, &cas, identity, now)?;
        }
        Ok((ca, pairs))
    }
}

impl CertSource for Files {
    fn describe(&self) -> String {
        "pre-issued files".into()
    }

    fn precheck<'a>(
        &'a self,
        cfg: &'a Config,
        now: time::OffsetDateTime,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.fetch_checked(cfg, None, now).await.map(|_| ()) })
    }

    fn plan<'a>(
        &'a self,
        cfg: &'a Config,
        identity: &'a Identity,
        now: time::OffsetDateTime,
    ) -> BoxFuture<'a, Result<TlsPlan>> {
        Box::pin(async move {
            let (ca, pairs) = self.fetch_checked(cfg, Some(identity), now).await?;
            let paths = TlsPaths::new(&cfg.tls.dir);
            let on_disk_ca = crate::util::fs::read_pem(&paths.ca).ok();
            let ca_changed = on_disk_ca.as_ref().is_some_and(|c| c != &ca.text);
            let mut files = vec![planned(paths.ca, ca.text, 0o644)];
            for (kind, cert, key) in pairs {
                files.push(planned(kind.key_path(cfg), key.text, 0o600));
                files.push(planned(kind.cert_path(cfg), cert.text, 0o644));
            }
            Ok(TlsPlan { files, ca_changed })
        })
    }
}

/// A file as fetched; changed when the copy in place differs (or is readable by others).
fn planned(path: std::path::PathBuf, content: String, mode: u32) -> PlannedFile {
    use std::os::unix::fs::PermissionsExt;
    let same = crate::util::fs::read_pem(&path).is_ok_and(|c| c == content)
        && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o777 == mode);
    let change = match (same, path.exists()) {
        (true, _) => None,
        (false, true) => Some("the pre-issued file changed at its source".to_string()),
        (false, false) => Some("missing".to_string()),
    };
    PlannedFile {
        path,
        content,
        mode,
        change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_code_for;
    use std::path::{Path, PathBuf};

    /// Pre-issued material made with a local CA into `src/`, and a files-mode config reading it.
    struct Fixture {
        dir: tempfile::TempDir,
        cfg: Config,
        id: Identity,
    }

    fn load(path: &Path) -> Config {
        Config::load(Some(path), &[]).unwrap()
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        super::super::ca::init(
            &dir.path().join("ca"),
            "files CA",
            Duration::from_secs(86400 * 365),
        )
        .unwrap();
        let issuing = dir.path().join("issuing.toml");
        std::fs::write(
            &issuing,
            format!("[cluster]\nname = \"t\"\n[discovery]\nsrv_domain = \"lab.test\"\n[tls]\ndir = \"{d}/src\"\nca_cert = \"{d}/ca/ca.crt\"\nca_key = \"{d}/ca/ca.key\"\n"),
        )
        .unwrap();
        let icfg = load(&issuing);
        let id = Identity::new(&icfg, "etcd1", "10.0.0.1".parse().unwrap(), None, None);
        let src = super::super::source(&icfg).await.unwrap();
        src.plan(&icfg, &id, time::OffsetDateTime::now_utc())
            .await
            .unwrap()
            .apply(None)
            .unwrap();
        let files = dir.path().join("files.toml");
        let mut body = format!("[cluster]\nname = \"t\"\n[discovery]\nsrv_domain = \"lab.test\"\n[tls]\nmode = \"files\"\ndir = \"{d}/pki\"\nca_cert = \"{d}/src/ca.crt\"\n");
        for k in ["server", "peer", "client"] {
            body.push_str(&format!(
                "{k}_cert = \"{d}/src/{k}.crt\"\n{k}_key = \"{d}/src/{k}.key\"\n"
            ));
        }
        std::fs::write(&files, body).unwrap();
        Fixture {
            cfg: load(&files),
            dir,
            id,
        }
    }

    impl Fixture {
        fn src(&self, name: &str) -> PathBuf {
            self.dir.path().join("src").join(name)
        }

        async fn plan(&self) -> Result<TlsPlan> {
            self.plan_at(time::OffsetDateTime::now_utc()).await
        }

        async fn plan_at(&self, now: time::OffsetDateTime) -> Result<TlsPlan> {
            Files::new(&self.cfg.tls)?
                .plan(&self.cfg, &self.id, now)
                .await
        }

        /// The plan fails with exit code 2, naming `key`, saying `what`.
        async fn refused(&self, key: &str, what: &str) {
            let err = self.plan().await.expect_err("the check should fail");
            let msg = format!("{err:#}");
            assert_eq!(exit_code_for(&err), 2, "{msg}");
            assert!(msg.contains(&format!("`{key}`")), "{key} not named: {msg}");
            assert!(msg.contains(what), "{what:?} not said: {msg}");
            assert!(!self.cfg.tls.dir.exists(), "nothing may be written");
        }
    }

    #[tokio::test]
    async fn good_files_are_copied_once() {
        let f = fixture().await;
        let p = f.plan().await.unwrap();
        assert_eq!(p.changed().count(), 7);
        assert!(!p.ca_changed);
        p.apply(None).unwrap();
        let again = f.plan().await.unwrap();
        assert_eq!(again.changed().count(), 0);
        // A new certificate at the source is picked up (renewal in files mode).
        std::fs::copy(f.src("server.crt"), f.dir.path().join("server.crt.bak")).unwrap();
        let mut cfg2 = f.cfg.clone();
        cfg2.tls.sources.as_mut().unwrap().server_cert =
            f.dir.path().join("server.crt.bak").display().to_string();
        let p = Files::new(&cfg2.tls)
            .unwrap()
            .plan(&cfg2, &f.id, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert_eq!(
            p.changed().count(),
            0,
            "same content, other path: no change"
        );
    }

    #[tokio::test]
    async fn a_key_that_does_not_match_its_certificate() {
        let f = fixture().await;
        std::fs::copy(f.src("peer.key"), f.src("server.key")).unwrap();
        f.refused("tls.server_key", "does not match its key").await;
    }

    #[tokio::test]
    async fn a_certificate_that_is_not_pem() {
        let f = fixture().await;
        std::fs::write(f.src("peer.crt"), "hello\n").unwrap();
        f.refused("tls.peer_cert", "not a PEM certificate").await;
        std::fs::write(f.src("ca.crt"), "hello\n").unwrap();
        f.refused("tls.ca_cert", "no PEM block").await;
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca() {
        let f = fixture().await;
        super::super::ca::init(
            &f.dir.path().join("other"),
            "other CA",
            Duration::from_secs(86400),
        )
        .unwrap();
        std::fs::copy(f.dir.path().join("other/ca.crt"), f.src("ca.crt")).unwrap();
        f.refused("tls.server_cert", "does not chain to tls.ca_cert")
            .await;
    }

    #[tokio::test]
    async fn a_certificate_without_this_members_address() {
        let mut f = fixture().await;
        f.id = Identity::new(&f.cfg, "etcd1", "10.0.0.9".parse().unwrap(), None, None);
        f.refused("tls.server_cert", "does not cover 10.0.0.9")
            .await;
    }

    #[tokio::test]
    async fn a_client_certificate_in_the_server_role() {
        let f = fixture().await;
        std::fs::copy(f.src("client.crt"), f.src("server.crt")).unwrap();
        std::fs::copy(f.src("client.key"), f.src("server.key")).unwrap();
        f.refused("tls.server_cert", "lacks the serverAuth").await;
    }

    #[tokio::test]
    async fn an_expired_certificate() {
        let f = fixture().await;
        let err = f
            .plan_at(time::OffsetDateTime::now_utc() + time::Duration::days(400))
            .await
            .err()
            .unwrap();
        assert_eq!(exit_code_for(&err), 2);
        assert!(format!("{err:#}").contains("expired"), "{err:#}");
    }

    #[tokio::test]
    async fn a_pin_that_does_not_match() {
        let mut f = fixture().await;
        f.cfg
            .tls
            .sha256_pins
            .insert("client.key".into(), "00".repeat(32));
        f.refused("tls.sha256_pins", "client.key has SHA-256").await;
        let real = crate::util::sha256::sha256_hex(&std::fs::read(f.src("client.key")).unwrap());
        f.cfg.tls.sha256_pins.insert("client.key".into(), real);
        f.plan().await.unwrap();
    }
}
