//! The data dir is never deleted: a removed member's or an interrupted start's data is moved aside
//! to `<data_dir>.removed-<UTC timestamp>`, and only the newest few of those are kept.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub const KEEP: usize = 3;

/// Written by `leave` before the member is removed: the node was decommissioned on purpose, so
/// neither `run` nor the heal loop may add it back.
pub fn left_marker(data_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.left", data_dir.display()))
}

fn timestamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Move `data_dir` aside (if it exists) and prune older copies beyond `KEEP`.
pub fn move_aside(data_dir: &Path) -> Result<Option<PathBuf>> {
    if !data_dir.exists() {
        return Ok(None);
    }
    let mut target = PathBuf::from(format!("{}.removed-{}", data_dir.display(), timestamp()));
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!(
            "{}.removed-{}-{n}",
            data_dir.display(),
            timestamp()
        ));
        n += 1;
    }
    std::fs::rename(data_dir, &target)
        .with_context(|| format!("moving {} to {}", data_dir.display(), target.display()))?;
    tracing::warn!(from = %data_dir.display(), to = %target.display(), "data dir moved aside");
    prune(data_dir)?;
    Ok(Some(target))
}

fn prune(data_dir: &Path) -> Result<()> {
    let parent = data_dir.parent().unwrap_or(Path::new("/"));
    let prefix = format!(
        "{}.removed-",
        data_dir
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let mut old: Vec<PathBuf> = std::fs::read_dir(parent)
        .with_context(|| format!("listing {}", parent.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    old.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    while old.len() > KEEP {
        let p = old.remove(0);
        tracing::info!(path = %p.display(), "pruning an old moved-aside data dir (keeping the newest {KEEP})");
        std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_aside_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("etcd");
        for i in 0..5 {
            std::fs::create_dir_all(data.join("member/wal")).unwrap();
            std::fs::write(data.join("marker"), i.to_string()).unwrap();
            let moved = move_aside(&data).unwrap().unwrap();
            assert!(!data.exists());
            assert_eq!(
                std::fs::read_to_string(moved.join("marker")).unwrap(),
                i.to_string()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), KEEP);
        assert!(move_aside(&data).unwrap().is_none());
    }
}
