//! Restart: every record and every status survives a daemon restart on the same data dir,
//! after a graceful stop and after a crash (SIGKILL).

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// `get sessions -o json` and `get agents -o json`, each sorted by name.
fn snapshot(r: &Reaper) -> (Vec<Value>, Vec<Value>) {
    let list = |kind: &str| {
        let mut items = r.list(kind);
        items.sort_by_key(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string());
        items
    };
    (list("sessions"), list("agents"))
}

fn assert_same(what: &str, before: &[Value], after: &[Value]) {
    assert_eq!(
        before,
        after,
        "{what} changed across the restart\n--- before ---\n{:#}\n--- after ---\n{:#}",
        Value::Array(before.to_vec()),
        Value::Array(after.to_vec())
    );
}

/// Applies the fixture and drives records into every interesting state.
fn populate(r: &Reaper) -> Vec<Obj> {
    r.apply_file(&fixture("restart.yaml"));
    let ended = vec![(
        Kind::Container,
        Container::new("e2e-rs-ended-c")
            .label("reaper.session", "e2e-rs-ended")
            .create(),
    )];
    r.cli_ok(&["session", "end", "e2e-rs-ended", "--failed"]);
    r.wait_until("e2e-rs-ended is Cleaned", Duration::from_secs(10), || {
        r.phase("sessions", "e2e-rs-ended") == "Cleaned"
    });
    assert!(all_gone(&ended));
    r.cli_ok(&["session", "heartbeat", "e2e-rs-active"]);
    r.cli_ok(&["agent", "report", "e2e-rs-starting", "starting"]);
    r.cli_ok(&["agent", "report", "e2e-rs-failed", "failed"]);
    r.wait_until("e2e-rs-failed is Stopped", Duration::from_secs(10), || {
        r.phase("agents", "e2e-rs-failed") == "Stopped"
    });
    // The live session's container must survive the restart too.
    vec![(
        Kind::Container,
        Container::new("e2e-rs-active-c")
            .label("workflow", "e2e-rs")
            .create(),
    )]
}

#[test]
fn records_and_statuses_are_identical_after_a_graceful_restart() {
    let _scope = Scope::new(&["e2e-rs-"]);
    let bystanders = Bystanders::create("restart");
    let mut r = Reaper::start(&["--resync-interval", "2s"]);
    let live = populate(&r);
    // Let the state settle: two snapshots a resync apart must already agree.
    let settled = snapshot(&r);
    std::thread::sleep(Duration::from_millis(2200));
    let before = snapshot(&r);
    assert_same("sessions (no restart, just time)", &settled.0, &before.0);
    assert_eq!(
        before.0.len(),
        2,
        "sessions: {:#}",
        Value::Array(before.0.clone())
    );
    assert_eq!(
        before.1.len(),
        2,
        "agents: {:#}",
        Value::Array(before.1.clone())
    );

    r.restart();
    let after = snapshot(&r);
    assert_same("sessions", &before.0, &after.0);
    assert_same("agents", &before.1, &after.1);

    let ended = r.session("e2e-rs-ended");
    assert_eq!(ended["status"]["phase"], "Cleaned");
    assert_eq!(ended["status"]["endReason"], "failed");
    assert_eq!(
        removed_counts(&ended).0,
        1,
        "status.removed survives: {ended:#}"
    );
    assert_eq!(r.phase("sessions", "e2e-rs-active"), "Active");
    assert_eq!(r.phase("agents", "e2e-rs-starting"), "Starting");
    assert_eq!(r.phase("agents", "e2e-rs-failed"), "Stopped");
    assert_holds_for(
        "a live session's objects survive the restart",
        Duration::from_millis(2300),
        || all_exist(&live),
    );
    bystanders.assert_all_alive();
}

#[test]
fn records_survive_a_crash() {
    let _scope = Scope::new(&["e2e-rs-"]);
    let bystanders = Bystanders::create("crash9");
    let mut r = Reaper::start(&["--resync-interval", "2s"]);
    let live = populate(&r);
    let before = snapshot(&r);

    r.kill9();
    r.spawn();
    r.wait_ready();
    let after = snapshot(&r);
    // After SIGKILL every record is there with its spec and phase (what gates deletions).
    let essentials = |items: &[Value]| -> Vec<Value> {
        items
            .iter()
            .map(|i| {
                serde_json::json!([
                    i["metadata"],
                    i["spec"],
                    i["status"]["phase"],
                    i["status"]["endReason"]
                ])
            })
            .collect()
    };
    assert_same(
        "sessions (metadata, spec, phase)",
        &essentials(&before.0),
        &essentials(&after.0),
    );
    assert_same(
        "agents (metadata, spec, phase)",
        &essentials(&before.1),
        &essentials(&after.1),
    );
    assert_holds_for(
        "a live session's objects survive the crash",
        Duration::from_millis(2300),
        || all_exist(&live),
    );
    bystanders.assert_all_alive();
}
