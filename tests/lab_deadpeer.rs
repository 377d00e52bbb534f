//! One voter down on etcd 3.4.23, where etcd refuses every member add until all voters are
//! connected ("unhealthy cluster"): a joiner waits, then succeeds once the dead
//! member returns, or once the opt-in dead-peer policy (`heal.remove_dead_after`) removes it.

mod common;

use common::{serial, Lab, LabOptions, Version};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(120);

fn lab_with_joiner_waiting(id: u8, remove_dead_after: Option<&str>) -> Lab {
    let mut lab = Lab::up(
        id,
        Version::V3_4,
        LabOptions {
            hosts: 4,
            srv: true,
            dns_hosts: Some(vec![1, 2, 3]),
        },
    );
    lab.configure_srv(3);
    if let Some(limit) = remove_dead_after {
        for h in 1..=3 {
            let p = lab.config_path(h);
            let text = std::fs::read_to_string(&p).unwrap();
            // [heal] is the last section of the lab's config.
            std::fs::write(&p, format!("{text}remove_dead_after = \"{limit}\"\n")).unwrap();
        }
    }
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    // Host 3 goes down (its bootstrapper stops etcd), a new node appears and starts joining.
    lab.stop(3);
    lab.dns("--add-host", 4);
    lab.start(&[4]);
    lab
}

#[test]
fn joiner_waits_for_a_dead_voter_to_return_etcd_3_4() {
    let _g = serial();
    let mut lab = lab_with_joiner_waiting(21, None);
    // While host 3 is down, etcd 3.4 refuses the add: the joiner waits (and keeps retrying).
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(12) {
        assert!(lab.running(4), "the joiner gave up instead of waiting");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        lab.log(4)
            .contains("the cluster cannot take a new member yet"),
        "joiner did not report waiting"
    );
    assert_eq!(
        lab.members(1).len(),
        3,
        "a member was added while a voter was down"
    );
    // The dead member returns: the joiner gets in.
    lab.start(&[3]);
    lab.wait_voters(1, &[1, 2, 3, 4], WITHIN);
    lab.stop_all();
}

#[test]
fn dead_voter_is_removed_to_make_room_for_a_joiner_etcd_3_4() {
    let _g = serial();
    let mut lab = lab_with_joiner_waiting(22, Some("8s"));
    let t = Instant::now();
    lab.wait_voters(1, &[1, 2, 4], WITHIN);
    eprintln!(
        "dead voter removed and joiner promoted after {:?}",
        t.elapsed()
    );
    let leader_logs: String = (1..=2).map(|h| lab.log(h)).collect();
    assert!(
        leader_logs.contains("removing a dead member (heal.remove_dead_after)"),
        "no agent logged the dead-peer removal"
    );
    assert!(
        leader_logs.contains("waiting to join"),
        "removal reason not logged"
    );
    lab.stop_all();
}
