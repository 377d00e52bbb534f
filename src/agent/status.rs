//! What `status` shows, gathered: the member list through the given endpoints (or the local
//! member), each member's status, this node's certificates, the pause marker, the newest
//! snapshot, the quorum-loss report and a fleet-wide restore under way. The command prints
//! it as a table or as JSON.

use super::snapshots::{last_snapshot, LastSnapshot};
use crate::config::Config;
use crate::etcd::client;
use crate::tls;
use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub(crate) struct MemberStatus {
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    pub is_leader: bool,
    pub started: bool,
    pub healthy: bool,
    pub version: Option<String>,
    pub raft_index: Option<u64>,
    pub raft_term: Option<u64>,
    pub db_size: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    pub cluster_id: String,
    pub leader: String,
    pub members: Vec<MemberStatus>,
    pub certificates: Vec<CertStatus>,
    /// The pause marker, when it exists: the heal loop changes no membership.
    pub paused_by: Option<String>,
    /// Why the running agent refused the configuration it was last asked to reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_rejected: Option<String>,
    /// The rollout of this member's configuration change, halted cluster-wide: who failed, on
    /// which release, why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_halted: Option<String>,
    /// The newest verified snapshot in the store of `[backup]`, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<LastSnapshot>,
    /// When no quorum answers: who is unreachable, the longest log, the newest snapshot and what
    /// to run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_lost: Option<String>,
    /// With the quorum lost: what the agents do about it by themselves (heal.auto_recover).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_recovery: Option<String>,
    /// The last automatic recovery carried out on this node (its note beside the data dir).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_auto_recovery: Option<crate::decide::quorum_recovery::Recovered>,
    /// This node's part in a fleet-wide restore that is under way (its identity record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restoring: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CertStatus {
    pub file: String,
    pub subject: Option<String>,
    pub not_after: Option<String>,
    pub expires_in_days: Option<i64>,
    pub error: Option<String>,
}

pub(crate) async fn collect(cfg: &Config, endpoints: &[String]) -> Result<Status> {
    let material = super::client_material(cfg)?;
    let endpoints = if endpoints.is_empty() {
        vec![super::local_endpoint(cfg)]
    } else {
        endpoints.to_vec()
    };
    let mut c = client::connect(&endpoints, &material, client::PROBE_TIMEOUT).await?;
    let list = client::bounded("listing members", client::PROBE_TIMEOUT, c.member_list()).await?;
    let header = list
        .header()
        .context("MemberList answer without a header")?;
    let cluster_id = header.cluster_id();
    let mut leader = 0u64;
    let mut members = Vec::new();
    for m in list.members() {
        let view = client::member_view(m);
        let mut st = MemberStatus {
            id: format!("{:x}", view.id),
            name: view.name.clone(),
            peer_urls: view.peer_urls.clone(),
            client_urls: view.client_urls.clone(),
            is_learner: view.is_learner,
            is_leader: false,
            started: view.started(),
            healthy: false,
            version: None,
            raft_index: None,
            raft_term: None,
            db_size: None,
            error: None,
        };
        match view.client_urls.first() {
            None => st.error = Some("not started".into()),
            Some(url) => match client::status(url, &material).await {
                Ok(s) => {
                    leader = leader.max(s.leader());
                    st.version = Some(s.version().to_string());
                    st.raft_index = Some(s.raft_index());
                    st.raft_term = Some(s.raft_term());
                    st.db_size = Some(s.db_size());
                    st.healthy = s.errors().is_empty() && s.leader() != 0;
                    if !s.errors().is_empty() {
                        st.error = Some(s.errors().join("; "));
                    }
                }
                Err(e) => st.error = Some(format!("{e:#}")),
            },
        }
        members.push((view.id, st));
    }
    for (id, st) in &mut members {
        st.is_leader = *id == leader;
    }
    let certificates = tls::describe(cfg)
        .into_iter()
        .map(|(file, info)| match info {
            Ok(i) => CertStatus {
                file,
                subject: Some(i.subject),
                not_after: Some(i.not_after),
                expires_in_days: Some(i.expires_in_secs.div_euclid(86400)),
                error: None,
            },
            Err(e) => CertStatus {
                file,
                subject: None,
                not_after: None,
                expires_in_days: None,
                error: Some(e),
            },
        })
        .collect();
    // The store of [backup], opened once for everything below.
    let store = super::StoreSlot::default();
    let quorum_lost =
        super::recover::quorum_report(cfg, &material, store.get(cfg).ok().flatten()).await;
    Ok(Status {
        cluster_id: format!("{cluster_id:x}"),
        leader: format!("{leader:x}"),
        members: members.into_iter().map(|(_, s)| s).collect(),
        certificates,
        paused_by: Some(crate::etcd::datadir::pause_marker(&cfg.member.data_dir))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string()),
        config_rejected: crate::etcd::datadir::config_rejected(&cfg.member.data_dir),
        rollout_halted: crate::etcd::datadir::rollout_halted(&cfg.member.data_dir),
        last_snapshot: last_snapshot(cfg, &store).await,
        quorum_lost: quorum_lost.as_ref().map(|q| q.to_string()),
        auto_recovery: match quorum_lost {
            Some(_) => Some(super::auto_recover::would_do(cfg, &material, &store).await),
            None => None,
        },
        last_auto_recovery: super::auto_recover::last_recovery(&cfg.member.data_dir),
        restoring: crate::etcd::datadir::Record::load(&cfg.member.data_dir)
            .ok()
            .flatten()
            .and_then(|r| r.restore)
            .map(|p| {
                format!(
                    "request {} (snapshot {}), this member at step {:?}; its agent goes on from there",
                    p.request.id, p.request.snapshot, p.phase
                )
            }),
    })
}
