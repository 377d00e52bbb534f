//! `ca.crt`: the current CA and, during `tls.ca_overlap` after a CA change, the previous one.

use super::inspect;
use crate::util::fs;
use std::path::Path;
use std::time::Duration;

/// The content `ca.crt` should have.
pub(super) struct Bundle {
    pub(super) content: String,
    pub(super) change: Option<String>,
    pub(super) ca_changed: bool,
}

/// `ca.crt` holds the current CA and, for `tls.ca_overlap` after a change, the previous one: a
/// member that already switched keeps trusting peers and clients whose certificates the old CA
/// signed until they have switched too.
pub(super) fn ca_bundle(
    current: &str,
    path: &Path,
    overlap: Duration,
    now: time::OffsetDateTime,
) -> Bundle {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::testing::{changed, fixture, identity, now};
    use crate::tls::{ca, source};

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
}
