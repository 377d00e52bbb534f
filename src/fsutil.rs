//! Atomic, change-only file writes: a reboot or kill at any instant leaves either the old file or
//! the new one, never half of one, and an unchanged file is not touched (so a re-run is a no-op).

use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Updated,
    Unchanged,
}

impl Written {
    pub fn changed(self) -> bool {
        self != Written::Unchanged
    }
}

/// Write `content` to `path` with `mode` via a temporary file, fsync and rename, creating parent
/// directories (0755, or 0700 when the file is private). Does nothing when the content and mode are
/// already what is asked for.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<Written> {
    let existed = match fs::read(path) {
        Ok(old) => {
            let old_mode = fs::metadata(path)
                .with_context(|| format!("reading metadata of {}", path.display()))?
                .permissions()
                .mode()
                & 0o7777;
            if old == content && old_mode == mode {
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
    let tmp = dir.join(format!(".{}.tmp-{}", file_name, std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // The umask may have narrowed the mode given to open(2); set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode of {}", tmp.display()))?;
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

/// Create `dir` (and parents) if missing; a newly created leaf gets `mode`.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", dir.display()))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
