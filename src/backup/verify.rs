//! `snapshot verify`: download a snapshot, check the SHA-256 of the stored bytes against its
//! manifest, decrypt it, check etcd's own SHA-256 trailer, and restore it into a scratch data dir
//! with etcd's own tool (`etcdutl` from 3.5, `etcdctl` in 3.4): the revision and key count it
//! reports are printed. Files on disk, streamed: memory stays flat.

use super::catalog::Entry;
use super::store::Store;
use anyhow::{bail, Context, Result};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use ring::digest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, serde::Serialize)]
pub(crate) struct VerifyReport {
    pub id: String,
    pub revision: i64,
    pub total_keys: u64,
    pub etcd_hash: u64,
    pub restored_with: String,
}

/// Download `entry` into `scratch`, check it, and restore it there.
pub(crate) async fn verify(
    store: &Store,
    entry: &Entry,
    identity_file: Option<&Path>,
    etcd_binary: &Path,
    scratch: &Path,
) -> Result<VerifyReport> {
    let plain = fetch(store, entry, identity_file, scratch)
        .await
        .map_err(FetchError::into_anyhow)?;
    restore(&plain, etcd_binary, scratch, &entry.manifest.id)
}

/// A new file in a scratch dir: created exclusively (never through a symlink, never over a
/// file that is there), 0600.
fn create_new(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .context("a path with a NUL byte")?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statvfs {}", dir.display()));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// `verify` in `scratch`, removed afterwards whatever the outcome.
pub(crate) async fn verify_then_remove(
    store: &Store,
    entry: &Entry,
    identity_file: Option<&Path>,
    etcd_binary: &Path,
    scratch: &Path,
) -> Result<VerifyReport> {
    let result = verify(store, entry, identity_file, etcd_binary, scratch).await;
    let _ = std::fs::remove_dir_all(scratch);
    result
}

/// Why a snapshot could not be made ready: its bytes are wrong (every node would find the same,
/// so it is skipped) or getting them failed (worth another try).
#[derive(Debug)]
pub(crate) enum FetchError {
    Integrity(String),
    Failed(anyhow::Error),
}

impl FetchError {
    pub(crate) fn into_anyhow(self) -> anyhow::Error {
        match self {
            FetchError::Integrity(m) => anyhow::anyhow!(m),
            FetchError::Failed(e) => e,
        }
    }
}

impl From<anyhow::Error> for FetchError {
    fn from(e: anyhow::Error) -> Self {
        FetchError::Failed(e)
    }
}

impl From<std::io::Error> for FetchError {
    fn from(e: std::io::Error) -> Self {
        FetchError::Failed(e.into())
    }
}

/// Download `entry` into `scratch`, check the stored bytes against the manifest, decrypt them,
/// and check etcd's trailer: the path of the plain database, ready for `snapshot restore`.
pub(crate) async fn fetch(
    store: &Store,
    entry: &Entry,
    identity_file: Option<&Path>,
    scratch: &Path,
) -> Result<PathBuf, FetchError> {
    let m = &entry.manifest;
    // The names come from a signed manifest that passed `Manifest::check`; the files here are
    // named by this code alone all the same.
    super::manifest::parse_id(&m.id).map_err(FetchError::Integrity)?;
    // The download, the decrypted copy and etcd's restore of it, with room to spare: checked
    // before anything is written, so that a snapshot never fills the file system it lands on.
    let need = m.size.saturating_add(m.db_size.saturating_mul(2));
    let free = free_bytes(scratch)?;
    if free < need {
        return Err(FetchError::Failed(anyhow::anyhow!(
            "{}: {} needs about {need} bytes free for this snapshot but has {free}; free some space there",
            m.id,
            scratch.display()
        )));
    }
    let stored = scratch.join("snapshot.stored");
    let mut file = create_new(&stored)?;
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut size = 0u64;
    let mut body = store
        .inner
        .get(&store.path(&m.object))
        .await
        .with_context(|| format!("downloading {}", m.object))?
        .into_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("downloading {}", m.object))?;
        // Never more than the signed size: a larger object is stopped here, not stored.
        if size + chunk.len() as u64 > m.size {
            drop(file);
            let _ = std::fs::remove_file(&stored);
            return Err(FetchError::Integrity(format!(
                "{}: the stored object is larger than the {} bytes its signed manifest gives; download stopped",
                m.id, m.size
            )));
        }
        hash.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    let got = crate::util::hex::hex(hash.finish().as_ref());
    if got != m.sha256 || size != m.size {
        return Err(FetchError::Integrity(format!(
            "{}: the stored bytes do not match the manifest (sha256 {got}, {size} bytes; the manifest says {}, {} bytes)",
            m.id, m.sha256, m.size
        )));
    }
    let plain = scratch.join("snapshot.db");
    if m.encrypted {
        let identity_file = identity_file
            .context("the snapshot is encrypted: set backup.age_identity_file to decrypt it")?;
        decrypt(&stored, &plain, identity_file)
            .map_err(|e| FetchError::Integrity(format!("{}: {e:#}", m.id)))?;
        std::fs::remove_file(&stored)?;
    } else {
        std::fs::rename(&stored, &plain)?;
    }
    check_trailer(&plain, &m.etcd_sha256)
        .map_err(|e| FetchError::Integrity(format!("{}: {e:#}", m.id)))?;
    Ok(plain)
}

fn decrypt(from: &Path, to: &Path, identity_file: &Path) -> Result<()> {
    let identities = age::IdentityFile::from_file(identity_file.display().to_string())
        .with_context(|| format!("reading {}", identity_file.display()))?
        .into_identities()
        .with_context(|| format!("{} holds no usable identity", identity_file.display()))?;
    let input = std::io::BufReader::new(std::fs::File::open(from)?);
    let decryptor = age::Decryptor::new_buffered(input).context("not an age file")?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .context("decrypting (is backup.age_identity_file the key of one of the recipients?)")?;
    let mut out = create_new(to)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).context("decrypting")?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    out.sync_all()?;
    Ok(())
}

/// etcd's snapshot stream ends with the SHA-256 of everything before it.
fn check_trailer(path: &Path, want: &str) -> Result<()> {
    let len = std::fs::metadata(path)?.len();
    if len < 32 || len % 512 != 32 {
        bail!(
            "{}: {len} bytes is not an etcd snapshot with its checksum",
            path.display()
        );
    }
    let mut f = std::fs::File::open(path)?;
    let mut hash = digest::Context::new(&digest::SHA256);
    let mut left = len - 32;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            bail!("{}: short read", path.display());
        }
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; 32];
    f.read_exact(&mut trailer)?;
    let got = hash.finish();
    if got.as_ref() != trailer || crate::util::hex::hex(&trailer) != want {
        bail!(
            "{}: etcd's SHA-256 trailer does not match the database",
            path.display()
        );
    }
    Ok(())
}

/// etcd's own snapshot tool beside etcd: `etcdutl` (3.5+) or `etcdctl` (3.4, which restores
/// but cannot move the revision forward).
pub(crate) struct SnapshotTool {
    pub path: PathBuf,
    env: Vec<(&'static str, &'static str)>,
}

impl SnapshotTool {
    pub(crate) fn beside(etcd_binary: &Path) -> Result<SnapshotTool> {
        let dir = etcd_binary.parent().unwrap_or(Path::new("/usr/bin"));
        if dir.join("etcdutl").is_file() {
            Ok(SnapshotTool {
                path: dir.join("etcdutl"),
                env: vec![],
            })
        } else if dir.join("etcdctl").is_file() {
            Ok(SnapshotTool {
                path: dir.join("etcdctl"),
                env: vec![("ETCDCTL_API", "3")],
            })
        } else {
            bail!(
                "neither etcdutl nor etcdctl is beside {}",
                etcd_binary.display()
            )
        }
    }

    /// Run it with `args`; its standard output.
    pub(crate) fn run(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new(&self.path)
            .args(args)
            .envs(self.env.iter().copied())
            .output()
            .with_context(|| format!("running {}", self.path.display()))?;
        if !out.status.success() {
            bail!(
                "{} {}: {}",
                self.path.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// `snapshot status` of a database file: (revision, total keys, hash).
    pub(crate) fn status(&self, db: &Path) -> Result<(i64, u64, u64)> {
        let status = self.run(&[
            "snapshot",
            "status",
            &db.display().to_string(),
            "-w",
            "json",
        ])?;
        let v: serde_json::Value = serde_json::from_str(status.trim())
            .with_context(|| format!("reading `snapshot status`: {status}"))?;
        Ok((
            v["revision"].as_i64().unwrap_or_default(),
            v["totalKey"].as_u64().unwrap_or_default(),
            v["hash"].as_u64().unwrap_or_default(),
        ))
    }
}

/// Restore into a scratch data dir, then read the snapshot's revision and key count.
fn restore(db: &Path, etcd_binary: &Path, scratch: &Path, id: &str) -> Result<VerifyReport> {
    let tool = SnapshotTool::beside(etcd_binary)?;
    let data = scratch.join("restored");
    let db_arg = db.display().to_string();
    let data_arg = data.display().to_string();
    tool.run(&["snapshot", "restore", &db_arg, "--data-dir", &data_arg])?;
    let (revision, total_keys, etcd_hash) = tool.status(db)?;
    Ok(VerifyReport {
        id: id.to_string(),
        revision,
        total_keys,
        etcd_hash,
        restored_with: tool.path.display().to_string(),
    })
}
