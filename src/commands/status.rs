//! `etcd-bootstrap status`: members, leader, learners, raft index, DB size, health and certificate
//! expiry, as a table or as JSON.

use crate::agent::snapshots::LastSnapshot;
use crate::agent::status::{collect, Status};
use crate::config::Config;
use anyhow::Result;

/// Gather the status (`agent::status`) and print it.
pub(crate) async fn status(cfg: &Config, endpoints: &[String], json: bool) -> Result<()> {
    let status = collect(cfg, endpoints).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", table(&status));
    }
    Ok(())
}

pub(crate) fn table(s: &Status) -> String {
    let mut out = notes(s);
    out.push_str(&members_table(s));
    out.push('\n');
    out.push_str(&certificates_table(s));
    out
}

/// The member table: one row per member, its role, version, raft index, DB size and health.
fn members_table(s: &Status) -> String {
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
            m.db_size
                .map(|b| crate::util::text::size_text(b.max(0) as u64))
                .unwrap_or_default(),
            if m.healthy {
                "healthy".into()
            } else {
                m.error.clone().unwrap_or_else(|| "unhealthy".into())
            },
        ]);
    }
    render_rows(&rows)
}

/// The lines above the tables: the cluster and its leader, then what needs attention.
fn notes(s: &Status) -> String {
    let mut out = format!("cluster {}  leader {}\n", s.cluster_id, s.leader);
    if let Some(q) = &s.quorum_lost {
        out.push_str(&format!("QUORUM LOST: {q}\n"));
    }
    if let Some(a) = &s.auto_recovery {
        out.push_str(&format!("AUTOMATIC RECOVERY: {a}\n"));
    }
    if let Some(r) = &s.last_auto_recovery {
        out.push_str(&format!("last automatic recovery {}: {}\n", r.at, r.what));
    }
    if let Some(r) = &s.restoring {
        out.push_str(&format!("RESTORING: {r}\n"));
    }
    if let Some(l) = &s.last_snapshot {
        out.push_str(&snapshot_lines(l));
    }
    if let Some(why) = &s.config_rejected {
        out.push_str(&format!(
            "config rejected: {why} (the agent runs on the configuration it last accepted)\n"
        ));
    }
    if let Some(h) = &s.rollout_halted {
        out.push_str(&format!("{h}\n"));
    }
    if let Some(p) = &s.paused_by {
        out.push_str(&format!(
            "heal loop PAUSED by {p}: no member is added, removed or moved until it is deleted\n"
        ));
    }
    out
}

/// The last snapshot, the delta chain and any untrusted object in the store.
fn snapshot_lines(l: &LastSnapshot) -> String {
    let mut out = String::new();
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
    if let Some(d) = &l.delta {
        out.push_str(&format!(
            "{}delta segments: {} ({} events) in the chain of {}, up to revision {}; newest {} s ago{}\n",
            if d.stale {
                "WARNING: older than three backup.delta_interval with writes not in the store: "
            } else {
                ""
            },
            d.segments,
            d.events,
            d.base,
            d.last_revision,
            d.newest_segment_age_seconds,
            match d.cluster_revision {
                Some(r) if r <= d.last_revision => "; every revision is in the store".to_string(),
                Some(r) => format!("; the cluster is at revision {r}"),
                None => String::new(),
            }
        ));
    }
    if let Some(u) = l.untrusted.first() {
        out.push_str(&format!(
            "WARNING: {} untrusted object(s) in {} are ignored, e.g. {}: {}\n",
            l.untrusted.len(),
            l.store,
            crate::util::text::printable(&u.object, 120),
            crate::util::text::printable(&u.why, 200)
        ));
    }
    out
}

/// The certificate table: each file, its subject and when it expires.
fn certificates_table(s: &Status) -> String {
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
    render_rows(&certs)
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
