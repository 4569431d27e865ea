//! `reaper serve`: opens the store, connects to Docker, and runs the reconcile loop, the event
//! watcher, the API (Unix socket) and the metrics listener (TCP) until SIGTERM or SIGINT.
//! As in mini-redis, `serve` takes bound listeners and a shutdown future; `run` installs the
//! signal handlers, binds, and passes the signals in.

mod handle;
mod signals;
pub mod systemd;

use futures_util::stream::{BoxStream, StreamExt};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::api::server::{
    handle_api_streaming, handle_api_with_token, handle_metrics, serve as serve_http,
};
use crate::config::{Config, Secret, StoreBackend};
use crate::controller::{Controller, Settings};
use crate::core::ownership::Rules;
use crate::core::plan::Scope;
use crate::docker::{Docker, Engine};
use crate::manifest_dir::ManifestDir;
use crate::metrics::Metrics;
use crate::store::hosts::ThisHost;
use crate::store::lock::{in_use_message, lock_holder};
use crate::store::{EtcdSettings, EtcdStore, EtcdTls, RecordStore, SledStore, Store};
use signals::Signals;

/// In-flight work gets this long to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// `--once` settles in at most this many passes (removals, then status).
const ONCE_MAX_PASSES: usize = 5;

pub fn settings(c: &Config) -> Settings {
    Settings {
        rules: Rules {
            instance: c.instance.clone(),
            session_label_keys: c.session_label_keys.clone(),
            agent_name_prefix: c.agent_name_prefix.clone(),
        },
        orphan_grace: c.orphan_grace_period,
        max_orphan_removals: c.max_orphan_removals_per_pass,
        agent_running_grace: c.agent_running_grace,
        cleanup_delays: crate::core::model::CleanupDelays {
            delay: c.cleanup_delay,
            on_failure: c.cleanup_delay_on_failure,
        },
        history_retention: c.history_retention,
        resync_interval: c.resync_interval.std(),
        concurrency: c.concurrency,
        paths_root: c.paths_root.clone(),
        dry_run: c.dry_run,
        serial_exits: c.serial_exits,
        disk_pressure: c.disk_pressure.clone(),
        host_name: c.host_name.clone(),
    }
}

/// Re-reads the config (file and flags) for SIGHUP.
pub type Reloader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// How the daemon reloads: each item of `requests` (SIGHUP, in `run`) re-reads the config with
/// `read` and applies what can change without a restart.
pub struct Reload {
    pub requests: BoxStream<'static, ()>,
    pub read: Reloader,
}

/// The daemon's listeners, bound before `serve` is called: by `run` from the config, by tests on
/// port 0 and a temp socket.
pub struct Listeners {
    /// The API on its Unix socket (the socket file's permissions are the access control).
    pub api: UnixListener,
    /// `/metrics` and `/healthz`.
    pub metrics: TcpListener,
    /// The API on TCP, where every request must carry this bearer token.
    pub api_tcp: Option<(TcpListener, Secret)>,
}

impl Listeners {
    /// Binds the addresses `config` names.
    pub async fn bind(config: &Config) -> Result<Listeners, String> {
        let api = bind_socket(&config.socket).await?;
        let metrics = TcpListener::bind(config.metrics_listen)
            .await
            .map_err(|e| {
                format!(
                    "cannot listen on {} for metrics: {e}",
                    config.metrics_listen
                )
            })?;
        let api_tcp = match (config.api_listen, &config.api_token) {
            (Some(addr), Some(token)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot listen on {addr} for the API: {e}"))?;
                Some((listener, token.clone()))
            }
            _ => None,
        };
        Ok(Listeners {
            api,
            metrics,
            api_tcp,
        })
    }
}

/// Opens the store (in safe mode if it cannot: reported, nothing deleted, retried on every
/// pass) and the Docker client, and builds the controller on them.
pub fn controller(config: &Config) -> Result<Arc<Controller<Docker>>, String> {
    for dir in [&config.data_dir, &config.paths_root] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
    let store = open_store(config, &metrics)?;
    let docker = Arc::new(
        Docker::new(
            &config.docker_host,
            config.docker_timeout.std(),
            metrics.clone(),
        )
        .map_err(|e| e.to_string())?,
    );
    Ok(Arc::new(Controller::new(
        store,
        docker,
        metrics,
        settings(config),
    )))
}

/// Opens the configured store. One that cannot be read yet (sled: damaged, locked; etcd:
/// unreachable, no quorum) is safe mode, reported, and tried again, never an exit; only
/// settings that cannot work (an unreadable TLS file) are errors.
fn open_store(config: &Config, metrics: &Metrics) -> Result<Store, String> {
    // This daemon as a host of the fleet; its safe mode follows the controller's.
    let this = ThisHost::new(&config.host_name, metrics.safe_mode_changes());
    match config.store.backend {
        StoreBackend::Sled => {
            let store_dir = config.data_dir.join("store");
            let (store, store_error) = SledStore::open_or_retry(&store_dir);
            if let Some(holder) = store_error.as_ref().and_then(|_| lock_holder(&store_dir)) {
                // Another reaper owns this store: safe mode would only wait for it forever.
                return Err(in_use_message(&store_dir, Some(holder)));
            }
            if let Some(e) = store_error {
                metrics.set_safe_mode(true);
                metrics.set_store_up(store.backend(), false);
                error!(error = %e, data_dir = %config.data_dir.display(), "Safe mode: the store cannot be opened; nothing will be deleted.");
            }
            Ok(Store::new(store).on_host(this))
        }
        StoreBackend::Etcd => {
            let etcd = &config.store.etcd;
            let tls = match (&etcd.ca_file, &etcd.cert_file, &etcd.key_file) {
                (Some(ca), Some(cert), Some(key)) => Some(EtcdTls {
                    ca_file: ca.clone(),
                    cert_file: cert.clone(),
                    key_file: key.clone(),
                }),
                _ => None,
            };
            let settings = EtcdSettings {
                endpoints: etcd.endpoints.clone(),
                prefix: etcd.prefix.clone(),
                tls,
                host: config.host_name.clone(),
            };
            let store = EtcdStore::start_as(&settings, this.clone()).map_err(|e| e.to_string())?;
            // Until its first listing every read fails: the first pass is in safe mode.
            metrics.set_store_up(store.backend(), false);
            info!(endpoints = %etcd.endpoints.join(","), prefix = %etcd.prefix, host = %config.host_name, "Records are in etcd.");
            Ok(Store::new(store).on_host(this))
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT (or, with `once`, until a pass has nothing more to
/// remove); returns the process exit code.
pub async fn run(config: Config, once: bool, reload: Reloader) -> Result<i32, String> {
    // First, so a second daemon says only this, before it touches the store or logs anything.
    if let Some(pid) = serving_on(&config.socket).await {
        return Err(already_serving(&config.socket, pid));
    }
    let ctl = controller(&config)?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        docker = %config.docker_host,
        data_dir = %config.data_dir.display(),
        dry_run = config.dry_run,
        "Starting reaper."
    );
    if once {
        let stop = CancellationToken::new();
        let worker = tokio::spawn(ctl.clone().run_removals(stop.clone()));
        let code = run_once(&ctl).await;
        stop.cancel();
        let _ = worker.await;
        // What only a flush makes durable (first sightings), so the next run counts from them.
        if ctl.store().health().is_ok() {
            if let Err(e) = ctl.store().flush().await {
                error!(error = %e, "Final store flush failed.");
            }
        }
        return Ok(code);
    }
    // Before any socket answers: from here on a stop signal means a drain, not death.
    let signals = Signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let listeners = Listeners::bind(&config).await?;
    info!(socket = %config.socket.display(), metrics = %config.metrics_listen, "Listening.");
    let (shutdown, hangups) = signals.split();
    let reload = Reload {
        requests: hangups,
        read: reload,
    };
    serve(ctl, &config, listeners, reload, shutdown).await;
    let _ = std::fs::remove_file(&config.socket);
    info!("Stopped.");
    Ok(0)
}

/// Serves the API, the metrics and the reconcile loop on pre-bound listeners until `shutdown`
/// resolves, then drains: in-flight work gets [`DRAIN_TIMEOUT`] to finish and the store is
/// flushed. Listeners and shutdown are passed in, so tests run it in-process.
pub async fn serve<E: Engine>(
    ctl: Arc<Controller<E>>,
    config: &Config,
    listeners: Listeners,
    reload: Reload,
    shutdown: impl Future<Output = ()>,
) {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(ctl.clone().run(stop.clone()));
    tracker.spawn(ctl.clone().run_removals(stop.clone()));
    tracker.spawn(ctl.clone().watch_events(stop.clone()));
    let (c, watching) = (ctl.clone(), stop.clone());
    tracker.spawn(serve_http(
        listeners.api,
        move |req| handle_api_streaming(c.clone(), watching.clone(), req),
        stop.clone(),
        tracker.clone(),
    ));
    if let Some((listener, token)) = listeners.api_tcp {
        if let Ok(addr) = listener.local_addr() {
            info!(api = %addr, "Serving the API on TCP; every request needs the bearer token.");
        }
        let token: Arc<str> = Arc::from(token.expose());
        let c = ctl.clone();
        let watching = stop.clone();
        let handler =
            move |req| handle_api_with_token(c.clone(), token.clone(), watching.clone(), req);
        tracker.spawn(serve_http(listener, handler, stop.clone(), tracker.clone()));
    }
    let c = ctl.clone();
    let handler = move |req| handle_metrics(c.clone(), req);
    tracker.spawn(serve_http(
        listeners.metrics,
        handler,
        stop.clone(),
        tracker.clone(),
    ));

    watch_manifests(config, &ctl, &stop, &tracker).await;
    tracker.spawn(reload_on_request(ctl.clone(), reload, stop.clone()));
    tracker.spawn(tell_systemd(ctl.clone(), stop.clone()));

    shutdown.await;
    info!("Shutting down: finishing in-flight removals.");
    systemd::stopping();
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        warn!("In-flight work did not finish within {DRAIN_TIMEOUT:?}.");
    }
    if ctl.store().health().is_ok() {
        if let Err(e) = ctl.store().flush().await {
            error!(error = %e, "Final store flush failed.");
        }
    }
}

async fn run_once<E: Engine>(ctl: &Controller<E>) -> i32 {
    let mut failed = false;
    for _ in 0..ONCE_MAX_PASSES {
        match ctl.pass(&Scope::Normal, ctl.settings().dry_run).await {
            Ok((_, report)) => {
                failed = !report.failed.is_empty();
                if report.removed.is_empty() {
                    break;
                }
            }
            Err(e) => {
                error!(error = %e, "Pass failed; nothing was deleted.");
                return 1;
            }
        }
    }
    i32::from(failed)
}

/// `Some` when a daemon answers on the socket, with its pid when the kernel tells it.
async fn serving_on(path: &Path) -> Option<Option<i32>> {
    let stream = tokio::net::UnixStream::connect(path).await.ok()?;
    Some(stream.peer_cred().ok().and_then(|c| c.pid()))
}

fn already_serving(socket: &Path, pid: Option<i32>) -> String {
    let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    format!(
        "another reaper is already serving on {}{pid}; stop it first, or give this one another \
         --socket and --data-dir",
        socket.display()
    )
}

/// Binds the API socket; a stale socket file is replaced, a live daemon's is not.
async fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    if path.exists() {
        if let Some(pid) = serving_on(path).await {
            return Err(already_serving(path, pid));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    // The socket's permissions are the API's access control: owner and group only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("cannot set permissions on {}: {e}", path.display()))?;
    Ok(listener)
}

/// Starts the declarative manifest directory, if configured: synced before the first pass
/// when the store is open, else as soon as it opens; then on every change.
async fn watch_manifests<E: Engine>(
    config: &Config,
    ctl: &Arc<Controller<E>>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    let Some(dir) = config.manifests.clone() else {
        return;
    };
    let start = {
        let (ctl, shutdown, tracker) = (ctl.clone(), shutdown.clone(), tracker.clone());
        async move {
            loop {
                match ctl.store().health() {
                    Ok(()) => break,
                    Err(e) => {
                        warn!(error = %e, dir = %dir.display(), "The manifest directory waits for the store.");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(ctl.settings().resync_interval) => {}
                        }
                    }
                }
            }
            let store = ctl.store().clone();
            let md = Arc::new(ManifestDir::new(dir.clone(), store, ctl.metrics.clone()));
            if let Err(e) = md.sync().await {
                error!(error = %e, dir = %dir.display(), "First sync of the manifest directory failed; retrying on changes.");
            }
            ctl.set_manifest_dir(md.clone());
            info!(dir = %dir.display(), "Watching the manifest directory.");
            tracker.spawn(md.run(shutdown));
        }
    };
    if ctl.store().health().is_ok() {
        start.await; // synced before the first pass settles
    } else {
        tracker.spawn(start);
    }
}

/// `Type=notify`: ready once the store is open and the first Docker sync succeeded; the
/// watchdog is fed only while passes keep succeeding, so a stuck loop gets restarted.
async fn tell_systemd<E: Engine>(ctl: Arc<Controller<E>>, shutdown: CancellationToken) {
    // watchdog_interval() is already half of WatchdogSec.
    let tick = systemd::watchdog_interval()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(100));
    let mut ready = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(if ready { tick } else { Duration::from_millis(100) }) => {}
        }
        let h = ctl.health();
        let healthy = ctl.reconciled_recently();
        if !ready && h.last_success.is_some() {
            ready = systemd::ready();
            if !ready {
                return; // Not under systemd: nothing more to tell.
            }
            systemd::status("Reconciling.");
        }
        if ready && healthy && systemd::watchdog_interval().is_some() {
            systemd::watchdog();
        }
    }
}

/// A reload request (SIGHUP): re-read the config and the manifest directory, and apply what can
/// change without a restart.
async fn reload_on_request<E: Engine>(
    ctl: Arc<Controller<E>>,
    reload: Reload,
    shutdown: CancellationToken,
) {
    let Reload { mut requests, read } = reload;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            request = requests.next() => if request.is_none() { return },
        }
        systemd::reloading();
        if let Some(md) = ctl.manifest_dir() {
            if let Err(e) = md.sync().await {
                error!(error = %e, "Manifest directory sync failed.");
            }
        }
        match read() {
            Ok(new) => {
                ctl.reload(settings(&new));
                info!("Configuration reloaded (concurrency, paths root, socket and listen addresses need a restart).");
            }
            Err(e) => error!(error = %e, "Reload failed; keeping the running configuration."),
        }
        systemd::notify("READY=1");
    }
}
