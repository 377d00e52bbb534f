//! `etcd-bootstrap doctor`: what is wrong with the cluster, as seen from this node, and the one
//! thing that fixes each problem. Pure: the checks look at an `DoctorInput` (gathered by
//! `agent::doctor`) and return one `Finding` per line; the tables below are their specification.
//!
//! Checks, in the order they are printed: `quorum` (then, with a quorum, `members` and `joins`),
//! `cert-expiry`, `cert-names`, `nospace`, `fragmentation`, `discovery`, `clock`, `snapshot`, `delta`.

use crate::decide::recover::{self, AgentSeen};
use crate::model::tls::CertFacts;
use crate::util::time::{age_text, utc_stamp};
use serde::Serialize;
use std::net::IpAddr;

/// A certificate with less than this left is near expiry when nothing renews it by itself
/// (`tls.mode = "files"`): two weeks leave time to get a renewed one from whoever issues them.
/// Capped at a third of the certificate's lifetime, so that short-lived certificates (renewed
/// by an outside tool) are not always "near expiry".
pub const EXPIRY_WARN_SECS: i64 = 14 * 86_400;

/// A CA needs longer: a new one must reach every member, each etcd must be restarted to read it
/// (etcd reads CA files only at start, rule 22), and the old one stays trusted for
/// `tls.ca_overlap` while the members switch.
pub const CA_EXPIRY_WARN_SECS: i64 = 60 * 86_400;

/// Where this node issues its own certificates (`local-ca`, `cfssl`), the agent renews a
/// certificate once less than a third of its lifetime is left, trying once per `heal.interval`
/// (`tls::inspect::due_for_renewal`). A certificate that is still not renewed this many ticks
/// later means the renewal does not happen: the agent is not running, or its signer refuses.
/// (Checking against the same third, not a fixed number of days, keeps this right for any
/// `tls.cert_validity`; a year-long certificate is flagged with four months left, which is
/// when the problem starts, long before it breaks the cluster.)
pub const RENEWAL_GRACE_TICKS: i64 = 2;

/// etcd raises NOSPACE, and then refuses every write, when a member's database reaches the
/// quota; 80% leaves time to compact and defragment first (the same default as
/// `maintenance.defrag_when`).
pub const QUOTA_WARN_PERCENT: i64 = 80;

/// etcd's quota when `quota-backend-bytes` is not set (or 0): 2 GiB in 3.4, 3.5 and 3.6.
pub const DEFAULT_QUOTA_BYTES: i64 = 2 << 30;

/// Free pages (dbSize - dbSizeInUse) worth a defragmentation: above 200 MiB the file is much
/// bigger than the data (and counts against the quota, which looks at the file size), ...
pub const FRAGMENTED_FREE_BYTES: i64 = 200 << 20;
/// ... or more than half of the file, ...
pub const FRAGMENTED_SHARE_PERCENT: i64 = 50;
/// ... when that half is itself more than 64 MiB: a small database is routinely half free after
/// a compaction, and defragmenting it (which blocks that member's reads and writes) buys
/// nothing.
pub const FRAGMENTED_SHARE_FLOOR: i64 = 64 << 20;

/// etcd's own limit: its peer prober logs "prober found high clock drift" when a peer's clock
/// differs by more than 1 s (rafthttp, `ClockDifference > time.Second`). Raft itself does not
/// read wall clocks, but lease TTLs are granted and checked by whichever member leads (a leader
/// change moves them to another clock), certificates are checked against each side's clock
/// (they are backdated 5 minutes only), and snapshot times and logs stop lining up.
pub const MAX_CLOCK_SKEW_MS: i64 = 1000;

/// The newest snapshot is stale when older than this many `backup.interval`s: one interval can
/// be missed (a leader change, a restart at the wrong moment), two in a row cannot.
pub const SNAPSHOT_STALE_INTERVALS: i64 = 2;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub ok: bool,
    pub what: String,
    /// Empty when `ok`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl Finding {
    fn ok(check: &'static str, what: impl Into<String>) -> Finding {
        Finding {
            check,
            ok: true,
            what: what.into(),
            fix: String::new(),
        }
    }

    fn fail(check: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check,
            ok: false,
            what: what.into(),
            fix: fix.into(),
        }
    }
}

/// Everything the checks look at.
#[derive(Debug, Clone)]
pub struct DoctorInput {
    /// Unix seconds, this node's clock.
    pub now: i64,
    /// This node's raft index from its identity record (for the quorum-loss remedy).
    pub local_index: Option<u64>,
    /// Where `members` came from, when not from a member that answered: "the identity record".
    pub membership_from_record: bool,
    pub members: Vec<Member>,
    pub certificates: Vec<Cert>,
    pub renewal: Renewal,
    /// Raised alarms (or why they could not be read).
    pub alarms: Result<Vec<Alarm>, String>,
    /// The backend quota in force; `None` when quotas are off (a negative
    /// `quota-backend-bytes`).
    pub quota: Option<i64>,
    /// The cluster's current revision (the highest a member's status header carried).
    pub revision: Option<i64>,
    /// What discovery lists; `None` when it lists no peers to compare (seeds only).
    pub discovery: Option<DiscoverySeen>,
    /// Other members' clocks against this node's.
    pub clocks: Vec<Clock>,
    /// `None` without `[backup]`.
    pub snapshot: Option<SnapshotSeen>,
    /// `tls.dir`: where the certificates are on every member, for the etcdctl commands.
    pub tls_dir: String,
    /// What the agents do by themselves about a dead member (one sentence).
    pub dead_member_policy: String,
    /// With the quorum lost: what the agents do about it by themselves
    /// (`decide::quorum_recovery`, as text).
    pub auto_recovery: Option<String>,
    /// The last automatic recovery carried out on this node, and where its note is.
    pub last_auto_recovery: Option<(super::quorum_recovery::Recovered, String)>,
    /// Why the running agent refused the configuration it was last asked to reload (it runs on
    /// the one before); `None` when the configuration in force was accepted.
    pub config_rejected: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty: added but never started.
    pub name: String,
    pub peer_url: String,
    pub client_url: Option<String>,
    pub is_learner: bool,
    pub is_self: bool,
    /// Its etcd answered at its client URL as a member of this cluster.
    pub reachable: bool,
    /// Why it did not.
    pub error: Option<String>,
    /// Unix seconds: since when the leader's agent has seen it unreachable.
    pub down_since: Option<i64>,
    /// Its agent's answer.
    pub agent: Option<AgentSeen>,
    /// Its Maintenance.Status, when it answered.
    pub db: Option<Db>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Db {
    /// dbSize: the file, which is what the quota is checked against.
    pub size: i64,
    /// dbSizeInUse: the pages holding data (etcd 3.4+).
    pub in_use: i64,
}

/// A certificate: a file of this node, or one another member serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    /// For messages: "server.crt on this node", "the peer certificate etcd2 serves at ...".
    pub what: String,
    pub origin: Origin,
    pub facts: Result<CertFacts, String>,
    /// The addresses (as text) and DNS names it must cover; empty for the CA and client
    /// certificates.
    pub must_cover: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `ca.crt` of this node (its current CA).
    Ca,
    /// A leaf of this node; `stem` as in `tls.<stem>_cert` ("server", "peer", ...).
    Local { stem: String },
    /// Served by another member.
    Served { member: String },
}

/// Who renews the leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// `local-ca` or `cfssl`: the agent, in the last third of the lifetime, once per interval.
    Agent { heal_interval_secs: i64 },
    /// `files`: whoever issues the pre-issued files.
    Files,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// Member name or ID.
    pub member: String,
    /// "NOSPACE", "CORRUPT".
    pub alarm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySeen {
    /// "DNS SRV _etcd-server-ssl._tcp.lab.test", "discovery.peers".
    pub source: String,
    /// The peer URLs it lists and the targets that did not resolve, or why it could not be read.
    pub read: Result<(Vec<String>, Vec<String>), String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clock {
    pub who: String,
    /// (offset in ms, positive = ahead of this node; uncertainty in ms, half the round trip),
    /// or why it was not measured.
    pub measured: Result<(i64, i64), String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSeen {
    pub store: String,
    /// The newest verified snapshot's id and age in seconds.
    pub newest: Result<Option<(String, i64)>, String>,
    pub interval_secs: i64,
    /// Objects that look like manifests but are not trusted: (object, why).
    pub untrusted: Vec<(String, String)>,
    /// The delta segments of the newest chain; `None` with `backup.delta_interval = ""` or
    /// without a snapshot to extend.
    pub deltas: Option<DeltaSeen>,
}

/// The newest chain of delta segments as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaSeen {
    pub interval_secs: i64,
    /// The full snapshot the chain extends, its segments and their events.
    pub base: String,
    pub segments: usize,
    pub events: u64,
    /// Seconds since the newest segment was stored (since the full snapshot, without segments).
    pub newest_age: i64,
    /// Revisions the cluster holds beyond the chain's end (0: every write is in the store);
    /// `None` when the cluster's revision could not be read.
    pub behind: Option<i64>,
}

/// The newest delta segment is stale when older than this many `backup.delta_interval`s while
/// the cluster has writes the store does not (Gardener's BackupReady rule).
pub const DELTA_STALE_INTERVALS: i64 = 3;

/// Older than `DELTA_STALE_INTERVALS` x `backup.delta_interval` while the cluster holds
/// revisions the chain does not (or its revision is not known).
pub fn deltas_stale(d: &DeltaSeen) -> bool {
    d.newest_age > DELTA_STALE_INTERVALS * d.interval_secs && d.behind != Some(0)
}

/// With delta segments on: the newest one is younger than `DELTA_STALE_INTERVALS` x
/// `backup.delta_interval`, or the chain already holds every revision of the cluster (no
/// writes since: nothing to upload).
pub fn deltas(o: &DoctorInput) -> Vec<Finding> {
    let Some(d) = o.snapshot.as_ref().and_then(|s| s.deltas.as_ref()) else {
        return vec![Finding::ok(
            "delta",
            "no delta segments to check (no [backup], backup.delta_interval = \"\", or no full snapshot to extend yet)",
        )];
    };
    let store = o.snapshot.as_ref().map(|s| s.store.as_str()).unwrap_or("");
    let chain = format!(
        "{} delta segment(s), {} event(s), in the chain of {} in {store}",
        d.segments, d.events, d.base
    );
    if deltas_stale(d) {
        let behind = match d.behind {
            Some(n) => format!("the cluster holds {n} revision(s) more"),
            None => "the cluster's revision could not be read".to_string(),
        };
        return vec![Finding::fail(
            "delta",
            format!(
                "the newest delta segment is {} old, more than {DELTA_STALE_INTERVALS} x backup.delta_interval ({}), and {behind}: {chain}",
                age_text(d.newest_age),
                age_text(d.interval_secs)
            ),
            "the agent holding the delta claim uploads a segment every backup.delta_interval: look for \"delta segment\" and \"delta claim\" in the agents' logs, and check that the store answers (`etcd-bootstrap snapshot verify` walks the chain)",
        )];
    }
    let newest = if d.segments == 0 {
        "no segment yet".to_string()
    } else {
        format!("the newest is {} old", age_text(d.newest_age))
    };
    let behind = match d.behind {
        Some(0) => "; every revision of the cluster is in the store".to_string(),
        Some(n) => format!("; {n} revision(s) not in the store yet"),
        None => String::new(),
    };
    vec![Finding::ok("delta", format!("{chain}: {newest}{behind}"))]
}

/// Every check, in order. `members` and `joins` only with a quorum: without one, the `quorum`
/// line names the unreachable members and the remedy, and removing a member is impossible.
/// `nospace` and `fragmentation` only when some member answers: they read etcd itself.
pub fn check(o: &DoctorInput) -> Vec<Finding> {
    let mut out = quorum(o);
    out.extend(auto_recovered(o));
    if out.iter().all(|f| f.ok) {
        out.extend(members(o));
        out.extend(joins(o));
    }
    out.extend(cert_expiry(o));
    out.extend(cert_names(o));
    if o.members.iter().any(|m| m.reachable) {
        out.extend(nospace(o));
        out.extend(fragmentation(o));
    }
    out.extend(discovery(o));
    out.extend(clock(o));
    out.extend(snapshot(o));
    out.extend(config(o));
    out.extend(deltas(o));
    out
}

/// A reloaded configuration the running agent refused: it still runs on the one before, so what
/// the file says is not what this member does.
pub fn config(o: &DoctorInput) -> Vec<Finding> {
    match &o.config_rejected {
        None => vec![Finding::ok("config", "no reloaded configuration was refused")],
        Some(why) => vec![Finding::fail(
            "config",
            format!("config rejected: {why}"),
            "the agent keeps running on the configuration it last accepted: correct the configuration (`etcd-bootstrap check-config`), then `systemctl reload etcd-bootstrap`",
        )],
    }
}

fn label(m: &Member) -> String {
    if m.name.is_empty() {
        format!("{:x} ({})", m.id, m.peer_url)
    } else {
        format!("{} ({})", m.name, m.peer_url)
    }
}

fn short(m: &Member) -> String {
    if m.name.is_empty() {
        format!("{:x}", m.id)
    } else {
        m.name.clone()
    }
}

fn since(m: &Member, now: i64) -> String {
    match m.down_since {
        Some(t) => match time::OffsetDateTime::from_unix_timestamp(t) {
            Ok(at) => format!(
                ", unreachable since {} ({} ago)",
                utc_stamp(at),
                age_text(now - t)
            ),
            Err(_) => String::new(),
        },
        None => String::new(),
    }
}

/// `etcdctl` with the client certificate of `tls.dir`, through the members that answer.
fn etcdctl(o: &DoctorInput) -> String {
    let up: Vec<&str> = o
        .members
        .iter()
        .filter(|m| m.reachable)
        .filter_map(|m| m.client_url.as_deref())
        .collect();
    etcdctl_at(o, &up.join(","))
}

fn etcdctl_at(o: &DoctorInput, endpoints: &str) -> String {
    let d = &o.tls_dir;
    format!(
        "etcdctl --endpoints {endpoints} --cacert {d}/ca.crt --cert {d}/client.crt --key {d}/client.key"
    )
}

/// `commands` run one after the other with `ctl` (an etcdctl command line) as `$E`: a line to
/// paste into a shell.
fn with_etcdctl(ctl: &str, commands: &[String]) -> String {
    let run: Vec<String> = commands.iter().map(|c| format!("$E {c}")).collect();
    format!("E='{ctl}'; {}", run.join("; "))
}

/// Compacting at the current revision, as etcd's NOSPACE procedure does.
fn compact(o: &DoctorInput) -> String {
    match o.revision {
        Some(r) => format!("compact {r}"),
        None => "compact <the revision `$E endpoint status -w json` shows>".into(),
    }
}

fn bytes(b: i64) -> String {
    let f = b as f64;
    if b >= 1 << 30 {
        format!("{:.1} GiB", f / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.0} MiB", f / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", f / 1024.0)
    }
}

/// A majority of the voting members answers. Without one: who is unreachable since when, and
/// the quorum-loss remedy (`decide::recover`). etcd rule: N voters need floor(N/2)+1.
pub fn quorum(o: &DoctorInput) -> Vec<Finding> {
    let voters: Vec<&Member> = o.members.iter().filter(|m| !m.is_learner).collect();
    if voters.is_empty() {
        return vec![Finding::fail(
            "quorum",
            "no membership is known: no member answered and the identity record lists none",
            "start this node's agent (`etcd-bootstrap run`) and check its log",
        )];
    }
    let seen: Vec<recover::MemberSeen> = voters
        .iter()
        .map(|m| recover::MemberSeen {
            id: m.id,
            who: label(m),
            is_self: m.is_self,
            etcd_answers: m.reachable,
            agent: m.agent,
        })
        .collect();
    let newest = o
        .snapshot
        .as_ref()
        .and_then(|s| s.newest.as_ref().ok().cloned().flatten())
        .map(|(id, age)| (id, age_text(age)));
    let needed = voters.len() / 2 + 1;
    match recover::quorum_loss(&seen, o.local_index, newest) {
        None => {
            let up = voters.iter().filter(|m| m.reachable).count();
            vec![Finding::ok(
                "quorum",
                format!(
                    "{up} of {} voting members answer ({needed} needed)",
                    voters.len()
                ),
            )]
        }
        Some(loss) => {
            let down: Vec<String> = voters
                .iter()
                .filter(|m| !m.reachable)
                .map(|m| format!("{}{}", label(m), since(m, o.now)))
                .collect();
            let from = if o.membership_from_record {
                " (membership from this node's identity record: no member answered)"
            } else {
                ""
            };
            vec![Finding::fail(
                "quorum",
                format!(
                    "quorum lost: {} of {} voting members unreachable ({}), {needed} needed{from}",
                    down.len(),
                    voters.len(),
                    down.join("; ")
                ),
                match &o.auto_recovery {
                    Some(a) => format!("{a}. {}", loss.remedy()),
                    None => loss.remedy(),
                },
            )]
        }
    }
}

/// An automatic recovery happened on this node (`decide::quorum_recovery`): from which copy,
/// and whether history was lost. Revisions lost fail the check: writes acknowledged to clients
/// in that window are gone, which someone has to know about.
pub fn auto_recovered(o: &DoctorInput) -> Vec<Finding> {
    let Some((r, note)) = &o.last_auto_recovery else {
        return vec![];
    };
    match r.lost {
        Some(0) => vec![Finding::ok(
            "auto_recovery",
            format!("automatic recovery at {}: {}", r.at, r.what),
        )],
        lost => vec![Finding::fail(
            "auto_recovery",
            format!(
                "automatic recovery at {} lost {} revisions: {}",
                r.at,
                lost.map(|l| l.to_string()).unwrap_or("an unknown number of".into()),
                r.what
            ),
            format!("writes made in those revisions before the quorum was lost are gone: check what your clients wrote then; delete {note} once that is settled"),
        )],
    }
}

/// Every member's etcd answers. An unreachable one is named with since when, and how to bring it
/// back or remove it.
pub fn members(o: &DoctorInput) -> Vec<Finding> {
    let down: Vec<&Member> = o.members.iter().filter(|m| !m.reachable).collect();
    if down.is_empty() {
        return vec![Finding::ok(
            "members",
            format!("{n} of {n} members answer", n = o.members.len()),
        )];
    }
    down.into_iter()
        .map(|m| {
            let remove = format!("{} member remove {:x}", etcdctl(o), m.id);
            if m.name.is_empty() {
                return Finding::fail(
                    "members",
                    format!(
                        "member {:x} ({}) was added but never started{}",
                        m.id,
                        m.peer_url,
                        since(m, o.now)
                    ),
                    format!("start the node it was added for (`etcd-bootstrap run` there), or remove the entry on a healthy member: {remove}"),
                );
            }
            let role = if m.is_learner { "learner " } else { "" };
            let why = m.error.as_deref().unwrap_or("no answer");
            let start = if m.is_self {
                "start this node's agent (`systemctl start etcd-bootstrap`, or `etcd-bootstrap run`); its log says why etcd does not answer".to_string()
            } else {
                "if its VM is up, start its agent there (`systemctl start etcd-bootstrap`, or `etcd-bootstrap run`)".to_string()
            };
            Finding::fail(
                "members",
                format!("{role}{} does not answer ({why}){}", label(m), since(m, o.now)),
                format!(
                    "{start}; if it is gone for good, remove it on a healthy member: {remove}. {}",
                    o.dead_member_policy
                ),
            )
        })
        .collect()
}

/// A node waiting to join (listed by discovery, not a member) is not held up by a dead member.
/// etcd rules relied on: a member add is refused while any voter is not
/// connected to the member receiving it ("unhealthy cluster"), and while another learner is
/// there ("too many learner members"); a new member joins as a learner.
pub fn joins(o: &DoctorInput) -> Vec<Finding> {
    let blockers: Vec<&Member> = o.members.iter().filter(|m| !m.reachable).collect();
    if blockers.is_empty() {
        return vec![Finding::ok(
            "joins",
            "every member is connected: a new member can be added",
        )];
    }
    let listed: Vec<&str> = o.members.iter().map(|m| m.peer_url.as_str()).collect();
    let waiting: Vec<String> = match o.discovery.as_ref().map(|d| &d.read) {
        Some(Ok((peers, _))) => peers
            .iter()
            .filter(|p| !listed.contains(&p.as_str()))
            .cloned()
            .collect(),
        _ => vec![],
    };
    if waiting.is_empty() {
        return vec![Finding::ok(
            "joins",
            format!(
                "no node waits to join (a new member would be refused while {} is unreachable)",
                blockers
                    .iter()
                    .map(|m| short(m))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )];
    }
    blockers
        .into_iter()
        .map(|m| {
            let rule = if m.is_learner {
                "etcd takes one learner at a time and a new member joins as a learner"
            } else {
                "etcd refuses every member add while a voter is not connected (strict reconfiguration check)"
            };
            Finding::fail(
                "joins",
                format!(
                    "{} {} to join, blocked by {}{}: {rule}",
                    waiting.join(", "),
                    if waiting.len() == 1 { "waits" } else { "wait" },
                    label(m),
                    since(m, o.now)
                ),
                format!(
                    "if {} is gone for good, remove it on a healthy member: {} member remove {:x}. {}",
                    short(m),
                    etcdctl(o),
                    m.id,
                    o.dead_member_policy
                ),
            )
        })
        .collect()
}

fn expiry_fix(o: &DoctorInput, origin: &Origin) -> String {
    match (origin, o.renewal) {
        (Origin::Ca, _) => "make a new CA and give it to every member (tls.ca_cert, or the signer's); each member keeps the previous CA trusted for tls.ca_overlap while the others switch, and etcd is restarted to read it".into(),
        (Origin::Local { .. }, Renewal::Agent { .. }) => "the agent renews it at its next heal.interval tick, and `etcd-bootstrap run` before it starts etcd: check that the agent runs (`systemctl status etcd-bootstrap`) and why its renewal fails (its log: \"certificate renewal failed\")".into(),
        (Origin::Local { stem }, Renewal::Files) => format!(
            "put a renewed certificate where tls.{stem}_cert points (tls.mode = \"files\" issues nothing); the agent copies it into {} at its next heal.interval tick",
            o.tls_dir
        ),
        (Origin::Served { member }, Renewal::Agent { .. }) => format!(
            "on {member}: its agent renews it at its next heal.interval tick; check that it runs there and why its renewal fails (`etcd-bootstrap doctor` there)"
        ),
        (Origin::Served { member }, Renewal::Files) => format!(
            "on {member}: put a renewed certificate where its tls.*_cert points (tls.mode = \"files\" issues nothing)"
        ),
    }
}

fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(utc_stamp)
        .unwrap_or_else(|_| unix.to_string())
}

/// Why `c` fails the expiry check, if it does.
fn expiry_problem(o: &DoctorInput, c: &Cert, f: &CertFacts) -> Option<String> {
    let left = f.not_after - o.now;
    if left <= 0 {
        return Some(format!(
            "{} expired on {} ({} ago): TLS connections that present it are refused",
            c.what,
            date(f.not_after),
            age_text(-left)
        ));
    }
    if o.now < f.not_before {
        return Some(format!(
            "{} is not valid before {}: this node's clock or its issuer's is wrong",
            c.what,
            date(f.not_before)
        ));
    }
    let lifetime = (f.not_after - f.not_before).max(1);
    let problem = match (&c.origin, o.renewal) {
        (Origin::Ca, _) => left < CA_EXPIRY_WARN_SECS.min(lifetime / 3),
        (_, Renewal::Agent { heal_interval_secs }) => {
            left < lifetime / 3 - RENEWAL_GRACE_TICKS * heal_interval_secs
        }
        (_, Renewal::Files) => left < EXPIRY_WARN_SECS.min(lifetime / 3),
    };
    let overdue = !matches!(c.origin, Origin::Ca) && matches!(o.renewal, Renewal::Agent { .. });
    problem.then(|| {
        format!(
            "{} expires on {} (in {}){}",
            c.what,
            date(f.not_after),
            age_text(left),
            if overdue {
                ": its renewal is overdue (due with a third of its lifetime left)"
            } else {
                ""
            }
        )
    })
}

/// Certificates within their validity and not near its end (see the consts for what "near"
/// means for each).
pub fn cert_expiry(o: &DoctorInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut soonest: Option<(i64, &str)> = None;
    for c in &o.certificates {
        match &c.facts {
            Err(e) => out.push(Finding::fail(
                "cert-expiry",
                format!("{}: cannot be read: {e}", c.what),
                match &c.origin {
                    Origin::Served { member } => format!("on {member}: check its etcd's TLS setup (`etcd-bootstrap doctor` there)"),
                    _ => "`etcd-bootstrap run` writes every certificate this configuration keeps; its log says what failed".into(),
                },
            )),
            Ok(f) => match expiry_problem(o, c, f) {
                Some(what) => out.push(Finding::fail("cert-expiry", what, expiry_fix(o, &c.origin))),
                None => {
                    if soonest.is_none_or(|(t, _)| f.not_after < t) {
                        soonest = Some((f.not_after, &c.what));
                    }
                }
            },
        }
    }
    if out.is_empty() {
        let what = match soonest {
            Some((t, which)) => format!(
                "{} certificates valid (the first to expire: {which}, in {})",
                o.certificates.len(),
                age_text(t - o.now)
            ),
            None => "no certificate to check".into(),
        };
        out.push(Finding::ok("cert-expiry", what));
    }
    out
}

fn covers(f: &CertFacts, name: &str) -> bool {
    match name.parse::<IpAddr>() {
        Ok(ip) => f.ips.contains(&ip),
        Err(_) => f.dns_names.iter().any(|n| n.eq_ignore_ascii_case(name)),
    }
}

/// Each served certificate covers every address and name it is reached at: the host of the
/// member's peer URL (etcd checks a peer's certificate against the address it connects from,
/// rule 21), of its client URL, 127.0.0.1 for the local client, the SRV target name. After an
/// IP change this is what breaks the cluster.
pub fn cert_names(o: &DoctorInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut checked = 0;
    for c in &o.certificates {
        let Ok(f) = &c.facts else { continue };
        if c.must_cover.is_empty() {
            continue;
        }
        checked += 1;
        let missing: Vec<&str> = c
            .must_cover
            .iter()
            .filter(|n| !covers(f, n))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            continue;
        }
        let sans: Vec<String> = missing
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        let fix = match (&c.origin, o.renewal) {
            (Origin::Local { .. }, Renewal::Agent { .. }) => "the agent re-issues a certificate that no longer covers this member's addresses at its next heal.interval tick, and `etcd-bootstrap run` before it starts etcd: check that the agent runs (`systemctl status etcd-bootstrap`) and why its renewal fails (its log: \"certificate renewal failed\")".to_string(),
            (Origin::Local { stem }, Renewal::Files) => format!(
                "issue it again with {} among its SANs and put it where tls.{stem}_cert points",
                sans.join(", ")
            ),
            (Origin::Served { member }, Renewal::Agent { .. }) => format!(
                "on {member}: its agent re-issues it at its next heal.interval tick; check that it runs there (`etcd-bootstrap doctor` there)"
            ),
            (Origin::Served { member }, Renewal::Files) => format!(
                "on {member}: issue it again with {} among its SANs and put it where its tls.*_cert points",
                sans.join(", ")
            ),
            (Origin::Ca, _) => String::new(),
        };
        out.push(Finding::fail(
            "cert-names",
            format!(
                "{} does not cover {} (it covers {}): peers and clients that reach the member there refuse it",
                c.what,
                missing.join(", "),
                f.ips
                    .iter()
                    .map(ToString::to_string)
                    .chain(f.dns_names.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix,
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "cert-names",
            format!(
                "{checked} server and peer certificates cover their members' addresses and names"
            ),
        ));
    }
    out
}

/// No alarm is raised, and no member's database is near the quota. etcd rule: at the quota a
/// member raises NOSPACE, and the whole cluster then takes only reads and deletes until the
/// alarm is disarmed; CORRUPT means a member's data differs from the others'.
pub fn nospace(o: &DoctorInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let quota_text = match o.quota {
        Some(q) => bytes(q),
        None => "unlimited".into(),
    };
    match &o.alarms {
        Err(e) => out.push(Finding::fail(
            "nospace",
            format!("cannot read etcd's alarms: {e}"),
            "make a member answer first (see the checks above), then run `etcd-bootstrap doctor` again",
        )),
        Ok(alarms) => {
            for a in alarms {
                let (what, fix) = match a.alarm.as_str() {
                    "NOSPACE" => (
                        format!("NOSPACE alarm raised by {}: the cluster takes only reads and deletes", a.member),
                        format!(
                            "free space, then disarm: {} (compacting drops the history before the current revision: watchers behind it list again). If the data needs the room, raise [etcd.flags] quota-backend-bytes (now {quota_text}) on every member first",
                            with_etcdctl(
                                &etcdctl(o),
                                &[compact(o), "defrag --cluster".into(), "alarm disarm".into()]
                            )
                        ),
                    ),
                    "CORRUPT" => (
                        format!("CORRUPT alarm raised by {}: a member's data differs from the others'", a.member),
                        format!(
                            "replace the member whose data differs: stop its agent, move its data dir aside and start the agent again (it rejoins with the others' data); then {} alarm disarm",
                            etcdctl(o)
                        ),
                    ),
                    other => (
                        format!("{other} alarm raised by {}", a.member),
                        format!("see etcd's log on {}; {} alarm disarm once it is dealt with", a.member, etcdctl(o)),
                    ),
                };
                out.push(Finding::fail("nospace", what, fix));
            }
        }
    }
    let mut largest: Option<(i64, String)> = None;
    if let Some(q) = o.quota {
        for m in &o.members {
            let Some(db) = m.db else { continue };
            if largest.as_ref().is_none_or(|(s, _)| db.size > *s) {
                largest = Some((db.size, short(m)));
            }
            if db.size * 100 > q * QUOTA_WARN_PERCENT {
                let one = m
                    .client_url
                    .as_deref()
                    .map(|u| etcdctl_at(o, u))
                    .unwrap_or_else(|| etcdctl(o));
                out.push(Finding::fail(
                    "nospace",
                    format!(
                        "{}'s database is {} of the {} quota ({}%): at the quota etcd raises NOSPACE and refuses writes",
                        label(m),
                        bytes(db.size),
                        bytes(q),
                        db.size * 100 / q.max(1)
                    ),
                    format!(
                        "compact, then defragment it: {}; or raise [etcd.flags] quota-backend-bytes on every member (etcd advises at most 8 GiB)",
                        with_etcdctl(&one, &[compact(o), "defrag".into()])
                    ),
                ));
            }
        }
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "nospace",
            match largest {
                Some((s, who)) => format!(
                    "no alarm; every database under {QUOTA_WARN_PERCENT}% of the {quota_text} quota (largest: {who}, {})",
                    bytes(s)
                ),
                None => format!("no alarm (quota {quota_text})"),
            },
        ));
    }
    out
}

/// Free pages in a member's database file (dbSize - dbSizeInUse): space a compaction freed but
/// the file still holds until a defragmentation, which counts against the quota.
pub fn fragmentation(o: &DoctorInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut measured = 0;
    for m in &o.members {
        let Some(db) = m.db else { continue };
        measured += 1;
        let free = (db.size - db.in_use).max(0);
        let fragmented = free > FRAGMENTED_FREE_BYTES
            || (free * 100 > db.size * FRAGMENTED_SHARE_PERCENT && free > FRAGMENTED_SHARE_FLOOR);
        if !fragmented {
            continue;
        }
        let one = m
            .client_url
            .as_deref()
            .map(|u| etcdctl_at(o, u))
            .unwrap_or_else(|| etcdctl(o));
        out.push(Finding::fail(
            "fragmentation",
            format!(
                "{}: {} of its {} database file is free pages ({} in use)",
                label(m),
                bytes(free),
                bytes(db.size),
                bytes(db.in_use)
            ),
            format!(
                "defragment it, one member at a time (it blocks that member's reads and writes meanwhile): {one} defrag"
            ),
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "fragmentation",
            format!(
                "no database of the {measured} that answered holds more than {} (or over half of it, above {}) in free pages",
                bytes(FRAGMENTED_FREE_BYTES),
                bytes(FRAGMENTED_SHARE_FLOOR)
            ),
        ));
    }
    out
}

/// Discovery lists exactly the members' peer URLs: a member missing from the SRV records is
/// what the dead-member policy counts as gone (`decide::dead_member`), a record of a node that
/// is not a member would be counted by a new cluster, and a target that does not resolve is
/// dropped silently by etcd (rule 18), so nodes could compute different clusters.
pub fn discovery(o: &DoctorInput) -> Vec<Finding> {
    let Some(d) = &o.discovery else {
        return vec![Finding::ok(
            "discovery",
            "no peer list to compare (discovery.seeds only)",
        )];
    };
    let (peers, unresolved) = match &d.read {
        Err(e) => {
            return vec![Finding::fail(
                "discovery",
                format!("{}: {e}", d.source),
                format!(
                    "check that {} answers from this node (for SRV: `dig SRV` of the record, and discovery.nameservers)",
                    d.source
                ),
            )]
        }
        Ok(r) => r,
    };
    let mut out = Vec::new();
    if !unresolved.is_empty() {
        out.push(Finding::fail(
            "discovery",
            format!("{}: {} do not resolve", d.source, unresolved.join(", ")),
            "add an A (or AAAA) record for each target, or delete its SRV record: etcd drops targets that do not resolve, so nodes could compute different clusters",
        ));
    }
    for m in o.members.iter().filter(|m| !peers.contains(&m.peer_url)) {
        out.push(Finding::fail(
            "discovery",
            format!("{} is a member but not in {}", label(m), d.source),
            format!(
                "add it to {} (for SRV: an _etcd-server-ssl record for its name and the name's A record); if the member is retired, remove it: {} member remove {:x}",
                d.source,
                etcdctl(o),
                m.id
            ),
        ));
    }
    let listed: Vec<&str> = o.members.iter().map(|m| m.peer_url.as_str()).collect();
    for p in peers.iter().filter(|p| !listed.contains(&p.as_str())) {
        out.push(Finding::fail(
            "discovery",
            format!("{p} is in {} but not a member", d.source),
            format!(
                "if that node runs, it joins by itself (see the joins check); if it is gone, delete it from {}: a new cluster formed from it would count it",
                d.source
            ),
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "discovery",
            format!(
                "{} lists exactly the {} members' peer URLs",
                d.source,
                o.members.len()
            ),
        ));
    }
    out
}

/// Every other member's clock within `MAX_CLOCK_SKEW_MS` of this node's: only a skew beyond the
/// measurement's own uncertainty (half the round trip) counts.
pub fn clock(o: &DoctorInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut largest: Option<(i64, &str)> = None;
    let mut unmeasured = Vec::new();
    for c in &o.clocks {
        match &c.measured {
            Err(why) => unmeasured.push(format!("{} ({why})", c.who)),
            Ok((offset, uncertainty)) => {
                if offset.abs() - uncertainty > MAX_CLOCK_SKEW_MS {
                    out.push(Finding::fail(
                        "clock",
                        format!(
                            "{}'s clock is {:.1} s {} this node's (±{uncertainty} ms)",
                            c.who,
                            offset.abs() as f64 / 1000.0,
                            if *offset > 0 { "ahead of" } else { "behind" }
                        ),
                        "keep every member's clock in sync with NTP: `timedatectl set-ntp true` (systemd-timesyncd) or chrony, on every member",
                    ));
                } else if largest.is_none_or(|(l, _)| offset.abs() > l) {
                    largest = Some((offset.abs(), &c.who));
                }
            }
        }
    }
    if out.is_empty() {
        let mut what = match largest {
            Some((l, who)) => format!(
                "other members' clocks within {} s of this node's (largest offset: {who}, {l} ms)",
                MAX_CLOCK_SKEW_MS / 1000
            ),
            None => "no other member's clock measured".to_string(),
        };
        if !unmeasured.is_empty() {
            what.push_str(&format!("; not measured: {}", unmeasured.join(", ")));
        }
        out.push(Finding::ok("clock", what));
    }
    out
}

/// The newest verified snapshot is younger than `SNAPSHOT_STALE_INTERVALS` x `backup.interval`.
pub fn snapshot(o: &DoctorInput) -> Vec<Finding> {
    let Some(s) = &o.snapshot else {
        return vec![Finding::ok(
            "snapshot",
            "no [backup] store configured: no snapshots to check",
        )];
    };
    let take = "take one now: `etcd-bootstrap snapshot save`";
    let mut out = Vec::new();
    if let Some((object, why)) = s.untrusted.first() {
        out.push(Finding::fail(
            "store-trust",
            format!(
                "{} object(s) in {} are not trusted and are never used, e.g. {}: {}",
                s.untrusted.len(),
                s.store,
                crate::util::text::printable(object, 120),
                crate::util::text::printable(why, 200)
            ),
            "whoever can write the bucket wrote them (or they were stored by a version that did not sign): rotate the bucket's credentials if you did not, then delete them (`etcd-bootstrap snapshot list` marks them UNTRUSTED)",
        ));
    }
    out.extend(match &s.newest {
        Err(e) => vec![Finding::fail(
            "snapshot",
            format!("cannot list {}: {e}", s.store),
            "check backup.url, its credentials and that the store answers from this node (`etcd-bootstrap snapshot list` shows the same error)",
        )],
        Ok(None) => vec![Finding::fail(
            "snapshot",
            format!("no verified snapshot in {}", s.store),
            format!("the agents take one per backup.interval from a healthy cluster; {take}"),
        )],
        Ok(Some((id, age))) => {
            let limit = SNAPSHOT_STALE_INTERVALS * s.interval_secs;
            if *age > limit {
                vec![Finding::fail(
                    "snapshot",
                    format!(
                        "the newest snapshot {id} in {} is {} old, more than {SNAPSHOT_STALE_INTERVALS} x backup.interval ({})",
                        s.store,
                        age_text(*age),
                        age_text(s.interval_secs)
                    ),
                    format!("the agents take one per backup.interval from a healthy cluster: look for \"scheduled snapshot\" in their logs; {take}"),
                )]
            } else {
                vec![Finding::ok(
                    "snapshot",
                    format!("the newest snapshot {id} in {} is {} old", s.store, age_text(*age)),
                )]
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;
    const TLS: &str = "/etc/etcd/pki";
    const POLICY: &str =
        "The agents will not remove it by themselves (heal.remove_dead_after is off).";
    const CTL: &str = "etcdctl --endpoints https://10.0.0.11:2379,https://10.0.0.12:2379,https://10.0.0.13:2379 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt --key /etc/etcd/pki/client.key";
    const CTL_12: &str = "etcdctl --endpoints https://10.0.0.11:2379,https://10.0.0.12:2379 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt --key /etc/etcd/pki/client.key";

    fn member(i: u64) -> Member {
        Member {
            id: 0x100 + i,
            name: format!("etcd{i}"),
            peer_url: format!("https://10.0.0.1{i}:2380"),
            client_url: Some(format!("https://10.0.0.1{i}:2379")),
            is_learner: false,
            is_self: i == 1,
            reachable: true,
            error: None,
            down_since: None,
            agent: Some(AgentSeen {
                has_data: true,
                raft_index: Some(100),
            }),
            db: Some(Db {
                size: 20 << 20,
                in_use: 18 << 20,
            }),
        }
    }

    fn cert(
        what: &str,
        origin: Origin,
        days_left: i64,
        lifetime_days: i64,
        covers: &[&str],
    ) -> Cert {
        let not_after = NOW + days_left * DAY;
        Cert {
            what: what.into(),
            origin,
            facts: Ok(CertFacts {
                subject: "CN=x".into(),
                not_before: not_after - lifetime_days * DAY,
                not_after,
                dns_names: covers
                    .iter()
                    .filter(|n| n.parse::<IpAddr>().is_err())
                    .map(|n| n.to_string())
                    .collect(),
                ips: covers.iter().filter_map(|n| n.parse().ok()).collect(),
            }),
            must_cover: vec![],
        }
    }

    fn local(stem: &str) -> Origin {
        Origin::Local { stem: stem.into() }
    }

    /// A healthy 3-member cluster seen from etcd1.
    fn healthy() -> DoctorInput {
        let mut peer = cert(
            "peer.crt on this node",
            local("peer"),
            300,
            365,
            &["10.0.0.11", "etcd1.lab.test"],
        );
        peer.must_cover = vec!["10.0.0.11".into(), "etcd1.lab.test".into()];
        let mut served = cert(
            "the peer certificate etcd2 serves at 10.0.0.12:2380",
            Origin::Served {
                member: "etcd2".into(),
            },
            300,
            365,
            &["10.0.0.12"],
        );
        served.must_cover = vec!["10.0.0.12".into()];
        DoctorInput {
            now: NOW,
            local_index: Some(100),
            membership_from_record: false,
            members: vec![member(1), member(2), member(3)],
            certificates: vec![
                cert("ca.crt on this node", Origin::Ca, 3000, 3650, &[]),
                peer,
                served,
            ],
            renewal: Renewal::Agent {
                heal_interval_secs: 15,
            },
            alarms: Ok(vec![]),
            quota: Some(DEFAULT_QUOTA_BYTES),
            revision: Some(1234),
            discovery: Some(DiscoverySeen {
                source: "DNS SRV _etcd-server-ssl._tcp.lab.test".into(),
                read: Ok((
                    (1..=3)
                        .map(|i| format!("https://10.0.0.1{i}:2380"))
                        .collect(),
                    vec![],
                )),
            }),
            clocks: vec![
                Clock {
                    who: "etcd2".into(),
                    measured: Ok((30, 2)),
                },
                Clock {
                    who: "etcd3".into(),
                    measured: Ok((-400, 2)),
                },
            ],
            snapshot: Some(SnapshotSeen {
                store: "s3://b/etcd".into(),
                newest: Ok(Some(("20270115T080000Z-r90".into(), 600))),
                interval_secs: 1800,
                untrusted: vec![],
                deltas: Some(DeltaSeen {
                    interval_secs: 5,
                    base: "20270115T080000Z-r90".into(),
                    segments: 12,
                    events: 340,
                    newest_age: 4,
                    behind: Some(3),
                }),
            }),
            tls_dir: TLS.into(),
            dead_member_policy: POLICY.into(),
            auto_recovery: None,
            last_auto_recovery: None,
            config_rejected: None,
        }
    }

    fn down(o: &mut DoctorInput, i: usize, since: Option<i64>) {
        let m = &mut o.members[i];
        m.reachable = false;
        m.error = Some("connection refused".into());
        m.down_since = since;
        m.db = None;
        m.agent = None;
    }

    type Edit = fn(&mut DoctorInput);
    type Check = fn(&DoctorInput) -> Vec<Finding>;
    /// The failing finding's `what` fragment and its exact `fix`; `None`: the check passes.
    type Want = Option<(&'static str, String)>;

    /// (what the row is, the check, the change to the healthy observation, the failing
    /// findings' `what` fragment and exact `fix`, or None: the check passes).
    fn table() -> Vec<(&'static str, Check, Edit, Want)> {
        vec![
            ("quorum: healthy", quorum, |_| {}, None),
            ("config: the one in force was accepted", config, |_| {}, None),
            (
                "config: a reload was refused",
                config,
                |o| o.config_rejected = Some("config key `heal.interval` (from /etc/etcd-bootstrap/config.toml): \"banana\" is not a duration".into()),
                Some((
                    "config rejected: config key `heal.interval` (from /etc/etcd-bootstrap/config.toml): \"banana\" is not a duration",
                    "the agent keeps running on the configuration it last accepted: correct the configuration (`etcd-bootstrap check-config`), then `systemctl reload etcd-bootstrap`".into(),
                )),
            ),
            ("quorum: one of three down keeps it", quorum, |o| down(o, 2, None), None),
            (
                "quorum: two of three down, with a snapshot",
                quorum,
                |o| {
                    down(o, 1, Some(NOW - 720));
                    down(o, 2, None);
                },
                Some((
                    "quorum lost: 2 of 3 voting members unreachable (etcd2 (https://10.0.0.12:2380), unreachable since 20270115T074800Z (12m ago); etcd3 (https://10.0.0.13:2380)), 2 needed",
                    "If the unreachable members come back, nothing needs doing. If they are lost for good: run `etcd-bootstrap recover` on etcd1 (https://10.0.0.11:2380) (keeps every key it has), or go back to snapshot 20270115T080000Z-r90: with the members' VMs there, `etcd-bootstrap restore --from 20270115T080000Z-r90` on any one of them; with VMs lost for good, give every member an empty data dir (new VMs, or stop every agent and move each data dir aside) and the agents restore it as they form the cluster again".into(),
                )),
            ),
            (
                "quorum: lost, with what the agents do by themselves",
                quorum,
                |o| {
                    down(o, 1, None);
                    down(o, 2, None);
                    o.auto_recovery = Some("automatic recovery waits: 1 of 3 members' agents have not answered: etcd3".into());
                },
                Some((
                    "quorum lost: 2 of 3",
                    "automatic recovery waits: 1 of 3 members' agents have not answered: etcd3. If the unreachable members come back, nothing needs doing. If they are lost for good: run `etcd-bootstrap recover` on etcd1 (https://10.0.0.11:2380) (keeps every key it has), or go back to snapshot 20270115T080000Z-r90: with the members' VMs there, `etcd-bootstrap restore --from 20270115T080000Z-r90` on any one of them; with VMs lost for good, give every member an empty data dir (new VMs, or stop every agent and move each data dir aside) and the agents restore it as they form the cluster again".into(),
                )),
            ),
            (
                "auto_recovery: nothing lost",
                auto_recovered,
                |o| {
                    o.last_auto_recovery = Some((
                        crate::decide::quorum_recovery::Recovered {
                            at: "20270115T070000Z".into(),
                            what: "automatic recovery from member 1".into(),
                            lost: Some(0),
                        },
                        "/var/lib/etcd.auto-recovered".into(),
                    ))
                },
                None,
            ),
            (
                "auto_recovery: revisions lost",
                auto_recovered,
                |o| {
                    o.last_auto_recovery = Some((
                        crate::decide::quorum_recovery::Recovered {
                            at: "20270115T070000Z".into(),
                            what: "automatic recovery from member 1".into(),
                            lost: Some(7),
                        },
                        "/var/lib/etcd.auto-recovered".into(),
                    ))
                },
                Some((
                    "automatic recovery at 20270115T070000Z lost 7 revisions",
                    "writes made in those revisions before the quorum was lost are gone: check what your clients wrote then; delete /var/lib/etcd.auto-recovered once that is settled".into(),
                )),
            ),
            ("members: all answer", members, |_| {}, None),
            (
                "members: one down, since known",
                members,
                |o| down(o, 2, Some(NOW - 300)),
                Some((
                    "etcd3 (https://10.0.0.13:2380) does not answer (connection refused), unreachable since 20270115T075500Z (5m ago)",
                    format!("if its VM is up, start its agent there (`systemctl start etcd-bootstrap`, or `etcd-bootstrap run`); if it is gone for good, remove it on a healthy member: {CTL_12} member remove 103. {POLICY}"),
                )),
            ),
            (
                "members: added, never started",
                members,
                |o| {
                    o.members[2].name.clear();
                    o.members[2].client_url = None;
                    down(o, 2, None);
                },
                Some((
                    "member 103 (https://10.0.0.13:2380) was added but never started",
                    format!("start the node it was added for (`etcd-bootstrap run` there), or remove the entry on a healthy member: {CTL_12} member remove 103"),
                )),
            ),
            ("joins: every member connected", joins, |_| {}, None),
            ("joins: a member down, nobody waiting", joins, |o| down(o, 2, None), None),
            (
                "joins: a member down and a node waiting",
                joins,
                |o| {
                    down(o, 2, Some(NOW - 60));
                    if let Some(d) = &mut o.discovery {
                        d.read.as_mut().unwrap().0.push("https://10.0.0.14:2380".into());
                    }
                },
                Some((
                    "https://10.0.0.14:2380 waits to join, blocked by etcd3 (https://10.0.0.13:2380), unreachable since 20270115T075900Z (60s ago): etcd refuses every member add while a voter is not connected",
                    format!("if etcd3 is gone for good, remove it on a healthy member: {CTL_12} member remove 103. {POLICY}"),
                )),
            ),
            ("cert-expiry: all valid", cert_expiry, |_| {}, None),
            (
                "cert-expiry: a local leaf expired",
                cert_expiry,
                |o| o.certificates[1] = cert("peer.crt on this node", local("peer"), -2, 365, &[]),
                Some((
                    "peer.crt on this node expired on 20270113T080000Z (2d ago)",
                    "the agent renews it at its next heal.interval tick, and `etcd-bootstrap run` before it starts etcd: check that the agent runs (`systemctl status etcd-bootstrap`) and why its renewal fails (its log: \"certificate renewal failed\")".into(),
                )),
            ),
            (
                "cert-expiry: renewal overdue (a third of a year left is 121 days)",
                cert_expiry,
                |o| o.certificates[1] = cert("peer.crt on this node", local("peer"), 100, 365, &[]),
                Some((
                    "peer.crt on this node expires on 20270425T080000Z (in 100d): its renewal is overdue",
                    "the agent renews it at its next heal.interval tick, and `etcd-bootstrap run` before it starts etcd: check that the agent runs (`systemctl status etcd-bootstrap`) and why its renewal fails (its log: \"certificate renewal failed\")".into(),
                )),
            ),
            (
                "cert-expiry: files mode, 100 days left is fine",
                cert_expiry,
                |o| {
                    o.renewal = Renewal::Files;
                    o.certificates[1] = cert("peer.crt on this node", local("peer"), 100, 365, &[]);
                },
                None,
            ),
            (
                "cert-expiry: files mode, 10 days left",
                cert_expiry,
                |o| {
                    o.renewal = Renewal::Files;
                    o.certificates[1] = cert("peer.crt on this node", local("peer"), 10, 365, &[]);
                },
                Some((
                    "peer.crt on this node expires on 20270125T080000Z (in 10d)",
                    "put a renewed certificate where tls.peer_cert points (tls.mode = \"files\" issues nothing); the agent copies it into /etc/etcd/pki at its next heal.interval tick".into(),
                )),
            ),
            (
                "cert-expiry: another member's served certificate expired",
                cert_expiry,
                |o| {
                    o.certificates[2] = cert(
                        "the peer certificate etcd2 serves at 10.0.0.12:2380",
                        Origin::Served { member: "etcd2".into() },
                        -1,
                        365,
                        &[],
                    )
                },
                Some((
                    "the peer certificate etcd2 serves at 10.0.0.12:2380 expired",
                    "on etcd2: its agent renews it at its next heal.interval tick; check that it runs there and why its renewal fails (`etcd-bootstrap doctor` there)".into(),
                )),
            ),
            (
                "cert-expiry: the CA within 60 days",
                cert_expiry,
                |o| o.certificates[0] = cert("ca.crt on this node", Origin::Ca, 30, 3650, &[]),
                Some((
                    "ca.crt on this node expires on 20270214T080000Z (in 30d)",
                    "make a new CA and give it to every member (tls.ca_cert, or the signer's); each member keeps the previous CA trusted for tls.ca_overlap while the others switch, and etcd is restarted to read it".into(),
                )),
            ),
            ("cert-names: covered", cert_names, |_| {}, None),
            (
                "cert-names: the local peer certificate lacks the new IP",
                cert_names,
                |o| o.certificates[1].must_cover = vec!["10.0.0.21".into(), "etcd1.lab.test".into()],
                Some((
                    "peer.crt on this node does not cover 10.0.0.21 (it covers 10.0.0.11, etcd1.lab.test)",
                    "the agent re-issues a certificate that no longer covers this member's addresses at its next heal.interval tick, and `etcd-bootstrap run` before it starts etcd: check that the agent runs (`systemctl status etcd-bootstrap`) and why its renewal fails (its log: \"certificate renewal failed\")".into(),
                )),
            ),
            (
                "cert-names: files mode names the SANs to issue",
                cert_names,
                |o| {
                    o.renewal = Renewal::Files;
                    o.certificates[1].must_cover = vec!["10.0.0.21".into(), "etcd1.lab.test".into()];
                },
                Some((
                    "does not cover 10.0.0.21",
                    "issue it again with IP:10.0.0.21 among its SANs and put it where tls.peer_cert points".into(),
                )),
            ),
            (
                "cert-names: another member serves a certificate without its name",
                cert_names,
                |o| o.certificates[2].must_cover = vec!["10.0.0.12".into(), "etcd2.lab.test".into()],
                Some((
                    "the peer certificate etcd2 serves at 10.0.0.12:2380 does not cover etcd2.lab.test",
                    "on etcd2: its agent re-issues it at its next heal.interval tick; check that it runs there (`etcd-bootstrap doctor` there)".into(),
                )),
            ),
            ("nospace: no alarm, small databases", nospace, |_| {}, None),
            (
                "nospace: a NOSPACE alarm",
                nospace,
                |o| o.alarms = Ok(vec![Alarm { member: "etcd2".into(), alarm: "NOSPACE".into() }]),
                Some((
                    "NOSPACE alarm raised by etcd2: the cluster takes only reads and deletes",
                    format!("free space, then disarm: E='{CTL}'; $E compact 1234; $E defrag --cluster; $E alarm disarm (compacting drops the history before the current revision: watchers behind it list again). If the data needs the room, raise [etcd.flags] quota-backend-bytes (now 2.0 GiB) on every member first"),
                )),
            ),
            (
                "nospace: a database at 90% of the quota",
                nospace,
                |o| o.members[1].db = Some(Db { size: DEFAULT_QUOTA_BYTES / 10 * 9, in_use: DEFAULT_QUOTA_BYTES / 10 * 9 }),
                Some((
                    "etcd2 (https://10.0.0.12:2380)'s database is 1.8 GiB of the 2.0 GiB quota (89%)",
                    "compact, then defragment it: E='etcdctl --endpoints https://10.0.0.12:2379 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt --key /etc/etcd/pki/client.key'; $E compact 1234; $E defrag; or raise [etcd.flags] quota-backend-bytes on every member (etcd advises at most 8 GiB)".into(),
                )),
            ),
            (
                "nospace: quotas off, a big database is fine",
                nospace,
                |o| {
                    o.quota = None;
                    o.members[1].db = Some(Db { size: 9 << 30, in_use: 9 << 30 });
                },
                None,
            ),
            ("fragmentation: little free", fragmentation, |_| {}, None),
            (
                "fragmentation: a small database half free is fine",
                fragmentation,
                |o| o.members[0].db = Some(Db { size: 40 << 20, in_use: 10 << 20 }),
                None,
            ),
            (
                "fragmentation: 300 MiB free",
                fragmentation,
                |o| o.members[1].db = Some(Db { size: 1 << 30, in_use: 724 << 20 }),
                Some((
                    "etcd2 (https://10.0.0.12:2380): 300 MiB of its 1.0 GiB database file is free pages (724 MiB in use)",
                    "defragment it, one member at a time (it blocks that member's reads and writes meanwhile): etcdctl --endpoints https://10.0.0.12:2379 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt --key /etc/etcd/pki/client.key defrag".into(),
                )),
            ),
            (
                "fragmentation: 100 of 150 MiB free",
                fragmentation,
                |o| o.members[2].db = Some(Db { size: 150 << 20, in_use: 50 << 20 }),
                Some(("etcd3 (https://10.0.0.13:2380): 100 MiB of its 150 MiB database file", "defragment it, one member at a time (it blocks that member's reads and writes meanwhile): etcdctl --endpoints https://10.0.0.13:2379 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt --key /etc/etcd/pki/client.key defrag".into())),
            ),
            ("discovery: the same set", discovery, |_| {}, None),
            ("discovery: seeds only", discovery, |o| o.discovery = None, None),
            (
                "discovery: a member missing from the records",
                discovery,
                |o| {
                    if let Some(d) = &mut o.discovery {
                        d.read.as_mut().unwrap().0.pop();
                    }
                },
                Some((
                    "etcd3 (https://10.0.0.13:2380) is a member but not in DNS SRV _etcd-server-ssl._tcp.lab.test",
                    format!("add it to DNS SRV _etcd-server-ssl._tcp.lab.test (for SRV: an _etcd-server-ssl record for its name and the name's A record); if the member is retired, remove it: {CTL} member remove 103"),
                )),
            ),
            (
                "discovery: a record of a node that is not a member",
                discovery,
                |o| {
                    if let Some(d) = &mut o.discovery {
                        d.read.as_mut().unwrap().0.push("https://10.0.0.19:2380".into());
                    }
                },
                Some((
                    "https://10.0.0.19:2380 is in DNS SRV _etcd-server-ssl._tcp.lab.test but not a member",
                    "if that node runs, it joins by itself (see the joins check); if it is gone, delete it from DNS SRV _etcd-server-ssl._tcp.lab.test: a new cluster formed from it would count it".into(),
                )),
            ),
            (
                "discovery: a target that does not resolve",
                discovery,
                |o| {
                    if let Some(d) = &mut o.discovery {
                        d.read.as_mut().unwrap().1.push("etcd9.lab.test".into());
                    }
                },
                Some((
                    "DNS SRV _etcd-server-ssl._tcp.lab.test: etcd9.lab.test do not resolve",
                    "add an A (or AAAA) record for each target, or delete its SRV record: etcd drops targets that do not resolve, so nodes could compute different clusters".into(),
                )),
            ),
            ("clock: in step", clock, |_| {}, None),
            (
                "clock: 1.2 s measured with a 300 ms uncertainty is not sure",
                clock,
                |o| o.clocks[0].measured = Ok((1200, 300)),
                None,
            ),
            (
                "clock: 3 s ahead",
                clock,
                |o| o.clocks[1].measured = Ok((3000, 5)),
                Some((
                    "etcd3's clock is 3.0 s ahead of this node's (±5 ms)",
                    "keep every member's clock in sync with NTP: `timedatectl set-ntp true` (systemd-timesyncd) or chrony, on every member".into(),
                )),
            ),
            ("snapshot: fresh", snapshot, |_| {}, None),
            ("delta: fresh", deltas, |_| {}, None),
            (
                "delta: off",
                deltas,
                |o| o.snapshot.as_mut().unwrap().deltas = None,
                None,
            ),
            (
                "delta: old, but every revision is in the store (no writes since)",
                deltas,
                |o| {
                    let d = o.snapshot.as_mut().unwrap().deltas.as_mut().unwrap();
                    d.newest_age = 3600;
                    d.behind = Some(0);
                },
                None,
            ),
            (
                "delta: older than three intervals with writes not in the store",
                deltas,
                |o| o.snapshot.as_mut().unwrap().deltas.as_mut().unwrap().newest_age = 16,
                Some((
                    "the newest delta segment is 16s old, more than 3 x backup.delta_interval (5s), and the cluster holds 3 revision(s) more: 12 delta segment(s), 340 event(s), in the chain of 20270115T080000Z-r90 in s3://b/etcd",
                    "the agent holding the delta claim uploads a segment every backup.delta_interval: look for \"delta segment\" and \"delta claim\" in the agents' logs, and check that the store answers (`etcd-bootstrap snapshot verify` walks the chain)".into(),
                )),
            ),
            (
                "delta: older than three intervals, the cluster's revision unknown",
                deltas,
                |o| {
                    let d = o.snapshot.as_mut().unwrap().deltas.as_mut().unwrap();
                    d.newest_age = 16;
                    d.behind = None;
                },
                Some((
                    "the newest delta segment is 16s old, more than 3 x backup.delta_interval (5s), and the cluster's revision could not be read: 12 delta segment(s), 340 event(s), in the chain of 20270115T080000Z-r90 in s3://b/etcd",
                    "the agent holding the delta claim uploads a segment every backup.delta_interval: look for \"delta segment\" and \"delta claim\" in the agents' logs, and check that the store answers (`etcd-bootstrap snapshot verify` walks the chain)".into(),
                )),
            ),
            ("snapshot: no [backup]", snapshot, |o| o.snapshot = None, None),
            (
                "snapshot: older than two intervals",
                snapshot,
                |o| o.snapshot.as_mut().unwrap().newest = Ok(Some(("s1".into(), 4000))),
                Some((
                    "the newest snapshot s1 in s3://b/etcd is 66m old, more than 2 x backup.interval (30m)",
                    "the agents take one per backup.interval from a healthy cluster: look for \"scheduled snapshot\" in their logs; take one now: `etcd-bootstrap snapshot save`".into(),
                )),
            ),
            (
                "snapshot: none at all",
                snapshot,
                |o| o.snapshot.as_mut().unwrap().newest = Ok(None),
                Some((
                    "no verified snapshot in s3://b/etcd",
                    "the agents take one per backup.interval from a healthy cluster; take one now: `etcd-bootstrap snapshot save`".into(),
                )),
            ),
            (
                "snapshot: an untrusted object in the store",
                snapshot,
                |o| {
                    o.snapshot.as_mut().unwrap().untrusted = vec![(
                        "20991231T235959Z-r9999.json".into(),
                        "not a signed object".into(),
                    )]
                },
                Some((
                    "1 object(s) in s3://b/etcd are not trusted and are never used, e.g. 20991231T235959Z-r9999.json: not a signed object",
                    "whoever can write the bucket wrote them (or they were stored by a version that did not sign): rotate the bucket's credentials if you did not, then delete them (`etcd-bootstrap snapshot list` marks them UNTRUSTED)".into(),
                )),
            ),
        ]
    }

    #[test]
    fn each_check_passes_and_fails_as_its_table_says() {
        for (name, check, edit, want) in table() {
            let mut o = healthy();
            edit(&mut o);
            let got = check(&o);
            assert!(!got.is_empty(), "{name}: no finding");
            match want {
                None => {
                    assert!(got.iter().all(|f| f.ok), "{name}: {got:#?}");
                    assert_eq!(got.len(), 1, "{name}: one line when all is well: {got:#?}");
                }
                Some((what, fix)) => {
                    let failed: Vec<&Finding> = got.iter().filter(|f| !f.ok).collect();
                    assert_eq!(failed.len(), 1, "{name}: {got:#?}");
                    assert!(failed[0].what.contains(what), "{name}: {}", failed[0].what);
                    assert_eq!(failed[0].fix, fix, "{name}");
                }
            }
        }
    }

    #[test]
    fn a_healthy_cluster_is_all_ok_and_every_check_speaks() {
        let got = check(&healthy());
        assert!(got.iter().all(|f| f.ok), "{got:#?}");
        let checks: Vec<&str> = got.iter().map(|f| f.check).collect();
        assert_eq!(
            checks,
            [
                "quorum",
                "members",
                "joins",
                "cert-expiry",
                "cert-names",
                "nospace",
                "fragmentation",
                "discovery",
                "clock",
                "snapshot",
                "config",
                "delta"
            ]
        );
    }

    /// No automatic recovery happened: no line about it.
    #[test]
    fn no_auto_recovery_no_line() {
        assert!(auto_recovered(&healthy()).is_empty());
    }

    /// Without a quorum no member can be removed: only the quorum line speaks of the members.
    #[test]
    fn without_a_quorum_members_and_joins_stay_silent() {
        let mut o = healthy();
        down(&mut o, 1, None);
        down(&mut o, 2, None);
        o.membership_from_record = true;
        let got = check(&o);
        assert!(got
            .iter()
            .all(|f| f.check != "members" && f.check != "joins"));
        assert!(
            got[0]
                .what
                .contains("(membership from this node's identity record: no member answered)"),
            "{}",
            got[0].what
        );
        assert!(got.iter().any(|f| f.check == "nospace"));
        // Nobody answers at all: the quorum line is the one problem etcd itself shows.
        down(&mut o, 0, None);
        o.alarms = Err("no voting member answers".into());
        let got = check(&o);
        assert_eq!(got.iter().filter(|f| !f.ok).count(), 1, "{got:#?}");
        assert!(got
            .iter()
            .all(|f| f.check != "nospace" && f.check != "fragmentation"));
    }

    #[test]
    fn a_learner_blocks_a_join_by_the_one_learner_rule() {
        let mut o = healthy();
        o.members[2].is_learner = true;
        down(&mut o, 2, None);
        if let Some(d) = &mut o.discovery {
            d.read
                .as_mut()
                .unwrap()
                .0
                .push("https://10.0.0.14:2380".into());
        }
        let got = joins(&o);
        assert!(
            got[0].what.contains("etcd takes one learner at a time"),
            "{}",
            got[0].what
        );
        // And it does not count against the quorum: both voters answer.
        let q = quorum(&o);
        assert!(
            q[0].ok && q[0].what == "2 of 2 voting members answer (2 needed)",
            "{q:?}"
        );
    }

    #[test]
    fn certificates_that_cannot_be_read_fail() {
        let mut o = healthy();
        o.certificates[1].facts = Err("/etc/etcd/pki/peer.crt: No such file".into());
        let got = cert_expiry(&o);
        assert!(
            !got[0].ok && got[0].what.contains("cannot be read"),
            "{got:?}"
        );
    }
}
