//! What a new cluster starts from when every member has lost its data: empty, or the newest
//! verified snapshot of `cluster.name` in the store (`backup.restore_on_bootstrap`). Pure, tested
//! by its table.
//!
//! Every initial member must start from the same data: etcd derives member and cluster IDs from
//! the initial cluster and the token only, so members restored from different snapshots (or one
//! restored, one empty) would share a cluster ID and replicate on top of different keyspaces
//! without noticing. Hence:
//! - a member whose peers of the same formation already hold data follows them: the snapshot
//!   they restored (their agents report it), or empty if they formed empty;
//! - otherwise the newest snapshot the store lists; an unreadable store stops the formation (an
//!   empty cluster seeded over data that exists would be the worst outcome);
//! - the chosen snapshot is mixed into the token, so that a member that somehow chose another one
//!   gets another cluster ID and is refused by its peers instead of joining them.
//!
//! And the fleet-wide restore of a cluster that still has (some of) its data (`etcd-bootstrap
//! restore --from`): one request in the store names the snapshot, the members (name, peer URL)
//! and a new token; every agent puts its member back to it (`fleet_step`), and a new request is
//! accepted only once the previous one has settled (`may_request`). The token is new for every
//! request, so the restored cluster has a new cluster ID: a member still running the old data is
//! refused by the restored ones (and the other way round) instead of mixing two keyspaces, and
//! two requests that raced each other can never form one cluster from two snapshots.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What the store says about `cluster.name`'s snapshots, as far as this node can use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Snapshots {
    /// No `[backup]`, or `restore_on_bootstrap = false`: new clusters start empty.
    Off,
    /// The ids of the complete snapshots (manifest and data object), newest first, without those
    /// that failed an integrity check on this node.
    Listed(Vec<String>),
    /// The store could not be listed.
    Unreadable(String),
}

/// A peer of this formation that holds data, and the snapshot its data was restored from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FormedPeer {
    pub who: String,
    pub restored_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoSeed {
    /// Waiting for the store (refused at the deadline: forming empty could seed over lost data).
    StoreUnreadable(String),
    /// Peers of this formation started from different data: an operator has to look.
    PeersDisagree(String),
}

impl fmt::Display for NoSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoSeed::StoreUnreadable(e) => write!(
                f,
                "every member is without data and the snapshot store cannot be listed ({e}); a new cluster is not formed empty while the store may hold this cluster's data: fix the store (backup.url, credentials, network) or set backup.restore_on_bootstrap = false to form an empty cluster"
            ),
            NoSeed::PeersDisagree(what) => write!(
                f,
                "the members of this formation started from different data ({what}); refusing to add a third variant: stop them and restore every member from one snapshot (etcd-bootstrap restore)"
            ),
        }
    }
}

/// The snapshot a new cluster restores (`Some(id)`) or `None` to start empty.
pub(crate) fn seed(snapshots: &Snapshots, formed: &[FormedPeer]) -> Result<Option<String>, NoSeed> {
    if let Some(first) = formed.first() {
        if formed
            .iter()
            .any(|p| p.restored_from != first.restored_from)
        {
            let what = formed
                .iter()
                .map(|p| {
                    format!(
                        "{}: {}",
                        p.who,
                        p.restored_from.as_deref().unwrap_or("empty")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(NoSeed::PeersDisagree(what));
        }
        return Ok(first.restored_from.clone());
    }
    match snapshots {
        Snapshots::Off => Ok(None),
        Snapshots::Listed(ids) => Ok(ids.first().cloned()),
        Snapshots::Unreadable(e) => Err(NoSeed::StoreUnreadable(e.clone())),
    }
}

/// A member of the cluster a fleet-wide restore puts back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RequestMember {
    pub name: String,
    pub peer_url: String,
    /// Where its etcd answers clients (to see it come back as a member of the restored cluster).
    pub client_url: String,
}

/// A fleet-wide restore request, as the store holds it: every member named in it restores
/// `snapshot` with the same `--initial-cluster` (`members`) and `token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FleetRequest {
    /// Unique per request (`<UTC stamp>-<random>`).
    pub id: String,
    pub snapshot: String,
    /// RFC 3339, and the member name (or host name) of the node that asked.
    pub requested: String,
    pub by: String,
    /// The cluster being restored (hex): only data of this cluster is restored.
    pub from_cluster: Option<String>,
    /// Sorted by peer URL.
    pub members: Vec<RequestMember>,
    pub token: String,
    /// `cluster.name` (absent in requests of older versions, kept in identity records).
    #[serde(default)]
    pub cluster: String,
}

impl FleetRequest {
    /// A request for `members` (any order) to restore `snapshot`, with a token of its own.
    pub(crate) fn new(
        cluster_name: &str,
        id: &str,
        snapshot: &str,
        requested: &str,
        by: &str,
        from_cluster: u64,
        mut members: Vec<RequestMember>,
    ) -> FleetRequest {
        members.sort_by(|a, b| a.peer_url.cmp(&b.peer_url));
        let urls: Vec<&str> = members.iter().map(|m| m.peer_url.as_str()).collect();
        let digest = crate::util::sha256::sha256_hex(
            format!("{}|restore:{snapshot}|request:{id}", urls.join(",")).as_bytes(),
        );
        FleetRequest {
            id: id.into(),
            snapshot: snapshot.into(),
            requested: requested.into(),
            by: by.into(),
            from_cluster: Some(format!("{from_cluster:x}")),
            members,
            token: format!("{cluster_name}-{}", &digest[..12]),
            cluster: cluster_name.into(),
        }
    }

    /// The `--initial-cluster` every member restores with.
    pub(crate) fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(crate) fn member_id(&self, peer_url: &str) -> u64 {
        crate::model::ids::member_id(&[peer_url.to_string()], &self.token)
    }

    /// The restored cluster's ID (etcd derives it from the initial cluster and the token).
    pub(crate) fn cluster_id(&self) -> u64 {
        let ids: Vec<u64> = self
            .members
            .iter()
            .map(|m| self.member_id(&m.peer_url))
            .collect();
        crate::model::ids::cluster_id(&ids)
    }

    /// The cluster the request restores from (`from_cluster`), as an ID.
    pub(crate) fn old_cluster_id(&self) -> Option<u64> {
        self.from_cluster
            .as_deref()
            .and_then(|c| u64::from_str_radix(c, 16).ok())
    }

    /// Whether `cluster` is the one this request restores or the restored one: while the
    /// request is under way, members on either side answer with it.
    pub(crate) fn is_either_side(&self, cluster: u64) -> bool {
        cluster == self.cluster_id() || Some(cluster) == self.old_cluster_id()
    }

    pub(crate) fn member(&self, peer_url: &str) -> Option<&RequestMember> {
        self.members.iter().find(|m| m.peer_url == peer_url)
    }

    /// How many members must run the restored data for it to have a quorum.
    pub(crate) fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

/// How far this node got with a request: kept in its identity record before each step, so that
/// a crash (kill -9, power loss) resumes where it stopped instead of starting etcd from half a
/// restore or from the old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    /// The snapshot was downloaded and checked; etcd is being stopped, its data moved aside.
    Stopping,
    /// The old data is aside (or was never there); the snapshot's data goes in next.
    Moved,
    /// The restored data is in place and has never been started: start etcd.
    Restored,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InProgress {
    pub request: FleetRequest,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FleetStep {
    /// No request, or this node is done with the current one.
    Nothing,
    /// The current request does not name this node (it joined later, or it never was a member):
    /// nothing is restored here.
    NotAMember(FleetRequest),
    /// Download and check the snapshot while etcd still runs, then stop, move aside, restore.
    Begin(FleetRequest),
    /// A crash left this request at its phase: go on from there.
    Resume(InProgress),
}

/// What this node does about fleet-wide restores: `current` is the store's request (if it could
/// be read), `my_cluster` the cluster this node's data belongs to (its identity record),
/// `finished` the last request this node carried out (or gave up on: its snapshot failed the
/// integrity check here), `in_progress` what its record says it was doing.
///
/// A request is for the data of the cluster it restores (`from_cluster`) only. A request stays in
/// the store after it is done, so a node named by address is not enough: a VM that later takes
/// a member's address and joins the restored cluster, or every member of a cluster formed anew
/// since (their data belongs to other clusters), must never restore an old snapshot over its
/// data.
pub(crate) fn fleet_step(
    current: Option<&FleetRequest>,
    my_peer_url: &str,
    my_cluster: Option<u64>,
    finished: Option<&str>,
    in_progress: Option<&InProgress>,
) -> FleetStep {
    let wanted = current.filter(|r| Some(r.id.as_str()) != finished);
    let restores =
        |r: &FleetRequest, cluster: Option<u64>| cluster.is_some() && r.old_cluster_id() == cluster;
    match (in_progress, wanted) {
        // A newer request replaced the one this node was carrying out, for the same data (whose
        // restored copy was never started: etcd starts only after `Restored` is recorded, and
        // the request is finished at once).
        (Some(p), Some(r))
            if r.id != p.request.id
                && r.member(my_peer_url).is_some()
                && (restores(r, p.request.old_cluster_id())
                    || restores(r, Some(p.request.cluster_id()))) =>
        {
            FleetStep::Begin(r.clone())
        }
        // Finish what was begun, also when the request has gone from the store or cannot be
        // read: the old data is already stopped or aside.
        (Some(p), _) => FleetStep::Resume(p.clone()),
        (None, Some(r)) if !restores(r, my_cluster) => FleetStep::Nothing,
        (None, Some(r)) if r.member(my_peer_url).is_none() => FleetStep::NotAMember(r.clone()),
        (None, Some(r)) => FleetStep::Begin(r.clone()),
        (None, None) => FleetStep::Nothing,
    }
}

/// Whether a request may be followed by a node whose identity record names `recorded` (the
/// peer URLs of the membership the cluster itself last recorded): the request may leave members
/// out (never-started ones), never add one. Members that were never part of the cluster would
/// enter every restored member's `--initial-cluster` and, unreachable, keep it from a quorum.
pub(crate) fn fits_membership(r: &FleetRequest, recorded: &[String]) -> Result<(), String> {
    if recorded.is_empty() {
        return Err(format!(
            "restore request {}: this node has no recorded membership to check its members against",
            r.id
        ));
    }
    let extra: Vec<&str> = r
        .members
        .iter()
        .filter(|m| !recorded.contains(&m.peer_url))
        .map(|m| m.peer_url.as_str())
        .collect();
    if !extra.is_empty() {
        return Err(format!(
            "restore request {} names members the cluster never recorded ({}); refused",
            r.id,
            extra.join(", ")
        ));
    }
    // Must restore a quorum of what the cluster recorded: a request for a minority would form
    // a second, smaller cluster beside members it left out.
    if r.members.len() < recorded.len() / 2 + 1 {
        return Err(format!(
            "restore request {} names {} of the {} recorded members, less than a quorum; refused",
            r.id,
            r.members.len(),
            recorded.len()
        ));
    }
    Ok(())
}

/// What the members of the current request report, for `may_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestState {
    /// Members whose etcd answers as a member of the restored cluster.
    pub restored: usize,
    /// Members whose agent gave up on it (the snapshot failed its integrity check there).
    pub failed: usize,
}

/// Whether a new request may replace `current`: once the restored cluster has a quorum (a
/// member still missing restores when its agent next runs, whatever request is current), or
/// every member gave up. Otherwise members would be restored from two snapshots at once.
pub(crate) fn may_request(
    current: Option<&FleetRequest>,
    state: &RequestState,
) -> Result<(), String> {
    let Some(r) = current else { return Ok(()) };
    if state.restored >= r.quorum() || state.failed >= r.members.len() {
        return Ok(());
    }
    Err(format!(
        "restore request {} (snapshot {}, asked by {} at {}) is still in progress: {} of {} members run the restored cluster, a quorum is {}; wait for it (etcd-bootstrap status), or start the members that are down",
        r.id,
        r.snapshot,
        r.by,
        r.requested,
        state.restored,
        r.members.len(),
        r.quorum()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(ids: &[&str]) -> Snapshots {
        Snapshots::Listed(ids.iter().map(|s| s.to_string()).collect())
    }

    fn peer(who: &str, from: Option<&str>) -> FormedPeer {
        FormedPeer {
            who: who.into(),
            restored_from: from.map(String::from),
        }
    }

    /// (snapshots, peers of this formation holding data, expected)
    type Case = (Snapshots, Vec<FormedPeer>, Result<Option<String>, NoSeed>);

    #[test]
    fn seed_table() {
        let unreadable = Snapshots::Unreadable("timed out".into());
        let s = |id: &str| Ok(Some(id.to_string()));
        let table: Vec<Case> = vec![
            // No backup configured: empty, as always.
            (Snapshots::Off, vec![], Ok(None)),
            // Nothing in the store yet (a brand-new cluster.name): empty.
            (listed(&[]), vec![], Ok(None)),
            // Total loss: the newest snapshot.
            (listed(&["b", "a"]), vec![], s("b")),
            // The store cannot be listed: never form empty over what it may hold.
            (
                unreadable.clone(),
                vec![],
                Err(NoSeed::StoreUnreadable("timed out".into())),
            ),
            // A late initial member follows the peers that restored "a", even though the
            // restored cluster has since taken snapshot "c".
            (listed(&["c", "a"]), vec![peer("etcd1", Some("a"))], s("a")),
            // ... and does so without reading the store.
            (unreadable, vec![peer("etcd1", Some("a"))], s("a")),
            // Peers formed empty (restore off on their side, or an empty store then): empty.
            (listed(&["c"]), vec![peer("etcd1", None)], Ok(None)),
            // Peers that disagree: refuse.
            (
                listed(&["c"]),
                vec![peer("etcd1", Some("a")), peer("etcd2", None)],
                Err(NoSeed::PeersDisagree("etcd1: a; etcd2: empty".into())),
            ),
        ];
        for (i, (snapshots, formed, want)) in table.into_iter().enumerate() {
            assert_eq!(seed(&snapshots, &formed), want, "case {i}");
        }
    }

    fn request(id: &str, urls: &[&str]) -> FleetRequest {
        let members = urls
            .iter()
            .map(|u| RequestMember {
                name: format!("etcd{}", &u[15..16]),
                peer_url: u.to_string(),
                client_url: u.replace(":2380", ":2379"),
            })
            .collect();
        FleetRequest::new(
            "lab",
            id,
            "snap-1",
            "2026-12-03T15:00:00Z",
            "etcd1",
            OLD,
            members,
        )
    }

    const OLD: u64 = 0xabc;
    const A: &str = "https://10.0.0.1:2380";
    const B: &str = "https://10.0.0.2:2380";
    const C: &str = "https://10.0.0.3:2380";

    #[test]
    fn every_request_gets_its_own_cluster_id() {
        let r1 = request("r1", &[A, B, C]);
        // Same members listed in another order: the same initial cluster, token and ID.
        let again = request("r1", &[C, A, B]);
        assert_eq!(r1.initial_cluster(), again.initial_cluster());
        assert_eq!(r1.token, again.token);
        assert_eq!(r1.cluster_id(), again.cluster_id());
        // Another request for the same snapshot and members: another cluster, so members that
        // followed different requests never form one cluster.
        let r2 = request("r2", &[A, B, C]);
        assert_ne!(r1.token, r2.token);
        assert_ne!(r1.cluster_id(), r2.cluster_id());
        assert_eq!(r1.quorum(), 2);
        // While r1 is under way, the restored cluster and the old one answer; r2's does not.
        assert!(r1.is_either_side(OLD) && r1.is_either_side(r1.cluster_id()));
        assert!(!r1.is_either_side(r2.cluster_id()));
        assert!(r1.token.starts_with("lab-"));
    }

    #[test]
    fn fleet_step_table() {
        let r1 = request("r1", &[A, B, C]);
        let r2 = request("r2", &[A, B, C]);
        let only_bc = request("r3", &[B, C]);
        // A second restore of the cluster r1 restored.
        let mut next = r2.clone();
        next.from_cluster = Some(format!("{:x}", r1.cluster_id()));
        let at = |r: &FleetRequest, phase| InProgress {
            request: r.clone(),
            phase,
        };
        let old = Some(OLD);
        // (current request, my cluster, finished, in progress, expected)
        type Case<'a> = (
            Option<&'a FleetRequest>,
            Option<u64>,
            Option<&'a str>,
            Option<InProgress>,
            FleetStep,
        );
        let table: Vec<Case> = vec![
            (None, old, None, None, FleetStep::Nothing),
            (Some(&r1), old, None, None, FleetStep::Begin(r1.clone())),
            // Done with it (or its snapshot failed here): nothing, at every tick after.
            (
                Some(&r1),
                Some(r1.cluster_id()),
                Some("r1"),
                None,
                FleetStep::Nothing,
            ),
            // A new request after an old one.
            (
                Some(&next),
                Some(r1.cluster_id()),
                Some("r1"),
                None,
                FleetStep::Begin(next.clone()),
            ),
            // Not named by the request: this node restores nothing.
            (
                Some(&only_bc),
                old,
                None,
                None,
                FleetStep::NotAMember(only_bc.clone()),
            ),
            // A node whose data is not of the cluster the request restores never restores it:
            // a new VM on a member's address that joined the restored cluster since ...
            (
                Some(&r1),
                Some(r1.cluster_id()),
                None,
                None,
                FleetStep::Nothing,
            ),
            // ... every member of a cluster formed anew since (total loss, empty store) ...
            (Some(&r1), Some(0xdef), None, None, FleetStep::Nothing),
            // ... and a node without data or record.
            (Some(&r1), None, None, None, FleetStep::Nothing),
            // Killed in the middle: go on from the phase the record has...
            (
                Some(&r1),
                old,
                None,
                Some(at(&r1, Phase::Moved)),
                FleetStep::Resume(at(&r1, Phase::Moved)),
            ),
            // ... also when the store cannot be read or the request is gone from it.
            (
                None,
                old,
                None,
                Some(at(&r1, Phase::Stopping)),
                FleetStep::Resume(at(&r1, Phase::Stopping)),
            ),
            (
                None,
                Some(r1.cluster_id()),
                None,
                Some(at(&r1, Phase::Restored)),
                FleetStep::Resume(at(&r1, Phase::Restored)),
            ),
            // A newer request for the same data replaced the half-done one: that one is
            // abandoned (a race of two `restore` commands; the later write wins everywhere).
            (
                Some(&r2),
                old,
                None,
                Some(at(&r1, Phase::Moved)),
                FleetStep::Begin(r2.clone()),
            ),
            (
                Some(&next),
                Some(r1.cluster_id()),
                None,
                Some(at(&r1, Phase::Restored)),
                FleetStep::Begin(next.clone()),
            ),
            // ... unless the newer one does not name this node: finish the old one (its data
            // is aside; etcd comes back as a member of r1's cluster, which r3 does not include).
            (
                Some(&only_bc),
                old,
                None,
                Some(at(&r1, Phase::Moved)),
                FleetStep::Resume(at(&r1, Phase::Moved)),
            ),
        ];
        for (i, (current, cluster, finished, in_progress, want)) in table.into_iter().enumerate() {
            assert_eq!(
                fleet_step(current, A, cluster, finished, in_progress.as_ref()),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn fits_membership_table() {
        let recorded: Vec<String> = [A, B, C].iter().map(|s| s.to_string()).collect();
        // (request's members, recorded, fits)
        let table: Vec<(Vec<&str>, Vec<String>, bool)> = vec![
            (vec![A, B, C], recorded.clone(), true),
            // A never-started member left out: fine.
            (vec![A, B], recorded.clone(), true),
            // Ghosts added (finding: a 7-member cluster that can never reach quorum).
            (
                vec![A, B, C, "https://10.0.0.9:2380"],
                recorded.clone(),
                false,
            ),
            // A minority of the recorded membership.
            (vec![A], recorded.clone(), false),
            // Nothing recorded: cannot tell, refused.
            (vec![A, B, C], vec![], false),
        ];
        for (i, (members, recorded, fits)) in table.into_iter().enumerate() {
            let r = request("r1", &members);
            assert_eq!(fits_membership(&r, &recorded).is_ok(), fits, "case {i}");
        }
    }

    #[test]
    fn may_request_table() {
        let r1 = request("r1", &[A, B, C]);
        let st = |restored, failed| RequestState { restored, failed };
        assert_eq!(may_request(None, &st(0, 0)), Ok(()));
        // The restored cluster has its quorum: a member still down follows whatever is current.
        assert_eq!(may_request(Some(&r1), &st(2, 0)), Ok(()));
        assert_eq!(may_request(Some(&r1), &st(3, 0)), Ok(()));
        // Every member gave up (the snapshot fails its check everywhere).
        assert_eq!(may_request(Some(&r1), &st(0, 3)), Ok(()));
        // In progress: refused, naming the first.
        for state in [st(0, 0), st(1, 0), st(1, 2), st(0, 2)] {
            let err = may_request(Some(&r1), &state).unwrap_err();
            assert!(err.contains("restore request r1"), "{err}");
            assert!(err.contains("snapshot snap-1"), "{err}");
            assert!(err.contains("asked by etcd1"), "{err}");
        }
    }
}
