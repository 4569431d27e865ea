//! A counting proxy between a client (reaper) and the private engine: it forwards every byte
//! unchanged and follows the HTTP/1.1 requests going to the engine, to measure how many
//! container exits were in flight at once and whether a network call overlapped one.
//!
//! An exit is `POST /containers/{id}/stop|kill|restart` or a forced `DELETE /containers/{id}`
//! (the proxy cannot tell whether the container runs, so every forced delete counts). A network
//! call is any request below `/networks`. A request is in flight from its header until the
//! engine's first byte back on that connection: clients do not pipeline, so those bytes answer
//! it. Everything is bounded (connections, header size, connect time); the proxy and all its
//! connections stop when it is dropped.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections open at once; more are refused (and counted).
const MAX_CONNECTIONS: usize = 256;
/// A request header larger than this stops the parsing of its connection (counted).
const MAX_HEADER: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy saw so far.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    pub requests_total: u64,
    pub exits_total: u64,
    pub exits_in_flight: usize,
    pub max_exits_in_flight: usize,
    pub networks_total: u64,
    pub networks_in_flight: usize,
    /// Requests that started while the other kind was in flight: a network call during an exit
    /// or an exit during a network call.
    pub network_during_exit: u64,
    /// Connections whose requests could no longer be followed (a chunked body, an upgrade, an
    /// oversized header): requests on them after that point are not counted.
    pub unparsed_connections: u64,
    pub refused_connections: u64,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests {}, exits {} (max {} in flight), network calls {}, network/exit overlaps {}, \
             unparsed connections {}, refused connections {}",
            self.requests_total,
            self.exits_total,
            self.max_exits_in_flight,
            self.networks_total,
            self.network_during_exit,
            self.unparsed_connections,
            self.refused_connections
        )
    }
}

/// What a request is to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Exit,
    Network,
    Other,
}

#[derive(Default)]
struct State {
    counts: Counts,
    /// Per connection, the request waiting for the engine's first byte.
    pending: HashMap<u64, Class>,
}

impl State {
    fn begin(&mut self, conn: u64, class: Class) {
        self.answered(conn);
        let c = &mut self.counts;
        c.requests_total += 1;
        match class {
            Class::Exit => {
                if c.networks_in_flight > 0 {
                    c.network_during_exit += 1;
                }
                c.exits_total += 1;
                c.exits_in_flight += 1;
                c.max_exits_in_flight = c.max_exits_in_flight.max(c.exits_in_flight);
            }
            Class::Network => {
                if c.exits_in_flight > 0 {
                    c.network_during_exit += 1;
                }
                c.networks_total += 1;
                c.networks_in_flight += 1;
            }
            Class::Other => {}
        }
        self.pending.insert(conn, class);
    }

    fn answered(&mut self, conn: u64) {
        match self.pending.remove(&conn) {
            Some(Class::Exit) => self.counts.exits_in_flight -= 1,
            Some(Class::Network) => self.counts.networks_in_flight -= 1,
            _ => {}
        }
    }
}

/// A Unix socket that forwards to the private engine and counts what goes through.
pub struct CountingProxy {
    // Dropped first: shutting the runtime down closes every connection.
    runtime: Option<tokio::runtime::Runtime>,
    state: Arc<Mutex<State>>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl CountingProxy {
    /// A proxy in front of the private engine ([`super::docker_host`]).
    pub fn start() -> CountingProxy {
        let host = super::docker_host();
        let engine = host
            .strip_prefix("unix://")
            .unwrap_or_else(|| panic!("the counting proxy needs a unix:// engine, not {host}"));
        CountingProxy::to(Path::new(engine))
    }

    /// A proxy in front of the engine listening on the Unix socket `engine`.
    pub fn to(engine: &Path) -> CountingProxy {
        let dir = tempfile::Builder::new()
            .prefix("rpx")
            .tempdir_in("/tmp")
            .expect("temp dir for the proxy");
        let socket = dir.path().join("engine.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("counting-proxy")
            .enable_all()
            .build()
            .expect("the proxy's runtime");
        let listener = {
            let _in_runtime = runtime.enter();
            UnixListener::bind(&socket)
                .unwrap_or_else(|e| panic!("cannot listen on {}: {e}", socket.display()))
        };
        let state = Arc::new(Mutex::new(State::default()));
        runtime.spawn(accept(listener, engine.to_path_buf(), state.clone()));
        CountingProxy {
            runtime: Some(runtime),
            state,
            socket,
            _dir: dir,
        }
    }

    /// The address to give a client: `unix:///…`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn counts(&self) -> Counts {
        self.state.lock().expect("proxy state").counts.clone()
    }

    pub fn max_exits_in_flight(&self) -> usize {
        self.counts().max_exits_in_flight
    }

    pub fn exits_total(&self) -> u64 {
        self.counts().exits_total
    }

    /// How many requests started while the other kind (exit / network call) was in flight.
    pub fn network_during_exit(&self) -> u64 {
        self.counts().network_during_exit
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

async fn accept(listener: UnixListener, engine: PathBuf, state: Arc<Mutex<State>>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut next = 0u64;
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // E.g. out of file descriptors: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            state
                .lock()
                .expect("proxy state")
                .counts
                .refused_connections += 1;
            continue;
        };
        next += 1;
        tokio::spawn(relay(next, client, engine.clone(), state.clone(), permit));
    }
}

async fn relay(
    conn: u64,
    client: UnixStream,
    engine: PathBuf,
    state: Arc<Mutex<State>>,
    _slot: OwnedSemaphorePermit,
) {
    let Ok(Ok(upstream)) =
        tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&engine)).await
    else {
        return; // dropping the client tells it
    };
    let (client_r, client_w) = client.into_split();
    let (engine_r, engine_w) = upstream.into_split();
    tokio::join!(
        requests(conn, client_r, engine_w, &state),
        answers(conn, engine_r, client_w, &state)
    );
    state.lock().expect("proxy state").answered(conn);
}

/// Client → engine: forwards, noting each request before its bytes reach the engine.
async fn requests(
    conn: u64,
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    state: &Mutex<State>,
) {
    let mut parser = Parser::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (heads, gave_up) = parser.feed(&buf[..n]);
        {
            let mut s = state.lock().expect("proxy state");
            for (method, target) in heads {
                s.begin(conn, classify(&method, &target));
            }
            if gave_up {
                s.counts.unparsed_connections += 1;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Engine → client: forwards; the first byte after a request answers it.
async fn answers(
    conn: u64,
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    state: &Mutex<State>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        state.lock().expect("proxy state").answered(conn);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Follows a stream of HTTP/1.1 requests: header, then a body of `Content-Length` bytes.
#[derive(Default)]
pub struct Parser {
    head: Vec<u8>,
    body_left: u64,
    opaque: bool,
}

impl Parser {
    /// Takes the next bytes; returns (method, target) of each request header completed in
    /// them, and whether parsing gave up on this connection just now.
    pub fn feed(&mut self, mut data: &[u8]) -> (Vec<(String, String)>, bool) {
        let mut heads = Vec::new();
        while !data.is_empty() && !self.opaque {
            if self.body_left > 0 {
                let skip = usize::try_from(self.body_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.body_left -= skip as u64;
                data = &data[skip..];
                continue;
            }
            let searched = self.head.len().saturating_sub(3);
            self.head.extend_from_slice(data);
            let Some(end) = find(&self.head[searched..], b"\r\n\r\n").map(|i| searched + i + 4)
            else {
                if self.head.len() > MAX_HEADER {
                    self.opaque = true;
                    return (heads, true);
                }
                break;
            };
            // Bytes after the header were appended too: hand them back to the loop.
            let rest = self.head.len() - end;
            data = &data[data.len() - rest..];
            let head = String::from_utf8_lossy(&self.head[..end]).into_owned();
            self.head.clear();
            let mut lines = head.split("\r\n");
            let mut words = lines.next().unwrap_or("").split(' ');
            let method = words.next().unwrap_or("").to_string();
            let target = words.next().unwrap_or("").to_string();
            heads.push((method, target));
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
                match name.as_str() {
                    "content-length" => self.body_left = value.parse().unwrap_or(0),
                    "transfer-encoding" if value.to_ascii_lowercase().contains("chunked") => {
                        self.opaque = true
                    }
                    "upgrade" => self.opaque = true,
                    _ => {}
                }
            }
            if self.opaque {
                return (heads, true);
            }
        }
        (heads, false)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a request with this method and target (path and query) is.
pub fn classify(method: &str, target: &str) -> Class {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = without_version(path)
        .trim_start_matches('/')
        .split('/')
        .collect();
    match (method, segments.as_slice()) {
        // restart is an exit too, though reaper never asks for one.
        ("POST", ["containers", id, "stop" | "kill" | "restart"]) if !id.is_empty() => Class::Exit,
        ("DELETE", ["containers", id]) if !id.is_empty() && forced(query) => Class::Exit,
        (_, ["networks", ..]) => Class::Network,
        _ => Class::Other,
    }
}

/// `/v1.41/containers/x` → `/containers/x`.
fn without_version(path: &str) -> &str {
    let Some(rest) = path.strip_prefix("/v") else {
        return path;
    };
    match rest.split_once('/') {
        Some((v, _)) if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            &path[2 + v.len()..]
        }
        _ => path,
    }
}

/// Docker's own reading of a boolean query value (`httputils.BoolValue`): anything but empty,
/// 0, no, false or none is true.
fn forced(query: &str) -> bool {
    query.split('&').any(|kv| match kv.split_once('=') {
        Some(("force", v)) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "no" | "false" | "none"
        ),
        _ => false,
    })
}
