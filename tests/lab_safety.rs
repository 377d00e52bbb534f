//! Never fork, never discard: the scenarios in which an agent could lose or fork data, in the
//! namespace lab on real etcd 3.4.23 and 3.5.30. Each asserts what an operator would check with
//! etcdctl and the generated client certificate: no empty cluster takes the place of one with
//! data, data dirs stay where they are unless a majority says otherwise, and every wait ends.

mod common;

use common::{serial, Lab, LabOptions, Version};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(120);
const SHORT_TIMEOUT: &str = "timeout = \"15s\"";
const DEFAULT_TIMEOUT: &str = "timeout = \"90s\"";

fn moved_aside(lab: &Lab, host: usize) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(lab.host_dir(host))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.removed-"))
        .collect();
    v.sort();
    v
}

/// All members down; two come back with new disks while the one with the data is still off.
/// They must not form a cluster (before: a new, empty cluster with the old cluster ID took
/// writes); when the member with the data returns, every read either has the old key or fails.
fn wiped_majority(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 3);
    lab.put(1, "/before", "majority");
    lab.stop_all();
    // The path without automatic recovery: with every agent answering and `heal.auto_recover`
    // on (the default), the agents bring the cluster back on host 3's data by themselves, which
    // tests/lab_quorum.rs checks. Here they must refuse and wait, and never fork.
    for h in 1..=3 {
        lab.edit_config(h, DEFAULT_TIMEOUT, SHORT_TIMEOUT);
        lab.edit_config(h, "[heal]\n", "[heal]\nauto_recover = false\n");
    }
    lab.wipe(1);
    lab.wipe(2);

    lab.start(&[1, 2]);
    for h in [1, 2] {
        let code = lab.wait_exit(h, Duration::from_secs(60));
        let log = lab.log(h);
        assert_eq!(code, Some(3), "host {h} should refuse: {log}");
        assert!(
            log.contains("could not be asked whether they hold data")
                && log.contains(&format!("etcd3=https://{}:2380", lab.ip(3))),
            "host {h} does not name the member it could not ask: {log}"
        );
        assert!(
            !lab.host_dir(h).join("data/member").exists(),
            "host {h} started etcd over its empty disk"
        );
    }

    // The member with the data comes back, the wiped ones try again.
    lab.start(&[3]);
    std::thread::sleep(Duration::from_secs(2));
    lab.start(&[1, 2]);
    let end = Instant::now() + Duration::from_secs(20);
    let mut answered = 0;
    while Instant::now() < end {
        for h in 1..=3 {
            if let Some(v) = lab.get(h, "/before") {
                answered += 1;
                assert_eq!(
                    v, "majority",
                    "host {h} answers without the key written before: a forked, empty cluster"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("linearizable reads that answered while the majority was wiped: {answered}");
    // Without a quorum each agent gives up when discovery.timeout has passed.
    let code = lab.wait_exit(3, Duration::from_secs(60));
    let log = lab.log(3);
    assert_eq!(code, Some(1), "host 3: {log}");
    assert!(
        log.contains("did not become healthy within discovery.timeout"),
        "host 3: {log}"
    );
    for h in [1, 2] {
        let code = lab.wait_exit(h, Duration::from_secs(60));
        assert!(matches!(code, Some(1) | Some(3)), "host {h}: {code:?}");
    }
    // The data is still where it was, not moved aside.
    assert!(lab.host_dir(3).join("data/member/wal").is_dir());
    assert!(moved_aside(&lab, 3).is_empty());
}

#[test]
fn wiped_majority_with_the_data_member_down_etcd_3_4() {
    wiped_majority(60, Version::V3_4);
}

#[test]
fn wiped_majority_with_the_data_member_down_etcd_3_5() {
    wiped_majority(61, Version::V3_5);
}

/// Terraform replaced two VMs (new names, new addresses) while the survivor is down: the new
/// nodes must not form an empty cluster beside it.
fn replacements_while_survivor_down(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 5);
    lab.put(1, "/before", "survivor");
    lab.stop_all();
    lab.dns("--remove-host", 1);
    lab.dns("--remove-host", 2);
    lab.dns("--add-host", 4);
    lab.dns("--add-host", 5);
    for h in [4, 5] {
        lab.edit_config(h, DEFAULT_TIMEOUT, SHORT_TIMEOUT);
    }
    lab.start(&[4, 5]);
    for h in [4, 5] {
        let code = lab.wait_exit(h, Duration::from_secs(60));
        let log = lab.log(h);
        assert_eq!(code, Some(3), "host {h}: {log}");
        assert!(
            log.contains(&format!("etcd3=https://{}:2380", lab.ip(3))),
            "host {h} does not name the survivor: {log}"
        );
        assert!(!lab.host_dir(h).join("data/member").exists());
    }
    assert!(lab.host_dir(3).join("data/member/wal").is_dir());
}

#[test]
fn replacements_on_new_addresses_while_the_survivor_is_down_etcd_3_4() {
    replacements_while_survivor_down(62, Version::V3_4);
}

#[test]
fn replacements_on_new_addresses_while_the_survivor_is_down_etcd_3_5() {
    replacements_while_survivor_down(63, Version::V3_5);
}

/// The environment file after formation carries no bootstrap flags: etcd started from it by hand
/// (or by a stale enabled unit) over a wiped data dir forms nothing.
fn env_over_wiped_data_dir(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 3);
    for h in 1..=3 {
        // Each agent takes the bootstrap flags out right after its member is healthy.
        let path = lab.host_dir(h).join("etcd.env");
        let settled = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&path)
            .unwrap()
            .contains("ETCD_INITIAL_CLUSTER=")
            && Instant::now() < settled
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let env = std::fs::read_to_string(&path).unwrap();
        assert!(
            !env.contains("ETCD_INITIAL_CLUSTER=") && !env.contains("ETCD_INITIAL_CLUSTER_TOKEN"),
            "host {h}: {env}"
        );
        assert!(
            env.contains("ETCD_INITIAL_CLUSTER_STATE=existing\n"),
            "{env}"
        );
    }
    lab.stop_all();
    std::fs::remove_dir_all(lab.host_dir(1).join("data")).unwrap();
    // What systemd would do with EnvironmentFile= and ExecStart=etcd.
    let env = std::fs::read_to_string(lab.host_dir(1).join("etcd.env")).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.netns(1), "env", "-i"]);
    for line in env
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        cmd.arg(line);
    }
    let log = std::fs::File::create(lab.host_dir(1).join("etcd-by-hand.log")).unwrap();
    let mut etcd = cmd
        .arg(lab.version.dir().join("etcd"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(15);
    let mut exited = None;
    while Instant::now() < end {
        let status = lab.etcdctl(1, &lab.client_url(1), &["endpoint", "status"]);
        assert!(
            !status.status.success(),
            "etcd started by hand over a wiped data dir answers as a cluster member: {}",
            String::from_utf8_lossy(&status.stdout)
        );
        if let Some(st) = etcd.try_wait().unwrap() {
            exited = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = etcd.kill();
    let _ = etcd.wait();
    let text = std::fs::read_to_string(lab.host_dir(1).join("etcd-by-hand.log")).unwrap();
    let exited = exited.unwrap_or_else(|| panic!("etcd kept running: {text}"));
    assert!(!exited.success(), "{text}");
    assert!(
        !lab.host_dir(1).join("data/member/wal").exists(),
        "etcd wrote a WAL: {text}"
    );
}

#[test]
fn etcd_from_the_env_file_over_a_wiped_data_dir_forms_nothing_etcd_3_4() {
    env_over_wiped_data_dir(64, Version::V3_4);
}

#[test]
fn etcd_from_the_env_file_over_a_wiped_data_dir_forms_nothing_etcd_3_5() {
    env_over_wiped_data_dir(65, Version::V3_5);
}

/// A stale DNS record lists a node of another cluster (same CA, same cluster name); the member
/// loses its quorum. Before: it logged "cluster ID mismatch", moved its data aside and joined
/// the other cluster. Now its data stays, and the cluster comes back whole.
fn foreign_cluster_in_dns(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 4);
    lab.put(1, "/before", "foreign");
    // Host 4: a one-member cluster of its own.
    lab.write_config(
        4,
        1,
        &format!("peers = [\"node4=https://{}:2380\"]", lab.ip(4)),
    );
    lab.start(&[4]);
    lab.wait_voters(4, &[4], WITHIN);
    lab.dns("--add-host", 4);
    // Quorum lost for the cluster of hosts 1-3.
    lab.stop(2);
    lab.stop(3);
    std::thread::sleep(Duration::from_secs(20));
    let log = lab.log(1);
    assert!(
        !log.contains("data dir moved aside"),
        "host 1 moved its data aside: {log}"
    );
    assert!(moved_aside(&lab, 1).is_empty());
    assert!(lab.host_dir(1).join("data/member/wal").is_dir());
    assert!(lab.running(1), "host 1's agent exited");
    lab.start(&[2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for h in 1..=3 {
        assert_eq!(lab.get(h, "/before").as_deref(), Some("foreign"));
    }
    assert_eq!(lab.members(4).len(), 1, "the other cluster grew");
}

#[test]
fn a_foreign_cluster_in_dns_while_quorum_is_lost_keeps_the_data_etcd_3_4() {
    foreign_cluster_in_dns(66, Version::V3_4);
}

#[test]
fn a_foreign_cluster_in_dns_while_quorum_is_lost_keeps_the_data_etcd_3_5() {
    foreign_cluster_in_dns(67, Version::V3_5);
}

/// A node configured as cluster "beta" whose peer list holds one address of this cluster
/// ("lab"): it is kept out (before: it joined as a 4th voter and read the keys).
fn other_cluster_name(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 4);
    lab.put(1, "/before", "beta");
    lab.write_config(
        4,
        2,
        &format!(
            "peers = [\"node1=https://{}:2380\", \"node4=https://{}:2380\"]",
            lab.ip(1),
            lab.ip(4)
        ),
    );
    lab.edit_config(4, "name = \"lab\"", "name = \"beta\"");
    lab.edit_config(4, DEFAULT_TIMEOUT, SHORT_TIMEOUT);
    lab.start(&[4]);
    let code = lab.wait_exit(4, Duration::from_secs(60));
    let log = lab.log(4);
    assert_eq!(code, Some(3), "{log}");
    assert!(
        log.contains("cluster.name \\\"lab\\\"") || log.contains("cluster.name \"lab\""),
        "{log}"
    );
    assert_eq!(lab.members(1).len(), 3, "the cluster took the foreign node");
    assert!(!lab.host_dir(4).join("data/member").exists());
}

#[test]
fn a_node_of_another_cluster_name_is_kept_out_etcd_3_4() {
    other_cluster_name(68, Version::V3_4);
}

#[test]
fn a_node_of_another_cluster_name_is_kept_out_etcd_3_5() {
    other_cluster_name(69, Version::V3_5);
}

/// A "peer" that accepts TCP and never says anything (etcd 3.5 while it starts looks like this
/// for a while): `status`, `plan` and `run` all end in bounded time.
fn accept_only_peer(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    let ip3 = lab.ip(3);
    let script = format!(
        "import socket,time\nss=[]\nfor p in (2378,2379,2380):\n s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('{ip3}',p)); s.listen(64); ss.append(s)\nheld=[]\nwhile True:\n for s in ss:\n  s.settimeout(0.05)\n  try: held.append(s.accept())\n  except Exception: pass\n time.sleep(0.05)\n"
    );
    let mut silent = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.netns(3),
            "timeout",
            "120",
            "python3",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let cfg1 = lab.config_path(1);
    let cfg1 = cfg1.to_str().unwrap();

    let t = Instant::now();
    let out = lab.exec(
        1,
        Path::new(&common::bin()),
        &[
            "status",
            "--config",
            cfg1,
            "--endpoints",
            &lab.client_url(3),
        ],
    );
    let status_took = t.elapsed();
    assert!(!out.status.success());
    assert!(
        status_took < Duration::from_secs(15),
        "status took {status_took:?}"
    );

    let t = Instant::now();
    let out = lab.exec(1, Path::new(&common::bin()), &["plan", "--config", cfg1]);
    let plan_took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("decision: wait") && stdout.contains(&format!("etcd3=https://{ip3}:2380")),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        plan_took < Duration::from_secs(15),
        "plan took {plan_took:?}"
    );

    lab.edit_config(1, DEFAULT_TIMEOUT, "timeout = \"10s\"");
    let t = Instant::now();
    lab.start(&[1]);
    let code = lab.wait_exit(1, Duration::from_secs(60));
    let run_took = t.elapsed();
    assert_eq!(code, Some(3), "{}", lab.log(1));
    assert!(run_took < Duration::from_secs(30), "run took {run_took:?}");
    eprintln!(
        "accept-only peer: status {status_took:?}, plan {plan_took:?}, run (discovery.timeout 10s) {run_took:?}"
    );
    let _ = silent.kill();
    let _ = silent.wait();
}

#[test]
fn an_accept_only_peer_cannot_hang_the_agent_etcd_3_4() {
    accept_only_peer(70, Version::V3_4);
}

#[test]
fn an_accept_only_peer_cannot_hang_the_agent_etcd_3_5() {
    accept_only_peer(71, Version::V3_5);
}

/// A config change after formation reaches etcd at the next start (before: the restart path
/// reused the env file on disk).
fn config_change_after_restart(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 3);
    lab.put(1, "/before", "flags");
    lab.stop(1);
    let cfg = lab.config_path(1);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[etcd.flags]\nheartbeat-interval = 150\nelection-timeout = 1500\n");
    std::fs::write(&cfg, text).unwrap();
    lab.start(&[1]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    let env = std::fs::read_to_string(lab.host_dir(1).join("etcd.env")).unwrap();
    assert!(env.contains("ETCD_HEARTBEAT_INTERVAL=150\n"), "{env}");
    let pid = lab.etcd_pid(1).expect("etcd of host 1");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"ETCD_ELECTION_TIMEOUT=1500"),
        "the running etcd did not get the new flag"
    );
    assert_eq!(lab.get(1, "/before").as_deref(), Some("flags"));
}

#[test]
fn a_config_change_reaches_etcd_after_a_restart_etcd_3_4() {
    config_change_after_restart(72, Version::V3_4);
}

#[test]
fn a_config_change_reaches_etcd_after_a_restart_etcd_3_5() {
    config_change_after_restart(73, Version::V3_5);
}

/// A member removed by hand heals (both other members say so), and pruning the moved-aside
/// copies keeps the one with the highest raft index (before: the oldest by mtime went first,
/// which is the most valuable copy after a few heals).
fn prune_keeps_the_valuable_copy(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(
        id,
        version,
        LabOptions {
            hosts: 3,
            srv: true,
            dns_hosts: Some(vec![1, 2, 3]),
        },
    );
    lab.configure_srv(3);
    // The count this test was written for (the default is 2): the newest three by name stay.
    lab.edit_config(1, "[heal]\n", "[heal]\nkeep_moved_aside = 3\n");
    // Four older copies; the oldest is far ahead of the running member.
    for (day, index) in [(1, 1_000_000u64), (2, 1), (3, 2), (4, 3)] {
        let dir = lab
            .host_dir(1)
            .join(format!("data.removed-2026010{day}T000000Z"));
        std::fs::create_dir_all(dir.join("member/wal")).unwrap();
        std::fs::write(
            dir.join("etcd-bootstrap-moved.json"),
            format!("{{\"reason\":\"test\",\"raft_index\":{index},\"cluster_id\":null,\"member_id\":null}}"),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    lab.put(1, "/before", "prune");
    let old = lab.member_id_of(2, 1);
    lab.remove_member(2, &old);
    lab.wait_voters(2, &[1, 2, 3], WITHIN);
    assert_ne!(lab.member_id_of(2, 1), old, "host 1 was not re-added");
    assert_eq!(lab.get(1, "/before").as_deref(), Some("prune"));
    let left = moved_aside(&lab, 1);
    assert_eq!(left.len(), 4, "{left:?}");
    assert!(
        left.contains(&"data.removed-20260101T000000Z".to_string()),
        "{left:?}"
    );
    assert!(
        !left.contains(&"data.removed-20260102T000000Z".to_string()),
        "{left:?}"
    );
    assert!(
        left.contains(&"data.removed-20260104T000000Z".to_string()),
        "{left:?}"
    );
}

#[test]
fn pruning_keeps_the_copy_with_the_highest_raft_index_etcd_3_4() {
    prune_keeps_the_valuable_copy(74, Version::V3_4);
}

#[test]
fn pruning_keeps_the_copy_with_the_highest_raft_index_etcd_3_5() {
    prune_keeps_the_valuable_copy(75, Version::V3_5);
}

/// The pause marker: while it exists the heal loop re-adds nothing and moves nothing, and etcd
/// keeps running; once it is gone the member heals.
fn pause_marker(id: u8, version: Version) {
    let _g = serial();
    let lab = Lab::three(id, version, 3);
    let pause = lab.host_dir(1).join("data.pause");
    std::fs::write(&pause, "operator at work\n").unwrap();
    let old = lab.member_id_of(2, 1);
    lab.remove_member(2, &old);
    std::thread::sleep(Duration::from_secs(12));
    let urls: Vec<String> = lab
        .members(2)
        .iter()
        .flat_map(|m| m["peerURLs"].as_array().cloned().unwrap_or_default())
        .map(|u| u.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        !urls.contains(&format!("https://{}:2380", lab.ip(1))),
        "host 1 was re-added while paused"
    );
    assert!(moved_aside(&lab, 1).is_empty(), "data moved while paused");
    assert!(lab.host_dir(1).join("data/member/wal").is_dir());
    // The removed etcd may exit by itself ("permanently removed"); the agent neither stops it
    // nor heals.
    let log = lab.log(1);
    assert!(log.contains("paused by the pause marker"), "{log}");
    assert!(
        !log.contains("stopping etcd") && !log.contains("healing:"),
        "{log}"
    );
    let cfg1 = lab.config_path(1);
    let out = lab.exec(
        1,
        Path::new(&common::bin()),
        &[
            "status",
            "--config",
            cfg1.to_str().unwrap(),
            "--endpoints",
            &lab.client_url(2),
        ],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("heal loop PAUSED by"), "status: {table}");
    std::fs::remove_file(&pause).unwrap();
    lab.wait_voters(2, &[1, 2, 3], WITHIN);
}

#[test]
fn the_pause_marker_stops_the_heal_loop_etcd_3_4() {
    pause_marker(76, Version::V3_4);
}

#[test]
fn the_pause_marker_stops_the_heal_loop_etcd_3_5() {
    pause_marker(77, Version::V3_5);
}

/// The own-cluster check does not get in the way of a legitimate join through seeds: the seed
/// host's agent confirms the cluster, and the node joins as a learner and is promoted.
fn join_through_a_seed(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 4);
    lab.put(1, "/before", "seed");
    lab.write_config(4, 3, &format!("seeds = [\"{}\"]", lab.client_url(1)));
    lab.edit_config(
        4,
        "[member]\n",
        &format!("[member]\nadvertise_address = \"{}\"\n", lab.ip(4)),
    );
    lab.start(&[4]);
    lab.wait_voters(1, &[1, 2, 3, 4], WITHIN);
    assert_eq!(lab.get(4, "/before").as_deref(), Some("seed"));
    assert!(lab.log(4).contains("added as a learner"));
}

#[test]
fn a_node_joins_its_own_cluster_through_a_seed_etcd_3_5() {
    join_through_a_seed(78, Version::V3_5);
}
