//! `reaper describe` as a person reads it, and the events behind it: the effective match, the
//! conditions, relative times, and a bounded per-record event history that one spelling of each
//! reason runs through (status, CLI, logs, metrics, events) and that survives a restart.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const STEP: Duration = Duration::from_secs(30);

fn events(r: &Reaper, path: &str) -> Vec<Value> {
    // Through curl on the socket, as any client reads them.
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--unix-socket"])
        .arg(r.socket())
        .arg(format!("http://reaper{path}"));
    let out = run_with_timeout(&mut cmd, None, CLI_TIMEOUT);
    assert!(out.status.success(), "{}", stderr_of(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", stdout_of(&out)))
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not an array: {}", stdout_of(&out)))
}

fn reasons(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn describe_shows_the_effective_match_conditions_and_events_that_survive_a_restart() {
    let _scope = Scope::new(&["e2e-desc-"]);
    let bystanders = Bystanders::create("describe");
    let mut r = Reaper::start(&["--resync-interval", "1s"]);

    // An agent without a namePrefix: describe shows the default it really uses.
    let agent = "e2e-desc-agent";
    r.apply(&format!(
        "apiVersion: reaper/v1\nkind: Agent\nmetadata: {{name: {agent}}}\n"
    ));
    let text = r.cli_ok(&["describe", "agent", agent]);
    assert!(
        text.contains(&format!(
            "Match:\n  label reaper.agent={agent}\n  container names and image repositories \
             starting with anvyl-agent-{agent} (default namePrefix"
        )),
        "{text}"
    );
    assert!(!text.contains("match: {}"), "{text}");
    assert!(text.contains("Conditions:\n  <none>\n"), "{text}");

    // A repeated report counts up instead of adding a row.
    for phase in ["Running", "Failed", "Stopped", "Failed"] {
        r.cli_ok(&["agent", "report", agent, phase]);
    }
    let agent_events = events(&r, &format!("/v1/agents/{agent}/events"));
    let failed: Vec<&Value> = agent_events
        .iter()
        .filter(|e| e["message"] == format!("agent/{agent} reported failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{agent_events:#?}");
    assert_eq!(failed[0]["count"], 2, "{agent_events:#?}");
    assert_eq!(failed[0]["type"], "Warning", "{agent_events:#?}");
    let text = r.cli_ok(&["describe", "agent", agent]);
    assert!(
        text.contains("Warning   reported") && text.contains(" (x2 over "),
        "{text}"
    );

    // A session whose heartbeat lapses: expired, its container removed, cleaned.
    let session = "e2e-desc-hb";
    r.cli_ok(&["session", "start", session, "--heartbeat", "2s"]);
    let text = r.cli_ok(&["describe", "session", session]);
    assert!(text.contains("(lapses in "), "{text}");
    assert!(
        text.contains(" (now)\n") || text.contains(" ago)\n"),
        "created is relative: {text}"
    );
    let c = Container::new(&format!("{session}-c"))
        .label("reaper.session", session)
        .created()
        .create();
    r.wait_until("the session is cleaned", STEP, || {
        r.phase("session", session) == "Cleaned"
    });
    assert!(!exists(Kind::Container, &c), "its container is still there");

    let path = format!("/v1/sessions/{session}/events");
    let before = events(&r, &path);
    assert_eq!(
        reasons(&before),
        ["expired", "removed", "cleaned"],
        "{before:#?}"
    );
    assert!(
        before[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("expired (heartbeatLost): no heartbeat for 2s"),
        "{before:#?}"
    );
    assert!(
        before[1]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("removed container {session}-c (")),
        "{before:#?}"
    );

    // One spelling of the reason everywhere a person or a machine reads it.
    let record = r.session(session);
    assert_eq!(record["status"]["endReason"], "heartbeatLost", "{record:#}");
    let text = r.cli_ok(&["describe", "session", session]);
    for needle in [
        "Phase:",
        "Cleaned",
        ", heartbeatLost\n",
        "Warning   expired",
        "(heartbeatLost)",
        "Normal    removed",
        "Normal    cleaned",
        "Events:\n  TYPE      REASON    AGE",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    let log = r.log();
    assert!(
        log.contains("reason=heartbeatLost") && !log.contains("HeartbeatLost"),
        "{}",
        r.log_tail()
    );
    let scraped = scrape(&r.metrics_addr());
    assert!(
        scraped.contains(r#"reaper_cleanups_total{reason="heartbeatLost",resource="container"} 1"#),
        "{scraped}"
    );
    assert!(!scraped.contains("heartbeat_lost"), "{scraped}");

    // Passes that change nothing write no event: the history stays as it was.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(events(&r, &path), before);

    // The events are in the store: a restart keeps them.
    r.restart();
    assert_eq!(events(&r, &path), before);
    let after = r.cli_ok(&["describe", "session", session]);
    assert!(after.contains("Warning   expired"), "{after}");
    bystanders.assert_all_alive();
}
