//! `etcd-bootstrap restore --from ID|latest`: put every member of the cluster back to one
//! snapshot, from any one node, also when etcd has lost its quorum. `agent::restore_request`
//! checks the snapshot, works out the request, writes it into the store and watches the members
//! come back; this command prints what will happen, asks for confirmation and shows the
//! progress. The agents do the work (`agent::restore`).

use crate::agent::restore_request::{self, MemberProgress, Note, Watched};
use crate::backup::store;
use crate::config::Config;
use crate::error::ConfigError;
use anyhow::{bail, Result};
use std::io::{BufRead, Write};
use std::time::Duration;

pub(crate) async fn restore(cfg: Config, from: &str, yes: bool, timeout: Duration) -> Result<()> {
    let b = cfg.backup.as_ref().ok_or_else(|| {
        ConfigError::new(
            "backup.url",
            "",
            "is not set: restore needs the snapshot store the members read the request from",
        )
    })?;
    let store = store::open(b, &cfg.cluster.name, &cfg.tls.dir)?;
    let prepared = restore_request::prepare(&cfg, store, from, |note| match note {
        Note::NeverStarted { id, peer_urls } => println!(
            "note: member {id:x} ({}) has never started: it is left out, and joins the restored cluster through the normal join path",
            peer_urls.join(",")
        ),
        Note::LastKnown { members } => println!(
            "the local etcd does not answer: the membership is this node's last-known one ({members} members)"
        ),
        Note::UntrustedRequest(why) => println!(
            "warning: the store's restore request is not a signed request of this cluster ({}); the members never followed it, and this request replaces it. Whoever can write the bucket wrote it: check the bucket's access",
            crate::util::text::printable(&why, 300)
        ),
    })
    .await?;
    let (m, checked, r) = (&prepared.snapshot, &prepared.checked, &prepared.request);
    println!(
        "Snapshot {} (created {}, revision {}, {} keys) checked: hashes match, it restores with {}.",
        m.id, m.created, m.revision, checked.total_keys, checked.restored_with
    );
    println!(
        "Every member ({}) will stop etcd, move its data dir aside (kept, not deleted) and restore this snapshot; the cluster comes back as a new cluster {:x} with exactly the snapshot's keys. Keys written after {} are gone from it.",
        r.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        r.cluster_id(),
        m.created
    );
    if !yes {
        print!("Type \"restore\" to go on: ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim() != "restore" {
            bail!("not confirmed; nothing was changed");
        }
    }
    prepared.submit().await?;
    println!(
        "restore request {} written to {}; each member's agent carries it out at its next heal.interval tick",
        r.id, prepared.store.describe
    );
    let mut shown = String::new();
    let watched = prepared
        .watch(&cfg, timeout, |elapsed, members| {
            let line = members
                .iter()
                .map(|(name, progress)| {
                    let state = match progress {
                        MemberProgress::Restored => "member of the restored cluster",
                        MemberProgress::Reported(state) => state.as_str(),
                        MemberProgress::Waiting => "waiting for its agent",
                    };
                    format!("{name}: {state}")
                })
                .collect::<Vec<_>>()
                .join("; ");
            if line != shown {
                println!("[{:>4}s] {line}", elapsed.as_secs());
                shown = line;
            }
        })
        .await?;
    match watched {
        Watched::All { count, took } => println!(
            "restored: all {} members run snapshot {} as cluster {:x} ({:.1} s)",
            count,
            r.snapshot,
            r.cluster_id(),
            took.as_secs_f64()
        ),
        Watched::Quorum { count, missing } => println!(
            "restored: {count} of {} members run snapshot {} as cluster {:x} (a quorum); {} will follow the request when their agents run again",
            r.members.len(),
            r.snapshot,
            r.cluster_id(),
            missing.join(", ")
        ),
    }
    Ok(())
}
