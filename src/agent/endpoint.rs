//! The agent's own endpoint on `member.agent_port`: mutual TLS with the peer certificate (the
//! same CA as etcd's peers; a client needs a certificate of that CA), one read-only resource,
//! `GET /v1/member`, answering what a peer needs before it may form a new cluster: this node's
//! `cluster.name`, whether it holds data, for which cluster and member, its raft index, and its
//! nonce. It runs before etcd does and while etcd is down, which is exactly when this evidence
//! is needed.

use crate::decide::AgentReport;
use crate::tls::ClientMaterial;
use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Per connection: TLS handshake, request and answer together.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// A peer started at the same instant may not listen yet: connection refused is retried this long.
const REFUSED_GRACE: Duration = Duration::from_millis(1500);
const MAX_REQUEST: usize = 8 * 1024;
const MAX_ANSWER: usize = 64 * 1024;
pub const PATH: &str = "/v1/member";

/// Builds this node's report for one request.
pub type Reporter = Arc<dyn Fn() -> BoxFuture<'static, AgentReport> + Send + Sync>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what} is not PEM"))?;
    if certs.is_empty() {
        bail!("{what} holds no certificate");
    }
    Ok(certs)
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca_pem, "the CA bundle")? {
        roots.add(c).context("adding a CA certificate")?;
    }
    Ok(Arc::new(roots))
}

fn server_config(m: &ClientMaterial) -> Result<Arc<rustls::ServerConfig>> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&m.ca_pem)?, provider())
            .build()
            .context("building the client certificate verifier")?;
    let key = PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes()).context("the peer key")?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&m.cert_pem, "the peer certificate")?, key)
        .context("the peer certificate and key")?;
    Ok(Arc::new(cfg))
}

fn client_config(m: &ClientMaterial) -> Result<Arc<rustls::ClientConfig>> {
    let key = PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes()).context("the peer key")?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(&m.ca_pem)?)
        .with_client_auth_cert(certs(&m.cert_pem, "the peer certificate")?, key)
        .context("the peer certificate and key")?;
    Ok(Arc::new(cfg))
}

/// The endpoint: bound once, its certificate swapped in place when it is renewed.
pub struct Endpoint {
    tls: Arc<RwLock<Option<Arc<rustls::ServerConfig>>>>,
    bound: Mutex<Option<SocketAddr>>,
    reporter: Reporter,
}

impl Endpoint {
    pub fn new(reporter: Reporter) -> Self {
        Endpoint {
            tls: Arc::new(RwLock::new(None)),
            bound: Mutex::new(None),
            reporter,
        }
    }

    /// Swap in renewed material (the peer certificate); a no-op before `serve`.
    pub fn refresh(&self, material: &ClientMaterial) -> Result<()> {
        let mut tls = self.tls.write().expect("poisoned");
        if tls.is_some() {
            *tls = Some(server_config(material)?);
        }
        Ok(())
    }

    /// Serve on `addr` with `material` (the peer certificate). The first call binds and starts
    /// serving; later calls only swap the certificate.
    pub async fn serve(&self, addr: SocketAddr, material: &ClientMaterial) -> Result<()> {
        let config = server_config(material)?;
        *self.tls.write().expect("poisoned") = Some(config);
        if self.bound.lock().expect("poisoned").is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the agent endpoint to {addr} (member.agent_port)"))?;
        *self.bound.lock().expect("poisoned") = Some(addr);
        tracing::info!(%addr, "agent endpoint listening (mTLS, peer certificate)");
        let tls = self.tls.clone();
        let reporter = self.reporter.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, from)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Some(config) = tls.read().expect("poisoned").clone() else {
                    continue;
                };
                let reporter = reporter.clone();
                tokio::spawn(async move {
                    let answer = tokio::time::timeout(IO_TIMEOUT, handle(tcp, config, reporter));
                    match answer.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(%from, error = %format!("{e:#}"), "agent endpoint: request failed")
                        }
                        Err(_) => tracing::debug!(%from, "agent endpoint: request timed out"),
                    }
                });
            }
        });
        Ok(())
    }
}

async fn handle(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    reporter: Reporter,
) -> Result<()> {
    let mut tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .context("TLS handshake")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the request ended");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            bail!("request too large");
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    let (status, body) = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["GET", p, _] if *p == PATH => {
            let report = reporter().await;
            ("200 OK", serde_json::to_string(&report)?)
        }
        ["GET", _, _] => ("404 Not Found", "{\"error\":\"not found\"}".to_string()),
        _ => (
            "405 Method Not Allowed",
            "{\"error\":\"only GET\"}".to_string(),
        ),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(answer.as_bytes()).await?;
    tls.shutdown().await.ok();
    Ok(())
}

/// Ask the agent at `addr` for its report, with the peer certificate `material`. Bounded: a
/// refused connection is retried for a moment (a peer started at the same instant), everything
/// else fails within `IO_TIMEOUT`.
pub async fn ask(addr: SocketAddr, material: &ClientMaterial) -> Result<AgentReport> {
    Ok(ask_timed(addr, material).await?.0)
}

/// When a request was sent and its answer received (Unix ms, this node's clock): the responder
/// made its report in between, after the TLS handshake, so its `now_unix_ms` compares with the
/// middle of the two, give or take half their difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub sent_ms: i64,
    pub received_ms: i64,
}

impl Timing {
    /// The responder's clock minus this node's, and the uncertainty of that, in ms.
    pub fn offset_of(&self, their_now_ms: i64) -> (i64, i64) {
        let middle = self.sent_ms + (self.received_ms - self.sent_ms) / 2;
        (
            their_now_ms - middle,
            (self.received_ms - self.sent_ms + 1) / 2,
        )
    }
}

/// `ask`, and when the request went out and the answer came back.
pub async fn ask_timed(
    addr: SocketAddr,
    material: &ClientMaterial,
) -> Result<(AgentReport, Timing)> {
    let config = client_config(material)?;
    let started = Instant::now();
    let tcp = loop {
        match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => break tcp,
            Ok(Err(e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && started.elapsed() < REFUSED_GRACE =>
            {
                // Peers started together bind within milliseconds of each other: retry often,
                // so that they all decide at nearly the same instant (the staggered etcd start
                // of a new cluster relies on it).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Err(e)) => return Err(e).with_context(|| format!("connecting to {addr}")),
            Err(_) => bail!("connecting to {addr} timed out"),
        }
    };
    let exchange = async {
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let request = format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let sent_ms = super::now_unix_ms();
        tls.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // A peer that closes without close_notify still sent its whole answer.
            let n = match tls.read(&mut chunk).await {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_ANSWER {
                bail!("answer larger than {MAX_ANSWER} bytes");
            }
        }
        let timing = Timing {
            sent_ms,
            received_ms: super::now_unix_ms(),
        };
        anyhow::Ok((buf, timing))
    };
    let (buf, timing) = tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{addr} did not answer within {IO_TIMEOUT:?}"))?
        .with_context(|| format!("asking the agent at {addr}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{addr} answered something that is not HTTP"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        bail!("{addr} answered {status:?}");
    }
    let report = serde_json::from_str(body)
        .with_context(|| format!("{addr} answered a malformed report"))?;
    Ok((report, timing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_is_measured_from_the_middle_of_the_round_trip() {
        let t = Timing {
            sent_ms: 1_000,
            received_ms: 1_040,
        };
        // In step: the responder's clock read 20 ms after the request left.
        assert_eq!(t.offset_of(1_020), (0, 20));
        assert_eq!(t.offset_of(4_020), (3_000, 20));
        assert_eq!(t.offset_of(20), (-1_000, 20));
        // A round trip of 0 ms still has its millisecond of resolution.
        let zero = Timing {
            sent_ms: 5,
            received_ms: 5,
        };
        assert_eq!(zero.offset_of(5), (0, 0));
    }

    /// Older agents answer without `now_unix_ms` or `unreachable_since`; newer ones with both.
    #[test]
    fn reports_of_older_agents_still_parse() {
        let old = r#"{"cluster_name":"prod","nonce":"n","has_data":true,"cluster_id":"3d2ca84ca24e47e4","member_id":"62bf51b240562c3c","raft_index":1204,"formation":null}"#;
        let r: AgentReport = serde_json::from_str(old).unwrap();
        assert_eq!(r.now_unix_ms, None);
        assert!(r.unreachable_since.is_empty());
        let new = r#"{"cluster_name":"prod","nonce":"n","has_data":true,"now_unix_ms":1800000000123,"unreachable_since":{"62bf51b240562c3d":1800000000}}"#;
        let r: AgentReport = serde_json::from_str(new).unwrap();
        assert_eq!(r.now_unix_ms, Some(1_800_000_000_123));
        assert_eq!(r.unreachable_since["62bf51b240562c3d"], 1_800_000_000);
    }
}
