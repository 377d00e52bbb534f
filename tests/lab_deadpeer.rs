//! One voter down on etcd 3.4.23, where etcd refuses every member add until all voters are
//! connected ("unhealthy cluster"): a joiner waits, then succeeds once the dead
//! member returns, or once the dead-peer policy (`heal.remove_dead_after`) removes it. And a
//! Terraform-style rolling replacement (old VM destroyed, a new one with a new name and address,
//! SRV records updated), three rounds, on both versions.

mod common;

use common::{serial, Lab, LabOptions, Version};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(120);

/// Append `line` to the [heal] section (the last one of the lab's config) of hosts `hosts`.
fn heal_setting(lab: &Lab, hosts: std::ops::RangeInclusive<usize>, line: &str) {
    for h in hosts {
        let p = lab.config_path(h);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{text}{line}\n")).unwrap();
    }
}

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
        heal_setting(&lab, 1..=3, &format!("remove_dead_after = \"{limit}\""));
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

/// Three rounds of a rolling replacement: host r is destroyed (stopped, its SRV records removed)
/// and host r+3, a new VM with a new name and address, appears in SRV and boots. Each round ends
/// with exactly three healthy started voters; at the end they are the three new VMs, in the same
/// cluster, with every key written along the way. The joiner that waits on the dead member says
/// which member blocks it and the command that unblocks it.
fn rolling_replacement(id: u8, version: Version) {
    rolling_replacement_onto(id, version, version);
}

/// `rolling_replacement` where the new VMs run `new_version` (an immutable fleet's upgrade: the
/// new image has the newer etcd): each joins the older cluster, and the cluster ends on the new
/// release, its cluster version too.
fn rolling_replacement_onto(id: u8, version: Version, new_version: Version) {
    let _g = serial();
    let mut lab = Lab::up(
        id,
        version,
        LabOptions {
            hosts: 6,
            srv: true,
            dns_hosts: Some(vec![1, 2, 3]),
        },
    );
    lab.configure_srv(3);
    heal_setting(&lab, 1..=6, "remove_dead_after = \"20s\"");
    for h in 4..=6 {
        let (from, to) = (version.dir().join("etcd"), new_version.dir().join("etcd"));
        lab.edit_config(
            h,
            &format!("binary = \"{}\"", from.display()),
            &format!("binary = \"{}\"", to.display()),
        );
    }
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    let cluster_id = lab.member_list(1).unwrap()["header"]["cluster_id"].clone();
    let mut keys = Vec::new();
    for r in 1..=3 {
        let (old, new) = (r, r + 3);
        let live: Vec<usize> = (r + 1..=3).chain(4..new).collect();
        let key = format!("/round/{r}");
        lab.put(live[0], &key, &format!("before replacing host {old}"));
        keys.push(key);
        let t = Instant::now();
        lab.stop(old);
        lab.dns("--remove-host", old);
        lab.dns("--add-host", new);
        lab.start(&[new]);
        let want: Vec<usize> = live.iter().copied().chain([new]).collect();
        lab.wait_voters(live[0], &want, WITHIN);
        eprintln!(
            "{}: round {r}: host {old} -> host {new} in {:?}",
            version.as_str(),
            t.elapsed()
        );
        let logs: String = (1..=6).map(|h| lab.log(h)).collect();
        let removals = logs
            .lines()
            .filter(|l| {
                l.contains("removing a dead member (heal.remove_dead_after)")
                    && l.contains("no longer in discovery")
            })
            .count();
        assert!(
            removals >= r,
            "round {r}: {removals} removals of a destroyed member logged"
        );
    }
    let members = lab.members(6);
    assert_eq!(
        common::started_voter_urls(&members),
        (4..=6)
            .map(|h| format!("https://{}:2380", lab.ip(h)))
            .collect::<Vec<_>>()
    );
    assert_eq!(members.len(), 3, "{members:?}");
    assert_eq!(
        lab.member_list(6).unwrap()["header"]["cluster_id"],
        cluster_id
    );
    for (r, key) in keys.iter().enumerate() {
        let want = format!("before replacing host {}", r + 1);
        for h in 4..=6 {
            assert_eq!(
                lab.get(h, key).as_deref(),
                Some(want.as_str()),
                "host {h} {key}"
            );
        }
    }
    if new_version != version {
        for h in 4..=6 {
            let pid = lab.etcd_pid(h).expect("etcd runs");
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
            assert_eq!(exe, new_version.dir().join("etcd"), "host {h}");
        }
        let want = &new_version.as_str()[..3];
        let deadline = Instant::now() + Duration::from_secs(30);
        while lab.cluster_version(6).as_deref() != Some(want) {
            assert!(
                Instant::now() < deadline,
                "cluster version {:?}, not {want}, 30 s after the last replacement",
                lab.cluster_version(6)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!(
            "{} -> {}: cluster version {want}",
            version.as_str(),
            new_version.as_str()
        );
    }
    if version == Version::V3_4 {
        // etcd 3.4 refuses the add while the dead voter is listed: the joiner said who blocks it.
        let joiners: String = (4..=6).map(|h| lab.log(h)).collect();
        assert!(
            joiners.contains("blocks this join") && joiners.contains("member remove"),
            "no joiner named the member blocking it"
        );
    }
    lab.stop_all();
}

#[test]
fn rolling_replacement_three_rounds_etcd_3_4() {
    rolling_replacement(85, Version::V3_4);
}

#[test]
fn rolling_replacement_three_rounds_etcd_3_5() {
    rolling_replacement(86, Version::V3_5);
}

/// The immutable fleet's upgrade (issue 23): 3 members of etcd 3.4.23 replaced one at a time by
/// VMs with etcd 3.5.30, under the same rules.
#[test]
fn rolling_replacement_onto_newer_vms_upgrades_etcd_3_4_to_3_5() {
    rolling_replacement_onto(242, Version::V3_4, Version::V3_5);
}
