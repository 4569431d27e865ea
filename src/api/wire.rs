//! Over 500 lines: 320 of code (every request and reply type) and the tests that hold them to docs/openapi.yaml.
//!
//! Every request and every reply of the HTTP API, as types that both the server and the CLI
//! use: a field renamed on one side is renamed on the other, and the tests below hold each type
//! to the shape docs/api.md and docs/openapi.yaml document. Records, plans and Docker objects
//! are the core's own serde types; this file only adds the envelopes around them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::core::eviction::{DiskUsage, Eviction};
use crate::core::inventory::DockerObject;
use crate::core::model::{
    Agent, AgentPhase, EngineInfo, OwnerRef, Percent, Record, ResourceKind, SerialExits, Session,
    Timestamp, API_VERSION,
};
use crate::core::plan::{Removal, Target, Waiting};
use crate::store::ApplyOutcome;

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// One manifest file of `POST /v1/apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyFile {
    pub name: String,
    pub content: String,
}

/// A Session manifest as `reaper apply` reads it: what `reaper session start` and `reaper run`
/// send, so that a session registered without YAML goes through the same validation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionManifest<'a> {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: &'a crate::core::model::ObjectMeta,
    pub spec: &'a crate::core::model::SessionSpec,
}

impl SessionManifest<'_> {
    /// The manifest as one apply file named `file_name` (which error messages quote).
    pub fn file(
        metadata: &crate::core::model::ObjectMeta,
        spec: &crate::core::model::SessionSpec,
        file_name: &str,
    ) -> Result<ApplyFile, String> {
        let doc = SessionManifest {
            api_version: API_VERSION,
            kind: "Session",
            metadata,
            spec,
        };
        let content = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
        Ok(ApplyFile {
            name: file_name.to_string(),
            content,
        })
    }
}

/// `POST /v1/apply`: a batch of manifest files, applied all or nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub files: Vec<ApplyFile>,
    /// Create only (kubectl create): a record that exists already is a conflict.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create: bool,
}

/// `POST /v1/sessions/{name}/end`; an empty body means `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndRequest {
    #[serde(default)]
    pub failed: bool,
}

/// `POST /v1/sessions/{name}/heartbeat`: no fields; the server ignores the body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {}

/// `POST /v1/agents/{name}/report`. The phase is accepted in any case ("failed", "FAILED"),
/// as the CLI accepts it; replies spell it as status does ("Failed").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRequest {
    #[serde(deserialize_with = "phase_in_any_case")]
    pub phase: AgentPhase,
}

fn phase_in_any_case<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AgentPhase, D::Error> {
    let s = String::deserialize(d)?;
    AgentPhase::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown phase {s:?}: expected one of Starting, Running, Failed, Stopped (any case)"
        ))
    })
}

/// `POST /v1/cleanup`: one owner's objects, or (no owner) everything removable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupRequest {
    #[serde(default)]
    pub owner: Option<OwnerRef>,
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/import`: records with their status, as `GET /v1/export` returns them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRequest {
    pub records: Vec<RecordView>,
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

/// Every error reply: a message for people, and for manifests the precise locations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// A record as the API and `get -o json|yaml` show it: Kubernetes-style, re-appliable. The
/// reply of the record endpoints (one, or an array for lists and `GET /v1/export`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

impl RecordView {
    /// `session/NAME` or `agent/NAME`.
    pub fn owner(&self) -> OwnerRef {
        use crate::core::liveness::{agent_ref, session_ref};
        match self {
            RecordView::Session { session, .. } => session_ref(session),
            RecordView::Agent { agent, .. } => agent_ref(agent),
        }
    }

    pub fn labels(&self) -> &crate::core::model::Labels {
        match self {
            RecordView::Session { session, .. } => &session.metadata.labels,
            RecordView::Agent { agent, .. } => &agent.metadata.labels,
        }
    }
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
        if v.get("status").is_none_or(serde_yaml::Value::is_null) {
            let kind = v.get("kind").and_then(serde_yaml::Value::as_str);
            let name = v
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(serde_yaml::Value::as_str);
            let what = match (kind, name) {
                (Some(k), Some(n)) => format!(" ({k} {n})"),
                _ => String::new(),
            };
            return Err(format!(
                "document {}{what} has no `status:`: it is a manifest, not a record saved by \
                 `reaper store export`; apply it with `reaper apply -f` instead. Nothing was \
                 imported",
                i + 1
            ));
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

/// `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub version: String,
    pub health: Health,
    /// Records per lower-case phase name, every phase present; `None` (null) when the store
    /// cannot be read.
    pub sessions: Option<BTreeMap<String, usize>>,
    pub agents: Option<BTreeMap<String, usize>>,
    pub manifest_errors: Vec<ManifestError>,
}

/// What `reaper status` and `/healthz` report; the controller fills it in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub docker_up: bool,
    pub docker_version: Option<String>,
    pub docker_error: Option<String>,
    /// What the engine said about itself at the last (re)connect.
    pub engine: Option<EngineInfo>,
    /// Whether container exits are serialised, why, and in a sentence.
    pub serial_exits: Option<SerialExits>,
    pub serial_exits_explained: Option<String>,
    /// `/_ping` answers but listings time out again and again: no removals are sent.
    pub docker_wedged: bool,
    pub store_error: Option<String>,
    /// Refusing to delete because the store or the Docker view is untrustworthy.
    pub safe_mode: bool,
    pub dry_run: bool,
    pub last_pass: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
    pub owned: BTreeMap<ResourceKind, i64>,
    pub orphans: BTreeMap<ResourceKind, i64>,
    /// The blast-radius guard holds: the last pass would have removed more orphans than
    /// `maxOrphanRemovalsPerPass`, and removed none of them. `null` when not held.
    #[serde(default)]
    pub blast_radius_held: Option<BlastRadiusHold>,
    /// Disk pressure as last measured; `null` before the first measurement.
    #[serde(default)]
    pub disk: Option<DiskStatus>,
}

/// Disk pressure on the filesystem holding Docker's data root, as last measured (every pass,
/// and at least once a minute): what `reaper status` summarises and `reaper disk` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskStatus {
    /// reaper can measure the data root. When not (a remote engine), eviction does nothing.
    pub available: bool,
    /// Why it is unavailable, or why the last measurement failed.
    pub error: Option<String>,
    /// `DockerRootDir`, from the engine's `/info`.
    pub data_root: Option<String>,
    pub measured_at: Timestamp,
    pub usage: Option<DiskUsage>,
    pub high_watermark: Percent,
    pub low_watermark: Percent,
    /// Usage is above the high watermark.
    pub pressure: bool,
    /// Under pressure, and evicting all that may go leaves usage at or above the low watermark.
    pub exhausted: bool,
    /// What is evicted now (or would be, in a dry run), in order.
    pub evictions: Vec<Eviction>,
}

/// Orphan removals the blast-radius guard holds back until the operator confirms
/// (`reaper cleanup --yes`), raises the cap, or fixes the rule that made them orphans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlastRadiusHold {
    /// Orphans the pass would have removed.
    pub orphans: usize,
    /// `maxOrphanRemovalsPerPass` at the time.
    pub limit: usize,
    /// A few of them, as `kind name`.
    pub examples: Vec<String>,
    /// When the hold began.
    pub since: Timestamp,
}

/// A file of the watched manifest directory that could not be applied, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestError {
    pub file: String,
    pub error: String,
}

/// `POST /v1/apply`: what happened to each record, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub results: Vec<ApplyOutcome>,
    pub warnings: Vec<String>,
}

/// A host of the fleet: `GET /v1/hosts` replies with an array of them, sorted by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostView {
    pub host_name: String,
    pub state: HostState,
    pub version: String,
    /// When its reaper started.
    pub started_at: Timestamp,
    /// Its last lease renewal (a gone host's: the last before its lease lapsed).
    pub renewed_at: Timestamp,
    /// Whether it was in safe mode (deleting nothing) at that renewal.
    pub safe_mode: bool,
}

/// `ready` while a host's presence lease is live; `gone` once it lapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    Ready,
    Gone,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Gone => "gone",
        }
    }
}

impl From<crate::store::hosts::KnownHost> for HostView {
    fn from(h: crate::store::hosts::KnownHost) -> Self {
        let i = h.info;
        HostView {
            host_name: i.host_name,
            state: if h.ready {
                HostState::Ready
            } else {
                HostState::Gone
            },
            version: i.version,
            started_at: i.started_at,
            renewed_at: i.renewed_at,
            safe_mode: i.safe_mode,
        }
    }
}

/// `POST /v1/import`: how many records were written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportResponse {
    pub imported: usize,
}

/// `GET /v1/orphans`: what a pass would remove now and why, orphans still in their grace, and
/// orphans the blast-radius guard holds back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub removals: Vec<Removal>,
    pub waiting: Vec<Waiting>,
    /// More orphan removals were due than `maxOrphanRemovalsPerPass`: none of them is made.
    #[serde(default)]
    pub held: Vec<Removal>,
}

/// `POST /v1/cleanup`: what was planned, what went, and what failed (to be retried).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupResponse {
    pub planned: Vec<Removal>,
    pub removed: Vec<Target>,
    pub failed: Vec<FailedRemoval>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedRemoval {
    pub target: Target,
    pub error: String,
}

/// `GET /v1/{sessions,agents}/{name}/objects`: the Docker objects the owner claims now.
pub type Objects = Vec<DockerObject>;

/// One line of `GET /v1/watch/sessions|agents`: a record that was added, modified or deleted
/// (with its last state); `BOOKMARK` once the records that existed at the start were sent;
/// `ERROR` (with `error`) just before the stream ends because the store cannot be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: WatchEventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<RecordView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::examples;
    use serde::de::DeserializeOwned;
    use serde_json::Value;
    use std::collections::BTreeSet;

    /// The example, read into `T` and written back, is the same JSON: no field of the
    /// documented shape is renamed, dropped or added by the type.
    fn round_trip<T: DeserializeOwned + Serialize>(example: &str) -> Value {
        let documented: Value = serde_json::from_str(example).expect("example is JSON");
        let typed: T = serde_json::from_value(documented.clone())
            .unwrap_or_else(|e| panic!("the type does not read the documented shape: {e}"));
        let written = serde_json::to_value(&typed).expect("encodes");
        assert_eq!(written, documented, "the type writes another shape");
        written
    }

    #[test]
    fn every_reply_keeps_its_documented_shape() {
        round_trip::<Vec<RecordView>>(&examples::sessions());
        round_trip::<Vec<RecordView>>(&examples::agents());
        round_trip::<Objects>(examples::objects());
        round_trip::<Preview>(examples::orphans());
        round_trip::<Status>(examples::status_up());
        round_trip::<Status>(examples::status_down());
        round_trip::<Status>(examples::status_wedged());
        round_trip::<CleanupResponse>(examples::cleanup());
        round_trip::<ApplyResponse>(examples::apply());
        round_trip::<ImportResponse>(r#"{"imported": 3}"#);
        round_trip::<Vec<HostView>>(&examples::hosts());
        round_trip::<ErrorBody>(examples::error());
        round_trip::<ErrorBody>(r#"{"error": "session s1 not found"}"#);
    }

    #[test]
    fn every_request_keeps_its_documented_shape() {
        round_trip::<ApplyRequest>(
            r#"{"files": [{"name": "a.yaml", "content": "kind: Session"}]}"#,
        );
        round_trip::<ApplyRequest>(
            r#"{"files": [{"name": "a.yaml", "content": "kind: Session"}], "create": true}"#,
        );
        round_trip::<EndRequest>(r#"{"failed": true}"#);
        round_trip::<HeartbeatRequest>("{}");
        round_trip::<ReportRequest>(r#"{"phase": "Running"}"#);
        for any_case in ["failed", "FAILED", "fAiLeD"] {
            let r: ReportRequest =
                serde_json::from_str(&format!(r#"{{"phase": "{any_case}"}}"#)).unwrap();
            assert_eq!(r.phase, AgentPhase::Failed);
        }
        let e = serde_json::from_str::<ReportRequest>(r#"{"phase": "done"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown phase \"done\""), "{e}");
        round_trip::<CleanupRequest>(r#"{"owner": null, "dryRun": true}"#);
        round_trip::<CleanupRequest>(
            r#"{"owner": {"kind": "agent", "name": "a1"}, "dryRun": false}"#,
        );
        round_trip::<ImportRequest>(&format!(r#"{{"records": {}}}"#, examples::agents()));
        // An empty body means `{}`: every field of these has a default.
        assert_eq!(
            serde_json::from_str::<EndRequest>("{}").ok(),
            Some(EndRequest::default())
        );
        assert_eq!(
            serde_json::from_str::<CleanupRequest>("{}").ok(),
            Some(CleanupRequest::default())
        );
    }

    #[test]
    fn an_export_is_read_and_a_manifest_is_refused_pointing_to_apply() {
        let manifest = include_str!("../../manifests/examples/session.yaml");
        let err = parse_export(manifest).unwrap_err();
        assert!(
            err.starts_with("document 1 (Session tdd-run-42) has no `status:`: it is a manifest"),
            "{err}"
        );
        assert!(err.contains("`reaper apply -f`"), "{err}");
        assert!(err.ends_with("Nothing was imported"), "{err}");
        // A second document without status: nothing of the stream is taken.
        let export: Vec<RecordView> = serde_json::from_str(&examples::agents()).unwrap();
        let mut text = String::new();
        for r in &export {
            text.push_str(&format!("---\n{}", serde_yaml::to_string(r).unwrap()));
        }
        assert_eq!(parse_export(&text).unwrap(), export);
        let mixed = format!("{text}---\n{manifest}");
        assert!(parse_export(&mixed)
            .unwrap_err()
            .starts_with("document 3 (Session tdd-run-42) has no `status:`"));
        let null_status =
            "apiVersion: reaper/v1\nkind: Agent\nmetadata: {name: a}\nspec: {}\nstatus:\n";
        assert!(parse_export(null_status)
            .unwrap_err()
            .contains("(Agent a) has no `status:`"));
    }

    fn openapi_schemas() -> serde_yaml::Mapping {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
        let text = std::fs::read_to_string(path).expect("docs/openapi.yaml");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("openapi.yaml is YAML");
        doc["components"]["schemas"]
            .as_mapping()
            .cloned()
            .expect("components.schemas")
    }

    fn keys(schema: &serde_yaml::Value, field: &str) -> BTreeSet<String> {
        match &schema[field] {
            serde_yaml::Value::Mapping(m) => m
                .keys()
                .filter_map(|k| k.as_str())
                .map(String::from)
                .collect(),
            serde_yaml::Value::Sequence(s) => s
                .iter()
                .filter_map(|k| k.as_str())
                .map(String::from)
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    /// The types, written out, have exactly the properties the OpenAPI document lists: all of
    /// them across the examples, and the required ones in each.
    #[test]
    fn the_types_have_the_properties_openapi_documents() {
        let sessions: Value = serde_json::from_str(&examples::sessions()).expect("JSON");
        let agents: Value = serde_json::from_str(&examples::agents()).expect("JSON");
        let objects: Value = serde_json::from_str(examples::objects()).expect("JSON");
        let orphans = round_trip::<Preview>(examples::orphans());
        let statuses: Vec<Value> = [examples::status_up(), examples::status_down()]
            .into_iter()
            .map(round_trip::<Status>)
            .collect();
        let cleanup = round_trip::<CleanupResponse>(examples::cleanup());
        let each = |v: &Value, ptr: &str| -> Vec<Value> {
            match v.pointer(ptr) {
                Some(Value::Array(a)) => a.clone(),
                Some(other) => vec![other.clone()],
                None => Vec::new(),
            }
        };
        let records = |v: &Value, ptr: &str| -> Vec<Value> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.pointer(ptr).cloned())
                .collect()
        };
        let shown: Vec<(&str, Vec<Value>)> = vec![
            ("Status", statuses.clone()),
            (
                "Health",
                statuses.iter().flat_map(|s| each(s, "/health")).collect(),
            ),
            ("SessionRecord", each(&sessions, "")),
            ("SessionSpec", records(&sessions, "/spec")),
            ("SessionStatus", records(&sessions, "/status")),
            ("ObjectMeta", records(&sessions, "/metadata")),
            ("ObjectCounts", records(&sessions, "/status/removed")),
            (
                "HostRow",
                records(&sessions, "/status/hosts")
                    .iter()
                    .flat_map(|rows| each(rows, ""))
                    .collect(),
            ),
            ("AgentRecord", each(&agents, "")),
            ("AgentSpec", records(&agents, "/spec")),
            ("AgentStatus", records(&agents, "/status")),
            ("DockerObject", each(&objects, "")),
            (
                "Removal",
                [each(&orphans, "/removals"), each(&cleanup, "/planned")].concat(),
            ),
            ("Waiting", each(&orphans, "/waiting")),
            ("CleanupResponse", vec![cleanup.clone()]),
            (
                "Host",
                each(&round_trip::<Vec<HostView>>(&examples::hosts()), ""),
            ),
            (
                "ApplyResponse",
                vec![round_trip::<ApplyResponse>(examples::apply())],
            ),
            ("Error", vec![round_trip::<ErrorBody>(examples::error())]),
            (
                "CleanupRequest",
                vec![round_trip::<CleanupRequest>(
                    r#"{"owner": null, "dryRun": true}"#,
                )],
            ),
            (
                "EndRequest",
                vec![round_trip::<EndRequest>(r#"{"failed": true}"#)],
            ),
            (
                "ReportRequest",
                vec![round_trip::<ReportRequest>(r#"{"phase": "Failed"}"#)],
            ),
        ];
        let schemas = openapi_schemas();
        for (name, values) in shown {
            let schema = schemas
                .get(name)
                .unwrap_or_else(|| panic!("no schema {name}"));
            assert!(!values.is_empty(), "no example of {name}");
            let mut seen = BTreeSet::new();
            for v in &values {
                let present: BTreeSet<String> =
                    v.as_object().expect("an object").keys().cloned().collect();
                let missing: Vec<_> = keys(schema, "required")
                    .difference(&present)
                    .cloned()
                    .collect();
                assert!(
                    missing.is_empty(),
                    "{name}: required {missing:?} not written in {v}"
                );
                seen.extend(present);
            }
            assert_eq!(
                seen,
                keys(schema, "properties"),
                "{name}: written vs documented properties"
            );
        }
    }
}
