//! `etcd.service_manager = "container"`: etcd from `etcd.image`, run by podman or docker under a
//! systemd unit, as the classic guides run it on image-based hosts. The container has the host's
//! network, the data dir and `tls.dir` mounted at the same paths, and the same `ETCD_*`
//! environment file as the native unit; start, stop and restart go through systemd exactly as for
//! the `systemd` manager (the unit is never enabled: only the agent starts it).

use super::systemd::Unit;
use super::{Artifact, Owner, RunAs, ServiceManager};
use crate::config::{Config, ContainerRuntime};
use crate::error::ConfigError;
use crate::etcd::render::{one_line, EtcdSpec};
use anyhow::Result;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};

pub(crate) struct Container {
    unit: Unit,
    env_path: PathBuf,
    image: String,
    runtime: Runtime,
    data_dir: PathBuf,
    tls_dir: PathBuf,
    owner: Owner,
}

/// etcd as the uid and gid of `etcd.user` (an image need not know its name; a user not created
/// yet, in a printed plan, by name), with no capability and no way to gain one.
pub(super) fn user_args(run_as: &RunAs) -> Vec<String> {
    let user = match run_as {
        RunAs::Agent => None,
        RunAs::User(u) => Some(format!("{}:{}", u.uid, u.gid)),
        RunAs::Missing(name) => Some(name.clone()),
    };
    let mut args: Vec<String> = user
        .into_iter()
        .flat_map(|u| ["--user".to_string(), u])
        .collect();
    args.extend([
        "--cap-drop".to_string(),
        "all".into(),
        "--security-opt".into(),
        "no-new-privileges".into(),
    ]);
    args
}

/// The runtime and the program that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Runtime {
    pub kind: ContainerRuntime,
    pub program: PathBuf,
    /// The program was found on this host (false: the path is a guess, and `start` says so).
    pub found: bool,
}

const SEARCH_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

fn find(program: &str) -> Option<PathBuf> {
    SEARCH_PATH
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

impl Runtime {
    /// `etcd.container_runtime`, or podman if it is installed, else docker.
    pub(crate) fn resolve(wanted: Option<ContainerRuntime>) -> Runtime {
        let candidates = match wanted {
            Some(k) => vec![k],
            None => vec![ContainerRuntime::Podman, ContainerRuntime::Docker],
        };
        for kind in &candidates {
            if let Some(program) = find(kind.program()) {
                return Runtime {
                    kind: *kind,
                    program,
                    found: true,
                };
            }
        }
        let kind = candidates[0];
        Runtime {
            kind,
            program: Path::new("/usr/bin").join(kind.program()),
            found: false,
        }
    }
}

impl Container {
    pub(crate) fn new(cfg: &Config) -> Self {
        Self::with_runtime(cfg, Runtime::resolve(cfg.etcd.container_runtime))
    }

    pub(crate) fn with_runtime(cfg: &Config, runtime: Runtime) -> Self {
        Container {
            unit: Unit::new(&cfg.etcd.unit_path),
            env_path: cfg.etcd.env_file.clone(),
            image: cfg.etcd.image.clone().unwrap_or_default(),
            runtime,
            data_dir: cfg.member.data_dir.clone(),
            tls_dir: cfg.tls.dir.clone(),
            owner: Owner::new(cfg),
        }
    }

    /// The container's name: the unit's, without ".service".
    fn name(&self) -> &str {
        self.unit
            .name
            .strip_suffix(".service")
            .unwrap_or(&self.unit.name)
    }

    /// Host network; the data dir read-write and the certificates read-only, at the paths the
    /// environment names. `Z`/`z`: SELinux labels for the container (ignored without SELinux).
    fn mounts(&self, run_as: &RunAs) -> Vec<String> {
        let mut args = user_args(run_as);
        args.extend([
            "--network".into(),
            "host".into(),
            "--ulimit".into(),
            "nofile=65536:65536".into(),
            "--volume".into(),
            format!("{0}:{0}:Z", self.data_dir.display()),
            "--volume".into(),
            format!("{0}:{0}:ro,z", self.tls_dir.display()),
        ]);
        args
    }

    fn unit_text(&self, spec: &EtcdSpec) -> Result<String, ConfigError> {
        let program = self.runtime.program.display().to_string();
        let env = self.env_path.display().to_string();
        for (key, value) in [
            ("etcd.container_runtime", program.as_str()),
            ("etcd.env_file", env.as_str()),
            ("member.data_dir", &spec.data_dir.display().to_string()),
            ("tls.dir", &spec.tls_dir.display().to_string()),
        ] {
            one_line(key, value, &self.unit.path)?;
            if value.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    key,
                    format!("{} as it would be written", self.unit.path.display()),
                    format!("{value:?} holds a space, which the container unit's command line cannot carry"),
                ));
            }
        }
        let name = self.name();
        let mounts = self.mounts(&self.owner.run_as()).join(" ");
        let image = &self.image;
        let (service, what) = match self.runtime.kind {
            // As `podman generate systemd --new` writes it: podman detaches, conmon is the main
            // process, and etcd itself signals READY through the socket podman hands it.
            ContainerRuntime::Podman => (
                format!(
                    "Type=notify\n\
NotifyAccess=all\n\
Environment=PODMAN_SYSTEMD_UNIT=%n\n\
ExecStartPre=-/bin/rm -f %t/%n.ctr-id\n\
ExecStart={program} run --name {name} --replace --rm --cidfile=%t/%n.ctr-id --cgroups=no-conmon --sdnotify=container -d {mounts} --env-file {env} {image} etcd\n\
ExecStop={program} stop --ignore --time 60 --cidfile=%t/%n.ctr-id\n\
ExecStopPost={program} rm --force --ignore --time 10 --cidfile=%t/%n.ctr-id\n"
                ),
                "etcd signals READY itself (--sdnotify=container)",
            ),
            // docker cannot pass the notify socket: the unit is up once the container runs, and
            // etcd-bootstrap waits for etcd's health itself, as always.
            ContainerRuntime::Docker => (
                format!(
                    "Type=simple\n\
ExecStartPre=-{program} rm --force {name}\n\
ExecStart={program} run --name {name} --rm {mounts} --env-file {env} {image} etcd\n\
ExecStop={program} stop --time 60 {name}\n"
                ),
                "docker cannot pass the notify socket, so the unit is active once the container runs",
            ),
        };
        Ok(format!(
            "# Written by etcd-bootstrap: edits are overwritten.\n\
[Unit]\n\
Description=etcd key-value store in a container (managed by etcd-bootstrap)\n\
Documentation=https://etcd.io/docs/\n\
After=network-online.target\n\
Wants=network-online.target\n\
\n\
[Service]\n\
# etcd from {image}, with the host's network, the data dir and the certificates mounted at the\n\
# same paths, and the environment of {env}. {what}.\n\
# etcd is ready only once it has joined through raft, which needs a quorum: joining members can\n\
# take a while, so the start timeout is generous.\n\
# No [Install] section: etcd-bootstrap starts this unit on every boot after it has looked at\n\
# the data dir and the peers; systemd never starts it on its own.\n\
{service}\
Restart=always\n\
RestartSec=5s\n\
TimeoutStartSec=600\n\
TimeoutStopSec=90\n",
        ))
    }
}

impl ServiceManager for Container {
    fn reconfigure(&mut self, cfg: &Config) {
        *self = Self::new(cfg);
    }

    fn describe(&self) -> String {
        format!(
            "{} container {} from {} under systemd unit {}",
            self.runtime.kind.program(),
            self.name(),
            self.image,
            self.unit.name
        )
    }

    fn render(&self, spec: &EtcdSpec) -> Result<Vec<Artifact>, ConfigError> {
        Ok(vec![
            Artifact::new(&self.env_path, 0o644, spec.env_text()),
            Artifact::new(&self.unit.path, 0o644, self.unit_text(spec)?),
        ])
    }

    fn start(&self, changed: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if !self.runtime.found {
                return Err(ConfigError::new(
                    "etcd.container_runtime",
                    "",
                    format!(
                        "{} is not installed (looked in {}); install it or set etcd.container_runtime",
                        self.runtime.kind.program(),
                        SEARCH_PATH.join(":")
                    ),
                )
                .into());
            }
            // A bind mount needs its source: etcd creates its data dir only inside the container.
            self.owner.prepare()?;
            self.unit.start(changed).await
        })
    }

    fn stop(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.unit.stop())
    }

    fn owner(&self) -> &Owner {
        &self.owner
    }

    fn one_off(&self, env: &[(String, String)]) -> Result<tokio::process::Command> {
        // In the foreground, so that SIGTERM to the runtime stops the container (podman and
        // docker pass signals on); its own name, so that it never replaces the unit's.
        let mut args = vec![
            "run".to_string(),
            "--rm".into(),
            "--name".into(),
            format!("{}-one-off", self.name()),
        ];
        self.owner.prepare()?;
        args.extend(self.mounts(&self.owner.run_as()));
        for (k, v) in env {
            args.push("--env".into());
            args.push(format!("{k}={v}"));
        }
        args.push(self.image.clone());
        args.push("etcd".into());
        Ok(super::child_command(&self.runtime.program, &args))
    }
}
