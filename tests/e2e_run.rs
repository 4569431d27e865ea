//! `reaper run -- CMD` and `reaper session start`, as a workflow system would use them: the
//! real binary, a real daemon, containers made by the docker CLI inside CMD with the label
//! file, against the private engine. Bystanders survive every test.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A shell command that starts a labelled container the way a workflow would.
fn docker_run(name: &str) -> String {
    format!(
        "docker run -d --init --network none --name {name} --label-file \"$REAPER_LABEL_FILE\" \
         {TEST_IMAGE} sleep 3600 >/dev/null"
    )
}

/// `reaper run --session NAME [FLAGS] -- sh -c SCRIPT`.
fn run_script(r: &Reaper, name: &str, flags: &[&str], script: &str) -> std::process::Output {
    let head = ["run", "--session", name];
    r.cli(&[&head[..], flags, &["--", "sh", "-c", script]].concat())
}

fn session_field(r: &Reaper, name: &str, field: &str) -> String {
    r.session(name)["status"][field]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_cleaned(r: &Reaper, name: &str, container: &str) {
    let objs = vec![(Kind::Container, container.to_string())];
    wait_until(
        &format!("{container} removed with session/{name}"),
        Duration::from_secs(30),
        || all_gone(&objs),
    );
    r.wait_until(
        &format!("session/{name} Cleaned"),
        Duration::from_secs(30),
        || r.phase("session", name) == "Cleaned",
    );
}

#[test]
fn a_command_that_succeeds_ends_its_session_and_its_containers_go() {
    let _scope = Scope::new(&["e2e-run-"]);
    let bystanders = Bystanders::create("run-ok");
    let r = Reaper::start(&[]);
    let script = format!(
        "{} && test \"$REAPER_SESSION\" = e2e-run-ok && cat \"$REAPER_LABEL_FILE\" && \
         echo \"$REAPER_LABEL_FILE\"",
        docker_run("e2e-run-ok-c")
    );
    let out = run_script(&r, "e2e-run-ok", &[], &script);
    assert_eq!(
        out.status.code(),
        Some(0),
        "reaper run: {}\n{}",
        stderr_of(&out),
        r.log_tail()
    );
    let stdout = stdout_of(&out);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("reaper.session=e2e-run-ok"), "{stdout}");
    let label_file = lines.next().expect("the label file's path");
    assert!(
        !std::path::Path::new(label_file).exists(),
        "the label file outlived reaper run"
    );
    wait_cleaned(&r, "e2e-run-ok", "e2e-run-ok-c");
    assert_eq!(session_field(&r, "e2e-run-ok", "endReason"), "succeeded");
    bystanders.assert_all_alive();
}

#[test]
fn a_failing_command_ends_its_session_as_failed_and_its_status_is_passed_on() {
    let _scope = Scope::new(&["e2e-run-"]);
    let bystanders = Bystanders::create("run-fail");
    let r = Reaper::start(&[]);
    let script = format!("{}; exit 3", docker_run("e2e-run-fail-c"));
    let out = run_script(&r, "e2e-run-fail", &[], &script);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    wait_cleaned(&r, "e2e-run-fail", "e2e-run-fail-c");
    assert_eq!(session_field(&r, "e2e-run-fail", "endReason"), "failed");

    // Death by a signal: 128+N, as shells report it, and failed.
    let out = run_script(&r, "e2e-run-sig", &[], "kill -KILL $$");
    assert_eq!(out.status.code(), Some(137), "{}", stderr_of(&out));
    r.wait_until("session/e2e-run-sig ended", Duration::from_secs(30), || {
        session_field(&r, "e2e-run-sig", "endReason") == "failed"
    });
    bystanders.assert_all_alive();
}

#[test]
fn sigterm_is_forwarded_to_the_command() {
    let _scope = Scope::new(&["e2e-run-"]);
    let r = Reaper::start(&[]);
    let marker = r.dir().join("term-marker");
    let ready = r.dir().join("ready");
    let script = format!(
        "trap 'echo got-term > {m}; exit 0' TERM; {run}; touch {ready}; \
         while true; do sleep 0.1; done",
        m = marker.display(),
        run = docker_run("e2e-run-term-c"),
        ready = ready.display(),
    );
    let mut child = r
        .cli_command(&[
            "run",
            "--session",
            "e2e-run-term",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn reaper run");
    wait_until("the command started", Duration::from_secs(30), || {
        ready.exists()
    });
    let pid = child.id().to_string();
    run_with_timeout(
        Command::new("kill").args(["-TERM", &pid]),
        None,
        CLI_TIMEOUT,
    );
    let status = wait_child(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "the command's trap exits 0");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default().trim(),
        "got-term",
        "the command did not get SIGTERM"
    );
    wait_cleaned(&r, "e2e-run-term", "e2e-run-term-c");
}

#[test]
fn when_reaper_run_is_killed_the_heartbeat_lapses_and_the_daemon_cleans_up() {
    let _scope = Scope::new(&["e2e-run-"]);
    let bystanders = Bystanders::create("run-k9");
    let r = Reaper::start(&[]);
    let pidfile = r.dir().join("cmd.pid");
    let script = format!(
        "echo $$ > {p}; {run}; exec sleep 3600",
        p = pidfile.display(),
        run = docker_run("e2e-run-k9-c"),
    );
    let mut child = r
        .cli_command(&[
            "run",
            "--session",
            "e2e-run-k9",
            "--heartbeat",
            "2s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn reaper run");
    let objs = vec![(Kind::Container, "e2e-run-k9-c".to_string())];
    wait_until("the container exists", Duration::from_secs(30), || {
        all_exist(&objs)
    });
    // While reaper run lives, the heartbeat keeps the session (and its container) alive.
    assert_holds_for(
        "the container lives while reaper run renews the heartbeat",
        Duration::from_secs(4),
        || all_exist(&objs),
    );
    child.kill().expect("kill -9 reaper run");
    let _ = child.wait();
    wait_cleaned(&r, "e2e-run-k9", "e2e-run-k9-c");
    assert_eq!(
        session_field(&r, "e2e-run-k9", "endReason"),
        "heartbeatLost"
    );
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
    }
    bystanders.assert_all_alive();
}

#[test]
fn reaper_run_starts_nothing_when_it_cannot_register_the_session() {
    let _scope = Scope::new(&["e2e-run-"]);
    let r = Reaper::start(&[]);
    let marker = r.dir().join("started");
    let touch = ["touch", marker.to_str().unwrap()];

    // The daemon is unreachable.
    let mut cmd = Command::new(Reaper::bin());
    cmd.args(["--socket", "/nonexistent/reaper.sock", "run", "--"])
        .args(touch)
        .env_remove("REAPER_SOCKET");
    let out = run_with_timeout(&mut cmd, None, CLI_TIMEOUT);
    assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("cannot reach the reaper daemon"));
    assert!(stderr_of(&out).contains("touch was not started"));

    // The name is taken.
    r.cli_ok(&["session", "start", "e2e-run-taken"]);
    let out = r.cli(&[&["run", "--session", "e2e-run-taken", "--"][..], &touch].concat());
    assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("session/e2e-run-taken already exists"),
        "{}",
        stderr_of(&out)
    );

    // Bad flags: clap's usage error.
    for bad in [
        &["run", "--ttl", "0s", "--"][..],
        &["run", "--heartbeat", "soon", "--"][..],
        &["run", "--label", "novalue", "--"][..],
        &["run", "--session", "Not_A_Name!", "--"][..],
    ] {
        let out = r.cli(&[bad, &touch].concat());
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr_of(&out));
    }
    assert!(!marker.exists(), "a command was started after an error");

    // A command that does not exist: 127, and its session ends as failed.
    let out = r.cli(&[
        "run",
        "--session",
        "e2e-run-nocmd",
        "--",
        "/nonexistent/cmd",
    ]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr_of(&out));
    assert_eq!(session_field(&r, "e2e-run-nocmd", "endReason"), "failed");
}

#[test]
fn without_a_name_reaper_run_makes_one_and_says_it() {
    let r = Reaper::start(&[]);
    let out = r.cli(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    let name = stderr
        .lines()
        .find_map(|l| l.strip_prefix("reaper: session/"))
        .unwrap_or_else(|| panic!("no session name on stderr: {stderr}"));
    assert_eq!(session_field(&r, name, "endReason"), "succeeded");
}

#[test]
fn session_start_registers_a_session_without_yaml() {
    let r = Reaper::start(&[]);
    let out = r.cli_ok(&[
        "session",
        "start",
        "e2e-ss",
        "--ttl",
        "2h",
        "--heartbeat",
        "60s",
        "--cleanup-delay",
        "30m",
        "--label",
        "team=tdd",
    ]);
    assert_eq!(out.trim(), "session/e2e-ss created");
    let s = r.session("e2e-ss");
    assert_eq!(s["status"]["phase"], "Active", "{s:#}");
    assert_eq!(s["spec"]["ttl"], "2h", "{s:#}");
    assert_eq!(s["spec"]["heartbeatTimeout"], "1m", "{s:#}");
    assert_eq!(s["metadata"]["labels"]["team"], "tdd", "{s:#}");
    assert_eq!(s["spec"]["cleanup"]["delay"], "30m", "{s:#}");
    let again = r.cli(&["session", "start", "e2e-ss"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr_of(&again).contains("already exists (phase active)"),
        "{}",
        stderr_of(&again)
    );
}

fn wait_child(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            panic!("reaper run did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The shell block README prints after `<!-- tested: KEY -->`, made runnable here: the test
/// image for `busybox`, `true` for the workflow, and a unique session name.
fn readme_example(key: &str, session: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let marker = format!("<!-- tested: {key} -->\n```sh\n");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README has no example {key:?}"))
        + marker.len();
    let block = &readme[start..];
    let block = &block[..block.find("```").expect("the example's closing fence")];
    block
        .replace("busybox", TEST_IMAGE)
        .replace("./workflow.sh", "true")
        .replace("tdd-run-42", session)
}

fn run_readme_example(r: &Reaper, key: &str, session: &str) {
    let script = readme_example(key, session);
    let bin_dir = std::path::Path::new(Reaper::bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = run_with_timeout(
        Command::new("sh")
            .args(["-ec", &script])
            .env("PATH", path)
            .env("REAPER_SOCKET", r.socket())
            .env("DOCKER_HOST", docker_host()),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "README example {key:?} failed ({}):\n{script}\n{}\n{}",
        out.status,
        stderr_of(&out),
        r.log_tail()
    );
    let label = format!("label=reaper.session={session}");
    let ours = || docker_ok(&["ps", "-aq", "--filter", &label]);
    r.wait_until(
        &format!("README example {key:?}: its containers removed"),
        Duration::from_secs(30),
        || ours().trim().is_empty() && r.phase("session", session) == "Cleaned",
    );
}

#[test]
fn the_readme_examples_work_as_printed() {
    let bystanders = Bystanders::create("run-readme");
    let r = Reaper::start(&[]);
    run_readme_example(&r, "run", "e2e-run-readme-run");
    run_readme_example(&r, "cli", "e2e-run-readme-cli");
    bystanders.assert_all_alive();
}

#[test]
fn cleanup_delay_keeps_what_the_command_left_stopped_for_a_look() {
    let _scope = Scope::new(&["e2e-run-"]);
    let bystanders = Bystanders::create("run-delay");
    let r = Reaper::start(&[]);
    let script = format!("{}; exit 1", docker_run("e2e-run-delay-c"));
    let out = run_script(&r, "e2e-run-delay", &["--cleanup-delay", "1h"], &script);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_eq!(r.phase("session", "e2e-run-delay"), "Ending");
    wait_until("the container is stopped", Duration::from_secs(15), || {
        !is_running("e2e-run-delay-c")
    });
    let objs = vec![(Kind::Container, "e2e-run-delay-c".to_string())];
    assert!(all_exist(&objs), "removed despite the cleanup delay");
    r.cli_ok(&["cleanup", "session", "e2e-run-delay", "--yes"]);
    wait_cleaned(&r, "e2e-run-delay", "e2e-run-delay-c");
    bystanders.assert_all_alive();
}
