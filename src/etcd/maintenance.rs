//! etcd's maintenance RPCs, each bounded: a member's database status, defragmenting one member,
//! moving leadership, and the NOSPACE alarm.

use super::client::{self, bounded};
use crate::tls::ClientMaterial;
use anyhow::{Context, Result};
use etcd_client::{AlarmAction, AlarmOptions, AlarmType};
use std::time::Duration;

/// What `Maintenance.Status` says about one member's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DbStatus {
    pub member_id: u64,
    pub leader: u64,
    pub is_learner: bool,
    pub raft_index: u64,
    pub db_size: u64,
    pub db_size_in_use: u64,
    pub version: String,
    /// What the member reports as wrong, other than a raised NOSPACE alarm (which is what this
    /// module is for).
    pub errors: Vec<String>,
}

impl DbStatus {
    pub(crate) fn is_leader(&self) -> bool {
        client::leads(self.member_id, self.leader)
    }
}

pub(crate) async fn db_status(endpoint: &str, tls: &ClientMaterial) -> Result<DbStatus> {
    let mut c = client::connect(&[endpoint.to_string()], tls, client::PROBE_TIMEOUT).await?;
    let s = bounded("Maintenance.Status", client::PROBE_TIMEOUT, c.status()).await?;
    let header = s.header().context("Status answer without a header")?;
    Ok(DbStatus {
        member_id: header.member_id(),
        leader: s.leader(),
        is_learner: s.is_learner(),
        raft_index: s.raft_index(),
        db_size: s.db_size().max(0) as u64,
        db_size_in_use: s.raft_used_db_size().max(0) as u64,
        version: s.version().to_string(),
        errors: s
            .errors()
            .iter()
            .filter(|e| !e.contains("NOSPACE"))
            .cloned()
            .collect(),
    })
}

/// Defragment the member at `endpoint` (it blocks that member's reads and writes meanwhile).
pub(crate) async fn defragment(
    endpoint: &str,
    tls: &ClientMaterial,
    limit: Duration,
) -> Result<()> {
    // The client's per-request timeout is the connect one: give the whole defrag its limit.
    let mut c = client::connect(&[endpoint.to_string()], tls, limit).await?;
    bounded("Maintenance.Defragment", limit, c.defragment()).await?;
    Ok(())
}

/// Ask the leader (at `leader_endpoint`) to hand leadership to `to`.
pub(crate) async fn move_leader(
    leader_endpoint: &str,
    tls: &ClientMaterial,
    to: u64,
) -> Result<()> {
    let mut c = client::connect(&[leader_endpoint.to_string()], tls, client::PROBE_TIMEOUT).await?;
    bounded(
        "Maintenance.MoveLeader",
        Duration::from_secs(10),
        c.move_leader(to),
    )
    .await?;
    Ok(())
}

/// The members with a raised NOSPACE alarm.
pub(crate) async fn nospace_alarms(endpoint: &str, tls: &ClientMaterial) -> Result<Vec<u64>> {
    let mut c = client::connect(&[endpoint.to_string()], tls, client::PROBE_TIMEOUT).await?;
    let r = bounded(
        "Maintenance.Alarm(get)",
        client::PROBE_TIMEOUT,
        c.alarm(AlarmAction::Get, AlarmType::None, None),
    )
    .await?;
    Ok(r.alarms()
        .iter()
        .filter(|a| a.alarm() == AlarmType::Nospace)
        .map(|a| a.member_id())
        .collect())
}

/// Disarm the NOSPACE alarm of `member`.
pub(crate) async fn disarm_nospace(
    endpoint: &str,
    tls: &ClientMaterial,
    member: u64,
) -> Result<()> {
    let mut c = client::connect(&[endpoint.to_string()], tls, client::PROBE_TIMEOUT).await?;
    let mut options = AlarmOptions::new();
    options.with_member(member);
    bounded(
        "Maintenance.Alarm(deactivate)",
        client::PROBE_TIMEOUT,
        c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options)),
    )
    .await?;
    Ok(())
}
