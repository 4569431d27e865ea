//! A fleet host's presence in etcd: `<prefix>/hosts/<hostName>` on a lease that the reaper
//! keeps alive, as a kubelet keeps its node Lease. Liveness is "renewed recently": a host that
//! stops (or is cut off) for longer than the lease's ttl loses its key without anyone deleting
//! it. Whoever lists `<prefix>/hosts/` sees the live hosts. Beside it, on no lease,
//! `<prefix>/hostinfo/<hostName>` keeps the host's last-known entry (`hosts.rs`), rewritten at
//! every renewal (and at once when safe mode changes), so that `reaper get hosts` shows a gone
//! host's last renewal.

use std::time::Duration;

use etcd_client::{Client, PutOptions, Txn, TxnOp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::hosts::ThisHost;
use crate::core::model::Timestamp;

/// A host that has not renewed for this long is gone.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// Renewals per ttl: a lost renewal or two does not lapse the lease.
const RENEWALS_PER_TTL: u32 = 3;
const RETRY: Duration = Duration::from_secs(1);
/// A rewrite of the host's entry gets this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The two keys of one host.
pub(super) struct HostKeys {
    /// On the lease: exists while the host is live.
    pub presence: String,
    /// On no lease: the last-known entry.
    pub info: String,
}

/// What the host key holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEntry {
    pub host_name: String,
    pub version: String,
    /// When this reaper started keeping the key, in Unix milliseconds.
    pub started_at: i64,
}

/// Keeps the presence key alive until `stop`: grants a lease, writes both keys, renews the
/// lease and rewrites the entry; grants a new one whenever it lapsed (after an outage) or the
/// renewals broke.
pub(super) async fn keep(client: Client, keys: HostKeys, this: ThisHost, stop: CancellationToken) {
    let entry = HostEntry {
        host_name: this.name.clone(),
        version: this.version.clone(),
        started_at: this.started_at.0,
    };
    let presence = match serde_json::to_vec(&entry) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "Cannot encode this host's entry; it will not be listed.");
            return;
        }
    };
    loop {
        let held = tokio::select! {
            () = stop.cancelled() => return,
            why = hold(client.clone(), &keys, &presence, &this) => why,
        };
        tracing::info!(key = %keys.presence, reason = %held, "This host's etcd lease ended; taking a new one.");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// This host's entry as of now, as JSON.
fn info_now(this: &ThisHost) -> Vec<u8> {
    serde_json::to_vec(&this.info(Timestamp::now())).unwrap_or_default()
}

/// One lease, held until it cannot be renewed; returns why.
async fn hold(mut client: Client, keys: &HostKeys, presence: &[u8], this: &ThisHost) -> String {
    let ttl = LEASE_TTL.as_secs() as i64;
    let lease = match client.lease_grant(ttl, None).await {
        Ok(l) => l.id(),
        Err(e) => return format!("grant: {e}"),
    };
    // Both at once: a live host always has its entry.
    let both = Txn::new().and_then([
        TxnOp::put(
            keys.presence.as_str(),
            presence.to_vec(),
            Some(PutOptions::new().with_lease(lease)),
        ),
        TxnOp::put(keys.info.as_str(), info_now(this), None),
    ]);
    if let Err(e) = client.txn(both).await {
        return format!("write: {e}");
    }
    let (mut keeper, mut answers) = match client.lease_keep_alive(lease).await {
        Ok(k) => k,
        Err(e) => return format!("keep-alive: {e}"),
    };
    let mut safe_mode = this.safe_mode.clone();
    let every = LEASE_TTL / RENEWALS_PER_TTL;
    loop {
        if let Err(e) = keeper.keep_alive().await {
            return format!("renew: {e}");
        }
        match tokio::time::timeout(every, answers.message()).await {
            Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
            Ok(Ok(Some(_))) => return "the lease lapsed".into(),
            Ok(Ok(None)) => return "the renewal stream ended".into(),
            Ok(Err(e)) => return format!("renew: {e}"),
            Err(_) => return format!("no renewal answer within {every:?}"),
        }
        // The lease stands on the renewal alone: a failed rewrite only leaves the entry older.
        let put = client.put(keys.info.as_str(), info_now(this), None);
        match tokio::time::timeout(WRITE_TIMEOUT, put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(key = %keys.info, error = %e, "Cannot rewrite this host's entry.")
            }
            Err(_) => {
                tracing::warn!(key = %keys.info, "Cannot rewrite this host's entry: no answer in time.")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = changed(&mut safe_mode) => {}
        }
    }
}

/// Resolves when safe mode changes; never, once nobody can change it.
async fn changed(safe_mode: &mut watch::Receiver<bool>) {
    if safe_mode.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
