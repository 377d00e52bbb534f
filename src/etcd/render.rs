//! etcd's configuration for this member: the `ETCD_*` variables (the one list of flags the
//! bootstrapper owns) and the environment file. Each service manager renders its own artifact
//! (unit, manifest) from the same `EtcdSpec`.

use super::version::EtcdVersion;
use crate::config::{control_char, Config};
use crate::decide::bootstrap::InitialCluster;
use crate::error::ConfigError;
use crate::model::tls::TlsPaths;
use crate::model::url::EtcdUrl;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// How etcd is to join on this start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterState {
    /// Form (or be a late initial member of) a new cluster.
    New(InitialCluster),
    /// Join a running cluster: `--initial-cluster` is its current membership.
    Existing { initial_cluster: String },
    /// The WAL decides. Only `--initial-cluster-state existing`: with a WAL etcd ignores it, and
    /// etcd started over an empty data dir (by hand, or by a stale unit) then tries to join,
    /// fails and forms nothing, where `new` would bootstrap a fresh cluster.
    FromDisk,
}

/// This member's identity on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMember {
    pub name: String,
    pub ip: IpAddr,
}

impl LocalMember {
    pub(crate) fn peer_url(&self, cfg: &Config) -> EtcdUrl {
        EtcdUrl::https(self.ip, cfg.member.peer_port)
    }

    pub(crate) fn client_url(&self, cfg: &Config) -> EtcdUrl {
        EtcdUrl::https(self.ip, cfg.member.client_port)
    }
}

/// A value for one line of the environment file or unit. Config values were checked when the
/// config was read; this also covers what comes from elsewhere (a member name from the host
/// name or a peer, membership read from the cluster): a line break would add a line of its own.
pub(crate) fn one_line(key: &str, value: &str, file: &std::path::Path) -> Result<(), ConfigError> {
    match control_char(value) {
        None => Ok(()),
        Some(c) => Err(ConfigError::new(
            key,
            format!("{} as it would be written", file.display()),
            format!("{value:?} holds a control character ({c:?}); refusing to write it"),
        )),
    }
}

/// Compaction flags set unless `[etcd.flags]` sets them.
pub(crate) const COMPACTION_DEFAULTS: &[(&str, &str)] = &[
    ("auto-compaction-mode", "periodic"),
    ("auto-compaction-retention", "1h"),
];

/// One description of this member's etcd, from which every service manager renders its own
/// artifact (environment file, unit, container unit, kubelet manifest): etcd's configuration as
/// `ETCD_*` variables in a stable order, and what the managers mount or probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSpec {
    pub name: String,
    /// `ETCD_*` variables, each checked to be one line.
    pub vars: Vec<(String, String)>,
    pub data_dir: PathBuf,
    pub tls_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    pub advertise_client_url: String,
}

impl EtcdSpec {
    /// The environment file, `KEY=value` lines in the order of `vars`.
    pub(crate) fn env_text(&self) -> String {
        let mut out = String::from(
            "# Written by etcd-bootstrap: edits are overwritten. Set extra flags in [etcd.flags].\n",
        );
        for (k, v) in &self.vars {
            out.push_str(&format!("{k}={v}\n"));
        }
        out
    }

    /// The same configuration as command-line flags (`ETCD_INITIAL_CLUSTER` ->
    /// `--initial-cluster=...`): etcd reads each flag from the variable of the same name.
    pub(crate) fn flags(&self) -> Vec<String> {
        self.vars
            .iter()
            .filter_map(|(k, v)| {
                let flag = k.strip_prefix("ETCD_")?;
                Some(format!(
                    "--{}={v}",
                    flag.to_ascii_lowercase().replace('_', "-")
                ))
            })
            .collect()
    }
}

/// What etcd runs with: the environment variables, in a stable order.
/// Compaction flags are set unless `[etcd.flags]` sets them.
/// The peer role etcd requires of its peers: recorded in the identity record, still this
/// cluster's name, and the node still issues from the CA.
fn enforced_peer_role(cfg: &Config) -> Option<String> {
    if !matches!(cfg.tls.mode, crate::config::tls::TlsMode::LocalCa) {
        return None;
    }
    let want = crate::tls::peer_role_name(&cfg.cluster.name)?;
    let recorded = super::datadir::Record::load(&cfg.member.data_dir)
        .ok()
        .flatten()?
        .peer_role?;
    (recorded == want).then_some(want)
}

/// etcd's own checks of the data it serves, for the release that runs it (`[etcd.flags]` overrides
/// each): before serving, compare this member's hash of the keyspace with its peers' and refuse
/// to start on a mismatch (3.4 on); after every compaction, the leader compares the followers'
/// hashes of the compacted revision and raises the CORRUPT alarm on a mismatch (3.5.5 on). 3.6
/// took both from `--experimental-*` flags into `--feature-gates`. An unknown release gets
/// neither: a flag etcd does not know is only warned about, and the check would silently be off.
pub(crate) fn integrity_flags(
    version: Option<EtcdVersion>,
    user: &BTreeMap<String, String>,
) -> Vec<(&'static str, &'static str)> {
    let Some(v) = version else {
        return Vec::new();
    };
    let wanted: &[(&str, &str)] = if v >= EtcdVersion::new(3, 6, 0) {
        &[(
            "feature-gates",
            "InitialCorruptCheck=true,CompactHashCheck=true",
        )]
    } else if v >= EtcdVersion::new(3, 5, 5) {
        &[
            ("experimental-initial-corrupt-check", "true"),
            ("experimental-compact-hash-check-enabled", "true"),
        ]
    } else if v >= EtcdVersion::new(3, 4, 0) {
        &[("experimental-initial-corrupt-check", "true")]
    } else {
        &[]
    };
    wanted
        .iter()
        .filter(|(flag, _)| !user.contains_key(*flag))
        .copied()
        .collect()
}

fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.replace('-', "_").to_ascii_uppercase())
}

pub fn spec(cfg: &Config, me: &LocalMember, state: &ClusterState) -> Result<EtcdSpec, ConfigError> {
    spec_for(cfg, me, state, EtcdVersion::of_config(cfg))
}

/// `spec` for a known (or unknown) etcd release.
pub(crate) fn spec_for(
    cfg: &Config,
    me: &LocalMember,
    state: &ClusterState,
    version: Option<EtcdVersion>,
) -> Result<EtcdSpec, ConfigError> {
    let tls = TlsPaths::new(&cfg.tls.dir);
    let local = |port: u16| EtcdUrl::https(IpAddr::from([127, 0, 0, 1]), port);
    let mut vars: Vec<(String, String)> = vec![
        ("ETCD_NAME".into(), me.name.clone()),
        (
            "ETCD_DATA_DIR".into(),
            cfg.member.data_dir.display().to_string(),
        ),
        ("ETCD_LISTEN_PEER_URLS".into(), me.peer_url(cfg).to_string()),
        (
            "ETCD_LISTEN_CLIENT_URLS".into(),
            format!("{},{}", me.client_url(cfg), local(cfg.member.client_port)),
        ),
        (
            "ETCD_ADVERTISE_CLIENT_URLS".into(),
            me.client_url(cfg).to_string(),
        ),
        (
            "ETCD_INITIAL_ADVERTISE_PEER_URLS".into(),
            me.peer_url(cfg).to_string(),
        ),
        // /health, /metrics (and /livez, /readyz where etcd has them) without a client
        // certificate, on loopback only (etcd serves them on --listen-metrics-urls).
        (
            "ETCD_LISTEN_METRICS_URLS".into(),
            format!("http://127.0.0.1:{}", cfg.member.metrics_port),
        ),
        ("ETCD_CLIENT_CERT_AUTH".into(), "true".into()),
        ("ETCD_TRUSTED_CA_FILE".into(), tls.ca.display().to_string()),
        (
            "ETCD_CERT_FILE".into(),
            tls.server_cert.display().to_string(),
        ),
        ("ETCD_KEY_FILE".into(), tls.server_key.display().to_string()),
        ("ETCD_PEER_CLIENT_CERT_AUTH".into(), "true".into()),
        (
            "ETCD_PEER_TRUSTED_CA_FILE".into(),
            tls.ca.display().to_string(),
        ),
        (
            "ETCD_PEER_CERT_FILE".into(),
            tls.peer_cert.display().to_string(),
        ),
        (
            "ETCD_PEER_KEY_FILE".into(),
            tls.peer_key.display().to_string(),
        ),
    ];
    // Only peer certificates name the peer role; once every member was seen to serve one (the
    // heal loop records it), etcd refuses any other certificate of the CA on the peer port,
    // and checks it of the peers it dials as well.
    if let Some(name) = enforced_peer_role(cfg) {
        vars.push(("ETCD_PEER_CERT_ALLOWED_HOSTNAME".into(), name));
    }
    match state {
        ClusterState::New(ic) => {
            vars.push(("ETCD_INITIAL_CLUSTER".into(), ic.flag()));
            vars.push(("ETCD_INITIAL_CLUSTER_STATE".into(), "new".into()));
            vars.push(("ETCD_INITIAL_CLUSTER_TOKEN".into(), ic.token.clone()));
        }
        ClusterState::Existing { initial_cluster } => {
            vars.push(("ETCD_INITIAL_CLUSTER".into(), initial_cluster.clone()));
            vars.push(("ETCD_INITIAL_CLUSTER_STATE".into(), "existing".into()));
        }
        ClusterState::FromDisk => {
            vars.push(("ETCD_INITIAL_CLUSTER_STATE".into(), "existing".into()));
        }
    }
    // etcd keeps every revision until it is compacted: without compaction the database grows
    // until it hits the quota (NOSPACE). Periodic auto-compaction keeps one hour of history, as
    // the classic guides set it; [etcd.flags] overrides either flag. (kube-apiserver compacts by
    // itself as well, every 5 minutes: both together are harmless.)
    for (flag, default) in COMPACTION_DEFAULTS {
        if !cfg.etcd.flags.contains_key(*flag) {
            vars.push((env_name(flag), default.to_string()));
        }
    }
    for (flag, value) in integrity_flags(version, &cfg.etcd.flags) {
        vars.push((env_name(flag), value.to_string()));
    }
    for (flag, value) in &cfg.etcd.flags {
        vars.push((env_name(flag), value.clone()));
    }
    for (k, v) in &vars {
        one_line(k, v, &cfg.etcd.env_file)?;
    }
    Ok(EtcdSpec {
        name: me.name.clone(),
        vars,
        data_dir: cfg.member.data_dir.clone(),
        tls_dir: cfg.tls.dir.clone(),
        client_port: cfg.member.client_port,
        peer_port: cfg.member.peer_port,
        metrics_port: cfg.member.metrics_port,
        advertise_client_url: me.client_url(cfg).to_string(),
    })
}

/// The environment file's text (what `plan` shows and the `systemd` manager writes).
#[cfg(test)]
pub(crate) fn env_file(
    cfg: &Config,
    me: &LocalMember,
    state: &ClusterState,
) -> Result<String, ConfigError> {
    Ok(spec(cfg, me, state)?.env_text())
}

/// Parse an environment file back into pairs (for the `process` manager).
pub(crate) fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            "[cluster]\nname = \"t\"\n[discovery]\npeers = [\"a=https://10.0.0.1:2380\"]\n\
             [tls]\nmode = \"cfssl\"\ncfssl_url = \"https://10.0.0.9:8888\"\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&p), &[]).unwrap();
        (dir, cfg)
    }

    /// A value that did not come from the config (here a member name, as from a host name or a
    /// peer) cannot add a line to the environment file.
    #[test]
    fn a_control_character_never_reaches_the_files() {
        let (_d, cfg) = config();
        let me = |name: &str| LocalMember {
            name: name.into(),
            ip: "10.0.0.1".parse().unwrap(),
        };
        let good = env_file(&cfg, &me("a"), &ClusterState::FromDisk).unwrap();
        assert!(good.contains("ETCD_NAME=a\n"), "{good}");
        let e = env_file(
            &cfg,
            &me("a\nETCD_FORCE_NEW_CLUSTER=true"),
            &ClusterState::FromDisk,
        )
        .unwrap_err();
        assert_eq!(e.key, "ETCD_NAME");
        let e = env_file(
            &cfg,
            &me("a"),
            &ClusterState::Existing {
                initial_cluster: "a=https://10.0.0.1:2380\rb".into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.key, "ETCD_INITIAL_CLUSTER");
    }

    /// The integrity checks by release, and `[etcd.flags]` taking precedence.
    #[test]
    fn integrity_checks_by_release() {
        let v = |a, b, c| Some(EtcdVersion::new(a, b, c));
        let none = BTreeMap::new();
        let names = |f: Vec<(&str, &str)>| f.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>();
        for (version, want) in [
            (None, vec![]),
            (v(3, 3, 27), vec![]),
            (v(3, 4, 23), vec!["experimental-initial-corrupt-check"]),
            (v(3, 5, 4), vec!["experimental-initial-corrupt-check"]),
            (
                v(3, 5, 5),
                vec![
                    "experimental-initial-corrupt-check",
                    "experimental-compact-hash-check-enabled",
                ],
            ),
            (
                v(3, 5, 30),
                vec![
                    "experimental-initial-corrupt-check",
                    "experimental-compact-hash-check-enabled",
                ],
            ),
            (v(3, 6, 0), vec!["feature-gates"]),
        ] {
            assert_eq!(names(integrity_flags(version, &none)), want, "{version:?}");
        }
        assert_eq!(
            integrity_flags(v(3, 6, 4), &none),
            vec![(
                "feature-gates",
                "InitialCorruptCheck=true,CompactHashCheck=true"
            )]
        );
        let user: BTreeMap<String, String> =
            [("experimental-initial-corrupt-check".into(), "false".into())].into();
        assert_eq!(
            names(integrity_flags(v(3, 5, 30), &user)),
            vec!["experimental-compact-hash-check-enabled"]
        );
        let user: BTreeMap<String, String> = [("feature-gates".into(), "X=true".into())].into();
        assert!(integrity_flags(v(3, 6, 0), &user).is_empty());
    }

    /// Every variable rendered for a release names a flag that release's `etcd --help` lists
    /// (recorded in src/etcd/help/ from the real binaries): etcd only warns about a variable it
    /// does not know, so a wrong name would go unnoticed. Rendered with every optional variable.
    /// 3.6 is not available here; its feature gates are checked by the table above.
    #[test]
    fn every_rendered_flag_is_one_the_release_knows() {
        let (_d, cfg) = config();
        let me = LocalMember {
            name: "a".into(),
            ip: "10.0.0.1".parse().unwrap(),
        };
        let ic = InitialCluster {
            members: vec![("a".into(), me.peer_url(&cfg).to_string())],
            token: "t-1".into(),
            my_name: "a".into(),
            formation: "f".into(),
            seed: None,
        };
        for (release, help) in [
            ("3.4.23", include_str!("help/etcd-3.4.23.txt")),
            ("3.5.30", include_str!("help/etcd-3.5.30.txt")),
        ] {
            let version = EtcdVersion::parse(release);
            for state in [
                ClusterState::New(ic.clone()),
                ClusterState::Existing {
                    initial_cluster: ic.flag(),
                },
                ClusterState::FromDisk,
            ] {
                let spec = spec_for(&cfg, &me, &state, version).unwrap();
                let mut vars: Vec<&str> = spec.vars.iter().map(|(k, _)| k.as_str()).collect();
                vars.push("ETCD_PEER_CERT_ALLOWED_HOSTNAME");
                assert!(vars.contains(&"ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK"));
                for var in vars {
                    let flag = format!(
                        "--{}",
                        var.strip_prefix("ETCD_")
                            .unwrap()
                            .to_ascii_lowercase()
                            .replace('_', "-")
                    );
                    assert!(
                        help.lines().any(|l| {
                            let l = l.trim_start();
                            l == flag || l.starts_with(&format!("{flag} "))
                        }),
                        "etcd {release} has no {flag} (rendered as {var})"
                    );
                }
            }
        }
    }
}
