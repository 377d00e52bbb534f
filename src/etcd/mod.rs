//! Talking to etcd and rendering its configuration.

pub mod client;
pub mod maintenance;
pub mod membership;
pub mod render;
