//! Signals against the real binary: a SIGTERM that arrives the moment the daemon first answers
//! (say `systemctl stop` right after start, or a supervisor restarting it while the manifest
//! directory is being read) must still drain, flush and exit 0, never die by the signal's
//! default action. The window is short, so the test is repeated.
//! (`daemon_serve` runs `serve` in-process with a shutdown future; this is `run` with signals.)

mod common;

use common::*;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// Enough starts that a window of a few milliseconds after the first answer is hit.
const ROUNDS: usize = 20;
/// Manifest files read at start: they widen the window the bug lived in.
const MANIFEST_FILES: usize = 20;

fn write_manifests(dir: &Path) {
    std::fs::create_dir_all(dir).expect("manifest dir");
    for i in 0..MANIFEST_FILES {
        let doc = format!(
            "apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: sig-{i}\n\
             spec:\n  match:\n    labels: {{sig-test: \"{i}\"}}\n"
        );
        std::fs::write(dir.join(format!("s{i}.yaml")), doc).expect("manifest file");
    }
}

/// Polls the API socket until a connection is accepted; panics if the daemon exits first.
fn wait_first_answer(r: &mut Reaper) {
    let started = Instant::now();
    while UnixStream::connect(r.socket()).is_err() {
        if let Some(status) = r.wait_exit(Duration::ZERO) {
            panic!(
                "reaper exited with {status} before answering\n{}",
                r.log_tail()
            );
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "the API socket did not answer within {READY_TIMEOUT:?}\n{}",
            r.log_tail()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sigterm_right_after_the_first_answer_drains_and_exits_0() {
    for round in 0..ROUNDS {
        let mut r = Reaper::prepare(&[]);
        let manifests = r.dir().join("manifests");
        write_manifests(&manifests);
        r.set_extra(&["--manifests", &manifests.display().to_string()]);
        r.spawn();
        wait_first_answer(&mut r);
        let pid = r.pid().and_then(|p| Pid::from_raw(p as i32)).expect("pid");
        kill_process(pid, Signal::TERM).expect("SIGTERM");
        let status = r.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "round {round}: no exit within 30 s of SIGTERM\n{}",
                r.log_tail()
            )
        });
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: {status} (killed by the signal instead of draining)\n{}",
            r.log_tail()
        );
        let log = r.log();
        assert!(
            log.contains("Shutting down") && log.contains("Stopped."),
            "round {round}: no drain in the log\n{}",
            r.log_tail()
        );
        assert!(
            !r.socket().exists(),
            "round {round}: the socket file is left behind"
        );
        // The manifest directory was read before the drain, and the store kept what it wrote.
        let data_dir = r.data_dir().display().to_string();
        let export = r.cli_ok(&["store", "export", "--data-dir", &data_dir]);
        let kept = (0..MANIFEST_FILES)
            .filter(|i| export.contains(&format!("name: sig-{i}\n")))
            .count();
        assert_eq!(kept, MANIFEST_FILES, "round {round}:\n{export}");
    }
}
