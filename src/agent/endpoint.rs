//! The agent's own endpoint on `member.agent_port`: mutual TLS with the peer certificate (the
//! same CA as etcd's peers; a client needs a peer certificate of that CA: serverAuth and
//! clientAuth, which the client-only certificates lack), one read-only resource,
//! `GET /v1/member`, answering what a peer needs before it may form a new cluster: this node's
//! `cluster.name`, whether it holds data, for which cluster and member, its raft index, and its
//! nonce. It runs before etcd does and while etcd is down, which is exactly when this evidence
//! is needed.

use crate::decide::bootstrap::AgentReport;
use crate::tls::ClientMaterial;
use crate::util::limit::{ConnLimiter, Throttle};
use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Per connection, the asker's side: TLS handshake, request and answer together. The server
/// gives the request and answer this long after the handshake.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// The server closes a connection whose TLS handshake has not finished by then. A peer's
/// handshake takes milliseconds; a client that connects and says nothing only holds a slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once. A peer's agent asks once per observation (every 1 to 3 s), with
/// one connection; `doctor` and `recover` on a node add one each. 64 is room for clusters far
/// larger than etcd's usual 3 to 7 members, and stays far below the 1,024 file descriptors of a
/// process under systemd's default limit: a flood of raw connections, each held until its
/// timeout, used every descriptor of the agent (issue 24, finding 8) and it could then neither
/// reach its local etcd nor read its identity record.
const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one address (one node): a node asks with one or two at a
/// time, so 8 leaves it room; one host that floods the port is held to this share and cannot
/// take the slots of the real peers.
const MAX_PER_SOURCE: usize = 8;
/// At most one log line per this about refused connections or certificates, with a count.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(30);
/// A peer started at the same instant may not listen yet: connection refused is retried this long.
const REFUSED_GRACE: Duration = Duration::from_millis(1500);
const MAX_REQUEST: usize = 8 * 1024;
const MAX_ANSWER: usize = 64 * 1024;
pub(crate) const PATH: &str = "/v1/member";

/// Builds this node's report for one request.
/// An error (the identity record cannot be read) is answered 503: this node cannot tell.
pub(crate) type Reporter = Arc<dyn Fn() -> BoxFuture<'static, Result<AgentReport>> + Send + Sync>;

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

/// Why a client certificate that chains to the CA is still not a peer's.
#[derive(Debug)]
struct NotAPeer(String);

impl std::fmt::Display for NotAPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAPeer {}

/// A peer (or server) certificate of this cluster carries both serverAuth and clientAuth (see
/// `tls::issuing::leaf_params`); the client certificates (`client.crt`, the apiserver's) carry clientAuth
/// only. The agent endpoint answers peers only: what it reports decides whether a cluster is
/// formed, and a client certificate is handed to far more places (operators, the apiserver).
fn check_peer_usage(der: &[u8]) -> Result<(), NotAPeer> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| NotAPeer(format!("not an X.509 certificate: {e}")))?;
    let (server_auth, client_auth) = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .map(|e| (e.value.server_auth, e.value.client_auth))
        .unwrap_or((false, false));
    if server_auth && client_auth {
        Ok(())
    } else {
        Err(NotAPeer(format!(
            "{} lacks the serverAuth and clientAuth extended key usages of a peer certificate",
            cert.subject()
        )))
    }
}

/// The CA's verifier (chain, dates, clientAuth), then the peer check above.
#[derive(Debug)]
struct PeerVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self.0.verify_client_cert(end_entity, intermediates, now)?;
        check_peer_usage(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn server_config(m: &ClientMaterial) -> Result<Arc<rustls::ServerConfig>> {
    let webpki =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&m.ca_pem)?, provider())
            .build()
            .context("building the client certificate verifier")?;
    let verifier = Arc::new(PeerVerifier(webpki));
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
pub(crate) struct Endpoint {
    tls: Arc<RwLock<Option<Arc<rustls::ServerConfig>>>>,
    bound: Mutex<Option<SocketAddr>>,
    reporter: Reporter,
}

/// What the accept loop shares with its connections: the caps and the log throttles.
struct Guard {
    limiter: ConnLimiter,
    over_cap: Throttle,
    refused_cert: Throttle,
    accept_failed: Throttle,
}

impl Guard {
    fn new() -> Self {
        Guard {
            limiter: ConnLimiter::new(MAX_CONNECTIONS, MAX_PER_SOURCE),
            over_cap: Throttle::new(REFUSAL_LOG_EVERY),
            refused_cert: Throttle::new(REFUSAL_LOG_EVERY),
            accept_failed: Throttle::new(REFUSAL_LOG_EVERY),
        }
    }
}

impl Endpoint {
    pub(crate) fn new(reporter: Reporter) -> Self {
        Endpoint {
            tls: Arc::new(RwLock::new(None)),
            bound: Mutex::new(None),
            reporter,
        }
    }

    /// Swap in renewed material (the peer certificate); a no-op before `serve`.
    pub(crate) fn refresh(&self, material: &ClientMaterial) -> Result<()> {
        let mut tls = self.tls.write().expect("poisoned");
        if tls.is_some() {
            *tls = Some(server_config(material)?);
        }
        Ok(())
    }

    /// Serve on `addr` with `material` (the peer certificate). The first call binds and starts
    /// serving; later calls only swap the certificate.
    pub(crate) async fn serve(&self, addr: SocketAddr, material: &ClientMaterial) -> Result<()> {
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
        tokio::spawn(accept_loop(
            listener,
            self.tls.clone(),
            self.reporter.clone(),
        ));
        Ok(())
    }
}

/// Accept connections for as long as the process runs: over a cap, a connection is closed at
/// once; an admitted one gets HANDSHAKE_TIMEOUT for its TLS handshake, then IO_TIMEOUT for its
/// request and answer.
async fn accept_loop(
    listener: TcpListener,
    tls: Arc<RwLock<Option<Arc<rustls::ServerConfig>>>>,
    reporter: Reporter,
) {
    let guard = Arc::new(Guard::new());
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                if let Some(n) = guard.accept_failed.note() {
                    tracing::warn!(error = %e, failures = n, "agent endpoint: accepting a connection failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match guard.limiter.try_acquire(from.ip()) {
            Ok(p) => p,
            Err(why) => {
                drop(tcp);
                if let Some(n) = guard.over_cap.note() {
                    tracing::warn!(%from, %why, refused = n, per_source = MAX_PER_SOURCE, total = MAX_CONNECTIONS, every = ?REFUSAL_LOG_EVERY, "agent endpoint: closing connections over its cap (a flood? counted since the last such line)");
                }
                continue;
            }
        };
        let Some(config) = tls.read().expect("poisoned").clone() else {
            continue;
        };
        let reporter = reporter.clone();
        let guard = guard.clone();
        tokio::spawn(async move {
            match handle(tcp, config, reporter).await {
                Ok(()) => {}
                Err(Failure::Certificate(why)) => {
                    if let Some(n) = guard.refused_cert.note() {
                        tracing::warn!(%from, %why, refused = n, "agent endpoint: refused a client certificate; only the peer certificates of this cluster are answered (counted since the last such line)");
                    }
                }
                Err(Failure::Other(e)) => {
                    tracing::debug!(%from, error = %format!("{e:#}"), "agent endpoint: request failed")
                }
            }
            drop(permit);
        });
    }
}

/// Why a connection was not answered.
enum Failure {
    /// The client's certificate was refused (another CA, not a peer's, none).
    Certificate(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Other(e.into())
    }
}

/// A refused client certificate, from the error of a handshake.
fn certificate_refusal(e: &std::io::Error) -> Option<String> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    match inner {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
            Some(o.0.to_string())
        }
        rustls::Error::InvalidCertificate(c) => Some(format!("{c:?}")),
        rustls::Error::NoCertificatesPresented => Some("no client certificate".into()),
        _ => None,
    }
}

async fn handle(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    reporter: Reporter,
) -> Result<(), Failure> {
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => {
            return Err(anyhow::anyhow!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}").into())
        }
        Ok(Err(e)) => {
            return Err(match certificate_refusal(&e) {
                Some(why) => Failure::Certificate(why),
                None => anyhow::Error::from(e).context("TLS handshake").into(),
            })
        }
        Ok(Ok(tls)) => tls,
    };
    tokio::time::timeout(IO_TIMEOUT, exchange(tls, reporter))
        .await
        .map_err(|_| anyhow::anyhow!("request and answer took longer than {IO_TIMEOUT:?}"))??;
    Ok(())
}

/// One request, one answer, on an established connection.
async fn exchange(
    mut tls: tokio_rustls::server::TlsStream<TcpStream>,
    reporter: Reporter,
) -> Result<(), Failure> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Err(anyhow::anyhow!("connection closed before the request ended").into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return Err(anyhow::anyhow!("request too large").into());
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    let (status, body) = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["GET", p, _] if *p == PATH => match reporter().await {
            Ok(report) => (
                "200 OK",
                serde_json::to_string(&report).map_err(anyhow::Error::from)?,
            ),
            // "Cannot tell" is not "no data": the asker counts this node as not answered.
            Err(e) => (
                "503 Service Unavailable",
                serde_json::json!({ "error": format!("{e:#}") }).to_string(),
            ),
        },
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
pub(crate) async fn ask(addr: SocketAddr, material: &ClientMaterial) -> Result<AgentReport> {
    Ok(ask_timed(addr, material).await?.0)
}

/// When a request was sent and its answer received (Unix ms, this node's clock): the responder
/// made its report in between, after the TLS handshake, so its `now_unix_ms` compares with the
/// middle of the two, give or take half their difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub sent_ms: i64,
    pub received_ms: i64,
}

impl Timing {
    /// The responder's clock minus this node's, and the uncertainty of that, in ms.
    pub(crate) fn offset_of(&self, their_now_ms: i64) -> (i64, i64) {
        let middle = self.sent_ms + (self.received_ms - self.sent_ms) / 2;
        (
            their_now_ms - middle,
            (self.received_ms - self.sent_ms + 1) / 2,
        )
    }
}

/// `ask`, and when the request went out and the answer came back.
pub(crate) async fn ask_timed(
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

    /// A CA and, signed by it for 127.0.0.1: a peer certificate (serverAuth and clientAuth) and
    /// a client certificate (clientAuth only), as `tls::issuing::leaf_params` makes them.
    fn pki() -> (ClientMaterial, ClientMaterial) {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer,
            KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |sans: Vec<String>, usages: Vec<Eku>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.extended_key_usages = usages;
            ClientMaterial {
                ca_pem: ca_pem.clone(),
                cert_pem: params.signed_by(&key, &issuer).unwrap().pem(),
                key_pem: key.serialize_pem(),
            }
        };
        (
            leaf(
                vec!["127.0.0.1".to_string()],
                vec![Eku::ServerAuth, Eku::ClientAuth],
            ),
            leaf(vec![], vec![Eku::ClientAuth]),
        )
    }

    fn report() -> AgentReport {
        serde_json::from_str(r#"{"cluster_name":"prod","nonce":"n","has_data":false}"#).unwrap()
    }

    async fn serve(reporter: Reporter, peer: &ClientMaterial) -> SocketAddr {
        // Bind a free port first: `serve` takes the address to bind.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let ep = Endpoint::new(reporter);
        ep.serve(addr, peer).await.unwrap();
        std::mem::forget(ep);
        addr
    }

    #[tokio::test]
    async fn answers_peer_certificates_only() {
        let (peer, client) = pki();
        let addr = serve(Arc::new(|| Box::pin(async { Ok(report()) })), &peer).await;
        let r = ask(addr, &peer)
            .await
            .expect("a peer certificate is answered");
        assert_eq!(r.held.cluster_name, "prod");
        // client.crt chains to the same CA but is no peer's: refused in the handshake.
        let e = ask(addr, &client).await.unwrap_err();
        assert!(format!("{e:#}").contains(&addr.to_string()), "{e:#}");
        // The endpoint still answers a peer afterwards.
        assert!(ask(addr, &peer).await.is_ok());
    }

    #[tokio::test]
    async fn an_unreadable_record_is_answered_503_not_as_an_empty_node() {
        let (peer, _) = pki();
        let addr = serve(
            Arc::new(|| {
                Box::pin(async { Err(anyhow::anyhow!("reading data.identity.json: EMFILE")) })
            }),
            &peer,
        )
        .await;
        let e = ask(addr, &peer).await.unwrap_err();
        assert!(format!("{e:#}").contains("503"), "{e:#}");
    }

    /// A flood from one address holds at most MAX_PER_SOURCE slots, each for at most
    /// HANDSHAKE_TIMEOUT: a peer from another address is answered while it lasts, and the
    /// flood's own connections are closed.
    #[tokio::test]
    async fn a_flood_from_one_address_neither_starves_peers_nor_holds_connections() {
        let (peer, _) = pki();
        let addr = serve(Arc::new(|| Box::pin(async { Ok(report()) })), &peer).await;
        let addr_peer = SocketAddr::new("127.0.0.1".parse().unwrap(), addr.port());
        let mut flood = vec![];
        for _ in 0..200 {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            flood.push(s.connect(addr_peer).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let r = ask(addr_peer, &peer).await;
        assert!(r.is_ok(), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        // Over the cap: closed at once. Within it: closed once HANDSHAKE_TIMEOUT is over.
        let mut closed_at_once = 0;
        for s in flood.iter_mut() {
            let mut b = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await
            {
                closed_at_once += 1;
            }
        }
        assert_eq!(closed_at_once, 200 - MAX_PER_SOURCE);
        tokio::time::sleep(HANDSHAKE_TIMEOUT + Duration::from_millis(500)).await;
        for s in flood.iter_mut() {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await;
            assert!(matches!(n, Ok(Ok(0) | Err(_))), "still open: {n:?}");
        }
    }

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
        assert!(r.held.unreachable_since.is_empty());
        let new = r#"{"cluster_name":"prod","nonce":"n","has_data":true,"now_unix_ms":1800000000123,"unreachable_since":{"62bf51b240562c3d":1800000000}}"#;
        let r: AgentReport = serde_json::from_str(new).unwrap();
        assert_eq!(r.now_unix_ms, Some(1_800_000_000_123));
        assert_eq!(r.held.unreachable_since["62bf51b240562c3d"], 1_800_000_000);
    }
}
