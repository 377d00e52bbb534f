//! Which moved-aside data dirs (`<data_dir>.removed-<UTC time>[-n]`) may be deleted.
//!
//! They are ordered by the time in their name, never by the directory's mtime: a data dir's
//! mtime is when it was created (the cluster's formation), so mtime order deletes the oldest
//! cluster's data first, which after a few heals is the last good copy.
//!
//! Each copy's note names the cluster it belonged to. Raft indexes compare only within one
//! cluster (etcd numbers a cluster's log from 1: a restored cluster starts again near 20), so:
//! - a copy of the running cluster (or of an unknown one) is deleted only when its raft index is
//!   known and not higher than the running member's: one ahead of it may hold writes the cluster
//!   lost, and while the running member's index is unknown a copy may be the only copy of the
//!   cluster's data;
//! - a copy of an earlier cluster (before a restore, or a cluster formed anew) is behind or ahead
//!   by no measure: it is bounded by the count and the disk limit like a copy that is behind,
//!   except that the newest of them is kept while the running cluster has no verified snapshot
//!   (until then it is the way back, should the restored data turn out wrong).
//!
//! Bounds: beyond the newest `keep` (`heal.keep_moved_aside`), every copy that may go goes; and
//! while the file system holding them is more than `max_disk_percent` used
//! (`heal.moved_aside_max_disk_percent`), copies that may go go also from within the newest
//! `keep`, oldest first, until it is not. Nothing else is ever deleted.

/// One moved-aside copy, as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MovedCopy {
    pub name: String,
    /// The cluster it belonged to, from the note written when it was moved, when known.
    pub cluster: Option<u64>,
    /// The raft index recorded when it was moved aside, when known.
    pub raft_index: Option<u64>,
    /// Bytes it takes on disk.
    pub size: u64,
}

/// The running member, as far as it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Running {
    pub cluster: Option<u64>,
    pub raft_index: Option<u64>,
}

/// The file system that holds the copies, in bytes (as `df` counts: `used` by anyone,
/// `available` to unprivileged users).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskUse {
    pub used: u64,
    pub available: u64,
}

impl DiskUse {
    /// Percent used (rounded up, as `df` does) once `freed` bytes are deleted.
    pub(crate) fn percent_after(&self, freed: u64) -> u64 {
        let total = self.used as u128 + self.available as u128;
        if total == 0 {
            return 0;
        }
        let used = self.used.saturating_sub(freed) as u128;
        (used * 100).div_ceil(total) as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// `heal.keep_moved_aside`.
    pub keep: usize,
    /// `heal.moved_aside_max_disk_percent` (100: no disk limit).
    pub max_disk_percent: u8,
}

/// What the decision looks at.
#[derive(Debug, Clone)]
pub(crate) struct PruneInput<'a> {
    pub copies: &'a [MovedCopy],
    pub running: Running,
    /// The store holds a verified snapshot of the running cluster (false without `[backup]`).
    pub has_verified_snapshot: bool,
    /// `None` when it could not be read: then only the count bounds the copies.
    pub disk: Option<DiskUse>,
    pub limits: Limits,
}

/// The copies to delete, oldest first, and every copy kept; each with why (for the log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PrunePlan {
    pub delete: Vec<(String, String)>,
    pub kept: Vec<(String, String)>,
}

impl PrunePlan {
    #[cfg(test)]
    pub(crate) fn deleted_names(&self) -> Vec<&str> {
        self.delete.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// `(UTC time, sequence)` from a name `<base>.removed-<YYYYMMDDTHHMMSSZ>[-n]`.
pub(crate) fn moved_at(name: &str) -> Option<(String, u32)> {
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

/// Whether a copy is of an earlier cluster than the running one (both known, and different).
pub(crate) fn of_earlier_cluster(c: &MovedCopy, running: Running) -> Option<(u64, u64)> {
    match (c.cluster, running.cluster) {
        (Some(mine), Some(now)) if mine != now => Some((mine, now)),
        _ => None,
    }
}

/// Whether the store's answer (a verified snapshot of the running cluster or not) can change
/// the plan: only while a copy of an earlier cluster is on disk. The caller asks the store only
/// then.
pub(crate) fn snapshot_matters(copies: &[MovedCopy], running: Running) -> bool {
    copies
        .iter()
        .any(|c| moved_at(&c.name).is_some() && of_earlier_cluster(c, running).is_some())
}

enum Class {
    /// May be deleted (why it may).
    MayGo(String),
    /// Never deleted (why not).
    Stays(String),
}

fn classify(c: &MovedCopy, o: &PruneInput<'_>, newest_earlier: Option<&str>) -> Class {
    if let Some((mine, now)) = of_earlier_cluster(c, o.running) {
        return if o.has_verified_snapshot {
            Class::MayGo(format!(
                "of an earlier cluster ({mine:x}); the running cluster ({now:x}) has a verified snapshot"
            ))
        } else if newest_earlier == Some(c.name.as_str()) {
            Class::Stays(format!(
                "the newest copy of an earlier cluster ({mine:x}), and the running cluster ({now:x}) has no verified snapshot yet: it is the way back"
            ))
        } else {
            Class::MayGo(format!(
                "of an earlier cluster ({mine:x}); a newer copy of an earlier cluster is kept"
            ))
        };
    }
    let whose = if c.cluster.is_some() {
        "the running cluster"
    } else {
        "an unknown cluster"
    };
    match (c.raft_index, o.running.raft_index) {
        (Some(i), Some(r)) if i <= r => Class::MayGo(format!(
            "of {whose}, its raft index {i} is not ahead of the running member's {r}"
        )),
        (Some(i), Some(r)) => Class::Stays(format!(
            "of {whose}, its raft index {i} is ahead of the running member's {r}: it may hold writes the cluster lost"
        )),
        (None, _) => Class::Stays(format!("of {whose}, its raft index is unknown")),
        (Some(_), None) => Class::Stays(format!(
            "of {whose}, the running member's raft index is unknown: it may be the only copy of the cluster's data"
        )),
    }
}

/// The copies to delete. Names that are not `<base>.removed-<UTC time>[-n]` are not ours: never
/// touched, not listed.
pub(crate) fn plan(o: &PruneInput<'_>) -> PrunePlan {
    let mut dated: Vec<(&MovedCopy, (String, u32))> = o
        .copies
        .iter()
        .filter_map(|c| moved_at(&c.name).map(|t| (c, t)))
        .collect();
    // Newest first.
    dated.sort_by(|a, b| b.1.cmp(&a.1));
    let newest_earlier = dated
        .iter()
        .find(|(c, _)| of_earlier_cluster(c, o.running).is_some())
        .map(|(c, _)| c.name.as_str());
    let keep = o.limits.keep;
    // (copy, may go: why / stays: why, deleted)
    let mut decided: Vec<(&MovedCopy, Class, Option<String>)> = Vec::new();
    let mut freed = 0u64;
    for (pos, (c, _)) in dated.iter().enumerate() {
        let class = classify(c, o, newest_earlier);
        let deleted = match &class {
            Class::MayGo(why) if pos >= keep => {
                freed = freed.saturating_add(c.size);
                Some(format!("beyond the newest {keep}, {why}"))
            }
            _ => None,
        };
        decided.push((c, class, deleted));
    }
    // The disk limit: from within the newest `keep` too, oldest first.
    if let Some(disk) = o.disk {
        let max = u64::from(o.limits.max_disk_percent);
        for (c, class, deleted) in decided.iter_mut().rev() {
            let percent = disk.percent_after(freed);
            if percent <= max {
                break;
            }
            if let (Class::MayGo(why), None) = (&*class, &*deleted) {
                freed = freed.saturating_add(c.size);
                *deleted = Some(format!(
                    "the file system is {percent}% used, over heal.moved_aside_max_disk_percent ({max}%); {why}"
                ));
            }
        }
    }
    let mut out = PrunePlan::default();
    for (pos, (c, class, deleted)) in decided.into_iter().enumerate().rev() {
        match (deleted, class) {
            (Some(why), _) => out.delete.push((c.name.clone(), why)),
            (None, Class::Stays(why)) => out.kept.push((c.name.clone(), why)),
            (None, Class::MayGo(_)) => out.kept.push((
                c.name.clone(),
                format!("among the newest {keep} (#{})", pos + 1),
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0xa;
    const B: u64 = 0xb;
    const C: u64 = 0xc;
    const D: u64 = 0xd;
    const GB: u64 = 1 << 30;

    /// A copy moved on day `day` of December, of `cluster` at `idx`, 1 GB.
    fn c(day: u32, cluster: Option<u64>, idx: Option<u64>) -> MovedCopy {
        MovedCopy {
            name: format!("etcd.removed-202612{day:02}T000000Z"),
            cluster,
            raft_index: idx,
            size: GB,
        }
    }

    fn running(cluster: u64, idx: u64) -> Running {
        Running {
            cluster: Some(cluster),
            raft_index: Some(idx),
        }
    }

    fn name(day: u32) -> String {
        format!("etcd.removed-202612{day:02}T000000Z")
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
    fn disk_percent_as_df_counts_it() {
        let d = DiskUse {
            used: 91 * GB,
            available: 9 * GB,
        };
        assert_eq!(d.percent_after(0), 91);
        assert_eq!(d.percent_after(GB), 90);
        assert_eq!(d.percent_after(GB - 1), 91, "rounded up");
        assert_eq!(d.percent_after(200 * GB), 0);
        let empty = DiskUse {
            used: 0,
            available: 0,
        };
        assert_eq!(empty.percent_after(0), 0);
    }

    struct Case {
        what: &'static str,
        copies: Vec<MovedCopy>,
        running: Running,
        snapshot: bool,
        disk: Option<DiskUse>,
        keep: usize,
        max: u8,
        /// Deleted, in the order they are deleted (days of December).
        want: Vec<u32>,
    }

    fn case(what: &'static str, copies: Vec<MovedCopy>, running: Running) -> Case {
        Case {
            what,
            copies,
            running,
            snapshot: false,
            disk: None,
            keep: 2,
            max: 90,
            want: vec![],
        }
    }

    impl Case {
        fn snapshot(mut self) -> Self {
            self.snapshot = true;
            self
        }
        fn disk(mut self, used_gb: u64, available_gb: u64) -> Self {
            self.disk = Some(DiskUse {
                used: used_gb * GB,
                available: available_gb * GB,
            });
            self
        }
        fn keep(mut self, keep: usize) -> Self {
            self.keep = keep;
            self
        }
        fn max(mut self, max: u8) -> Self {
            self.max = max;
            self
        }
        fn want(mut self, days: &[u32]) -> Self {
            self.want = days.to_vec();
            self
        }
    }

    #[test]
    fn prune_table() {
        // After N restores: one copy per earlier cluster, each far "ahead" of the restored
        // cluster's raft index (which starts again near 20). Running: cluster D at 25.
        let after_3_restores = || {
            vec![
                c(1, Some(A), Some(90_000)),
                c(2, Some(B), Some(300)),
                c(3, Some(C), Some(40)),
            ]
        };
        let after_7_restores: Vec<MovedCopy> = (1..=7)
            .map(|d| c(d, Some(100 + u64::from(d)), Some(1000 * u64::from(d))))
            .collect();
        let table = vec![
            // --- The count, within one cluster (the rules from before clusters were known).
            case("fewer than keep: nothing", vec![c(1, Some(D), Some(5))], running(D, 100)),
            case(
                "the oldest by name goes, whatever order they are listed in",
                vec![
                    c(3, Some(D), Some(50)),
                    c(1, Some(D), Some(10)),
                    c(4, Some(D), Some(60)),
                    c(2, Some(D), Some(20)),
                ],
                running(D, 100),
            )
            .want(&[1, 2]),
            case(
                "the valuable same-cluster copy is kept: ahead of the running member",
                vec![
                    c(1, Some(D), Some(900)),
                    c(2, Some(D), Some(20)),
                    c(3, Some(D), Some(30)),
                    c(4, Some(D), Some(40)),
                ],
                running(D, 100),
            )
            .snapshot()
            .keep(0)
            .disk(99, 1)
            .want(&[2, 3, 4]),
            case(
                "a copy whose raft index is unknown stays",
                vec![
                    c(1, Some(D), None),
                    c(2, Some(D), Some(20)),
                    c(3, Some(D), Some(30)),
                    c(4, Some(D), Some(40)),
                ],
                running(D, 100),
            )
            .want(&[2]),
            case(
                "the running member's index unknown: the only copy of the current cluster's data stays",
                vec![c(1, Some(D), Some(1)), c(2, Some(D), Some(2)), c(3, Some(D), Some(3))],
                Running {
                    cluster: Some(D),
                    raft_index: None,
                },
            )
            .snapshot()
            .keep(0)
            .disk(99, 1),
            case(
                "same second: the sequence number orders them",
                vec![
                    MovedCopy {
                        name: "etcd.removed-20261201T000000Z-1".into(),
                        ..c(1, Some(D), Some(2))
                    },
                    c(1, Some(D), Some(1)),
                    MovedCopy {
                        name: "etcd.removed-20261201T000000Z-2".into(),
                        ..c(1, Some(D), Some(3))
                    },
                ],
                running(D, 100),
            )
            .want(&[1]),
            // --- Finding 9: after restores.
            case(
                "after 3 restores, no snapshot yet: the count bounds them; the newest of an earlier cluster is within it",
                after_3_restores(),
                running(D, 25),
            )
            .want(&[1]),
            case(
                "after 3 restores, with a snapshot of the restored cluster: the same",
                after_3_restores(),
                running(D, 25),
            )
            .snapshot()
            .want(&[1]),
            case(
                "after 7 restores, no snapshot: down to keep, oldest first",
                after_7_restores.clone(),
                running(D, 25),
            )
            .want(&[1, 2, 3, 4, 5]),
            case(
                "after 7 restores, keep = 0, no snapshot: the newest earlier copy (the way back) stays",
                after_7_restores.clone(),
                running(D, 25),
            )
            .keep(0)
            .want(&[1, 2, 3, 4, 5, 6]),
            case(
                "after 7 restores, keep = 0, with a snapshot: all of them",
                after_7_restores.clone(),
                running(D, 25),
            )
            .snapshot()
            .keep(0)
            .want(&[1, 2, 3, 4, 5, 6, 7]),
            case(
                "after a restore, a copy of the running cluster ahead of it (moved aside on a heal) stays; earlier ones go",
                vec![
                    c(1, Some(A), Some(90_000)),
                    c(2, Some(B), Some(300)),
                    c(3, Some(D), Some(60)),
                    c(4, Some(D), Some(30)),
                ],
                running(D, 50),
            )
            .snapshot()
            .keep(0)
            .want(&[1, 2, 4]),
            // --- Unknown cluster (a note of an older version, or a record without an ID).
            case(
                "unknown-cluster copies: the raft index rule, as before",
                vec![
                    c(1, None, Some(90_000)),
                    c(2, None, Some(10)),
                    c(3, None, None),
                    c(4, Some(C), Some(5)),
                    c(5, Some(D), Some(20)),
                ],
                running(D, 25),
            )
            .snapshot()
            .keep(1)
            .want(&[2, 4]),
            // --- No [backup]: never a verified snapshot; the count still bounds earlier copies.
            case(
                "no backup: earlier clusters bounded by keep",
                vec![
                    c(1, Some(A), Some(900)),
                    c(2, Some(B), Some(900)),
                    c(3, Some(C), Some(900)),
                    c(4, Some(C), Some(950)),
                ],
                running(D, 25),
            )
            .keep(1)
            .want(&[1, 2, 3]),
            // --- The disk limit.
            case(
                "disk over the limit: from within keep, oldest first, until under it",
                vec![
                    c(1, Some(D), Some(10)),
                    c(2, Some(D), Some(20)),
                    c(3, Some(D), Some(30)),
                ],
                running(D, 100),
            )
            .keep(3)
            .disk(92, 8)
            .want(&[1, 2]),
            case(
                "disk: the copies deleted by the count count as freed",
                vec![
                    c(1, Some(D), Some(10)),
                    c(2, Some(D), Some(20)),
                    c(3, Some(D), Some(30)),
                    c(4, Some(D), Some(40)),
                ],
                running(D, 100),
            )
            .disk(92, 8)
            .want(&[1, 2]),
            case(
                "disk under the limit: the count only",
                vec![c(1, Some(D), Some(10)), c(2, Some(D), Some(20))],
                running(D, 100),
            )
            .disk(90, 10),
            case(
                "disk over the limit never takes a copy that stays: ahead, or the way back",
                vec![
                    c(1, Some(A), Some(10)),
                    c(2, Some(D), Some(900)),
                    c(3, Some(D), Some(20)),
                ],
                running(D, 100),
            )
            .keep(3)
            .disk(99, 1)
            .want(&[3]),
            case(
                "max 100: no disk limit",
                vec![c(1, Some(D), Some(10)), c(2, Some(D), Some(20))],
                running(D, 100),
            )
            .disk(100, 0)
            .max(100),
            case(
                "disk unknown: the count only",
                vec![c(1, Some(D), Some(10)), c(2, Some(D), Some(20))],
                running(D, 100),
            ),
            // --- keep = 0.
            case(
                "keep = 0: every copy that may go goes",
                vec![
                    c(1, Some(D), Some(10)),
                    c(2, Some(D), Some(20)),
                    c(3, Some(D), Some(200)),
                ],
                running(D, 100),
            )
            .keep(0)
            .want(&[1, 2]),
            case(
                "names that are not ours are never touched",
                vec![
                    MovedCopy {
                        name: "etcd.removed-yesterday".into(),
                        ..c(1, Some(A), Some(1))
                    },
                    MovedCopy {
                        name: "etcd.backup".into(),
                        ..c(1, Some(A), Some(1))
                    },
                ],
                running(D, 100),
            )
            .snapshot()
            .keep(0)
            .disk(99, 1),
        ];
        for case in table {
            let o = PruneInput {
                copies: &case.copies,
                running: case.running,
                has_verified_snapshot: case.snapshot,
                disk: case.disk,
                limits: Limits {
                    keep: case.keep,
                    max_disk_percent: case.max,
                },
            };
            let p = plan(&o);
            let want: Vec<String> = case.want.iter().map(|d| name(*d)).collect();
            assert_eq!(p.deleted_names(), want, "{}: {p:#?}", case.what);
            // Every dated copy is either deleted or kept, with a reason.
            let dated = case
                .copies
                .iter()
                .filter(|c| moved_at(&c.name).is_some())
                .count();
            assert_eq!(p.delete.len() + p.kept.len(), dated, "{}", case.what);
        }
    }

    #[test]
    fn the_reasons_say_why() {
        let copies = vec![
            c(1, Some(A), Some(90_000)),
            c(2, Some(B), Some(300)),
            c(3, Some(D), Some(900)),
        ];
        let o = PruneInput {
            copies: &copies,
            running: running(D, 25),
            has_verified_snapshot: false,
            disk: None,
            limits: Limits {
                keep: 0,
                max_disk_percent: 90,
            },
        };
        let p = plan(&o);
        assert_eq!(p.deleted_names(), vec![name(1)]);
        let why = |n: u32| {
            p.kept
                .iter()
                .find(|(k, _)| *k == name(n))
                .map(|(_, w)| w.clone())
                .unwrap()
        };
        assert!(why(2).contains("the way back"), "{}", why(2));
        assert!(
            why(3).contains("ahead of the running member's 25"),
            "{}",
            why(3)
        );
        assert!(
            p.delete[0].1.contains("earlier cluster (a)"),
            "{:?}",
            p.delete
        );
        assert!(snapshot_matters(&copies, running(D, 25)));
        assert!(!snapshot_matters(&copies[2..], running(D, 25)));
    }
}
