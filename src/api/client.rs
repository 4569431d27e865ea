//! The CLI's side of the API: one JSON request over the daemon's Unix socket.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wire::ErrorBody;

/// Bounds one request; `cleanup` of many objects is the slowest call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the reaper daemon at {path}: {reason} (is `reaper serve` running? set --socket or REAPER_SOCKET)")]
    Unreachable { path: PathBuf, reason: String },
    #[error("{message}")]
    Api {
        status: StatusCode,
        message: String,
        details: Vec<String>,
    },
    #[error("unexpected response from the daemon: {0}")]
    Protocol(String),
    /// Something answers HTTP on the socket, but not as reaper does (a Docker socket, say).
    #[error("{path} answered HTTP {status}, but not as a reaper daemon does: is --socket or REAPER_SOCKET pointing at another service's socket?")]
    NotReaper { path: PathBuf, status: StatusCode },
}

impl ClientError {
    /// The daemon answered 404: the record (or route) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// The daemon answered 409: the write conflicts with the record as it is.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(StatusCode::CONFLICT)
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let exchange = async {
            let resp = self.send(method, path, body).await?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| self.unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        if !status.is_success() {
            return Err(self.error_of(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| match serde_json::from_slice::<Value>(&body) {
            Ok(_) => ClientError::Protocol(e.to_string()),
            Err(_) => self.not_reaper(status),
        })
    }

    /// Follows a stream of newline-delimited JSON (`GET /v1/watch/…`), calling `each` with
    /// every document until it returns false; `Ok` when the daemon ends the stream.
    pub async fn watch<T: DeserializeOwned>(
        &self,
        path: &str,
        mut each: impl FnMut(T) -> bool,
    ) -> Result<(), ClientError> {
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.send(Method::GET, path, None::<&()>))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| self.unreachable(e.to_string()))?
                .to_bytes();
            return Err(self.error_of(status, &bytes));
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| self.unreachable(e.to_string()))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let doc = serde_json::from_slice(&line)
                    .map_err(|e| ClientError::Protocol(format!("a watch line: {e}")))?;
                if !each(doc) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Connects and sends one request; the response's body is the caller's to read.
    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(conn);
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "reaper")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| self.unreachable(e.to_string()))
    }

    fn unreachable(&self, reason: String) -> ClientError {
        ClientError::Unreachable {
            path: self.socket.clone(),
            reason,
        }
    }

    fn not_reaper(&self, status: StatusCode) -> ClientError {
        ClientError::NotReaper {
            path: self.socket.clone(),
            status,
        }
    }

    /// A reply that is not 2xx: every reaper error is an `ErrorBody`; anything else is another
    /// service.
    fn error_of(&self, status: StatusCode, body: &[u8]) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(err) => ClientError::Api {
                status,
                message: err.error,
                details: err.details,
            },
            Err(_) => self.not_reaper(status),
        }
    }
}
