//! The network-namespace lab for integration tests: real etcd, real dnsmasq, one namespace per
//! "host". Everything is torn down in `Drop`, so also when a test fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_etcd-bootstrap");

/// The binary `Lab::start` runs: `BIN`, unless `EB_TEST_BIN` names another build (to
/// watch a new lab scenario fail against the code before a fix). Not `ETCD_BOOTSTRAP_*`: the
/// agents inherit the environment and read every such variable as a config key.
pub fn bin() -> String {
    std::env::var("EB_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// Fail-point tests need a binary built with `--features failpoints`: without it the agent
/// ignores `ETCD_BOOTSTRAP_FAILPOINT` (and only warns), so such a test must stop here, saying why,
/// rather than wait for a kill that never comes. `--version` says "+failpoints" when they are in.
pub fn require_failpoints() {
    let out = Command::new(bin())
        .arg("--version")
        .output()
        .expect("etcd-bootstrap --version");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.contains("+failpoints"),
        "{} has no fail points ({}): run the fail-point tests with `cargo test --features \
         failpoints` (as scripts/test.sh does)",
        bin(),
        version.trim()
    );
}

/// Lab tests share two cores: run them one at a time so that timings stay meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lab_sh() -> PathBuf {
    repo().join("scripts/lab.sh")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V3_4,
    V3_5,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V3_4 => "3.4.23",
            Version::V3_5 => "3.5.30",
        }
    }

    /// Directory with `etcd` and `etcdctl`, as installed by scripts/install-deps.sh.
    pub fn dir(self) -> PathBuf {
        cache_dir(match self {
            Version::V3_4 => "ETCD_34_DIR",
            Version::V3_5 => "ETCD_35_DIR",
        })
    }
}

/// A directory that scripts/install-deps.sh recorded in the lab cache's `env` file under `key`.
pub fn cache_dir(key: &str) -> PathBuf {
    let cache = std::env::var("ETCD_BOOTSTRAP_LAB_CACHE")
        .unwrap_or_else(|_| "/var/cache/etcd-bootstrap-lab".into());
    let env = fs::read_to_string(Path::new(&cache).join("env"))
        .unwrap_or_else(|_| panic!("{cache}/env is missing: run scripts/install-deps.sh first"));
    let dir = env
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("{key} not in {cache}/env: run scripts/install-deps.sh"));
    PathBuf::from(dir)
}

pub struct Lab {
    pub name: String,
    pub subnet: String,
    pub hosts: usize,
    pub version: Version,
    pub dir: tempfile::TempDir,
    runners: BTreeMap<usize, Child>,
}

pub struct LabOptions {
    pub hosts: usize,
    pub srv: bool,
    /// Hosts published in DNS at first (default: all).
    pub dns_hosts: Option<Vec<usize>>,
}

impl LabOptions {
    pub fn srv(hosts: usize) -> LabOptions {
        LabOptions {
            hosts,
            srv: true,
            dns_hosts: None,
        }
    }
}

impl Lab {
    /// A lab named `ebt-<id>` on 10.210.<id>.0/24 with `hosts` hosts and SRV records for all.
    pub fn up(id: u8, version: Version, opts: LabOptions) -> Lab {
        let name = format!("ebt{id}");
        let subnet = format!("10.210.{id}");
        // Leftovers of an earlier, killed run would make `up` refuse.
        let _ = Command::new(lab_sh())
            .args(["down", "--name", &name, "--grace", "0"])
            .output();
        let mut args = vec![
            "up".to_string(),
            "--name".into(),
            name.clone(),
            "--subnet".into(),
            subnet.clone(),
            "--hosts".into(),
            opts.hosts.to_string(),
            "--domain".into(),
            "lab.test".into(),
        ];
        if !opts.srv {
            args.push("--no-srv".into());
        }
        if let Some(hosts) = &opts.dns_hosts {
            args.push("--dns-hosts".into());
            args.push(
                hosts
                    .iter()
                    .map(|h| h.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let out = Command::new(lab_sh())
            .args(&args)
            .output()
            .expect("running lab.sh");
        assert!(
            out.status.success(),
            "lab.sh up failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .unwrap();
        let lab = Lab {
            name,
            subnet,
            hosts: opts.hosts,
            version,
            dir,
            runners: BTreeMap::new(),
        };
        let ca = lab.dir.path().join("ca");
        let out = Command::new(BIN)
            .args(["ca", "init", "--out"])
            .arg(&ca)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ca init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    pub fn ip(&self, host: usize) -> String {
        format!("{}.{}", self.subnet, 10 + host)
    }

    pub fn host_dir(&self, host: usize) -> PathBuf {
        self.dir.path().join(format!("h{host}"))
    }

    pub fn config_path(&self, host: usize) -> PathBuf {
        self.host_dir(host).join("config.toml")
    }

    /// Write host `host`'s config: the common part plus `discovery` (the [discovery] body).
    pub fn write_config(&self, host: usize, size: usize, discovery: &str) {
        let ca = self.dir.path().join("ca");
        let tls = format!(
            "mode = \"local-ca\"\nca_cert = \"{ca}/ca.crt\"\nca_key = \"{ca}/ca.key\"",
            ca = ca.display()
        );
        self.write_config_tls(host, size, discovery, &tls);
    }

    /// Like `write_config`, with the body of [tls] (besides `dir`) given.
    pub fn write_config_tls(&self, host: usize, size: usize, discovery: &str, tls: &str) {
        let d = self.host_dir(host);
        fs::create_dir_all(&d).unwrap();
        let text = format!(
            r#"[cluster]
name = "lab"
size = {size}

[member]
data_dir = "{d}/data"

[discovery]
{discovery}
timeout = "90s"

[tls]
dir = "{d}/pki"
{tls}

[etcd]
binary = "{bin}/etcd"
service_manager = "process"
env_file = "{d}/etcd.env"
unit_path = "{d}/etcd.service"

[heal]
interval = "2s"
"#,
            d = d.display(),
            bin = self.version.dir().display(),
        );
        fs::write(self.config_path(host), text).unwrap();
    }

    /// Configure every host for SRV discovery.
    pub fn configure_srv(&self, size: usize) {
        self.configure_srv_with(size, "");
    }

    /// SRV discovery plus `extra` lines in [discovery].
    pub fn configure_srv_with(&self, size: usize, extra: &str) {
        for h in 1..=self.hosts {
            self.write_config(h, size, &format!("srv_domain = \"lab.test\"\n{extra}"));
        }
    }

    /// Configure every host with the static peer list of all hosts.
    pub fn configure_static(&self) {
        let peers: Vec<String> = (1..=self.hosts)
            .map(|h| format!("\"node{h}=https://{}:2380\"", self.ip(h)))
            .collect();
        for h in 1..=self.hosts {
            self.write_config(h, self.hosts, &format!("peers = [{}]", peers.join(", ")));
        }
    }

    /// A healthy 3-member SRV cluster on hosts 1-3 of a lab of `hosts` hosts (the others not in
    /// DNS), formed by etcd-bootstrap.
    pub fn three(id: u8, version: Version, hosts: usize) -> Lab {
        let mut lab = Lab::up(
            id,
            version,
            LabOptions {
                hosts,
                srv: true,
                dns_hosts: Some(vec![1, 2, 3]),
            },
        );
        lab.configure_srv(3);
        lab.start(&[1, 2, 3]);
        lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(120));
        lab
    }

    /// Host `host`'s client URL.
    pub fn client_url(&self, host: usize) -> String {
        format!("https://{}:2379", self.ip(host))
    }

    /// `etcdctl put` through host `host`, which must succeed. A write that etcd drops while
    /// leadership moves (an agent's defrag or rollout moves it; etcdctl does not retry "raft
    /// proposal dropped") is written again, at most 5 times: these are the tests' setup
    /// writes, not what they measure.
    pub fn put(&self, host: usize, key: &str, value: &str) {
        let mut out = self.etcdctl(host, &self.client_url(host), &["put", key, value]);
        for _ in 0..5 {
            if out.status.success()
                || !String::from_utf8_lossy(&out.stderr).contains("raft proposal dropped")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
            out = self.etcdctl(host, &self.client_url(host), &["put", key, value]);
        }
        assert!(
            out.status.success(),
            "put: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A linearizable read through `host`: `Some(value)` ("" when the key is absent), `None`
    /// when the member does not answer (down, no quorum).
    pub fn get(&self, host: usize, key: &str) -> Option<String> {
        let out = self.etcdctl(
            host,
            &self.client_url(host),
            &["get", "--print-value-only", key],
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The member ID (hex) of host `host`, from the member list of `via`.
    pub fn member_id_of(&self, via: usize, host: usize) -> String {
        let url = format!("https://{}:2380", self.ip(host));
        self.members(via)
            .iter()
            .find(|m| {
                m["peerURLs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|u| u.as_str() == Some(&url))
            })
            .map(|m| format!("{:x}", m["ID"].as_u64().unwrap()))
            .expect("member not found")
    }

    /// `etcdctl member remove` through `via`, retried while etcd says the cluster is not ready
    /// for it (right after a change it wants every voter connected for 5 s).
    pub fn remove_member(&self, via: usize, id: &str) {
        let start = Instant::now();
        loop {
            let out = self.etcdctl(via, &self.client_url(via), &["member", "remove", id]);
            if out.status.success() {
                return;
            }
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(
                err.contains("unhealthy cluster") && start.elapsed() < Duration::from_secs(30),
                "member remove: {err}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Replace `from` by `to` in host `host`'s config (which must contain it).
    pub fn edit_config(&self, host: usize, from: &str, to: &str) {
        let path = self.config_path(host);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from:?} not in {}", path.display());
        fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }

    /// A new disk for host `host`: its data dir and everything etcd-bootstrap keeps beside it
    /// (identity record, moved-aside copies) are gone; config and certificates stay.
    pub fn wipe(&self, host: usize) {
        for e in fs::read_dir(self.host_dir(host)).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("data") {
                let p = e.path();
                if p.is_dir() {
                    fs::remove_dir_all(&p).unwrap();
                } else {
                    fs::remove_file(&p).unwrap();
                }
            }
        }
    }

    pub fn netns(&self, host: usize) -> String {
        format!("{}-h{host}", self.name)
    }

    /// Run a command inside host `host` and wait for it.
    pub fn exec(&self, host: usize, cmd: &Path, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns(host)])
            .arg(cmd)
            .args(args)
            .output()
            .expect("ip netns exec")
    }

    /// Start `etcd-bootstrap run` in each of `hosts`, all at the same instant.
    pub fn start(&mut self, hosts: &[usize]) {
        self.start_with_env(hosts, &[]);
    }

    /// Like `start`, with extra environment variables (e.g. a fail point).
    pub fn start_with_env(&mut self, hosts: &[usize], env: &[(&str, &str)]) {
        if env.iter().any(|(k, _)| *k == "ETCD_BOOTSTRAP_FAILPOINT") {
            require_failpoints();
        }
        let mut cmds: Vec<(usize, Command)> = hosts
            .iter()
            .map(|&h| {
                let log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.host_dir(h).join("bootstrap.log"))
                    .unwrap();
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.netns(h), &bin(), "run", "--config"])
                    .arg(self.config_path(h))
                    .envs(env.iter().copied())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log);
                (h, c)
            })
            .collect();
        for (h, c) in cmds.iter_mut() {
            let child = c.spawn().expect("spawning etcd-bootstrap");
            self.runners.insert(*h, child);
        }
    }

    /// The PID of `etcd-bootstrap run` on `host` (`ip netns exec` execs it, so the child's).
    pub fn agent_pid(&self, host: usize) -> Option<u32> {
        self.runners.get(&host).map(|c| c.id())
    }

    /// SIGTERM the bootstrapper of `host` (which stops its etcd) and wait for it.
    pub fn stop(&mut self, host: usize) {
        if let Some(mut child) = self.runners.remove(&host) {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    pub fn stop_all(&mut self) {
        let hosts: Vec<usize> = self.runners.keys().copied().collect();
        for h in &hosts {
            if let Some(c) = self.runners.get(h) {
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            }
        }
        for h in hosts {
            self.stop(h);
        }
    }

    /// The PID of the etcd running for `host` (found by its ETCD_DATA_DIR).
    pub fn etcd_pid(&self, host: usize) -> Option<u32> {
        let want = format!(
            "ETCD_DATA_DIR={}",
            self.host_dir(host).join("data").display()
        );
        fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "etcd")
                    && fs::read(format!("/proc/{pid}/environ"))
                        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
            })
    }

    /// The environment (`KEY=value`) of the etcd running for `host`.
    pub fn etcd_environ(&self, host: usize) -> Vec<String> {
        let Some(pid) = self.etcd_pid(host) else {
            return Vec::new();
        };
        fs::read(format!("/proc/{pid}/environ"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The serial number (hex) of the certificate served at `ip:port`, seen from `host`.
    pub fn served_serial(&self, host: usize, ip: &str, port: u16) -> Option<String> {
        let pem = self.served_cert(host, ip, port)?;
        let mut child = Command::new("openssl")
            .args(["x509", "-noout", "-serial"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        use std::io::Write;
        child.stdin.take()?.write_all(pem.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("serial=")
            .map(str::to_string)
    }

    /// The PEM certificate served at `ip:port`, seen from `host` (with its client certificate).
    pub fn served_cert(&self, host: usize, ip: &str, port: u16) -> Option<String> {
        let pki = self.host_dir(host).join("pki");
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns(host),
                "timeout",
                "5",
                "openssl",
                "s_client",
            ])
            .arg("-connect")
            .arg(format!("{ip}:{port}"))
            .arg("-cert")
            .arg(pki.join("client.crt"))
            .arg("-key")
            .arg(pki.join("client.key"))
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let begin = text.find("-----BEGIN CERTIFICATE-----")?;
        let end = text.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
        Some(format!("{}\n", &text[begin..end]))
    }

    /// Is the bootstrapper of `host` still running?
    pub fn running(&mut self, host: usize) -> bool {
        self.runners
            .get_mut(&host)
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Wait for the bootstrapper of `host` to exit; its exit code (None: killed by a signal).
    pub fn wait_exit(&mut self, host: usize, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        let child = self.runners.get_mut(&host).expect("no runner");
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.runners.remove(&host);
                return st.code();
            }
            if start.elapsed() > timeout {
                panic!("bootstrapper of host {host} still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `lab.sh SUB --name <this lab> ARGS...`, which must succeed.
    fn lab_cmd(&self, sub: &str, args: &[&str]) {
        let out = Command::new(lab_sh())
            .args([sub, "--name", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lab.sh {sub} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Add or remove a host's DNS records.
    pub fn dns(&self, flag: &str, host: usize) {
        self.lab_cmd("dns", &[flag, &host.to_string()]);
    }

    /// Stop or start the lab's DNS server.
    pub fn dns_server(&self, up: bool) {
        self.lab_cmd("dns", &[if up { "--start" } else { "--stop" }]);
    }

    /// Pull (`"down"`) or plug back (`"up"`) a host's cable.
    pub fn link(&self, host: usize, state: &str) {
        self.lab_cmd("link", &["--host", &host.to_string(), state]);
    }

    /// Wait until member list (asked through `via`) shows exactly `hosts` as started voters and
    /// nothing else, and they are all healthy. The time it took.
    pub fn wait_voters(&self, via: usize, hosts: &[usize], timeout: Duration) -> Duration {
        let start = Instant::now();
        let want: Vec<String> = hosts
            .iter()
            .map(|h| format!("https://{}:2380", self.ip(*h)))
            .collect();
        let eps: Vec<String> = hosts
            .iter()
            .map(|h| format!("https://{}:2379", self.ip(*h)))
            .collect();
        let mut last = String::new();
        loop {
            if let Ok(v) = self.member_list(via) {
                let members = v["members"].as_array().cloned().unwrap_or_default();
                let urls = started_voter_urls(&members);
                last = format!("{members:?}");
                if urls == want && members.len() == hosts.len() {
                    let h = self.etcdctl(via, &eps.join(","), &["endpoint", "health"]);
                    if h.status.success() {
                        return start.elapsed();
                    }
                }
            }
            if start.elapsed() > timeout {
                self.dump_logs();
                panic!("members never became exactly {want:?} within {timeout:?}; last: {last}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self, host: usize) -> String {
        fs::read_to_string(self.host_dir(host).join("bootstrap.log")).unwrap_or_default()
    }

    pub fn endpoints(&self) -> String {
        (1..=self.hosts)
            .map(|h| format!("https://{}:2379", self.ip(h)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// etcdctl inside `host` with that host's generated client certificate.
    pub fn etcdctl(&self, host: usize, endpoints: &str, args: &[&str]) -> Output {
        let pki = self.host_dir(host).join("pki");
        self.etcdctl_with(
            host,
            endpoints,
            &pki.join("ca.crt"),
            &pki.join("client.crt"),
            &pki.join("client.key"),
            args,
        )
    }

    pub fn etcdctl_with(
        &self,
        host: usize,
        endpoints: &str,
        ca: &Path,
        cert: &Path,
        key: &Path,
        args: &[&str],
    ) -> Output {
        let mut full: Vec<String> = vec![
            format!("--endpoints={endpoints}"),
            format!("--cacert={}", ca.display()),
            format!("--cert={}", cert.display()),
            format!("--key={}", key.display()),
            "--dial-timeout=3s".into(),
            "--command-timeout=5s".into(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns(host), "env", "ETCDCTL_API=3"])
            .arg(self.version.dir().join("etcdctl"))
            .args(&refs)
            .output()
            .expect("etcdctl");
        out
    }

    /// Wait until `endpoint health` passes on all hosts' endpoints; the time it took.
    pub fn wait_healthy(&self, hosts: usize, timeout: Duration) -> Duration {
        let start = Instant::now();
        let eps: Vec<String> = (1..=hosts)
            .map(|h| format!("https://{}:2379", self.ip(h)))
            .collect();
        let eps = eps.join(",");
        loop {
            if self.host_dir(1).join("pki/client.key").exists() {
                let out = self.etcdctl(1, &eps, &["endpoint", "health"]);
                if out.status.success() {
                    return start.elapsed();
                }
            }
            if start.elapsed() > timeout {
                self.dump_logs();
                panic!("cluster not healthy within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The cluster version as host `h`'s etcd reports it on its metrics listener
    /// (`etcd_cluster_version{cluster_version="3.5"} 1`).
    pub fn cluster_version(&self, h: usize) -> Option<String> {
        let script = "import urllib.request\nprint(urllib.request.urlopen('http://127.0.0.1:2381/metrics',timeout=5).read().decode())";
        let out = self.exec(h, &S3::python(), &["-c", script]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .find(|l| l.starts_with("etcd_cluster_version{") && l.trim_end().ends_with(" 1"))
            .and_then(|l| l.split('"').nth(1).map(str::to_string))
    }

    /// The last 40 lines of each host's log (every line with `LAB_DUMP=1`).
    pub fn dump_logs(&self) {
        let all = std::env::var("LAB_DUMP").is_ok_and(|v| v == "1");
        for h in 1..=self.hosts {
            let log = self.log(h);
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(if all { usize::MAX } else { 40 })
                .collect();
            eprintln!("---- host {h} bootstrap.log (last 40 lines) ----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }

    /// `etcdctl member list -w json` asked of `host` itself, parsed (header and members).
    pub fn member_list(&self, host: usize) -> Result<serde_json::Value, String> {
        let out = self.etcdctl(
            host,
            &format!("https://{}:2379", self.ip(host)),
            &["member", "list", "-w", "json"],
        );
        if !out.status.success() {
            return Err(format!(
                "host {host}: member list: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("host {host}: member list: {e}"))
    }

    /// The cluster's current revision, as etcdctl reports it through `host`.
    pub fn revision(&self, host: usize) -> i64 {
        let out = self.etcdctl(
            host,
            &self.client_url(host),
            &["endpoint", "status", "-w", "json"],
        );
        assert!(
            out.status.success(),
            "endpoint status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["Status"]["header"]["revision"].as_i64().unwrap()
    }

    /// The members in `host`'s member list.
    pub fn members(&self, host: usize) -> Vec<serde_json::Value> {
        let v = self.member_list(host).unwrap_or_else(|e| panic!("{e}"));
        v["members"].as_array().cloned().unwrap_or_default()
    }
}

/// The peer URLs of the started voters of a member list (no learner, no added-but-unstarted
/// member: those have no name yet), sorted.
pub fn started_voter_urls(members: &[serde_json::Value]) -> Vec<String> {
    let mut urls: Vec<String> = members
        .iter()
        .filter(|m| {
            m["isLearner"].as_bool() != Some(true) && !m["name"].as_str().unwrap_or("").is_empty()
        })
        .flat_map(|m| m["peerURLs"].as_array().cloned().unwrap_or_default())
        .map(|u| u.as_str().unwrap_or("").to_string())
        .collect();
    urls.sort();
    urls
}

/// A real cfssl signer (scripts/cfssl-signer.sh) in the bridge namespace of a lab.
pub struct Signer {
    pub dir: PathBuf,
    pub url: String,
}

impl Signer {
    pub fn up(lab: &Lab) -> Signer {
        let dir = lab.dir.path().join("signer");
        let out = Command::new(repo().join("scripts/cfssl-signer.sh"))
            .args(["up", "--name", &lab.name, "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cfssl-signer.sh up: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Signer {
            dir,
            url: format!("https://{}.1:8888", lab.subnet),
        }
    }

    /// The body of [tls] for this signer, with an auth key file and a signer URL.
    pub fn tls(&self, key_file: &Path, url: &str) -> String {
        format!(
            "mode = \"cfssl\"\ncfssl_url = \"{url}\"\ncfssl_auth_key_file = \"{}\"\ncfssl_profile = \"etcd\"\nsigner_ca = \"{}\"",
            key_file.display(),
            self.dir.join("ca.pem").display()
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for (_, c) in self.runners.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(lab_sh())
            .args(["down", "--name", &self.name, "--grace", "1"])
            .output();
    }
}

/// A real S3 server (SeaweedFS `weed mini`, from the lab's Python venv) in the bridge namespace
/// of a lab, over HTTPS with a certificate of the lab's CA. Stopped (SIGINT, as it needs) on drop.
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    pub ca: PathBuf,
    dir: PathBuf,
    ns: String,
    ip: String,
    child: Option<Child>,
    /// Held for the server's lifetime: one S3 server on the machine at a time (see `one_at_a_time`).
    _turn: fs::File,
}

pub const S3_PORT: u16 = 8333;

/// weed mini keeps state outside its data directory that two servers running at the same time
/// share: with the lab tests in lanes, one server's writes went to the other's volume server
/// ("network is unreachable", "volume 1 not found": 500 on every put). Labs that need S3 take
/// turns, across test processes (an flock), bounded.
fn one_at_a_time() -> fs::File {
    use std::os::unix::io::AsRawFd;
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/etcd-bootstrap-lab-s3.lock")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1800);
    // SAFETY: flock on a descriptor this function owns.
    while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        assert!(
            Instant::now() < deadline,
            "another lab test held the S3 server for 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    f
}

impl S3 {
    pub fn up(lab: &Lab) -> S3 {
        let turn = one_at_a_time();
        let dir = lab.dir.path().join("s3");
        fs::create_dir_all(dir.join("data")).unwrap();
        let ip = format!("{}.1", lab.subnet);
        let ca_dir = lab.dir.path().join("ca");
        let (crt, key) = (dir.join("s3.crt"), dir.join("s3.key"));
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let csr = dir.join("s3.csr");
        run(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
            "-subj",
            "/CN=lab-s3",
            "-addext",
            &format!("subjectAltName=IP:{ip}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            ca_dir.join("ca.crt").to_str().unwrap(),
            "-CAkey",
            ca_dir.join("ca.key").to_str().unwrap(),
            "-CAcreateserial",
            "-days",
            "2",
            "-copy_extensions",
            "copy",
            "-out",
            crt.to_str().unwrap(),
        ]);
        let mut s3 = S3 {
            endpoint: format!("https://{ip}:{S3_PORT}"),
            bucket: "etcd-backups".into(),
            key_id: "labaccesskey".into(),
            secret: "labsecretkey0123456789".into(),
            ca: ca_dir.join("ca.crt"),
            dir,
            ns: format!("{}-br", lab.name),
            ip,
            child: None,
            _turn: turn,
        };
        s3.start();
        s3
    }

    fn weed() -> PathBuf {
        cache_dir("PY_DIR").join("bin/weed")
    }

    pub fn python() -> PathBuf {
        cache_dir("PY_DIR").join("bin/python")
    }

    /// Start (again, on the same data directory) and wait until it answers over TLS.
    pub fn start(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("weed.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "env"])
            .arg(format!("AWS_ACCESS_KEY_ID={}", self.key_id))
            .arg(format!("AWS_SECRET_ACCESS_KEY={}", self.secret))
            .arg(Self::weed())
            .arg("mini")
            .arg(format!("-dir={}", self.dir.join("data").display()))
            .arg(format!("-ip={}", self.ip))
            .arg(format!("-ip.bind={}", self.ip))
            .arg(format!("-s3.port={S3_PORT}"))
            .arg(format!(
                "-s3.cert.file={}",
                self.dir.join("s3.crt").display()
            ))
            .arg(format!(
                "-s3.key.file={}",
                self.dir.join("s3.key").display()
            ))
            .arg(format!("-bucket={}", self.bucket))
            // Its own local sockets: by default they are /tmp/seaweedfs-{filer,s3}-<port>.sock,
            // one path for every lab on the machine (the file system is not per namespace), so a
            // second S3 server running at the same time talked to the first one's filer and wrote
            // to a volume server it cannot reach (500 on every put).
            .arg(format!(
                "-filer.localSocket={}",
                self.dir.join("filer.sock").display()
            ))
            .arg(format!(
                "-s3.localSocket={}",
                self.dir.join("s3.sock").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting weed mini");
        self.child = Some(child);
        // Ready is a write that works, not only a listing: weed mini answers listings before its
        // volume server has registered, and a write in that window fails with 500 (seen under
        // load as a `snapshot save` that gave up after its retries).
        let probe = self.dir.join("ready-probe");
        fs::write(&probe, b"ready").unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .boto(&["put", ".lab-ready-probe", probe.to_str().unwrap()])
                .status
                .success()
                && self.boto(&["delete", ".lab-ready-probe"]).status.success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the S3 server did not answer within 60 s: {}",
                fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// SIGINT (SIGTERM is not enough for weed mini), then wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs, so the child is weed itself.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// `[backup]` for this server (credentials file written 0600 into `dir`).
    pub fn backup_section(&self, dir: &Path, prefix: &str, extra: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let creds = dir.join("s3-credentials");
        fs::write(
            &creds,
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                self.key_id, self.secret
            ),
        )
        .unwrap();
        fs::set_permissions(&creds, fs::Permissions::from_mode(0o600)).unwrap();
        format!(
            "[backup]\nurl = \"s3://{}/{prefix}\"\ns3_endpoint = \"{}\"\ns3_credentials_file = \"{}\"\nca_file = \"{}\"\n{extra}\n",
            self.bucket,
            self.endpoint,
            creds.display(),
            self.ca.display()
        )
    }

    /// An independent S3 client (boto3): `list [PREFIX]` prints "KEY SIZE" lines, `get KEY FILE`,
    /// `put KEY FILE`, `delete KEY`. Runs in the bridge namespace.
    pub fn boto(&self, args: &[&str]) -> Output {
        const SCRIPT: &str = r#"
import sys, boto3
from botocore.config import Config
endpoint, ca, key_id, secret, bucket, op = sys.argv[1:7]
rest = sys.argv[7:]
s3 = boto3.client("s3", endpoint_url=endpoint, verify=ca, aws_access_key_id=key_id,
                  aws_secret_access_key=secret, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                connect_timeout=3, read_timeout=10))
if op == "list":
    p = s3.get_paginator("list_objects_v2")
    for page in p.paginate(Bucket=bucket, Prefix=rest[0] if rest else ""):
        for o in page.get("Contents", []):
            print(o["Key"], o["Size"])
elif op == "get":
    s3.download_file(bucket, rest[0], rest[1])
elif op == "put":
    s3.upload_file(rest[1], bucket, rest[0])
elif op == "delete":
    s3.delete_object(Bucket=bucket, Key=rest[0])
"#;
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(Self::python())
            .args(["-c", SCRIPT, &self.endpoint])
            .arg(&self.ca)
            .args([&self.key_id, &self.secret, &self.bucket])
            .args(args)
            .output()
            .expect("python3 boto3")
    }

    /// Run a Python `script` in the bridge namespace with the lab's venv (boto3), as
    /// `script ENDPOINT CA KEY_ID SECRET BUCKET ARGS...`: a client with the bucket's credentials
    /// and nothing else (no CA key, no node key, no age identity), as an attacker would be.
    pub fn python_with_bucket(&self, script: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(Self::python())
            .args(["-c", script, &self.endpoint])
            .arg(&self.ca)
            .args([&self.key_id, &self.secret, &self.bucket])
            .args(args)
            .output()
            .expect("python3 boto3")
    }

    /// Object keys and sizes under `prefix`.
    pub fn list(&self, prefix: &str) -> Vec<(String, u64)> {
        let out = self.boto(&["list", prefix]);
        assert!(
            out.status.success(),
            "boto3 list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, s) = l.rsplit_once(' ')?;
                Some((k.to_string(), s.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `[backup]` on hosts 1-3 of `lab`: `s3` under `prefix`, one snapshot an hour, encrypted to a
/// new age key (its identity file in the returned directory, named in the config).
pub fn with_encrypted_backup(lab: &Lab, s3: &S3, prefix: &str) -> tempfile::TempDir {
    let keys_dir = tempfile::tempdir().unwrap();
    let (identity, public) = age_key(keys_dir.path());
    for h in 1..=3 {
        let section = s3.backup_section(
            &lab.host_dir(h),
            prefix,
            &format!(
                "interval = \"1h\"\nage_recipients = [\"{public}\"]\nage_identity_file = \"{}\"",
                identity.display()
            ),
        );
        let cfg = lab.config_path(h);
        let text = fs::read_to_string(&cfg).unwrap();
        fs::write(&cfg, format!("{text}\n{section}")).unwrap();
    }
    keys_dir
}

/// `age-keygen`: (identity file 0600, public key).
pub fn age_key(dir: &Path) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let id = dir.join("age-identity.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&id)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(&id).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (id, public)
}
