//! Reading a config file: the hardened YAML reader (as for manifests), one `kind: Config`
//! document, then the checks that every layer, file or flags, must pass.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{
    ConfigError, ConfigFile, EtcdFile, Source, StoreBackend, API_TOKEN_ENV, DEFAULT_DOCKER_HOST,
    MAX_CONCURRENCY,
};
use crate::core::eviction::DiskPressureConfig;
use crate::core::manifest::validate_name_prefix;
use crate::core::model::{validate_label, Duration, API_VERSION};
use crate::core::yaml::{
    check_and_walk, decode_utf8, documents, locate, typed, ManifestError, ManifestErrors, Problem,
    Shape, MAX_DOCUMENT_BYTES,
};

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
        file.source = Some(Source::new(file_name));
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
    pub(super) fn check(&self) -> Vec<(&'static [&'static str], String)> {
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
        if let Some(disk) = &self.disk_pressure {
            // Either one alone is checked against the other's default: that is what it runs with.
            if disk.high_watermark.is_some() || disk.low_watermark.is_some() {
                let defaults = DiskPressureConfig::default();
                let high = disk.high_watermark.unwrap_or(defaults.high_watermark);
                let low = disk.low_watermark.unwrap_or(defaults.low_watermark);
                if low > high {
                    // Named where it was set: the one given alone is the one to fix.
                    let key: &'static [&'static str] = match disk.low_watermark {
                        Some(_) => &["diskPressure", "lowWatermark"],
                        None => &["diskPressure", "highWatermark"],
                    };
                    out.push((
                        key,
                        format!("lowWatermark ({low}) is above highWatermark ({high}): eviction stops below the low watermark, so it must be at most the high one"),
                    ));
                }
            }
            for pattern in disk.keep.iter().flatten() {
                if pattern.is_empty() || pattern.chars().any(char::is_control) {
                    out.push((
                        &["diskPressure", "keep"],
                        format!("invalid pattern {pattern:?}: must be a non-empty image reference pattern such as \"anvyl-agent-base:*\""),
                    ));
                }
            }
        }
        if self.api_listen.is_some() && self.api_token.is_none() {
            out.push((
                &["apiListen"],
                format!("a TCP API listener needs apiToken (or {API_TOKEN_ENV}): requests must carry it"),
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
        if let Some(name) = &self.host_name {
            if let Err(e) = crate::store::hosts::check_host_name(name) {
                out.push((&["hostName"], e));
            }
        }
        if let Some(store) = &self.store {
            let etcd = store.etcd.clone().unwrap_or_default();
            out.extend(check_etcd(&etcd, store.backend == Some(StoreBackend::Etcd)));
        }
        out
    }
}

/// `store.etcd`: TLS files all or none, URLs that match them, a usable prefix, and endpoints
/// when etcd is the backend.
fn check_etcd(etcd: &EtcdFile, in_use: bool) -> Vec<(&'static [&'static str], String)> {
    let mut out: Vec<(&'static [&'static str], String)> = Vec::new();
    let files: [(&'static [&'static str], &Option<std::path::PathBuf>); 3] = [
        (&["store", "etcd", "caFile"], &etcd.ca_file),
        (&["store", "etcd", "certFile"], &etcd.cert_file),
        (&["store", "etcd", "keyFile"], &etcd.key_file),
    ];
    let set = files.iter().filter(|(_, f)| f.is_some()).count();
    if set != 0 && set != files.len() {
        for (key, _) in files.iter().filter(|(_, f)| f.is_none()) {
            out.push((
                *key,
                "caFile, certFile and keyFile are used together (mTLS): set all three, or none"
                    .into(),
            ));
        }
    }
    for (key, file) in files {
        if file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            out.push((key, "must not be empty".into()));
        }
    }
    let tls = set == files.len();
    let endpoints = etcd.endpoints.as_deref().unwrap_or_default();
    for url in endpoints {
        let scheme_ok = if tls {
            url.starts_with("https://")
        } else {
            url.starts_with("http://")
        };
        let malformed = url.chars().any(|c| c.is_whitespace() || c.is_control())
            || url
                .split_once("://")
                .is_none_or(|(_, rest)| rest.is_empty());
        if malformed || !scheme_ok {
            let expected = if tls {
                "https://HOST:PORT (caFile, certFile and keyFile are set)"
            } else {
                "http://HOST:PORT (https:// needs caFile, certFile and keyFile)"
            };
            out.push((
                &["store", "etcd", "endpoints"],
                format!("invalid etcd endpoint {url:?}: expected {expected}"),
            ));
        }
    }
    if in_use && endpoints.is_empty() {
        out.push((
            &["store", "etcd", "endpoints"],
            "store.backend is etcd: list the etcd members' client URLs".into(),
        ));
    }
    if let Some(prefix) = &etcd.prefix {
        if !prefix.starts_with('/')
            || prefix.trim_end_matches('/').is_empty()
            || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            out.push((
                &["store", "etcd", "prefix"],
                format!(
                    "invalid prefix {prefix:?}: expected a key path such as /reaper, not / alone"
                ),
            ));
        }
    }
    out
}
