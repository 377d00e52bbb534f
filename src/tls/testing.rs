//! The fixture the tests of `plan`, `bundle` and `issuing` share: a local CA in a temporary
//! directory and a local-ca config issuing from it.

use super::{ca, Identity, TlsPlan};
use crate::config::Config;
use std::time::Duration;

pub(super) struct CaFixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) cfg: Config,
}

pub(super) fn fixture() -> CaFixture {
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
    CaFixture { dir, cfg }
}

pub(super) fn identity(cfg: &Config, ip: &str) -> Identity {
    Identity::new(
        cfg,
        "etcd1",
        ip.parse().unwrap(),
        Some("etcd1.lab.test"),
        Some("vm-1"),
    )
}

pub(super) fn changed(plan: &TlsPlan) -> Vec<String> {
    plan.changed()
        .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

pub(super) fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
