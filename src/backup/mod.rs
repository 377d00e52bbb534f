//! Snapshots of the cluster's data: one store interface with a factory (`store`), the manifest
//! written last beside each snapshot (`manifest`), what the store holds (`catalog`), taking one
//! (`snapshotter`), checking one (`verify`), restoring one as a member's data (`restorer`),
//! retention (`retention`, pure), the delta segments between full snapshots and their chain
//! (`segment`) and the fleet-wide restore request (`request`).

pub mod catalog;
pub mod manifest;
pub mod request;
pub mod restorer;
pub mod retention;
pub mod segment;
pub mod signed;
pub mod snapshotter;
pub mod store;
pub mod verify;
