//! `discovery`: discovery lists exactly the members' peer URLs.

use super::fix::etcdctl;
use super::text::label;
use super::{DoctorInput, Finding};

/// Discovery lists exactly the members' peer URLs: a member missing from the SRV records is
/// what the dead-member policy counts as gone (`decide::dead_member`), a record of a node that
/// is not a member would be counted by a new cluster, and a target that does not resolve is
/// dropped silently by etcd's SRV discovery (no error, the cluster is computed from the targets
/// that resolve), so nodes could compute different clusters.
pub(crate) fn discovery(o: &DoctorInput) -> Vec<Finding> {
    let Some(d) = &o.discovery else {
        return vec![Finding::ok(
            "discovery",
            "no peer list to compare (discovery.seeds only)",
        )];
    };
    let (peers, unresolved) = match &d.read {
        Err(e) => {
            return vec![Finding::fail(
                "discovery",
                format!("{}: {e}", d.source),
                format!(
                    "check that {} answers from this node (for SRV: `dig SRV` of the record, and discovery.nameservers)",
                    d.source
                ),
            )]
        }
        Ok(r) => r,
    };
    let mut out = Vec::new();
    if !unresolved.is_empty() {
        out.push(Finding::fail(
            "discovery",
            format!("{}: {} do not resolve", d.source, unresolved.join(", ")),
            "add an A (or AAAA) record for each target, or delete its SRV record: etcd drops targets that do not resolve, so nodes could compute different clusters",
        ));
    }
    for m in o.members.iter().filter(|m| !peers.contains(&m.peer_url)) {
        out.push(Finding::fail(
            "discovery",
            format!("{} is a member but not in {}", label(m), d.source),
            format!(
                "add it to {} (for SRV: an _etcd-server-ssl record for its name and the name's A record); if the member is retired, remove it: {} member remove {:x}",
                d.source,
                etcdctl(o),
                m.id
            ),
        ));
    }
    let listed: Vec<&str> = o.members.iter().map(|m| m.peer_url.as_str()).collect();
    for p in peers.iter().filter(|p| !listed.contains(&p.as_str())) {
        out.push(Finding::fail(
            "discovery",
            format!("{p} is in {} but not a member", d.source),
            format!(
                "if that node runs, it joins by itself (see the joins check); if it is gone, delete it from {}: a new cluster formed from it would count it",
                d.source
            ),
        ));
    }
    if out.is_empty() {
        out.push(Finding::ok(
            "discovery",
            format!(
                "{} lists exactly the {} members' peer URLs",
                d.source,
                o.members.len()
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
            ("discovery: the same set", |_| {}, None),
            ("discovery: seeds only", |o| o.discovery = None, None),
            (
                "discovery: a member missing from the records",
                |o| {
                    if let Some(d) = &mut o.discovery {
                        d.read.as_mut().unwrap().0.pop();
                    }
                },
                Some((
                    "etcd3 (https://10.0.0.13:2380) is a member but not in DNS SRV _etcd-server-ssl._tcp.lab.test",
                    format!("add it to DNS SRV _etcd-server-ssl._tcp.lab.test (for SRV: an _etcd-server-ssl record for its name and the name's A record); if the member is retired, remove it: {CTL} member remove 103"),
                )),
            ),
            (
                "discovery: a record of a node that is not a member",
                |o| {
                    if let Some(d) = &mut o.discovery {
                        d.read.as_mut().unwrap().0.push("https://10.0.0.19:2380".into());
                    }
                },
                Some((
                    "https://10.0.0.19:2380 is in DNS SRV _etcd-server-ssl._tcp.lab.test but not a member",
                    "if that node runs, it joins by itself (see the joins check); if it is gone, delete it from DNS SRV _etcd-server-ssl._tcp.lab.test: a new cluster formed from it would count it".into(),
                )),
            ),
            (
                "discovery: a target that does not resolve",
                |o| {
                    if let Some(d) = &mut o.discovery {
                        d.read.as_mut().unwrap().1.push("etcd9.lab.test".into());
                    }
                },
                Some((
                    "DNS SRV _etcd-server-ssl._tcp.lab.test: etcd9.lab.test do not resolve",
                    "add an A (or AAAA) record for each target, or delete its SRV record: etcd drops targets that do not resolve, so nodes could compute different clusters".into(),
                )),
            ),
        ]
    }

    #[test]
    fn passes_and_fails_as_its_table_says() {
        run_table(discovery, table());
    }
}
