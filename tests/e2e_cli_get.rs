//! `reaper get` and `reaper delete` with kubectl's habits, the CLI run as a process against a
//! real daemon: several names, label selectors, `--no-headers`, `-o name`, `--ignore-not-found`,
//! lists as `kind: List`, and times that read as "in 4m" or "12s ago" in every table (RFC 3339
//! in JSON).

mod common;

use common::*;

fn session(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n---\n"
    )
}

#[test]
fn get_takes_names_selectors_and_script_friendly_formats() {
    let r = Reaper::start(&[]);
    r.apply(&format!(
        "{}{}{}",
        session("g-a", "team: tdd, tier: ci"),
        session("g-b", "team: tdd"),
        session("g-c", "team: ops")
    ));

    let names = |args: &[&str]| -> Vec<String> {
        let out = r.cli_ok(&[&["get", "sessions"][..], args, &["-o", "name"]].concat());
        out.lines().map(String::from).collect()
    };
    assert_eq!(names(&[]), ["session/g-a", "session/g-b", "session/g-c"]);
    assert_eq!(names(&["g-c", "g-a"]), ["session/g-c", "session/g-a"]);
    assert_eq!(names(&["-l", "team=tdd"]), ["session/g-a", "session/g-b"]);
    assert_eq!(names(&["-l", "team=tdd,tier!=ci"]), ["session/g-b"]);
    assert_eq!(
        names(&["-l", "team", "-l", "!tier"]),
        ["session/g-b", "session/g-c"]
    );
    assert_eq!(names(&["g-a", "-l", "team=ops"]), Vec::<String>::new());

    // -o json|yaml of a list is a `kind: List` with `items`; one named record is itself.
    let names_of = |items: Vec<serde_json::Value>| -> Vec<String> {
        items
            .iter()
            .map(|i| {
                i["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(names_of(r.list("sessions")), ["g-a", "g-b", "g-c"]);
    let two = r.json(&["get", "sessions", "g-b", "g-a", "-o", "json"]);
    assert_eq!(names_of(list_items(&two)), ["g-b", "g-a"]);
    let one = r.json(&["get", "sessions", "g-a", "-o", "json"]);
    assert_eq!(
        (&one["kind"], &one["metadata"]["name"]),
        (&"Session".into(), &"g-a".into())
    );
    let yaml = r.cli_ok(&["get", "sessions", "-l", "team=ops", "-o", "yaml"]);
    assert!(
        yaml.starts_with("apiVersion: reaper/v1\nitems:\n- apiVersion: reaper/v1\n")
            && yaml.contains("\nkind: List\n"),
        "{yaml}"
    );
    assert_eq!(
        list_items(&r.json(&["get", "agents", "-o", "json"])),
        Vec::<serde_json::Value>::new()
    );

    let table = r.cli_ok(&["get", "sessions", "g-b", "--no-headers"]);
    assert!(table.starts_with("g-b "), "{table}");
    assert_eq!(table.lines().count(), 1, "{table}");

    // A missing name is an error that names it, after the ones found are printed.
    let out = r.cli(&["get", "sessions", "g-a", "nope", "-o", "name"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout_of(&out), "session/g-a\n");
    assert!(
        stderr_of(&out).contains("session/nope not found"),
        "{}",
        stderr_of(&out)
    );
    let out = r.cli_ok(&[
        "get",
        "sessions",
        "g-a",
        "nope",
        "-o",
        "name",
        "--ignore-not-found",
    ]);
    assert_eq!(out, "session/g-a\n");

    // A malformed selector is a usage error that says what is expected.
    let out = r.cli(&["get", "sessions", "-l", "=x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("expected key=value"),
        "{}",
        stderr_of(&out)
    );

    // delete --ignore-not-found: no error for what is not there.
    let out = r.cli(&["delete", "session", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let out = r.cli_ok(&["delete", "session", "nope", "--ignore-not-found"]);
    assert_eq!(out, "");
}

#[test]
fn a_socket_that_is_not_reapers_is_named_as_such() {
    // The private Docker engine's socket answers HTTP, with Docker's own 404s.
    let host = docker_host();
    let socket = host.strip_prefix("unix://").expect("a unix:// DOCKER_HOST");
    let out = run_with_timeout(
        std::process::Command::new(Reaper::bin()).args(["--socket", socket, "status"]),
        None,
        CLI_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("not as a reaper daemon does"), "{err}");
    assert!(err.contains("REAPER_SOCKET"), "{err}");
    assert!(!err.contains("page not found"), "{err}");
}

#[test]
fn tables_print_relative_times_and_json_keeps_rfc3339() {
    let _scope = Scope::new(&["e2e-rt-"]);
    let bystanders = Bystanders::create("rt");
    let r = Reaper::start(&["--orphan-grace-period", "1h"]);
    // An orphan that waits out its grace: removable in about an hour.
    volume("e2e-rt-vol", &[("reaper.session", "e2e-rt-ghost")]);
    // An ended session whose cleanup waits an hour.
    r.apply(
        "apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: e2e-rt-s\n\
         spec:\n  cleanup:\n    delay: 1h\n",
    );
    r.cli_ok(&["session", "end", "e2e-rt-s"]);

    let wide = r.cli_ok(&["get", "sessions", "e2e-rt-s", "-o", "wide", "--no-headers"]);
    assert!(
        wide.contains(" in 59m ") || wide.contains(" in 60m "),
        "CLEANUP-IN reads as a time left:\n{wide}"
    );
    let json = r.session("e2e-rt-s");
    let cleanup_after = json["status"]["cleanupAfter"].as_str().unwrap_or_default();
    assert!(
        cleanup_after.starts_with("20") && cleanup_after.ends_with('Z'),
        "JSON keeps RFC 3339: {json}"
    );

    r.wait_until("the orphan volume is listed", READY_TIMEOUT, || {
        r.cli_ok(&["orphans"]).contains("e2e-rt-vol")
    });
    let orphans = r.cli_ok(&["orphans"]);
    let row = orphans
        .lines()
        .find(|l| l.contains("e2e-rt-vol"))
        .unwrap_or_default();
    // Docker's creation times and our clock differ by up to a second either way.
    assert!(
        row.ends_with("wait: removable in 59m") || row.ends_with("wait: removable in 60m"),
        "{orphans}"
    );
    let json = r.cli_ok(&["orphans", "-o", "json"]);
    assert!(json.contains("\"wait until 20"), "{json}");

    r.wait_until("a pass has run", READY_TIMEOUT, || {
        !r.cli_ok(&["status"]).contains("last pass:  never")
    });
    let status = r.cli_ok(&["status"]);
    let last_pass = status
        .lines()
        .find_map(|l| l.strip_prefix("last pass:  "))
        .unwrap_or_default();
    assert!(
        last_pass == "now" || last_pass.ends_with("s ago"),
        "last pass reads as a time ago:\n{status}"
    );
    let json = r.json(&["status", "-o", "json"]);
    let last_pass = json["health"]["lastPass"].as_str().unwrap_or_default();
    assert!(last_pass.starts_with("20"), "{json}");
    bystanders.assert_all_alive();
}

#[test]
fn get_prints_jsonpath_and_custom_columns_and_refuses_bad_templates() {
    let r = Reaper::start(&[]);
    r.apply(&format!(
        "{}{}",
        session("jp-a", "team: tdd, reaper.io/tier: ci"),
        session("jp-b", "team: ops")
    ));

    let out = r.cli_ok(&[
        "get",
        "sessions",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name} {.status.phase}{"\n"}{end}"#,
    ]);
    assert_eq!(out, "jp-a Active\njp-b Active\n");
    let out = r.cli_ok(&[
        "get",
        "sessions",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(out, "jp-a jp-b");
    let out = r.cli_ok(&["get", "session", "jp-a", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(out, "Active");
    let out = r.cli_ok(&[
        "get",
        "session",
        "jp-a",
        "-o",
        "jsonpath=tier={.metadata.labels['reaper.io/tier']}",
    ]);
    assert_eq!(out, "tier=ci");

    let cols = "custom-columns=NAME:.metadata.name,TEAM:.metadata.labels.team,TIER:.metadata.labels['reaper.io/tier']";
    let out = r.cli_ok(&["get", "sessions", "-o", cols]);
    assert_eq!(
        out,
        "NAME   TEAM   TIER\njp-a   tdd    ci\njp-b   ops    <none>\n"
    );
    let out = r.cli_ok(&[
        "get",
        "sessions",
        "-o",
        cols,
        "--no-headers",
        "-l",
        "team=ops",
    ]);
    assert_eq!(out, "jp-b   ops    <none>\n");

    // A bad template: a usage error saying where and why, and nothing on stdout.
    for (format, why) in [
        ("jsonpath={.items[*}", "at column 19: expected ']'"),
        (
            "jsonpath={range .items[*]}{.a}",
            "at column 10: {range …} is never closed by {end}",
        ),
        (
            "custom-columns=NAME:.metadata.name,PHASE",
            "at column 36: column \"PHASE\" has no ':'",
        ),
        (
            "jsonpath={.items[?(@.a)]}",
            "at column 18: filters [?(…)] are not supported",
        ),
    ] {
        let out = r.cli(&["get", "sessions", "-o", format]);
        assert_eq!(out.status.code(), Some(2), "{format}: {}", stderr_of(&out));
        assert_eq!(stdout_of(&out), "", "{format}");
        let err = stderr_of(&out);
        assert!(err.contains(why), "{format}: {err}");
        assert!(err.contains(&format!("  {format}\n")), "{format}: {err}");
    }
}

/// The lines a running process prints, as they come.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line that `matches`; returns it and the lines before it.
fn expect_line(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &str,
    matches: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = matches(&line);
                seen.push(line);
                if hit {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line with {what} within {READY_TIMEOUT:?}; got {seen:#?}");
}

#[test]
fn get_watch_prints_the_records_then_each_change_until_interrupted() {
    let _scope = Scope::new(&["e2e-wt-"]);
    let bystanders = Bystanders::create("wt");
    let r = Reaper::start(&[]);
    r.apply(&session("w-a", "team: tdd"));
    let spawn = |args: &[&str]| {
        r.cli_command(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawns reaper get -w")
    };
    let mut table = spawn(&["get", "sessions", "-w"]);
    let mut names = spawn(&["get", "sessions", "-o", "name", "--watch", "-l", "team=tdd"]);
    let mut json = spawn(&[
        "get",
        "sessions",
        "w-b",
        "-o",
        "json",
        "-w",
        "--ignore-not-found",
    ]);
    let (table_lines, name_lines, json_lines) = (
        lines_of(&mut table),
        lines_of(&mut names),
        lines_of(&mut json),
    );

    // The current records first, with the header.
    let first = expect_line(&table_lines, "w-a", |l| l.starts_with("w-a "));
    assert!(first[0].starts_with("NAME "), "{first:?}");
    assert!(first[1].contains(" Active "), "{first:?}");
    expect_line(&name_lines, "session/w-a", |l| l == "session/w-a");

    // Then a row for each change: a new session, its end, and its deletion.
    r.apply(&session("w-b", "team: tdd"));
    let added = expect_line(&table_lines, "w-b Active", |l| {
        l.starts_with("w-b ") && l.contains(" Active ")
    });
    assert!(
        added.iter().all(|l| !l.starts_with("NAME")),
        "one header: {added:?}"
    );
    expect_line(&name_lines, "session/w-b", |l| l == "session/w-b");
    r.cli_ok(&["session", "end", "w-b"]);
    expect_line(&table_lines, "w-b ended", |l| {
        l.starts_with("w-b ") && (l.contains(" Ended ") || l.contains(" Cleaned "))
    });
    // -o json: one document per change, only for the NAME asked for.
    let docs = expect_line(&json_lines, "w-b Ended", |l| {
        l.contains("\"phase\": \"Ended\"") || l.contains("\"phase\": \"Cleaned\"")
    });
    assert!(
        docs.iter().any(|l| l.contains("\"name\": \"w-b\"")),
        "{docs:#?}"
    );
    assert!(docs.iter().all(|l| !l.contains("w-a")), "{docs:#?}");
    r.cli_ok(&["delete", "session", "w-b", "--wait"]);

    // Still following until interrupted.
    for child in [&mut table, &mut names, &mut json] {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the watcher exited on its own"
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    // A NAME that does not exist is an error at once, as without --watch.
    let out = r.cli(&["get", "sessions", "nope", "-w"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("session/nope not found"),
        "{}",
        stderr_of(&out)
    );
    bystanders.assert_all_alive();
}

#[test]
fn the_watch_endpoint_streams_lines_and_ends_after_timeout_seconds() {
    use std::io::{Read, Write};
    let r = Reaper::start(&[]);
    r.apply(&session("ws-a", "team: x"));
    let get = |path: &str| -> String {
        let mut s = std::os::unix::net::UnixStream::connect(r.socket()).expect("connects");
        s.set_read_timeout(Some(READY_TIMEOUT)).expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: reaper\r\nConnection: close\r\n\r\n"
        )
        .expect("sends");
        let mut reply = String::new();
        s.read_to_string(&mut reply)
            .expect("the stream ends in time");
        reply
    };
    let started = std::time::Instant::now();
    let reply = get("/v1/watch/sessions?timeoutSeconds=1");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{reply}"
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("content-type: application/x-ndjson"),
        "{reply}"
    );
    let added = reply.find(r#"{"type":"ADDED","object":{"#);
    assert!(reply.contains(r#""metadata":{"name":"ws-a""#), "{reply}");
    let bookmark = reply.find(r#"{"type":"BOOKMARK"}"#);
    assert!(added.is_some() && bookmark > added, "{reply}");
    let reply = get("/v1/watch/sessions?timeoutSeconds=0");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("timeoutSeconds must be a whole number from 1 to 86400"),
        "{reply}"
    );
    let reply = get("/v1/watch/nothing");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
}

/// Help that teaches, as a user reads it: every verb's `--help`, run as a process, ends with
/// examples (the unit test in `cli/mod.rs` checks every argument's description).
#[test]
fn every_verb_shows_examples_in_its_help() {
    let verbs: &[&[&str]] = &[
        &["serve"],
        &["apply"],
        &["get"],
        &["describe"],
        &["delete"],
        &["run"],
        &["session", "start"],
        &["session", "end"],
        &["session", "heartbeat"],
        &["agent", "report"],
        &["orphans"],
        &["cleanup"],
        &["status"],
        &["disk"],
        &["config", "check"],
        &["completion"],
        &["store", "export"],
        &["store", "import"],
    ];
    for verb in verbs {
        let out = run_with_timeout(
            std::process::Command::new(Reaper::bin())
                .args(*verb)
                .arg("--help"),
            None,
            CLI_TIMEOUT,
        );
        let help = stdout_of(&out);
        assert!(out.status.success(), "{verb:?} --help: {}", stderr_of(&out));
        assert!(
            help.contains("\nExample:\n  reaper ") || help.contains("\nExamples:\n  reaper "),
            "{verb:?} --help shows no examples:\n{help}"
        );
    }
    // agent report lists the phases it takes.
    let out = run_with_timeout(
        std::process::Command::new(Reaper::bin()).args(["agent", "report", "--help"]),
        None,
        CLI_TIMEOUT,
    );
    let help = stdout_of(&out);
    assert!(
        help.contains("starting, running, failed, stopped"),
        "{help}"
    );
}
