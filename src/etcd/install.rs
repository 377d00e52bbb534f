//! `etcd.download_url` + `etcd.sha256`: install etcd from its release tarball. The tarball is
//! verified before anything is unpacked; etcd, etcdctl and etcdutl are each written to a temporary
//! file and renamed into `etcd.install_dir`; a marker holding the checksum is written last, so an
//! install cut short is redone on the next run and a finished one is not repeated.

use crate::config::Config;
use crate::error::ConfigError;
use crate::util::fs;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Release tarballs are about 20 MB; this bounds a wrong URL.
const MAX_TARBALL: usize = 256 << 20;

/// The binaries a release carries (etcdutl only from 3.5 on).
const BINARIES: [&str; 3] = ["etcd", "etcdctl", "etcdutl"];

/// What `ensure` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    NotConfigured,
    AlreadyInstalled(String),
    Installed(Vec<PathBuf>),
}

fn marker(dir: &Path) -> PathBuf {
    dir.join(".etcd-release.sha256")
}

/// `3.5.30` from `.../etcd-v3.5.30-linux-amd64.tar.gz`.
pub(crate) fn version_in_url(url: &str) -> Option<String> {
    let name = url.rsplit('/').next()?;
    let rest = name.strip_prefix("etcd-v")?;
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (v.split('.').count() == 3 && v.split('.').all(|p| !p.is_empty())).then_some(v)
}

/// The version `etcd --version` reports.
fn installed_version(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .map(|v| v.trim().to_string())
}

/// Why the configured release is the one installed (None: it is not, or none is configured).
fn installed_why(cfg: &Config) -> Option<String> {
    let (Some(url), Some(sum)) = (&cfg.etcd.download_url, &cfg.etcd.sha256) else {
        return None;
    };
    let dir = &cfg.etcd.install_dir;
    let etcd = dir.join("etcd");
    if !etcd.is_file() {
        return None;
    }
    if std::fs::read_to_string(marker(dir)).is_ok_and(|m| m.split_whitespace().next() == Some(sum))
    {
        return Some(format!("{} matches etcd.sha256", marker(dir).display()));
    }
    match (version_in_url(url), installed_version(&etcd)) {
        (Some(want), Some(have)) if want == have => {
            Some(format!("{} is version {have}", etcd.display()))
        }
        _ => None,
    }
}

/// Whether `etcd.download_url` asks for another release than the one installed in
/// `etcd.install_dir` (which etcd may be running): installing it is the rollout's to do, one
/// member at a time.
pub(crate) fn another_release_configured(cfg: &Config) -> bool {
    cfg.etcd.download_url.is_some()
        && cfg.etcd.install_dir.join("etcd").is_file()
        && installed_why(cfg).is_none()
}

/// Install etcd when the configuration asks for it and it is not there yet. The binaries it
/// replaces are kept beside them (`etcd.previous`, ...) for `put_back_previous`.
pub(crate) async fn ensure(cfg: &Config) -> Result<Outcome> {
    let (Some(url), Some(sum)) = (&cfg.etcd.download_url, &cfg.etcd.sha256) else {
        return Ok(Outcome::NotConfigured);
    };
    let dir = &cfg.etcd.install_dir;
    if let Some(why) = installed_why(cfg) {
        return Ok(Outcome::AlreadyInstalled(why));
    }
    tracing::info!(%url, dir = %dir.display(), "installing etcd from its release tarball");
    let http = crate::util::http::client(cfg.tls.signer_ca.as_deref(), Duration::from_secs(300))?;
    let tarball = crate::util::http::get(&http, url, MAX_TARBALL)
        .await
        .context("downloading etcd (etcd.download_url)")?;
    let got = crate::util::sha256::sha256_hex(&tarball);
    if &got != sum {
        return Err(ConfigError::new(
            "etcd.sha256",
            url.clone(),
            format!("the download has SHA-256 {got}, not {sum}; nothing was installed (check the URL and the release's SHA256SUMS)"),
        )
        .into());
    }
    let installed = unpack(&tarball, dir).with_context(|| format!("unpacking {url}"))?;
    keep_previous(&marker(dir))?;
    fs::write_atomic(&marker(dir), format!("{sum} {url}\n").as_bytes(), 0o644)?;
    Ok(Outcome::Installed(installed))
}

fn previous(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".previous");
    path.with_file_name(name)
}

/// A second name for the file at `path` (`<path>.previous`, a hard link: the same bytes, no
/// copy), made before it is replaced.
fn keep_previous(path: &Path) -> Result<()> {
    let prev = previous(path);
    match std::fs::remove_file(&prev) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", prev.display())),
    }
    if path.exists() {
        std::fs::hard_link(path, &prev)
            .with_context(|| format!("keeping {} as {}", path.display(), prev.display()))?;
    }
    Ok(())
}

/// A rollback: the binaries (and the marker) the last install replaced back in place. False
/// when there was nothing to put back.
pub(crate) fn put_back_previous(cfg: &Config) -> Result<bool> {
    let dir = &cfg.etcd.install_dir;
    let mut any = false;
    for path in BINARIES.iter().map(|b| dir.join(b)).chain([marker(dir)]) {
        let prev = previous(&path);
        if prev.exists() {
            std::fs::rename(&prev, &path)
                .with_context(|| format!("putting {} back", prev.display()))?;
            any = true;
        }
    }
    Ok(any)
}

/// The rollout of this member's release is over: the previous binaries are not needed.
pub(crate) fn drop_previous(cfg: &Config) {
    for path in BINARIES
        .iter()
        .map(|b| cfg.etcd.install_dir.join(b))
        .chain([marker(&cfg.etcd.install_dir)])
    {
        let _ = std::fs::remove_file(previous(&path));
    }
}

/// Write the release's binaries into `dir`: all of them read and checked first, then each
/// renamed into place.
fn unpack(tarball: &[u8], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let mut found: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for entry in archive.entries().context("reading the tarball")? {
        let mut entry = entry.context("reading the tarball")?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().context("a path in the tarball")?.into_owned();
        // etcd-vX.Y.Z-linux-amd64/etcd: only files one level down are the binaries.
        if path.components().count() != 2 {
            continue;
        }
        let Some(name) = BINARIES
            .iter()
            .find(|b| path.file_name().is_some_and(|n| n == **b))
        else {
            continue;
        };
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .with_context(|| format!("reading {} from the tarball", path.display()))?;
        if !data.starts_with(b"\x7fELF") {
            bail!("{} in the tarball is not an executable", path.display());
        }
        found.push((name, data));
    }
    for required in ["etcd", "etcdctl"] {
        if !found.iter().any(|(n, _)| *n == required) {
            bail!("the tarball has no {required} binary (expected etcd-vX.Y.Z-linux-amd64/{required})");
        }
    }
    let mut out = Vec::new();
    for (name, data) in found {
        let path = dir.join(name);
        keep_previous(&path)?;
        fs::write_atomic(&path, &data, 0o755)
            .with_context(|| format!("installing {}", path.display()))?;
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_release_urls() {
        assert_eq!(
            version_in_url("https://x.test/v3.5.30/etcd-v3.5.30-linux-amd64.tar.gz").as_deref(),
            Some("3.5.30")
        );
        assert_eq!(version_in_url("https://x.test/etcd.tar.gz"), None);
        assert_eq!(
            version_in_url("https://x.test/etcd-v3.5-linux.tar.gz"),
            None
        );
    }

    fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn unpacks_the_binaries_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let elf: &[u8] = b"\x7fELF fake";
        let t = tarball(&[
            ("etcd-v3.5.30-linux-amd64/etcd", elf),
            ("etcd-v3.5.30-linux-amd64/etcdctl", elf),
            ("etcd-v3.5.30-linux-amd64/etcdutl", elf),
            ("etcd-v3.5.30-linux-amd64/README.md", b"hi"),
            ("etcd-v3.5.30-linux-amd64/Documentation/etcd", elf),
        ]);
        let out = unpack(&t, dir.path()).unwrap();
        assert_eq!(out.len(), 3);
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["etcd", "etcdctl", "etcdutl"]);
    }

    #[test]
    fn a_tarball_without_etcd_installs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = tarball(&[("etcd-v3.5.30-linux-amd64/etcdctl", b"\x7fELF")]);
        let e = unpack(&t, dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("no etcd binary"), "{e:#}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(unpack(b"not a tarball", dir.path()).is_err());
    }
}
