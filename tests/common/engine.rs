//! The private Docker engine.

use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use super::*;

/// The private engines `./scripts/test` starts. A test binary talks to one of them: dockerd,
/// unless it calls [`use_podman`] before anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

pub(super) static ENGINE: OnceLock<Engine> = OnceLock::new();

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

thread_local! {
    /// The engine [`on_engine`] points this thread's helpers at, instead of the suite's.
    static ENGINE_HOST: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with every docker helper of this thread ([`docker`], [`Container`], [`exists`],
/// [`Bystanders`], ...) pointed at the engine on `host` (e.g. a [`PrivateEngine`] of the
/// test's own); the previous engine is back afterwards, also when `f` panics.
pub fn on_engine<T>(host: &str, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<String>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENGINE_HOST.with(|h| *h.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(ENGINE_HOST.with(|h| h.borrow_mut().replace(host.to_string())));
    f()
}

/// The private engine's address: the one [`on_engine`] chose for this thread, else the
/// suite's. Panics (always, not only in CI) when the tests were not started through
/// `./scripts/test`: a missing engine is a failure, never a skip.
pub fn docker_host() -> String {
    if let Some(host) = ENGINE_HOST.with(|h| h.borrow().clone()) {
        return host;
    }
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

pub(super) fn docker_command() -> Command {
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

pub(super) fn run_docker(args: &[&str], stdin: Option<&[u8]>) -> Output {
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

pub(super) fn dockerd_script(verb: &str) {
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

pub(super) fn lines(out: &Output) -> Vec<String> {
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
