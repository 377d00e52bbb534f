//! Joining and self-healing in the namespace lab, on real etcd 3.4.23 and 3.5.30: growing a
//! cluster with concurrent joiners, a wiped member, a member removed by hand, `leave`, and a kill
//! at every fail point followed by a re-run.

mod common;

use common::{serial, Lab, LabOptions, Version};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(120);

fn grow_3_to_5(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 5);
    lab.put(1, "/before", "grow");
    lab.dns("--add-host", 4);
    lab.dns("--add-host", 5);
    let t = Instant::now();
    lab.start(&[4, 5]);
    lab.wait_voters(1, &[1, 2, 3, 4, 5], WITHIN);
    eprintln!(
        "etcd {}: two concurrent joiners were voters after {:?}",
        version.as_str(),
        t.elapsed()
    );
    assert_eq!(lab.get(5, "/before").unwrap_or_default(), "grow");
    for h in [4, 5] {
        assert!(
            lab.log(h).contains("added as a learner"),
            "host {h} did not join as a learner"
        );
        assert!(
            lab.log(h).contains("promoted to voter"),
            "host {h} was not promoted"
        );
    }
    lab.stop_all();
}

fn wiped_member(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 3);
    lab.put(1, "/before", "wipe");
    let old = lab.member_id_of(1, 2);
    lab.stop(2);
    std::fs::remove_dir_all(lab.host_dir(2).join("data")).unwrap();
    let t = Instant::now();
    lab.start(&[2]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    eprintln!(
        "etcd {}: wiped member was a healthy voter again after {:?}",
        version.as_str(),
        t.elapsed()
    );
    assert_ne!(
        lab.member_id_of(1, 2),
        old,
        "the stale entry was not replaced"
    );
    assert_eq!(
        lab.get(2, "/before").unwrap_or_default(),
        "wipe",
        "key written before the wipe not readable through it"
    );
    assert!(lab.log(2).contains("removing its stale member"));
    lab.stop_all();
}

fn removed_member(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 3);
    lab.put(1, "/before", "remove");
    let victim = lab.member_id_of(1, 3);
    lab.remove_member(1, &victim);
    let t = Instant::now();
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    let took = t.elapsed();
    eprintln!(
        "etcd {}: removed member re-added and healthy after {took:?}",
        version.as_str()
    );
    assert!(lab
        .log(3)
        .contains("no longer part of the cluster; healing"));
    assert!(
        lab.running(3),
        "the bootstrapper should keep running after healing"
    );
    let moved = std::fs::read_dir(lab.host_dir(3))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("data.removed-")
        })
        .count();
    assert_eq!(moved, 1, "the removed member's data was not moved aside");
    assert_eq!(lab.get(3, "/before").unwrap_or_default(), "remove");
    lab.stop_all();
}

fn leave(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 3);
    let cfg = lab.config_path(3);
    let out = lab.exec(
        3,
        std::path::Path::new(common::BIN),
        &["leave", "--config", cfg.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "leave: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        lab.wait_exit(3, Duration::from_secs(30)),
        Some(0),
        "the agent should stop after leave"
    );
    lab.wait_voters(1, &[1, 2], WITHIN);
    assert!(
        !lab.host_dir(3).join("data").exists(),
        "data dir not moved aside"
    );
    assert!(std::fs::read_dir(lab.host_dir(3)).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("data.removed-")));
    // A later boot does not add it back.
    lab.start(&[3]);
    assert_eq!(lab.wait_exit(3, Duration::from_secs(30)), Some(3));
    // Leaving now would leave one voter of two: refused.
    let cfg2 = lab.config_path(2);
    lab.stop(1);
    let out = lab.exec(
        2,
        std::path::Path::new(common::BIN),
        &["leave", "--config", cfg2.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "leave without quorum: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.stop_all();
}

/// Kill the agent at every fail point of a new cluster, a join and a heal, then re-run: it
/// converges every time, and keys written before are still there.
fn fail_points(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    // New cluster, one formation per fail point: a member reaches them only once every other
    // member's agent has said it holds no data, so the others run normally meanwhile (a member
    // killed earlier takes its agent with it, and the rest rightly wait for it). Host 1 dies
    // after writing its certificates; then, on new disks, host 2 after writing etcd's env.
    for (host, fp) in [(1, "new:after-certs"), (2, "new:after-env")] {
        lab.stop_all();
        for h in 1..=3 {
            lab.wipe(h);
        }
        let others: Vec<usize> = (1..=3).filter(|h| *h != host).collect();
        lab.start(&others);
        lab.start_with_env(&[host], &[("ETCD_BOOTSTRAP_FAILPOINT", fp)]);
        assert_eq!(
            lab.wait_exit(host, WITHIN),
            None,
            "{fp}: not killed at the fail point"
        );
        assert!(lab.log(host).contains(fp), "{fp}: fail point not logged");
        lab.start(&[host]);
        lab.wait_voters(1, &[1, 2, 3], WITHIN);
    }
    lab.put(1, "/before", "failpoints");
    // Join: the wiped member replaces its stale self; kill it at each step.
    for fp in [
        "join:after-remove",
        "join:before-add",
        "join:after-add",
        "join:after-start",
        "join:before-promote",
    ] {
        lab.stop(3);
        std::fs::remove_dir_all(lab.host_dir(3).join("data")).unwrap();
        lab.start_with_env(&[3], &[("ETCD_BOOTSTRAP_FAILPOINT", fp)]);
        assert_eq!(
            lab.wait_exit(3, WITHIN),
            None,
            "{fp}: not killed at the fail point"
        );
        assert!(lab.log(3).contains(fp), "{fp}: fail point not logged");
        lab.start(&[3]);
        lab.wait_voters(1, &[1, 2, 3], WITHIN);
        assert_eq!(
            lab.get(3, "/before").unwrap_or_default(),
            "failpoints",
            "{fp}"
        );
    }
    // Heal: remove the member, the agent dies in the middle of healing, a re-run heals.
    for fp in ["heal:after-stop", "heal:after-move"] {
        lab.stop(3);
        lab.start_with_env(&[3], &[("ETCD_BOOTSTRAP_FAILPOINT", fp)]);
        lab.wait_voters(1, &[1, 2, 3], WITHIN);
        let victim = lab.member_id_of(1, 3);
        lab.remove_member(1, &victim);
        assert_eq!(
            lab.wait_exit(3, WITHIN),
            None,
            "{fp}: not killed at the fail point"
        );
        lab.start(&[3]);
        lab.wait_voters(1, &[1, 2, 3], WITHIN);
        assert_eq!(
            lab.get(3, "/before").unwrap_or_default(),
            "failpoints",
            "{fp}"
        );
    }
    lab.stop_all();
}

/// Every fail point the code defines is exercised above.
#[test]
fn every_fail_point_is_exercised() {
    let me = [
        include_str!("lab_join.rs"),
        include_str!("lab_restore.rs"),
        include_str!("lab_quorum.rs"),
    ]
    .concat();
    for fp in etcd_bootstrap::failpoint::ALL {
        assert!(
            me.contains(&format!("\"{fp}\"")),
            "fail point {fp} is not exercised by a lab test"
        );
    }
}

#[test]
fn grow_3_to_5_etcd_3_4() {
    grow_3_to_5(11, Version::V3_4);
}

#[test]
fn grow_3_to_5_etcd_3_5() {
    grow_3_to_5(12, Version::V3_5);
}

#[test]
fn wiped_member_etcd_3_4() {
    wiped_member(13, Version::V3_4);
}

#[test]
fn wiped_member_etcd_3_5() {
    wiped_member(14, Version::V3_5);
}

#[test]
fn removed_member_etcd_3_4() {
    removed_member(15, Version::V3_4);
}

#[test]
fn removed_member_etcd_3_5() {
    removed_member(16, Version::V3_5);
}

#[test]
fn leave_etcd_3_4() {
    leave(17, Version::V3_4);
}

#[test]
fn leave_etcd_3_5() {
    leave(18, Version::V3_5);
}

#[test]
fn fail_points_etcd_3_4() {
    fail_points(19, Version::V3_4);
}

#[test]
fn fail_points_etcd_3_5() {
    fail_points(20, Version::V3_5);
}
