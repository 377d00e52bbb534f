//! Running etcd: one interface, one `match` that picks the manager. Each manager renders and
//! owns its own artifact from one description of the member (`render::EtcdSpec`): the
//! environment file and unit (`systemd`), the environment file (`process`), the environment file
//! and a unit that runs an image (`container`), a kubelet manifest (`static-pod`).

mod container;
mod process;
mod static_pod;
mod systemd;

use crate::config::{Config, ServiceManagerKind};
use crate::error::ConfigError;
use crate::etcd::render::EtcdSpec;
use crate::etcd::user::{self, EtcdUser};
use crate::util::fs as fsutil;
use anyhow::Result;
use futures::future::BoxFuture;
use std::path::PathBuf;

/// A file a manager writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Artifact {
    pub path: PathBuf,
    pub mode: u32,
    pub content: String,
}

impl Artifact {
    pub(crate) fn new(path: &std::path::Path, mode: u32, content: String) -> Artifact {
        Artifact {
            path: path.to_path_buf(),
            mode,
            content,
        }
    }
}

/// Who etcd runs as, and what that user must own before etcd starts (`etcd::user`).
#[derive(Debug, Clone)]
pub struct Owner {
    /// `etcd.user` when etcd does not run as the agent's own user.
    pub user: Option<String>,
    pub data_dir: PathBuf,
    pub tls_dir: PathBuf,
}

/// The user as a manager writes it into etcd's unit or manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunAs {
    /// The agent's own user (root).
    Agent,
    User(EtcdUser),
    /// Not created yet (`plan` on a fresh machine): the agent creates it before it writes
    /// etcd's files, so only a printed plan shows the name.
    Missing(String),
}

impl Owner {
    fn new(cfg: &Config) -> Owner {
        Owner {
            user: cfg.etcd.runs_as().map(str::to_string),
            data_dir: cfg.member.data_dir.clone(),
            tls_dir: cfg.tls.dir.clone(),
        }
    }

    /// For `plan` and logs: which user etcd runs as.
    pub(crate) fn describe(&self) -> String {
        match self.run_as() {
            RunAs::Agent => "as the agent's own user".into(),
            RunAs::User(u) => format!("as user {} (uid {}, gid {})", u.name, u.uid, u.gid),
            RunAs::Missing(name) => {
                format!("as user {name} (etcd-bootstrap creates it before etcd's first start)")
            }
        }
    }

    /// Looked up at every render: the user may have been created since the last one.
    fn run_as(&self) -> RunAs {
        match &self.user {
            None => RunAs::Agent,
            Some(name) => match user::lookup(name) {
                Ok(Some(u)) => RunAs::User(u),
                _ => RunAs::Missing(name.clone()),
            },
        }
    }

    /// Right before etcd's files are written and before etcd starts: the data dir exists (a
    /// bind mount or `ReadWritePaths=` needs it; etcd as its user could not create it), the user
    /// exists, and owns what etcd writes and its keys. The uid and gid etcd runs with.
    fn prepare(&self) -> Result<Option<(u32, u32)>> {
        fsutil::ensure_dir(&self.data_dir, 0o700)?;
        let Some(name) = &self.user else {
            // etcd as root again after it ran as a user: its sandbox has no capability to write
            // what that user owns, so root takes the data dir back.
            user::hand_over(&user::agent(), &self.data_dir, &self.tls_dir)?;
            return Ok(None);
        };
        let u = user::ensure(name, &self.data_dir)?;
        user::hand_over(&u, &self.data_dir, &self.tls_dir)?;
        Ok(Some(u.ids()))
    }
}

pub trait ServiceManager: Send + Sync {
    fn describe(&self) -> String;
    /// Take up a reloaded configuration (`systemctl reload`) without touching a running etcd:
    /// what is rendered and started from now on follows `cfg`; a supervised etcd keeps running.
    fn reconfigure(&mut self, cfg: &Config);
    /// The files this manager writes for `spec`, in the order it writes them (`plan` prints them).
    fn render(&self, spec: &EtcdSpec) -> Result<Vec<Artifact>, ConfigError>;
    /// Write the artifacts (atomically, only when their content changes). True when any changed.
    fn install(&self, spec: &EtcdSpec) -> Result<bool> {
        self.owner().prepare()?;
        write_all(&self.render(spec)?)
    }
    /// Who etcd runs as.
    fn owner(&self) -> &Owner;
    /// Start etcd without waiting for it to be ready (etcd is ready only once it has joined
    /// through raft, which needs its peers started too); restart it when `changed` and it is
    /// already running.
    fn start(&self, changed: bool) -> BoxFuture<'_, Result<()>>;
    /// Stop etcd and wait until it is gone.
    fn stop(&self) -> BoxFuture<'_, Result<()>>;
    /// A one-off etcd with this environment, outside the manager (`recover` starts one with
    /// `ETCD_FORCE_NEW_CLUSTER`, which must never be written to a file). It must end when the
    /// returned process gets SIGTERM.
    fn one_off(&self, env: &[(String, String)]) -> Result<tokio::process::Command>;
}

/// What etcd runs with, as one value: the files rendered for `spec` (the restart annotation of a
/// static pod left out: it changes at every restart, not with the configuration), the binary and
/// the release it was installed from, the image, the user. etcd reads all of it only when it starts, so two
/// configurations whose fingerprints differ need etcd restarted to go from one to the other
/// (`decide::change`).
pub(crate) fn fingerprint(cfg: &Config, spec: &EtcdSpec) -> Result<String, ConfigError> {
    let mut text = String::new();
    for a in manager(cfg).render(spec)? {
        text.push_str(&format!("{} {:o}\n", a.path.display(), a.mode));
        for line in a.content.lines() {
            if !line.contains(static_pod::RESTART_ANNOTATION) {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    let e = &cfg.etcd;
    text.push_str(&format!(
        "binary {}\nrelease {} {}\nimage {}\n",
        e.binary.display(),
        e.download_url.as_deref().unwrap_or(""),
        e.sha256.as_deref().unwrap_or(""),
        e.image.as_deref().unwrap_or("")
    ));
    // The `process` manager writes no unit that names the user: a new user is a restart too.
    if let Some(user) = e.runs_as() {
        text.push_str(&format!("user {user}\n"));
    }
    Ok(crate::util::sha256::sha256_hex(text.as_bytes()))
}

fn write_all(artifacts: &[Artifact]) -> Result<bool> {
    let mut changed = false;
    for a in artifacts {
        changed |= fsutil::write_atomic(&a.path, a.content.as_bytes(), a.mode)?.changed();
    }
    Ok(changed)
}

/// A child that gets SIGTERM when this process dies (PR_SET_PDEATHSIG): a re-run never finds a
/// stray etcd holding the data dir.
fn child_command(program: &std::path::Path, args: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).stdin(std::process::Stdio::null());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// etcd itself with exactly `env` (and a PATH), as systemd's EnvironmentFile gives it, as the
/// user `ids` (uid, gid; its supplementary groups dropped) when given.
fn etcd_command(
    program: &std::path::Path,
    env: &[(String, String)],
    ids: Option<(u32, u32)>,
) -> tokio::process::Command {
    let mut cmd = child_command(program, &[]);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    if let Some((uid, gid)) = ids {
        // std sets the gid, drops supplementary groups (as root), then the uid, before the
        // pre_exec hook that sets PDEATHSIG (a uid change would clear it).
        cmd.uid(uid).gid(gid);
    }
    cmd
}

pub fn manager(cfg: &Config) -> Box<dyn ServiceManager> {
    match cfg.etcd.service_manager {
        ServiceManagerKind::Systemd => Box::new(systemd::Systemd::new(cfg)),
        ServiceManagerKind::Process => Box::new(process::Process::new(cfg)),
        ServiceManagerKind::Container => Box::new(container::Container::new(cfg)),
        ServiceManagerKind::StaticPod => Box::new(static_pod::StaticPod::new(cfg)),
    }
}

#[cfg(test)]
mod tests {
    use super::container::{Container, Runtime};
    use super::*;
    use crate::config::ContainerRuntime;
    use crate::decide::bootstrap::InitialCluster;
    use crate::etcd::render::{self, ClusterState, LocalMember};
    use serde_norway::Value;

    fn config(extra: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            format!(
                "[cluster]\nname = \"t\"\n[discovery]\npeers = [\"a=https://10.0.0.1:2380\"]\n\
                 [tls]\nmode = \"cfssl\"\ncfssl_url = \"https://10.0.0.9:8888\"\n{extra}"
            ),
        )
        .unwrap();
        let cfg = Config::load(Some(&p), &[]).unwrap();
        (dir, cfg)
    }

    fn spec(cfg: &Config) -> EtcdSpec {
        let me = LocalMember {
            name: "a".into(),
            ip: "10.0.0.1".parse().unwrap(),
        };
        render::spec(cfg, &me, &ClusterState::FromDisk).unwrap()
    }

    fn paths(artifacts: &[Artifact]) -> Vec<(String, u32)> {
        artifacts
            .iter()
            .map(|a| (a.path.display().to_string(), a.mode))
            .collect()
    }

    /// `systemd` writes the environment file and the unit, sandboxed (`User=` only when etcd has
    /// a user of its own); `process` the environment file alone.
    #[test]
    fn native_managers_write_the_same_files_as_before() {
        let (_d, cfg) = config("[etcd]\nuser = \"root\"\n");
        let spec = spec(&cfg);
        let systemd = manager(&cfg).render(&spec).unwrap();
        assert_eq!(
            paths(&systemd),
            [
                ("/etc/etcd/etcd.env".to_string(), 0o644),
                ("/etc/systemd/system/etcd.service".to_string(), 0o644)
            ]
        );
        assert_eq!(systemd[0].content, spec.env_text());
        assert!(
            spec.env_text().starts_with(
                "# Written by etcd-bootstrap: edits are overwritten. Set extra flags in [etcd.flags].\n\
                 ETCD_NAME=a\nETCD_DATA_DIR=/var/lib/etcd\n"
            ),
            "{}",
            spec.env_text()
        );
        assert!(
            systemd[1].content.starts_with(
                "# Written by etcd-bootstrap: edits are overwritten.\n[Unit]\n\
                 Description=etcd key-value store (managed by etcd-bootstrap)\n\
                 Documentation=https://etcd.io/docs/\nAfter=network-online.target\n\
                 Wants=network-online.target\n\n[Service]\n\
                 # etcd signals READY only once it has joined through raft, which needs a quorum: joining\n\
                 # members can take a while, so the start timeout is generous.\n\
                 # No [Install] section: etcd-bootstrap starts this unit on every boot after it has looked at\n\
                 # the data dir and the peers; systemd never starts it on its own.\n\
                 Type=notify\nEnvironmentFile=/etc/etcd/etcd.env\nExecStart=/usr/bin/etcd\n\
                 Restart=always\nRestartSec=5s\nTimeoutStartSec=600\nLimitNOFILE=65536\n"
            ),
            "{}",
            systemd[1].content
        );
        for line in [
            "ReadWritePaths=/var/lib/etcd\n",
            "CapabilityBoundingSet=\n",
            "NoNewPrivileges=yes\n",
        ] {
            assert!(
                systemd[1].content.contains(line),
                "{line} not in {}",
                systemd[1].content
            );
        }
        assert!(!systemd[1].content.contains("User="));
        let (_d, cfg) = config("[etcd]\nservice_manager = \"process\"\n");
        let process = manager(&cfg).render(&spec).unwrap();
        assert_eq!(paths(&process), [("/etc/etcd/etcd.env".to_string(), 0o644)]);
        // The environment, and the binary it is run with (a rollback puts both back).
        assert_eq!(
            process[0].content,
            format!("{}# etcd binary: /usr/bin/etcd\n", spec.env_text())
        );
        assert_eq!(
            process::binary_in(&process[0].content),
            Some(std::path::PathBuf::from("/usr/bin/etcd"))
        );
    }

    /// The environment as flags: each `ETCD_X_Y=v` is `--x-y=v`, in the same order.
    #[test]
    fn flags_are_the_environment() {
        let (_d, cfg) = config("[etcd.flags]\nheartbeat-interval = 200\n");
        let me = LocalMember {
            name: "a".into(),
            ip: "10.0.0.1".parse().unwrap(),
        };
        let ic = InitialCluster {
            members: vec![("a".into(), "https://10.0.0.1:2380".into())],
            token: "tok".into(),
            my_name: "a".into(),
            formation: "f".into(),
            seed: None,
        };
        let spec = render::spec(&cfg, &me, &ClusterState::New(ic)).unwrap();
        let flags = spec.flags();
        assert_eq!(flags.len(), spec.vars.len());
        assert_eq!(flags[0], "--name=a");
        for want in [
            "--data-dir=/var/lib/etcd",
            "--initial-cluster-state=new",
            "--initial-cluster=a=https://10.0.0.1:2380",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            "--heartbeat-interval=200",
            "--auto-compaction-mode=periodic",
        ] {
            assert!(flags.iter().any(|f| f == want), "{want} not in {flags:?}");
        }
    }

    /// The container unit, for each runtime: what runs, how it is told ready, what is mounted.
    #[test]
    fn container_unit_per_runtime() {
        // A user that is never there: the unit names it (a printed plan before the first run).
        let (_d, cfg) = config(
            "[etcd]\nservice_manager = \"container\"\nimage = \"registry.k8s.io/etcd:3.5.15-0\"\nuser = \"ebtest-absent\"\n",
        );
        let spec = spec(&cfg);
        struct Case {
            runtime: ContainerRuntime,
            program: &'static str,
            has: &'static [&'static str],
            lacks: &'static [&'static str],
        }
        let cases = [
            Case {
                runtime: ContainerRuntime::Podman,
                program: "/usr/bin/podman",
                has: &[
                    "Type=notify\nNotifyAccess=all\n",
                    "ExecStart=/usr/bin/podman run --name etcd --replace --rm --cidfile=%t/%n.ctr-id --cgroups=no-conmon --sdnotify=container -d --user ebtest-absent --cap-drop all --security-opt no-new-privileges --network host --ulimit nofile=65536:65536 --volume /var/lib/etcd:/var/lib/etcd:Z --volume /etc/etcd/pki:/etc/etcd/pki:ro,z --env-file /etc/etcd/etcd.env registry.k8s.io/etcd:3.5.15-0 etcd\n",
                    "ExecStop=/usr/bin/podman stop --ignore --time 60 --cidfile=%t/%n.ctr-id\n",
                    "Restart=always\n",
                ],
                lacks: &["\n[Install]\n", "docker"],
            },
            Case {
                runtime: ContainerRuntime::Docker,
                program: "/usr/local/bin/docker",
                has: &[
                    "Type=simple\n",
                    "ExecStartPre=-/usr/local/bin/docker rm --force etcd\n",
                    "ExecStart=/usr/local/bin/docker run --name etcd --rm --user ebtest-absent --cap-drop all --security-opt no-new-privileges --network host --ulimit nofile=65536:65536 --volume /var/lib/etcd:/var/lib/etcd:Z --volume /etc/etcd/pki:/etc/etcd/pki:ro,z --env-file /etc/etcd/etcd.env registry.k8s.io/etcd:3.5.15-0 etcd\n",
                    "ExecStop=/usr/local/bin/docker stop --time 60 etcd\n",
                ],
                lacks: &["\n[Install]\n", "sdnotify", "NotifyAccess", "podman"],
            },
        ];
        for c in cases {
            let m = Container::with_runtime(
                &cfg,
                Runtime {
                    kind: c.runtime,
                    program: c.program.into(),
                    found: true,
                },
            );
            let files = m.render(&spec).unwrap();
            assert_eq!(
                paths(&files),
                [
                    ("/etc/etcd/etcd.env".to_string(), 0o644),
                    ("/etc/systemd/system/etcd.service".to_string(), 0o644)
                ]
            );
            assert_eq!(files[0].content, spec.env_text());
            for want in c.has {
                assert!(
                    files[1].content.contains(want),
                    "{:?}: {want} not in\n{}",
                    c.runtime,
                    files[1].content
                );
            }
            for not in c.lacks {
                assert!(
                    !files[1].content.contains(not),
                    "{:?}: {not} in\n{}",
                    c.runtime,
                    files[1].content
                );
            }
        }
        // A data dir with a space cannot go on the command line.
        let (_d, mut cfg) =
            config("[etcd]\nservice_manager = \"container\"\nimage = \"etcd:3.5.30\"\n");
        cfg.member.data_dir = "/var/lib/my etcd".into();
        let e = manager(&cfg).render(&spec_of(&cfg)).unwrap_err();
        assert_eq!(e.key, "member.data_dir");
    }

    /// etcd as its own user in each form: the unit's `User=`, the container's numeric
    /// `--user` (an image need not know the name), the pod's `runAsUser`/`runAsGroup`, each
    /// without capabilities; as root, none of them.
    #[test]
    fn etcd_runs_as_its_user_in_every_form() {
        let user = RunAs::User(EtcdUser {
            name: "etcd".into(),
            uid: 998,
            gid: 997,
        });
        let (_d, cfg) = config("");
        let spec = spec(&cfg);
        let unit = |run_as: &RunAs| {
            systemd::unit_text(
                &cfg.etcd.env_file,
                &cfg.etcd.binary,
                &cfg.etcd.unit_path,
                run_as,
                &cfg.member.data_dir,
            )
            .unwrap()
        };
        assert!(unit(&user).contains("\nUser=etcd\nGroup=etcd\n"));
        assert!(!unit(&RunAs::Agent).contains("User="));
        let pod = |run_as: &RunAs| {
            yaml(
                &static_pod::manifest_text(
                    &spec,
                    "registry.k8s.io/etcd:3.5.15-0",
                    "0",
                    std::path::Path::new("/etc/kubernetes/manifests/etcd.yaml"),
                    run_as,
                )
                .unwrap(),
            )
        };
        let p = pod(&user);
        let ctx = &p["spec"]["securityContext"];
        assert_eq!(ctx["runAsUser"].as_u64(), Some(998));
        assert_eq!(ctx["runAsGroup"].as_u64(), Some(997));
        assert_eq!(ctx["runAsNonRoot"].as_bool(), Some(true));
        assert_eq!(
            ctx["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault")
        );
        let c = &p["spec"]["containers"][0]["securityContext"];
        assert_eq!(c["allowPrivilegeEscalation"].as_bool(), Some(false));
        assert_eq!(c["capabilities"]["drop"][0].as_str(), Some("ALL"));
        let root = pod(&RunAs::Agent);
        assert!(root["spec"]["securityContext"]["runAsUser"].is_null());
        assert_eq!(
            container::user_args(&user),
            [
                "--user",
                "998:997",
                "--cap-drop",
                "all",
                "--security-opt",
                "no-new-privileges"
            ]
        );
        assert_eq!(
            container::user_args(&RunAs::Agent),
            ["--cap-drop", "all", "--security-opt", "no-new-privileges"]
        );
    }

    fn spec_of(cfg: &Config) -> EtcdSpec {
        spec(cfg)
    }

    fn yaml(text: &str) -> Value {
        serde_norway::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The manifest, read back as YAML: kubeadm's shape, the same flags, probes by version.
    #[test]
    fn static_pod_manifest_per_etcd_version() {
        let cases: &[(&str, &str, Option<&str>, &str)] = &[
            // image, liveness path, readiness path, startup path
            (
                "registry.k8s.io/etcd:3.5.15-0",
                "/livez",
                Some("/readyz"),
                "/readyz",
            ),
            (
                "quay.io/coreos/etcd:v3.5.11",
                "/livez",
                Some("/readyz"),
                "/readyz",
            ),
            (
                "quay.io/coreos/etcd:v3.5.10",
                "/health?serializable=true",
                None,
                "/health?serializable=true",
            ),
            (
                "localhost/etcd:3.4.23",
                "/health?serializable=true",
                None,
                "/health?serializable=true",
            ),
            (
                "localhost:5000/etcd@sha256:0123",
                "/health?serializable=true",
                None,
                "/health?serializable=true",
            ),
            (
                "etcd:latest",
                "/health?serializable=true",
                None,
                "/health?serializable=true",
            ),
        ];
        for (image, live, ready, startup) in cases {
            let (_d, cfg) = config(&format!(
                "[etcd]\nservice_manager = \"static-pod\"\nimage = \"{image}\"\n[etcd.flags]\nquota-backend-bytes = 8589934592\n"
            ));
            let spec = spec(&cfg);
            let files = manager(&cfg).render(&spec).unwrap();
            assert_eq!(
                paths(&files),
                [
                    ("/etc/etcd/etcd.env".to_string(), 0o644),
                    ("/etc/kubernetes/manifests/etcd.yaml".to_string(), 0o600)
                ]
            );
            let pod = yaml(&files[1].content);
            assert_eq!(pod["kind"].as_str(), Some("Pod"));
            assert_eq!(pod["metadata"]["namespace"].as_str(), Some("kube-system"));
            assert_eq!(
                pod["metadata"]["labels"]["component"].as_str(),
                Some("etcd")
            );
            assert_eq!(
                pod["metadata"]["annotations"]["kubeadm.kubernetes.io/etcd.advertise-client-urls"]
                    .as_str(),
                Some("https://10.0.0.1:2379")
            );
            let s = &pod["spec"];
            assert_eq!(s["hostNetwork"].as_bool(), Some(true));
            assert_eq!(
                s["priorityClassName"].as_str(),
                Some("system-node-critical")
            );
            let c = &s["containers"][0];
            assert_eq!(c["image"].as_str(), Some(*image));
            let command: Vec<&str> = c["command"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let mut want = vec!["etcd".to_string()];
            want.extend(spec.flags());
            assert_eq!(command, want);
            assert!(command.contains(&"--quota-backend-bytes=8589934592"));
            let probe = |name: &str| {
                let p = &c[name]["httpGet"];
                assert_eq!(p["host"].as_str(), Some("127.0.0.1"), "{name}");
                assert_eq!(p["port"].as_u64(), Some(2381), "{name}");
                p["path"].as_str().map(str::to_string)
            };
            assert_eq!(probe("livenessProbe").as_deref(), Some(*live), "{image}");
            assert_eq!(probe("startupProbe").as_deref(), Some(*startup), "{image}");
            match ready {
                Some(r) => assert_eq!(probe("readinessProbe").as_deref(), Some(*r)),
                None => assert!(c["readinessProbe"].is_null(), "{image}"),
            }
            assert_eq!(c["resources"]["requests"]["cpu"].as_str(), Some("100m"));
            assert_eq!(c["resources"]["requests"]["memory"].as_str(), Some("100Mi"));
            let volumes: Vec<(&str, &str)> = s["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap(),
                        v["hostPath"]["path"].as_str().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                volumes,
                [
                    ("etcd-certs", "/etc/etcd/pki"),
                    ("etcd-data", "/var/lib/etcd")
                ]
            );
            let mounts: Vec<&str> = c["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|v| v["mountPath"].as_str().unwrap())
                .collect();
            assert_eq!(mounts, ["/var/lib/etcd", "/etc/etcd/pki"]);
        }
    }

    /// Written atomically and only on a change; a restart with nothing else changed rewrites the
    /// manifest with a new annotation (so kubelet restarts the pod), and a new manager keeps the
    /// annotation it finds; stop removes the manifest.
    #[tokio::test]
    async fn static_pod_restart_changes_the_annotation_only() {
        let dir = tempfile::tempdir().unwrap();
        let (_d, mut cfg) =
            config("[etcd]\nservice_manager = \"static-pod\"\nimage = \"etcd:3.5.30\"\n");
        cfg.etcd.manifest_path = dir.path().join("manifests/etcd.yaml");
        cfg.etcd.env_file = dir.path().join("etcd.env");
        cfg.member.data_dir = dir.path().join("data");
        // Ports nothing listens on, so that stop does not wait.
        cfg.member.client_port = 1;
        cfg.member.metrics_port = 1;
        let spec = spec(&cfg);
        let m = manager(&cfg);
        assert!(m.install(&spec).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cfg.member.data_dir), 0o700);
        assert_eq!(mode(&cfg.etcd.manifest_path), 0o600);
        let first = std::fs::read_to_string(&cfg.etcd.manifest_path).unwrap();
        m.start(true).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&cfg.etcd.manifest_path).unwrap(),
            first,
            "just written: kubelet restarts by itself"
        );
        assert!(!m.install(&spec).unwrap(), "same spec, same file");
        m.start(true).await.unwrap();
        let second = std::fs::read_to_string(&cfg.etcd.manifest_path).unwrap();
        assert_ne!(second, first);
        let differs: Vec<(&str, &str)> = first
            .lines()
            .zip(second.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(differs.len(), 1, "{differs:?}");
        assert!(
            differs[0].0.contains("etcd-bootstrap.io/restart"),
            "{differs:?}"
        );
        m.start(false).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&cfg.etcd.manifest_path).unwrap(),
            second
        );
        // A new agent keeps the annotation: no restart for nothing.
        assert!(!manager(&cfg).install(&spec).unwrap());
        m.stop().await.unwrap();
        assert!(!cfg.etcd.manifest_path.exists());
        assert!(m.one_off(&[]).is_err());
    }
}
