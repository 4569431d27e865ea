//! Over 500 lines: the loop and the pass, with the state they share; reading the world, writing
//! outcomes, health, events, disk pressure and the removal queue each have a file of their own.
//!
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
//!
//! This file is the loop and the pass; observe.rs reads the world, outcomes.rs writes what
//! removals and transitions change, health.rs keeps the loop's own health and gauges,
//! events.rs follows Docker's events, executor.rs is the removal queue.

mod disk;
mod events;
pub mod executor;
mod health;
mod observe;
mod outcomes;

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
    set_condition, Agent, AgentPhase, Condition, EndReason, EngineInfo, Fleet, ObjectCounts,
    OwnerKind, OwnerRef, ResourceKind, SerialExits, SerialExitsSetting, Session, SessionPhase,
    StopCause, Timestamp,
};
use crate::core::ownership::{self, Matchers, Rules, AGENT_LABEL, SESSION_LABEL};
use crate::core::plan::{self, Plan, PlanConfig, Removal, Scope, Target, Transition};
use crate::docker::{DockerError, Engine, EventHint, Selectors};
use crate::metrics::Metrics;
use crate::paths;
use crate::store::{Store, StoreError, WriteLog};
use crate::Error;
use executor::{Executed, Executor, Hooks, Outcome, Ticket, FAILING_AFTER};
use observe::Desired;
use outcomes::StatusDelta;

/// Backoff for failed passes (store or Docker unreadable), as kube-runtime's default.
const PASS_BACKOFF_MIN: Duration = Duration::from_millis(800);
const PASS_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// While the removal queue is backlogged, a triggered pass waits at most this long for more
/// triggers to gather.
const BACKLOG_COALESCE: Duration = Duration::from_millis(250);

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
    pub disk_pressure: crate::core::eviction::DiskPressureConfig,
    /// Config `hostName`: the name of this host's row in a session's status. Fixed at start.
    pub host_name: String,
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
    /// Config `hostName` as it was at start: a SIGHUP does not rename this host's rows.
    host_name: String,
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
    /// What disk pressure keeps between passes (see `disk.rs`).
    disk: Mutex<disk::DiskState>,
}

impl<E: Engine> Controller<E> {
    pub fn new(store: Store, engine: Arc<E>, metrics: Arc<Metrics>, settings: Settings) -> Self {
        let executor = Executor::new(settings.concurrency, settings.paths_root.clone());
        let health = Health {
            dry_run: settings.dry_run,
            ..Health::default()
        };
        let (own, own_writes) = store.noting_writes();
        let host_name = settings.host_name.clone();
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
            host_name,
            manifest_dir: RwLock::new(None),
            desired: Mutex::new(None),
            unrecorded: Mutex::new(BTreeMap::new()),
            look_again: AtomicBool::new(false),
            timeouts_while_pinging: std::sync::atomic::AtomicU32::new(0),
            store_failed: AtomicBool::new(false),
            listed_ours: Mutex::new(BTreeSet::new()),
            disk: Mutex::new(disk::DiskState::default()),
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
            // The disk is measured in every pass: pass at least once a minute.
            let mut wake_at = started + settings.resync_interval.min(disk::DISK_MEASURE_EVERY);
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

    /// This host and the fleet's live hosts, as the store sees them now (sled: this one only).
    fn fleet(&self) -> Result<Fleet, StoreError> {
        let live = self.store().backend().live_hosts()?;
        Ok(Fleet::new(&self.host_name, live))
    }

    fn plan_config(&self) -> Result<PlanConfig, StoreError> {
        let settings = self.settings();
        Ok(PlanConfig {
            rules: settings.rules,
            orphan_grace: settings.orphan_grace,
            history_retention: settings.history_retention,
            restarted_at: self.restarted_at,
            agent_running_grace: settings.agent_running_grace,
            cleanup_delays: settings.cleanup_delays,
            max_orphan_removals: settings.max_orphan_removals,
            fleet: self.fleet()?,
        })
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
            &self.plan_config()?,
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
                self.metrics.set_store_up(self.store().backend_name(), true);
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

    async fn reconcile_locked(
        &self,
        scope: &Scope,
        dry_run: bool,
        now: Timestamp,
    ) -> Result<(Plan, Vec<(Target, Ticket)>), Error> {
        self.write_unrecorded(false).await;
        let (sessions, agents, actual) = self.observe(scope, now).await?;
        let plan = plan::plan(
            &sessions,
            &agents,
            &actual,
            now,
            &self.plan_config()?,
            scope,
        );
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
                info!(kind = %r.target.kind(), target = %target_label(&r.target), owner = %outcomes::display_owner(r.owner.as_ref()), reason = %r.reason, "Dry run: would remove.");
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

        // Last: listing every image and container can be slow (a Cleaned transition once
        // waited over 10 s behind it on a loaded Podman), and no status change should wait for
        // it. Queued after this pass's removals, so the images they free
        // count before anything is evicted.
        if *scope == Scope::Normal {
            self.disk_step(&sessions, &agents, dry_run, now).await;
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
