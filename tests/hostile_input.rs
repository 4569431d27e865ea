//! The hostile corpus of issue 6 through every way in: the manifest and config parsers as the
//! library exposes them, the daemon's API, and the `reaper` CLI. Each input is rejected with a
//! clear error in under 100 ms of parsing and under 50 MiB of extra memory, and nothing of the
//! batch it is part of is applied (each hostile document follows a valid one).

mod common;

use common::*;
use reaper::config::ConfigFile;
use reaper::core::manifest::{decode_utf8, parse_batch, Source};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// The target is 100 ms (measured: 0.4-21 ms; every time is printed). The suite asserts 10x so
/// a shared, loaded machine cannot fail it, while the blow-ups these inputs are built to cause
/// (seconds to minutes) still do.
const PARSE_TARGET: Duration = Duration::from_millis(100);
const PARSE_LIMIT: Duration = Duration::from_millis(1000);
const MEMORY_LIMIT: u64 = 50 * MIB;

/// A valid record that every hostile batch starts with: it must never be applied.
const GOOD: &str =
    "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: good}\nspec: {ttl: 1h}\n---\n";

struct Case {
    what: &'static str,
    /// The hostile document (appended to [`GOOD`]).
    text: String,
    /// The error must contain one of these.
    words: &'static [&'static str],
}

fn corpus() -> Vec<Case> {
    let agent = "apiVersion: reaper/v1\nkind: Agent\nmetadata: {name: a}\n";
    let mut laughs = format!("{agent}x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        laughs.push_str(&format!(
            "x{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let session = |meta: &str, spec: &str| {
        format!("apiVersion: reaper/v1\nkind: Session\nmetadata: {meta}\nspec: {spec}\n")
    };
    vec![
        Case {
            what: "alias bomb",
            text: laughs,
            words: &["alias bomb"],
        },
        Case {
            what: "100 MB input",
            text: format!("{agent}#{}\n", "x".repeat(100_000_000)),
            words: &["32 MiB", "limit", "larger than"],
        },
        Case {
            what: "10,000-deep flow nesting",
            text: format!("{agent}x: {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
            words: &["nested"],
        },
        Case {
            what: "10,000-deep block nesting",
            text: format!("{agent}x:\n{}x\n", "- ".repeat(10_000)),
            words: &["nested", "too many"],
        },
        Case {
            what: "10,000-deep mapping nesting",
            text: format!(
                "{agent}x: {}1{}\n",
                "{a: ".repeat(10_000),
                "}".repeat(10_000)
            ),
            words: &["nested"],
        },
        Case {
            what: "duplicate keys",
            text: session("{name: d}", "{ttl: 1h, ttl: 2h}"),
            words: &["duplicate"],
        },
        Case {
            what: "unknown field",
            text: session("{name: u}", "{ttl: 1h, tll: 2h}"),
            words: &["tll"],
        },
        Case {
            what: "wrong type",
            text: session("{name: w}", "{ttl: 1h, cleanup: {containers: [yes]}}"),
            words: &["containers", "invalid type"],
        },
        Case {
            what: "newline in a name",
            text: session("{name: \"a\\nb\"}", "{ttl: 1h}"),
            words: &["metadata.name", "invalid name"],
        },
        Case {
            what: "raw control character in a name",
            text: session("{name: a\u{7}b}", "{ttl: 1h}"),
            words: &["U+0007", "control"],
        },
        Case {
            what: "control character in a label value",
            text: session("{name: c, labels: {k: \"v\\u001b[31m\"}}", "{ttl: 1h}"),
            words: &["control"],
        },
        Case {
            what: "newline in a label key",
            text: session("{name: c}", "{match: {labels: {\"a\\nb\": v}}}"),
            words: &["label key"],
        },
        Case {
            // Found by cargo fuzz: serde_yaml panicked locating an error below a `!tag`.
            what: "tagged mapping above an invalid name",
            text: "apiVersion: reaper/v1\nkind: Session\nmetadata: !t\n  name: Bad_Name\n".into(),
            words: &["Bad_Name"],
        },
        Case {
            what: "label key a=b (Docker filter injection)",
            text: session("{name: i}", "{match: {labels: {\"a=b\": v}}}"),
            words: &["label key"],
        },
        Case {
            what: "label key label= (Docker filter injection)",
            text: session("{name: i, labels: {\"label=\": x}}", "{ttl: 1h}"),
            words: &["label key"],
        },
    ]
}

/// An invalid UTF-8 stream with many documents: valid ones, then a bad byte deep inside.
fn invalid_utf8_stream() -> Vec<u8> {
    let mut bytes = GOOD.as_bytes().to_vec();
    for i in 0..5_000 {
        bytes.extend_from_slice(
            format!("apiVersion: reaper/v1\nkind: Session\nmetadata: {{name: s{i}}}\n---\n")
                .as_bytes(),
        );
    }
    bytes.extend_from_slice(b"apiVersion: reaper/v1\nkind: Agent\nmetadata: {name: \xff\xfe}\n");
    for _ in 0..5_000 {
        bytes.extend_from_slice(b"---\n\xc3\x28: x\n");
    }
    bytes
}

fn error_has(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// A field of `/proc/<pid>/status`, 0 once the process is gone.
fn status_kib(pid: &str, field: &str) -> u64 {
    proc_status_kib(pid, field).unwrap_or(0)
}

/// Extra peak resident memory of process `pid` ("self" or a number) while `f` runs: the
/// kernel's high-water mark is reset first (clear_refs 5) and read after.
fn peak_growth<T>(pid: &str, f: impl FnOnce() -> T) -> (u64, T) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .unwrap_or_else(|e| panic!("cannot reset the memory high-water mark of {pid}: {e}"));
    let before = status_kib(pid, "VmHWM:");
    let out = f();
    let after = status_kib(pid, "VmHWM:");
    (after.saturating_sub(before) * 1024, out)
}

// ---------------------------------------------------------------------------------------------
// The library's parsers
// ---------------------------------------------------------------------------------------------

#[test]
fn the_parsers_reject_the_corpus_fast_small_and_whole() {
    for case in corpus() {
        let text = format!("{GOOD}{}", case.text);
        let (grew, (took, result)) = peak_growth("self", || {
            let started = Instant::now();
            let result = parse_batch(&[Source {
                name: "hostile.yaml",
                content: &text,
            }]);
            (started.elapsed(), result)
        });
        let errors = match result {
            Ok(p) => panic!(
                "{}: accepted, {} record(s) would be applied",
                case.what,
                p.records.len()
            ),
            Err(e) => e,
        };
        let shown = errors.to_string();
        assert!(
            error_has(&shown, case.words),
            "{}: unclear error: {shown}",
            case.what
        );
        assert!(
            shown.contains("hostile.yaml"),
            "{}: no file in {shown}",
            case.what
        );
        println!(
            "{}: manifest parser rejected it in {took:?} (target {PARSE_TARGET:?})",
            case.what
        );
        assert!(
            took < PARSE_LIMIT,
            "{}: manifest parser took {took:?}",
            case.what
        );
        assert!(
            grew < MEMORY_LIMIT,
            "{}: manifest parser used {} MiB",
            case.what,
            grew / MIB
        );

        // The same text as a config file.
        let (grew, (took, result)) = peak_growth("self", || {
            let started = Instant::now();
            let result = ConfigFile::parse("hostile-config.yaml", &case.text);
            (started.elapsed(), result)
        });
        assert!(
            result.is_err(),
            "{}: the config parser accepted it",
            case.what
        );
        assert!(
            took < PARSE_LIMIT,
            "{}: config parser took {took:?}",
            case.what
        );
        assert!(
            grew < MEMORY_LIMIT,
            "{}: config parser used {} MiB",
            case.what,
            grew / MIB
        );
    }

    let bytes = invalid_utf8_stream();
    let started = Instant::now();
    let e = decode_utf8("stream.yaml", &bytes).expect_err("invalid UTF-8 must be refused");
    assert!(started.elapsed() < PARSE_LIMIT);
    assert!(e.to_string().contains("invalid UTF-8"), "{e}");
    assert_eq!(e.line, Some(5_000 * 4 + 5 + 3), "{e}");
}

// ---------------------------------------------------------------------------------------------
// The daemon's API
// ---------------------------------------------------------------------------------------------

fn post_apply(socket: &Path, body: &[u8]) -> (u16, Value, Duration) {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "POST /v1/apply HTTP/1.1\r\nHost: r\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    s.write_all(head.as_bytes()).expect("head");
    // The daemon may answer (413) and close before the whole body is written.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("response");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::Null),
        took,
    )
}

#[test]
fn the_daemon_refuses_the_corpus_and_applies_nothing() {
    let r = Reaper::start(&[]);
    let pid = r.pid().expect("pid").to_string();
    for case in corpus() {
        let body = serde_json::to_vec(&json!({"files": [
            {"name": "good.yaml", "content": GOOD},
            {"name": "hostile.yaml", "content": case.text},
        ]}))
        .expect("json");
        let (grew, (status, v, took)) = peak_growth(&pid, || post_apply(&r.socket(), &body));
        let shown = v.to_string();
        if case.what == "100 MB input" {
            assert_eq!(status, 413, "{}: {shown}", case.what);
        } else {
            assert_eq!(status, 422, "{}: {shown}", case.what);
            assert!(
                error_has(&shown, case.words),
                "{}: unclear error: {shown}",
                case.what
            );
            assert!(shown.contains("nothing was applied"), "{shown}");
        }
        // Parsing is bounded by 100 ms; the rest is the transfer and the debug build's JSON.
        assert!(
            took < Duration::from_secs(2),
            "{}: answered after {took:?}",
            case.what
        );
        assert!(
            grew < MEMORY_LIMIT,
            "{}: the daemon grew by {} MiB",
            case.what,
            grew / MIB
        );
        eprintln!(
            "{}: {status} in {took:?}, daemon +{} KiB",
            case.what,
            grew / 1024
        );
    }
    assert_eq!(r.list("sessions"), Vec::<Value>::new(), "nothing applied");
    assert_eq!(r.list("agents"), Vec::<Value>::new(), "nothing applied");
}

// ---------------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------------

/// Runs `reaper apply -f FILE` and returns (exit ok, stderr, wall time, peak RSS seen in KiB).
/// The peak is sampled from /proc every millisecond: a lower bound of the true peak.
fn cli_apply(r: &Reaper, file: &Path) -> (bool, String, Duration, u64) {
    let started = Instant::now();
    let mut child = Command::new(Reaper::bin())
        .arg("--socket")
        .arg(r.socket())
        .args(["apply", "-f"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reaper apply");
    let pid = child.id().to_string();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(status_kib(&pid, "VmHWM:"));
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > CLI_TIMEOUT {
            let _ = child.kill();
            panic!(
                "reaper apply -f {} did not finish in {CLI_TIMEOUT:?}",
                file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.success(), err, started.elapsed(), peak)
}

#[test]
fn the_cli_refuses_the_corpus_and_applies_nothing() {
    let r = Reaper::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let small = dir.path().join("small.yaml");
    std::fs::write(&small, "apiVersion: reaper/v1\nkind: Nope\n").expect("write");
    let (_, _, _, baseline) = cli_apply(&r, &small);

    let mut files: Vec<(&str, Vec<u8>, &[&str])> = corpus()
        .into_iter()
        .map(|c| (c.what, format!("{GOOD}{}", c.text).into_bytes(), c.words))
        .collect();
    files.push(("invalid UTF-8 stream", invalid_utf8_stream(), &["UTF-8"]));
    for (what, bytes, words) in files {
        let path = dir.path().join("hostile.yaml");
        std::fs::write(&path, &bytes).expect("write corpus file");
        let (ok, err, took, peak) = cli_apply(&r, &path);
        assert!(!ok, "{what}: reaper apply succeeded");
        assert!(error_has(&err, words), "{what}: unclear error: {err}");
        assert!(
            err.contains("hostile.yaml"),
            "{what}: the error names no file: {err}"
        );
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
        let grew = peak.saturating_sub(baseline) * 1024;
        assert!(
            grew < MEMORY_LIMIT,
            "{what}: the CLI used {} MiB more than for a tiny file",
            grew / MIB
        );
    }
    assert_eq!(r.list("sessions"), Vec::<Value>::new(), "nothing applied");
    assert_eq!(r.list("agents"), Vec::<Value>::new(), "nothing applied");
}
