//! The Session record: a workflow run whose Docker objects live exactly as long as it does.

use serde::{Deserialize, Serialize};

use super::{
    Condition, Duration, HostRow, Labels, Name, ObjectCounts, ObjectMeta, RelPath, Timestamp,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub metadata: ObjectMeta,
    pub spec: SessionSpec,
    #[serde(default)]
    pub status: SessionStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<Duration>,
    #[serde(default, rename = "match")]
    pub match_: SessionMatch,
    #[serde(default)]
    pub cleanup: CleanupSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<RelPath>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionMatch {
    /// Docker objects carrying ALL of these labels belong to the session.
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CleanupSpec {
    #[serde(default = "yes")]
    pub containers: bool,
    #[serde(default = "yes")]
    pub networks: bool,
    #[serde(default = "yes")]
    pub volumes: bool,
    #[serde(default = "yes")]
    pub images: bool,
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Duration,
    /// Keep what the session left this long after it ends (its running containers are stopped
    /// at once). Unset: the daemon's `cleanupDelay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// The same for a session ended as failed. Unset: the daemon's `cleanupDelayOnFailure`,
    /// else `delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_on_failure: Option<Duration>,
}

fn yes() -> bool {
    true
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for CleanupSpec {
    fn default() -> Self {
        CleanupSpec {
            containers: true,
            networks: true,
            volumes: true,
            images: true,
            stop_timeout: default_stop_timeout(),
            delay: None,
            delay_on_failure: None,
        }
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum SessionPhase {
    #[default]
    Active,
    /// Over, but what it left is kept until `status.cleanupAfter` (`spec.cleanup.delay`); its
    /// running containers are stopped.
    Ending,
    /// The workflow said it is over (`session end`), successfully or not.
    Ended,
    /// Its ttl passed or its heartbeat lapsed.
    Expired,
    /// Everything it owned is gone; kept as history until `historyRetention`.
    Cleaned,
}

impl SessionPhase {
    pub const ALL: [SessionPhase; 5] = [
        Self::Active,
        Self::Ending,
        Self::Ended,
        Self::Expired,
        Self::Cleaned,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Ending => "ending",
            Self::Ended => "ended",
            Self::Expired => "expired",
            Self::Cleaned => "cleaned",
        }
    }
}

/// Why a session stopped being live; it becomes the `reason` of its cleanups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndReason {
    Succeeded,
    Failed,
    TtlExpired,
    HeartbeatLost,
    Manual,
}

impl EndReason {
    /// The one spelling, as in status, the CLI, logs and events (serde's camelCase).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TtlExpired => "ttlExpired",
            Self::HeartbeatLost => "heartbeatLost",
            Self::Manual => "manual",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    pub phase: SessionPhase,
    #[serde(default)]
    pub created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// While `Ending`: when its objects may go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_after: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleaned_at: Option<Timestamp>,
    /// Set by `reaper delete`: the record goes once its objects are gone (a finalizer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting_since: Option<Timestamp>,
    #[serde(default)]
    pub removed: ObjectCounts,
    /// Each host's share of the cleanup, sorted by host name (see `host_row.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostRow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Recent events, oldest first, at most [`super::MAX_EVENTS`] (`reaper describe`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<super::Event>,
    /// Where the record came from: `api`, or the manifest file that declares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Session {
    /// A new record with default spec and status, as a bare manifest would give.
    pub fn named(name: Name) -> Self {
        Session {
            metadata: ObjectMeta {
                name,
                labels: Labels::new(),
            },
            spec: SessionSpec::default(),
            status: SessionStatus::default(),
        }
    }

    /// The instant this session stops being live by itself (ttl or heartbeat), if any.
    /// `restarted_at` makes heartbeat timeouts count from the daemon's start, so downtime
    /// of reaper itself never expires sessions.
    pub fn deadline(&self, restarted_at: Timestamp) -> Option<(Timestamp, EndReason)> {
        if self.status.phase != SessionPhase::Active {
            return None;
        }
        let ttl = self
            .spec
            .ttl
            .map(|ttl| (self.status.created_at.plus(ttl), EndReason::TtlExpired));
        let heartbeat = self.spec.heartbeat_timeout.map(|hb| {
            let last = self.status.last_heartbeat.unwrap_or(self.status.created_at);
            (last.max(restarted_at).plus(hb), EndReason::HeartbeatLost)
        });
        match (ttl, heartbeat) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Live: the record is Active, not being deleted, and no deadline has passed.
    pub fn is_live(&self, now: Timestamp, restarted_at: Timestamp) -> bool {
        self.status.phase == SessionPhase::Active
            && self.status.deleting_since.is_none()
            && self.deadline(restarted_at).is_none_or(|(at, _)| now < at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::CleanupReason;

    fn serde_name(v: &impl Serialize) -> String {
        serde_json::to_value(v)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    /// One spelling per reason: what status and the API carry is what logs, metrics and the
    /// CLI print, camelCase throughout.
    #[test]
    fn each_reason_is_spelled_one_way() {
        use EndReason::*;
        for r in [Succeeded, Failed, TtlExpired, HeartbeatLost, Manual] {
            assert_eq!(serde_name(&r), r.as_str());
            assert_eq!(r.to_string(), r.as_str());
        }
        for r in CleanupReason::ALL {
            assert_eq!(serde_name(&r), r.as_str());
            assert!(!r.as_str().contains('_'), "{r}");
        }
        assert_eq!(
            CleanupReason::HeartbeatLost.as_str(),
            HeartbeatLost.as_str()
        );
    }
}
