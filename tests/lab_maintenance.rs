//! Database maintenance in the namespace lab with real etcd: after churn and compaction the
//! agents defragment every member by themselves, one at a time, the leader last, and the
//! database files shrink; a cluster driven into NOSPACE takes writes again by itself once the
//! operator has deleted keys and compacted.

mod common;

use common::{serial, Lab, LabOptions, Version};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(120);

/// Append `text` to every host's config.
fn append(lab: &Lab, text: &str) {
    for h in 1..=3 {
        let p = lab.config_path(h);
        let old = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{old}\n{text}\n")).unwrap();
    }
}

/// Each member's dbSize (bytes), by host.
fn db_sizes(lab: &Lab) -> Vec<u64> {
    (1..=3)
        .map(|h| {
            let out = lab.etcdctl(h, &lab.client_url(h), &["endpoint", "status", "-w", "json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v[0]["Status"]["dbSize"].as_u64().unwrap_or(0)
        })
        .collect()
}

/// What the operator does: delete every key under `prefix`, then compact (physically) to the
/// current revision.
fn delete_and_compact(lab: &Lab, prefix: &str) {
    let out = lab.etcdctl(1, &lab.client_url(1), &["del", "--prefix", prefix]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rev = lab.revision(1).to_string();
    let out = lab.etcdctl(1, &lab.client_url(1), &["compact", &rev, "--physical"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// On failure: each member's status and its agent's maintenance lines (etcd's own log drowns
/// them in the usual dump).
fn agent_lines(lab: &Lab) {
    for h in 1..=3 {
        let st = lab.etcdctl(h, &lab.client_url(h), &["endpoint", "status", "-w", "json"]);
        eprintln!("host {h}: {}", String::from_utf8_lossy(&st.stdout));
        for l in lab
            .log(h)
            .lines()
            .filter(|l| l.contains("maintenance") || l.contains("defrag") || l.contains("NOSPACE"))
        {
            eprintln!("host {h}: {l}");
        }
    }
}

/// A 100 KiB value (etcdctl takes it as one argument: under the kernel's 128 KiB limit).
fn big(i: usize) -> String {
    format!("{i:08}").repeat(100 * 1024 / 8)
}

fn defrag_by_the_agents(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    append(
        &lab,
        "[maintenance]\ninterval = \"2s\"\ndefrag_when = \"free > 8MiB or db_size > 20MiB\"",
    );
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    // Churn: every key written twice, then all deleted; compaction frees the pages inside the
    // file, which only a defrag gives back.
    for round in 0..2 {
        for i in 0..120 {
            lab.put(1 + i % 3, &format!("/churn/{i:03}"), &big(i + round));
        }
    }
    lab.put(1, "/kept", "yes");
    // Measured before the compaction: the agents may defragment as soon as it is done.
    let before = db_sizes(&lab);
    delete_and_compact(&lab, "/churn/");
    assert!(
        before.iter().all(|s| *s > 20 << 20),
        "the churn did not grow every database: {before:?}"
    );
    let t = Instant::now();
    let after = loop {
        let now = db_sizes(&lab);
        if now.iter().zip(&before).all(|(a, b)| *a > 0 && *a < b / 4) {
            break now;
        }
        if t.elapsed() > WITHIN {
            agent_lines(&lab);
            panic!("not every database shrank: before {before:?}, now {now:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "{}: the agents defragmented every member within {:?}: {before:?} -> {after:?} bytes",
        version.as_str(),
        t.elapsed()
    );
    // Every member was defragmented, one at a time (a job may have run while a member had not
    // applied the compaction yet, and left it to the next job); a leader always last in its job.
    let lines: Vec<String> = (1..=3)
        .flat_map(|h| {
            lab.log(h)
                .lines()
                .filter(|l| l.contains("defragmenting member"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    for name in ["etcd1", "etcd2", "etcd3"] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("member={name} "))),
            "{name} was never defragmented: {lines:#?}"
        );
    }
    for l in lines.iter().filter(|l| l.contains("role=leader")) {
        let pos = l
            .split("position=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        let (k, n) = pos.split_once('/').unwrap();
        assert_eq!(k, n, "the leader was not last in its job: {lines:#?}");
    }
    // Leadership moved before the leader's defrag, and the cluster is whole.
    assert!((1..=3).any(|h| lab
        .log(h)
        .contains("moving leadership away before defragmenting the leader")));
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for h in 1..=3 {
        assert_eq!(lab.get(h, "/kept").as_deref(), Some("yes"));
        assert_eq!(lab.get(h, "/churn/000").as_deref(), Some(""));
    }
    // `defrag --all` does the same now, leader last.
    let bin = common::bin();
    let cfg = lab.config_path(2);
    let out = lab.exec(
        2,
        std::path::Path::new(&bin),
        &["defrag", "--all", "--config", cfg.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "defrag --all: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text.lines().skip(1).collect();
    // Unless an agent's scheduled job held the lock at that moment (then it says so).
    if !rows.is_empty() && !text.contains("nothing was defragmented") {
        assert_eq!(rows.len(), 3, "{text}");
        assert!(
            rows[2].contains("leader") && !rows[0].contains("leader"),
            "{text}"
        );
    }
    lab.stop_all();
}

fn nospace_clears_itself(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    append(
        &lab,
        // No compaction (etcd's own default, overriding etcd-bootstrap's): the history of a
        // few keys fills the quota with live revisions, the classic way into NOSPACE.
        "[maintenance]\ninterval = \"1h\"\n\n[etcd.flags]\nquota-backend-bytes = \"16777216\"\nauto-compaction-retention = \"0\"",
    );
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    lab.put(1, "/kept", "yes");
    // Fill it up until etcd refuses writes. While the live data still fits under 90% of the
    // quota the agents defragment and disarm by themselves, and writes go on; once it does not,
    // they say that only deleting data helps, and leave the alarm raised (no loop of defrags).
    let cannot =
        |lab: &Lab| (1..=3).any(|h| lab.log(h).contains("a defrag cannot free enough space"));
    let t = Instant::now();
    let mut refusals = 0;
    let mut i = 0;
    while !cannot(&lab) {
        assert!(
            t.elapsed() < Duration::from_secs(150) && i < 2000,
            "no agent said why it cannot clear NOSPACE ({refusals} writes refused, {i} tried)"
        );
        let out = lab.etcdctl(
            1,
            &lab.client_url(1),
            &["put", &format!("/fill/{}", i % 8), &big(i)],
        );
        i += 1;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(err.contains("database space exceeded"), "{err}");
            refusals += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    assert!(refusals > 0);
    eprintln!(
        "{}: after {i} writes of 100 KiB ({refusals} refused) the live data no longer fits; dbSize by host: {:?}",
        version.as_str(),
        db_sizes(&lab)
    );
    let alarms = lab.etcdctl(1, &lab.client_url(1), &["alarm", "list"]);
    assert!(String::from_utf8_lossy(&alarms.stdout).contains("NOSPACE"));
    let refused = lab.etcdctl(1, &lab.client_url(1), &["put", "/fill/0", "x"]);
    assert!(!refused.status.success());
    // The operator deletes data and compacts; nothing else.
    delete_and_compact(&lab, "/fill/");
    let t = Instant::now();
    loop {
        let out = lab.etcdctl(2, &lab.client_url(2), &["put", "/after", "ok"]);
        if out.status.success() {
            break;
        }
        if t.elapsed() > WITHIN {
            agent_lines(&lab);
            panic!("writes not back: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "{}: NOSPACE cleared by the agents {:?} after the operator's compaction",
        version.as_str(),
        t.elapsed()
    );
    let alarms = lab.etcdctl(1, &lab.client_url(1), &["alarm", "list"]);
    assert!(!String::from_utf8_lossy(&alarms.stdout).contains("NOSPACE"));
    assert!((1..=3).any(|h| lab.log(h).contains("NOSPACE alarm disarmed")));
    assert!(
        db_sizes(&lab).iter().all(|s| *s < 8 << 20),
        "{:?}",
        db_sizes(&lab)
    );
    for h in 1..=3 {
        assert_eq!(lab.get(h, "/kept").as_deref(), Some("yes"));
        assert_eq!(lab.get(h, "/after").as_deref(), Some("ok"));
    }
    lab.stop_all();
}

#[test]
fn agents_defragment_every_member_leader_last_etcd_3_5() {
    defrag_by_the_agents(95, Version::V3_5);
}

#[test]
fn agents_defragment_every_member_leader_last_etcd_3_4() {
    defrag_by_the_agents(96, Version::V3_4);
}

#[test]
fn nospace_clears_itself_once_data_is_deleted_etcd_3_5() {
    nospace_clears_itself(97, Version::V3_5);
}

#[test]
fn nospace_clears_itself_once_data_is_deleted_etcd_3_4() {
    nospace_clears_itself(98, Version::V3_4);
}
