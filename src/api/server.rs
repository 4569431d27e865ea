//! Over 500 lines: one handler per API route, each a few lines; they share the request limits and error mapping at the top.
//!
//! HTTP handlers: the JSON API on the Unix socket, and `/metrics` + `/healthz` on TCP.
//! Handlers translate requests into store updates and calls on the daemon handle; they decide
//! nothing about Docker objects themselves. Every body in and out is a `wire` type.

use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::daemon::{Daemon, Unavailable};
use super::watch::{self, LineBody};
use super::wire::{
    ApplyRequest, ApplyResponse, CleanupRequest, CleanupResponse, EndRequest, ErrorBody, HostView,
    ImportRequest, ImportResponse, RecordView, ReportRequest, Status,
};
use super::MAX_BODY_BYTES;
use crate::core::manifest::{self, Source};
use crate::core::model::{
    AgentPhase, EndReason, Name, OwnerKind, OwnerRef, Record, Refused, SessionPhase, StopCause,
    Timestamp,
};
use crate::core::plan::Scope;
use crate::store::hosts::{check_host_name, Forget};
use crate::store::{self, StoreError, API_SOURCE};

/// A client must send its request headers within this time (slow clients cannot hold a slot).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// And its body within this time.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: msg.into(),
                details: Vec::new(),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) | StoreError::Stale { .. } => StatusCode::CONFLICT,
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            StoreError::Corrupt(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Io(_) => StatusCode::INSUFFICIENT_STORAGE,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<Unavailable> for ApiError {
    fn from(e: Unavailable) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.0)
    }
}

/// A reply's status and JSON body, serialised once, straight to bytes (no `Value` tree:
/// listing 10,000 records spent a quarter of its time building and dropping one).
type Reply = Result<(StatusCode, Vec<u8>), ApiError>;

fn ok(v: impl Serialize) -> Reply {
    with_status(StatusCode::OK, v)
}

fn with_status(status: StatusCode, v: impl Serialize) -> Reply {
    serde_json::to_vec(&v)
        .map(|body| (status, body))
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the reply: {e}"),
            )
        })
}

/// Anything that accepts byte streams: the API's Unix socket and the TCP listeners.
pub trait Listener: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_stream(
        &self,
    ) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    async fn accept_stream(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Serves HTTP/1 connections from `listener` until shutdown; each connection is a tracked task.
pub async fn serve<L, F, Fut, B>(
    listener: L,
    handler: F,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    L: Listener,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = listener.accept_stream() => match s {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let svc = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}

fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let (status, bytes) = match reply {
        Ok(r) => r,
        Err(e) => (e.status, serde_json::to_vec(&e.body).unwrap_or_default()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    if let Some(len) = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if len > MAX_BODY_BYTES {
            return Err(too_large());
        }
    }
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            ))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}"),
            ))
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    let bytes = if bytes.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        bytes
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

fn name_of(s: &str) -> Result<Name, ApiError> {
    Name::new(s).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
}

fn not_found(kind: OwnerKind, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("{}/{name} not found", kind.as_str()),
    )
}

/// A reply body: one JSON document, or the lines of a watch.
pub type ApiBody = Either<Full<Bytes>, LineBody>;

/// The API router for the Unix socket: `GET /v1/watch/sessions|agents` streams (until `stop`
/// at the latest); every other route is [`handle_api`].
pub async fn handle_api_streaming(
    daemon: Arc<dyn Daemon>,
    stop: CancellationToken,
    req: Request<Incoming>,
) -> Response<ApiBody> {
    if req.method() == Method::GET {
        if let Some(plural) = req.uri().path().strip_prefix("/v1/watch/") {
            let reply = start_watch(daemon.as_ref(), plural, req.uri().query(), stop);
            return reply.unwrap_or_else(|e| respond(Err(e)).map(Either::Left));
        }
    }
    handle_api(daemon, req).await.map(Either::Left)
}

/// The longest `timeoutSeconds` a watch takes (a day); without it a watch has no end.
const MAX_WATCH_SECONDS: u64 = 86_400;

fn start_watch(
    ctl: &dyn Daemon,
    plural: &str,
    query: Option<&str>,
    stop: CancellationToken,
) -> Result<Response<ApiBody>, ApiError> {
    let kind = match plural.trim_end_matches('/') {
        "sessions" => OwnerKind::Session,
        "agents" => OwnerKind::Agent,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: GET /v1/watch/{plural}; try /v1/watch/sessions or /v1/watch/agents"),
            ))
        }
    };
    let mut timeout = None;
    for (key, value) in query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        if key == "timeoutSeconds" {
            let secs = value
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=MAX_WATCH_SECONDS).contains(s));
            let Some(secs) = secs else {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("timeoutSeconds must be a whole number from 1 to {MAX_WATCH_SECONDS}, got {value:?}"),
                ));
            };
            timeout = Some(Duration::from_secs(secs));
        }
    }
    let body = watch::watch(ctl.store()?, kind, timeout, stop);
    let mut resp = Response::new(Either::Right(body));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(watch::CONTENT_TYPE),
    );
    Ok(resp)
}

/// The API router for the Unix socket.
pub async fn handle_api(daemon: Arc<dyn Daemon>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let ctl = daemon.as_ref();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let reply = match (&method, segs.as_slice()) {
        (&Method::GET, ["v1", "status"]) => status(ctl),
        (&Method::GET, ["v1", kind @ ("sessions" | "agents")]) => list(ctl, kind),
        (&Method::GET, ["v1", kind @ ("sessions" | "agents"), name]) => get_record(ctl, kind, name),
        (&Method::GET, ["v1", kind @ ("sessions" | "agents"), name, "objects"]) => {
            objects(ctl, kind, name).await
        }
        (&Method::GET, ["v1", kind @ ("sessions" | "agents"), name, "events"]) => {
            events(ctl, kind, name)
        }
        (&Method::GET, ["v1", kind @ ("sessions" | "agents"), name, "match"]) => {
            effective_match(ctl, kind, name)
        }
        (&Method::DELETE, ["v1", kind @ ("sessions" | "agents"), name]) => {
            delete(ctl, kind, name).await
        }
        (&Method::POST, ["v1", "sessions", name, "end"]) => {
            match read_json::<EndRequest>(req).await {
                Ok(body) => end(ctl, name, body.failed).await,
                Err(e) => Err(e),
            }
        }
        (&Method::POST, ["v1", "sessions", name, "heartbeat"]) => heartbeat(ctl, name).await,
        (&Method::POST, ["v1", "agents", name, "report"]) => {
            match read_json::<ReportRequest>(req).await {
                Ok(body) => report(ctl, name, body.phase).await,
                Err(e) => Err(e),
            }
        }
        (&Method::POST, ["v1", "apply"]) => match read_json::<ApplyRequest>(req).await {
            Ok(body) => apply(ctl, body).await,
            Err(e) => Err(e),
        },
        (&Method::GET, ["v1", "hosts"]) => hosts(ctl),
        (&Method::DELETE, ["v1", "hosts", name]) => forget_host(ctl, name).await,
        (&Method::GET, ["v1", "export"]) => export(ctl),
        (&Method::POST, ["v1", "import"]) => match read_json::<ImportRequest>(req).await {
            Ok(body) => import(ctl, body).await,
            Err(e) => Err(e),
        },
        (&Method::GET, ["v1", "orphans"]) => match ctl.preview(&Scope::Normal).await {
            Ok(preview) => ok(preview),
            Err(e) => Err(e.into()),
        },
        (&Method::POST, ["v1", "cleanup"]) => match read_json::<CleanupRequest>(req).await {
            Ok(body) => cleanup(ctl, body).await,
            Err(e) => Err(e),
        },
        (_, ["v1", ..]) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {method} {path}"),
        )),
    };
    respond(reply)
}

fn kind_of(plural: &str) -> OwnerKind {
    if plural == "agents" {
        OwnerKind::Agent
    } else {
        OwnerKind::Session
    }
}

fn status(ctl: &dyn Daemon) -> Reply {
    let records = ctl
        .store()
        .and_then(|st| Ok((st.sessions()?, st.agents()?)));
    let (sessions, agents) = match records {
        Ok((s, a)) => (
            Some(phase_counts(
                SessionPhase::ALL.iter().map(SessionPhase::as_str),
                s.iter().map(|x| x.status.phase.as_str()),
            )),
            Some(phase_counts(
                AgentPhase::ALL.iter().map(AgentPhase::as_str),
                a.iter().map(|x| x.status.phase.as_str()),
            )),
        ),
        Err(_) => (None, None),
    };
    ok(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        health: ctl.health(),
        sessions,
        agents,
        manifest_errors: ctl.manifest_errors(),
    })
}

/// Records per phase name, with every phase present (zero when none is in it).
fn phase_counts<'a>(
    all: impl Iterator<Item = &'a str>,
    phases: impl Iterator<Item = &'a str>,
) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = all.map(|p| (p.to_string(), 0)).collect();
    for p in phases {
        *counts.entry(p.to_string()).or_default() += 1;
    }
    counts
}

fn export(ctl: &dyn Daemon) -> Reply {
    let records = ctl.store()?.export()?;
    ok(records
        .into_iter()
        .map(RecordView::from)
        .collect::<Vec<_>>())
}

async fn import(ctl: &dyn Daemon, body: ImportRequest) -> Reply {
    let records: Vec<Record> = body.records.into_iter().map(Record::from).collect();
    // A record without the status an export saved (a manifest) is refused, all or nothing.
    for r in &records {
        r.check_importable().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{e}; nothing was imported"),
            )
        })?;
    }
    let n = ctl.store()?.import(records).await?;
    info!(records = n, "Records imported.");
    ok(ImportResponse { imported: n })
}

fn list(ctl: &dyn Daemon, plural: &str) -> Reply {
    let store = ctl.store()?;
    let views: Vec<RecordView> = match kind_of(plural) {
        OwnerKind::Session => store
            .sessions()?
            .into_iter()
            .map(|s| RecordView::from(Record::Session(s)))
            .collect(),
        OwnerKind::Agent => store
            .agents()?
            .into_iter()
            .map(|a| RecordView::from(Record::Agent(a)))
            .collect(),
    };
    ok(views)
}

fn get_record(ctl: &dyn Daemon, plural: &str, name: &str) -> Reply {
    ok(RecordView::from(read_record(ctl, plural, name)?))
}

fn read_record(ctl: &dyn Daemon, plural: &str, name: &str) -> Result<Record, ApiError> {
    let kind = kind_of(plural);
    let record = match kind {
        OwnerKind::Session => ctl.store()?.session(name)?.map(Record::Session),
        OwnerKind::Agent => ctl.store()?.agent(name)?.map(Record::Agent),
    };
    record.ok_or_else(|| not_found(kind, name))
}

/// The record's recent events, oldest first (kept in its status, bounded).
fn events(ctl: &dyn Daemon, plural: &str, name: &str) -> Reply {
    ok(match read_record(ctl, plural, name)? {
        Record::Session(s) => s.status.events,
        Record::Agent(a) => a.status.events,
    })
}

/// The rules by which objects are the record's, defaults filled in.
fn effective_match(ctl: &dyn Daemon, plural: &str, name: &str) -> Reply {
    let record = read_record(ctl, plural, name)?;
    ok(crate::core::ownership::effective_match(
        &record,
        &ctl.rules(),
    ))
}

async fn objects(ctl: &dyn Daemon, plural: &str, name: &str) -> Reply {
    let kind = kind_of(plural);
    get_record(ctl, plural, name)?;
    let owner = OwnerRef {
        kind,
        name: name_of(name)?,
    };
    ok(ctl.owned_by(&owner).await?)
}

async fn delete(ctl: &dyn Daemon, plural: &str, name: &str) -> Reply {
    let now = Timestamp::now();
    let kind = kind_of(plural);
    let view = match kind {
        OwnerKind::Session => {
            let s = ctl
                .store()?
                .update_session(name, |s| {
                    forbid_file_owned(kind, name, s.status.source.as_deref())?;
                    s.mark_for_deletion(now);
                    Ok(())
                })
                .await?;
            RecordView::from(Record::Session(s))
        }
        OwnerKind::Agent => {
            let a = ctl
                .store()?
                .update_agent(name, |a| {
                    forbid_file_owned(kind, name, a.status.source.as_deref())?;
                    a.mark_for_deletion(now);
                    Ok(())
                })
                .await?;
            RecordView::from(Record::Agent(a))
        }
    };
    info!(owner = %format!("{}/{name}", kind.as_str()), "Deletion requested; objects go first.");
    with_status(StatusCode::ACCEPTED, view)
}

/// The fleet's hosts, sorted by name, this daemon's included.
fn hosts(ctl: &dyn Daemon) -> Reply {
    let hosts = ctl.store()?.hosts(Timestamp::now())?;
    ok(hosts.into_iter().map(HostView::from).collect::<Vec<_>>())
}

/// Forgets a gone host; a ready one is refused (409): it would only write itself again.
async fn forget_host(ctl: &dyn Daemon, name: &str) -> Reply {
    check_host_name(name).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let store = ctl.store()?;
    let known = store
        .hosts(Timestamp::now())?
        .into_iter()
        .find(|h| h.info.host_name == name);
    let refused = |why: &str| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("host/{name} is ready (its lease is live){why}; only a gone host is forgotten"),
        )
    };
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("host/{name} not found"));
    match known {
        None => Err(not_found()),
        Some(h) if h.ready => Err(refused("")),
        Some(h) => match store.forget_host(name).await? {
            Forget::Forgotten => {
                info!(host = %name, "Gone host forgotten.");
                ok(HostView::from(h))
            }
            Forget::Ready => Err(refused(": it came back")),
            Forget::Unknown => Err(not_found()),
        },
    }
}

/// A lifecycle change the record's state does not allow.
fn refused(e: Refused) -> StoreError {
    StoreError::Conflict(e.to_string())
}

/// Records declared by a manifest file change only through that file.
fn forbid_file_owned(kind: OwnerKind, name: &str, source: Option<&str>) -> Result<(), StoreError> {
    match source {
        Some(src) if src != API_SOURCE => Err(store::source_conflict(kind, name, src, API_SOURCE)),
        _ => Ok(()),
    }
}

async fn end(ctl: &dyn Daemon, name: &str, failed: bool) -> Reply {
    let now = Timestamp::now();
    let reason = if failed {
        EndReason::Failed
    } else {
        EndReason::Succeeded
    };
    let delays = ctl.cleanup_delays();
    let s = ctl
        .store()?
        .update_session(name, |s| {
            let delay = delays.for_session(s, reason);
            s.end(reason, now, delay);
            Ok(())
        })
        .await?;
    ok(RecordView::from(Record::Session(s)))
}

async fn heartbeat(ctl: &dyn Daemon, name: &str) -> Reply {
    let now = Timestamp::now();
    let s = ctl
        .store()?
        .update_session(name, |s| s.heartbeat(now).map_err(refused))
        .await?;
    ok(RecordView::from(Record::Session(s)))
}

async fn report(ctl: &dyn Daemon, name: &str, phase: AgentPhase) -> Reply {
    let now = Timestamp::now();
    let delays = ctl.cleanup_delays();
    let a = ctl
        .store()?
        .update_agent(name, |a| {
            let delay = delays.for_failed_agent(a);
            a.report(phase, now, delay).map(drop).map_err(refused)
        })
        .await?;
    ok(RecordView::from(Record::Agent(a)))
}

async fn apply(ctl: &dyn Daemon, body: ApplyRequest) -> Reply {
    let sources: Vec<Source<'_>> = body
        .files
        .iter()
        .map(|f| Source {
            name: &f.name,
            content: &f.content,
        })
        .collect();
    let parsed = manifest::parse_batch(&sources).map_err(|errs| ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        body: ErrorBody {
            error: format!(
                "{} error(s) in the manifests; nothing was applied",
                errs.0.len()
            ),
            details: errs.0.iter().map(|e| e.to_string()).collect(),
        },
    })?;
    let store = ctl.store()?;
    let now = Timestamp::now();
    let results = match body.create {
        true => store.create(parsed.records, API_SOURCE, now).await?,
        false => store.apply(parsed.records, API_SOURCE, now).await?,
    };
    ok(ApplyResponse {
        results,
        warnings: parsed.warnings,
    })
}

async fn cleanup(ctl: &dyn Daemon, req: CleanupRequest) -> Reply {
    // An owner without a record is fine: what the ownership rules attribute to its name goes.
    let scope = match &req.owner {
        Some(o) => Scope::ManualOwner(o.clone()),
        None => Scope::ManualAll,
    };
    if req.dry_run {
        return ok(CleanupResponse {
            planned: ctl.preview(&scope).await?.removals,
            removed: Vec::new(),
            failed: Vec::new(),
        });
    }
    let now = Timestamp::now();
    // A session cleaned up by hand is over: end it, so nothing it starts later survives. A
    // cleanup delay, its own or one still running, is skipped: the operator asked for now.
    if let Some(o) = req.owner.as_ref().filter(|o| o.kind == OwnerKind::Session) {
        let ended = ctl
            .store()?
            .update_session(o.name.as_str(), |s| {
                s.end(
                    EndReason::Manual,
                    now,
                    crate::core::model::Duration::from_secs(0),
                );
                s.skip_delay(now);
                Ok(())
            })
            .await;
        match ended {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let report = ctl.clean_up(&scope).await?;
    if let Some(o) = req.owner.as_ref().filter(|o| o.kind == OwnerKind::Agent) {
        if report.failed.is_empty() {
            let stopped = ctl
                .store()?
                .update_agent(o.name.as_str(), |a| {
                    a.stop(StopCause::Manual, now);
                    Ok(())
                })
                .await;
            match stopped {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    ok(report)
}

/// The API on the optional TCP listener: the same routes, each behind the bearer token.
pub async fn handle_api_with_token(
    daemon: Arc<dyn Daemon>,
    token: Arc<str>,
    stop: CancellationToken,
    req: Request<Incoming>,
) -> Response<ApiBody> {
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        let mut resp = respond(Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        )));
        resp.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return resp.map(Either::Left);
    }
    handle_api_streaming(daemon, stop, req).await
}

/// Compares without an early exit, so response timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `/metrics` and `/healthz` on the TCP listener.
pub async fn handle_metrics(ctl: Arc<dyn Daemon>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let scrape = ctl.scrape();
            let mut resp = Response::new(Full::new(Bytes::from(scrape.body)));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(scrape.content_type),
            );
            resp
        }
        (&Method::GET, "/healthz") => {
            let h = ctl.health();
            let status = if ctl.reconciled_recently() && !h.safe_mode && !h.docker_wedged {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(with_status(status, &h))
        }
        _ => respond(Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "try /metrics or /healthz",
        ))),
    }
}
