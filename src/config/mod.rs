//! Over 500 lines: every config key declared once (file key, flag, default, doc) and their resolution; the tests are in tests.rs.
//!
//! The daemon's configuration: a `kind: Config` file, command-line flags and built-in defaults.
//! Flags override the file, the file overrides the defaults. Every key is optional, unknown keys
//! are errors, and errors name the file, line, column and field, like manifest errors (the file
//! is read by the same hardened YAML reader).
//!
//! Every key is declared once, as a field of [`ConfigFile`]: its name in the file (serde), its
//! flag, help text and environment variable (clap), and, in [`ConfigFile::defaults`], its
//! default. The flags, the file and the defaults are three layers of that one struct.

mod file;
pub mod layer;
mod listen;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::core::eviction::DiskPressureConfig;
use crate::core::model::{Duration, Percent, SerialExitsSetting};
use crate::core::yaml::{ManifestError, ManifestErrors};
use layer::config_keys;
pub use listen::ListenAddr;

pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
pub const DEFAULT_METRICS_LISTEN: ListenAddr = ListenAddr(SocketAddr::new(
    std::net::IpAddr::V4(Ipv4Addr::LOCALHOST),
    9733,
));
pub const DEFAULT_SESSION_LABEL_KEY: &str = "session_id";
pub const DEFAULT_AGENT_NAME_PREFIX: &str = "anvyl-agent-";
pub const DEFAULT_CONCURRENCY: usize = 8;
/// More parallel removals buy nothing and have deadlocked dockerd (moby/libnetwork#2649).
pub const MAX_CONCURRENCY: usize = 64;
pub const DEFAULT_ORPHAN_GRACE_PERIOD: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_MAX_ORPHAN_REMOVALS_PER_PASS: usize = 50;
pub const DEFAULT_AGENT_RUNNING_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_DOCKER_TIMEOUT: Duration = Duration::from_secs(30);
/// Every key a fleet's reapers write in etcd lives under it.
pub const DEFAULT_ETCD_PREFIX: &str = "/reaper";
pub const DEFAULT_HIGH_WATERMARK: f64 = 0.85;
pub const DEFAULT_LOW_WATERMARK: f64 = 0.80;
pub const DEFAULT_MIN_IMAGE_AGE: Duration = Duration::from_secs(10 * 60);

/// `diskPressure`'s defaults: 85%, 80%, 10m, nothing kept by pattern.
impl Default for DiskPressureConfig {
    fn default() -> Self {
        DiskPressureConfig {
            high_watermark: Percent::from_ratio(DEFAULT_HIGH_WATERMARK).unwrap_or_default(),
            low_watermark: Percent::from_ratio(DEFAULT_LOW_WATERMARK).unwrap_or_default(),
            min_image_age: DEFAULT_MIN_IMAGE_AGE,
            keep: Vec::new(),
        }
    }
}
/// The environment variable that may carry `apiToken`, so it stays out of `ps`.
pub const API_TOKEN_ENV: &str = "REAPER_API_TOKEN";

const ROOT_DATA_DIR: &str = "/var/lib/reaper";
const ROOT_SOCKET: &str = "/run/reaper/reaper.sock";
const COMMAND_LINE: &str = "command line";

config_keys! {
    /// The config file as written, and the `serve` flags: the same keys, so one layer of either
    /// overrides the other key by key. Each doc comment is also the flag's `--help`.
    #[derive(Debug, Clone, Default, PartialEq, Deserialize, Args)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct ConfigFile {
        /// Must be `reaper/v1` in a file; flags leave it unset.
        #[arg(skip)]
        pub api_version: Option<String>,
        /// Must be `Config` in a file; flags leave it unset.
        #[arg(skip)]
        pub kind: Option<String>,
        #[command(flatten)]
        pub docker: Option<DockerFile>,
        /// The sled store's directory; its default depends on the user (root, or the XDG state
        /// directory).
        #[arg(long, value_name = "DIR")]
        pub data_dir: Option<PathBuf>,
        /// The API's Unix socket: the global `--socket` flag, which client commands share.
        #[arg(skip)]
        pub socket: Option<PathBuf>,
        /// Where /metrics and /healthz listen, IP:PORT or HOST:PORT; keep it on loopback unless
        /// a firewall protects it.
        #[arg(long, value_name = "ADDR")]
        pub metrics_listen: Option<ListenAddr>,
        /// Leave alone every object whose `reaper.instance` label names another instance, so
        /// several reapers can share one Docker engine; "" means unscoped.
        #[arg(long, value_name = "NAME")]
        pub instance: Option<String>,
        #[command(flatten)]
        pub adoption: Option<AdoptionFile>,
        /// spec.paths and buildDir are relative to this directory (by default the data dir's
        /// `paths`).
        #[arg(long, value_name = "DIR")]
        pub paths_root: Option<PathBuf>,
        /// A directory of *.yaml / *.yml manifests treated as declared state (default: none).
        #[arg(long, value_name = "DIR")]
        pub manifests: Option<PathBuf>,
        /// Objects that are ours but whose owner record does not exist are removed once older
        /// than this.
        #[arg(long, value_name = "DURATION")]
        pub orphan_grace_period: Option<Duration>,
        /// The blast-radius guard: a pass that would remove more orphans than this removes none
        /// of them and holds until `reaper cleanup --yes`, a higher cap, or a fixed rule (records
        /// that ended, expired or were deleted are not capped).
        #[arg(long, value_name = "N")]
        pub max_orphan_removals_per_pass: Option<usize>,
        /// How long an agent reported `Running` may have no running container before it is set
        /// `Stopped`.
        #[arg(long, value_name = "DURATION")]
        pub agent_running_grace: Option<Duration>,
        /// How long what a session left is kept after it ends (its running containers are
        /// stopped at once), unless its `spec.cleanup.delay` says otherwise.
        #[arg(long, value_name = "DURATION")]
        pub cleanup_delay: Option<Duration>,
        /// The same for a session ended as failed and a failed agent, unless their
        /// `spec.cleanup.delayOnFailure` says otherwise (default: cleanupDelay).
        #[arg(long, value_name = "DURATION")]
        pub cleanup_delay_on_failure: Option<Duration>,
        /// A full resync runs this often, even if no event arrives (events are only hints).
        #[arg(long, value_name = "DURATION")]
        pub resync_interval: Option<Duration>,
        /// Cleaned sessions are kept as history this long, then purged.
        #[arg(long, value_name = "DURATION")]
        pub history_retention: Option<Duration>,
        /// Parallel removals, 1 to 64.
        #[arg(long, value_name = "N")]
        pub concurrency: Option<usize>,
        /// Bound on every Docker call; a stop gets the session's stopTimeout plus this.
        #[arg(long, value_name = "DURATION")]
        pub docker_timeout: Option<Duration>,
        /// Plan and log, but remove nothing.
        #[arg(long, num_args = 0, default_missing_value = "true")]
        pub dry_run: Option<bool>,
        /// text (human-readable) or json (one object per line, for log shippers).
        #[arg(long, value_name = "FORMAT")]
        pub log_format: Option<LogFormat>,
        /// The bearer token every request on the TCP API listener must carry; the Unix socket
        /// does not use it.
        #[arg(long, value_name = "TOKEN", env = API_TOKEN_ENV, hide_env_values = true)]
        pub api_token: Option<Secret>,
        /// Also serve the API on this TCP address (default: off); every request on it needs
        /// `Authorization: Bearer <apiToken>`.
        #[arg(long, value_name = "ADDR")]
        pub api_listen: Option<ListenAddr>,
        #[command(flatten)]
        pub engine_quirks: Option<EngineQuirksFile>,
        #[command(flatten)]
        pub store: Option<StoreFile>,
        /// This host's name in a fleet (default: the machine's hostname); unique in the fleet.
        /// Its first sightings of objects live under it in a shared store.
        #[arg(long, value_name = "NAME")]
        pub host_name: Option<String>,
        #[command(flatten)]
        pub disk_pressure: Option<DiskPressureFile>,
        /// The file these values came from, for error messages (set by `parse`).
        #[arg(skip)]
        #[serde(skip)]
        pub source: Option<Source>,
    }
}

config_keys! {
    /// `docker:` how to reach the engine.
    #[derive(Debug, Clone, Default, PartialEq, Deserialize, Args)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct DockerFile {
        /// The Docker endpoint, unix://PATH or tcp://HOST:PORT ($DOCKER_HOST when set). Behind a
        /// socket proxy, allow only list, inspect, stop, remove and events.
        #[arg(long = "docker-host", value_name = "URL")]
        pub host: Option<String>,
    }
}

config_keys! {
    /// `adoption:` objects that are ours without reaper's own labels.
    #[derive(Debug, Clone, Default, PartialEq, Deserialize, Args)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct AdoptionFile {
        /// A label key whose VALUE names the owning session (`reaper.session` always counts);
        /// repeat the flag for more.
        #[arg(long = "session-label-key", value_name = "KEY")]
        pub session_label_keys: Option<Vec<String>>,
        /// Containers and image repositories named <prefix><agent> belong to agent <agent>.
        #[arg(long, value_name = "PREFIX")]
        pub agent_name_prefix: Option<String>,
    }
}

config_keys! {
    /// `engineQuirks:` workarounds for engine bugs, decided from the engine's version unless set.
    #[derive(Debug, Clone, Default, PartialEq, Deserialize, Args)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct EngineQuirksFile {
        /// auto, on or off: at most one container stop in flight, for engines with the
        /// libnetwork exit deadlock (Docker before 20.10.27); auto decides from the engine's
        /// version.
        #[arg(long, value_name = "MODE")]
        pub serial_exits: Option<SerialExitsSetting>,
    }
}

// clap leaves the group of a struct with a flattened section empty ("validation isn't ready
// for nested arg groups"), so `Option<StoreFile>` would never be set from flags: every store
// flag joins the `StoreFile` group itself.
config_keys! {
    /// `store:` where the records live.
    #[derive(Debug, Clone, Default, PartialEq, Deserialize, Args)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct StoreFile {
        /// sled (embedded, in dataDir) or etcd (shared by a fleet of hosts; see store.etcd).
        #[arg(long = "store-backend", value_name = "BACKEND", group = "StoreFile")]
        pub backend: Option<StoreBackend>,
        #[command(flatten)]
        pub etcd: Option<EtcdFile>,
    }
}

config_keys! {
    /// `store.etcd:` the etcd cluster a fleet shares.
    #[derive(Debug, Clone, Default, PartialEq, Deserialize, Args)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct EtcdFile {
        /// The etcd members' client URLs (http:// or, with the TLS files, https://); repeat the
        /// flag for more (default: none; needed with store.backend etcd).
        #[arg(long = "etcd-endpoint", value_name = "URL", group = "StoreFile")]
        pub endpoints: Option<Vec<String>>,
        /// Every key reaper writes lives under this prefix.
        #[arg(long = "etcd-prefix", value_name = "PREFIX", group = "StoreFile")]
        pub prefix: Option<String>,
        /// mTLS: the CA that signed the etcd members' certificates, with certFile and keyFile
        /// (default: none, plain http://).
        #[arg(long = "etcd-ca-file", value_name = "FILE", group = "StoreFile")]
        pub ca_file: Option<PathBuf>,
        /// mTLS: reaper's client certificate, with caFile and keyFile (default: none).
        #[arg(long = "etcd-cert-file", value_name = "FILE", group = "StoreFile")]
        pub cert_file: Option<PathBuf>,
        /// mTLS: the key of reaper's client certificate, with caFile and certFile (default: none).
        #[arg(long = "etcd-key-file", value_name = "FILE", group = "StoreFile")]
        pub key_file: Option<PathBuf>,
    }
}

config_keys! {
    /// `diskPressure:` evicting our idle images, least recently used first, when the filesystem
    /// holding Docker's data root fills.
    #[derive(Debug, Clone, Default, PartialEq, Deserialize, Args)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub struct DiskPressureFile {
        /// Evict when the filesystem holding Docker's data root has more than this share of its
        /// bytes or inodes in use.
        #[arg(long = "disk-high-watermark", value_name = "PERCENT")]
        pub high_watermark: Option<Percent>,
        /// Evict until usage is below this.
        #[arg(long = "disk-low-watermark", value_name = "PERCENT")]
        pub low_watermark: Option<Percent>,
        /// Never evict an image created or last used more recently than this.
        #[arg(long = "disk-min-image-age", value_name = "DURATION")]
        pub min_image_age: Option<Duration>,
        /// An image reference pattern never evicted (`*` matches anything), e.g.
        /// "anvyl-agent-base:*"; repeat the flag for more.
        #[arg(long = "disk-keep", value_name = "PATTERN")]
        pub keep: Option<Vec<String>>,
    }
}

impl ConfigFile {
    /// The defaults, as the lowest layer: the one place a default is written. Keys without
    /// one (manifests, apiToken, apiListen) stay unset. Docker's host and the data dir come
    /// from the environment; the socket and the paths root follow `data_dir`, wherever it came
    /// from, and are unset when it is unknown.
    fn defaults(env: &Env, data_dir: Option<&Path>) -> ConfigFile {
        ConfigFile {
            docker: Some(DockerFile {
                host: Some(
                    env.docker_host
                        .clone()
                        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.into()),
                ),
            }),
            data_dir: data_dir.map(Path::to_path_buf),
            socket: data_dir.map(|d| env.socket(Some(d)).unwrap_or_else(|| d.join("reaper.sock"))),
            metrics_listen: Some(DEFAULT_METRICS_LISTEN),
            instance: Some(String::new()),
            adoption: Some(AdoptionFile {
                session_label_keys: Some(vec![DEFAULT_SESSION_LABEL_KEY.into()]),
                agent_name_prefix: Some(DEFAULT_AGENT_NAME_PREFIX.into()),
            }),
            paths_root: data_dir.map(|d| d.join("paths")),
            orphan_grace_period: Some(DEFAULT_ORPHAN_GRACE_PERIOD),
            max_orphan_removals_per_pass: Some(DEFAULT_MAX_ORPHAN_REMOVALS_PER_PASS),
            agent_running_grace: Some(DEFAULT_AGENT_RUNNING_GRACE),
            cleanup_delay: Some(Duration::from_secs(0)),
            resync_interval: Some(DEFAULT_RESYNC_INTERVAL),
            history_retention: Some(DEFAULT_HISTORY_RETENTION),
            concurrency: Some(DEFAULT_CONCURRENCY),
            docker_timeout: Some(DEFAULT_DOCKER_TIMEOUT),
            dry_run: Some(false),
            log_format: Some(LogFormat::Text),
            engine_quirks: Some(EngineQuirksFile {
                serial_exits: Some(SerialExitsSetting::Auto),
            }),
            store: Some(StoreFile {
                backend: Some(StoreBackend::Sled),
                etcd: Some(EtcdFile {
                    prefix: Some(DEFAULT_ETCD_PREFIX.into()),
                    ..EtcdFile::default()
                }),
            }),
            // Only a fleet needs it to be unique; resolving refuses the fallback for etcd.
            host_name: Some(env.host_name.clone().unwrap_or_else(|| "localhost".into())),
            disk_pressure: Some({
                let d = DiskPressureConfig::default();
                DiskPressureFile {
                    high_watermark: Some(d.high_watermark),
                    low_watermark: Some(d.low_watermark),
                    min_image_age: Some(d.min_image_age),
                    keep: Some(d.keep),
                }
            }),
            ..ConfigFile::default()
        }
    }

    /// The defaults for this process's user and environment, as `reaper serve --help` shows
    /// them.
    pub fn defaults_here() -> ConfigFile {
        let env = Env::current();
        ConfigFile::defaults(&env, env.data_dir().as_deref())
    }
}

/// The effective configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub docker_host: String,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub metrics_listen: SocketAddr,
    /// "" when this reaper is not scoped; otherwise the `reaper.instance` label value it owns.
    pub instance: String,
    pub session_label_keys: Vec<String>,
    pub agent_name_prefix: String,
    pub paths_root: PathBuf,
    pub manifests: Option<PathBuf>,
    pub orphan_grace_period: Duration,
    /// The blast-radius guard: more orphan removals due in one pass than this, and none is made.
    pub max_orphan_removals_per_pass: usize,
    /// How long a `Running` agent may have no running container before it is set `Stopped`.
    pub agent_running_grace: Duration,
    /// `cleanupDelay` and `cleanupDelayOnFailure`: the defaults of `spec.cleanup.delay*`.
    pub cleanup_delay: Duration,
    pub cleanup_delay_on_failure: Option<Duration>,
    pub resync_interval: Duration,
    pub history_retention: Duration,
    pub concurrency: usize,
    /// Bound on every Docker call except stops, which get `stopTimeout` plus this.
    pub docker_timeout: Duration,
    pub dry_run: bool,
    pub log_format: LogFormat,
    /// Never serialised, so printing the effective config cannot leak it.
    #[serde(skip_serializing)]
    pub api_token: Option<Secret>,
    /// Optional TCP listener for the API (off by default); every request needs `apiToken`.
    pub api_listen: Option<SocketAddr>,
    /// `engineQuirks.serialExits`: auto (from the engine's version), on or off.
    pub serial_exits: SerialExitsSetting,
    /// `store.*`: which backend holds the records, and how to reach etcd.
    pub store: StoreConfig,
    /// `hostName`: this host's name in a fleet.
    pub host_name: String,
    /// `diskPressure`: the watermarks, the minimum image age and the keep patterns.
    pub disk_pressure: DiskPressureConfig,
}

/// Where the records live.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub etcd: EtcdConfig,
}

/// `store.etcd`; used when the backend is etcd. The TLS files are all set or all unset (checked).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `store.backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded, in the data dir: one host.
    #[default]
    Sled,
    /// A shared etcd cluster: a fleet.
    Etcd,
}

impl StoreBackend {
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreBackend::Sled => "sled",
            StoreBackend::Etcd => "etcd",
        }
    }
}

impl FromStr for StoreBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sled" => Ok(StoreBackend::Sled),
            "etcd" => Ok(StoreBackend::Etcd),
            _ => Err(format!(
                "invalid store backend {s:?}: expected sled or etcd"
            )),
        }
    }
}

impl fmt::Display for StoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Config {
    /// Flags override the file, the file overrides the defaults. Validates the result; each
    /// error names where its value came from (the file, or "command line").
    pub fn resolve(file: Option<ConfigFile>, flags: ConfigFile) -> Result<Config, ConfigError> {
        resolve_in(file.unwrap_or_default(), flags, &Env::current())
    }

    /// The keys of a layer with the defaults merged under it; `None` only if a key that has
    /// a default lost it in [`ConfigFile::defaults`].
    fn from_layer(c: ConfigFile) -> Option<Config> {
        let (docker, adoption, quirks) = (c.docker?, c.adoption?, c.engine_quirks?);
        let store = c.store?;
        let etcd = store.etcd?;
        let disk = c.disk_pressure?;
        Some(Config {
            docker_host: docker.host?,
            data_dir: c.data_dir?,
            socket: c.socket?,
            metrics_listen: c.metrics_listen?.0,
            instance: c.instance?,
            session_label_keys: adoption.session_label_keys?,
            agent_name_prefix: adoption.agent_name_prefix?,
            paths_root: c.paths_root?,
            manifests: c.manifests,
            orphan_grace_period: c.orphan_grace_period?,
            max_orphan_removals_per_pass: c.max_orphan_removals_per_pass?,
            agent_running_grace: c.agent_running_grace?,
            cleanup_delay: c.cleanup_delay?,
            cleanup_delay_on_failure: c.cleanup_delay_on_failure,
            resync_interval: c.resync_interval?,
            history_retention: c.history_retention?,
            concurrency: c.concurrency?,
            docker_timeout: c.docker_timeout?,
            dry_run: c.dry_run?,
            log_format: c.log_format?,
            api_token: c.api_token,
            api_listen: c.api_listen.map(|a| a.0),
            serial_exits: quirks.serial_exits?,
            store: StoreConfig {
                backend: store.backend?,
                etcd: EtcdConfig {
                    endpoints: etcd.endpoints.unwrap_or_default(),
                    prefix: etcd.prefix?,
                    ca_file: etcd.ca_file,
                    cert_file: etcd.cert_file,
                    key_file: etcd.key_file,
                },
            },
            host_name: c.host_name?,
            disk_pressure: DiskPressureConfig {
                high_watermark: disk.high_watermark?,
                low_watermark: disk.low_watermark?,
                min_image_age: disk.min_image_age?,
                keep: disk.keep?,
            },
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("invalid log format {s:?}: expected text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential that must not end up in logs: `Debug` hides it and `Config` never serialises it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// For clap: any text is a token; `check` says which are acceptable, naming the command line.
impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

/// The file a layer was read from, named in its error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source(String);

impl Source {
    pub fn new(file: impl Into<String>) -> Self {
        Source(file.into())
    }
}

impl Deref for Source {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, each naming its file (or "command line"), line and field.
    #[error("{0}")]
    Invalid(ManifestErrors),
    /// A bug, caught by the tests: `ConfigFile::defaults` lost a key's default.
    #[error("internal error: a config key has no default")]
    NoDefault,
}

impl ConfigError {
    /// The located problems; empty for read errors.
    pub fn problems(&self) -> &[ManifestError] {
        match self {
            ConfigError::Read { .. } | ConfigError::NoDefault => &[],
            ConfigError::Invalid(e) => &e.0,
        }
    }
}

/// The API socket's default path, also used by the CLI, which has no config file. For a
/// non-root user without `XDG_RUNTIME_DIR` the daemon puts its socket in its data dir; the CLI
/// can only know the default data dir.
pub fn default_socket_path() -> PathBuf {
    let env = Env::current();
    env.socket(env.data_dir().as_deref()).unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("reaper-{}", env.uid))
            .join("reaper.sock")
    })
}

/// What the defaults depend on. Captured once, so tests can supply their own.
#[derive(Debug, Clone, Default)]
struct Env {
    root: bool,
    uid: u32,
    home: Option<PathBuf>,
    xdg_state_home: Option<PathBuf>,
    xdg_runtime_dir: Option<PathBuf>,
    docker_host: Option<String>,
    /// The machine's hostname, the default `hostName`.
    host_name: Option<String>,
}

impl Env {
    fn current() -> Env {
        // Relative values are ignored, as the XDG base directory spec says.
        let abs = |name: &str| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        let uid = rustix::process::geteuid();
        Env {
            root: uid.is_root(),
            uid: uid.as_raw(),
            home: abs("HOME"),
            xdg_state_home: abs("XDG_STATE_HOME"),
            xdg_runtime_dir: abs("XDG_RUNTIME_DIR"),
            docker_host: std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()),
            host_name: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty()),
        }
    }

    fn data_dir(&self) -> Option<PathBuf> {
        if self.root {
            return Some(PathBuf::from(ROOT_DATA_DIR));
        }
        self.xdg_state_home
            .as_ref()
            .map(|d| d.join("reaper"))
            .or_else(|| self.home.as_ref().map(|h| h.join(".local/state/reaper")))
    }

    fn socket(&self, data_dir: Option<&Path>) -> Option<PathBuf> {
        if self.root {
            return Some(PathBuf::from(ROOT_SOCKET));
        }
        self.xdg_runtime_dir
            .as_ref()
            .map(|d| d.join("reaper/reaper.sock"))
            .or_else(|| data_dir.map(|d| d.join("reaper.sock")))
    }
}

fn resolve_in(file: ConfigFile, flags: ConfigFile, env: &Env) -> Result<Config, ConfigError> {
    let file_name = file.source.as_deref().unwrap_or("config file").to_string();
    // A bad merged value came from the flags exactly when the flags alone are bad there.
    let bad_flags: Vec<_> = flags.check().into_iter().map(|(path, _)| path).collect();
    let merged = flags.or(file);
    let mut errors: Vec<ManifestError> = merged
        .check()
        .into_iter()
        .map(|(path, message)| ManifestError {
            file: if bad_flags.contains(&path) {
                COMMAND_LINE.into()
            } else {
                file_name.clone()
            },
            document: 0,
            line: None,
            column: None,
            field: Some(path.join(".")),
            message,
        })
        .collect();
    let data_dir = merged.data_dir.clone().or_else(|| env.data_dir());
    if data_dir.is_none() {
        errors.push(ManifestError {
            file: COMMAND_LINE.into(),
            document: 0,
            line: None,
            column: None,
            field: Some("dataDir".into()),
            message: "no default data directory: HOME and XDG_STATE_HOME are unset; set dataDir or --data-dir".into(),
        });
    }
    let etcd = merged.store.as_ref().and_then(|s| s.backend) == Some(StoreBackend::Etcd);
    if etcd && merged.host_name.is_none() && env.host_name.is_none() {
        errors.push(ManifestError {
            file: COMMAND_LINE.into(),
            document: 0,
            line: None,
            column: None,
            field: Some("hostName".into()),
            message: "store.backend is etcd, and the machine's hostname cannot be read (/proc/sys/kernel/hostname): set hostName or --host-name, unique in the fleet".into(),
        });
    }
    if !errors.is_empty() {
        return Err(ConfigError::Invalid(ManifestErrors(errors)));
    }
    let defaults = ConfigFile::defaults(env, data_dir.as_deref());
    Config::from_layer(merged.or(defaults)).ok_or(ConfigError::NoDefault)
}
