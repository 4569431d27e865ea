//! What finished removals and planned transitions change on the records: counts, conditions,
//! expiry, the end of a cleanup delay, Cleaned and Stopped, purges; and the executor's hooks.

use super::*;
use crate::core::model::{
    record_event, CleanupReason, Event, EventReason, EventType, HostState, Reported,
};

/// What finished removals change on one owner's status.
#[derive(Default)]
pub(super) struct StatusDelta {
    pub(super) removed: ObjectCounts,
    pub(super) failing: Option<Condition>,
    /// What went, as `kind name (reason)`, for the owner's `removed` event.
    pub(super) removed_what: Vec<String>,
    /// Failed attempts, and the last one's message, for this host's row of a session.
    pub(super) failures: u64,
    pub(super) last_error: Option<String>,
}

/// A `removed` event names at most this many objects, then counts the rest.
const NAMED_PER_EVENT: usize = 5;

impl StatusDelta {
    fn merge(&mut self, other: StatusDelta) {
        self.removed.merge(&other.removed);
        self.failing = other.failing.or(self.failing.take());
        self.removed_what.extend(other.removed_what);
        self.failures += other.failures;
        self.last_error = other.last_error.or(self.last_error.take());
    }

    fn is_empty(&self) -> bool {
        self.removed.total() == 0 && self.failing.is_none() && self.failures == 0
    }

    /// Writes it on the status fields every record has (a session's host row aside).
    fn apply(
        &self,
        removed: &mut ObjectCounts,
        conditions: &mut Vec<Condition>,
        events: &mut Vec<Event>,
        now: Timestamp,
    ) {
        removed.merge(&self.removed);
        if let Some(failing) = &self.failing {
            set_condition(conditions, failing.clone());
        }
        self.record_events(events, now);
    }

    /// Its events, written with its counts in the same update: no write of its own.
    fn record_events(&self, events: &mut Vec<Event>, now: Timestamp) {
        if !self.removed_what.is_empty() {
            let n = self.removed_what.len();
            let mut named = self.removed_what[..n.min(NAMED_PER_EVENT)].join(", ");
            if n > NAMED_PER_EVENT {
                named.push_str(&format!(" and {} more", n - NAMED_PER_EVENT));
            }
            record_event(
                events,
                EventType::Normal,
                EventReason::Removed,
                format!("removed {named}"),
                now,
            );
        }
        if let Some(failing) = &self.failing {
            let message = failing.message.clone();
            record_event(
                events,
                EventType::Warning,
                EventReason::RemovalFailed,
                message,
                now,
            );
        }
    }
}

impl<E: Engine> Controller<E> {
    /// Writes finished removals' status changes now, between passes.
    pub(super) async fn record_outcomes(&self) {
        let _guard = self.pass_lock.lock().await;
        self.write_unrecorded(true).await;
    }

    pub(super) async fn expire(
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
                info!(session = %name, reason = %reason, "Session expired.");
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
    pub(super) async fn write_unrecorded(&self, all: bool) {
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
        let now = Timestamp::now();
        let host = self.host_name.as_str();
        let writes = deltas.into_iter().map(|(owner, delta)| async move {
            let r = match owner.kind {
                // A session's counts go to this host's row as well.
                OwnerKind::Session => self
                    .own
                    .update_session(owner.name.as_str(), |s| {
                        let st = &mut s.status;
                        delta.apply(&mut st.removed, &mut st.conditions, &mut st.events, now);
                        let last_error = delta.last_error.as_deref();
                        st.add_host_removals(host, &delta.removed, delta.failures, last_error);
                        Ok(())
                    })
                    .await
                    .map(drop),
                OwnerKind::Agent => {
                    self.own
                        .update_owner(&owner, |st| {
                            delta.apply(st.removed, st.conditions, st.events, now);
                            Ok(())
                        })
                        .await
                }
            };
            match self.note_store(r) {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => warn!(owner = %owner, error = %e, "Could not record removal counts."),
            }
        });
        futures_util::future::join_all(writes).await;
    }

    pub(super) async fn apply_transition(
        &self,
        t: &Transition,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        match t {
            Transition::Expire { .. } => Ok(()),
            Transition::DelayOver { name } => {
                // The store may call the update more than once; log what the last call did.
                let over = AtomicBool::new(false);
                let r = self
                    .own
                    .update_session(name.as_str(), |s| {
                        over.store(s.end_delay(now), SeqCst);
                        Ok(())
                    })
                    .await;
                match self.note_store(r) {
                    Ok(_) if over.load(SeqCst) => {
                        info!(session = %name, "Cleanup delay over; its objects go now.");
                        Ok(())
                    }
                    Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Transition::HostDone { name, ended_at } => {
                // The live hosts as of now; the rows are decided on the record as stored.
                let fleet = self.fleet()?;
                // The store may call the update more than once; the last call is the one written.
                let reported = Mutex::new(Reported::default());
                let s = self
                    .own
                    .update_session(name.as_str(), |s| {
                        *lock(&reported) = s.report_host_done(&fleet, now);
                        Ok(())
                    })
                    .await;
                let reported = *lock(&reported);
                if let Ok(s) = self.note_store(s) {
                    if !reported.cleaned && reported.changed {
                        let waiting: Vec<&str> = s
                            .status
                            .hosts
                            .iter()
                            .filter(|r| r.state == HostState::Pending)
                            .map(|r| r.host_name.as_str())
                            .collect();
                        info!(session = %name, host = %fleet.this, waiting = %waiting.join(","), "Nothing of the session is left on this host.");
                    }
                    if reported.cleaned {
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
        // Eviction takes idle images of live owners too: ours, and not kept, is the rule.
        if r.reason == CleanupReason::DiskPressure {
            let keep = self.settings().disk_pressure.keep;
            return crate::core::eviction::may_evict(
                fresh,
                &desired.rules,
                &desired.matchers,
                &keep,
            );
        }
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
        if e.removal.reason == CleanupReason::DiskPressure {
            let bytes = self.evicted(&e.removal);
            if e.outcome == Outcome::Removed {
                self.metrics.disk_evicted(bytes);
            }
        }
        match &e.outcome {
            Outcome::Removed => {
                self.metrics.cleanup_attempted(kind);
                self.metrics.cleanup_succeeded(kind, e.removal.reason);
                info!(kind = %kind, target = %target, owner = %display_owner(owner), reason = %e.removal.reason, "Removed.");
                delta.removed.add(kind, 1);
                delta
                    .removed_what
                    .push(format!("{kind} {target} ({})", e.removal.reason));
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
                delta.failures += 1;
                delta.last_error = Some(format!("{kind} {target}: {message}"));
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
        if !delta.is_empty() {
            let mut unrecorded = lock(&self.unrecorded);
            unrecorded.entry(owner.clone()).or_default().merge(delta);
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

pub(super) fn display_owner(owner: Option<&OwnerRef>) -> String {
    owner.map(|o| o.to_string()).unwrap_or_default()
}
