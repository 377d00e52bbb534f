//! The unprivileged user etcd runs as (`etcd.user`): found in `/etc/passwd`, created when missing,
//! and handed what etcd writes or reads with its own rights (its data dir, its server and peer
//! keys) right before every start. etcd needs no privilege: its ports are above 1024, it reads
//! its certificates at every handshake and writes only under its data dir.
//!
//! `/etc/passwd` is read directly rather than through NSS: the binary is static, and a system
//! user made by `useradd --system` is always a line of that file.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PASSWD: &str = "/etc/passwd";

/// Who etcd runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EtcdUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl EtcdUser {
    pub(crate) fn ids(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }
}

/// `name`'s entry in a passwd file's text.
fn parse(passwd: &str, name: &str) -> Option<EtcdUser> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some(EtcdUser {
            name: name.to_string(),
            uid,
            gid,
        })
    })
}

/// `name` as `/etc/passwd` has it, or None when there is no such user yet.
pub(crate) fn lookup(name: &str) -> Result<Option<EtcdUser>> {
    let text = std::fs::read_to_string(PASSWD).with_context(|| format!("reading {PASSWD}"))?;
    Ok(parse(&text, name))
}

/// `name`, created as a system user (its own group, no login, no home made) when it is missing.
pub(crate) fn ensure(name: &str, home: &Path) -> Result<EtcdUser> {
    if let Some(user) = lookup(name)? {
        return Ok(user);
    }
    tracing::info!(
        user = name,
        "etcd.user does not exist yet; creating it as a system user"
    );
    let mut cmd = std::process::Command::new("useradd");
    cmd.args(["--system", "--user-group", "--no-create-home", "--shell"])
        .arg(nologin())
        .arg("--home-dir")
        .arg(home)
        .args(["--comment", "etcd (etcd-bootstrap)", name])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null());
    let out = crate::util::process::output_within(&mut cmd, Duration::from_secs(60))
        .with_context(|| {
            format!("creating the user etcd runs as (etcd.user = {name:?}) with useradd; create it in the image, or set etcd.user")
        })?;
    if !out.status.success() {
        // Another process made it meanwhile (useradd exits 9: "already exists"): it is there.
        if let Some(user) = lookup(name)? {
            return Ok(user);
        }
        bail!(
            "useradd {name} failed ({}): {}; create the user in the image, or set etcd.user",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    lookup(name)?.with_context(|| format!("useradd {name} succeeded but {PASSWD} has no {name}"))
}

/// The agent's own user, for etcd run without a user of its own.
pub(crate) fn agent() -> EtcdUser {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    EtcdUser {
        name: "the agent's user".into(),
        uid,
        gid,
    }
}

/// The user `cfg` runs etcd as, created when missing; None when etcd runs as the agent's user.
pub(crate) fn of_config(cfg: &crate::config::Config) -> Result<Option<EtcdUser>> {
    cfg.etcd
        .runs_as()
        .map(|name| ensure(name, &cfg.member.data_dir))
        .transpose()
}

fn nologin() -> &'static str {
    ["/usr/sbin/nologin", "/sbin/nologin"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/bin/false")
}

/// What etcd must own or reach before it starts as `user`: its data dir (created 0700 when
/// missing: etcd could not create it under a directory only root may write), everything in it
/// (a snapshot restore, a moved-back copy or an earlier etcd run as root leaves root's files),
/// its server and peer keys (0600, etcd reads them at every handshake), and a way into `tls_dir`.
/// Idempotent: only what is not already right is changed.
pub(crate) fn hand_over(user: &EtcdUser, data_dir: &Path, tls_dir: &Path) -> Result<()> {
    crate::util::fs::ensure_dir(data_dir, 0o700)?;
    if user.uid != agent().uid {
        for (key, dir) in [("member.data_dir", data_dir), ("tls.dir", tls_dir)] {
            open_ancestors(user, dir)?;
            if let Some(closed) = closed_ancestor(user, dir) {
                bail!(
                    "config key `{key}`: etcd runs as {} (etcd.user), which cannot enter {} on the way to {}: let it through (chmod o+x {}), move {key}, or set etcd.user = \"root\"",
                    user.name,
                    closed.display(),
                    dir.display(),
                    closed.display()
                );
            }
        }
    }
    let changed = chown_tree(data_dir, user)?;
    let meta = std::fs::metadata(data_dir)?;
    if meta.permissions().mode() & 0o7777 != 0o700 {
        // etcd refuses a data dir others can read (3.5 warns, then fails to start on 0755).
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode 0700 on {}", data_dir.display()))?;
    }
    if changed > 0 {
        tracing::info!(user = %user.name, files = changed, data_dir = %data_dir.display(), "gave etcd's data dir to the user etcd runs as");
    }
    let paths = crate::model::tls::TlsPaths::new(tls_dir);
    for key in [&paths.server_key, &paths.peer_key] {
        match std::fs::symlink_metadata(key) {
            Ok(m) if m.uid() != user.uid || m.gid() != user.gid => {
                std::os::unix::fs::lchown(key, Some(user.uid), Some(user.gid))
                    .with_context(|| format!("giving {} to {}", key.display(), user.name))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", key.display())),
        }
    }
    // The TLS directory holds root's keys too (the client key, a CA key): the etcd group may
    // enter it, nobody else gains anything.
    if user.uid == agent().uid {
        return Ok(());
    }
    if let Ok(m) = std::fs::metadata(tls_dir) {
        let mode = m.permissions().mode() & 0o7777;
        if mode & 0o001 == 0 && !(m.gid() == user.gid && mode & 0o010 != 0) {
            std::os::unix::fs::chown(tls_dir, None, Some(user.gid))
                .with_context(|| format!("giving {} to group {}", tls_dir.display(), user.name))?;
            std::fs::set_permissions(tls_dir, std::fs::Permissions::from_mode(mode | 0o050))
                .with_context(|| format!("letting {} into {}", user.name, tls_dir.display()))?;
        }
    }
    Ok(())
}

/// Let `user` through the directories above `path` that the agent's own user owns and closed
/// to others: search permission for others (`o+x`: pass through, never list). An older agent
/// made `/etc/etcd` 0700 under its unit's `UMask=0077`. Home directories are never opened, nor
/// what another user owns (`closed_ancestor` then names it).
fn open_ancestors(user: &EtcdUser, path: &Path) -> Result<()> {
    let me = agent().uid;
    for dir in path.ancestors().skip(1) {
        if dir == Path::new("/root") || dir.starts_with("/home") {
            continue;
        }
        let Ok(m) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = m.permissions().mode() & 0o7777;
        if m.uid() == me && mode & 0o001 == 0 && cannot_enter(user, &m) {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
                .with_context(|| format!("letting {} through {}", user.name, dir.display()))?;
            tracing::warn!(dir = %dir.display(), user = %user.name, "etcd's user could not pass through this directory; gave others search permission (o+x: pass, not list)");
        }
    }
    Ok(())
}

/// Whether `user` may not enter a directory with metadata `m`.
fn cannot_enter(user: &EtcdUser, m: &std::fs::Metadata) -> bool {
    let mode = m.permissions().mode();
    let searchable = if m.uid() == user.uid {
        mode & 0o100 != 0
    } else if m.gid() == user.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    };
    !searchable
}

/// The first directory above `path` that `user` may not enter (no search permission for it as
/// owner, group or other); supplementary groups are not counted, as etcd runs without them.
fn closed_ancestor(user: &EtcdUser, path: &Path) -> Option<PathBuf> {
    path.ancestors().skip(1).find_map(|dir| {
        let m = std::fs::metadata(dir).ok()?;
        cannot_enter(user, &m).then(|| dir.to_path_buf())
    })
}

/// lchown every entry under `root` (itself included) that `user` does not own, without following
/// a symlink; the number changed.
fn chown_tree(root: &Path, user: &EtcdUser) -> Result<usize> {
    let mut changed = 0;
    let mut todo: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let m = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if m.uid() != user.uid || m.gid() != user.gid {
            std::os::unix::fs::lchown(&path, Some(user.uid), Some(user.gid))
                .with_context(|| format!("giving {} to {}", path.display(), user.name))?;
            changed += 1;
        }
        if m.is_dir() {
            for entry in
                std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))?
            {
                todo.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_user_by_its_whole_name() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      etcdx:x:990:990::/nonexistent:/usr/sbin/nologin\n\
                      broken:x:abc:1::/:/bin/false\n\
                      etcd:x:998:997:etcd:/var/lib/etcd:/usr/sbin/nologin\n";
        assert_eq!(
            parse(passwd, "etcd"),
            Some(EtcdUser {
                name: "etcd".into(),
                uid: 998,
                gid: 997
            })
        );
        assert_eq!(parse(passwd, "etc"), None);
        assert_eq!(parse(passwd, "broken"), None);
        assert_eq!(parse(passwd, "nobody"), None);
    }

    /// Run as root (the agent is): the tree, the keys and the TLS directory are handed over, a
    /// symlink is changed itself, never what it points at, and a second run changes nothing.
    #[test]
    fn hands_over_the_data_dir_and_keys() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let tls = dir.path().join("pki");
        std::fs::create_dir_all(data.join("member/wal")).unwrap();
        std::fs::write(data.join("member/wal/0.wal"), b"x").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"root's").unwrap();
        std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o700)).unwrap();
        for f in ["server.key", "peer.key", "client.key"] {
            std::fs::write(tls.join(f), b"k").unwrap();
        }
        let user = EtcdUser {
            name: "test".into(),
            uid: 4242,
            gid: 4343,
        };
        // A directory another user owns and keeps closed: etcd could never reach its data dir
        // in it, and it is not the agent's to open.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(5555), Some(5555)).unwrap();
        let e = hand_over(&user, &data, &tls).unwrap_err().to_string();
        assert!(
            e.contains("member.data_dir") && e.contains("cannot enter"),
            "{e}"
        );
        let wal = std::fs::metadata(data.join("member/wal/0.wal")).unwrap();
        assert_eq!(wal.uid(), 0, "changed before refusing");
        // The agent's own (an older agent made /etc/etcd 0700): opened for passing through.
        std::os::unix::fs::chown(dir.path(), Some(0), Some(0)).unwrap();
        hand_over(&user, &data, &tls).unwrap();
        let opened = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(opened, 0o701);
        for p in [&data, &data.join("member/wal/0.wal"), &data.join("link")] {
            let m = std::fs::symlink_metadata(p).unwrap();
            assert_eq!((m.uid(), m.gid()), (4242, 4343), "{}", p.display());
        }
        assert_eq!(std::fs::metadata(&outside).unwrap().uid(), 0);
        assert_eq!(
            std::fs::metadata(tls.join("server.key")).unwrap().uid(),
            4242
        );
        assert_eq!(std::fs::metadata(tls.join("peer.key")).unwrap().uid(), 4242);
        assert_eq!(std::fs::metadata(tls.join("client.key")).unwrap().uid(), 0);
        let t = std::fs::metadata(&tls).unwrap();
        assert_eq!(
            (t.uid(), t.gid(), t.permissions().mode() & 0o777),
            (0, 4343, 0o750)
        );
        assert_eq!(chown_tree(&data, &user).unwrap(), 0);
        // A data dir that is not there yet is made, private and the user's.
        let fresh = dir.path().join("fresh");
        hand_over(&user, &fresh, &tls).unwrap();
        let m = std::fs::metadata(&fresh).unwrap();
        assert_eq!((m.uid(), m.permissions().mode() & 0o777), (4242, 0o700));
    }
}
