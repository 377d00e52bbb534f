//! Membership changes made idempotent and retried: add as a learner (MemberAdd is not idempotent:
//! a timed-out add may have gone through, so the member list is checked and such an entry
//! adopted), promote once in sync (etcd refuses a learner that is not caught up), remove (etcd
//! refuses what would leave the started voters below quorum). Learners refuse member RPCs, so
//! every call goes to voting members; busy answers are retried; every wait ends at a deadline.

use crate::etcd::client;
use crate::model::cluster::{Answer, MemberView};
use crate::tls::ClientMaterial;
use crate::util::retry::Backoff;
use anyhow::{bail, Context, Result};
use etcd_client::{Client, MemberAddOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a connection or a read (member list, status) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one membership proposal may take before we look at the member list to see what
/// happened. With a leader a conf change is applied within milliseconds; one sent during an
/// election is dropped by raft without an answer and would otherwise hang until the deadline,
/// which is what made a heal of the leader's own member take over 10 s.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long to wait for a leader before proposing anyway (and letting the error decide).
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// Errors that mean "not now": the cluster is busy with another change or not yet ready.
const RETRYABLE: &[&str] = &[
    "too many learner members",
    "unhealthy cluster",
    "not enough started members",
    "leader changed",
    "request timed out",
    "no leader",
    "can only promote a learner member which is in sync with leader",
    "learner member not ready",
    "Unavailable",
    "transport error",
    "connection refused",
    "tcp connect error",
    "Timeout expired",
    "timed out",
    "deadline",
    "cancelled",
    // etcd 3.4 can answer a MemberAdd made right after a MemberRemove with this while the
    // removal is still being applied. (`remove` treats it as done before asking here, and
    // `promote` checks the member list before retrying.)
    "member not found",
];

/// Case does not matter: tonic says "The service is currently unavailable" and the OS
/// "Connection refused".
fn retryable(msg: &str) -> bool {
    let msg = msg.to_lowercase();
    RETRYABLE.iter().any(|r| msg.contains(&r.to_lowercase()))
}

/// Between attempts of a membership call: 0.5 s doubling to 5 s, with jitter.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(5))
}

/// Between attempts to add a learner: 0.25 s doubling to 0.5 s. The usual refusal is etcd's
/// rule that every voter has been connected for 5 s (just after a member was promoted or
/// restarted), which ends at a moment no backoff can see; a refused add costs etcd nothing.
fn add_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_millis(500))
}

/// A connection for membership calls, which may wait on raft longer than a probe.
pub(crate) async fn connect(endpoints: &[String], tls: &ClientMaterial) -> Result<Client> {
    client::connect(endpoints, tls, CALL_TIMEOUT).await
}

pub(crate) async fn list(c: &mut Client) -> Result<Vec<MemberView>> {
    let resp = tokio::time::timeout(CALL_TIMEOUT, c.member_list())
        .await
        .context("MemberList timed out")?
        .context("MemberList")?;
    Ok(resp.members().iter().map(client::member_view).collect())
}

/// Wait, up to `LEADER_WAIT` or `deadline`, until the members behind `c` know a leader that is
/// a voter of the current membership. Right after the leader's own member is removed, or its
/// process stops, followers still name it until their election timeout passes; a membership
/// proposal sent then is lost. The wait is best effort: on giving up the proposal is made anyway.
async fn await_leader(c: &mut Client, deadline: Instant) {
    let until = deadline.min(Instant::now() + LEADER_WAIT);
    let mut waited = false;
    loop {
        let leader = match tokio::time::timeout(ATTEMPT_TIMEOUT, c.status()).await {
            Ok(Ok(st)) => st.leader(),
            _ => 0,
        };
        if leader != 0 {
            if let Ok(members) = list(c).await {
                if members.iter().any(|m| m.id == leader && !m.is_learner) {
                    if waited {
                        tracing::info!(leader = %format!("{leader:x}"), "the cluster has a leader again");
                    }
                    return;
                }
            }
        }
        if Instant::now() >= until {
            tracing::info!("no leader among the current members yet; proposing anyway");
            return;
        }
        if !waited {
            tracing::info!(
                "waiting for the cluster to elect a leader before changing its membership"
            );
            waited = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find_by_url<'a>(members: &'a [MemberView], url: &str) -> Option<&'a MemberView> {
    members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == url))
}

/// While a join waits, once a minute: which members are unreachable (etcd 3.4 refuses every add
/// until all voters are connected; a dead voter also counts against the quorum), since when, and
/// the command that unblocks the join.
pub(crate) struct WaitReport {
    material: ClientMaterial,
    /// Where the certificates are on every member, for the etcdctl command.
    tls_dir: PathBuf,
    /// What the agents will do by themselves (the dead-member policy), or that they will not.
    policy: String,
    down_since: HashMap<u64, String>,
    next: Option<Instant>,
}

const WAIT_REPORT_EVERY: Duration = Duration::from_secs(60);

impl WaitReport {
    pub(crate) fn new(material: ClientMaterial, tls_dir: PathBuf, policy: String) -> WaitReport {
        WaitReport {
            material,
            tls_dir,
            policy,
            down_since: HashMap::new(),
            next: None,
        }
    }

    /// Report now if the last report is a minute old (or there was none).
    async fn tick(&mut self, members: &[MemberView], err: &str) {
        let now = Instant::now();
        if self.next.is_some_and(|t| now < t) {
            tracing::debug!(error = %err, "the cluster cannot take a new member yet; retrying");
            return;
        }
        self.next = Some(now + WAIT_REPORT_EVERY);
        let urls: Vec<String> = members
            .iter()
            .filter_map(|m| m.client_urls.first().cloned())
            .collect();
        let answers = client::probe_all(&urls, &self.material).await;
        let mut up: Vec<&str> = Vec::new();
        let mut down: Vec<&MemberView> = Vec::new();
        let mut answer = answers.iter();
        for m in members {
            let reachable = match m.client_urls.first() {
                Some(url) => {
                    let ok = matches!(answer.next(), Some(Answer::Cluster(_)));
                    if ok {
                        up.push(url);
                    }
                    ok
                }
                None => false, // added, never started
            };
            if !reachable {
                down.push(m);
            }
        }
        self.down_since
            .retain(|id, _| down.iter().any(|m| m.id == *id));
        if down.is_empty() {
            tracing::warn!(error = %err, "the cluster cannot take a new member yet, though every member answers; retrying");
            return;
        }
        for m in down {
            let since = self
                .down_since
                .entry(m.id)
                .or_insert_with(|| crate::util::time::utc_stamp(time::OffsetDateTime::now_utc()));
            let what = if m.name.is_empty() {
                "added but never started"
            } else {
                "unreachable"
            };
            let d = self.tls_dir.display();
            tracing::warn!(
                member = %format!("{:x}", m.id),
                name = %m.name,
                peer_urls = %m.peer_urls.join(","),
                error = %err,
                "the cluster cannot take a new member yet: member {:x} ({}) is {what} (seen so since {since}) and blocks this join. To unblock it, on a healthy member: etcdctl --endpoints {} --cacert {d}/ca.crt --cert {d}/client.crt --key {d}/client.key member remove {:x}. {}",
                m.id,
                m.peer_urls.join(","),
                up.join(","),
                m.id,
                self.policy,
            );
        }
    }
}

/// Add `peer_url` as a learner, or adopt it when it is already listed. Returns the member ID
/// and the membership after the add. While the cluster refuses, `report` says once a minute
/// what blocks the join. `removed`: the member this node has just removed for the same URL,
/// never adopted.
pub(crate) async fn add_learner(
    c: &mut Client,
    peer_url: &str,
    removed: Option<u64>,
    deadline: Instant,
    report: &mut WaitReport,
) -> Result<(u64, Vec<MemberView>)> {
    let mut pause = add_backoff().until(deadline);
    let mut members = Vec::new();
    loop {
        // A previous attempt (ours, or of an earlier run that was killed) may have gone through.
        if let Ok(listed) = list(c).await {
            match find_by_url(&listed, peer_url) {
                // etcd 3.4 answers MemberList from the asked member's own view, which may not
                // have applied the removal yet. Adopting that entry would start etcd as a
                // removed member, which etcd refuses for good (seen in the VM test: a crash
                // loop until the heal loop noticed). Wait for the removal to show instead.
                Some(m) if removed == Some(m.id) => {
                    tracing::info!(member = %format!("{:x}", m.id), %peer_url, "the member just removed is still listed by this view of the cluster; waiting for the removal to show");
                    if Instant::now() >= deadline {
                        bail!(
                            "member {:x}, removed, was still listed for {peer_url} at the deadline",
                            m.id
                        );
                    }
                    pause.wait().await;
                    continue;
                }
                Some(m) => {
                    tracing::info!(member = %format!("{:x}", m.id), %peer_url, "peer URL already listed; adopting that entry");
                    return Ok((m.id, listed));
                }
                None => members = listed,
            }
        }
        await_leader(c, deadline).await;
        let call = c.member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()));
        let err = match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
            Ok(Ok(resp)) => {
                let id = resp
                    .member()
                    .map(|m| m.id())
                    .context("MemberAdd answer without the new member")?;
                let members = resp.member_list().iter().map(client::member_view).collect();
                tracing::info!(member = %format!("{id:x}"), %peer_url, "added as a learner");
                return Ok((id, members));
            }
            Ok(Err(e)) => format!("{e}"),
            Err(_) => "MemberAdd timed out".to_string(),
        };
        if err.contains("Peer URLs already exists") {
            continue; // adopt on the next round
        }
        if !retryable(&err) {
            bail!("adding {peer_url} as a learner: {err}");
        }
        if Instant::now() >= deadline {
            bail!("adding {peer_url} as a learner did not succeed before the deadline: {err}");
        }
        report.tick(&members, &err).await;
        pause.wait().await;
    }
}

/// Remove member `id`; a member that is already gone counts as removed.
pub(crate) async fn remove(c: &mut Client, id: u64, deadline: Instant) -> Result<()> {
    let mut pause = backoff().until(deadline);
    loop {
        await_leader(c, deadline).await;
        let err = match tokio::time::timeout(ATTEMPT_TIMEOUT, c.member_remove(id)).await {
            Ok(Ok(_)) => {
                tracing::info!(member = %format!("{id:x}"), "member removed");
                return Ok(());
            }
            Ok(Err(e)) => format!("{e}"),
            Err(_) => "MemberRemove timed out".to_string(),
        };
        if err.contains("member not found") {
            return Ok(());
        }
        if let Ok(members) = list(c).await {
            if !members.iter().any(|m| m.id == id) {
                return Ok(());
            }
        }
        if !retryable(&err) || Instant::now() >= deadline {
            bail!("removing member {id:x}: {err}");
        }
        tracing::info!(error = %err, "cannot remove the member yet; retrying");
        pause.wait().await;
    }
}

/// Promote learner `id`, retrying while it catches up with the leader.
pub(crate) async fn promote(c: &mut Client, id: u64, deadline: Instant) -> Result<()> {
    // A learner catches up within seconds: retry often.
    let mut pause =
        Backoff::new(Duration::from_millis(500), Duration::from_secs(2)).until(deadline);
    loop {
        await_leader(c, deadline).await;
        let err = match tokio::time::timeout(ATTEMPT_TIMEOUT, c.member_promote(id)).await {
            Ok(Ok(_)) => {
                tracing::info!(member = %format!("{id:x}"), "promoted to voter");
                return Ok(());
            }
            Ok(Err(e)) => format!("{e}"),
            Err(_) => "MemberPromote timed out".to_string(),
        };
        if err.contains("can only promote a learner member") && !err.contains("in sync") {
            return Ok(()); // already a voter
        }
        if let Ok(members) = list(c).await {
            match members.iter().find(|m| m.id == id) {
                Some(m) if !m.is_learner => return Ok(()),
                None => {
                    bail!("member {id:x} is no longer in the cluster; it was removed while joining")
                }
                _ => {}
            }
        }
        if !retryable(&err) || Instant::now() >= deadline {
            bail!("promoting member {id:x}: {err}");
        }
        tracing::debug!(error = %err, "learner not ready for promotion; retrying");
        pause.wait().await;
    }
}

/// `--initial-cluster` for `existing`: the whole membership, learners and unstarted members
/// included (etcd's `existing` start checks that the count matches), with a unique placeholder
/// name for each unnamed (added but unstarted) one: `=url` entries would collapse into one key.
pub(crate) fn initial_cluster(members: &[MemberView], my_id: u64, my_name: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for m in members {
        let name = if m.id == my_id {
            my_name.to_string()
        } else if m.name.is_empty() {
            format!("unstarted-{:x}", m.id)
        } else {
            m.name.clone()
        };
        for u in &m.peer_urls {
            parts.push(format!("{name}={u}"));
        }
    }
    parts.sort();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, name: &str, url: &str) -> MemberView {
        MemberView {
            id,
            name: name.into(),
            peer_urls: vec![url.into()],
            client_urls: vec![],
            is_learner: false,
        }
    }

    #[test]
    fn initial_cluster_names_every_member_uniquely() {
        let members = vec![
            m(1, "etcd1", "https://10.0.0.1:2380"),
            m(0xa, "", "https://10.0.0.2:2380"),
            m(0xb, "", "https://10.0.0.3:2380"),
            m(7, "", "https://10.0.0.4:2380"),
        ];
        assert_eq!(
            initial_cluster(&members, 7, "etcd4"),
            "etcd1=https://10.0.0.1:2380,etcd4=https://10.0.0.4:2380,unstarted-a=https://10.0.0.2:2380,unstarted-b=https://10.0.0.3:2380"
        );
    }

    #[test]
    fn classifies_etcd_errors() {
        assert!(retryable("etcdserver: too many learner members in cluster"));
        assert!(retryable("etcdserver: unhealthy cluster"));
        assert!(retryable(
            "etcdserver: re-configuration failed due to not enough started members"
        ));
        assert!(retryable(
            "etcdserver: can only promote a learner member which is in sync with leader"
        ));
        assert!(retryable("etcdserver: member not found"));
        // The member asked went away between the probe and the call (seen in the lab).
        assert!(retryable(
            "grpc request error: code: 'The service is currently unavailable', message: \"tcp connect error\", source: tonic::transport::Error(Transport, ConnectError(ConnectError(\"tcp connect error\", 10.0.0.12:2379, Os { code: 111, kind: ConnectionRefused, message: \"Connection refused\" })))"
        ));
        assert!(!retryable("etcdserver: Peer URLs already exists"));
        assert!(!retryable("etcdserver: permission denied"));
    }
}
