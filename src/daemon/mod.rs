//! `reaper serve`: opens the store, connects to Docker, and runs the reconcile loop, the event
//! watcher, the API (Unix socket) and the metrics listener (TCP) until SIGTERM or SIGINT.

mod handle;
pub mod systemd;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::api::server::{handle_api, handle_api_with_token, handle_metrics, serve as serve_http};
use crate::config::Config;
use crate::controller::{Controller, Settings, StoreSlot};
use crate::core::ownership::Rules;
use crate::core::plan::Scope;
use crate::docker::{Docker, Engine};
use crate::manifest_dir::ManifestDir;
use crate::metrics::Metrics;

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
        history_retention: c.history_retention,
        resync_interval: c.resync_interval.std(),
        concurrency: c.concurrency,
        paths_root: c.paths_root.clone(),
        dry_run: c.dry_run,
        serial_exits: c.serial_exits,
    }
}

/// Re-reads the config (file and flags) for SIGHUP.
pub type Reloader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Runs the daemon; returns the process exit code.
pub async fn run(config: Config, once: bool, reload: Reloader) -> Result<i32, String> {
    for dir in [&config.data_dir, &config.paths_root] {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
    let (slot, store_error) = StoreSlot::open(&config.data_dir.join("store"));
    if let Some(e) = store_error {
        // Keep running in safe mode: report it, delete nothing, retry opening on every pass.
        metrics.set_safe_mode(true);
        error!(error = %e, data_dir = %config.data_dir.display(), "Safe mode: the store cannot be opened; nothing will be deleted.");
    }
    let docker = Arc::new(
        Docker::new(
            &config.docker_host,
            config.docker_timeout.std(),
            metrics.clone(),
        )
        .map_err(|e| e.to_string())?,
    );
    let ctl = Arc::new(Controller::new(slot, docker, metrics, settings(&config)));
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
        return Ok(code);
    }

    let api = bind_socket(&config.socket).await?;
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} for metrics: {e}",
                config.metrics_listen
            )
        })?;
    info!(socket = %config.socket.display(), metrics = %config.metrics_listen, "Listening.");

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(ctl.clone().run(shutdown.clone()));
    tracker.spawn(ctl.clone().run_removals(shutdown.clone()));
    tracker.spawn(ctl.clone().watch_events(shutdown.clone()));
    let c = ctl.clone();
    tracker.spawn(serve_http(
        api,
        move |req| handle_api(c.clone(), req),
        shutdown.clone(),
        tracker.clone(),
    ));
    if let (Some(addr), Some(token)) = (config.api_listen, config.api_token.as_ref()) {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} for the API: {e}"))?;
        info!(api = %addr, "Serving the API on TCP; every request needs the bearer token.");
        let token: Arc<str> = Arc::from(token.expose());
        let c = ctl.clone();
        let handler = move |req| handle_api_with_token(c.clone(), token.clone(), req);
        tracker.spawn(serve_http(
            listener,
            handler,
            shutdown.clone(),
            tracker.clone(),
        ));
    }
    let c = ctl.clone();
    let handler = move |req| handle_metrics(c.clone(), req);
    tracker.spawn(serve_http(
        metrics_listener,
        handler,
        shutdown.clone(),
        tracker.clone(),
    ));

    watch_manifests(&config, &ctl, &shutdown, &tracker).await;
    tracker.spawn(reload_on_hangup(ctl.clone(), reload, shutdown.clone()));
    tracker.spawn(tell_systemd(ctl.clone(), shutdown.clone()));

    wait_for_signal().await;
    info!("Shutting down: finishing in-flight removals.");
    systemd::stopping();
    shutdown.cancel();
    tokio::spawn(async {
        // A second signal means: stop now.
        wait_for_signal().await;
        warn!("Second signal: exiting at once.");
        std::process::exit(130);
    });
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        warn!("In-flight work did not finish within {DRAIN_TIMEOUT:?}.");
    }
    if let Ok(store) = ctl.store() {
        if let Err(e) = store.flush().await {
            error!(error = %e, "Final store flush failed.");
        }
    }
    let _ = std::fs::remove_file(&config.socket);
    info!("Stopped.");
    Ok(0)
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

/// Binds the API socket; a stale socket file is replaced, a live daemon's is not.
async fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(format!(
                "another reaper daemon is already listening on {}",
                path.display()
            ));
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
            let store = loop {
                match ctl.store() {
                    Ok(s) => break s,
                    Err(e) => {
                        warn!(error = %e, dir = %dir.display(), "The manifest directory waits for the store.");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(ctl.settings().resync_interval) => {}
                        }
                    }
                }
            };
            let md = Arc::new(ManifestDir::new(dir.clone(), store, ctl.metrics.clone()));
            if let Err(e) = md.sync().await {
                error!(error = %e, dir = %dir.display(), "First sync of the manifest directory failed; retrying on changes.");
            }
            ctl.set_manifest_dir(md.clone());
            ctl.trigger();
            info!(dir = %dir.display(), "Watching the manifest directory.");
            let trigger = ctl.clone();
            tracker.spawn(md.run(move || trigger.trigger(), shutdown));
        }
    };
    if ctl.store().is_ok() {
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

/// SIGHUP: re-read the config and the manifest directory, and apply what can change without
/// a restart.
async fn reload_on_hangup<E: Engine>(
    ctl: Arc<Controller<E>>,
    reload: Reloader,
    shutdown: CancellationToken,
) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => {}
        }
        systemd::reloading();
        if let Some(md) = ctl.manifest_dir() {
            if let Err(e) = md.sync().await {
                error!(error = %e, "Manifest directory sync failed.");
            }
        }
        match reload() {
            Ok(new) => {
                ctl.reload(settings(&new));
                info!("Configuration reloaded (concurrency, paths root, socket and listen addresses need a restart).");
            }
            Err(e) => error!(error = %e, "Reload failed; keeping the running configuration."),
        }
        systemd::notify("READY=1");
    }
}

async fn wait_for_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
