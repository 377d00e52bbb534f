//! Changing a running fleet (issue 23): `systemctl reload etcd-bootstrap` (SIGHUP) against a
//! real 3-member cluster. A configuration that does not validate is refused (the agent keeps
//! running, `status` and `doctor` say "config rejected"), and so is one that changes what a
//! running member cannot change (its ports); a change etcd needs no restart for (heal settings)
//! restarts nothing.

mod common;

use common::{serial, Lab, Version};
use std::path::Path;
use std::time::{Duration, Instant};

/// SIGHUP to the agent of `h`: what `systemctl reload etcd-bootstrap` sends.
fn reload(lab: &Lab, h: usize) {
    let pid = lab.agent_pid(h).expect("agent running");
    // SAFETY: kill(2) on the agent this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

/// Wait until host `h`'s log has `needle` more often than `before` times.
fn wait_log(lab: &Lab, h: usize, needle: &str, before: usize, limit: Duration) {
    let start = Instant::now();
    while lab.log(h).matches(needle).count() <= before {
        if start.elapsed() > limit {
            lab.dump_logs();
            panic!("host {h}: {needle:?} not logged within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `etcd-bootstrap CMD --config <h's>` inside host `h`: (exit code, stdout).
fn command(lab: &Lab, h: usize, cmd: &str) -> (Option<i32>, String) {
    let config = lab.config_path(h);
    let bin = common::bin();
    let out = lab.exec(
        h,
        Path::new("timeout"),
        &["60", &bin, cmd, "--config", config.to_str().unwrap()],
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn pids(lab: &Lab) -> Vec<Option<u32>> {
    (1..=3).map(|h| lab.etcd_pid(h)).collect()
}

#[test]
fn reload_refuses_a_bad_config_and_applies_a_heal_change_without_restarting_etcd_3_5() {
    let _g = serial();
    let started = Instant::now();
    let mut lab = Lab::three(190, Version::V3_5, 3);
    let before = pids(&lab);
    assert!(before.iter().all(Option::is_some), "{before:?}");

    // A configuration that fails validation: logged and refused; the agent and etcd run on.
    lab.edit_config(1, "interval = \"2s\"", "interval = \"banana\"");
    reload(&lab, 1);
    wait_log(&lab, 1, "config rejected", 0, Duration::from_secs(10));
    assert!(lab.running(1), "the agent must keep running");
    let (code, out) = command(&lab, 1, "status");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("config rejected: config key `heal.interval`"),
        "{out}"
    );
    let (code, out) = command(&lab, 1, "doctor");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("FAIL config: config rejected: config key `heal.interval`"),
        "{out}"
    );

    // Corrected and changed (heal settings only), on every member at the same instant: accepted,
    // and no etcd is restarted.
    lab.edit_config(1, "interval = \"banana\"", "interval = \"3s\"");
    for h in 2..=3 {
        lab.edit_config(h, "interval = \"2s\"", "interval = \"3s\"");
    }
    for h in 1..=3 {
        reload(&lab, h);
    }
    for h in 1..=3 {
        wait_log(
            &lab,
            h,
            "configuration reloaded",
            0,
            Duration::from_secs(10),
        );
    }
    let (code, out) = command(&lab, 1, "doctor");
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("config rejected"), "{out}");
    // Two heal ticks of the new interval: the agents keep their members healthy, untouched.
    std::thread::sleep(Duration::from_secs(7));
    lab.wait_healthy(3, Duration::from_secs(10));
    assert_eq!(pids(&lab), before, "a heal-only change restarted etcd");
    for h in 1..=3 {
        assert!(lab.running(h), "agent {h} stopped");
    }

    // A valid configuration that changes what a running member cannot change (its agent
    // port): refused by the agent, and `status` and `doctor` (which read it fine) say so.
    lab.edit_config(1, "[member]\n", "[member]\nagent_port = 2390\n");
    reload(&lab, 1);
    wait_log(&lab, 1, "config rejected", 1, Duration::from_secs(10));
    let (code, out) = command(&lab, 1, "status");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("config rejected: member.agent_port cannot change on a running member"),
        "{out}"
    );
    let (code, out) = command(&lab, 1, "doctor");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL config: config rejected: member.agent_port cannot change"),
        "{out}"
    );
    lab.edit_config(1, "[member]\nagent_port = 2390\n", "[member]\n");
    reload(&lab, 1);
    wait_log(
        &lab,
        1,
        "configuration reloaded",
        1,
        Duration::from_secs(10),
    );
    let (code, out) = command(&lab, 1, "doctor");
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(pids(&lab), before, "a refused change restarted etcd");
    eprintln!("reload scenario: {:?}", started.elapsed());
}
