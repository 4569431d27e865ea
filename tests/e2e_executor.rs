//! Workflow executors: when a session ends (successfully or not), everything it owns is gone
//! within 2 s, and nothing of any other session or of anyone else is touched.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The budget: 10 containers (half running) plus network and volume, gone within 2 s.
const END_BUDGET: Duration = Duration::from_secs(2);

/// Ten containers (five running, five never started), one of them on the session's internal
/// network with its volume mounted, plus a labelled image: everything a workflow leaves behind.
fn workload(session: &str) -> Vec<Obj> {
    let label = ("reaper.session", session);
    let net = network(&format!("{session}-net"), &[label]);
    let vol = volume(&format!("{session}-vol"), &[label]);
    let img = image(&format!("{session}-img:1"), &[label]);
    let mut objs = vec![
        (Kind::Network, net.clone()),
        (Kind::Volume, vol.clone()),
        (Kind::Image, img),
    ];
    for i in 0..10 {
        let mut c = Container::new(&format!("{session}-c{i}")).label(label.0, label.1);
        if i < 2 {
            // Our own instance named explicitly: still ours.
            c = c.label("reaper.instance", INSTANCE);
        }
        if i == 0 {
            c = c.network(&net).volume(&vol);
        }
        c = if i % 2 == 0 { c.running() } else { c.created() };
        objs.push((Kind::Container, c.create()));
    }
    objs
}

/// Ends the session and measures, from the moment `session end` returns, until all is gone.
fn end_and_measure(r: &Reaper, session: &str, objs: &[Obj], failed: bool) -> Duration {
    let mut args = vec!["session", "end", session];
    if failed {
        args.push("--failed");
    }
    r.cli_ok(&args);
    let ended = Instant::now();
    r.wait_until(
        &format!("every object of session {session} is gone"),
        Duration::from_secs(15),
        || all_gone(objs),
    );
    let took = ended.elapsed();
    eprintln!(
        "session {session}: {} objects gone {took:?} after `session end` returned",
        objs.len()
    );
    took
}

fn wait_cleaned(r: &Reaper, session: &str) -> serde_json::Value {
    r.wait_until(
        &format!("session {session} is Cleaned"),
        Duration::from_secs(10),
        || r.phase("sessions", session) == "Cleaned",
    );
    r.session(session)
}

#[test]
fn ending_a_session_removes_all_it_owns_within_two_seconds_and_nothing_else() {
    let _scope = Scope::new(&["e2e-exec-"]);
    let bystanders = Bystanders::create("exec");
    let r = Reaper::start(&["--resync-interval", "2s"]);
    let applied = r.apply_file(&fixture("executor-sessions.yaml"));
    for name in ["e2e-exec-ok", "e2e-exec-failed", "e2e-exec-adopted"] {
        assert!(
            applied.contains(&format!("session/{name} created")),
            "apply output: {applied}"
        );
    }

    let ok = workload("e2e-exec-ok");
    let failed = workload("e2e-exec-failed");
    let tmp = r.paths_root().join("e2e-exec-ok-tmp");
    write_file(&tmp, "nested/out.log", "build output");

    // Live sessions keep everything, across a resync.
    assert_holds_for(
        "objects of live sessions exist",
        Duration::from_millis(2300),
        || all_exist(&ok) && all_exist(&failed) && tmp.exists(),
    );
    assert_eq!(r.phase("sessions", "e2e-exec-ok"), "Active");

    // A successful end.
    let took = end_and_measure(&r, "e2e-exec-ok", &ok, false);
    r.wait_until(
        "the session's path is deleted",
        Duration::from_secs(5),
        || !tmp.exists(),
    );
    assert!(
        took <= END_BUDGET,
        "session end took {took:?} (budget {END_BUDGET:?})"
    );
    assert!(
        all_exist(&failed),
        "ending e2e-exec-ok removed objects of another session: missing {:?}",
        missing(&failed)
    );
    let rec = wait_cleaned(&r, "e2e-exec-ok");
    assert_eq!(rec["status"]["endReason"], "succeeded", "record: {rec:#}");
    assert!(
        rec["status"]["endedAt"].is_string(),
        "endedAt is set: {rec:#}"
    );
    assert!(
        rec["status"]["cleanedAt"].is_string(),
        "cleanedAt is set: {rec:#}"
    );
    assert_eq!(
        removed_counts(&rec),
        (10, 1, 1, 1, 1),
        "status.removed: {rec:#}"
    );
    assert_eq!(rec["metadata"]["labels"]["team"], "e2e");

    // A failed end: the same cleanup, a different recorded reason.
    let took = end_and_measure(&r, "e2e-exec-failed", &failed, true);
    assert!(
        took <= END_BUDGET,
        "session end --failed took {took:?} (budget {END_BUDGET:?})"
    );
    let rec = wait_cleaned(&r, "e2e-exec-failed");
    assert_eq!(rec["status"]["endReason"], "failed", "record: {rec:#}");
    assert_eq!(
        removed_counts(&rec),
        (10, 1, 1, 1, 0),
        "status.removed: {rec:#}"
    );

    bystanders.assert_all_alive();
}

#[test]
fn a_session_adopts_objects_by_session_id_label_and_by_its_match_labels() {
    let _scope = Scope::new(&["e2e-exec-"]);
    let bystanders = Bystanders::create("adopt");
    let r = Reaper::start(&["--resync-interval", "2s"]);
    r.apply_file(&fixture("executor-sessions.yaml"));

    let s = "e2e-exec-adopted";
    let owned: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("e2e-exec-ad-sid1")
                .label("session_id", s)
                .create(),
        ),
        (
            Kind::Container,
            Container::new("e2e-exec-ad-sid2")
                .label("session_id", s)
                .created()
                .create(),
        ),
        (
            Kind::Container,
            Container::new("e2e-exec-ad-wf1")
                .label("workflow", "e2e-wf-7")
                .create(),
        ),
        (
            Kind::Container,
            Container::new("e2e-exec-ad-wf2")
                .label("workflow", "e2e-wf-7")
                .created()
                .create(),
        ),
        (
            Kind::Network,
            network("e2e-exec-ad-net", &[("session_id", s)]),
        ),
        (
            Kind::Volume,
            volume("e2e-exec-ad-vol", &[("workflow", "e2e-wf-7")]),
        ),
    ];
    // Not matched by the session: another workflow's label, and another session's id.
    let others: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("e2e-exec-ad-wf8")
                .label("workflow", "e2e-wf-8")
                .create(),
        ),
        (
            Kind::Container,
            Container::new("e2e-exec-ad-sid-ok")
                .label("session_id", "e2e-exec-ok")
                .create(),
        ),
    ];

    assert_holds_for(
        "adopted objects of a live session exist",
        Duration::from_millis(2300),
        || all_exist(&owned) && all_exist(&others),
    );
    let took = end_and_measure(&r, s, &owned, false);
    assert!(
        took <= END_BUDGET,
        "session end took {took:?} (budget {END_BUDGET:?})"
    );
    let rec = wait_cleaned(&r, s);
    assert_eq!(removed_counts(&rec).0, 4, "status.removed: {rec:#}");
    assert_eq!(removed_counts(&rec).1, 1, "status.removed: {rec:#}");
    assert_eq!(removed_counts(&rec).2, 1, "status.removed: {rec:#}");
    // e2e-exec-ok is Active (applied, never ended): its adopted container stays too.
    assert_holds_for(
        "objects of other owners survive",
        Duration::from_millis(500),
        || all_exist(&others),
    );

    bystanders.assert_all_alive();
}

/// Sessions ended one after another while the first ones' removals still run: the passes that
/// plan the later ones overlap removals, list objects that are half-way gone and queue them
/// again. Every container must still be removed, and counted, exactly once.
#[test]
fn a_burst_of_ended_sessions_is_removed_and_counted_exactly_once() {
    let _scope = Scope::new(&["e2e-burst-"]);
    let bystanders = Bystanders::create("burst");
    let r = Reaper::start(&[]);
    let names: Vec<String> = (0..6).map(|i| format!("e2e-burst-{i}")).collect();
    let docs: Vec<String> = names
        .iter()
        .map(|n| format!("apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {n}\n"))
        .collect();
    r.apply(&docs.join("---\n"));
    let mut objs = Vec::new();
    for n in &names {
        for i in 0..8 {
            let c = Container::new(&format!("{n}-c{i}")).label("reaper.session", n);
            let c = if i % 2 == 0 { c.running() } else { c.created() };
            objs.push((Kind::Container, c.create()));
        }
    }
    let before = metric(
        &r.metrics_addr(),
        "reaper_cleanups_total{reason=\"sessionEnded\",resource=\"container\"}",
    )
    .unwrap_or(0.0);

    for n in &names {
        r.cli_ok(&["session", "end", n]);
    }
    r.wait_until(
        "every container of the burst is gone",
        Duration::from_secs(30),
        || all_gone(&objs),
    );
    for n in &names {
        let rec = wait_cleaned(&r, n);
        assert_eq!(
            removed_counts(&rec),
            (8, 0, 0, 0, 0),
            "status.removed: {rec:#}"
        );
    }
    let after = metric(
        &r.metrics_addr(),
        "reaper_cleanups_total{reason=\"sessionEnded\",resource=\"container\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(after - before, 48.0, "each container counted once");
    bystanders.assert_all_alive();
}

/// A stop waits up to the session's `stopTimeout`, however short `dockerTimeout` is: the stop
/// call's bound is the sum. (bollard's client-wide timeout used to cut it at `dockerTimeout`,
/// counting a timeout failure and a retry for a stop that was going as planned.)
#[test]
fn a_stop_longer_than_the_docker_timeout_is_waited_for_not_failed() {
    let _scope = Scope::new(&["e2e-slowstop-"]);
    let r = Reaper::start(&["--docker-timeout", "2s"]);
    let name = "e2e-slowstop-1";
    r.apply(&format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {name}\nspec:\n  cleanup:\n    stopTimeout: 4s\n"
    ));
    let id = Container::new(&format!("{name}-c"))
        .label("reaper.session", name)
        .ignoring_sigterm()
        .create();
    let objs = vec![(Kind::Container, id)];
    r.cli_ok(&["session", "end", name]);
    let ended = Instant::now();
    r.wait_until("the container is gone", Duration::from_secs(20), || {
        all_gone(&objs)
    });
    let took = ended.elapsed();
    assert!(
        took >= Duration::from_millis(3500),
        "removed after {took:?}: the graceful stop was not waited for"
    );
    let rec = wait_cleaned(&r, name);
    assert_eq!(removed_counts(&rec), (1, 0, 0, 0, 0), "status: {rec:#}");
    let addr = r.metrics_addr();
    for series in [
        "reaper_docker_api_errors_total{operation=\"stop\"}",
        "reaper_cleanup_failures_total{error=\"timeout\",resource=\"container\"}",
    ] {
        assert_eq!(
            metric(&addr, series),
            Some(0.0),
            "{series}\n{}",
            r.log_tail()
        );
    }
}
