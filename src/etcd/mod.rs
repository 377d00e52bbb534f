//! The etcd program: talking to it, the agents' one cluster-wide lock in it (`lock`), its
//! configuration, its data dir (and what lives beside it), and installing a release.

pub(crate) mod client;
pub(crate) mod datadir;
pub(crate) mod install;
pub(crate) mod lock;
pub(crate) mod maintenance;
pub(crate) mod membership;
pub(crate) mod progress;
pub mod render;
pub(crate) mod trial;
pub(crate) mod user;
pub(crate) mod version;
