//! Decisions, as pure functions over observations (no I/O here; each file's table tests are its
//! specification): the first-boot decision and the evidence a new cluster needs (`bootstrap`),
//! "was I removed?" (`removed`), the dead-member policy (`dead_member`), which moved-aside
//! data dirs may be pruned (`prune`), what a new cluster starts from (`restore`), whether a
//! survivor may recover a cluster that lost its quorum for good (`recover`), which copy a
//! cluster that lost its quorum with every member accounted for comes back from, by itself
//! (`quorum_recovery`), database maintenance: the defrag rule, order and NOSPACE (`defrag`),
//! what a configuration change asks of a running member (`change`), and what `doctor` finds
//! wrong and
//! how to fix it (`doctor`).

pub(crate) mod bootstrap;
pub(crate) mod change;
pub(crate) mod dead_member;
pub(crate) mod defrag;
pub(crate) mod doctor;
pub(crate) mod prune;
pub(crate) mod quorum_recovery;
pub(crate) mod recover;
pub(crate) mod removed;
pub(crate) mod restore;
pub(crate) mod version_step;

pub(crate) use restore::Snapshots;
