//! A fleet host's presence in etcd: `<prefix>/hosts/<hostName>` on a lease that the reaper
//! keeps alive, as a kubelet keeps its node Lease. Liveness is "renewed recently": a host that
//! stops (or is cut off) for longer than the lease's ttl loses its key without anyone deleting
//! it. Whoever lists `<prefix>/hosts/` sees the live hosts. (Reading them, `reaper get hosts`,
//! is not built yet.)

use std::time::Duration;

use etcd_client::{Client, PutOptions};
use tokio_util::sync::CancellationToken;

/// A host that has not renewed for this long is gone.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// Renewals per ttl: a lost renewal or two does not lapse the lease.
const RENEWALS_PER_TTL: u32 = 3;
const RETRY: Duration = Duration::from_secs(1);

/// What the host key holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostEntry {
    pub host_name: String,
    pub version: String,
    /// When this reaper started keeping the key, in Unix milliseconds.
    pub started_at: i64,
}

/// Keeps `key` alive until `stop`: grants a lease, writes the key on it, renews it; grants a
/// new one whenever it lapsed (after an outage) or the renewals broke.
pub(super) async fn keep(client: Client, key: String, entry: HostEntry, stop: CancellationToken) {
    let value = match serde_json::to_vec(&entry) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "Cannot encode this host's entry; it will not be listed.");
            return;
        }
    };
    loop {
        let held = tokio::select! {
            () = stop.cancelled() => return,
            why = hold(client.clone(), &key, &value) => why,
        };
        tracing::info!(key = %key, reason = %held, "This host's etcd lease ended; taking a new one.");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// One lease, held until it cannot be renewed; returns why.
async fn hold(mut client: Client, key: &str, value: &[u8]) -> String {
    let ttl = LEASE_TTL.as_secs() as i64;
    let lease = match client.lease_grant(ttl, None).await {
        Ok(l) => l.id(),
        Err(e) => return format!("grant: {e}"),
    };
    let put = client
        .put(
            key,
            value.to_vec(),
            Some(PutOptions::new().with_lease(lease)),
        )
        .await;
    if let Err(e) = put {
        return format!("write: {e}");
    }
    let (mut keeper, mut answers) = match client.lease_keep_alive(lease).await {
        Ok(k) => k,
        Err(e) => return format!("keep-alive: {e}"),
    };
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
        tokio::time::sleep(every).await;
    }
}
