//! `tls.mode = "cfssl"`: the node makes its key and a CSR and asks a cfssl signer (`cfssl serve`,
//! the API of cfssl 1.6.5) to sign it. The private key never leaves the node; the CA key is never
//! on it. With `tls.cfssl_auth_key_file` the request goes to `/api/v1/cfssl/authsign`, signed with
//! HMAC-SHA256 under the shared key (hex, as in cfssl's `auth_keys`); without, to `/sign`.

use super::{CertKind, Signer};
use crate::config::TlsConfig;
use crate::error::ConfigError;
use anyhow::{bail, Context, Result};
use base64::Engine;
use futures::future::BoxFuture;
use rcgen::{CertificateParams, KeyPair, SanType};
use serde::Deserialize;
use std::time::Duration;

pub(crate) struct Cfssl {
    url: String,
    http: reqwest::Client,
    auth_key: Option<Vec<u8>>,
    profile: Option<String>,
    profiles: std::collections::BTreeMap<String, String>,
    ca_pem: String,
}

#[derive(Debug, Deserialize)]
struct CfsslAnswer {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    errors: Vec<ApiError>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    if t.is_empty() || !t.len().is_multiple_of(2) {
        return None;
    }
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(t.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Cfssl {
    pub(crate) async fn connect(tls: &TlsConfig) -> Result<Cfssl> {
        let url = tls
            .cfssl_url
            .clone()
            .context("tls.cfssl_url is not set")?
            .trim_end_matches('/')
            .to_string();
        let http = crate::util::http::client(tls.signer_ca.as_deref(), Duration::from_secs(15))?;
        let auth_key = match &tls.cfssl_auth_key_file {
            None => None,
            Some(p) => {
                let text = crate::util::fs::read_pem(p).map_err(|e| {
                    ConfigError::new(
                        "tls.cfssl_auth_key_file",
                        p.display().to_string(),
                        format!("cannot read: {e}"),
                    )
                })?;
                Some(decode_hex(&text).ok_or_else(|| {
                    ConfigError::new(
                        "tls.cfssl_auth_key_file",
                        p.display().to_string(),
                        "must hold the shared key in hex, as in cfssl's auth_keys",
                    )
                })?)
            }
        };
        let mut me = Cfssl {
            url,
            http,
            auth_key,
            profile: tls.cfssl_profile.clone(),
            profiles: tls.cfssl_profiles.clone(),
            ca_pem: String::new(),
        };
        let body =
            serde_json::json!({"label": "", "profile": me.profile.clone().unwrap_or_default()});
        let result = me.call("info", &body).await?;
        me.ca_pem = result
            .get("certificate")
            .and_then(|c| c.as_str())
            .map(|s| format!("{}\n", s.trim_end()))
            .with_context(|| {
                format!("the signer at {} sent no CA certificate from /info", me.url)
            })?;
        Ok(me)
    }

    async fn call(&self, endpoint: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let url = format!("{}/api/v1/cfssl/{endpoint}", self.url);
        let resp = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the signer at {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of the signer at {url}"))?;
        let answer: CfsslAnswer = serde_json::from_str(&text).with_context(|| {
            format!("the signer at {url} answered HTTP {status} with something that is not cfssl's JSON: {}", text.chars().take(200).collect::<String>())
        })?;
        if !answer.success || !status.is_success() {
            let msgs: Vec<String> = answer
                .errors
                .iter()
                .map(|e| format!("{} (code {})", e.message, e.code))
                .collect();
            bail!(
                "the signer at {url} refused the request (HTTP {status}): {}",
                msgs.join("; ")
            );
        }
        answer
            .result
            .with_context(|| format!("the signer at {url} answered without a result"))
    }
}

impl Signer for Cfssl {
    fn describe(&self) -> String {
        format!("the cfssl signer at {}", self.url)
    }

    fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    fn sign<'a>(
        &'a self,
        kind: CertKind,
        params: &'a CertificateParams,
        key: &'a KeyPair,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            // The signer picks the serial number and the authority key identifier; a CSR
            // cannot carry them.
            let mut request_params = params.clone();
            request_params.serial_number = None;
            request_params.use_authority_key_identifier_extension = false;
            let csr = request_params
                .serialize_request(key)
                .context("making the certificate request")?
                .pem()
                .context("encoding the certificate request")?;
            let hosts: Vec<String> = params
                .subject_alt_names
                .iter()
                .filter_map(|s| match s {
                    SanType::DnsName(n) => Some(n.as_str().to_string()),
                    SanType::IpAddress(ip) => Some(ip.to_string()),
                    _ => None,
                })
                .collect();
            let mut request = serde_json::json!({"certificate_request": csr, "hosts": hosts});
            if let Some(p) = self
                .profiles
                .get(kind.profile_name())
                .or(self.profile.as_ref())
            {
                request["profile"] = serde_json::Value::String(p.clone());
            }
            let result = match &self.auth_key {
                Some(key) => {
                    let bytes = serde_json::to_vec(&request)?;
                    let tag = ring::hmac::sign(
                        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
                        &bytes,
                    );
                    let b64 = base64::engine::general_purpose::STANDARD;
                    let body = serde_json::json!({
                        "token": b64.encode(tag.as_ref()),
                        "request": b64.encode(&bytes),
                    });
                    self.call("authsign", &body).await?
                }
                None => self.call("sign", &request).await?,
            };
            result
                .get("certificate")
                .and_then(|c| c.as_str())
                .map(|s| format!("{}\n", s.trim_end()))
                .with_context(|| format!("the signer at {} sent no certificate", self.url))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys() {
        assert_eq!(decode_hex("00ff10\n"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0g"), None);
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex(""), None);
    }
}
