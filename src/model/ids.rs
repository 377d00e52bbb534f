//! etcd's identity arithmetic (names do not count: member ID from peer URLs and token, cluster ID
//! from member IDs), reproduced so that a node can tell whether the
//! cluster a peer answers with is the one the discovered peer set would form, or another one.
//!
//! etcd (server/etcdserver/api/membership): member ID = first 8 bytes (big endian) of
//! SHA-1(sorted peer URLs concatenated + token); cluster ID = first 8 bytes of SHA-1 of the sorted
//! member IDs, each as 8 big-endian bytes.

use ring::digest;

pub(crate) fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort();
    let mut bytes = urls.concat().into_bytes();
    bytes.extend_from_slice(token.as_bytes());
    first_u64(&bytes)
}

pub(crate) fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first_u64(&bytes)
}

fn first_u64(bytes: &[u8]) -> u64 {
    let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by etcd 3.5 for `--initial-cluster infra1=http://127.0.0.1:2380
    /// --initial-cluster-token etcd-cluster` (the single-node default): member 8e9e05c52164694d,
    /// cluster cdf818194e3a8c32. The lab tests compare real multi-member clusters too.
    #[test]
    fn matches_etcd_for_its_default_single_node() {
        let m = member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{m:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[m])), "cdf818194e3a8c32");
    }

    #[test]
    fn order_of_urls_and_members_does_not_matter() {
        let a = member_id(&["https://b:1".into(), "https://a:1".into()], "t");
        let b = member_id(&["https://a:1".into(), "https://b:1".into()], "t");
        assert_eq!(a, b);
        assert_eq!(cluster_id(&[1, 2, 3]), cluster_id(&[3, 1, 2]));
        assert_ne!(
            member_id(&["https://a:1".into()], "t1"),
            member_id(&["https://a:1".into()], "t2")
        );
    }
}
