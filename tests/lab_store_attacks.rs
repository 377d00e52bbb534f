//! The backup bucket is not a root of trust: each test plays an attacker who holds the bucket's
//! credentials and nothing else (no CA key, no node key, no age identity; the age recipient and
//! the cluster's names and addresses are public), writes objects with an independent client
//! (boto3) and `openssl`, and checks that nothing was harmed: the cluster ID and every key are
//! kept, no file is written or removed outside the scratch directories, memory and disk stay
//! bounded, and every forged object is reported as untrusted.
//!
//! Real etcd (3.4.23 and 3.5.30), the real S3 server (SeaweedFS over HTTPS), real age.

mod common;

use common::{serial, Lab, LabOptions, Version, S3};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(120);
/// Heal ticks (heal.interval = 2s in the lab) an agent gets to act on a forged object.
const TICKS: Duration = Duration::from_secs(8);

/// The attacker's tool: boto3 with the bucket's credentials, openssl for a CA of its own.
const ATTACKER: &str = r#"
import sys, json, hashlib, subprocess, os
import boto3
from botocore.config import Config
endpoint, ca, key_id, secret, bucket, op = sys.argv[1:7]
rest = sys.argv[7:]
s3 = boto3.client("s3", endpoint_url=endpoint, verify=ca, aws_access_key_id=key_id,
                  aws_secret_access_key=secret, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                                connect_timeout=3, read_timeout=30))

def put(key, body):
    s3.put_object(Bucket=bucket, Key=key, Body=body)

def get(key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()

def sh(*args):
    subprocess.run(args, check=True, capture_output=True)

def attacker_signed(kind, payload, cn, work):
    # Everything a member's signature has, from a CA of the attacker's own: the right key type,
    # both usages, the member's name. Only the chain to the cluster's CA is missing.
    os.makedirs(work, exist_ok=True)
    ca_key, ca_crt = work + "/ca.key", work + "/ca.crt"
    key, csr, crt, ext = work + "/m.key", work + "/m.csr", work + "/m.crt", work + "/ext"
    if not os.path.exists(crt):
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-keyout", ca_key, "-out", ca_crt, "-subj", "/CN=etcd-bootstrap CA", "-days", "2")
        sh("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        open(ext, "w").write("extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:" + cn + "\n")
        sh("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
           "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt)
    msg = b"etcd-bootstrap signed object v1\0" + kind.encode() + b"\0" + payload.encode()
    open(work + "/msg", "wb").write(msg)
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key, work + "/msg"],
                         check=True, capture_output=True).stdout
    import base64
    signature = {"scheme": "ecdsa-p256-sha256", "value": base64.b64encode(sig).decode(),
                 "certificate": open(crt).read()}
    return '{"kind": "%s", "payload": %s, "signature": %s}' % (kind, payload, json.dumps(signature))

if op == "request":
    # A restore request for an older snapshot of this very cluster: its ID is in every manifest,
    # its members' names and peer URLs are in DNS.
    key, snapshot, from_cluster, members, cluster, signed, work = rest
    members = sorted(json.loads(members), key=lambda m: m["peer_url"])
    rid = "20261207T000000Z-abcdef"
    urls = ",".join(m["peer_url"] for m in members)
    digest = hashlib.sha256(("%s|restore:%s|request:%s" % (urls, snapshot, rid)).encode()).hexdigest()
    req = {"id": rid, "snapshot": snapshot, "requested": "2026-12-07T00:00:00Z", "by": members[0]["name"],
           "from_cluster": from_cluster, "members": members, "token": cluster + "-" + digest[:12],
           "cluster": cluster}
    payload = json.dumps(req, indent=2)
    body = attacker_signed("restore-request", payload, members[0]["name"], work) if signed == "signed" else payload
    put(key, body.encode())
elif op == "manifest":
    # A manifest of the attacker's, copied from a real one with `changes` applied; the data
    # object copied under its new name when `copy_data` is given.
    dir_, real_id, new_id, changes, signed, copy_data, work = rest
    sealed = json.loads(get(dir_ + real_id + ".json"))
    m = sealed["payload"]
    m.update(json.loads(changes))
    m["id"] = new_id
    payload = json.dumps(m, indent=2)
    body = attacker_signed("snapshot-manifest", payload, m["taken_by"], work) if signed == "signed" else payload
    put(dir_ + new_id + ".json", body.encode())
    if copy_data == "copy":
        put(dir_ + m["object"], get(dir_ + real_id + (".db.age" if m["encrypted"] else ".db")))
elif op == "segment":
    # A delta segment of the attacker's in a chain's directory, copied from a real one (its data
    # too) and claiming revisions FIRST-LAST.
    dir_, real_id, first, last, signed, work = rest
    sealed = json.loads(get(dir_ + real_id + ".json"))
    m = sealed["payload"]
    suffix = ".seg.age" if m["encrypted"] else ".seg"
    new_id = "%s-r%s-%s" % (real_id.split("-r")[0], first, last)
    m.update({"id": new_id, "first_revision": int(first), "last_revision": int(last),
              "object": new_id + suffix})
    payload = json.dumps(m, indent=2)
    body = attacker_signed("segment-manifest", payload, m["taken_by"], work) if signed == "signed" else payload
    put(dir_ + new_id + ".json", body.encode())
    put(dir_ + m["object"], get(dir_ + real_id + suffix))
elif op == "junk":
    key, mib = rest
    put(key, os.urandom(1024 * 1024) * int(mib))
"#;

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn cluster_id(lab: &Lab) -> u64 {
    lab.member_list(1).unwrap()["header"]["cluster_id"]
        .as_u64()
        .unwrap()
}

/// Every key of the cluster with its value, through host 1.
fn all_keys(lab: &Lab) -> Vec<String> {
    let out = lab.etcdctl(1, &lab.client_url(1), &["get", "", "--prefix=true"]);
    let text = ok(&out, "etcdctl get");
    let lines: Vec<&str> = text.lines().collect();
    // Key and value lines; the agents' own bookkeeping (snapshot claims) left out.
    lines
        .chunks(2)
        .filter(|kv| !kv[0].starts_with("/etcd-bootstrap/"))
        .map(|kv| format!("{}={}", kv[0], kv.get(1).unwrap_or(&"")))
        .collect()
}

fn command(lab: &Lab, host: usize, args: &[&str]) -> Output {
    let cfg = lab.config_path(host);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", cfg.to_str().unwrap()]);
    lab.exec(host, Path::new(&common::bin()), &all)
}

/// Peak memory (KiB) of `etcd-bootstrap ARGS` run in host `host`, and its output.
fn peak_rss_kib(lab: &Lab, host: usize, args: &[&str]) -> (u64, Output) {
    const MEASURE: &str = "import resource, subprocess, sys\n\
        r = subprocess.run(sys.argv[1:], capture_output=True)\n\
        sys.stderr.buffer.write(r.stderr)\n\
        sys.stdout.buffer.write(r.stdout)\n\
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n";
    let cfg = lab.config_path(host);
    let bin = common::bin();
    let mut all: Vec<&str> = vec!["-c", MEASURE, &bin];
    all.extend(args);
    all.extend(["--config", cfg.to_str().unwrap()]);
    let out = lab.exec(host, Path::new("/usr/bin/python3"), &all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(u64::MAX);
    (kib, out)
}

fn attack(s3: &S3, args: &[&str]) {
    let out = s3.python_with_bucket(ATTACKER, args);
    ok(&out, &format!("attacker {}", args[0]));
}

/// A healthy 3-member lab with `[backup]` on the lab's S3 server (prefix "fleet"), snapshots
/// encrypted to a new age key kept in the returned directory.
fn lab_with_store(id: u8, version: Version) -> (Lab, S3, tempfile::TempDir) {
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    let s3 = S3::up(&lab);
    let keys_dir = common::with_encrypted_backup(&lab, &s3, "fleet");
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    (lab, s3, keys_dir)
}

fn bucket_attacks(id: u8, version: Version) {
    let _g = serial();
    let (mut lab, s3, keys_dir) = lab_with_store(id, version);
    let work = keys_dir.path().join("attacker");
    let work = work.to_str().unwrap();
    let dir = "fleet/lab/";

    lab.put(1, "/a/1", "old");
    let snap_a = ok(&command(&lab, 2, &["snapshot", "save"]), "save")
        .trim()
        .to_string();
    lab.put(2, "/b/1", "newer");
    std::thread::sleep(Duration::from_millis(1100)); // ids have a resolution of a second
    let snap_b = ok(&command(&lab, 2, &["snapshot", "save"]), "save")
        .trim()
        .to_string();
    lab.put(3, "/c/1", "after every snapshot");
    let cluster = cluster_id(&lab);
    let keys = all_keys(&lab);
    assert!(
        keys.contains(&"/c/1=after every snapshot".to_string()),
        "{keys:?}"
    );
    let members: Vec<serde_json::Value> = lab
        .members(1)
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m["name"],
                "peer_url": m["peerURLs"][0],
                "client_url": m["clientURLs"][0],
            })
        })
        .collect();
    let members = serde_json::Value::from(members).to_string();
    let unharmed = |lab: &Lab, what: &str| {
        assert_eq!(cluster_id(lab), cluster, "{what}: the cluster ID changed");
        assert_eq!(all_keys(lab), keys, "{what}: the keys changed");
    };

    // 1. Rollback by request: a request for the older snapshot, written by hand, then one
    //    signed by a CA of the attacker's own. Before signing, all three members restored it
    //    within about 5 s.
    for signed in ["unsigned", "signed"] {
        attack(
            &s3,
            &[
                "request",
                &format!("{dir}restore/request.json"),
                &snap_a,
                &format!("{cluster:x}"),
                &members,
                "lab",
                signed,
                work,
            ],
        );
        std::thread::sleep(TICKS);
        unharmed(&lab, &format!("a forged ({signed}) restore request"));
    }
    assert!(
        lab.log(1)
            .contains("the restore request in the store is not trusted"),
        "{}",
        lab.log(1)
    );

    // 2. Pinned "newest" and files written as root: manifests of the attacker's under ids that
    //    sort after every real one, one pointing its data object outside the store's directory,
    //    one at the live database.
    let canary = Path::new("/tmp").join(format!("ebt{id}-pwned"));
    let _ = std::fs::remove_file(&canary);
    let data_db = lab.host_dir(1).join("data/member/snap/db");
    let db_size = std::fs::metadata(&data_db).unwrap().len();
    let forged = [
        (
            "20991231T235959Z-r9999",
            serde_json::json!({"created": "2099-12-31T23:59:59Z", "revision": 9999}).to_string(),
            "unsigned",
            "copy",
        ),
        (
            "20991230T000000Z-r9998",
            serde_json::json!({"created": "2099-12-30T00:00:00Z", "revision": 9998,
                "object": format!("../../../../../../../../..{}", canary.display())})
            .to_string(),
            "signed",
            "no",
        ),
        (
            "20991229T000000Z-r9997",
            serde_json::json!({"created": "2099-12-29T00:00:00Z", "revision": 9997,
                "object": data_db.display().to_string()})
            .to_string(),
            "signed",
            "no",
        ),
        (
            // A time in the past, so that only the chain to the cluster's CA is missing.
            "20261207T000002Z-r9996",
            serde_json::json!({"created": "2026-12-07T00:00:02Z", "revision": 9996}).to_string(),
            "signed",
            "copy",
        ),
    ];
    for (new_id, changes, signed, copy) in &forged {
        attack(
            &s3,
            &[
                "manifest", dir, &snap_a, new_id, changes, signed, copy, work,
            ],
        );
    }
    let out = command(&lab, 1, &["snapshot", "list", "--output", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&ok(&out, "snapshot list")).unwrap();
    let rows = rows.as_array().unwrap();
    // The newest is a snapshot the members took (snap_b, or one the agents' schedule took
    // since), never one of the attacker's.
    assert_eq!(rows[0]["trusted"], true, "newest: {rows:?}");
    let newest = rows[0]["id"].as_str().unwrap().to_string();
    assert!(
        newest >= snap_b && !newest.starts_with("2099"),
        "newest: {rows:?}"
    );
    for (new_id, ..) in &forged {
        let row = rows
            .iter()
            .find(|r| r["object"].as_str() == Some(&format!("{new_id}.json")))
            .unwrap_or_else(|| panic!("{new_id} not listed: {rows:?}"));
        assert_eq!(row["trusted"], false, "{row}");
    }
    let chain = rows
        .iter()
        .find(|r| r["object"] == "20261207T000002Z-r9996.json")
        .unwrap();
    assert!(
        chain["why"]
            .as_str()
            .unwrap()
            .contains("not signed by the CA"),
        "{chain}"
    );
    let out = ok(
        &command(&lab, 1, &["snapshot", "verify", "latest"]),
        "verify",
    );
    assert!(out.starts_with(&newest), "verify latest took {out}");
    let out = command(&lab, 1, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("last snapshot {newest}")), "{text}");
    assert!(text.contains("4 untrusted object(s)"), "{text}");
    let out = command(&lab, 1, &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("store-trust"), "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    std::thread::sleep(TICKS);
    assert!(!canary.exists(), "the attacker wrote {}", canary.display());
    assert!(
        std::fs::metadata(&data_db).unwrap().len() >= db_size,
        "the live database was truncated"
    );
    unharmed(&lab, "forged manifests");

    // 3. Directories deleted: an id with a path in it names no snapshot and touches nothing.
    let victim = keys_dir.path().join("victim");
    std::fs::create_dir_all(victim.join("inside")).unwrap();
    let rel = format!("../../../../../../..{}", victim.display());
    let out = command(&lab, 1, &["snapshot", "verify", &rel]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a snapshot id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        victim.join("inside").is_dir(),
        "{} was removed",
        victim.display()
    );

    // 4. Unbounded reads: the newest snapshot's data object replaced by 64 MiB of junk; its
    //    signed manifest says a few KiB. The download stops at the signed size.
    let object = rows[0]["object"].as_str().unwrap().to_string();
    attack(&s3, &["junk", &format!("{dir}{object}"), "64"]);
    let t = Instant::now();
    let out = command(&lab, 1, &["snapshot", "verify", &newest]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("larger than"), "{err}");
    eprintln!("junk object refused in {:?}", t.elapsed());
    let left: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("etcd-bootstrap-verify")
        })
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");

    //    And a 100 MiB "manifest" under a valid name: listed as untrusted without being read.
    attack(
        &s3,
        &["junk", &format!("{dir}20261207T000001Z-r1.json"), "100"],
    );
    let (kib, out) = peak_rss_kib(&lab, 1, &["snapshot", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("UNTRUSTED 20261207T000001Z-r1.json"),
        "{text}"
    );
    eprintln!("snapshot list with a 100 MiB junk manifest: peak RSS {kib} KiB");
    assert!(kib < 60 * 1024, "peak RSS {kib} KiB");

    unharmed(&lab, "after every attack");
    for h in 1..=3 {
        assert!(lab.running(h), "host {h}'s agent exited");
    }
    drop(s3);
}

#[test]
fn bucket_only_attacker_gains_nothing_etcd_3_5() {
    bucket_attacks(140, Version::V3_5);
}

#[test]
fn bucket_only_attacker_gains_nothing_etcd_3_4() {
    bucket_attacks(141, Version::V3_4);
}

/// Two `restore` commands at the same moment, from two members: before the request was written
/// with a conditional write, both "won", the members followed whichever they read first (one
/// was left alone on the other: "cluster ID mismatch"), and the first command said the members
/// follow the second. Now exactly one request is written, the other command says so and changes
/// nothing, and every member ends in the one restored cluster.
#[test]
fn racing_restore_requests_do_not_split_the_fleet_etcd_3_5() {
    let _g = serial();
    let (lab, s3, _keys) = lab_with_store(142, Version::V3_5);
    lab.put(1, "/before", "kept");
    let snap = ok(&command(&lab, 2, &["snapshot", "save"]), "save")
        .trim()
        .to_string();
    lab.put(1, "/after", "gone after the restore");
    let old = cluster_id(&lab);
    let bin = common::bin();
    let racers: Vec<std::process::Child> = [1, 2]
        .iter()
        .map(|h| {
            let cfg = lab.config_path(*h);
            std::process::Command::new("ip")
                .args(["netns", "exec", &lab.netns(*h), &bin])
                .args(["restore", "--from", &snap, "--yes", "--timeout", "3m"])
                .arg("--config")
                .arg(&cfg)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let text = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let won: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
    let lost: Vec<&Output> = outs.iter().filter(|o| !o.status.success()).collect();
    assert_eq!(
        (won.len(), lost.len()),
        (1, 1),
        "{}\n---\n{}",
        text(&outs[0]),
        text(&outs[1])
    );
    let why = text(lost[0]);
    eprintln!("the command that lost the race said: {}", why.trim());
    assert!(
        why.contains("another restore request was written") || why.contains("still in progress"),
        "{why}"
    );
    assert!(!why.contains("superseded"), "{why}");
    // One request in the store, and every member in the one cluster it restores.
    let requests: Vec<(String, u64)> = s3
        .list("fleet/lab/restore/")
        .into_iter()
        .filter(|(k, _)| k.ends_with("request.json"))
        .collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    let t = Instant::now();
    loop {
        let ids: Vec<u64> = (1..=3)
            .map(|h| {
                lab.member_list(h)
                    .map(|v| v["header"]["cluster_id"].as_u64().unwrap_or_default())
                    .unwrap_or_default()
            })
            .collect();
        if ids.iter().all(|c| *c == ids[0] && *c != old && *c != 0) {
            break;
        }
        assert!(
            t.elapsed() < WITHIN,
            "the members are not in one restored cluster: {ids:x?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(lab.get(3, "/before").as_deref(), Some("kept"));
    // (etcdctl prints nothing for a key that is not there)
    assert_eq!(lab.get(3, "/after").as_deref(), Some(""));
}

/// The segments of the newest chain in the store, as (chain directory, id, first, last revision),
/// by their names, oldest first.
fn segments(s3: &S3) -> Vec<(String, String, i64, i64)> {
    let mut out: Vec<(String, String, i64, i64)> = s3
        .list("fleet/lab/segments/")
        .iter()
        .filter_map(|(k, _)| {
            let (dir, name) = k.rsplit_once('/')?;
            let id = name.strip_suffix(".json")?;
            let (head, last) = id.rsplit_once('-')?;
            let first = head.rsplit_once("-r")?.1;
            Some((
                format!("{dir}/"),
                id.to_string(),
                first.parse().ok()?,
                last.parse().ok()?,
            ))
        })
        .collect();
    out.sort_by_key(|s| (s.0.clone(), s.3));
    if let Some(newest_dir) = out.iter().map(|s| s.0.clone()).max() {
        out.retain(|s| s.0 == newest_dir);
    }
    out
}

/// Delta segments are signed like everything else in the store. An attacker with the bucket's
/// credentials adds segments to the newest chain that claim revisions far ahead of the cluster's
/// (one unsigned, one signed under a CA of its own), with a real segment's data: the uploader is
/// not steered by them (the next genuine segment starts right after the last genuine one: no
/// hole), `snapshot list` counts only the genuine chain, `snapshot verify` names a forged
/// segment, and every key and the cluster ID are kept.
#[test]
fn forged_delta_segments_neither_steer_nor_break_the_chain_etcd_3_5() {
    let _g = serial();
    let (mut lab, s3, keys_dir) = lab_with_store(245, Version::V3_5);
    let work = keys_dir.path().join("attacker");
    let work = work.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut i = 0;
    while segments(&s3).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no two delta segments within 90 s: {:?}",
            segments(&s3)
        );
        i += 1;
        lab.put(1, &format!("/d/{i}"), "genuine");
        std::thread::sleep(Duration::from_secs(1));
    }
    let cluster = cluster_id(&lab);
    let genuine = segments(&s3);
    let (dir, newest, _, last) = genuine.last().unwrap().clone();
    let next = last + 1;
    let far = [(next + 1_000_000, "unsigned"), (next + 2_000_000, "signed")];
    for (to, signed) in far {
        attack(
            &s3,
            &[
                "segment",
                &dir,
                &newest,
                &next.to_string(),
                &to.to_string(),
                signed,
                work,
            ],
        );
    }
    let forged: Vec<String> = far
        .iter()
        .map(|(to, _)| format!("{}-r{next}-{to}", newest.split("-r").next().unwrap()))
        .collect();
    // More writes: the uploader goes on from the last genuine segment.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        i += 1;
        lab.put(2, &format!("/e/{i}"), "after the forgery");
        let after = segments(&s3);
        if let Some(s) = after.iter().find(|s| s.2 == next && s.3 < next + 1000) {
            eprintln!("the next genuine segment: {}", s.1);
            break;
        }
        assert!(
            !after.iter().any(|s| s.2 > next + 1000),
            "a segment was chained after a forged one: {after:?}"
        );
        assert!(
            Instant::now() < deadline,
            "no genuine segment from revision {next} within 60 s: {after:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let logs: String = (1..=3).map(|h| lab.log(h)).collect();
    assert!(
        forged.iter().all(|f| logs.contains(f.as_str())),
        "the agents did not report both forged segments as untrusted"
    );
    let out = command(&lab, 2, &["snapshot", "list", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last_listed = listed[0]["chain"]["last_revision"]
        .as_i64()
        .unwrap_or(i64::MAX);
    assert!(
        last_listed >= next && last_listed < next + 1000,
        "{}",
        listed[0]
    );
    let out = command(&lab, 2, &["snapshot", "verify"]);
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("verify: {}", said.trim());
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(forged.iter().any(|f| said.contains(f.as_str())), "{said}");
    assert_eq!(cluster_id(&lab), cluster);
    let keys = all_keys(&lab);
    assert!(
        keys.iter().any(|k| k.starts_with("/e/")) && keys.iter().any(|k| k.starts_with("/d/")),
        "{keys:?}"
    );
    lab.stop_all();
}
