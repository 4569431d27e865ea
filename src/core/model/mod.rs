//! The desired state: Session and Agent records and the value types they are made of.
//! Pure data and validation; no I/O.

mod agent;
mod duration;
mod engine;
mod event;
mod host_row;
mod lifecycle;
mod meta;
mod percent;
mod resource;
mod session;
mod time;

pub use agent::{Agent, AgentCleanup, AgentMatch, AgentPhase, AgentSpec, AgentStatus};
pub use duration::{Duration, DurationError};
pub use engine::{
    has_exit_deadlock, EngineInfo, Flavour, SerialExits, SerialExitsReason, SerialExitsSetting,
};
pub use event::{record_event, Event, EventReason, EventType, MAX_EVENTS};
pub use host_row::{Fleet, HostRow, HostState, Reported};
pub use lifecycle::{
    clear_condition, mark_for_deletion, set_condition, CleanupDelays, Refused, StopCause,
    CLEANUP_DELAYED, REMOVAL_FAILING,
};
pub use meta::{validate_label, validate_labels, validate_name, Labels, Name, ObjectMeta, RelPath};
pub use percent::Percent;
pub use resource::{
    CleanupReason, Condition, DockerOp, ErrorClass, ObjectCounts, OwnerKind, OwnerRef, ResourceKind,
};
pub use session::{
    CleanupSpec, EndReason, Session, SessionMatch, SessionPhase, SessionSpec, SessionStatus,
};
pub use time::Timestamp;

/// Deserialises a value written as a string through its `FromStr`, with its error as the
/// message (so it reaches the located YAML error): durations, listen addresses.
pub fn from_string<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// The API version every manifest, record and config carries.
pub const API_VERSION: &str = "reaper/v1";

/// The `status.source` of records written through the API (`reaper apply`); a manifest file's
/// records carry its path instead.
pub const API_SOURCE: &str = "api";

/// One record of either kind, as applied or stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Session(Session),
    Agent(Agent),
}

impl Record {
    /// Whether the record can be imported as is (`reaper store import`): it must carry the
    /// status an export saved. A manifest has none, and imported as a record it would be
    /// created in 1970: at once past its ttl, and its cleanup latency would count 56 years.
    pub fn check_importable(&self) -> Result<(), String> {
        let (created_at, phase_since) = match self {
            Record::Session(s) => (s.status.created_at, None),
            Record::Agent(a) => (a.status.created_at, Some(a.status.phase_since)),
        };
        let missing = if created_at == Timestamp::default() {
            "status.createdAt"
        } else if phase_since == Some(Timestamp::default()) {
            "status.phaseSince"
        } else {
            return Ok(());
        };
        Err(format!(
            "{} has no {missing}: `reaper store import` restores records saved by \
             `reaper store export`, with their status; to declare a record, use `reaper apply -f`",
            self.owner()
        ))
    }

    pub fn owner(&self) -> OwnerRef {
        match self {
            Record::Session(s) => OwnerRef {
                kind: OwnerKind::Session,
                name: s.metadata.name.clone(),
            },
            Record::Agent(a) => OwnerRef {
                kind: OwnerKind::Agent,
                name: a.metadata.name.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{agent, session, T0};

    #[test]
    fn only_a_record_with_its_status_is_importable() {
        assert_eq!(
            Record::Session(session("s").build()).check_importable(),
            Ok(())
        );
        assert_eq!(Record::Agent(agent("a").build()).check_importable(), Ok(()));

        // What a manifest gives: no status at all.
        let bare = Record::Session(Session::named(Name::new("tdd-run-42").unwrap()));
        let err = bare.check_importable().unwrap_err();
        assert!(
            err.starts_with("session/tdd-run-42 has no status.createdAt: "),
            "{err}"
        );
        assert!(err.contains("use `reaper apply -f`"), "{err}");
        let bare = Record::Agent(Agent::named(Name::new("a1").unwrap()));
        assert!(bare.check_importable().is_err());

        // A status without the instant the agent's phase began.
        let mut a = agent("a2").build();
        a.status.phase_since = Timestamp::default();
        let err = Record::Agent(a).check_importable().unwrap_err();
        assert!(
            err.starts_with("agent/a2 has no status.phaseSince"),
            "{err}"
        );
        let mut s = session("s2").build();
        s.status.created_at = T0;
        assert_eq!(Record::Session(s).check_importable(), Ok(()));
    }
}
