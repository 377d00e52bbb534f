//! Peer roles in the namespace lab (local-ca, real etcd 3.4.23 and 3.5.30): etcd's peer port
//! trusts the CA, so a client certificate of the same CA (etcdctl's `client.crt`,
//! kube-apiserver's) was accepted there as a peer. Once every member serves a peer certificate
//! with the peer-only name, each etcd requires it from its next start by the agent: the client
//! and server certificates are refused on the peer port, the peers still talk, nothing is lost.

mod common;

use common::{serial, Lab, Version};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(120);

/// `GET https://<host's IP>:2380/members` from host `from`, presenting `<cert>.crt`/`.key` of
/// `from`'s TLS directory: the HTTP status, or `None` when the TLS handshake is refused.
fn peer_port_with(lab: &Lab, from: usize, to: usize, cert: &str) -> Option<u16> {
    let pki = lab.host_dir(from).join("pki");
    let p = |f: &str| pki.join(f).display().to_string();
    let out: Output = lab.exec(
        from,
        Path::new("/usr/bin/curl"),
        &[
            "-sS",
            "--http1.1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--cacert",
            &p("ca.crt"),
            "--cert",
            &p(&format!("{cert}.crt")),
            "--key",
            &p(&format!("{cert}.key")),
            &format!("https://{}:2380/members", lab.ip(to)),
        ],
    );
    if !out.status.success() {
        eprintln!(
            "{cert}.crt from host {from} to host {to}'s peer port: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn peer_roles(id: u8, version: Version) {
    let _g = serial();
    let mut lab = Lab::three(id, version, 3);
    lab.put(1, "/kept", "yes");
    // The hole, before the peer role is required: etcdctl's client certificate is a peer.
    assert_eq!(peer_port_with(&lab, 1, 2, "client"), Some(200));

    let role = "lab.peer.etcd-bootstrap.internal";
    let t = Instant::now();
    for h in 1..=3 {
        while !lab
            .log(h)
            .contains("every member's peer certificate names the peer role")
        {
            assert!(
                t.elapsed() < WITHIN,
                "host {h} never recorded the peer role: {}",
                lab.log(h)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // The next start of each agent, one at a time, as a rolling restart does.
    for h in 1..=3 {
        lab.stop(h);
        lab.start(&[h]);
        lab.wait_voters(1 + h % 3, &[1, 2, 3], WITHIN);
        let env = std::fs::read_to_string(lab.host_dir(h).join("etcd.env")).unwrap();
        assert!(
            env.contains(&format!("ETCD_PEER_CERT_ALLOWED_HOSTNAME={role}")),
            "{env}"
        );
    }
    for (from, to) in [(1, 2), (2, 3), (3, 1)] {
        assert_eq!(
            peer_port_with(&lab, from, to, "client"),
            None,
            "host {from}'s client certificate is still a peer of host {to}"
        );
        assert_eq!(peer_port_with(&lab, from, to, "server"), None);
        assert_eq!(peer_port_with(&lab, from, to, "peer"), Some(200));
    }
    lab.put(2, "/after", "written");
    assert_eq!(lab.get(3, "/kept").as_deref(), Some("yes"));
    assert_eq!(lab.get(1, "/after").as_deref(), Some("written"));
    // The client port is unchanged: etcdctl with the client certificate works.
    let out = lab.etcdctl(1, &lab.endpoints(), &["endpoint", "health"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn client_certificates_are_no_peers_etcd_3_5() {
    peer_roles(143, Version::V3_5);
}

#[test]
fn client_certificates_are_no_peers_etcd_3_4() {
    peer_roles(144, Version::V3_4);
}
