//! Carries out planned removals. Passes hand their removals over and go on, so there is one
//! queue for the whole daemon: the engine has `concurrency` removals in flight as long as there
//! is work, with no gap while the next pass lists and plans. The queue keeps removal order
//! across passes (containers, networks, volumes, images, paths: a later kind starts once no
//! earlier kind is queued or running), holds each object once however many passes planned it,
//! re-checks ownership on a fresh look right before each delete, and backs off per object so
//! a stuck object never spins. It does not know why an action was chosen.

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::inventory::{DockerObject, ObjectKey};
use crate::core::model::{ErrorClass, OwnerRef, ResourceKind};
use crate::core::plan::{Removal, Target};
use crate::docker::{DockerError, Engine};
use crate::paths;

/// Backoff after a failed removal: 1 s doubling up to 5 min, with jitter.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// After this many consecutive failures an object is reported on its owner's status.
pub const FAILING_AFTER: u32 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Removed,
    Failed {
        class: ErrorClass,
        message: String,
        failures: u32,
    },
    /// The fresh look showed it is no longer ours to remove (owner came back, tag moved).
    Skipped(String),
    /// Already gone when its turn came (removed by someone else, or by an earlier job that a
    /// pass listing at the same moment did not see finish): nothing done, nothing counted.
    Gone,
    /// Still backing off from an earlier failure, or dropped from the queue at shutdown.
    Deferred,
    /// A container stopped and kept: its owner's cleanup is delayed (`Removal::stop_only`).
    Stopped,
}

#[derive(Clone, Debug)]
pub struct Executed {
    pub removal: Removal,
    pub outcome: Outcome,
}

/// What the executor asks of its owner (the controller).
pub trait Hooks: Sync {
    /// The last word before a delete, on the object as it is now: may it still be removed?
    /// `forced` is an owner an operator asked to clean up even though it is live.
    fn may_remove(
        &self,
        fresh: &DockerObject,
        removal: &Removal,
        forced: Option<&OwnerRef>,
    ) -> bool;
    /// A removal finished. Called before its owner stops counting as busy (see `owners`).
    fn finished(&self, executed: &Executed);
    /// The queue ran empty after doing some work.
    fn idle(&self);
}

/// A submitted removal: already answered, or queued with a receiver for its outcome.
pub enum Ticket {
    Deferred,
    Queued(oneshot::Receiver<Outcome>),
}

impl Ticket {
    /// The outcome; `Deferred` if the executor stopped before getting to it.
    pub async fn outcome(self) -> Outcome {
        match self {
            Ticket::Deferred => Outcome::Deferred,
            Ticket::Queued(rx) => rx.await.unwrap_or(Outcome::Deferred),
        }
    }
}

struct Job {
    removal: Removal,
    forced: Option<OwnerRef>,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

#[derive(Debug)]
struct Backoff {
    failures: u32,
    retry_at: Instant,
}

#[derive(Default)]
struct State {
    /// Keys waiting to start, per kind (in removal order), each in arrival order.
    queued: BTreeMap<ResourceKind, VecDeque<ObjectKey>>,
    /// Every job queued or running.
    jobs: HashMap<ObjectKey, Job>,
    running: BTreeMap<ResourceKind, usize>,
    backoff: HashMap<ObjectKey, Backoff>,
}

impl State {
    /// More removals wait for a slot than one round of `concurrency` slots takes: work planned
    /// now would only queue behind them.
    fn backlogged(&self, concurrency: usize) -> bool {
        self.queued.values().map(VecDeque::len).sum::<usize>() >= concurrency
    }
}

pub struct Executor {
    concurrency: usize,
    paths_root: PathBuf,
    state: Mutex<State>,
    work: Notify,
    /// Fired when the queue stops being backlogged (see `State::backlogged`).
    running_low: Notify,
    /// The engine is wedged: start nothing (queued jobs wait; running ones finish or time out).
    paused: std::sync::atomic::AtomicBool,
}

impl Executor {
    pub fn new(concurrency: usize, paths_root: PathBuf) -> Self {
        Executor {
            concurrency: concurrency.max(1),
            paths_root,
            state: Mutex::new(State::default()),
            work: Notify::new(),
            running_low: Notify::new(),
            paused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Stops (or resumes) starting removals.
    pub fn pause(&self, paused: bool) {
        self.paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
        if !paused {
            self.work.notify_one();
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; if one did, the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a removal unless it is backing off. An object already queued or running is not
    /// queued twice; the ticket then follows the job already there.
    pub fn submit(&self, removal: Removal, forced: Option<OwnerRef>) -> Ticket {
        let key = key_of(&removal.target);
        let (tx, rx) = oneshot::channel();
        let mut s = self.state();
        if let Some(job) = s.jobs.get_mut(&key) {
            job.waiters.push(tx);
            job.forced = job.forced.take().or(forced);
            return Ticket::Queued(rx);
        }
        if s.backoff
            .get(&key)
            .is_some_and(|b| Instant::now() < b.retry_at)
        {
            return Ticket::Deferred;
        }
        let kind = removal.target.kind();
        s.queued.entry(kind).or_default().push_back(key.clone());
        s.jobs.insert(
            key,
            Job {
                removal,
                forced,
                waiters: vec![tx],
            },
        );
        drop(s);
        self.work.notify_one();
        Ticket::Queued(rx)
    }

    /// Owners with a removal queued or running: not finished yet, whatever a listing shows.
    pub fn owners(&self) -> BTreeSet<OwnerRef> {
        self.state()
            .jobs
            .values()
            .filter_map(|j| j.removal.owner.clone())
            .collect()
    }

    /// Removals queued or running, per kind.
    pub fn depth(&self) -> Vec<(ResourceKind, i64)> {
        let mut by_kind: BTreeMap<ResourceKind, i64> = BTreeMap::new();
        for key in self.state().jobs.keys() {
            *by_kind.entry(key.kind).or_default() += 1;
        }
        by_kind.into_iter().collect()
    }

    /// Returns once the executor is not backlogged (at once if it is not now).
    pub async fn until_not_backlogged(&self) {
        loop {
            let low = self.running_low.notified();
            tokio::pin!(low);
            // Registered before the check, so a drop in between is not missed.
            low.as_mut().enable();
            if !self.state().backlogged(self.concurrency) {
                return;
            }
            low.await;
        }
    }

    pub fn is_idle(&self) -> bool {
        self.state().jobs.is_empty()
    }

    /// The earliest instant, still to come, at which a deferred object may be retried. An entry
    /// whose time has passed was either resubmitted by the last pass or is no longer planned
    /// (gone by other means); it must not wake the loop again and again. Entries not retried
    /// for `BACKOFF_MAX` are forgotten.
    pub fn next_retry(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut s = self.state();
        s.backoff.retain(|_, b| b.retry_at + BACKOFF_MAX > now);
        s.backoff
            .values()
            .map(|b| b.retry_at)
            .filter(|t| *t > now)
            .min()
    }

    /// Works the queue until `shutdown`; then lets running removals finish (each Docker call
    /// has its own timeout), drops what has not started and returns.
    pub async fn run<E: Engine>(
        &self,
        engine: &E,
        hooks: &dyn Hooks,
        shutdown: &CancellationToken,
    ) {
        let mut running = FuturesUnordered::new();
        loop {
            if !shutdown.is_cancelled() {
                while let Some((key, removal, forced)) = self.start_next(running.len()) {
                    running.push(async move {
                        let outcome = self.one(engine, &removal, forced.as_ref(), hooks).await;
                        (key, Executed { removal, outcome })
                    });
                }
            } else if running.is_empty() {
                break;
            }
            tokio::select! {
                Some((key, executed)) = running.next() => {
                    hooks.finished(&executed);
                    if self.finish(&key, executed.outcome) {
                        hooks.idle();
                    }
                }
                _ = self.work.notified() => {}
                _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
            }
        }
        // Waiters of the jobs dropped here see `Deferred`; the backoff memory is kept.
        let mut s = self.state();
        let backoff = std::mem::take(&mut s.backoff);
        *s = State {
            backoff,
            ..State::default()
        };
    }

    /// The next job to start, if a slot is free and removal order allows one.
    fn start_next(&self, in_flight: usize) -> Option<(ObjectKey, Removal, Option<OwnerRef>)> {
        if in_flight >= self.concurrency || self.paused.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        let mut s = self.state();
        let s = &mut *s;
        // The earliest kind with anything queued or running gates every later kind.
        let kind = ResourceKind::ALL.into_iter().find(|k| {
            s.queued.get(k).is_some_and(|q| !q.is_empty())
                || s.running.get(k).is_some_and(|n| *n > 0)
        })?;
        let key = s.queued.get_mut(&kind)?.pop_front()?;
        let job = s.jobs.get(&key)?;
        *s.running.entry(kind).or_default() += 1;
        let started = (key, job.removal.clone(), job.forced.clone());
        if !s.backlogged(self.concurrency) {
            self.running_low.notify_waiters();
        }
        Some(started)
    }

    /// Retires a job, answers its waiters, and says whether the queue is now empty.
    fn finish(&self, key: &ObjectKey, outcome: Outcome) -> bool {
        let mut s = self.state();
        if let Some(n) = s.running.get_mut(&key.kind) {
            *n = n.saturating_sub(1);
        }
        if let Some(job) = s.jobs.remove(key) {
            for w in job.waiters {
                let _ = w.send(outcome.clone());
            }
        }
        s.jobs.is_empty()
    }

    async fn one<E: Engine>(
        &self,
        engine: &E,
        r: &Removal,
        forced: Option<&OwnerRef>,
        hooks: &dyn Hooks,
    ) -> Outcome {
        let result = match &r.target {
            Target::Docker(obj) => remove_docker(engine, obj, r, forced, hooks).await,
            Target::Path { path } => {
                let (root, path) = (self.paths_root.clone(), path.clone());
                match tokio::task::spawn_blocking(move || paths::remove_below(&root, &path)).await {
                    Ok(Ok(paths::Removal::AlreadyGone)) => Ok(Outcome::Gone),
                    Ok(Ok(_)) => Ok(Outcome::Removed),
                    Ok(Err(e)) => Err((ErrorClass::Io, e.to_string())),
                    Err(e) => Err((ErrorClass::Other, e.to_string())),
                }
            }
        };
        let key = key_of(&r.target);
        match result {
            Ok(outcome) => {
                self.state().backoff.remove(&key);
                outcome
            }
            Err((class, message)) => Outcome::Failed {
                class,
                message,
                failures: self.failed(key),
            },
        }
    }

    fn failed(&self, key: ObjectKey) -> u32 {
        let mut s = self.state();
        let b = s.backoff.entry(key).or_insert(Backoff {
            failures: 0,
            retry_at: Instant::now(),
        });
        b.failures += 1;
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << b.failures.min(16).saturating_sub(1))
            .min(BACKOFF_MAX);
        b.retry_at = Instant::now() + exp + jitter(exp / 5);
        b.failures
    }
}

async fn remove_docker<E: Engine>(
    engine: &E,
    obj: &DockerObject,
    r: &Removal,
    forced: Option<&OwnerRef>,
    hooks: &dyn Hooks,
) -> Result<Outcome, (ErrorClass, String)> {
    let fail = |e: DockerError| (e.class(), e.to_string());
    let Some(fresh) = engine.inspect(obj).await.map_err(fail)? else {
        return Ok(Outcome::Gone);
    };
    // Never trust the listing alone: the labels on the object itself must still say it is ours,
    // a reference must still point at the image that was planned, and no owner may have come
    // back to life since the pass that planned it.
    if fresh.id != obj.id || !hooks.may_remove(&fresh, r, forced) {
        return Ok(Outcome::Skipped(
            "no longer removable on a fresh look".into(),
        ));
    }
    if fresh.kind == ResourceKind::Container && fresh.running {
        match engine.stop(&fresh.id, r.stop_timeout.std()).await {
            Ok(()) | Err(DockerError::NotFound) => {}
            Err(e) => return Err(fail(e)),
        }
    }
    if r.stop_only {
        return Ok(Outcome::Stopped);
    }
    engine
        .remove(&fresh)
        .await
        .map(|()| Outcome::Removed)
        .map_err(fail)
}

pub(crate) fn key_of(t: &Target) -> ObjectKey {
    match t {
        Target::Docker(o) => o.key(),
        Target::Path { path } => ObjectKey {
            kind: ResourceKind::Path,
            target: path.to_string(),
        },
    }
}

fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let max_ms = max.as_millis().max(1) as u64;
    Duration::from_millis(u64::from(nanos) % max_ms)
}
