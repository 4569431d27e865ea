//! The Agent record: an agent whose containers, images and build directory reaper tidies
//! when it fails or stops.

use serde::{Deserialize, Serialize};

use super::{Condition, Duration, Labels, Name, ObjectCounts, ObjectMeta, RelPath, Timestamp};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AgentSpec,
    #[serde(default)]
    pub status: AgentStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentSpec {
    #[serde(default, rename = "match")]
    pub match_: AgentMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_dir: Option<RelPath>,
    #[serde(default, skip_serializing_if = "AgentCleanup::is_default")]
    pub cleanup: AgentCleanup,
}

/// How long a failed agent's containers, images and build dir are kept before they go (its
/// running containers are stopped at once). Unset: the daemon's `cleanupDelayOnFailure`, else
/// its `cleanupDelay`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentCleanup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_on_failure: Option<Duration>,
}

impl AgentCleanup {
    fn is_default(&self) -> bool {
        *self == AgentCleanup::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentMatch {
    /// Container names and image repositories starting with this belong to the agent.
    /// Default: `<agentNamePrefix><name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum AgentPhase {
    Starting,
    Running,
    Failed,
    #[default]
    Stopped,
}

impl AgentPhase {
    pub const ALL: [AgentPhase; 4] = [Self::Starting, Self::Running, Self::Failed, Self::Stopped];
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub phase: AgentPhase,
    #[serde(default)]
    pub created_at: Timestamp,
    /// When the phase last changed: the start of a failure's cleanup clock.
    #[serde(default)]
    pub phase_since: Timestamp,
    /// While Failed with a cleanup delay: when its objects may go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_after: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting_since: Option<Timestamp>,
    #[serde(default)]
    pub removed: ObjectCounts,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Recent events, oldest first, at most [`super::MAX_EVENTS`] (`reaper describe`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<super::Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Agent {
    /// A new record with default spec and status, as a bare manifest would give.
    pub fn named(name: Name) -> Self {
        Agent {
            metadata: ObjectMeta {
                name,
                labels: Labels::new(),
            },
            spec: AgentSpec::default(),
            status: AgentStatus::default(),
        }
    }

    pub fn name_prefix(&self, default_prefix: &str) -> String {
        self.spec
            .match_
            .name_prefix
            .clone()
            .unwrap_or_else(|| format!("{default_prefix}{}", self.metadata.name))
    }

    pub fn is_live(&self) -> bool {
        self.status.deleting_since.is_none()
            && matches!(
                self.status.phase,
                AgentPhase::Starting | AgentPhase::Running
            )
    }
}
