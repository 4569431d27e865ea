//! Messages that say what happened and what to do, each seen as the CLI or `serve` prints it
//! when run as a process: a zero ttl, a host name as metricsListen, a locked store, a second
//! `serve`, phases in any case through the API.

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Output};

/// One request to the daemon's API over its socket, by curl (a process, as any client is).
fn api(r: &Reaper, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--unix-socket")
        .arg(r.socket())
        .args(["-X", method]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    cmd.arg(format!("http://reaper{path}"));
    let out = run_with_timeout(&mut cmd, None, CLI_TIMEOUT);
    let text = stdout_of(&out);
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    let code = code.trim().parse().unwrap_or_else(|_| panic!("{text:?}"));
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `reaper serve ARGS` run to its exit (bounded), for the start-up errors.
fn serve_exits(args: &[&str]) -> Output {
    let mut cmd = Command::new(Reaper::bin());
    cmd.arg("serve")
        .args(args)
        .env("DOCKER_HOST", docker_host())
        .env_remove("REAPER_SOCKET");
    run_with_timeout(&mut cmd, None, CLI_TIMEOUT)
}

fn session_names(r: &Reaper) -> Vec<String> {
    r.list("sessions")
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_zero_ttl_or_heartbeat_is_refused_by_every_way_in() {
    let r = Reaper::start(&[]);

    // A manifest through the API: 422 with the located field, nothing applied.
    for (key, yaml) in [
        ("spec.ttl", "spec:\\n  ttl: 0s\\n"),
        (
            "spec.heartbeatTimeout",
            "spec:\\n  ttl: 1h\\n  heartbeatTimeout: 0s\\n",
        ),
    ] {
        let body = format!(
            r#"{{"files":[{{"name":"zero.yaml","content":"apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: e2e-zero\n{yaml}"}}]}}"#
        );
        let (code, reply) = api(&r, "POST", "/v1/apply", Some(&body));
        assert_eq!(code, 422, "{reply:#}");
        let text = reply.to_string();
        assert!(
            text.contains(&format!("{key}: must be greater than 0s")) && text.contains("zero.yaml"),
            "{text}"
        );
    }

    // The imperative commands: clap's usage error naming the flag.
    for args in [
        &["session", "start", "e2e-zero", "--ttl", "0s"][..],
        &["session", "start", "e2e-zero", "--heartbeat", "0ms"][..],
    ] {
        let out = r.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
        let err = stderr_of(&out);
        assert!(
            err.contains(&format!("'{}", args[3])) && err.contains("must be greater than 0s"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        session_names(&r),
        Vec::<String>::new(),
        "something was applied"
    );
}

#[test]
fn metrics_listen_takes_a_host_name_or_says_an_address_is_needed() {
    // A host name resolves: the daemon serves /metrics on loopback.
    let port = free_port();
    let r = Reaper::start(&["--metrics-listen", &format!("localhost:{port}")]);
    let scraped = scrape(&format!("127.0.0.1:{port}"));
    assert!(scraped.contains("reaper_build_info"), "{scraped}");
    drop(r);

    // A bad value on the command line: clap names the flag; the daemon does not start.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let out = serve_exits(&["--data-dir", &data, "--metrics-listen", "localhost"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'--metrics-listen <ADDR>'") && err.contains("expected IP:PORT or HOST:PORT"),
        "{err}"
    );

    // In a config file: one line naming the file, the line and the key.
    let config = write_file(
        dir.path(),
        "config.yaml",
        "apiVersion: reaper/v1\nkind: Config\nmetricsListen: localhost\n",
    );
    let config = config.display().to_string();
    let out = serve_exits(&["--data-dir", &data, "--config", &config]);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{config}: line 3"))
            && err.contains("metricsListen: invalid address \"localhost\": no port")
            && err.contains("expected IP:PORT or HOST:PORT"),
        "{err}"
    );
}

#[test]
fn a_second_daemon_or_an_offline_command_says_who_holds_the_store_in_one_line() {
    let r = Reaper::start(&[]);
    r.cli_ok(&["session", "start", "e2e-first-keeps-working"]);
    let pid = r.pid().expect("the first daemon's pid");
    let data = r.data_dir().display().to_string();
    let socket = r.socket().display().to_string();
    let other_socket = r.dir().join("other.sock").display().to_string();
    let store = r.data_dir().join("store").display().to_string();
    let metrics = format!("127.0.0.1:{}", free_port());
    let common = ["--data-dir", &data, "--metrics-listen", &metrics];

    let one_line = |out: &Output, expected: &str| {
        let err = stderr_of(out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
        assert!(err.contains(expected), "expected {expected:?} in: {err}");
        for noise in ["Os {", "WouldBlock", "Safe mode", "Starting reaper"] {
            assert!(!err.contains(noise), "{noise:?} in: {err}");
        }
        assert!(
            stdout_of(out).trim().is_empty(),
            "stdout: {}",
            stdout_of(out)
        );
    };

    // The same socket: only "already serving", with the first daemon's pid.
    let out = serve_exits(&[&common[..], &["--socket", &socket]].concat());
    one_line(
        &out,
        &format!("error: another reaper is already serving on {socket} (pid {pid})"),
    );
    // Another socket, the same data dir, with or without --once: the store is in use.
    let in_use = format!(
        "error: the store at {store} is locked: it is in use by another reaper process (pid {pid}); \
         stop that process first"
    );
    for once in [&[][..], &["--once"][..]] {
        let out = serve_exits(&[&common[..], &["--socket", &other_socket], once].concat());
        one_line(&out, &in_use);
        assert!(
            !r.dir().join("other.sock").exists(),
            "the second daemon bound its socket"
        );
    }
    // An offline command on the daemon's data dir.
    let out = r.cli(&["store", "export", "--data-dir", &data]);
    one_line(&out, &in_use);

    // The first daemon is untouched and keeps working.
    assert_eq!(r.phase("session", "e2e-first-keeps-working"), "Active");
    r.cli_ok(&["session", "end", "e2e-first-keeps-working"]);
    r.wait_until(
        "the first daemon cleans up the ended session",
        std::time::Duration::from_secs(30),
        || r.phase("session", "e2e-first-keeps-working") == "Cleaned",
    );
}

#[test]
fn the_api_takes_a_reported_phase_in_any_case_as_the_cli_does() {
    let r = Reaper::start(&[]);
    r.apply("apiVersion: reaper/v1\nkind: Agent\nmetadata: {name: e2e-any-case}\n");
    let report = |phase: &str| {
        api(
            &r,
            "POST",
            "/v1/agents/e2e-any-case/report",
            Some(&format!(r#"{{"phase": "{phase}"}}"#)),
        )
    };
    for (sent, shown) in [
        ("running", "Running"),
        ("FAILED", "Failed"),
        ("Stopped", "Stopped"),
    ] {
        let (code, record) = report(sent);
        assert_eq!(code, 200, "{sent}: {record:#}");
        // The reply is the record as written (a Failed agent with nothing left to clean is set
        // Stopped moments later, so a second read would race).
        assert_eq!(record["status"]["phase"], shown, "{sent}: {record:#}");
    }
    let (code, reply) = report("done");
    assert_eq!(code, 400, "{reply:#}");
    assert!(
        reply.to_string().contains("unknown phase")
            && reply
                .to_string()
                .contains("Starting, Running, Failed, Stopped (any case)"),
        "{reply:#}"
    );
    // The CLI, as before: any case.
    r.cli_ok(&["agent", "report", "e2e-any-case", "RUNNING"]);
    assert_eq!(r.phase("agent", "e2e-any-case"), "Running");
}
