//! The files etcd-bootstrap rewrites on every start (`etcd.env_file`, `etcd.unit_path`,
//! `etcd.manifest_path`) against every file the configuration reads or writes: a check across
//! sections, made once all of them are validated.

use super::{Config, Validator, PINNABLE};
use crate::error::ConfigError;
use std::path::{Path, PathBuf};

/// `path` as the file it names: symlinks in its existing part resolved, so that two spellings of
/// one file compare equal.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// `etcd.env_file` and `etcd.unit_path` are rewritten on every start: neither may be a file the
/// configuration reads (a config file, a certificate, a key, the etcd binary), a file written in
/// `tls.dir`, or the other one.
pub(super) fn check_written_files(v: &Validator<'_>, cfg: &Config) -> Result<(), ConfigError> {
    let mut inputs: Vec<(String, PathBuf)> = cfg
        .files
        .iter()
        .map(|f| (format!("the config file {}", f.display()), f.clone()))
        .collect();
    let t = &cfg.tls;
    for (key, p) in [
        ("tls.ca_cert", &t.ca_cert),
        ("tls.ca_key", &t.ca_key),
        ("tls.cfssl_auth_key_file", &t.cfssl_auth_key_file),
        ("tls.signer_ca", &t.signer_ca),
    ] {
        if let Some(p) = p {
            inputs.push((key.to_string(), p.clone()));
        }
    }
    if let Some(s) = &t.sources {
        for (key, location) in [
            ("tls.ca_cert", Some(&s.ca)),
            ("tls.server_cert", Some(&s.server_cert)),
            ("tls.server_key", Some(&s.server_key)),
            ("tls.peer_cert", Some(&s.peer_cert)),
            ("tls.peer_key", Some(&s.peer_key)),
            ("tls.client_cert", Some(&s.client_cert)),
            ("tls.client_key", Some(&s.client_key)),
            (
                "tls.apiserver_client_cert",
                s.apiserver_client_cert.as_ref(),
            ),
            ("tls.apiserver_client_key", s.apiserver_client_key.as_ref()),
        ] {
            if let Some(l) = location.filter(|l| !l.starts_with("https://")) {
                inputs.push((key.to_string(), PathBuf::from(l)));
            }
        }
    }
    for dir_key in ["tls.dir", "tls.apiserver_client_dir"] {
        let dir = if dir_key == "tls.dir" {
            &t.dir
        } else {
            &t.apiserver_client_dir
        };
        for name in PINNABLE {
            inputs.push((format!("{name} in {dir_key}"), dir.join(name)));
        }
    }
    if let Some(b) = &cfg.backup {
        for (key, p) in [
            ("backup.s3_credentials_file", &b.s3_credentials_file),
            ("backup.ca_file", &b.ca_file),
            ("backup.age_identity_file", &b.age_identity_file),
        ] {
            if let Some(p) = p {
                inputs.push((key.to_string(), p.clone()));
            }
        }
    }
    inputs.push(("etcd.binary".to_string(), cfg.etcd.binary.clone()));
    let written = [
        ("etcd.env_file", &cfg.etcd.env_file),
        ("etcd.unit_path", &cfg.etcd.unit_path),
        ("etcd.manifest_path", &cfg.etcd.manifest_path),
    ];
    for (i, (key, path)) in written.iter().enumerate() {
        let target = resolved(path);
        let others = written[i + 1..]
            .iter()
            .map(|(k, p)| (k.to_string(), p.to_path_buf()));
        for (what, input) in inputs.iter().cloned().chain(others) {
            if resolved(&input) == target {
                return Err(v.err(
                    key,
                    format!(
                        "{} is also {what}: etcd-bootstrap rewrites {key} on every start and would overwrite it; give {key} a path of its own",
                        path.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}
