//! `cert-expiry`: certificates within their validity and not near its end.

use super::text::date;
use super::{Cert, DoctorInput, Finding, Origin, Renewal};
use crate::model::tls::CertFacts;
use crate::util::time::age_text;

/// A certificate with less than this left is near expiry when nothing renews it by itself
/// (`tls.mode = "files"`): two weeks leave time to get a renewed one from whoever issues them.
/// Capped at a third of the certificate's lifetime, so that short-lived certificates (renewed
/// by an outside tool) are not always "near expiry".
pub(crate) const EXPIRY_WARN_SECS: i64 = 14 * 86_400;

/// A CA needs longer: a new one must reach every member, each etcd must be restarted to read it
/// (etcd re-reads its certificate and key at each handshake, but its CA files only when it
/// starts), and the old one stays trusted for `tls.ca_overlap` while the members switch.
pub(crate) const CA_EXPIRY_WARN_SECS: i64 = 60 * 86_400;

/// Where this node issues its own certificates (`local-ca`, `cfssl`), the agent renews a
/// certificate once less than a third of its lifetime is left, trying once per `heal.interval`
/// (`tls::inspect::due_for_renewal`). A certificate that is still not renewed this many ticks
/// later means the renewal does not happen: the agent is not running, or its signer refuses.
/// (Checking against the same third, not a fixed number of days, keeps this right for any
/// `tls.cert_validity`; a year-long certificate is flagged with four months left, which is
/// when the problem starts, long before it breaks the cluster.)
pub(crate) const RENEWAL_GRACE_TICKS: i64 = 2;

fn expiry_fix(o: &DoctorInput, origin: &Origin) -> String {
    match (origin, o.renewal) {
        (Origin::Ca, _) => "make a new CA and give it to every member (tls.ca_cert, or the signer's); each member keeps the previous CA trusted for tls.ca_overlap while the others switch, and etcd is restarted to read it".into(),
        (Origin::Local { .. }, Renewal::Agent { .. }) => "the agent renews it at its next heal.interval tick, and `etcd-bootstrap run` before it starts etcd: check that the agent runs (`systemctl status etcd-bootstrap`) and why its renewal fails (its log: \"certificate renewal failed\")".into(),
        (Origin::Local { stem }, Renewal::Files) => format!(
            "put a renewed certificate where tls.{stem}_cert points (tls.mode = \"files\" issues nothing); the agent copies it into {} at its next heal.interval tick",
            o.tls_dir
        ),
        (Origin::Served { member }, Renewal::Agent { .. }) => format!(
            "on {member}: its agent renews it at its next heal.interval tick; check that it runs there and why its renewal fails (`etcd-bootstrap doctor` there)"
        ),
        (Origin::Served { member }, Renewal::Files) => format!(
            "on {member}: put a renewed certificate where its tls.*_cert points (tls.mode = \"files\" issues nothing)"
        ),
    }
}

/// Why `c` fails the expiry check, if it does.
fn expiry_problem(o: &DoctorInput, c: &Cert, f: &CertFacts) -> Option<String> {
    let left = f.not_after - o.now;
    if left <= 0 {
        return Some(format!(
            "{} expired on {} ({} ago): TLS connections that present it are refused",
            c.what,
            date(f.not_after),
            age_text(-left)
        ));
    }
    if o.now < f.not_before {
        return Some(format!(
            "{} is not valid before {}: this node's clock or its issuer's is wrong",
            c.what,
            date(f.not_before)
        ));
    }
    let lifetime = (f.not_after - f.not_before).max(1);
    let problem = match (&c.origin, o.renewal) {
        (Origin::Ca, _) => left < CA_EXPIRY_WARN_SECS.min(lifetime / 3),
        (_, Renewal::Agent { heal_interval_secs }) => {
            left < lifetime / 3 - RENEWAL_GRACE_TICKS * heal_interval_secs
        }
        (_, Renewal::Files) => left < EXPIRY_WARN_SECS.min(lifetime / 3),
    };
    let overdue = !matches!(c.origin, Origin::Ca) && matches!(o.renewal, Renewal::Agent { .. });
    problem.then(|| {
        format!(
            "{} expires on {} (in {}){}",
            c.what,
            date(f.not_after),
            age_text(left),
            if overdue {
                ": its renewal is overdue (due with a third of its lifetime left)"
            } else {
                ""
            }
        )
    })
}

/// Certificates within their validity and not near its end (see the consts for what "near"
/// means for each).
pub(crate) fn cert_expiry(o: &DoctorInput) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut soonest: Option<(i64, &str)> = None;
    for c in &o.certificates {
        match &c.facts {
            Err(e) => out.push(Finding::fail(
                "cert-expiry",
                format!("{}: cannot be read: {e}", c.what),
                match &c.origin {
                    Origin::Served { member } => format!("on {member}: check its etcd's TLS setup (`etcd-bootstrap doctor` there)"),
                    _ => "`etcd-bootstrap run` writes every certificate this configuration keeps; its log says what failed".into(),
                },
            )),
            Ok(f) => match expiry_problem(o, c, f) {
                Some(what) => out.push(Finding::fail("cert-expiry", what, expiry_fix(o, &c.origin))),
                None => {
                    if soonest.is_none_or(|(t, _)| f.not_after < t) {
                        soonest = Some((f.not_after, &c.what));
                    }
                }
            },
        }
    }
    if out.is_empty() {
        let what = match soonest {
            Some((t, which)) => format!(
                "{} certificates valid (the first to expire: {which}, in {})",
                o.certificates.len(),
                age_text(t - o.now)
            ),
            None => "no certificate to check".into(),
        };
        out.push(Finding::ok("cert-expiry", what));
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
            ("cert-expiry: all valid", |_| {}, None),
            (
                "cert-expiry: a local leaf expired",
                |o| o.certificates[1] = cert("peer.crt on this node", local("peer"), -2, 365, &[]),
                Some((
                    "peer.crt on this node expired on 20270113T080000Z (2d ago)",
                    "the agent renews it at its next heal.interval tick, and `etcd-bootstrap run` before it starts etcd: check that the agent runs (`systemctl status etcd-bootstrap`) and why its renewal fails (its log: \"certificate renewal failed\")".into(),
                )),
            ),
            (
                "cert-expiry: renewal overdue (a third of a year left is 121 days)",
                |o| o.certificates[1] = cert("peer.crt on this node", local("peer"), 100, 365, &[]),
                Some((
                    "peer.crt on this node expires on 20270425T080000Z (in 100d): its renewal is overdue",
                    "the agent renews it at its next heal.interval tick, and `etcd-bootstrap run` before it starts etcd: check that the agent runs (`systemctl status etcd-bootstrap`) and why its renewal fails (its log: \"certificate renewal failed\")".into(),
                )),
            ),
            (
                "cert-expiry: files mode, 100 days left is fine",
                |o| {
                    o.renewal = Renewal::Files;
                    o.certificates[1] = cert("peer.crt on this node", local("peer"), 100, 365, &[]);
                },
                None,
            ),
            (
                "cert-expiry: files mode, 10 days left",
                |o| {
                    o.renewal = Renewal::Files;
                    o.certificates[1] = cert("peer.crt on this node", local("peer"), 10, 365, &[]);
                },
                Some((
                    "peer.crt on this node expires on 20270125T080000Z (in 10d)",
                    "put a renewed certificate where tls.peer_cert points (tls.mode = \"files\" issues nothing); the agent copies it into /etc/etcd/pki at its next heal.interval tick".into(),
                )),
            ),
            (
                "cert-expiry: another member's served certificate expired",
                |o| {
                    o.certificates[2] = cert(
                        "the peer certificate etcd2 serves at 10.0.0.12:2380",
                        Origin::Served { member: "etcd2".into() },
                        -1,
                        365,
                        &[],
                    )
                },
                Some((
                    "the peer certificate etcd2 serves at 10.0.0.12:2380 expired",
                    "on etcd2: its agent renews it at its next heal.interval tick; check that it runs there and why its renewal fails (`etcd-bootstrap doctor` there)".into(),
                )),
            ),
            (
                "cert-expiry: the CA within 60 days",
                |o| o.certificates[0] = cert("ca.crt on this node", Origin::Ca, 30, 3650, &[]),
                Some((
                    "ca.crt on this node expires on 20270214T080000Z (in 30d)",
                    "make a new CA and give it to every member (tls.ca_cert, or the signer's); each member keeps the previous CA trusted for tls.ca_overlap while the others switch, and etcd is restarted to read it".into(),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(cert_expiry, table());
    }

    #[test]
    fn certificates_that_cannot_be_read_fail() {
        let mut o = healthy();
        o.certificates[1].facts = Err("/etc/etcd/pki/peer.crt: No such file".into());
        let got = cert_expiry(&o);
        assert!(
            !got[0].ok && got[0].what.contains("cannot be read"),
            "{got:?}"
        );
    }
}
