//! `etcd-bootstrap run`: check the options, then run the agent (`agent::run`: what must be
//! there, its endpoint, converge, the heal loop).

use crate::agent;
pub use crate::agent::reload::ConfigSource;
use crate::config::{Config, ServiceManagerKind};
use crate::error::ConfigError;
use anyhow::Result;

pub async fn run(cfg: Config, once: bool, source: ConfigSource) -> Result<()> {
    if once && cfg.etcd.service_manager == ServiceManagerKind::Process {
        return Err(ConfigError::new(
            "--once",
            "command line",
            "needs etcd.service_manager = \"systemd\", \"container\" or \"static-pod\": with \"process\" etcd lives only as long as etcd-bootstrap",
        )
        .into());
    }
    agent::run::run(&cfg, once, source).await
}
