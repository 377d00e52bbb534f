//! Certificates in the lab, against real etcd: `tls.mode = "files"` with certificates pre-issued by
//! real cfssl (`cfssl gencert`, as the classic guides do) read from paths and fetched over HTTPS
//! (`openssl s_server -WWW` on the lab's bridge), each failed check refused before anything
//! starts; renewal of short-lived certificates while etcd keeps running (the served serial
//! changes, the etcd PID does not); a CA change (etcd restarts trusting old and new CA); the
//! kube-apiserver client certificate; and installing etcd from a release tarball over HTTPS.

mod common;

use common::{serial, Lab, LabOptions, Version};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn cfssl() -> PathBuf {
    common::cache_dir("CFSSL_DIR").join("cfssl")
}

/// A CA made with `cfssl gencert -initca`, and leaf certificates issued from it.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(lab: &Lab) -> Pki {
        let dir = lab.dir.path().join("issuer");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"signing": {"default": {"usages": ["signing", "key encipherment", "server auth", "client auth"], "expiry": "8760h"}, "profiles": {"client": {"usages": ["signing", "key encipherment", "client auth"], "expiry": "8760h"}}}}"#,
        )
        .unwrap();
        let pki = Pki { dir };
        pki.gencert(&["-initca"], "ca", "lab files CA", &[]);
        pki
    }

    /// `cfssl gencert` into `<dir>/<base>.pem` and `<base>-key.pem`.
    fn gencert(&self, args: &[&str], base: &str, cn: &str, hosts: &[String]) {
        let csr = serde_json::json!({
            "CN": cn,
            "hosts": hosts,
            "key": {"algo": "ecdsa", "size": 256},
        });
        let csr_path = self.dir.join(format!("{base}-csr.json"));
        std::fs::write(&csr_path, csr.to_string()).unwrap();
        let out = Command::new(cfssl())
            .current_dir(&self.dir)
            .arg("gencert")
            .args(args)
            .arg(&csr_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cfssl gencert {base}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        std::fs::write(
            self.dir.join(format!("{base}.pem")),
            v["cert"].as_str().unwrap(),
        )
        .unwrap();
        std::fs::write(
            self.dir.join(format!("{base}-key.pem")),
            v["key"].as_str().unwrap(),
        )
        .unwrap();
    }

    fn issue(&self, base: &str, cn: &str, hosts: &[String]) {
        self.issue_with(&[], base, cn, hosts);
    }

    fn issue_with(&self, extra: &[&str], base: &str, cn: &str, hosts: &[String]) {
        let mut args = vec!["-ca=ca.pem", "-ca-key=ca-key.pem", "-config=config.json"];
        args.extend_from_slice(extra);
        self.gencert(&args, base, cn, hosts);
    }

    /// Server, peer and client certificates for lab host `h`, as an operator would pre-issue them.
    fn issue_member(&self, lab: &Lab, h: usize) {
        let hosts = vec![
            lab.ip(h),
            "127.0.0.1".to_string(),
            format!("etcd{h}.lab.test"),
        ];
        self.issue(&format!("h{h}-server"), &format!("etcd{h}"), &hosts);
        self.issue(&format!("h{h}-peer"), &format!("etcd{h}"), &hosts);
        self.issue_with(
            &["-profile=client"],
            &format!("h{h}-client"),
            &format!("etcd{h}-client"),
            &[],
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn sha256(&self, name: &str) -> String {
        let out = Command::new("sha256sum")
            .arg(self.path(name))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

/// `openssl s_server -WWW` on the lab's bridge address, serving `root` over HTTPS with a
/// certificate from `pki`.
struct FileServer {
    child: Child,
    url: String,
}

impl FileServer {
    fn start(lab: &Lab, pki: &Pki, root: &Path) -> FileServer {
        let ip = format!("{}.1", lab.subnet);
        pki.issue("www", "lab file server", std::slice::from_ref(&ip));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{}-br", lab.name),
                "openssl",
                "s_server",
            ])
            .args(["-accept", "8443", "-WWW", "-quiet", "-cert"])
            .arg(pki.path("www.pem"))
            .arg("-key")
            .arg(pki.path("www-key.pem"))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = FileServer {
            child,
            url: format!("https://{ip}:8443"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let probe = lab.exec(
                1,
                Path::new("bash"),
                &["-c", &format!("exec 3<>/dev/tcp/{ip}/8443")],
            );
            if probe.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn must(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Host `h` exits 2 within 30 s naming `key`, having started nothing.
fn refused(lab: &mut Lab, h: usize, key: &str, what: &str) {
    lab.start(&[h]);
    let code = lab.wait_exit(h, Duration::from_secs(30));
    let log = lab.log(h);
    assert_eq!(code, Some(2), "host {h}: {log}");
    assert!(
        log.contains(&format!("`{key}`")),
        "host {h} should name {key}: {log}"
    );
    assert!(log.contains(what), "host {h} should say {what:?}: {log}");
    assert!(
        !lab.host_dir(h).join("data").exists(),
        "host {h}: etcd must not have started"
    );
    assert!(
        !lab.host_dir(h).join("pki").exists(),
        "host {h}: nothing may be written to tls.dir"
    );
    std::fs::remove_file(lab.host_dir(h).join("bootstrap.log")).unwrap();
}

#[test]
fn files_mode_from_paths_and_https_etcd_3_5() {
    let _g = serial();
    let mut lab = Lab::up(33, Version::V3_5, LabOptions::srv(3));
    let pki = Pki::new(&lab);
    for h in 1..=3 {
        pki.issue_member(&lab, h);
    }
    let www = FileServer::start(&lab, &pki, &pki.dir);
    let tls = |h: usize, base: &dyn Fn(&str) -> String, extra: &str| {
        format!(
            "mode = \"files\"\nca_cert = \"{}\"\nserver_cert = \"{}\"\nserver_key = \"{}\"\npeer_cert = \"{}\"\npeer_key = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nsigner_ca = \"{}\"\n{extra}",
            base("ca.pem"),
            base(&format!("h{h}-server.pem")),
            base(&format!("h{h}-server-key.pem")),
            base(&format!("h{h}-peer.pem")),
            base(&format!("h{h}-peer-key.pem")),
            base(&format!("h{h}-client.pem")),
            base(&format!("h{h}-client-key.pem")),
            pki.path("ca.pem").display(),
        )
    };
    let from_path = |name: &str| pki.path(name).display().to_string();
    let from_url = |name: &str| format!("{}/{name}", www.url);
    let pins = format!(
        "sha256_pins = [\"server.key={}\", \"peer.key={}\", \"client.key={}\"]",
        pki.sha256("h3-server-key.pem"),
        pki.sha256("h3-peer-key.pem"),
        pki.sha256("h3-client-key.pem")
    );

    // Each failed check is refused before anything is written or started.
    let srv = "srv_domain = \"lab.test\"";
    let mut bad = tls(2, &from_path, "");
    bad = bad.replace("h2-peer-key.pem", "h1-peer-key.pem");
    lab.write_config_tls(2, 3, srv, &bad);
    refused(&mut lab, 2, "tls.peer_key", "does not match its key");
    let bad = tls(2, &from_path, "")
        .replace("h2-server.pem", "h1-server.pem")
        .replace("h2-server-key.pem", "h1-server-key.pem");
    lab.write_config_tls(2, 3, srv, &bad);
    refused(&mut lab, 2, "tls.server_cert", "does not cover");
    let bad = tls(2, &from_path, "")
        .replace("h2-server.pem", "h2-client.pem")
        .replace("h2-server-key.pem", "h2-client-key.pem");
    lab.write_config_tls(2, 3, srv, &bad);
    refused(&mut lab, 2, "tls.server_cert", "lacks the serverAuth");
    let bad = tls(2, &from_path, "").replace(&from_path("ca.pem"), &from_path("www.pem"));
    lab.write_config_tls(2, 3, srv, &bad);
    refused(
        &mut lab,
        2,
        "tls.server_cert",
        "does not chain to tls.ca_cert",
    );
    std::fs::write(pki.path("not-pem.pem"), "this is not a certificate\n").unwrap();
    let bad =
        tls(2, &from_path, "").replace(&from_path("h2-client.pem"), &from_path("not-pem.pem"));
    lab.write_config_tls(2, 3, srv, &bad);
    refused(&mut lab, 2, "tls.client_cert", "not a PEM certificate");
    let wrong_pin = pins.replace(&pki.sha256("h3-peer-key.pem"), &"0".repeat(64));
    lab.write_config_tls(3, 3, srv, &tls(3, &from_url, &wrong_pin));
    refused(&mut lab, 3, "tls.sha256_pins", "peer.key has SHA-256");

    // Hosts 1 and 2 read their files from paths, host 3 fetches them over HTTPS, pinned.
    for h in 1..=2 {
        lab.write_config_tls(h, 3, srv, &tls(h, &from_path, ""));
    }
    lab.write_config_tls(3, 3, srv, &tls(3, &from_url, &pins));
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(90));
    must(lab.etcdctl(1, &lab.endpoints(), &["put", "/files", "pre-issued"]));
    let got = must(lab.etcdctl(
        3,
        &lab.endpoints(),
        &["get", "/files", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "pre-issued");
    // Host 3 uses exactly what was fetched; no node holds the CA key.
    let pki3 = lab.host_dir(3).join("pki");
    for (local, issued) in [
        ("server.crt", "h3-server.pem"),
        ("peer.key", "h3-peer-key.pem"),
        ("ca.crt", "ca.pem"),
    ] {
        assert_eq!(
            std::fs::read(pki3.join(local)).unwrap(),
            std::fs::read(pki.path(issued)).unwrap(),
            "{local}"
        );
    }
    let ca_key = std::fs::read(pki.path("ca-key.pem")).unwrap();
    for h in 1..=3 {
        for entry in std::fs::read_dir(lab.host_dir(h).join("pki")).unwrap() {
            let p = entry.unwrap().path();
            assert_ne!(
                std::fs::read(&p).unwrap(),
                ca_key,
                "CA key found at {}",
                p.display()
            );
        }
    }
    // The cfssl keys (SEC1 "EC PRIVATE KEY") are copied 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(pki3.join("server.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn renewal_without_restart_then_a_ca_change_etcd_3_4() {
    let _g = serial();
    let mut lab = Lab::up(34, Version::V3_4, LabOptions::srv(3));
    let ca = lab.dir.path().join("ca");
    let tls = format!(
        "mode = \"local-ca\"\nca_cert = \"{ca}/ca.crt\"\nca_key = \"{ca}/ca.key\"\ncert_validity = \"2m\"\napiserver_client = true\napiserver_client_subject = \"CN=kube-apiserver-etcd-client,O=system:masters\"",
        ca = ca.display()
    );
    for h in 1..=3 {
        lab.write_config_tls(h, 3, "srv_domain = \"lab.test\"", &tls);
    }
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(90));
    must(lab.etcdctl(1, &lab.endpoints(), &["put", "/renewal", "kept"]));
    let pids: Vec<u32> = (1..=3)
        .map(|h| lab.etcd_pid(h).expect("etcd pid"))
        .collect();
    let ip1 = lab.ip(1);
    let client0 = lab
        .served_serial(1, &ip1, 2379)
        .expect("served client-port certificate");
    let peer0 = lab
        .served_serial(2, &ip1, 2380)
        .expect("served peer-port certificate");

    // Two-minute certificates are renewed when 44 s are left; etcd serves the new ones from the
    // next handshake on.
    let start = Instant::now();
    let (client1, peer1) = loop {
        let c = lab.served_serial(1, &ip1, 2379);
        let p = lab.served_serial(2, &ip1, 2380);
        if let (Some(c), Some(p)) = (&c, &p) {
            if *c != client0 && *p != peer0 {
                break (c.clone(), p.clone());
            }
        }
        if start.elapsed() > Duration::from_secs(150) {
            lab.dump_logs();
            panic!("host 1's served certificates were not renewed within 150 s");
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    eprintln!(
        "renewed after {:?}: client port {client0} -> {client1}, peer port {peer0} -> {peer1}",
        start.elapsed()
    );
    let now: Vec<Option<u32>> = (1..=3).map(|h| lab.etcd_pid(h)).collect();
    assert_eq!(
        now,
        pids.iter().map(|p| Some(*p)).collect::<Vec<_>>(),
        "etcd was restarted"
    );
    lab.wait_healthy(3, Duration::from_secs(30));
    assert!(lab.log(1).contains("renewing certificate material"));
    let got = must(lab.etcdctl(
        2,
        &lab.endpoints(),
        &["get", "/renewal", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "kept");
    // kube-apiserver's client certificate works against the cluster.
    let pki = lab.host_dir(1).join("pki");
    let got = must(lab.etcdctl_with(
        1,
        &lab.endpoints(),
        &pki.join("ca.crt"),
        &pki.join("apiserver-etcd-client.crt"),
        &pki.join("apiserver-etcd-client.key"),
        &["get", "/renewal", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "kept");

    // A new CA, swapped in under the configured paths: each member re-issues from it, keeps
    // the old one in its bundle and restarts etcd to trust both.
    let new_ca = lab.dir.path().join("new-ca");
    must(
        Command::new(common::BIN)
            .args(["ca", "init", "--out"])
            .arg(&new_ca)
            .output()
            .unwrap(),
    );
    for f in ["ca.key", "ca.crt"] {
        std::fs::copy(new_ca.join(f), ca.join(format!(".{f}.new"))).unwrap();
        std::fs::rename(ca.join(format!(".{f}.new")), ca.join(f)).unwrap();
    }
    let start = Instant::now();
    loop {
        let switched = (1..=3).all(|h| {
            let bundle =
                std::fs::read_to_string(lab.host_dir(h).join("pki/ca.crt")).unwrap_or_default();
            let served = lab.served_cert(1, &lab.ip(h), 2379).unwrap_or_default();
            let tmp = lab.dir.path().join(format!("served-{h}.pem"));
            std::fs::write(&tmp, served).unwrap();
            let verified = Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(new_ca.join("ca.crt"))
                .arg(&tmp)
                .output()
                .is_ok_and(|o| o.status.success());
            bundle.matches("BEGIN CERTIFICATE").count() == 2 && verified
        });
        if switched {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            lab.dump_logs();
            panic!("the members did not switch to the new CA within 120 s");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("all members on the new CA after {:?}", start.elapsed());
    lab.wait_healthy(3, Duration::from_secs(60));
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(60));
    for h in 1..=3 {
        assert_ne!(
            lab.etcd_pid(h),
            Some(pids[h - 1]),
            "host {h}: etcd should restart for a new CA"
        );
        assert!(lab.log(h).contains("the CA changed"), "host {h}");
    }
    let got = must(lab.etcdctl(
        3,
        &lab.endpoints(),
        &["get", "/renewal", "--print-value-only"],
    ));
    assert_eq!(got.trim(), "kept");
}

#[test]
fn etcd_installed_from_a_release_tarball_over_https_etcd_3_5() {
    let _g = serial();
    let mut lab = Lab::up(35, Version::V3_5, LabOptions::srv(3));
    let pki = Pki::new(&lab);
    let www = lab.dir.path().join("www");
    let stage = lab.dir.path().join("stage/etcd-v3.5.30-linux-amd64");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::create_dir_all(&www).unwrap();
    for b in ["etcd", "etcdctl", "etcdutl"] {
        std::fs::copy(Version::V3_5.dir().join(b), stage.join(b)).unwrap();
    }
    let tarball = www.join("etcd-v3.5.30-linux-amd64.tar.gz");
    must(
        Command::new("tar")
            .arg("-C")
            .arg(stage.parent().unwrap())
            .arg("-czf")
            .arg(&tarball)
            .arg("etcd-v3.5.30-linux-amd64")
            .output()
            .unwrap(),
    );
    let sum = must(Command::new("sha256sum").arg(&tarball).output().unwrap())
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let server = FileServer::start(&lab, &pki, &www);
    let url = format!("{}/etcd-v3.5.30-linux-amd64.tar.gz", server.url);
    // A checksum that does not match installs nothing.
    install_config(&lab, &pki, &url, 1, &"ab".repeat(32));
    lab.start(&[1]);
    assert_eq!(
        lab.wait_exit(1, Duration::from_secs(60)),
        Some(2),
        "{}",
        lab.log(1)
    );
    assert!(lab.log(1).contains("`etcd.sha256`"), "{}", lab.log(1));
    let bin1 = lab.host_dir(1).join("bin");
    assert!(!bin1.join("etcd").exists(), "nothing may be installed");
    std::fs::remove_file(lab.host_dir(1).join("bootstrap.log")).unwrap();

    for h in 1..=3 {
        install_config(&lab, &pki, &url, h, &sum);
    }
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(120));
    for h in 1..=3 {
        for b in ["etcd", "etcdctl", "etcdutl"] {
            let p = lab.host_dir(h).join("bin").join(b);
            assert_eq!(
                std::fs::read(&p).unwrap(),
                std::fs::read(stage.join(b)).unwrap(),
                "{}",
                p.display()
            );
        }
        assert!(lab.log(h).contains("installed etcd"), "host {h}");
    }
    // A re-run finds the same release installed and downloads nothing.
    let installed = std::fs::metadata(bin1.join("etcd"))
        .unwrap()
        .modified()
        .unwrap();
    lab.stop(1);
    lab.start(&[1]);
    lab.wait_healthy(3, Duration::from_secs(60));
    assert_eq!(
        std::fs::metadata(bin1.join("etcd"))
            .unwrap()
            .modified()
            .unwrap(),
        installed
    );
    assert_eq!(
        lab.log(1)
            .matches("installing etcd from its release tarball")
            .count(),
        1
    );
}

/// Host `h` installs etcd from `url` (checked against `sum`) into its own `bin/`.
fn install_config(lab: &Lab, pki: &Pki, url: &str, h: usize, sum: &str) {
    lab.write_config(h, 3, "srv_domain = \"lab.test\"");
    let path = lab.config_path(h);
    let text = std::fs::read_to_string(&path).unwrap();
    let bin_line = text
        .lines()
        .find(|l| l.starts_with("binary = "))
        .unwrap()
        .to_string();
    let text = text
        .replace(
            &bin_line,
            &format!(
                "download_url = \"{url}\"\nsha256 = \"{sum}\"\ninstall_dir = \"{}\"",
                lab.host_dir(h).join("bin").display()
            ),
        )
        .replace(
            "[tls]\n",
            &format!("[tls]\nsigner_ca = \"{}\"\n", pki.path("ca.pem").display()),
        );
    std::fs::write(&path, text).unwrap();
}

/// `tls.mode = "local-ca"` with a CA key in each form users already have forms a 3-member
/// cluster that etcdctl, with the generated client certificate and the CA's certificate, sees
/// healthy and serving writes: cfssl `-initca` with an RSA 2048 request (PKCS#1, as the classic
/// guides make it), cfssl with ECDSA (SEC1), `openssl ecparam -genkey` (SEC1 after an EC
/// PARAMETERS block) and `openssl genpkey` P-384 (PKCS#8).
#[test]
fn ca_keys_in_every_form_users_have_etcd_3_5() {
    let _g = serial();
    let mut lab = Lab::up(84, Version::V3_5, LabOptions::srv(3));
    lab.configure_srv(3);
    let ca = lab.dir.path().join("ca");
    let (crt, key) = (ca.join("ca.crt"), ca.join("ca.key"));
    let cfssl_ca = |algo: &str, size: u32| {
        let csr = ca.join("csr.json");
        std::fs::write(
            &csr,
            serde_json::json!({"CN": "classic CA", "key": {"algo": algo, "size": size}})
                .to_string(),
        )
        .unwrap();
        let out = must(
            Command::new(cfssl())
                .args(["gencert", "-initca"])
                .arg(&csr)
                .output()
                .unwrap(),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        std::fs::write(&crt, v["cert"].as_str().unwrap()).unwrap();
        std::fs::write(&key, v["key"].as_str().unwrap()).unwrap();
    };
    let openssl_ca = |keygen: &[&str]| {
        must(
            Command::new("openssl")
                .args(keygen)
                .arg("-out")
                .arg(&key)
                .output()
                .unwrap(),
        );
        must(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-new",
                    "-days",
                    "30",
                    "-subj",
                    "/CN=openssl CA",
                ])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-key")
                .arg(&key)
                .arg("-out")
                .arg(&crt)
                .output()
                .unwrap(),
        );
    };
    type MakeCa<'a> = Box<dyn Fn() + 'a>;
    let forms: Vec<(&str, &str, MakeCa)> = vec![
        (
            "cfssl RSA 2048",
            "BEGIN RSA PRIVATE KEY",
            Box::new(|| cfssl_ca("rsa", 2048)),
        ),
        (
            "cfssl ECDSA",
            "BEGIN EC PRIVATE KEY",
            Box::new(|| cfssl_ca("ecdsa", 256)),
        ),
        (
            "openssl ecparam",
            "BEGIN EC PARAMETERS",
            Box::new(|| openssl_ca(&["ecparam", "-name", "prime256v1", "-genkey"])),
        ),
        (
            "PKCS#8 P-384",
            "BEGIN PRIVATE KEY",
            Box::new(|| {
                openssl_ca(&[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-384",
                ])
            }),
        ),
    ];
    for (i, (name, label, make)) in forms.iter().enumerate() {
        make();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(pem.contains(label), "{name}: {pem}");
        for h in 1..=3 {
            lab.wipe(h);
            let _ = std::fs::remove_dir_all(lab.host_dir(h).join("pki"));
        }
        lab.start(&[1, 2, 3]);
        lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(60));
        let k = format!("/form/{i}");
        lab.put(2, &k, name);
        assert_eq!(lab.get(3, &k).as_deref(), Some(*name));
        // Every certificate the agents issued verifies against this CA alone.
        for leaf in ["server.crt", "peer.crt", "client.crt"] {
            let out = Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(&crt)
                .arg(lab.host_dir(1).join("pki").join(leaf))
                .output()
                .unwrap();
            assert!(out.status.success(), "{name} {leaf}: {}", must(out));
        }
        lab.stop_all();
    }
}
