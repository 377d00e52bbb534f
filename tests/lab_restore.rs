//! Recovery in the namespace lab, with the real S3 server (SeaweedFS over HTTPS) and real etcd:
//! total loss of every member (all VMs replaced: data dirs, identity records, certificates and
//! etcd's environment gone) with `[backup]` set, where the agents restore the newest verified
//! snapshot instead of forming an empty cluster.

mod common;

use common::{serial, Lab, LabOptions, Version, S3};
use std::path::Path;
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(120);

fn cluster_id(lab: &Lab, host: usize) -> u64 {
    lab.member_list(host).unwrap()["header"]["cluster_id"]
        .as_u64()
        .unwrap()
}

/// A new VM in place of host `h`: nothing of the old one is left but its config (user-data).
fn replace_vm(lab: &Lab, h: usize) {
    lab.wipe(h);
    let d = lab.host_dir(h);
    let _ = std::fs::remove_dir_all(d.join("pki"));
    for f in ["etcd.env", "etcd.service", "bootstrap.log"] {
        let _ = std::fs::remove_file(d.join(f));
    }
}

/// `[backup]` on hosts 1-3: the lab's S3 server under prefix "fleet", snapshots encrypted with a
/// new age key (kept in the returned directory).
fn with_backup(lab: &Lab, s3: &S3) -> tempfile::TempDir {
    common::with_encrypted_backup(lab, s3, "fleet")
}

fn snapshot_save(lab: &Lab, host: usize) -> String {
    let bin = common::bin();
    let cfg = lab.config_path(host);
    let out = lab.exec(
        host,
        Path::new(&bin),
        &["snapshot", "save", "--config", cfg.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn total_loss(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    let s3 = S3::up(&lab);
    let _keys = with_backup(&lab, &s3);
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    let old_cluster = cluster_id(&lab, 1);
    // A brand-new cluster.name has no snapshots: the first formation was empty.
    assert!(
        lab.log(1).contains("form a new cluster as"),
        "{}",
        lab.log(1)
    );

    for i in 0..20 {
        lab.put(1 + i % 3, &format!("/before/{i:02}"), &format!("v{i}"));
    }
    let bin = common::bin();
    let snapshot = snapshot_save(&lab, 2);
    // Written after the last snapshot: lost with the members, as with any backup.
    lab.put(1, "/after/lost", "x");
    let revision_before = lab.revision(1);

    // Every VM is destroyed and replaced.
    lab.stop_all();
    for h in 1..=3 {
        replace_vm(&lab, h);
    }
    // Two new VMs boot first; `plan` on the third says what it would do.
    lab.start(&[2, 3]);
    let t = Instant::now();
    let plan = loop {
        let cfg = lab.config_path(1);
        let out = lab.exec(
            1,
            Path::new(&bin),
            &["plan", "--config", cfg.to_str().unwrap()],
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        if text.contains("restore snapshot") || t.elapsed() > Duration::from_secs(30) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        plan.contains(&format!("restore snapshot {snapshot}")),
        "plan: {plan}"
    );
    // The third is killed in the middle of its restore, then boots again.
    lab.start_with_env(&[1], &[("ETCD_BOOTSTRAP_FAILPOINT", "restore:before-move")]);
    let code = lab.wait_exit(1, Duration::from_secs(60));
    assert!(
        !lab.running(1) && code != Some(0),
        "the fail point did not stop host 1 ({code:?})"
    );
    assert!(
        lab.host_dir(1)
            .join("data/.etcd-bootstrap-restore")
            .is_dir(),
        "host 1 was not stopped in the middle of its restore"
    );
    assert!(
        !lab.host_dir(1).join("data/member").exists(),
        "a half-done restore became etcd's data"
    );
    let t = Instant::now();
    lab.start(&[1]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    eprintln!(
        "{}: total loss -> 3 healthy voters from snapshot {snapshot} {:?} after the last start",
        version.as_str(),
        t.elapsed()
    );

    for h in 1..=3 {
        assert!(
            lab.log(h).contains(&format!("restore snapshot {snapshot}")),
            "host {h} did not restore {snapshot}: {}",
            lab.log(h)
        );
        assert!(!lab
            .host_dir(h)
            .join("data/.etcd-bootstrap-restore")
            .exists());
    }
    for i in 0..20 {
        for h in 1..=3 {
            assert_eq!(
                lab.get(h, &format!("/before/{i:02}")).as_deref(),
                Some(format!("v{i}").as_str()),
                "host {h} /before/{i:02}"
            );
        }
    }
    assert_eq!(lab.get(3, "/after/lost").as_deref(), Some(""));
    assert_ne!(
        cluster_id(&lab, 1),
        old_cluster,
        "a restored cluster has a new ID"
    );
    let after = lab.revision(1);
    if version == Version::V3_5 {
        // etcdutl moved the revision forward: watchers never see a revision again.
        assert!(
            after > revision_before,
            "revision went back: {after} after, {revision_before} before the loss"
        );
    }
    // The restored cluster is writable and takes snapshots again.
    lab.put(3, "/after/restore", "y");
    assert_eq!(lab.get(1, "/after/restore").as_deref(), Some("y"));
    lab.stop_all();
}

#[test]
fn total_loss_restores_the_newest_snapshot_etcd_3_5() {
    total_loss(87, Version::V3_5);
}

#[test]
fn total_loss_restores_the_newest_snapshot_etcd_3_4() {
    total_loss(88, Version::V3_4);
}

/// A majority lost for good: `recover` on the survivor (its agent running, as under systemd)
/// starts it alone once with --force-new-cluster, every key stays, nothing of the flag is left
/// behind, and replacement nodes on new addresses join it through the normal join path. Refused
/// while a quorum answers.
fn survivor_recovers(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(
        id,
        version,
        LabOptions {
            hosts: 5,
            srv: true,
            dns_hosts: Some(vec![1, 2, 3]),
        },
    );
    lab.configure_srv(3);
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for i in 0..10 {
        lab.put(1 + i % 3, &format!("/kept/{i}"), &format!("v{i}"));
    }
    let bin = common::bin();
    let cfg = lab.config_path(1);
    let recover = |lab: &Lab| {
        lab.exec(
            1,
            Path::new(&bin),
            &["recover", "--yes", "--config", cfg.to_str().unwrap()],
        )
    };
    // A healthy cluster: refused, nothing changes.
    let out = recover(&lab);
    assert_eq!(
        out.status.code(),
        Some(3),
        "recover on a healthy cluster: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("healthy"));
    assert_eq!(lab.members(1).len(), 3);

    // Hosts 2 and 3 are destroyed; host 1's agent keeps running without a quorum.
    let old_cluster = cluster_id(&lab, 1);
    for h in [2, 3] {
        lab.stop(h);
        replace_vm(&lab, h);
        lab.dns("--remove-host", h);
    }
    assert_eq!(
        lab.get(1, "/kept/0"),
        None,
        "host 1 still serves without a quorum"
    );
    // `status` says what happened and what to run.
    let out = lab.exec(
        1,
        Path::new(&bin),
        &["status", "--config", cfg.to_str().unwrap()],
    );
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    let host1 = format!("https://{}:2380", lab.ip(1));
    assert!(
        status.contains("QUORUM LOST: quorum lost: 2 of 3 members unreachable")
            && status.contains(&format!("`etcd-bootstrap recover` on {host1}")),
        "status: {status}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Instant::now();
    let out = recover(&lab);
    if !out.status.success() {
        lab.dump_logs();
    }
    assert!(
        out.status.success(),
        "recover: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}: recover took {:?}", version.as_str(), t.elapsed());
    assert!(lab.running(1), "the agent stopped");
    let members = lab.members(1);
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(
        cluster_id(&lab, 1),
        old_cluster,
        "recover keeps the cluster"
    );
    for i in 0..10 {
        assert_eq!(
            lab.get(1, &format!("/kept/{i}")).as_deref(),
            Some(format!("v{i}").as_str())
        );
    }
    let env = std::fs::read_to_string(lab.host_dir(1).join("etcd.env")).unwrap();
    assert!(!env.contains("FORCE"), "the flag was left behind: {env}");

    // Replacements on new addresses join the recovered member.
    for h in [4, 5] {
        lab.dns("--add-host", h);
    }
    lab.start(&[4, 5]);
    lab.wait_voters(1, &[1, 4, 5], WITHIN);
    for h in [4, 5] {
        assert_eq!(lab.get(h, "/kept/9").as_deref(), Some("v9"), "host {h}");
    }
    // etcd restarted by its agent later still is the same one-member-then-three cluster.
    lab.stop(1);
    lab.start(&[1]);
    lab.wait_voters(4, &[1, 4, 5], WITHIN);
    assert_eq!(lab.get(1, "/kept/3").as_deref(), Some("v3"));
    lab.stop_all();
}

#[test]
fn survivor_recovers_after_the_majority_is_lost_etcd_3_5() {
    survivor_recovers(89, Version::V3_5);
}

#[test]
fn survivor_recovers_after_the_majority_is_lost_etcd_3_4() {
    survivor_recovers(90, Version::V3_4);
}

/// Moved-aside copies of host `h`'s data dir.
/// `recover` by hand on the survivor after a restart: all three stop, the disks of hosts 2 and 3
/// are replaced, the agents start again (host 1's restarts etcd from its data and waits for a
/// quorum; its heal loop has not begun) with `heal.auto_recover = false`, and an operator runs
/// `recover --yes` on host 1. Its agent carries it out from where it waits, and the wiped
/// members join. (Before, the request waited for the heal loop, which never began: `recover`
/// gave up after 180 s, seen with scripts/bench-quorum.sh.)
fn recover_by_hand_after_a_restart(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    for h in 1..=3 {
        let cfg = lab.config_path(h);
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, format!("{text}auto_recover = false\n")).unwrap();
    }
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for i in 0..10 {
        lab.put(1 + i % 3, &format!("/kept/{i}"), &format!("v{i}"));
    }
    lab.stop_all();
    for h in [2, 3] {
        lab.wipe(h);
    }
    lab.start(&[1, 2, 3]);
    std::thread::sleep(Duration::from_secs(5));
    let bin = common::bin();
    let cfg = lab.config_path(1);
    let t = Instant::now();
    let out = lab.exec(
        1,
        Path::new(&bin),
        &["recover", "--yes", "--config", cfg.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "recover: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(60));
    eprintln!(
        "{}: recover by hand after a restart -> three healthy voters: {:?}",
        version.as_str(),
        t.elapsed()
    );
    for h in [1, 2, 3] {
        assert_eq!(lab.get(h, "/kept/9").as_deref(), Some("v9"), "host {h}");
    }
    assert!(
        !lab.log(1).contains("automatic recovery done"),
        "heal.auto_recover = false, yet the agent recovered by itself"
    );
    lab.stop_all();
}

#[test]
fn recover_by_hand_while_the_agent_waits_for_a_quorum_etcd_3_5() {
    recover_by_hand_after_a_restart(235, Version::V3_5);
}

fn moved_aside(lab: &Lab, h: usize) -> Vec<String> {
    std::fs::read_dir(lab.host_dir(h))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.removed-"))
        .collect()
}

/// `restore --from` on a live cluster, from one node, with the agents running (as under
/// systemd): host 3 is down when it is asked for, host 2's agent is killed in the middle of it
/// (`failpoint`) and started again. No confirmation: nothing happens. A second restore while the
/// first has no quorum yet is refused, naming the first. In the end 3 voters run exactly the
/// snapshot's keys (written after it: gone; changed or deleted after it: back as they were), as a
/// new cluster, with the revision moved forward (3.5), every old data dir kept aside.
fn fleet_restore(id: u8, version: Version, failpoint: &str) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    let s3 = S3::up(&lab);
    let _keys = with_backup(&lab, &s3);
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for i in 0..20 {
        lab.put(1 + i % 3, &format!("/before/{i:02}"), &format!("v{i}"));
    }
    let snapshot = snapshot_save(&lab, 2);
    for i in 0..5 {
        lab.put(1 + i % 3, &format!("/after/{i}"), "x");
    }
    lab.put(1, "/before/00", "changed");
    let del = lab.etcdctl(1, &lab.client_url(1), &["del", "/before/19"]);
    assert!(del.status.success());
    let revision_before = lab.revision(1);
    let old_cluster = cluster_id(&lab, 1);
    let bin = common::bin();
    let cfg1 = lab.config_path(1);
    let restore_args = |from: &str| -> Vec<String> {
        [
            "restore",
            "--from",
            from,
            "--config",
            cfg1.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // Without --yes it asks; anything but "restore" changes nothing.
    let mut ask = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.netns(1), &bin])
        .args(restore_args(&snapshot))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        ask.stdin.take().unwrap().write_all(b"no\n").unwrap();
    }
    let out = ask.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !out.status.success() && text.contains("Type \"restore\""),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        s3.list("fleet/lab/restore").is_empty(),
        "a request was written without confirmation"
    );
    assert_eq!(lab.get(1, "/after/0").as_deref(), Some("x"));

    // Host 3 is down; host 2's agent will be killed in the middle of the restore.
    lab.stop(3);
    lab.stop(2);
    lab.start_with_env(&[2], &[("ETCD_BOOTSTRAP_FAILPOINT", failpoint)]);
    let t = Instant::now();
    while lab.get(2, "/before/01").as_deref() != Some("v1") {
        assert!(t.elapsed() < WITHIN, "hosts 1 and 2 did not serve again");
        std::thread::sleep(Duration::from_millis(200));
    }

    let out_path = lab.host_dir(1).join("restore.out");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let t = Instant::now();
    let mut command = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.netns(1), &bin])
        .args(restore_args(&snapshot))
        .args(["--yes", "--timeout", "4m"])
        .stdin(std::process::Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .spawn()
        .unwrap();
    let code = lab.wait_exit(2, Duration::from_secs(90));
    let command_output = || std::fs::read_to_string(&out_path).unwrap_or_default();
    if lab.running(2) {
        let _ = command.kill();
        lab.dump_logs();
        panic!("the fail point did not stop host 2: {}", command_output());
    }
    assert_ne!(code, Some(0));
    let data2 = lab.host_dir(2).join("data");
    match failpoint {
        // Stopped, the old data still in place: resumed, it is moved aside then.
        "fleet-restore:after-stop" => {
            assert!(data2.join("member").is_dir());
            assert!(moved_aside(&lab, 2).is_empty());
        }
        // The old data aside, the restored data in, not started.
        _ => {
            assert!(data2.join("member").is_dir());
            assert_eq!(moved_aside(&lab, 2).len(), 1);
        }
    }
    // Meanwhile a second restore is refused, naming the first.
    let out = lab.exec(
        1,
        Path::new(&bin),
        &[
            "restore",
            "--from",
            "latest",
            "--yes",
            "--config",
            cfg1.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(3), "second restore: {err}");
    assert!(
        err.contains("is still in progress") && err.contains(&format!("snapshot {snapshot}")),
        "{err}"
    );

    // Host 2's agent runs again and resumes; host 3 comes back and follows the request before
    // its etcd starts from the old data.
    lab.start(&[2]);
    lab.start(&[3]);
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(180));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = command.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = command.kill();
            panic!("restore did not return: {}", command_output());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "{}: restore --from with one member down and one agent killed: 3 voters {:?} after the request",
        version.as_str(),
        t.elapsed()
    );
    let text = command_output();
    eprintln!("{text}");
    assert!(status.success(), "restore: {text}");
    assert!(text.contains("restored: "), "{text}");
    assert!(
        lab.log(2).contains("resuming a fleet-wide restore"),
        "{}",
        lab.log(2)
    );
    assert!(lab.log(3).contains("fleet-wide restore requested"));

    for h in 1..=3 {
        for i in 0..20 {
            assert_eq!(
                lab.get(h, &format!("/before/{i:02}")).as_deref(),
                Some(format!("v{i}").as_str()),
                "host {h} /before/{i:02}"
            );
        }
        for i in 0..5 {
            assert_eq!(lab.get(h, &format!("/after/{i}")).as_deref(), Some(""));
        }
        assert_eq!(
            moved_aside(&lab, h).len(),
            1,
            "host {h}: the old data is kept aside"
        );
        assert!(!lab
            .host_dir(h)
            .join("data/.etcd-bootstrap-restore")
            .exists());
    }
    let prefix_count = lab
        .etcdctl(
            1,
            &lab.client_url(1),
            &["get", "/", "--prefix", "--keys-only"],
        )
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"/before/") || l.starts_with(b"/after/"))
        .count();
    assert_eq!(prefix_count, 20, "exactly the snapshot's keys");
    assert_ne!(
        cluster_id(&lab, 1),
        old_cluster,
        "a restored cluster has a new ID"
    );
    if version == Version::V3_5 {
        let after = lab.revision(1);
        assert!(
            after > revision_before,
            "revision went back: {after} after, {revision_before} before"
        );
    }
    // The restored cluster takes writes, and an agent restarted later stays on it.
    lab.put(3, "/after/restore", "y");
    lab.stop(1);
    lab.start(&[1]);
    lab.wait_voters(2, &[1, 2, 3], WITHIN);
    assert_eq!(lab.get(1, "/after/restore").as_deref(), Some("y"));
    assert_eq!(lab.get(1, "/after/0").as_deref(), Some(""));
    lab.stop_all();
}

#[test]
fn fleet_restore_with_a_member_down_and_an_agent_killed_etcd_3_5() {
    fleet_restore(91, Version::V3_5, "fleet-restore:after-move");
}

#[test]
fn fleet_restore_with_a_member_down_and_an_agent_killed_etcd_3_4() {
    fleet_restore(92, Version::V3_4, "fleet-restore:after-stop");
}

/// `[backup]` on hosts 1-3: a `file://` store every host of the lab sees (one file system),
/// unencrypted. The agents take a scheduled snapshot at once (none is recorded yet), and then
/// none for a year (the restored data records that one): the test decides when the running
/// cluster has one.
fn with_file_backup(lab: &Lab) -> std::path::PathBuf {
    let store = lab.host_dir(1).parent().unwrap().join("store");
    std::fs::create_dir_all(&store).unwrap();
    for h in 1..=3 {
        let cfg = lab.config_path(h);
        let text = std::fs::read_to_string(&cfg).unwrap();
        // No delta segments either: their uploader takes a full snapshot of a restored
        // cluster at once (the newest one is of another cluster ID).
        let section = format!(
            "[backup]\nurl = \"file://{}\"\ninterval = \"8760h\"\ndelta_interval = \"\"\n",
            store.display()
        );
        std::fs::write(&cfg, format!("{text}\n{section}")).unwrap();
    }
    store
}

/// Run `restore --from latest --yes` from host 1 and wait for it; the new cluster ID.
fn restore_latest(lab: &Lab) -> u64 {
    let cfg1 = lab.config_path(1);
    let out = lab.exec(
        1,
        Path::new(&common::bin()),
        &[
            "restore",
            "--from",
            "latest",
            "--yes",
            "--timeout",
            "2m",
            "--config",
            cfg1.to_str().unwrap(),
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "restore: {text}");
    assert!(text.contains("restored: "), "{text}");
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    cluster_id(lab, 1)
}

/// Wait until every host in `hosts` has `want(n)` moved-aside copies; the counts at the end.
fn wait_copies(
    lab: &Lab,
    hosts: &[usize],
    within: Duration,
    want: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let t = Instant::now();
    loop {
        let counts: Vec<usize> = hosts.iter().map(|h| moved_aside(lab, *h).len()).collect();
        if counts.iter().all(|n| want(*n)) || t.elapsed() > within {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Issue 24, finding 9: every restore moves each member's data aside, and the restored cluster
/// starts again near raft index 20, so copies of earlier clusters looked "ahead" of it and were
/// kept forever. Three restores in a row leave at most `heal.keep_moved_aside` (default 2)
/// copies per node, the newest ones; with `keep_moved_aside = 0`, the newest copy of the earlier
/// cluster (the way back) stays until the restored cluster has a verified snapshot, and goes
/// after it. The keys written before are all there throughout.
fn restores_keep_a_bounded_number_of_copies(id: u8, version: Version) {
    let _g = serial();
    let started = Instant::now();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    let store = with_file_backup(&lab);
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    // Enough writes that the first cluster's raft index is far ahead of a restored one's.
    for i in 0..60 {
        lab.put(1 + i % 3, &format!("/before/{i:02}"), &format!("v{i}"));
    }
    snapshot_save(&lab, 1);
    let mut clusters = vec![cluster_id(&lab, 1)];
    for _ in 0..3 {
        clusters.push(restore_latest(&lab));
    }
    eprintln!("three restores: {:?} since the start", started.elapsed());
    let distinct: std::collections::BTreeSet<u64> = clusters.iter().copied().collect();
    assert_eq!(distinct.len(), 4, "each restore makes a new cluster");
    let check_keys = |lab: &Lab| {
        for h in 1..=3 {
            for i in 0..60 {
                assert_eq!(
                    lab.get(h, &format!("/before/{i:02}")).as_deref(),
                    Some(format!("v{i}").as_str()),
                    "host {h} /before/{i:02}"
                );
            }
        }
    };
    check_keys(&lab);
    // No snapshot of the running cluster yet: the count alone bounds the copies.
    let counts = wait_copies(&lab, &[1, 2, 3], Duration::from_secs(20), |n| n <= 2);
    assert!(
        counts.iter().all(|n| *n <= 2),
        "copies per host after 3 restores: {counts:?} (heal.keep_moved_aside is 2)"
    );
    // The two newest are the ones kept.
    for h in 1..=3 {
        let mut left = moved_aside(&lab, h);
        left.sort();
        assert_eq!(left.len(), 2, "host {h}: {left:?}");
        let note = std::fs::read_to_string(
            lab.host_dir(h)
                .join(&left[1])
                .join("etcd-bootstrap-moved.json"),
        )
        .unwrap();
        assert!(
            note.contains(&format!("{:x}", clusters[2])),
            "host {h}: the newest copy is of the cluster before the running one: {note}"
        );
    }

    // keep_moved_aside = 0 on host 1: the copy of the cluster restored from stays while the
    // running cluster has no verified snapshot, and goes once it has one.
    lab.edit_config(1, "[heal]\n", "[heal]\nkeep_moved_aside = 0\n");
    lab.stop(1);
    lab.start(&[1]);
    lab.wait_voters(2, &[1, 2, 3], WITHIN);
    let counts = wait_copies(&lab, &[1], Duration::from_secs(6), |n| n <= 1);
    assert_eq!(
        counts,
        vec![1],
        "host 1 with keep_moved_aside = 0, before a snapshot"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(moved_aside(&lab, 1).len(), 1, "host 1 kept the way back");
    // Snapshots of the running cluster in the store (manifests name their cluster).
    let of_running = || {
        std::fs::read_dir(store.join("lab"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter(|e| {
                let m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
                // A signed envelope: the manifest is its payload.
                m["payload"]["cluster_id"].as_str() == Some(format!("{:x}", clusters[3]).as_str())
            })
            .count()
    };
    assert_eq!(of_running(), 0, "no snapshot of the running cluster yet");
    let t = Instant::now();
    snapshot_save(&lab, 2);
    assert_eq!(of_running(), 1, "the running cluster's first snapshot");
    let counts = wait_copies(&lab, &[1], Duration::from_secs(45), |n| n == 0);
    assert_eq!(
        counts,
        vec![0],
        "host 1 with keep_moved_aside = 0, after the running cluster's first snapshot"
    );
    eprintln!(
        "keep_moved_aside = 0: the last copy pruned {:?} after the snapshot",
        t.elapsed()
    );
    let log = lab.log(1);
    assert!(log.contains("pruning a moved-aside data dir"), "{log}");
    assert_eq!(
        wait_copies(&lab, &[2, 3], Duration::ZERO, |n| n == 2),
        vec![2, 2]
    );
    check_keys(&lab);
    lab.stop_all();
    eprintln!(
        "{}: the whole test took {:?}",
        version.as_str(),
        started.elapsed()
    );
}

#[test]
fn restores_keep_a_bounded_number_of_copies_etcd_3_5() {
    restores_keep_a_bounded_number_of_copies(170, Version::V3_5);
}

/// The user the test's agents run etcd as; removed again when the test ends, also on failure.
struct TestUser(&'static str);

impl TestUser {
    fn fresh(name: &'static str) -> TestUser {
        let _ = std::process::Command::new("userdel").arg(name).output();
        TestUser(name)
    }

    /// uid and gid from /etc/passwd, as an operator would look them up.
    fn ids(&self) -> Option<(u32, u32)> {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == self.0).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(self.0).output();
    }
}

fn owner(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid(), m.permissions().mode() & 0o777)
}

/// Every etcd of hosts `hosts` runs as `ids`, not root, and owns everything in its data dir;
/// its server and peer keys are its own (0600), the agent's client key stays root's.
fn assert_etcd_runs_as(lab: &Lab, hosts: &[usize], ids: (u32, u32)) {
    for &h in hosts {
        let pid = lab
            .etcd_pid(h)
            .unwrap_or_else(|| panic!("no etcd on host {h}"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let gid_line = status.lines().find(|l| l.starts_with("Gid:")).unwrap();
        for (line, want) in [(uid_line, ids.0), (gid_line, ids.1)] {
            let all: Vec<u32> = line
                .split_whitespace()
                .skip(1)
                .map(|n| n.parse().unwrap())
                .collect();
            assert!(
                all.iter().all(|n| *n == want),
                "host {h}: etcd {pid} runs with {line:?}, want {want}"
            );
        }
        let caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        assert!(caps.ends_with("0000000000000000"), "host {h}: {caps}");
        let data = lab.host_dir(h).join("data");
        let mut todo = vec![data.clone()];
        let mut files = 0;
        while let Some(p) = todo.pop() {
            let (uid, gid, _) = owner(&p);
            // The agent's own records beside etcd's files are the only exception.
            let agents = p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with(".etcd-bootstrap")
                    || n.to_string_lossy().starts_with("etcd-bootstrap")
            });
            assert!(
                agents || (uid, gid) == ids,
                "host {h}: {} is {uid}:{gid}",
                p.display()
            );
            files += 1;
            if p.is_dir() && !p.is_symlink() {
                todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
        assert!(
            files > 5,
            "host {h}: only {files} entries in {}",
            data.display()
        );
        assert_eq!(owner(&data).2, 0o700, "host {h}: data dir mode");
        let pki = lab.host_dir(h).join("pki");
        for key in ["server.key", "peer.key"] {
            assert_eq!(
                owner(&pki.join(key)),
                (ids.0, ids.1, 0o600),
                "host {h} {key}"
            );
        }
        assert_eq!(
            owner(&pki.join("client.key")),
            (0, 0, 0o600),
            "host {h} client.key"
        );
    }
}

/// Issue 25, item 3: etcd as an unprivileged user (`etcd.user`, created by the agent when
/// missing), through formation, a replaced disk and a fleet restore: every etcd process runs as
/// that user with no capability, owns its data and its keys (also the renewed, restored and
/// re-made ones), and the keys written before are there. The `process` manager is used so that
/// the lab can look at the processes; systemd, podman and the static pod run the same
/// preparation (tests/vm).
fn etcd_as_its_own_user(id: u8, version: Version) {
    let _g = serial();
    let user = TestUser::fresh("ebtest-etcd");
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    let store = with_file_backup(&lab);
    for h in 1..=3 {
        lab.edit_config(
            h,
            "service_manager = \"process\"\n",
            "service_manager = \"process\"\nuser = \"ebtest-etcd\"\n",
        );
    }
    assert_eq!(user.ids(), None, "the user exists before the test");
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    let ids = user.ids().expect("the agents did not create etcd.user");
    assert!(ids.0 != 0 && ids.0 < 1000, "not a system user: {ids:?}");
    assert_etcd_runs_as(&lab, &[1, 2, 3], ids);
    for i in 0..5 {
        lab.put(1 + i % 3, &format!("/before/{i}"), &format!("v{i}"));
    }

    // A replaced disk: host 2 comes back empty and joins again, as the user.
    lab.stop(2);
    replace_vm(&lab, 2);
    lab.start(&[2]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    assert_etcd_runs_as(&lab, &[2], ids);
    assert_eq!(lab.get(2, "/before/4").as_deref(), Some("v4"));

    // A fleet restore from the store: the restored data dirs are made by the agents (as root)
    // and handed over before etcd starts on them.
    let _ = snapshot_save(&lab, 1);
    lab.put(1, "/after", "gone");
    let old = cluster_id(&lab, 1);
    let new = restore_latest(&lab);
    assert_ne!(old, new);
    assert_etcd_runs_as(&lab, &[1, 2, 3], ids);
    for i in 0..5 {
        assert_eq!(
            lab.get(1 + (i + 1) % 3, &format!("/before/{i}")),
            Some(format!("v{i}"))
        );
    }
    assert_eq!(lab.get(3, "/after").as_deref(), Some(""));
    drop(store);
}

#[test]
fn etcd_runs_as_its_own_user_through_a_replaced_disk_and_a_restore_etcd_3_5() {
    etcd_as_its_own_user(220, Version::V3_5);
}
