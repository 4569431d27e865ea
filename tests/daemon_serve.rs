//! `daemon::serve` in-process, as mini-redis tests its server: listeners bound by the test (TCP
//! on port 0, a temp Unix socket), reload requests and a shutdown future passed in, and the real
//! controller against the private engine. `e2e_signals` covers the signals that `run` wires in.

mod common;

use futures_util::stream::{self, StreamExt};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use reaper::config::{Config, ConfigFile, DockerFile, Secret};
use reaper::core::model::Duration as ConfigDuration;
use reaper::daemon::{self, Listeners, Reload};

const TOKEN: &str = "serve-test-token";
/// Bound on everything the test waits for, the drain included.
const LIMIT: Duration = Duration::from_secs(60);

/// One HTTP/1.1 request on a fresh connection; returns the status code and the body.
async fn request(
    mut conn: impl AsyncRead + AsyncWrite + Unpin,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!("GET {path} HTTP/1.1\r\nHost: reaper\r\n{auth}Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.expect("send request");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.expect("read reply");
    let code = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    (code, body.to_string())
}

async fn unix(socket: &Path, path: &str) -> (u16, String) {
    let conn = UnixStream::connect(socket).await.expect("API socket");
    request(conn, path, None).await
}

async fn tcp(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let conn = TcpStream::connect(addr).await.expect("TCP listener");
    request(conn, path, token).await
}

fn config(dir: &Path) -> Config {
    let flags = ConfigFile {
        data_dir: Some(dir.join("data")),
        socket: Some(dir.join("reaper.sock")),
        paths_root: Some(dir.join("paths")),
        docker: Some(DockerFile {
            host: Some(common::docker_host()),
        }),
        instance: Some("serve-in-process".into()),
        ..ConfigFile::default()
    };
    Config::resolve(None, flags).expect("a valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_on_its_listeners_reloads_and_drains_on_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());
    let ctl = daemon::controller(&config).expect("controller");
    let listeners = Listeners {
        api: UnixListener::bind(&config.socket).expect("bind the API socket"),
        metrics: TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind metrics"),
        api_tcp: Some((
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind TCP API"),
            Secret::new(TOKEN),
        )),
    };
    let metrics = listeners.metrics.local_addr().expect("metrics address");
    let api_tcp = listeners.api_tcp.as_ref().map(|(l, _)| l.local_addr());
    let api_tcp = api_tcp.expect("TCP API").expect("TCP API address");

    let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let requests = stream::unfold(reload_rx, |mut rx| async move {
        rx.recv().await.map(|()| ((), rx))
    })
    .boxed();
    let reloaded = Config {
        orphan_grace_period: ConfigDuration::from_secs(7),
        ..config.clone()
    };
    let reload = Reload {
        requests,
        read: Box::new(move || Ok(reloaded.clone())),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stop_rx.await;
    };

    let socket = config.socket.clone();
    let client_ctl = ctl.clone();
    let client = async move {
        let (code, body) = unix(&socket, "/v1/status").await;
        assert_eq!(code, 200, "status over the socket: {body}");
        let (code, body) = tcp(metrics, "/metrics", None).await;
        assert!(code == 200 && body.contains("reaper_"), "{code}: {body}");
        assert_eq!(tcp(api_tcp, "/v1/status", None).await.0, 401);
        assert_eq!(tcp(api_tcp, "/v1/status", Some(TOKEN)).await.0, 200);
        // The controller runs under `serve`: a pass against the engine succeeds.
        tokio::time::timeout(LIMIT, async {
            while tcp(metrics, "/healthz", None).await.0 != 200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("/healthz says a pass succeeded");
        reload_tx.send(()).expect("reload request");
        tokio::time::timeout(LIMIT, async {
            while client_ctl.settings().orphan_grace != ConfigDuration::from_secs(7) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the reload request applied the re-read config");
        stop_tx.send(()).expect("shutdown");
    };
    let served = daemon::serve(ctl, &config, listeners, reload, shutdown);
    tokio::time::timeout(LIMIT, futures_util::future::join(served, client))
        .await
        .expect("serve drained and returned after the shutdown future resolved");

    // Drained: every listener is closed.
    assert!(UnixStream::connect(&config.socket).await.is_err());
    assert!(TcpStream::connect(metrics).await.is_err());
    assert!(TcpStream::connect(api_tcp).await.is_err());
}
