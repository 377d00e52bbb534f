//! The running keeper: the agent from start to stop (`run`), its own endpoint (`endpoint`),
//! bringing the local member up (`converge`), the heal loop as an explicit state machine
//! (`heal`), re-reading the configuration at SIGHUP (`reload`), rolling a change etcd must be
//! restarted for one member at a time (`rollout`), following a fleet-wide restore request
//! (`restore`), and what it counts for Prometheus (`metrics`). Also what the one-off commands do beyond printing: `plan`, `status`, `doctor`,
//! `leave`, `recover`, asking for a fleet-wide restore (`restore_request`), taking and checking
//! snapshots (`snapshots`), and the delta segments between them (`deltas`). Commands use it; it
//! uses the layers below (decide, etcd, tls, service, discovery) and never the commands.

pub(crate) mod auto_recover;
pub(crate) mod converge;
pub(crate) mod deltas;
pub(crate) mod doctor;
pub(crate) mod endpoint;
pub(crate) mod heal;
pub(crate) mod leave;
pub(crate) mod maintenance;
pub(crate) mod metrics;
pub(crate) mod observe;
pub(crate) mod peer_roles;
pub(crate) mod plan;
pub(crate) mod recover;
pub(crate) mod reload;
pub(crate) mod renew;
pub(crate) mod restore;
pub(crate) mod restore_request;
pub(crate) mod rollout;
pub(crate) mod run;
pub(crate) mod snapshots;
pub(crate) mod status;

use crate::agent::observe::Observer;
use crate::backup::store::Store;
use crate::config::Config;
use crate::decide::bootstrap::{Action, AgentReport};
use crate::etcd::render;
use crate::model::held::Held;
use crate::service::ServiceManager;
use crate::tls::ClientMaterial;
use anyhow::Context;
use std::sync::Arc;

/// What one agent works with.
pub(crate) struct Agent<'a> {
    pub cfg: &'a Config,
    pub observer: Observer<'a>,
    pub manager: Box<dyn ServiceManager>,
}

/// The snapshot store of `[backup]`, opened at its first use and then kept, for as long as its
/// agent (made anew at a reload, with the configuration then in force). An open that fails is
/// not kept: the next use tries again (a credentials file written meanwhile counts).
#[derive(Default)]
pub(crate) struct StoreSlot(std::sync::OnceLock<Store>);

impl StoreSlot {
    /// `None` without `[backup]`.
    pub(crate) fn get(&self, cfg: &Config) -> anyhow::Result<Option<&Store>> {
        let Some(b) = &cfg.backup else {
            return Ok(None);
        };
        if self.0.get().is_none() {
            let opened = crate::backup::store::open(b, &cfg.cluster.name, &cfg.tls.dir)?;
            // Two first uses at once: both opened, one is kept; either is the same store.
            let _ = self.0.set(opened);
        }
        Ok(self.0.get())
    }
}

impl<'a> Agent<'a> {
    /// The snapshot store of `[backup]` (`None` without it): one per agent, kept.
    pub(crate) fn store(&self) -> anyhow::Result<Option<&Store>> {
        self.observer.store.get(self.cfg)
    }

    /// The agent a one-off command works through: no endpoint of its own.
    pub(crate) async fn new(cfg: &'a Config) -> anyhow::Result<Agent<'a>> {
        Ok(Agent {
            cfg,
            observer: Observer::new(cfg).await?,
            manager: crate::service::manager(cfg),
        })
    }
}

/// This node's client certificate, for talking to etcd.
pub(crate) fn client_material(cfg: &Config) -> anyhow::Result<ClientMaterial> {
    ClientMaterial::from_dir(&cfg.tls.dir)
        .context("reading the client certificate (has this node been bootstrapped?)")
}

pub(crate) fn local_endpoint(cfg: &Config) -> String {
    format!("https://127.0.0.1:{}", cfg.member.client_port)
}

/// A variable of etcd's environment file as etcd-bootstrap wrote it (this member's name, its
/// ETCD_INITIAL_ADVERTISE_PEER_URLS or ETCD_ADVERTISE_CLIENT_URLS).
pub(crate) fn env_value(cfg: &Config, var: &str) -> Option<String> {
    let env = std::fs::read_to_string(&cfg.etcd.env_file).ok()?;
    render::parse_env(&env)
        .into_iter()
        .find(|(k, _)| k == var)
        .map(|(_, v)| v)
}

/// This member's name as etcd knows it (`ETCD_NAME` of the environment file), else the short
/// host name; empty when neither is known. Who took a snapshot, who asked for a restore.
pub(crate) fn node_name(cfg: &Config) -> String {
    env_value(cfg, "ETCD_NAME")
        .or_else(crate::agent::observe::hostname)
        .unwrap_or_default()
}

pub(crate) fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd (no NOTIFY_SOCKET) this does nothing.
    let _ = sd_notify::notify(false, states);
}

/// The report this node's endpoint gives, from the disk only, so that it answers at once: a
/// peer asks it while forming a cluster, when the local etcd (3.4 serves clients only after a
/// quorum) may not answer, and waiting on it would hold up every other member. The identity
/// record has the cluster, member and formation (written before etcd starts) and the raft index
/// (kept current by the heal loop).
///
/// One figure comes from the running etcd, when it runs: how far its data goes (raft index,
/// revision), read from its metrics listener on loopback (it answers without a quorum, within
/// milliseconds; refused at once when etcd is down), so that peers comparing copies after a
/// quorum loss (`decide::quorum_recovery`) never see figures older than the data.
pub(crate) fn reporter(cfg: &Config) -> endpoint::Reporter {
    let cfg = Arc::new(cfg.clone());
    Arc::new(move || {
        let cfg = cfg.clone();
        Box::pin(async move {
            let mut r = report(&cfg)?;
            if r.has_data {
                let read = crate::etcd::progress::read_local(cfg.member.metrics_port);
                if let Ok(Ok(p)) = tokio::time::timeout(PROGRESS_READ, read).await {
                    if p.member_id.is_none() || p.member_id == r.held.member_id {
                        r.held.raft_index =
                            Some(r.held.raft_index.unwrap_or(0).max(p.applied_index));
                        r.held.revision = Some(r.held.revision.unwrap_or(0).max(p.revision));
                    }
                }
            }
            Ok(r)
        })
    })
}

/// How long a report waits for the local etcd's metrics (loopback).
const PROGRESS_READ: std::time::Duration = std::time::Duration::from_millis(500);

/// An identity record that cannot be read (I/O error, permissions, out of file descriptors, not
/// JSON) is an error, answered as such: taken as "no record", this node would report no cluster
/// and a fresh nonce, which peers could read as a node without data.
fn report(cfg: &Config) -> anyhow::Result<AgentReport> {
    let data_dir = &cfg.member.data_dir;
    let record = converge::record_for_decision(data_dir)?;
    // The configured cluster name: a node that has no record yet has none.
    Ok(AgentReport {
        held: Held {
            cluster_name: cfg.cluster.name.clone(),
            ..record.held
        },
        has_data: data_dir.join("member").exists(),
        now_unix_ms: Some(now_unix_ms()),
    })
}

/// This node's clock, Unix milliseconds.
pub(crate) fn now_unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub(crate) fn describe(action: &Action) -> String {
    match action {
        Action::Restart => "restart from the data on disk".into(),
        Action::BootstrapNew(ic) => format!(
            "{} as {} (initial cluster {}, token {}, cluster ID {:x})",
            match &ic.seed {
                Some(id) => format!("restore snapshot {id} (every member lost its data) and form a new cluster from it"),
                None => "form a new cluster".to_string(),
            },
            ic.my_name,
            ic.flag(),
            ic.token,
            ic.cluster_id()
        ),
        Action::Join { cluster_id, endpoints } => {
            format!("join cluster {cluster_id:x} as a learner through {}", endpoints.join(","))
        }
        Action::AdoptUnstarted { cluster_id, member_id, .. } => {
            format!("start as the added-but-unstarted member {member_id:x} of cluster {cluster_id:x}")
        }
        Action::ReplaceStale { cluster_id, member_id, .. } => format!(
            "replace this node's stale member {member_id:x} in cluster {cluster_id:x} (its data is gone)"
        ),
        Action::MoveAside(r) => format!("move the data dir aside: {r}"),
        Action::Wait(r) => format!("wait: {r}"),
        Action::Refuse(r) => format!("refuse: {r}"),
    }
}
