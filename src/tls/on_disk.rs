//! The certificates this configuration keeps, as they are on disk, judged from the files alone:
//! whether one is due before etcd starts (`due_on_disk`), and what `status` and `doctor` show.

use super::{inspect, CertInfo, CertKind};
use crate::config::{Config, TlsMode};
use crate::model::tls::{CertFacts, TlsPaths};
use crate::util::fs;
use std::path::PathBuf;

/// Why the certificates on disk need renewing before etcd starts from them, judged from the files
/// alone (no CA or signer is asked): a certificate missing, unreadable, expired or, where this node
/// can issue, due for renewal.
pub(crate) fn due_on_disk(cfg: &Config, now: time::OffsetDateTime) -> Option<String> {
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
pub(crate) fn cert_files(cfg: &Config) -> Vec<(String, PathBuf)> {
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
pub(crate) fn describe(cfg: &Config) -> Vec<(String, Result<CertInfo, String>)> {
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
pub(crate) struct OnDisk {
    /// `server.crt`, ...
    pub file: String,
    /// `None` for `ca.crt`.
    pub kind: Option<CertKind>,
    pub facts: Result<CertFacts, String>,
}

pub(crate) fn on_disk(cfg: &Config) -> Vec<OnDisk> {
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
            OnDisk { file, kind, facts }
        })
        .collect()
}
