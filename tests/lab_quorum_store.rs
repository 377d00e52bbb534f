//! Quorum loss with every member accounted for (issue 27), when the snapshot store holds a newer
//! point than every member's data: the agents form the cluster again from the store's snapshot by
//! themselves, keeping the older copy aside. Apart from `lab_quorum` so that the lanes stay even
//! (these run an S3 server).

mod common;

use common::{serial, Lab, LabOptions, Version, S3};
use std::path::Path;
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(60);

/// The store holds a newer point than every member: host 1 is down for a while, the others go
/// on and a snapshot is taken, then all three stop and the disks of hosts 2 and 3 are replaced.
/// Once every agent answers, host 1 moves its (older) data aside, kept, and the three form the
/// cluster again from the store's snapshot, by themselves: every key written before the
/// snapshot is there, the ones host 1 missed included.
fn store_newer_restores(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::up(id, version, LabOptions::srv(3));
    lab.configure_srv(3);
    let s3 = S3::up(&lab);
    let _keys = common::with_encrypted_backup(&lab, &s3, "fleet");
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for i in 0..10 {
        lab.put(1 + i % 3, &format!("/kept/{i}"), &format!("v{i}"));
    }
    lab.stop(1);
    for i in 0..10 {
        lab.put(2 + i % 2, &format!("/later/{i}"), &format!("w{i}"));
    }
    let bin = common::bin();
    let cfg2 = lab.config_path(2);
    let out = lab.exec(
        2,
        Path::new(&bin),
        &["snapshot", "save", "--config", cfg2.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.stop_all();
    for h in [2, 3] {
        lab.wipe(h);
    }
    lab.start(&[2, 3, 1]);
    let t = Instant::now();
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(90));
    eprintln!(
        "{}: store newer than the survivor, all agents started -> three healthy voters: {:?}",
        version.as_str(),
        t.elapsed()
    );
    for h in [1, 2, 3] {
        for i in [0, 9] {
            assert_eq!(
                lab.get(h, &format!("/kept/{i}")).as_deref(),
                Some(format!("v{i}").as_str()),
                "host {h}"
            );
            assert_eq!(
                lab.get(h, &format!("/later/{i}")).as_deref(),
                Some(format!("w{i}").as_str()),
                "host {h}"
            );
        }
    }
    let log1 = lab.log(1);
    assert!(
        log1.contains("automatic recovery from snapshot") && log1.contains("of the store"),
        "host 1's log does not record the automatic recovery from the store"
    );
    let moved: Vec<String> = std::fs::read_dir(lab.host_dir(1))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.removed-"))
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "host 1's older data is kept aside: {moved:?}"
    );
    let cfg1 = lab.config_path(1);
    let out = lab.exec(
        1,
        Path::new(&bin),
        &["status", "--config", cfg1.to_str().unwrap()],
    );
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.contains("last automatic recovery") && status.contains("of the store"),
        "status: {status}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.stop_all();
}

#[test]
fn quorum_loss_with_the_store_newer_restores_from_it_etcd_3_5() {
    store_newer_restores(230, Version::V3_5);
}

#[test]
fn quorum_loss_with_the_store_newer_restores_from_it_etcd_3_4() {
    store_newer_restores(231, Version::V3_4);
}
