//! HTTPS downloads (the cfssl signer, pre-issued certificates, etcd release tarballs): rustls with
//! the ring provider, trusting `tls.signer_ca` when it is set and the system roots otherwise.
//! Redirects are followed only to https URLs: whoever answers an https URL must not be able to
//! send the download (key material, a signed certificate, an etcd release) over plain http.

use crate::error::ConfigError;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;

/// An HTTP client trusting `ca` (a PEM file named by the config key `tls.signer_ca`) only, or the
/// system roots when `ca` is `None`.
pub(crate) fn client(ca: Option<&Path>, timeout: Duration) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .redirect(redirect_policy());
    if let Some(ca) = ca {
        let bad = |msg: String| ConfigError::new("tls.signer_ca", ca.display().to_string(), msg);
        let pem = crate::util::fs::read_bounded(ca, crate::util::fs::PEM_LIMIT)
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".into()).into());
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("building the HTTPS client")
}

/// reqwest's default (up to 10 redirects), but never to a URL that is not https.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        match redirect_refusal(attempt.url(), attempt.previous()) {
            Some(why) => attempt.error(why),
            None => attempt.follow(),
        }
    })
}

/// Why a redirect to `next` after `previous` (the original URL first) is not followed.
fn redirect_refusal(next: &reqwest::Url, previous: &[reqwest::Url]) -> Option<String> {
    let from = previous
        .last()
        .map(|u| u.as_str())
        .unwrap_or("the first URL");
    if next.scheme() != "https" {
        return Some(format!(
            "refusing the redirect from {from} to {next}: only https redirects are followed \
             (nothing is downloaded in the clear); give the final https URL instead"
        ));
    }
    if previous.len() >= 10 {
        return Some(format!("more than 10 redirects, the last to {next}"));
    }
    None
}

/// GET `url` and return its body, refusing anything but a 2xx answer and bodies over `limit`.
pub(crate) async fn get(client: &reqwest::Client, url: &str, limit: usize) -> Result<Vec<u8>> {
    let mut resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("cannot fetch {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("fetching {url}: the server answered HTTP {status}");
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .with_context(|| format!("reading {url}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            bail!("fetching {url}: larger than {limit} bytes; is this the right URL?");
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn only_https_redirects_are_followed() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        let first = [u("https://signer.test/sign")];
        assert_eq!(redirect_refusal(&u("https://other.test/x"), &first), None);
        let why = redirect_refusal(&u("http://other.test/x"), &first).unwrap();
        assert!(why.contains("http://other.test/x"), "{why}");
        assert!(why.contains("https://signer.test/sign"), "{why}");
        assert!(redirect_refusal(&u("ftp://other.test/x"), &first).is_some());
        let many: Vec<_> = (0..10).map(|i| u(&format!("https://h.test/{i}"))).collect();
        assert!(redirect_refusal(&u("https://h.test/11"), &many).is_some());
    }

    /// A CA, and a certificate of it for 127.0.0.1, as PEM.
    fn pki() -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    /// An https server on 127.0.0.1 answering `/to-http` with a redirect to plain http,
    /// `/to-https` with a redirect to its own `/ok`, and `/ok` with "fine".
    async fn redirecting_server(cert_pem: &str, key_pem: &str) -> u16 {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 4096];
                    let n = tls.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let answer = if request.starts_with("GET /to-http ") {
                        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/ok\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    } else if request.starts_with("GET /to-https ") {
                        format!("HTTP/1.1 302 Found\r\nLocation: https://127.0.0.1:{port}/ok\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    } else {
                        "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfine"
                            .to_string()
                    };
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_redirect_to_plain_http_fails_with_a_clear_error() {
        let (ca, cert, key) = pki();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca).unwrap();
        let port = redirecting_server(&cert, &key).await;
        let http = client(Some(&ca_path), Duration::from_secs(10)).unwrap();
        let ok = get(&http, &format!("https://127.0.0.1:{port}/to-https"), 100)
            .await
            .unwrap();
        assert_eq!(ok, b"fine");
        let e = get(&http, &format!("https://127.0.0.1:{port}/to-http"), 100)
            .await
            .unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("refusing the redirect") && text.contains("http://127.0.0.1:9/ok"),
            "{text}"
        );
    }
}
