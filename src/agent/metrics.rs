//! The agent's Prometheus metrics: one process-wide registry, filled by the small free functions
//! below at the moment something happens (one line at each call site), rendered in the
//! Prometheus text format (0.0.4) by `server` on `metrics.listen`.
//!
//! Certificate expiry is not recorded by anyone: it is read from the files at every scrape, so
//! that it is right whoever replaced a file (a renewal here, an operator, a config manager).
//! Gauges whose value is unknown until something is observed (the last snapshot, the quorum,
//! NOSPACE, the peers found) are absent until then rather than 0: a 0 would read as "no snapshot
//! since 1970" or "quorum lost" and fire alerts while the member is still coming up. (The text
//! format leaves out a family without series altogether, HELP and TYPE included.)
//!
//! Names: `etcd_bootstrap_` + what + unit (`_seconds`, `_bytes`) + `_total` for counters.

pub(crate) mod server;

use crate::discovery::Discovered;
use crate::etcd::client::Whoami;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

/// The `Content-Type` of what `render` returns.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The heal actions counted in `etcd_bootstrap_heal_actions_total{action}`. An enum rather than
/// free text: a label's values must stay few and fixed, and a typo would start a new series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealAction {
    /// Joined the cluster again after the data was moved aside.
    Rejoin,
    /// The data dir was moved aside (this member was removed, or its data is unusable).
    MoveAside,
    /// The leader's agent removed a dead member (`heal.remove_dead_after`).
    RemoveDead,
    /// Certificate material was re-issued or replaced.
    Renew,
    /// `recover` was carried out here (`--force-new-cluster`, once).
    Recover,
    /// A snapshot was restored as this member's data (a fleet-wide restore, or a new cluster
    /// started from the newest snapshot).
    Restore,
}

impl HealAction {
    pub(crate) const ALL: [HealAction; 6] = [
        HealAction::Rejoin,
        HealAction::MoveAside,
        HealAction::RemoveDead,
        HealAction::Renew,
        HealAction::Recover,
        HealAction::Restore,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            HealAction::Rejoin => "rejoin",
            HealAction::MoveAside => "move_aside",
            HealAction::RemoveDead => "remove_dead",
            HealAction::Renew => "renew",
            HealAction::Recover => "recover",
            HealAction::Restore => "restore",
        }
    }
}

/// The local member as the agent last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberState {
    /// A healthy voting member.
    Voter,
    /// Joined as a learner, not promoted yet.
    Learner,
    /// Not answering as healthy: stopped, starting, without a quorum, or reporting an alarm.
    Down,
}

impl MemberState {
    pub(crate) const ALL: [MemberState; 3] =
        [MemberState::Voter, MemberState::Learner, MemberState::Down];

    pub(crate) fn label(self) -> &'static str {
        match self {
            MemberState::Voter => "voter",
            MemberState::Learner => "learner",
            MemberState::Down => "down",
        }
    }

    /// From the outcome of a health check (`client::check_health`).
    pub(crate) fn of(health: &anyhow::Result<Whoami>) -> Self {
        match health {
            Ok(me) if me.is_learner => MemberState::Learner,
            Ok(_) => MemberState::Voter,
            Err(_) => MemberState::Down,
        }
    }
}

type Label<V> = [(&'static str, V); 1];
type NoLabels = [(&'static str, &'static str); 0];

/// A gauge without labels that has no series until it is first set.
#[derive(Default)]
struct Unknown(Family<NoLabels, Gauge>);

impl Unknown {
    fn set(&self, value: i64) {
        self.0.get_or_create(&[]).set(value);
    }

    fn get(&self) -> Option<i64> {
        self.0.get(&[]).map(|g| g.get())
    }
}

struct Metrics {
    registry: Registry,
    heal_actions: Family<Label<&'static str>, Counter>,
    snapshot_time: Unknown,
    snapshot_size: Unknown,
    snapshot_failures: Counter,
    delta_time: Unknown,
    delta_chain_segments: Unknown,
    delta_chain_events: Unknown,
    delta_failures: Counter,
    delta_full_snapshots: Family<Label<&'static str>, Counter>,
    store_untrusted: Unknown,
    defrags: Family<Label<String>, Counter>,
    defrag_reclaimed: Family<Label<String>, Counter>,
    member_state: Family<Label<&'static str>, Gauge>,
    quorum: Unknown,
    nospace: Unknown,
    discovery_peers: Unknown,
    discovery_reads: Family<Label<&'static str>, Counter>,
    auto_recoveries: Family<Label<&'static str>, Counter>,
    auto_recovery_lost: Unknown,
    rollout_halted: Gauge,
    cert_expiry: Family<Label<String>, Gauge>,
    /// Held while `member_state`'s three series change together, while the certificate series
    /// are replaced and while the registry is rendered: a scrape never sees either half-way.
    consistent: Mutex<()>,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("etcd_bootstrap"),
            heal_actions: Default::default(),
            snapshot_time: Default::default(),
            snapshot_size: Default::default(),
            snapshot_failures: Default::default(),
            delta_time: Default::default(),
            delta_chain_segments: Default::default(),
            delta_chain_events: Default::default(),
            delta_failures: Default::default(),
            delta_full_snapshots: Default::default(),
            store_untrusted: Default::default(),
            defrags: Default::default(),
            defrag_reclaimed: Default::default(),
            member_state: Default::default(),
            quorum: Default::default(),
            nospace: Default::default(),
            discovery_peers: Default::default(),
            discovery_reads: Default::default(),
            auto_recoveries: Default::default(),
            auto_recovery_lost: Default::default(),
            rollout_halted: Default::default(),
            cert_expiry: Default::default(),
            consistent: Mutex::new(()),
        };
        m.register_agent();
        m.register_backup();
        m.register_maintenance();
        m.register_etcd();
        m.register_discovery();
        m.register_recovery();
        m.start_at_zero();
        m
    }

    /// The agent's own: its certificates' expiry, the heal actions it carried out.
    fn register_agent(&mut self) {
        self.registry.register_with_unit(
            "certificate_expiry_timestamp",
            "When each certificate in tls.dir expires (notAfter), in seconds since the epoch, read from the file at every scrape; a file that cannot be read or parsed has no series",
            Unit::Seconds,
            self.cert_expiry.clone(),
        );
        self.registry.register(
            "heal_actions",
            "Heal actions this agent carried out, by action (rejoin, move_aside, remove_dead, renew, recover, restore)",
            self.heal_actions.clone(),
        );
    }

    /// Backups: full snapshots, the delta chain, the store's untrusted objects.
    fn register_backup(&mut self) {
        self.registry.register_with_unit(
            "snapshot_last_success_timestamp",
            "Creation time of the newest snapshot this agent knows of (read from the store at start, then each one it stores), in seconds since the epoch; take the max over the cluster's agents",
            Unit::Seconds,
            self.snapshot_time.0.clone(),
        );
        self.registry.register_with_unit(
            "snapshot_last_size",
            "Stored size of that snapshot",
            Unit::Bytes,
            self.snapshot_size.0.clone(),
        );
        self.registry.register(
            "snapshot_failures",
            "Scheduled snapshots this agent claimed and failed to store",
            self.snapshot_failures.clone(),
        );
        self.registry.register_with_unit(
            "delta_segment_last_success_timestamp",
            "Creation time of the newest delta segment of the newest chain, as the agent holding the delta claim last saw it, in seconds since the epoch (now minus this is the RPO); take the max over the cluster's agents",
            Unit::Seconds,
            self.delta_time.0.clone(),
        );
        self.registry.register(
            "delta_chain_segments",
            "Segments in the newest chain (after its full snapshot), as the agent holding the delta claim last saw it",
            self.delta_chain_segments.0.clone(),
        );
        self.registry.register(
            "delta_chain_events",
            "Events in the newest chain, as the agent holding the delta claim last saw it; a chain above backup.delta_max_events is closed by a full snapshot",
            self.delta_chain_events.0.clone(),
        );
        self.registry.register(
            "delta_failures",
            "Rounds of the delta uploader that failed (watch, store or claim errors)",
            self.delta_failures.clone(),
        );
        self.registry.register(
            "delta_full_snapshots",
            "Full snapshots the delta uploader took out of schedule, by reason (compacted: the watch met a compacted revision; chain_too_long: more than backup.delta_max_events; cluster_changed: the newest full snapshot is of another cluster ID, the cluster was restored since)",
            self.delta_full_snapshots.clone(),
        );
        self.registry.register(
            "store_untrusted_objects",
            "Objects in the snapshot store that look like manifests but are not to be trusted (unsigned, badly signed, misnamed, too large, of another cluster, from the future), at this agent's last listing; they are never used. Above 0: somebody with write access to the bucket wrote them",
            self.store_untrusted.0.clone(),
        );
    }

    /// Maintenance: defragmentation.
    fn register_maintenance(&mut self) {
        self.registry.register(
            "defrags",
            "Defragmentations completed, by member",
            self.defrags.clone(),
        );
        self.registry.register_with_unit(
            "defrag_reclaimed",
            "Bytes given back by defragmentation, by member",
            Unit::Bytes,
            self.defrag_reclaimed.clone(),
        );
        self.registry.register(
            "rollout_halted",
            "1 while the rollout of this member's configuration change is halted cluster-wide (a member was not healthy on the new etcd and was put back; `doctor` names it), else 0",
            self.rollout_halted.clone(),
        );
    }

    /// etcd as the agent sees it: the local member's state, the quorum, the NOSPACE alarm.
    fn register_etcd(&mut self) {
        self.registry.register(
            "member_state",
            "The local member as the agent last saw it: 1 for its state (voter, learner, down), 0 for the others",
            self.member_state.clone(),
        );
        self.registry.register(
            "quorum_healthy",
            "1 when the agent's last check found a quorum (the local member serves a linearizable read, or a majority of its membership answers), 0 when a majority was unreachable",
            self.quorum.0.clone(),
        );
        self.registry.register(
            "nospace_alarm_active",
            "1 while the local member reports etcd's NOSPACE alarm (the cluster is read-only until a defrag and `etcdctl alarm disarm`), 0 when it reports no alarm",
            self.nospace.0.clone(),
        );
    }

    /// Discovery reads and the peers they found.
    fn register_discovery(&mut self) {
        self.registry.register(
            "discovery_peers",
            "Peers found by the last successful discovery read (SRV records, static peers or seeds)",
            self.discovery_peers.0.clone(),
        );
        self.registry.register(
            "discovery_reads",
            "Discovery reads, by result (ok, error)",
            self.discovery_reads.clone(),
        );
    }

    /// Automatic recoveries from a lost quorum.
    fn register_recovery(&mut self) {
        self.registry.register(
            "auto_recoveries",
            "Automatic recoveries from a lost quorum (heal.auto_recover) this agent carried out, by the copy the cluster came back from (member, store)",
            self.auto_recoveries.clone(),
        );
        self.registry.register(
            "auto_recovery_revisions_lost",
            "At this agent's last automatic recovery: how many revisions the copy it came back from was behind the highest revision any member or the store had seen (0: nothing lost)",
            self.auto_recovery_lost.0.clone(),
        );
    }

    /// Every series that can appear, from the start at 0: `increase()` and `rate()` see the
    /// first event only when the series existed before it. And the member down.
    fn start_at_zero(&self) {
        for a in HealAction::ALL {
            let _ = self.heal_actions.get_or_create(&[("action", a.label())]);
        }
        for reason in super::deltas::FullReason::ALL {
            let _ = self
                .delta_full_snapshots
                .get_or_create(&[("reason", reason.label())]);
        }
        for result in ["ok", "error"] {
            let _ = self.discovery_reads.get_or_create(&[("result", result)]);
        }
        for source in ["member", "store"] {
            let _ = self.auto_recoveries.get_or_create(&[("source", source)]);
        }
        // Down until the agent has seen its member healthy.
        for s in MemberState::ALL {
            let up = (s == MemberState::Down) as i64;
            self.member_state
                .get_or_create(&[("state", s.label())])
                .set(up);
        }
    }

    fn heal_action(&self, action: HealAction) {
        self.heal_actions
            .get_or_create(&[("action", action.label())])
            .inc();
    }

    fn snapshot_stored(&self, unix_time: i64, bytes: u64) {
        if self
            .snapshot_time
            .get()
            .is_some_and(|known| known > unix_time)
        {
            return;
        }
        self.snapshot_time.set(unix_time);
        self.snapshot_size
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn defrag_done(&self, member: &str, reclaimed_bytes: u64) {
        let label = [("member", member.to_string())];
        self.defrags.get_or_create(&label).inc();
        self.defrag_reclaimed
            .get_or_create(&label)
            .inc_by(reclaimed_bytes);
    }

    fn member_state(&self, state: MemberState) {
        let _one = self
            .consistent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for s in MemberState::ALL {
            self.member_state
                .get_or_create(&[("state", s.label())])
                .set((s == state) as i64);
        }
    }

    fn discovery(&self, peers_found: usize, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.discovery_reads
            .get_or_create(&[("result", result)])
            .inc();
        if ok {
            self.discovery_peers
                .set(i64::try_from(peers_found).unwrap_or(i64::MAX));
        }
    }

    fn local_health(&self, health: &anyhow::Result<Whoami>) {
        self.member_state(MemberState::of(health));
        match health {
            Ok(_) => {
                self.quorum.set(1);
                self.nospace.set(0);
            }
            // etcd reports alarms in Maintenance.Status's errors ("memberID:... alarm:NOSPACE"),
            // which check_health turns into its error.
            Err(e) if format!("{e:#}").contains("NOSPACE") => self.nospace.set(1),
            Err(_) => {}
        }
    }

    fn render(&self, certs: &[(String, PathBuf)]) -> String {
        let _one = self
            .consistent
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Replaced whole: a file that is gone must not keep its last value.
        self.cert_expiry.clear();
        for (file, path) in certs {
            if let Some(t) = not_after(path) {
                self.cert_expiry
                    .get_or_create(&[("file", file.clone())])
                    .set(t);
            }
        }
        let mut out = String::new();
        if prometheus_text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String does not fail; an empty answer is the safe side regardless.
            out.clear();
        }
        out
    }
}

/// Count one heal action.
pub(crate) fn heal_action(action: HealAction) {
    metrics().heal_action(action);
}

/// A snapshot was stored (or, at start, found in the store): its creation time in seconds since
/// the epoch and its stored size. An older one than already known changes nothing.
pub(crate) fn snapshot_stored(unix_time: i64, bytes: u64) {
    metrics().snapshot_stored(unix_time, bytes);
}

/// Whether the rollout of this member's configuration change is halted cluster-wide.
pub(crate) fn rollout_halted(halted: bool) {
    metrics().rollout_halted.set(halted as i64);
}

/// How many untrusted objects the last listing of the store found.
pub(crate) fn store_untrusted_objects(count: usize) {
    metrics().store_untrusted.set(count as i64);
}

/// A scheduled snapshot this agent claimed could not be stored.
pub(crate) fn snapshot_failed() {
    metrics().snapshot_failures.inc();
}

/// Where the newest chain ends, as the store says (the delta uploader reads it every round).
pub(crate) fn delta_chain(link: &crate::backup::segment::Link) {
    let m = metrics();
    m.delta_chain_segments.set(link.segments as i64);
    m.delta_chain_events
        .set(i64::try_from(link.chain_events).unwrap_or(i64::MAX));
    if let Some(t) = super::deltas::newest_segment_unix(link) {
        m.delta_time.set(t);
    }
}

/// A delta segment was stored, the `segments`-th of its chain.
pub(crate) fn delta_segment_stored(s: &crate::backup::segment::SegmentManifest, segments: usize) {
    let m = metrics();
    if let Some(t) = crate::backup::signed::parse_time(&s.created) {
        m.delta_time.set(t.unix_timestamp());
    }
    m.delta_chain_segments.set(segments as i64);
    m.delta_chain_events
        .set(i64::try_from(s.chain_events).unwrap_or(i64::MAX));
}

/// A round of the delta uploader failed.
pub(crate) fn delta_failed() {
    metrics().delta_failures.inc();
}

/// The delta uploader took a full snapshot out of schedule, for `reason`.
pub(crate) fn delta_full_snapshot(reason: &'static str) {
    metrics()
        .delta_full_snapshots
        .get_or_create(&[("reason", reason)])
        .inc();
}

/// A defragmentation of `member` (its etcd name) finished, giving back `reclaimed_bytes` (the
/// database size before minus after; 0 when it did not shrink). For the maintenance schedule and
/// `defrag`: call once per member defragmented.
pub(crate) fn defrag_done(member: &str, reclaimed_bytes: u64) {
    metrics().defrag_done(member, reclaimed_bytes);
}

/// The local member's state, as last seen.
pub(crate) fn member_state(state: MemberState) {
    metrics().member_state(state);
}

/// An automatic recovery was carried out here, from `source` ("member" or "store"), `lost`
/// revisions behind the highest any member or the store had seen (`None`: unknown).
pub(crate) fn auto_recovery(source: &'static str, lost: Option<i64>) {
    let m = metrics();
    m.auto_recoveries.get_or_create(&[("source", source)]).inc();
    if let Some(l) = lost {
        m.auto_recovery_lost.set(l);
    }
}

/// Whether the agent's last check found a quorum.
pub(crate) fn quorum(ok: bool) {
    metrics().quorum.set(ok as i64);
}

/// One discovery read: how many peers it found, and whether it worked. A failed read keeps the
/// peers of the last one that worked.
pub(crate) fn discovery(peers_found: usize, ok: bool) {
    metrics().discovery(peers_found, ok);
}

/// `discovery` for the outcome of one discovery read.
pub(crate) fn discovery_read<D: Borrow<Discovered>, E>(read: &Result<D, E>) {
    match read {
        Ok(d) => discovery(d.borrow().peers.len(), true),
        Err(_) => discovery(0, false),
    }
}

/// Whether etcd's NOSPACE alarm is active, as the local member reports it.
pub(crate) fn nospace(active: bool) {
    metrics().nospace.set(active as i64);
}

/// What one heal-loop health check says: the member's state; a quorum when it is healthy (it
/// served a linearizable read); NOSPACE when it is healthy (no alarm) or reports that alarm.
/// An unhealthy member says nothing about the quorum: the loop asks its peers for that.
pub(crate) fn local_health(health: &anyhow::Result<Whoami>) {
    metrics().local_health(health);
}

/// The registry in the Prometheus text format, with the expiry of each certificate in `certs`
/// (file name, path) read now.
pub(crate) fn render(certs: &[(String, PathBuf)]) -> String {
    metrics().render(certs)
}

/// notAfter of the (first) certificate in `path`, in seconds since the epoch.
fn not_after(path: &Path) -> Option<i64> {
    let pem = crate::util::fs::read_pem(path).ok()?;
    crate::tls::not_after_unix(&pem).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    type Labels = BTreeMap<String, String>;

    #[derive(Debug, Default)]
    struct Parsed {
        kind: String,
        help: String,
        samples: Vec<(Labels, f64)>,
    }

    /// The Prometheus text format (0.0.4) back into families, strictly: every line is a HELP, a
    /// TYPE or a sample of a family declared before it.
    fn parse(text: &str) -> BTreeMap<String, Parsed> {
        let mut out: BTreeMap<String, Parsed> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect(line);
                out.entry(name.into()).or_default().help = help.into();
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect(line);
                out.entry(name.into()).or_default().kind = kind.into();
            } else {
                let (series, value) = line.rsplit_once(' ').expect(line);
                let value: f64 = value.parse().expect(line);
                let (name, labels) = match series.split_once('{') {
                    None => (series, Labels::new()),
                    Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect(line))),
                };
                let family = out
                    .get_mut(name)
                    .unwrap_or_else(|| panic!("undeclared: {line}"));
                family.samples.push((labels, value));
            }
        }
        out
    }

    fn parse_labels(mut text: &str) -> Labels {
        let mut labels = Labels::new();
        while !text.is_empty() {
            let (key, rest) = text.split_once("=\"").expect(text);
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().expect("closing quote") {
                    (_, '\\') => match chars.next().expect("escape").1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.to_string(), value);
            text = rest[end + 1..].trim_start_matches(',');
        }
        labels
    }

    /// The value of the sample of family `name` with exactly `labels`; `None` also when the
    /// family has no series at all (then it is not in the text).
    fn value(
        families: &BTreeMap<String, Parsed>,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<f64> {
        let want: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        families
            .get(name)?
            .samples
            .iter()
            .find(|(l, _)| *l == want)
            .map(|(_, v)| *v)
    }

    const FAMILIES: [(&str, &str); 22] = [
        (
            "etcd_bootstrap_certificate_expiry_timestamp_seconds",
            "gauge",
        ),
        ("etcd_bootstrap_heal_actions_total", "counter"),
        (
            "etcd_bootstrap_snapshot_last_success_timestamp_seconds",
            "gauge",
        ),
        ("etcd_bootstrap_snapshot_last_size_bytes", "gauge"),
        ("etcd_bootstrap_snapshot_failures_total", "counter"),
        (
            "etcd_bootstrap_delta_segment_last_success_timestamp_seconds",
            "gauge",
        ),
        ("etcd_bootstrap_delta_chain_segments", "gauge"),
        ("etcd_bootstrap_delta_chain_events", "gauge"),
        ("etcd_bootstrap_delta_failures_total", "counter"),
        ("etcd_bootstrap_delta_full_snapshots_total", "counter"),
        ("etcd_bootstrap_store_untrusted_objects", "gauge"),
        ("etcd_bootstrap_defrags_total", "counter"),
        ("etcd_bootstrap_defrag_reclaimed_bytes_total", "counter"),
        ("etcd_bootstrap_member_state", "gauge"),
        ("etcd_bootstrap_quorum_healthy", "gauge"),
        ("etcd_bootstrap_nospace_alarm_active", "gauge"),
        ("etcd_bootstrap_discovery_peers", "gauge"),
        ("etcd_bootstrap_discovery_reads_total", "counter"),
        ("etcd_bootstrap_auto_recoveries_total", "counter"),
        ("etcd_bootstrap_auto_recovery_revisions_lost", "gauge"),
        ("etcd_bootstrap_rollout_halted", "gauge"),
        // Not a family: makes the count a compile-time check of this list's length.
        ("", ""),
    ];

    /// One of everything recorded, and the certificate `ca` (file "ca.crt"): every family has
    /// a series.
    fn everything_once(ca: &Path) -> String {
        let m = Metrics::new();
        m.heal_action(HealAction::Renew);
        m.snapshot_stored(1_800_000_000, 1);
        m.snapshot_failures.inc();
        m.delta_time.set(1_800_000_000);
        m.delta_chain_segments.set(3);
        m.delta_chain_events.set(30);
        m.delta_failures.inc();
        m.store_untrusted.set(0);
        m.defrag_done("etcd-1", 1);
        m.member_state(MemberState::Voter);
        m.quorum.set(1);
        m.nospace.set(0);
        m.discovery(3, true);
        m.auto_recovery_lost.set(0);
        m.render(&[("ca.crt".to_string(), ca.to_path_buf())])
    }

    fn test_ca() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let validity = std::time::Duration::from_secs(86400 * 30);
        let (ca, _key) = crate::tls::ca::init(dir.path(), "metrics test CA", validity).unwrap();
        (dir, ca)
    }

    /// Once each has a series, every family is in the text with its type and help, and nothing
    /// else is.
    #[test]
    fn every_family_with_its_type_and_help() {
        let (_dir, ca) = test_ca();
        let families = parse(&everything_once(&ca));
        let declared: BTreeMap<&str, &str> = FAMILIES
            .iter()
            .copied()
            .filter(|(n, _)| !n.is_empty())
            .collect();
        let names: Vec<&str> = families.keys().map(String::as_str).collect();
        assert_eq!(names, declared.keys().copied().collect::<Vec<_>>());
        for (name, f) in &families {
            assert_eq!(f.kind, declared[name.as_str()], "{name}");
            assert!(
                f.help.len() > 20 && f.help.ends_with('.'),
                "{name}: {:?}",
                f.help
            );
            assert!(!f.samples.is_empty(), "{name}");
        }
    }

    /// Before anything happened: the counters that can move, at 0 (so that `increase()` sees
    /// their first event), the member down, and no family for what is not known yet.
    #[test]
    fn a_fresh_registry_shows_only_what_is_known() {
        let families = parse(&Metrics::new().render(&[]));
        let names: Vec<&str> = families.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "etcd_bootstrap_auto_recoveries_total",
                "etcd_bootstrap_delta_failures_total",
                "etcd_bootstrap_delta_full_snapshots_total",
                "etcd_bootstrap_discovery_reads_total",
                "etcd_bootstrap_heal_actions_total",
                "etcd_bootstrap_member_state",
                "etcd_bootstrap_rollout_halted",
                "etcd_bootstrap_snapshot_failures_total",
            ]
        );
        let heal = &families["etcd_bootstrap_heal_actions_total"].samples;
        assert_eq!(heal.len(), HealAction::ALL.len());
        for a in HealAction::ALL {
            let v = value(
                &families,
                "etcd_bootstrap_heal_actions_total",
                &[("action", a.label())],
            );
            assert_eq!(v, Some(0.0), "{}", a.label());
        }
        for (state, v) in [("voter", 0.0), ("learner", 0.0), ("down", 1.0)] {
            let got = value(
                &families,
                "etcd_bootstrap_member_state",
                &[("state", state)],
            );
            assert_eq!(got, Some(v), "{state}");
        }
        for result in ["ok", "error"] {
            let got = value(
                &families,
                "etcd_bootstrap_discovery_reads_total",
                &[("result", result)],
            );
            assert_eq!(got, Some(0.0), "{result}");
        }
        assert_eq!(
            value(&families, "etcd_bootstrap_snapshot_failures_total", &[]),
            Some(0.0)
        );
    }

    #[test]
    fn recorded_events_show_in_the_text() {
        let m = Metrics::new();
        m.heal_action(HealAction::Rejoin);
        m.heal_action(HealAction::Rejoin);
        m.heal_action(HealAction::RemoveDead);
        m.snapshot_stored(1_800_000_000, 5 << 20);
        // An older snapshot found later (the store's listing at start) changes nothing.
        m.snapshot_stored(1_700_000_000, 7);
        m.snapshot_failures.inc();
        m.defrag_done("etcd-1", 100);
        m.defrag_done("etcd-1", 0);
        m.defrag_done("etcd \"2\"", 3);
        m.member_state(MemberState::Learner);
        m.discovery(3, true);
        m.discovery(0, false);
        let f = parse(&m.render(&[]));
        let v = |name: &str, labels: &[(&str, &str)]| value(&f, name, labels);
        assert_eq!(
            v("etcd_bootstrap_heal_actions_total", &[("action", "rejoin")]),
            Some(2.0)
        );
        assert_eq!(
            v(
                "etcd_bootstrap_heal_actions_total",
                &[("action", "remove_dead")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v("etcd_bootstrap_heal_actions_total", &[("action", "renew")]),
            Some(0.0)
        );
        assert_eq!(
            v(
                "etcd_bootstrap_snapshot_last_success_timestamp_seconds",
                &[]
            ),
            Some(1.8e9)
        );
        assert_eq!(
            v("etcd_bootstrap_snapshot_last_size_bytes", &[]),
            Some((5 << 20) as f64)
        );
        assert_eq!(v("etcd_bootstrap_snapshot_failures_total", &[]), Some(1.0));
        assert_eq!(
            v("etcd_bootstrap_defrags_total", &[("member", "etcd-1")]),
            Some(2.0)
        );
        assert_eq!(
            v(
                "etcd_bootstrap_defrag_reclaimed_bytes_total",
                &[("member", "etcd-1")]
            ),
            Some(100.0)
        );
        assert_eq!(
            v("etcd_bootstrap_defrags_total", &[("member", "etcd \"2\"")]),
            Some(1.0),
            "escaped label value"
        );
        assert_eq!(
            v("etcd_bootstrap_member_state", &[("state", "learner")]),
            Some(1.0)
        );
        assert_eq!(
            v("etcd_bootstrap_member_state", &[("state", "down")]),
            Some(0.0)
        );
        assert_eq!(
            v("etcd_bootstrap_discovery_peers", &[]),
            Some(3.0),
            "a failed read keeps the last peers"
        );
        assert_eq!(
            v("etcd_bootstrap_discovery_reads_total", &[("result", "ok")]),
            Some(1.0)
        );
        assert_eq!(
            v(
                "etcd_bootstrap_discovery_reads_total",
                &[("result", "error")]
            ),
            Some(1.0)
        );
        assert!(!f.contains_key("etcd_bootstrap_quorum_healthy"));

        // A health check that reports NOSPACE: down, the alarm on, the quorum still unknown.
        m.local_health(&Err(anyhow::anyhow!(
            "member reports errors: memberID:8e9e05c52164694d alarm:NOSPACE "
        )));
        let f = parse(&m.render(&[]));
        assert_eq!(
            value(&f, "etcd_bootstrap_member_state", &[("state", "down")]),
            Some(1.0)
        );
        assert_eq!(
            value(&f, "etcd_bootstrap_nospace_alarm_active", &[]),
            Some(1.0)
        );
        assert!(!f.contains_key("etcd_bootstrap_quorum_healthy"));
        // Healthy: a voter, a quorum, no alarm.
        m.local_health(&Ok(Whoami {
            member_id: 1,
            cluster_id: 2,
            leader: 1,
            is_learner: false,
            raft_index: 10,
            raft_term: 2,
            revision: 5,
            errors: vec![],
            version: "3.5.30".into(),
        }));
        let f = parse(&m.render(&[]));
        let states: Vec<f64> = ["voter", "learner", "down"]
            .iter()
            .map(|s| value(&f, "etcd_bootstrap_member_state", &[("state", s)]).unwrap())
            .collect();
        assert_eq!(states, [1.0, 0.0, 0.0]);
        assert_eq!(value(&f, "etcd_bootstrap_quorum_healthy", &[]), Some(1.0));
        assert_eq!(
            value(&f, "etcd_bootstrap_nospace_alarm_active", &[]),
            Some(0.0)
        );
    }

    /// Every metric the shipped alerting rules use is one this registry declares.
    #[test]
    fn the_alert_rules_use_declared_metrics() {
        let rules = include_str!("../../dist/prometheus/etcd-bootstrap-alerts.yml");
        let (_dir, ca) = test_ca();
        let families = parse(&everything_once(&ca));
        let mut used = 0;
        for (i, _) in rules.match_indices("etcd_bootstrap_") {
            let name: String = rules[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                families.contains_key(&name),
                "the rules use {name}, which is not exported"
            );
            used += 1;
        }
        assert!(used >= 6, "the rules use {used} etcd_bootstrap_ metrics");
    }

    /// Read from the files at each scrape: a file's series follows the file, a missing or
    /// unreadable file has none.
    #[test]
    fn certificate_expiry_is_read_at_each_scrape() {
        let (dir, ca) = test_ca();
        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let certs = vec![
            ("ca.crt".to_string(), ca.clone()),
            ("server.crt".to_string(), dir.path().join("missing.crt")),
            ("peer.crt".to_string(), garbage),
        ];
        let m = Metrics::new();
        let f = parse(&m.render(&certs));
        let name = "etcd_bootstrap_certificate_expiry_timestamp_seconds";
        assert_eq!(f[name].samples.len(), 1, "{:?}", f[name].samples);
        let got = value(&f, name, &[("file", "ca.crt")]).unwrap() as i64;
        let pem = std::fs::read_to_string(&ca).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let not_after = block.parse_x509().unwrap().validity().not_after.timestamp();
        assert_eq!(got, not_after);
        // test_ca asks for 30 days.
        let asked = time::OffsetDateTime::now_utc().unix_timestamp() + 86400 * 30;
        assert!((got - asked).abs() <= 120, "{got} vs about {asked}");
        std::fs::remove_file(&ca).unwrap();
        let f = parse(&m.render(&certs));
        assert!(!f.contains_key(name), "a removed file keeps no value");
    }
}
