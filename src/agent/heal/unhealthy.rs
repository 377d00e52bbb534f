//! What the heal loop does at an unhealthy tick: ask the last-known membership whether this
//! member was removed (a majority's word moves the data aside, never one peer's), and without a
//! quorum, the automatic recovery and the quorum-loss report.

use super::{keep_watchdog_fed, Memory, State};
use crate::agent::auto_recover::AutoStep;
use crate::agent::metrics::{self, HealAction};
use crate::agent::{notify, Agent};
use crate::decide::removed::RemovalVerdict;
use crate::etcd::datadir;
use crate::failpoint;
use anyhow::Result;
use std::time::{Duration, Instant};

/// How often a member without a quorum repeats what it knows and what to run.
const QUORUM_REPORT_EVERY: Duration = Duration::from_secs(60);

impl Agent<'_> {
    /// Was this member removed? `true`: its data is now aside, join again at once.
    pub(super) async fn ask_whether_removed(&self, mem: &mut Memory) -> Result<bool> {
        match self.removal_verdict(&mem.material).await {
            RemovalVerdict::Removed(reason) => {
                tracing::warn!(%reason, "the local member is no longer part of the cluster; healing: stop etcd, move its data aside, join again");
                notify(&[sd_notify::NotifyState::Status(&format!(
                    "healing: {reason}"
                ))]);
                // The data is moved only once etcd is known to be gone. A stop that cannot tell
                // (kubelet slow to take a static pod down) is tried again at the next tick, with
                // the removal asked again; the agent stays up.
                if let Err(e) = self.manager.stop().await {
                    tracing::error!(error = %format!("{e:#}"), "stopping etcd failed, so its data stays where it is; trying again after heal.interval");
                    return Ok(false);
                }
                failpoint::hit("heal:after-stop");
                datadir::move_aside(&self.cfg.member.data_dir, &reason, mem.last_index)?;
                metrics::heal_action(HealAction::MoveAside);
                failpoint::hit("heal:after-move");
                mem.state = State::Rejoining;
                Ok(true)
            }
            RemovalVerdict::Foreign { what, clusters }
                if mem
                    .current_restore
                    .as_ref()
                    .is_some_and(|r| clusters.iter().any(|c| r.is_either_side(*c))) =>
            {
                tracing::info!(%what, request = mem.current_restore.as_ref().map(|r| r.id.as_str()).unwrap_or(""), "a fleet-wide restore is under way: members on the old and the restored data ignore each other until each has followed it");
                Ok(false)
            }
            RemovalVerdict::Foreign { what, .. } => {
                tracing::error!(%what, "another cluster answers at this member's peers; refusing to move data or re-join: fix discovery");
                notify(&[sd_notify::NotifyState::Status(
                    "refusing: another cluster answers; see the log",
                )]);
                Ok(false)
            }
            RemovalVerdict::Member => Ok(false),
            RemovalVerdict::Undecided(why) => {
                tracing::info!(%why, "unhealthy, but no majority says this member was removed: keeping its data and waiting");
                self.without_quorum(mem).await?;
                Ok(false)
            }
        }
    }

    /// No majority says this member was removed, and it is unhealthy: when no quorum can form
    /// and every member's agent answers, the automatic recovery brings the cluster back
    /// (`decide::quorum_recovery`); else, at most every `QUORUM_REPORT_EVERY`, what is known and
    /// what to run.
    async fn without_quorum(&self, mem: &mut Memory) -> Result<()> {
        let cfg = self.cfg;
        match self.auto_recover_tick(&mem.material, &mut mem.auto).await {
            Some(AutoStep::RecoverHere(decision)) => {
                tokio::select! {
                    _ = self.auto_recover_here(&mem.material, &decision) => {}
                    never = keep_watchdog_fed(cfg.heal.interval) => match never {},
                }
                return Ok(());
            }
            Some(AutoStep::MoveAside(reason)) => {
                tracing::warn!(%reason, "this member's copy is not the one the cluster came back from; moving its data aside and joining the recovered cluster");
                if let Err(e) = self.manager.stop().await {
                    tracing::error!(error = %format!("{e:#}"), "stopping etcd failed, so its data stays where it is; trying again after heal.interval");
                    return Ok(());
                }
                datadir::move_aside(&cfg.member.data_dir, &reason, mem.last_index)?;
                metrics::heal_action(HealAction::MoveAside);
                mem.state = State::Rejoining;
                return Ok(());
            }
            // The heal tick answers a `recover` request itself, at its start.
            Some(AutoStep::AnswerRecoverRequest) | None => {}
        }
        if mem
            .last_quorum_report
            .is_none_or(|t| t.elapsed() >= QUORUM_REPORT_EVERY)
        {
            mem.last_quorum_report = Some(Instant::now());
            let store = self.store().ok().flatten();
            let q = crate::agent::recover::quorum_report(cfg, &mem.material, store).await;
            // None: a quorum answers (or the membership could not be seen).
            metrics::quorum(q.is_none());
            if let Some(q) = q {
                tracing::error!("{q}");
                notify(&[sd_notify::NotifyState::Status("quorum lost; see the log")]);
            }
        }
        Ok(())
    }
}
