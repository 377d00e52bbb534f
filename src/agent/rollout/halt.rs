//! A rollout that failed on one member stops cluster-wide: the member is put back on what it ran
//! before (its etcd files, and the binaries an install replaced), and a marker in etcd says which
//! member failed, on which release, and why, so that no other agent tries the same change. The
//! marker names the change (`change_id`): an agent whose configuration asks for another change
//! (an operator's fix) lifts it, and a new rollout starts.

use super::base;
use crate::config::Config;
use crate::etcd::client;
use crate::etcd::datadir;
use crate::service::{Artifact, ServiceManager};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What the marker in etcd holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Halted {
    /// The member that failed, as etcd names it.
    pub member: String,
    /// The release it failed on ("3.5.30"; "unknown" when it could not be told).
    pub version: String,
    pub reason: String,
    /// `change_id` of the configuration it failed with.
    pub change: String,
    /// When, in seconds since the epoch.
    pub at: i64,
}

impl Halted {
    /// One line for the log, `status`, `doctor` and the local note.
    pub(crate) fn line(&self) -> String {
        format!(
            "rollout halted: member {} was not healthy on etcd {} and was put back on its previous etcd ({}); no other member was touched; change etcd.binary, etcd.download_url, etcd.image or [etcd.flags] and reload to start a new rollout",
            self.member,
            self.version,
            crate::agent::reload::one_line(&self.reason)
        )
    }
}

fn key(cluster: &str) -> String {
    format!("{}/halted", base(cluster))
}

/// What a fleet-wide change asks etcd to run with, as one id: the binary, the release to
/// install, the image and the extra flags, which are the same on every member of a fleet (the
/// member's own files are not: they hold its name and addresses).
pub(crate) fn change_id(cfg: &Config) -> String {
    let e = &cfg.etcd;
    let mut text = format!(
        "binary {}\nrelease {} {}\nimage {}\n",
        e.binary.display(),
        e.download_url.as_deref().unwrap_or(""),
        e.sha256.as_deref().unwrap_or(""),
        e.image.as_deref().unwrap_or("")
    );
    for (k, v) in &e.flags {
        text.push_str(&format!("flag {k}={v}\n"));
    }
    crate::util::sha256::sha256_hex(text.as_bytes())[..16].to_string()
}

/// The halt in force for this configuration's change, if any. A halt of another change is
/// lifted (deleted, with the pre-rollout snapshot's note: the next rollout takes its own). The
/// local note follows what is found.
pub(crate) async fn in_force(c: &mut etcd_client::Client, cfg: &Config) -> Result<Option<Halted>> {
    let k = key(&cfg.cluster.name);
    let resp = client::bounded("Range", client::PROBE_TIMEOUT, c.get(k.as_str(), None)).await?;
    let found: Option<Halted> = resp
        .kvs()
        .first()
        .and_then(|kv| serde_json::from_slice(kv.value()).ok());
    let note = datadir::rollout_halted_marker(&cfg.member.data_dir);
    match found {
        Some(h) if h.change == change_id(cfg) => {
            let line = h.line();
            if datadir::rollout_halted(&cfg.member.data_dir).as_deref() != Some(line.as_str()) {
                tracing::error!(member = %h.member, version = %h.version, reason = %h.reason, "the rollout of this configuration halted cluster-wide; this member is not restarted for it");
                crate::util::fs::write_atomic(&note, format!("{line}\n").as_bytes(), 0o644)?;
            }
            crate::agent::metrics::rollout_halted(true);
            Ok(Some(h))
        }
        other => {
            if let Some(h) = other {
                tracing::info!(member = %h.member, version = %h.version, "the configuration asks for another change than the halted rollout's: the halt is lifted and a new rollout starts");
                client::bounded("Delete", client::PROBE_TIMEOUT, c.delete(k.as_str(), None))
                    .await?;
                super::guard::forget_snapshot(c, cfg).await?;
            }
            if note.exists() {
                std::fs::remove_file(&note)
                    .with_context(|| format!("removing {}", note.display()))?;
            }
            crate::agent::metrics::rollout_halted(false);
            Ok(None)
        }
    }
}

/// Halt the rollout cluster-wide (through `endpoints`: this member's etcd may be the one that
/// failed).
pub(crate) async fn halt(
    endpoints: &[String],
    material: &crate::tls::ClientMaterial,
    cluster: &str,
    h: &Halted,
) -> Result<()> {
    let value = serde_json::to_string(h)?;
    let mut last = anyhow::anyhow!("no member to write the halt to");
    // One member at a time: a client over several endpoints may send the write to the one
    // that is down.
    for endpoint in endpoints {
        let put = async {
            let mut c = client::connect(
                std::slice::from_ref(endpoint),
                material,
                client::PROBE_TIMEOUT,
            )
            .await?;
            client::bounded(
                "Put",
                client::PROBE_TIMEOUT,
                c.put(key(cluster), value.as_str(), None),
            )
            .await
        };
        match put.await {
            Ok(_) => return Ok(()),
            Err(e) => last = e.context(format!("writing the halt through {endpoint}")),
        }
    }
    Err(last)
}

/// etcd's files as they were before a restart: written back by a rollback. Kept on disk while
/// the restart runs (`persist`): an agent stopped or killed in the middle of it puts them back at
/// its next start (`put_back_interrupted`), and the roll is tried again under the rollout's rules.
#[derive(Serialize, Deserialize)]
pub(crate) struct Saved {
    files: Vec<(Artifact, Option<Vec<u8>>)>,
    applied: Option<String>,
}

impl Saved {
    /// Read what the manager is about to overwrite for `spec`.
    pub(crate) fn take(
        manager: &dyn ServiceManager,
        spec: &crate::etcd::render::EtcdSpec,
        cfg: &Config,
    ) -> Result<Saved> {
        let files = manager
            .render(spec)?
            .into_iter()
            .map(|a| {
                let before = std::fs::read(&a.path).ok();
                (a, before)
            })
            .collect();
        Ok(Saved {
            files,
            applied: datadir::read_applied(&cfg.member.data_dir),
        })
    }

    fn path(cfg: &Config) -> std::path::PathBuf {
        std::path::PathBuf::from(format!(
            "{}.rollout-saved.json",
            cfg.member.data_dir.display()
        ))
    }

    /// Keep them on disk until the restart is over (`forget`).
    pub(crate) fn persist(&self, cfg: &Config) -> Result<()> {
        let text = serde_json::to_vec(self)?;
        crate::util::fs::write_atomic(&Self::path(cfg), &text, 0o600)?;
        Ok(())
    }

    /// The restart is over (healthy, or put back).
    pub(crate) fn forget(cfg: &Config) {
        let _ = std::fs::remove_file(Self::path(cfg));
    }

    /// At the agent's start: a restart of a rollout that its agent did not see through (stopped
    /// or killed meanwhile) is undone, so that etcd starts on what it ran before; the rollout
    /// tries it again at a healthy tick, with its checks, its wait and its rollback.
    pub(crate) fn put_back_interrupted(cfg: &Config) -> Result<()> {
        let path = Self::path(cfg);
        let Ok(text) = crate::util::fs::read_bounded_text(&path, 4 << 20) else {
            return Ok(());
        };
        match serde_json::from_str::<Saved>(&text) {
            Ok(saved) => {
                tracing::warn!(file = %path.display(), "this agent stopped in the middle of a rollout's restart of etcd: etcd's previous files are put back; the rollout tries this member again once every member is healthy");
                saved.put_back(cfg)?;
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read what a rollout's interrupted restart saved; left as it is");
            }
        }
        Self::forget(cfg);
        Ok(())
    }

    /// Write them back (a file that did not exist is removed) with the binaries an install
    /// replaced, and the fingerprint of what etcd ran with.
    pub(crate) fn put_back(&self, cfg: &Config) -> Result<()> {
        for (a, before) in &self.files {
            match before {
                Some(bytes) => {
                    crate::util::fs::write_atomic(&a.path, bytes, a.mode)?;
                }
                None => {
                    let _ = std::fs::remove_file(&a.path);
                }
            }
        }
        if crate::etcd::install::put_back_previous(cfg)? {
            tracing::info!(dir = %cfg.etcd.install_dir.display(), "the binaries the rollout installed are replaced by the previous ones");
        }
        match &self.applied {
            Some(a) => datadir::write_applied(&cfg.member.data_dir, a)?,
            None => {
                let _ = std::fs::remove_file(datadir::applied_path(&cfg.member.data_dir));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_restart_is_put_back_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            format!(
                "[cluster]\nname = \"t\"\n[member]\ndata_dir = \"{d}/data\"\n[discovery]\npeers = [\"a=https://10.0.0.1:2380\"]\n\
                 [tls]\nmode = \"cfssl\"\ncfssl_url = \"https://10.0.0.9:8888\"\n[etcd]\ninstall_dir = \"{d}/bin\"\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        let cfg = Config::load(Some(&p), &[]).unwrap();
        let env = dir.path().join("etcd.env");
        let unit = dir.path().join("etcd.service");
        std::fs::write(&env, "ETCD_NAME=old\n").unwrap();
        datadir::write_applied(&cfg.member.data_dir, "old-fingerprint").unwrap();
        let saved = Saved {
            files: vec![
                (
                    Artifact::new(&env, 0o644, "ETCD_NAME=new\n".into()),
                    Some(b"ETCD_NAME=old\n".to_vec()),
                ),
                (Artifact::new(&unit, 0o644, "[Unit]\n".into()), None),
            ],
            applied: datadir::read_applied(&cfg.member.data_dir),
        };
        saved.persist(&cfg).unwrap();
        // The restart wrote the new files, then the agent was killed.
        std::fs::write(&env, "ETCD_NAME=new\n").unwrap();
        std::fs::write(&unit, "[Unit]\n").unwrap();
        datadir::write_applied(&cfg.member.data_dir, "new-fingerprint").unwrap();
        Saved::put_back_interrupted(&cfg).unwrap();
        assert_eq!(std::fs::read_to_string(&env).unwrap(), "ETCD_NAME=old\n");
        assert!(!unit.exists(), "a file the restart created is removed");
        assert_eq!(
            datadir::read_applied(&cfg.member.data_dir).as_deref(),
            Some("old-fingerprint")
        );
        assert!(!Saved::path(&cfg).exists());
        // Nothing saved: nothing done.
        Saved::put_back_interrupted(&cfg).unwrap();
        assert_eq!(std::fs::read_to_string(&env).unwrap(), "ETCD_NAME=old\n");
    }
}
