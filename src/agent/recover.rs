//! A majority lost for good: what this node sees of its last-known membership (for `recover`,
//! and for the quorum-loss report in the logs, `status` and `plan`), and starting the local
//! member alone with `--force-new-cluster`, once.
//!
//! The flag is never written anywhere: a separate etcd process gets it in its environment, runs
//! until it is healthy as a one-member cluster (etcd rewrites the membership to itself and keeps
//! every key), and is stopped; then etcd is started as always. A crash in between leaves etcd's
//! files as the one-off process left them and nothing that would force a new cluster again.

use super::{local_endpoint, Agent};
use crate::config::Config;
use crate::decide::recover::{self, AgentSeen, MemberSeen, QuorumLoss, RecoveryVerdict};
use crate::error::Refused;
use crate::etcd::datadir::Record;
use crate::etcd::{client, membership, render};
use crate::model::cluster::Answer;
use crate::tls::ClientMaterial;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the one-off `--force-new-cluster` etcd may take to become healthy.
const FORCE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// What this node sees of its last-known membership.
pub(crate) struct MembersSeen {
    pub local_healthy: bool,
    pub local_index: Option<u64>,
    pub members: Vec<MemberSeen>,
}

/// The request file `recover` leaves for a running agent: `<data_dir>.recover`. The agent
/// writes the outcome into it; the command reads it and removes it.
pub(crate) fn request_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.recover", data_dir.display()))
}

/// The request `recover` left that no agent has answered yet, if any.
fn read_pending(data_dir: &std::path::Path) -> Option<Request> {
    std::fs::read(request_path(data_dir))
        .ok()
        .and_then(|b| serde_json::from_slice::<Request>(&b).ok())
        .filter(|r| r.state == "requested")
}

/// Whether `recover` left a request that no agent has answered yet.
pub(crate) fn pending_request(data_dir: &std::path::Path) -> bool {
    read_pending(data_dir).is_some()
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct Request {
    pub requested: String,
    /// "requested", "done" or "refused: ..." / "failed: ...".
    pub state: String,
}

impl Agent<'_> {
    /// The heal loop, or a member waiting for a quorum in `converge`, found a `recover`
    /// request: carry it out and write the outcome into it.
    pub(crate) async fn answer_recover_request(&self, material: &ClientMaterial) {
        let path = request_path(&self.cfg.member.data_dir);
        let Some(mut request) = read_pending(&self.cfg.member.data_dir) else {
            return;
        };
        tracing::warn!(requested = %request.requested, "`etcd-bootstrap recover` asks this agent to recover the cluster");
        request.state = match self.recover_alone(material, true).await {
            Ok(()) => "done".into(),
            Err(e) if e.downcast_ref::<Refused>().is_some() => format!("refused: {e:#}"),
            Err(e) => format!("failed: {e:#}"),
        };
        if request.state != "done" {
            tracing::error!(outcome = %request.state, "recover");
        }
        if let Ok(text) = serde_json::to_vec(&request) {
            if let Err(e) = crate::util::fs::write_atomic(&path, &text, 0o600) {
                tracing::warn!(error = %format!("{e:#}"), "writing the outcome of recover");
            }
        }
    }
}

/// How long `recover` waits for a running agent to carry the recovery out.
const AGENT_TIMEOUT: Duration = Duration::from_secs(180);

/// `recover`, before it asks for confirmation: what this node sees of its last-known
/// membership, `Refused` unless recovering alone is right.
pub(crate) async fn check(cfg: &Config, material: &ClientMaterial) -> Result<MembersSeen> {
    let seen = see_membership(cfg, material).await?;
    if let RecoveryVerdict::Refuse(why) =
        recover::may_recover(seen.local_healthy, seen.local_index, &seen.members)
    {
        return Err(Refused(format!("not recovering: {why}")).into());
    }
    Ok(seen)
}

impl MembersSeen {
    /// The members whose etcd does not answer.
    pub(crate) fn lost(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| !m.etcd_answers)
            .map(|m| m.who.as_str())
            .collect()
    }
}

/// Does this node's agent answer on `member.agent_port`? Then `recover` leaves it the request
/// (it owns etcd's process) instead of recovering here.
pub(crate) async fn agent_runs(cfg: &Config) -> bool {
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

/// Leave the request for the running agent (`request_path`).
pub(crate) fn ask_agent(cfg: &Config) -> Result<()> {
    let request = Request {
        requested: crate::util::time::utc_stamp(time::OffsetDateTime::now_utc()),
        state: "requested".into(),
    };
    crate::util::fs::write_atomic(
        &request_path(&cfg.member.data_dir),
        serde_json::to_string(&request)?.as_bytes(),
        0o600,
    )?;
    Ok(())
}

/// Wait for the running agent's outcome of the request `ask_agent` left: `Ok` when it
/// recovered. The request file is removed either way.
pub(crate) async fn agent_outcome(cfg: &Config) -> Result<()> {
    let path = request_path(&cfg.member.data_dir);
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
                return Ok(());
            }
            Some(other) => {
                let _ = std::fs::remove_file(&path);
                return Err(Refused(format!("the local agent did not recover: {other}")).into());
            }
        }
    }
}

/// This node's last-known membership (its identity record), each member's etcd probed and
/// each member's agent asked, all at once.
pub(crate) async fn see_membership(cfg: &Config, material: &ClientMaterial) -> Result<MembersSeen> {
    // Without a leader the local etcd's client port answers nothing until a probe's timeout:
    // its metrics listener says so at once.
    let leaderless = crate::etcd::progress::local_without_leader(cfg.member.metrics_port).await;
    let local_healthy = !leaderless
        && client::check_health(&local_endpoint(cfg), material)
            .await
            .is_ok();
    members_seen(cfg, material, local_healthy, leaderless).await
}

async fn members_seen(
    cfg: &Config,
    material: &ClientMaterial,
    local_healthy: bool,
    local_leaderless: bool,
) -> Result<MembersSeen> {
    let record = Record::load(&cfg.member.data_dir)?.context(
        "no identity record beside member.data_dir: this node has never been a healthy member",
    )?;
    let my_id = record.member();
    let cluster = record.cluster();
    let urls: Vec<String> = record
        .members
        .iter()
        .map(|m| {
            if u64::from_str_radix(&m.id, 16).ok() == my_id {
                local_endpoint(cfg)
            } else {
                m.client_urls.first().cloned().unwrap_or_default()
            }
        })
        .collect();
    let local = local_endpoint(cfg);
    let to_probe: Vec<String> = urls
        .iter()
        .filter(|u| !(local_leaderless && **u == local))
        .cloned()
        .collect();
    let mut probed = client::probe_all(&to_probe, material).await.into_iter();
    let answers: Vec<Answer> = urls
        .iter()
        .map(|u| {
            if local_leaderless && *u == local {
                Answer::NoAnswer("not probed: the local etcd runs without a leader".into())
            } else {
                probed
                    .next()
                    .unwrap_or_else(|| Answer::NoAnswer("not probed".into()))
            }
        })
        .collect();
    let peer = ClientMaterial::peer_from_dir(&cfg.tls.dir)?;
    let to_ask = agents_of(record.members.iter(), cfg.member.agent_port);
    let agents = crate::agent::observe::ask_agents(to_ask, &peer).await;
    let members = record
        .members
        .iter()
        .zip(answers)
        .map(|(m, answer)| {
            let id = u64::from_str_radix(&m.id, 16).unwrap_or_default();
            let url = m.peer_urls.first().cloned().unwrap_or_default();
            let agent = agents
                .iter()
                .find(|a| a.peer_url == url)
                .and_then(|a| a.report.as_ref().ok())
                .filter(|r| r.held.cluster_name == cfg.cluster.name)
                .map(|r| AgentSeen {
                    has_data: r.has_data,
                    raft_index: r.held.raft_index,
                });
            MemberSeen {
                id,
                who: url,
                is_self: Some(id) == my_id,
                // The local etcd that runs without a leader is up (its metrics listener
                // answered): it counts as answering, as it did when its client port served.
                etcd_answers: (Some(id) == my_id && local_leaderless)
                    || matches!(&answer, Answer::Cluster(v) if Some(v.cluster_id) == cluster),
                agent,
            }
        })
        .collect();
    Ok(MembersSeen {
        local_healthy,
        local_index: record.held.raft_index,
        members,
    })
}

/// The quorum-loss report (unreachable members, the longest log, the newest snapshot and what to
/// run), or `None` when the local member is healthy, a quorum answers or the membership cannot
/// be seen.
/// `store`: the snapshot store of `[backup]`, when there is one and it could be opened.
pub(crate) async fn quorum_report(
    cfg: &Config,
    material: &ClientMaterial,
    store: Option<&crate::backup::store::Store>,
) -> Option<QuorumLoss> {
    // A member that serves a linearizable read has a quorum: nothing else needs asking.
    let leaderless = crate::etcd::progress::local_without_leader(cfg.member.metrics_port).await;
    if !leaderless
        && client::check_health(&local_endpoint(cfg), material)
            .await
            .is_ok()
    {
        return None;
    }
    let seen = members_seen(cfg, material, false, leaderless).await.ok()?;
    let newest = match store {
        None => None,
        Some(store) => crate::backup::catalog::newest_verified(store)
            .await
            .ok()
            .flatten()
            .map(|e| {
                let age = crate::backup::catalog::age_seconds(&e, time::OffsetDateTime::now_utc())
                    .map(crate::util::time::age_text)
                    .unwrap_or("?".into());
                (e.manifest.id, age)
            }),
    };
    recover::quorum_loss(&seen.members, seen.local_index, newest)
}

impl Agent<'_> {
    /// `recover`, carried out here: check again that it is right, then start the local member
    /// alone once with `--force-new-cluster`, then (`start_after`) as always.
    pub(crate) async fn recover_alone(
        &self,
        material: &ClientMaterial,
        start_after: bool,
    ) -> Result<()> {
        let cfg = self.cfg;
        if !crate::agent::observe::local_state(&cfg.member.data_dir).has_wal {
            return Err(Refused(format!(
                "{} holds no etcd data: recover runs on the member that survived",
                cfg.member.data_dir.display()
            ))
            .into());
        }
        let seen = see_membership(cfg, material).await?;
        if let RecoveryVerdict::Refuse(why) =
            recover::may_recover(seen.local_healthy, seen.local_index, &seen.members)
        {
            return Err(Refused(why).into());
        }
        tracing::warn!(members = %seen.members.iter().map(|m| m.who.as_str()).collect::<Vec<_>>().join(","), "recovering: stopping etcd, then starting it once alone with --force-new-cluster (it keeps every key it has; the other members are dropped from the membership)");
        self.manager.stop().await?;
        let env = std::fs::read_to_string(&cfg.etcd.env_file)
            .with_context(|| format!("reading {}", cfg.etcd.env_file.display()))?;
        let mut env = render::parse_env(&env);
        env.push(("ETCD_FORCE_NEW_CLUSTER".into(), "true".into()));
        // Only this agent talks to the one-off etcd, on loopback: on the member's address a
        // wiped member would take it for the recovered cluster and send its MemberAdd to a
        // process that is stopped a moment later (seen in the lab: the join failed with
        // "connection refused").
        for (key, value) in env.iter_mut() {
            if key == "ETCD_LISTEN_CLIENT_URLS" {
                *value = local_endpoint(cfg);
            }
        }
        // The one-off etcd gets SIGTERM when this process dies (the manager sets
        // PR_SET_PDEATHSIG): a kill -9 of the agent must not leave it holding etcd's ports.
        let mut command = self.manager.one_off(&env)?;
        command.kill_on_drop(true);
        let mut child = command.spawn().with_context(|| {
            format!(
                "starting a one-off etcd with --force-new-cluster ({})",
                self.manager.describe()
            )
        })?;
        let healthy = async {
            let deadline = Instant::now() + FORCE_START_TIMEOUT;
            loop {
                if let Ok((mut c, _)) = client::who_is(&local_endpoint(cfg), material).await {
                    if let Ok(members) = membership::list(&mut c).await {
                        if members.len() == 1
                            && client::check_health(&local_endpoint(cfg), material)
                                .await
                                .is_ok()
                        {
                            return Ok(members);
                        }
                    }
                }
                if Instant::now() > deadline {
                    bail!("etcd started with --force-new-cluster did not become a healthy one-member cluster within {FORCE_START_TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        .await;
        if let Some(pid) = child.id() {
            // SIGTERM: etcd shuts down cleanly; then it is started as always.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        let members = healthy?;
        tracing::warn!(member = %format!("{:x}", members[0].id), "the local member is now the only member; replacement nodes join it through the normal join path");
        super::metrics::heal_action(super::metrics::HealAction::Recover);
        if !start_after {
            return Ok(());
        }
        self.manager.start(true).await?;
        let deadline = Instant::now() + FORCE_START_TIMEOUT;
        let me = loop {
            match client::check_health(&local_endpoint(cfg), material).await {
                Ok(me) => break me,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context("etcd did not become healthy after the recovery"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        self.refresh_record(material, &me).await?;
        Ok(())
    }
}

/// Where to ask each recorded member's agent: (peer URL, name for messages, agent address). A
/// member without a peer URL that holds an IP address cannot be asked, and is left out.
pub(super) fn agents_of<'a>(
    members: impl Iterator<Item = &'a crate::etcd::datadir::RecordedMember>,
    agent_port: u16,
) -> Vec<(String, String, SocketAddr)> {
    members
        .filter_map(|m| {
            let url = m.peer_urls.first()?;
            let ip = crate::model::url::EtcdUrl::parse(url).ok()?.ip()?;
            Some((url.clone(), url.clone(), SocketAddr::new(ip, agent_port)))
        })
        .collect()
}
