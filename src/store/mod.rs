//! The record store: Session and Agent records with their status, behind a small trait
//! ([`RecordStore`]) so that another backend (a fleet's etcd) can sit where sled sits today
//! (`sled.rs`). Everyone else uses [`Store`], whose helpers (apply, update, remove, export, …)
//! are written once, on top of the trait (`records.rs`).
//!
//! Guarantees every backend gives; the conformance suite (`tests/store.rs`) checks each one:
//! - Every write is atomic (a batch is all or nothing) and durable before it returns, because a
//!   write such as "this session ended" gates deletions.
//! - Every record write carries the revision the record was read at (compare-and-swap). A
//!   stale one is refused with [`StoreError::Stale`] and nothing of its batch is written; the
//!   helpers then read again and retry, so a last writer never silently wins.
//! - Reads fail closed: a record that does not decode is a [`StoreError::Corrupt`], never
//!   skipped, so a damaged store cannot look like "no owners" and get every object reaped.
//! - Opening never panics on damaged files; it returns `Corrupt` or `Io` so the daemon can enter
//!   safe mode.
//! - The change stream ([`RecordStore::subscribe`]) moves after every committed change (and
//!   whenever what was read before may no longer hold), never for a write that changed nothing.
//!   It is how the controller learns of changes: writers never poke it.
//! - First sightings of Docker objects ([`RecordStore::sightings`]) are kept beside the
//!   records, so that an orphan's grace period survives a restart. Images' last uses (disk
//!   pressure's LRU order) ride on the same mechanism, under `last-use/` keys (see
//!   `controller/disk.rs`). They are not records: no
//!   revisions, not exported, durable only with the next flush, and writing them never moves
//!   the change stream. The first time written for a key is kept until the key is forgotten.
//! - Reads answer from what the backend holds locally (sled's pages; etcd's watch-fed cache,
//!   as kube's reflector does) and never wait; writes are async because they wait for the
//!   disk, or a quorum. [`RecordStore::sync`] makes the local reads current before a pass
//!   that decides deletions.
//!
//! What sled adds (lazy open and reopen, disk-full recovery, the marker file, the on-disk
//! layout) is described in `sled.rs`; what etcd adds (the key layout, transactions on
//! `mod_revision`, the watch-fed cache and when it is in doubt) in `etcd.rs`.

mod codec;
pub mod etcd;
pub mod host_lease;
pub mod hosts;
pub mod lock;
mod records;
pub mod sled;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

use crate::core::model::{OwnerKind, OwnerRef, Record, Timestamp};

pub use self::etcd::{EtcdSettings, EtcdStore, EtcdTls};
pub use self::sled::SledStore;
pub use records::{
    source_conflict, ApplyAction, ApplyOutcome, CommonStatus, Store, WriteLog, API_SOURCE,
};

/// Names one committed state of a record. A write gives every record it puts a revision never
/// given out before in that store, so a record deleted and created again does not look
/// unchanged to someone who read the old one.
pub type Revision = u64;

/// A record with the revision it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<R> {
    pub record: R,
    pub revision: Revision,
}

/// One step of a batch given to [`RecordStore::commit`]. Each names the revision its record
/// was read at (`None`: it did not exist); a record no longer there makes the batch `Stale`.
// Most steps are puts: boxing their record would cost an allocation each to shrink the rest.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Creates or replaces a record.
    Put {
        record: Record,
        expect: Option<Revision>,
    },
    /// Removes a record.
    Delete { owner: OwnerRef, expect: Revision },
    /// Writes nothing: the batch was decided on this record as read, and holds only if it
    /// still is (kubectl's "unchanged" in an all-or-nothing apply).
    Check {
        owner: OwnerRef,
        expect: Option<Revision>,
    },
}

impl Write {
    pub fn owner(&self) -> OwnerRef {
        match self {
            Write::Put { record, .. } => record.owner(),
            Write::Delete { owner, .. } | Write::Check { owner, .. } => owner.clone(),
        }
    }

    /// The revision the record must still be at.
    pub fn expect(&self) -> Option<Revision> {
        match self {
            Write::Put { expect, .. } | Write::Check { expect, .. } => *expect,
            Write::Delete { expect, .. } => Some(*expect),
        }
    }

    /// Whether it changes anything when it succeeds.
    pub fn changes(&self) -> bool {
        !matches!(self, Write::Check { .. })
    }
}

/// What a write returns: boxed, so that the controller and the API can hold any backend as
/// `dyn RecordStore`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A backend: where records live. Small on purpose; see the module documentation for what
/// every implementation guarantees.
pub trait RecordStore: Send + Sync + 'static {
    /// The backend's name (`sled`, `etcd`): the `backend` label of `reaper_store_up`.
    fn backend(&self) -> &'static str;

    /// One record, `None` if there is none by that name.
    fn get(&self, kind: OwnerKind, name: &str) -> Result<Option<Versioned<Record>>, StoreError>;

    /// Every record of a kind, sorted by name. One undecodable record fails the whole read.
    fn list(&self, kind: OwnerKind) -> Result<Vec<Versioned<Record>>, StoreError>;

    /// Writes a batch all or nothing, durably, if every record in it is still at the
    /// revision its step names; otherwise returns `Stale` and writes nothing. A batch naming
    /// one record twice is `Invalid`. A batch of checks only writes nothing, but still returns
    /// only once every earlier write is durable.
    ///
    /// Returns the value the change stream moved to for this write (`None` if it changed
    /// nothing), so that a writer can tell its own changes from everyone else's.
    fn commit(&self, batch: Vec<Write>) -> StoreFuture<'_, Option<u64>>;

    /// Restores records verbatim, status included, whatever is stored under their names
    /// (readable or not), all or nothing, durably. The one write that names no revision: it is
    /// for `reaper store import`, which puts back what an export saved. Returns how many.
    fn import(&self, records: Vec<Record>) -> StoreFuture<'_, usize>;

    /// Makes every write so far durable. (Every write already does this before it returns.)
    fn flush(&self) -> StoreFuture<'_, ()>;

    /// Makes the local reads current: once it returns `Ok`, `get`, `list` and `sightings`
    /// reflect every write committed (by anyone) before it was called. The controller calls
    /// it before each pass, whose reads decide deletions. Nothing to do for a local store
    /// (sled); a remote one makes a linearizable read (etcd).
    fn sync(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// A receiver whose value increases after every committed change, and whenever what was
    /// read before may no longer hold (sled: after the store was reopened).
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// The current value `subscribe` would show: equal values mean no change in between.
    fn generation(&self) -> u64;

    /// `Ok` when the store can be read now; otherwise why not (the reason for safe mode).
    fn health(&self) -> Result<(), StoreError>;

    /// When reaper first saw each Docker object it keeps a time for, by sighting key
    /// (`DockerObject::sighting_key`). One undecodable entry fails the whole read.
    fn sightings(&self) -> Result<BTreeMap<String, Timestamp>, StoreError>;

    /// Adds first sightings and forgets others, all or nothing. A key already there keeps its
    /// time (the first sighting wins); forgetting a key that is not there is no error. Never
    /// moves the change stream: sightings are not records. Durable with the next flush (any
    /// record write, or [`RecordStore::flush`]), not before it returns: one is written in
    /// every pass that sees a new object, and one lost in a crash only starts a grace later.
    fn note_sightings(
        &self,
        seen: BTreeMap<String, Timestamp>,
        forget: Vec<String>,
    ) -> StoreFuture<'_, ()>;

    /// The names of the fleet's hosts whose presence is live now, as of the last `sync` or
    /// watch event. A local store (sled) knows of no other host: the empty set, and the caller
    /// counts itself. A change to this set moves the change stream.
    fn live_hosts(&self) -> Result<BTreeSet<String>, StoreError> {
        Ok(BTreeSet::new())
    }

    /// Every host the store knows of, sorted by name: ready while its presence is live, gone
    /// once it lapsed (until [`RecordStore::forget_host`]). A local store (sled) knows of none:
    /// the daemon adds itself ([`hosts::ThisHost`]). Never moves the change stream.
    fn hosts(&self) -> Result<Vec<hosts::KnownHost>, StoreError> {
        Ok(Vec::new())
    }

    /// Forgets a gone host's last-known entry, in one step that holds only while its presence
    /// is not live (a ready host is refused, whoever renews meanwhile).
    fn forget_host(&self, _name: &str) -> StoreFuture<'_, hosts::Forget> {
        Box::pin(async { Ok(hosts::Forget::Unknown) })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The store's files or a record in it cannot be decoded: the controller enters safe mode.
    #[error("store is corrupted: {0}")]
    Corrupt(String),
    /// The store cannot be read or written (including a full disk).
    #[error("store I/O error: {0}")]
    Io(String),
    #[error("{}/{name} not found", kind.as_str())]
    NotFound { kind: OwnerKind, name: String },
    /// The record belongs to another source, or is being deleted.
    #[error("{0}")]
    Conflict(String),
    /// A write named a revision the record is no longer at: someone wrote it meanwhile.
    /// The helpers read again and retry; callers of [`Store`] do not see it.
    #[error("{}/{name} changed since it was read; read it again", kind.as_str())]
    Stale { kind: OwnerKind, name: String },
    /// The operation is not allowed in the record's state, or the input is inconsistent.
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// True when the store cannot be trusted: the controller must delete nothing.
    pub fn is_corruption(&self) -> bool {
        matches!(self, StoreError::Corrupt(_))
    }

    /// A bounded label for metrics and API error codes.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Io(_) => "io",
            StoreError::NotFound { .. } => "not_found",
            StoreError::Conflict(_) => "conflict",
            StoreError::Stale { .. } => "stale",
            StoreError::Invalid(_) => "invalid",
        }
    }

    pub(crate) fn stale(owner: &OwnerRef) -> StoreError {
        StoreError::Stale {
            kind: owner.kind,
            name: owner.name.to_string(),
        }
    }
}

/// Refuses a batch that names one record twice: its steps could not all hold.
pub(crate) fn reject_duplicates(
    owners: impl IntoIterator<Item = OwnerRef>,
) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    for owner in owners {
        if seen.contains(&owner) {
            return Err(StoreError::Invalid(format!(
                "{owner} appears twice in one batch"
            )));
        }
        seen.insert(owner);
    }
    Ok(())
}
