//! Talking to etcd and rendering its configuration.

pub mod ids;
