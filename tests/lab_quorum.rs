//! Quorum loss with every member accounted for (issue 27), in the namespace lab with real etcd:
//! all three members stop, the data dirs of two are replaced while the third (the only copy) is
//! down, and the agents bring the cluster back on the surviving copy by themselves once every
//! agent of the last membership answers, and not before.

mod common;

use common::{serial, Lab, LabOptions, Version};
use std::path::Path;
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(60);

/// Whether a write goes through any of the three hosts' members.
fn write_served(lab: &Lab) -> bool {
    lab.etcdctl(1, &lab.endpoints(), &["put", "/probe", "x"])
        .status
        .success()
}

/// `failpoint`: host 1's agent is killed (-9) there during the recovery, and started again.
fn all_answer_recovers(id: u8, version: Version, failpoint: Option<&str>) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for i in 0..20 {
        lab.put(1 + i % 3, &format!("/kept/{i}"), &format!("v{i}"));
    }
    let revision = lab.revision(1);
    let cluster = lab.member_list(1).unwrap()["header"]["cluster_id"]
        .as_u64()
        .unwrap();

    // All three stop; the disks of hosts 2 and 3 are replaced while host 1 is down.
    lab.stop_all();
    for h in [2, 3] {
        lab.wipe(h);
    }
    // Host 1 (the only copy) and host 2 (empty) come back; host 3's agent does not answer yet.
    lab.start(&[2]);
    match failpoint {
        Some(fp) => lab.start_with_env(&[1], &[("ETCD_BOOTSTRAP_FAILPOINT", fp)]),
        None => lab.start(&[1]),
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        assert!(
            !write_served(&lab),
            "a write was served while host 3's agent was missing"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let host3 = format!("https://{}:2380", lab.ip(3));
    // `plan` on host 1 says what the agents do about it, and why.
    let bin = common::bin();
    let cfg1 = lab.config_path(1);
    let out = lab.exec(
        1,
        Path::new(&bin),
        &["plan", "--config", cfg1.to_str().unwrap()],
    );
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        plan.contains("AUTOMATIC RECOVERY: automatic recovery waits: 1 of 3 members' agents have not answered")
            && plan.contains(&host3),
        "plan: {plan}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log1 = lab.log(1);
    assert!(
        log1.lines()
            .any(|l| l.contains("not answered") && l.contains(&host3)),
        "host 1's log does not name host 3 as the agent it waits for"
    );

    // Host 3 answers too: the cluster comes back on host 1's data by itself.
    lab.start(&[3]);
    let t = Instant::now();
    if failpoint.is_some() {
        // Killed at the fail point during the recovery; started again, as systemd does.
        lab.wait_exit(1, WITHIN);
        assert!(
            lab.log(1).contains("fail point reached"),
            "host 1's agent exited, but not at the fail point"
        );
        lab.start(&[1]);
    }
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    eprintln!(
        "{}: from the last agent started to three healthy voters: {:?}",
        version.as_str(),
        t.elapsed()
    );
    assert_eq!(
        lab.member_list(1).unwrap()["header"]["cluster_id"].as_u64(),
        Some(cluster),
        "the recovered cluster keeps its ID"
    );
    for h in [1, 2, 3] {
        for i in 0..20 {
            assert_eq!(
                lab.get(h, &format!("/kept/{i}")).as_deref(),
                Some(format!("v{i}").as_str()),
                "host {h}, key /kept/{i}"
            );
        }
    }
    assert!(lab.revision(1) >= revision);
    let log1 = lab.log(1);
    assert!(
        log1.contains("automatic recovery") && log1.contains("revisions lost: 0"),
        "host 1's log does not record the automatic recovery"
    );
    if std::env::var_os("LAB_DUMP").is_some() {
        for h in [1, 2, 3] {
            for l in lab.log(h).lines().filter(|l| !l.starts_with('{')) {
                eprintln!("h{h} {}", &l[..l.len().min(260)]);
            }
        }
    }
    // `status` and `doctor` record it: from which copy, nothing lost.
    let out = lab.exec(
        1,
        Path::new(&bin),
        &["status", "--config", cfg1.to_str().unwrap()],
    );
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.contains("last automatic recovery") && status.contains("revisions lost: 0"),
        "status: {status}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.exec(
        1,
        Path::new(&bin),
        &["doctor", "--config", cfg1.to_str().unwrap()],
    );
    let doctor = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        doctor.contains("automatic recovery at") && doctor.contains("revisions lost: 0"),
        "doctor: {doctor}"
    );
    let env = std::fs::read_to_string(lab.host_dir(1).join("etcd.env")).unwrap();
    assert!(!env.contains("FORCE"), "the flag was left behind: {env}");
    lab.stop_all();
}

#[test]
fn quorum_loss_with_every_agent_answering_recovers_etcd_3_5() {
    all_answer_recovers(200, Version::V3_5, None);
}

#[test]
fn quorum_loss_recovers_after_a_kill_9_of_the_recovering_agent_etcd_3_5() {
    all_answer_recovers(202, Version::V3_5, Some("auto-recover:after-force"));
}

/// The same on etcd 3.4.23, killed just before its `--force-new-cluster` start.
#[test]
fn quorum_loss_recovers_after_a_kill_9_before_the_force_etcd_3_4() {
    all_answer_recovers(204, Version::V3_4, Some("auto-recover:before-force"));
}

/// Two of five members hold data (a tie, or nearly), three were wiped: exactly one holder
/// recovers (the best copy, the lowest member ID between equals), the other moves its data
/// aside (kept) and joins it, and so do the three wiped members.
fn two_holders_of_five(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(5));
    lab.configure_srv(5);
    lab.start(&[1, 2, 3, 4, 5]);
    lab.wait_voters(1, &[1, 2, 3, 4, 5], WITHIN);
    for i in 0..10 {
        lab.put(1 + i % 5, &format!("/kept/{i}"), &format!("v{i}"));
    }
    lab.stop_all();
    for h in [3, 4, 5] {
        lab.wipe(h);
    }
    lab.start(&[1, 2, 3, 4, 5]);
    let t = Instant::now();
    lab.wait_voters(1, &[1, 2, 3, 4, 5], Duration::from_secs(120));
    eprintln!(
        "{}: two holders of five, all agents started -> five healthy voters: {:?}",
        version.as_str(),
        t.elapsed()
    );
    for h in 1..=5 {
        assert_eq!(lab.get(h, "/kept/9").as_deref(), Some("v9"), "host {h}");
    }
    let recovered: Vec<usize> = (1..=5)
        .filter(|h| lab.log(*h).contains("automatic recovery done"))
        .collect();
    assert_eq!(
        recovered.len(),
        1,
        "exactly one member recovers: {recovered:?}"
    );
    let other = if recovered[0] == 1 { 2 } else { 1 };
    let moved: Vec<String> = std::fs::read_dir(lab.host_dir(other))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.removed-"))
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "host {other}'s data is kept aside: {moved:?}"
    );
    lab.stop_all();
}

#[test]
fn quorum_loss_with_two_holders_of_five_recovers_once_etcd_3_5() {
    two_holders_of_five(201, Version::V3_5);
}

#[test]
fn quorum_loss_with_two_holders_of_five_recovers_once_etcd_3_4() {
    two_holders_of_five(233, Version::V3_4);
}

/// Hosts 2 and 3 stop and their disks are replaced while host 1's agent keeps running (its heal
/// loop, not a restart): once both agents answer again, host 1 recovers by itself.
fn survivor_running_recovers(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for i in 0..10 {
        lab.put(1 + i % 3, &format!("/kept/{i}"), &format!("v{i}"));
    }
    for h in [2, 3] {
        lab.stop(h);
        lab.wipe(h);
    }
    assert!(!write_served(&lab), "a write was served without a quorum");
    lab.start(&[2, 3]);
    let t = Instant::now();
    // Host 1's etcd still serves its old membership (it had joined), so the wiped members try
    // to replace their stale entries; when host 1 recovers under them their agents exit with an
    // error, and systemd (Restart=on-failure) starts them again: done here as systemd would.
    while !lab.log(1).contains("automatic recovery done") {
        assert!(
            t.elapsed() < WITHIN,
            "host 1 did not recover within {WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));
    for h in [2, 3] {
        if !lab.running(h) {
            eprintln!("host {h}'s agent exited; started again");
            lab.start(&[h]);
        }
    }
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    eprintln!(
        "{}: host 1 running, hosts 2 and 3 wiped and started -> three healthy voters: {:?}",
        version.as_str(),
        t.elapsed()
    );
    assert!(lab.log(1).contains("automatic recovery done"));
    for h in [1, 2, 3] {
        assert_eq!(lab.get(h, "/kept/9").as_deref(), Some("v9"), "host {h}");
    }
    lab.stop_all();
}

#[test]
fn quorum_loss_with_the_survivor_running_recovers_etcd_3_5() {
    survivor_running_recovers(203, Version::V3_5);
}

/// Host 3's disk holds data of another cluster of the same `cluster.name` (it formed one of its
/// own meanwhile), host 2's was replaced, host 1 holds the only copy: every agent answers, but
/// host 3's agent says it holds another cluster's data, and host 1's cluster is not brought back
/// by itself.
fn foreign_member_blocks(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for i in 0..10 {
        lab.put(1 + i % 3, &format!("/kept/{i}"), &format!("v{i}"));
    }
    lab.stop_all();
    for h in [2, 3] {
        lab.wipe(h);
    }
    // Host 3 forms a one-member cluster of its own, then is configured as before.
    let alone = format!("peers = [\"etcd3=https://{}:2380\"]", lab.ip(3));
    lab.write_config(3, 1, &alone);
    lab.start(&[3]);
    lab.wait_voters(3, &[3], WITHIN);
    lab.stop(3);
    lab.write_config(3, 3, "srv_domain = \"lab.test\"");
    lab.start(&[1, 2, 3]);
    // Host 2, without data, may join the cluster that answers (host 3's, of the same name):
    // what is checked is that host 1's cluster is not brought back on its own.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(25) {
        assert!(
            !lab.etcdctl(1, &lab.client_url(1), &["put", "/probe", "x"])
                .status
                .success(),
            "a write was served by host 1 while host 3 holds another cluster's data"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let bin = common::bin();
    let cfg1 = lab.config_path(1);
    let out = lab.exec(
        1,
        Path::new(&bin),
        &["plan", "--config", cfg1.to_str().unwrap()],
    );
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    let host3 = format!("https://{}:2380", lab.ip(3));
    assert!(
        plan.contains("automatic recovery blocked")
            && plan.contains(&format!("{host3} holds data of cluster")),
        "plan: {plan}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !lab.log(1).contains("automatic recovery done"),
        "host 1 recovered although host 3 holds another cluster's data"
    );
    assert!(
        lab.host_dir(1).join("data/member").exists(),
        "host 1's data was moved"
    );
    lab.stop_all();
}

#[test]
fn quorum_loss_with_a_foreign_member_is_not_recovered_etcd_3_5() {
    foreign_member_blocks(232, Version::V3_5);
}

#[test]
fn quorum_loss_with_a_foreign_member_is_not_recovered_etcd_3_4() {
    foreign_member_blocks(234, Version::V3_4);
}

/// Host 1's identity record lags behind the membership (host 3 joined a moment before all three
/// stopped, and host 1's heal loop had not recorded it yet): its record lists hosts 1 and 2 only.
/// Host 2's disk is replaced, host 3 (which holds data) stays down. Every agent of host 1's
/// recorded membership answers, but host 3, in discovery, has not: nothing is done by itself.
/// Once host 3 starts, hosts 1 and 3 are a quorum and etcd comes back by itself, every key kept.
fn stale_record_waits_for_discovered_peers(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for i in 0..10 {
        lab.put(1 + i % 3, &format!("/kept/{i}"), &format!("v{i}"));
    }
    lab.stop_all();
    let record_path = lab.host_dir(1).join("data.identity.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    let host3 = format!("https://{}:2380", lab.ip(3));
    let members = record["members"].as_array_mut().unwrap();
    members.retain(|m| !m.to_string().contains(&host3));
    assert_eq!(members.len(), 2, "host 3 taken out of host 1's record");
    std::fs::write(&record_path, record.to_string()).unwrap();
    lab.wipe(2);
    lab.start(&[1, 2]);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        assert!(
            !lab.log(1).contains("automatic recovery done"),
            "host 1 recovered by itself while host 3, in discovery and holding data, had not answered"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    lab.start(&[3]);
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(90));
    for h in [1, 2, 3] {
        assert_eq!(lab.get(h, "/kept/9").as_deref(), Some("v9"), "host {h}");
    }
    assert!(!lab.log(1).contains("automatic recovery done"));
    lab.stop_all();
}

#[test]
fn quorum_loss_with_a_stale_record_waits_for_every_discovered_peer_etcd_3_5() {
    stale_record_waits_for_discovered_peers(236, Version::V3_5);
}
