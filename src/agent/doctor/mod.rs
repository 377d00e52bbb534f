//! What `doctor` looks at, gathered from this node: its identity record, every member's etcd
//! (member list, status, alarms) and agent (its data, its clock, whom the leader's agent sees
//! down since when), this node's certificates and those the other members serve, discovery and
//! the snapshot store. Independent questions are asked at once and every one is bounded
//! (`client::PROBE_TIMEOUT`, the agent endpoint's `IO_TIMEOUT`, `membership::DISCOVERY_TIMEOUT`),
//! so a dead member or a hung DNS server costs seconds. Without a quorum the membership comes from the
//! identity record, as for `recover::quorum_report`.
//!
//! One file per thing looked at: `membership` (discovery, the probes, the member list),
//! `etcd_status` (each member's status, the alarms), `agents` (the other agents: data, clocks,
//! unreachable since when), `certificates` (this node's files and the served ones).

mod agents;
mod certificates;
mod etcd_status;
mod membership;

use super::snapshots::LastSnapshot;
use crate::config::{Config, TlsMode};
use crate::decide::doctor::{self as d, DoctorInput};
use crate::etcd::datadir::{self, Record};
use crate::model::cluster::MemberView;
use crate::tls::ClientMaterial;
use agents::AgentAnswers;
use anyhow::{Context, Result};
use etcd_status::StatusSeen;
use membership::{DiscoveryRead, MembershipSeen};
use std::collections::{BTreeMap, HashMap};

pub(crate) async fn observe(cfg: &Config) -> Result<DoctorInput> {
    let data_dir = &cfg.member.data_dir;
    let record = Record::load(data_dir)?.with_context(|| {
        format!(
            "this node has not been bootstrapped: there is no identity record at {} (`etcd-bootstrap run` writes it when it first starts); doctor checks a member, or a node that runs to become one",
            datadir::record_path(data_dir).display()
        )
    })?;
    let material = ClientMaterial::from_dir(&cfg.tls.dir).with_context(|| {
        format!(
            "reading the client certificate in tls.dir ({})",
            cfg.tls.dir.display()
        )
    })?;
    let peer_material = ClientMaterial::peer_from_dir(&cfg.tls.dir).ok();
    let my_id = record.member();

    // The store of [backup], opened once for everything below.
    let store = super::StoreSlot::default();
    let (snapshot, (discovered, seen)) = tokio::join!(
        super::snapshots::last_snapshot(cfg, &store),
        membership::find(cfg, &record, &material)
    );
    let MembershipSeen {
        cluster,
        members: views,
        from_record,
        answers,
    } = seen;
    let reach = membership::reach(cfg, my_id, &views, cluster, &answers);
    let up_urls = membership::up_urls(cfg, my_id, &views, &reach);

    let others: Vec<&MemberView> = views.iter().filter(|m| Some(m.id) != my_id).collect();
    let (statuses, alarms, agents, served) = tokio::join!(
        etcd_status::statuses(&up_urls, &material),
        etcd_status::alarms(&up_urls, &views, &material),
        agents::ask_agents(cfg, &others, peer_material.as_ref()),
        certificates::served_certificates(&views, &reach, my_id, peer_material.as_ref()),
    );
    let down_since = agents::down_since(&record, &agents);
    let alarm_list = etcd_status::alarms_or_from_statuses(alarms, &statuses, &views);
    let members = members(cfg, my_id, &views, &reach, &agents, &down_since, &statuses);
    let clocks = agents::clocks(&others, &agents, &views);

    let srv_names = certificates::srv_names(&discovered);
    let issuing = cfg.tls.mode != TlsMode::Files;
    let certificates =
        certificates::certificates(cfg, &views, my_id, &record, served, |peer_url: &str| {
            // The agents of the issuing modes put the SRV target name into the SANs
            // (`tls::Identity`); pre-issued files are checked for the addresses alone.
            srv_names.get(peer_url).filter(|_| issuing).cloned()
        });

    let auto_recovery = auto_recovery(cfg, &members, &material, &store).await;
    Ok(DoctorInput {
        now: time::OffsetDateTime::now_utc().unix_timestamp(),
        local_index: record.held.raft_index,
        membership_from_record: from_record,
        members,
        certificates,
        renewal: match cfg.tls.mode {
            TlsMode::Files => d::Renewal::Files,
            _ => d::Renewal::Agent {
                heal_interval_secs: cfg.heal.interval.as_secs() as i64,
            },
        },
        alarms: alarm_list,
        quota: quota(cfg),
        revision: statuses
            .values()
            .map(|s| s.revision)
            .filter(|r| *r > 0)
            .max(),
        discovery: discovery_seen(discovered),
        clocks,
        snapshot: snapshot.map(|s| snapshot_seen(cfg, s)),
        tls_dir: cfg.tls.dir.display().to_string(),
        dead_member_policy: super::converge::dead_member_policy(cfg),
        auto_recovery,
        last_auto_recovery: super::auto_recover::last_recovery(&cfg.member.data_dir).map(|r| {
            (
                r,
                super::auto_recover::outcome_path(&cfg.member.data_dir)
                    .display()
                    .to_string(),
            )
        }),
        config_rejected: crate::etcd::datadir::config_rejected(&cfg.member.data_dir),
        rollout_halted: crate::etcd::datadir::rollout_halted(&cfg.member.data_dir),
    })
}

/// Each member as `doctor` judges it: whether it answers, its agent, since when it is down,
/// its database.
fn members(
    cfg: &Config,
    my_id: Option<u64>,
    views: &[MemberView],
    reach: &[(bool, Option<String>)],
    agents: &AgentAnswers,
    down_since: &BTreeMap<String, i64>,
    statuses: &HashMap<u64, StatusSeen>,
) -> Vec<d::CheckedMember> {
    views
        .iter()
        .zip(reach)
        .map(|(m, (reachable, error))| {
            let peer_url = m.peer_urls.first().cloned().unwrap_or_default();
            let agent = agents::agent_seen(cfg, agents, &peer_url);
            d::CheckedMember {
                id: m.id,
                name: m.name.clone(),
                peer_url,
                client_url: m.client_urls.first().cloned(),
                is_learner: m.is_learner,
                is_self: Some(m.id) == my_id,
                reachable: *reachable,
                error: error.clone(),
                down_since: (!reachable)
                    .then(|| down_since.get(&format!("{:x}", m.id)).copied())
                    .flatten(),
                agent,
                db: statuses.get(&m.id).map(|s| s.db),
            }
        })
        .collect()
}

/// Without a quorum: what the agents do about it by themselves.
async fn auto_recovery(
    cfg: &Config,
    members: &[d::CheckedMember],
    material: &ClientMaterial,
    store: &super::StoreSlot,
) -> Option<String> {
    let voters: Vec<&d::CheckedMember> = members.iter().filter(|m| !m.is_learner).collect();
    if voters.iter().filter(|m| m.reachable).count() <= voters.len() / 2 {
        Some(super::auto_recover::would_do(cfg, material, store).await)
    } else {
        None
    }
}

/// What discovery lists, as the peer URLs and the targets that did not resolve.
fn discovery_seen(discovered: DiscoveryRead) -> Option<d::DiscoverySeen> {
    discovered.map(|(source, read)| d::DiscoverySeen {
        source,
        read: read.map(|(peers, unresolved)| {
            (
                peers.iter().map(|p| p.peer_url.to_string()).collect(),
                unresolved,
            )
        }),
    })
}

/// The newest snapshot and delta chain as the store holds them.
fn snapshot_seen(cfg: &Config, s: LastSnapshot) -> d::SnapshotSeen {
    d::SnapshotSeen {
        newest: match (s.error, s.id) {
            (Some(e), _) => Err(e),
            (None, None) => Ok(None),
            (None, Some(id)) => Ok(Some((id, s.age_seconds.unwrap_or(i64::MAX / 4)))),
        },
        untrusted: s.untrusted.into_iter().map(|u| (u.object, u.why)).collect(),
        deltas: s.delta.map(|d| d::DeltaSeen {
            interval_secs: d.delta_interval_seconds,
            behind: d.cluster_revision.map(|r| (r - d.last_revision).max(0)),
            base: d.base,
            segments: d.segments,
            events: d.events,
            newest_age: d.newest_segment_age_seconds,
        }),
        store: s.store,
        interval_secs: cfg
            .backup
            .as_ref()
            .map(|b| b.interval.as_secs() as i64)
            .unwrap_or_default(),
    }
}

/// `quota-backend-bytes` as etcd applies it: unset or 0 is the default, negative turns quotas
/// off.
fn quota(cfg: &Config) -> Option<i64> {
    match cfg
        .etcd
        .flags
        .get("quota-backend-bytes")
        .and_then(|v| v.trim().parse::<i64>().ok())
    {
        None | Some(0) => Some(d::DEFAULT_QUOTA_BYTES),
        Some(q) if q < 0 => None,
        Some(q) => Some(q),
    }
}

fn name_of(views: &[MemberView], id: u64) -> String {
    views
        .iter()
        .find(|m| m.id == id && !m.name.is_empty())
        .map(|m| m.name.clone())
        .unwrap_or_else(|| format!("{id:x}"))
}
