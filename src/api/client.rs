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
        let unreachable = |reason: String| ClientError::Unreachable {
            path: self.socket.clone(),
            reason,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
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
        let exchange = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        let not_reaper = || ClientError::NotReaper {
            path: self.socket.clone(),
            status,
        };
        if !status.is_success() {
            // Every reaper error is an `ErrorBody`; anything else is another service.
            let err: ErrorBody = serde_json::from_slice(&body).map_err(|_| not_reaper())?;
            return Err(ClientError::Api {
                status,
                message: err.error,
                details: err.details,
            });
        }
        serde_json::from_slice(&body).map_err(|e| match serde_json::from_slice::<Value>(&body) {
            Ok(_) => ClientError::Protocol(e.to_string()),
            Err(_) => not_reaper(),
        })
    }
}
