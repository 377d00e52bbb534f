//! etcd-bootstrap: turns a freshly booted VM into a healthy, TLS-secured etcd member.

pub mod config;
pub mod decide;
pub mod discovery;
pub mod error;
pub mod etcd;
pub mod fsutil;
pub mod urls;
