//! The fleet's hosts as an operator sees them: each one's last-known entry (version, start,
//! last renewal, safe mode), and whether its presence lease is live (`ready`) or lapsed
//! (`gone`). A backend lists what it keeps ([`RecordStore::hosts`]: etcd keeps an unleased
//! `<prefix>/hostinfo/<hostName>` beside each presence key, so a gone host stays listed until
//! `reaper delete host` forgets it); [`ThisHost`] adds the running daemon, so that a store that
//! knows no fleet (sled) lists this one host, ready.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{RecordStore, Store, StoreError};
use crate::core::model::Timestamp;

/// What a host last wrote about itself: `<prefix>/hostinfo/<hostName>`, rewritten at every
/// renewal of its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostInfo {
    pub host_name: String,
    pub version: String,
    /// When this reaper started keeping its presence.
    pub started_at: Timestamp,
    /// Its last renewal (for a gone host: the last one before its lease lapsed).
    pub renewed_at: Timestamp,
    /// Whether it was in safe mode (deleting nothing) at that renewal.
    pub safe_mode: bool,
}

/// A host of the fleet: its last-known entry, and whether its presence lease is live.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownHost {
    pub info: HostInfo,
    pub ready: bool,
}

/// What `forget_host` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    /// The gone host's entry is deleted: it is no longer listed.
    Forgotten,
    /// Its lease is live: a ready host is not forgotten (it would only write itself again).
    Ready,
    /// No host of that name is listed.
    Unknown,
}

/// The running daemon as a host of the fleet: what it lists for itself, and what its presence
/// keeper writes (etcd). Safe mode follows the controller through `safe_mode`.
#[derive(Debug, Clone)]
pub struct ThisHost {
    pub name: String,
    pub version: String,
    pub started_at: Timestamp,
    pub safe_mode: watch::Receiver<bool>,
}

impl ThisHost {
    /// This daemon, started now, with safe mode as `safe_mode` tells.
    pub fn new(name: &str, safe_mode: watch::Receiver<bool>) -> ThisHost {
        ThisHost {
            name: name.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: Timestamp::now(),
            safe_mode,
        }
    }

    /// Its entry as of `now`.
    pub fn info(&self, now: Timestamp) -> HostInfo {
        HostInfo {
            host_name: self.name.clone(),
            version: self.version.clone(),
            started_at: self.started_at,
            renewed_at: now,
            safe_mode: *self.safe_mode.borrow(),
        }
    }

    /// The backend's hosts, with this one added (ready) if the backend does not list it: a
    /// store that knows no fleet, or an etcd whose first renewal is not written yet.
    pub fn hosts_with_me(
        &self,
        backend: &dyn RecordStore,
        now: Timestamp,
    ) -> Result<Vec<KnownHost>, StoreError> {
        let mut hosts = backend.hosts()?;
        if !hosts.iter().any(|h| h.info.host_name == self.name) {
            hosts.push(KnownHost {
                info: self.info(now),
                ready: true,
            });
            hosts.sort_by(|a, b| a.info.host_name.cmp(&b.info.host_name));
        }
        Ok(hosts)
    }
}

impl Store {
    /// This handle, serving the daemon `this`: it lists itself among the hosts.
    pub fn on_host(mut self, this: ThisHost) -> Store {
        self.this_host = Some(Arc::new(this));
        self
    }

    /// Every host of the fleet, sorted by name, this daemon's included (see [`ThisHost`]).
    pub fn hosts(&self, now: Timestamp) -> Result<Vec<KnownHost>, StoreError> {
        match &self.this_host {
            Some(me) => me.hosts_with_me(self.backend(), now),
            None => self.backend().hosts(),
        }
    }

    /// Forgets a gone host (see [`RecordStore::forget_host`]); this daemon's own host is ready.
    pub async fn forget_host(&self, name: &str) -> Result<Forget, StoreError> {
        if self.this_host.as_ref().is_some_and(|me| me.name == name) {
            return Ok(Forget::Ready);
        }
        self.backend().forget_host(name).await
    }
}

/// A host name: what DNS allows in a label path, so that it is safe in an etcd key. The
/// config's `hostName` and the names given to `get hosts` / `delete host` are checked alike.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid host name {name:?}: 1 to 253 letters, digits, '-', '.' or '_'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[test]
    fn a_store_that_knows_no_fleet_lists_this_host_ready() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        let (tx, rx) = watch::channel(false);
        let me = ThisHost::new("gpu-07", rx);
        let now = Timestamp(1_800_000_000_000);
        let hosts = me.hosts_with_me(&sled, now).unwrap();
        assert_eq!(hosts.len(), 1);
        assert!(hosts[0].ready);
        assert_eq!(hosts[0].info.host_name, "gpu-07");
        assert_eq!(hosts[0].info.renewed_at, now);
        assert!(!hosts[0].info.safe_mode);
        tx.send_replace(true);
        assert!(me.hosts_with_me(&sled, now).unwrap()[0].info.safe_mode);
    }

    #[test]
    fn host_names_are_checked_with_a_reason() {
        assert!(check_host_name("gpu-07.lab_1").is_ok());
        for bad in ["", "a/b", "a b", "../x", &"x".repeat(254)] {
            let e = check_host_name(bad).unwrap_err();
            assert!(e.contains("invalid host name"), "{e}");
        }
    }
}
