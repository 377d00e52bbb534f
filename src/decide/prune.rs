//! Which moved-aside data dirs (`<data_dir>.removed-<UTC time>[-n]`) may be deleted.
//!
//! They are ordered by the time in their name, never by the directory's mtime: a data dir's
//! mtime is when it was created (the cluster's formation), so mtime order deletes the oldest
//! cluster's data first, which after a few heals is the last good copy. Beyond the newest `keep`,
//! a copy is deleted only when its recorded raft index is known and not higher than the running
//! member's: a copy that is ahead of the running member may hold writes the cluster lost.

/// One moved-aside copy, as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedCopy {
    pub name: String,
    /// The raft index recorded when it was moved aside, when known.
    pub raft_index: Option<u64>,
}

/// `(UTC time, sequence)` from a name `<base>.removed-<YYYYMMDDTHHMMSSZ>[-n]`.
pub fn moved_at(name: &str) -> Option<(String, u32)> {
    let rest = &name[name.rfind(".removed-")? + ".removed-".len()..];
    let (ts, n) = match rest.split_once('-') {
        Some((ts, n)) => (ts, n.parse().ok()?),
        None => (rest, 0),
    };
    let well_formed = ts.len() == 16
        && ts.ends_with('Z')
        && ts.as_bytes()[8] == b'T'
        && ts
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 8 || i == 15 || b.is_ascii_digit());
    well_formed.then(|| (ts.to_string(), n))
}

/// The copies to delete, and for each kept old copy why it is kept (for the log).
pub fn plan(
    copies: &[MovedCopy],
    keep: usize,
    running_index: Option<u64>,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut dated: Vec<(&MovedCopy, (String, u32))> = copies
        .iter()
        .filter_map(|c| moved_at(&c.name).map(|t| (c, t)))
        .collect();
    // Newest first.
    dated.sort_by(|a, b| b.1.cmp(&a.1));
    let mut delete = Vec::new();
    let mut kept = Vec::new();
    for (c, _) in dated.into_iter().skip(keep) {
        match (c.raft_index, running_index) {
            (Some(i), Some(r)) if i <= r => delete.push(c.name.clone()),
            (Some(i), Some(r)) => kept.push((
                c.name.clone(),
                format!("its raft index {i} is ahead of the running member's {r}"),
            )),
            (None, _) => kept.push((c.name.clone(), "its raft index is unknown".into())),
            (Some(_), None) => kept.push((
                c.name.clone(),
                "the running member's raft index is unknown".into(),
            )),
        }
    }
    (delete, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ts: &str, idx: Option<u64>) -> MovedCopy {
        MovedCopy {
            name: format!("etcd.removed-{ts}"),
            raft_index: idx,
        }
    }

    #[test]
    fn parses_the_time_in_the_name() {
        assert_eq!(
            moved_at("/var/lib/etcd.removed-20261203T101500Z"),
            Some(("20261203T101500Z".into(), 0))
        );
        assert_eq!(
            moved_at("etcd.removed-20261203T101500Z-2"),
            Some(("20261203T101500Z".into(), 2))
        );
        assert_eq!(moved_at("etcd.removed-yesterday"), None);
        assert_eq!(moved_at("etcd.left"), None);
    }

    #[test]
    fn prune_table() {
        // (copies, running index, expected deletions)
        let table: Vec<(Vec<MovedCopy>, Option<u64>, Vec<&str>)> = vec![
            // Fewer than keep: nothing.
            (vec![c("20261201T000000Z", Some(5))], Some(100), vec![]),
            // The oldest by name goes, whatever order they are listed in.
            (
                vec![
                    c("20261203T000000Z", Some(50)),
                    c("20261201T000000Z", Some(10)),
                    c("20261204T000000Z", Some(60)),
                    c("20261202T000000Z", Some(20)),
                ],
                Some(100),
                vec!["etcd.removed-20261201T000000Z"],
            ),
            // The oldest holds a higher raft index than the running member: kept; the next
            // oldest that is behind goes instead only if it is beyond keep (it is not).
            (
                vec![
                    c("20261201T000000Z", Some(900)),
                    c("20261202T000000Z", Some(20)),
                    c("20261203T000000Z", Some(30)),
                    c("20261204T000000Z", Some(40)),
                ],
                Some(100),
                vec![],
            ),
            // Unknown indexes are never deleted.
            (
                vec![
                    c("20261201T000000Z", None),
                    c("20261202T000000Z", Some(20)),
                    c("20261203T000000Z", Some(30)),
                    c("20261204T000000Z", Some(40)),
                    c("20261205T000000Z", Some(50)),
                ],
                Some(100),
                vec!["etcd.removed-20261202T000000Z"],
            ),
            // Without the running member's index nothing is deleted.
            (
                vec![
                    c("20261201T000000Z", Some(1)),
                    c("20261202T000000Z", Some(2)),
                    c("20261203T000000Z", Some(3)),
                    c("20261204T000000Z", Some(4)),
                ],
                None,
                vec![],
            ),
            // Same second: the sequence number orders them.
            (
                vec![
                    c("20261201T000000Z-1", Some(2)),
                    c("20261201T000000Z", Some(1)),
                    c("20261201T000000Z-2", Some(3)),
                    c("20261201T000000Z-3", Some(4)),
                ],
                Some(100),
                vec!["etcd.removed-20261201T000000Z"],
            ),
        ];
        for (i, (copies, running, want)) in table.into_iter().enumerate() {
            let (delete, _) = plan(&copies, 3, running);
            assert_eq!(delete, want, "case {i}");
        }
    }
}
