//! `etcd.service_manager = "static-pod"`: a kubelet manifest at `etcd.manifest_path`, in the shape
//! kubeadm gives its etcd (hostNetwork, system-node-critical, hostPath volumes for the data dir
//! and the certificates, probes on the loopback metrics port). kubelet runs whatever manifest is
//! in its directory, so here writing the manifest starts etcd and removing it stops etcd; a
//! restart without any other change rewrites it with a new `etcd-bootstrap.io/restart`
//! annotation. The environment file is written as well, as the record of what etcd runs with
//! (kubelet does not read it; etcd-bootstrap does).

use super::{Artifact, Owner, RunAs, ServiceManager};
use crate::config::Config;
use crate::error::ConfigError;
use crate::etcd::render::{one_line, EtcdSpec};
use crate::util::fs as fsutil;
use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// kubelet stops a pod within its grace period (30 s by default) after it notices the manifest
/// is gone (its file source looks every 20 s, and at once on inotify).
const STOP_TIMEOUT: Duration = Duration::from_secs(180);
/// How long etcd must have been gone, without a break, before a stop counts as done: a pod that
/// kubelet has not yet seen removed restarts a crash-looping etcd (a removed member exits at
/// once, and is started again), and kubelet's file source may take its 20 s period to see it.
const STOP_QUIET: Duration = Duration::from_secs(25);
pub(super) const RESTART_ANNOTATION: &str = "etcd-bootstrap.io/restart";

pub(crate) struct StaticPod {
    manifest_path: PathBuf,
    env_path: PathBuf,
    image: String,
    /// The restart annotation's value: kept from the manifest on disk, changed by a restart.
    restart_mark: Mutex<String>,
    /// The manifest was written since the last start: kubelet restarts the pod by itself.
    written: Mutex<bool>,
    last_spec: Mutex<Option<EtcdSpec>>,
    /// The client and metrics ports, which etcd serves on 127.0.0.1.
    ports: [u16; 2],
    /// etcd's `--data-dir=` argument: a process that has it is this member's etcd.
    data_dir_arg: String,
    /// See `STOP_QUIET`.
    quiet: Duration,
    owner: Owner,
}

impl StaticPod {
    pub(crate) fn new(cfg: &Config) -> Self {
        let mark = std::fs::read_to_string(&cfg.etcd.manifest_path)
            .ok()
            .and_then(|text| restart_mark_in(&text))
            .unwrap_or_else(|| "0".into());
        StaticPod {
            manifest_path: cfg.etcd.manifest_path.clone(),
            env_path: cfg.etcd.env_file.clone(),
            image: cfg.etcd.image.clone().unwrap_or_default(),
            restart_mark: Mutex::new(mark),
            written: Mutex::new(false),
            last_spec: Mutex::new(None),
            ports: [cfg.member.client_port, cfg.member.metrics_port],
            data_dir_arg: data_dir_arg(&cfg.member.data_dir),
            quiet: STOP_QUIET,
            owner: Owner::new(cfg),
        }
    }

    /// What shows that this member's etcd runs: a process with its `--data-dir=` (also in a
    /// container: the host sees every process), or a listener on its loopback ports.
    async fn running(&self) -> Option<String> {
        if let Some(pid) = process_with_arg(&self.data_dir_arg) {
            return Some(format!("process {pid} runs with {}", self.data_dir_arg));
        }
        for port in self.ports {
            if listening(port).await {
                return Some(format!("something listens on 127.0.0.1:{port}"));
            }
        }
        None
    }

    fn manifest(&self, spec: &EtcdSpec) -> Result<String, ConfigError> {
        let mark = self.restart_mark.lock().expect("poisoned").clone();
        manifest_text(
            spec,
            &self.image,
            &mark,
            &self.manifest_path,
            &self.owner.run_as(),
        )
    }
}

/// The restart annotation's value in a manifest this manager wrote.
fn restart_mark_in(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l
            .trim()
            .strip_prefix(RESTART_ANNOTATION)?
            .strip_prefix(':')?;
        serde_json::from_str::<String>(v.trim()).ok()
    })
}

/// `major.minor.patch` from an image tag such as `registry.k8s.io/etcd:3.5.15-0` or
/// `quay.io/coreos/etcd:v3.5.30`; None for a digest only or a tag like `latest`.
pub(crate) fn version_of_image(image: &str) -> Option<(u32, u32, u32)> {
    crate::etcd::version::EtcdVersion::from_image(image).map(|v| (v.major, v.minor, v.patch))
}

/// The probe paths: etcd serves /livez and /readyz from 3.5.11 on; before, /health, answered
/// from the local member's own state (serializable) so that a member without a quorum is not
/// killed for it.
fn probe_paths(image: &str) -> (&'static str, Option<&'static str>) {
    match version_of_image(image) {
        Some(v) if v >= (3, 5, 11) => ("/livez", Some("/readyz")),
        _ => ("/health?serializable=true", None),
    }
}

/// A YAML scalar that holds any string: a JSON string is a YAML double-quoted scalar.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

pub(crate) fn manifest_text(
    spec: &EtcdSpec,
    image: &str,
    restart_mark: &str,
    path: &std::path::Path,
    run_as: &RunAs,
) -> Result<String, ConfigError> {
    one_line("etcd.image", image, path)?;
    one_line(
        "member.data_dir",
        &spec.data_dir.display().to_string(),
        path,
    )?;
    one_line("tls.dir", &spec.tls_dir.display().to_string(), path)?;
    let (live, ready) = probe_paths(image);
    let probe = |path: &str, failures: u32, period: u32, delay: bool| {
        format!(
            "      failureThreshold: {failures}\n      httpGet:\n        host: 127.0.0.1\n        path: {}\n        port: {}\n        scheme: HTTP\n{}      periodSeconds: {period}\n      timeoutSeconds: 15\n",
            q(path),
            spec.metrics_port,
            if delay { "      initialDelaySeconds: 10\n" } else { "" },
        )
    };
    let mut out = String::from(
        "# Written by etcd-bootstrap: edits are overwritten. Set extra flags in [etcd.flags].\n\
         # etcd-bootstrap writes this file only after it has looked at the data dir and the peers,\n\
         # and removes it to stop etcd.\n\
         apiVersion: v1\n\
         kind: Pod\n\
         metadata:\n  annotations:\n",
    );
    out.push_str(&format!(
        "    kubeadm.kubernetes.io/etcd.advertise-client-urls: {}\n    {RESTART_ANNOTATION}: {}\n",
        q(&spec.advertise_client_url),
        q(restart_mark)
    ));
    out.push_str(
        "  labels:\n    component: etcd\n    tier: control-plane\n  name: etcd\n  namespace: kube-system\n\
         spec:\n  containers:\n  - command:\n    - etcd\n",
    );
    for flag in spec.flags() {
        out.push_str(&format!("    - {}\n", q(&flag)));
    }
    out.push_str(&format!(
        "    image: {}\n    imagePullPolicy: IfNotPresent\n    livenessProbe:\n",
        q(image)
    ));
    out.push_str(&probe(live, 8, 10, true));
    out.push_str("    name: etcd\n");
    if let Some(ready) = ready {
        out.push_str("    readinessProbe:\n");
        out.push_str(&probe(ready, 3, 1, false));
    }
    // etcd needs no capability (its ports are above 1024) and never gains one.
    out.push_str("    resources:\n      requests:\n        cpu: 100m\n        memory: 100Mi\n\
                  \x20   securityContext:\n      allowPrivilegeEscalation: false\n      capabilities:\n        drop:\n        - ALL\n\
                  \x20   startupProbe:\n");
    out.push_str(&probe(ready.unwrap_or(live), 24, 10, true));
    // As the uid and gid of etcd.user: an image need not know its name. A user not created
    // yet (a printed plan) is shown by name.
    let run_as = match run_as {
        RunAs::Agent => String::new(),
        RunAs::User(u) => format!(
            "    runAsGroup: {}\n    runAsNonRoot: true\n    runAsUser: {}\n",
            u.gid, u.uid
        ),
        RunAs::Missing(name) => format!(
            "    # runAsUser, runAsGroup: the uid and gid of {name}, created at the first run\n"
        ),
    };
    out.push_str(&format!(
        "    volumeMounts:\n    - mountPath: {data}\n      name: etcd-data\n    - mountPath: {tls}\n      name: etcd-certs\n      readOnly: true\n\
         \x20 hostNetwork: true\n  priority: 2000001000\n  priorityClassName: system-node-critical\n\
         \x20 securityContext:\n{run_as}    seccompProfile:\n      type: RuntimeDefault\n\
         \x20 volumes:\n  - hostPath:\n      path: {tls}\n      type: DirectoryOrCreate\n    name: etcd-certs\n\
         \x20 - hostPath:\n      path: {data}\n      type: DirectoryOrCreate\n    name: etcd-data\n",
        data = q(&spec.data_dir.display().to_string()),
        tls = q(&spec.tls_dir.display().to_string()),
    ));
    Ok(out)
}

fn data_dir_arg(data_dir: &std::path::Path) -> String {
    format!("--data-dir={}", data_dir.display())
}

/// Whether anything listens on `port` on loopback.
async fn listening(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The first process (other than this one) with `arg` among its arguments.
fn process_with_arg(arg: &str) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        if pid == me {
            return None;
        }
        // A process that ended meanwhile, or one this agent may not read: not etcd's.
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        cmdline
            .split(|b| *b == 0)
            .any(|a| a == arg.as_bytes())
            .then_some(pid)
    })
}

impl ServiceManager for StaticPod {
    fn reconfigure(&mut self, cfg: &Config) {
        *self = Self::new(cfg);
    }

    fn describe(&self) -> String {
        format!(
            "kubelet static pod {} from {}",
            self.manifest_path.display(),
            self.image
        )
    }

    fn render(&self, spec: &EtcdSpec) -> Result<Vec<Artifact>, ConfigError> {
        Ok(vec![
            Artifact::new(&self.env_path, 0o644, spec.env_text()),
            // kubeadm writes its manifests 0600.
            Artifact::new(&self.manifest_path, 0o600, self.manifest(spec)?),
        ])
    }

    fn install(&self, spec: &EtcdSpec) -> Result<bool> {
        // hostPath DirectoryOrCreate would make the data dir 0755; etcd wants it private. Its
        // user owns it before the manifest (which starts etcd) is written.
        self.owner.prepare()?;
        if let Some(dir) = self.manifest_path.parent() {
            fsutil::ensure_dir(dir, 0o755)?;
        }
        let changed = super::write_all(&self.render(spec)?)?;
        if changed {
            *self.written.lock().expect("poisoned") = true;
        }
        *self.last_spec.lock().expect("poisoned") = Some(spec.clone());
        Ok(changed)
    }

    fn start(&self, changed: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if !self.manifest_path.is_file() {
                bail!(
                    "{} is missing: etcd-bootstrap writes it before it starts etcd",
                    self.manifest_path.display()
                );
            }
            self.owner.prepare()?;
            let written = std::mem::take(&mut *self.written.lock().expect("poisoned"));
            if changed && !written {
                // Nothing in the pod changed, so kubelet would not restart it: a new annotation.
                let spec = self.last_spec.lock().expect("poisoned").clone();
                let Some(spec) = spec else {
                    bail!("a restart of the static pod before its manifest was rendered");
                };
                *self.restart_mark.lock().expect("poisoned") = time::OffsetDateTime::now_utc()
                    .unix_timestamp_nanos()
                    .to_string();
                super::write_all(&self.render(&spec)?)?;
                tracing::info!(manifest = %self.manifest_path.display(), "restart: the manifest's {RESTART_ANNOTATION} annotation changed, so kubelet restarts etcd");
            }
            Ok(())
        })
    }

    fn stop(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match std::fs::remove_file(&self.manifest_path) {
                Ok(()) => {
                    if let Some(dir) = self.manifest_path.parent() {
                        fsutil::sync_dir(dir)?;
                    }
                    tracing::info!(manifest = %self.manifest_path.display(), "removed the manifest: kubelet stops etcd");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("removing {}", self.manifest_path.display()))
                }
            }
            // Done once etcd has been gone for `quiet` without a break: a gap between two
            // runs of a crash-looping etcd is not a stop.
            let started = Instant::now();
            let mut gone_since: Option<Instant> = None;
            let mut logged = false;
            loop {
                match self.running().await {
                    None => {
                        let since = *gone_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.quiet {
                            return Ok(());
                        }
                    }
                    Some(seen) => {
                        gone_since = None;
                        if started.elapsed() > STOP_TIMEOUT {
                            bail!(
                                "etcd still runs {} s after {} was removed ({seen}); is kubelet running? Stop the pod by hand, then run etcd-bootstrap again",
                                STOP_TIMEOUT.as_secs(),
                                self.manifest_path.display()
                            );
                        }
                        if !logged && started.elapsed() > Duration::from_secs(30) {
                            tracing::info!(%seen, "waiting for kubelet to stop etcd");
                            logged = true;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    fn owner(&self) -> &Owner {
        &self.owner
    }

    fn one_off(&self, _env: &[(String, String)]) -> Result<tokio::process::Command> {
        bail!(
            "a one-off etcd outside kubelet is not supported with etcd.service_manager = \"static-pod\": \
             remove {} and run the one-off etcd from the same image by hand",
            self.manifest_path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_for_test(dir: &std::path::Path, port: u16, quiet: Duration) -> StaticPod {
        let manifest = dir.join("etcd.yaml");
        std::fs::write(&manifest, "kind: Pod\n").unwrap();
        StaticPod {
            manifest_path: manifest,
            env_path: dir.join("etcd.env"),
            image: "etcd:3.5.30".into(),
            restart_mark: Mutex::new("0".into()),
            written: Mutex::new(false),
            last_spec: Mutex::new(None),
            ports: [port, port],
            data_dir_arg: data_dir_arg(&dir.join("data")),
            quiet,
            owner: Owner {
                user: None,
                data_dir: dir.join("data"),
                tls_dir: dir.join("pki"),
            },
        }
    }

    /// Stop returns only once nothing listens on etcd's ports any more: the data dir is moved
    /// aside right after a stop, and must not be moved under a running etcd.
    #[tokio::test]
    async fn stop_waits_until_etcd_is_gone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let quiet = Duration::from_millis(800);
        let pod = pod_for_test(dir.path(), port, quiet);
        let gone_after = Duration::from_millis(1500);
        let t0 = Instant::now();
        let kubelet = std::thread::spawn(move || {
            std::thread::sleep(gone_after);
            drop(listener);
        });
        pod.stop().await.unwrap();
        assert!(
            t0.elapsed() >= gone_after + quiet,
            "returned after {:?}",
            t0.elapsed()
        );
        assert!(!pod.manifest_path.exists());
        kubelet.join().unwrap();
    }

    /// A crash-looping etcd (a removed member exits at once and is started again until kubelet
    /// takes the pod down) is not stopped in a gap between two of its runs.
    #[tokio::test]
    async fn stop_is_not_fooled_by_a_crash_loop() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let quiet = Duration::from_millis(1500);
        let pod = pod_for_test(dir.path(), port, quiet);
        // Up 1 s, down 0.7 s, up again 1 s (the restart), then gone for good.
        let t0 = Instant::now();
        let kubelet = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1000));
            drop(listener);
            std::thread::sleep(Duration::from_millis(700));
            let again = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            std::thread::sleep(Duration::from_millis(1000));
            drop(again);
        });
        pod.stop().await.unwrap();
        let last_up = Duration::from_millis(2700);
        assert!(
            t0.elapsed() >= last_up + quiet,
            "returned after {:?}, in the crash loop's gap",
            t0.elapsed()
        );
        kubelet.join().unwrap();
    }

    /// An etcd that does not listen (yet) but runs on this data dir is still running.
    #[tokio::test]
    async fn stop_waits_for_a_process_on_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let free_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let quiet = Duration::from_millis(500);
        let pod = pod_for_test(dir.path(), free_port, quiet);
        // A real process with etcd's argument (sh takes it as $0 and ignores it).
        let mut etcd = std::process::Command::new("sh")
            .args(["-c", "sleep 2; true", &pod.data_dir_arg])
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        pod.stop().await.unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(1500) + quiet,
            "returned after {:?} while {} ran",
            t0.elapsed(),
            pod.data_dir_arg
        );
        etcd.wait().unwrap();
    }
}
