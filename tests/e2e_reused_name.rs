//! Reusing the name of a finished session (issue 13, section 2): applying a session whose
//! record has ended is refused with a conflict that names the phase, when it ended and the two
//! ways forward, through the CLI (non-zero exit) and the HTTP API (409); nothing of the batch
//! is applied. Deleting the old record frees the name.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One raw HTTP/1.1 request on the daemon's Unix socket: (status, JSON body).
fn api_call(socket: &Path, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut s = UnixStream::connect(socket).expect("connect to the API socket");
    s.set_read_timeout(Some(CLI_TIMEOUT)).unwrap();
    let body = serde_json::to_vec(body).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: reaper\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).expect("a JSON body"))
}

fn session(name: &str) -> String {
    format!("apiVersion: reaper/v1\nkind: Session\nmetadata: {{name: {name}}}\nspec: {{}}\n")
}

#[test]
fn a_finished_session_name_is_refused_until_its_record_is_deleted() {
    let _scope = Scope::new(&["e2e-rn-"]);
    let bystanders = Bystanders::create("reused");
    let r = Reaper::start(&["--resync-interval", "2s"]);
    let run = "e2e-rn-run";
    r.apply(&session(run));
    let first: Vec<Obj> = vec![(
        Kind::Container,
        Container::new("e2e-rn-run-1")
            .label("reaper.session", run)
            .create(),
    )];
    r.cli_ok(&["session", "end", run]);
    r.wait_until("the session is cleaned", Duration::from_secs(15), || {
        r.phase("sessions", run) == "Cleaned"
    });
    assert!(
        all_gone(&first),
        "its container went: {:?}",
        present(&first)
    );
    let ended_at = r.session(run)["status"]["endedAt"]
        .as_str()
        .expect("endedAt is set")
        .to_string();

    // The CLI: a batch with a new session and the finished one applies nothing, exits non-zero.
    let batch = format!("{}---\n{}", session("e2e-rn-other"), session(run));
    let out = r.cli_stdin(&["apply", "-f", "-"], &batch);
    let err = stderr_of(&out);
    assert!(
        !out.status.success(),
        "re-applying a cleaned session must fail; stdout: {}",
        stdout_of(&out)
    );
    for part in [
        format!("session/{run} ended at {ended_at} and is cleaned now"),
        format!("`reaper delete session {run} --wait`"),
        "choose a new name".to_string(),
    ] {
        assert!(err.contains(&part), "{part:?} missing from: {err}");
    }
    assert_eq!(
        r.phase("sessions", "e2e-rn-other"),
        "",
        "nothing of the batch is applied"
    );
    assert_eq!(r.phase("sessions", run), "Cleaned");

    // The API: 409 with the same message.
    let (status, body) = api_call(
        &r.socket(),
        "POST",
        "/v1/apply",
        &json!({"files": [{"name": "reuse.yaml", "content": batch}]}),
    );
    assert_eq!(status, 409, "{body}");
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(
        err.contains(msg) && msg.contains("is cleaned now"),
        "the API and the CLI say the same: {msg:?} vs {err:?}"
    );
    assert_eq!(r.phase("sessions", "e2e-rn-other"), "");

    // The first way forward: delete the old record, then the name is free.
    r.cli_ok(&["delete", "session", run, "--wait", "--timeout", "20s"]);
    let out = r.apply(&session(run));
    assert!(out.contains(&format!("session/{run} created")), "{out}");
    assert_eq!(r.phase("sessions", run), "Active");
    let second: Vec<Obj> = vec![(
        Kind::Container,
        Container::new("e2e-rn-run-2")
            .label("reaper.session", run)
            .create(),
    )];
    assert_holds_for(
        "the new run's container is kept while the new session is live",
        Duration::from_millis(2500),
        || all_exist(&second),
    );
    bystanders.assert_all_alive();
}

/// The manifest directory: a file that still declares a session that has ended is reported as
/// failing (in `reaper status`), nothing of it is applied, and the daemon keeps running. Taking
/// the document out of the file deletes the record and frees the name.
#[test]
fn a_manifest_file_that_declares_an_ended_session_is_reported_not_applied() {
    let _scope = Scope::new(&["e2e-rm-"]);
    let bystanders = Bystanders::create("reusedmd");
    let mut r = Reaper::prepare(&["--resync-interval", "2s"]);
    let dir = r.dir().join("manifests");
    std::fs::create_dir(&dir).unwrap();
    let file = write_file(
        &dir,
        "runs.yaml",
        &format!("{}---\n{}", session("e2e-rm-run"), session("e2e-rm-other")),
    );
    r.set_extra(&[
        "--resync-interval",
        "2s",
        "--manifests",
        &dir.display().to_string(),
    ]);
    r.spawn();
    r.wait_ready();
    r.wait_until("the file is applied", Duration::from_secs(5), || {
        r.phase("sessions", "e2e-rm-run") == "Active"
    });
    r.cli_ok(&["session", "end", "e2e-rm-run"]);
    r.wait_until("the session is cleaned", Duration::from_secs(15), || {
        r.phase("sessions", "e2e-rm-run") == "Cleaned"
    });

    // The runner writes the file again, with a change to the other session.
    let edited = session("e2e-rm-other").replace("spec: {}", "spec: {ttl: 2h}");
    write_file(
        &dir,
        "runs.yaml",
        &format!("{}---\n{edited}", session("e2e-rm-run")),
    );
    let shown = file.display().to_string();
    r.wait_until(
        "reaper status names the file and why",
        Duration::from_secs(5),
        || {
            let status = r.cli_ok(&["status", "-o", "json"]);
            status.contains(&shown) && status.contains("session/e2e-rm-run ended at")
        },
    );
    let status = r.cli_ok(&["status", "-o", "json"]);
    assert!(
        status.contains(&format!("Remove it from {shown}")),
        "{status}"
    );
    assert!(
        r.session("e2e-rm-other")["spec"]["ttl"].is_null(),
        "nothing of the file is applied"
    );
    assert_eq!(r.phase("sessions", "e2e-rm-run"), "Cleaned");

    // The way forward: take the document out; the record goes, and the name is free.
    write_file(&dir, "runs.yaml", &edited);
    r.wait_until(
        "the ended record is deleted",
        Duration::from_secs(10),
        || r.phase("sessions", "e2e-rm-run").is_empty(),
    );
    r.wait_until(
        "the rest of the file is applied",
        Duration::from_secs(5),
        || r.session("e2e-rm-other")["spec"]["ttl"] == "2h",
    );
    let status = r.cli_ok(&["status", "-o", "json"]);
    assert!(!status.contains(&shown), "the error is resolved: {status}");
    write_file(
        &dir,
        "runs.yaml",
        &format!("{edited}---\n{}", session("e2e-rm-run")),
    );
    r.wait_until("the name is declared anew", Duration::from_secs(5), || {
        r.phase("sessions", "e2e-rm-run") == "Active"
    });
    bystanders.assert_all_alive();
}
