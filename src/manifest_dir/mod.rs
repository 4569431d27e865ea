//! Over 500 lines: 620 of code (sync's all-or-nothing bookkeeping per file, and the inotify watcher it owns) and its unit tests.
//!
//! The declarative manifest directory (`reaper serve --manifests DIR`), like kubelet's static
//! pods: every `*.yaml` / `*.yml` file in DIR is declared state.
//!
//! Guarantees:
//! - A valid file is applied all-or-nothing, with the file's absolute path as the records'
//!   `status.source`, so `reaper apply` / `reaper delete` refuse to change them.
//! - A record is deleted (marked `deletingSince`, so the controller removes its objects and then
//!   the record, exactly like `reaper delete`) only when its file is gone, or the file is valid
//!   and no longer declares it, and that is still so after [`CONFIRM_DELAY`] (editors and
//!   configuration tools replace files in several steps: a brief absence must not clean up a
//!   live session).
//! - A file that fails to read, validate or apply is reported (log, [`ManifestDir::errors`],
//!   `reaper_manifest_errors`), nothing from it is applied, and the records it applied before
//!   stay exactly as they were: a typo never deletes a live session.
//! - An unreadable or missing DIR deletes nothing: a wrong path must not look like "no manifests".
//!
//! Files are found by name: hidden files (editor swap files, tools' temporary files such as
//! `.x.yaml.tmp`) are ignored, and so are subdirectories. Symlinks are followed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::core::manifest::{self, Source, MAX_STREAM_BYTES};
use crate::core::model::{mark_for_deletion, OwnerRef, Record, Timestamp};
use crate::metrics::Metrics;
use crate::store::{ApplyAction, Store, StoreError, API_SOURCE};

/// Quiet time after the last filesystem event before a sync, so one editor save is one sync.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// A burst of events never delays a sync longer than this.
const DEBOUNCE_MAX: Duration = Duration::from_millis(600);
/// A record is deleted only if it is still undeclared this long after it was first seen so.
pub const CONFIRM_DELAY: Duration = Duration::from_millis(400);
/// Backstop rescan when notifications work (they miss changes behind symlinks, for one).
const RESCAN: Duration = Duration::from_secs(30);
/// Rescan interval without notifications, or while something is waiting to be retried.
const RETRY: Duration = Duration::from_secs(1);

/// The manifest directory's reconciler. Share it behind an `Arc`.
pub struct ManifestDir {
    dir: PathBuf,
    store: Store,
    metrics: Arc<Metrics>,
    confirm_delay: Duration,
    /// Failing files (or the directory itself) and why, keyed by path.
    errors: Mutex<BTreeMap<String, String>>,
    /// Something could not be applied yet for a reason that passes by itself (a record still
    /// being deleted); `run` then retries soon instead of waiting for the backstop.
    pending: Mutex<bool>,
    /// One sync at a time (the watcher and SIGHUP may both ask).
    sync_lock: tokio::sync::Mutex<()>,
}

/// One file as read in one scan.
enum FileState {
    Valid(Vec<Record>),
    Invalid(String),
}

/// One scan of the directory: every candidate file by its source string.
struct Scan {
    files: BTreeMap<String, FileState>,
}

/// What one pass did.
#[derive(Default)]
struct PassResult {
    changed: bool,
    /// Records of this dir that no valid file declares and whose file did not fail.
    undeclared: BTreeSet<(OwnerRef, String)>,
    errors: BTreeMap<String, String>,
    pending: bool,
}

impl ManifestDir {
    pub fn new(dir: PathBuf, store: Store, metrics: Arc<Metrics>) -> Self {
        // Absolute, but symlinks kept: the sources stay stable if a link is repointed.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        ManifestDir {
            dir,
            store,
            metrics,
            confirm_delay: CONFIRM_DELAY,
            errors: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(false),
            sync_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Changes how long an undeclared record must stay undeclared before it is deleted.
    pub fn with_confirm_delay(mut self, delay: Duration) -> Self {
        self.confirm_delay = delay;
        self
    }

    /// The directory, made absolute: record sources are `<dir>/<file>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Failing files (or the directory) with their error, sorted by path.
    pub fn errors(&self) -> Vec<(String, String)> {
        lock(&self.errors)
            .iter()
            .map(|(f, e)| (f.clone(), e.clone()))
            .collect()
    }

    /// Whether a record's source is a file of this directory.
    pub fn owns_source(&self, source: &str) -> bool {
        Path::new(source).parent() == Some(self.dir.as_path())
    }

    /// Makes the store match the directory; returns whether any record changed. See the
    /// module documentation for what is applied and what is deleted. An `Err` is a store
    /// failure (unreadable, disk full); nothing was deleted because of it.
    pub async fn sync(&self) -> Result<bool, StoreError> {
        let _one = self.sync_lock.lock().await;
        let result = self.sync_locked().await;
        if let Err(e) = &result {
            warn!(dir = %self.dir.display(), error = %e, "Manifest directory sync failed; will retry.");
            *lock(&self.pending) = true;
        }
        result
    }

    async fn sync_locked(&self) -> Result<bool, StoreError> {
        let first = match self.scan() {
            Ok(scan) => scan,
            Err(message) => {
                let mut errors = BTreeMap::new();
                errors.insert(self.dir.display().to_string(), message);
                self.report(errors);
                *lock(&self.pending) = true;
                return Ok(false);
            }
        };
        let mut result = self.pass(&first).await?;
        let mut changed = result.changed;
        let mut to_delete = result.undeclared.clone();
        if !to_delete.is_empty() && !self.confirm_delay.is_zero() {
            tokio::time::sleep(self.confirm_delay).await;
            match self.scan() {
                Ok(second) => {
                    result = self.pass(&second).await?;
                    changed |= result.changed;
                    to_delete = to_delete
                        .intersection(&result.undeclared)
                        .cloned()
                        .collect();
                }
                Err(message) => {
                    result
                        .errors
                        .insert(self.dir.display().to_string(), message);
                    result.pending = true;
                    to_delete.clear();
                }
            }
        }
        for (owner, source) in &to_delete {
            changed |= self.delete(owner, source).await?;
        }
        *lock(&self.pending) = result.pending;
        self.report(result.errors);
        Ok(changed)
    }

    /// Applies every valid file, hands records over between files, and finds what no file
    /// declares any more (without deleting it).
    async fn pass(&self, scan: &Scan) -> Result<PassResult, StoreError> {
        let mut out = PassResult::default();
        // Every record of this dir, by owner, with its source and whether it is being deleted.
        let mut current: BTreeMap<OwnerRef, (String, bool)> = BTreeMap::new();
        // Sessions that have ended: applying them again is refused until the record is gone.
        let mut ended: BTreeSet<OwnerRef> = BTreeSet::new();
        for s in self.store.sessions()? {
            let owner = Record::Session(s.clone()).owner();
            if s.accepts_reapply().is_err() {
                ended.insert(owner.clone());
            }
            let source = s.status.source.unwrap_or_else(|| API_SOURCE.to_string());
            if self.owns_source(&source) {
                current.insert(owner, (source, s.status.deleting_since.is_some()));
            }
        }
        for a in self.store.agents()? {
            let owner = Record::Agent(a.clone()).owner();
            let source = a.status.source.unwrap_or_else(|| API_SOURCE.to_string());
            if self.owns_source(&source) {
                current.insert(owner, (source, a.status.deleting_since.is_some()));
            }
        }

        // Who declares what. A record declared by two files belongs to the one that holds it
        // now, else to the first by name; the other file is in error.
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        let mut first: BTreeMap<OwnerRef, &str> = BTreeMap::new();
        for (file, state) in &scan.files {
            match state {
                FileState::Invalid(e) => {
                    failed.insert(file.clone(), e.clone());
                }
                FileState::Valid(records) => {
                    for r in records {
                        first.entry(r.owner()).or_insert(file.as_str());
                    }
                }
            }
        }
        for (file, state) in &scan.files {
            let FileState::Valid(records) = state else {
                continue;
            };
            for r in records {
                let owner = r.owner();
                let holder = match current.get(&owner) {
                    Some((src, _)) if declared_by(scan, src, &owner) => src.as_str(),
                    _ => first.get(&owner).copied().unwrap_or_default(),
                };
                if holder != file {
                    failed.entry(file.clone()).or_insert_with(|| {
                        format!("{owner} is also declared in {holder}; declare it in one file only")
                    });
                }
            }
        }
        // What the files we act on declare; a failing file declares nothing we may act on.
        let mut declared: BTreeMap<OwnerRef, String> = BTreeMap::new();
        for (file, state) in &scan.files {
            if let (FileState::Valid(records), false) = (state, failed.contains_key(file)) {
                for r in records {
                    declared.insert(r.owner(), file.clone());
                }
            }
        }

        // Hand-overs: a record moved from one file to another keeps its status and objects.
        for (owner, (src, deleting)) in &current {
            if let Some(to) = declared.get(owner) {
                if to != src
                    && !*deleting
                    && !failed.contains_key(src)
                    && !declared_by(scan, src, owner)
                {
                    out.changed |= self.hand_over(owner, src, to).await?;
                }
            }
        }

        let now = Timestamp::now();
        for (file, state) in &scan.files {
            let FileState::Valid(records) = state else {
                continue;
            };
            if failed.contains_key(file) {
                continue;
            }
            // A record of this file still being deleted is created again once it is gone.
            let (waiting, batch): (Vec<Record>, Vec<Record>) = records
                .iter()
                .cloned()
                .partition(|r| matches!(current.get(&r.owner()), Some((_, true))));
            if !waiting.is_empty() {
                out.pending = true;
            }
            match self.store.apply(batch, file, now).await {
                Ok(outcomes) => {
                    for o in outcomes
                        .iter()
                        .filter(|o| o.action != ApplyAction::Unchanged)
                    {
                        info!(file = %file, owner = %format!("{}/{}", o.kind.as_str(), o.name),
                            action = o.action.as_str(), "Applied from the manifest directory.");
                        out.changed = true;
                    }
                }
                Err(e @ (StoreError::Conflict(_) | StoreError::Invalid(_))) => {
                    failed.insert(file.clone(), e.to_string());
                    // A conflict may clear by itself (a record being deleted elsewhere); one
                    // with a session that has ended does not: the file must change.
                    out.pending |= !records.iter().any(|r| ended.contains(&r.owner()));
                }
                Err(e) => return Err(e),
            }
        }

        for (owner, (src, deleting)) in &current {
            if *deleting || failed.contains_key(src) || declared.contains_key(owner) {
                continue;
            }
            // Its file is gone, or valid and silent about it.
            out.undeclared.insert((owner.clone(), src.clone()));
        }
        out.errors = failed;
        Ok(out)
    }

    /// Moves a record's source from `from` to `to`, if it still is `from`'s and not deleting.
    async fn hand_over(&self, owner: &OwnerRef, from: &str, to: &str) -> Result<bool, StoreError> {
        let check = |source: &mut Option<String>, deleting: bool| {
            if deleting || source.as_deref() != Some(from) {
                return Err(StoreError::Conflict("changed meanwhile".into()));
            }
            *source = Some(to.to_string());
            Ok(())
        };
        let r = self
            .store
            .update_owner(owner, |c| check(c.source, c.deleting_since.is_some()))
            .await;
        match r {
            Ok(()) => {
                info!(owner = %owner, from, to, "Record moved to another manifest file.");
                Ok(true)
            }
            Err(StoreError::Conflict(_) | StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Marks a record deleted (the controller removes its objects, then the record), if it
    /// still belongs to `source`.
    async fn delete(&self, owner: &OwnerRef, source: &str) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        let mark = |src: Option<&str>, since: &mut Option<Timestamp>, events: &mut Vec<_>| {
            if src != Some(source) || !mark_for_deletion(since, events, now) {
                return Err(StoreError::Conflict("changed meanwhile".into()));
            }
            Ok(())
        };
        let r = self
            .store
            .update_owner(owner, |c| {
                mark(c.source.as_deref(), c.deleting_since, c.events)
            })
            .await;
        match r {
            Ok(()) => {
                info!(owner = %owner, file = source,
                    "No longer declared in the manifest directory; deleting it (objects first).");
                Ok(true)
            }
            Err(StoreError::Conflict(_) | StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Publishes the current errors: logs what is new or fixed, sets the metric.
    fn report(&self, new: BTreeMap<String, String>) {
        let mut errors = lock(&self.errors);
        for (file, e) in &new {
            if errors.get(file) != Some(e) {
                error!(file = %file, error = %e,
                    "Manifest file not applied; the records it declared before are kept as they were.");
            }
        }
        for file in errors.keys() {
            if !new.contains_key(file) {
                info!(file = %file, "Manifest file error resolved.");
            }
        }
        self.metrics
            .set_manifest_errors(i64::try_from(new.len()).unwrap_or(i64::MAX));
        *errors = new;
    }

    /// Reads every candidate file. `Err` when the directory itself cannot be listed.
    fn scan(&self) -> Result<Scan, String> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            format!(
                "cannot read the manifest directory {}: {e}; nothing is deleted until it can be read",
                self.dir.display()
            )
        })?;
        let mut files = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                format!(
                    "cannot list the manifest directory {}: {e}",
                    self.dir.display()
                )
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                let shown = self.dir.join(&name).display().to_string();
                files.insert(
                    shown,
                    FileState::Invalid("the file name is not UTF-8; rename it".into()),
                );
                continue;
            };
            if !is_candidate(name) {
                continue;
            }
            let path = self.dir.join(name);
            let source = path.display().to_string();
            match read_file(&path) {
                Ok(None) => {}
                Ok(Some(bytes)) => {
                    files.insert(source.clone(), parse(&source, &bytes));
                }
                Err(e) => {
                    files.insert(source, FileState::Invalid(e));
                }
            }
        }
        Ok(Scan { files })
    }

    /// Watches the directory and syncs on every change (debounced), with a periodic rescan as
    /// a backstop. What a sync changes reaches the controller through the store's change
    /// stream. Returns when `shutdown` is cancelled.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut watcher = Watcher::new(&self.dir);
        let mut next_sync = tokio::time::Instant::now();
        loop {
            let got_event = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next_sync) => false,
                ok = next_event(&mut watcher) => ok,
            };
            if got_event {
                // Debounce: wait for a quiet moment, bounded.
                let started = tokio::time::Instant::now();
                while started.elapsed() < DEBOUNCE_MAX {
                    match tokio::time::timeout(DEBOUNCE, next_event(&mut watcher)).await {
                        Ok(true) => continue,
                        _ => break,
                    }
                }
            }
            if watcher.as_ref().is_none_or(|w| w.lost) {
                // The directory was created, replaced or removed: watch what is there now.
                watcher = Watcher::new(&self.dir);
            }
            if shutdown.is_cancelled() {
                return;
            }
            // Errors are logged and retried by `sync` itself.
            let _ = self.sync().await;
            let retry = *lock(&self.pending) || watcher.is_none();
            next_sync = tokio::time::Instant::now() + if retry { RETRY } else { RESCAN };
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `source` is a valid file in `scan` that declares `owner`.
fn declared_by(scan: &Scan, source: &str, owner: &OwnerRef) -> bool {
    matches!(scan.files.get(source), Some(FileState::Valid(rs)) if rs.iter().any(|r| r.owner() == *owner))
}

/// `*.yaml` and `*.yml`, not hidden.
fn is_candidate(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// The file's bytes, `None` if it vanished or is not a regular file (after symlinks).
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the file: {e}")),
    };
    match file.metadata() {
        Ok(m) if !m.is_file() => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(format!("cannot read the file: {e}")),
    }
    let limit = u64::try_from(MAX_STREAM_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if bytes.len() > MAX_STREAM_BYTES {
        return Err(format!(
            "the file is larger than {MAX_STREAM_BYTES} bytes (32 MiB)"
        ));
    }
    Ok(Some(bytes))
}

fn parse(source: &str, bytes: &[u8]) -> FileState {
    let text = match manifest::decode_utf8(source, bytes) {
        Ok(t) => t,
        Err(e) => return FileState::Invalid(e.to_string()),
    };
    match manifest::parse_batch(&[Source {
        name: source,
        content: text,
    }]) {
        Ok(parsed) => {
            for w in &parsed.warnings {
                warn!(file = %source, "{w}");
            }
            FileState::Valid(parsed.records)
        }
        Err(errs) => FileState::Invalid(errs.to_string()),
    }
}

/// inotify on the directory. `lost` is set when the watch ended (the directory was removed,
/// moved or unmounted), so the caller re-creates it.
struct Watcher {
    fd: AsyncFd<OwnedFd>,
    lost: bool,
}

impl Watcher {
    fn new(dir: &Path) -> Option<Watcher> {
        let made = (|| -> std::io::Result<Watcher> {
            let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)?;
            use inotify::WatchFlags as W;
            inotify::add_watch(
                &fd,
                dir,
                W::CREATE
                    | W::CLOSE_WRITE
                    | W::MODIFY
                    | W::ATTRIB
                    | W::MOVED_TO
                    | W::MOVED_FROM
                    | W::DELETE
                    | W::DELETE_SELF
                    | W::MOVE_SELF
                    | W::ONLYDIR,
            )?;
            // `new` is deprecated because a generic `T` may change or close its fd; an `OwnedFd`
            // cannot, which is exactly the invariant `register` (unsafe) asks the caller for.
            #[allow(deprecated)]
            let fd = AsyncFd::new(fd)?;
            Ok(Watcher { fd, lost: false })
        })();
        match made {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e,
                    "Cannot watch the manifest directory; rescanning it every second instead.");
                None
            }
        }
    }

    /// Waits for events; true when one concerns a manifest file or the directory itself.
    async fn next(&mut self) -> bool {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                self.lost = true;
                return false;
            };
            let mut relevant = false;
            let mut lost = false;
            let res = guard.try_io(|fd| {
                let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
                let mut reader = inotify::Reader::new(fd.get_ref(), &mut buf);
                loop {
                    match reader.next() {
                        Ok(ev) => {
                            use inotify::ReadFlags as R;
                            let flags = ev.events();
                            if flags
                                .intersects(R::IGNORED | R::DELETE_SELF | R::MOVE_SELF | R::UNMOUNT)
                            {
                                lost = true;
                            }
                            let named = ev
                                .file_name()
                                .and_then(|n| n.to_str().ok())
                                .is_some_and(is_candidate);
                            if named
                                || ev.file_name().is_none()
                                || flags.contains(R::QUEUE_OVERFLOW)
                            {
                                relevant = true;
                            }
                        }
                        Err(e) if e == rustix::io::Errno::WOULDBLOCK && (relevant || lost) => {
                            return Ok(());
                        }
                        Err(e) => return Err(std::io::Error::from(e)),
                    }
                }
            });
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "Reading manifest directory notifications failed.");
                    self.lost = true;
                    return false;
                }
                // Would block: readiness was cleared; wait again.
                Err(_) => {}
            }
            if lost {
                self.lost = true;
            }
            if relevant || lost {
                return true;
            }
        }
    }
}

/// The next relevant event, or never when there is no usable watcher.
async fn next_event(watcher: &mut Option<Watcher>) -> bool {
    match watcher {
        Some(w) if !w.lost => w.next().await,
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Name, OwnerKind, SessionPhase};

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        store: Store,
        metrics: Arc<Metrics>,
        md: Arc<ManifestDir>,
    }

    fn fixture(confirm: Duration) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("manifests");
        std::fs::create_dir(&dir).unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let md = Arc::new(
            ManifestDir::new(dir.clone(), store.clone(), metrics.clone())
                .with_confirm_delay(confirm),
        );
        Fixture {
            _tmp: tmp,
            dir,
            store,
            metrics,
            md,
        }
    }

    fn session(name: &str, ttl: &str) -> String {
        format!(
            "apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  ttl: {ttl}\n"
        )
    }

    fn agent(name: &str) -> String {
        format!("apiVersion: reaper/v1\nkind: Agent\nmetadata:\n  name: {name}\n")
    }

    impl Fixture {
        fn write(&self, file: &str, text: &str) -> String {
            let path = self.dir.join(file);
            // Like an editor or a configuration tool: a temp file, then a rename.
            let tmp = self.dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            path.display().to_string()
        }
        fn source_of(&self, name: &str) -> Option<String> {
            self.store
                .session(name)
                .unwrap()
                .and_then(|s| s.status.source)
        }
        fn deleting(&self, name: &str) -> bool {
            self.store
                .session(name)
                .unwrap()
                .is_some_and(|s| s.status.deleting_since.is_some())
        }
        fn ttl(&self, name: &str) -> String {
            let s = self.store.session(name).unwrap().unwrap();
            format!("{:?}", s.spec.ttl.unwrap().std())
        }
        fn metric(&self) -> String {
            self.metrics
                .encode()
                .lines()
                .find(|l| l.starts_with("reaper_manifest_errors "))
                .unwrap_or("")
                .to_string()
        }
    }

    #[tokio::test]
    async fn applies_new_and_edited_files_with_the_file_as_source() {
        let f = fixture(Duration::ZERO);
        let a = f.write(
            "a.yaml",
            &format!("{}---\n{}", session("s1", "1h"), agent("ag1")),
        );
        assert!(f.md.sync().await.unwrap());
        assert_eq!(f.source_of("s1").as_deref(), Some(a.as_str()));
        assert_eq!(
            f.store
                .agent("ag1")
                .unwrap()
                .unwrap()
                .status
                .source
                .as_deref(),
            Some(a.as_str())
        );
        assert!(a.starts_with('/'), "sources are absolute: {a}");
        // Nothing new: nothing changes.
        assert!(!f.md.sync().await.unwrap());

        f.write(
            "a.yaml",
            &format!("{}---\n{}", session("s1", "2h"), agent("ag1")),
        );
        assert!(f.md.sync().await.unwrap());
        assert_eq!(f.ttl("s1"), "7200s");
        let s = f.store.session("s1").unwrap().unwrap();
        assert_eq!(s.status.phase, SessionPhase::Active);
        assert!(f.md.errors().is_empty());
        assert_eq!(f.metric(), "reaper_manifest_errors 0");
    }

    #[tokio::test]
    async fn removed_documents_and_files_are_deleted_and_others_kept() {
        let f = fixture(Duration::ZERO);
        f.write(
            "a.yaml",
            &format!("{}---\n{}", session("s1", "1h"), session("s2", "1h")),
        );
        f.write("b.yml", &session("s3", "1h"));
        f.md.sync().await.unwrap();

        f.write("a.yaml", &session("s1", "1h"));
        assert!(f.md.sync().await.unwrap());
        assert!(!f.deleting("s1"));
        assert!(
            f.deleting("s2"),
            "a document removed from its file is deleted"
        );
        assert!(!f.deleting("s3"));

        std::fs::remove_file(f.dir.join("b.yml")).unwrap();
        assert!(f.md.sync().await.unwrap());
        assert!(
            f.deleting("s3"),
            "the records of a deleted file are deleted"
        );
        assert!(!f.deleting("s1"));
    }

    #[tokio::test]
    async fn a_bad_file_is_reported_and_changes_nothing() {
        let f = fixture(Duration::ZERO);
        let a = f.write(
            "a.yaml",
            &format!("{}---\n{}", session("s1", "1h"), session("s2", "1h")),
        );
        f.md.sync().await.unwrap();

        // A typo that also drops s2 and edits s1: none of it may happen.
        f.write("a.yaml", &format!("{}  tll: 3h\n", session("s1", "2h")));
        assert!(!f.md.sync().await.unwrap());
        assert!(!f.deleting("s1") && !f.deleting("s2"));
        assert_eq!(f.ttl("s1"), "3600s");
        let errors = f.md.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, a);
        assert!(errors[0].1.contains("line 7"), "{errors:?}");
        assert!(errors[0].1.contains("tll"), "{errors:?}");
        assert_eq!(f.metric(), "reaper_manifest_errors 1");

        // Invalid UTF-8 and unreadable-as-YAML files are errors too.
        std::fs::write(f.dir.join("bin.yaml"), b"\xff\xfe").unwrap();
        f.md.sync().await.unwrap();
        assert_eq!(f.metric(), "reaper_manifest_errors 2");

        std::fs::remove_file(f.dir.join("bin.yaml")).unwrap();
        f.write("a.yaml", &session("s1", "2h"));
        assert!(f.md.sync().await.unwrap());
        assert!(f.md.errors().is_empty());
        assert_eq!(f.metric(), "reaper_manifest_errors 0");
        assert_eq!(f.ttl("s1"), "7200s");
        assert!(f.deleting("s2"));
    }

    #[tokio::test]
    async fn a_record_of_the_api_is_not_taken_over() {
        let f = fixture(Duration::ZERO);
        let rec = |name: &str| {
            let parsed = manifest::parse_batch(&[Source {
                name: "x",
                content: &session(name, "1h"),
            }])
            .unwrap();
            parsed.records
        };
        f.store
            .apply(rec("api1"), API_SOURCE, Timestamp::now())
            .await
            .unwrap();
        f.write(
            "a.yaml",
            &format!("{}---\n{}", session("new1", "1h"), session("api1", "2h")),
        );
        assert!(!f.md.sync().await.unwrap());
        assert!(
            f.store.session("new1").unwrap().is_none(),
            "all or nothing per file"
        );
        assert_eq!(f.source_of("api1").as_deref(), Some(API_SOURCE));
        assert_eq!(f.ttl("api1"), "3600s");
        let errors = f.md.errors();
        assert!(errors[0].1.contains("reaper apply"), "{errors:?}");
    }

    #[tokio::test]
    async fn a_record_declared_twice_stays_with_its_file() {
        let f = fixture(Duration::ZERO);
        let b = f.write("b.yaml", &session("s1", "1h"));
        f.md.sync().await.unwrap();
        let a = f.write(
            "a.yaml",
            &format!("{}---\n{}", session("s1", "2h"), session("s9", "1h")),
        );
        f.md.sync().await.unwrap();
        assert_eq!(f.source_of("s1").as_deref(), Some(b.as_str()));
        assert_eq!(f.ttl("s1"), "3600s");
        assert!(!f.deleting("s1"));
        assert!(f.store.session("s9").unwrap().is_none());
        let errors = f.md.errors();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, a);
        assert!(errors[0].1.contains(&b), "{errors:?}");
    }

    #[tokio::test]
    async fn a_record_moved_to_another_file_is_handed_over_not_deleted() {
        let f = fixture(Duration::ZERO);
        f.write(
            "a.yaml",
            &format!("{}---\n{}", session("s1", "1h"), session("s2", "1h")),
        );
        f.md.sync().await.unwrap();
        f.write("a.yaml", &session("s1", "1h"));
        let b = f.write("b.yaml", &session("s2", "1h"));
        assert!(f.md.sync().await.unwrap());
        assert!(!f.deleting("s2"));
        assert_eq!(f.source_of("s2").as_deref(), Some(b.as_str()));
        assert!(f.md.errors().is_empty(), "{:?}", f.md.errors());
    }

    #[tokio::test]
    async fn an_unreadable_directory_deletes_nothing() {
        let f = fixture(Duration::ZERO);
        f.write("a.yaml", &session("s1", "1h"));
        f.md.sync().await.unwrap();
        let moved = f.dir.with_file_name("elsewhere");
        std::fs::rename(&f.dir, &moved).unwrap();
        assert!(!f.md.sync().await.unwrap());
        assert!(!f.deleting("s1"));
        assert_eq!(f.md.errors().len(), 1);
        assert_eq!(f.metric(), "reaper_manifest_errors 1");
        std::fs::rename(&moved, &f.dir).unwrap();
        f.md.sync().await.unwrap();
        assert!(f.md.errors().is_empty());
    }

    #[tokio::test]
    async fn hidden_and_other_files_are_ignored() {
        let f = fixture(Duration::ZERO);
        std::fs::write(f.dir.join(".a.yaml.swp"), "garbage: [").unwrap();
        std::fs::write(f.dir.join("notes.txt"), "garbage: [").unwrap();
        std::fs::write(f.dir.join("a.yaml~"), "garbage: [").unwrap();
        std::fs::create_dir(f.dir.join("sub.yaml")).unwrap();
        assert!(!f.md.sync().await.unwrap());
        assert!(f.md.errors().is_empty(), "{:?}", f.md.errors());
    }

    #[tokio::test]
    async fn a_file_briefly_absent_is_not_deleted() {
        let f = fixture(Duration::from_millis(300));
        let a = f.write("a.yaml", &session("s1", "1h"));
        f.md.sync().await.unwrap();
        // Some tools move the old file away before the new one is in place.
        std::fs::rename(&a, f.dir.join("a.yaml.bak")).unwrap();
        let md = f.md.clone();
        let sync = tokio::spawn(async move { md.sync().await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        f.write("a.yaml", &session("s1", "1h"));
        sync.await.unwrap().unwrap();
        assert!(!f.deleting("s1"));
    }

    #[tokio::test]
    async fn a_record_declared_again_while_deleted_comes_back_once_gone() {
        let f = fixture(Duration::ZERO);
        f.write(
            "a.yaml",
            &format!("{}---\n{}", session("s1", "1h"), session("s2", "1h")),
        );
        f.md.sync().await.unwrap();
        f.write("a.yaml", &session("s1", "1h"));
        f.md.sync().await.unwrap();
        assert!(f.deleting("s2"));
        f.write(
            "a.yaml",
            &format!("{}---\n{}", session("s1", "2h"), session("s2", "1h")),
        );
        assert!(f.md.sync().await.unwrap());
        assert_eq!(f.ttl("s1"), "7200s", "the rest of the file is applied");
        assert!(f.deleting("s2"));
        assert!(*lock(&f.md.pending));
        // The controller finished the deletion.
        f.store
            .remove(&OwnerRef {
                kind: OwnerKind::Session,
                name: Name::new("s2").unwrap(),
            })
            .await
            .unwrap();
        assert!(f.md.sync().await.unwrap());
        assert!(f.store.session("s2").unwrap().is_some());
        assert!(!f.deleting("s2"));
        assert!(!*lock(&f.md.pending));
    }

    #[tokio::test]
    async fn a_file_that_declares_an_ended_session_is_reported_and_not_applied() {
        let f = fixture(Duration::ZERO);
        let a = f.write(
            "a.yaml",
            &format!("{}---\n{}", session("s1", "1h"), session("s2", "1h")),
        );
        f.md.sync().await.unwrap();
        // The workflow ended and its objects went: s1 is Cleaned.
        let ended_at = Timestamp(1_700_000_000_000);
        f.store
            .update_session("s1", |s| {
                s.end(
                    crate::core::model::EndReason::Succeeded,
                    ended_at,
                    crate::core::model::Duration::ZERO,
                );
                s.mark_cleaned(ended_at);
                Ok(())
            })
            .await
            .unwrap();

        // Same file, and an edit of s2: the file is in error, and none of it is applied.
        f.write(
            "a.yaml",
            &format!("{}---\n{}", session("s1", "1h"), session("s2", "2h")),
        );
        assert!(!f.md.sync().await.unwrap());
        let errors = f.md.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, a);
        let e = &errors[0].1;
        for part in [
            "session/s1 ended at 2023-11-14T22:13:20Z and is cleaned now",
            &format!("Remove it from {a}"),
            "give it a new name",
        ] {
            assert!(e.contains(part), "{part:?} missing from {e:?}");
        }
        assert!(
            !e.contains("reaper delete"),
            "a file's record is not deleted by hand: {e}"
        );
        assert_eq!(f.metric(), "reaper_manifest_errors 1");
        assert_eq!(f.ttl("s2"), "3600s", "nothing of the file is applied");
        let s1 = f.store.session("s1").unwrap().unwrap();
        assert_eq!(s1.status.phase, SessionPhase::Cleaned);
        assert!(!f.deleting("s1"));
        assert!(
            !*lock(&f.md.pending),
            "it does not clear by itself: no fast retries"
        );

        // The way forward: the document goes, so does the record; the rest is applied.
        f.write("a.yaml", &session("s2", "2h"));
        assert!(f.md.sync().await.unwrap());
        assert!(f.md.errors().is_empty());
        assert!(f.deleting("s1"));
        assert_eq!(f.ttl("s2"), "7200s");
    }

    #[tokio::test]
    async fn run_notices_changes_quickly_and_stops_on_shutdown() {
        let f = fixture(CONFIRM_DELAY);
        let changes = f.store.subscribe();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(f.md.clone().run(shutdown.clone()));
        let wait = |what: &'static str, cond: Box<dyn Fn() -> bool>| async move {
            let started = std::time::Instant::now();
            while !cond() {
                assert!(
                    started.elapsed() < Duration::from_secs(2),
                    "not noticed within 2 s: {what}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            started.elapsed()
        };
        // Let the first (empty) sync and the watch happen.
        tokio::time::sleep(Duration::from_millis(200)).await;

        f.write("a.yaml", &session("s1", "1h"));
        let store = f.store.clone();
        wait(
            "created",
            Box::new(move || store.session("s1").unwrap().is_some()),
        )
        .await;
        // The controller learns of it from the store's change stream.
        wait(
            "the change stream",
            Box::new(move || changes.has_changed().unwrap_or(false)),
        )
        .await;

        // In-place write (no rename), as `echo >` does.
        std::fs::write(f.dir.join("a.yaml"), session("s1", "5h")).unwrap();
        let store = f.store.clone();
        wait(
            "edited",
            Box::new(move || {
                store
                    .session("s1")
                    .unwrap()
                    .unwrap()
                    .spec
                    .ttl
                    .map(|t| t.std())
                    == Some(Duration::from_secs(5 * 3600))
            }),
        )
        .await;

        std::fs::remove_file(f.dir.join("a.yaml")).unwrap();
        let store = f.store.clone();
        wait(
            "deleted",
            Box::new(move || {
                store
                    .session("s1")
                    .unwrap()
                    .is_some_and(|s| s.status.deleting_since.is_some())
            }),
        )
        .await;

        // The directory itself replaced: the watch follows the new one.
        std::fs::remove_dir(&f.dir).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::create_dir(&f.dir).unwrap();
        f.write("b.yaml", &session("s7", "1h"));
        let store = f.store.clone();
        wait(
            "new dir",
            Box::new(move || store.session("s7").unwrap().is_some()),
        )
        .await;

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("run returns on shutdown")
            .unwrap();
    }
}
