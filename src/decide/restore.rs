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

use std::fmt;

/// What the store says about `cluster.name`'s snapshots, as far as this node can use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshots {
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
pub struct FormedPeer {
    pub who: String,
    pub restored_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSeed {
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
pub fn seed(snapshots: &Snapshots, formed: &[FormedPeer]) -> Result<Option<String>, NoSeed> {
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
}
