//! `etcd-bootstrap status`: members, leader, learners, raft index, DB size, health and certificate
//! expiry, as a table or as JSON.

use crate::agent::snapshots::{last_snapshot, LastSnapshot};
use crate::config::Config;
use crate::etcd::client;
use crate::tls::{self, ClientMaterial};
use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct MemberStatus {
    pub id: String,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    pub is_leader: bool,
    pub started: bool,
    pub healthy: bool,
    pub version: Option<String>,
    pub raft_index: Option<u64>,
    pub raft_term: Option<u64>,
    pub db_size: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub cluster_id: String,
    pub leader: String,
    pub members: Vec<MemberStatus>,
    pub certificates: Vec<CertStatus>,
    /// The pause marker, when it exists: the heal loop changes no membership.
    pub paused_by: Option<String>,
    /// The newest verified snapshot in the store of `[backup]`, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<LastSnapshot>,
    /// When no quorum answers: who is unreachable, the longest log, the newest snapshot and what
    /// to run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quorum_lost: Option<String>,
    /// This node's part in a fleet-wide restore that is under way (its identity record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restoring: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CertStatus {
    pub file: String,
    pub subject: Option<String>,
    pub not_after: Option<String>,
    pub expires_in_days: Option<i64>,
    pub error: Option<String>,
}

pub async fn collect(cfg: &Config, endpoints: &[String]) -> Result<Status> {
    let material = ClientMaterial::from_dir(&cfg.tls.dir)
        .context("reading the client certificate (has this node been bootstrapped?)")?;
    let endpoints = if endpoints.is_empty() {
        vec![crate::agent::local_endpoint(cfg)]
    } else {
        endpoints.to_vec()
    };
    let mut c = client::connect(&endpoints, &material, client::PROBE_TIMEOUT).await?;
    let list = client::bounded("listing members", client::PROBE_TIMEOUT, c.member_list()).await?;
    let header = list
        .header()
        .context("MemberList answer without a header")?;
    let cluster_id = header.cluster_id();
    let mut leader = 0u64;
    let mut members = Vec::new();
    for m in list.members() {
        let view = client::member_view(m);
        let mut st = MemberStatus {
            id: format!("{:x}", view.id),
            name: view.name.clone(),
            peer_urls: view.peer_urls.clone(),
            client_urls: view.client_urls.clone(),
            is_learner: view.is_learner,
            is_leader: false,
            started: view.started(),
            healthy: false,
            version: None,
            raft_index: None,
            raft_term: None,
            db_size: None,
            error: None,
        };
        match view.client_urls.first() {
            None => st.error = Some("not started".into()),
            Some(url) => match client::status(url, &material).await {
                Ok(s) => {
                    leader = leader.max(s.leader());
                    st.version = Some(s.version().to_string());
                    st.raft_index = Some(s.raft_index());
                    st.raft_term = Some(s.raft_term());
                    st.db_size = Some(s.db_size());
                    st.healthy = s.errors().is_empty() && s.leader() != 0;
                    if !s.errors().is_empty() {
                        st.error = Some(s.errors().join("; "));
                    }
                }
                Err(e) => st.error = Some(format!("{e:#}")),
            },
        }
        members.push((view.id, st));
    }
    for (id, st) in &mut members {
        st.is_leader = *id == leader;
    }
    let certificates = tls::describe(cfg)
        .into_iter()
        .map(|(file, info)| match info {
            Ok(i) => CertStatus {
                file,
                subject: Some(i.subject),
                not_after: Some(i.not_after),
                expires_in_days: Some(i.expires_in_secs.div_euclid(86400)),
                error: None,
            },
            Err(e) => CertStatus {
                file,
                subject: None,
                not_after: None,
                expires_in_days: None,
                error: Some(e),
            },
        })
        .collect();
    Ok(Status {
        cluster_id: format!("{cluster_id:x}"),
        leader: format!("{leader:x}"),
        members: members.into_iter().map(|(_, s)| s).collect(),
        certificates,
        paused_by: Some(crate::datadir::pause_marker(&cfg.member.data_dir))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string()),
        last_snapshot: last_snapshot(cfg).await,
        quorum_lost: crate::agent::recover::quorum_report(cfg, &material)
            .await
            .map(|q| q.to_string()),
        restoring: crate::datadir::Record::load(&cfg.member.data_dir)
            .ok()
            .flatten()
            .and_then(|r| r.restore)
            .map(|p| {
                format!(
                    "request {} (snapshot {}), this member at step {:?}; its agent goes on from there",
                    p.request.id, p.request.snapshot, p.phase
                )
            }),
    })
}

pub fn table(s: &Status) -> String {
    let mut rows = vec![vec![
        "ID".to_string(),
        "NAME".into(),
        "PEER URL".into(),
        "CLIENT URL".into(),
        "ROLE".into(),
        "VERSION".into(),
        "RAFT INDEX".into(),
        "DB SIZE".into(),
        "HEALTH".into(),
    ]];
    for m in &s.members {
        let role = if m.is_leader {
            "leader"
        } else if m.is_learner {
            "learner"
        } else if m.started {
            "follower"
        } else {
            "unstarted"
        };
        rows.push(vec![
            m.id.clone(),
            m.name.clone(),
            m.peer_urls.join(","),
            m.client_urls.join(","),
            role.into(),
            m.version.clone().unwrap_or_default(),
            m.raft_index.map(|i| i.to_string()).unwrap_or_default(),
            m.db_size.map(human_bytes).unwrap_or_default(),
            if m.healthy {
                "healthy".into()
            } else {
                m.error.clone().unwrap_or_else(|| "unhealthy".into())
            },
        ]);
    }
    let mut out = format!("cluster {}  leader {}\n", s.cluster_id, s.leader);
    if let Some(q) = &s.quorum_lost {
        out.push_str(&format!("QUORUM LOST: {q}\n"));
    }
    if let Some(r) = &s.restoring {
        out.push_str(&format!("RESTORING: {r}\n"));
    }
    if let Some(l) = &s.last_snapshot {
        match (&l.id, &l.error) {
            (_, Some(e)) => out.push_str(&format!("WARNING: snapshot store {}: {e}\n", l.store)),
            (None, None) => out.push_str(&format!("WARNING: no snapshot in {}\n", l.store)),
            (Some(id), None) => out.push_str(&format!(
                "{}last snapshot {id} ({}, {} s ago) in {}\n",
                if l.stale {
                    "WARNING: older than two backup.interval: "
                } else {
                    ""
                },
                l.created.as_deref().unwrap_or("?"),
                l.age_seconds.unwrap_or_default(),
                l.store
            )),
        }
    }
    if let Some(p) = &s.paused_by {
        out.push_str(&format!(
            "heal loop PAUSED by {p}: no member is added, removed or moved until it is deleted\n"
        ));
    }
    out.push_str(&render_rows(&rows));
    out.push('\n');
    let mut certs = vec![vec![
        "CERTIFICATE".to_string(),
        "SUBJECT".into(),
        "EXPIRES".into(),
        "IN".into(),
    ]];
    for c in &s.certificates {
        certs.push(vec![
            c.file.clone(),
            c.subject.clone().unwrap_or_default(),
            c.not_after
                .clone()
                .unwrap_or_else(|| c.error.clone().unwrap_or_default()),
            c.expires_in_days
                .map(|d| format!("{d} days"))
                .unwrap_or_default(),
        ]);
    }
    out.push_str(&render_rows(&certs));
    out
}

fn render_rows(rows: &[Vec<String>]) -> String {
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let sep: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = sep.clone();
    for (i, r) in rows.iter().enumerate() {
        for (c, cell) in r.iter().enumerate() {
            out.push_str(&format!("| {:<w$} ", cell, w = widths[c]));
        }
        out.push_str("|\n");
        if i == 0 {
            out.push_str(&sep);
        }
    }
    out.push_str(&sep);
    out
}

fn human_bytes(b: i64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MB", b as f64 / 1048576.0)
    } else {
        format!("{:.0} kB", b as f64 / 1024.0)
    }
}
