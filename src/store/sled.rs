//! Over 500 lines: 650 of code (transactions, revisions, schema migration, and errors that name the data dir) and its tests.
//!
//! The sled backend: records in an embedded sled database in the data directory.
//!
//! What it adds to the guarantees of every backend (see the parent module):
//! - sled is durable only after a flush, so every write waits for one. Group commit: writes
//!   wait for one flush at a time, and a flush covers every write committed before it.
//! - Compare-and-swap under its lock: a commit checks every revision and writes, in one sled
//!   transaction, while holding the process's write gate.
//! - It opens lazily and reopens by itself. A store that cannot be opened at start (damaged,
//!   locked, unreadable) is tried again on every call ([`SledStore::open_or_retry`]), so an
//!   operator who repairs or restores the data dir gets reaper out of safe mode without a
//!   restart. After a storage error (a full disk, say) sled refuses every later operation,
//!   reads included, until it is reopened; the store therefore drops its sled handles on such
//!   an error and reopens them on the next call, so it recovers once the cause is gone. Until
//!   then each call returns the error that stopped the open. Either kind of open moves the
//!   change stream: what is on disk may differ from what was read before.
//! - Every record is decoded when the store opens, so a damaged store is found at startup
//!   (safe mode) rather than in the middle of a reconcile.
//!
//! Layout: the `records` tree holds each record under `session/<name>` or `agent/<name>`, as
//! its revision (8 bytes, big-endian, so a commit compares it without decoding the record)
//! followed by the record's JSON; the default tree holds the schema version and the last
//! revision given out. A marker file next to the sled files records that the store was
//! initialised, so sled files truncated back to "empty" are detected as corruption instead of
//! silently starting a blank store. Schema 1 kept the bare record; `open` migrates it. The
//! `sightings` tree maps a Docker object's sighting key to the instant reaper first saw it
//! (milliseconds, 8 bytes big-endian); a reaper that does not know the tree ignores it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, PoisonError, RwLock};

use ::sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};
use tokio::sync::watch;

use super::{
    codec, reject_duplicates, RecordStore, Revision, StoreError, StoreFuture, Versioned, Write,
};
use crate::core::model::{OwnerKind, Record, Timestamp};

/// Version of the on-disk encoding; bump it (and migrate in `open`) when the format changes.
pub const SCHEMA_VERSION: u32 = 2;

const SCHEMA_KEY: &[u8] = b"reaper.schema";
/// The last revision given to a write, as 8 big-endian bytes.
const REVISION_KEY: &[u8] = b"reaper.revision";
const REVISION_BYTES: usize = 8;
const RECORDS_TREE: &[u8] = b"records";
const SIGHTINGS_TREE: &[u8] = b"sightings";
/// Written once the store is initialised; its presence with a schema-less sled store means the
/// sled files were damaged or replaced.
const MARKER_FILE: &str = "reaper-store";
const RESTORE_HINT: &str =
    "reaper deletes nothing until this is fixed: restore the records with `reaper store import`, \
     or move the directory away to start empty";
/// sled keeps pages it reads in this cache; the default (1 GiB) is far above what reaper needs.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The sled-backed store. Every method takes `&self`.
pub struct SledStore {
    dir: PathBuf,
    state: RwLock<State>,
    /// Serialises writers inside this process. sled transactions are serializable on their own;
    /// the gate makes compare-and-swap correctness independent of that, and costs little
    /// because it is only held for the in-memory part of a write, never across a flush.
    write_gate: tokio::sync::Mutex<()>,
    /// One sled flush at a time. Concurrent `flush_async` calls in sled 0.34 can occupy every
    /// thread of its I/O pool waiting for a write queued on that same pool: a deadlock seen
    /// here with 50 concurrent updates. Waiters whose write a finished flush covered skip theirs.
    flush_lock: tokio::sync::Mutex<()>,
    changes: watch::Sender<u64>,
}

enum State {
    Open(Arc<Handles>),
    /// Could not be opened yet; the next call tries again.
    Unopened,
    /// A storage error broke the handles; the next call tries to reopen.
    Broken,
}

struct Handles {
    db: ::sled::Db,
    records: ::sled::Tree,
    sightings: ::sled::Tree,
    /// Writes committed to this instance so far, and how many of them a flush has covered.
    committed: AtomicU64,
    durable: AtomicU64,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir` and checks that every record decodes.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let handles = Handles::open(dir)?;
        Ok(SledStore::with_state(dir, State::Open(Arc::new(handles))))
    }

    /// Opens the store in `dir` if it can now; if not, returns it unopened with the reason,
    /// and every call tries again. This is how the daemon opens it: an unusable store means
    /// safe mode, not exit.
    pub fn open_or_retry(dir: &Path) -> (SledStore, Option<StoreError>) {
        match Handles::open(dir) {
            Ok(h) => (SledStore::with_state(dir, State::Open(Arc::new(h))), None),
            Err(e) => (SledStore::with_state(dir, State::Unopened), Some(e)),
        }
    }

    fn with_state(dir: &Path, state: State) -> SledStore {
        let (changes, _) = watch::channel(0);
        SledStore {
            dir: dir.to_path_buf(),
            state: RwLock::new(state),
            write_gate: tokio::sync::Mutex::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            changes,
        }
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One all-or-nothing sled transaction, flushed. With `compare`, every step's revision is
    /// checked first (a commit); without, the steps are written whatever is there (an import).
    /// Returns the change-stream value the write moved it to, if it changed anything.
    async fn write(
        &self,
        steps: Vec<Write>,
        compare: bool,
        what: &str,
    ) -> Result<Option<u64>, StoreError> {
        reject_duplicates(steps.iter().map(Write::owner))?;
        let changes = steps.iter().any(Write::changes);
        let h = self.handles()?;
        let target = {
            let _gate = self.write_gate.lock().await;
            (&h.records, &*h.db)
                .transaction(|(records, meta)| {
                    let revision = if changes { next_revision(meta)? } else { 0 };
                    for step in &steps {
                        let owner = step.owner();
                        let k = key(owner.kind, owner.name.as_str());
                        if compare {
                            let found = match records.get(&k)? {
                                Some(raw) => Some(split(&k, &raw).map_err(abort)?.0),
                                None => None,
                            };
                            if found != step.expect() {
                                return Err(abort(StoreError::stale(&owner)));
                            }
                        }
                        match step {
                            Write::Put { record, .. } => {
                                records.insert(k, encode(record, revision).map_err(abort)?)?;
                            }
                            Write::Delete { .. } => {
                                records.remove(k)?;
                            }
                            Write::Check { .. } => {}
                        }
                    }
                    Ok(())
                })
                .map_err(|e| self.tx_error(&h, e, what))?;
            h.note_commit(changes)
        };
        // Waits for durability even when nothing changed: a retry after a failed flush must
        // not report success for a write that never reached the disk.
        self.flush_to(&h, target).await?;
        Ok(changes.then(|| self.bump()))
    }

    /// Returns once the first `target` writes to `h` are on disk: group commit, one flush at
    /// a time (see `flush_lock`).
    async fn flush_to(&self, h: &Arc<Handles>, target: u64) -> Result<(), StoreError> {
        if h.durable.load(SeqCst) >= target {
            return Ok(());
        }
        let _one_flush = self.flush_lock.lock().await;
        if h.durable.load(SeqCst) >= target {
            return Ok(());
        }
        // Every write counted here is already in sled's log, so this flush covers it.
        let upto = h.committed.load(SeqCst);
        match h.db.flush_async().await {
            Ok(_) => {
                h.durable.fetch_max(upto, SeqCst);
                Ok(())
            }
            Err(e) => Err(self.storage_error(h, e, "flush the store to disk")),
        }
    }

    /// The open sled handles, opening them first if they are not (yet, or any more).
    fn handles(&self) -> Result<Arc<Handles>, StoreError> {
        if let State::Open(h) = &*self.state.read().unwrap_or_else(PoisonError::into_inner) {
            return Ok(h.clone());
        }
        self.reopen()
    }

    /// Writers need no gate here: a new instance can only open once every call holding the
    /// old one has returned, because sled keeps the directory locked until then.
    fn reopen(&self) -> Result<Arc<Handles>, StoreError> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let was_broken = match &*state {
            State::Open(h) => return Ok(h.clone()),
            State::Unopened => false,
            State::Broken => true,
        };
        // Broken handles are already out of `state`; sled releases its file lock once the
        // last in-flight call holding them returns, so an early attempt may fail and is retried.
        let h = Arc::new(Handles::open(&self.dir)?);
        *state = State::Open(h.clone());
        drop(state);
        if was_broken {
            tracing::info!(dir = %self.dir.display(), "Store reopened after a storage error.");
        } else {
            tracing::info!(dir = %self.dir.display(), "Store opened.");
        }
        self.bump();
        Ok(h)
    }

    /// Maps a sled error and, since sled stays failed after one, schedules a reopen.
    fn storage_error(&self, h: &Arc<Handles>, e: ::sled::Error, what: &str) -> StoreError {
        let err = sled_error(&self.dir, what, e);
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if matches!(&*state, State::Open(cur) if Arc::ptr_eq(cur, h)) {
            *state = State::Broken;
        }
        err
    }

    fn tx_error(
        &self,
        h: &Arc<Handles>,
        e: TransactionError<StoreError>,
        what: &str,
    ) -> StoreError {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => self.storage_error(h, e, what),
        }
    }

    /// Moves the change stream on; returns its new value.
    fn bump(&self) -> u64 {
        let mut new = 0;
        self.changes.send_modify(|n| {
            *n = n.wrapping_add(1);
            new = *n;
        });
        new
    }
}

impl RecordStore for SledStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    fn get(&self, kind: OwnerKind, name: &str) -> Result<Option<Versioned<Record>>, StoreError> {
        let h = self.handles()?;
        let k = key(kind, name);
        match h
            .records
            .get(&k)
            .map_err(|e| self.storage_error(&h, e, "read a record"))?
        {
            Some(v) => decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    fn list(&self, kind: OwnerKind) -> Result<Vec<Versioned<Record>>, StoreError> {
        let h = self.handles()?;
        h.records
            .scan_prefix(key(kind, ""))
            .map(|item| {
                let (k, v) = item.map_err(|e| self.storage_error(&h, e, "read records"))?;
                decode(&k, &v)
            })
            .collect()
    }

    fn commit(&self, batch: Vec<Write>) -> StoreFuture<'_, Option<u64>> {
        Box::pin(self.write(batch, true, "write records"))
    }

    fn import(&self, records: Vec<Record>) -> StoreFuture<'_, usize> {
        let n = records.len();
        let puts = records
            .into_iter()
            .map(|record| Write::Put {
                record,
                expect: None,
            })
            .collect();
        Box::pin(async move { self.write(puts, false, "import records").await.map(|_| n) })
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let h = self.handles()?;
            let target = h.note_commit(false);
            self.flush_to(&h, target).await
        })
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    fn health(&self) -> Result<(), StoreError> {
        self.handles().map(drop)
    }

    fn sightings(&self) -> Result<BTreeMap<String, Timestamp>, StoreError> {
        let h = self.handles()?;
        h.sightings
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(|e| self.storage_error(&h, e, "read sightings"))?;
                decode_sighting(&k, &v)
            })
            .collect()
    }

    fn note_sightings(
        &self,
        seen: BTreeMap<String, Timestamp>,
        forget: Vec<String>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let h = self.handles()?;
            {
                let _gate = self.write_gate.lock().await;
                h.sightings
                    .transaction(|t| {
                        for (k, at) in &seen {
                            if t.get(k.as_bytes())?.is_none() {
                                t.insert(k.as_bytes(), &at.millis().to_be_bytes()[..])?;
                            }
                        }
                        for k in &forget {
                            t.remove(k.as_bytes())?;
                        }
                        Ok::<_, ConflictableTransactionError<StoreError>>(())
                    })
                    .map_err(|e| self.tx_error(&h, e, "write sightings"))?;
                // Counted, so that the next flush (any record write's) covers it.
                h.note_commit(true);
            };
            Ok(())
        })
    }
}

/// One entry of the sightings tree: a UTF-8 key and 8 big-endian bytes of milliseconds.
fn decode_sighting(k: &[u8], v: &[u8]) -> Result<(String, Timestamp), StoreError> {
    let key = std::str::from_utf8(k).map_err(|_| {
        StoreError::Corrupt(format!(
            "a sighting key is not UTF-8: {:?}",
            String::from_utf8_lossy(k)
        ))
    })?;
    let millis: [u8; 8] = v.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "the sighting of {key} is {} bytes, not 8; {RESTORE_HINT}",
            v.len()
        ))
    })?;
    Ok((key.to_string(), Timestamp(i64::from_be_bytes(millis))))
}

impl Handles {
    fn open(dir: &Path) -> Result<Handles, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "create the data directory", &e))?;
        let marker = dir.join(MARKER_FILE);
        let initialised = marker
            .try_exists()
            .map_err(|e| io_error(dir, "read the data directory", &e))?;

        let db = open_sled(dir)?;
        let records = db
            .open_tree(RECORDS_TREE)
            .map_err(|e| sled_error(dir, "open the records tree", e))?;
        let sightings = db
            .open_tree(SIGHTINGS_TREE)
            .map_err(|e| sled_error(dir, "open the sightings tree", e))?;

        match db
            .get(SCHEMA_KEY)
            .map_err(|e| sled_error(dir, "read the schema version", e))?
        {
            Some(raw) => {
                let version: u32 = std::str::from_utf8(&raw)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "the store at {} has an unreadable schema version; {RESTORE_HINT}",
                            dir.display()
                        ))
                    })?;
                match version {
                    SCHEMA_VERSION => {}
                    1 => migrate_from_1(dir, &db, &records)?,
                    newer if newer > SCHEMA_VERSION => {
                        return Err(StoreError::Invalid(format!(
                            "the store at {} was written by a newer reaper (schema {version}, this one knows \
                             {SCHEMA_VERSION}); refusing to use it",
                            dir.display()
                        )));
                    }
                    _ => {
                        return Err(StoreError::Corrupt(format!(
                            "the store at {} has schema version {version}, which no reaper wrote; {RESTORE_HINT}",
                            dir.display()
                        )));
                    }
                }
            }
            None if initialised || !records.is_empty() => {
                return Err(StoreError::Corrupt(format!(
                    "the store at {} lost its schema marker: its files were truncated or replaced; {RESTORE_HINT}",
                    dir.display()
                )));
            }
            None => {
                db.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())
                    .map_err(|e| sled_error(dir, "write the schema version", e))?;
                db.flush()
                    .map_err(|e| sled_error(dir, "flush the store to disk", e))?;
            }
        }

        let handles = Handles {
            db,
            records,
            sightings,
            committed: AtomicU64::new(0),
            durable: AtomicU64::new(0),
        };
        handles.check_all_records(dir)?;
        if !initialised {
            write_marker(&marker).map_err(|e| io_error(dir, "write the store marker", &e))?;
        }
        Ok(handles)
    }

    /// Counts a committed write (if there was one) and returns the count a flush must cover
    /// for the caller's write, and every earlier one, to be durable.
    fn note_commit(&self, changed: bool) -> u64 {
        if changed {
            self.committed.fetch_add(1, SeqCst) + 1
        } else {
            self.committed.load(SeqCst)
        }
    }

    /// Decodes every record once, and checks that none has a revision the store has not
    /// given out yet (a later write could then look like an earlier one).
    fn check_all_records(&self, dir: &Path) -> Result<(), StoreError> {
        let last = match self
            .db
            .get(REVISION_KEY)
            .map_err(|e| sled_error(dir, "read the store's revision", e))?
        {
            Some(raw) => decode_revision_counter(&raw)?,
            None => 0,
        };
        for item in self.records.iter() {
            let (k, v) = item.map_err(|e| sled_error(dir, "read records", e))?;
            if kind_of_key(&k).is_none() {
                return Err(StoreError::Corrupt(format!(
                    "unexpected key {:?} in the records tree of the store at {}; {RESTORE_HINT}",
                    String::from_utf8_lossy(&k),
                    dir.display()
                )));
            }
            let found = decode(&k, &v)?;
            if found.revision > last {
                return Err(StoreError::Corrupt(format!(
                    "record {} has revision {}, beyond the store's last ({last}) at {}; {RESTORE_HINT}",
                    String::from_utf8_lossy(&k),
                    found.revision,
                    dir.display()
                )));
            }
        }
        Ok(())
    }
}

/// Schema 1 kept each record bare: give every record revision 1, in one transaction with the
/// new schema version, and flush. A value that was not JSON stays undecodable, so the check
/// that follows reports it as before.
fn migrate_from_1(dir: &Path, db: &::sled::Db, records: &::sled::Tree) -> Result<(), StoreError> {
    let old = records
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sled_error(dir, "read records to migrate them", e))?;
    let first: Revision = 1;
    (records, &**db)
        .transaction(|(records, meta)| {
            for (k, v) in &old {
                records.insert(k.clone(), with_revision(first, v))?;
            }
            meta.insert(REVISION_KEY, &first.to_be_bytes()[..])?;
            meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })
        .map_err(|e| match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => sled_error(dir, "migrate the store", e),
        })?;
    db.flush()
        .map_err(|e| sled_error(dir, "flush the store to disk", e))?;
    tracing::info!(dir = %dir.display(), records = old.len(), from = 1, to = SCHEMA_VERSION, "Store migrated to the current schema.");
    Ok(())
}

/// Takes the next revision in the same transaction as the write it is for.
fn next_revision(
    meta: &TransactionalTree,
) -> Result<Revision, ConflictableTransactionError<StoreError>> {
    let last = match meta.get(REVISION_KEY)? {
        Some(raw) => decode_revision_counter(&raw).map_err(abort)?,
        None => 0,
    };
    let next = last + 1;
    meta.insert(REVISION_KEY, &next.to_be_bytes()[..])?;
    Ok(next)
}

fn decode_revision_counter(raw: &[u8]) -> Result<Revision, StoreError> {
    let bytes: [u8; REVISION_BYTES] = raw.try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "the store's last revision is unreadable ({} bytes); {RESTORE_HINT}",
            raw.len()
        ))
    })?;
    Ok(Revision::from_be_bytes(bytes))
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn key(kind: OwnerKind, name: &str) -> Vec<u8> {
    format!("{}/{name}", kind.as_str()).into_bytes()
}

fn kind_of_key(k: &[u8]) -> Option<OwnerKind> {
    if k.starts_with(b"session/") {
        Some(OwnerKind::Session)
    } else if k.starts_with(b"agent/") {
        Some(OwnerKind::Agent)
    } else {
        None
    }
}

fn with_revision(revision: Revision, json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(REVISION_BYTES + json.len());
    v.extend_from_slice(&revision.to_be_bytes());
    v.extend_from_slice(json);
    v
}

fn encode(record: &Record, revision: Revision) -> Result<Vec<u8>, StoreError> {
    codec::to_json(record).map(|json| with_revision(revision, &json))
}

/// A stored value's revision and record JSON.
fn split<'v>(k: &[u8], v: &'v [u8]) -> Result<(Revision, &'v [u8]), StoreError> {
    match v.split_first_chunk::<REVISION_BYTES>() {
        Some((revision, json)) => Ok((Revision::from_be_bytes(*revision), json)),
        None => Err(StoreError::Corrupt(format!(
            "record {} is too short to hold its revision",
            String::from_utf8_lossy(k)
        ))),
    }
}

/// Decodes a stored record and checks it is the one its key names.
fn decode(k: &[u8], v: &[u8]) -> Result<Versioned<Record>, StoreError> {
    let shown = String::from_utf8_lossy(k);
    let (revision, json) = split(k, v)?;
    let Some(kind) = kind_of_key(k) else {
        return Err(StoreError::Corrupt(format!(
            "unexpected key {shown} in the records tree"
        )));
    };
    let name = shown.split_once('/').map_or("", |(_, n)| n);
    let record = codec::from_json(kind, name, &shown, json)?;
    Ok(Versioned { record, revision })
}

/// Opens sled, turning its panics into errors. A just-dropped store can keep the directory
/// locked for a moment (sled's I/O threads release their handles asynchronously), so a lock
/// failure is retried briefly before it is reported as "locked by another process".
fn open_sled(dir: &Path) -> Result<::sled::Db, StoreError> {
    const LOCK_RETRIES: u32 = 20;
    const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
    let config = ::sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
    let mut attempt = 0;
    loop {
        // sled 0.34 can panic on some damaged files; that must mean safe mode, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        match opened {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(::sled::Error::Io(e))) if is_lock_error(&e) && attempt < LOCK_RETRIES => {
                attempt += 1;
                std::thread::sleep(LOCK_RETRY_PAUSE);
            }
            Ok(Err(e)) => return Err(sled_error(dir, "open the store", e)),
            Err(panic) => {
                return Err(StoreError::Corrupt(format!(
                    "the store at {} cannot be opened (sled failed: {}); {RESTORE_HINT}",
                    dir.display(),
                    panic_message(&panic)
                )))
            }
        }
    }
}

fn is_lock_error(e: &std::io::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

fn write_marker(path: &Path) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(format!("reaper store, schema {SCHEMA_VERSION}\n").as_bytes())?;
    f.sync_all()
}

fn is_disk_full(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
        || matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        // sled re-creates io::Errors from their Debug text when it clones a stored error.
        || e.to_string().contains("os error 28")
        || e.to_string().contains("StorageFull")
}

fn io_error(dir: &Path, what: &str, e: &std::io::Error) -> StoreError {
    if is_disk_full(e) {
        StoreError::Io(format!(
            "disk full: no space left on the device holding the store at {}; could not {what}, so \
             the change was not saved. Free space and retry; the store recovers by itself",
            dir.display()
        ))
    } else if is_lock_error(e) {
        StoreError::Io(super::lock::in_use_message(
            dir,
            super::lock::lock_holder(dir),
        ))
    } else {
        StoreError::Io(format!("could not {what} at {}: {e}", dir.display()))
    }
}

fn sled_error(dir: &Path, what: &str, e: ::sled::Error) -> StoreError {
    match e {
        ::sled::Error::Io(e) => io_error(dir, what, &e),
        ::sled::Error::Corruption { at, .. } => StoreError::Corrupt(format!(
            "sled found damaged data in the store at {} (at {at:?}) while trying to {what}; {RESTORE_HINT}",
            dir.display()
        )),
        // `Unsupported` is what sled says about files it cannot parse at all; `ReportableBug`
        // means its own state is inconsistent. Neither can be trusted.
        other => StoreError::Corrupt(format!(
            "the store at {} could not {what} ({other}): its files may be damaged; {RESTORE_HINT}",
            dir.display()
        )),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Name, Session, Timestamp};
    use crate::store::{Store, API_SOURCE};

    impl SledStore {
        fn raw_records(&self) -> ::sled::Tree {
            self.handles().unwrap().records.clone()
        }
    }

    fn session(name: &str) -> Session {
        Session::named(Name::new(name).unwrap())
    }

    /// A store, and its records tree to damage behind its back.
    fn open_raw(dir: &Path) -> (Store, ::sled::Tree) {
        let sled = SledStore::open(dir).unwrap();
        let raw = sled.raw_records();
        (Store::new(sled), raw)
    }

    #[test]
    fn an_undecodable_sighting_fails_the_read_closed() {
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        let raw = sled.handles().unwrap().sightings.clone();
        raw.insert(b"container/a", 7i64.to_be_bytes().as_slice())
            .unwrap();
        assert_eq!(
            sled.sightings().unwrap().into_iter().collect::<Vec<_>>(),
            [("container/a".to_string(), Timestamp(7))]
        );
        raw.insert(b"container/b", b"short".as_slice()).unwrap();
        let err = sled.sightings().unwrap_err();
        assert!(err.is_corruption(), "{err}");
        assert!(err.to_string().contains("container/b"), "{err}");
    }

    #[tokio::test]
    async fn undecodable_record_fails_reads_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, raw) = open_raw(dir.path());
        store
            .apply(
                vec![Record::Session(session("good"))],
                API_SOURCE,
                Timestamp(1),
            )
            .await
            .unwrap();
        raw.insert(b"session/zz-bad", b"{not json".as_slice())
            .unwrap();

        let err = store.sessions().unwrap_err();
        assert!(err.is_corruption(), "{err}");
        assert!(err.to_string().contains("session/zz-bad"), "{err}");
        assert!(store.session("zz-bad").unwrap_err().is_corruption());
        assert!(store.export().unwrap_err().is_corruption());
        // Agents are a separate prefix and still readable.
        assert!(store.agents().unwrap().is_empty());
        // An update of the broken record must not overwrite it with a guess.
        let err = store
            .update_session("zz-bad", |_| Ok(()))
            .await
            .unwrap_err();
        assert!(err.is_corruption(), "{err}");
        // Nor may a write at a revision no one could have read.
        let put = Write::Put {
            record: Record::Session(session("zz-bad")),
            expect: Some(0),
        };
        assert!(store.backend().commit(vec![put]).await.is_err());
        assert_eq!(
            raw.get(b"session/zz-bad").unwrap().as_deref(),
            Some(b"{not json".as_slice())
        );
    }

    #[tokio::test]
    async fn record_under_the_wrong_key_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (store, raw) = open_raw(dir.path());
        let value = encode(&Record::Session(session("other")), 1).unwrap();
        raw.insert(b"session/mine", value).unwrap();
        assert!(store.sessions().unwrap_err().is_corruption());
    }

    #[tokio::test]
    async fn undecodable_record_makes_open_fail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, raw) = open_raw(dir.path());
            raw.insert(b"agent/x", b"[]".as_slice()).unwrap();
            store.flush().await.unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(err.is_corruption(), "{err}");
    }

    #[tokio::test]
    async fn a_revision_the_store_never_gave_out_makes_open_fail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, raw) = open_raw(dir.path());
            let value = encode(&Record::Session(session("future")), 99).unwrap();
            raw.insert(b"session/future", value).unwrap();
            store.flush().await.unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(err.is_corruption(), "{err}");
    }

    /// A schema 1 store as reaper wrote it before records had revisions.
    fn write_schema_1(dir: &Path, sessions: &[Session]) {
        let db = ::sled::open(dir).unwrap();
        db.insert(SCHEMA_KEY, b"1".as_slice()).unwrap();
        let records = db.open_tree(RECORDS_TREE).unwrap();
        for s in sessions {
            let k = key(OwnerKind::Session, s.metadata.name.as_str());
            records.insert(k, serde_json::to_vec(s).unwrap()).unwrap();
        }
        db.flush().unwrap();
        write_marker(&dir.join(MARKER_FILE)).unwrap();
    }

    #[tokio::test]
    async fn a_schema_1_store_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut ended = session("ended");
        ended.end(
            crate::core::model::EndReason::Succeeded,
            Timestamp(1),
            crate::core::model::Duration::ZERO,
        );
        write_schema_1(dir.path(), &[session("active"), ended.clone()]);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.sessions().unwrap(), [session("active"), ended]);
        let v = store
            .backend()
            .get(OwnerKind::Session, "active")
            .unwrap()
            .unwrap();
        assert_eq!(v.revision, 1);
        // Writes after the migration get revisions it never gave out.
        store
            .update_session("active", |s| {
                s.heartbeat(Timestamp(5)).unwrap();
                Ok(())
            })
            .await
            .unwrap();
        let after = store.backend().get(OwnerKind::Session, "active").unwrap();
        assert!(after.unwrap().revision > 1);
        drop(store);

        let db = ::sled::open(dir.path()).unwrap();
        let schema = db.get(SCHEMA_KEY).unwrap().unwrap();
        assert_eq!(&schema[..], SCHEMA_VERSION.to_string().as_bytes());
    }

    #[test]
    fn a_store_from_a_newer_reaper_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = ::sled::open(dir.path()).unwrap();
            db.insert(SCHEMA_KEY, b"99".as_slice()).unwrap();
            db.flush().unwrap();
        }
        let err = SledStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(ref m) if m.contains("newer")),
            "{err:?}"
        );
    }

    #[test]
    fn disk_full_is_named_clearly() {
        let e = std::io::Error::from_raw_os_error(28);
        let err = io_error(Path::new("/var/lib/reaper"), "flush the store to disk", &e);
        assert!(matches!(err, StoreError::Io(_)));
        assert!(err.to_string().contains("disk full"), "{err}");
        // sled's clone of a stored io::Error keeps only the kind and the Debug text.
        let cloned = std::io::Error::new(e.kind(), format!("{e:?}"));
        assert!(io_error(Path::new("/x"), "flush", &cloned)
            .to_string()
            .contains("disk full"));
    }
}
