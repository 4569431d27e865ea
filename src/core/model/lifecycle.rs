//! Over 500 lines: 440 of code (one method per phase change, with the event it records, each re-checked against the stored record) and their unit tests.
//!
//! The record lifecycle: every change of a phase or of a status timestamp is one of these
//! methods, so the API, the controller, the manifest directory and tests all move records the
//! same way. Each method checks that its change still applies to the record as stored (the
//! store calls it inside a read-modify-write) and says what it did, so callers log and count
//! from that. Time is passed in: the core never reads a clock.

use super::{
    record_event, Agent, AgentPhase, Condition, Duration, EndReason, Event, EventReason, EventType,
    Fleet, Name, Reported, Session, SessionPhase, Timestamp, API_SOURCE,
};

/// The condition a record carries while one of its removals keeps failing.
pub const REMOVAL_FAILING: &str = "RemovalFailing";
/// The condition a record carries while what it left is kept (`cleanup.delay`).
pub const CLEANUP_DELAYED: &str = "CleanupDelayed";

/// The daemon's defaults for `cleanup.delay` and `cleanup.delayOnFailure` (config keys
/// `cleanupDelay`, `cleanupDelayOnFailure`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupDelays {
    pub delay: Duration,
    pub on_failure: Option<Duration>,
}

impl CleanupDelays {
    /// The delay that applies: for a failure, the spec's `delayOnFailure`, else the daemon's,
    /// else the ordinary delay; otherwise the spec's `delay`, else the daemon's.
    pub fn resolve(
        &self,
        delay: Option<Duration>,
        on_failure: Option<Duration>,
        failed: bool,
    ) -> Duration {
        let ordinary = delay.unwrap_or(self.delay);
        if failed {
            on_failure.or(self.on_failure).unwrap_or(ordinary)
        } else {
            ordinary
        }
    }

    /// The delay for a session that ends for `reason`.
    pub fn for_session(&self, s: &Session, reason: EndReason) -> Duration {
        let c = &s.spec.cleanup;
        self.resolve(c.delay, c.delay_on_failure, reason == EndReason::Failed)
    }

    /// The delay for an agent that failed.
    pub fn for_failed_agent(&self, a: &Agent) -> Duration {
        let c = &a.spec.cleanup;
        self.resolve(c.delay, c.delay_on_failure, true)
    }
}

fn delayed(until: Timestamp, since: Timestamp) -> Condition {
    Condition {
        type_: CLEANUP_DELAYED.into(),
        message: format!(
            "cleanup delayed until {until}: its objects are kept, its running containers stopped"
        ),
        since,
    }
}

/// Holds a record's cleanup until `until`, for sessions and agents alike: the deadline, the
/// `CleanupDelayed` condition and its event.
fn hold_cleanup(
    cleanup_after: &mut Option<Timestamp>,
    conditions: &mut Vec<Condition>,
    events: &mut Vec<Event>,
    until: Timestamp,
    now: Timestamp,
) {
    *cleanup_after = Some(until);
    let held = delayed(until, now);
    let message = held.message.clone();
    set_condition(conditions, held);
    record_event(
        events,
        EventType::Normal,
        EventReason::CleanupDelayed,
        message,
        now,
    );
}

/// A lifecycle change the record's state does not allow; the API answers it with 409.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("session/{name} is {}; a heartbeat cannot revive it", phase.as_str())]
    HeartbeatNotLive { name: Name, phase: SessionPhase },
    #[error("agent/{name} is being deleted")]
    AgentDeleting { name: Name },
    /// A session's name is not reused: applying a session that has ended would not start a
    /// new one (its new objects would be removed at once), so it is refused.
    #[error("{}", session_over(.name, *.phase, *.ended_at, .declared_in.as_deref()))]
    SessionOver {
        name: Name,
        phase: SessionPhase,
        ended_at: Option<Timestamp>,
        /// The record's `status.source`: the way forward differs for a manifest file.
        declared_in: Option<String>,
    },
}

fn session_over(
    name: &Name,
    phase: SessionPhase,
    ended_at: Option<Timestamp>,
    source: Option<&str>,
) -> String {
    let ended = match ended_at {
        Some(at) => format!("session/{name} ended at {at} and is {} now", phase.as_str()),
        None => format!("session/{name} has ended and is {} now", phase.as_str()),
    };
    match source.filter(|s| *s != API_SOURCE) {
        Some(file) => format!(
            "{ended}; {file} still declares it, and a session's name is not reused. Remove it \
             from {file} (its record is then deleted and the name is free), or give it a new name"
        ),
        None => format!(
            "{ended}; a session's name is not reused, so applying it again would not start a \
             new session. Delete the old record first (`reaper delete session {name} --wait` \
             frees the name), or choose a new name"
        ),
    }
}

/// Why an agent is set `Stopped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// The cleanup of its failure finished. Only if it is still that failure: an agent that
    /// failed again meanwhile has a new cleanup to do.
    FailureCleanedUp { failed_since: Timestamp },
    /// It was reported `Running`, but none of its containers runs.
    NoRunningContainer,
    /// An operator cleaned it up by hand (`reaper cleanup agent`).
    Manual,
}

impl Session {
    /// The workflow is over (`session end`, or a manual cleanup). Only an Active session ends;
    /// returns whether this one did. With a `delay`, it is `Ending` until then.
    pub fn end(&mut self, reason: EndReason, now: Timestamp, delay: Duration) -> bool {
        if self.status.phase != SessionPhase::Active {
            return false;
        }
        self.status.phase = SessionPhase::Ended;
        self.status.ended_at = Some(now);
        self.status.end_reason = Some(reason);
        let type_ = match reason {
            EndReason::Failed => EventType::Warning,
            _ => EventType::Normal,
        };
        let message = format!("session/{} ended ({reason})", self.metadata.name);
        record_event(
            &mut self.status.events,
            type_,
            EventReason::Ended,
            message,
            now,
        );
        self.begin_delay(now, delay, now);
        true
    }

    fn begin_delay(&mut self, from: Timestamp, delay: Duration, now: Timestamp) {
        if delay.0.is_zero() {
            return;
        }
        self.status.phase = SessionPhase::Ending;
        let st = &mut self.status;
        let (after, conditions, events) =
            (&mut st.cleanup_after, &mut st.conditions, &mut st.events);
        hold_cleanup(after, conditions, events, from.plus(delay), now);
    }

    /// Its cleanup delay passed (or an operator skips it: `now` then): from `Ending` on to
    /// `Ended` or `Expired`, as its end reason says. Returns whether it moved.
    pub fn end_delay(&mut self, now: Timestamp) -> bool {
        let due = self.status.cleanup_after.is_none_or(|t| now >= t);
        if self.status.phase != SessionPhase::Ending || !due {
            return false;
        }
        self.status.phase = match self.status.end_reason {
            Some(EndReason::TtlExpired | EndReason::HeartbeatLost) => SessionPhase::Expired,
            _ => SessionPhase::Ended,
        };
        clear_condition(&mut self.status.conditions, CLEANUP_DELAYED);
        true
    }

    /// Still keeping what it left at `now`: `Ending`, and its delay not yet over.
    pub fn cleanup_delayed(&self, now: Timestamp) -> Option<Timestamp> {
        self.status
            .cleanup_after
            .filter(|t| self.status.phase == SessionPhase::Ending && now < *t)
    }

    /// An operator cleans it up by hand: its delay, if any, is over now.
    pub fn skip_delay(&mut self, now: Timestamp) -> bool {
        if self.status.phase == SessionPhase::Ending {
            self.status.cleanup_after = Some(now);
        }
        self.end_delay(now)
    }

    /// The planner saw its deadline (`at`, for `reason`) pass. Re-checked against the record as
    /// stored, where a heartbeat may have arrived meanwhile; returns whether it expired.
    /// With a `delay` (counted from `at`), it is `Ending` until then.
    pub fn expire(
        &mut self,
        at: Timestamp,
        reason: EndReason,
        now: Timestamp,
        restarted_at: Timestamp,
        delay: Duration,
    ) -> bool {
        let passed = self.deadline(restarted_at).is_some_and(|(d, _)| now >= d);
        if !passed {
            return false;
        }
        self.status.phase = SessionPhase::Expired;
        self.status.ended_at = Some(at);
        self.status.end_reason = Some(reason);
        let why = match (reason, self.spec.heartbeat_timeout, self.spec.ttl) {
            (EndReason::HeartbeatLost, Some(hb), _) => format!("no heartbeat for {hb}"),
            (_, _, Some(ttl)) => format!("its ttl of {ttl} passed"),
            _ => "its deadline passed".into(),
        };
        let message = format!("session/{} expired ({reason}): {why}", self.metadata.name);
        record_event(
            &mut self.status.events,
            EventType::Warning,
            EventReason::Expired,
            message,
            now,
        );
        // A delay that already passed (reaper was down) leaves it Expired.
        if at.plus(delay) > now {
            self.begin_delay(at, delay, now);
        }
        true
    }

    /// Renews the heartbeat. A session that is over, or being deleted, stays so.
    pub fn heartbeat(&mut self, now: Timestamp) -> Result<(), Refused> {
        if self.status.phase != SessionPhase::Active || self.status.deleting_since.is_some() {
            return Err(Refused::HeartbeatNotLive {
                name: self.metadata.name.clone(),
                phase: self.status.phase,
            });
        }
        self.status.last_heartbeat = Some(now);
        Ok(())
    }

    /// Everything it owned is gone: `Cleaned`, kept as history. Only an Ended or Expired
    /// session that is not being deleted (that one is purged instead); returns whether it was.
    pub fn mark_cleaned(&mut self, now: Timestamp) -> bool {
        if !matches!(
            self.status.phase,
            SessionPhase::Ended | SessionPhase::Expired
        ) || self.status.deleting_since.is_some()
        {
            return false;
        }
        self.status.phase = SessionPhase::Cleaned;
        self.status.cleaned_at = Some(now);
        clear_condition(&mut self.status.conditions, REMOVAL_FAILING);
        let message = format!(
            "everything it owned is gone ({} objects removed)",
            self.status.removed.total()
        );
        record_event(
            &mut self.status.events,
            EventType::Normal,
            EventReason::Cleaned,
            message,
            now,
        );
        true
    }

    /// This host's engine holds nothing more of the session: its row turns `done` (see
    /// [`super::SessionStatus::report_done`]), and once every live host is done the session
    /// turns `Cleaned` in the same write. Only a session that is over or being deleted (a
    /// deleted one is purged instead of cleaned; a Cleaned one stays so). Says what changed.
    pub fn report_host_done(&mut self, fleet: &Fleet, now: Timestamp) -> Reported {
        let over = matches!(
            self.status.phase,
            SessionPhase::Ended | SessionPhase::Expired | SessionPhase::Cleaned
        );
        if !over && self.status.deleting_since.is_none() {
            return Reported::default();
        }
        let mut r = self.status.report_done(fleet, now);
        r.cleaned = r.all_done && self.mark_cleaned(now);
        r
    }

    /// `reaper delete`: its objects go, then the record. Returns whether this marked it (false
    /// if it already was being deleted, since then).
    pub fn mark_for_deletion(&mut self, now: Timestamp) -> bool {
        mark_for_deletion(
            &mut self.status.deleting_since,
            &mut self.status.events,
            now,
        )
    }

    /// Whether the stored session may take a re-applied manifest of the same name. Only a
    /// session that has not ended may: a name is not reused, since an ended (or cleaned) session
    /// stays over and would remove whatever a new run under its name creates.
    pub fn accepts_reapply(&self) -> Result<(), Refused> {
        if self.status.phase == SessionPhase::Active {
            return Ok(());
        }
        Err(Refused::SessionOver {
            name: self.metadata.name.clone(),
            phase: self.status.phase,
            ended_at: self.status.ended_at.or(self.status.cleaned_at),
            declared_in: self.status.source.clone(),
        })
    }
}

impl Agent {
    /// The agent reports its phase. `phase_since` moves only when the phase changes, so a
    /// repeated report does not restart a failure's cleanup; returns whether it changed.
    /// A failure with a `failure_delay` keeps the agent's objects until then.
    pub fn report(
        &mut self,
        phase: AgentPhase,
        now: Timestamp,
        failure_delay: Duration,
    ) -> Result<bool, Refused> {
        if self.status.deleting_since.is_some() {
            return Err(Refused::AgentDeleting {
                name: self.metadata.name.clone(),
            });
        }
        if self.status.phase == phase {
            return Ok(false);
        }
        self.status.phase = phase;
        self.status.phase_since = now;
        self.status.cleanup_after = None;
        clear_condition(&mut self.status.conditions, CLEANUP_DELAYED);
        let type_ = match phase {
            AgentPhase::Failed => EventType::Warning,
            _ => EventType::Normal,
        };
        let message = format!("agent/{} reported {}", self.metadata.name, phase.as_str());
        record_event(
            &mut self.status.events,
            type_,
            EventReason::Reported,
            message,
            now,
        );
        if phase == AgentPhase::Failed && !failure_delay.0.is_zero() {
            let st = &mut self.status;
            let (after, conditions, events) =
                (&mut st.cleanup_after, &mut st.conditions, &mut st.events);
            hold_cleanup(after, conditions, events, now.plus(failure_delay), now);
        }
        Ok(true)
    }

    /// Still keeping what it left at `now` (a failed agent within its cleanup delay).
    pub fn cleanup_delayed(&self, now: Timestamp) -> Option<Timestamp> {
        self.status
            .cleanup_after
            .filter(|t| self.status.phase == AgentPhase::Failed && now < *t)
    }

    /// Sets it `Stopped`, if `cause` still holds for the record as stored; returns whether
    /// it did.
    pub fn stop(&mut self, cause: StopCause, now: Timestamp) -> bool {
        let due = match cause {
            StopCause::FailureCleanedUp { failed_since } => {
                self.status.phase == AgentPhase::Failed && self.status.phase_since == failed_since
            }
            StopCause::NoRunningContainer => self.status.phase == AgentPhase::Running,
            StopCause::Manual => self.status.phase != AgentPhase::Stopped,
        };
        if !due {
            return false;
        }
        self.status.phase = AgentPhase::Stopped;
        self.status.phase_since = now;
        self.status.cleanup_after = None;
        clear_condition(&mut self.status.conditions, CLEANUP_DELAYED);
        let why = match cause {
            StopCause::FailureCleanedUp { .. } => "the cleanup of its failure finished",
            StopCause::NoRunningContainer => {
                "it was reported running, but none of its containers runs"
            }
            StopCause::Manual => "an operator cleaned it up",
        };
        let message = format!("set Stopped: {why}");
        record_event(
            &mut self.status.events,
            EventType::Normal,
            EventReason::Stopped,
            message,
            now,
        );
        // A manual stop says nothing about whether the removals that kept failing succeeded.
        if cause != StopCause::Manual {
            clear_condition(&mut self.status.conditions, REMOVAL_FAILING);
        }
        true
    }

    /// `reaper delete`: its objects go, then the record. Returns whether this marked it.
    pub fn mark_for_deletion(&mut self, now: Timestamp) -> bool {
        mark_for_deletion(
            &mut self.status.deleting_since,
            &mut self.status.events,
            now,
        )
    }
}

/// Marks a record for deletion through its `deleting_since` and events alone, for writers that
/// hold only the status fields both kinds share. Returns whether this marked it.
pub fn mark_for_deletion(
    deleting_since: &mut Option<Timestamp>,
    events: &mut Vec<Event>,
    now: Timestamp,
) -> bool {
    if deleting_since.is_some() {
        return false;
    }
    *deleting_since = Some(now);
    let message = "deleted: its objects go, then the record".to_string();
    record_event(
        events,
        EventType::Normal,
        EventReason::Deleting,
        message,
        now,
    );
    true
}

impl Condition {
    /// One of the record's removals failed `attempts` times in a row.
    pub fn removal_failing(message: String, since: Timestamp) -> Self {
        Condition {
            type_: REMOVAL_FAILING.into(),
            message,
            since,
        }
    }
}

/// Sets `cond`, replacing the condition of the same type: a record has at most one of each.
pub fn set_condition(conditions: &mut Vec<Condition>, cond: Condition) {
    clear_condition(conditions, &cond.type_);
    conditions.push(cond);
}

/// Removes the condition of this type; returns whether there was one.
pub fn clear_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::*;
    use crate::core::model::Duration;

    fn at(secs: i64) -> Timestamp {
        Timestamp(T0.0 + secs * 1000)
    }

    fn failing() -> Condition {
        Condition::removal_failing("container c: in use (5 attempts)".into(), at(1))
    }

    #[test]
    fn only_an_active_session_ends() {
        let mut s = session("s").build();
        assert!(s.end(EndReason::Failed, at(5), Duration::ZERO));
        assert_eq!(s.status.phase, SessionPhase::Ended);
        assert_eq!(s.status.ended_at, Some(at(5)));
        assert_eq!(s.status.end_reason, Some(EndReason::Failed));

        let before = s.clone();
        assert!(
            !s.end(EndReason::Manual, at(9), Duration::ZERO),
            "the first end stands"
        );
        assert_eq!(s, before);
        let mut cleaned = session("c").cleaned(at(3)).build();
        let before = cleaned.clone();
        assert!(!cleaned.end(EndReason::Succeeded, at(9), Duration::ZERO));
        assert_eq!(cleaned, before);
    }

    #[test]
    fn expiry_is_rechecked_against_the_stored_record() {
        let mut s = session("s").heartbeat(Duration::from_secs(30)).build();
        assert!(!s.expire(at(30), EndReason::HeartbeatLost, at(29), T0, Duration::ZERO));
        assert_eq!(s.status.phase, SessionPhase::Active);

        // A heartbeat arrived after the planner looked: the deadline moved on.
        let mut renewed = s.clone();
        renewed.heartbeat(at(20)).unwrap();
        assert!(!renewed.expire(at(30), EndReason::HeartbeatLost, at(31), T0, Duration::ZERO));
        assert_eq!(renewed.status.phase, SessionPhase::Active);

        assert!(s.expire(at(30), EndReason::HeartbeatLost, at(31), T0, Duration::ZERO));
        assert_eq!(s.status.phase, SessionPhase::Expired);
        assert_eq!(
            s.status.ended_at,
            Some(at(30)),
            "ended when the deadline passed"
        );
        assert_eq!(s.status.end_reason, Some(EndReason::HeartbeatLost));
        assert!(
            !s.expire(at(30), EndReason::HeartbeatLost, at(40), T0, Duration::ZERO),
            "an Expired session has no deadline left"
        );
    }

    #[test]
    fn expiry_counts_heartbeats_from_a_restart() {
        let mut s = session("s").heartbeat(Duration::from_secs(30)).build();
        assert!(!s.expire(
            at(30),
            EndReason::HeartbeatLost,
            at(31),
            at(10),
            Duration::ZERO
        ));
        assert!(s.expire(
            at(40),
            EndReason::HeartbeatLost,
            at(40),
            at(10),
            Duration::ZERO
        ));
    }

    #[test]
    fn heartbeats_renew_only_a_live_session() {
        let mut s = session("s").build();
        s.heartbeat(at(7)).unwrap();
        assert_eq!(s.status.last_heartbeat, Some(at(7)));

        let mut ended = session("e").ended().build();
        let err = ended.heartbeat(at(8)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "session/e is ended; a heartbeat cannot revive it"
        );
        assert_eq!(ended.status.last_heartbeat, None);

        let mut deleting = session("d").deleting().build();
        assert!(matches!(
            deleting.heartbeat(at(8)),
            Err(Refused::HeartbeatNotLive {
                phase: SessionPhase::Active,
                ..
            })
        ));
        assert_eq!(deleting.status.last_heartbeat, None);
    }

    #[test]
    fn an_ended_or_expired_session_is_cleaned_once() {
        let mut s = session("s").ended().build();
        s.status.conditions.push(failing());
        assert!(s.mark_cleaned(at(4)));
        assert_eq!(s.status.phase, SessionPhase::Cleaned);
        assert_eq!(s.status.cleaned_at, Some(at(4)));
        assert!(s.status.conditions.is_empty(), "the failure is over");
        assert!(!s.mark_cleaned(at(5)));
        assert_eq!(s.status.cleaned_at, Some(at(4)));

        let mut expired = session("x").ttl(Duration::from_secs(1)).build();
        assert!(expired.expire(at(1), EndReason::TtlExpired, at(1), T0, Duration::ZERO));
        assert!(expired.mark_cleaned(at(2)));
    }

    #[test]
    fn a_session_is_cleaned_only_when_every_live_host_reported_done() {
        let two =
            |this: &str, other: &str| Fleet::new(this, [other.to_string()].into_iter().collect());
        let mut s = session("s").ended().build();
        let r = s.report_host_done(&two("host-a", "host-b"), at(4));
        assert!(r.changed && !r.cleaned);
        assert_eq!(s.status.phase, SessionPhase::Ended, "host-b is pending");
        assert!(s.report_host_done(&two("host-b", "host-a"), at(5)).cleaned);
        assert_eq!(
            (s.status.phase, s.status.cleaned_at),
            (SessionPhase::Cleaned, Some(at(5)))
        );
        assert_eq!(s.status.hosts.len(), 2);

        // Live or delayed: nothing to report, nothing written.
        for mut s in [
            session("live").build(),
            session("e").ending(Duration::from_secs(60)).build(),
        ] {
            let before = s.clone();
            let r = s.report_host_done(&Fleet::new("host-a", Default::default()), at(4));
            assert_eq!(r, Reported::default());
            assert_eq!(s, before);
        }

        // Being deleted: the rows move, the phase does not (the record is purged instead).
        let mut d = session("d").deleting().build();
        let r = d.report_host_done(&Fleet::new("host-a", Default::default()), at(4));
        assert!(r.all_done && !r.cleaned);
        assert_eq!(d.status.hosts.len(), 1);
        assert_eq!(d.status.phase, SessionPhase::Active);
    }

    #[test]
    fn an_active_or_deleted_session_is_never_cleaned() {
        for mut s in [
            session("live").build(),
            session("going").ended().deleting().build(),
        ] {
            let before = s.clone();
            assert!(!s.mark_cleaned(at(4)));
            assert_eq!(s, before);
        }
    }

    #[test]
    fn only_a_session_that_has_not_ended_takes_a_reapply() {
        assert_eq!(session("live").build().accepts_reapply(), Ok(()));
        // Being deleted is refused elsewhere (the store), with its own message.
        assert_eq!(session("d").deleting().build().accepts_reapply(), Ok(()));

        let mut cleaned = session("run-1").build();
        assert!(cleaned.end(EndReason::Succeeded, at(60), Duration::ZERO));
        assert!(cleaned.mark_cleaned(at(90)));
        let err = cleaned.accepts_reapply().unwrap_err();
        assert_eq!(
            err,
            Refused::SessionOver {
                name: Name::new("run-1").unwrap(),
                phase: SessionPhase::Cleaned,
                ended_at: Some(at(60)),
                declared_in: None,
            }
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "session/run-1 ended at {} and is cleaned now; ",
                at(60)
            )),
            "{msg}"
        );
        assert!(
            msg.contains("`reaper delete session run-1 --wait`"),
            "{msg}"
        );
        assert!(msg.contains("choose a new name"), "{msg}");

        // Ended or expired and not yet cleaned: just as over.
        let ended = session("e").ended().build();
        assert!(matches!(
            ended.accepts_reapply(),
            Err(Refused::SessionOver {
                phase: SessionPhase::Ended,
                ..
            })
        ));
        let mut expired = session("x").ttl(Duration::from_secs(1)).build();
        assert!(expired.expire(at(1), EndReason::TtlExpired, at(1), T0, Duration::ZERO));
        let msg = expired.accepts_reapply().unwrap_err().to_string();
        assert!(
            msg.contains(&format!("ended at {} and is expired now", at(1))),
            "{msg}"
        );
    }

    #[test]
    fn the_way_forward_for_a_file_is_the_file() {
        let mut s = session("f").cleaned(at(3)).build();
        s.status.source = Some("/etc/reaper/manifests/a.yaml".into());
        let msg = s.accepts_reapply().unwrap_err().to_string();
        assert!(
            msg.contains("/etc/reaper/manifests/a.yaml still declares it"),
            "{msg}"
        );
        assert!(
            msg.contains("Remove it from /etc/reaper/manifests/a.yaml"),
            "{msg}"
        );
        assert!(!msg.contains("reaper delete"), "{msg}");
        // Records of the API say so explicitly, or predate sources.
        s.status.source = Some(API_SOURCE.into());
        assert!(s
            .accepts_reapply()
            .unwrap_err()
            .to_string()
            .contains("reaper delete session f"));
    }

    #[test]
    fn deletion_is_marked_once_from_the_first_request() {
        let mut s = session("s").build();
        assert!(s.mark_for_deletion(at(3)));
        assert!(!s.mark_for_deletion(at(6)));
        assert_eq!(s.status.deleting_since, Some(at(3)));

        let mut a = agent("a").build();
        assert!(a.mark_for_deletion(at(3)));
        assert!(!a.mark_for_deletion(at(6)));
        assert_eq!(a.status.deleting_since, Some(at(3)));
    }

    #[test]
    fn a_report_moves_phase_since_only_on_a_change() {
        let mut a = agent("a").build();
        assert_eq!(
            a.report(AgentPhase::Running, at(2), Duration::ZERO),
            Ok(true)
        );
        assert_eq!(
            (a.status.phase, a.status.phase_since),
            (AgentPhase::Running, at(2))
        );
        assert_eq!(
            a.report(AgentPhase::Running, at(5), Duration::ZERO),
            Ok(false)
        );
        assert_eq!(a.status.phase_since, at(2));
        assert_eq!(
            a.report(AgentPhase::Failed, at(6), Duration::ZERO),
            Ok(true)
        );
        assert_eq!(a.status.phase_since, at(6));
    }

    #[test]
    fn a_deleted_agent_takes_no_reports() {
        let mut a = agent("a").deleting().build();
        let before = a.clone();
        let err = a
            .report(AgentPhase::Running, at(2), Duration::ZERO)
            .unwrap_err();
        assert_eq!(err.to_string(), "agent/a is being deleted");
        assert_eq!(a, before);
    }

    #[test]
    fn a_failed_agent_stops_only_after_the_same_failure() {
        let mut a = agent("a").phase(AgentPhase::Failed).build();
        a.status.conditions.push(failing());
        let other_failure = StopCause::FailureCleanedUp {
            failed_since: at(1),
        };
        assert!(!a.stop(other_failure, at(5)), "it failed again meanwhile");
        assert_eq!(a.status.phase, AgentPhase::Failed);

        let this_failure = StopCause::FailureCleanedUp { failed_since: T0 };
        assert!(a.stop(this_failure, at(5)));
        assert_eq!(
            (a.status.phase, a.status.phase_since),
            (AgentPhase::Stopped, at(5))
        );
        assert!(a.status.conditions.is_empty());
        assert!(!a.stop(this_failure, at(6)));
    }

    #[test]
    fn a_running_agent_without_containers_stops_only_while_running() {
        let mut a = agent("a").phase(AgentPhase::Running).build();
        assert!(a.stop(StopCause::NoRunningContainer, at(10)));
        assert_eq!(
            (a.status.phase, a.status.phase_since),
            (AgentPhase::Stopped, at(10))
        );
        let mut starting = agent("s").phase(AgentPhase::Starting).build();
        assert!(!starting.stop(StopCause::NoRunningContainer, at(10)));
        assert_eq!(starting.status.phase, AgentPhase::Starting);
    }

    #[test]
    fn a_manual_stop_stops_any_phase_and_keeps_conditions() {
        for phase in [
            AgentPhase::Starting,
            AgentPhase::Running,
            AgentPhase::Failed,
        ] {
            let mut a = agent("a").phase(phase).build();
            a.status.conditions.push(failing());
            assert!(a.stop(StopCause::Manual, at(3)), "{phase:?}");
            assert_eq!(
                (a.status.phase, a.status.phase_since),
                (AgentPhase::Stopped, at(3))
            );
            assert_eq!(a.status.conditions, [failing()]);
        }
        let mut stopped = agent("a").build();
        assert!(!stopped.stop(StopCause::Manual, at(3)));
        assert_eq!(stopped.status.phase_since, T0);
    }

    #[test]
    fn a_record_has_one_condition_of_each_type() {
        let mut conditions = vec![];
        set_condition(&mut conditions, failing());
        let newer = Condition::removal_failing("network n: in use (6 attempts)".into(), at(2));
        set_condition(&mut conditions, newer.clone());
        assert_eq!(conditions, [newer]);
        assert!(clear_condition(&mut conditions, REMOVAL_FAILING));
        assert!(!clear_condition(&mut conditions, REMOVAL_FAILING));
    }

    #[test]
    fn a_delay_keeps_an_ended_session_ending_until_it_passes() {
        let mut s = session("s").build();
        assert!(s.end(EndReason::Failed, at(5), Duration::from_secs(30)));
        assert_eq!(s.status.phase, SessionPhase::Ending);
        assert_eq!(s.status.cleanup_after, Some(at(35)));
        assert_eq!(s.status.ended_at, Some(at(5)));
        assert_eq!(s.cleanup_delayed(at(34)), Some(at(35)));
        assert_eq!(s.cleanup_delayed(at(35)), None);
        let cond = &s.status.conditions[0];
        assert_eq!(cond.type_, CLEANUP_DELAYED);
        assert!(cond.message.contains("until"), "{}", cond.message);
        // Nothing revives it or cleans it early.
        assert!(s.heartbeat(at(10)).is_err());
        assert!(!s.mark_cleaned(at(10)));
        assert!(!s.end(EndReason::Succeeded, at(10), Duration::ZERO));
        assert!(!s.end_delay(at(34)), "the delay is not over");
        assert_eq!(s.status.phase, SessionPhase::Ending);
        assert!(s.end_delay(at(35)));
        assert_eq!(s.status.phase, SessionPhase::Ended);
        assert!(s.status.conditions.is_empty());
        assert!(s.mark_cleaned(at(36)));
    }

    #[test]
    fn an_expired_session_waits_out_its_delay_from_its_deadline_and_then_reads_expired() {
        let mut s = session("s").ttl(Duration::from_secs(60)).build();
        assert!(s.expire(
            at(60),
            EndReason::TtlExpired,
            at(61),
            T0,
            Duration::from_secs(30)
        ));
        assert_eq!(s.status.phase, SessionPhase::Ending);
        assert_eq!(s.status.cleanup_after, Some(at(90)));
        assert!(s.end_delay(at(90)));
        assert_eq!(s.status.phase, SessionPhase::Expired);

        // reaper was down past the whole delay: straight to Expired.
        let mut late = session("l").ttl(Duration::from_secs(60)).build();
        assert!(late.expire(
            at(60),
            EndReason::TtlExpired,
            at(500),
            T0,
            Duration::from_secs(30)
        ));
        assert_eq!(late.status.phase, SessionPhase::Expired);
        assert!(late.status.conditions.is_empty());
    }

    #[test]
    fn an_operator_may_skip_the_delay() {
        let mut s = session("s").build();
        s.end(EndReason::Succeeded, at(5), Duration::from_secs(3600));
        assert!(s.skip_delay(at(6)));
        assert_eq!(s.status.phase, SessionPhase::Ended);
        assert_eq!(s.status.cleanup_after, Some(at(6)));
        assert!(
            !s.skip_delay(at(7)),
            "only an Ending session has a delay to skip"
        );
    }

    #[test]
    fn the_spec_overrides_the_daemon_and_a_failure_its_own_delay() {
        let m = Duration::from_secs;
        let daemon = CleanupDelays {
            delay: m(10),
            on_failure: None,
        };
        assert_eq!(daemon.resolve(None, None, false), m(10));
        assert_eq!(
            daemon.resolve(None, None, true),
            m(10),
            "no failure delay: the delay"
        );
        assert_eq!(daemon.resolve(Some(m(1)), None, true), m(1));
        assert_eq!(daemon.resolve(Some(m(1)), Some(m(7)), true), m(7));
        assert_eq!(daemon.resolve(Some(m(1)), Some(m(7)), false), m(1));
        let daemon = CleanupDelays {
            delay: m(0),
            on_failure: Some(m(600)),
        };
        assert_eq!(daemon.resolve(None, None, false), m(0));
        assert_eq!(daemon.resolve(None, None, true), m(600));
        assert_eq!(daemon.resolve(Some(m(5)), None, true), m(600));
        assert_eq!(daemon.resolve(None, Some(m(2)), true), m(2));
    }

    #[test]
    fn a_failed_agent_keeps_its_objects_for_its_delay_until_it_runs_or_stops_again() {
        let mut a = agent("a").phase(AgentPhase::Running).build();
        assert_eq!(
            a.report(AgentPhase::Failed, at(5), Duration::from_secs(60)),
            Ok(true)
        );
        assert_eq!(a.cleanup_delayed(at(64)), Some(at(65)));
        assert_eq!(a.cleanup_delayed(at(65)), None);
        assert_eq!(a.status.conditions[0].type_, CLEANUP_DELAYED);
        // A repeated failure report does not restart the clock.
        assert_eq!(
            a.report(AgentPhase::Failed, at(30), Duration::from_secs(60)),
            Ok(false)
        );
        assert_eq!(a.status.cleanup_after, Some(at(65)));
        assert_eq!(
            a.report(AgentPhase::Running, at(40), Duration::from_secs(60)),
            Ok(true)
        );
        assert_eq!(a.status.cleanup_after, None);
        assert!(a.status.conditions.is_empty());
        a.report(AgentPhase::Failed, at(50), Duration::from_secs(60))
            .unwrap();
        assert!(a.stop(StopCause::Manual, at(51)));
        assert_eq!(a.status.cleanup_after, None);
        assert!(a.status.conditions.is_empty());
    }
}
