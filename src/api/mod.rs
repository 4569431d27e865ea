//! The JSON HTTP API: the daemon serves it on a Unix socket (whose file permissions are the
//! access control); the CLI is a thin client of it. `/metrics` and `/healthz` are served
//! separately on loopback TCP. The wire types live here, shared by both sides.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::model::{Agent, AgentPhase, OwnerRef, Record, Session, API_VERSION};

/// Request bodies larger than this are refused with 413 before they are read whole.
pub const MAX_BODY_BYTES: usize = crate::manifest::MAX_STREAM_BYTES + (1 << 20);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyFile {
    pub name: String,
    pub content: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub files: Vec<ApplyFile>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndRequest {
    #[serde(default)]
    pub failed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportRequest {
    pub phase: AgentPhase,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupRequest {
    #[serde(default)]
    pub owner: Option<OwnerRef>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Every error response: a message for people, and for manifests the precise locations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// A record as the API and `get -o json|yaml` show it: Kubernetes-style, re-appliable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "PascalCase")]
pub enum RecordView {
    Session {
        #[serde(rename = "apiVersion")]
        api_version: String,
        #[serde(flatten)]
        session: Session,
    },
    Agent {
        #[serde(rename = "apiVersion")]
        api_version: String,
        #[serde(flatten)]
        agent: Agent,
    },
}

impl From<Record> for RecordView {
    fn from(r: Record) -> Self {
        match r {
            Record::Session(session) => RecordView::Session {
                api_version: API_VERSION.into(),
                session,
            },
            Record::Agent(agent) => RecordView::Agent {
                api_version: API_VERSION.into(),
                agent,
            },
        }
    }
}
