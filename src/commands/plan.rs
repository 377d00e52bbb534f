//! `etcd-bootstrap plan`: observe and decide like `run` (`agent::plan`), print the decision and
//! the files it would write, change nothing.

use crate::agent::plan::Plan;
use crate::config::Config;
use crate::decide::bootstrap::Action;
use crate::error::Refused;
use crate::etcd::render;
use crate::model::cluster::Answer;
use anyhow::Result;

pub(crate) async fn plan(cfg: Config) -> Result<()> {
    let Plan {
        observed,
        action,
        quorum_lost,
        auto_recovery,
        state,
    } = crate::agent::plan::plan(&cfg).await?;
    println!("peers:    {}", observed.discovered.describe());
    println!("stable:   {}", observed.obs.stable);
    println!(
        "this node: {} ({}), {}",
        observed.me.name,
        observed.me.peer_url(&cfg),
        if observed.obs.me.is_some() {
            "in the peer set"
        } else {
            "not in the peer set"
        }
    );
    for a in &observed.obs.answers {
        match a {
            Answer::Cluster(c) => println!(
                "answer:   {} is in cluster {:x} ({} members, leader {})",
                c.endpoint,
                c.cluster_id,
                c.members.len(),
                if c.leader != 0 {
                    format!("{:x}", c.leader)
                } else {
                    "none".into()
                }
            ),
            Answer::NoAnswer(why) => println!("answer:   none ({why})"),
        }
    }
    for a in &observed.obs.agents {
        match &a.report {
            Ok(r) => println!(
                "agent:    {} ({}): cluster.name {:?}, {}, nonce {}",
                a.name,
                a.peer_url,
                r.held.cluster_name,
                match (r.has_data, r.held.cluster_id) {
                    (false, _) => "no data".to_string(),
                    (true, Some(c)) => format!(
                        "holds data of cluster {c:x} (raft index {})",
                        r.held
                            .raft_index
                            .map(|i| i.to_string())
                            .unwrap_or_else(|| "unknown".into())
                    ),
                    (true, None) => "holds data of an unknown cluster".to_string(),
                },
                r.held.nonce
            ),
            Err(why) => println!("agent:    {} ({}): not asked: {why}", a.name, a.peer_url),
        }
    }
    println!("decision: {}", crate::agent::describe(&action));
    if let Some(q) = quorum_lost {
        println!("QUORUM LOST: {q}");
    }
    if let Some(a) = auto_recovery {
        println!("AUTOMATIC RECOVERY: {a}");
    }
    if let Some(state) = state {
        for f in &observed.tls.files {
            match &f.change {
                Some(why) => println!(
                    "would write {} (mode {:o}): {why}",
                    f.path.display(),
                    f.mode
                ),
                None => println!("would keep  {}", f.path.display()),
            }
        }
        let manager = crate::service::manager(&cfg);
        println!(
            "etcd runs as: {}, {}",
            manager.describe(),
            manager.owner().describe()
        );
        for artifact in manager.render(&render::spec(&cfg, &observed.me, &state)?)? {
            println!(
                "would write {} (mode {:o}):",
                artifact.path.display(),
                artifact.mode
            );
            print!("{}", indent(&artifact.content));
        }
    }
    if let Action::Refuse(why) = action {
        return Err(Refused(why).into());
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
