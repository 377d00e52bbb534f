//! etcd's URL rules: exactly `scheme://host:port`, no path, not even a trailing
//! `/`; IPv6 hosts bracketed. Peer and client URLs are compared as strings by etcd, so we build
//! them in one canonical spelling.

use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct EtcdUrl {
    pub scheme: String,
    pub host: Host,
    pub port: u16,
}

impl serde::Serialize for EtcdUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

impl EtcdUrl {
    pub(crate) fn https(ip: IpAddr, port: u16) -> EtcdUrl {
        EtcdUrl {
            scheme: "https".into(),
            host: Host::Ip(ip),
            port,
        }
    }

    pub(crate) fn ip(&self) -> Option<IpAddr> {
        match self.host {
            Host::Ip(ip) => Some(ip),
            Host::Name(_) => None,
        }
    }

    /// Parse strictly; the error says what is wrong with the text.
    pub(crate) fn parse(text: &str) -> Result<EtcdUrl, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?} is not a URL (expected https://HOST:PORT)"))?;
        if scheme != "https" && scheme != "http" {
            return Err(format!(
                "{text:?}: scheme must be https (or http), not {scheme:?}"
            ));
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(format!(
                "{text:?}: URL must not contain a path (etcd rejects even a trailing '/')"
            ));
        }
        if rest.contains('@') {
            return Err(format!("{text:?}: URL must not contain user information"));
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (ip, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed '[' in IPv6 host"))?;
            let ip: std::net::Ipv6Addr = ip
                .parse()
                .map_err(|_| format!("{text:?}: {ip:?} is not an IPv6 address"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| format!("{text:?}: a port is required (https://HOST:PORT)"))?;
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?}: a port is required (https://HOST:PORT)"))?;
            if host.contains(':') {
                return Err(format!(
                    "{text:?}: IPv6 hosts must be in brackets, e.g. https://[fd00::1]:2380"
                ));
            }
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => Host::Ip(ip),
                Err(_) => {
                    if !is_dns_name(host) {
                        return Err(format!(
                            "{text:?}: {host:?} is neither an IP address nor a DNS name"
                        ));
                    }
                    Host::Name(host.to_ascii_lowercase())
                }
            };
            (host, port)
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{text:?}: {port:?} is not a port number (1-65535)"))?;
        Ok(EtcdUrl {
            scheme: scheme.to_string(),
            host,
            port,
        })
    }
}

/// A DNS name as it may appear in a URL, an SRV target or a certificate SAN.
pub(crate) fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        for (input, out) in [
            ("https://10.0.0.1:2380", "https://10.0.0.1:2380"),
            ("https://[fd00::1]:2380", "https://[fd00::1]:2380"),
            (
                "https://Etcd1.Example.com:2380",
                "https://etcd1.example.com:2380",
            ),
            ("http://127.0.0.1:2379", "http://127.0.0.1:2379"),
        ] {
            assert_eq!(EtcdUrl::parse(input).unwrap().to_string(), out);
        }
    }

    #[test]
    fn rejects_what_etcd_rejects() {
        for bad in [
            "https://10.0.0.1:2380/",
            "https://10.0.0.1",
            "10.0.0.1:2380",
            "ftp://10.0.0.1:2380",
            "https://fd00::1:2380",
            "https://10.0.0.1:0",
            "https://10.0.0.1:99999",
            "https://bad_host!:2380",
            "https://u@10.0.0.1:2380",
        ] {
            assert!(EtcdUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
