//! `[member]`: this node as a member: its name, the address it advertises, its data dir and its
//! ports. The section's struct and its validation live together; every bad value is one line
//! naming its key.

use super::Validator;
use crate::error::ConfigError;
use crate::model::datadir::is_own_entry;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemberConfig {
    /// Empty: the name found for this node in discovery, else the short hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<IpAddr>,
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    pub metrics_port: u16,
    /// The agent's own endpoint (mTLS with the peer certificate), where peers' agents ask
    /// whether this node holds data before anyone forms a new cluster.
    pub agent_port: u16,
}

pub(super) fn validate(
    v: &Validator<'_>,
    raw: super::raw::RawMember,
) -> Result<MemberConfig, ConfigError> {
    let member_name = raw.name.filter(|n| !n.is_empty());
    if let Some(n) = &member_name {
        v.name("member.name", n)?;
    }
    let advertise_address = match raw.advertise_address.filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
            v.err(
                "member.advertise_address",
                format!("{a:?} is not an IP address"),
            )
        })?),
    };
    if advertise_address.is_some_and(|a| a.is_unspecified() || a.is_loopback()) {
        return Err(v.err(
            "member.advertise_address",
            "must be an address other members can reach (not 0.0.0.0, :: or loopback)",
        ));
    }
    let data_dir = v.path("member.data_dir", raw.data_dir, "/var/lib/etcd")?;
    check_data_dir(v, &data_dir)?;
    let member = MemberConfig {
        name: member_name,
        advertise_address,
        data_dir,
        client_port: v.port("member.client_port", raw.client_port, 2379)?,
        peer_port: v.port("member.peer_port", raw.peer_port, 2380)?,
        metrics_port: v.port("member.metrics_port", raw.metrics_port, 2381)?,
        agent_port: v.port("member.agent_port", raw.agent_port, 2378)?,
    };
    let ports = BTreeSet::from([
        member.client_port,
        member.peer_port,
        member.metrics_port,
        member.agent_port,
    ]);
    if ports.len() != 4 {
        return Err(v.err(
            "member.peer_port",
            "client_port, peer_port, metrics_port and agent_port must all differ",
        ));
    }
    Ok(member)
}

/// `member.data_dir` is moved aside whole when the member heals and is handed to etcd: it must be
/// a directory of its own, holding nothing but etcd's data (or nothing yet).
fn check_data_dir(v: &Validator<'_>, dir: &Path) -> Result<(), ConfigError> {
    let key = "member.data_dir";
    if dir.parent().is_none() || dir.file_name().is_none() {
        return Err(v.err(
            key,
            format!(
                "{:?} is not a directory of its own (it is moved aside whole when the member heals); use e.g. /var/lib/etcd",
                dir.display()
            ),
        ));
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Ok(m) if !m.is_dir() => {
            return Err(v.err(
                key,
                format!("{} exists and is not a directory", dir.display()),
            ))
        }
        _ => {}
    }
    let foreign = foreign_entries(dir)
        .map_err(|e| v.err(key, format!("cannot list {}: {e}", dir.display())))?;
    if !foreign.is_empty() {
        // Directories shown as "name/", so that an entry never reads like a tag ("(default)").
        let shown: Vec<String> = foreign
            .iter()
            .take(5)
            .map(|n| {
                if dir.join(n).is_dir() {
                    format!("{n}/")
                } else {
                    n.clone()
                }
            })
            .collect();
        let more = if foreign.len() > shown.len() {
            ", ..."
        } else {
            ""
        };
        // Suggest a directory other than the one refused.
        let other = if dir == Path::new("/var/lib/etcd") {
            "/var/lib/etcd-bootstrap"
        } else {
            "/var/lib/etcd"
        };
        if foreign.iter().any(|n| n == "default") && dir.join("default").is_dir() {
            // Debian's etcd-server package runs etcd with /var/lib/etcd/default as its data dir.
            return Err(v.err(
                key,
                format!(
                    "{} holds default/, the data of another etcd (Debian's etcd-server package keeps its data there); it is moved aside whole when the member heals. If that etcd is not in use: systemctl disable --now etcd, then apt-get purge etcd-server or move {}/default away; to keep it, set member.data_dir to a directory of its own, e.g. {other}",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        return Err(v.err(
            key,
            format!(
                "{} holds entries that are not etcd's: {}{more}; it is moved aside whole when the member heals: move them away, or set member.data_dir to a directory of its own, e.g. {other}",
                dir.display(),
                shown.join(", "),
            ),
        ));
    }
    Ok(())
}

/// The entries of `data_dir` that are neither etcd's nor etcd-bootstrap's, sorted: a data dir
/// pointed at a directory of something else (`/var/lib`, a home) would be handed to etcd and,
/// on a heal, moved aside with everything in it. Empty when `data_dir` does not exist.
fn foreign_entries(data_dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut foreign = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !is_own_entry(&name) {
            foreign.push(name);
        }
    }
    foreign.sort();
    Ok(foreign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::datadir::MOVED_NOTE;

    #[test]
    fn only_etcds_own_entries_belong_in_a_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("etcd");
        assert!(foreign_entries(&data).unwrap().is_empty(), "missing: empty");
        std::fs::create_dir_all(data.join("member/wal")).unwrap();
        std::fs::create_dir(data.join("lost+found")).unwrap();
        std::fs::write(data.join(MOVED_NOTE), "{}").unwrap();
        assert!(foreign_entries(&data).unwrap().is_empty());
        std::fs::write(data.join("notes.txt"), "mine").unwrap();
        std::fs::create_dir(data.join("bin")).unwrap();
        assert_eq!(foreign_entries(&data).unwrap(), vec!["bin", "notes.txt"]);
    }
}
