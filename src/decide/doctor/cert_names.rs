//! `cert-names`: each served certificate covers every address and name it is reached at.

use super::{DoctorInput, Finding, Origin, Renewal};
use crate::model::tls::CertFacts;
use std::net::IpAddr;

fn covers(f: &CertFacts, name: &str) -> bool {
    match name.parse::<IpAddr>() {
        Ok(ip) => f.ips.contains(&ip),
        Err(_) => f.dns_names.iter().any(|n| n.eq_ignore_ascii_case(name)),
    }
}

/// Each served certificate covers every address and name it is reached at: the host of the
/// member's peer URL (etcd checks the source IP of an incoming peer connection against the SANs
/// of the certificate that peer presents), of its client URL, 127.0.0.1 for the local client,
/// the SRV target name. After an IP change this is what breaks the cluster.
pub(crate) fn cert_names(o: &DoctorInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut checked = 0;
    for c in &o.certificates {
        let Ok(f) = &c.facts else { continue };
        if c.must_cover.is_empty() {
            continue;
        }
        checked += 1;
        let missing: Vec<&str> = c
            .must_cover
            .iter()
            .filter(|n| !covers(f, n))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            continue;
        }
        let sans: Vec<String> = missing
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(_) => format!("IP:{n}"),
                Err(_) => format!("DNS:{n}"),
            })
            .collect();
        let fix = match (&c.origin, o.renewal) {
            (Origin::Local { .. }, Renewal::Agent { .. }) => "the agent re-issues a certificate that no longer covers this member's addresses at its next heal.interval tick, and `etcd-bootstrap run` before it starts etcd: check that the agent runs (`systemctl status etcd-bootstrap`) and why its renewal fails (its log: \"certificate renewal failed\")".to_string(),
            (Origin::Local { stem }, Renewal::Files) => format!(
                "issue it again with {} among its SANs and put it where tls.{stem}_cert points",
                sans.join(", ")
            ),
            (Origin::Served { member }, Renewal::Agent { .. }) => format!(
                "on {member}: its agent re-issues it at its next heal.interval tick; check that it runs there (`etcd-bootstrap doctor` there)"
            ),
            (Origin::Served { member }, Renewal::Files) => format!(
                "on {member}: issue it again with {} among its SANs and put it where its tls.*_cert points",
                sans.join(", ")
            ),
            (Origin::Ca, _) => String::new(),
        };
        out.push(Finding::fail(
            "cert-names",
            format!(
                "{} does not cover {} (it covers {}): peers and clients that reach the member there refuse it",
                c.what,
                missing.join(", "),
                f.ips
                    .iter()
                    .map(ToString::to_string)
                    .chain(f.dns_names.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix,
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "cert-names",
            format!(
                "{checked} server and peer certificates cover their members' addresses and names"
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::doctor::fixtures::*;

    /// (what the row is, the change to the healthy observation, the failing finding's `what`
    /// fragment and exact `fix`, or None: the check passes).
    fn table() -> Vec<Row> {
        vec![
            ("cert-names: covered", |_| {}, None),
            (
                "cert-names: the local peer certificate lacks the new IP",
                |o| o.certificates[1].must_cover = vec!["10.0.0.21".into(), "etcd1.lab.test".into()],
                Some((
                    "peer.crt on this node does not cover 10.0.0.21 (it covers 10.0.0.11, etcd1.lab.test)",
                    "the agent re-issues a certificate that no longer covers this member's addresses at its next heal.interval tick, and `etcd-bootstrap run` before it starts etcd: check that the agent runs (`systemctl status etcd-bootstrap`) and why its renewal fails (its log: \"certificate renewal failed\")".into(),
                )),
            ),
            (
                "cert-names: files mode names the SANs to issue",
                |o| {
                    o.renewal = Renewal::Files;
                    o.certificates[1].must_cover = vec!["10.0.0.21".into(), "etcd1.lab.test".into()];
                },
                Some((
                    "does not cover 10.0.0.21",
                    "issue it again with IP:10.0.0.21 among its SANs and put it where tls.peer_cert points".into(),
                )),
            ),
            (
                "cert-names: another member serves a certificate without its name",
                |o| o.certificates[2].must_cover = vec!["10.0.0.12".into(), "etcd2.lab.test".into()],
                Some((
                    "the peer certificate etcd2 serves at 10.0.0.12:2380 does not cover etcd2.lab.test",
                    "on etcd2: its agent re-issues it at its next heal.interval tick; check that it runs there (`etcd-bootstrap doctor` there)".into(),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(cert_names, table());
    }
}
