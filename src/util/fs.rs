//! Atomic, change-only file writes: a reboot or kill at any instant leaves either the old file or
//! the new one, never half of one, and an unchanged file is not touched (so a re-run is a no-op).
//! Also bounded reads of files that are small by nature (config fragments, PEM files).

use anyhow::{Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The most a certificate, key or CA bundle file may hold: a system root bundle is ~250 KiB.
pub(crate) const PEM_LIMIT: u64 = 1 << 20;

/// Read `path` whole unless it holds more than `limit` bytes: a wrong path (`/dev/zero`, a log
/// file, a disk image) must fail at once instead of being read into memory.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes; is this the right file?"),
        ));
    }
    Ok(data)
}

/// `read_bounded` of a text file (UTF-8).
pub(crate) fn read_bounded_text(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "not a text (UTF-8) file")
    })
}

/// A PEM file (certificate, key, CA bundle), at most `PEM_LIMIT` bytes.
pub(crate) fn read_pem(path: &Path) -> std::io::Result<String> {
    read_bounded_text(path, PEM_LIMIT)
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Created,
    Updated,
    Unchanged,
}

impl Written {
    pub(crate) fn changed(self) -> bool {
        self != Written::Unchanged
    }
}

/// Write `content` to `path` with `mode` via a temporary file, fsync and rename, creating parent
/// directories (0755, or 0700 when the file is private). Does nothing when the content and mode are
/// already what is asked for.
pub(crate) fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<Written> {
    write_atomic_owned(path, content, mode, None)
}

/// `write_atomic`, the file owned by `owner` (uid, gid) from the moment it appears under its
/// name: a key another user's process reads at every handshake is never, even for a moment,
/// one that process may not read. `None`: owned by this process, as created.
pub(crate) fn write_atomic_owned(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<Written> {
    use std::os::unix::fs::MetadataExt;
    let existed = match fs::read(path) {
        Ok(old) => {
            let meta = fs::metadata(path)
                .with_context(|| format!("reading metadata of {}", path.display()))?;
            let old_mode = meta.permissions().mode() & 0o7777;
            let owned = owner.is_none_or(|(uid, gid)| meta.uid() == uid && meta.gid() == gid);
            if old == content && old_mode == mode && owned {
                return Ok(Written::Unchanged);
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_dir(dir, if mode & 0o077 == 0 { 0o700 } else { 0o755 })?;
    let file_name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy();
    let (tmp, mut f) = create_temp(dir, &file_name, mode)?;
    let result = (|| -> Result<()> {
        // The umask may have narrowed the mode given to open(2); set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode of {}", tmp.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to uid {uid} gid {gid}", tmp.display()))?;
        }
        f.write_all(content)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    Ok(if existed {
        Written::Updated
    } else {
        Written::Created
    })
}

/// A new temporary file beside the target: under a name nobody can guess (16 random bytes), opened
/// with O_EXCL and O_NOFOLLOW, so that a file or symlink planted in the directory beforehand is
/// never written through (a predictable `.name.tmp-<pid>` opened with O_TRUNC would follow a
/// symlink to any file and truncate it).
fn create_temp(dir: &Path, file_name: &str, mode: u32) -> Result<(PathBuf, fs::File)> {
    let mut last = None;
    for _ in 0..4 {
        let tmp = dir.join(temp_name(file_name));
        match open_exclusive(&tmp, mode) {
            Ok(f) => return Ok((tmp, f)),
            // Only a name already taken is worth another draw.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e).with_context(|| format!("creating {}", tmp.display())),
        }
    }
    Err(last.expect("the loop ran"))
        .with_context(|| format!("creating a temporary file in {}", dir.display()))
}

/// Create `path`, failing if anything (a file, a directory, a symlink, dangling or not) is there.
fn open_exclusive(path: &Path, mode: u32) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(path)
}

/// `.<file_name>.tmp-<32 hex digits from the system RNG>`.
fn temp_name(file_name: &str) -> String {
    format!(".{file_name}.tmp-{}", crate::util::hex::random_hex())
}

/// Create `dir` if missing with `mode`, and its missing parents with 0755, as `mkdir -p` makes
/// them under the usual umask: the agent's unit sets `UMask=0077`, under which a parent such as
/// `/etc/etcd` (made on the way to `tls.dir`) would be 0700 and close everything below it to
/// etcd's own user.
pub(crate) fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent, 0o755)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Made meanwhile by someone else: theirs, mode included.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("creating directory {}", dir.display())),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", dir.display()))?;
    Ok(())
}

/// Whether writing at `path` (or at its nearest existing ancestor, where it would be created)
/// fails because the file system is mounted read-only for this process: a systemd sandbox
/// (`ProtectSystem=strict` without a `ReadWritePaths=` for it) looks exactly like that.
pub(crate) fn read_only_here(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Some(existing) = path.ancestors().find(|p| p.exists()) else {
        return false;
    };
    let Ok(c) = std::ffi::CString::new(existing.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::access(c.as_ptr(), libc::W_OK) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EROFS)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// A scratch dir of its own (snapshot verify, restore checks, the trial start of a new etcd), made under the system's temporary directory with a
/// random name (`<prefix>-<random>`: nothing read from the store goes into it), mode 0700,
/// created exclusively: an existing directory or a symlink planted at that name is an error,
/// never followed or reused.
pub(crate) fn temp_scratch(prefix: &str) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let scratch = std::env::temp_dir().join(format!("{prefix}-{}", super::hex::random_hex()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&scratch)
        .with_context(|| format!("creating the scratch directory {}", scratch.display()))?;
    Ok(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parents are 0755 whatever the umask (the agent runs with 0077), the leaf gets its mode.
    #[test]
    fn made_parents_stay_open_under_a_strict_umask() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = dir.path().join("etc/etcd/pki");
        // SAFETY: umask only changes this process's file-creation mask; restored below.
        let old = unsafe { libc::umask(0o077) };
        let made = ensure_dir(&leaf, 0o700);
        unsafe { libc::umask(old) };
        made.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("etc")), 0o755);
        assert_eq!(mode(&dir.path().join("etc/etcd")), 0o755);
        assert_eq!(mode(&leaf), 0o700);
        ensure_dir(&leaf, 0o755).unwrap();
        assert_eq!(mode(&leaf), 0o700, "an existing directory keeps its mode");
    }

    #[test]
    fn writes_once_then_reports_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/key.pem");
        assert_eq!(write_atomic(&p, b"a", 0o600).unwrap(), Written::Created);
        assert_eq!(write_atomic(&p, b"a", 0o600).unwrap(), Written::Unchanged);
        assert_eq!(write_atomic(&p, b"b", 0o600).unwrap(), Written::Updated);
        assert_eq!(fs::read(&p).unwrap(), b"b");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        // A mode change alone is a change.
        assert_eq!(write_atomic(&p, b"b", 0o644).unwrap(), Written::Updated);
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    /// A file or symlink planted where a temporary file is created is never opened, written or
    /// truncated through; temporary names cannot be guessed.
    #[test]
    fn temporary_files_are_new_files_under_unguessable_names() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("planted-link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let dangling = dir.path().join("planted-dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        for planted in [&link, &victim, &dangling] {
            let e = open_exclusive(planted, 0o600).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{planted:?}");
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!dir.path().join("nowhere").exists());

        let (a, b) = (temp_name("etcd.env"), temp_name("etcd.env"));
        assert_ne!(a, b);
        assert!(a.starts_with(".etcd.env.tmp-"), "{a}");
        assert_eq!(a.len(), ".etcd.env.tmp-".len() + 32, "{a}");
    }

    #[test]
    fn bounded_reads_refuse_what_is_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), b"12345");
        let e = read_bounded(&p, 4).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than 4 bytes"), "{e}");
        // An endless device stops at the limit instead of filling memory.
        let e = read_pem(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(read_bounded_text(&p, 10).is_err());
    }
}
