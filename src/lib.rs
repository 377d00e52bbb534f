//! etcd-bootstrap: turns a freshly booted VM into a healthy, TLS-secured etcd member.

mod agent;
mod backup;
pub mod cli;
mod commands;
pub mod config;
mod decide;
mod discovery;
mod error;
pub mod etcd;
pub mod failpoint;
mod model;
pub mod service;
mod tls;
mod util;
