//! A trial start of the etcd a rollout is about to run, before any member is touched: the new
//! binary with this member's rendered settings (its `[etcd.flags]` and the flags chosen for its
//! release), but a scratch data dir, plain http on loopback ports and a one-member cluster of its
//! own. A binary that does not run here, or that refuses a flag, never replaces a member's etcd.

use crate::etcd::render::EtcdSpec;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Variables (`ETCD_` and then one of these) that tie etcd to this member, its data, its network
/// or its certificates: the trial sets its own (or none) instead. So do those that end in `_URLS`.
const MEMBER_BOUND: &[&str] = &[
    "NAME",
    "DATA_DIR",
    "WAL_DIR",
    "INITIAL_",
    "PEER_",
    "AUTO_TLS",
    "DISCOVERY",
    "CLIENT_CERT_AUTH",
    "CERT_FILE",
    "KEY_FILE",
    "TRUSTED_CA_FILE",
];

/// The trial's data dir, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        Ok(Scratch(crate::util::fs::temp_scratch(
            "etcd-bootstrap-trial",
        )?))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (bound, read, released: etcd binds it a moment later).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// The environment of the trial: `spec`'s variables that are not member-bound, and loopback.
pub(crate) fn trial_env(
    spec: &EtcdSpec,
    dir: &Path,
    client: u16,
    peer: u16,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .vars
        .iter()
        .filter(|(k, _)| {
            let name = k.trim_start_matches("ETCD_");
            !(MEMBER_BOUND.iter().any(|b| name.starts_with(b)) || name.ends_with("_URLS"))
        })
        .cloned()
        .collect();
    let c = format!("http://127.0.0.1:{client}");
    let p = format!("http://127.0.0.1:{peer}");
    for (k, v) in [
        ("ETCD_NAME", "trial".to_string()),
        ("ETCD_DATA_DIR", dir.join("data").display().to_string()),
        ("ETCD_LISTEN_CLIENT_URLS", c.clone()),
        ("ETCD_ADVERTISE_CLIENT_URLS", c),
        ("ETCD_LISTEN_PEER_URLS", p.clone()),
        ("ETCD_INITIAL_ADVERTISE_PEER_URLS", p.clone()),
        ("ETCD_INITIAL_CLUSTER", format!("trial={p}")),
        ("ETCD_INITIAL_CLUSTER_STATE", "new".to_string()),
    ] {
        env.push((k.to_string(), v));
    }
    env
}

/// `/health` of the trial etcd says true.
async fn healthy(port: u16) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    let ask = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if s.write_all(ask.as_bytes()).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut answer)).await;
    read.is_ok() && String::from_utf8_lossy(&answer).contains("\"health\":\"true\"")
}

/// Start `binary` as described above and wait until it says it is healthy, at most `limit`;
/// then stop it. The error carries the end of what etcd wrote to stderr.
pub(crate) async fn start(binary: &Path, spec: &EtcdSpec, limit: Duration) -> Result<()> {
    let dir = Scratch::new()?;
    let (client, peer) = (free_port()?, free_port()?);
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path)?;
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(trial_env(spec, dir.path(), client, peer))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let started = Instant::now();
    let tail = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    };
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow::anyhow!(
                "{} exited ({status}) in its trial start: {}",
                binary.display(),
                tail(&stderr_path)
            ));
        }
        if healthy(client).await {
            break Ok(());
        }
        if started.elapsed() > limit {
            break Err(anyhow::anyhow!(
                "{} was not healthy within {limit:?} of its trial start: {}",
                binary.display(),
                tail(&stderr_path)
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    if let Err(e) = result {
        bail!("{e}");
    }
    tracing::info!(binary = %binary.display(), took = ?started.elapsed(), "the new etcd passed its trial start (scratch data dir, loopback)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trial_keeps_the_flags_and_drops_what_binds_etcd_to_the_member() {
        let spec = EtcdSpec {
            name: "m1".into(),
            vars: [
                ("ETCD_NAME", "m1"),
                ("ETCD_DATA_DIR", "/var/lib/etcd"),
                ("ETCD_LISTEN_CLIENT_URLS", "https://10.0.0.1:2379"),
                ("ETCD_CERT_FILE", "/etc/etcd/tls/server.crt"),
                ("ETCD_PEER_KEY_FILE", "/etc/etcd/tls/peer.key"),
                ("ETCD_INITIAL_CLUSTER_TOKEN", "t"),
                ("ETCD_SNAPSHOT_COUNT", "20000"),
                ("ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", "true"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            data_dir: "/var/lib/etcd".into(),
            tls_dir: "/etc/etcd/tls".into(),
            client_port: 2379,
            peer_port: 2380,
            metrics_port: 2381,
            advertise_client_url: "https://10.0.0.1:2379".into(),
        };
        let env = trial_env(&spec, Path::new("/tmp/t"), 40001, 40002);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ETCD_SNAPSHOT_COUNT"), Some("20000"));
        assert_eq!(get("ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK"), Some("true"));
        assert_eq!(get("ETCD_NAME"), Some("trial"));
        assert_eq!(get("ETCD_DATA_DIR"), Some("/tmp/t/data"));
        assert_eq!(
            get("ETCD_LISTEN_CLIENT_URLS"),
            Some("http://127.0.0.1:40001")
        );
        assert_eq!(
            get("ETCD_INITIAL_CLUSTER"),
            Some("trial=http://127.0.0.1:40002")
        );
        for gone in [
            "ETCD_CERT_FILE",
            "ETCD_PEER_KEY_FILE",
            "ETCD_INITIAL_CLUSTER_TOKEN",
        ] {
            assert_eq!(get(gone), None, "{gone}");
        }
        assert_eq!(env.iter().filter(|(k, _)| k == "ETCD_NAME").count(), 1);
    }

    #[tokio::test]
    async fn a_binary_that_exits_fails_its_trial_with_what_it_said() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("etcd");
        std::fs::write(&bin, "#!/bin/sh\necho 'unknown flag --bogus' >&2\nexit 2\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = EtcdSpec {
            name: "m1".into(),
            vars: vec![],
            data_dir: "/x".into(),
            tls_dir: "/y".into(),
            client_port: 1,
            peer_port: 2,
            metrics_port: 3,
            advertise_client_url: String::new(),
        };
        let e = start(&bin, &spec, Duration::from_secs(10))
            .await
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("exited") && msg.contains("unknown flag --bogus"),
            "{msg}"
        );
    }
}
