//! `reaper wait`, the CLI run as a process against a real daemon and engine: it returns when the
//! record reaches the phase (after its objects are gone, for `Cleaned`), not before; it times
//! out, refuses a phase the kind does not have, and treats a missing NAME as kubectl does.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn wait_returns_once_the_session_is_cleaned_and_not_before() {
    let _scope = Scope::new(&["e2e-wait-"]);
    let bystanders = Bystanders::create("wait");
    let r = Reaper::start(&[]);
    let s = "e2e-wait-s";
    r.cli_ok(&["session", "start", s]);
    let c = Container::new("e2e-wait-c")
        .labels(&[("reaper.session", s)])
        .running()
        .create();

    // Waiting for two phases at once: one NAME per condition, so two waiters.
    let spawn = |args: Vec<String>| {
        let mut cmd = r.cli_command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        std::thread::spawn(move || {
            let started = Instant::now();
            let out = run_with_timeout(&mut cmd, None, Duration::from_secs(90));
            (out, started.elapsed())
        })
    };
    let for_cleaned = spawn(
        [
            "wait",
            "session",
            s,
            "--for",
            "phase=cleaned",
            "--timeout",
            "60s",
        ]
        .map(String::from)
        .to_vec(),
    );
    let for_deleted = spawn(
        ["wait", "session", s, "--for", "delete", "--timeout", "60s"]
            .map(String::from)
            .to_vec(),
    );
    assert_holds_for(
        "the waiters wait while the session is Active",
        Duration::from_secs(1),
        || !for_cleaned.is_finished() && !for_deleted.is_finished(),
    );
    assert!(exists(Kind::Container, &c));

    r.cli_ok(&["session", "end", s]);
    let (out, _) = for_cleaned.join().expect("the waiter thread");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), format!("session/{s} condition met\n"));
    assert!(
        !exists(Kind::Container, &c),
        "`wait --for phase=cleaned` returned while the session's container is still there"
    );
    assert_eq!(r.phase("sessions", s), "Cleaned");
    assert!(
        !for_deleted.is_finished(),
        "`--for delete` returned for a record that still exists"
    );

    // Already met: at once, from the listing the watch starts with.
    let t0 = Instant::now();
    let out = r.cli_ok(&["wait", "session", s, "--for", "phase=Cleaned"]);
    assert_eq!(out, format!("session/{s} condition met\n"));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    r.cli_ok(&["delete", "session", s]);
    let (out, took) = for_deleted.join().expect("the waiter thread");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), format!("session/{s} condition met\n"));
    assert!(took < Duration::from_secs(60), "{took:?}");
    bystanders.assert_all_alive();
}

#[test]
fn wait_times_out_refuses_unknown_phases_and_reports_missing_names() {
    let r = Reaper::start(&[]);
    r.cli_ok(&["session", "start", "e2e-wait-live"]);

    // Each refusal: its exit status, and what stderr says.
    let refused = |args: &[&str], code: i32, says: &str| {
        let out = r.cli(args);
        assert_eq!(out.status.code(), Some(code), "{}", stderr_of(&out));
        assert!(stderr_of(&out).contains(says), "{}", stderr_of(&out));
    };
    let t0 = Instant::now();
    refused(
        &[
            "wait",
            "session",
            "e2e-wait-live",
            "--for",
            "phase=Cleaned",
            "--timeout",
            "1s",
        ],
        1,
        "timed out after 1s waiting for the condition on session/e2e-wait-live",
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // A phase the kind does not have is a usage error that lists the phases.
    refused(
        &["wait", "agent", "a", "--for", "phase=cleaned"],
        2,
        "agent phases are starting, running, failed, stopped",
    );
    refused(
        &["wait", "session", "x", "--for", "condition=Ready"],
        2,
        "write phase=PHASE or delete",
    );

    // A NAME that does not exist: not found for a phase, already met for delete.
    refused(
        &["wait", "session", "e2e-wait-none", "--for", "phase=active"],
        1,
        "session/e2e-wait-none not found",
    );
    let out = r.cli(&[
        "wait",
        "session",
        "e2e-wait-none",
        "e2e-wait-gone",
        "--for",
        "phase=active",
    ]);
    assert_eq!(
        stderr_of(&out).trim_end(),
        "error: session/e2e-wait-gone not found\nerror: session/e2e-wait-none not found",
        "every missing NAME is named"
    );
    let out = r.cli_ok(&["wait", "session", "e2e-wait-none", "--for", "delete"]);
    assert_eq!(out, "session/e2e-wait-none condition met\n");

    // Several NAMEs: each is reported as it meets the condition.
    r.cli_ok(&["session", "start", "e2e-wait-two"]);
    let out = r.cli_ok(&[
        "wait",
        "session",
        "e2e-wait-live",
        "e2e-wait-two",
        "--for",
        "phase=Active",
    ]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "session/e2e-wait-live condition met",
            "session/e2e-wait-two condition met"
        ]
    );
}
