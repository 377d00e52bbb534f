//! `etcd-bootstrap snapshot save|list|verify`.

use crate::backup::{self, catalog, store};
use crate::config::Config;
use crate::error::ConfigError;
use anyhow::Result;

fn open(cfg: &Config) -> Result<(store::Store, &crate::config::backup::BackupConfig)> {
    let b = cfg.backup.as_ref().ok_or_else(|| {
        ConfigError::new(
            "backup.url",
            "",
            "is not set: there is no snapshot store (s3://BUCKET/PREFIX or file:///PATH)",
        )
    })?;
    Ok((store::open(b, &cfg.cluster.name, &cfg.tls.dir)?, b))
}

/// Take one now, through the local member (or `endpoint`); prints the id.
pub(crate) async fn save(cfg: &Config, endpoint: Option<String>) -> Result<()> {
    let (store, b) = open(cfg)?;
    let m = crate::agent::snapshots::take_now(cfg, &store, &b.age_recipients, endpoint).await?;
    eprintln!(
        "stored {} in {} (revision {}, {} bytes{})",
        m.object,
        store.describe,
        m.revision,
        m.size,
        if m.encrypted { ", age-encrypted" } else { "" }
    );
    println!("{}", m.id);
    Ok(())
}

pub(crate) async fn list(cfg: &Config, json: bool) -> Result<()> {
    let (store, _) = open(cfg)?;
    let all = catalog::list(&store).await?;
    let mut chains = Vec::new();
    for e in &all.entries {
        chains.push(chain_of(&store, &e.manifest).await);
    }
    if json {
        // One array: the signed snapshots (newest first), then the untrusted objects.
        let mut rows: Vec<serde_json::Value> = Vec::new();
        for (e, chain) in all.entries.iter().zip(&chains) {
            let mut v = serde_json::to_value(e)?;
            v["trusted"] = true.into();
            v["chain"] = match chain {
                Ok(l) => serde_json::json!({
                    "segments": l.segments,
                    "events": l.chain_events,
                    "first_revision": e.manifest.revision,
                    "last_revision": l.next_revision - 1,
                    "from": e.manifest.created,
                    "to": l.newest_segment.as_deref().unwrap_or(&e.manifest.created),
                }),
                Err(why) => serde_json::json!({ "error": why }),
            };
            rows.push(v);
        }
        for u in &all.untrusted {
            let mut v = serde_json::to_value(u)?;
            v["trusted"] = false.into();
            rows.push(v);
        }
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<28} {:<26} {:>10} {:>12} {:<9} {:<8} {:<10} CHAIN",
        "ID", "CREATED", "REVISION", "SIZE", "ENCRYPTED", "VERIFIED", "SIGNED BY"
    );
    for (e, chain) in all.entries.iter().zip(&chains) {
        let m = &e.manifest;
        let chain = match chain {
            Ok(l) if l.segments == 0 => "no delta segments".to_string(),
            Ok(l) => format!(
                "{} segments, {} events, revisions {}-{}, up to {}",
                l.segments,
                l.chain_events,
                m.revision,
                l.next_revision - 1,
                l.newest_segment.as_deref().unwrap_or("?")
            ),
            Err(why) => format!("cannot read its delta segments: {why}"),
        };
        println!(
            "{:<28} {:<26} {:>10} {:>12} {:<9} {:<8} {:<10} {chain}",
            m.id, m.created, m.revision, m.size, m.encrypted, e.verified, m.taken_by
        );
    }
    for u in &all.untrusted {
        println!(
            "UNTRUSTED {}: {} (never used; whoever can write the store wrote it)",
            crate::util::text::printable(&u.object, 200),
            crate::util::text::printable(&u.why, 300)
        );
    }
    Ok(())
}

/// The delta chain that extends `base`, as far as the store's newest signed segment says
/// (bounded: a store that does not answer leaves the column with the reason).
async fn chain_of(
    store: &store::Store,
    base: &crate::backup::manifest::Manifest,
) -> std::result::Result<crate::backup::segment::Link, String> {
    match tokio::time::timeout(
        std::time::Duration::from_secs(30),
        crate::backup::segment::tail(store, base),
    )
    .await
    {
        Ok(Ok(l)) => Ok(l),
        Ok(Err(e)) => Err(crate::util::text::printable(&format!("{e:#}"), 300)),
        Err(_) => Err("the store did not answer within 30 s".into()),
    }
}

pub(crate) async fn verify(cfg: &Config, which: &str, json: bool) -> Result<()> {
    let (store, b) = open(cfg)?;
    let entry = catalog::find(&store, which).await?;
    let scratch = crate::util::fs::temp_scratch("etcd-bootstrap-verify")?;
    let report = backup::verify::verify_then_remove(
        &store,
        &entry,
        b.age_identity_file.as_deref(),
        &cfg.etcd.binary,
        &scratch,
    )
    .await?;
    // Then the chain of delta segments that extends it: every link, hash and revision.
    let chain =
        backup::segment::verify_chain(&store, &entry.manifest, b.age_identity_file.as_deref())
            .await
            .map_err(|brk| {
                anyhow::anyhow!(
                    "{}: the snapshot is good, but its chain of delta segments breaks at {}: {}",
                    report.id,
                    crate::util::text::printable(&brk.object, 200),
                    brk.why
                )
            })?;
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["chain"] = serde_json::to_value(&chain)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: ok: hashes match, restored with {}: revision {}, {} keys (all revisions)",
            report.id, report.restored_with, report.revision, report.total_keys
        );
        println!(
            "{}: chain ok: {} delta segments, {} events, revisions {}-{}",
            chain.base, chain.segments, chain.events, chain.first_revision, chain.last_revision
        );
    }
    Ok(())
}
