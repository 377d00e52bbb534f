//! HTTPS downloads (the cfssl signer, pre-issued certificates, etcd release tarballs): rustls with
//! the ring provider, trusting `tls.signer_ca` when it is set and the system roots otherwise.

use crate::error::ConfigError;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;

/// An HTTP client trusting `ca` (a PEM file named by the config key `tls.signer_ca`) only, or the
/// system roots when `ca` is `None`.
pub fn client(ca: Option<&Path>, timeout: Duration) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5));
    if let Some(ca) = ca {
        let bad = |msg: String| ConfigError::new("tls.signer_ca", ca.display().to_string(), msg);
        let pem = std::fs::read(ca).map_err(|e| bad(format!("cannot read: {e}")))?;
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

/// GET `url` and return its body, refusing anything but a 2xx answer and bodies over `limit`.
pub async fn get(client: &reqwest::Client, url: &str, limit: usize) -> Result<Vec<u8>> {
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
