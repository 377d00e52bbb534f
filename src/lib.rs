//! etcd-bootstrap: turns a freshly booted VM into a healthy, TLS-secured etcd member.

pub mod agent;
pub mod backup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod decide;
pub mod discovery;
pub mod error;
pub mod etcd;
pub mod failpoint;
pub mod model;
pub mod service;
pub mod tls;
pub mod util;
