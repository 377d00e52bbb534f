//! Snapshots of the cluster's data: one store interface with a factory (`store`), the manifest
//! written last beside each snapshot (`manifest`), what the store holds (`catalog`), taking one
//! (`snapshotter`), checking one (`verify`), restoring one as a member's data (`restorer`),
//! retention (`retention`, pure), the delta segments between full snapshots and their chain
//! (`segment`) and the fleet-wide restore request (`request`).

pub(crate) mod catalog;
pub(crate) mod manifest;
pub(crate) mod request;
pub(crate) mod restorer;
pub(crate) mod retention;
pub(crate) mod segment;
pub(crate) mod signed;
pub(crate) mod snapshotter;
pub(crate) mod store;
pub(crate) mod verify;
