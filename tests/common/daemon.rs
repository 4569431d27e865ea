//! The reaper daemon under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

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

    /// The full `serve` command line: the test daemon talks to the private engine, runs as
    /// instance [`INSTANCE`] and serves metrics on [`Reaper::metrics_addr`], unless `extra`
    /// names another host (e.g. a [`proxy::CountingProxy`]), instance or metrics address.
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
            "--paths-root".into(),
            self.paths_root().display().to_string(),
        ];
        if !names("--metrics-listen") {
            args.extend(["--metrics-listen".into(), self.metrics_addr()]);
        }
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

    /// The `reaper` client command for this daemon, to spawn it yourself.
    pub fn cli_command(&self, args: &[&str]) -> Command {
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

    /// `get KIND -o json`: the items of the `kind: List` it prints.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        list_items(&self.json(&["get", kind, "-o", "json"]))
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

    /// Waits for a `--once` daemon to finish and asserts it exited 0, with its log if not.
    pub fn assert_exits_cleanly(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout).unwrap_or_else(|| {
            panic!("serve did not exit within {timeout:?}\n{}", self.log_tail())
        });
        assert!(
            status.success(),
            "serve exited with {status}\n{}",
            self.log_tail()
        );
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

/// The items of a `kind: List` document as `reaper get -o json` prints a list; panics on
/// anything else.
pub fn list_items(v: &Value) -> Vec<Value> {
    assert_eq!(v["kind"], "List", "not a kind: List document: {v:#}");
    assert_eq!(v["apiVersion"], "reaper/v1", "{v:#}");
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a List without items: {v:#}"))
        .clone()
}
