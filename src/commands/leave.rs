//! `etcd-bootstrap leave`: scale-in or decommission. Remove the local member through a voting
//! member, stop etcd, move its data aside. Refused when the remaining members could not keep a
//! quorum.

use crate::config::Config;
use crate::datadir;
use crate::error::Refused;
use crate::etcd::{client, membership};
use crate::service;
use crate::tls::ClientMaterial;
use anyhow::{Context, Result};
use std::time::Instant;

pub async fn leave(cfg: Config) -> Result<()> {
    let material = ClientMaterial::from_dir(&cfg.tls.dir)
        .context("reading the client certificate (has this node been bootstrapped?)")?;
    let (mut c, whoami) = client::who_is(&crate::agent::local_endpoint(&cfg), &material)
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
    println!("removed member {my_id:x} ({}) from the cluster", me.name);
    let manager = service::manager(&cfg);
    manager.stop().await?;
    if let Some(to) = datadir::move_aside(
        &cfg.member.data_dir,
        "left the cluster (etcd-bootstrap leave)",
        Some(whoami.raft_index),
    )? {
        println!("stopped etcd; its data is kept at {}", to.display());
    }
    Ok(())
}
