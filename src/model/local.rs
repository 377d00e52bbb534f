//! What the local data dir holds, as the first-boot decision sees it.

/// The local data dir. Decide from the disk first: once `member/wal` exists etcd ignores every
/// `--initial-cluster*` flag and restarts from its own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LocalState {
    /// `<data_dir>/member/wal` exists: etcd will restart from its own state whatever flags say.
    pub has_wal: bool,
    /// `<data_dir>/member` exists.
    pub has_member_dir: bool,
}
