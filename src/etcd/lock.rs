//! The one cluster-wide lock of the agents: a key created under a lease in etcd, only if nobody
//! holds it (a transaction on its create revision). The lease is kept alive while the holder
//! works and revoked when it is done; a holder that dies releases the lock when its lease
//! expires (its TTL), so a lock is never held for ever. Used by the defrag job, the snapshot
//! claim, the delta claim and the rollout of a configuration change.

use super::client;
use crate::tls::ClientMaterial;
use anyhow::Result;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::time::Duration;

/// A held lock. Dropping it stops the keep-alive (the lease then expires); `release` revokes it
/// at once.
pub(crate) struct LeaseLock {
    client: Client,
    lease: i64,
    refresher: tokio::task::JoinHandle<()>,
}

/// Take `key` with the value `holder` under a lease of `ttl` seconds through `endpoints`, when
/// nobody holds it and every compare of `also` holds. `None`: someone else holds it (or a compare
/// failed). Every call is bounded by `client::PROBE_TIMEOUT`.
pub(crate) async fn try_lock(
    endpoints: &[String],
    material: &ClientMaterial,
    key: &str,
    holder: &str,
    ttl: i64,
    also: Vec<Compare>,
) -> Result<Option<LeaseLock>> {
    let mut c = client::connect(endpoints, material, client::PROBE_TIMEOUT).await?;
    let lease = client::bounded(
        "Lease.Grant",
        client::PROBE_TIMEOUT,
        c.lease_grant(ttl, None),
    )
    .await?
    .id();
    let mut when = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
    when.extend(also);
    let txn = Txn::new().when(when).and_then([TxnOp::put(
        key,
        holder,
        Some(PutOptions::new().with_lease(lease)),
    )]);
    let won = client::bounded("Txn", client::PROBE_TIMEOUT, c.txn(txn))
        .await?
        .succeeded();
    if !won {
        let _ = client::bounded("Lease.Revoke", client::PROBE_TIMEOUT, c.lease_revoke(lease)).await;
        return Ok(None);
    }
    let (mut keeper, mut responses) = client::bounded(
        "Lease.KeepAlive",
        client::PROBE_TIMEOUT,
        c.lease_keep_alive(lease),
    )
    .await?;
    let every = Duration::from_secs((ttl / 3).max(1) as u64);
    // Each answer is read: etcd answers a keep-alive with the lease's remaining TTL (0 once it
    // has expired), and unread answers would fill the stream's flow-control window until etcd
    // could answer (and so renew) no more. The refresher ends when the lease is gone.
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let kept = tokio::time::timeout(client::PROBE_TIMEOUT, async {
                keeper.keep_alive().await?;
                anyhow::Ok(responses.message().await?.is_some_and(|r| r.ttl() > 0))
            })
            .await;
            if !matches!(kept, Ok(Ok(true))) {
                return;
            }
        }
    });
    Ok(Some(LeaseLock {
        client: c,
        lease,
        refresher,
    }))
}

impl LeaseLock {
    /// The client the lock was taken with, for the holder's own calls.
    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Whether the lock is still this holder's: its keep-alive runs and etcd still has its
    /// lease (bounded). A holder that works for long (the delta uploader) asks before each
    /// piece of work, so that two agents never believe they hold it.
    pub(crate) async fn still_held(&mut self) -> bool {
        if self.refresher.is_finished() {
            return false;
        }
        let ttl = client::bounded(
            "Lease.TimeToLive",
            client::PROBE_TIMEOUT,
            self.client.lease_time_to_live(self.lease, None),
        )
        .await;
        matches!(ttl, Ok(r) if r.ttl() > 0)
    }

    /// Give the lock up now.
    pub(crate) async fn release(mut self) {
        self.refresher.abort();
        let _ = client::bounded(
            "Lease.Revoke",
            client::PROBE_TIMEOUT,
            self.client.lease_revoke(self.lease),
        )
        .await;
    }
}

impl Drop for LeaseLock {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}
