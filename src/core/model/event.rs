//! A record's recent events, kubectl style: what happened to it (ended, expired, each removal,
//! failures, holds), kept in its status as a bounded history so every store backend carries
//! them with the record, and they survive a restart.

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// At most this many events per record; the oldest (by last seen) goes first.
pub const MAX_EVENTS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// Why an event happened: one spelling, camelCase, as every reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventReason {
    /// The session was ended (`session end`, a manual cleanup).
    Ended,
    /// Its ttl passed or its heartbeat lapsed.
    Expired,
    /// What it left is kept (stopped) until its cleanup delay passes.
    CleanupDelayed,
    /// Objects of it were removed.
    Removed,
    /// A removal keeps failing.
    RemovalFailed,
    /// Everything it owned is gone.
    Cleaned,
    /// The agent reported a new phase.
    Reported,
    /// The agent was set Stopped by reaper.
    Stopped,
    /// `reaper delete`: its objects go, then the record.
    Deleting,
}

impl EventReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ended => "ended",
            Self::Expired => "expired",
            Self::CleanupDelayed => "cleanupDelayed",
            Self::Removed => "removed",
            Self::RemovalFailed => "removalFailed",
            Self::Cleaned => "cleaned",
            Self::Reported => "reported",
            Self::Stopped => "stopped",
            Self::Deleting => "deleting",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(rename = "type")]
    pub type_: EventType,
    pub reason: EventReason,
    pub message: String,
    /// How many times this same event happened; a repeat updates the count and last seen.
    pub count: u32,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// Records an event: a repeat of one already kept (same type, reason and message) counts up
/// and moves its last seen; a new one is added, and the oldest dropped past [`MAX_EVENTS`].
pub fn record_event(
    events: &mut Vec<Event>,
    type_: EventType,
    reason: EventReason,
    message: String,
    now: Timestamp,
) {
    if let Some(e) = events
        .iter_mut()
        .find(|e| e.type_ == type_ && e.reason == reason && e.message == message)
    {
        e.count = e.count.saturating_add(1);
        e.last_seen = e.last_seen.max(now);
    } else {
        events.push(Event {
            type_,
            reason,
            message,
            count: 1,
            first_seen: now,
            last_seen: now,
        });
    }
    events.sort_by_key(|e| e.last_seen);
    let excess = events.len().saturating_sub(MAX_EVENTS);
    events.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_counts_up_and_the_history_is_bounded() {
        let mut events = Vec::new();
        let t = |s: i64| Timestamp(s * 1000);
        record_event(
            &mut events,
            EventType::Warning,
            EventReason::RemovalFailed,
            "x".into(),
            t(1),
        );
        record_event(
            &mut events,
            EventType::Normal,
            EventReason::Ended,
            "y".into(),
            t(2),
        );
        record_event(
            &mut events,
            EventType::Warning,
            EventReason::RemovalFailed,
            "x".into(),
            t(3),
        );
        assert_eq!(events.len(), 2);
        let last = events.last().unwrap();
        assert_eq!(
            (last.reason, last.count, last.first_seen, last.last_seen),
            (EventReason::RemovalFailed, 2, t(1), t(3))
        );
        for i in 0..30 {
            record_event(
                &mut events,
                EventType::Normal,
                EventReason::Removed,
                format!("r{i}"),
                t(10 + i),
            );
        }
        assert_eq!(events.len(), MAX_EVENTS);
        assert_eq!(events.last().unwrap().message, "r29");
        assert_eq!(events[0].message, "r10");
    }
}
