//! What the checks' table tests start from: a healthy 3-member cluster seen from etcd1, and the
//! edits and the runner of the tables.

use super::*;
use crate::decide::recover::AgentSeen;
use crate::model::tls::CertFacts;
use std::net::IpAddr;

pub(crate) const NOW: i64 = 1_800_000_000;
pub(crate) const DAY: i64 = 86_400;
pub(crate) const TLS: &str = "/etc/etcd/pki";
pub(crate) const POLICY: &str =
    "The agents will not remove it by themselves (heal.remove_dead_after is off).";
pub(crate) const CTL: &str = "etcdctl --endpoints https://10.0.0.11:2379,https://10.0.0.12:2379,https://10.0.0.13:2379 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt --key /etc/etcd/pki/client.key";
pub(crate) const CTL_12: &str = "etcdctl --endpoints https://10.0.0.11:2379,https://10.0.0.12:2379 --cacert /etc/etcd/pki/ca.crt --cert /etc/etcd/pki/client.crt --key /etc/etcd/pki/client.key";

pub(crate) fn member(i: u64) -> CheckedMember {
    CheckedMember {
        id: 0x100 + i,
        name: format!("etcd{i}"),
        peer_url: format!("https://10.0.0.1{i}:2380"),
        client_url: Some(format!("https://10.0.0.1{i}:2379")),
        is_learner: false,
        is_self: i == 1,
        reachable: true,
        error: None,
        down_since: None,
        agent: Some(AgentSeen {
            has_data: true,
            raft_index: Some(100),
        }),
        db: Some(Db {
            size: 20 << 20,
            in_use: 18 << 20,
        }),
    }
}

pub(crate) fn cert(
    what: &str,
    origin: Origin,
    days_left: i64,
    lifetime_days: i64,
    covers: &[&str],
) -> Cert {
    let not_after = NOW + days_left * DAY;
    Cert {
        what: what.into(),
        origin,
        facts: Ok(CertFacts {
            subject: "CN=x".into(),
            not_before: not_after - lifetime_days * DAY,
            not_after,
            dns_names: covers
                .iter()
                .filter(|n| n.parse::<IpAddr>().is_err())
                .map(|n| n.to_string())
                .collect(),
            ips: covers.iter().filter_map(|n| n.parse().ok()).collect(),
        }),
        must_cover: vec![],
    }
}

pub(crate) fn local(stem: &str) -> Origin {
    Origin::Local { stem: stem.into() }
}

/// A healthy 3-member cluster seen from etcd1.
pub(crate) fn healthy() -> DoctorInput {
    let mut peer = cert(
        "peer.crt on this node",
        local("peer"),
        300,
        365,
        &["10.0.0.11", "etcd1.lab.test"],
    );
    peer.must_cover = vec!["10.0.0.11".into(), "etcd1.lab.test".into()];
    let mut served = cert(
        "the peer certificate etcd2 serves at 10.0.0.12:2380",
        Origin::Served {
            member: "etcd2".into(),
        },
        300,
        365,
        &["10.0.0.12"],
    );
    served.must_cover = vec!["10.0.0.12".into()];
    DoctorInput {
        now: NOW,
        local_index: Some(100),
        membership_from_record: false,
        members: vec![member(1), member(2), member(3)],
        certificates: vec![
            cert("ca.crt on this node", Origin::Ca, 3000, 3650, &[]),
            peer,
            served,
        ],
        renewal: Renewal::Agent {
            heal_interval_secs: 15,
        },
        alarms: Ok(vec![]),
        quota: Some(DEFAULT_QUOTA_BYTES),
        revision: Some(1234),
        discovery: Some(DiscoverySeen {
            source: "DNS SRV _etcd-server-ssl._tcp.lab.test".into(),
            read: Ok((
                (1..=3)
                    .map(|i| format!("https://10.0.0.1{i}:2380"))
                    .collect(),
                vec![],
            )),
        }),
        clocks: vec![
            Clock {
                who: "etcd2".into(),
                measured: Ok((30, 2)),
            },
            Clock {
                who: "etcd3".into(),
                measured: Ok((-400, 2)),
            },
        ],
        snapshot: Some(SnapshotSeen {
            store: "s3://b/etcd".into(),
            newest: Ok(Some(("20270115T080000Z-r90".into(), 600))),
            interval_secs: 1800,
            untrusted: vec![],
            deltas: Some(DeltaSeen {
                interval_secs: 5,
                base: "20270115T080000Z-r90".into(),
                segments: 12,
                events: 340,
                newest_age: 4,
                behind: Some(3),
            }),
        }),
        tls_dir: TLS.into(),
        dead_member_policy: POLICY.into(),
        auto_recovery: None,
        last_auto_recovery: None,
        config_rejected: None,
        rollout_halted: None,
    }
}

pub(crate) fn down(o: &mut DoctorInput, i: usize, since: Option<i64>) {
    let m = &mut o.members[i];
    m.reachable = false;
    m.error = Some("connection refused".into());
    m.down_since = since;
    m.db = None;
    m.agent = None;
}

pub(crate) type Edit = fn(&mut DoctorInput);
pub(crate) type Check = fn(&DoctorInput) -> Vec<Finding>;
/// The failing finding's `what` fragment and its exact `fix`; `None`: the check passes.
pub(crate) type Want = Option<(&'static str, String)>;

/// One row of a check's table: what the row is, the change to the healthy observation, the
/// failing finding's `what` fragment and exact `fix`, or None: the check passes.
pub(crate) type Row = (&'static str, Edit, Want);

/// Runs `check` on the healthy observation changed by each row's edit: a row that passes gets one
/// line, all ok; a row that fails gets exactly one failing line, with the row's `what` fragment
/// and its exact `fix`.
pub(crate) fn run_table(check: Check, rows: Vec<Row>) {
    for (name, edit, want) in rows {
        let mut o = healthy();
        edit(&mut o);
        let got = check(&o);
        assert!(!got.is_empty(), "{name}: no finding");
        match want {
            None => {
                assert!(got.iter().all(|f| f.ok), "{name}: {got:#?}");
                assert_eq!(got.len(), 1, "{name}: one line when all is well: {got:#?}");
            }
            Some((what, fix)) => {
                let failed: Vec<&Finding> = got.iter().filter(|f| !f.ok).collect();
                assert_eq!(failed.len(), 1, "{name}: {got:#?}");
                assert!(failed[0].what.contains(what), "{name}: {}", failed[0].what);
                assert_eq!(failed[0].fix, fix, "{name}");
            }
        }
    }
}
