//! Delta segments in the namespace lab, with a real S3 server (SeaweedFS) and independent tools
//! to check what is stored: boto3 lists and downloads, the `age` CLI decrypts, Python reads the
//! segment's lines and walks the hash chain; the agent's own `snapshot verify` walks it too.

mod common;

use common::{serial, Lab, LabOptions, Version, S3};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `find PREFIX IDENTITY KEY VALUE SINCE TIMEOUT`: poll the store until a segment holds a put of
/// KEY with VALUE (or a delete of KEY when VALUE is "<deleted>"); print how long after SINCE (a
/// Unix time, the write's acknowledgement) it was first seen, the segment's manifest and the
/// event. `chain PREFIX`: walk the chain of the newest full snapshot with its manifests'
/// hashes and revisions; print its length and last revision. Exit 1 when not found or broken.
const SCRIPT: &str = r#"
import sys, json, time, base64, hashlib, subprocess, boto3
from botocore.config import Config
endpoint, ca, key_id, secret, bucket, op = sys.argv[1:7]
rest = sys.argv[7:]
s3 = boto3.client("s3", endpoint_url=endpoint, verify=ca, aws_access_key_id=key_id,
                  aws_secret_access_key=secret, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                connect_timeout=3, read_timeout=10))

def keys(prefix):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out

def get(key):
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()

def payload(key, kind):
    env = json.loads(get(key))
    assert env["kind"] == kind, env
    assert "BEGIN CERTIFICATE" in env["signature"]["certificate"]
    return env["payload"]

def lines(prefix, m, identity):
    data = get(prefix + "segments/" + m["base"] + "/" + m["object"])
    assert hashlib.sha256(data).hexdigest() == m["sha256"], m["id"]
    assert data.startswith(b"age-encryption.org/v1"), m["id"]
    plain = subprocess.run(["age", "-d", "-i", identity], input=data, capture_output=True, check=True).stdout
    head, _, body = plain.partition(b"\n")
    assert head == b"etcd-bootstrap segment v1", head
    return [json.loads(l) for l in body.split(b"\n") if l]

if op == "find":
    prefix, identity, want_key, want_value, since, timeout = rest
    deadline = time.time() + float(timeout)
    seen = set()
    while time.time() < deadline:
        for k in keys(prefix + "segments/"):
            if not k.endswith(".json") or k in seen:
                continue
            seen.add(k)
            m = payload(k, "segment-manifest")
            for rev in lines(prefix, m, identity):
                for e in rev["events"]:
                    assert e["mod_revision"] == rev["revision"]
                    if base64.b64decode(e["key"]).decode("utf-8", "replace") != want_key:
                        continue
                    if want_value == "<deleted>" and e["type"] == "delete" or \
                       e["type"] == "put" and base64.b64decode(e["value"]).decode() == want_value:
                        print(json.dumps({"after": time.time() - float(since), "manifest": m, "event": e}))
                        sys.exit(0)
        time.sleep(0.1)
    print("not found in %d segment manifests" % len(seen), file=sys.stderr)
    sys.exit(1)
elif op == "chain":
    prefix, = rest
    bases = [payload(k, "snapshot-manifest") for k in keys(prefix)
             if k.endswith(".json") and "/" not in k[len(prefix):]]
    base = max(bases, key=lambda b: (b["created"], b["revision"]))
    segs = [payload(k, "segment-manifest") for k in keys(prefix + "segments/" + base["id"] + "/")
            if k.endswith(".json")]
    segs.sort(key=lambda m: m["first_revision"])
    prev, prev_sha, nxt = base["id"], base["sha256"], base["revision"] + 1
    for m in segs:
        if m["previous"] != prev or m["previous_sha256"] != prev_sha or m["first_revision"] != nxt:
            print("chain breaks at", m["id"], file=sys.stderr)
            sys.exit(1)
        data = get(prefix + "segments/" + base["id"] + "/" + m["object"])
        if hashlib.sha256(data).hexdigest() != m["sha256"]:
            print("stored bytes of", m["id"], "do not match", file=sys.stderr)
            sys.exit(1)
        prev, prev_sha, nxt = m["id"], m["sha256"], m["last_revision"] + 1
    print(json.dumps({"base": base["id"], "segments": len(segs), "last_revision": nxt - 1}))
"#;

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// How long after `since` a segment in the store held the put (or delete) of `key`.
fn find(
    lab: &Lab,
    s3: &S3,
    identity: &Path,
    key: &str,
    value: &str,
    since: f64,
    timeout: u64,
) -> Value {
    let out = s3.python_with_bucket(
        SCRIPT,
        &[
            "find",
            "fleet/lab/",
            identity.to_str().unwrap(),
            key,
            value,
            &since.to_string(),
            &timeout.to_string(),
        ],
    );
    if !out.status.success() {
        // What the agents said about deltas.
        for h in 1..=3 {
            for l in lab.log(h).lines().filter(|l| {
                l.contains("delta")
                    || l.contains("snapshot")
                    || l.contains("WARN")
                    || l.contains("ERROR")
            }) {
                eprintln!("host {h}: {l}");
            }
        }
        panic!(
            "{key}={value} not in a segment within {timeout} s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

const METRICS_PORT: u16 = 9479;

/// `doctor` on `host`: its exit code and its output.
fn run_doctor(lab: &Lab, host: usize) -> (Option<i32>, String) {
    let cfg = lab.config_path(host);
    let out = lab.exec(
        host,
        Path::new(&common::bin()),
        &["doctor", "--config", cfg.to_str().unwrap()],
    );
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The text of `GET /metrics` of host `h`'s agent.
fn scrape(lab: &Lab, h: usize) -> String {
    let url = format!("http://{}:{METRICS_PORT}/metrics", lab.ip(h));
    let out = lab.exec(
        h,
        &S3::python(),
        &[
            "-c",
            "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())",
            &url,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The value of the sample `name` (no labels), 0 when absent.
fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Writes after a full snapshot are in the store, in encrypted, signed, chained segments, within
/// `delta_interval` (the default, 5 s) + 1 s of their acknowledgement.
fn writes_reach_the_store_within_the_interval(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    let s3 = S3::up(&lab);
    let keys_dir = common::with_encrypted_backup(&lab, &s3, "fleet");
    for h in 1..=3 {
        let cfg = lab.config_path(h);
        let text = std::fs::read_to_string(&cfg).unwrap();
        let metrics = format!("\n[metrics]\nlisten = \"{}:{METRICS_PORT}\"\n", lab.ip(h));
        std::fs::write(&cfg, text + &metrics).unwrap();
    }
    let identity = keys_dir.path().join("age-identity.txt");
    let t = Instant::now();
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(120));
    // The first full snapshot (the base of the first chain: writes before it are in it)...
    let deadline = Instant::now() + Duration::from_secs(40);
    while !s3
        .list("fleet/lab/")
        .iter()
        .any(|(k, _)| k.ends_with(".json") && !k["fleet/lab/".len()..].contains('/'))
    {
        assert!(Instant::now() < deadline, "no full snapshot within 40 s");
        std::thread::sleep(Duration::from_millis(300));
    }
    // ...then the claim and the first segment: a first write after it is found at all.
    lab.put(1, "/d/warm", "up");
    let warm = find(&lab, &s3, &identity, "/d/warm", "up", now_unix(), 40);
    eprintln!(
        "first segment after {:.1} s (cluster up after {:.1} s)",
        warm["after"],
        t.elapsed().as_secs_f64()
    );
    // Then each write is in the store within 5 s + 1 s, whenever in the interval it is made.
    let mut lags = vec![];
    for (i, pause_ms) in [0u64, 1700, 3300].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(pause_ms));
        let key = format!("/d/{i}");
        let value = format!("value-{i}");
        lab.put(1 + i % 3, &key, &value);
        let since = now_unix();
        let found = find(&lab, &s3, &identity, &key, &value, since, 20);
        let lag = found["after"].as_f64().unwrap();
        let e = &found["event"];
        assert_eq!(e["type"], "put", "{found}");
        assert_eq!(e["version"], 1, "{found}");
        assert_eq!(e["create_revision"], e["mod_revision"], "{found}");
        let m = &found["manifest"];
        assert!(m["encrypted"].as_bool().unwrap(), "{m}");
        assert!(
            m["first_revision"].as_i64() <= e["mod_revision"].as_i64()
                && e["mod_revision"].as_i64() <= m["last_revision"].as_i64(),
            "{found}"
        );
        lags.push(lag);
    }
    // A delete is an event of its own.
    let out = lab.etcdctl(1, &lab.endpoints(), &["del", "/d/0"]);
    assert!(out.status.success());
    let since = now_unix();
    let found = find(&lab, &s3, &identity, "/d/0", "<deleted>", since, 20);
    lags.push(found["after"].as_f64().unwrap());
    eprintln!("write acknowledged -> in a segment in the store, seconds: {lags:.1?}");
    for lag in &lags {
        assert!(
            *lag <= 6.0,
            "a write took {lag:.1} s to reach the store: {lags:?}"
        );
    }
    // The hash chain, walked by the independent client...
    let out = s3.python_with_bucket(SCRIPT, &["chain", "fleet/lab/"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chain: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(chain["segments"].as_u64().unwrap() >= 4, "{chain}");
    // ...and by the agent's own `snapshot verify`.
    let cfg = lab.config_path(2);
    let out = lab.exec(
        2,
        Path::new(&common::bin()),
        &["snapshot", "verify", "--config", cfg.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("chain ok: "),
        "verify: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", stdout.trim());
    // `snapshot list` shows each full snapshot's chain, the same one the independent client
    // walked (at least as long: the uploader goes on).
    let out = lab.exec(
        2,
        Path::new(&common::bin()),
        &[
            "snapshot",
            "list",
            "--output",
            "json",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    let listed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let newest = &listed[0];
    assert!(
        newest["trusted"] == true
            && newest["chain"]["segments"].as_u64().unwrap_or(0)
                >= chain["segments"].as_u64().unwrap()
            && newest["chain"]["last_revision"].as_i64().unwrap_or(0)
                > newest["chain"]["first_revision"].as_i64().unwrap(),
        "{newest}"
    );
    let out = lab.exec(
        2,
        Path::new(&common::bin()),
        &["snapshot", "list", "--config", cfg.to_str().unwrap()],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(" segments, ") && table.contains(" events, revisions "),
        "{table}"
    );
    eprintln!("{}", table.trim());

    // Visible: `status`, `doctor` and /metrics show the chain and its newest segment's age.
    let out = lab.exec(
        2,
        Path::new(&common::bin()),
        &["status", "--config", cfg.to_str().unwrap()],
    );
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.contains("delta segments: ") && !status.contains("WARNING: older than three"),
        "{status}"
    );
    let (code, doctor) = run_doctor(&lab, 2);
    assert!(
        doctor.lines().any(|l| l.starts_with("OK   delta: ")),
        "{code:?} {doctor}"
    );
    let scraped: Vec<(f64, f64)> = (1..=3)
        .map(|h| {
            let body = scrape(&lab, h);
            (
                metric(
                    &body,
                    "etcd_bootstrap_delta_segment_last_success_timestamp_seconds",
                ),
                metric(&body, "etcd_bootstrap_delta_chain_segments"),
            )
        })
        .collect();
    let newest = scraped.iter().map(|s| s.0).fold(0.0, f64::max);
    let segments = scraped.iter().map(|s| s.1).fold(0.0, f64::max);
    assert!(now_unix() - newest < 10.0 && segments >= 4.0, "{scraped:?}");

    // No uploader for 3 x delta_interval while writes go on: every agent stopped (SIGSTOP; etcd
    // keeps serving), `doctor` fails naming the stale chain.
    let pids: Vec<i32> = (1..=3).map(|h| lab.agent_pid(h).unwrap() as i32).collect();
    for p in &pids {
        unsafe { libc::kill(*p, libc::SIGSTOP) };
    }
    let stopped = Instant::now();
    let out = lab.etcdctl(1, &lab.endpoints(), &["put", "/d/unsaved", "x"]);
    assert!(out.status.success());
    std::thread::sleep(Duration::from_secs(16).saturating_sub(stopped.elapsed()));
    let (code, doctor) = run_doctor(&lab, 2);
    // Compaction racing the watch: etcd's history compacted past the chain's end while no
    // uploader runs (the revision of the unsaved write is gone from history). The stopped
    // agents are then killed and started again (etcd stops with them and restarts from its
    // data): a watch opened before the compaction would still get the events (etcd goes on
    // feeding a watcher that was in sync, which leaves no hole: seen under CI load), so only
    // fresh agents show that the uploader finds the compaction by itself.
    let compacted_at = lab.revision(1);
    let out = lab.etcdctl(1, &lab.endpoints(), &["compact", &compacted_at.to_string()]);
    assert!(
        out.status.success(),
        "compact: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in &pids {
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    for h in 1..=3 {
        assert_eq!(lab.wait_exit(h, Duration::from_secs(10)), None);
    }
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(120));
    assert_eq!(code, Some(1), "{doctor}");
    let fail = doctor
        .lines()
        .find(|l| l.starts_with("FAIL delta: "))
        .unwrap_or_else(|| panic!("no FAIL delta line: {doctor}"));
    assert!(
        fail.contains("more than 3 x backup.delta_interval (5s)"),
        "{fail}"
    );
    eprintln!("{fail}");
    // The uploader meets the compacted revision: it takes a full snapshot at once (counted with
    // reason "compacted"), not a segment over a hole; the new chain starts at or past it.
    let full_revisions = |s3: &S3| -> Vec<i64> {
        s3.list("fleet/lab/")
            .iter()
            .filter_map(|(k, _)| {
                let name = k.strip_prefix("fleet/lab/")?.strip_suffix(".json")?;
                (!name.contains('/')).then(|| name.rsplit_once("-r")?.1.parse().ok())?
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counted: f64 = (1..=3)
            .map(|h| {
                metric(
                    &scrape(&lab, h),
                    "etcd_bootstrap_delta_full_snapshots_total{reason=\"compacted\"}",
                )
            })
            .sum();
        let newest = full_revisions(&s3).into_iter().max().unwrap_or(0);
        if counted >= 1.0 && newest >= compacted_at {
            eprintln!("compacted at revision {compacted_at}: a full snapshot at revision {newest}, counted {counted}");
            break;
        }
        if Instant::now() > deadline {
            lab.dump_logs();
            panic!("no full snapshot for the compacted history within 60 s (counted {counted}, newest full snapshot at revision {newest}, compacted at {compacted_at})");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let logs: String = (1..=3).map(|h| lab.log(h)).collect();
    assert!(
        logs.contains("but etcd compacted its history"),
        "the reason was not logged"
    );
    let out = lab.exec(
        2,
        Path::new(&common::bin()),
        &["snapshot", "verify", "--config", cfg.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "verify after the compaction: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("took {:.1} s", t.elapsed().as_secs_f64());
    lab.stop_all();
}

#[test]
fn writes_reach_the_store_within_the_delta_interval_etcd_3_5() {
    writes_reach_the_store_within_the_interval(210, Version::V3_5);
}

#[test]
fn writes_reach_the_store_within_the_delta_interval_etcd_3_4() {
    writes_reach_the_store_within_the_interval(244, Version::V3_4);
}

/// The newest snapshot as `snapshot list --output json` on host 2 shows it, with its chain
/// (`Null` when the command gave nothing to parse).
fn newest_listed(lab: &Lab) -> Value {
    let cfg = lab.config_path(2);
    let out = lab.exec(
        2,
        Path::new(&common::bin()),
        &[
            "snapshot",
            "list",
            "--output",
            "json",
            "--config",
            cfg.to_str().unwrap(),
        ],
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    listed[0].clone()
}

/// The host whose agent holds the delta claim (its value is the holder's member name, etcdN).
fn claim_holder(lab: &Lab) -> Option<usize> {
    let out = lab.etcdctl(
        1,
        &lab.endpoints(),
        &[
            "get",
            "/etcd-bootstrap/snapshots/lab/delta-claim",
            "--print-value-only",
        ],
    );
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    name.strip_prefix("etcd")?.parse().ok()
}

/// No gap, no overlap: while keys are written, the agent holding the delta claim and its etcd are
/// killed with SIGKILL at a random moment of the segment it is filling, twice (each time started
/// again, as systemd would). Another agent takes the claim and goes on from what the store says
/// was uploaded last: the chain verifies end to end (the agent's `snapshot verify` and the
/// independent client's walk) and reaches the cluster's revision after the last write.
#[test]
fn the_chain_has_no_gap_when_the_uploader_is_killed_mid_segment_twice_etcd_3_5() {
    let _g = serial();
    let mut lab = Lab::up(246, Version::V3_5, LabOptions::srv(3));
    lab.configure_srv(3);
    let s3 = S3::up(&lab);
    let _keys = common::with_encrypted_backup(&lab, &s3, "fleet");
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(40);
    while claim_holder(&lab).is_none() {
        assert!(
            Instant::now() < deadline,
            "nobody holds the delta claim within 40 s"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut n = 0;
    let mut write = |lab: &Lab, count: usize| {
        for _ in 0..count {
            n += 1;
            // A member was just killed (maybe the leader): a put may meet the election.
            let ok = (0..5).any(|_| {
                let out = lab.etcdctl(1, &lab.endpoints(), &["put", &format!("/w/{n}"), "v"]);
                out.status.success() || {
                    std::thread::sleep(Duration::from_millis(500));
                    false
                }
            });
            assert!(ok, "put /w/{n} failed 5 times");
        }
    };
    let chain_segments = |lab: &Lab| {
        newest_listed(lab)["chain"]["segments"]
            .as_u64()
            .unwrap_or(0)
    };
    for round in 1..=2 {
        // A segment is stored first: the next holder must go on from it, not from the base.
        let before = chain_segments(&lab);
        let deadline = Instant::now() + Duration::from_secs(60);
        while chain_segments(&lab) <= before {
            assert!(
                Instant::now() < deadline,
                "round {round}: no new segment within 60 s"
            );
            write(&lab, 1);
            std::thread::sleep(Duration::from_millis(500));
        }
        write(&lab, 10);
        // A random moment of the segment being filled (delta_interval is 5 s).
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        std::thread::sleep(Duration::from_millis(u64::from(nanos % 4000)));
        write(&lab, 5);
        let h = claim_holder(&lab).expect("a claim holder");
        let etcd = lab.etcd_pid(h).expect("its etcd");
        let agent = lab.agent_pid(h).expect("its agent");
        // SAFETY: kill(2) on processes this test started.
        unsafe {
            libc::kill(agent as i32, libc::SIGKILL);
            libc::kill(etcd as i32, libc::SIGKILL);
        }
        eprintln!("round {round}: killed host {h}'s agent and etcd (SIGKILL)");
        assert_eq!(lab.wait_exit(h, Duration::from_secs(10)), None);
        write(&lab, 10);
        lab.start(&[h]);
        lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(120));
    }
    write(&lab, 5);
    let last_revision = lab.revision(1);
    // The chain reaches the cluster's revision once the claim has moved on.
    let cfg = lab.config_path(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = newest_listed(&lab);
        let reached = listed["chain"]["last_revision"].as_i64().unwrap_or(0);
        if reached >= last_revision {
            eprintln!("the chain reaches revision {reached} (the cluster's after the last write: {last_revision})");
            break;
        }
        if Instant::now() > deadline {
            lab.dump_logs();
            panic!(
                "the chain reached revision {reached}, not {last_revision}, within 60 s: {listed}"
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let out = lab.exec(
        2,
        Path::new(&common::bin()),
        &["snapshot", "verify", "--config", cfg.to_str().unwrap()],
    );
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("chain ok: "),
        "verify: {said}"
    );
    eprintln!("{}", said.trim());
    assert!(chain_segments(&lab) >= 3, "{said}");
    let out = s3.python_with_bucket(SCRIPT, &["chain", "fleet/lab/"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chain: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        chain["last_revision"].as_i64().unwrap_or(0) >= last_revision,
        "{chain}"
    );
    lab.stop_all();
}
