//! The `--initial-cluster` of a new cluster and its identity: the token every initial member
//! derives alike, and the formation (a digest of the initial members' nonces).

use crate::model::ids;
use crate::util::sha256::sha256_hex;

/// The `--initial-cluster` of a new cluster: identical on every initial member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialCluster {
    /// `(name, peer URL)`, sorted by URL.
    pub members: Vec<(String, String)>,
    pub token: String,
    pub my_name: String,
    /// A digest of the initial members' nonces: tells this formation from an earlier one of the
    /// same peers even when `cluster.token` fixes the token (and with it the cluster ID).
    pub formation: String,
    /// The snapshot every initial member restores before its first start, or `None`: empty.
    pub seed: Option<String>,
}

/// Between the etcd starts of two initial members of a new cluster; see `start_delay`.
pub(crate) const START_STAGGER: std::time::Duration = std::time::Duration::from_millis(100);

impl InitialCluster {
    /// How long this member waits before it starts etcd: its rank among the initial members
    /// (sorted by peer URL, the same on every node) times `START_STAGGER`. etcd started with
    /// `--initial-cluster-state new` first asks every other initial member's peer URL whether
    /// the cluster already exists, 1 s timeout each; a peer whose listener is open but which is
    /// still asking its own peers does not answer, so members started at the same instant often
    /// each wait 1 s per peer (measured: 2 s of 2.3 s for 3 members, 4 s for 5). Started 100 ms
    /// apart, each finds the earlier ones serving and the later ones not listening yet.
    pub(crate) fn start_delay(&self) -> std::time::Duration {
        let rank = self
            .members
            .iter()
            .position(|(n, _)| n == &self.my_name)
            .unwrap_or(0);
        START_STAGGER * rank as u32
    }

    pub(crate) fn flag(&self) -> String {
        self.members
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(crate) fn member_ids(&self) -> Vec<u64> {
        self.members
            .iter()
            .map(|(_, u)| ids::member_id(std::slice::from_ref(u), &self.token))
            .collect()
    }

    /// The cluster ID etcd will compute for this initial cluster.
    pub(crate) fn cluster_id(&self) -> u64 {
        ids::cluster_id(&self.member_ids())
    }
}

/// The derived token: the cluster name plus a digest of the sorted peer URLs and the sorted
/// nonces of the initial members, so every initial member computes the same one, and each
/// formation gets a fresh one (a re-formed cluster never repeats an earlier cluster's IDs). A
/// restored cluster mixes in the snapshot it starts from (see `decide::restore`).
pub(crate) fn derive_token(
    cluster_name: &str,
    sorted_peer_urls: &[String],
    nonces: &[String],
    seed: Option<&str>,
) -> String {
    let mut nonces = nonces.to_vec();
    nonces.sort();
    let mut input = format!("{}|{}", sorted_peer_urls.join(","), nonces.join(","));
    if let Some(id) = seed {
        input.push_str(&format!("|restore:{id}"));
    }
    let digest = sha256_hex(input.as_bytes());
    format!("{cluster_name}-{}", &digest[..12])
}

/// The formation of a new cluster: a digest of its initial members' nonces, in any order.
pub(super) fn formation(nonces: &[String]) -> String {
    let mut nonces = nonces.to_vec();
    nonces.sort();
    sha256_hex(nonces.join(",").as_bytes())[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_members_start_etcd_staggered_by_their_rank() {
        let ic = |me: &str| InitialCluster {
            members: vec![
                ("b".into(), "https://10.0.0.1:2380".into()),
                ("a".into(), "https://10.0.0.2:2380".into()),
                ("c".into(), "https://10.0.0.3:2380".into()),
            ],
            token: "t".into(),
            my_name: me.into(),
            formation: String::new(),
            seed: None,
        };
        assert_eq!(ic("b").start_delay(), std::time::Duration::ZERO);
        assert_eq!(ic("a").start_delay(), START_STAGGER);
        assert_eq!(ic("c").start_delay(), 2 * START_STAGGER);
    }
}
