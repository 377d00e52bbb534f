//! `etcd-bootstrap doctor` against a real 3-member cluster (etcd 3.5.30, SRV discovery, the
//! local CA): exit 0 while all is well; exit 1 naming a stopped member (and since when), then,
//! on that member's node (its agent stopped, so nothing renews its certificates), an expired
//! server certificate and a peer certificate that does not cover the member's address (the SAN
//! mismatch an IP change leaves behind); exit 0 again once its agent is back (it renews both).

mod common;

use common::{serial, Lab, Version};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(120);

/// `doctor` inside host `h`, bounded by `timeout(1)`: (exit code, stdout, stderr).
fn doctor(lab: &Lab, h: usize, json: bool) -> (Option<i32>, String, String) {
    let config = lab.config_path(h);
    let bin = common::bin();
    let mut args = vec![
        "90",
        bin.as_str(),
        "doctor",
        "--config",
        config.to_str().unwrap(),
    ];
    if json {
        args.extend(["--output", "json"]);
    }
    let out = lab.exec(h, Path::new("timeout"), &args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `doctor` on host `h` until `done` holds for its result, at most `limit`; the last result.
fn doctor_until(
    lab: &Lab,
    h: usize,
    limit: Duration,
    what: &str,
    done: impl Fn(Option<i32>, &str) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let (code, out, err) = doctor(lab, h, false);
        if done(code, &out) {
            return out;
        }
        if start.elapsed() > limit {
            panic!("doctor on host {h}: {what} not seen within {limit:?}; last exit {code:?}:\n{out}{err}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A certificate for `key` signed by the lab's CA with `sans` (openssl `subjectAltName` syntax),
/// valid for `days` (0: it expires the second it is issued), written over `out`.
fn issue(lab: &Lab, key: &Path, out: &Path, sans: &str, days: u32) {
    let work = lab.dir.path().join("doctor-issue");
    std::fs::create_dir_all(&work).unwrap();
    let ca = lab.dir.path().join("ca");
    let csr = work.join("leaf.csr");
    let ext = work.join("leaf.ext");
    std::fs::write(
        &ext,
        format!("subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = Command::new("openssl").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/CN=node3",
        "-out",
        csr.to_str().unwrap(),
    ]);
    let days = days.to_string();
    run(&[
        "x509",
        "-req",
        "-in",
        csr.to_str().unwrap(),
        "-CA",
        ca.join("ca.crt").to_str().unwrap(),
        "-CAkey",
        ca.join("ca.key").to_str().unwrap(),
        "-CAcreateserial",
        "-days",
        &days,
        "-extfile",
        ext.to_str().unwrap(),
        "-out",
        out.to_str().unwrap(),
    ]);
}

fn fail_lines<'a>(out: &'a str, check: &str) -> Vec<&'a str> {
    let prefix = format!("FAIL {check}: ");
    out.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[test]
fn doctor_names_a_stopped_member_an_expired_certificate_and_a_san_mismatch_etcd_3_5() {
    doctor_scenario(94, Version::V3_5);
}

#[test]
fn doctor_names_a_stopped_member_an_expired_certificate_and_a_san_mismatch_etcd_3_4() {
    doctor_scenario(99, Version::V3_4);
}

fn doctor_scenario(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 3);

    // All is well: exit 0 on every node, one OK line per check; JSON says the same.
    for h in 1..=3 {
        let out = doctor_until(&lab, h, Duration::from_secs(60), "exit 0", |code, _| {
            code == Some(0)
        });
        for check in [
            "quorum",
            "members",
            "joins",
            "cert-expiry",
            "cert-names",
            "nospace",
            "fragmentation",
            "discovery",
            "clock",
            "snapshot",
        ] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(&format!("OK   {check}: "))),
                "host {h}: no OK line for {check}:\n{out}"
            );
        }
        assert!(!out.contains("FAIL "), "host {h}:\n{out}");
    }
    let (code, json, err) = doctor(&lab, 2, true);
    assert_eq!(code, Some(0), "{json}{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ok"], true, "{json}");
    assert!(v["findings"].as_array().unwrap().len() >= 10, "{json}");

    // Host 3 stops (its agent stops etcd): doctor on host 1 names it, and, once the leader's
    // agent has noticed (one heal.interval), since when. The two others keep the quorum, and
    // nobody waits to join.
    lab.stop(3);
    let peer3 = format!("https://{}:2380", lab.ip(3));
    let out = doctor_until(
        &lab,
        1,
        Duration::from_secs(30),
        "host 3 named unreachable with since when",
        |code, out| {
            code == Some(1)
                && fail_lines(out, "members")
                    .iter()
                    .any(|l| l.contains(&peer3) && l.contains("unreachable since"))
        },
    );
    let members = fail_lines(&out, "members");
    assert_eq!(members.len(), 1, "{out}");
    assert!(
        members[0].contains("does not answer") && members[0].contains("member remove"),
        "{out}"
    );
    assert!(
        out.contains("OK   quorum: 2 of 3 voting members answer"),
        "{out}"
    );
    assert!(out.contains("OK   joins: "), "{out}");
    let (code, json, _) = doctor(&lab, 1, true);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "members"
                && f["ok"] == false
                && f["what"].as_str().unwrap().contains(&peer3)
                && !f["fix"].as_str().unwrap().is_empty()),
        "{json}"
    );

    // On host 3, with nothing running there to renew them: an expired server certificate and a
    // peer certificate for another address (as after an IP change).
    let pki = lab.host_dir(3).join("pki");
    let ip3 = lab.ip(3);
    issue(
        &lab,
        &pki.join("server.key"),
        &pki.join("server.crt"),
        &format!("IP:{ip3},IP:127.0.0.1,DNS:localhost"),
        0,
    );
    issue(
        &lab,
        &pki.join("peer.key"),
        &pki.join("peer.crt"),
        &format!("IP:{}.99", lab.subnet),
        30,
    );
    std::thread::sleep(Duration::from_secs(2));
    let (code, out, err) = doctor(&lab, 3, false);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("problems found") && !err.contains("error:"),
        "a summary, not an error: {err}"
    );
    let expired = fail_lines(&out, "cert-expiry");
    assert!(
        expired
            .iter()
            .any(|l| l.contains("server.crt on this node expired on") && l.contains("-> fix: ")),
        "{out}"
    );
    let names = fail_lines(&out, "cert-names");
    assert!(
        names.iter().any(|l| l.contains("peer.crt on this node")
            && l.contains(&format!("does not cover {ip3}"))
            && l.contains("-> fix: ")),
        "{out}"
    );
    // Host 3's own member is the one that does not answer; the others still have a quorum.
    assert!(
        fail_lines(&out, "members")
            .iter()
            .any(|l| l.contains(&peer3) && l.contains("start this node's agent")),
        "{out}"
    );
    assert!(
        out.contains("OK   quorum: 2 of 3 voting members answer"),
        "{out}"
    );

    // Its agent comes back: it renews both certificates before starting etcd, the member
    // rejoins, and doctor is content again on both sides.
    lab.start(&[3]);
    lab.wait_voters(1, &[1, 2, 3], WITHIN);
    for h in [1, 3] {
        let out = doctor_until(&lab, h, Duration::from_secs(60), "exit 0", |code, _| {
            code == Some(0)
        });
        assert!(!out.contains("FAIL "), "host {h}:\n{out}");
    }
    lab.stop_all();
}
