//! Asking for a fleet-wide restore (`etcd-bootstrap restore --from`), from any one node, also
//! when etcd has lost its quorum: check the snapshot (hashes, decryption, a trial restore) and
//! that no other request is under way, work out the members and the cluster to restore, write
//! the request into the store (`backup::request`), and watch the members come back. The agents
//! do the work (`agent::restore`), so it works while they run, and a member that is down follows
//! the request when its agent starts again. The command prints and asks for confirmation.

use crate::backup::manifest::Manifest;
use crate::backup::store::Store;
use crate::backup::{catalog, request, verify};
use crate::config::Config;
use crate::decide::restore::{may_request, FleetRequest, RequestMember, RequestState};
use crate::error::Refused;
use crate::etcd::datadir::Record;
use crate::etcd::{client, membership};
use crate::model::cluster::Answer;
use crate::tls::ClientMaterial;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// What `prepare` has to tell on the way (the command prints it as it comes).
#[derive(Debug)]
pub(crate) enum Note {
    /// A member of the running cluster that has never started: left out of the request; it
    /// joins the restored cluster through the normal join path.
    NeverStarted { id: u64, peer_urls: Vec<String> },
    /// The local etcd does not answer: the members are this node's last-known membership.
    LastKnown { members: usize },
    /// `request.json` holds an object that is not a signed request (it is replaced).
    UntrustedRequest(String),
}

/// A request, checked and ready to be written.
pub(crate) struct Prepared {
    pub store: Store,
    pub material: ClientMaterial,
    /// The snapshot to restore.
    pub snapshot: Manifest,
    /// Its check: hashes match and it restores.
    pub checked: verify::VerifyReport,
    pub request: FleetRequest,
    /// The version of `request.json` this request replaces (`None`: there was none).
    replaces: Option<object_store::UpdateVersion>,
}

/// How far one member is, as the watch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemberProgress {
    /// It answers as a member of the restored cluster.
    Restored,
    /// What its agent last reported in the store.
    Reported(String),
    /// Its agent has not reported anything yet.
    Waiting,
}

/// How the watch ended well.
#[derive(Debug)]
pub(crate) enum Watched {
    /// Every member runs the restored cluster.
    All { count: usize, took: Duration },
    /// A quorum does, and the others did not follow within the grace (or the timeout); they
    /// follow the request when their agents run again.
    Quorum { count: usize, missing: Vec<String> },
}

/// Everything up to writing the request: refused while another request is under way, before
/// anything is downloaded; the snapshot checked first, so that no member stops for a snapshot
/// that cannot be restored; the members and the cluster's ID.
pub(crate) async fn prepare(
    cfg: &Config,
    store: Store,
    from: &str,
    mut note: impl FnMut(Note),
) -> Result<Prepared> {
    let material = super::client_material(cfg)?;
    // The request is signed with this node's peer key: refused here, before anything else,
    // when it cannot be (the members would never follow an unsigned request).
    let key = store.signing_key()?;
    // One request at a time: refused before anything is downloaded.
    let replaces = match request::read(&store).await? {
        request::Current::None => None,
        request::Current::Trusted(current, version) => {
            let state = request_state(&store, &current, &material).await;
            may_request(Some(&current), &state)
                .map_err(|why| Refused(format!("not restoring: {why}")))?;
            Some(version)
        }
        request::Current::Untrusted { why, version } => {
            note(Note::UntrustedRequest(why));
            Some(version)
        }
    };
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
    let scratch = crate::util::fs::temp_scratch("etcd-bootstrap-restore-check")?;
    let checked = verify::verify_then_remove(
        &store,
        &entry,
        cfg.backup
            .as_ref()
            .and_then(|b| b.age_identity_file.as_deref()),
        &cfg.etcd.binary,
        &scratch,
    )
    .await
    .with_context(|| format!("checking snapshot {}", m.id))?;

    let (members, from_cluster) = members(cfg, &material, &mut note).await?;
    let from_cluster = from_cluster.ok_or_else(|| {
        Refused(format!(
            "the local etcd does not answer and {} does not say which cluster this node belongs to: run restore on another member",
            crate::etcd::datadir::record_path(&cfg.member.data_dir).display()
        ))
    })?;
    let id = format!(
        "{}-{}",
        crate::util::time::utc_stamp(time::OffsetDateTime::now_utc()),
        &crate::util::hex::random_hex()[..6]
    );
    let by = key.name().to_string();
    let request = FleetRequest::new(
        &cfg.cluster.name,
        &id,
        &m.id,
        &crate::backup::manifest::rfc3339(time::OffsetDateTime::now_utc()),
        &by,
        from_cluster,
        members,
    );
    Ok(Prepared {
        snapshot: entry.manifest,
        store,
        material,
        checked,
        request,
        replaces,
    })
}

impl Prepared {
    /// Write the request into the store: from here on the agents carry it out.
    pub(crate) async fn submit(&self) -> Result<()> {
        request::write(&self.store, &self.request, self.replaces.clone())
            .await
            .map_err(|e| match e {
                request::WriteError::Raced(_) => Refused(format!("not restoring: {e}")).into(),
                request::WriteError::Failed(e) => e,
            })?;
        self.record_in_etcd().await;
        Ok(())
    }

    /// When the cluster still has a quorum, the request is also written into etcd with the
    /// client certificate of whoever ran `restore`: a record, outside the bucket, of who asked
    /// for what (best effort; the store's copy is what the agents follow).
    async fn record_in_etcd(&self) {
        let key = format!("/etcd-bootstrap/restore/requests/{}", self.request.id);
        let value = serde_json::json!({
            "snapshot": self.request.snapshot,
            "by": self.request.by,
            "requested": self.request.requested,
            "token": self.request.token,
            "members": self.request.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
        })
        .to_string();
        let urls: Vec<String> = self
            .request
            .members
            .iter()
            .map(|m| m.client_url.clone())
            .collect();
        let put = async {
            let mut c = client::connect(&urls, &self.material, client::PROBE_TIMEOUT).await?;
            client::bounded(
                "Put",
                client::PROBE_TIMEOUT,
                c.put(key.as_str(), value, None),
            )
            .await
            .map(|_| ())
        };
        match put.await {
            Ok(()) => tracing::info!(%key, "the restore request is recorded in etcd too"),
            Err(e) => {
                tracing::info!(error = %format!("{e:#}"), "the restore request could not be recorded in etcd (no quorum?); the store's copy is what the agents follow")
            }
        }
    }

    /// Watch the members' progress until every one runs the restored cluster, or `timeout`.
    /// Once a quorum does, the others get a little longer (a member that is down follows the
    /// request when it comes back, without this command). `on_poll` gets every second the time
    /// since the watch began and each member's progress.
    pub(crate) async fn watch(
        &self,
        cfg: &Config,
        timeout: Duration,
        mut on_poll: impl FnMut(Duration, &[(&str, MemberProgress)]),
    ) -> Result<Watched> {
        let (store, r, material) = (&self.store, &self.request, &self.material);
        let started = Instant::now();
        let deadline = started + timeout;
        let grace = cfg.heal.interval * 2 + Duration::from_secs(30);
        let mut quorum_at: Option<Instant> = None;
        loop {
            if let Ok(request::Current::Trusted(now, _)) = request::read(store).await {
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
            let states: Vec<(&str, MemberProgress)> = r
                .members
                .iter()
                .zip(&up)
                .map(|(m, up)| {
                    let state = if *up {
                        MemberProgress::Restored
                    } else {
                        progress
                            .iter()
                            .find(|p| p.member == m.name)
                            .map(|p| MemberProgress::Reported(p.state.clone()))
                            .unwrap_or(MemberProgress::Waiting)
                    };
                    (m.name.as_str(), state)
                })
                .collect();
            on_poll(started.elapsed(), &states);
            if let Some(p) = progress.iter().find(|p| p.failed()) {
                return Err(Refused(format!(
                    "{} could not restore snapshot {}: {}; its etcd runs on as it was",
                    p.member, r.snapshot, p.state
                ))
                .into());
            }
            let count = up.iter().filter(|b| **b).count();
            if count == r.members.len() {
                return Ok(Watched::All {
                    count,
                    took: started.elapsed(),
                });
            }
            if count >= r.quorum() {
                let at = *quorum_at.get_or_insert_with(Instant::now);
                if at.elapsed() >= grace || Instant::now() >= deadline {
                    let missing = r
                        .members
                        .iter()
                        .zip(&up)
                        .filter(|(_, up)| !**up)
                        .map(|(m, _)| m.name.clone())
                        .collect();
                    return Ok(Watched::Quorum { count, missing });
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
}

/// The members to restore, with their names (etcd needs `--name` to match `--initial-cluster`),
/// and the cluster's ID: from the running cluster when it answers, else from this node's
/// identity record (kept current while the member was healthy).
async fn members(
    cfg: &Config,
    material: &ClientMaterial,
    note: &mut impl FnMut(Note),
) -> Result<(Vec<RequestMember>, Option<u64>)> {
    let endpoint = super::local_endpoint(cfg);
    if let Ok((mut c, me)) = client::who_is(&endpoint, material).await {
        if let Ok(list) = membership::list(&mut c).await {
            let (started, unstarted): (Vec<_>, Vec<_>) =
                list.into_iter().partition(|m| m.started());
            for m in unstarted {
                note(Note::NeverStarted {
                    id: m.id,
                    peer_urls: m.peer_urls,
                });
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
            crate::etcd::datadir::record_path(&cfg.member.data_dir).display()
        ))
        .into());
    }
    note(Note::LastKnown {
        members: members.len(),
    });
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

async fn request_state(store: &Store, r: &FleetRequest, material: &ClientMaterial) -> RequestState {
    let restored = restored(r, material).await.iter().filter(|b| **b).count();
    let failed = request::progress(store, &r.id)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|p| p.failed())
        .count();
    RequestState { restored, failed }
}
