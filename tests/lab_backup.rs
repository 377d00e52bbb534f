//! Snapshots in the namespace lab, with a real S3 server (SeaweedFS over HTTPS with a lab-CA
//! certificate) and independent tools to check what is stored: boto3 downloads, `age -d`
//! decrypts, etcd's own `etcdutl`/`etcdctl snapshot restore` accepts it, and an etcd started on the
//! restored data serves every key.

mod common;

use common::{age_key, serial, Lab, LabOptions, Version, S3};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(120);

/// A lab of 3 hosts configured for SRV discovery, not started.
fn lab3(id: u8, version: Version) -> Lab {
    let lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    lab
}

/// Append `backup(lab, host)` to every host's config, start all three, wait for the cluster.
fn start_with(lab: &mut Lab, backup: impl Fn(&Lab, usize) -> String) {
    for h in 1..=3 {
        let cfg = lab.config_path(h);
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push('\n');
        text.push_str(&backup(lab, h));
        std::fs::write(&cfg, text).unwrap();
    }
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
}

/// The interval numbers each agent claimed ("taking the scheduled snapshot interval=N").
fn claimed(lab: &Lab) -> Vec<u64> {
    let mut all = vec![];
    for h in 1..=3 {
        for line in lab.log(h).lines() {
            if line.contains("taking the scheduled snapshot") {
                if let Some(n) = line
                    .split("interval=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                {
                    all.push(n);
                }
            }
        }
    }
    all.sort();
    all
}

/// The full snapshots' manifests: directly under `prefix` (the delta segments' manifests are
/// below it, in `segments/`).
fn manifests(s3: &S3, prefix: &str) -> BTreeMap<String, u64> {
    s3.list(prefix)
        .into_iter()
        .filter(|(k, _)| k.ends_with(".json") && !k[prefix.len()..].contains('/'))
        .collect()
}

/// Restore `db` with etcd's own tool, start etcd on it inside host `host` (loopback only) and
/// return the keys under `prefix` with their values.
fn restored_keys(lab: &Lab, host: usize, db: &Path, prefix: &str) -> Vec<(String, String)> {
    let dir = db.parent().unwrap().join("restored");
    let tool = if lab.version == Version::V3_5 {
        lab.version.dir().join("etcdutl")
    } else {
        lab.version.dir().join("etcdctl")
    };
    let out = Command::new(&tool)
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(db)
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} snapshot restore: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut etcd = Command::new("ip")
        .args(["netns", "exec", &lab.netns(host)])
        .arg(lab.version.dir().join("etcd"))
        .arg(format!("--data-dir={}", dir.display()))
        .args([
            "--listen-client-urls=http://127.0.0.1:22379",
            "--advertise-client-urls=http://127.0.0.1:22379",
            "--listen-peer-urls=http://127.0.0.1:22380",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let keys = loop {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.netns(host), "env", "ETCDCTL_API=3"])
            .arg(lab.version.dir().join("etcdctl"))
            .args([
                "--endpoints=http://127.0.0.1:22379",
                "get",
                "--prefix",
                prefix,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let lines: Vec<&str> = text.lines().collect();
            break lines
                .chunks(2)
                .map(|kv| (kv[0].to_string(), kv.get(1).unwrap_or(&"").to_string()))
                .collect::<Vec<_>>();
        }
        assert!(
            Instant::now() < deadline,
            "etcd on the restored data never answered"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = etcd.kill();
    let _ = etcd.wait();
    keys
}

fn sha256_file(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Encrypted snapshots every 10 s to S3 from a 3-member cluster: an independent client checks
/// the newest one end to end; one per interval across an agent restart and a leader change;
/// retention keeps what it must.
fn scheduled_snapshots(id: u8, version: Version) {
    let _g = serial();
    let keys_dir = tempfile::tempdir().unwrap();
    let (identity, public) = age_key(keys_dir.path());
    let mut lab = lab3(id, version);
    let s3 = S3::up(&lab);
    start_with(&mut lab, |lab, h| {
        s3.backup_section(
            &lab.host_dir(h),
            "fleet",
            &format!(
                "interval = \"10s\"\nkeep_last = 3\nkeep_daily = 0\nage_recipients = [\"{public}\"]\nage_identity_file = \"{}\"",
                identity.display()
            ),
        )
    });
    for i in 0..20 {
        lab.put(1, &format!("/k/{i:02}"), &format!("secret-value-{i}"));
    }
    let prefix = "fleet/lab/";
    // Snapshots land, covering the writes.
    let t = Instant::now();
    let newest = loop {
        let m = manifests(&s3, prefix);
        let recent: Vec<&String> = m.keys().collect();
        if let Some(last) = recent.last() {
            let local = keys_dir.path().join("m.json");
            assert!(s3
                .boto(&["get", last, local.to_str().unwrap()])
                .status
                .success());
            // A signed envelope: the manifest is its payload, with the member that signed it.
            let sealed: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&local).unwrap()).unwrap();
            assert_eq!(sealed["kind"], "snapshot-manifest", "{sealed}");
            assert!(sealed["signature"]["certificate"]
                .as_str()
                .unwrap()
                .contains("BEGIN CERTIFICATE"));
            let manifest = sealed["payload"].clone();
            assert!(
                !manifest["taken_by"].as_str().unwrap().is_empty(),
                "{manifest}"
            );
            if manifest["revision"].as_i64().unwrap() >= 21 {
                break manifest;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "no snapshot with the writes: {m:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    // An independent client: download, check the manifest's hash, decrypt with the age CLI,
    // restore with etcd's own tool, read every key back.
    let object = format!("{prefix}{}", newest["object"].as_str().unwrap());
    assert!(object.ends_with(".db.age"), "{object}");
    let stored = keys_dir.path().join("stored.db.age");
    assert!(s3
        .boto(&["get", &object, stored.to_str().unwrap()])
        .status
        .success());
    assert_eq!(sha256_file(&stored), newest["sha256"].as_str().unwrap());
    let bytes = std::fs::read(&stored).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    assert!(
        !bytes.windows(13).any(|w| w == b"secret-value-"),
        "the keyspace is readable in the bucket"
    );
    let plain = keys_dir.path().join("plain.db");
    let out = Command::new("age")
        .args(["-d", "-i"])
        .arg(&identity)
        .arg("-o")
        .arg(&plain)
        .arg(&stored)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = restored_keys(&lab, 1, &plain, "/k/");
    assert_eq!(keys.len(), 20, "{keys:?}");
    assert_eq!(keys[7], ("/k/07".to_string(), "secret-value-7".to_string()));

    // An agent restart and a leader change: the leader's agent stops (etcd with it), comes back.
    let leader = (1..=3)
        .find(|h| {
            let out = lab.etcdctl(
                *h,
                &lab.client_url(*h),
                &["endpoint", "status", "-w", "json"],
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v[0]["Status"]["leader"] == v[0]["Status"]["header"]["member_id"]
        })
        .expect("a leader");
    lab.stop(leader);
    std::thread::sleep(Duration::from_secs(25));
    lab.start(&[leader]);
    std::thread::sleep(Duration::from_secs(25));
    let claims = claimed(&lab);
    let mut unique = claims.clone();
    unique.dedup();
    assert_eq!(
        claims, unique,
        "two agents took the same interval: {claims:?}"
    );
    let span = claims.last().unwrap() - claims.first().unwrap() + 1;
    assert!(
        claims.len() as u64 * 10 >= span * 6,
        "fewer than 60% of the intervals had a snapshot: {claims:?}"
    );
    eprintln!("claimed intervals: {claims:?}");
    // Retention: keep_last 3 (a 4th may be in flight).
    let m = manifests(&s3, prefix);
    assert!((2..=4).contains(&m.len()), "{m:?}");
    // Every data object has its manifest, and the other way round.
    let objects: Vec<String> = s3.list(prefix).into_iter().map(|(k, _)| k).collect();
    for k in objects.iter().filter(|k| k.ends_with(".db.age")) {
        let manifest = k.trim_end_matches(".db.age").to_string() + ".json";
        assert!(
            objects.contains(&manifest),
            "{k} has no manifest: {objects:?}"
        );
    }
    // `snapshot verify` through the agent's own command, and `status` shows the last one.
    let cfg = lab.config_path(2);
    let out = lab.exec(
        2,
        Path::new(&common::bin()),
        &["snapshot", "verify", "--config", cfg.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok:"));
    let out = lab.exec(
        2,
        Path::new(&common::bin()),
        &["status", "--config", cfg.to_str().unwrap()],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("last snapshot "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(s3);
}

#[test]
fn scheduled_encrypted_snapshots_to_s3_etcd_3_5() {
    scheduled_snapshots(80, Version::V3_5);
}

#[test]
fn scheduled_encrypted_snapshots_to_s3_etcd_3_4() {
    scheduled_snapshots(81, Version::V3_4);
}

/// The file:// store and the commands: `snapshot save` prints an id, `list` shows it, `verify`
/// restores it; a corrupted object fails `verify`; no recipients: a warning at start.
fn file_store_commands(id: u8, version: Version) {
    let _g = serial();
    let store = tempfile::tempdir().unwrap();
    let store_dir = store.path().to_path_buf();
    let mut lab = lab3(id, version);
    start_with(&mut lab, |_, _| {
        format!(
            "[backup]\nurl = \"file://{}\"\ninterval = \"1h\"\n",
            store_dir.display()
        )
    });
    lab.put(1, "/file/a", "1");
    assert!(lab.log(1).contains("snapshots are stored unencrypted"));
    let cfg = lab.config_path(1);
    let cfg = cfg.to_str().unwrap();
    let bin = common::bin();
    let out = lab.exec(1, Path::new(&bin), &["snapshot", "save", "--config", cfg]);
    assert!(
        out.status.success(),
        "save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(saved.contains("-r"), "{saved}");
    let out = lab.exec(
        1,
        Path::new(&bin),
        &["snapshot", "list", "--config", cfg, "--output", "json"],
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["id"] == saved.as_str() && e["verified"] == true));
    let out = lab.exec(
        1,
        Path::new(&bin),
        &["snapshot", "verify", &saved, "--config", cfg],
    );
    assert!(
        out.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Corrupt the stored object: verify fails with exit 1.
    let object = store_dir.join("lab").join(format!("{saved}.db"));
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();
    let out = lab.exec(
        1,
        Path::new(&bin),
        &["snapshot", "verify", &saved, "--config", cfg],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("do not match"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn file_store_save_list_verify_and_a_corrupted_object_etcd_3_4() {
    file_store_commands(82, Version::V3_4);
}

/// The S3 server down for a while: errors are logged, no object without a manifest appears, and
/// snapshots resume once it is back.
fn s3_down_then_back(id: u8, version: Version) {
    let _g = serial();
    let mut lab = lab3(id, version);
    let mut s3 = S3::up(&lab);
    start_with(&mut lab, |lab, h| {
        s3.backup_section(&lab.host_dir(h), "", "interval = \"5s\"")
    });
    let prefix = "lab/";
    let t = Instant::now();
    while manifests(&s3, prefix).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(60), "no first snapshot");
        std::thread::sleep(Duration::from_secs(1));
    }
    s3.stop();
    std::thread::sleep(Duration::from_secs(15));
    let errors: usize = (1..=3)
        .map(|h| lab.log(h).matches("scheduled snapshot").count())
        .sum();
    assert!(errors > 0, "no error logged while the store was down");
    s3.start();
    let before = manifests(&s3, prefix).len();
    let t = Instant::now();
    while manifests(&s3, prefix).len() <= before {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "snapshots did not resume"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let objects: Vec<String> = s3.list(prefix).into_iter().map(|(k, _)| k).collect();
    for k in objects.iter().filter(|k| k.ends_with(".db")) {
        let manifest = k.trim_end_matches(".db").to_string() + ".json";
        assert!(
            objects.contains(&manifest),
            "{k} has no manifest: {objects:?}"
        );
    }
}

#[test]
fn the_store_down_then_back_etcd_3_5() {
    s3_down_then_back(83, Version::V3_5);
}
