//! `etcd-bootstrap defrag [--all]`: the agents' defragmentation job, now: the members that
//! `maintenance.defrag_when` picks (every member with `--all`), one at a time, followers first,
//! the leader last after leadership has moved away. `maintenance.window` does not apply: an
//! operator asked for it now.

use crate::agent::{self, Agent};
use crate::config::Config;
use anyhow::Result;

pub(crate) async fn defrag(cfg: Config, all: bool) -> Result<()> {
    let material = agent::client_material(&cfg)?;
    let agent = Agent::new(&cfg).await?;
    if !all && cfg.maintenance.defrag_when.is_none() {
        println!("maintenance.defrag_when is \"\": no member is picked; use --all to defragment every member");
        return Ok(());
    }
    let done = agent.defrag_cluster(&material, all, true).await?;
    if done.is_empty() {
        match &cfg.maintenance.defrag_when {
            Some(rule) if !all => println!("no member matches maintenance.defrag_when ({rule}); nothing to do (--all defragments every member)"),
            _ => println!("nothing was defragmented"),
        }
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:>12} {:>12} {:>8}",
        "MEMBER", "ROLE", "BEFORE", "AFTER", "TOOK"
    );
    for d in &done {
        println!(
            "{:<16} {:<8} {:>10.1}Mi {:>10.1}Mi {:>7.1}s",
            d.name,
            if d.was_leader { "leader" } else { "follower" },
            d.before as f64 / (1 << 20) as f64,
            d.after as f64 / (1 << 20) as f64,
            d.took.as_secs_f64()
        );
    }
    Ok(())
}
