//! The Python client (`clients/python`, issue 16) against a real daemon and the private engine.
//!
//! `scripts/python-venv` makes (once) a venv with the pinned docker-py, builds the client's wheel
//! and installs it; then the client's unittest suite runs with the wheel as users get it. These
//! tests fail, never skip, when Python, the venv or the wheel cannot be made.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const TOKEN: &str = "python-client-test-token";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `scripts/python-venv` (once per test binary) and returns the venv's python. The first
/// run on a machine installs the pins from PyPI; later runs reuse the venv and only rebuild the
/// wheel.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(make_venv).clone()
}

fn make_venv() -> PathBuf {
    let out = run_with_timeout(
        &mut Command::new(repo().join("scripts/python-venv")),
        None,
        Duration::from_secs(900),
    );
    assert!(
        out.status.success(),
        "scripts/python-venv failed ({}): the Python client's venv or wheel cannot be made\n{}{}",
        out.status,
        stdout_of(&out),
        stderr_of(&out)
    );
    let python = PathBuf::from(stdout_of(&out).lines().last().unwrap_or("").trim());
    assert!(python.is_file(), "no python at {python:?}");
    let wheels: Vec<_> = std::fs::read_dir(repo().join("target/python-client-dist"))
        .expect("target/python-client-dist")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("reaper_client-") && n.ends_with(".whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "one wheel expected: {wheels:?}");
    python
}

#[test]
fn python_client_suite_against_a_real_daemon() {
    let python = python();
    let _scope = Scope::new(&["pyc-", "pyby-", "py-"]);
    let bystanders = Bystanders::create("pyclient");
    let addr = format!("127.0.0.1:{}", free_port());
    let r = Reaper::start(&["--api-listen", &addr, "--api-token", TOKEN]);
    let work = tempfile::tempdir().expect("temp dir");
    let out = run_with_timeout(
        Command::new(&python)
            .args(["-m", "unittest", "discover", "-v", "-p", "test_*.py", "-s"])
            .arg(repo().join("clients/python/tests"))
            .current_dir(work.path())
            .env("REAPER_SOCKET", r.socket())
            .env("DOCKER_HOST", docker_host())
            .env("REAPER_TEST_IMAGE", TEST_IMAGE)
            .env("REAPER_TEST_API_URL", format!("http://{addr}"))
            .env("REAPER_TEST_API_TOKEN", TOKEN)
            .env("REAPER_TEST_INSTANCE", INSTANCE)
            .env(
                "REAPER_TEST_EXAMPLE",
                repo().join("clients/python/examples/workflow.py"),
            )
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("REAPER_API_TOKEN")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH"),
        None,
        Duration::from_secs(600),
    );
    let text = format!("{}{}", stdout_of(&out), stderr_of(&out));
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "the Python client's tests failed ({})\n{}",
        out.status,
        r.log_tail()
    );
    let ran: usize = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(ran >= 20, "only {ran} Python tests ran:\n{text}");
    bystanders.assert_all_alive();
    assert!(!r.log().contains("panicked"), "{}", r.log_tail());
}

/// A workflow holding a session while the daemon restarts: its heartbeat thread rides out the
/// refused connections and renews again afterwards, so the session outlives several heartbeat
/// periods after the restart (heartbeat timeouts count from the daemon's start); ending the
/// workflow then cleans up as usual.
#[test]
fn a_python_session_survives_a_daemon_restart() {
    const CHILD: &str = "\
import signal, sys, time
import docker, reaper_client
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
engine = docker.from_env(timeout=60)
with reaper_client.session(sys.argv[1], ttl='1h', heartbeat='3s') as s:
    c = engine.containers.run(sys.argv[2], ['sleep', '3600'], name=sys.argv[3], labels=s.labels,
                              init=True, network_mode='none', detach=True)
    print(c.id, flush=True)
    while True:
        time.sleep(1)
";
    let python = python();
    let _scope = Scope::new(&["pyr-"]);
    let bystanders = Bystanders::create("pyrestart");
    let mut r = Reaper::start(&[]);
    let name = unique("pyr-session");
    let mut child = Command::new(&python)
        .args(["-c", CHILD, &name, TEST_IMAGE, &unique("pyr-executor")])
        .env("REAPER_SOCKET", r.socket())
        .env("DOCKER_HOST", docker_host())
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let id = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_default()
        .trim()
        .to_string();
    if id.is_empty() {
        let _ = child.kill();
        panic!(
            "the Python child did not start its session\n{}",
            r.log_tail()
        );
    }

    r.restart();
    // Three heartbeat periods after the restart: only renewed heartbeats keep it Active.
    std::thread::sleep(Duration::from_secs(9));
    let phase = r.phase("sessions", &name);
    let running = is_running(&id);
    if phase != "Active" || !running {
        let _ = child.kill();
        panic!(
            "after the restart the session is {phase:?} and its container running={running}\n{}",
            r.log_tail()
        );
    }

    // SIGTERM: the child's handler exits 0, which ends the session as succeeded.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait for the child");
    assert_eq!(status.code(), Some(0), "the child's exit");
    gone_times(
        &[(Kind::Container, id)],
        std::time::Instant::now(),
        Duration::from_secs(60),
    );
    r.wait_until("the session is Cleaned", Duration::from_secs(60), || {
        r.phase("sessions", &name) == "Cleaned"
    });
    assert_eq!(r.session(&name)["status"]["endReason"], "succeeded");
    bystanders.assert_all_alive();
}

/// README's "Python client" example is `clients/python/examples/workflow.py`, verbatim (the
/// suite runs that file).
#[test]
fn readme_shows_the_python_example_that_the_suite_runs() {
    let example = std::fs::read_to_string(repo().join("clients/python/examples/workflow.py"))
        .expect("examples/workflow.py");
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let block = format!("```python\n{example}```\n");
    assert!(
        readme.contains(&block),
        "README.md must show clients/python/examples/workflow.py verbatim in a ```python block"
    );
}

/// Keys of an object in docs/openapi.yaml: `Schema`, `Schema.prop` (an inline object) or
/// `Schema.prop[]` (the items of an inline array), as (required, optional).
fn openapi_keys(doc: &serde_yaml::Value, path: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut parts = path.split('.');
    let mut node = &doc["components"]["schemas"][parts.next().expect("schema")];
    for part in parts {
        let (prop, items) = match part.strip_suffix("[]") {
            Some(p) => (p, true),
            None => (part, false),
        };
        node = &node["properties"][prop];
        if items {
            node = &node["items"];
        }
    }
    let props = node["properties"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{path} has no properties in docs/openapi.yaml"));
    let all: BTreeSet<String> = props
        .keys()
        .map(|k| k.as_str().expect("property name").to_string())
        .collect();
    let required: BTreeSet<String> = node["required"]
        .as_sequence()
        .map(|r| {
            r.iter()
                .map(|k| k.as_str().expect("required name").to_string())
                .collect()
        })
        .unwrap_or_default();
    let optional = all.difference(&required).cloned().collect();
    (required, optional)
}

/// Each `TypedDict` in `reaper_client.types.SCHEMAS` has exactly its schema's properties, and
/// the same ones required.
#[test]
fn python_types_follow_openapi() {
    let python = python();
    let out = run_with_timeout(
        Command::new(&python).arg("-c").arg(
            "import json, reaper_client.types as t\n\
             print(json.dumps({k: [sorted(v.__required_keys__), sorted(v.__optional_keys__)]\n\
             for k, v in t.SCHEMAS.items()}))",
        ),
        None,
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let types: Value = serde_json::from_slice(&out.stdout).expect("JSON from python");
    let doc: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("docs/openapi.yaml")).expect("docs/openapi.yaml"),
    )
    .expect("docs/openapi.yaml parses");
    let types = types.as_object().expect("object");
    assert!(types.len() >= 20, "{types:?}");
    let set = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("key").to_string())
            .collect()
    };
    for (path, keys) in types {
        let (required, optional) = openapi_keys(&doc, path);
        assert_eq!(set(&keys[0]), required, "{path}: required keys");
        assert_eq!(set(&keys[1]), optional, "{path}: optional keys");
    }
}
