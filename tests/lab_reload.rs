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

/// Whether process `pid`'s environment holds `var` (`NAME=value`).
fn environ_has(pid: u32, var: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == var.as_bytes()))
}

/// The host whose member leads, as the members report it.
fn leader_host(lab: &Lab) -> usize {
    let out = lab.etcdctl(1, &lab.endpoints(), &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("endpoint status");
    let leader = v[0]["Status"]["leader"].as_u64().expect("a leader");
    (1..=3)
        .find(|h| u64::from_str_radix(&lab.member_id_of(1, *h), 16).unwrap() == leader)
        .expect("the leader is one of the hosts")
}

/// A flags-only change in every member's configuration, every agent reloaded at the same
/// instant, under a writer through all three client endpoints: the change is rolled one member
/// at a time, the leader last; no write fails, at least two of three members are healthy at
/// every 0.5 s sample, and every etcd ends up with the new flag in its environment.
#[test]
fn a_flags_change_reloaded_everywhere_at_once_is_rolled_leader_last_3_5() {
    rolled_leader_last(191, Version::V3_5);
}

#[test]
fn a_flags_change_reloaded_everywhere_at_once_is_rolled_leader_last_3_4() {
    rolled_leader_last(192, Version::V3_4);
}

fn rolled_leader_last(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 3);
    let flag = "ETCD_SNAPSHOT_COUNT=20000";
    roll_under_writer(
        &mut lab,
        &|lab, h| {
            let p = lab.config_path(h);
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, text + "\n[etcd.flags]\nsnapshot-count = 20000\n").unwrap();
        },
        &|pid| environ_has(pid, flag),
    );
    lab.stop_all();
}

/// The etcd binary process `pid` runs.
fn exe(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// etcd 3.4.23 -> 3.5.30 on a running fleet, the way a fleet changes it: every member's
/// `etcd.binary` changed and every agent reloaded at the same instant, under a writer through
/// all three client endpoints. The release step (3.4 -> 3.5, one minor up) is allowed, each
/// member's new etcd passes its trial start, the members restart one at a time, the leader last,
/// no write fails, and the cluster's version is 3.5 at the end.
#[test]
fn a_3_4_fleet_reloaded_onto_3_5_is_upgraded_one_member_at_a_time_leader_last() {
    let _g = serial();
    let mut lab = Lab::three(240, Version::V3_4, 3);
    assert_eq!(lab.cluster_version(1).as_deref(), Some("3.4"));
    let (old, new) = (
        Version::V3_4.dir().join("etcd"),
        Version::V3_5.dir().join("etcd"),
    );
    let (old_s, new_s) = (old.display().to_string(), new.display().to_string());
    roll_under_writer(
        &mut lab,
        &|lab, h| {
            lab.edit_config(
                h,
                &format!("binary = \"{old_s}\""),
                &format!("binary = \"{new_s}\""),
            )
        },
        &|pid| exe(pid).is_some_and(|e| e == new),
    );
    for h in 1..=3 {
        let log = lab.log(h);
        assert!(
            log.contains("passed its trial start"),
            "host {h}: no trial start logged"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab.cluster_version(1).as_deref() != Some("3.5") {
        assert!(
            Instant::now() < deadline,
            "the cluster version is not 3.5 within 30 s of the last restart: {:?}",
            lab.cluster_version(1)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    lab.stop_all();
}

/// The rollout of one change, under a writer through all three client endpoints: `change`
/// edits host h's configuration, then every agent is reloaded at the same instant; `done`
/// tells, from its PID, an etcd that runs the change. Asserts no failed write, at least two of
/// three members healthy at every 0.5 s sample, every etcd restarted once and the leader last.
fn roll_under_writer(lab: &mut Lab, change: &dyn Fn(&Lab, usize), done: &dyn Fn(u32) -> bool) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let version = lab.version;
    let started = Instant::now();
    let leader = leader_host(lab);
    let before = pids(lab);
    let stop = AtomicBool::new(false);
    let (writes, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut errors = vec![];
    let mut samples: Vec<(usize, Vec<Option<u32>>)> = vec![];
    let lab: &Lab = lab;
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut errors = vec![];
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let out = lab.etcdctl(1, &lab.endpoints(), &["put", "roll", &i.to_string()]);
                writes.fetch_add(1, Ordering::Relaxed);
                if !out.status.success() {
                    failed.fetch_add(1, Ordering::Relaxed);
                    errors.push(String::from_utf8_lossy(&out.stderr).trim().to_string());
                }
            }
            errors
        });
        // A sample every 0.5 s, each in its own thread (one `endpoint health` can take longer
        // than that on a loaded machine), kept in the order they were started.
        let stop = &stop;
        let sampler = s.spawn(move || {
            let taken = std::sync::Mutex::new(vec![]);
            std::thread::scope(|s2| {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let taken = &taken;
                    s2.spawn(move || {
                        let p = pids(lab);
                        let out = lab.etcdctl(2, &lab.endpoints(), &["endpoint", "health"]);
                        let text = String::from_utf8_lossy(&out.stdout).to_string()
                            + &String::from_utf8_lossy(&out.stderr);
                        taken
                            .lock()
                            .unwrap()
                            .push((n, text.matches("is healthy").count(), p));
                    });
                    n += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
            });
            let mut taken = taken.into_inner().unwrap();
            taken.sort_by_key(|(n, _, _)| *n);
            taken
                .into_iter()
                .map(|(_, healthy, p)| (healthy, p))
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_secs(2));
        for h in 1..=3 {
            change(lab, h);
        }
        for h in 1..=3 {
            reload(lab, h);
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        while !(1..=3).all(|h| lab.etcd_pid(h).is_some_and(done)) {
            if Instant::now() > deadline {
                stop.store(true, Ordering::Relaxed);
                lab.dump_logs();
                panic!("not every etcd runs the change within 90 s");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        errors = writer.join().unwrap();
        samples = sampler.join().unwrap();
    });
    let took = started.elapsed();
    // The order the etcds were restarted in: when each one's PID first changed.
    let mut order: Vec<usize> = vec![];
    for (_, p) in &samples {
        for h in 1..=3 {
            if p[h - 1].is_some() && p[h - 1] != before[h - 1] && !order.contains(&h) {
                order.push(h);
            }
        }
    }
    let min_healthy = samples.iter().map(|(n, _)| *n).min().unwrap_or(0);
    eprintln!(
        "roll: {} writes, {} failed, {} samples, min healthy {min_healthy}, restart order {order:?}, leader host {leader}, took {took:?}",
        writes.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        samples.len()
    );
    // etcdctl 3.4's gRPC client reports a put that reached a member in the instant its etcd
    // 3.4 stops as "transport: missing content-type field" (the server's HTTP/2 stream closed
    // under it) and does not retry it: seen once in a CI run, on the leader's restart. That one
    // client-side artefact is counted and shown; any other failure, or more than one, fails.
    let (artefacts, real): (Vec<&String>, Vec<&String>) = errors.iter().partition(|e| {
        version == Version::V3_4 && e.contains("transport: missing content-type field")
    });
    if !artefacts.is_empty() {
        eprintln!("etcd 3.4 client artefacts on a member's stop (not retried by etcdctl 3.4): {artefacts:?}");
    }
    assert!(
        real.is_empty() && artefacts.len() <= 1,
        "failed writes: {errors:?}"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        errors.len(),
        "every failed write has its error recorded"
    );
    assert!(min_healthy >= 2, "a sample saw {min_healthy} of 3 healthy");
    assert_eq!(order.len(), 3, "every etcd restarted once: {order:?}");
    assert_eq!(
        order.last(),
        Some(&leader),
        "the leader restarts last: {order:?}"
    );
    for h in 1..=3 {
        let pid = lab.etcd_pid(h).unwrap();
        assert!(done(pid), "host {h}");
    }
    // Afterwards the agents are at rest: nothing restarts again.
    let after = pids(lab);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(pids(lab), after, "etcd restarted again after the rollout");
}

/// An executable script at `path`.
fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Releases that cannot run, rolled the way a fleet changes (every config, every agent
/// reloaded at once):
/// 1. one that answers `etcd --version` but never starts: the first member's trial start
///    catches it, no etcd is touched, and the rollout halts (`doctor` exits 1 naming it);
/// 2. one that starts on an empty data dir but not on a member's data (as a release with an
///    incompatible data format): it passes the trial, one member tries it, is not healthy within
///    `upgrade.member_timeout`, is put back on its previous etcd, the rollout halts, the other
///    members are never touched, and no key is lost;
/// 3. the configuration put back as it was: the halt is lifted, nothing restarts.
#[test]
fn a_release_that_cannot_run_is_tried_by_one_member_at_most_put_back_and_halted_3_5() {
    let _g = serial();
    let mut lab = Lab::three(241, Version::V3_5, 3);
    for h in 1..=3 {
        lab.edit_config(
            h,
            "[heal]\n",
            "[upgrade]\nmember_timeout = \"20s\"\n\n[heal]\n",
        );
        reload(&lab, h);
        wait_log(
            &lab,
            h,
            "configuration reloaded",
            0,
            Duration::from_secs(10),
        );
    }
    for i in 0..20 {
        lab.put(1, &format!("before/{i}"), "v");
    }
    let real = Version::V3_5.dir().join("etcd");
    let real_s = real.display().to_string();
    let dead = lab.host_dir(1).join("etcd-dead");
    script(
        &dead,
        &format!("#!/bin/sh\nif [ \"$1\" = --version ]; then exec {real_s} --version; fi\necho 'etcd-dead: this build cannot start' >&2\nexit 1\n"),
    );
    let picky = lab.host_dir(1).join("etcd-picky");
    script(
        &picky,
        &format!("#!/bin/sh\nif [ -d \"$ETCD_DATA_DIR/member\" ]; then echo \"etcd-picky: cannot read the data in $ETCD_DATA_DIR\" >&2; exit 1; fi\nexec {real_s} \"$@\"\n"),
    );
    let roll = |lab: &Lab, from: &str, to: &str| {
        for h in 1..=3 {
            lab.edit_config(
                h,
                &format!("binary = \"{from}\""),
                &format!("binary = \"{to}\""),
            );
        }
        for h in 1..=3 {
            reload(lab, h);
        }
    };
    let halted_everywhere = |lab: &Lab, needle: &str, limit: Duration| {
        let start = Instant::now();
        loop {
            let outs: Vec<(Option<i32>, String)> =
                (1..=3).map(|h| command(lab, h, "doctor")).collect();
            if outs.iter().all(|(code, out)| {
                *code == Some(1)
                    && out.contains("FAIL rollout: rollout halted")
                    && out.contains(needle)
            }) {
                return outs;
            }
            if start.elapsed() > limit {
                lab.dump_logs();
                panic!("the rollout did not halt on every member within {limit:?}: {outs:?}");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    };

    // 1. Never starts: caught by the trial start, nothing touched.
    let before = pids(&lab);
    roll(&lab, &real_s, &dead.display().to_string());
    let outs = halted_everywhere(&lab, "this build cannot start", Duration::from_secs(60));
    assert!(outs[0].1.contains("trial start"), "{}", outs[0].1);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        pids(&lab),
        before,
        "an etcd was restarted for a release that failed its trial start"
    );
    lab.wait_healthy(3, Duration::from_secs(10));

    // 2. Fails on a member's data: one member tries it and is put back; the others untouched.
    roll(
        &lab,
        &dead.display().to_string(),
        &picky.display().to_string(),
    );
    let outs = halted_everywhere(
        &lab,
        "not healthy and caught up within upgrade.member_timeout",
        Duration::from_secs(120),
    );
    eprintln!("doctor on host 1 after the halt:\n{}", outs[0].1);
    lab.wait_healthy(3, Duration::from_secs(60));
    let after = pids(&lab);
    let changed: Vec<usize> = (1..=3).filter(|h| after[h - 1] != before[h - 1]).collect();
    assert_eq!(
        changed.len(),
        1,
        "exactly one member tried the release: {before:?} -> {after:?}"
    );
    for h in 1..=3 {
        let pid = lab.etcd_pid(h).unwrap();
        assert_eq!(
            exe(pid),
            Some(real.clone()),
            "host {h} runs its previous etcd"
        );
    }
    let tried = changed[0];
    assert!(
        lab.log(tried).contains("put back on what it ran before"),
        "host {tried}"
    );
    let (code, out) = command(&lab, tried, "status");
    assert!(out.contains("rollout halted: member"), "{code:?} {out}");
    for i in 0..20 {
        assert_eq!(
            lab.get(2, &format!("before/{i}")).as_deref(),
            Some("v"),
            "before/{i}"
        );
    }
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(pids(&lab), after, "a halted rollout restarted another etcd");

    // 3. The configuration as it was: the halt is lifted, and nothing needs a restart.
    roll(&lab, &picky.display().to_string(), &real_s);
    let start = Instant::now();
    while !(1..=3).all(|h| command(&lab, h, "doctor").0 == Some(0)) {
        if start.elapsed() > Duration::from_secs(30) {
            lab.dump_logs();
            panic!(
                "the halt was not lifted within 30 s: {:?}",
                command(&lab, 1, "doctor")
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(
        pids(&lab),
        after,
        "putting the configuration back restarted an etcd"
    );
    lab.stop_all();
}

/// The agent that holds the rollout lock is killed (SIGKILL) in the middle of its member's
/// restart, and started again, as systemd's `Restart=always` would: it puts its member back on
/// the previous files (the restart it did not see through), and the rollout finishes (its lock's
/// lease expires, the others go on, the member is rolled again), every etcd ends on the change,
/// every member is healthy and no key is lost.
#[test]
fn the_rollout_finishes_when_the_lock_holder_is_killed_mid_restart_3_5() {
    let _g = serial();
    let mut lab = Lab::three(243, Version::V3_5, 3);
    for i in 0..20 {
        lab.put(1, &format!("before/{i}"), "v");
    }
    let flag = "ETCD_SNAPSHOT_COUNT=20000";
    for h in 1..=3 {
        let p = lab.config_path(h);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text + "\n[etcd.flags]\nsnapshot-count = 20000\n").unwrap();
    }
    for h in 1..=3 {
        reload(&lab, h);
    }
    let needle = "restarting this member's etcd (the rollout lock is held)";
    let start = Instant::now();
    let holder = loop {
        if let Some(h) = (1..=3).find(|h| lab.log(*h).contains(needle)) {
            break h;
        }
        if start.elapsed() > Duration::from_secs(60) {
            lab.dump_logs();
            panic!("no member started its roll within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = lab.agent_pid(holder).unwrap();
    // SAFETY: kill(2) on the agent this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    assert_eq!(lab.wait_exit(holder, Duration::from_secs(10)), None);
    eprintln!(
        "killed the agent of host {holder} (the lock holder) after {:?}",
        start.elapsed()
    );
    std::thread::sleep(Duration::from_secs(1));
    lab.start(&[holder]);
    let deadline = Instant::now() + Duration::from_secs(150);
    while !(1..=3).all(|h| lab.etcd_pid(h).is_some_and(|p| environ_has(p, flag))) {
        if Instant::now() > deadline {
            lab.dump_logs();
            panic!("the rollout did not finish within 150 s of the kill");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("rollout finished {:?} after the start", start.elapsed());
    // The killed agent's restart was undone at its next start, then rolled again by the rules.
    assert!(
        lab.log(holder)
            .contains("this agent stopped in the middle of a rollout's restart of etcd"),
        "host {holder}: the interrupted restart was not put back"
    );
    lab.wait_healthy(3, Duration::from_secs(30));
    for i in 0..20 {
        assert_eq!(
            lab.get(3, &format!("before/{i}")).as_deref(),
            Some("v"),
            "before/{i}"
        );
    }
    let after = pids(&lab);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(pids(&lab), after, "etcd restarted again after the rollout");
    lab.stop_all();
}
