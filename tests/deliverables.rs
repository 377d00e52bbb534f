//! The files users boot VMs with: `dist/etcd-bootstrap.service` (the agent's unit),
//! `cloudinit/*.yaml` (cloud-config user-data, Terraform templates) and `ignition/*.bu` with the
//! Ignition JSON made from each. Checked with the real tools: `cloud-init schema`,
//! `ignition-validate`, the real Ignition binary applying each config into a temporary root,
//! `systemd-analyze verify`, and `etcd-bootstrap check-config` for every embedded config. The
//! Prometheus rules in `dist/prometheus/` with `promtool check rules` and `promtool test rules`.
//! A missing tool fails the test with a message pointing at scripts/install-deps.sh.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
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
        vars.insert("etcd_binary", "/usr/bin/etcd".to_string());
        vars.insert(
            "etcd_download_url",
            "https://releases.example.com/v3.5.30/etcd-v3.5.30-linux-amd64.tar.gz".to_string(),
        );
        vars.insert("etcd_sha256", "ab".repeat(32));
        vars.insert("service_manager", String::new());
        vars.insert("etcd_image", String::new());
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
/// (`#   name  meaning`).
#[test]
fn template_variables_are_documented() {
    for f in all_templates() {
        let src = read(&f);
        // JSON has no comments: an Ignition file's variables are documented in its Butane source,
        // and are the same ones.
        let doc = match f.strip_suffix(".ign") {
            Some(stem) => read(&format!("{stem}.bu")),
            None => src.clone(),
        };
        let head = header(&doc);
        let used = template_vars(&src);
        assert_eq!(
            used,
            template_vars(&doc),
            "{f}: variables differ from its Butane source"
        );
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
    for bu in butane_files() {
        for (f, doc) in [
            (bu.clone(), yaml(&render(&read(&bu), &s.vars), &bu)),
            (
                ign_of(&bu),
                serde_json::from_str(&read(&ign_of(&bu))).unwrap(),
            ),
        ] {
            let units = doc["systemd"]["units"].as_array().unwrap();
            let copies: Vec<_> = units.iter().filter(|u| u["name"] == UNIT_NAME).collect();
            assert_eq!(copies.len(), 1, "{f}: one unit {UNIT_NAME}");
            assert_eq!(copies[0]["enabled"], Value::Bool(true), "{f}: not enabled");
            assert!(
                copies[0]["contents"].as_str() == Some(unit.as_str()),
                "{f}: the embedded {UNIT_NAME} differs from {UNIT_SOURCE}; copy it again"
            );
        }
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

/// Installs `files` (path, octal mode as cloud-init writes it, content) under `root`, with their
/// modes: check-config refuses key material that others can read.
fn install(root: &Path, files: &[(String, String, Vec<u8>)]) {
    for (path, mode, data) in files {
        let dest = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::write(&dest, data).unwrap();
        let mode = u32::from_str_radix(mode, 8).unwrap_or_else(|e| panic!("{path}: {mode}: {e}"));
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Runs `check-config` on `root`/etc/etcd-bootstrap/config.toml, with its absolute
/// /etc/etcd-bootstrap paths pointed into `root`.
fn check_config(root: &Path, what: &str) {
    let cfg_file = root.join(CONFIG_PATH.trim_start_matches('/'));
    let config =
        fs::read_to_string(&cfg_file).unwrap_or_else(|e| panic!("{what}: {CONFIG_PATH}: {e}"));
    let moved = config.replace(
        "\"/etc/etcd-bootstrap/",
        &format!("\"{}/etc/etcd-bootstrap/", root.display()),
    );
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
        install(root.path(), &write_files(&cfg, &f));
        check_config(root.path(), &f);
    }
    // Each place etcd can run, through the template's variables.
    let f = "cloudinit/srv-local-ca.yaml".to_string();
    for manager in ["systemd", "container", "static-pod"] {
        let mut vars = s.vars.clone();
        vars.insert("service_manager", manager.to_string());
        vars.insert("etcd_image", "registry.k8s.io/etcd:3.5.15-0".to_string());
        vars.insert("etcd_download_url", String::new());
        vars.insert("etcd_sha256", String::new());
        let cfg = yaml(&render(&read(&f), &vars), &f);
        let root = tempfile::tempdir().unwrap();
        install(root.path(), &write_files(&cfg, &f));
        check_config(
            root.path(),
            &format!("{f} with service_manager = {manager}"),
        );
        let printed = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(root.path().join(CONFIG_PATH.trim_start_matches('/')))
            .output()
            .unwrap();
        assert!(
            text(&printed.stdout).contains(&format!("service_manager = \"{manager}\"")),
            "{manager}: {}",
            text(&printed.stdout)
        );
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

/// The agent's unit is sandboxed: `systemd-analyze security --offline` rates its exposure 4.9 at
/// most (it was 9.6 UNSAFE), and what the sandbox would break is left open on purpose.
#[test]
fn agent_unit_is_sandboxed() {
    let unit = read(UNIT_SOURCE);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(UNIT_NAME);
    fs::write(&copy, &unit).unwrap();
    let out = tool(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&copy),
        "systemd-analyze security",
    );
    let report = text(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("exposure level for ").nth(1))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}{}", text(&out.stderr)));
    assert!(
        exposure <= 4.9,
        "systemd-analyze security rates {UNIT_SOURCE} {exposure}: at most 4.9\n{report}"
    );
    // Every path the agent writes by default is writable in the sandbox.
    let writable: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("ReadWritePaths="))
        .flat_map(|l| l.split_whitespace())
        .collect();
    for default in [
        "/etc/systemd/system/etcd.service",
        "/etc/etcd/etcd.env",
        "/etc/etcd/pki/server.key",
        "/var/lib/etcd/member",
        "/var/lib/etcd.removed-20261207T000000Z",
        "/etc/kubernetes/manifests/etcd.yaml",
        "/etc/kubernetes/pki/apiserver-etcd-client.key",
        "/usr/local/bin/etcd",
    ] {
        assert!(
            writable.iter().any(|w| Path::new(default).starts_with(w)),
            "{UNIT_SOURCE}: {default} (a default path the agent writes) is read-only in the sandbox"
        );
    }
    // The agent must see every process (a static pod's etcd, before its data dir is touched).
    assert!(!unit.lines().any(|l| l.starts_with("ProtectProc=")));
}

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
        // The agent signs certificates at first boot: not before the clock is set.
        ("After", "network-online.target time-sync.target"),
        ("Wants", "network-online.target time-sync.target"),
        // Exit 3 and exit 1 are restarted, but not forever.
        ("StartLimitIntervalSec", "30min"),
        ("StartLimitBurst", "10"),
        ("Restart", "on-failure"),
        ("TimeoutStartSec", "infinity"),
        ("WatchdogSec", "2min"),
        // `systemctl reload etcd-bootstrap` re-reads the configuration (SIGHUP).
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        // Well above the endpoints' connection caps: at systemd's default of 1024 a connection
        // flood made the agent unable to read its own identity record (issue 24, finding 8).
        ("LimitNOFILE", "65536"),
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
    let mut all = cloud_init_files();
    all.extend(butane_files());
    all.extend(butane_files().iter().map(|b| ign_of(b)));
    all
}

// ---------------------------------------------------------------------------------------------
// Butane -> Ignition: the subset of Butane these files use, translated as Butane does it
// ---------------------------------------------------------------------------------------------

/// The Ignition JSON committed beside each Butane file. `UPDATE_IGNITION=1 cargo test --test
/// deliverables butane` rewrites them from the Butane sources.
fn butane_files() -> Vec<String> {
    let f = files("ignition", ".bu");
    assert!(!f.is_empty(), "no ignition/*.bu");
    f
}

fn ign_of(bu: &str) -> String {
    format!("{}.ign", bu.strip_suffix(".bu").unwrap())
}

/// Butane's YAML reader takes `0644` as octal (YAML 1.1); a YAML 1.2 reader gives the integer
/// 644. These files always write modes as 0NNN, so the digits are read as octal here.
fn octal_mode(v: &Value, what: &str) -> u64 {
    let digits = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => panic!("{what}: mode {other} is not a number"),
    };
    u64::from_str_radix(digits.trim_start_matches("0o"), 8)
        .unwrap_or_else(|_| panic!("{what}: mode {digits} is not octal"))
}

/// Butane's (vincent-petithory/dataurl's) escaping: unreserved characters as they are,
/// everything else %XX. One difference on purpose: template variables `${name}` are left as they
/// are, so that Terraform's templatefile() can fill them in the JSON too (the values the files
/// document need no escaping: names, addresses, URLs, hex, base64).
fn data_url(text: &str) -> String {
    fn escape(s: &str, out: &mut String) {
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let mut out = String::from("data:,");
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        escape(&rest[..i], &mut out);
        let end = i + rest[i..].find('}').unwrap();
        out.push_str(&rest[i..=end]);
        rest = &rest[end + 1..];
    }
    escape(rest, &mut out);
    out
}

fn only_keys(v: &Value, allowed: &[&str], what: &str) -> serde_json::Map<String, Value> {
    let m = v
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a mapping"))
        .clone();
    for k in m.keys() {
        assert!(
            allowed.contains(&k.as_str()),
            "{what}: key {k} is outside the Butane subset this translator knows ({allowed:?})"
        );
    }
    m
}

fn str_of<'a>(m: &'a serde_json::Map<String, Value>, k: &str, what: &str) -> &'a str {
    m.get(k)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: {k} must be a string"))
}

fn list<'a>(v: Option<&'a Value>, what: &str) -> Vec<&'a Value> {
    match v {
        None => vec![],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => panic!("{what}: not a list"),
    }
}

/// Translates a Butane file (variant fcos 1.4.0 or flatcar 1.0.0: Ignition spec 3.3.0).
fn butane_to_ignition(src: &str, what: &str) -> Value {
    use serde_json::{json, Map};
    let top = only_keys(
        &yaml(src, what),
        &["variant", "version", "storage", "systemd"],
        what,
    );
    let spec = match (str_of(&top, "variant", what), str_of(&top, "version", what)) {
        ("fcos", "1.4.0") | ("flatcar", "1.0.0") => "3.3.0",
        (v, n) => panic!("{what}: Butane variant {v} {n} not known to this translator"),
    };
    let mut ign = Map::new();
    ign.insert("ignition".into(), json!({ "version": spec }));
    if let Some(storage) = top.get("storage") {
        let storage = only_keys(storage, &["directories", "files"], what);
        let mut out = Map::new();
        let mut dirs = vec![];
        for d in list(storage.get("directories"), what) {
            let d = only_keys(d, &["path", "mode"], what);
            let mut o = Map::new();
            o.insert("path".into(), str_of(&d, "path", what).into());
            if let Some(m) = d.get("mode") {
                o.insert("mode".into(), octal_mode(m, what).into());
            }
            dirs.push(Value::Object(o));
        }
        if !dirs.is_empty() {
            out.insert("directories".into(), dirs.into());
        }
        let mut files = vec![];
        for f in list(storage.get("files"), what) {
            let f = only_keys(f, &["path", "mode", "overwrite", "contents"], what);
            let path = str_of(&f, "path", what);
            let what = &format!("{what}: {path}");
            let mut o = Map::new();
            o.insert("path".into(), path.into());
            if let Some(c) = f.get("contents") {
                let c = only_keys(c, &["inline", "source", "verification"], what);
                let mut co = Map::new();
                match (c.get("inline"), c.get("source")) {
                    (Some(Value::String(t)), None) => {
                        co.insert("source".into(), data_url(t).into());
                    }
                    (None, Some(Value::String(s))) => {
                        co.insert("source".into(), s.as_str().into());
                    }
                    _ => panic!("{what}: contents needs exactly one of inline, source"),
                }
                if let Some(v) = c.get("verification") {
                    let v = only_keys(v, &["hash"], what);
                    co.insert(
                        "verification".into(),
                        json!({ "hash": str_of(&v, "hash", what) }),
                    );
                }
                o.insert("contents".into(), Value::Object(co));
            }
            if let Some(m) = f.get("mode") {
                o.insert("mode".into(), octal_mode(m, what).into());
            }
            if let Some(w) = f.get("overwrite") {
                o.insert(
                    "overwrite".into(),
                    json!(w.as_bool().expect("overwrite: bool")),
                );
            }
            files.push(Value::Object(o));
        }
        if !files.is_empty() {
            out.insert("files".into(), files.into());
        }
        ign.insert("storage".into(), Value::Object(out));
    }
    if let Some(systemd) = top.get("systemd") {
        let systemd = only_keys(systemd, &["units"], what);
        let mut units = vec![];
        for u in list(systemd.get("units"), what) {
            let u = only_keys(u, &["name", "enabled", "contents", "dropins"], what);
            let mut o = Map::new();
            o.insert("name".into(), str_of(&u, "name", what).into());
            if let Some(c) = u.get("contents") {
                o.insert("contents".into(), c.as_str().expect("contents").into());
            }
            if let Some(e) = u.get("enabled") {
                o.insert("enabled".into(), json!(e.as_bool().expect("enabled: bool")));
            }
            let mut dropins = vec![];
            for d in list(u.get("dropins"), what) {
                let d = only_keys(d, &["name", "contents"], what);
                dropins.push(json!({
                    "name": str_of(&d, "name", what),
                    "contents": str_of(&d, "contents", what),
                }));
            }
            if !dropins.is_empty() {
                o.insert("dropins".into(), dropins.into());
            }
            units.push(Value::Object(o));
        }
        ign.insert("systemd".into(), json!({ "units": units }));
    }
    Value::Object(ign)
}

/// Each committed Ignition JSON is its Butane source translated.
#[test]
fn butane_and_ignition_json_are_in_sync() {
    for bu in butane_files() {
        let want = butane_to_ignition(&read(&bu), &bu);
        let ign = ign_of(&bu);
        if std::env::var_os("UPDATE_IGNITION").is_some() {
            let mut s = serde_json::to_string_pretty(&want).unwrap();
            s.push('\n');
            fs::write(repo().join(&ign), s).unwrap();
        }
        let got: Value =
            serde_json::from_str(&read(&ign)).unwrap_or_else(|e| panic!("{ign}: not JSON: {e}"));
        assert!(
            got == want,
            "{ign} is not the translation of {bu}: run UPDATE_IGNITION=1 cargo test --test deliverables butane"
        );
    }
    // No JSON without its Butane source.
    for ign in files("ignition", ".ign") {
        assert!(
            repo().join(ign.replace(".ign", ".bu")).exists(),
            "{ign} has no Butane source"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The real Ignition
// ---------------------------------------------------------------------------------------------

const IGNITION: &str = "/usr/lib/dracut/modules.d/30ignition/ignition";

/// A stand-in for the etcd-bootstrap binary, served over HTTP on 127.0.0.1 only.
const SERVED: &[u8] = b"#!/bin/sh\necho etcd-bootstrap stand-in\n";

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A one-file HTTP server on 127.0.0.1 (any other path: 404). Stops when dropped.
struct Server {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(path: &'static str, body: &'static [u8]) -> Server {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) if line == "\r\n" || line == "\n" => break,
                        Ok(_) => {}
                    }
                }
                let want = format!("GET {path} ");
                let _ = if request.starts_with(&want) {
                    conn.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| conn.write_all(body))
                } else {
                    conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                };
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The files an Ignition config writes, as (path, mode, contents) from the *Butane* source
/// rendered with the same values: the real Ignition's result on the JSON must match them.
fn expected_files(bu: &str, vars: &BTreeMap<&str, String>) -> Vec<(String, u32, Vec<u8>)> {
    use base64::Engine;
    let b = yaml(&render(&read(bu), vars), bu);
    let mut out = vec![];
    for f in b["storage"]["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap().to_string();
        let mode = octal_mode(&f["mode"], bu) as u32;
        let c = &f["contents"];
        let data = if let Some(t) = c["inline"].as_str() {
            t.as_bytes().to_vec()
        } else {
            let src = c["source"].as_str().unwrap();
            if let Some(b64) = src.strip_prefix("data:;base64,") {
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap()
            } else {
                assert!(src.starts_with("http://127.0.0.1:"), "{bu}: {src}");
                SERVED.to_vec()
            }
        };
        out.push((path, mode, data));
    }
    out
}

struct IgnitionRun {
    ok: bool,
    log: String,
}

/// Runs the real Ignition on `config` into `root`: `fetch`, then `files`. Everything it writes
/// goes under `work` (config cache, state) and `root`.
///
/// One stand-in: Debian's Ignition relabels for SELinux at the end of the files stage, by
/// running `setfiles` on the files it wrote, even with `SELINUX=disabled`. This host has no
/// SELinux (no policycoreutils, no policy), so a stub `setfiles` first on PATH records what it
/// was asked to label and succeeds; the test checks that list.
fn run_ignition(config: &Path, work: &Path, root: &Path) -> IgnitionRun {
    assert!(
        Path::new(IGNITION).exists(),
        "{IGNITION} missing: run scripts/install-deps.sh (as root) to install Debian's ignition"
    );
    fs::create_dir_all(root.join("etc/selinux")).unwrap();
    fs::write(
        root.join("etc/selinux/config"),
        "SELINUX=disabled\nSELINUXTYPE=targeted\n",
    )
    .unwrap();
    let stub = work.join("stub");
    fs::create_dir_all(&stub).unwrap();
    let setfiles = stub.join("setfiles");
    fs::write(
        &setfiles,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" > '{0}/setfiles.args'\ncat > '{0}/setfiles.paths'\n",
            work.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&setfiles, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", stub.display(), std::env::var("PATH").unwrap());
    let mut log = String::new();
    for stage in ["fetch", "files"] {
        let mut cmd = Command::new(IGNITION);
        cmd.args(["-platform", "file", "-stage", stage, "-log-to-stdout"])
            .arg("-root")
            .arg(root)
            .arg("-config-cache")
            .arg(work.join("ignition.json"))
            .arg("-state-file")
            .arg(work.join("state"))
            .arg("-neednet")
            .arg(work.join("neednet"))
            .env("IGNITION_CONFIG_FILE", config)
            .env("PATH", &path);
        for v in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(v);
        }
        let out = tool(&mut cmd, "ignition");
        log.push_str(&text(&out.stdout));
        log.push_str(&text(&out.stderr));
        if !out.status.success() {
            return IgnitionRun { ok: false, log };
        }
    }
    IgnitionRun { ok: true, log }
}

fn ignition_vars(s: &Samples, port: u16, sha256: &str) -> BTreeMap<&'static str, String> {
    let mut vars = s.vars.clone();
    vars.insert(
        "binary_url",
        format!("http://127.0.0.1:{port}/etcd-bootstrap"),
    );
    vars.insert("binary_sha256", sha256.to_string());
    vars
}

/// `ignition-validate` accepts every Ignition config, rendered, without a warning.
#[test]
fn ignition_validate_accepts_every_config() {
    let s = Samples::new();
    let vars = ignition_vars(&s, 8080, &sha256_hex(SERVED));
    for bu in butane_files() {
        let ign = ign_of(&bu);
        let rendered = s.dir.path().join("config.ign");
        fs::write(&rendered, render(&read(&ign), &vars)).unwrap();
        let out = tool(
            Command::new("ignition-validate").arg(&rendered),
            "ignition-validate",
        );
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{ign}: ignition-validate: {all}");
        assert!(
            all.trim().is_empty(),
            "{ign}: ignition-validate says: {all}"
        );
    }
}

/// The real Ignition applies each config into a temporary root: the binary fetched from a URL
/// and checked against its SHA-256, the config and key material with their modes, the unit,
/// and the preset that enables it; the config it wrote passes `check-config`. The files match
/// the Butane source rendered with the same values (so templatefile on the JSON and on the
/// Butane give the same machine).
#[test]
fn ignition_applies_every_config_into_a_root() {
    let s = Samples::new();
    let server = Server::start("/etcd-bootstrap", SERVED);
    let vars = ignition_vars(&s, server.port, &sha256_hex(SERVED));
    let unit = read(UNIT_SOURCE);
    for bu in butane_files() {
        let ign = ign_of(&bu);
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("root");
        let config = work.path().join("config.ign");
        fs::write(&config, render(&read(&ign), &vars)).unwrap();
        let run = run_ignition(&config, work.path(), &root);
        assert!(run.ok, "{ign}: ignition failed:\n{}", run.log);
        for (path, mode, data) in expected_files(&bu, &vars) {
            let p = root.join(path.trim_start_matches('/'));
            let got = fs::read(&p).unwrap_or_else(|e| panic!("{ign}: {path}: {e}\n{}", run.log));
            assert!(got == data, "{ign}: {path}: contents differ");
            let m = fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(m, mode, "{ign}: {path}: mode {m:o}, want {mode:o}");
            if path.ends_with(".key") {
                assert_eq!(m, 0o600, "{ign}: {path}");
            }
        }
        let written_unit =
            fs::read_to_string(root.join("etc/systemd/system/etcd-bootstrap.service")).unwrap();
        assert!(
            written_unit == unit,
            "{ign}: unit differs from {UNIT_SOURCE}"
        );
        let preset =
            fs::read_to_string(root.join("etc/systemd/system-preset/20-ignition.preset")).unwrap();
        assert!(
            preset.lines().any(|l| l == "enable etcd-bootstrap.service"),
            "{ign}: preset: {preset}"
        );
        // Ignition asks setfiles to label each path it created, or the top directory it created
        // for it.
        let relabeled = fs::read_to_string(work.path().join("setfiles.paths")).unwrap();
        let patterns: Vec<&str> = relabeled.split('\0').filter(|p| !p.is_empty()).collect();
        for p in [
            "/usr/local/bin/etcd-bootstrap",
            CONFIG_PATH,
            "/etc/systemd/system/etcd-bootstrap.service",
        ] {
            let full = format!("{}{p}", root.display());
            assert!(
                patterns
                    .iter()
                    .any(|pat| full == *pat || full.starts_with(&format!("{pat}/"))),
                "{ign}: Ignition did not relabel {p}: {patterns:?}"
            );
        }
        check_config(&root, &ign);
    }
}

/// A binary that does not match `binary_sha256` is refused: Ignition fails and does not write it.
#[test]
fn ignition_refuses_a_binary_with_the_wrong_hash() {
    let s = Samples::new();
    let server = Server::start("/etcd-bootstrap", SERVED);
    let vars = ignition_vars(&s, server.port, &sha256_hex(b"something else"));
    let bu = &butane_files()[0];
    let ign = ign_of(bu);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let config = work.path().join("config.ign");
    fs::write(&config, render(&read(&ign), &vars)).unwrap();
    let run = run_ignition(&config, work.path(), &root);
    assert!(
        !run.ok,
        "{ign}: Ignition accepted a wrong hash:\n{}",
        run.log
    );
    assert!(
        run.log.contains("hash verification failed"),
        "{ign}: Ignition failed for another reason than the hash:\n{}",
        run.log
    );
    assert!(
        !root.join("usr/local/bin/etcd-bootstrap").exists(),
        "{ign}: the unverified binary was written"
    );
}

// ---------------------------------------------------------------------------------------------
// The user-data's runcmd, run for real (curl, sha256sum, sh) with systemctl recorded
// ---------------------------------------------------------------------------------------------

struct RuncmdRun {
    code: Option<i32>,
    log: String,
    /// The systemctl calls, one line each.
    systemctl: Vec<String>,
    /// /usr/local/bin/etcd-bootstrap after the run, with its mode.
    binary: Option<(Vec<u8>, u32)>,
}

/// Runs `runcmd` of a rendered cloud-config as cloud-init does (each entry an argv, here
/// `sh -ec SCRIPT`), in a private mount namespace where /usr/local/bin and /etc/systemd/system
/// are empty tmpfs mounts (so the host's are never touched) and `systemctl` is a stub that
/// records its arguments. `preseed` is put at /usr/local/bin/etcd-bootstrap first (a binary
/// already in the image); `own_etcd_unit` creates /etc/systemd/system/etcd.service first.
fn run_runcmd(cfg: &Value, what: &str, preseed: Option<&[u8]>, own_etcd_unit: bool) -> RuncmdRun {
    let cmds = cfg["runcmd"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no runcmd"));
    assert_eq!(cmds.len(), 1, "{what}: one runcmd entry expected");
    let argv: Vec<&str> = cmds[0]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: runcmd entry is not an argv list"))
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let stub = w.join("stub");
    fs::create_dir_all(&stub).unwrap();
    fs::create_dir_all(w.join("out")).unwrap();
    fs::write(
        stub.join("systemctl"),
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}/systemctl.log'\n",
            w.display()
        ),
    )
    .unwrap();
    fs::set_permissions(stub.join("systemctl"), fs::Permissions::from_mode(0o755)).unwrap();
    if let Some(data) = preseed {
        fs::write(w.join("preseed"), data).unwrap();
    }
    // Inside the namespace: fresh mounts, the optional pre-existing files, the runcmd entry,
    // then a copy of /usr/local/bin out for the checks.
    let wrapper = r#"set -e
mount -t tmpfs tmpfs /usr/local/bin
mount -t tmpfs tmpfs /etc/systemd/system
if [ -e "$W/preseed" ]; then install -m 0755 "$W/preseed" /usr/local/bin/etcd-bootstrap; fi
if [ -n "$OWN_UNIT" ]; then : > /etc/systemd/system/etcd.service; fi
set +e
"$@"
rc=$?
cp -a /usr/local/bin/. "$W/out/"
exit $rc
"#;
    let path = format!("{}:{}", stub.display(), std::env::var("PATH").unwrap());
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(wrapper)
        .arg("wrapper")
        .args(&argv)
        .env("W", w)
        .env("OWN_UNIT", if own_etcd_unit { "1" } else { "" })
        .env("PATH", &path);
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(v);
    }
    let out = tool(&mut cmd, "unshare (util-linux; needs root)");
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !log.contains("mount: ") && !log.contains("unshare: "),
        "{what}: the private mount namespace could not be set up (run as root): {log}"
    );
    let systemctl = fs::read_to_string(w.join("systemctl.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let bin = w.join("out/etcd-bootstrap");
    let binary = fs::read(&bin).ok().map(|d| {
        let m = fs::metadata(&bin).unwrap().permissions().mode() & 0o7777;
        (d, m)
    });
    RuncmdRun {
        code: out.status.code(),
        log,
        systemctl,
        binary,
    }
}

const STARTS: &[&str] = &[
    "daemon-reload",
    "enable etcd-bootstrap.service",
    "start --no-block etcd-bootstrap.service",
];

/// The runcmd downloads the binary with curl (served on 127.0.0.1), installs it only when its
/// SHA-256 matches, stops the distribution's etcd.service, enables the agent and starts it
/// without blocking; with binary_url "" it uses the binary already in the image, and fails
/// clearly when there is none.
#[test]
fn user_data_runcmd_installs_the_binary_and_starts_the_unit() {
    let s = Samples::new();
    let server = Server::start("/etcd-bootstrap", SERVED);
    let url = format!("http://127.0.0.1:{}/etcd-bootstrap", server.port);
    for f in cloud_init_files() {
        let cfg_with = |u: &str, sha: &str| {
            let mut vars = s.vars.clone();
            vars.insert("binary_url", u.to_string());
            vars.insert("binary_sha256", sha.to_string());
            yaml(&render(&read(&f), &vars), &f)
        };

        // Downloaded, verified, installed, started.
        let r = run_runcmd(&cfg_with(&url, &sha256_hex(SERVED)), &f, None, false);
        assert_eq!(r.code, Some(0), "{f}: runcmd failed: {}", r.log);
        assert_eq!(
            r.binary,
            Some((SERVED.to_vec(), 0o755)),
            "{f}: binary not installed 0755"
        );
        let mut want = vec!["disable --now etcd.service"];
        want.extend(STARTS);
        assert_eq!(r.systemctl, want, "{f}: systemctl calls");

        // A wrong checksum: nothing installed, nothing started.
        let r = run_runcmd(&cfg_with(&url, &sha256_hex(b"other")), &f, None, false);
        assert_ne!(r.code, Some(0), "{f}: a wrong checksum was accepted");
        assert!(r.log.contains("FAILED"), "{f}: {}", r.log);
        assert_eq!(r.binary, None, "{f}: an unverified binary was installed");
        assert!(
            r.systemctl.is_empty(),
            "{f}: started anyway: {:?}",
            r.systemctl
        );

        // Already in the image.
        let r = run_runcmd(&cfg_with("", ""), &f, Some(SERVED), false);
        assert_eq!(r.code, Some(0), "{f}: {}", r.log);
        assert_eq!(r.binary, Some((SERVED.to_vec(), 0o755)), "{f}");
        assert_eq!(r.systemctl.last().map(String::as_str), Some(STARTS[2]));

        // Not in the image and no URL: a clear failure.
        let r = run_runcmd(&cfg_with("", ""), &f, None, false);
        assert_ne!(r.code, Some(0), "{f}");
        assert!(r.log.contains("set binary_url"), "{f}: {}", r.log);
        assert!(r.systemctl.is_empty(), "{f}: {:?}", r.systemctl);

        // etcd-bootstrap's own etcd.service already there: left alone.
        let r = run_runcmd(&cfg_with("", ""), &f, Some(SERVED), true);
        assert_eq!(r.code, Some(0), "{f}: {}", r.log);
        assert_eq!(r.systemctl, STARTS, "{f}: systemctl calls");
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus rules
// ---------------------------------------------------------------------------------------------

const RULES: &str = "dist/prometheus/etcd-bootstrap-alerts.yml";
const RULES_TEST: &str = "dist/prometheus/etcd-bootstrap-alerts.test.yml";

/// promtool from bookworm's prometheus package, unpacked by scripts/install-deps.sh into the
/// lab cache (`PROMTOOL_DIR` in its env file); `PROMTOOL` overrides.
fn promtool() -> PathBuf {
    if let Ok(p) = std::env::var("PROMTOOL") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("ETCD_BOOTSTRAP_LAB_CACHE")
        .unwrap_or_else(|_| "/var/cache/etcd-bootstrap-lab".to_string());
    let env = fs::read_to_string(Path::new(&cache).join("env")).unwrap_or_default();
    let dir = env
        .lines()
        .find_map(|l| l.strip_prefix("PROMTOOL_DIR="))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{cache}/prometheus-2.42.0"));
    PathBuf::from(dir).join("promtool")
}

/// Every alerting rule: (name, the rule).
fn alerts(rules: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for g in rules["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            if let Some(name) = r["alert"].as_str() {
                out.push((name.to_string(), r.clone()));
            }
        }
    }
    out
}

/// `promtool test rules` on the test file in `dir` (beside a rules file); Ok or the output.
fn promtool_test(dir: &Path) -> Result<(), String> {
    let out = tool(
        Command::new(promtool()).current_dir(dir).args([
            "test",
            "rules",
            "etcd-bootstrap-alerts.test.yml",
        ]),
        "promtool",
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", text(&out.stdout), text(&out.stderr)))
    }
}

/// The shipped rules pass `promtool check rules` and their unit tests; every alert has a
/// severity and a runbook_url pointing at a section of docs/operations.md; the job selector is
/// written once.
#[test]
fn alert_rules_pass_promtool_and_link_their_runbooks() {
    let out = tool(
        Command::new(promtool())
            .args(["check", "rules", RULES])
            .current_dir(repo()),
        "promtool",
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    promtool_test(&repo().join("dist/prometheus")).unwrap_or_else(|e| panic!("{e}"));

    let src = read(RULES);
    let rules = yaml(&src, RULES);
    let ops = read("docs/operations.md");
    // GitHub's anchors: the heading in lower case, spaces as '-', other punctuation dropped.
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let all = alerts(&rules);
    assert!(all.len() >= 10, "alerts went missing: {}", all.len());
    for (name, rule) in &all {
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["warning", "critical"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        let url = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        let anchor = url
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url:?} is not docs/operations.md#..."));
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook_url {url:?}");
        assert!(
            anchors.contains(anchor),
            "{name}: docs/operations.md has no section #{anchor}"
        );
        assert!(
            !rule["expr"].as_str().unwrap_or("").contains("job="),
            "{name}: the job selector belongs in the etcd_bootstrap:up recording rule only"
        );
    }
    let selectors = src
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("job="))
        .count();
    assert_eq!(selectors, 1, "the job selector is written more than once");
    // Every alert has a test that expects it to fire.
    let tests = read(RULES_TEST);
    for (name, _) in &all {
        assert!(
            tests.contains(&format!(
                "alertname: {name}\n        exp_alerts:\n          - exp_labels"
            )),
            "{RULES_TEST} never expects {name} to fire"
        );
    }
}

/// The unit tests catch a broken alert: with any one alert's expression replaced by one that
/// never fires, `promtool test rules` fails. (The runs are concurrent: each is mostly waiting.)
#[test]
fn promtool_tests_fail_when_an_alert_expression_is_broken() {
    let rules = yaml(&read(RULES), RULES);
    let names: Vec<String> = alerts(&rules).into_iter().map(|(n, _)| n).collect();
    let root = tempfile::tempdir().unwrap();
    // One directory per case: the rules (JSON is YAML: promtool reads it) and the test file.
    let case = |label: &str, rules: &Value| -> PathBuf {
        let dir = root.path().join(label);
        fs::create_dir(&dir).unwrap();
        fs::write(
            dir.join("etcd-bootstrap-alerts.yml"),
            serde_json::to_string_pretty(rules).unwrap(),
        )
        .unwrap();
        fs::copy(
            repo().join(RULES_TEST),
            dir.join("etcd-bootstrap-alerts.test.yml"),
        )
        .unwrap();
        dir
    };
    let mut cases = vec![(String::new(), case("unchanged", &rules))];
    for name in &names {
        let mut broken = rules.clone();
        for g in broken["groups"].as_array_mut().unwrap() {
            for r in g["rules"].as_array_mut().unwrap() {
                if r["alert"].as_str() == Some(name.as_str()) {
                    r["expr"] = Value::String("vector(1) == 0".into());
                }
            }
        }
        cases.push((name.clone(), case(name, &broken)));
    }
    let results: Vec<(String, Result<(), String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(name, dir)| s.spawn(move || (name.clone(), promtool_test(dir))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (name, result) in results {
        if name.is_empty() {
            result.unwrap_or_else(|e| panic!("the unchanged copy fails: {e}"));
        } else {
            assert!(
                result.is_err(),
                "{name}: promtool test rules passed with its expression broken"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The release
// ---------------------------------------------------------------------------------------------

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn release_script(binary: &Path, out: &Path) -> Output {
    tool(
        Command::new(repo().join("scripts/release.sh")).args([
            "--binary",
            binary.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        "scripts/release.sh",
    )
}

/// A release binary to package without building one: ETCD_BOOTSTRAP_RELEASE_BINARY, or the one
/// the real-VM test packaged into target/vm/dist (tests/vm/run.sh), copied so that a run of it
/// replacing the directory meanwhile does not matter.
fn release_binary(scratch: &Path) -> Option<PathBuf> {
    let found = match std::env::var("ETCD_BOOTSTRAP_RELEASE_BINARY") {
        Ok(p) => PathBuf::from(p),
        Err(_) => repo().join(format!(
            "target/vm/dist/etcd-bootstrap-{}-{TARGET}",
            env!("CARGO_PKG_VERSION")
        )),
    };
    let copy = scratch.join("etcd-bootstrap");
    fs::copy(&found, &copy).ok()?;
    Some(copy)
}

/// scripts/release.sh refuses what is not a release build (this test's binary: not stripped,
/// maybe with fail points) and writes nothing; given a release binary, it writes the binary
/// named by version and target, SHA256SUMS (the binary's line first) that `sha256sum -c`
/// accepts, and every template byte for byte.
#[test]
fn release_script_writes_the_binary_sums_and_templates() {
    let dir = tempfile::tempdir().unwrap();
    let refused = dir.path().join("refused");
    let out = release_script(Path::new(BIN), &refused);
    assert!(!out.status.success(), "a test build was released");
    let err = text(&out.stderr);
    assert!(
        err.contains("not stripped") || err.contains("fail-point"),
        "{err}"
    );
    assert!(!refused.exists(), "written on refusal");

    let Some(binary) = release_binary(dir.path()) else {
        eprintln!("packaging not checked: no release binary (set ETCD_BOOTSTRAP_RELEASE_BINARY, or run tests/vm/run.sh, which packages one into target/vm/dist)");
        return;
    };
    let dist = dir.path().join("dist");
    let out = release_script(&binary, &dist);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let name = format!("etcd-bootstrap-{}-{TARGET}", env!("CARGO_PKG_VERSION"));
    let version = tool(
        Command::new(dist.join(&name)).arg("--version"),
        "the release",
    );
    assert_eq!(
        text(&version.stdout).trim(),
        format!("etcd-bootstrap {}", env!("CARGO_PKG_VERSION"))
    );
    let sums = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(
        sums.lines()
            .next()
            .unwrap_or("")
            .ends_with(&format!("  {name}")),
        "{sums}"
    );
    let check = tool(
        Command::new("sha256sum")
            .args(["--strict", "-c", "SHA256SUMS"])
            .current_dir(&dist),
        "sha256sum",
    );
    assert!(check.status.success(), "{}", text(&check.stdout));
    let mut shipped: Vec<(String, String)> = Vec::new();
    for f in cloud_init_files() {
        shipped.push((f.clone(), format!("templates/{f}")));
    }
    for ext in [".bu", ".ign"] {
        for f in files("ignition", ext) {
            shipped.push((f.clone(), format!("templates/{f}")));
        }
    }
    shipped.push((UNIT_SOURCE.into(), "etcd-bootstrap.service".into()));
    shipped.push((RULES.into(), "prometheus/etcd-bootstrap-alerts.yml".into()));
    for (src, dst) in shipped {
        assert_eq!(
            fs::read(dist.join(&dst)).unwrap_or_default(),
            fs::read(repo().join(&src)).unwrap(),
            "{dst} is not {src}"
        );
        assert!(
            sums.contains(&format!("  {dst}\n")),
            "{dst} not in SHA256SUMS"
        );
    }
}
