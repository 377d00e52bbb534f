//! `etcd-bootstrap run`: check the options, then run the agent (`agent::run`: what must be
//! there, its endpoint, converge, the heal loop).

use crate::agent;
pub(crate) use crate::agent::reload::ConfigSource;
use crate::config::{Config, ServiceManagerKind};
use crate::error::ConfigError;
use anyhow::Result;

pub(crate) async fn run(cfg: Config, once: bool, source: ConfigSource) -> Result<()> {
    if once && cfg.etcd.service_manager == ServiceManagerKind::Process {
        return Err(ConfigError::new(
            "--once",
            "command line",
            "needs etcd.service_manager = \"systemd\", \"container\" or \"static-pod\": with \"process\" etcd lives only as long as etcd-bootstrap",
        )
        .into());
    }
    writable_paths(&cfg)?;
    agent::run::run(&cfg, once, source).await
}

/// Every path the agent will write must be writable before anything is done: under the shipped
/// unit's sandbox a path outside its `ReadWritePaths=` is read-only, and finding that out halfway
/// through a heal (the data dir moved aside, the new one not creatable) is worse than not
/// starting. Exit 2: a restart cannot fix it.
fn writable_paths(cfg: &Config) -> Result<()> {
    let data_dir = &cfg.member.data_dir;
    let mut written = vec![
        // Moved-aside copies and markers are siblings of the data dir: its parent first.
        (
            "member.data_dir",
            data_dir.parent().unwrap_or(data_dir).to_path_buf(),
        ),
        ("member.data_dir", data_dir.clone()),
        ("tls.dir", cfg.tls.dir.clone()),
        ("etcd.env_file", cfg.etcd.env_file.clone()),
    ];
    match cfg.etcd.service_manager {
        ServiceManagerKind::Systemd | ServiceManagerKind::Container => {
            written.push(("etcd.unit_path", cfg.etcd.unit_path.clone()))
        }
        ServiceManagerKind::StaticPod => {
            written.push(("etcd.manifest_path", cfg.etcd.manifest_path.clone()))
        }
        ServiceManagerKind::Process => {}
    }
    if cfg.etcd.download_url.is_some() {
        written.push(("etcd.install_dir", cfg.etcd.install_dir.clone()));
    }
    if cfg.tls.apiserver_client {
        written.push((
            "tls.apiserver_client_dir",
            cfg.tls.apiserver_client_dir.clone(),
        ));
    }
    for (key, path) in written {
        if crate::util::fs::read_only_here(&path) {
            // ReadWritePaths= must name a path that exists when the unit starts.
            let grant = path.ancestors().find(|p| p.exists()).unwrap_or(&path);
            return Err(ConfigError::new(
                key,
                path.display().to_string(),
                format!(
                    "read-only for etcd-bootstrap: the shipped unit (ProtectSystem=strict) lets it \
                     write only under /etc, /var/lib, /usr/local/bin, /run and /var/tmp; add \
                     `ReadWritePaths={}` to its unit in a drop-in (systemctl edit \
                     etcd-bootstrap), or choose a path under those",
                    grant.display()
                ),
            )
            .into());
        }
    }
    Ok(())
}
