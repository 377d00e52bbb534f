//! Running etcd: one interface, two managers, one `match` that picks them.

mod process;
mod systemd;

use crate::config::{Config, ServiceManagerKind};
use crate::discovery::BoxFuture;
use anyhow::Result;

pub trait ServiceManager: Send + Sync {
    fn describe(&self) -> String;
    /// Write etcd's environment file (and unit, where there is one). True when anything changed.
    fn install(&self, env_file: &str, unit: &str) -> Result<bool>;
    /// Start etcd without waiting for it to be ready (etcd is ready only once it has joined
    /// through raft, which needs its peers started too); restart it when `changed` and it is
    /// already running.
    fn start(&self, changed: bool) -> BoxFuture<'_, Result<()>>;
    /// Stop etcd and wait until it is gone.
    fn stop(&self) -> BoxFuture<'_, Result<()>>;
}

pub fn manager(cfg: &Config) -> Box<dyn ServiceManager> {
    match cfg.etcd.service_manager {
        ServiceManagerKind::Systemd => Box::new(systemd::Systemd::new(cfg)),
        ServiceManagerKind::Process => Box::new(process::Process::new(cfg)),
    }
}
