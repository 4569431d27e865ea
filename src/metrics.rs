//! Over 500 lines: 590 of code, mostly one registration per metric; the rest tests names, labels and zero-initialisation.
//!
//! Every metric reaper exports, in one struct with its own registry.
//!
//! Label values come only from the enums in [`crate::core::model`], so cardinality is fixed at compile
//! time: no session, agent or container name ever becomes a label. Every known label combination
//! is created at construction, so `rate()` works from the first scrape and dashboards never show
//! "no data" for a series that simply has not moved yet. See `docs/metrics.md` for the meaning of
//! each metric, and `dashboards/` and `manifests/prometheus/` for what consumes them.

use std::time::Duration;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::core::model::{
    AgentPhase, CleanupReason, DockerOp, ErrorClass, Flavour, OwnerKind, ResourceKind, SerialExits,
    SessionPhase,
};

/// Reconcile passes: from a sub-millisecond no-op pass to a minute-long sweep of a big host.
const RECONCILE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Owner end to last object gone: event-driven cleanups take tens of milliseconds, a lost
/// heartbeat or a retried removal takes minutes. Resolves 10 ms .. 10 min.
const OWNER_CLEANUP_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The `resource` label values of `reaper_disk_usage_ratio`.
const DISK_RESOURCES: [&str; 2] = ["bytes", "inodes"];

/// All of reaper's metrics. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    cleanups: IntCounterVec,
    cleanup_attempts: IntCounterVec,
    cleanup_failures: IntCounterVec,
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_duration: Histogram,
    owner_end_to_cleanup: HistogramVec,
    orphans: IntGaugeVec,
    owned_objects: IntGaugeVec,
    removal_queue: IntGaugeVec,
    sessions: IntGaugeVec,
    agents: IntGaugeVec,
    docker_up: IntGauge,
    docker_api_errors: IntCounterVec,
    event_stream_restarts: IntCounter,
    last_successful_reconcile: Gauge,
    safe_mode: IntGauge,
    manifest_errors: IntGauge,
    docker_wedged: IntGauge,
    blast_radius_held: IntGauge,
    engine_info: IntGaugeVec,
    store_up: IntGaugeVec,
    fleet_hosts: IntGaugeVec,
    /// Follows `reaper_safe_mode` for the host's presence keeper (etcd), which writes it into
    /// this host's entry: the one place every safe-mode change already goes through.
    safe_mode_changes: tokio::sync::watch::Sender<bool>,
    disk: DiskMetrics,
}

/// Disk pressure: the filesystem holding Docker's data root, and what was evicted from it.
#[derive(Clone)]
struct DiskMetrics {
    usage_ratio: GaugeVec,
    pressure: IntGauge,
    available: IntGauge,
    evictable: IntGauge,
    evictions: IntCounter,
    evicted_bytes: IntCounter,
}

/// The store backends, the values of `reaper_store_up`'s `backend` label.
pub const STORE_BACKENDS: &[&str] = &["sled", "etcd"];

/// The values of `reaper_fleet_hosts`'s `state` label.
pub const HOST_STATES: &[&str] = &["ready", "gone"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Creates a metric, registers it, and hands it back.
fn register<M>(registry: &Registry, metric: M) -> Result<M, prometheus::Error>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    /// Builds and registers every metric, with every known label combination at 0.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;

        let cleanups = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "reaper_cleanups_total",
                    "Objects reaper removed, by resource kind and the reason they were removed.",
                ),
                &["resource", "reason"],
            )?,
        )?;
        let cleanup_attempts = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "reaper_cleanup_attempts_total",
                    "Removals reaper attempted, successful or not, by resource kind.",
                ),
                &["resource"],
            )?,
        )?;
        let cleanup_failures = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "reaper_cleanup_failures_total",
                    "Removals that failed, by resource kind and error class.",
                ),
                &["resource", "error"],
            )?,
        )?;
        let reconciles = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "reaper_reconciles_total",
                    "Reconcile passes, by result (success or error).",
                ),
                &["result"],
            )?,
        )?;
        let reconcile_errors = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "reaper_reconcile_errors_total",
                    "Reconcile passes that failed (and deleted nothing), by reason.",
                ),
                &["error"],
            )?,
        )?;
        let reconcile_duration = register(
            r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "reaper_reconcile_duration_seconds",
                    "Wall time of one reconcile pass: snapshot, plan and execution.",
                )
                .buckets(RECONCILE_BUCKETS.to_vec()),
            )?,
        )?;
        let owner_end_to_cleanup = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "reaper_owner_end_to_cleanup_seconds",
                    "Time from a session or agent ceasing to be live to its last object being gone.",
                )
                .buckets(OWNER_CLEANUP_BUCKETS.to_vec()),
                &["owner"],
            )?,
        )?;
        let orphans = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "reaper_orphans",
                    "Objects that are ours but have no owner record: in the grace period or pending removal.",
                ),
                &["resource"],
            )?,
        )?;
        let owned_objects = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "reaper_owned_objects",
                    "Objects that are ours and have a live owner.",
                ),
                &["resource"],
            )?,
        )?;
        let removal_queue = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "reaper_removal_queue_depth",
                    "Removals queued or running in the executor, set at each scrape.",
                ),
                &["resource"],
            )?,
        )?;
        let sessions = register(
            r,
            IntGaugeVec::new(
                Opts::new("reaper_sessions", "Session records, by phase."),
                &["phase"],
            )?,
        )?;
        let agents = register(
            r,
            IntGaugeVec::new(
                Opts::new("reaper_agents", "Agent records, by phase."),
                &["phase"],
            )?,
        )?;
        let docker_up = register(
            r,
            IntGauge::new(
                "reaper_docker_up",
                "1 when the Docker daemon answered reaper's last call, 0 when it did not.",
            )?,
        )?;
        let docker_api_errors = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "reaper_docker_api_errors_total",
                    "Docker API calls that failed (including timeouts), by operation.",
                ),
                &["operation"],
            )?,
        )?;
        let event_stream_restarts = register(
            r,
            IntCounter::new(
                "reaper_docker_event_stream_restarts_total",
                "Times the Docker event stream ended and reaper reconnected to it.",
            )?,
        )?;
        let last_successful_reconcile = register(
            r,
            Gauge::new(
                "reaper_last_successful_reconcile_timestamp_seconds",
                "Unix time of the end of the last reconcile pass that succeeded; 0 before the first.",
            )?,
        )?;
        let safe_mode = register(
            r,
            IntGauge::new(
                "reaper_safe_mode",
                "1 when reaper refuses to delete because its store or Docker view is untrustworthy.",
            )?,
        )?;
        let manifest_errors = register(
            r,
            IntGauge::new(
                "reaper_manifest_errors",
                "Manifest files currently failing validation; nothing from them is applied.",
            )?,
        )?;
        let docker_wedged = register(
            r,
            IntGauge::new(
                "reaper_docker_wedged",
                "1 when Docker answers /_ping but its listings time out again and again (the libnetwork exit deadlock); reaper sends no removals then.",
            )?,
        )?;
        let blast_radius_held = register(
            r,
            IntGauge::new(
                "reaper_blast_radius_held",
                "1 when the last pass would have removed more orphans than maxOrphanRemovalsPerPass and removed none of them; reaper cleanup --yes, a higher cap or a fixed rule ends it.",
            )?,
        )?;
        let engine_info = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "reaper_engine_info",
                    "Always 1, once the engine answered: its flavour, whether container exits are serialised, and why.",
                ),
                &["flavour", "serial_exits", "reason"],
            )?,
        )?;
        let store_up = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "reaper_store_up",
                    "1 when the record store answered the last pass, 0 when it did not (the pass deleted nothing); one series, for the backend in use.",
                ),
                &["backend"],
            )?,
        )?;
        let fleet_hosts = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "reaper_fleet_hosts",
                    "Hosts of the fleet as this reaper's store lists them: ready (presence lease live) or gone (lease lapsed, not yet forgotten with reaper delete host); sled: this host, ready.",
                ),
                &["state"],
            )?,
        )?;
        let disk = DiskMetrics {
            usage_ratio: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "reaper_disk_usage_ratio",
                        "Share of the bytes or inodes in use on the filesystem holding Docker's data root, 0 to 1, at the last measurement.",
                    ),
                    &["resource"],
                )?,
            )?,
            pressure: register(
                r,
                IntGauge::new(
                    "reaper_disk_pressure",
                    "1 when bytes or inodes in use on the filesystem holding Docker's data root are above diskPressure.highWatermark.",
                )?,
            )?,
            available: register(
                r,
                IntGauge::new(
                    "reaper_disk_pressure_available",
                    "1 when reaper can measure the filesystem holding Docker's data root; 0 when it cannot see that path (a remote engine) and disk-pressure eviction does nothing.",
                )?,
            )?,
            evictable: register(
                r,
                IntGauge::new(
                    "reaper_disk_evictable_images",
                    "Image references of ours the last measurement planned to evict; 0 under pressure means nothing of ours is left to evict.",
                )?,
            )?,
            evictions: register(
                r,
                IntCounter::new(
                    "reaper_disk_evictions_total",
                    "Image references of ours removed (untagged) because of disk pressure.",
                )?,
            )?,
            evicted_bytes: register(
                r,
                IntCounter::new(
                    "reaper_disk_evicted_bytes_total",
                    "Bytes of images removed because of disk pressure (an image's size counts when its last reference goes).",
                )?,
            )?,
        };
        for resource in DISK_RESOURCES {
            disk.usage_ratio.with_label_values(&[resource]);
        }
        let build_info = register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "reaper_build_info",
                    "Always 1; the version label says which reaper is running.",
                ),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let metrics = Metrics {
            registry,
            cleanups,
            cleanup_attempts,
            cleanup_failures,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            owner_end_to_cleanup,
            orphans,
            owned_objects,
            removal_queue,
            sessions,
            agents,
            docker_up,
            docker_api_errors,
            event_stream_restarts,
            last_successful_reconcile,
            safe_mode,
            manifest_errors,
            docker_wedged,
            blast_radius_held,
            engine_info,
            store_up,
            fleet_hosts,
            safe_mode_changes: tokio::sync::watch::channel(false).0,
            disk,
        };
        metrics.initialise_label_sets();
        Ok(metrics)
    }

    /// Touches every known label combination so each series exists, at 0, from the first scrape.
    fn initialise_label_sets(&self) {
        for backend in STORE_BACKENDS {
            self.store_up.with_label_values(&[backend]);
        }
        for state in HOST_STATES {
            self.fleet_hosts.with_label_values(&[state]);
        }
        for kind in ResourceKind::ALL {
            let resource = kind.as_str();
            for reason in CleanupReason::ALL {
                self.cleanups
                    .with_label_values(&[resource, reason.as_str()]);
            }
            self.cleanup_attempts.with_label_values(&[resource]);
            for error in ErrorClass::ALL {
                self.cleanup_failures
                    .with_label_values(&[resource, error.as_str()]);
            }
            self.orphans.with_label_values(&[resource]);
            self.owned_objects.with_label_values(&[resource]);
            self.removal_queue.with_label_values(&[resource]);
        }
        for result in ["success", "error"] {
            self.reconciles.with_label_values(&[result]);
        }
        for error in crate::Error::METRIC_LABELS {
            self.reconcile_errors.with_label_values(&[error]);
        }
        for owner in OwnerKind::ALL {
            self.owner_end_to_cleanup
                .with_label_values(&[owner.as_str()]);
        }
        for phase in SessionPhase::ALL {
            self.sessions.with_label_values(&[phase.as_str()]);
        }
        for phase in AgentPhase::ALL {
            self.agents.with_label_values(&[phase.as_str()]);
        }
        for op in DockerOp::ALL {
            self.docker_api_errors.with_label_values(&[op.as_str()]);
        }
    }

    /// The registry, for an adapter that wants to add its own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String only fails on a malformed metric family, which our fixed set of
        // metrics cannot produce; a scrape should still get whatever was written.
        if let Err(err) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %err, "Encoding metrics failed; the scrape is partial.");
        }
        out
    }

    /// The `Content-Type` header value for [`Metrics::encode`]'s output.
    pub fn content_type(&self) -> &'static str {
        // Same as `TextEncoder::new().format_type()`, without needing an instance.
        prometheus::TEXT_FORMAT
    }

    /// A removal is about to be tried. Pair it with `cleanup_succeeded` or `cleanup_failed`.
    pub fn cleanup_attempted(&self, kind: ResourceKind) {
        self.cleanup_attempts
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// An object is gone (404 on delete counts too).
    pub fn cleanup_succeeded(&self, kind: ResourceKind, reason: CleanupReason) {
        self.cleanups
            .with_label_values(&[kind.as_str(), reason.as_str()])
            .inc();
    }

    /// A removal failed; a timed-out delete belongs here, never in `cleanup_succeeded`.
    pub fn cleanup_failed(&self, kind: ResourceKind, error: ErrorClass) {
        self.cleanup_failures
            .with_label_values(&[kind.as_str(), error.as_str()])
            .inc();
    }

    /// A reconcile pass ended. `now_unix_secs` is the end of the pass; it becomes the
    /// last-success timestamp when `ok`.
    pub fn reconcile_finished(&self, ok: bool, elapsed: Duration, now_unix_secs: f64) {
        let result = if ok { "success" } else { "error" };
        self.reconciles.with_label_values(&[result]).inc();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
        if ok {
            self.last_successful_reconcile.set(now_unix_secs);
        }
    }

    /// Why a pass failed, as `crate::Error::metric_label` names it.
    pub fn reconcile_failed(&self, error: &'static str) {
        self.reconcile_errors.with_label_values(&[error]).inc();
    }

    /// The last object of an owner that stopped being live is gone, `latency` after it stopped.
    pub fn owner_cleaned(&self, owner: OwnerKind, latency: Duration) {
        self.owner_end_to_cleanup
            .with_label_values(&[owner.as_str()])
            .observe(latency.as_secs_f64());
    }

    /// Sets the inventory gauges from a fresh snapshot. A kind missing from a slice is set to 0,
    /// so a kind that drains to nothing does not keep its last count.
    pub fn set_inventory(&self, owned: &[(ResourceKind, i64)], orphans: &[(ResourceKind, i64)]) {
        for kind in ResourceKind::ALL {
            self.owned_objects
                .with_label_values(&[kind.as_str()])
                .set(sum_for(owned, kind));
            self.orphans
                .with_label_values(&[kind.as_str()])
                .set(sum_for(orphans, kind));
        }
    }

    /// Sets the removal queue gauge. A kind missing from the slice is set to 0.
    pub fn set_removal_queue(&self, depth: &[(ResourceKind, i64)]) {
        for kind in ResourceKind::ALL {
            self.removal_queue
                .with_label_values(&[kind.as_str()])
                .set(sum_for(depth, kind));
        }
    }

    /// Sets the record gauges by phase. A phase missing from a slice is set to 0.
    pub fn set_phases(&self, sessions: &[(SessionPhase, i64)], agents: &[(AgentPhase, i64)]) {
        for phase in SessionPhase::ALL {
            self.sessions
                .with_label_values(&[phase.as_str()])
                .set(sum_for(sessions, phase));
        }
        for phase in AgentPhase::ALL {
            self.agents
                .with_label_values(&[phase.as_str()])
                .set(sum_for(agents, phase));
        }
    }

    /// A Docker API call failed or timed out.
    pub fn docker_api_error(&self, op: DockerOp) {
        self.docker_api_errors
            .with_label_values(&[op.as_str()])
            .inc();
    }

    pub fn set_docker_up(&self, up: bool) {
        self.docker_up.set(i64::from(up));
    }

    /// The Docker event stream ended (daemon restart, network error) and is being reopened.
    pub fn event_stream_restarted(&self) {
        self.event_stream_restarts.inc();
    }

    pub fn set_safe_mode(&self, on: bool) {
        self.safe_mode.set(i64::from(on));
        self.safe_mode_changes.send_if_modified(|was| {
            let changed = *was != on;
            *was = on;
            changed
        });
    }

    /// Safe mode as `set_safe_mode` last set it, and each change of it.
    pub fn safe_mode_changes(&self) -> tokio::sync::watch::Receiver<bool> {
        self.safe_mode_changes.subscribe()
    }

    /// The fleet's hosts as the store lists them now.
    pub fn set_fleet_hosts(&self, ready: usize, gone: usize) {
        self.fleet_hosts
            .with_label_values(&["ready"])
            .set(ready as i64);
        self.fleet_hosts
            .with_label_values(&["gone"])
            .set(gone as i64);
    }

    pub fn set_docker_wedged(&self, on: bool) {
        self.docker_wedged.set(i64::from(on));
    }

    /// The blast-radius guard holds orphan removals back (or no longer does).
    /// A measurement of the filesystem holding Docker's data root (`None`: it cannot be seen).
    pub fn set_disk(&self, measured: Option<(f64, f64, bool, usize)>) {
        let d = &self.disk;
        d.available.set(i64::from(measured.is_some()));
        let (bytes, inodes, pressure, evictable) = measured.unwrap_or_default();
        d.usage_ratio.with_label_values(&["bytes"]).set(bytes);
        d.usage_ratio.with_label_values(&["inodes"]).set(inodes);
        d.pressure.set(i64::from(pressure));
        d.evictable.set(evictable as i64);
    }

    /// An image reference evicted; `bytes` when it was the image's last.
    pub fn disk_evicted(&self, bytes: u64) {
        self.disk.evictions.inc();
        self.disk.evicted_bytes.inc_by(bytes);
    }

    pub fn set_blast_radius_held(&self, on: bool) {
        self.blast_radius_held.set(i64::from(on));
    }

    /// The engine (re)connected: one `reaper_engine_info` series, for what holds now.
    pub fn set_engine(&self, flavour: Flavour, serial: SerialExits) {
        self.engine_info.reset();
        let on = if serial.on { "on" } else { "off" };
        self.engine_info
            .with_label_values(&[flavour.as_str(), on, serial.reason.as_str()])
            .set(1);
    }

    /// Whether the store answered, for the backend in use: from then on the only series (a
    /// backend reaper does not use is neither up nor down). An unknown name is not exported.
    pub fn set_store_up(&self, backend: &'static str, up: bool) {
        if !STORE_BACKENDS.contains(&backend) {
            return;
        }
        for other in STORE_BACKENDS.iter().filter(|b| **b != backend) {
            let _ = self.store_up.remove_label_values(&[other]);
        }
        self.store_up
            .with_label_values(&[backend])
            .set(i64::from(up));
    }

    /// Number of manifest files currently failing validation.
    pub fn set_manifest_errors(&self, n: i64) {
        self.manifest_errors.set(n);
    }
}

/// Sum of the counts given for `key`; duplicates add up, absence means 0.
fn sum_for<K: PartialEq + Copy>(counts: &[(K, i64)], key: K) -> i64 {
    counts
        .iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, n)| *n)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// One parsed sample line: metric name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// A minimal parser for the text format our encoder writes (no escapes in our label values).
    fn samples(text: &str) -> Vec<Sample> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("sample has a value");
                let value: f64 = value.parse().expect("numeric value");
                let (name, labels) = match series.split_once('{') {
                    None => (series.to_string(), BTreeMap::new()),
                    Some((name, rest)) => {
                        let body = rest.strip_suffix('}').expect("closing brace");
                        let labels = body
                            .split(',')
                            .filter(|kv| !kv.is_empty())
                            .map(|kv| {
                                let (k, v) = kv.split_once('=').expect("label pair");
                                (k.to_string(), v.trim_matches('"').to_string())
                            })
                            .collect();
                        (name.to_string(), labels)
                    }
                };
                (name, labels, value)
            })
            .collect()
    }

    fn value(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        all.iter()
            .find(|(n, l, _)| {
                n == name
                    && labels.len() == l.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    fn label_values(all: &[Sample], name: &str, label: &str) -> BTreeSet<String> {
        all.iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| l.get(label).cloned())
            .collect()
    }

    fn set<'a>(values: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        values.into_iter().map(str::to_string).collect()
    }

    /// Calls every recording method at least once.
    fn exercised() -> Metrics {
        let m = Metrics::new().unwrap();
        m.cleanup_attempted(ResourceKind::Container);
        m.cleanup_succeeded(ResourceKind::Container, CleanupReason::SessionEnded);
        m.cleanup_attempted(ResourceKind::Network);
        m.cleanup_failed(ResourceKind::Network, ErrorClass::Conflict);
        m.reconcile_finished(true, Duration::from_millis(12), 1_700_000_000.5);
        m.reconcile_finished(false, Duration::from_millis(3), 1_700_000_100.0);
        m.reconcile_failed("docker_timeout");
        m.owner_cleaned(OwnerKind::Session, Duration::from_millis(40));
        m.owner_cleaned(OwnerKind::Agent, Duration::from_secs(90));
        m.set_inventory(
            &[(ResourceKind::Container, 3), (ResourceKind::Image, 1)],
            &[(ResourceKind::Volume, 2)],
        );
        m.set_removal_queue(&[(ResourceKind::Container, 7)]);
        m.set_phases(
            &[(SessionPhase::Active, 4), (SessionPhase::Cleaned, 2)],
            &[(AgentPhase::Running, 1)],
        );
        m.docker_api_error(DockerOp::Remove);
        m.set_docker_up(true);
        m.event_stream_restarted();
        m.set_safe_mode(true);
        m.set_manifest_errors(2);
        m.set_docker_wedged(true);
        m.set_blast_radius_held(true);
        m.set_store_up("etcd", true);
        m.set_fleet_hosts(2, 1);
        m.set_disk(Some((0.9, 0.1, true, 2)));
        m.disk_evicted(4096);
        m.set_engine(
            Flavour::Docker,
            SerialExits::decide(crate::core::model::SerialExitsSetting::On, None),
        );
        m
    }

    const ALL_NAMES: &[&str] = &[
        "reaper_cleanups_total",
        "reaper_cleanup_attempts_total",
        "reaper_cleanup_failures_total",
        "reaper_reconciles_total",
        "reaper_reconcile_errors_total",
        "reaper_reconcile_duration_seconds_bucket",
        "reaper_reconcile_duration_seconds_count",
        "reaper_reconcile_duration_seconds_sum",
        "reaper_owner_end_to_cleanup_seconds_bucket",
        "reaper_owner_end_to_cleanup_seconds_count",
        "reaper_owner_end_to_cleanup_seconds_sum",
        "reaper_orphans",
        "reaper_owned_objects",
        "reaper_sessions",
        "reaper_agents",
        "reaper_docker_up",
        "reaper_docker_api_errors_total",
        "reaper_docker_event_stream_restarts_total",
        "reaper_last_successful_reconcile_timestamp_seconds",
        "reaper_safe_mode",
        "reaper_build_info",
        "reaper_manifest_errors",
        "reaper_removal_queue_depth",
        "reaper_docker_wedged",
        "reaper_blast_radius_held",
        "reaper_store_up",
        "reaper_fleet_hosts",
        "reaper_disk_usage_ratio",
        "reaper_disk_pressure",
        "reaper_disk_pressure_available",
        "reaper_disk_evictable_images",
        "reaper_disk_evictions_total",
        "reaper_disk_evicted_bytes_total",
    ];

    #[test]
    fn every_metric_is_exported_at_zero_from_the_start() {
        let text = Metrics::new().unwrap().encode();
        let all = samples(&text);
        for name in ALL_NAMES {
            let series: Vec<_> = all.iter().filter(|(n, _, _)| n == name).collect();
            assert!(
                !series.is_empty(),
                "{name} missing from a fresh scrape:\n{text}"
            );
            if *name != "reaper_build_info" {
                assert!(
                    series.iter().all(|(_, _, v)| *v == 0.0),
                    "{name} not initialised to 0: {series:?}"
                );
            }
        }
        assert_eq!(
            value(
                &all,
                "reaper_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            Some(1.0)
        );
        #[cfg(target_os = "linux")]
        assert!(
            all.iter()
                .any(|(n, _, _)| n == "process_start_time_seconds"),
            "process collector not registered"
        );
    }

    #[test]
    fn every_known_label_combination_exists_from_the_start() {
        let all = samples(&Metrics::new().unwrap().encode());
        for kind in ResourceKind::ALL {
            let r = kind.as_str();
            for reason in CleanupReason::ALL {
                assert_eq!(
                    value(
                        &all,
                        "reaper_cleanups_total",
                        &[("resource", r), ("reason", reason.as_str())]
                    ),
                    Some(0.0),
                    "{r}/{reason}"
                );
            }
            for error in ErrorClass::ALL {
                assert_eq!(
                    value(
                        &all,
                        "reaper_cleanup_failures_total",
                        &[("resource", r), ("error", error.as_str())]
                    ),
                    Some(0.0)
                );
            }
        }
        let cleanups = all
            .iter()
            .filter(|(n, _, _)| n == "reaper_cleanups_total")
            .count();
        assert_eq!(cleanups, ResourceKind::ALL.len() * CleanupReason::ALL.len());
        for op in DockerOp::ALL {
            assert_eq!(
                value(
                    &all,
                    "reaper_docker_api_errors_total",
                    &[("operation", op.as_str())]
                ),
                Some(0.0)
            );
        }
        for owner in OwnerKind::ALL {
            assert_eq!(
                value(
                    &all,
                    "reaper_owner_end_to_cleanup_seconds_count",
                    &[("owner", owner.as_str())]
                ),
                Some(0.0)
            );
        }
    }

    #[test]
    fn label_values_come_only_from_the_enums() {
        let all = samples(&exercised().encode());
        let resources = set(ResourceKind::ALL.iter().map(|k| k.as_str()));
        for name in [
            "reaper_cleanups_total",
            "reaper_cleanup_attempts_total",
            "reaper_cleanup_failures_total",
            "reaper_orphans",
            "reaper_owned_objects",
            "reaper_removal_queue_depth",
        ] {
            assert_eq!(label_values(&all, name, "resource"), resources, "{name}");
        }
        assert_eq!(
            label_values(&all, "reaper_cleanups_total", "reason"),
            set(CleanupReason::ALL.iter().map(|r| r.as_str()))
        );
        assert_eq!(
            label_values(&all, "reaper_cleanup_failures_total", "error"),
            set(ErrorClass::ALL.iter().map(|e| e.as_str()))
        );
        assert_eq!(
            label_values(&all, "reaper_reconciles_total", "result"),
            set(["success", "error"])
        );
        assert_eq!(
            label_values(&all, "reaper_reconcile_errors_total", "error"),
            set(crate::Error::METRIC_LABELS)
        );
        assert_eq!(
            label_values(&all, "reaper_owner_end_to_cleanup_seconds_count", "owner"),
            set(["session", "agent"])
        );
        assert_eq!(
            label_values(&all, "reaper_sessions", "phase"),
            set(["active", "ending", "ended", "expired", "cleaned"])
        );
        assert_eq!(
            label_values(&all, "reaper_agents", "phase"),
            set(["starting", "running", "failed", "stopped"])
        );
        assert_eq!(
            label_values(&all, "reaper_docker_api_errors_total", "operation"),
            set(DockerOp::ALL.iter().map(|o| o.as_str()))
        );
        // One series once the backend in use is known (see store_up_keeps_one_series_…).
        assert_eq!(
            label_values(&all, "reaper_store_up", "backend"),
            set(["etcd"])
        );
        assert_eq!(
            label_values(&all, "reaper_fleet_hosts", "state"),
            set(HOST_STATES.iter().copied())
        );
        // Only the documented label names appear on reaper's own metrics.
        let allowed = set([
            "resource",
            "reason",
            "error",
            "result",
            "owner",
            "phase",
            "operation",
            "version",
            "flavour",
            "serial_exits",
            "backend",
            "state",
            "le",
        ]);
        for (name, labels, _) in all.iter().filter(|(n, _, _)| n.starts_with("reaper_")) {
            for key in labels.keys() {
                assert!(allowed.contains(key), "{name} has unexpected label {key}");
            }
        }
    }

    #[test]
    fn the_engine_info_names_one_decision_at_a_time() {
        use crate::core::model::{EngineInfo, SerialExitsSetting};
        let m = Metrics::new().unwrap();
        let info = |m: &Metrics| {
            samples(&m.encode())
                .into_iter()
                .filter(|(n, _, _)| n == "reaper_engine_info")
                .map(|(_, l, v)| (l.into_iter().collect::<Vec<_>>(), v))
                .collect::<Vec<_>>()
        };
        assert!(
            info(&m).is_empty(),
            "no engine info before the engine answered"
        );
        let engine = |v: &str| EngineInfo {
            version: v.into(),
            ..EngineInfo::default()
        };
        let auto = SerialExitsSetting::Auto;
        m.set_engine(
            Flavour::Docker,
            SerialExits::decide(auto, Some(&engine("20.10.24"))),
        );
        m.set_engine(
            Flavour::Docker,
            SerialExits::decide(auto, Some(&engine("24.0.7"))),
        );
        let label = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            info(&m),
            [(
                vec![
                    label("flavour", "docker"),
                    label("reason", "fixed_version"),
                    label("serial_exits", "off"),
                ],
                1.0
            )]
        );
    }

    #[test]
    fn recording_methods_move_the_right_series() {
        let all = samples(&exercised().encode());
        let v = |name: &str, labels: &[(&str, &str)]| value(&all, name, labels);
        assert_eq!(
            v(
                "reaper_cleanup_attempts_total",
                &[("resource", "container")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "reaper_cleanups_total",
                &[("resource", "container"), ("reason", "sessionEnded")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "reaper_cleanup_failures_total",
                &[("resource", "network"), ("error", "conflict")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v("reaper_reconciles_total", &[("result", "success")]),
            Some(1.0)
        );
        assert_eq!(
            v("reaper_reconciles_total", &[("result", "error")]),
            Some(1.0)
        );
        assert_eq!(
            v(
                "reaper_reconcile_errors_total",
                &[("error", "docker_timeout")]
            ),
            Some(1.0)
        );
        assert_eq!(v("reaper_reconcile_duration_seconds_count", &[]), Some(2.0));
        // A failed pass must not move the last-success timestamp.
        assert_eq!(
            v("reaper_last_successful_reconcile_timestamp_seconds", &[]),
            Some(1_700_000_000.5)
        );
        // 40 ms falls in the 50 ms bucket but not the 25 ms one; 90 s lands above 60 s.
        assert_eq!(
            v(
                "reaper_owner_end_to_cleanup_seconds_bucket",
                &[("owner", "session"), ("le", "0.025")]
            ),
            Some(0.0)
        );
        assert_eq!(
            v(
                "reaper_owner_end_to_cleanup_seconds_bucket",
                &[("owner", "session"), ("le", "0.05")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v(
                "reaper_owner_end_to_cleanup_seconds_bucket",
                &[("owner", "agent"), ("le", "60")]
            ),
            Some(0.0)
        );
        assert_eq!(
            v(
                "reaper_owner_end_to_cleanup_seconds_bucket",
                &[("owner", "agent"), ("le", "120")]
            ),
            Some(1.0)
        );
        assert_eq!(
            v("reaper_owned_objects", &[("resource", "container")]),
            Some(3.0)
        );
        assert_eq!(
            v("reaper_owned_objects", &[("resource", "image")]),
            Some(1.0)
        );
        assert_eq!(v("reaper_orphans", &[("resource", "volume")]), Some(2.0));
        assert_eq!(
            v("reaper_removal_queue_depth", &[("resource", "container")]),
            Some(7.0)
        );
        assert_eq!(v("reaper_sessions", &[("phase", "active")]), Some(4.0));
        assert_eq!(v("reaper_agents", &[("phase", "running")]), Some(1.0));
        assert_eq!(
            v("reaper_docker_api_errors_total", &[("operation", "remove")]),
            Some(1.0)
        );
        assert_eq!(v("reaper_docker_up", &[]), Some(1.0));
        assert_eq!(
            v("reaper_docker_event_stream_restarts_total", &[]),
            Some(1.0)
        );
        assert_eq!(v("reaper_safe_mode", &[]), Some(1.0));
        assert_eq!(v("reaper_manifest_errors", &[]), Some(2.0));
    }

    #[test]
    fn store_up_keeps_one_series_for_the_backend_in_use() {
        let m = Metrics::new().unwrap();
        m.set_store_up("etcd", false);
        let all = samples(&m.encode());
        let series: Vec<_> = all
            .iter()
            .filter(|(n, _, _)| n == "reaper_store_up")
            .collect();
        assert_eq!(series.len(), 1, "{series:?}");
        assert_eq!(
            value(&all, "reaper_store_up", &[("backend", "etcd")]),
            Some(0.0)
        );
        m.set_store_up("etcd", true);
        m.set_store_up("not-a-backend", false);
        let all = samples(&m.encode());
        assert_eq!(
            value(&all, "reaper_store_up", &[("backend", "etcd")]),
            Some(1.0)
        );
        assert_eq!(
            value(&all, "reaper_store_up", &[("backend", "not-a-backend")]),
            None
        );
    }

    #[test]
    fn gauges_reset_kinds_and_phases_that_drain() {
        let m = exercised();
        m.set_inventory(&[], &[]);
        m.set_removal_queue(&[]);
        m.set_phases(&[(SessionPhase::Active, 1), (SessionPhase::Active, 2)], &[]);
        m.set_docker_up(false);
        m.set_safe_mode(false);
        let all = samples(&m.encode());
        assert_eq!(
            value(&all, "reaper_owned_objects", &[("resource", "container")]),
            Some(0.0)
        );
        assert_eq!(
            value(
                &all,
                "reaper_removal_queue_depth",
                &[("resource", "container")]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&all, "reaper_orphans", &[("resource", "volume")]),
            Some(0.0)
        );
        assert_eq!(
            value(&all, "reaper_sessions", &[("phase", "active")]),
            Some(3.0)
        );
        assert_eq!(
            value(&all, "reaper_sessions", &[("phase", "cleaned")]),
            Some(0.0)
        );
        assert_eq!(
            value(&all, "reaper_agents", &[("phase", "running")]),
            Some(0.0)
        );
        assert_eq!(value(&all, "reaper_docker_up", &[]), Some(0.0));
        assert_eq!(value(&all, "reaper_safe_mode", &[]), Some(0.0));
    }

    #[test]
    fn every_metric_has_help_and_type() {
        let text = exercised().encode();
        for name in [
            "reaper_cleanups_total",
            "reaper_reconcile_duration_seconds",
            "reaper_owner_end_to_cleanup_seconds",
            "reaper_last_successful_reconcile_timestamp_seconds",
            "reaper_manifest_errors",
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE"
            );
        }
        assert!(text.contains("# TYPE reaper_cleanups_total counter"));
        assert!(text.contains("# TYPE reaper_orphans gauge"));
        assert!(text.contains("# TYPE reaper_reconcile_duration_seconds histogram"));
    }

    /// `promtool check metrics` on the exposition of a `Metrics` that had every method called.
    /// Runs only where promtool is installed (CI installs it), so the unit suite does not need
    /// it; `scripts/check-observability` runs the same check on a dump written to the file named
    /// by `REAPER_METRICS_DUMP`, and on a live scrape with `--live`.
    #[test]
    fn promtool_accepts_the_exposition() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let text = exercised().encode();
        assert!(text.ends_with('\n'));
        if let Ok(path) = std::env::var("REAPER_METRICS_DUMP") {
            std::fs::write(&path, &text).unwrap();
        }
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        // `./scripts/test` and CI install promtool: missing there, it is a failure, not a skip.
        let Ok(mut child) = child else {
            assert!(
                std::env::var_os("CI").is_none()
                    && std::env::var_os("REAPER_TEST_DOCKER_HOST").is_none(),
                "promtool is not installed; ./scripts/test installs Debian's prometheus"
            );
            eprintln!(
                "promtool not installed; skipping `promtool check metrics` outside ./scripts/test"
            );
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn two_instances_do_not_share_a_registry() {
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.event_stream_restarted();
        let all = samples(&b.encode());
        assert_eq!(
            value(&all, "reaper_docker_event_stream_restarts_total", &[]),
            Some(0.0)
        );
        assert_eq!(a.content_type(), "text/plain; version=0.0.4");
    }
}
