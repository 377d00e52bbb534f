//! `etcd-bootstrap doctor`: what is wrong with the cluster, as seen from this node, and the one
//! thing that fixes each problem. Pure: the checks look at a `DoctorInput` (gathered by
//! `agent::doctor`) and return one `Finding` per line; each check's table test is its
//! specification.
//!
//! Checks, in the order they are printed: `quorum` (then, with a quorum, `members` and `joins`),
//! `cert-expiry`, `cert-names`, `nospace`, `fragmentation`, `discovery`, `clock`, `snapshot`, `delta`.
//! One file per check; `text` names members, sizes and dates in the messages, `fix` writes the
//! etcdctl command lines of the fixes.

mod auto_recovered;
mod cert_expiry;
mod cert_names;
mod clock;
mod deltas;
mod discovery;
mod fix;
#[cfg(test)]
pub(crate) mod fixtures;
mod fragmentation;
mod joins;
mod members;
mod nospace;
mod quorum;
mod snapshot;
mod text;

pub(crate) use auto_recovered::auto_recovered;
pub(crate) use cert_expiry::cert_expiry;
pub(crate) use cert_names::cert_names;
pub(crate) use clock::clock;
pub(crate) use deltas::{deltas, deltas_stale};
pub(crate) use discovery::discovery;
pub(crate) use fragmentation::fragmentation;
pub(crate) use joins::joins;
pub(crate) use members::members;
pub(crate) use nospace::{nospace, DEFAULT_QUOTA_BYTES};
pub(crate) use quorum::quorum;
pub(crate) use snapshot::snapshot;

use crate::decide::recover::AgentSeen;
use crate::model::tls::CertFacts;
use serde::Serialize;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
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
pub(crate) struct DoctorInput {
    /// Unix seconds, this node's clock.
    pub now: i64,
    /// This node's raft index from its identity record (for the quorum-loss remedy).
    pub local_index: Option<u64>,
    /// Where `members` came from, when not from a member that answered: "the identity record".
    pub membership_from_record: bool,
    pub members: Vec<CheckedMember>,
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
    /// The rollout of this member's configuration change, halted cluster-wide (one line).
    pub rollout_halted: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedMember {
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
pub(crate) struct Db {
    /// dbSize: the file, which is what the quota is checked against.
    pub size: i64,
    /// dbSizeInUse: the pages holding data (etcd 3.4+).
    pub in_use: i64,
}

/// A certificate: a file of this node, or one another member serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cert {
    /// For messages: "server.crt on this node", "the peer certificate etcd2 serves at ...".
    pub what: String,
    pub origin: Origin,
    pub facts: Result<CertFacts, String>,
    /// The addresses (as text) and DNS names it must cover; empty for the CA and client
    /// certificates.
    pub must_cover: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `ca.crt` of this node (its current CA).
    Ca,
    /// A leaf of this node; `stem` as in `tls.<stem>_cert` ("server", "peer", ...).
    Local { stem: String },
    /// Served by another member.
    Served { member: String },
}

/// Who renews the leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// `local-ca` or `cfssl`: the agent, in the last third of the lifetime, once per interval.
    Agent { heal_interval_secs: i64 },
    /// `files`: whoever issues the pre-issued files.
    Files,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alarm {
    /// CheckedMember name or ID.
    pub member: String,
    /// "NOSPACE", "CORRUPT".
    pub alarm: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiscoverySeen {
    /// "DNS SRV _etcd-server-ssl._tcp.lab.test", "discovery.peers".
    pub source: String,
    /// The peer URLs it lists and the targets that did not resolve, or why it could not be read.
    pub read: Result<(Vec<String>, Vec<String>), String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clock {
    pub who: String,
    /// (offset in ms, positive = ahead of this node; uncertainty in ms, half the round trip),
    /// or why it was not measured.
    pub measured: Result<(i64, i64), String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotSeen {
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
pub(crate) struct DeltaSeen {
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

/// Every check, in order. `members` and `joins` only with a quorum: without one, the `quorum`
/// line names the unreachable members and the remedy, and removing a member is impossible.
/// `nospace` and `fragmentation` only when some member answers: they read etcd itself.
pub(crate) fn check(o: &DoctorInput) -> Vec<Finding> {
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
    out.extend(rollout(o));
    out.extend(deltas(o));
    out
}

/// A reloaded configuration the running agent refused: it still runs on the one before, so what
/// the file says is not what this member does.
pub(crate) fn config(o: &DoctorInput) -> Vec<Finding> {
    match &o.config_rejected {
        None => vec![Finding::ok("config", "no reloaded configuration was refused")],
        Some(why) => vec![Finding::fail(
            "config",
            format!("config rejected: {why}"),
            "the agent keeps running on the configuration it last accepted: correct the configuration (`etcd-bootstrap check-config`), then `systemctl reload etcd-bootstrap`",
        )],
    }
}

/// A rollout halted cluster-wide: one member failed on the new etcd and runs its previous one
/// again; the others were not touched and will not be for this change.
pub(crate) fn rollout(o: &DoctorInput) -> Vec<Finding> {
    match &o.rollout_halted {
        None => vec![Finding::ok("rollout", "no rollout is halted")],
        Some(line) => vec![Finding::fail(
            "rollout",
            line.clone(),
            "read that member's agent log (`journalctl -u etcd-bootstrap`) for why its etcd failed; fix the release, image or flags in the configuration, then `systemctl reload etcd-bootstrap` on every member: a new change lifts the halt and rolls again",
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::doctor::fixtures::*;

    fn table() -> Vec<Row> {
        vec![
            ("config: the one in force was accepted", |_| {}, None),
            (
                "config: a reload was refused",
                |o| o.config_rejected = Some("config key `heal.interval` (from /etc/etcd-bootstrap/config.toml): \"banana\" is not a duration".into()),
                Some((
                    "config rejected: config key `heal.interval` (from /etc/etcd-bootstrap/config.toml): \"banana\" is not a duration",
                    "the agent keeps running on the configuration it last accepted: correct the configuration (`etcd-bootstrap check-config`), then `systemctl reload etcd-bootstrap`".into(),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(config, table());
    }

    #[test]
    fn a_halted_rollout_fails_and_names_the_member() {
        let rows: Vec<Row> = vec![
            ("rollout: none halted", |_| {}, None),
            (
                "rollout: halted",
                |o| o.rollout_halted = Some("rollout halted: member m2 was not healthy on etcd 3.5.30".into()),
                Some((
                    "rollout halted: member m2 was not healthy on etcd 3.5.30",
                    "read that member's agent log (`journalctl -u etcd-bootstrap`) for why its etcd failed; fix the release, image or flags in the configuration, then `systemctl reload etcd-bootstrap` on every member: a new change lifts the halt and rolls again".into(),
                )),
            ),
        ];
        run_table(rollout, rows);
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
                "rollout",
                "delta"
            ]
        );
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
}
