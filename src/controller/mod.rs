//! The reconcile loop. Level-triggered: every pass reads the whole desired state (store) and the
//! whole actual state (Docker, paths), plans, persists the status changes that gate deletions,
//! and hands the removals to the executor's queue without waiting for them, so a session ended
//! meanwhile is planned while earlier removals still run. Outcomes come back through
//! `Hooks`; the next pass writes them to the owners' status before it may call an owner done.
//! Record changes (the loop follows the store's change stream; writers never poke it) and
//! deadlines wake the loop within milliseconds (record changes within
//! `BACKLOG_COALESCE` while the removal queue is backlogged), Docker events about our objects
//! within `EVENT_COALESCE`; a periodic resync makes it correct when events are lost.
//! It fails closed: if the store or a Docker listing cannot be read, the pass deletes nothing.

pub mod executor;

use futures_util::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::api::wire::{BlastRadiusHold, Health};
use crate::core::inventory::{short_id, Actual, DockerObject};
use crate::core::liveness::LiveOwners;
use crate::core::model::{
    set_condition, Agent, AgentPhase, Condition, EndReason, EngineInfo, ObjectCounts, OwnerKind,
    OwnerRef, ResourceKind, SerialExits, SerialExitsSetting, Session, SessionPhase, StopCause,
    Timestamp,
};
use crate::core::ownership::{self, Matchers, Rules, AGENT_LABEL, SESSION_LABEL};
use crate::core::plan::{self, Plan, PlanConfig, Removal, Scope, Target, Transition};
use crate::docker::{DockerError, Engine, EventHint, Selectors};
use crate::metrics::Metrics;
use crate::paths;
use crate::store::{Store, StoreError, WriteLog};
use crate::Error;
use executor::{Executed, Executor, Hooks, Outcome, Ticket, FAILING_AFTER};

/// Backoff for failed passes (store or Docker unreadable), as kube-runtime's default.
const PASS_BACKOFF_MIN: Duration = Duration::from_millis(800);
const PASS_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Docker events of ours start at most one pass per this interval: a workflow system starting
/// a hundred containers should not cost a hundred full listings.
const EVENT_COALESCE: Duration = Duration::from_millis(250);
/// While the removal queue is backlogged, a triggered pass waits at most this long for more
/// triggers to gather.
const BACKLOG_COALESCE: Duration = Duration::from_millis(250);
/// The blast-radius hold names this many of the orphans it holds, in the log and the status.
const HOLD_EXAMPLES: usize = 5;
/// This many passes in a row whose listings timed out while `/_ping` answered mean the engine
/// is wedged (the libnetwork exit deadlock), not slow.
const WEDGED_AFTER: u32 = 3;

/// What the controller needs from the daemon config.
#[derive(Clone, Debug)]
pub struct Settings {
    pub rules: Rules,
    pub orphan_grace: crate::core::model::Duration,
    /// The blast-radius guard: more orphan removals due in one pass than this, and none is made.
    pub max_orphan_removals: usize,
    /// How long a `Running` agent may have no running container before it is set `Stopped`.
    pub agent_running_grace: crate::core::model::Duration,
    pub cleanup_delays: crate::core::model::CleanupDelays,
    pub history_retention: crate::core::model::Duration,
    pub resync_interval: Duration,
    pub concurrency: usize,
    pub paths_root: std::path::PathBuf,
    pub dry_run: bool,
    pub serial_exits: SerialExitsSetting,
}

/// The outcome of one pass, for logs, `--once` and `reaper cleanup`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    pub removed: Vec<Target>,
    pub failed: Vec<(Target, String)>,
    pub skipped: usize,
    pub deferred: usize,
    /// Dry run: what would have been removed.
    pub planned: Vec<Target>,
}

pub struct Controller<E: Engine> {
    store: Store,
    /// The same store; the controller's own status writes go through it and are noted in
    /// `own_writes`, so that they do not wake the loop as everyone else's changes do.
    own: Store,
    own_writes: Arc<WriteLog>,
    pub engine: Arc<E>,
    pub metrics: Arc<Metrics>,
    settings: RwLock<Settings>,
    executor: Executor,
    wake: Notify,
    pass_lock: tokio::sync::Mutex<()>,
    health: RwLock<Health>,
    restarted_at: Timestamp,
    manifest_dir: RwLock<Option<Arc<crate::manifest_dir::ManifestDir>>>,
    /// The desired state the executor's last-moment re-check goes by; see `desired`.
    desired: Mutex<Option<Arc<Desired>>>,
    /// Status changes from finished removals not yet written, per owner.
    unrecorded: Mutex<BTreeMap<OwnerRef, StatusDelta>>,
    /// Since the queue last ran empty: something was removed, or a Docker event was held back.
    /// Either is worth a pass once it is empty; a queue that only skipped things is not.
    look_again: AtomicBool,
    /// Passes in a row whose listings timed out while the engine answered `/_ping`.
    timeouts_while_pinging: std::sync::atomic::AtomicU32,
    /// The store failed a write since the loop last looked (see `run`).
    store_failed: AtomicBool,
    /// The networks and volumes of ours in the last listing, by kind and ID: their destroy
    /// events carry no labels to tell.
    listed_ours: Mutex<BTreeSet<(ResourceKind, String)>>,
}

/// The desired state at one store generation, reduced to what the re-check before a delete
/// needs: who claims an object, and until when each owner is live.
struct Desired {
    generation: u64,
    rules: Rules,
    matchers: Matchers,
    live: LiveOwners,
}

/// What finished removals change on one owner's status.
#[derive(Default)]
struct StatusDelta {
    removed: ObjectCounts,
    failing: Option<Condition>,
}

impl<E: Engine> Controller<E> {
    pub fn new(store: Store, engine: Arc<E>, metrics: Arc<Metrics>, settings: Settings) -> Self {
        let executor = Executor::new(settings.concurrency, settings.paths_root.clone());
        let health = Health {
            dry_run: settings.dry_run,
            ..Health::default()
        };
        let (own, own_writes) = store.noting_writes();
        Controller {
            store,
            own,
            own_writes,
            engine,
            metrics,
            settings: RwLock::new(settings),
            executor,
            wake: Notify::new(),
            pass_lock: tokio::sync::Mutex::new(()),
            health: RwLock::new(health),
            restarted_at: Timestamp::now(),
            manifest_dir: RwLock::new(None),
            desired: Mutex::new(None),
            unrecorded: Mutex::new(BTreeMap::new()),
            look_again: AtomicBool::new(false),
            timeouts_while_pinging: std::sync::atomic::AtomicU32::new(0),
            store_failed: AtomicBool::new(false),
            listed_ours: Mutex::new(BTreeSet::new()),
        }
    }

    /// The current settings; SIGHUP may replace them between passes.
    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Replaces the reloadable settings (rules, grace periods, resync, dry run). Concurrency
    /// and the paths root are fixed at start.
    pub fn reload(&self, new: Settings) {
        if let Ok(mut s) = self.settings.write() {
            *s = new;
        }
        // The ownership rules may have changed: the re-check must not use the old ones.
        *lock(&self.desired) = None;
        if let Ok(mut h) = self.health.write() {
            h.dry_run = self.settings().dry_run;
        }
        if let Some(engine) = self.health().engine {
            self.engine_known(engine);
        }
        self.trigger();
    }

    /// Settles what follows from the engine's version: serial exits, and how they are shown.
    fn engine_known(&self, engine: EngineInfo) {
        let decision = SerialExits::decide(self.settings().serial_exits, Some(&engine));
        self.engine.set_serial_exits(decision.on);
        self.metrics.set_engine(engine.flavour, decision);
        let explained = decision.explain();
        let changed = self.health().serial_exits != Some(decision);
        if changed {
            info!(engine = %engine, "Engine: {explained}.");
        }
        self.set_health(|h| {
            h.docker_version = Some(engine.to_string());
            h.engine = Some(engine);
            h.serial_exits = Some(decision);
            h.serial_exits_explained = Some(explained);
        });
    }

    /// Lets `reaper status` report the manifest directory's failing files.
    pub fn set_manifest_dir(&self, md: Arc<crate::manifest_dir::ManifestDir>) {
        if let Ok(mut slot) = self.manifest_dir.write() {
            *slot = Some(md);
        }
    }

    pub fn manifest_dir(&self) -> Option<Arc<crate::manifest_dir::ManifestDir>> {
        self.manifest_dir.read().ok().and_then(|m| m.clone())
    }

    /// Manifest files that currently fail validation: (file, error).
    pub fn manifest_errors(&self) -> Vec<(String, String)> {
        self.manifest_dir
            .read()
            .ok()
            .and_then(|m| m.as_ref().map(|m| m.errors()))
            .unwrap_or_default()
    }

    /// The store. Each call on it may fail: then it cannot be read and nothing may be deleted.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Asks for a pass as soon as possible; triggers during a pass coalesce into one more pass.
    /// Record changes need no trigger: the loop follows the store's change stream.
    pub fn trigger(&self) {
        self.wake.notify_one();
    }

    /// A hint that something of ours changed in Docker. Worth a pass, unless removals are under
    /// way: the queue running empty triggers one anyway, and a pass per event of our own
    /// removals would only load the engine that is busy removing.
    fn nudge(&self) {
        if self.executor.is_idle() {
            self.trigger();
        } else {
            self.look_again.store(true, SeqCst);
        }
    }

    /// Every metric, with the gauges that are cheapest to read at scrape time brought up to date.
    pub fn scrape(&self) -> String {
        self.metrics.set_removal_queue(&self.executor.depth());
        self.metrics.encode()
    }

    /// A pass succeeded within three resync intervals (at least a minute): the loop is alive.
    /// `/healthz` and the systemd watchdog both go by this.
    pub fn reconciled_recently(&self) -> bool {
        let stale = self.settings().resync_interval.max(Duration::from_secs(20)) * 3;
        self.health()
            .last_success
            .is_some_and(|t| Timestamp::now().since(t) < stale)
    }

    pub fn health(&self) -> Health {
        self.health.read().map(|h| h.clone()).unwrap_or_default()
    }

    fn set_health(&self, f: impl FnOnce(&mut Health)) {
        if let Ok(mut h) = self.health.write() {
            f(&mut h);
        }
    }

    /// Notes a store failure (not a record's: a missing or conflicting record is no failure)
    /// for the loop, and passes the result on.
    fn note_store<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Io(_) | StoreError::Corrupt(_)) = &result {
            self.store_failed.store(true, SeqCst);
        }
        result
    }

    /// The loop: pass, then sleep until a record change, a trigger, the next deadline, a retry,
    /// or the resync.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut changes = self.store().subscribe();
        let mut backoff = PASS_BACKOFF_MIN;
        while !shutdown.is_cancelled() {
            // This pass reads every change made until now; later ones wake the loop again.
            let mut seen = *changes.borrow_and_update();
            self.own_writes.forget_through(seen);
            self.store_failed.store(false, SeqCst);
            let started = Instant::now();
            let settings = self.settings();
            let mut wake_at = started + settings.resync_interval;
            // Removals run on in the executor; it wakes this loop when its queue runs empty.
            let result = self.reconcile(&Scope::Normal, settings.dry_run).await;
            if self.store_failed.load(SeqCst) || matches!(result, Err(Error::Store(_))) {
                // Every call on a failing store reopens it, which is a change: waking for it
                // would spin. The backoff (or the next deadline) retries instead.
                seen = *changes.borrow_and_update();
            }
            match result {
                Ok((plan, _)) => {
                    backoff = PASS_BACKOFF_MIN;
                    if let Some(t) = plan.next_wake {
                        wake_at = wake_at.min(instant_of(t));
                    }
                    if let Some(t) = self.executor.next_retry() {
                        wake_at = wake_at.min(t);
                    }
                }
                Err(_) => {
                    // `pass_failed` logged and counted it.
                    debug!(retry_in = ?backoff, "Retrying the pass.");
                    wake_at = started + backoff;
                    backoff = (backoff * 2).min(PASS_BACKOFF_MAX);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.woken(&mut changes, seen) => {
                    // A burst of record changes (twenty `session end` calls) while removals
                    // already wait for a slot: what a pass would queue now would only queue
                    // behind them, so let the changes gather into one pass, taken before the
                    // slots run out of work (or a deadline is due).
                    let gather = (Instant::now() + BACKLOG_COALESCE).min(wake_at);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.executor.until_not_backlogged() => {}
                        _ = tokio::time::sleep_until(gather) => {}
                    }
                }
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
        debug!("Reconcile loop stopped.");
    }

    /// Returns when someone asked for a pass, or a record changed after `seen` other than by
    /// the controller's own status writes (the pass that wrote them needs no other).
    async fn woken(&self, changes: &mut watch::Receiver<u64>, mut seen: u64) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => return,
                // Err: the store is gone, which cannot happen while `self` holds it.
                Ok(()) = changes.changed() => {
                    let now = *changes.borrow_and_update();
                    if !self.own_writes.wrote_all(seen, now) {
                        return;
                    }
                    seen = now;
                }
            }
        }
    }

    /// Follows the Docker event stream; events about our containers, networks and volumes
    /// trigger a pass. Reconnects with backoff and resumes shortly before the last event seen.
    pub async fn watch_events(self: Arc<Self>, shutdown: CancellationToken) {
        let mut since = Timestamp::now().millis() / 1000;
        let mut backoff = PASS_BACKOFF_MIN;
        // The first event nudges at once; more within EVENT_COALESCE make one nudge at its end.
        let mut last_nudge = Instant::now()
            .checked_sub(EVENT_COALESCE)
            .unwrap_or_else(Instant::now);
        let mut held: Option<Instant> = None;
        // Network and volume events name the object only: whether a new one is ours takes a
        // look, off this loop (a network call may wait for container stops to finish).
        let (looked, mut found_ours) = tokio::sync::mpsc::unbounded_channel::<()>();
        loop {
            let mut stream = Box::pin(self.engine.events(since.saturating_sub(1)));
            loop {
                let ours = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(held.unwrap_or_else(Instant::now)), if held.is_some() => {
                        held = None;
                        last_nudge = Instant::now();
                        self.nudge();
                        false
                    }
                    Some(()) = found_ours.recv() => true,
                    item = stream.next() => match item {
                        Some(Ok(hint)) => {
                            backoff = PASS_BACKOFF_MIN;
                            since = since.max(hint.time_secs);
                            // A nudge already held back covers this event: its pass lists
                            // after it.
                            held.is_none() && self.event_is_ours(&hint, &looked)
                        }
                        Some(Err(e)) => {
                            debug!(error = %e, "Docker event stream broke.");
                            break;
                        }
                        None => break,
                    }
                };
                if ours && held.is_none() {
                    let due = last_nudge + EVENT_COALESCE;
                    if Instant::now() >= due {
                        last_nudge = Instant::now();
                        self.nudge();
                    } else {
                        held = Some(due);
                    }
                }
            }
            self.metrics.event_stream_restarted();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(PASS_BACKOFF_MAX);
            // Events may have been missed while disconnected: resync.
            self.trigger();
        }
    }

    /// Whether an event is about an object of ours, by the same rules as a listing. A container
    /// event carries its labels. A network or volume event does not: one that is gone was ours
    /// if the last listing said so; a new one is inspected by a task that reports through
    /// `looked` when it is ours (this returns false meanwhile). Unknown rules: assume ours.
    fn event_is_ours(self: &Arc<Self>, hint: &EventHint, looked: &UnboundedSender<()>) -> bool {
        let Some(desired) = lock(&self.desired).clone() else {
            return true;
        };
        if hint.labelled {
            return ownership::is_ours(&hint.object, &desired.rules, &desired.matchers);
        }
        if hint.gone {
            return lock(&self.listed_ours).contains(&(hint.object.kind, hint.object.id.clone()));
        }
        let (ctl, object, looked) = (self.clone(), hint.object.clone(), looked.clone());
        tokio::spawn(async move {
            let ours = match ctl.engine.inspect(&object).await {
                Ok(Some(fresh)) => ownership::is_ours(&fresh, &desired.rules, &desired.matchers),
                // Gone already: nothing to count.
                Ok(None) => false,
                Err(e) => {
                    debug!(error = %e, kind = %object.kind, id = %object.id, "Could not look at a new object; a pass will.");
                    true
                }
            };
            if ours {
                let _ = looked.send(());
            }
        });
        false
    }

    /// Reads the desired and the actual state. Any error makes the whole view untrustworthy.
    /// Objects seen for the first time are noted as seen at `now`, the instant the pass plans
    /// for, so that a grace of zero means "this pass".
    async fn observe(
        &self,
        scope: &Scope,
        now: Timestamp,
    ) -> Result<(Vec<Session>, Vec<Agent>, Actual), Error> {
        let store = self.store();
        let generation = store.generation();
        let sessions = store.sessions()?;
        let agents = store.agents()?;
        // At start and after every reconnect: the engine may have been upgraded meanwhile.
        if !self.health().docker_up {
            let engine = self.engine.version().await?;
            self.engine_known(engine);
        }
        let settings = self.settings();
        let desired = self.desired_at(generation, &sessions, &agents);
        let matchers = &desired.matchers;
        let rules = &settings.rules;
        let selectors = Selectors::new(
            [SESSION_LABEL.to_string(), AGENT_LABEL.to_string()]
                .into_iter()
                .chain(rules.session_label_keys.iter().cloned())
                .chain(matchers.label_keys().map(String::from)),
            std::iter::once(rules.agent_name_prefix.clone())
                .chain(matchers.name_prefixes().map(String::from)),
        );
        let objects = self.engine.list(&selectors).await?;
        *lock(&self.listed_ours) = objects
            .iter()
            .filter(|o| matches!(o.kind, ResourceKind::Network | ResourceKind::Volume))
            .filter(|o| ownership::is_ours(o, rules, matchers))
            .map(|o| (o.kind, o.id.clone()))
            .collect();
        let first_seen = self.first_seen(&objects, now).await?;
        let candidates = plan::paths_to_probe(
            &sessions,
            &agents,
            scope,
            Timestamp::now(),
            self.restarted_at,
            settings.cleanup_delays,
        );
        let root = settings.paths_root.clone();
        let paths = tokio::task::spawn_blocking(move || {
            let mut found = std::collections::BTreeSet::new();
            for p in candidates {
                match paths::exists_below(&root, &p) {
                    Ok(true) => {
                        found.insert(p);
                    }
                    Ok(false) => {}
                    // The root itself is unreadable: the whole view is in doubt.
                    Err(e @ paths::PathError::Root { .. }) => {
                        return Err(Error::Paths(e.to_string()))
                    }
                    // One path is odd (e.g. a symlink on the way): plan it, so its removal is
                    // refused and reported on its owner, without stopping everyone's cleanup.
                    Err(_) => {
                        found.insert(p);
                    }
                }
            }
            Ok::<_, Error>(found)
        })
        .await
        .map_err(|e| Error::Paths(e.to_string()))??;
        Ok((
            sessions,
            agents,
            Actual {
                objects,
                paths,
                first_seen,
            },
        ))
    }

    /// When reaper first saw each listed object: what the store kept, plus `now` for the new
    /// ones, which are written to the store (durable with its next flush). An unreadable
    /// store fails the pass, as for records; a failed write does not. Sightings of
    /// objects no longer listed are forgotten: should one come back, its grace starts again,
    /// which only ever delays a removal.
    async fn first_seen(
        &self,
        objects: &[DockerObject],
        now: Timestamp,
    ) -> Result<BTreeMap<String, Timestamp>, StoreError> {
        let store = self.store();
        let mut known = store.sightings()?;
        let listed: BTreeSet<String> = objects.iter().map(DockerObject::sighting_key).collect();
        let new: BTreeMap<String, Timestamp> = listed
            .iter()
            .filter(|k| !known.contains_key(*k))
            .map(|k| (k.clone(), now))
            .collect();
        let gone: Vec<String> = known
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        // A sighting that cannot be kept only makes a grace start later (the next pass sees
        // the object "first" again): no reason to stop this pass's other removals.
        if let Err(e) = self.note_store(store.note_sightings(new.clone(), gone).await) {
            warn!(error = %e, "Could not keep first sightings; the grace of new objects starts again next pass.");
        }
        known.retain(|k, _| listed.contains(k));
        known.extend(new);
        Ok(known)
    }

    fn plan_config(&self) -> PlanConfig {
        let settings = self.settings();
        PlanConfig {
            rules: settings.rules,
            orphan_grace: settings.orphan_grace,
            history_retention: settings.history_retention,
            restarted_at: self.restarted_at,
            agent_running_grace: settings.agent_running_grace,
            cleanup_delays: settings.cleanup_delays,
            max_orphan_removals: settings.max_orphan_removals,
        }
    }

    /// Plans without acting: what `reaper orphans` and the cleanup preview show.
    pub async fn preview(&self, scope: &Scope) -> Result<Plan, Error> {
        let now = Timestamp::now();
        let (sessions, agents, actual) = self.observe(scope, now).await?;
        Ok(plan::plan(
            &sessions,
            &agents,
            &actual,
            now,
            &self.plan_config(),
            scope,
        ))
    }

    /// The Docker objects an owner claims right now, for `reaper describe`.
    pub async fn owned_by(&self, owner: &OwnerRef) -> Result<Vec<DockerObject>, Error> {
        let (sessions, agents, actual) = self.observe(&Scope::Normal, Timestamp::now()).await?;
        let rules = self.settings().rules;
        let matchers = Matchers::new(&sessions, &agents, &rules);
        Ok(actual
            .objects
            .into_iter()
            .filter(|o| ownership::claims(o, &rules, &matchers).contains(owner))
            .collect())
    }

    /// A pass that also waits for its own removals and writes their outcome: for `--once`,
    /// `reaper cleanup` and tests, which report what happened.
    pub async fn pass(&self, scope: &Scope, dry_run: bool) -> Result<(Plan, PassReport), Error> {
        let (plan, tickets) = self.reconcile(scope, dry_run).await?;
        let mut report = PassReport::default();
        if dry_run {
            report.planned = plan.removals.iter().map(|r| r.target.clone()).collect();
        }
        for (target, ticket) in tickets {
            match ticket.outcome().await {
                Outcome::Removed => report.removed.push(target),
                Outcome::Failed { message, .. } => report.failed.push((target, message)),
                Outcome::Skipped(_) | Outcome::Gone | Outcome::Stopped => report.skipped += 1,
                Outcome::Deferred => report.deferred += 1,
            }
        }
        self.record_outcomes().await;
        Ok((plan, report))
    }

    /// One pass: observe, plan, persist what gates deletions, and queue the removals, with a
    /// ticket for each. Passes never overlap; they do not wait for removals.
    pub async fn reconcile(
        &self,
        scope: &Scope,
        dry_run: bool,
    ) -> Result<(Plan, Vec<(Target, Ticket)>), Error> {
        let _guard = self.pass_lock.lock().await;
        let started = std::time::Instant::now();
        let now = Timestamp::now();
        let result = self.reconcile_locked(scope, dry_run, now).await;
        self.metrics.reconcile_finished(
            result.is_ok(),
            started.elapsed(),
            Timestamp::now().as_secs_f64(),
        );
        match &result {
            Ok((plan, tickets)) => {
                debug!(
                    took_ms = started.elapsed().as_millis() as u64,
                    planned = plan.removals.len(),
                    queued = tickets.len(),
                    "Pass finished."
                );
                self.metrics.set_safe_mode(false);
                self.metrics.set_docker_up(true);
                self.engine_answers();
                self.set_health(|h| {
                    h.docker_up = true;
                    h.docker_error = None;
                    h.store_error = None;
                    h.safe_mode = false;
                    h.last_pass = Some(now);
                    h.last_success = Some(now);
                    h.last_error = None;
                    h.owned = plan.observed.owned.clone();
                    h.orphans = plan.observed.orphans.clone();
                });
            }
            Err(e) => self.pass_failed(e, now).await,
        }
        result
    }

    /// The one place a failed pass is logged, counted and shown in health.
    async fn pass_failed(&self, e: &Error, now: Timestamp) {
        self.metrics.reconcile_failed(e.metric_label());
        if matches!(e, Error::Docker(DockerError::Timeout(_))) {
            self.check_wedged().await;
        }
        let safe = e.is_safe_mode();
        if safe {
            error!(error = %e, reason = e.metric_label(), "Safe mode: reaper deletes nothing until its view is trustworthy again.");
        } else {
            warn!(error = %e, reason = e.metric_label(), "Reconcile pass failed; nothing was deleted.");
        }
        self.metrics.set_safe_mode(safe);
        if e.is_docker_down() {
            self.metrics.set_docker_up(false);
        }
        self.set_health(|h| {
            h.last_pass = Some(now);
            h.last_error = Some(e.to_string());
            h.safe_mode = safe;
            match e {
                Error::Store(s) => h.store_error = Some(s.to_string()),
                Error::Docker(d) if e.is_docker_down() => {
                    h.docker_up = false;
                    h.docker_error = Some(d.to_string());
                }
                _ => {}
            }
        });
    }

    /// A listing timed out: if the engine still answers `/_ping`, it may be wedged (the
    /// libnetwork exit deadlock); after `WEDGED_AFTER` such passes in a row, say so and stop
    /// sending removals until it answers again. reaper never restarts dockerd itself.
    async fn check_wedged(&self) {
        if self.engine.ping().await.is_err() {
            self.timeouts_while_pinging.store(0, SeqCst);
            return;
        }
        let strikes = self.timeouts_while_pinging.fetch_add(1, SeqCst) + 1;
        if strikes < WEDGED_AFTER || self.health().docker_wedged {
            return;
        }
        error!(
            passes = strikes,
            "Docker is wedged: /_ping answers but listings time out. No removals are sent until \
             it answers again. Take a goroutine dump with `kill -USR1 <dockerd pid>` (dockerd \
             logs where it wrote it), restart dockerd, and upgrade to Docker 20.10.27+ or 23.0+ \
             (moby/libnetwork#2679)."
        );
        self.executor.pause(true);
        self.metrics.set_docker_wedged(true);
        self.set_health(|h| h.docker_wedged = true);
    }

    /// A pass listed everything: whatever wedged the engine is over.
    fn engine_answers(&self) {
        self.timeouts_while_pinging.store(0, SeqCst);
        if self.health().docker_wedged {
            info!("Docker answers again; removals resume.");
            self.executor.pause(false);
            self.metrics.set_docker_wedged(false);
            self.set_health(|h| h.docker_wedged = false);
        }
    }

    async fn reconcile_locked(
        &self,
        scope: &Scope,
        dry_run: bool,
        now: Timestamp,
    ) -> Result<(Plan, Vec<(Target, Ticket)>), Error> {
        self.write_unrecorded(false).await;
        let (sessions, agents, actual) = self.observe(scope, now).await?;
        let plan = plan::plan(&sessions, &agents, &actual, now, &self.plan_config(), scope);
        self.record_gauges(&plan, &sessions, &agents);
        if *scope == Scope::Normal {
            self.note_hold(&plan.held, now);
        }

        // Deadlines passed: persist (flushed) before anything is removed because of them.
        for t in &plan.transitions {
            if let Transition::Expire { name, reason, at } = t {
                self.expire(name.as_str(), *reason, *at, now).await?;
            }
        }

        let mut tickets = Vec::new();
        if dry_run {
            for r in &plan.removals {
                info!(kind = %r.target.kind(), target = %target_label(&r.target), owner = ?r.owner.as_ref().map(|o| o.to_string()), reason = %r.reason, "Dry run: would remove.");
            }
        } else {
            let forced = match scope {
                Scope::ManualOwner(o) => Some(o.clone()),
                _ => None,
            };
            for r in &plan.removals {
                let ticket = self.executor.submit(r.clone(), forced.clone());
                tickets.push((r.target.clone(), ticket));
            }
        }

        // An owner with removals queued, running, or finished but not yet written is not done,
        // whatever this pass's listing showed; a later pass finishes it.
        let busy: BTreeSet<OwnerRef> = self
            .executor
            .owners()
            .into_iter()
            .chain(lock(&self.unrecorded).keys().cloned())
            .collect();
        for t in plan
            .transitions
            .iter()
            .filter(|t| !busy.contains(&t.owner()))
        {
            if let Err(e) = self.note_store(self.apply_transition(t, now).await) {
                warn!(error = %e, "Could not record a status change; it will be retried next pass.");
            }
        }
        Ok((plan, tickets))
    }

    /// Works the executor's queue until `shutdown`, then writes what the last removals changed.
    pub async fn run_removals(self: Arc<Self>, shutdown: CancellationToken) {
        self.executor
            .run(self.engine.as_ref(), self.as_ref(), &shutdown)
            .await;
        self.record_outcomes().await;
        debug!("Removal worker stopped.");
    }

    /// Writes finished removals' status changes now, between passes.
    async fn record_outcomes(&self) {
        let _guard = self.pass_lock.lock().await;
        self.write_unrecorded(true).await;
    }

    /// The desired state for the re-check before a delete, read again only if the store
    /// changed since the last pass. `None` (do not delete) when the store cannot be read.
    fn desired(&self) -> Option<Arc<Desired>> {
        let store = self.store();
        // Held while reading, so that concurrent deletes read the store once between them.
        let mut cache = lock(&self.desired);
        let generation = store.generation();
        if let Some(d) = cache.as_ref().filter(|d| d.generation == generation) {
            return Some(d.clone());
        }
        let sessions = store.sessions().ok()?;
        let agents = store.agents().ok()?;
        Some(self.build_desired(&mut cache, generation, &sessions, &agents))
    }

    /// The desired state at `generation`, from records read at (or after) it.
    fn desired_at(&self, generation: u64, sessions: &[Session], agents: &[Agent]) -> Arc<Desired> {
        let mut cache = lock(&self.desired);
        match cache.as_ref().filter(|d| d.generation == generation) {
            Some(d) => d.clone(),
            None => self.build_desired(&mut cache, generation, sessions, agents),
        }
    }

    fn build_desired(
        &self,
        cache: &mut Option<Arc<Desired>>,
        generation: u64,
        sessions: &[Session],
        agents: &[Agent],
    ) -> Arc<Desired> {
        let rules = self.settings().rules;
        let now = Timestamp::now();
        let d = Arc::new(Desired {
            generation,
            matchers: Matchers::new(sessions, agents, &rules),
            rules,
            live: LiveOwners::new(
                sessions,
                agents,
                now,
                self.restarted_at,
                self.settings().cleanup_delays,
            ),
        });
        *cache = Some(d.clone());
        d
    }

    /// Shows (gauge, status, log) whether the blast-radius guard holds orphan removals back.
    /// Logged when the hold begins or its size changes, not on every pass.
    fn note_hold(&self, held: &[Removal], now: Timestamp) {
        let limit = self.settings().max_orphan_removals;
        let before = self.health().blast_radius_held;
        if held.is_empty() {
            if before.is_some() {
                info!("Blast-radius hold ended: orphan removals are within maxOrphanRemovalsPerPass again.");
                self.metrics.set_blast_radius_held(false);
                self.set_health(|h| h.blast_radius_held = None);
            }
            return;
        }
        let examples: Vec<String> = held
            .iter()
            .take(HOLD_EXAMPLES)
            .map(|r| format!("{} {}", r.target.kind(), target_label(&r.target)))
            .collect();
        let hold = BlastRadiusHold {
            orphans: held.len(),
            limit,
            examples,
            since: before.as_ref().map_or(now, |b| b.since),
        };
        if before.as_ref().map(|b| (b.orphans, b.limit)) != Some((hold.orphans, limit)) {
            warn!(
                orphans = hold.orphans,
                max_orphan_removals_per_pass = limit,
                examples = %hold.examples.join(", "),
                "Blast-radius guard: this pass would remove {} orphans, more than \
                 maxOrphanRemovalsPerPass ({limit}), so it removes none of them. A wrong adoption \
                 rule or a lost store looks like this. Check `reaper orphans`; then confirm with \
                 `reaper cleanup --yes`, raise the cap, or fix the rule.",
                hold.orphans
            );
        }
        self.metrics.set_blast_radius_held(true);
        self.set_health(|h| h.blast_radius_held = Some(hold));
    }

    fn record_gauges(&self, plan: &Plan, sessions: &[Session], agents: &[Agent]) {
        let pairs =
            |m: &BTreeMap<ResourceKind, i64>| m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>();
        self.metrics
            .set_inventory(&pairs(&plan.observed.owned), &pairs(&plan.observed.orphans));
        let sessions: Vec<(SessionPhase, i64)> = SessionPhase::ALL
            .iter()
            .map(|p| {
                (
                    *p,
                    sessions.iter().filter(|s| s.status.phase == *p).count() as i64,
                )
            })
            .collect();
        let agents: Vec<(AgentPhase, i64)> = AgentPhase::ALL
            .iter()
            .map(|p| {
                (
                    *p,
                    agents.iter().filter(|a| a.status.phase == *p).count() as i64,
                )
            })
            .collect();
        self.metrics.set_phases(&sessions, &agents);
    }

    async fn expire(
        &self,
        name: &str,
        reason: EndReason,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let restarted_at = self.restarted_at;
        let delays = self.settings().cleanup_delays;
        // The store may call the update more than once; the last call is the one written.
        let expired = AtomicBool::new(false);
        let result = self
            .own
            .update_session(name, |s| {
                let delay = delays.for_session(s, reason);
                expired.store(s.expire(at, reason, now, restarted_at, delay), SeqCst);
                Ok(())
            })
            .await;
        match result {
            Ok(_) if expired.load(SeqCst) => {
                info!(session = %name, reason = ?reason, "Session expired.");
                Ok(())
            }
            Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes the status changes of finished removals, one update per owner, all at once so
    /// that the store's group commit covers them with few flushes. Unless `all`, an owner with
    /// removals still queued or running waits, so that a burst costs one write per owner rather
    /// than one per pass; a failure condition is written at once.
    async fn write_unrecorded(&self, all: bool) {
        let waiting = if all {
            BTreeSet::new()
        } else {
            self.executor.owners()
        };
        let deltas: BTreeMap<_, _> = {
            let mut unrecorded = lock(&self.unrecorded);
            let (now, later) = std::mem::take(&mut *unrecorded)
                .into_iter()
                .partition(|(owner, d)| d.failing.is_some() || !waiting.contains(owner));
            *unrecorded = later;
            now
        };
        if deltas.is_empty() {
            return;
        }
        let writes = deltas.into_iter().map(|(owner, delta)| async move {
            let r = self
                .own
                .update_owner(&owner, |st| {
                    st.removed.merge(&delta.removed);
                    if let Some(failing) = &delta.failing {
                        set_condition(st.conditions, failing.clone());
                    }
                    Ok(())
                })
                .await;
            match self.note_store(r) {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => warn!(owner = %owner, error = %e, "Could not record removal counts."),
            }
        });
        futures_util::future::join_all(writes).await;
    }

    async fn apply_transition(&self, t: &Transition, now: Timestamp) -> Result<(), StoreError> {
        match t {
            Transition::Expire { .. } => Ok(()),
            Transition::DelayOver { name } => {
                let r = self
                    .own
                    .update_session(name.as_str(), |s| {
                        if s.end_delay(now) {
                            info!(session = %name, "Cleanup delay over; its objects go now.");
                        }
                        Ok(())
                    })
                    .await;
                match self.note_store(r) {
                    Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Transition::SessionCleaned { name, ended_at } => {
                let cleaned = AtomicBool::new(false);
                let s = self
                    .own
                    .update_session(name.as_str(), |s| {
                        cleaned.store(s.mark_cleaned(now), SeqCst);
                        Ok(())
                    })
                    .await;
                if let Ok(s) = self.note_store(s) {
                    if cleaned.load(SeqCst) {
                        let latency = now.since(*ended_at);
                        self.metrics.owner_cleaned(OwnerKind::Session, latency);
                        info!(session = %name, removed = s.status.removed.total(), latency_ms = latency.as_millis() as u64, "Session cleaned up.");
                    }
                }
                Ok(())
            }
            Transition::AgentStopped { name, failed_since } => {
                let cause = match failed_since {
                    Some(since) => StopCause::FailureCleanedUp {
                        failed_since: *since,
                    },
                    None => StopCause::NoRunningContainer,
                };
                let stopped = AtomicBool::new(false);
                self.own
                    .update_agent(name.as_str(), |a| {
                        stopped.store(a.stop(cause, now), SeqCst);
                        Ok(())
                    })
                    .await?;
                if stopped.load(SeqCst) {
                    if let Some(since) = failed_since {
                        self.metrics
                            .owner_cleaned(OwnerKind::Agent, now.since(*since));
                        info!(agent = %name, "Failed agent cleaned up and reset to Stopped.");
                    } else {
                        info!(agent = %name, "Agent reported running has no running container; set to Stopped.");
                    }
                }
                Ok(())
            }
            Transition::Purge {
                owner,
                deleting_since,
            } => {
                if self.own.remove(owner).await? {
                    if let Some(since) = deleting_since {
                        self.metrics.owner_cleaned(owner.kind, now.since(*since));
                        info!(owner = %owner, "Deleted record's objects are gone; record removed.");
                    } else {
                        debug!(owner = %owner, "History retention passed; record purged.");
                    }
                }
                Ok(())
            }
        }
    }
}

pub fn target_label(t: &Target) -> String {
    match t {
        Target::Docker(o) if o.kind == ResourceKind::Image => o.target().to_string(),
        Target::Docker(o) if o.name.is_empty() => short_id(&o.id).to_string(),
        Target::Docker(o) => format!("{} ({})", o.name, short_id(&o.id)),
        Target::Path { path } => path.to_string(),
    }
}

/// Converts a wall-clock deadline into a tokio instant.
fn instant_of(t: Timestamp) -> Instant {
    let delta = t.millis() - Timestamp::now().millis();
    Instant::now() + Duration::from_millis(delta.max(0) as u64)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<E: Engine> Hooks for Controller<E> {
    /// The desired state as it is now, not as the planning pass saw it: an owner that came back
    /// to life (an agent reported running again, a record re-applied) keeps its objects.
    fn may_remove(&self, fresh: &DockerObject, r: &Removal, forced: Option<&OwnerRef>) -> bool {
        if self.health.read().map_or(true, |h| h.safe_mode) {
            return false;
        }
        let Some(desired) = self.desired() else {
            return false;
        };
        let now = Timestamp::now();
        let claims = ownership::claims(fresh, &desired.rules, &desired.matchers);
        let owner_ok = r.owner.as_ref().is_none_or(|o| claims.contains(o));
        // A stop (cleanup delayed) may touch what a delayed owner keeps, never a live one's; a
        // removal neither.
        let keeps = |c: &OwnerRef| match r.stop_only {
            true => desired.live.is_live(c, now),
            false => desired.live.keeps(c, now),
        };
        let nobody_keeps = claims.iter().all(|c| forced == Some(c) || !keeps(c));
        !claims.is_empty() && owner_ok && nobody_keeps
    }

    fn finished(&self, e: &Executed) {
        let kind = e.removal.target.kind();
        let target = target_label(&e.removal.target);
        let owner = e.removal.owner.as_ref();
        let mut delta = StatusDelta::default();
        match &e.outcome {
            Outcome::Removed => {
                self.metrics.cleanup_attempted(kind);
                self.metrics.cleanup_succeeded(kind, e.removal.reason);
                info!(kind = %kind, target = %target, owner = %display_owner(owner), reason = %e.removal.reason, "Removed.");
                delta.removed.add(kind, 1);
                self.look_again.store(true, SeqCst);
            }
            Outcome::Failed {
                class,
                message,
                failures,
            } => {
                self.metrics.cleanup_attempted(kind);
                self.metrics.cleanup_failed(kind, *class);
                warn!(kind = %kind, target = %target, owner = %display_owner(owner), error = %message, failures, "Removal failed; will retry with backoff.");
                // One more pass, to schedule the loop's wake-up for the retry.
                self.look_again.store(true, SeqCst);
                if *failures >= FAILING_AFTER {
                    delta.failing = Some(Condition::removal_failing(
                        format!("{kind} {target}: {message} ({failures} attempts)"),
                        Timestamp::now(),
                    ));
                }
            }
            Outcome::Skipped(why) => {
                info!(kind = %kind, target = %target, why = %why, "Skipped on re-check.");
            }
            Outcome::Gone => debug!(kind = %kind, target = %target, "Already gone."),
            Outcome::Stopped => {
                info!(kind = %kind, target = %target, owner = %display_owner(owner), "Stopped; its removal waits for the cleanup delay.");
            }
            Outcome::Deferred => {}
        }
        let Some(owner) = owner else { return };
        if delta.removed.total() > 0 || delta.failing.is_some() {
            let mut unrecorded = lock(&self.unrecorded);
            let entry = unrecorded.entry(owner.clone()).or_default();
            entry.removed.merge(&delta.removed);
            entry.failing = delta.failing.or(entry.failing.take());
        }
    }

    fn idle(&self) {
        // Confirms what went and lets the owners be marked cleaned. Not after a queue that only
        // skipped: the same plan would queue the same things again at once. (After a failure
        // the object is in backoff, so the pass queues nothing and wakes for the retry.)
        if self.look_again.swap(false, SeqCst) {
            self.trigger();
        }
    }
}

fn display_owner(owner: Option<&OwnerRef>) -> String {
    owner.map(|o| o.to_string()).unwrap_or_default()
}
