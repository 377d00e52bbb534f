//! `tls.mode = "cfssl"` against a real cfssl 1.6.5 signer (`cfssl serve` over HTTPS with an HMAC
//! auth key, started by scripts/cfssl-signer.sh inside the lab): a 3-member cluster whose nodes
//! never hold the CA key; a wrong auth key and an unreachable signer fail fast and start nothing.

mod common;

use common::{serial, Lab, LabOptions, Signer, Version};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn configure(lab: &Lab, signer: &Signer, host: usize, key_file: &Path, url: &str) {
    lab.write_config_tls(
        host,
        3,
        "srv_domain = \"lab.test\"",
        &signer.tls(key_file, url),
    );
}

#[test]
fn cfssl_signer_cluster_etcd_3_5() {
    let _g = serial();
    let mut lab = Lab::up(31, Version::V3_5, LabOptions::srv(3));
    let signer = Signer::up(&lab);
    let key = signer.dir.join("auth.key");
    for h in 1..=3 {
        configure(&lab, &signer, h, &key, &signer.url);
    }
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(90));
    let out = lab.etcdctl(1, &lab.endpoints(), &["put", "/cfssl", "yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The cluster trusts the signer's CA, and no node holds its key.
    let ca_key = std::fs::read_to_string(signer.dir.join("ca-key.pem")).unwrap();
    let ca = std::fs::read_to_string(signer.dir.join("ca.pem")).unwrap();
    for h in 1..=3 {
        let pki = lab.host_dir(h).join("pki");
        assert_eq!(
            std::fs::read_to_string(pki.join("ca.crt")).unwrap().trim(),
            ca.trim()
        );
        for entry in walk(&lab.host_dir(h)) {
            let text = std::fs::read_to_string(&entry).unwrap_or_default();
            assert!(
                !text.contains(ca_key.trim()),
                "the CA key is on host {h}: {}",
                entry.display()
            );
        }
        assert!(!std::fs::read_to_string(lab.config_path(h))
            .unwrap()
            .contains("ca_key"));
    }
    lab.stop_all();
}

#[test]
fn wrong_auth_key_and_unreachable_signer_fail_fast_etcd_3_5() {
    let _g = serial();
    let mut lab = Lab::up(32, Version::V3_5, LabOptions::srv(3));
    let signer = Signer::up(&lab);
    let wrong = lab.dir.path().join("wrong.key");
    std::fs::write(&wrong, "00112233445566778899aabbccddeeff\n").unwrap();
    // Private like every auth key (the config refuses one that others can read): the signer is
    // what must refuse it here.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let unreachable = format!("https://{}.1:8899", lab.subnet);
    let cases = [
        (1, wrong.clone(), signer.url.clone(), "refused"),
        (
            2,
            signer.dir.join("auth.key"),
            unreachable.clone(),
            "cannot reach the signer",
        ),
    ];
    for (h, key, url, want) in cases {
        configure(&lab, &signer, h, &key, &url);
        let t = Instant::now();
        lab.start(&[h]);
        let code = lab.wait_exit(h, Duration::from_secs(60));
        assert_eq!(code, Some(1), "host {h}: expected exit 1");
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "host {h}: took {:?}",
            t.elapsed()
        );
        let log = lab.log(h);
        let last = log.lines().last().unwrap_or_default().to_string();
        assert!(
            last.contains(want) && last.contains(&url),
            "host {h}: {last}"
        );
        assert!(
            !lab.host_dir(h).join("etcd.env").exists(),
            "host {h}: etcd was configured"
        );
        assert!(
            !lab.host_dir(h).join("data").exists(),
            "host {h}: etcd was started"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
