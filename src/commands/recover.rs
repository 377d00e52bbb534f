//! `etcd-bootstrap recover`: on the member that survived the loss of a majority. Checks that it
//! is right (`decide::recover`), asks for confirmation, then has the local agent carry it out
//! when one runs (it owns etcd's process), or does it here.

use crate::agent::recover::{request_path, Request};
use crate::agent::Agent;
use crate::config::{Config, ServiceManagerKind};
use crate::datadir::Record;
use crate::decide::recover::{may_recover, Verdict};
use crate::error::Refused;
use crate::observe::Observer;
use crate::service;
use crate::tls::ClientMaterial;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the command waits for a running agent to carry the recovery out.
const AGENT_TIMEOUT: Duration = Duration::from_secs(180);

pub async fn recover(cfg: Config, yes: bool) -> Result<()> {
    let material = ClientMaterial::from_dir(&cfg.tls.dir)
        .context("reading the client certificate (has this node been bootstrapped?)")?;
    let agent = Agent {
        cfg: &cfg,
        observer: Observer::new(&cfg).await?,
        manager: service::manager(&cfg),
    };
    let seen = crate::agent::recover::see_membership(&cfg, &material).await?;
    if let Verdict::Refuse(why) = may_recover(seen.local_healthy, seen.local_index, &seen.members) {
        return Err(Refused(format!("not recovering: {why}")).into());
    }
    let lost: Vec<&str> = seen
        .members
        .iter()
        .filter(|m| !m.etcd_answers)
        .map(|m| m.who.as_str())
        .collect();
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
    if agent_runs(&cfg).await {
        return through_agent(&cfg).await;
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

/// Does this node's agent answer on `member.agent_port`?
async fn agent_runs(cfg: &Config) -> bool {
    let Some(ip) = Record::load(&cfg.member.data_dir)
        .ok()
        .flatten()
        .and_then(|r| r.peer_url)
        .and_then(|u| crate::model::url::EtcdUrl::parse(&u).ok())
        .and_then(|u| u.ip())
    else {
        return false;
    };
    let addr = SocketAddr::new(ip, cfg.member.agent_port);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// Leave the request for the running agent and wait for its outcome.
async fn through_agent(cfg: &Config) -> Result<()> {
    let path = request_path(&cfg.member.data_dir);
    let request = Request {
        requested: crate::datadir::utc_stamp(time::OffsetDateTime::now_utc()),
        state: "requested".into(),
    };
    crate::util::fs::write_atomic(&path, serde_json::to_string(&request)?.as_bytes(), 0o600)?;
    println!("the local agent runs: it carries the recovery out at its next heal.interval tick");
    let deadline = Instant::now() + AGENT_TIMEOUT;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let state = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Request>(&b).ok())
            .map(|r| r.state);
        match state.as_deref() {
            Some("requested") | None if Instant::now() < deadline => continue,
            Some("requested") | None => {
                let _ = std::fs::remove_file(&path);
                bail!("the local agent did not carry the recovery out within {AGENT_TIMEOUT:?}; see its log (journalctl -u etcd-bootstrap)");
            }
            Some("done") => {
                let _ = std::fs::remove_file(&path);
                println!("recovered: this member is the cluster's only member and healthy");
                return Ok(());
            }
            Some(other) => {
                let _ = std::fs::remove_file(&path);
                return Err(Refused(format!("the local agent did not recover: {other}")).into());
            }
        }
    }
}
