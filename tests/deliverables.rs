//! The files users boot VMs with: `dist/etcd-bootstrap.service` (the agent's unit),
//! `cloudinit/*.yaml` (cloud-config user-data, Terraform templates) and `ignition/*.bu` with the
//! Ignition JSON made from each. Checked with the real tools: `cloud-init schema`,
//! `ignition-validate`, the real Ignition binary applying each config into a temporary root,
//! `systemd-analyze verify`, and `etcd-bootstrap check-config` for every embedded config.
//! A missing tool fails the test with a message pointing at scripts/install-deps.sh.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_etcd-bootstrap");
const UNIT_SOURCE: &str = "dist/etcd-bootstrap.service";
const UNIT_PATH: &str = "/etc/systemd/system/etcd-bootstrap.service";
const UNIT_NAME: &str = "etcd-bootstrap.service";
const CONFIG_PATH: &str = "/etc/etcd-bootstrap/config.toml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The files in `dir` (relative to the repository) whose names end with `ext`, sorted.
fn files(dir: &str, ext: &str) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(ext))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    out.sort();
    out
}

fn cloud_init_files() -> Vec<String> {
    let f = files("cloudinit", ".yaml");
    assert!(!f.is_empty(), "no cloudinit/*.yaml");
    f
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a tool; a missing tool is a failure that says how to install it.
fn tool(cmd: &mut Command, what: &str) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {what} ({e}): run scripts/install-deps.sh (as root) to install it")
    })
}

// ---------------------------------------------------------------------------------------------
// Terraform templatefile, the small subset the templates use
// ---------------------------------------------------------------------------------------------

/// Renders `${name}` (a plain variable) and the `$${` escape. Anything else Terraform would
/// interpret (`%{` directives, expressions) is refused, so that this renderer stays an honest
/// stand-in for `templatefile` over these files.
fn render(template: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['$', '%']) {
        out.push_str(&rest[..i]);
        let r = &rest[i..];
        if r.starts_with("$${") || r.starts_with("%%{") {
            out.push_str(&r[1..3]);
            rest = &r[3..];
        } else if let Some(body) = r.strip_prefix("${") {
            let end = body.find('}').expect("unterminated ${");
            let name = &body[..end];
            let v = vars
                .get(name)
                .unwrap_or_else(|| panic!("template variable ${{{name}}} has no sample value"));
            out.push_str(v);
            rest = &body[end + 1..];
        } else if r.starts_with("%{") {
            panic!("template directives (%{{...}}) are not used by these files");
        } else {
            out.push_str(&r[..1]);
            rest = &r[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The variable names a template uses.
fn template_vars(template: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            rest = &rest[i + 2..];
            continue;
        }
        let body = &rest[i + 2..];
        let end = body.find('}').unwrap();
        names.insert(body[..end].to_string());
        rest = &body[end..];
    }
    names
}

/// The leading comment block of a file (its documentation).
fn header(template: &str) -> String {
    template
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sample values for every template variable; `dir` holds a CA made by `ca init`.
struct Samples {
    dir: tempfile::TempDir,
    vars: BTreeMap<&'static str, String>,
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

impl Samples {
    fn new() -> Samples {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let out = Command::new(BIN)
            .args(["ca", "init", "--out", ca.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "ca init: {}", text(&out.stderr));
        let cert = fs::read(ca.join("ca.crt")).unwrap();
        let key = fs::read(ca.join("ca.key")).unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("cluster_name", "prod".to_string());
        vars.insert("cluster_size", "3".to_string());
        vars.insert("srv_domain", "etcd.example.com".to_string());
        vars.insert("nameservers", "'10.0.0.2','10.0.0.3:53'".to_string());
        vars.insert(
            "peers",
            "'etcd1=https://10.0.0.11:2380','etcd2=https://10.0.0.12:2380','etcd3=https://10.0.0.13:2380'"
                .to_string(),
        );
        vars.insert("ca_cert_b64", b64(&cert));
        vars.insert("ca_key_b64", b64(&key));
        // cfssl: the signer's CA (any CA certificate will do for the config check) and a key.
        vars.insert("signer_ca_b64", b64(&cert));
        vars.insert(
            "cfssl_auth_key_b64",
            b64(b"0123456789abcdef0123456789abcdef"),
        );
        vars.insert("cfssl_url", "https://10.0.0.2:8888".to_string());
        vars.insert("cfssl_profile", "etcd".to_string());
        vars.insert("binary_url", String::new());
        vars.insert("binary_sha256", String::new());
        Samples { dir, vars }
    }
}

// ---------------------------------------------------------------------------------------------
// cloud-config
// ---------------------------------------------------------------------------------------------

fn yaml(src: &str, what: &str) -> Value {
    serde_norway::from_str(src).unwrap_or_else(|e| panic!("{what}: not YAML: {e}"))
}

/// `write_files` of a cloud-config: (path, permissions, decoded content).
fn write_files(cfg: &Value, what: &str) -> Vec<(String, String, Vec<u8>)> {
    cfg["write_files"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no write_files"))
        .iter()
        .map(|f| {
            let path = f["path"].as_str().unwrap().to_string();
            let mode = f["permissions"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: {path}: permissions must be a quoted string"))
                .to_string();
            let content = f["content"].as_str().unwrap_or("");
            let data = match f["encoding"].as_str() {
                None => content.as_bytes().to_vec(),
                Some("b64") => {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(content.trim())
                        .unwrap_or_else(|e| panic!("{what}: {path}: bad base64: {e}"))
                }
                Some(other) => panic!("{what}: {path}: encoding {other} not expected"),
            };
            (path, mode, data)
        })
        .collect()
}

/// Every template documents each of its variables in its leading comment block
/// (`#   name  meaning`), and uses every variable it documents there.
#[test]
fn template_variables_are_documented() {
    for f in all_templates() {
        let src = read(&f);
        let head = header(&src);
        let used = template_vars(&src);
        assert!(!used.is_empty(), "{f}: no template variables?");
        for v in &used {
            assert!(
                head.contains(&format!("#   {v} ")),
                "{f}: variable {v} is not documented in the header comment"
            );
        }
    }
}

/// The unit's source of truth, and every copy embedded in the user-data and Butane files,
/// byte for byte.
#[test]
fn embedded_units_are_identical_to_the_source_of_truth() {
    let unit = read(UNIT_SOURCE);
    let s = Samples::new();
    for f in cloud_init_files() {
        let cfg = yaml(&render(&read(&f), &s.vars), &f);
        let copies: Vec<_> = write_files(&cfg, &f)
            .into_iter()
            .filter(|(p, _, _)| p == UNIT_PATH)
            .collect();
        assert_eq!(
            copies.len(),
            1,
            "{f}: one write_files entry for {UNIT_PATH}"
        );
        let (_, mode, data) = &copies[0];
        assert_eq!(mode, "0644", "{f}: {UNIT_PATH} mode");
        assert!(
            text(data) == unit,
            "{f}: the embedded {UNIT_NAME} differs from {UNIT_SOURCE}; copy it again"
        );
    }
}

/// cloud-init's own schema check accepts every user-data file, rendered with sample values.
#[test]
fn cloud_init_schema_accepts_every_user_data_file() {
    let s = Samples::new();
    for f in cloud_init_files() {
        let src = read(&f);
        assert!(
            src.starts_with("#cloud-config\n"),
            "{f}: first line must be #cloud-config"
        );
        let rendered = s.dir.path().join("user-data");
        fs::write(&rendered, render(&src, &s.vars)).unwrap();
        let out = tool(
            Command::new("cloud-init")
                .args(["schema", "--config-file"])
                .arg(&rendered),
            "cloud-init",
        );
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{f}: cloud-init schema: {all}");
        assert!(all.contains("Valid cloud-config"), "{f}: {all}");
        assert!(
            !all.to_lowercase().contains("deprecat"),
            "{f}: deprecations: {all}"
        );
    }
}

/// The keys: 0600; everything else written by the user-data is 0644.
#[test]
fn user_data_key_material_is_0600() {
    let s = Samples::new();
    for f in cloud_init_files() {
        let cfg = yaml(&render(&read(&f), &s.vars), &f);
        for (path, mode, _) in write_files(&cfg, &f) {
            let secret = path.ends_with(".key");
            let want = if secret { "0600" } else { "0644" };
            assert_eq!(mode, want, "{f}: {path}");
        }
    }
}

/// Installs `files` under `root` and runs `check-config` on the config among them, with its
/// absolute /etc/etcd-bootstrap paths pointed into `root`.
fn check_config(root: &Path, files: &[(String, Vec<u8>)], what: &str) {
    let mut config = None;
    for (path, data) in files {
        let dest = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(&dest, data).unwrap();
        if path == CONFIG_PATH {
            config = Some(text(data));
        }
    }
    let config = config.unwrap_or_else(|| panic!("{what}: no {CONFIG_PATH}"));
    let moved = config.replace(
        "\"/etc/etcd-bootstrap/",
        &format!("\"{}/etc/etcd-bootstrap/", root.display()),
    );
    let cfg_file = root.join(CONFIG_PATH.trim_start_matches('/'));
    fs::write(&cfg_file, &moved).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg_file)
        .env_remove("ETCD_BOOTSTRAP_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: check-config exit {:?}: {}\n--- config ---\n{moved}",
        out.status.code(),
        text(&out.stderr)
    );
}

/// The config.toml each user-data file writes passes `etcd-bootstrap check-config` (with the
/// key material it writes beside it).
#[test]
fn user_data_configs_pass_check_config() {
    let s = Samples::new();
    for f in cloud_init_files() {
        let cfg = yaml(&render(&read(&f), &s.vars), &f);
        let root = tempfile::tempdir().unwrap();
        let files: Vec<_> = write_files(&cfg, &f)
            .into_iter()
            .map(|(p, _, d)| (p, d))
            .collect();
        check_config(root.path(), &files, &f);
    }
}

/// The user-data installs the binary only after checking its SHA-256, enables the unit and
/// starts it without blocking (Type=notify: READY needs the other members too).
#[test]
fn user_data_installs_verified_binary_and_starts_without_blocking() {
    for f in cloud_init_files() {
        let src = read(&f);
        assert!(src.contains("sha256sum -c"), "{f}: no checksum check");
        assert!(
            src.contains("systemctl enable etcd-bootstrap.service"),
            "{f}: unit not enabled"
        );
        assert!(
            src.contains("systemctl start --no-block etcd-bootstrap.service"),
            "{f}: unit not started with --no-block"
        );
        assert!(
            src.contains("systemctl disable --now etcd.service"),
            "{f}: the distribution's etcd is not stopped"
        );
        assert!(
            !src.contains("systemctl mask"),
            "{f}: masking etcd.service would mask etcd-bootstrap's own etcd unit too"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The agent's unit
// ---------------------------------------------------------------------------------------------

/// `systemd-analyze verify` passes without a warning about the unit. ExecStart must name an
/// existing executable, so a copy pointing at the built binary is verified; it differs from
/// the source in that one line only.
#[test]
fn agent_unit_passes_systemd_analyze_verify() {
    let unit = read(UNIT_SOURCE);
    let exec = "ExecStart=/usr/local/bin/etcd-bootstrap run";
    assert_eq!(unit.matches(exec).count(), 1, "{UNIT_SOURCE}: {exec}");
    for (key, want) in [
        ("Type", "notify"),
        ("After", "network-online.target"),
        ("Wants", "network-online.target"),
        ("Restart", "always"),
        ("TimeoutStartSec", "infinity"),
        ("WatchdogSec", "2min"),
    ] {
        assert!(
            unit.lines().any(|l| l == format!("{key}={want}")),
            "{UNIT_SOURCE}: {key}={want}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(UNIT_NAME);
    fs::write(&copy, unit.replace(exec, &format!("ExecStart={BIN} run"))).unwrap();
    let out = tool(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy),
        "systemd-analyze",
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    for l in err.lines() {
        assert!(
            !l.contains(UNIT_NAME) && !l.contains("Unknown") && !l.contains("ignoring"),
            "systemd-analyze verify warns about the unit: {err}"
        );
    }
}

fn all_templates() -> Vec<String> {
    cloud_init_files()
}
