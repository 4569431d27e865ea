//! Crashed workflows: a session whose heartbeats stop (or whose ttl passes) expires, and its
//! objects are removed after the timeout, never before.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn session_objects(session: &str) -> Vec<Obj> {
    let label = [("reaper.session", session)];
    vec![
        (
            Kind::Container,
            Container::new(&format!("{session}-run"))
                .labels(&label)
                .running()
                .create(),
        ),
        (
            Kind::Container,
            Container::new(&format!("{session}-new"))
                .labels(&label)
                .created()
                .create(),
        ),
        (Kind::Network, network(&format!("{session}-net"), &label)),
        (Kind::Volume, volume(&format!("{session}-vol"), &label)),
    ]
}

#[test]
fn a_session_whose_heartbeats_stop_is_cleaned_after_the_timeout_and_not_before() {
    let _scope = Scope::new(&["e2e-crash-"]);
    let bystanders = Bystanders::create("crash");
    let r = Reaper::start(&["--resync-interval", "2s"]);
    let s = "e2e-crash-hb";
    r.apply(&format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {{name: {s}}}\n\
         spec:\n  heartbeatTimeout: 2s\n  cleanup: {{stopTimeout: 1s}}\n"
    ));
    let objs = session_objects(s);

    // Heartbeats every 500 ms for 4 s (twice the timeout): the session stays live.
    let beating = Instant::now();
    while beating.elapsed() < Duration::from_secs(4) {
        r.cli_ok(&["session", "heartbeat", s]);
        assert!(
            all_exist(&objs),
            "objects vanished while heartbeats arrived: {:?}",
            missing(&objs)
        );
        assert_eq!(r.phase("sessions", s), "Active");
        std::thread::sleep(Duration::from_millis(500));
    }
    r.cli_ok(&["session", "heartbeat", s]);
    let last_beat = Instant::now();

    // The workflow "crashes": no more heartbeats. Nothing may go before the 2 s timeout.
    assert_holds_for(
        "objects exist before the heartbeat timeout",
        Duration::from_millis(1400),
        || all_exist(&objs),
    );
    let times = gone_times(&objs, last_beat, Duration::from_secs(12));
    eprintln!("heartbeat lost: objects gone at {times:?} after the last heartbeat");
    for t in &times {
        assert!(
            *t >= Duration::from_millis(1500),
            "removed {t:?} after the last heartbeat, before the 2s timeout"
        );
    }

    r.wait_until("the session is Cleaned", Duration::from_secs(10), || {
        r.phase("sessions", s) == "Cleaned"
    });
    let rec = r.session(s);
    assert_eq!(
        rec["status"]["endReason"], "heartbeatLost",
        "record: {rec:#}"
    );
    assert_eq!(
        removed_counts(&rec),
        (2, 1, 1, 0, 0),
        "status.removed: {rec:#}"
    );
    bystanders.assert_all_alive();
}

#[test]
fn a_session_past_its_ttl_expires_and_is_cleaned() {
    let _scope = Scope::new(&["e2e-crash-"]);
    let bystanders = Bystanders::create("ttl");
    let r = Reaper::start(&["--resync-interval", "2s"]);
    let s = "e2e-crash-ttl";
    // The objects exist before the record: the ttl counts from the record's creation.
    let objs = session_objects(s);
    r.apply(&format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {{name: {s}}}\nspec: {{ttl: 3s}}\n"
    ));
    let applied = Instant::now();
    assert_eq!(r.phase("sessions", s), "Active");

    let times = gone_times(&objs, applied, Duration::from_secs(12));
    eprintln!("ttl passed: objects gone at {times:?} after apply");
    for t in &times {
        assert!(
            *t >= Duration::from_millis(2500),
            "removed {t:?} after apply, before the 3s ttl"
        );
    }
    r.wait_until("the session is Cleaned", Duration::from_secs(10), || {
        r.phase("sessions", s) == "Cleaned"
    });
    let rec = r.session(s);
    assert_eq!(rec["status"]["endReason"], "ttlExpired", "record: {rec:#}");
    bystanders.assert_all_alive();
}
