//! Quorum lost with every member accounted for (issue 27): the evidence (`gather`: the last
//! recorded membership, every member's agent asked at its peer endpoint, the newest snapshot of
//! the store), the decision (`decide::quorum_recovery`), and carrying it out, one tick at a time
//! (`Agent::auto_recover_tick`), from the heal loop and while a restarted member waits for a
//! quorum in `converge`.
//!
//! Who acts: every agent computes the same decision from the same reports; only the member it
//! names (the lowest member ID among the holders of the best copy) runs `recover` (one start
//! with `--force-new-cluster`, `agent::recover`), and only after two ticks in a row gave the
//! same decision, so that every agent has recorded what its etcd holds (`note_local_progress`)
//! and been asked about it (each agent's report also reads its running etcd's figures). The other holders move their data aside (never delete it) once the
//! recovered member answers as a healthy cluster of the same ID without them, and join it; the
//! members without data join it through the first-boot path. When the store's newest snapshot
//! is newer than every member's copy, every holder moves its copy aside (kept) on the second
//! identical decision, and the first-boot path of all members then forms the cluster again from
//! that snapshot (the total-loss restore). A kill -9 at any point leaves either nothing done
//! (the decision is taken again), a one-member cluster that etcd restarts from its files, or a
//! member without data that the first-boot path takes on.

use super::metrics;
use super::Agent;
use crate::backup::store::Store;
use crate::decide::quorum_recovery::{
    self, Decision, Holding, HoldingAnswer, MemberAnswer, RecoverFrom, StorePoint,
};
use crate::etcd::datadir::{self, Record};
use crate::etcd::{client, progress};
use crate::model::cluster::Answer;
use crate::tls::ClientMaterial;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

/// How long listing the store may take for the comparison.
const STORE_TIMEOUT: Duration = Duration::from_secs(20);
/// Before a member acts on being named, the evidence is gathered again after this: a decision
/// taken while an agent was starting (or a record being written) is not acted on.
const CONFIRM_AFTER: Duration = Duration::from_secs(1);
/// A decision that does not change is logged again this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What the last ticks saw, across ticks.
#[derive(Debug, Default)]
pub(crate) struct AutoRecovery {
    last: Option<Decision>,
    logged: Option<(String, Instant)>,
}

/// The evidence and the decision, as `plan` and `status` show them.
#[derive(Debug, Clone)]
pub(crate) struct Evidence {
    pub decision: Decision,
    pub my_id: u64,
    pub cluster_id: u64,
    pub holds_data: bool,
    /// The client URL of each member, by member ID.
    pub client_urls: Vec<(u64, String)>,
}

/// Record what the local etcd's data holds, read from its metrics listener (it answers without
/// a quorum, `etcd::progress`), into the identity record: the raft index and the revision. Its
/// figures are taken only when they are the local member's (etcd_server_id); the term stays the
/// one last seen with a leader. Nothing is written when etcd does not answer or nothing changed.
pub(crate) fn note_local_progress_from(
    data_dir: &std::path::Path,
    p: &progress::Progress,
) -> Result<()> {
    let Some(mut record) = Record::load(data_dir)? else {
        return Ok(());
    };
    if p.member_id.is_some() && p.member_id != record.member() {
        return Ok(());
    }
    let before = record.clone();
    record.held.raft_index = Some(record.held.raft_index.unwrap_or(0).max(p.applied_index));
    record.held.revision = Some(record.held.revision.unwrap_or(0).max(p.revision));
    if record != before {
        record.save(data_dir)?;
    }
    Ok(())
}

async fn note_local_progress(cfg: &crate::config::Config) {
    match progress::read_local(cfg.member.metrics_port).await {
        Ok(p) => {
            if let Err(e) = note_local_progress_from(&cfg.member.data_dir, &p) {
                tracing::warn!(error = %format!("{e:#}"), "recording the local member's raft index and revision");
            }
        }
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "the local etcd's progress cannot be read; its identity record's figures stand")
        }
    }
}

fn holding(r: &crate::decide::bootstrap::AgentReport) -> Holding {
    Holding {
        cluster_name: r.held.cluster_name.clone(),
        cluster_id: r.held.cluster_id,
        has_data: r.has_data,
        term: r.held.raft_term,
        index: r.held.raft_index,
        revision: r.held.revision,
    }
}

/// An agent that answered 503 cannot read its own identity (`agent::report`): it cannot tell
/// what it holds, which only a person can settle. Anything else is no answer (yet).
fn answer_of(report: &Result<crate::decide::bootstrap::AgentReport, String>) -> HoldingAnswer {
    match report {
        Ok(r) => HoldingAnswer::Report(holding(r)),
        Err(e) if e.contains("503") => HoldingAnswer::CannotTell(e.clone()),
        Err(e) => HoldingAnswer::Missing(e.clone()),
    }
}

/// The newest verified snapshot of cluster `cluster` (this `cluster.name`), bounded.
/// A store that could not be opened (`Err`) is a store that cannot tell, never "no store".
async fn store_point(
    store: Result<Option<&Store>, String>,
    cluster: u64,
) -> Result<Option<StorePoint>, String> {
    let Some(store) = store? else {
        return Ok(None);
    };
    let look = async {
        let listing = crate::backup::catalog::list(store).await?;
        anyhow::Ok(
            listing
                .entries
                .iter()
                .filter(|e| {
                    e.verified
                        && u64::from_str_radix(&e.manifest.cluster_id, 16).ok() == Some(cluster)
                })
                .max_by_key(|e| e.manifest.revision)
                .map(|e| StorePoint {
                    id: e.manifest.id.clone(),
                    revision: e.manifest.revision,
                    created: e.manifest.created.clone(),
                }),
        )
    };
    match tokio::time::timeout(STORE_TIMEOUT, look).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no listing within {STORE_TIMEOUT:?}")),
    }
}

/// The evidence: this node's last recorded membership, each member's etcd probed and each
/// member's agent asked, all at once, and the store's newest snapshot of the cluster.
/// `store`: the snapshot store of `[backup]` (`None` without it; `Err`: it could not be opened).
pub(crate) async fn gather(
    cfg: &crate::config::Config,
    material: &ClientMaterial,
    store: Result<Option<&Store>, String>,
) -> Result<Evidence> {
    let record = super::converge::record_for_decision(&cfg.member.data_dir)?;
    let my_id = record
        .member()
        .context("the identity record names no member: this node has never been a member")?;
    let cluster_id = record
        .cluster()
        .context("the identity record names no cluster")?;
    // The local member is not probed: the caller found it unhealthy, and etcd without a quorum
    // does not open its client port, so a probe would only wait for its timeout. It counts as
    // answering, which can only make a quorum look more likely (then nothing is done).
    let urls: Vec<String> = record
        .members
        .iter()
        .filter(|m| u64::from_str_radix(&m.id, 16).ok() != Some(my_id))
        .map(|m| m.client_urls.first().cloned().unwrap_or_default())
        .collect();
    let peer = ClientMaterial::peer_from_dir(&cfg.tls.dir)?;
    let mut to_ask = super::recover::agents_of(
        record
            .members
            .iter()
            .filter(|m| u64::from_str_radix(&m.id, 16).ok() != Some(my_id)),
        cfg.member.agent_port,
    );
    let beyond = match beyond_the_record(cfg, &record).await {
        Ok(beyond) => beyond,
        Err(why) => {
            let wait = Decision::Wait(why);
            return Ok(Evidence {
                decision: if cfg.heal.auto_recover && cfg.heal.enabled {
                    wait
                } else {
                    Decision::Off(Box::new(wait))
                },
                my_id,
                cluster_id,
                holds_data: false,
                client_urls: vec![],
            });
        }
    };
    to_ask.extend(
        beyond
            .iter()
            .filter_map(|(who, addr)| Some((who.clone(), who.clone(), (*addr)?))),
    );
    // The store is compared only where the first-boot path would restore from it.
    let store = match &cfg.backup {
        Some(b) if b.restore_on_bootstrap => store,
        _ => Ok(None),
    };
    let (answers, agents, store) = tokio::join!(
        client::probe_all(&urls, material),
        crate::agent::observe::ask_agents(to_ask, &peer),
        store_point(store, cluster_id)
    );
    let answering = 1 + answers
        .iter()
        .filter(|a| matches!(a, Answer::Cluster(v) if v.cluster_id == cluster_id && v.leader != 0))
        .count();
    let mine = super::reporter(cfg)().await.map_err(|e| format!("{e:#}"));
    let members = member_answers(&record, my_id, &mine, &agents, &beyond);
    let decision = quorum_recovery::decide(&quorum_recovery::Inputs {
        cluster_name: &cfg.cluster.name,
        cluster_id,
        members: &members,
        quorum_answers: answering > record.members.len() / 2,
        store,
        auto_recover: cfg.heal.auto_recover && cfg.heal.enabled,
    });
    Ok(Evidence {
        decision,
        my_id,
        cluster_id,
        holds_data: cfg.member.data_dir.join("member").exists(),
        client_urls: record
            .members
            .iter()
            .filter_map(|m| {
                Some((
                    u64::from_str_radix(&m.id, 16).ok()?,
                    m.client_urls.first()?.clone(),
                ))
            })
            .collect(),
    })
}

/// Each member's answer: those of the recorded membership (this one's from its own report),
/// then the peers beyond it (`beyond_the_record`), whose member ID is the one their agent reports.
fn member_answers(
    record: &Record,
    my_id: u64,
    mine: &Result<crate::decide::bootstrap::AgentReport, String>,
    agents: &[crate::decide::bootstrap::AgentAnswer],
    beyond: &[(String, Option<std::net::SocketAddr>)],
) -> Vec<MemberAnswer> {
    let asked = |who: &str| agents.iter().find(|a| a.peer_url == who);
    let recorded = record.members.iter().map(|m| {
        let id = u64::from_str_radix(&m.id, 16).unwrap_or_default();
        let who = m.peer_urls.first().cloned().unwrap_or_default();
        let answer = if id == my_id {
            answer_of(mine)
        } else {
            asked(&who)
                .map(|a| answer_of(&a.report))
                .unwrap_or(HoldingAnswer::Missing("no peer URL to ask it at".into()))
        };
        MemberAnswer { id, who, answer }
    });
    let discovered =
        beyond.iter().map(|(who, _)| {
            let answer = asked(who).map(|a| answer_of(&a.report)).unwrap_or(HoldingAnswer::Missing(
            "listed by discovery, not in the recorded membership, and its name does not resolve"
                .into(),
        ));
            let id = asked(who)
                .and_then(|a| a.report.as_ref().ok())
                .and_then(|r| r.held.member_id)
                .unwrap_or(0);
            MemberAnswer {
                id,
                who: who.clone(),
                answer,
            }
        });
    recorded.chain(discovered).collect()
}

/// The peers discovery lists that the recorded membership does not (as agents to ask). The
/// record can lag behind etcd's membership (a member added within a heal tick before everything
/// stopped): such a peer must answer too, and one holding data of this cluster counts as a
/// member. Each with the address of its agent, `None` when its name does not resolve (then it
/// counts as not answering). `Err`: discovery failed, which is a reason to wait.
async fn beyond_the_record(
    cfg: &crate::config::Config,
    record: &Record,
) -> Result<Vec<(String, Option<std::net::SocketAddr>)>, String> {
    let sources = crate::discovery::sources(cfg).map_err(|e| format!("{e:#}"))?;
    let found = crate::discovery::read_all(&sources).await.map_err(|e| {
        format!(
            "discovery failed ({e:#}): peers beyond the recorded membership cannot be ruled out"
        )
    })?;
    Ok(found
        .peers
        .iter()
        .filter(|p| {
            // The same peer, whether the record names it by address or by name.
            let url = p.peer_url.to_string();
            !record.members.iter().any(|m| {
                m.peer_urls.iter().any(|u| {
                    *u == url
                        || crate::model::url::EtcdUrl::parse(u)
                            .ok()
                            .and_then(|u| u.ip())
                            .is_some_and(|ip| p.ips.contains(&ip))
                })
            })
        })
        .map(|p| {
            let addr = p
                .ips
                .first()
                .map(|ip| std::net::SocketAddr::new(*ip, cfg.member.agent_port));
            (p.peer_url.to_string(), addr)
        })
        .chain(found.unresolved.iter().map(|name| (name.clone(), None)))
        .collect())
}

/// What the caller does after a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AutoStep {
    /// This member holds the copy the cluster comes back from: `Agent::auto_recover_here`.
    RecoverHere(Decision),
    /// This member's data is not that copy and the recovered member answers without it: move
    /// the data aside (the reason) and join.
    MoveAside(String),
    /// `etcd-bootstrap recover` was run on this node by hand: `Agent::answer_recover_request`.
    AnswerRecoverRequest,
}

impl Agent<'_> {
    /// One tick of the automatic recovery, on an unhealthy member that no majority says was
    /// removed. The caller carries the step out outside anything that watches etcd's health
    /// (the one-off `--force-new-cluster` etcd is healthy for a moment).
    pub(crate) async fn auto_recover_tick(
        &self,
        material: &ClientMaterial,
        st: &mut AutoRecovery,
    ) -> Option<AutoStep> {
        let cfg = self.cfg;
        if datadir::pause_marker(&cfg.member.data_dir).exists() {
            return None;
        }
        note_local_progress(cfg).await;
        let store = || self.store().map_err(|e| format!("{e:#}"));
        let mut ev = match gather(cfg, material, store()).await {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "automatic recovery: no evidence");
                return None;
            }
        };
        if ev.decision.recovering_member() == Some(ev.my_id)
            && st.last.as_ref() != Some(&ev.decision)
        {
            // The first time this member is named: ask again after a moment rather than a whole
            // tick later; acting needs the same decision twice (see below).
            st.last = Some(ev.decision.clone());
            tokio::time::sleep(CONFIRM_AFTER).await;
            match gather(cfg, material, store()).await {
                Ok(again) => ev = again,
                Err(_) => return None,
            }
        }
        let text = ev.decision.to_string();
        let repeat = st
            .logged
            .as_ref()
            .is_some_and(|(t, at)| *t == text && at.elapsed() < LOG_EVERY);
        if !repeat {
            match &ev.decision {
                Decision::Blocked(_) => tracing::error!("{text}"),
                Decision::Recover { .. } => tracing::warn!("{text}"),
                _ => tracing::info!("{text}"),
            }
            st.logged = Some((text, Instant::now()));
        }
        let stable = st.last.as_ref() == Some(&ev.decision);
        st.last = Some(ev.decision.clone());
        let Decision::Recover { source, .. } = &ev.decision else {
            return None;
        };
        match source {
            RecoverFrom::Member { id, .. } if *id == ev.my_id => {
                if !stable {
                    // Every agent records what it holds at its own tick: act on the second
                    // identical decision, when their reports no longer change.
                    return None;
                }
                st.last = None;
                Some(AutoStep::RecoverHere(ev.decision.clone()))
            }
            RecoverFrom::Member { id, who, .. } => {
                if !ev.holds_data {
                    // Without data the first-boot path joins the recovered member.
                    return None;
                }
                let url = ev
                    .client_urls
                    .iter()
                    .find(|(m, _)| m == id)
                    .map(|(_, u)| u.clone())?;
                let my_url = super::env_value(cfg, "ETCD_INITIAL_ADVERTISE_PEER_URLS")?;
                match client::probe(&url, material).await {
                    Answer::Cluster(v)
                        if v.cluster_id == ev.cluster_id
                            && v.leader != 0
                            && !v.is_learner
                            && !v.members.iter().any(|m| m.peer_urls.contains(&my_url)) =>
                    {
                        Some(AutoStep::MoveAside(format!(
                            "the cluster came back by itself from {who}'s copy, which no longer lists this member ({})",
                            ev.decision
                        )))
                    }
                    _ => None,
                }
            }
            RecoverFrom::Store(p) => {
                // Every holder moves its copy aside (kept) on the second identical decision;
                // then no member holds data and the first-boot path forms the cluster again
                // from the store's newest snapshot (`backup.restore_on_bootstrap`, which
                // `gather` requires before it compares with the store). A member without data
                // has nothing to do: that path is where it already waits.
                if !ev.holds_data || !stable {
                    return None;
                }
                st.last = None;
                metrics::auto_recovery("store", ev.decision.lost());
                record_auto_recovery(cfg, &ev.decision);
                Some(AutoStep::MoveAside(format!(
                    "the store's snapshot {} (revision {}) is newer than every member's data: the cluster is formed again from it, and this older copy is kept ({})",
                    p.id, p.revision, ev.decision
                )))
            }
        }
    }
}

impl Agent<'_> {
    /// Carry out `AutoStep::RecoverHere`: `recover` (its own checks again, then one start with
    /// `--force-new-cluster`), then etcd started as always. Logged, counted and noted beside the
    /// data dir (`outcome_path`) for `doctor` and `status`.
    pub(crate) async fn auto_recover_here(&self, material: &ClientMaterial, decision: &Decision) {
        let cfg = self.cfg;
        let Decision::Recover {
            source,
            highest,
            lost,
        } = decision
        else {
            return;
        };
        tracing::warn!(copy = %source, "automatic recovery: this member holds the best copy; starting it alone once with --force-new-cluster");
        crate::failpoint::hit("auto-recover:before-force");
        match self.recover_alone(material, false).await {
            Ok(()) => {
                tracing::warn!(highest = ?highest, lost = ?lost, "automatic recovery done from {source}: this member is now the only member and the others join it; revisions lost: {}", lost.map(|l| l.to_string()).unwrap_or("unknown".into()));
                metrics::auto_recovery("member", *lost);
                record_auto_recovery(cfg, decision);
                // A kill -9 here leaves etcd stopped on a one-member cluster's files: the
                // restarted agent starts it from them (the restart path), and the others join.
                crate::failpoint::hit("auto-recover:after-force");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "automatic recovery failed; trying again at the next tick");
            }
        }
        // Also after a failure: etcd runs as always (the one-off has stopped).
        if let Err(e) = self.manager.start(true).await {
            tracing::error!(error = %format!("{e:#}"), "starting etcd after the automatic recovery");
        }
    }
}

/// The outcome, beside the data dir for `doctor` and `status`: `<data_dir>.auto-recovered`.
pub(crate) fn outcome_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.auto-recovered", data_dir.display()))
}

fn record_auto_recovery(cfg: &crate::config::Config, d: &Decision) {
    let note = quorum_recovery::Recovered {
        at: crate::util::time::utc_stamp(time::OffsetDateTime::now_utc()),
        what: d.to_string(),
        lost: d.lost(),
    };
    let written = serde_json::to_vec_pretty(&note)
        .map_err(anyhow::Error::from)
        .and_then(|text| {
            crate::util::fs::write_atomic(&outcome_path(&cfg.member.data_dir), &text, 0o644)
        });
    if let Err(e) = written {
        tracing::warn!(error = %format!("{e:#}"), "writing the automatic recovery's note");
    }
}

/// The note of the last automatic recovery carried out on this node, if any.
pub(crate) fn last_recovery(data_dir: &std::path::Path) -> Option<quorum_recovery::Recovered> {
    let bytes = std::fs::read(outcome_path(data_dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// For `plan`, `status` and `doctor` when no quorum answers: what the agents do about it by
/// themselves (the decision), or why it cannot be told.
/// `store`: the one of `[backup]`, opened once by the caller.
pub(crate) async fn would_do(
    cfg: &crate::config::Config,
    material: &ClientMaterial,
    store: &super::StoreSlot,
) -> String {
    let store = store.get(cfg).map_err(|e| format!("{e:#}"));
    match gather(cfg, material, store).await {
        Ok(ev) => ev.decision.to_string(),
        Err(e) => format!("automatic recovery cannot tell: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::held::Held;

    #[test]
    fn local_progress_goes_into_the_record_only_when_it_is_this_members() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let record = Record {
            held: Held {
                cluster_name: "lab".into(),
                member_id: Some(0xa1),
                raft_index: Some(8),
                raft_term: Some(2),
                revision: Some(5),
                ..Default::default()
            },
            ..Default::default()
        };
        record.save(&data).unwrap();
        let p = |member, applied_index, revision| progress::Progress {
            member_id: member,
            applied_index,
            revision,
            has_leader: false,
        };
        // Another member's figures: ignored.
        note_local_progress_from(&data, &p(Some(0xb2), 99, 99)).unwrap();
        assert_eq!(Record::load(&data).unwrap().unwrap(), record);
        note_local_progress_from(&data, &p(Some(0xa1), 31, 21)).unwrap();
        let r = Record::load(&data).unwrap().unwrap();
        assert_eq!(
            (r.held.raft_index, r.held.raft_term, r.held.revision),
            (Some(31), Some(2), Some(21))
        );
        // Never backwards.
        note_local_progress_from(&data, &p(Some(0xa1), 3, 2)).unwrap();
        let r = Record::load(&data).unwrap().unwrap();
        assert_eq!((r.held.raft_index, r.held.revision), (Some(31), Some(21)));
    }

    #[test]
    fn a_503_cannot_tell_anything_else_is_missing() {
        assert!(matches!(
            answer_of(&Err(
                "10.0.0.1:2378 answered \"HTTP/1.1 503 Service Unavailable\"".into()
            )),
            HoldingAnswer::CannotTell(_)
        ));
        assert!(matches!(
            answer_of(&Err("connection refused".into())),
            HoldingAnswer::Missing(_)
        ));
    }
}
