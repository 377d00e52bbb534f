//! A thin layer over etcd-client: mTLS connections, bounded in time, and the questions the
//! bootstrapper asks (who are you, which cluster, who is in it, are you healthy).

use crate::model::cluster::{Answer, ClusterView, MemberView};
use crate::tls::ClientMaterial;
use anyhow::{bail, Context, Result};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use std::future::Future;
use std::time::Duration;

/// Connect timeout and per-request timeout for probes of peers that may not be up yet.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) async fn connect(
    endpoints: &[String],
    tls: &ClientMaterial,
    timeout: Duration,
) -> Result<Client> {
    let tls_options = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
    let options = ConnectOptions::new()
        .with_tls(tls_options)
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    let connect = Client::connect(endpoints, Some(options));
    tokio::time::timeout(timeout, connect)
        .await
        .with_context(|| format!("connecting to {} timed out", endpoints.join(",")))?
        .with_context(|| format!("connecting to {}", endpoints.join(",")))
}

/// One RPC, bounded: etcd-client connects lazily, so the TCP connect and the TLS handshake happen
/// inside the first call, where a peer that accepts TCP but never finishes the handshake would
/// otherwise hold it for minutes.
pub(crate) async fn bounded<T, E>(
    what: &str,
    limit: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r.with_context(|| what.to_string()),
        Err(_) => bail!("{what} did not answer within {limit:?}"),
    }
}

/// What `endpoint` says about its cluster, or why it said nothing.
pub(crate) async fn probe(endpoint: &str, tls: &ClientMaterial) -> Answer {
    match tokio::time::timeout(2 * PROBE_TIMEOUT, probe_inner(endpoint, tls)).await {
        Ok(Ok(view)) => Answer::Cluster(view),
        Ok(Err(e)) => Answer::NoAnswer(format!("{e:#}")),
        Err(_) => Answer::NoAnswer("timed out".into()),
    }
}

/// `probe` of every endpoint at once, answers in the order of `endpoints`.
pub(crate) async fn probe_all(endpoints: &[String], tls: &ClientMaterial) -> Vec<Answer> {
    let mut set = tokio::task::JoinSet::new();
    for (i, e) in endpoints.iter().enumerate() {
        let e = e.clone();
        let m = tls.clone();
        set.spawn(async move { (i, probe(&e, &m).await) });
    }
    let mut out: Vec<(usize, Answer)> = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(pair) = r {
            out.push(pair);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, a)| a).collect()
}

async fn probe_inner(endpoint: &str, tls: &ClientMaterial) -> Result<ClusterView> {
    let (mut client, me) = who_is(endpoint, tls).await?;
    let mut view = ClusterView {
        endpoint: endpoint.to_string(),
        cluster_id: me.cluster_id,
        member_id: me.member_id,
        leader: me.leader,
        is_learner: me.is_learner,
        members: vec![],
    };
    match bounded("Cluster.MemberList", PROBE_TIMEOUT, client.member_list()).await {
        Ok(list) => view.members = list.members().iter().map(member_view).collect(),
        // A learner refuses most RPCs ("rpc not supported for learner"); its status alone is
        // still an answer.
        Err(e) if view.is_learner => {
            tracing::debug!(%endpoint, error = %e, "learner refused MemberList")
        }
        Err(e) => return Err(e),
    }
    Ok(view)
}

pub(crate) fn member_view(m: &etcd_client::Member) -> MemberView {
    MemberView {
        id: m.id(),
        name: m.name().to_string(),
        peer_urls: m.peer_urls().to_vec(),
        client_urls: m.client_urls().to_vec(),
        is_learner: m.is_learner(),
    }
}

/// Healthy as `etcdctl endpoint health` means it: the member knows a leader and a linearizable
/// read goes through (which needs a quorum). Returns what it said about itself.
pub(crate) async fn check_health(endpoint: &str, tls: &ClientMaterial) -> Result<Whoami> {
    let (mut client, me) = who_is(endpoint, tls).await?;
    if !me.errors.is_empty() {
        bail!("member reports errors: {}", me.errors.join("; "));
    }
    if me.leader == 0 {
        bail!("no leader yet");
    }
    bounded(
        "linearizable read (needs a quorum)",
        PROBE_TIMEOUT,
        client.get("health", None),
    )
    .await?;
    Ok(me)
}

/// Maintenance.Status of the member at `url` alone (DB size and in use, version, raft index,
/// errors and alarms), bounded. It answers on learners and without a quorum.
pub(crate) async fn status(url: &str, tls: &ClientMaterial) -> Result<etcd_client::StatusResponse> {
    let mut c = connect(&[url.to_string()], tls, PROBE_TIMEOUT).await?;
    bounded("Maintenance.Status", PROBE_TIMEOUT, c.status()).await
}

/// What a member says about itself in Maintenance.Status (it answers on learners too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Whoami {
    pub member_id: u64,
    pub cluster_id: u64,
    /// 0 when it knows no leader.
    pub leader: u64,
    pub is_learner: bool,
    /// The committed raft index.
    pub raft_index: u64,
    /// The current raft term (it may grow without new entries while the member campaigns).
    pub raft_term: u64,
    /// The revision of its applied key space (local: answered without a quorum).
    pub revision: i64,
    /// "etcdserver: no leader", alarms, ...
    pub errors: Vec<String>,
    /// The release it runs ("3.5.30").
    pub version: String,
}

/// Whether member `member_id`, which reports `leader` as its leader, leads its cluster: the one
/// rule the agents go by, so the jobs only the leader's agent runs (the dead-member watch,
/// defragmentation and NOSPACE, the snapshot source, the rollout's order) agree on it. A member
/// that knows no leader (0) is not one.
pub(crate) fn leads(member_id: u64, leader: u64) -> bool {
    leader != 0 && leader == member_id
}

impl Whoami {
    pub(crate) fn is_leader(&self) -> bool {
        leads(self.member_id, self.leader)
    }
}

/// Connect to `endpoint` and ask who it is; the connection is returned for further calls.
pub(crate) async fn who_is(endpoint: &str, tls: &ClientMaterial) -> Result<(Client, Whoami)> {
    let mut client = connect(&[endpoint.to_string()], tls, PROBE_TIMEOUT).await?;
    let status = bounded("Maintenance.Status", PROBE_TIMEOUT, client.status()).await?;
    let header = status.header().context("Status answer without a header")?;
    let me = Whoami {
        member_id: header.member_id(),
        cluster_id: header.cluster_id(),
        leader: status.leader(),
        is_learner: status.is_learner(),
        raft_index: status.raft_index(),
        raft_term: status.raft_term(),
        revision: header.revision(),
        errors: status.errors().to_vec(),
        version: status.version().to_string(),
    };
    Ok((client, me))
}
