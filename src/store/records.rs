//! Over 500 lines: 520 of code (every record operation, read-decide-commit once each) and its tests.
//!
//! [`Store`]: the record operations everyone uses (apply, update, remove, export, import),
//! written once on top of any [`RecordStore`]. Each reads, decides, and commits at the
//! revisions it read; when someone wrote in between, it reads again and decides again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::{reject_duplicates, RecordStore, SledStore, StoreError, Versioned, Write};
use crate::core::model::{
    Agent, AgentPhase, AgentStatus, Condition, Name, ObjectCounts, OwnerKind, OwnerRef, Record,
    Session, SessionPhase, SessionStatus, Timestamp,
};

/// The `source` of records written through the API (`reaper apply`).
pub use crate::core::model::API_SOURCE;

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
    pub events: &'a mut Vec<crate::core::model::Event>,
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

/// The record store as the daemon, the API and the CLI use it: a cheap handle (clone it
/// freely) on one backend.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn RecordStore>,
    /// Where this handle notes the changes its writes made, if anyone asked.
    log: Option<Arc<WriteLog>>,
    /// The daemon this store serves, which lists itself among the hosts (`hosts.rs`).
    pub(super) this_host: Option<Arc<super::hosts::ThisHost>>,
}

/// The change-stream values that writes through one handle produced: how the controller tells
/// its own status writes, which need no pass, from everyone else's.
#[derive(Debug, Default)]
pub struct WriteLog(Mutex<BTreeSet<u64>>);

impl WriteLog {
    /// Whether every change after `seen`, up to `now`, was written through the handle.
    pub fn wrote_all(&self, seen: u64, now: u64) -> bool {
        let written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (seen.saturating_add(1)..=now).all(|g| written.contains(&g))
    }

    /// Forgets the changes up to `now`: whoever asks has seen them.
    pub fn forget_through(&self, now: u64) {
        let mut written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *written = written.split_off(&now.saturating_add(1));
    }

    fn note(&self, generation: u64) {
        let mut written = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        written.insert(generation);
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    pub fn new(backend: impl RecordStore) -> Store {
        Store {
            backend: Arc::new(backend),
            log: None,
            this_host: None,
        }
    }

    /// A handle on the same store whose writes are noted in the returned log.
    pub fn noting_writes(&self) -> (Store, Arc<WriteLog>) {
        let log = Arc::new(WriteLog::default());
        let store = Store {
            backend: self.backend.clone(),
            log: Some(log.clone()),
            this_host: self.this_host.clone(),
        };
        (store, log)
    }

    /// Opens (creating if needed) the sled store in `dir`, and fails if it cannot be opened
    /// now. The daemon uses [`SledStore::open_or_retry`] instead.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        SledStore::open(dir).map(Store::new)
    }

    /// The backend itself, for revision-level reads and writes.
    pub fn backend(&self) -> &dyn RecordStore {
        self.backend.as_ref()
    }

    /// See [`RecordStore::subscribe`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.backend.subscribe()
    }

    /// See [`RecordStore::generation`].
    pub fn generation(&self) -> u64 {
        self.backend.generation()
    }

    /// See [`RecordStore::backend`].
    pub fn backend_name(&self) -> &'static str {
        self.backend.backend()
    }

    /// See [`RecordStore::health`].
    pub fn health(&self) -> Result<(), StoreError> {
        self.backend.health()
    }

    /// See [`RecordStore::sync`].
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.backend.sync().await
    }

    /// Makes every write so far durable. (Every mutating call already does this.)
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.backend.flush().await
    }

    /// See [`RecordStore::sightings`].
    pub fn sightings(&self) -> Result<BTreeMap<String, Timestamp>, StoreError> {
        self.backend.sightings()
    }

    /// See [`RecordStore::note_sightings`]. Nothing to note is no call: no backend writes then.
    pub async fn note_sightings(
        &self,
        seen: BTreeMap<String, Timestamp>,
        forget: Vec<String>,
    ) -> Result<(), StoreError> {
        if seen.is_empty() && forget.is_empty() {
            return Ok(());
        }
        self.backend.note_sightings(seen, forget).await
    }

    /// All sessions, sorted by name. One undecodable record fails the whole read.
    pub fn sessions(&self) -> Result<Vec<Session>, StoreError> {
        self.list()
    }

    /// All agents, sorted by name. One undecodable record fails the whole read.
    pub fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.list()
    }

    pub fn session(&self, name: &str) -> Result<Option<Session>, StoreError> {
        Ok(self.get::<Session>(name)?.map(|v| v.record))
    }

    pub fn agent(&self, name: &str) -> Result<Option<Agent>, StoreError> {
        Ok(self.get::<Agent>(name)?.map(|v| v.record))
    }

    /// kubectl-apply semantics for a validated batch, all or nothing, flushed before returning.
    ///
    /// - A new record is `created`: its status is fresh (Session `Active`, Agent `Stopped`),
    ///   stamped with `now` and `source`; any status in the input is ignored.
    /// - Same spec and labels: `unchanged`. Otherwise `configured`: spec and labels are replaced
    ///   and the status is kept.
    /// - A record declared by another source, or being deleted, or a session that has ended
    ///   (its name is not reused: [`Session::accepts_reapply`]), is a `Conflict` and nothing in
    ///   the batch is applied.
    ///
    /// `source` is [`API_SOURCE`] for the CLI, or the manifest file's path.
    pub async fn apply(
        &self,
        records: Vec<Record>,
        source: &str,
        now: Timestamp,
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        self.write_batch(records, source, now, false).await
    }

    /// kubectl-create semantics: [`Store::apply`] where every record must be new. A record
    /// that exists, in any phase, is a `Conflict` and nothing in the batch is applied. A
    /// caller that looked and found the name free thus never reconfigures a record someone
    /// else registered in between (as two `reaper run --session NAME` at once would).
    pub async fn create(
        &self,
        records: Vec<Record>,
        source: &str,
        now: Timestamp,
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        self.write_batch(records, source, now, true).await
    }

    async fn write_batch(
        &self,
        records: Vec<Record>,
        source: &str,
        now: Timestamp,
        only_new: bool,
    ) -> Result<Vec<ApplyOutcome>, StoreError> {
        reject_duplicates(records.iter().map(Record::owner))?;
        let records = &records;
        self.retry_stale(|| async move {
            let mut batch = Vec::with_capacity(records.len());
            let mut outcomes = Vec::with_capacity(records.len());
            for record in records {
                let (write, action) = match record {
                    Record::Session(s) => self.apply_one(s, source, now, only_new)?,
                    Record::Agent(a) => self.apply_one(a, source, now, only_new)?,
                };
                let owner = record.owner();
                outcomes.push(ApplyOutcome {
                    kind: owner.kind,
                    name: owner.name.to_string(),
                    action,
                });
                batch.push(write);
            }
            // Committed even when nothing changed: the checks make the outcome hold at one
            // moment, and a retry after a failed flush must not report success for a write
            // that never reached the disk.
            self.commit(batch).await?;
            Ok(outcomes)
        })
        .await
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
        self.retry_stale(|| async move {
            let found = self.backend.get(owner.kind, owner.name.as_str())?;
            let Some(found) = found else {
                // Nothing to remove; still durable before saying so, as every write is.
                self.backend.flush().await?;
                return Ok(false);
            };
            let delete = Write::Delete {
                owner: owner.clone(),
                expect: found.revision,
            };
            self.commit(vec![delete]).await?;
            Ok(true)
        })
        .await
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
        reject_duplicates(records.iter().map(Record::owner))?;
        self.backend.import(records).await
    }

    fn list<R: Kind>(&self) -> Result<Vec<R>, StoreError> {
        self.backend
            .list(R::KIND)?
            .into_iter()
            .map(|v| R::from_record(v.record))
            .collect()
    }

    fn get<R: Kind>(&self, name: &str) -> Result<Option<Versioned<R>>, StoreError> {
        self.backend
            .get(R::KIND, name)?
            .map(|v| {
                Ok(Versioned {
                    record: R::from_record(v.record)?,
                    revision: v.revision,
                })
            })
            .transpose()
    }

    async fn update<R: Kind, F>(&self, name: &str, f: F) -> Result<R, StoreError>
    where
        F: Fn(&mut R) -> Result<(), StoreError>,
    {
        let f = &f;
        self.retry_stale(|| async move {
            let Some(found) = self.get::<R>(name)? else {
                return Err(StoreError::NotFound {
                    kind: R::KIND,
                    name: name.to_string(),
                });
            };
            let mut record = found.record.clone();
            f(&mut record)?;
            if record.name().as_str() != name {
                return Err(StoreError::Invalid(format!(
                    "an update may not rename {}/{name}",
                    R::KIND.as_str()
                )));
            }
            if record == found.record {
                // Nothing to write; durable before returning all the same, as every write is.
                self.backend.flush().await?;
                return Ok(record);
            }
            let put = Write::Put {
                record: record.clone().into_record(),
                expect: Some(found.revision),
            };
            self.commit(vec![put]).await?;
            Ok(record)
        })
        .await
    }

    /// Decides what applying `new` does to the record as stored now.
    fn apply_one<R: Kind>(
        &self,
        new: &R,
        source: &str,
        now: Timestamp,
        only_new: bool,
    ) -> Result<(Write, ApplyAction), StoreError> {
        let name = new.name().as_str();
        let Some(found) = self.get::<R>(name)? else {
            let mut record = new.clone();
            record.fresh_status(now, source);
            let put = Write::Put {
                record: record.into_record(),
                expect: None,
            };
            return Ok((put, ApplyAction::Created));
        };
        if only_new {
            return Err(StoreError::Conflict(format!(
                "{}/{name} already exists: choose another name",
                R::KIND.as_str()
            )));
        }
        let mut current = found.record;
        if current.source() != source {
            return Err(source_conflict(R::KIND, name, current.source(), source));
        }
        if current.deleting() {
            return Err(StoreError::Conflict(format!(
                "{}/{name} is being deleted; apply it again once it is gone",
                R::KIND.as_str()
            )));
        }
        // A name is not reused: the rule is the record's own (core lifecycle).
        current.accepts_reapply()?;
        if current.same_desired(new) {
            let check = Write::Check {
                owner: new.owner(),
                expect: Some(found.revision),
            };
            return Ok((check, ApplyAction::Unchanged));
        }
        current.take_desired(new);
        let put = Write::Put {
            record: current.into_record(),
            expect: Some(found.revision),
        };
        Ok((put, ApplyAction::Configured))
    }

    async fn commit(&self, batch: Vec<Write>) -> Result<(), StoreError> {
        let changed = self.backend.commit(batch).await?;
        if let (Some(log), Some(generation)) = (&self.log, changed) {
            log.note(generation);
        }
        Ok(())
    }

    /// Runs `attempt` until it ends in anything but `Stale`: a write raced with another one,
    /// so read again and decide again. Every retry follows someone else's successful write,
    /// so the store as a whole always makes progress.
    async fn retry_stale<T, F, Fut>(&self, attempt: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        loop {
            match attempt().await {
                Err(StoreError::Stale { .. }) => continue,
                result => return result,
            }
        }
    }
}

/// What the helpers need to know about a record kind.
trait Kind: Clone + PartialEq {
    const KIND: OwnerKind;
    fn name(&self) -> &Name;
    fn owner(&self) -> OwnerRef {
        OwnerRef {
            kind: Self::KIND,
            name: self.name().clone(),
        }
    }
    fn into_record(self) -> Record;
    /// The record as this kind; another kind under this kind's name means a damaged store.
    fn from_record(record: Record) -> Result<Self, StoreError>;
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
    /// Whether the stored record may take a re-applied manifest (a `Conflict` if not).
    fn accepts_reapply(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn wrong_kind(record: &Record, wanted: OwnerKind) -> StoreError {
    StoreError::Corrupt(format!(
        "the store returned {} where a {} was asked for",
        record.owner(),
        wanted.as_str()
    ))
}

/// The methods both kinds implement alike, over the fields they share.
macro_rules! shared_kind_methods {
    () => {
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
        fn common(&mut self) -> CommonStatus<'_> {
            CommonStatus {
                source: &mut self.status.source,
                deleting_since: &mut self.status.deleting_since,
                removed: &mut self.status.removed,
                conditions: &mut self.status.conditions,
                events: &mut self.status.events,
            }
        }
    };
}

impl Kind for Session {
    const KIND: OwnerKind = OwnerKind::Session;
    shared_kind_methods!();
    fn into_record(self) -> Record {
        Record::Session(self)
    }
    fn from_record(record: Record) -> Result<Self, StoreError> {
        match record {
            Record::Session(s) => Ok(s),
            other => Err(wrong_kind(&other, Self::KIND)),
        }
    }
    fn fresh_status(&mut self, now: Timestamp, source: &str) {
        self.status = SessionStatus {
            phase: SessionPhase::Active,
            created_at: now,
            source: Some(source.to_string()),
            ..SessionStatus::default()
        };
    }
    fn accepts_reapply(&self) -> Result<(), StoreError> {
        Session::accepts_reapply(self).map_err(|e| StoreError::Conflict(e.to_string()))
    }
}

impl Kind for Agent {
    const KIND: OwnerKind = OwnerKind::Agent;
    shared_kind_methods!();
    fn into_record(self) -> Record {
        Record::Agent(self)
    }
    fn from_record(record: Record) -> Result<Self, StoreError> {
        match record {
            Record::Agent(a) => Ok(a),
            other => Err(wrong_kind(&other, Self::KIND)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_noting_handle_tells_its_own_writes_from_everyone_elses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (own, log) = store.noting_writes();
        let session = |name: &str| Record::Session(Session::named(Name::new(name).unwrap()));
        let seen = store.generation();

        own.apply(vec![session("mine")], API_SOURCE, Timestamp(1))
            .await
            .unwrap();
        assert!(log.wrote_all(seen, store.generation()));
        // A write that changes nothing moves nothing.
        own.apply(vec![session("mine")], API_SOURCE, Timestamp(1))
            .await
            .unwrap();
        assert!(log.wrote_all(seen, store.generation()));

        store
            .apply(vec![session("theirs")], API_SOURCE, Timestamp(1))
            .await
            .unwrap();
        own.update_session("mine", |s| {
            s.heartbeat(Timestamp(2)).unwrap();
            Ok(())
        })
        .await
        .unwrap();
        let now = store.generation();
        assert!(!log.wrote_all(seen, now), "someone else wrote in between");
        assert!(log.wrote_all(now - 1, now));

        log.forget_through(now);
        assert!(!log.wrote_all(now - 1, now), "forgotten");
        assert!(log.wrote_all(now, now), "nothing changed since");
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
