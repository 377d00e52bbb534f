//! The `/metrics` endpoint on `metrics.listen`: a minimal HTTP/1.1 server over a tokio listener,
//! written here rather than pulled in as a framework, since it answers one path with one text.
//! Each connection gets one answer and is closed (Prometheus opens one per scrape anyway). What
//! a client may cost is bounded: the request head in size and time, the answer in time, and the
//! number of connections served at once, in total and per source address (one slow or
//! flooding client once held every slot, and 62 of 74 scrapes failed: issue 24, finding 8).

use crate::config::Config;
use crate::error::ConfigError;
use crate::util::limit::{ConnLimiter, Throttle};
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The request line and headers of a scrape are a few hundred bytes.
const HEAD_LIMIT: usize = 8 * 1024;
/// How long a client may take to send its request head. Prometheus sends it at once, in one
/// packet; a client that trickles it (a slowloris) only holds a slot, so it goes soon.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to take the answer (a few kB; the socket buffer holds it).
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// After answering, how long and how much of what the client still sends is read and dropped.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_LIMIT: usize = 64 * 1024;
/// Connections answered at once; more are closed at once. A scrape holds one for milliseconds;
/// a few Prometheus servers and a person with curl need a handful.
const MAX_CONNECTIONS: usize = 32;
/// Connections answered at once from one address: Prometheus scrapes a target over one
/// connection at a time, so 4 leaves room for overlap and retries, while one client that holds
/// connections open cannot take the slots of the others.
const MAX_PER_SOURCE: usize = 4;
/// At most one log line per this about refused connections, with a count.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(30);

/// Bind `metrics.listen` and serve `/metrics` in the background for as long as the process runs.
/// Returns the bound address. A failure to bind names the key.
pub(crate) async fn start(cfg: &Config) -> Result<Option<SocketAddr>> {
    let Some(addr) = cfg.metrics.listen else {
        return Ok(None);
    };
    let listener = bind(addr).await?;
    let bound = listener
        .local_addr()
        .context("metrics.listen: the bound address")?;
    tracing::info!(listen = %bound, "serving Prometheus metrics on /metrics (metrics.listen)");
    tokio::spawn(serve(listener, crate::tls::cert_files(cfg)));
    Ok(Some(bound))
}

/// Listen on exactly `addr`. An address that is not this machine's is a config error.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrNotAvailable {
            ConfigError::new(
                "metrics.listen",
                "",
                format!("{addr} is not an address of this machine ({e}); use one of its addresses, or 127.0.0.1"),
            )
            .into()
        } else {
            anyhow::anyhow!(
                "cannot listen on {addr} (metrics.listen): {e}; is another program on that port? Pick a free one"
            )
        }
    })
}

/// Answer connections on `listener` until the process ends; `certs` are the certificate files
/// whose expiry each scrape reads.
pub(crate) async fn serve(listener: TcpListener, certs: Vec<(String, PathBuf)>) {
    let certs = Arc::new(certs);
    let slots = ConnLimiter::new(MAX_CONNECTIONS, MAX_PER_SOURCE);
    let refused = Throttle::new(REFUSAL_LOG_EVERY);
    let accept_failed = Throttle::new(REFUSAL_LOG_EVERY);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                if let Some(n) = accept_failed.note() {
                    tracing::warn!(error = %e, failures = n, "metrics endpoint: accept failed");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let slot = match slots.try_acquire(peer.ip()) {
            Ok(s) => s,
            Err(why) => {
                drop(stream);
                if let Some(n) = refused.note() {
                    tracing::warn!(%peer, %why, refused = n, per_source = MAX_PER_SOURCE, total = MAX_CONNECTIONS, "metrics endpoint: closing connections over its cap (counted since the last such line)");
                }
                continue;
            }
        };
        let certs = certs.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &certs).await {
                tracing::debug!(%peer, error = %format!("{e:#}"), "metrics endpoint: request not answered");
            }
            drop(slot);
        });
    }
}

/// What a request head asks for, by the answer it gets.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

fn route(head: &str) -> Route {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head_only: false },
        "HEAD" => Route::Metrics { head_only: true },
        _ => Route::MethodNotAllowed,
    }
}

/// Read the request head: up to the blank line, at most HEAD_LIMIT bytes. `None` when it is
/// larger than that.
async fn read_head(stream: &mut TcpStream) -> Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .context("reading the request")?;
        if n == 0 {
            anyhow::bail!("the client closed the connection before the end of its request");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_end(&buf) {
            return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
        if buf.len() > HEAD_LIMIT {
            return Ok(None);
        }
    }
}

/// Where the head ends: after the first empty line (CRLF CRLF, or LF LF from lenient clients).
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn answer(mut stream: TcpStream, certs: &[(String, PathBuf)]) -> Result<()> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream))
        .await
        .context("the request head did not arrive in time")??;
    let (status, extra, body, head_only) = match head.as_deref().map(route) {
        None => (
            "431 Request Header Fields Too Large",
            "",
            "request head too large\n".to_string(),
            false,
        ),
        Some(Route::Metrics { head_only }) => ("200 OK", "", super::render(certs), head_only),
        Some(Route::NotFound) => (
            "404 Not Found",
            "",
            "not found: metrics are on /metrics\n".to_string(),
            false,
        ),
        Some(Route::MethodNotAllowed) => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "method not allowed: use GET\n".to_string(),
            false,
        ),
        Some(Route::BadRequest) => ("400 Bad Request", "", "bad request\n".to_string(), false),
    };
    let content_type = if status.starts_with("200") {
        super::CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await
    .context("the client did not take the answer in time")?
    .context("writing the answer")?;
    // Closing with unread request bytes (a body, the rest of a head too large) would reset the
    // connection and could destroy the answer before the client reads it: read what the client
    // still sends until it closes, within bounds.
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        let mut left = LINGER_LIMIT;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |line: &str| route(&format!("{line}\r\nHost: x\r\n\r\n"));
        assert_eq!(
            r("GET /metrics HTTP/1.1"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            r("GET /metrics?x=1 HTTP/1.0"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            r("HEAD /metrics HTTP/1.1"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(r("GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(r("GET /metricsx HTTP/1.1"), Route::NotFound);
        assert_eq!(r("POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(r("DELETE /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(r("GET /metrics"), Route::BadRequest);
        assert_eq!(r("GET /metrics SPDY/3"), Route::BadRequest);
        assert_eq!(r("GET http://x/metrics HTTP/1.1"), Route::BadRequest);
        assert_eq!(r(""), Route::BadRequest);
    }

    #[test]
    fn head_end() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    /// One request on a fresh connection; the whole answer, as text.
    async fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .expect("answered in time")
            .unwrap();
        out
    }

    #[tokio::test]
    async fn answers_metrics_and_nothing_else_on_exactly_its_address() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(addr.ip().to_string(), "127.0.0.1");
        let dir = tempfile::tempdir().unwrap();
        let certs = vec![("server.crt".to_string(), dir.path().join("missing.crt"))];
        tokio::spawn(serve(listener, certs));

        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{head}"
        );
        assert!(
            body.contains("# TYPE etcd_bootstrap_heal_actions_total counter\n"),
            "{body}"
        );

        let head_only = ask(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
        assert!(head_only.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head_only.ends_with("\r\n\r\n"), "no body: {head_only}");

        let missing = ask(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = ask(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        let garbage = ask(addr, b"hello\r\n\r\n").await;
        assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'x', HEAD_LIMIT + 10));
        let too_large = ask(addr, &huge).await;
        assert!(too_large.starts_with("HTTP/1.1 431 "), "{too_large}");

        // Bound to 127.0.0.1 only: another loopback address of this machine, same port, is
        // refused.
        let other = SocketAddr::new("127.0.0.2".parse().unwrap(), addr.port());
        assert!(
            TcpStream::connect(other).await.is_err(),
            "answered on {other}"
        );
    }

    /// A client that sends nothing is dropped after HEAD_TIMEOUT, and does not hold up others.
    #[tokio::test]
    async fn a_silent_client_does_not_block_scrapes() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, vec![]));
        let _silent = TcpStream::connect(addr).await.unwrap();
        let ok = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    }

    /// One address holding many slow connections (before: 16 took every slot and the scrapes
    /// of everyone else failed) keeps MAX_PER_SOURCE of them, each for HEAD_TIMEOUT; another
    /// address is answered all along.
    #[tokio::test]
    async fn slow_clients_of_one_address_do_not_starve_another() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, vec![]));
        let mut slow = vec![];
        for _ in 0..40 {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut c = s.connect(addr).await.unwrap();
            c.write_all(b"GET /metr").await.unwrap();
            slow.push(c);
        }
        for _ in 0..10 {
            let ok = ask(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        }
        // Within HEAD_TIMEOUT and a margin, every slow connection is closed.
        let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT + Duration::from_secs(1);
        for c in slow.iter_mut() {
            let mut b = [0u8; 64];
            let r = tokio::time::timeout_at(deadline, c.read(&mut b)).await;
            assert!(r.is_ok(), "a slow client still held its connection");
        }
    }

    #[tokio::test]
    async fn an_address_of_another_machine_is_a_config_error() {
        // TEST-NET-1 (RFC 5737): never an address of this machine.
        let e = bind("192.0.2.1:9479".parse().unwrap()).await.unwrap_err();
        let c = e.downcast_ref::<ConfigError>().expect("a config error");
        assert_eq!(c.key, "metrics.listen");
    }
}
