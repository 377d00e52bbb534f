//! What the members' etcd says besides the membership: each one's Maintenance.Status (database
//! size, errors, revision) and the alarm list.

use super::name_of;
use crate::decide::doctor as d;
use crate::etcd::client;
use crate::model::cluster::MemberView;
use crate::tls::ClientMaterial;
use std::collections::HashMap;

/// What one member's Maintenance.Status says.
pub(super) struct StatusSeen {
    pub(super) db: d::Db,
    /// "etcdserver: no leader", alarms ("memberID:… alarm:NOSPACE").
    errors: Vec<String>,
    /// The header's revision.
    pub(super) revision: i64,
}

/// Maintenance.Status of each member that answers: its DB size and in use, and its errors.
pub(super) async fn statuses(
    up: &[(u64, String)],
    material: &ClientMaterial,
) -> HashMap<u64, StatusSeen> {
    let mut set = tokio::task::JoinSet::new();
    for (id, url) in up {
        let (id, url, m) = (*id, url.clone(), material.clone());
        set.spawn(async move { (id, client::status(&url, &m).await) });
    }
    let mut out = HashMap::new();
    while let Some(r) = set.join_next().await {
        if let Ok((id, Ok(s))) = r {
            out.insert(
                id,
                StatusSeen {
                    db: d::Db {
                        size: s.db_size(),
                        in_use: s.raft_used_db_size(),
                    },
                    errors: s.errors().to_vec(),
                    revision: s.header().map(|h| h.revision()).unwrap_or_default(),
                },
            );
        }
    }
    out
}

/// etcd's alarm list, asked of the members that answer (it goes through raft: it needs a
/// quorum).
pub(super) async fn alarms(
    up: &[(u64, String)],
    views: &[MemberView],
    material: &ClientMaterial,
) -> Result<Vec<d::Alarm>, String> {
    let voters: Vec<String> = up
        .iter()
        .filter(|(id, _)| views.iter().any(|m| m.id == *id && !m.is_learner))
        .map(|(_, u)| u.clone())
        .collect();
    if voters.is_empty() {
        return Err("no voting member answers".into());
    }
    let list = async {
        let mut c = client::connect(&voters, material, client::PROBE_TIMEOUT).await?;
        client::bounded(
            "Maintenance.Alarm (list)",
            client::PROBE_TIMEOUT,
            c.alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            ),
        )
        .await
    };
    let resp = list.await.map_err(|e| format!("{e:#}"))?;
    Ok(resp
        .alarms()
        .iter()
        .filter(|a| a.alarm() != etcd_client::AlarmType::None)
        .map(|a| d::Alarm {
            member: name_of(views, a.member_id()),
            alarm: a.alarm().as_str_name().to_string(),
        })
        .collect())
}

/// The alarm list, or when it could not be read (it goes through raft: it needs a quorum), the
/// alarms the members that answer carry in their status ("memberID:… alarm:NOSPACE").
pub(super) fn alarms_or_from_statuses(
    alarms: Result<Vec<d::Alarm>, String>,
    statuses: &HashMap<u64, StatusSeen>,
    views: &[MemberView],
) -> Result<Vec<d::Alarm>, String> {
    alarms.or_else(|e| {
        if statuses.is_empty() {
            return Err(e);
        }
        Ok(statuses
            .iter()
            .flat_map(|(id, s)| {
                s.errors.iter().filter_map(move |err| {
                    ["NOSPACE", "CORRUPT"]
                        .into_iter()
                        .find(|a| err.contains(&format!("alarm:{a}")))
                        .map(|a| (*id, a.to_string()))
                })
            })
            .map(|(id, alarm)| d::Alarm {
                member: name_of(views, id),
                alarm,
            })
            .collect())
    })
}
