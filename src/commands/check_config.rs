//! `etcd-bootstrap check-config`: everything about the configuration that can be checked
//! without the network, then the effective configuration as TOML that reads back to the same.
//! The key material is checked by the same code `run` and `plan` load it with
//! (`tls::check_offline`), so a config this passes is not refused by them for its keys.

use crate::config::Config;
use anyhow::Result;

pub(crate) async fn check_config(cfg: &Config) -> Result<()> {
    let unchecked = crate::tls::check_offline(cfg).await?;
    for w in cfg.warnings() {
        eprintln!("warning: {w}");
    }
    if cfg.files.is_empty() {
        println!("# no config file read; values from the environment and defaults");
    }
    for f in &cfg.files {
        println!("# read {}", f.display());
    }
    for u in unchecked {
        println!("# not checked offline: {u}");
    }
    print!("{}", cfg.to_toml());
    Ok(())
}
