//! The daemon's configuration: a `kind: Config` file, command-line flags and built-in defaults.
//! Flags override the file, the file overrides the defaults. Every key is optional, unknown keys
//! are errors, and errors name the file, line, column and field, like manifest errors (the file
//! is read by the same hardened YAML reader).

use std::fmt;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::core::manifest::validate_name_prefix;
use crate::core::model::{validate_label, Duration, SerialExitsSetting, API_VERSION};
use crate::core::yaml::{
    check_and_walk, decode_utf8, documents, locate, typed, ManifestError, ManifestErrors, Problem,
    Shape, MAX_DOCUMENT_BYTES,
};

pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9733);
pub const DEFAULT_SESSION_LABEL_KEY: &str = "session_id";
pub const DEFAULT_AGENT_NAME_PREFIX: &str = "anvyl-agent-";
pub const DEFAULT_CONCURRENCY: usize = 8;
/// More parallel removals buy nothing and have deadlocked dockerd (moby/libnetwork#2649).
pub const MAX_CONCURRENCY: usize = 64;
pub const DEFAULT_ORPHAN_GRACE_PERIOD: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_DOCKER_TIMEOUT: Duration = Duration::from_secs(30);

const ROOT_DATA_DIR: &str = "/var/lib/reaper";
const ROOT_SOCKET: &str = "/run/reaper/reaper.sock";
const COMMAND_LINE: &str = "command line";

/// The config file as written, and the command-line flags mapped onto the same keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    /// Must be `reaper/v1` in a file; flags leave it unset.
    pub api_version: Option<String>,
    /// Must be `Config` in a file; flags leave it unset.
    pub kind: Option<String>,
    pub docker: Option<DockerFile>,
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub instance: Option<String>,
    pub adoption: Option<AdoptionFile>,
    pub paths_root: Option<PathBuf>,
    pub manifests: Option<PathBuf>,
    pub orphan_grace_period: Option<Duration>,
    pub resync_interval: Option<Duration>,
    pub history_retention: Option<Duration>,
    pub concurrency: Option<usize>,
    pub docker_timeout: Option<Duration>,
    pub dry_run: Option<bool>,
    pub log_format: Option<LogFormat>,
    pub api_token: Option<Secret>,
    /// Optional TCP listener for the API (off by default); every request needs `apiToken`.
    pub api_listen: Option<SocketAddr>,
    pub engine_quirks: Option<EngineQuirksFile>,
    /// The file these values came from, for error messages (set by `parse`).
    #[serde(skip)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerFile {
    pub host: Option<String>,
}

/// Workarounds for engine bugs, decided from the engine's version unless set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineQuirksFile {
    /// At most one container exit in flight (the libnetwork deadlock of Docker < 20.10.27).
    pub serial_exits: Option<SerialExitsSetting>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdoptionFile {
    pub session_label_keys: Option<Vec<String>>,
    pub agent_name_prefix: Option<String>,
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
}

impl ConfigError {
    /// The located problems; empty for read errors.
    pub fn problems(&self) -> &[ManifestError] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(e) => &e.0,
        }
    }
}

impl ConfigFile {
    /// Parses and validates a config file's text. `file_name` is used in error messages.
    pub fn parse(file_name: &str, text: &str) -> Result<ConfigFile, ConfigError> {
        let invalid = |problems: Vec<Problem>| {
            ConfigError::Invalid(ManifestErrors(
                problems
                    .into_iter()
                    .map(|p| p.into_error(file_name, 0))
                    .collect(),
            ))
        };
        let one = |at: Option<(usize, usize)>, field: Option<&str>, message: String| {
            invalid(vec![Problem::at(at, field.map(str::to_string), message)])
        };
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(one(
                None,
                None,
                format!("the config file is larger than 1 MiB ({MAX_DOCUMENT_BYTES} bytes)"),
            ));
        }
        let mut docs = documents(text).filter(|d| d.has_content);
        let empty = "the config file is empty: it needs at least `apiVersion: reaper/v1` and `kind: Config`";
        let Some(doc) = docs.next() else {
            return Err(one(None, None, empty.into()));
        };
        if let Some(extra) = docs.next() {
            return Err(one(
                Some((extra.first_line, 1)),
                None,
                "a config file holds a single YAML document".into(),
            ));
        }
        match check_and_walk(&doc).map_err(|p| invalid(vec![p]))? {
            Shape::Empty => return Err(one(None, None, empty.into())),
            Shape::Other => {
                return Err(one(
                    locate(&doc, &[]),
                    None,
                    "the config file must be a mapping of settings".into(),
                ))
            }
            Shape::Mapping { kind, .. } => {
                let at = locate(&doc, &["kind"]);
                match kind.as_deref() {
                    Some("Config") => {}
                    Some(k @ ("Session" | "Agent")) => {
                        let m = format!("kind {k} is a manifest: apply it with `reaper apply -f`; a config file has kind: Config");
                        return Err(one(at, Some("kind"), m));
                    }
                    Some(k) => {
                        return Err(one(
                            at,
                            Some("kind"),
                            format!("unknown kind {k:?}: expected Config"),
                        ))
                    }
                    None if at.is_some() => {
                        return Err(one(at, Some("kind"), "kind must be Config".into()))
                    }
                    None => {
                        return Err(one(
                            locate(&doc, &[]),
                            None,
                            "missing `kind: Config`".into(),
                        ))
                    }
                }
            }
        }
        let mut file: ConfigFile = typed(&doc).map_err(|p| invalid(vec![p]))?;
        if file.api_version.as_deref() != Some(API_VERSION) {
            let message = match &file.api_version {
                Some(v) => format!("unsupported apiVersion {v:?}: expected {API_VERSION}"),
                None => format!("missing `apiVersion: {API_VERSION}`"),
            };
            return Err(one(
                locate(&doc, &["apiVersion"]),
                Some("apiVersion"),
                message,
            ));
        }
        let problems: Vec<Problem> = file
            .check()
            .into_iter()
            .map(|(path, message)| Problem::at(locate(&doc, path), Some(path.join(".")), message))
            .collect();
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        file.source = Some(file_name.to_string());
        Ok(file)
    }

    /// Reads and parses a config file, refusing files over 1 MiB before reading them whole.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let name = path.display().to_string();
        let mut bytes = Vec::new();
        let read = std::fs::File::open(path).and_then(|f| {
            f.take(MAX_DOCUMENT_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        });
        if let Err(source) = read {
            return Err(ConfigError::Read { file: name, source });
        }
        let too_big = || ManifestError {
            file: name.clone(),
            document: 0,
            line: None,
            column: None,
            field: None,
            message: format!("the config file is larger than 1 MiB ({MAX_DOCUMENT_BYTES} bytes)"),
        };
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(ConfigError::Invalid(ManifestErrors(vec![too_big()])));
        }
        let text = decode_utf8(&name, &bytes)
            .map_err(|e| ConfigError::Invalid(ManifestErrors(vec![e])))?;
        Self::parse(&name, text)
    }

    /// Values that are set but not acceptable, as (key path, reason).
    fn check(&self) -> Vec<(&'static [&'static str], String)> {
        let mut out: Vec<(&'static [&'static str], String)> = Vec::new();
        if let Some(host) = self.docker.as_ref().and_then(|d| d.host.as_deref()) {
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                out.push((&["docker", "host"], format!("invalid Docker host {host:?}: must be a non-empty URL such as {DEFAULT_DOCKER_HOST}")));
            }
        }
        let paths: [(&'static [&'static str], &Option<PathBuf>); 4] = [
            (&["dataDir"], &self.data_dir),
            (&["socket"], &self.socket),
            (&["pathsRoot"], &self.paths_root),
            (&["manifests"], &self.manifests),
        ];
        for (key, path) in paths {
            if let Some(p) = path {
                if p.as_os_str().is_empty() {
                    out.push((key, "must not be empty".into()));
                } else if p.as_os_str().as_encoded_bytes().contains(&0) {
                    out.push((key, format!("invalid path {p:?}: must not contain NUL")));
                }
            }
        }
        if let Some(instance) = self.instance.as_deref().filter(|i| !i.is_empty()) {
            if let Err(e) = validate_label("reaper.instance", instance) {
                out.push((&["instance"], e));
            }
        }
        if let Some(adoption) = &self.adoption {
            for key in adoption.session_label_keys.iter().flatten() {
                if let Err(e) = validate_label(key, "") {
                    out.push((&["adoption", "sessionLabelKeys"], e));
                }
            }
            if let Some(prefix) = &adoption.agent_name_prefix {
                if let Err(e) = validate_name_prefix(prefix) {
                    out.push((&["adoption", "agentNamePrefix"], e));
                }
            }
        }
        let zero = Duration::default();
        if self.resync_interval == Some(zero) {
            out.push((&["resyncInterval"], "must be more than 0s".into()));
        }
        if self.docker_timeout == Some(zero) {
            out.push((&["dockerTimeout"], "must be more than 0s".into()));
        }
        if let Some(n) = self.concurrency {
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                out.push((
                    &["concurrency"],
                    format!("{n} is out of range: must be 1 to {MAX_CONCURRENCY}"),
                ));
            }
        }
        if self.api_listen.is_some() && self.api_token.is_none() {
            out.push((
                &["apiListen"],
                "a TCP API listener needs apiToken (or REAPER_API_TOKEN): requests must carry it"
                    .into(),
            ));
        }
        if let Some(token) = &self.api_token {
            if token.0.is_empty() || token.0.chars().any(|c| c.is_whitespace() || c.is_control()) {
                out.push((
                    &["apiToken"],
                    "must be non-empty, without whitespace or control characters".into(),
                ));
            }
        }
        out
    }

    /// Each key from `self` if set, else from `lower`.
    fn or(self, lower: ConfigFile) -> ConfigFile {
        let docker = match (self.docker, lower.docker) {
            (Some(a), Some(b)) => Some(DockerFile {
                host: a.host.or(b.host),
            }),
            (a, b) => a.or(b),
        };
        let adoption = match (self.adoption, lower.adoption) {
            (Some(a), Some(b)) => Some(AdoptionFile {
                session_label_keys: a.session_label_keys.or(b.session_label_keys),
                agent_name_prefix: a.agent_name_prefix.or(b.agent_name_prefix),
            }),
            (a, b) => a.or(b),
        };
        let engine_quirks = match (self.engine_quirks, lower.engine_quirks) {
            (Some(a), Some(b)) => Some(EngineQuirksFile {
                serial_exits: a.serial_exits.or(b.serial_exits),
            }),
            (a, b) => a.or(b),
        };
        ConfigFile {
            api_version: self.api_version.or(lower.api_version),
            kind: self.kind.or(lower.kind),
            docker,
            data_dir: self.data_dir.or(lower.data_dir),
            socket: self.socket.or(lower.socket),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            instance: self.instance.or(lower.instance),
            adoption,
            paths_root: self.paths_root.or(lower.paths_root),
            manifests: self.manifests.or(lower.manifests),
            orphan_grace_period: self.orphan_grace_period.or(lower.orphan_grace_period),
            resync_interval: self.resync_interval.or(lower.resync_interval),
            history_retention: self.history_retention.or(lower.history_retention),
            concurrency: self.concurrency.or(lower.concurrency),
            docker_timeout: self.docker_timeout.or(lower.docker_timeout),
            dry_run: self.dry_run.or(lower.dry_run),
            log_format: self.log_format.or(lower.log_format),
            api_token: self.api_token.or(lower.api_token),
            api_listen: self.api_listen.or(lower.api_listen),
            engine_quirks,
            source: self.source.or(lower.source),
        }
    }
}

impl Config {
    /// Flags override the file, the file overrides the defaults. Validates the result; each
    /// error names where its value came from (the file, or "command line").
    pub fn resolve(file: Option<ConfigFile>, flags: ConfigFile) -> Result<Config, ConfigError> {
        resolve_in(file.unwrap_or_default(), flags, &Env::current())
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
    let file_name = file.source.clone().unwrap_or_else(|| "config file".into());
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
    let data_dir = merged.data_dir.or_else(|| env.data_dir());
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
    let Some(data_dir) = data_dir.filter(|_| errors.is_empty()) else {
        return Err(ConfigError::Invalid(ManifestErrors(errors)));
    };
    let adoption = merged.adoption.unwrap_or_default();
    Ok(Config {
        docker_host: merged
            .docker
            .and_then(|d| d.host)
            .or_else(|| env.docker_host.clone())
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.into()),
        socket: merged
            .socket
            .or_else(|| env.socket(Some(&data_dir)))
            .unwrap_or_else(|| data_dir.join("reaper.sock")),
        paths_root: merged.paths_root.unwrap_or_else(|| data_dir.join("paths")),
        data_dir,
        metrics_listen: merged.metrics_listen.unwrap_or(DEFAULT_METRICS_LISTEN),
        instance: merged.instance.unwrap_or_default(),
        session_label_keys: adoption
            .session_label_keys
            .unwrap_or_else(|| vec![DEFAULT_SESSION_LABEL_KEY.to_string()]),
        agent_name_prefix: adoption
            .agent_name_prefix
            .unwrap_or_else(|| DEFAULT_AGENT_NAME_PREFIX.into()),
        manifests: merged.manifests,
        orphan_grace_period: merged
            .orphan_grace_period
            .unwrap_or(DEFAULT_ORPHAN_GRACE_PERIOD),
        resync_interval: merged.resync_interval.unwrap_or(DEFAULT_RESYNC_INTERVAL),
        history_retention: merged
            .history_retention
            .unwrap_or(DEFAULT_HISTORY_RETENTION),
        concurrency: merged.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        docker_timeout: merged.docker_timeout.unwrap_or(DEFAULT_DOCKER_TIMEOUT),
        dry_run: merged.dry_run.unwrap_or(false),
        log_format: merged.log_format.unwrap_or_default(),
        api_token: merged.api_token,
        api_listen: merged.api_listen,
        serial_exits: merged
            .engine_quirks
            .and_then(|q| q.serial_exits)
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: reaper/v1\nkind: Config\n";

    fn user_env() -> Env {
        Env {
            root: false,
            uid: 1000,
            home: Some("/home/u".into()),
            xdg_state_home: None,
            xdg_runtime_dir: Some("/run/user/1000".into()),
            docker_host: None,
        }
    }

    fn root_env() -> Env {
        Env {
            root: true,
            uid: 0,
            home: Some("/root".into()),
            ..Env::default()
        }
    }

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse("c.yaml", text)
    }

    fn one_problem(text: &str) -> ManifestError {
        let err = parse(text).unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 1, "{err}");
        problems[0].clone()
    }

    fn resolve(file: ConfigFile, flags: ConfigFile, env: &Env) -> Config {
        resolve_in(file, flags, env).unwrap()
    }

    #[test]
    fn the_example_parses_and_documents_the_real_defaults() {
        let example = ConfigFile::parse(
            "config.example.yaml",
            include_str!("../manifests/config.example.yaml"),
        )
        .unwrap();
        assert_eq!(example.source.as_deref(), Some("config.example.yaml"));
        assert_eq!(example.concurrency, Some(8));
        for env in [user_env(), root_env()] {
            let from_example = resolve(example.clone(), ConfigFile::default(), &env);
            let defaults = resolve(ConfigFile::default(), ConfigFile::default(), &env);
            assert_eq!(from_example, defaults);
        }
        // The commented-out keys are valid too, and equal to the root defaults.
        let keys = [
            "docker:",
            "  host:",
            "dataDir:",
            "socket:",
            "pathsRoot:",
            "manifests:",
            "apiToken:",
        ];
        let uncommented: String = include_str!("../manifests/config.example.yaml")
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if keys.iter().any(|k| rest.starts_with(k)) => format!("{rest}\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        let full = ConfigFile::parse("full.yaml", &uncommented).unwrap();
        assert!(
            full.data_dir.is_some() && full.manifests.is_some() && full.api_token.is_some(),
            "{full:?}"
        );
        let mut expected = resolve(ConfigFile::default(), ConfigFile::default(), &root_env());
        expected.manifests = Some("/etc/reaper/manifests".into());
        expected.api_token = full.api_token.clone();
        assert_eq!(resolve(full, ConfigFile::default(), &root_env()), expected);
    }

    #[test]
    fn defaults_for_root() {
        let c = resolve(ConfigFile::default(), ConfigFile::default(), &root_env());
        assert_eq!(c.docker_host, DEFAULT_DOCKER_HOST);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/reaper"));
        assert_eq!(c.socket, PathBuf::from("/run/reaper/reaper.sock"));
        assert_eq!(c.paths_root, PathBuf::from("/var/lib/reaper/paths"));
        assert_eq!(
            c.metrics_listen,
            "127.0.0.1:9733".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(c.instance, "");
        assert_eq!(c.session_label_keys, vec!["session_id".to_string()]);
        assert_eq!(c.agent_name_prefix, "anvyl-agent-");
        assert_eq!(c.manifests, None);
        assert_eq!(c.orphan_grace_period, Duration::from_secs(300));
        assert_eq!(c.resync_interval, Duration::from_secs(30));
        assert_eq!(c.history_retention, Duration::from_secs(86_400));
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.docker_timeout, Duration::from_secs(30));
        assert!(!c.dry_run);
        assert_eq!(c.serial_exits, SerialExitsSetting::Auto);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.api_token, None);
    }

    #[test]
    fn defaults_for_a_user_follow_xdg() {
        let c = resolve(ConfigFile::default(), ConfigFile::default(), &user_env());
        assert_eq!(c.data_dir, PathBuf::from("/home/u/.local/state/reaper"));
        assert_eq!(c.socket, PathBuf::from("/run/user/1000/reaper/reaper.sock"));
        assert_eq!(
            c.paths_root,
            PathBuf::from("/home/u/.local/state/reaper/paths")
        );

        let env = Env {
            xdg_state_home: Some("/state".into()),
            xdg_runtime_dir: None,
            ..user_env()
        };
        let c = resolve(ConfigFile::default(), ConfigFile::default(), &env);
        assert_eq!(c.data_dir, PathBuf::from("/state/reaper"));
        assert_eq!(c.socket, PathBuf::from("/state/reaper/reaper.sock"));

        // The socket follows a data dir given on the command line when there is no runtime dir.
        let flags = ConfigFile {
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let c = resolve(
            ConfigFile::default(),
            flags,
            &Env {
                xdg_runtime_dir: None,
                ..user_env()
            },
        );
        assert_eq!(
            (c.socket, c.paths_root),
            (PathBuf::from("/d/reaper.sock"), PathBuf::from("/d/paths"))
        );

        let env = Env {
            docker_host: Some("tcp://proxy:2375".into()),
            ..user_env()
        };
        assert_eq!(
            resolve(ConfigFile::default(), ConfigFile::default(), &env).docker_host,
            "tcp://proxy:2375"
        );
    }

    #[test]
    fn no_home_means_a_clear_error_not_a_panic() {
        let env = Env {
            root: false,
            uid: 1000,
            ..Env::default()
        };
        let err = resolve_in(ConfigFile::default(), ConfigFile::default(), &env).unwrap_err();
        assert_eq!(err.problems()[0].field.as_deref(), Some("dataDir"));
        assert!(err.to_string().contains("HOME"), "{err}");
        let flags = ConfigFile {
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(ConfigFile::default(), flags, &env).socket,
            PathBuf::from("/d/reaper.sock")
        );
        // The real environment, whatever it is, must not panic.
        let _ = default_socket_path();
        let _ = Config::resolve(
            None,
            ConfigFile {
                data_dir: Some("/d".into()),
                ..Default::default()
            },
        )
        .unwrap();
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = parse(&format!(
            "{HEAD}docker: {{host: \"tcp://file:2375\"}}\nconcurrency: 4\ndryRun: true\nadoption:\n  sessionLabelKeys: [run_id]\n  agentNamePrefix: file-\nlogFormat: json\n"
        ))
        .unwrap();
        let flags = ConfigFile {
            concurrency: Some(2),
            adoption: Some(AdoptionFile {
                agent_name_prefix: Some("flag-".into()),
                ..Default::default()
            }),
            docker: Some(DockerFile { host: None }),
            ..Default::default()
        };
        let c = resolve(file, flags, &root_env());
        assert_eq!(c.concurrency, 2);
        assert!(c.dry_run);
        assert_eq!(c.docker_host, "tcp://file:2375");
        assert_eq!(c.session_label_keys, vec!["run_id".to_string()]);
        assert_eq!(c.agent_name_prefix, "flag-");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.resync_interval, DEFAULT_RESYNC_INTERVAL);
    }

    #[test]
    fn api_version_and_kind_are_required() {
        let e = one_problem("kind: Config\n");
        assert!(e.message.contains("missing `apiVersion: reaper/v1`"), "{e}");
        let e = one_problem("apiVersion: reaper/v0\nkind: Config\n");
        assert_eq!((e.line, e.field.as_deref()), (Some(1), Some("apiVersion")));
        let e = one_problem("apiVersion: reaper/v1\nconcurrency: 1\n");
        assert!(e.message.contains("kind: Config"), "{e}");
        let e = one_problem("apiVersion: reaper/v1\nkind: Session\nmetadata: {name: x}\n");
        assert_eq!((e.line, e.field.as_deref()), (Some(2), Some("kind")));
        assert!(e.message.contains("reaper apply"), "{e}");
        assert!(one_problem("").message.contains("empty"));
        assert!(one_problem("# nothing\n---\n").message.contains("empty"));
        assert!(one_problem("- a\n").message.contains("mapping"));
        let e = one_problem(&format!("{HEAD}---\n{HEAD}"));
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn unknown_keys_name_line_and_field() {
        let e = one_problem(&format!("{HEAD}concurency: 4\n"));
        assert_eq!(
            (e.line, e.column, e.field.as_deref()),
            (Some(3), Some(1), Some("concurency"))
        );
        assert!(
            e.to_string()
                .starts_with("c.yaml: line 3 column 1: concurency: unknown field `concurency`"),
            "{e}"
        );
        let e = one_problem(&format!(
            "{HEAD}adoption:\n  sessionLabelKeys: []\n  agentPrefix: x\n"
        ));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(5), Some("adoption.agentPrefix"))
        );
        let e = one_problem(&format!("{HEAD}docker: {{host: x, tls: true}}\n"));
        assert_eq!(e.field.as_deref(), Some("docker.tls"));
    }

    #[test]
    fn wrong_types_and_bad_values_name_line_and_field() {
        for (text, line, field) in [
            ("concurrency: many\n", 3, "concurrency"),
            ("concurrency: -1\n", 3, "concurrency"),
            ("dryRun: perhaps\n", 3, "dryRun"),
            ("metricsListen: localhost\n", 3, "metricsListen"),
            ("logFormat: xml\n", 3, "logFormat"),
            ("\nresyncInterval: 30 seconds\n", 4, "resyncInterval"),
            (
                "adoption:\n  sessionLabelKeys: session_id\n",
                4,
                "adoption.sessionLabelKeys",
            ),
        ] {
            let e = one_problem(&format!("{HEAD}{text}"));
            assert_eq!(
                (e.line, e.field.as_deref()),
                (Some(line), Some(field)),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn semantic_checks_name_line_and_field() {
        for (text, line, field, why) in [
            ("concurrency: 0\n", 3, "concurrency", "1 to 64"),
            ("concurrency: 65\n", 3, "concurrency", "1 to 64"),
            ("resyncInterval: 0s\n", 3, "resyncInterval", "more than 0s"),
            ("dockerTimeout: 0ms\n", 3, "dockerTimeout", "more than 0s"),
            ("instance: \"a\\nb\"\n", 3, "instance", "control characters"),
            (
                "adoption:\n  sessionLabelKeys: [ok, \"a=b\"]\n",
                4,
                "adoption.sessionLabelKeys",
                "'='",
            ),
            (
                "adoption:\n  agentNamePrefix: \"\"\n",
                4,
                "adoption.agentNamePrefix",
                "empty",
            ),
            (
                "adoption:\n  agentNamePrefix: a/b\n",
                4,
                "adoption.agentNamePrefix",
                "'/'",
            ),
            ("docker:\n  host: \"\"\n", 4, "docker.host", "non-empty"),
            ("dataDir: \"\"\n", 3, "dataDir", "empty"),
            ("apiToken: \"a b\"\n", 3, "apiToken", "whitespace"),
        ] {
            let e = one_problem(&format!("{HEAD}{text}"));
            assert_eq!(
                (e.line, e.field.as_deref()),
                (Some(line), Some(field)),
                "{text}: {e}"
            );
            assert!(e.message.contains(why), "{text}: {e}");
        }
        let err = parse(&format!("{HEAD}concurrency: 0\ndockerTimeout: 0s\n")).unwrap_err();
        assert_eq!(err.problems().len(), 2, "all problems are reported: {err}");
    }

    #[test]
    fn bad_flags_are_reported_as_command_line() {
        let file = parse(&format!("{HEAD}concurrency: 4\n")).unwrap();
        let flags = ConfigFile {
            concurrency: Some(0),
            ..Default::default()
        };
        let err = resolve_in(file.clone(), flags, &root_env()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "command line: concurrency: 0 is out of range: must be 1 to 64"
        );
        // A bad value in a file built by hand is attributed to that file.
        let bad_file = ConfigFile {
            resync_interval: Some(Duration::default()),
            ..file
        };
        let err = resolve_in(bad_file, ConfigFile::default(), &root_env()).unwrap_err();
        assert!(
            err.to_string().starts_with("c.yaml: resyncInterval:"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_keys_and_hostile_input_are_rejected() {
        let e = one_problem(&format!("{HEAD}concurrency: 4\nconcurrency: 5\n"));
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("duplicate key"), "{e}");
        let e = one_problem(&format!(
            "{HEAD}adoption: {{sessionLabelKeys: [a], sessionLabelKeys: [b]}}\n"
        ));
        assert!(e.message.contains("duplicate key"), "{e}");
        let e = one_problem(&format!(
            "{HEAD}instance: {}{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        ));
        assert!(e.message.contains("nested"), "{e}");
        let e = one_problem(&format!("{HEAD}instance: a\u{0}\n"));
        assert_eq!((e.line, e.column), (Some(3), Some(12)));
        assert!(one_problem(&"#".repeat(MAX_DOCUMENT_BYTES + 1))
            .message
            .contains("1 MiB"));
    }

    #[test]
    fn load_reads_files_and_reports_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, format!("{HEAD}dryRun: true\n")).unwrap();
        let file = ConfigFile::load(&good).unwrap();
        assert_eq!(file.dry_run, Some(true));
        assert_eq!(
            file.source.as_deref(),
            Some(good.display().to_string().as_str())
        );

        let missing = dir.path().join("missing.yaml");
        assert!(matches!(
            ConfigFile::load(&missing),
            Err(ConfigError::Read { .. })
        ));

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, b"apiVersion: reaper/v1\nkind: Con\xfffig\n").unwrap();
        let err = ConfigFile::load(&bad).unwrap_err();
        assert!(
            err.to_string().contains("line 2 column 10: invalid UTF-8"),
            "{err}"
        );

        let big = dir.path().join("big.yaml");
        std::fs::write(&big, "#".repeat(MAX_DOCUMENT_BYTES + 10)).unwrap();
        assert!(ConfigFile::load(&big)
            .unwrap_err()
            .to_string()
            .contains("larger than 1 MiB"));

        let unknown = dir.path().join("unknown.yaml");
        std::fs::write(&unknown, format!("{HEAD}bogus: 1\n")).unwrap();
        let err = ConfigFile::load(&unknown).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: line 3 column 1: bogus:", unknown.display())),
            "{err}"
        );
    }

    #[test]
    fn log_format_parses_for_clap_and_serde() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("TEXT".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml"
            .parse::<LogFormat>()
            .unwrap_err()
            .contains("text or json"));
        assert_eq!(LogFormat::Json.to_string(), "json");
        assert_eq!(serde_json::to_string(&LogFormat::Text).unwrap(), "\"text\"");
    }

    #[test]
    fn the_api_token_never_leaks() {
        let file = parse(&format!("{HEAD}apiToken: s3cr3t-token\n")).unwrap();
        let c = resolve(file, ConfigFile::default(), &root_env());
        assert_eq!(
            c.api_token.as_ref().map(Secret::expose),
            Some("s3cr3t-token")
        );
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains("s3cr3t") && json.contains("\"dataDir\""),
            "{json}"
        );
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
