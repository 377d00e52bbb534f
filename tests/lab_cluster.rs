//! A new cluster formed by etcd-bootstrap in the namespace lab, on real etcd 3.4.23 and 3.5.30,
//! checked the way an operator would: etcdctl with the generated client certificate.

mod common;

use common::{serial, Lab, LabOptions, Version};
use std::process::Command;
use std::time::Duration;

const HEALTHY_WITHIN: Duration = Duration::from_secs(90);

/// What a user checks after a bootstrap: N started voters, https everywhere, the cluster ID that
/// the peer set implies, writes replicate, a foreign client certificate is refused.
fn assert_cluster(lab: &Lab, n: usize) {
    let members = lab.members(1);
    assert_eq!(members.len(), n, "member count: {members:?}");
    for m in &members {
        assert!(
            !m["name"].as_str().unwrap_or("").is_empty(),
            "unstarted member: {m}"
        );
        assert_ne!(m["isLearner"].as_bool(), Some(true), "learner left: {m}");
        for url in m["peerURLs"]
            .as_array()
            .unwrap()
            .iter()
            .chain(m["clientURLs"].as_array().unwrap())
        {
            assert!(
                url.as_str().unwrap().starts_with("https://"),
                "non-https URL {url}"
            );
        }
    }
    let out = lab.etcdctl(1, &lab.endpoints(), &["endpoint", "health", "--cluster"]);
    assert!(
        out.status.success(),
        "health: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // etcdctl 3.4 prints health lines on stderr, 3.5 on stdout.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("is healthy").count(), n, "{text}");

    let first = format!("https://{}:2379", lab.ip(1));
    let last = format!("https://{}:2379", lab.ip(n));
    let put = lab.etcdctl(1, &first, &["put", "/lab/written-on-1", "hello"]);
    assert!(
        put.status.success(),
        "put: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = lab.etcdctl(
        n,
        &last,
        &["get", "--print-value-only", "/lab/written-on-1"],
    );
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "hello");

    // The cluster ID is the one every node predicted in its log.
    let status = lab.etcdctl(1, &first, &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let cluster_id = format!(
        "{:x}",
        v[0]["Status"]["header"]["cluster_id"].as_u64().unwrap()
    );
    for h in 1..=n {
        assert!(
            lab.log(h).contains(&format!("cluster ID {cluster_id})")),
            "host {h} did not predict cluster {cluster_id}"
        );
    }

    // A client certificate from another CA is refused.
    let other = lab.dir.path().join("other-ca");
    std::fs::create_dir_all(&other).unwrap();
    let (cert, key) = foreign_client_cert(&other);
    let ca = lab.host_dir(1).join("pki/ca.crt");
    let out = lab.etcdctl_with(1, &first, &ca, &cert, &key, &["get", "/lab/written-on-1"]);
    assert!(
        !out.status.success(),
        "a foreign client certificate was accepted"
    );
}

/// A client certificate signed by a CA the cluster has never seen.
fn foreign_client_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (c, k) = (dir.join("client.crt"), dir.join("client.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn srv_cluster(id: u8, version: Version, n: usize) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(n));
    if n == 5 {
        // The resolver given explicitly instead of /etc/resolv.conf.
        lab.configure_srv_with(n, &format!("nameservers = [\"{}.1:53\"]", lab.subnet));
    } else {
        lab.configure_srv(n);
    }

    // `plan` observes and prints, and writes nothing. No agent runs yet, so nobody can say it
    // holds no data: no new cluster (the peers that could not be asked are named).
    let out = lab.exec(
        1,
        std::path::Path::new(common::BIN),
        &["plan", "--config", lab.config_path(1).to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "plan: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("decision: wait: no cluster answers and these members could not be asked")
            && stdout.contains(&format!("etcd2=https://{}:2380", lab.ip(2))),
        "{stdout}"
    );
    let written: Vec<_> = std::fs::read_dir(lab.host_dir(1))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(written, vec!["config.toml"], "plan wrote files");

    let hosts: Vec<usize> = (1..=n).collect();
    lab.start(&hosts);
    let took = lab.wait_healthy(n, HEALTHY_WITHIN);
    eprintln!(
        "{n} members, etcd {}, SRV: healthy after {took:?}",
        version.as_str()
    );
    assert_cluster(&lab, n);

    // Restart every bootstrapper: the WAL decides, the data stays.
    lab.stop_all();
    lab.start(&hosts);
    lab.wait_healthy(n, HEALTHY_WITHIN);
    for h in 1..=n {
        assert!(
            lab.log(h).contains("WAL present: restarting etcd"),
            "host {h} did not take the restart path"
        );
    }
    let get = lab.etcdctl(
        2,
        &format!("https://{}:2379", lab.ip(2)),
        &["get", "--print-value-only", "/lab/written-on-1"],
    );
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "hello",
        "key lost across restart"
    );
    assert_eq!(lab.members(1).len(), n);
    // The unit etcd would run under with the systemd manager, as `plan` prints it: etcd as its
    // own unprivileged user, sandboxed; `systemd-analyze security` rates it 2.5 at most.
    let unit_path = lab.host_dir(1).join("etcd.service");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.netns(1),
            &common::bin(),
            "plan",
            "--config",
        ])
        .arg(lab.config_path(1))
        .env("ETCD_BOOTSTRAP_ETCD_SERVICE_MANAGER", "systemd")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "plan: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("etcd runs as: systemd unit etcd.service, as user etcd"),
        "{printed}"
    );
    let unit: String = printed
        .split(&format!(
            "would write {} (mode 644):\n",
            unit_path.display()
        ))
        .nth(1)
        .unwrap_or_else(|| panic!("no unit in: {printed}"))
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    assert!(unit.contains("\nUser=etcd\nGroup=etcd\n"), "{unit}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("etcd.service"), &unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(dir.path().join("etcd.service"))
        .output()
        .expect("systemd-analyze (scripts/install-deps.sh installs systemd)");
    let report = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split("exposure level for etcd.service: ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {report}"));
    eprintln!("etcd's unit: systemd-analyze security exposure {exposure}");
    assert!(exposure <= 2.5, "etcd's unit rated {exposure}:\n{report}");

    // etcd's own corruption checks run, in the form this release takes (it refuses to start on
    // a mismatch with its peers; the hash check after compactions needs 3.5.5).
    let mut checks = vec!["ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK=true"];
    if version == Version::V3_5 {
        checks.push("ETCD_EXPERIMENTAL_COMPACT_HASH_CHECK_ENABLED=true");
    }
    for h in 1..=n {
        let env = lab.etcd_environ(h);
        for check in &checks {
            assert!(
                env.iter().any(|v| v == check),
                "host {h}'s etcd runs without {check}: {env:?}"
            );
        }
    }
    // Certificates were kept, not re-issued, on the restart.
    let pki = lab.host_dir(1).join("pki");
    let before = std::fs::read(pki.join("server.crt")).unwrap();
    lab.stop_all();
    assert_eq!(std::fs::read(pki.join("server.crt")).unwrap(), before);
}

fn static_cluster(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(
        id,
        version,
        LabOptions {
            hosts: 3,
            srv: false,
            dns_hosts: None,
        },
    );
    lab.configure_static();
    lab.start(&[1, 2, 3]);
    let took = lab.wait_healthy(3, HEALTHY_WITHIN);
    eprintln!(
        "3 members, etcd {}, static peers: healthy after {took:?}",
        version.as_str()
    );
    assert_cluster(&lab, 3);
    let names: Vec<String> = lab
        .members(2)
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["node1", "node2", "node3"]);
    lab.stop_all();
}

#[test]
fn srv_3_members_etcd_3_4() {
    srv_cluster(1, Version::V3_4, 3);
}

#[test]
fn srv_3_members_etcd_3_5() {
    srv_cluster(2, Version::V3_5, 3);
}

#[test]
fn srv_5_members_etcd_3_4() {
    srv_cluster(3, Version::V3_4, 5);
}

#[test]
fn srv_5_members_etcd_3_5() {
    srv_cluster(4, Version::V3_5, 5);
}

#[test]
fn static_3_members_etcd_3_4() {
    static_cluster(5, Version::V3_4);
}

#[test]
fn static_3_members_etcd_3_5() {
    static_cluster(6, Version::V3_5);
}
