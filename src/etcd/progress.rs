//! How far the local member's data goes, read while etcd cannot serve clients: etcd 3.4 and 3.5
//! open the client port only once the member has joined through raft, which needs a quorum,
//! so `Maintenance.Status` cannot be asked then. Their metrics listener
//! (`--listen-metrics-urls`, on loopback, plain HTTP) answers from the start, without a quorum
//! (checked in the lab with 3.5.30: `/health` says "RAFT NO LEADER" and `/metrics` answers):
//! `etcd_server_proposals_applied_total` is the applied raft index, and
//! `etcd_debugging_mvcc_current_revision` the revision of the key space. The raft term is not
//! among them: it comes from the identity record (the term last seen with a leader).

use anyhow::{bail, Context, Result};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The metrics listener is on loopback: an answer takes milliseconds.
const TIMEOUT: Duration = Duration::from_secs(2);
/// etcd's metrics page is some 100 KiB; more is not etcd's.
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// `etcd_server_id{server_id="..."}`: which member the figures are of.
    pub member_id: Option<u64>,
    pub applied_index: u64,
    pub revision: i64,
    pub has_leader: bool,
}

/// Read the figures from etcd's metrics page (Prometheus text format).
pub(crate) fn parse(text: &str) -> Result<Progress> {
    let mut member_id = None;
    let mut applied = None;
    let mut revision = None;
    let mut has_leader = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value = value.trim();
        if let Some(labels) = name.strip_prefix("etcd_server_id{") {
            member_id = labels
                .split('"')
                .nth(1)
                .and_then(|h| u64::from_str_radix(h, 16).ok());
        } else if name == "etcd_server_proposals_applied_total" {
            applied = value.parse::<f64>().ok().map(|v| v as u64);
        } else if name == "etcd_debugging_mvcc_current_revision" {
            revision = value.parse::<f64>().ok().map(|v| v as i64);
        } else if name == "etcd_server_has_leader" {
            has_leader = value == "1";
        }
    }
    match (applied, revision) {
        (Some(applied_index), Some(revision)) => Ok(Progress {
            member_id,
            applied_index,
            revision,
            has_leader,
        }),
        _ => bail!("etcd's metrics lack etcd_server_proposals_applied_total or etcd_debugging_mvcc_current_revision"),
    }
}

/// Whether the local etcd runs without a leader, as its metrics listener says. Then its client
/// port takes connections but answers nothing (etcd serves clients only once it has joined
/// through raft), so a probe there would only wait for its whole timeout. `false` when the
/// listener does not answer (etcd stopped): the caller probes as before.
pub(crate) async fn local_without_leader(port: u16) -> bool {
    matches!(read_local(port).await, Ok(p) if !p.has_leader)
}

/// Ask the local etcd's metrics listener on 127.0.0.1:`port` (`member.metrics_port`), bounded.
pub(crate) async fn read_local(port: u16) -> Result<Progress> {
    let fetch = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.write_all(
            format!("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_BODY {
                bail!("the answer is larger than {MAX_BODY} bytes");
            }
        }
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(TIMEOUT, fetch)
        .await
        .with_context(|| {
            format!("etcd's metrics on 127.0.0.1:{port} did not answer within {TIMEOUT:?}")
        })?
        .with_context(|| {
            format!("reading etcd's metrics on 127.0.0.1:{port} (member.metrics_port)")
        })?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("127.0.0.1:{port} answered something that is not HTTP"))?;
    if !head.lines().next().unwrap_or_default().contains(" 200") {
        bail!(
            "127.0.0.1:{port} answered {:?}",
            head.lines().next().unwrap_or_default()
        );
    }
    parse(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_etcd_3_5_serves_without_a_quorum() {
        // Taken from etcd 3.5.30 in the lab, restarted from its WAL without a quorum.
        let page = "# HELP etcd_debugging_mvcc_current_revision The current revision of store.\n\
# TYPE etcd_debugging_mvcc_current_revision gauge\n\
etcd_debugging_mvcc_current_revision 21\n\
etcd_server_has_leader 0\n\
etcd_server_id{server_id=\"4046c0ed98a8e8e3\"} 1\n\
etcd_server_is_leader 0\n\
etcd_server_proposals_applied_total 31\n\
etcd_server_proposals_committed_total 0\n";
        assert_eq!(
            parse(page).unwrap(),
            Progress {
                member_id: Some(0x4046c0ed98a8e8e3),
                applied_index: 31,
                revision: 21,
                has_leader: false,
            }
        );
        assert!(parse("etcd_server_has_leader 1\n").is_err());
        // Large figures as Prometheus may print them.
        let p = parse("etcd_server_proposals_applied_total 1.234567e+06\netcd_debugging_mvcc_current_revision 99\n").unwrap();
        assert_eq!(p.applied_index, 1_234_567);
    }
}
