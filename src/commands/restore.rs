//! `etcd-bootstrap restore --from ID|latest`: put every member of the cluster back to one
//! snapshot, from any one node, also when etcd has lost its quorum. The command checks the
//! snapshot, writes the request into the store (`backup::request`) and watches the members come
//! back; the agents do the work (`agent::restore`), so it works while they run, and a member that
//! is down follows the request when its agent starts again.

use crate::backup::{catalog, request, store};
use crate::config::Config;
use crate::datadir::Record;
use crate::decide::restore::{may_request, FleetRequest, RequestMember, RequestState};
use crate::error::{ConfigError, Refused};
use crate::etcd::{client, membership};
use crate::model::cluster::Answer;
use crate::tls::ClientMaterial;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

pub async fn restore(cfg: Config, from: &str, yes: bool, timeout: Duration) -> Result<()> {
    let b = cfg.backup.as_ref().ok_or_else(|| {
        ConfigError::new(
            "backup.url",
            "",
            "is not set: restore needs the snapshot store the members read the request from",
        )
    })?;
    let store = store::open(b, &cfg.cluster.name)?;
    let material = ClientMaterial::from_dir(&cfg.tls.dir)
        .context("reading the client certificate (has this node been bootstrapped?)")?;
    // One request at a time: refused before anything is downloaded.
    if let Some(current) = request::read(&store).await? {
        let state = request_state(&store, &current, &material).await;
        may_request(Some(&current), &state)
            .map_err(|why| Refused(format!("not restoring: {why}")))?;
    }
    let entry = catalog::find(&store, from).await?;
    let m = &entry.manifest;
    if !entry.verified {
        return Err(Refused(format!(
            "snapshot {}: its data object is missing or not {} bytes in {}",
            m.id, m.size, store.describe
        ))
        .into());
    }
    // Checked here first (hashes, decryption, a trial restore), so that no member stops for a
    // snapshot that cannot be restored.
    let scratch = std::env::temp_dir().join(format!(
        "etcd-bootstrap-restore-check-{}-{}",
        std::process::id(),
        m.id
    ));
    crate::util::fs::ensure_dir(&scratch, 0o700)?;
    let checked = crate::backup::verify::verify(
        &store,
        &entry,
        b.age_identity_file.as_deref(),
        &cfg.etcd.binary,
        &scratch,
    )
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    let checked = checked.with_context(|| format!("checking snapshot {}", m.id))?;

    let (members, from_cluster) = members(&cfg, &material).await?;
    let from_cluster = from_cluster.ok_or_else(|| {
        Refused(format!(
            "the local etcd does not answer and {} does not say which cluster this node belongs to: run restore on another member",
            crate::datadir::record_path(&cfg.member.data_dir).display()
        ))
    })?;
    let id = format!(
        "{}-{}",
        crate::datadir::utc_stamp(time::OffsetDateTime::now_utc()),
        &crate::util::hex::random_hex()[..6]
    );
    let by = crate::agent::env_value(&cfg, "ETCD_NAME")
        .or_else(crate::observe::hostname)
        .unwrap_or_default();
    let r = FleetRequest::new(
        &cfg.cluster.name,
        &id,
        &m.id,
        &crate::backup::manifest::rfc3339(time::OffsetDateTime::now_utc()),
        &by,
        from_cluster,
        members,
    );
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
    request::write(&store, &r).await?;
    println!(
        "restore request {} written to {}; each member's agent carries it out at its next heal.interval tick",
        r.id, store.describe
    );
    watch(&cfg, &store, &r, &material, timeout).await
}

/// The members to restore, with their names (etcd needs `--name` to match `--initial-cluster`),
/// and the cluster's ID: from the running cluster when it answers, else from this node's
/// identity record (kept current while the member was healthy).
async fn members(
    cfg: &Config,
    material: &ClientMaterial,
) -> Result<(Vec<RequestMember>, Option<u64>)> {
    let endpoint = crate::agent::local_endpoint(cfg);
    if let Ok((mut c, me)) = client::who_is(&endpoint, material).await {
        if let Ok(list) = membership::list(&mut c).await {
            let (started, unstarted): (Vec<_>, Vec<_>) =
                list.into_iter().partition(|m| m.started());
            for m in &unstarted {
                println!(
                    "note: member {:x} ({}) has never started: it is left out, and joins the restored cluster through the normal join path",
                    m.id,
                    m.peer_urls.join(",")
                );
            }
            let members = started
                .into_iter()
                .map(|m| RequestMember {
                    name: m.name,
                    peer_url: m.peer_urls.first().cloned().unwrap_or_default(),
                    client_url: m.client_urls.first().cloned().unwrap_or_default(),
                })
                .collect();
            return Ok((members, Some(me.cluster_id)));
        }
    }
    let record = Record::load(&cfg.member.data_dir)?.context(
        "the local etcd does not answer and this node has no identity record: run restore on a node that has been a member",
    )?;
    let members: Vec<RequestMember> = record
        .members
        .iter()
        .map(|m| RequestMember {
            name: m.name.clone(),
            peer_url: m.peer_urls.first().cloned().unwrap_or_default(),
            client_url: m.client_urls.first().cloned().unwrap_or_default(),
        })
        .collect();
    if members.is_empty()
        || members
            .iter()
            .any(|m| m.name.is_empty() || m.peer_url.is_empty())
    {
        return Err(Refused(format!(
            "the local etcd does not answer, and the membership in {} lacks member names (written by an older version or before the members started): run restore on another member, or once etcd answers",
            crate::datadir::record_path(&cfg.member.data_dir).display()
        ))
        .into());
    }
    println!(
        "the local etcd does not answer: the membership is this node's last-known one ({} members)",
        members.len()
    );
    Ok((members, record.cluster()))
}

/// Which members answer as members of the restored cluster.
async fn restored(r: &FleetRequest, material: &ClientMaterial) -> Vec<bool> {
    let urls: Vec<String> = r.members.iter().map(|m| m.client_url.clone()).collect();
    let want = r.cluster_id();
    client::probe_all(&urls, material)
        .await
        .iter()
        .map(|a| matches!(a, Answer::Cluster(v) if v.cluster_id == want))
        .collect()
}

async fn request_state(
    store: &store::Store,
    r: &FleetRequest,
    material: &ClientMaterial,
) -> RequestState {
    let restored = restored(r, material).await.iter().filter(|b| **b).count();
    let failed = request::progress(store, &r.id)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|p| p.failed())
        .count();
    RequestState { restored, failed }
}

/// Show the members' progress until every one runs the restored cluster, or `timeout`. Once a
/// quorum does, the others get a little longer (a member that is down follows the request when
/// it comes back, without this command).
async fn watch(
    cfg: &Config,
    store: &store::Store,
    r: &FleetRequest,
    material: &ClientMaterial,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let deadline = started + timeout;
    let grace = cfg.heal.interval * 2 + Duration::from_secs(30);
    let mut quorum_at: Option<Instant> = None;
    let mut shown = String::new();
    loop {
        if let Ok(Some(now)) = request::read(store).await {
            if now.id != r.id {
                return Err(Refused(format!(
                    "restore request {} was superseded by {} (snapshot {}, asked by {}): the members follow that one",
                    r.id, now.id, now.snapshot, now.by
                ))
                .into());
            }
        }
        let progress = request::progress(store, &r.id).await.unwrap_or_default();
        let up = restored(r, material).await;
        let line = r
            .members
            .iter()
            .zip(&up)
            .map(|(m, up)| {
                let state = if *up {
                    "member of the restored cluster".to_string()
                } else {
                    progress
                        .iter()
                        .find(|p| p.member == m.name)
                        .map(|p| p.state.clone())
                        .unwrap_or_else(|| "waiting for its agent".into())
                };
                format!("{}: {state}", m.name)
            })
            .collect::<Vec<_>>()
            .join("; ");
        if line != shown {
            println!("[{:>4}s] {line}", started.elapsed().as_secs());
            shown = line;
        }
        if let Some(p) = progress.iter().find(|p| p.failed()) {
            return Err(Refused(format!(
                "{} could not restore snapshot {}: {}; its etcd runs on as it was",
                p.member, r.snapshot, p.state
            ))
            .into());
        }
        let count = up.iter().filter(|b| **b).count();
        if count == r.members.len() {
            println!(
                "restored: all {} members run snapshot {} as cluster {:x} ({:.1} s)",
                count,
                r.snapshot,
                r.cluster_id(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if count >= r.quorum() {
            let at = *quorum_at.get_or_insert_with(Instant::now);
            if at.elapsed() >= grace || Instant::now() >= deadline {
                let missing: Vec<&str> = r
                    .members
                    .iter()
                    .zip(&up)
                    .filter(|(_, up)| !**up)
                    .map(|(m, _)| m.name.as_str())
                    .collect();
                println!(
                    "restored: {count} of {} members run snapshot {} as cluster {:x} (a quorum); {} will follow the request when their agents run again",
                    r.members.len(),
                    r.snapshot,
                    r.cluster_id(),
                    missing.join(", ")
                );
                return Ok(());
            }
        } else if Instant::now() >= deadline {
            bail!(
                "after {timeout:?} only {count} of {} members run the restored cluster (a quorum is {}); the request stays in the store and the agents go on following it: start the members that are down, see their logs",
                r.members.len(),
                r.quorum()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
