//! Leaving the cluster (`etcd-bootstrap leave`, scale-in or decommission): remove the local
//! member through the other voting members, refused when they could not keep a quorum without
//! it; then stop etcd and move its data aside. The `.left` marker, written before the removal,
//! keeps `run` from joining again.

use crate::config::Config;
use crate::error::Refused;
use crate::etcd::datadir;
use crate::etcd::{client, membership};
use crate::service;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

/// The member that was removed.
#[derive(Debug)]
pub(crate) struct Left {
    pub id: u64,
    pub name: String,
    /// Its raft index when it was asked to leave.
    pub raft_index: u64,
}

/// Remove the local member from the cluster, through a voting member. Refused when it is the
/// last voting member, or when the other voting members that are healthy would not be a quorum
/// without it.
pub(crate) async fn leave_cluster(cfg: &Config) -> Result<Left> {
    let material = super::client_material(cfg)?;
    let (mut c, whoami) = client::who_is(&super::local_endpoint(cfg), &material)
        .await
        .context(
            "the local member does not answer; start it first (leave goes through the cluster)",
        )?;
    let my_id = whoami.member_id;
    let members = membership::list(&mut c).await?;
    let me = members
        .iter()
        .find(|m| m.id == my_id)
        .context("the local member is not in its own member list")?;

    // Voters other than us, and how many of them are healthy.
    let others: Vec<_> = members
        .iter()
        .filter(|m| m.id != my_id && !m.is_learner)
        .collect();
    if !me.is_learner {
        if others.is_empty() {
            return Err(Refused(
                "this is the last voting member; leaving would destroy the cluster".into(),
            )
            .into());
        }
        let mut healthy = 0;
        for m in &others {
            if let Some(url) = m.client_urls.first() {
                if client::check_health(url, &material).await.is_ok() {
                    healthy += 1;
                }
            }
        }
        let quorum = others.len() / 2 + 1;
        if healthy < quorum {
            return Err(Refused(format!(
                "only {healthy} of the {} other voting members are healthy; without this member the cluster would lose its quorum ({quorum} needed)",
                others.len()
            ))
            .into());
        }
    }
    let marker = datadir::left_marker(&cfg.member.data_dir);
    crate::util::fs::write_atomic(
        &marker,
        format!("member {my_id:x} left the cluster; delete this file to let etcd-bootstrap join again\n").as_bytes(),
        0o644,
    )?;
    let voters: Vec<String> = others
        .iter()
        .filter_map(|m| m.client_urls.first().cloned())
        .collect();
    let mut through = membership::connect(&voters, &material).await?;
    let deadline = Instant::now() + cfg.discovery.timeout;
    membership::remove(&mut through, my_id, deadline).await?;
    Ok(Left {
        id: my_id,
        name: me.name.clone(),
        raft_index: whoami.raft_index,
    })
}

/// After `leave_cluster`: stop etcd and move its data dir aside (kept, not deleted); where it
/// went, when there was one.
pub(crate) async fn stop_and_move_aside(cfg: &Config, left: &Left) -> Result<Option<PathBuf>> {
    service::manager(cfg).stop().await?;
    datadir::move_aside(
        &cfg.member.data_dir,
        "left the cluster (etcd-bootstrap leave)",
        Some(left.raft_index),
    )
}
