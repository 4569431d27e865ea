//! The desired state: Session and Agent records and the value types they are made of.
//! Pure data and validation; no I/O.

mod agent;
mod duration;
mod engine;
mod lifecycle;
mod meta;
mod resource;
mod session;
mod time;

pub use agent::{Agent, AgentMatch, AgentPhase, AgentSpec, AgentStatus};
pub use duration::{Duration, DurationError};
pub use engine::{
    has_exit_deadlock, EngineInfo, Flavour, SerialExits, SerialExitsReason, SerialExitsSetting,
};
pub use lifecycle::{
    clear_condition, mark_for_deletion, set_condition, Refused, StopCause, REMOVAL_FAILING,
};
pub use meta::{validate_label, validate_labels, validate_name, Labels, Name, ObjectMeta, RelPath};
pub use resource::{
    CleanupReason, Condition, DockerOp, ErrorClass, ObjectCounts, OwnerKind, OwnerRef, ResourceKind,
};
pub use session::{
    CleanupSpec, EndReason, Session, SessionMatch, SessionPhase, SessionSpec, SessionStatus,
};
pub use time::Timestamp;

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
