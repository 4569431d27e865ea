//! Shared helpers for the end-to-end tests: the private Docker engine, object builders that
//! read like sentences, bounded waits, the real `reaper` binary, and bystanders that must survive.
//!
//! Every test runs against the private dockerd that `./scripts/test` starts (tests/e2e_podman.rs
//! against its private Podman service, see [`use_podman`]); nothing here ever talks to the
//! user's own Docker daemon or Podman. Every wait and every subprocess is bounded.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reaper::core::inventory::repository_of;
use reaper::core::reference::canonical_repository;
use serde_json::Value;

pub mod proxy;
pub mod wedge;

/// The image every test container runs: a static busybox, built by `scripts/dockerd image`.
pub const TEST_IMAGE: &str = "reaper-test/busybox:1";
/// Upper bound for one docker CLI call.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for one `reaper` client call.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to answer `reaper status` after it is spawned.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The instance every test daemon runs as, so objects of "someone-else" are bystanders.
pub const INSTANCE: &str = "e2e";

// ---------------------------------------------------------------------------------------------
// Processes with deadlines
// ---------------------------------------------------------------------------------------------

/// Runs `cmd` to completion, feeding `stdin`, killing it and panicking after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    try_run_with_timeout(cmd, stdin, timeout).unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

/// Like [`run_with_timeout`], but a timeout (the child killed) is `Err` with the message.
pub fn try_run_with_timeout(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        // A writer thread, so a child that does not read cannot block us past the deadline.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out = reader(child.stdout.take().expect("stdout is piped"));
    let err = reader(child.stderr.take().expect("stderr is piped"));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} did not finish within {timeout:?}; killed it"
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for {shown}: {e}"),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The private Docker engine
// ---------------------------------------------------------------------------------------------

/// The private engines `./scripts/test` starts. A test binary talks to one of them: dockerd,
/// unless it calls [`use_podman`] before anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();

/// The engine this test binary talks to (dockerd unless [`use_podman`] came first).
pub fn engine() -> Engine {
    *ENGINE.get_or_init(|| Engine::Docker)
}

/// Points every helper (the docker CLI, [`Reaper`]) of this test binary at the private Podman
/// service, through its Docker-compatible API. Call it first in every test of the binary.
/// Panics when the service is missing: under the suite that is a failure, never a skip.
pub fn use_podman() {
    let chosen = *ENGINE.get_or_init(|| Engine::Podman);
    assert_eq!(
        chosen,
        Engine::Podman,
        "this test binary already talks to dockerd"
    );
    docker_host();
}

/// The private engine's address. Panics (always, not only in CI) when the tests were not
/// started through `./scripts/test`: a missing engine is a failure, never a skip.
pub fn docker_host() -> String {
    let (var, what) = match engine() {
        Engine::Docker => ("REAPER_TEST_DOCKER_HOST", "the private Docker engine"),
        Engine::Podman => ("REAPER_TEST_PODMAN_HOST", "the private Podman service"),
    };
    match std::env::var(var) {
        Ok(h) if !h.trim().is_empty() => h,
        _ => panic!(
            "{var} is not set: these tests need {what}; run them through ./scripts/test (it \
             starts one and never touches your own Docker daemon or Podman)"
        ),
    }
}

/// Podman's own client against the private Podman service, for what the docker CLI cannot do
/// there, bounded by [`DOCKER_TIMEOUT`].
pub fn podman_remote(args: &[&str]) -> Output {
    assert_eq!(engine(), Engine::Podman, "podman_remote needs use_podman()");
    run_with_timeout(
        Command::new("podman")
            .arg("--url")
            .arg(docker_host())
            .args(args),
        None,
        DOCKER_TIMEOUT,
    )
}

fn docker_command() -> Command {
    let host = docker_host();
    let mut cmd = Command::new("docker");
    cmd.arg("-H")
        .arg(&host)
        .env("DOCKER_HOST", &host)
        .env_remove("DOCKER_CONTEXT");
    cmd
}

/// The docker CLI against the private engine, bounded by [`DOCKER_TIMEOUT`]. A timeout while
/// the engine still answers `/_ping` fails as a wedged engine, with a goroutine dump.
pub fn docker(args: &[&str]) -> Output {
    run_docker(args, None)
}

/// Like [`docker`], with bytes on stdin (e.g. a tar for `docker import`).
pub fn docker_stdin(args: &[&str], input: &[u8]) -> Output {
    run_docker(args, Some(input))
}

fn run_docker(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let shown = format!("docker {}", args.join(" "));
    if let Some(refused) = wedge::refuse_if_wedged(&shown) {
        return refused;
    }
    try_run_with_timeout(docker_command().args(args), stdin, DOCKER_TIMEOUT)
        .unwrap_or_else(|timed_out| wedge::docker_timed_out(&shown, &timed_out))
}

/// Runs docker and returns its trimmed stdout; panics with its stderr on failure.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed ({}): {}",
        args.join(" "),
        out.status,
        stderr_of(&out).trim()
    );
    stdout_of(&out).trim().to_string()
}

/// Stops and restarts the private engine keeping its data (for "Docker restarted" tests).
pub fn restart_docker_engine() {
    stop_docker_engine();
    start_docker_engine();
}

pub fn stop_docker_engine() {
    dockerd_script("stop");
}

pub fn start_docker_engine() {
    dockerd_script("start");
}

fn dockerd_script(verb: &str) {
    let dir = std::env::var("REAPER_TEST_DOCKER_DIR").unwrap_or_else(|_| {
        panic!("REAPER_TEST_DOCKER_DIR is not set; run through ./scripts/test")
    });
    let script = std::env::var("REAPER_TEST_DOCKERD_SCRIPT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dockerd").to_string());
    let out = run_with_timeout(
        Command::new(&script).arg(verb).arg(&dir),
        None,
        Duration::from_secs(90),
    );
    assert!(
        out.status.success(),
        "{script} {verb} {dir} failed: {}",
        stderr_of(&out)
    );
}

/// The four kinds of Docker object reaper manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Container,
    Image,
    Network,
    Volume,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Image => "image",
            Kind::Network => "network",
            Kind::Volume => "volume",
        }
    }
}

/// Whether the object exists. Only a clear "no such object" counts as gone: any other error
/// (e.g. the engine not answering) panics, so a broken engine never passes for a clean one.
pub fn exists(kind: Kind, id_or_name: &str) -> bool {
    let out = docker(&["inspect", "--type", kind.as_str(), id_or_name]);
    if out.status.success() {
        return true;
    }
    let err = stderr_of(&out).to_lowercase();
    if err.contains("no such") || err.contains("not found") {
        return false;
    }
    panic!(
        "docker inspect --type {} {id_or_name} failed: {err}",
        kind.as_str()
    );
}

/// Whether a container is running.
pub fn is_running(id_or_name: &str) -> bool {
    let out = docker(&[
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.State.Running}}",
        id_or_name,
    ]);
    out.status.success() && stdout_of(&out).trim() == "true"
}

/// Removes an object, ignoring errors (for teardown).
pub fn remove_quietly(kind: Kind, id_or_name: &str) {
    let _ = match kind {
        Kind::Container => docker(&["rm", "-f", "-v", id_or_name]),
        Kind::Image => docker(&["rmi", "-f", id_or_name]),
        Kind::Network => docker(&["network", "rm", id_or_name]),
        Kind::Volume => docker(&["volume", "rm", "-f", id_or_name]),
    };
}

/// Removes every container, network, volume and image whose name contains `pattern`
/// (best effort), so a failed test does not leak into the next one. One at a time, on
/// purpose: force-removing running containers in parallel overlaps their exits, which can
/// deadlock Debian's dockerd 20.10.24 (see `wedge`).
pub fn remove_named_like(pattern: &str) {
    let filter = format!("name={pattern}");
    for id in lines(&docker(&["ps", "-aq", "--filter", &filter])) {
        remove_quietly(Kind::Container, &id);
    }
    for id in lines(&docker(&["network", "ls", "-q", "--filter", &filter])) {
        remove_quietly(Kind::Network, &id);
    }
    for id in lines(&docker(&["volume", "ls", "-q", "--filter", &filter])) {
        remove_quietly(Kind::Volume, &id);
    }
    let images = docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for reference in lines(&images) {
        if reference.contains(pattern) {
            remove_quietly(Kind::Image, &reference);
        }
    }
}

fn lines(out: &Output) -> Vec<String> {
    stdout_of(out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Removes everything named like any of its patterns when created and again when dropped
/// (also on panic). Every object a test creates should carry one of these patterns.
pub struct Scope {
    patterns: Vec<String>,
}

impl Scope {
    pub fn new(patterns: &[&str]) -> Scope {
        let scope = Scope {
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
        };
        scope.clear();
        scope
    }
    fn clear(&self) {
        for p in &self.patterns {
            remove_named_like(p);
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Object builders
// ---------------------------------------------------------------------------------------------

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

fn label_args(labels: &[(&str, &str)]) -> Vec<String> {
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

fn object_is(o: &Value, want: &str) -> bool {
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

fn describe(objs: &[Obj], pick: impl Fn(bool) -> bool) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------
// Bounded waits
// ---------------------------------------------------------------------------------------------

/// Polls `cond` every 25 ms until it holds; returns how long that took. Panics naming `what`
/// and the elapsed time when it does not hold within `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    match try_wait_until(timeout, &mut cond) {
        Ok(elapsed) => elapsed,
        Err(elapsed) => {
            panic!("timed out after {elapsed:?} (limit {timeout:?}) waiting until {what}")
        }
    }
}

/// Like [`wait_until`] but returns `Err(elapsed)` instead of panicking.
pub fn try_wait_until(
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration, Duration> {
    let started = Instant::now();
    loop {
        if cond() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return Err(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Asserts that `cond` keeps holding for the whole of `period` (checked every 50 ms).
pub fn assert_holds_for(what: &str, period: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < period {
        assert!(
            cond(),
            "{what} stopped holding after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        cond(),
        "{what} stopped holding after {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// The reaper daemon under test
// ---------------------------------------------------------------------------------------------

/// A `reaper serve` child with its own data dir, socket, paths root and metrics port.
/// Dropping it kills the daemon; if the test is panicking, the daemon's log is printed.
pub struct Reaper {
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    metrics_port: u16,
    /// Set once a panic message carried the log, so `Drop` does not print it twice.
    log_shown: std::cell::Cell<bool>,
}

impl Reaper {
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_reaper")
    }

    /// Creates the directories and picks the port, without starting anything.
    pub fn prepare(extra: &[&str]) -> Reaper {
        let dir = tempfile::Builder::new()
            .prefix("re2e")
            .tempdir_in("/tmp")
            .expect("temp dir for reaper");
        std::fs::create_dir_all(dir.path().join("paths")).expect("paths root");
        Reaper {
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            metrics_port: free_port(),
            log_shown: std::cell::Cell::new(false),
        }
    }

    /// Starts `reaper serve` and waits until `reaper status` answers.
    pub fn start(extra: &[&str]) -> Reaper {
        let mut r = Reaper::prepare(extra);
        r.spawn();
        r.wait_ready();
        r
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir().join("reaper.sock")
    }
    pub fn paths_root(&self) -> PathBuf {
        self.dir().join("paths")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("reaper.log")
    }
    pub fn metrics_addr(&self) -> String {
        format!("127.0.0.1:{}", self.metrics_port)
    }

    /// The full `serve` command line: the test daemon talks to the private engine and runs as
    /// instance [`INSTANCE`], unless `extra` names another host (e.g. a
    /// [`proxy::CountingProxy`]) or instance.
    pub fn serve_args(&self) -> Vec<String> {
        let names = |flag: &str| {
            self.extra
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--socket".into(),
            self.socket().display().to_string(),
            "--metrics-listen".into(),
            self.metrics_addr(),
            "--paths-root".into(),
            self.paths_root().display().to_string(),
        ];
        if !names("--docker-host") {
            args.extend(["--docker-host".into(), docker_host()]);
        }
        if !names("--instance") {
            args.extend(["--instance".into(), INSTANCE.into()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Spawns the daemon (appending to its log file) without waiting for it.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "reaper is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("reaper log file");
        let log2 = log.try_clone().expect("reaper log file");
        let child = Command::new(Self::bin())
            .args(self.serve_args())
            .env("DOCKER_HOST", docker_host())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("REAPER_SOCKET")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", Self::bin()));
        self.child = Some(child);
    }

    /// Waits (bounded) until `reaper status` exits 0; panics with the log if the daemon
    /// exits or does not answer in time.
    pub fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "reaper serve exited with {status} before answering `reaper status`\n{}",
                    self.log_tail()
                );
            }
            let out = self.cli(&["status"]);
            // The socket file must exist too: a `status` that "succeeds" without a daemon
            // behind it is not readiness.
            if out.status.success() && self.socket().exists() && self.try_exit_status().is_none() {
                return;
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!(
                    "reaper serve did not answer `reaper status` within {READY_TIMEOUT:?} \
                     (last stderr: {})\n{}",
                    stderr_of(&out).trim(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(Self::bin());
        cmd.arg("--socket")
            .arg(self.socket())
            .args(args)
            .env("REAPER_SOCKET", self.socket())
            .env("DOCKER_HOST", docker_host());
        cmd
    }

    /// A client call to this daemon (no TTY on stdin), bounded by [`CLI_TIMEOUT`].
    pub fn cli(&self, args: &[&str]) -> Output {
        run_with_timeout(&mut self.cli_command(args), None, CLI_TIMEOUT)
    }

    /// A client call with `input` on stdin (e.g. `apply -f -`).
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> Output {
        run_with_timeout(
            &mut self.cli_command(args),
            Some(input.as_bytes()),
            CLI_TIMEOUT,
        )
    }

    /// A client call that must succeed; returns stdout. Panics with stderr and the log.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "reaper {} failed ({}): {}\n{}",
            args.join(" "),
            out.status,
            stderr_of(&out).trim(),
            self.log_tail()
        );
        stdout_of(&out)
    }

    /// Applies a manifest file; returns stdout.
    pub fn apply_file(&self, path: &Path) -> String {
        self.cli_ok(&["apply", "-f", &path.display().to_string()])
    }

    /// Applies manifest text through stdin (`apply -f -`); returns stdout.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.cli_stdin(&["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "reaper apply -f - failed ({}): {}\n--- input ---\n{yaml}\n{}",
            out.status,
            stderr_of(&out).trim(),
            self.log_tail()
        );
        stdout_of(&out)
    }

    /// `get sessions NAME -o json`, parsed.
    pub fn session(&self, name: &str) -> Value {
        self.json(&["get", "sessions", name, "-o", "json"])
    }

    /// `get agents NAME -o json`, parsed.
    pub fn agent(&self, name: &str) -> Value {
        self.json(&["get", "agents", name, "-o", "json"])
    }

    /// Runs a client verb that prints JSON and parses it.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.cli_ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "reaper {} printed invalid JSON ({e}):\n{out}",
                args.join(" ")
            )
        })
    }

    /// The phase of a session or agent record (`status.phase`), or "" if the call fails.
    pub fn phase(&self, kind: &str, name: &str) -> String {
        let out = self.cli(&["get", kind, name, "-o", "json"]);
        if !out.status.success() {
            return String::new();
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["status"]["phase"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// [`wait_until`], but a timeout also prints the daemon's log.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl FnMut() -> bool,
    ) -> Duration {
        match try_wait_until(timeout, cond) {
            Ok(elapsed) => elapsed,
            Err(elapsed) => panic!(
                "timed out after {elapsed:?} (limit {timeout:?}) waiting until {what}\n{}",
                self.log_tail()
            ),
        }
    }

    /// The daemon's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last 60 lines of the log, framed for a panic message.
    pub fn log_tail(&self) -> String {
        self.log_shown.set(true);
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!(
            "--- reaper log ({}) tail ---\n{tail}\n--- end of reaper log ---",
            self.log_path().display()
        )
    }

    /// Sends SIGTERM and waits (bounded) for a graceful exit; SIGKILL after 15 s.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| {
            let log = self.log_tail();
            self.kill9();
            panic!("reaper did not exit within 15s of SIGTERM; killed it\n{log}")
        })
    }

    /// SIGKILL, as a crash would; waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the daemon to exit by itself (e.g. `--once`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit_status() {
                self.child = None;
                return Some(status);
            }
            if self.child.is_none() || started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops (SIGTERM) and starts again on the same data dir, socket and paths root.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "reaper exited with {status} on SIGTERM\n{}",
            self.log_tail()
        );
        self.spawn();
        self.wait_ready();
    }

    /// Changes the extra `serve` arguments for the next spawn.
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = run_with_timeout(
                Command::new("kill")
                    .arg(format!("-{sig}"))
                    .arg(pid.to_string()),
                None,
                Duration::from_secs(5),
            );
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.log_shown.get() {
            eprintln!("{}", self.log_tail());
        }
        self.kill9();
    }
}

/// A free loopback port (bound then released; the small race is acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Writes `text` to a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create parent dir");
    }
    std::fs::write(&path, text).expect("write file");
    path
}

/// The path of a file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// 1-based number of the first line of `text` containing `needle` (for expected error lines).
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not found in the text"))
}

/// The `status.removed` counts of a record, as (containers, networks, volumes, images, paths).
pub fn removed_counts(record: &Value) -> (u64, u64, u64, u64, u64) {
    let r = &record["status"]["removed"];
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    (
        n("containers"),
        n("networks"),
        n("volumes"),
        n("images"),
        n("paths"),
    )
}

// ---------------------------------------------------------------------------------------------
// Bystanders: objects no reaper may ever touch
// ---------------------------------------------------------------------------------------------

/// What a bystander is, its kind, name, labels and whether it runs.
type BystanderSpec<'a> = (&'static str, Kind, String, Vec<(&'a str, &'a str)>, bool);

/// Objects that look a bit like ours but are not: each test creates them first and asserts at
/// the end that every one is still there. Dropping removes them (best effort).
pub struct Bystanders {
    tag: String,
    objects: Vec<(Kind, String, &'static str)>,
}

impl Bystanders {
    /// Creates the set (in parallel: it is part of every test). `tag` makes the names unique
    /// per test (lowercase letters and digits).
    pub fn create(tag: &str) -> Bystanders {
        let t = tag;
        let mut b = Bystanders {
            tag: tag.to_string(),
            objects: Vec::new(),
        };
        b.clear();
        let other: &[(&str, &str)] = &[
            ("reaper.instance", "someone-else"),
            ("reaper.session", "theirs"),
        ];
        let other_agent: &[(&str, &str)] = &[
            ("reaper.instance", "someone-else"),
            ("reaper.agent", "theirs"),
        ];
        let specs: Vec<BystanderSpec> = vec![
            // Unlabelled, and plainly not ours.
            (
                "unlabelled running container",
                Kind::Container,
                format!("bys-{t}-plain"),
                vec![],
                true,
            ),
            (
                "unlabelled created container",
                Kind::Container,
                format!("bys-{t}-plain-new"),
                vec![],
                false,
            ),
            (
                "unlabelled image",
                Kind::Image,
                format!("bys-{t}-plain:1"),
                vec![],
                false,
            ),
            (
                "unlabelled network",
                Kind::Network,
                format!("bys-{t}-plain"),
                vec![],
                false,
            ),
            (
                "unlabelled volume",
                Kind::Volume,
                format!("bys-{t}-plain"),
                vec![],
                false,
            ),
            // Another reaper instance's objects.
            (
                "other instance's container",
                Kind::Container,
                format!("bys-{t}-other"),
                other.to_vec(),
                true,
            ),
            (
                "other instance's agent container",
                Kind::Container,
                format!("bys-{t}-other-agent"),
                other_agent.to_vec(),
                false,
            ),
            (
                "other instance's network",
                Kind::Network,
                format!("bys-{t}-other"),
                other.to_vec(),
                false,
            ),
            (
                "other instance's volume",
                Kind::Volume,
                format!("bys-{t}-other"),
                other.to_vec(),
                false,
            ),
            (
                "other instance's image",
                Kind::Image,
                format!("bys-{t}-other:1"),
                other.to_vec(),
                false,
            ),
            // Look-alike labels that are not reaper's ownership labels.
            (
                "label reaper.session-x",
                Kind::Container,
                format!("bys-{t}-look1"),
                vec![("reaper.session-x", "a")],
                true,
            ),
            (
                "label reaper.sessionx",
                Kind::Container,
                format!("bys-{t}-look2"),
                vec![("reaper.sessionx", "a")],
                true,
            ),
            (
                "label REAPER.SESSION",
                Kind::Container,
                format!("bys-{t}-look3"),
                vec![("REAPER.SESSION", "a")],
                true,
            ),
            (
                "label reaper.session with an invalid name",
                Kind::Container,
                format!("bys-{t}-look4"),
                vec![("reaper.session", "Bad Value")],
                true,
            ),
            (
                "label reaper.session with '=' in its value",
                Kind::Container,
                format!("bys-{t}-look5"),
                vec![("reaper.session", "a=b")],
                true,
            ),
            (
                "label reaper.agent with an invalid name",
                Kind::Container,
                format!("bys-{t}-look6"),
                vec![("reaper.agent", "Bad Agent!")],
                false,
            ),
            (
                "label session_idx (not the adoption key)",
                Kind::Container,
                format!("bys-{t}-look7"),
                vec![("session_idx", "a")],
                true,
            ),
            (
                "volume labelled reaper.sessionx",
                Kind::Volume,
                format!("bys-{t}-lookvol"),
                vec![("reaper.sessionx", "a")],
                false,
            ),
            (
                "network labelled reaper.agentx",
                Kind::Network,
                format!("bys-{t}-looknet"),
                vec![("reaper.agentx", "a")],
                false,
            ),
            // Names that merely resemble the agent prefix.
            (
                "container named anvyl-agent (no suffix)",
                Kind::Container,
                "anvyl-agent".to_string(),
                vec![],
                true,
            ),
            (
                "container named xanvyl-agent-*",
                Kind::Container,
                format!("xanvyl-agent-{t}"),
                vec![],
                true,
            ),
            (
                "image xanvyl-agent-*",
                Kind::Image,
                format!("xanvyl-agent-{t}:latest"),
                vec![],
                false,
            ),
        ];
        let created: Vec<(&'static str, Kind, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = specs
                .iter()
                .map(|(what, kind, name, labels, running)| {
                    scope.spawn(move || {
                        let id = match kind {
                            Kind::Container => {
                                let c = Container::new(name).labels(labels);
                                if *running { c.running() } else { c.created() }.create()
                            }
                            Kind::Image => image(name, labels),
                            Kind::Network => network(name, labels),
                            Kind::Volume => volume(name, labels),
                        };
                        (*what, *kind, id)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| panic!("creating bystanders failed"))
                })
                .collect()
        });
        for (what, kind, id) in created {
            b.add(kind, id, what);
        }
        b.add(Kind::Image, TEST_IMAGE.to_string(), "the test image");
        b
    }

    /// Every bystander, e.g. to check that `reaper orphans` lists none of them.
    pub fn objects(&self) -> Vec<Obj> {
        self.objects
            .iter()
            .map(|(k, id, _)| (*k, id.clone()))
            .collect()
    }

    fn add(&mut self, kind: Kind, id: String, what: &'static str) {
        self.objects.push((kind, id, what));
    }

    /// Panics naming every bystander that vanished.
    pub fn assert_all_alive(&self) {
        let alive = existence(&self.objects());
        let gone: Vec<String> = self
            .objects
            .iter()
            .zip(alive)
            .filter(|(_, alive)| !alive)
            .map(|((kind, id, what), _)| format!("{what} ({} {id})", kind.as_str()))
            .collect();
        assert!(
            gone.is_empty(),
            "bystanders were removed: {}",
            gone.join("; ")
        );
    }

    fn clear(&self) {
        remove_named_like(&format!("bys-{}", self.tag));
        remove_named_like(&format!("xanvyl-agent-{}", self.tag));
        remove_quietly(Kind::Container, "anvyl-agent");
    }
}

impl Drop for Bystanders {
    fn drop(&mut self) {
        self.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// One scrape of the daemon's /metrics ("" if it does not answer).
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of an unlabelled metric, if present.
pub fn metric(addr: &str, name: &str) -> Option<f64> {
    scrape(addr)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
