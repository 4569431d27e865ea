//! The record store: Session and Agent records with their status, in an embedded sled database.
//!
//! Guarantees the controller relies on:
//! - Every mutating call is atomic (one sled transaction) and flushed to disk before it returns,
//!   because a write such as "this session ended" gates deletions (sled is durable only after a
//!   flush).
//! - Reads fail closed: a record that does not decode is a [`StoreError::Corrupt`], never skipped,
//!   so a damaged store cannot look like "no owners" and get every object reaped.
//! - Opening never panics on damaged files; it returns `Corrupt` or `Io` so the daemon can enter
//!   safe mode.
//!
//! The surface is deliberately small (list, get, apply, update, remove, export/import, watch) so
//! that a later fleet backend can offer the same operations.
//!
//! Layout: the `records` tree holds JSON values under `session/<name>` and `agent/<name>`; the
//! default tree holds the schema version. A marker file next to the sled files records that the
//! store was initialised, so sled files truncated back to "empty" are detected as corruption
//! instead of silently starting a blank store.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, PoisonError, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use tokio::sync::watch;

use crate::core::model::{
    Agent, AgentPhase, AgentStatus, Condition, Name, ObjectCounts, OwnerKind, OwnerRef, Record,
    Session, SessionPhase, SessionStatus, Timestamp,
};

/// The `source` of records written through the API (`reaper apply`).
pub const API_SOURCE: &str = "api";

/// Version of the on-disk encoding; bump it (and migrate in `open`) when the format changes.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &[u8] = b"reaper.schema";
const RECORDS_TREE: &[u8] = b"records";
/// Written once the store is initialised; its presence with a schema-less sled store means the
/// sled files were damaged or replaced.
const MARKER_FILE: &str = "reaper-store";
const RESTORE_HINT: &str =
    "reaper deletes nothing until this is fixed: restore the records with `reaper store import`, \
     or move the directory away to start empty";
/// sled keeps pages it reads in this cache; the default (1 GiB) is far above what reaper needs.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
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
            StoreError::Invalid(_) => "invalid",
        }
    }
}

/// The conflict raised when `requested_by` tries to change a record that `owning_source` declared.
/// The API's delete path uses it too, so both messages name the owning file the same way.
pub fn source_conflict(
    kind: OwnerKind,
    name: &str,
    owning_source: &str,
    requested_by: &str,
) -> StoreError {
    let what = format!("{}/{name}", kind.as_str());
    if owning_source == API_SOURCE {
        StoreError::Conflict(format!(
            "{what} was created with `reaper apply`, so {requested_by} cannot declare it; \
             delete it with `reaper delete {} {name}` first, or give it another name",
            kind.as_str()
        ))
    } else {
        StoreError::Conflict(format!(
            "{what} is declared in {owning_source}; change it there"
        ))
    }
}

/// The status fields Sessions and Agents share, borrowed for one `update_owner`.
pub struct CommonStatus<'a> {
    pub source: &'a mut Option<String>,
    pub deleting_since: &'a mut Option<Timestamp>,
    pub removed: &'a mut ObjectCounts,
    pub conditions: &'a mut Vec<Condition>,
}

/// What `apply` did to one record, as kubectl reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplyOutcome {
    pub kind: OwnerKind,
    pub name: String,
    pub action: ApplyAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// The sled-backed store. Share it behind an `Arc`; every method takes `&self`.
///
/// After a storage error (a full disk, say) sled refuses every later operation, reads included,
/// until it is reopened. The store therefore drops its sled handles on such an error and reopens
/// them on the next call, so it recovers by itself once the cause is gone; until then each call
/// returns the error that stopped the reopen.
pub struct Store {
    dir: PathBuf,
    state: RwLock<State>,
    /// Serialises writers inside this process. sled transactions are serializable on their own;
    /// the gate makes read-modify-write correctness independent of that, and costs little
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
    /// A storage error broke the handles; the next call tries to reopen.
    Broken,
}

struct Handles {
    db: sled::Db,
    records: sled::Tree,
    /// Writes committed to this instance so far, and how many of them a flush has covered.
    committed: AtomicU64,
    durable: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and checks that every record decodes.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let handles = Handles::open(dir)?;
        let (changes, _) = watch::channel(0);
        Ok(Store {
            dir: dir.to_path_buf(),
            state: RwLock::new(State::Open(Arc::new(handles))),
            write_gate: tokio::sync::Mutex::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            changes,
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A receiver whose value increases after every committed (and flushed) change, and after
    /// the store reopened itself (its content may then differ from what was last read).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The current value `subscribe` would show: equal values mean no change in between.
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    /// All sessions, sorted by name. One undecodable record fails the whole read.
    pub fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        self.list(OwnerKind::Session)
    }

    /// All agents, sorted by name. One undecodable record fails the whole read.
    pub fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.list(OwnerKind::Agent)
    }

    pub fn session(&self, name: &str) -> Result<Option<Session>, StoreError> {
        self.get(OwnerKind::Session, name)
    }

    pub fn agent(&self, name: &str) -> Result<Option<Agent>, StoreError> {
        self.get(OwnerKind::Agent, name)
    }

    /// kubectl-apply semantics for a validated batch, all or nothing, flushed before returning.
    ///
    /// - A new record is `created`: its status is fresh (Session `Active`, Agent `Stopped`),
    ///   stamped with `now` and `source`; any status in the input is ignored.
    /// - Same spec and labels: `unchanged`. Otherwise `configured`: spec and labels are replaced
    ///   and the status is kept.
    /// - A record declared by another source, or being deleted, is a `Conflict` and nothing in
    ///   the batch is applied.
    ///
    /// `source` is [`API_SOURCE`] for the CLI, or the manifest file's path.
    pub async fn apply(
        &self,
        records: Vec<Record>,
        source: &str,
        now: Timestamp,
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        reject_duplicates(&records)?;
        let h = self.handles()?;
        let (outcomes, target) = {
            let _gate = self.write_gate.lock().await;
            let outcomes = h
                .records
                .transaction(|tx| {
                    records
                        .iter()
                        .map(|record| {
                            let action = match record {
                                Record::Session(s) => apply_one(tx, s, source, now)?,
                                Record::Agent(a) => apply_one(tx, a, source, now)?,
                            };
                            let owner = record.owner();
                            Ok(ApplyOutcome {
                                kind: owner.kind,
                                name: owner.name.to_string(),
                                action,
                            })
                        })
                        .collect::<Result<Vec<_>, ConflictableTransactionError<StoreError>>>()
                })
                .map_err(|e| self.tx_error(&h, e, "apply records"))?;
            let changed = outcomes.iter().any(|o| o.action != ApplyAction::Unchanged);
            (outcomes, h.note_commit(changed))
        };
        // Wait for durability even when nothing changed: a retry after a failed flush must not
        // report success for a write that never reached the disk.
        self.flush_to(&h, target).await?;
        if outcomes.iter().any(|o| o.action != ApplyAction::Unchanged) {
            self.bump();
        }
        Ok(outcomes)
    }

    /// Atomic read-modify-write of one session (typically its status), flushed before returning.
    /// `f` may be called more than once; an `Err` from it aborts the update and is returned.
    pub async fn update_session<F>(&self, name: &str, f: F) -> Result<Session, StoreError>
    where
        F: Fn(&mut Session) -> Result<(), StoreError>,
    {
        self.update(name, f).await
    }

    /// Atomic read-modify-write of one agent, flushed before returning.
    pub async fn update_agent<F>(&self, name: &str, f: F) -> Result<Agent, StoreError>
    where
        F: Fn(&mut Agent) -> Result<(), StoreError>,
    {
        self.update(name, f).await
    }

    /// Atomic read-modify-write of the status fields every record kind has, for callers that
    /// do not care which kind `owner` is. Flushed before returning.
    pub async fn update_owner<F>(&self, owner: &OwnerRef, f: F) -> Result<(), StoreError>
    where
        F: Fn(CommonStatus<'_>) -> Result<(), StoreError>,
    {
        let name = owner.name.as_str();
        match owner.kind {
            OwnerKind::Session => {
                let f = |s: &mut Session| f(s.common());
                self.update_session(name, f).await.map(drop)
            }
            OwnerKind::Agent => {
                let f = |a: &mut Agent| f(a.common());
                self.update_agent(name, f).await.map(drop)
            }
        }
    }

    /// Final removal of a record, once its objects are gone. Returns whether it existed.
    pub async fn remove(&self, owner: &OwnerRef) -> Result<bool, StoreError> {
        let key = key(owner.kind, owner.name.as_str());
        let h = self.handles()?;
        let (existed, target) = {
            let _gate = self.write_gate.lock().await;
            let existed = h
                .records
                .remove(&key)
                .map_err(|e| self.storage_error(&h, e, "remove a record"))?
                .is_some();
            (existed, h.note_commit(existed))
        };
        self.flush_to(&h, target).await?;
        if existed {
            self.bump();
        }
        Ok(existed)
    }

    /// Every record with its status: sessions, then agents, each sorted by name.
    pub fn export(&self) -> Result<Vec<Record>, StoreError> {
        let mut out: Vec<Record> = self.sessions()?.into_iter().map(Record::Session).collect();
        out.extend(self.agents()?.into_iter().map(Record::Agent));
        Ok(out)
    }

    /// Inserts or replaces records verbatim, status included, all or nothing, flushed.
    /// Records not in `records` are left alone. Returns how many were written.
    pub async fn import(&self, records: Vec<Record>) -> Result<usize, StoreError> {
        reject_duplicates(&records)?;
        let encoded = records
            .iter()
            .map(|r| {
                let owner = r.owner();
                let value = match r {
                    Record::Session(s) => encode(s)?,
                    Record::Agent(a) => encode(a)?,
                };
                Ok((key(owner.kind, owner.name.as_str()), value))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let h = self.handles()?;
        let target = {
            let _gate = self.write_gate.lock().await;
            h.records
                .transaction(|tx| {
                    for (k, v) in &encoded {
                        tx.insert(k.as_slice(), v.as_slice())?;
                    }
                    Ok(())
                })
                .map_err(|e| self.tx_error(&h, e, "import records"))?;
            h.note_commit(!encoded.is_empty())
        };
        self.flush_to(&h, target).await?;
        if !encoded.is_empty() {
            self.bump();
        }
        Ok(encoded.len())
    }

    /// Makes every write so far durable. (Every mutating call already does this.)
    pub async fn flush(&self) -> Result<(), StoreError> {
        let h = self.handles()?;
        let target = h.note_commit(false);
        self.flush_to(&h, target).await
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

    /// The open sled handles, reopening them first if a storage error broke them.
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
        if let State::Open(h) = &*state {
            return Ok(h.clone());
        }
        // The old handles are already out of `state`; sled releases its file lock once the
        // last in-flight call holding them returns, so an early attempt may fail and is retried.
        match Handles::open(&self.dir) {
            Ok(h) => {
                let h = Arc::new(h);
                *state = State::Open(h.clone());
                drop(state);
                tracing::info!(dir = %self.dir.display(), "Store reopened after a storage error.");
                self.bump();
                Ok(h)
            }
            Err(e) => {
                *state = State::Broken;
                Err(e)
            }
        }
    }

    /// Maps a sled error and, since sled stays failed after one, schedules a reopen.
    fn storage_error(&self, h: &Arc<Handles>, e: sled::Error, what: &str) -> StoreError {
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

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn list<R: Stored>(&self, kind: OwnerKind) -> Result<Vec<R>, StoreError> {
        let h = self.handles()?;
        let prefix = key(kind, "");
        h.records
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, v) = item.map_err(|e| self.storage_error(&h, e, "read records"))?;
                decode_checked::<R>(&k, &v)
            })
            .collect()
    }

    fn get<R: Stored>(&self, kind: OwnerKind, name: &str) -> Result<Option<R>, StoreError> {
        let h = self.handles()?;
        let k = key(kind, name);
        match h
            .records
            .get(&k)
            .map_err(|e| self.storage_error(&h, e, "read a record"))?
        {
            Some(v) => decode_checked(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    async fn update<R: Stored, F>(&self, name: &str, f: F) -> Result<R, StoreError>
    where
        F: Fn(&mut R) -> Result<(), StoreError>,
    {
        let k = key(R::KIND, name);
        let h = self.handles()?;
        let (record, changed, target) = {
            let _gate = self.write_gate.lock().await;
            let (record, changed) = h
                .records
                .transaction(|tx| {
                    let Some(raw) = tx.get(&k)? else {
                        return abort(StoreError::NotFound {
                            kind: R::KIND,
                            name: name.to_string(),
                        });
                    };
                    let mut record: R =
                        decode_checked(&k, &raw).map_err(ConflictableTransactionError::Abort)?;
                    let before = record.clone();
                    f(&mut record).map_err(ConflictableTransactionError::Abort)?;
                    if record.name().as_str() != name {
                        return abort(StoreError::Invalid(format!(
                            "an update may not rename {}/{name}",
                            R::KIND.as_str()
                        )));
                    }
                    let changed = record != before;
                    if changed {
                        tx.insert(
                            k.as_slice(),
                            encode(&record).map_err(ConflictableTransactionError::Abort)?,
                        )?;
                    }
                    Ok((record, changed))
                })
                .map_err(|e| self.tx_error(&h, e, "update a record"))?;
            (record, changed, h.note_commit(changed))
        };
        self.flush_to(&h, target).await?;
        if changed {
            self.bump();
        }
        Ok(record)
    }
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
                if version > SCHEMA_VERSION {
                    return Err(StoreError::Invalid(format!(
                        "the store at {} was written by a newer reaper (schema {version}, this one knows \
                         {SCHEMA_VERSION}); refusing to use it",
                        dir.display()
                    )));
                }
                // Migrations from older schema versions go here.
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

    /// Decodes every record once, so a damaged store is found at startup (safe mode) rather
    /// than in the middle of a reconcile.
    fn check_all_records(&self, dir: &Path) -> Result<(), StoreError> {
        for item in self.records.iter() {
            let (k, v) = item.map_err(|e| sled_error(dir, "read records", e))?;
            if k.starts_with(&key(OwnerKind::Session, "")) {
                decode_checked::<Session>(&k, &v)?;
            } else if k.starts_with(&key(OwnerKind::Agent, "")) {
                decode_checked::<Agent>(&k, &v)?;
            } else {
                return Err(StoreError::Corrupt(format!(
                    "unexpected key {:?} in the records tree of the store at {}; {RESTORE_HINT}",
                    String::from_utf8_lossy(&k),
                    dir.display()
                )));
            }
        }
        Ok(())
    }
}

/// What the store needs to know about a record kind.
trait Stored: Serialize + DeserializeOwned + Clone + PartialEq {
    const KIND: OwnerKind;
    fn name(&self) -> &Name;
    /// Where the record came from; records without one predate sources and count as the API's.
    fn source(&self) -> &str;
    fn deleting(&self) -> bool;
    /// Same desired state: spec and labels (status is the daemon's, not the user's).
    fn same_desired(&self, other: &Self) -> bool;
    /// Takes spec and labels from `new`, keeping status.
    fn take_desired(&mut self, new: &Self);
    /// The status of a record that was just created.
    fn fresh_status(&mut self, now: Timestamp, source: &str);
    /// The status fields both kinds share.
    fn common(&mut self) -> CommonStatus<'_>;
}

impl Stored for Session {
    fn common(&mut self) -> CommonStatus<'_> {
        CommonStatus {
            source: &mut self.status.source,
            deleting_since: &mut self.status.deleting_since,
            removed: &mut self.status.removed,
            conditions: &mut self.status.conditions,
        }
    }
    const KIND: OwnerKind = OwnerKind::Session;
    fn name(&self) -> &Name {
        &self.metadata.name
    }
    fn source(&self) -> &str {
        self.status.source.as_deref().unwrap_or(API_SOURCE)
    }
    fn deleting(&self) -> bool {
        self.status.deleting_since.is_some()
    }
    fn same_desired(&self, other: &Self) -> bool {
        self.spec == other.spec && self.metadata.labels == other.metadata.labels
    }
    fn take_desired(&mut self, new: &Self) {
        self.spec = new.spec.clone();
        self.metadata.labels = new.metadata.labels.clone();
    }
    fn fresh_status(&mut self, now: Timestamp, source: &str) {
        self.status = SessionStatus {
            phase: SessionPhase::Active,
            created_at: now,
            source: Some(source.to_string()),
            ..SessionStatus::default()
        };
    }
}

impl Stored for Agent {
    fn common(&mut self) -> CommonStatus<'_> {
        CommonStatus {
            source: &mut self.status.source,
            deleting_since: &mut self.status.deleting_since,
            removed: &mut self.status.removed,
            conditions: &mut self.status.conditions,
        }
    }
    const KIND: OwnerKind = OwnerKind::Agent;
    fn name(&self) -> &Name {
        &self.metadata.name
    }
    fn source(&self) -> &str {
        self.status.source.as_deref().unwrap_or(API_SOURCE)
    }
    fn deleting(&self) -> bool {
        self.status.deleting_since.is_some()
    }
    fn same_desired(&self, other: &Self) -> bool {
        self.spec == other.spec && self.metadata.labels == other.metadata.labels
    }
    fn take_desired(&mut self, new: &Self) {
        self.spec = new.spec.clone();
        self.metadata.labels = new.metadata.labels.clone();
    }
    fn fresh_status(&mut self, now: Timestamp, source: &str) {
        self.status = AgentStatus {
            phase: AgentPhase::Stopped,
            created_at: now,
            phase_since: now,
            source: Some(source.to_string()),
            ..AgentStatus::default()
        };
    }
}

fn apply_one<R: Stored>(
    tx: &TransactionalTree,
    new: &R,
    source: &str,
    now: Timestamp,
) -> Result<ApplyAction, ConflictableTransactionError<StoreError>> {
    let name = new.name().as_str();
    let k = key(R::KIND, name);
    let (record, action) = match tx.get(&k)? {
        None => {
            let mut record = new.clone();
            record.fresh_status(now, source);
            (record, ApplyAction::Created)
        }
        Some(raw) => {
            let mut current: R =
                decode_checked(&k, &raw).map_err(ConflictableTransactionError::Abort)?;
            if current.source() != source {
                return abort(source_conflict(R::KIND, name, current.source(), source));
            }
            if current.deleting() {
                return abort(StoreError::Conflict(format!(
                    "{}/{name} is being deleted; apply it again once it is gone",
                    R::KIND.as_str()
                )));
            }
            if current.same_desired(new) {
                return Ok(ApplyAction::Unchanged);
            }
            current.take_desired(new);
            (current, ApplyAction::Configured)
        }
    };
    tx.insert(
        k.as_slice(),
        encode(&record).map_err(ConflictableTransactionError::Abort)?,
    )?;
    Ok(action)
}

fn abort<T>(e: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(e))
}

fn key(kind: OwnerKind, name: &str) -> Vec<u8> {
    format!("{}/{name}", kind.as_str()).into_bytes()
}

fn encode<R: Serialize>(record: &R) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record)
        .map_err(|e| StoreError::Invalid(format!("cannot encode record: {e}")))
}

/// Decodes a stored record and checks it is the one its key names.
fn decode_checked<R: Stored>(k: &[u8], v: &[u8]) -> Result<R, StoreError> {
    let shown = String::from_utf8_lossy(k);
    let record: R = serde_json::from_slice(v)
        .map_err(|e| StoreError::Corrupt(format!("record {shown} cannot be decoded: {e}")))?;
    if key(R::KIND, record.name().as_str()) != k {
        return Err(StoreError::Corrupt(format!(
            "record {shown} holds {}/{}",
            R::KIND.as_str(),
            record.name()
        )));
    }
    Ok(record)
}

fn reject_duplicates(records: &[Record]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    for r in records {
        let owner = r.owner();
        if !seen.insert(owner.clone()) {
            return Err(StoreError::Invalid(format!(
                "{owner} appears twice in one batch"
            )));
        }
    }
    Ok(())
}

/// Opens sled, turning its panics into errors. A just-dropped store can keep the directory
/// locked for a moment (sled's I/O threads release their handles asynchronously), so a lock
/// failure is retried briefly before it is reported as "locked by another process".
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    const LOCK_RETRIES: u32 = 20;
    const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
    let config = sled::Config::new().path(dir).cache_capacity(CACHE_BYTES);
    let mut attempt = 0;
    loop {
        // sled 0.34 can panic on some damaged files; that must mean safe mode, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        match opened {
            Ok(Ok(db)) => return Ok(db),
            Ok(Err(sled::Error::Io(e))) if is_lock_error(&e) && attempt < LOCK_RETRIES => {
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
        StoreError::Io(format!(
            "the store at {} is locked by another process (is another reaper running?): {e}",
            dir.display()
        ))
    } else {
        StoreError::Io(format!("could not {what} at {}: {e}", dir.display()))
    }
}

fn sled_error(dir: &Path, what: &str, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(e) => io_error(dir, what, &e),
        sled::Error::Corruption { at, .. } => StoreError::Corrupt(format!(
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

    impl Store {
        fn raw_records(&self) -> sled::Tree {
            self.handles().unwrap().records.clone()
        }
    }

    fn session(name: &str) -> Session {
        Session::named(Name::new(name).unwrap())
    }

    #[tokio::test]
    async fn undecodable_record_fails_reads_closed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .apply(
                vec![Record::Session(session("good"))],
                API_SOURCE,
                Timestamp(1),
            )
            .await
            .unwrap();
        store
            .raw_records()
            .insert(b"session/zz-bad", b"{not json".as_slice())
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
    }

    #[tokio::test]
    async fn record_under_the_wrong_key_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let value = serde_json::to_vec(&session("other")).unwrap();
        store.raw_records().insert(b"session/mine", value).unwrap();
        assert!(store.sessions().unwrap_err().is_corruption());
    }

    #[tokio::test]
    async fn undecodable_record_makes_open_fail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .raw_records()
                .insert(b"agent/x", b"[]".as_slice())
                .unwrap();
            store.flush().await.unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.is_corruption(), "{err}");
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

    #[test]
    fn conflict_names_the_owning_file() {
        let err = source_conflict(
            OwnerKind::Session,
            "x",
            "/etc/reaper/manifests/a.yaml",
            API_SOURCE,
        );
        assert_eq!(
            err.to_string(),
            "session/x is declared in /etc/reaper/manifests/a.yaml; change it there"
        );
        let err = source_conflict(
            OwnerKind::Agent,
            "y",
            API_SOURCE,
            "/etc/reaper/manifests/b.yaml",
        );
        assert!(err.to_string().contains("reaper delete agent y"), "{err}");
        assert_eq!(err.metric_label(), "conflict");
    }
}
