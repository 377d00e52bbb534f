//! `systemctl reload etcd-bootstrap` (SIGHUP): read the configuration again from where it was
//! read at the start (the same file, drop-ins and environment). One that fails validation, or
//! that cannot be applied to the running member, is refused: the agent keeps running on the
//! configuration it has, logs why, and leaves the one-line reason in
//! `<data_dir>.config-rejected` for `status` and `doctor`. An accepted one removes that file.

use crate::config::Config;
use crate::etcd::datadir;
use std::path::PathBuf;

/// Where the configuration came from: what a reload reads again.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigSource {
    /// `--config`; `None`: the default path.
    pub path: Option<PathBuf>,
    /// The process environment (`ETCD_BOOTSTRAP_*` keys) as the agent started with it.
    pub env: Vec<(String, String)>,
}

impl ConfigSource {
    /// Read and validate the configuration again. The error is one line: it is what `status`
    /// and `doctor` show.
    pub(crate) fn load(&self) -> Result<Config, String> {
        Config::load(self.path.as_deref(), &self.env).map_err(|e| one_line(&e.to_string()))
    }
}

/// Multi-line messages flattened: the marker, the log line and `doctor` show one line.
pub(crate) fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The fingerprint (`service::fingerprint`) of what `cfg` has etcd run with on this member: its
/// files for a start from the data on disk.
pub(crate) fn fingerprint(cfg: &Config) -> anyhow::Result<String> {
    let me = super::converge::current_member(cfg)?;
    let mut spec =
        crate::etcd::render::spec(cfg, &me, &crate::etcd::render::ClusterState::FromDisk)?;
    // The peer role is switched on by the heal loop, not by a configuration change, and reaches
    // etcd at its next start by the agent on (`agent::peer_roles`): no reason for a restart.
    spec.vars
        .retain(|(k, _)| k != "ETCD_PEER_CERT_ALLOWED_HOSTNAME");
    Ok(crate::service::fingerprint(cfg, &spec)?)
}

/// Whether going from `a` to `b` changes what etcd runs with.
pub(crate) fn rendered_differs(a: &Config, b: &Config) -> anyhow::Result<bool> {
    Ok(fingerprint(a)? != fingerprint(b)?)
}

/// Note that `why` refused a new configuration (logged by the caller).
pub(crate) fn note_rejected(cfg: &Config, why: &str) {
    let path = datadir::config_rejected_marker(&cfg.member.data_dir);
    if let Err(e) = crate::util::fs::write_atomic(&path, format!("{why}\n").as_bytes(), 0o644) {
        tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "cannot note the rejected configuration for status and doctor");
    }
}

/// The configuration in force was accepted: no rejection to show any more.
pub(crate) fn clear_rejected(cfg: &Config) {
    let path = datadir::config_rejected_marker(&cfg.member.data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(file = %path.display(), "the rejected configuration note is gone: the configuration in force is accepted")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove the rejected configuration note")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_is_one_line_and_goes_with_the_next_accepted_config() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            format!(
                "[cluster]\nname = \"t\"\n[member]\ndata_dir = \"{}/data\"\n[discovery]\npeers = [\"a=https://10.0.0.1:2380\"]\n\
                 [tls]\nmode = \"cfssl\"\ncfssl_url = \"https://10.0.0.9:8888\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let src = ConfigSource {
            path: Some(p.clone()),
            env: vec![],
        };
        let cfg = src.load().unwrap();
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("[heal]\ninterval = \"banana\"\n");
        std::fs::write(&p, text).unwrap();
        let why = src.load().unwrap_err();
        assert!(
            why.contains("heal.interval") && !why.contains('\n'),
            "{why}"
        );
        note_rejected(&cfg, &why);
        assert_eq!(
            datadir::config_rejected(&cfg.member.data_dir).as_deref(),
            Some(why.as_str())
        );
        clear_rejected(&cfg);
        assert_eq!(datadir::config_rejected(&cfg.member.data_dir), None);
    }
}
