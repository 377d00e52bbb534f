//! `etcd-bootstrap recover`: on the member that survived the loss of a majority. Checks that it
//! is right (`agent::recover::check`, `decide::recover`), asks for confirmation, then has the
//! local agent carry it out when one runs (it owns etcd's process), or does it here.

use crate::agent::{self, recover, Agent};
use crate::config::{Config, ServiceManagerKind};
use anyhow::{bail, Result};
use std::io::{BufRead, Write};

pub(crate) async fn recover(cfg: Config, yes: bool) -> Result<()> {
    let material = agent::client_material(&cfg)?;
    let agent = Agent::new(&cfg).await?;
    let seen = recover::check(&cfg, &material).await?;
    let lost = seen.lost();
    println!(
        "{} of {} members do not answer ({}). This member (raft index {}) will be started alone with --force-new-cluster: it keeps every key it has, and the others are dropped from the membership; replacement nodes then join it.",
        lost.len(),
        seen.members.len(),
        lost.join(", "),
        seen.local_index.map(|i| i.to_string()).unwrap_or("unknown".into())
    );
    if !yes {
        print!("Type \"recover\" to go on: ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim() != "recover" {
            bail!("not confirmed; nothing was changed");
        }
    }
    if recover::agent_runs(&cfg).await {
        recover::ask_agent(&cfg)?;
        println!(
            "the local agent runs: it carries the recovery out at its next heal.interval tick"
        );
        recover::agent_outcome(&cfg).await?;
        println!("recovered: this member is the cluster's only member and healthy");
        return Ok(());
    }
    let start_after = cfg.etcd.service_manager != ServiceManagerKind::Process;
    agent.recover_alone(&material, start_after).await?;
    if start_after {
        println!("recovered: this member is the cluster's only member and healthy");
    } else {
        println!("recovered: this member is the cluster's only member; start `etcd-bootstrap run` (etcd.service_manager = \"process\" runs etcd only under it)");
    }
    Ok(())
}
