//! The binary's command-line contract, driven as a user drives it: exit codes, one-line errors
//! naming the key and its source, nothing written on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_etcd-bootstrap");

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("ETCD_BOOTSTRAP_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let out = run(
            &[
                "ca",
                "init",
                "--out",
                dir.path().join("ca").to_str().unwrap(),
            ],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Setup { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A valid config with `extra` appended (later keys in a drop-in override it).
    fn config(&self, extra: &str) -> PathBuf {
        let d = self.dir.path().display();
        let text = format!(
            r#"[cluster]
name = "t"
[member]
data_dir = "{d}/data"
[discovery]
peers = ["a=https://10.9.9.1:2380"]
timeout = "2s"
[tls]
dir = "{d}/pki"
ca_cert = "{d}/ca/ca.crt"
ca_key = "{d}/ca/ca.key"
[etcd]
binary = "{d}/no-etcd-here"
service_manager = "process"
env_file = "{d}/etcd.env"
unit_path = "{d}/etcd.service"
"#
        );
        let p = self.path("config.toml");
        std::fs::write(&p, text).unwrap();
        if !extra.is_empty() {
            std::fs::create_dir_all(self.path("config.d")).unwrap();
            std::fs::write(self.path("config.d/50-test.toml"), extra).unwrap();
        }
        p
    }

    /// Nothing but the inputs in the directory.
    fn assert_nothing_written(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.retain(|n| n != "config.d");
        assert_eq!(
            names,
            vec!["ca", "config.toml"],
            "files were written on bad input"
        );
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_config_prints_the_effective_config() {
    let s = Setup::new();
    let cfg = s.config("[member]\nclient_port = 12379\n");
    let out = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("ETCD_BOOTSTRAP_HEAL_INTERVAL", "30s")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("client_port = 12379"),
        "drop-in not applied: {text}"
    );
    assert!(
        text.contains("interval = \"30s\""),
        "env override not applied: {text}"
    );
    assert!(
        text.contains("peers = [\"a=https://10.9.9.1:2380\"]"),
        "{text}"
    );
    assert!(text.contains("50-test.toml"), "drop-in not listed: {text}");
}

/// Each bad input: exit 2, one line on stderr naming the key and where it came from.
#[test]
fn bad_input_exits_2_with_one_line_naming_the_key() {
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&str, Env, &str, &str)] = &[
        (
            "[cluster]\nname = \"\"\n",
            &[],
            "cluster.name",
            "50-test.toml",
        ),
        (
            "[member]\nclient_port = \"2379\"\n",
            &[],
            "member.client_port",
            "50-test.toml",
        ),
        ("[member]\nbogus = 1\n", &[], "member.bogus", "50-test.toml"),
        (
            "[discovery]\npeers = [\"a=https://10.9.9.1:2380/\"]\n",
            &[],
            "discovery.peers",
            "50-test.toml",
        ),
        (
            "[discovery]\ntimeout = \"forever\"\n",
            &[],
            "discovery.timeout",
            "50-test.toml",
        ),
        (
            "[tls]\nca_key = \"/nonexistent/ca.key\"\n",
            &[],
            "tls.ca_key",
            "50-test.toml",
        ),
        ("[member]\nname = \n", &[], "(syntax)", "50-test.toml:2"),
        (
            "",
            &[("ETCD_BOOTSTRAP_MEMBER_PEER_PORT", "70000")],
            "member.peer_port",
            "ETCD_BOOTSTRAP_MEMBER_PEER_PORT",
        ),
        (
            "",
            &[("ETCD_BOOTSTRAP_TLS_MODEE", "x")],
            "ETCD_BOOTSTRAP_TLS_MODEE",
            "environment",
        ),
    ];
    for (extra, env, key, source) in cases {
        let s = Setup::new();
        let cfg = s.config(extra);
        for cmd in ["check-config", "run", "plan"] {
            let out = run(&[cmd, "--config", cfg.to_str().unwrap()], env);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{cmd} {key}: {err}");
            assert_eq!(
                err.trim().lines().count(),
                1,
                "{cmd} {key}: not one line: {err}"
            );
            assert!(
                err.contains(&format!("`{key}`")),
                "{cmd}: {err} does not name {key}"
            );
            assert!(err.contains(source), "{cmd}: {err} does not name {source}");
            s.assert_nothing_written();
        }
    }
}

#[test]
fn run_refuses_a_missing_etcd_binary_and_once_without_systemd() {
    let s = Setup::new();
    let cfg = s.config("");
    let out = run(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`etcd.binary`"), "{}", stderr(&out));
    let out = run(&["run", "--once", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`--once`"), "{}", stderr(&out));
    s.assert_nothing_written();
}

#[test]
fn unknown_flags_and_missing_config_are_usage_errors() {
    assert_eq!(run(&["run", "--bogus"], &[]).status.code(), Some(2));
    let out = run(
        &["check-config", "--config", "/nonexistent/config.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/config.toml"));
    assert_eq!(run(&["--help"], &[]).status.code(), Some(0));
}

#[test]
fn ca_init_makes_a_private_key_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    let key = s.path("ca/ca.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&key).unwrap();
    let out = run(
        &["ca", "init", "--out", s.path("ca").to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&key).unwrap(), before, "CA key overwritten");
}

/// The rendered etcd unit passes systemd's own checker.
#[test]
fn rendered_unit_passes_systemd_analyze_verify() {
    let s = Setup::new();
    // ExecStart must point at an executable file for `verify` to pass.
    let fake_etcd = s.path("etcd");
    std::fs::copy("/bin/true", &fake_etcd).unwrap();
    let cfg_path = s.config("");
    let text = std::fs::read_to_string(&cfg_path).unwrap().replace(
        &format!("{}/no-etcd-here", s.dir.path().display()),
        fake_etcd.to_str().unwrap(),
    );
    std::fs::write(&cfg_path, text).unwrap();
    let cfg = etcd_bootstrap::config::Config::load(Some(&cfg_path), &[]).unwrap();
    std::fs::write(&cfg.etcd.env_file, "ETCD_NAME=a\n").unwrap();
    let unit = s.path("etcd.service");
    std::fs::write(&unit, etcd_bootstrap::etcd::render::unit(&cfg)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (scripts/install-deps.sh installs systemd)");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        stderr(&out)
    );
    let warnings = stderr(&out);
    assert!(!warnings.contains("Unknown key"), "{warnings}");
    assert!(
        !warnings.contains(&unit_name(&unit)),
        "warnings about the unit: {warnings}"
    );
}

fn unit_name(p: &Path) -> String {
    format!("{}:", p.display())
}
