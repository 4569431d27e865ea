//! A private dockerd of one test's own, besides the suite's (a fleet test runs three, the
//! disk-pressure test one on a small tmpfs), fully contained in a short temp dir and run by
//! `scripts/dockerd`. Dropping it always destroys it: dockerd, containerd and the shims are
//! stopped, whatever is mounted below the dir is unmounted and the dir removed.
//!
//! A missing `dockerd` is a failure, never a skip: `./scripts/test` installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::*;

/// How long `scripts/dockerd start|image|destroy` may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

pub struct PrivateEngine {
    dir: PathBuf,
}

impl PrivateEngine {
    /// Starts an engine with the test image [`TEST_IMAGE`] in it. Its networks take /24s
    /// of one /16 rather than dockerd's default /16s and /20s: every engine on the machine
    /// draws from the same few default pools (a network's bridge is a route of the host), and
    /// a few engines with a few networks each would use them up.
    pub fn start() -> PrivateEngine {
        let engine = PrivateEngine::start_with(|dir| {
            std::fs::write(
                dir.join("daemon.json"),
                r#"{"default-address-pools": [{"base": "10.213.0.0/16", "size": 24}]}"#,
            )
            .expect("daemon.json");
        });
        engine.script("image");
        engine
    }

    /// Starts an engine after `prepare` has set up its dir (e.g. mounted a tmpfs on
    /// [`PrivateEngine::data`] or written `daemon.json`), without the test image.
    pub fn start_with(prepare: impl FnOnce(&Path)) -> PrivateEngine {
        // Short: containerd's unix sockets live below it (scripts/dockerd checks the length).
        let dir = tempfile::Builder::new()
            .prefix("rpe")
            .tempdir_in("/tmp")
            .expect("temp dir for a private dockerd")
            .keep();
        // Built before anything can fail, so that `Drop` cleans up after a failed start too.
        let engine = PrivateEngine { dir };
        std::fs::create_dir_all(engine.data()).expect("data dir");
        prepare(&engine.dir);
        engine.script("start");
        engine
    }

    /// Starts `n` engines with the test image at once (each start takes seconds).
    pub fn start_many(n: usize) -> Vec<PrivateEngine> {
        let started: Vec<std::thread::Result<PrivateEngine>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n).map(|_| s.spawn(PrivateEngine::start)).collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        // The engines that did start are dropped (destroyed) before the panic goes on.
        let (ok, failed): (Vec<_>, Vec<_>) = started.into_iter().partition(Result::is_ok);
        let engines: Vec<PrivateEngine> = ok.into_iter().map(Result::unwrap).collect();
        if let Some(Err(panic)) = failed.into_iter().next() {
            drop(engines);
            std::panic::resume_unwind(panic);
        }
        engines
    }

    fn script_command(&self, verb: &str) -> Command {
        let script = std::env::var("REAPER_TEST_DOCKERD_SCRIPT")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dockerd").into());
        let mut cmd = Command::new(script);
        cmd.arg(verb).arg(&self.dir);
        cmd
    }

    fn script(&self, verb: &str) {
        let out = run_with_timeout(&mut self.script_command(verb), None, SCRIPT_TIMEOUT);
        assert!(
            out.status.success(),
            "scripts/dockerd {verb} {}: {}",
            self.dir.display(),
            stderr_of(&out)
        );
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The engine's data root.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Its address, for `--docker-host` and [`on_engine`].
    pub fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.display())
    }

    /// Runs `f` with the common docker helpers pointed at this engine (see [`on_engine`]).
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        on_engine(&self.host(), f)
    }

    /// The docker CLI against this engine, with its own config dir, `stdin` fed to it.
    pub fn docker_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_with_timeout(
            Command::new("docker")
                .arg("-H")
                .arg(self.host())
                .env("DOCKER_CONFIG", self.dir.join("cli"))
                .env_remove("DOCKER_CONTEXT")
                .env_remove("DOCKER_HOST")
                .args(args),
            stdin,
            DOCKER_TIMEOUT,
        )
    }

    /// Runs docker against this engine; returns its trimmed stdout, panics on failure.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker_stdin(args, None);
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            stderr_of(&out)
        );
        stdout_of(&out).trim().to_string()
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // `destroy` stops dockerd and its shims, unmounts below the dir and removes it.
        // Never panics: it may run while a failed test unwinds.
        let _ = try_run_with_timeout(&mut self.script_command("destroy"), None, SCRIPT_TIMEOUT);
        let _ = Command::new("umount").arg("-l").arg(self.data()).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
