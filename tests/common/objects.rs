//! Object builders.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reaper::core::inventory::repository_of;
use reaper::core::reference::canonical_repository;
use serde_json::Value;

use super::*;

/// A container to create: `Container::new("x").label("k", "v").running().create()`.
/// It runs the busybox test image with `--init` and no networking, `sleep 3600`.
#[derive(Clone, Debug)]
pub struct Container {
    name: String,
    labels: Vec<(String, String)>,
    image: String,
    running: bool,
    init: bool,
    network: Option<String>,
    volume: Option<String>,
}

impl Container {
    pub fn new(name: &str) -> Container {
        Container {
            name: name.to_string(),
            labels: Vec::new(),
            image: TEST_IMAGE.to_string(),
            running: true,
            init: true,
            network: None,
            volume: None,
        }
    }
    pub fn label(mut self, key: &str, value: &str) -> Container {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }
    pub fn labels(mut self, labels: &[(&str, &str)]) -> Container {
        for (k, v) in labels {
            self = self.label(k, v);
        }
        self
    }
    /// Runs from this image instead of the test image (it must be runnable: see [`image`]).
    pub fn image(mut self, reference: &str) -> Container {
        self.image = reference.to_string();
        self
    }
    pub fn running(mut self) -> Container {
        self.running = true;
        self
    }
    /// Created but never started: its "finished at" is the zero time (docker-gc #127).
    pub fn created(mut self) -> Container {
        self.running = false;
        self
    }
    /// Without `--init`: busybox `sleep` as PID 1 ignores SIGTERM, so a graceful stop waits its
    /// whole timeout before the engine kills it.
    pub fn ignoring_sigterm(mut self) -> Container {
        self.init = false;
        self
    }
    /// Attaches it to an (internal) network instead of none.
    pub fn network(mut self, network: &str) -> Container {
        self.network = Some(network.to_string());
        self
    }
    /// Mounts a named volume at /data.
    pub fn volume(mut self, volume: &str) -> Container {
        self.volume = Some(volume.to_string());
        self
    }
    /// Creates it (and starts it unless `created()`); returns the full container ID.
    pub fn create(self) -> String {
        let mut args: Vec<String> = vec![
            "create".into(),
            "--pull".into(),
            "never".into(),
            "--name".into(),
            self.name.clone(),
            "--network".into(),
            self.network.clone().unwrap_or_else(|| "none".into()),
        ];
        if self.init {
            args.push("--init".into());
        }
        for (k, v) in &self.labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        if let Some(v) = &self.volume {
            args.push("-v".into());
            args.push(format!("{v}:/data"));
        }
        args.extend([self.image.clone(), "sleep".into(), "3600".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = docker_ok(&args);
        if self.running {
            docker_ok(&["start", &id]);
        }
        id
    }
}

pub(super) fn label_args(labels: &[(&str, &str)]) -> Vec<String> {
    labels
        .iter()
        .flat_map(|(k, v)| ["--label".to_string(), format!("{k}={v}")])
        .collect()
}

/// Creates an internal network (never any outside connectivity); returns its ID.
pub fn network(name: &str, labels: &[(&str, &str)]) -> String {
    let mut args = vec!["network".to_string(), "create".into(), "--internal".into()];
    args.extend(label_args(labels));
    args.push(name.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_ok(&args)
}

/// Creates a named volume; returns its name (a volume's ID).
pub fn volume(name: &str, labels: &[(&str, &str)]) -> String {
    let mut args = vec!["volume".to_string(), "create".into()];
    args.extend(label_args(labels));
    args.push(name.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_ok(&args)
}

/// Creates a runnable image `reference` with these labels: a commit of an unlabelled,
/// never-started container of the test image, so it has its own ID (removing it can never
/// take the test image with it). Returns the image ID.
///
/// On Podman the commit goes through `podman --url` (the docker CLI's commit sends no body,
/// which Podman 4.3 refuses), so Podman names it as its own builds: `localhost/<reference>`.
pub fn image(reference: &str, labels: &[(&str, &str)]) -> String {
    let scratch = docker_ok(&["create", "--pull", "never", "--network", "none", TEST_IMAGE]);
    let mut args = vec!["commit".to_string()];
    if engine() == Engine::Podman {
        args.push("--quiet".into());
    }
    for (k, v) in labels {
        args.push("--change".into());
        args.push(format!("LABEL {k:?}={v:?}"));
    }
    args.push(scratch.clone());
    args.push(reference.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = match engine() {
        Engine::Docker => docker(&args),
        Engine::Podman => podman_remote(&args),
    };
    remove_quietly(Kind::Container, &scratch);
    assert!(
        out.status.success(),
        "docker commit to {reference} failed: {}",
        stderr_of(&out)
    );
    // Podman prints the bare hex, which its compat API takes for a name once the image is
    // gone (a 500, not "no such image"); with the prefix, as Docker prints it, it is an ID.
    let id = stdout_of(&out).trim().to_string();
    if id.starts_with("sha256:") {
        id
    } else {
        format!("sha256:{id}")
    }
}

/// The labels on an object, as docker reports them.
pub fn labels_of(kind: Kind, id: &str) -> serde_json::Map<String, Value> {
    let format = match kind {
        Kind::Container | Kind::Image => "{{json .Config.Labels}}",
        Kind::Network | Kind::Volume => "{{json .Labels}}",
    };
    let raw = docker_ok(&["inspect", "--type", kind.as_str(), "--format", format, id]);
    match serde_json::from_str::<Value>(&raw) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// A name unique within this test run: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// One Docker object a test expects to survive or to vanish.
pub type Obj = (Kind, String);

/// Which of `objs` exist, with one `docker inspect` per kind (so a poll over many objects
/// stays cheap and measured times stay close to the truth).
pub fn existence(objs: &[Obj]) -> Vec<bool> {
    let mut result = vec![false; objs.len()];
    for kind in [Kind::Container, Kind::Image, Kind::Network, Kind::Volume] {
        let idx: Vec<usize> = (0..objs.len()).filter(|&i| objs[i].0 == kind).collect();
        if idx.is_empty() {
            continue;
        }
        let mut args = vec!["inspect", "--type", kind.as_str()];
        args.extend(idx.iter().map(|&i| objs[i].1.as_str()));
        let out = docker(&args);
        for line in stderr_of(&out).lines().filter(|l| !l.trim().is_empty()) {
            let l = line.to_lowercase();
            // Podman says "image not known", also as a 500 while the image is being removed.
            assert!(
                l.contains("no such") || l.contains("not found") || l.contains("not known"),
                "docker inspect --type {} failed: {line}",
                kind.as_str()
            );
        }
        let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for &i in &idx {
            let want = objs[i].1.as_str();
            result[i] = found.iter().any(|o| object_is(o, want));
        }
    }
    result
}

pub(super) fn object_is(o: &Value, want: &str) -> bool {
    let id = o["Id"].as_str().unwrap_or("");
    let name = o["Name"].as_str().unwrap_or("");
    let tags = o["RepoTags"].as_array().cloned().unwrap_or_default();
    id == want
        || id.strip_prefix("sha256:") == Some(want)
        || (want.len() >= 12
            && id
                .trim_start_matches("sha256:")
                .starts_with(want.trim_start_matches("sha256:")))
        || name == want
        || name.strip_prefix('/') == Some(want)
        || tags
            .iter()
            .any(|t| t.as_str().is_some_and(|t| same_reference(t, want)))
}

/// Whether two references name the same image, whichever way the engine spells them (Podman
/// reports `reaper-test/busybox:1` as `docker.io/reaper-test/busybox:1`).
pub fn same_reference(a: &str, b: &str) -> bool {
    let canonical = |r: &str| {
        let repository = repository_of(r);
        format!(
            "{}{}",
            canonical_repository(repository),
            &r[repository.len()..]
        )
    };
    canonical(a) == canonical(b)
}

pub(super) fn describe(objs: &[Obj], pick: impl Fn(bool) -> bool) -> Vec<String> {
    objs.iter()
        .zip(existence(objs))
        .filter(|(_, e)| pick(*e))
        .map(|((k, id), _)| format!("{} {id}", k.as_str()))
        .collect()
}

/// The objects of `objs` that do not exist, described for a failure message.
pub fn missing(objs: &[Obj]) -> Vec<String> {
    describe(objs, |e| !e)
}

/// The objects of `objs` that still exist, described for a failure message.
pub fn present(objs: &[Obj]) -> Vec<String> {
    describe(objs, |e| e)
}

pub fn all_exist(objs: &[Obj]) -> bool {
    existence(objs).into_iter().all(|e| e)
}

pub fn all_gone(objs: &[Obj]) -> bool {
    existence(objs).into_iter().all(|e| !e)
}

/// Polls until every object is gone; returns, per object, when it was first seen gone
/// (measured from `since`). Panics listing the survivors after `timeout`.
pub fn gone_times(objs: &[Obj], since: Instant, timeout: Duration) -> Vec<Duration> {
    let mut gone: Vec<Option<Duration>> = vec![None; objs.len()];
    loop {
        let now = existence(objs);
        let at = since.elapsed();
        for (g, e) in gone.iter_mut().zip(now) {
            if g.is_none() && !e {
                *g = Some(at);
            }
        }
        if gone.iter().all(Option::is_some) {
            return gone.into_iter().flatten().collect();
        }
        if since.elapsed() > timeout {
            let left: Vec<String> = objs
                .iter()
                .zip(&gone)
                .filter(|(_, g)| g.is_none())
                .map(|((k, id), _)| format!("{} {id}", k.as_str()))
                .collect();
            panic!(
                "still present {:?} after start (limit {timeout:?}): {}",
                since.elapsed(),
                left.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
