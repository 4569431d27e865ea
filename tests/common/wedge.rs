//! A wedged engine fails clearly. Debian's dockerd 20.10.24 can deadlock when container exits
//! overlap (see shared LESSONS, "Docker's own behaviour"): `/_ping` still answers while lists,
//! `rm -f` and the like hang. When a docker call times out and ping answers, the tests say so,
//! take a goroutine dump of the private dockerd for the record, and stop waiting on the engine.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set once the engine was found wedged: later docker calls fail at once instead of each
/// waiting out its timeout (teardown would otherwise take minutes).
static WEDGED: AtomicBool = AtomicBool::new(false);

/// How long a probe of the engine may take.
const PROBE: Duration = Duration::from_secs(5);

/// The status line of the engine's answer to `GET path`, if it starts within `bound`.
pub fn engine_get(path: &str, bound: Duration) -> Option<String> {
    let host = super::docker_host();
    let socket = host.strip_prefix("unix://")?;
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_write_timeout(Some(bound)).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let deadline = Instant::now() + bound;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let left = deadline.checked_duration_since(Instant::now())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) if got.len() < 4096 => got.extend_from_slice(&buf[..n]),
            Ok(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.lines().next().map(String::from)
}

/// Whether the engine was found wedged in this test binary.
pub fn is_wedged() -> bool {
    WEDGED.load(Ordering::SeqCst)
}

/// Whether `/_ping` answers 200 within 5 s.
pub fn engine_pings() -> bool {
    engine_get("/_ping", PROBE).is_some_and(|l| l.contains(" 200"))
}

fn docker_dir() -> Option<PathBuf> {
    std::env::var_os("REAPER_TEST_DOCKER_DIR").map(PathBuf::from)
}

/// Sends SIGUSR1 to the private dockerd, waits (bounded) for it to log where it wrote its
/// goroutine stacks and copies them below `target/` (`scripts/test` deletes the engine's
/// directory). Returns the copy, or why there is none.
pub fn goroutine_dump() -> Result<PathBuf, String> {
    if super::engine() == super::Engine::Podman {
        return Err("the engine is the private Podman service, not dockerd".into());
    }
    let dir = docker_dir().ok_or("REAPER_TEST_DOCKER_DIR is not set")?;
    let log = dir.join("dockerd.log");
    let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as usize;
    let pid = std::fs::read_to_string(dir.join("pid")).unwrap_or_default();
    let sent = super::try_run_with_timeout(
        Command::new("kill").arg("-USR1").arg(pid.trim()),
        None,
        PROBE,
    );
    if !sent.as_ref().is_ok_and(|o| o.status.success()) {
        return Err(format!("could not signal dockerd (pid {:?})", pid.trim()));
    }
    let mut written: Option<PathBuf> = None;
    let _ = super::try_wait_until(Duration::from_secs(10), || {
        let text = std::fs::read(&log).unwrap_or_default();
        let new = String::from_utf8_lossy(text.get(before..).unwrap_or_default()).into_owned();
        written = new.lines().find_map(|l| {
            let path = l.split("goroutine stacks written to ").nth(1)?;
            Some(PathBuf::from(path.trim().trim_end_matches('"')))
        });
        written.is_some()
    });
    let stacks = written.ok_or("dockerd did not log where it wrote the stacks within 10s")?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let kept = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("target/test-dockerd-goroutines-{secs}.log"));
    std::fs::copy(&stacks, &kept)
        .map(|_| kept)
        .map_err(|e| format!("stacks in {} not copied: {e}", stacks.display()))
}

/// [`goroutine_dump`], said for a failure message.
fn dump_taken() -> String {
    match goroutine_dump() {
        Ok(kept) => format!(
            "goroutine dump taken: see target/test-dockerd.log (stacks copied to {})",
            kept.display()
        ),
        Err(why) => format!("goroutine dump asked for: see target/test-dockerd.log ({why})"),
    }
}

/// A failed `Output`, as if the command had exited 1 with `message` on stderr.
fn failed(message: &str) -> Output {
    Output {
        status: ExitStatus::from_raw(1 << 8),
        stdout: Vec::new(),
        stderr: message.as_bytes().to_vec(),
    }
}

/// After the engine was found wedged, every docker call fails at once.
pub(super) fn refuse_if_wedged(cmd: &str) -> Option<Output> {
    WEDGED.load(Ordering::SeqCst).then(|| {
        failed(&format!(
            "the private Docker engine was found wedged earlier in this run; not running {cmd}"
        ))
    })
}

/// `cmd` (a docker CLI call) timed out with `timed_out` as message. Panics saying whether the
/// engine is wedged (taking a goroutine dump if so), or, when the thread is already panicking
/// (teardown), prints that and returns a failed `Output` so the unwinding goes on.
pub(super) fn docker_timed_out(cmd: &str, timed_out: &str) -> Output {
    let message = if engine_pings() {
        WEDGED.store(true, Ordering::SeqCst);
        format!(
            "the private Docker engine is wedged (ping answers, {cmd} timed out); {}",
            dump_taken()
        )
    } else {
        format!("{timed_out}; the private Docker engine does not answer /_ping either")
    };
    if std::thread::panicking() {
        eprintln!("{message}");
        return failed(&message);
    }
    panic!("{message}");
}

/// For a bounded wait that ran out: whether the engine is wedged (ping answers, a network
/// list does not), with a goroutine dump if so; else that it answers.
pub fn diagnose() -> String {
    if !engine_pings() {
        return "the private Docker engine does not answer /_ping".into();
    }
    if engine_get("/networks", Duration::from_secs(10)).is_some() {
        return "the private Docker engine answers /_ping and lists networks: not wedged".into();
    }
    WEDGED.store(true, Ordering::SeqCst);
    format!(
        "the private Docker engine is wedged (ping answers, GET /networks timed out); {}",
        dump_taken()
    )
}
