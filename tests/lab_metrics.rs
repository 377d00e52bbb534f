//! The agent's Prometheus endpoint (`[metrics] listen`) in the namespace lab, read as Prometheus
//! would: over HTTP from another place, parsed by the reference Python client's parser
//! (`prometheus_client.parser`, in the lab's venv), with the certificate expiry checked against
//! `openssl x509 -enddate` and the member and quorum state against what the cluster does.

mod common;

use common::{serial, Lab, LabOptions, Version};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PORT: u16 = 9479;

/// Fetch argv[1] (no proxy, 5 s timeout) and print, as JSON, the HTTP status, the content type,
/// and the families and samples `text_string_to_metric_families` finds. Status 0: no answer.
const SCRAPE: &str = r#"
import json, sys, urllib.request, urllib.error
from prometheus_client.parser import text_string_to_metric_families
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=5) as r:
        body = r.read().decode()
        out = {"status": r.status, "content_type": r.headers.get("Content-Type")}
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code}))
    sys.exit(0)
except OSError as e:
    print(json.dumps({"status": 0, "error": str(e)}))
    sys.exit(0)
families = list(text_string_to_metric_families(body))
out["families"] = [[f.name, f.type] for f in families]
out["samples"] = [[s.name, s.labels, s.value] for f in families for s in f.samples]
print(json.dumps(out))
"#;

/// The families a healthy member without `[backup]` shows (a family appears with its first
/// series: no snapshot or defrag families here), as the Python parser names them (counters
/// without `_total`), with their types.
const FAMILIES: &[(&str, &str)] = &[
    (
        "etcd_bootstrap_certificate_expiry_timestamp_seconds",
        "gauge",
    ),
    ("etcd_bootstrap_heal_actions", "counter"),
    ("etcd_bootstrap_snapshot_failures", "counter"),
    ("etcd_bootstrap_member_state", "gauge"),
    ("etcd_bootstrap_quorum_healthy", "gauge"),
    ("etcd_bootstrap_nospace_alarm_active", "gauge"),
    ("etcd_bootstrap_discovery_peers", "gauge"),
    ("etcd_bootstrap_discovery_reads", "counter"),
    ("etcd_bootstrap_auto_recoveries", "counter"),
    ("etcd_bootstrap_rollout_halted", "gauge"),
];

/// One scrape of `url` from inside host `from`.
fn scrape(lab: &Lab, from: usize, url: &str) -> Value {
    let out = lab.exec(from, &common::S3::python(), &["-c", SCRAPE, url]);
    assert!(
        out.status.success(),
        "scraping {url} from host {from}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The value of the sample `name` whose labels are exactly `labels`.
fn sample(scraped: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scraped["samples"].as_array()?.iter().find_map(|s| {
        let l = s[1].as_object()?;
        let same = s[0] == name
            && l.len() == labels.len()
            && labels
                .iter()
                .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v));
        same.then(|| s[2].as_f64()).flatten()
    })
}

/// Scrape `url` from host `from` until `ready` holds, at most `timeout`; the last scrape.
fn scrape_until(
    lab: &Lab,
    from: usize,
    url: &str,
    timeout: Duration,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let s = scrape(lab, from, url);
        if ready(&s) {
            return s;
        }
        if start.elapsed() > timeout {
            lab.dump_logs();
            panic!("{url} never showed {what} within {timeout:?}; last: {s}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// notAfter of a certificate file, in seconds since the epoch, by openssl and Python's ssl
/// module: nothing of etcd-bootstrap's own parsing.
fn openssl_not_after(cert: &std::path::Path) -> f64 {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-enddate", "-noout", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl x509 -enddate {}",
        cert.display()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let date = text
        .trim()
        .strip_prefix("notAfter=")
        .expect(&text)
        .to_string();
    let out = std::process::Command::new(common::S3::python())
        .args([
            "-c",
            "import ssl, sys; print(ssl.cert_time_to_seconds(sys.argv[1]))",
            &date,
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn member_state(s: &Value) -> Vec<(String, f64)> {
    ["voter", "learner", "down"]
        .iter()
        .map(|st| {
            let v = sample(s, "etcd_bootstrap_member_state", &[("state", st)]).unwrap_or(-1.0);
            (st.to_string(), v)
        })
        .collect()
}

#[test]
fn metrics_endpoint_on_three_members_etcd_3_5() {
    metrics_endpoint(93, Version::V3_5);
}

#[test]
fn metrics_endpoint_on_three_members_etcd_3_4() {
    metrics_endpoint(100, Version::V3_4);
}

fn metrics_endpoint(id: u8, version: Version) {
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
    for h in 1..=3 {
        lab.edit_config(
            h,
            "[heal]",
            &format!("[metrics]\nlisten = \"{}:{PORT}\"\n\n[heal]", lab.ip(h)),
        );
    }
    lab.start(&[1, 2, 3]);
    lab.wait_voters(1, &[1, 2, 3], Duration::from_secs(120));

    let url: Vec<String> = (0..=3)
        .map(|h| format!("http://{}:{PORT}/metrics", lab.ip(h)))
        .collect();
    // A voter with a quorum once the heal loop's first tick (heal.interval = 2s) has run.
    let s = scrape_until(
        &lab,
        1,
        &url[1],
        Duration::from_secs(60),
        "a healthy voter",
        |s| {
            sample(s, "etcd_bootstrap_member_state", &[("state", "voter")]) == Some(1.0)
                && sample(s, "etcd_bootstrap_quorum_healthy", &[]) == Some(1.0)
        },
    );
    assert_eq!(s["status"], 200, "{s}");
    assert_eq!(
        s["content_type"], "text/plain; version=0.0.4; charset=utf-8",
        "{s}"
    );
    let declared: BTreeSet<(String, String)> = s["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f[0].as_str().unwrap().to_string(),
                f[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (name, kind) in FAMILIES {
        assert!(
            declared.contains(&(name.to_string(), kind.to_string())),
            "{name} ({kind}) missing: {declared:?}"
        );
    }
    assert_eq!(
        member_state(&s),
        [
            ("voter".into(), 1.0),
            ("learner".into(), 0.0),
            ("down".into(), 0.0)
        ]
    );
    assert_eq!(
        sample(&s, "etcd_bootstrap_nospace_alarm_active", &[]),
        Some(0.0),
        "{s}"
    );
    // Discovery found the three SRV targets, at least once without error.
    assert_eq!(
        sample(&s, "etcd_bootstrap_discovery_peers", &[]),
        Some(3.0),
        "{s}"
    );
    assert!(
        sample(
            &s,
            "etcd_bootstrap_discovery_reads_total",
            &[("result", "ok")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{s}"
    );
    // Every heal action is a series from the start; a fresh cluster needed none.
    for action in [
        "rejoin",
        "move_aside",
        "remove_dead",
        "renew",
        "recover",
        "restore",
    ] {
        assert_eq!(
            sample(
                &s,
                "etcd_bootstrap_heal_actions_total",
                &[("action", action)]
            ),
            Some(0.0),
            "{action}: {s}"
        );
    }
    // No [backup]: no snapshot is known, and none failed.
    assert_eq!(
        sample(
            &s,
            "etcd_bootstrap_snapshot_last_success_timestamp_seconds",
            &[]
        ),
        None
    );
    assert_eq!(
        sample(&s, "etcd_bootstrap_snapshot_failures_total", &[]),
        Some(0.0)
    );

    // Certificate expiry, per file, as openssl reads the file.
    let pki = lab.host_dir(1).join("pki");
    for file in ["ca.crt", "server.crt", "peer.crt", "client.crt"] {
        let got = sample(
            &s,
            "etcd_bootstrap_certificate_expiry_timestamp_seconds",
            &[("file", file)],
        )
        .unwrap_or_else(|| panic!("no expiry for {file}: {s}"));
        assert_eq!(got, openssl_not_after(&pki.join(file)), "{file}");
    }

    // Each agent answers on its own address, from another host too; host 1's agent is bound to
    // its address only (not loopback), and answers nothing but /metrics.
    let other = scrape(&lab, 1, &url[2]);
    assert_eq!(other["status"], 200, "{other}");
    assert_eq!(
        sample(&other, "etcd_bootstrap_member_state", &[("state", "voter")]),
        Some(1.0),
        "{other}"
    );
    let loopback = scrape(&lab, 1, &format!("http://127.0.0.1:{PORT}/metrics"));
    assert_eq!(loopback["status"], 0, "answered on loopback: {loopback}");
    let elsewhere = scrape(&lab, 1, &format!("http://{}:{PORT}/", lab.ip(1)));
    assert_eq!(elsewhere["status"], 404, "{elsewhere}");

    // Hosts 2 and 3 stopped: host 1's member is down and its agent reports the quorum lost
    // (its quorum check runs at the first unhealthy tick, then once a minute).
    lab.stop(2);
    lab.stop(3);
    let s = scrape_until(
        &lab,
        1,
        &url[1],
        Duration::from_secs(90),
        "the quorum lost",
        |s| sample(s, "etcd_bootstrap_quorum_healthy", &[]) == Some(0.0),
    );
    assert_eq!(
        member_state(&s),
        [
            ("voter".into(), 0.0),
            ("learner".into(), 0.0),
            ("down".into(), 1.0)
        ]
    );

    lab.stop_all();
}
