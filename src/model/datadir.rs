//! The names inside a data dir that are etcd's or etcd-bootstrap's own (plain names, no I/O):
//! `etcd::datadir` writes the move-aside note, `backup::restorer` works in `WORK_DIR`, and
//! `config` refuses a data dir that holds anything else.

/// The work directory of a snapshot restore, inside the data dir (the same file system, also when
/// the data dir is a mount point, so that `member/` can go in by one rename).
pub(crate) const WORK_DIR: &str = ".etcd-bootstrap-restore";

/// Inside a moved-aside copy: why it was moved, its raft index, and the cluster and member of
/// the identity record at the time (`decide::prune` compares raft indexes within one cluster).
pub(crate) const MOVED_NOTE: &str = "etcd-bootstrap-moved.json";

/// What may be found in a data dir: etcd's `member/`, the note written just before a move aside
/// (and the temporary file of that write, after a crash), the work directory of a snapshot
/// restore, and `lost+found` when the data dir is a file system of its own.
pub(crate) fn is_own_entry(name: &str) -> bool {
    name == "member"
        || name == "lost+found"
        || name == WORK_DIR
        || name == MOVED_NOTE
        || name.starts_with(&format!(".{MOVED_NOTE}.tmp-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_entries() {
        for (name, own) in [
            ("member", true),
            ("lost+found", true),
            (WORK_DIR, true),
            (MOVED_NOTE, true),
            (".etcd-bootstrap-moved.json.tmp-1234", true),
            ("notes.txt", false),
            ("bin", false),
            ("member.bak", false),
            ("etcd-bootstrap-moved.json.tmp-1", false),
        ] {
            assert_eq!(is_own_entry(name), own, "{name}");
        }
    }
}
