//! Decisions, as pure functions over observations (no I/O here; each file's table tests are its
//! specification): the first-boot decision and the evidence a new cluster needs (`bootstrap`),
//! "was I removed?" (`removed`), the dead-member policy (`dead_member`) and which moved-aside
//! data dirs may be pruned (`prune`).

pub mod bootstrap;
pub mod dead_member;
pub mod prune;
pub mod removed;

pub use bootstrap::*;
