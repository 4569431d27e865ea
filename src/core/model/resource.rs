//! The bounded vocabularies reaper reports in: what kind of thing was removed, why, and who owned it.
//! Every metric label value comes from one of these enums.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::Name;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    Container,
    Network,
    Volume,
    Image,
    Path,
}

impl ResourceKind {
    /// Removal order: containers free networks and volumes; images go once no container uses them.
    pub const ALL: [ResourceKind; 5] = [
        Self::Container,
        Self::Network,
        Self::Volume,
        Self::Image,
        Self::Path,
    ];
    pub const DOCKER: [ResourceKind; 4] =
        [Self::Container, Self::Network, Self::Volume, Self::Image];
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Network => "network",
            Self::Volume => "volume",
            Self::Image => "image",
            Self::Path => "path",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CleanupReason {
    SessionEnded,
    SessionExpired,
    HeartbeatLost,
    SessionDeleted,
    AgentFailed,
    AgentStopped,
    AgentDeleted,
    Orphan,
    Manual,
    /// The disk holding Docker's data root passed `diskPressure.highWatermark`.
    DiskPressure,
}

impl CleanupReason {
    pub const ALL: [CleanupReason; 10] = [
        Self::SessionEnded,
        Self::SessionExpired,
        Self::HeartbeatLost,
        Self::SessionDeleted,
        Self::AgentFailed,
        Self::AgentStopped,
        Self::AgentDeleted,
        Self::Orphan,
        Self::Manual,
        Self::DiskPressure,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::SessionEnded => "sessionEnded",
            Self::SessionExpired => "sessionExpired",
            Self::HeartbeatLost => "heartbeatLost",
            Self::SessionDeleted => "sessionDeleted",
            Self::AgentFailed => "agentFailed",
            Self::AgentStopped => "agentStopped",
            Self::AgentDeleted => "agentDeleted",
            Self::Orphan => "orphan",
            Self::Manual => "manual",
            Self::DiskPressure => "diskPressure",
        }
    }
}

impl fmt::Display for CleanupReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerKind {
    Session,
    Agent,
}

impl OwnerKind {
    pub const ALL: [OwnerKind; 2] = [Self::Session, Self::Agent];
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Agent => "agent",
        }
    }
}

/// A (kind, name) pair naming a record that owns Docker objects. The record need not exist.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnerRef {
    pub kind: OwnerKind,
    pub name: Name,
}

impl fmt::Display for OwnerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

/// Removed-object counts kept in a record's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCounts {
    #[serde(default)]
    pub containers: u64,
    #[serde(default)]
    pub networks: u64,
    #[serde(default)]
    pub volumes: u64,
    #[serde(default)]
    pub images: u64,
    #[serde(default)]
    pub paths: u64,
}

impl ObjectCounts {
    pub fn add(&mut self, kind: ResourceKind, n: u64) {
        let slot = match kind {
            ResourceKind::Container => &mut self.containers,
            ResourceKind::Network => &mut self.networks,
            ResourceKind::Volume => &mut self.volumes,
            ResourceKind::Image => &mut self.images,
            ResourceKind::Path => &mut self.paths,
        };
        *slot += n;
    }
    pub fn merge(&mut self, other: &ObjectCounts) {
        self.containers += other.containers;
        self.networks += other.networks;
        self.volumes += other.volumes;
        self.images += other.images;
        self.paths += other.paths;
    }
    pub fn total(&self) -> u64 {
        self.containers + self.networks + self.volumes + self.images + self.paths
    }
}

/// A status condition, as in Kubernetes: something an operator should know about a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub message: String,
    pub since: super::Timestamp,
}

/// Why a removal failed, as a bounded metric label (`reaper_cleanup_failures_total{error}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// 409: in use, or removal already in progress. Retried with backoff.
    Conflict,
    /// The call did not answer in time. Counted as a failure, never as a cleanup.
    Timeout,
    /// The Docker daemon could not be reached.
    DockerUnavailable,
    /// A filesystem error while removing a path.
    Io,
    Other,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 5] = [
        Self::Conflict,
        Self::Timeout,
        Self::DockerUnavailable,
        Self::Io,
        Self::Other,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::Timeout => "timeout",
            Self::DockerUnavailable => "docker_unavailable",
            Self::Io => "io",
            Self::Other => "other",
        }
    }
}

/// Docker API operations reaper performs, as a bounded metric label
/// (`reaper_docker_api_errors_total{operation}`). These are also the only calls a
/// socket proxy in front of reaper needs to allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DockerOp {
    Ping,
    List,
    Inspect,
    Stop,
    Remove,
    Events,
}

impl DockerOp {
    pub const ALL: [DockerOp; 6] = [
        Self::Ping,
        Self::List,
        Self::Inspect,
        Self::Stop,
        Self::Remove,
        Self::Events,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::List => "list",
            Self::Inspect => "inspect",
            Self::Stop => "stop",
            Self::Remove => "remove",
            Self::Events => "events",
        }
    }
}
