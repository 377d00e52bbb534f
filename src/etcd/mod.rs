//! The etcd program: talking to it, the agents' one cluster-wide lock in it (`lock`), its
//! configuration, its data dir (and what lives beside it), and installing a release.

pub mod client;
pub mod datadir;
pub mod install;
pub mod lock;
pub mod maintenance;
pub mod membership;
pub mod progress;
pub mod render;
pub mod user;
pub mod version;
