//! `[metrics]`: where the agent serves its Prometheus metrics. The section's struct and its
//! validation live together; every bad value is one line naming `metrics.listen`.

use super::{MemberConfig, Validator};
use crate::error::ConfigError;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct MetricsConfig {
    /// The one address `/metrics` is served on; `None` ("" in the file): no metrics endpoint.
    #[serde(serialize_with = "ser_listen")]
    pub listen: Option<SocketAddr>,
}

/// Printed as written, "" when off, so that `check-config`'s output reads back.
fn ser_listen<S: serde::Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.collect_str(a),
        None => s.serialize_str(""),
    }
}

pub(super) fn validate(
    v: &Validator<'_>,
    raw: super::raw::RawMetrics,
    member: &MemberConfig,
) -> Result<MetricsConfig, ConfigError> {
    let key = "metrics.listen";
    let Some(text) = raw.listen.filter(|s| !s.is_empty()) else {
        return Ok(MetricsConfig::default());
    };
    let addr = match text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) if text.parse::<IpAddr>().is_ok() => {
            return Err(v.err(
                key,
                format!("{text:?} has no port: write IP:PORT, e.g. \"127.0.0.1:9479\" (IPv6: \"[::1]:9479\")"),
            ))
        }
        Err(_) => {
            return Err(v.err(
                key,
                format!("{text:?} is not IP:PORT: the agent binds exactly this address, so it takes an IP literal, not a host name (e.g. \"127.0.0.1:9479\", \"[::1]:9479\")"),
            ))
        }
    };
    if addr.port() == 0 {
        return Err(v.err(
            key,
            format!("{text:?}: port 0 would be a different random port at every start; Prometheus needs a fixed one (e.g. 9479)"),
        ));
    }
    if let Some(taken) = colliding_port(addr, member) {
        return Err(v.err(
            key,
            format!("{text:?}: port {} is {taken}; give the metrics endpoint a port of its own (e.g. 9479)", addr.port()),
        ));
    }
    Ok(MetricsConfig { listen: Some(addr) })
}

/// The member port `addr` would fight over, and where that one is listened on. etcd listens for
/// clients on the member's address and 127.0.0.1, for peers on the member's address, for its own
/// metrics on 127.0.0.1; the agent endpoint is on the member's address. The member's address is
/// `member.advertise_address` or, when unset, detected at start: any address of this machine.
fn colliding_port(addr: SocketAddr, member: &MemberConfig) -> Option<String> {
    let ip = addr.ip();
    let any = ip.is_unspecified();
    let local = ip == IpAddr::V4(Ipv4Addr::LOCALHOST);
    let member_ip = !ip.is_loopback()
        && member
            .advertise_address
            .is_none_or(|advertised| advertised == ip);
    let ports = [
        (
            "member.client_port",
            member.client_port,
            "etcd's client port on the member's address and 127.0.0.1",
            any || local || member_ip,
        ),
        (
            "member.peer_port",
            member.peer_port,
            "etcd's peer port on the member's address",
            any || member_ip,
        ),
        (
            "member.metrics_port",
            member.metrics_port,
            "etcd's own metrics port on 127.0.0.1",
            any || local,
        ),
        (
            "member.agent_port",
            member.agent_port,
            "the agent endpoint's port on the member's address",
            any || member_ip,
        ),
    ];
    ports
        .into_iter()
        .find(|(_, port, _, collides)| *port == addr.port() && *collides)
        .map(|(key, _, what, _)| format!("{key} ({what})"))
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{setup, GOOD};
    use crate::config::Config;

    /// `[metrics] listen`: off by default; an address whose IP cannot be one etcd or the agent
    /// endpoint listens on may share their port numbers; shown by check-config as written.
    #[test]
    fn metrics_listen() {
        let load = |extra: &str, env: &[(String, String)]| {
            let (_d, p) = setup(&format!("{GOOD}{extra}"));
            Config::load(Some(&p), env).map(|c| (c.metrics.listen, c.to_toml()))
        };
        let (off, text) = load("", &[]).unwrap();
        assert_eq!(off, None);
        assert!(text.contains("[metrics]\nlisten = \"\"\n"), "{text}");
        for ok in [
            "127.0.0.1:9479",
            "[::1]:9479",
            // etcd's peer port is not on loopback; 127.0.0.2 is not where etcd listens.
            "127.0.0.1:2380",
            "127.0.0.2:2379",
        ] {
            let (on, text) = load(&format!("[metrics]\nlisten = \"{ok}\"\n"), &[]).unwrap();
            assert_eq!(on, Some(ok.parse().unwrap()));
            assert!(text.contains(&format!("listen = \"{ok}\"")), "{text}");
        }
        // A member address set explicitly: another address of this machine may reuse the port.
        let set =
            "[member]\nadvertise_address = \"10.0.0.6\"\n[metrics]\nlisten = \"10.0.0.5:2380\"\n";
        assert!(load(set, &[]).is_ok());
        let same = set.replace("10.0.0.5", "10.0.0.6");
        let e = load(&same, &[]).unwrap_err();
        assert_eq!(e.key, "metrics.listen");
        assert!(e.message.contains("member.peer_port"), "{e}");
        let env = vec![(
            "ETCD_BOOTSTRAP_METRICS_LISTEN".to_string(),
            "metrics.example.com:9479".to_string(),
        )];
        let e = load("", &env).unwrap_err();
        assert_eq!(e.key, "metrics.listen");
        assert!(e.source.contains("ETCD_BOOTSTRAP_METRICS_LISTEN"), "{e}");
        assert!(e.message.contains("not a host name"), "{e}");
    }
}
