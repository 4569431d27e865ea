//! The JSON HTTP API: the daemon serves it on a Unix socket (whose file permissions are the
//! access control); the CLI is a thin client of it. `/metrics` and `/healthz` are served
//! separately on loopback TCP. The wire types live here, shared by both sides.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::core::model::{Agent, AgentPhase, OwnerRef, Record, Session, API_VERSION};

/// Request bodies larger than this are refused with 413 before they are read whole.
pub const MAX_BODY_BYTES: usize = crate::core::manifest::MAX_STREAM_BYTES + (1 << 20);

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

/// `POST /v1/import`: records with their status, as `GET /v1/export` returns them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportRequest {
    pub records: Vec<RecordView>,
}

impl From<RecordView> for Record {
    fn from(v: RecordView) -> Self {
        match v {
            RecordView::Session { session, .. } => Record::Session(session),
            RecordView::Agent { agent, .. } => Record::Agent(agent),
        }
    }
}

/// Reads a multi-document YAML stream of records with their status (`reaper store export`).
pub fn parse_export(text: &str) -> Result<Vec<RecordView>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v =
            serde_yaml::Value::deserialize(doc).map_err(|e| format!("document {}: {e}", i + 1))?;
        if v.is_null() {
            continue;
        }
        let r: RecordView =
            serde_yaml::from_value(v).map_err(|e| format!("document {}: {e}", i + 1))?;
        let (RecordView::Session { api_version, .. } | RecordView::Agent { api_version, .. }) = &r;
        if api_version != API_VERSION {
            return Err(format!(
                "document {}: apiVersion must be {API_VERSION}",
                i + 1
            ));
        }
        out.push(r);
    }
    Ok(out)
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
