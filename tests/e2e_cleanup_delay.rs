//! Delayed cleanup (`spec.cleanup.delay`, `delayOnFailure`, config `cleanupDelay`): a session
//! that ends is `Ending` for its delay, its running containers are stopped at once and nothing
//! of it is removed until the delay passes; the delay survives a restart; `cleanup --yes`
//! skips it. Against the private engine, bystanders kept alive.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn session_yaml(name: &str, cleanup: &str) -> String {
    format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  cleanup: {{{cleanup}}}\n"
    )
}

/// A running and a created container and a network of session `s`.
fn objects_of(s: &str) -> (String, Vec<Obj>) {
    let label = [("reaper.session", s)];
    let running = Container::new(&format!("{s}-run"))
        .labels(&label)
        .running()
        .create();
    let objs = vec![
        (Kind::Container, running.clone()),
        (
            Kind::Container,
            Container::new(&format!("{s}-idle")).labels(&label).create(),
        ),
        (Kind::Network, network(&format!("{s}-net"), &label)),
    ];
    (running, objs)
}

#[test]
fn an_ended_session_keeps_its_objects_for_its_delay_and_its_containers_stop_at_once() {
    let _scope = Scope::new(&["e2e-dl-"]);
    let bystanders = Bystanders::create("delay");
    let mut r = Reaper::start(&[]);
    let delay = Duration::from_secs(8);
    r.apply(&session_yaml("e2e-dl-s", "delay: 8s"));
    let (running, objs) = objects_of("e2e-dl-s");

    let out = r.cli_ok(&["session", "end", "e2e-dl-s", "--failed"]);
    let ended = Instant::now();
    assert_eq!(out.trim(), "session/e2e-dl-s ending");
    wait_until(
        "the running container is stopped",
        Duration::from_secs(10),
        || !is_running(&running),
    );
    assert!(
        all_exist(&objs),
        "removed during the delay: {:?}",
        missing(&objs)
    );
    let s = r.session("e2e-dl-s");
    assert_eq!(s["status"]["phase"], "Ending", "{s:#}");
    assert_eq!(
        s["status"]["conditions"][0]["type"], "CleanupDelayed",
        "{s:#}"
    );
    assert!(s["status"]["cleanupAfter"].is_string(), "{s:#}");
    let wide = r.cli_ok(&["get", "sessions", "e2e-dl-s", "-o", "wide"]);
    assert!(wide.contains(" in "), "time left not shown:\n{wide}");

    // The delay is a deadline in the store: a restart neither forgets nor restarts it.
    r.restart();
    assert_eq!(r.phase("session", "e2e-dl-s"), "Ending");
    let kept_until = delay.saturating_sub(ended.elapsed() + Duration::from_millis(700));
    assert_holds_for("nothing removed during the delay", kept_until, || {
        all_exist(&objs)
    });
    wait_until(
        "removed once the delay passed",
        Duration::from_secs(30),
        || all_gone(&objs),
    );
    assert!(
        ended.elapsed() >= delay,
        "removed after {:?}",
        ended.elapsed()
    );
    r.wait_until("session Cleaned", Duration::from_secs(20), || {
        r.phase("session", "e2e-dl-s") == "Cleaned"
    });
    let s = r.session("e2e-dl-s");
    assert_eq!(s["status"]["endReason"], "failed", "{s:#}");
    assert!(s["status"]["conditions"].is_null(), "{s:#}");
    bystanders.assert_all_alive();
}

#[test]
fn cleanup_session_yes_skips_the_delay() {
    let _scope = Scope::new(&["e2e-dlskip-"]);
    let bystanders = Bystanders::create("delay-skip");
    // The daemon-wide default delay applies to a spec without one.
    let r = Reaper::start(&["--cleanup-delay", "1h"]);
    r.apply(&session_yaml("e2e-dlskip-s", "images: true"));
    let (running, objs) = objects_of("e2e-dlskip-s");
    r.cli_ok(&["session", "end", "e2e-dlskip-s"]);
    wait_until(
        "the running container is stopped",
        Duration::from_secs(10),
        || !is_running(&running),
    );
    assert_eq!(r.phase("session", "e2e-dlskip-s"), "Ending");
    assert!(all_exist(&objs));

    r.cli_ok(&["cleanup", "session", "e2e-dlskip-s", "--yes"]);
    wait_until("removed at once", Duration::from_secs(20), || {
        all_gone(&objs)
    });
    r.wait_until("session Cleaned", Duration::from_secs(20), || {
        r.phase("session", "e2e-dlskip-s") == "Cleaned"
    });
    bystanders.assert_all_alive();
}

#[test]
fn a_failed_agent_keeps_its_container_for_its_failure_delay() {
    let _scope = Scope::new(&["anvyl-agent-e2e-dla"]);
    let bystanders = Bystanders::create("delay-agent");
    let r = Reaper::start(&[]);
    r.apply(
        "apiVersion: reaper/v1\nkind: Agent\nmetadata:\n  name: e2e-dla\nspec:\n  cleanup:\n    delayOnFailure: 5s\n",
    );
    // Running first: a Stopped agent's leftover containers go at once.
    r.cli_ok(&["agent", "report", "e2e-dla", "running"]);
    let c = Container::new("anvyl-agent-e2e-dla").running().create();
    let objs = vec![(Kind::Container, c.clone())];
    r.cli_ok(&["agent", "report", "e2e-dla", "failed"]);
    let failed = Instant::now();
    wait_until(
        "the agent's container is stopped",
        Duration::from_secs(10),
        || !is_running(&c),
    );
    let a = r.agent("e2e-dla");
    assert_eq!(a["status"]["phase"], "Failed", "{a:#}");
    assert_eq!(
        a["status"]["conditions"][0]["type"], "CleanupDelayed",
        "{a:#}"
    );
    assert_holds_for(
        "kept during the delay",
        Duration::from_secs(5).saturating_sub(failed.elapsed() + Duration::from_millis(700)),
        || all_exist(&objs),
    );
    wait_until("removed after the delay", Duration::from_secs(30), || {
        all_gone(&objs)
    });
    r.wait_until("agent Stopped", Duration::from_secs(20), || {
        r.phase("agent", "e2e-dla") == "Stopped"
    });
    bystanders.assert_all_alive();
}
