//! What a rollout checks and keeps before it touches a member: the release step is one etcd
//! allows (`decide::version_step`, from what every member runs), the new etcd passes a trial
//! start (`etcd::trial`), and with `[backup]` a verified snapshot is in the store, taken once per
//! rollout by the first member that restarts.

use super::base;
use crate::agent::Agent;
use crate::config::Config;
use crate::decide::version_step::{self, Step};
use crate::etcd::client::{self, Whoami};
use crate::etcd::version::EtcdVersion;
use anyhow::{Context, Result};
use std::time::Duration;

/// How long the new etcd has to say it is healthy in its trial start.
const TRIAL_LIMIT: Duration = Duration::from_secs(30);

/// The release the configuration in force has etcd run: the release `etcd.download_url` names
/// while it is not installed yet, else the binary's or the image's own.
pub(crate) fn new_release(cfg: &Config) -> Option<EtcdVersion> {
    if crate::etcd::install::another_release_configured(cfg) {
        return cfg
            .etcd
            .download_url
            .as_deref()
            .and_then(crate::etcd::install::version_in_url)
            .and_then(|v| EtcdVersion::parse(&v));
    }
    EtcdVersion::of_config(cfg)
}

/// The release step from what the members run (`health`: their answers) to the new release.
pub(crate) fn step(cfg: &Config, health: &[Result<Whoami>]) -> (Step, Option<EtcdVersion>) {
    let running: Vec<EtcdVersion> = health
        .iter()
        .filter_map(|h| h.as_ref().ok())
        .filter_map(|w| EtcdVersion::parse(&w.version))
        .collect();
    let to = new_release(cfg);
    (version_step::check(&running, to), to)
}

fn snapshot_key(cluster: &str) -> String {
    format!("{}/snapshot", base(cluster))
}

/// The rollout is over (no member pending) or another one starts: the next one takes its own
/// snapshot first.
pub(crate) async fn forget_snapshot(c: &mut etcd_client::Client, cfg: &Config) -> Result<()> {
    client::bounded(
        "Delete",
        client::PROBE_TIMEOUT,
        c.delete(snapshot_key(&cfg.cluster.name), None),
    )
    .await?;
    Ok(())
}

impl Agent<'_> {
    /// The trial start of the etcd binary the configuration in force runs, with this member's
    /// settings (`etcd::trial`). The image managers' etcd is not started outside its manager:
    /// their release is checked by its tag only.
    pub(crate) async fn trial_start(&self, spec: &crate::etcd::render::EtcdSpec) -> Result<()> {
        if self.cfg.etcd.service_manager.runs_image() {
            return Ok(());
        }
        crate::etcd::trial::start(&self.cfg.etcd.binary, spec, TRIAL_LIMIT).await
    }

    /// With `[backup]`: a verified snapshot of the cluster before the rollout's first restart
    /// (under the rollout lock, so only one member takes it). Its id is logged and kept in etcd
    /// until the rollout ends; a snapshot that fails stops the restart (tried again next tick).
    pub(crate) async fn snapshot_first(
        &self,
        c: &mut etcd_client::Client,
        endpoint: &str,
    ) -> Result<()> {
        let cfg = self.cfg;
        let (Some(b), Some(store)) = (&cfg.backup, self.store()?) else {
            return Ok(());
        };
        let key = snapshot_key(&cfg.cluster.name);
        let resp =
            client::bounded("Range", client::PROBE_TIMEOUT, c.get(key.as_str(), None)).await?;
        if let Some(kv) = resp.kvs().first() {
            tracing::debug!(snapshot = %String::from_utf8_lossy(kv.value()), "this rollout's snapshot was taken before its first restart");
            return Ok(());
        }
        let m = crate::agent::snapshots::take_now(
            cfg,
            store,
            &b.age_recipients,
            Some(endpoint.to_string()),
        )
        .await
        .context("the snapshot before the rollout's first restart failed; no member is restarted without it")?;
        tracing::info!(snapshot = %m.id, revision = m.revision, "snapshot before the rollout's first restart, verified and stored: restore it with `etcd-bootstrap restore --from {}` if the rollout goes wrong", m.id);
        client::bounded(
            "Put",
            client::PROBE_TIMEOUT,
            c.put(key.as_str(), m.id.as_str(), None),
        )
        .await?;
        Ok(())
    }
}
