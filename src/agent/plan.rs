//! What `plan` shows, gathered the way `run` gathers it but changing nothing: the observation
//! (discovery, the peers' answers, their agents, the disk, the certificates it would issue), the
//! decision, the quorum-loss report when this member would restart from data whose cluster has
//! no quorum, and what etcd would be started with. The command prints it.

use crate::agent::observe::{Observed, Observer};
use crate::config::Config;
use crate::decide::bootstrap::{self, Action};
use crate::decide::recover::QuorumLoss;
use crate::etcd::render::ClusterState;
use anyhow::Result;

pub(crate) struct Plan {
    pub observed: Observed,
    pub action: Action,
    /// `Restart` only: the cluster of this member's data has no quorum (what to run).
    pub quorum_lost: Option<QuorumLoss>,
    /// With `quorum_lost`: what the agents do about it by themselves (heal.auto_recover).
    pub auto_recovery: Option<String>,
    /// What etcd would be started with; `None` when the decision starts nothing.
    pub state: Option<ClusterState>,
}

pub(crate) async fn plan(cfg: &Config) -> Result<Plan> {
    let observer = Observer::new(cfg).await?;
    let observed = observer.observe().await?;
    let action = bootstrap::decide(&observed.obs);
    let mut quorum_lost = None;
    let mut auto_recovery = None;
    if action == Action::Restart {
        // A member with data: when its cluster has no quorum, say so, what to run, and what the
        // agents do about it by themselves.
        if let Ok(material) = crate::tls::ClientMaterial::from_dir(&cfg.tls.dir) {
            let store = observer.store.get(cfg).ok().flatten();
            quorum_lost = super::recover::quorum_report(cfg, &material, store).await;
            if quorum_lost.is_some() {
                auto_recovery =
                    Some(super::auto_recover::would_do(cfg, &material, &observer.store).await);
            }
        }
    }
    let state = match &action {
        Action::Restart => Some(ClusterState::FromDisk),
        Action::BootstrapNew(ic) => Some(ClusterState::New(ic.clone())),
        _ => None,
    };
    Ok(Plan {
        observed,
        action,
        quorum_lost,
        auto_recovery,
        state,
    })
}
