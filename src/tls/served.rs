//! The certificate a member serves on its peer or client port, as any client receives it: what
//! `doctor` checks another member's names and expiry on (that member's disk is out of reach).
//!
//! The handshake accepts whatever the server presents: a certificate that does not cover the
//! address it is served at is exactly what is looked for, and a normal verifier would end the
//! handshake before it could be read. Nothing is sent over the connection: it is closed right
//! after the handshake (the peer certificate is presented so that etcd, which requires a client
//! certificate, completes it; it is public anyway).

use super::inspect;
use super::ClientMaterial;
use crate::model::tls::CertFacts;
use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Keeps the end-entity certificate the server presented, and accepts it.
#[derive(Debug)]
struct Capture {
    seen: Mutex<Option<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().expect("poisoned") = Some(end_entity.as_ref().to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate served at `addr`, bounded by `limit` (connect and handshake together).
/// `material` is the client certificate to present (this node's peer certificate).
pub(crate) async fn fetch(
    addr: SocketAddr,
    material: &ClientMaterial,
    limit: Duration,
) -> Result<CertFacts> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(Capture {
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(material.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("the peer certificate is not PEM")?;
    let key = PrivateKeyDer::from_pem_slice(material.key_pem.as_bytes()).context("the peer key")?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_client_auth_cert(certs, key)
        .context("the peer certificate and key")?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let name = ServerName::IpAddress(addr.ip().into());
        // The server may still refuse us after presenting its certificate; what it presented
        // is all that is wanted.
        let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await;
        anyhow::Ok(())
    };
    match tokio::time::timeout(limit, handshake).await {
        Ok(r) => r?,
        Err(_) => bail!("{addr}: no TLS handshake within {limit:?}"),
    }
    let der = capture
        .seen
        .lock()
        .expect("poisoned")
        .take()
        .with_context(|| format!("{addr} presented no certificate"))?;
    inspect::facts_der(&der).map_err(|e| anyhow::anyhow!("the certificate {addr} serves: {e}"))
}
