//! The harness itself: the private engine answers, the test image runs, bystanders are
//! created and checked. Runs before any reaper feature exists, so a broken harness is told
//! apart from a broken reaper.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn the_private_engine_runs_the_test_image_without_networking() {
    let _scope = Scope::new(&["harness-"]);
    let id = Container::new("harness-c")
        .label("reaper-test", "1")
        .create();
    assert!(is_running(&id), "a started test container runs");
    let net = docker_ok(&["inspect", "--format", "{{.HostConfig.NetworkMode}}", &id]);
    assert_eq!(net, "none");
    let created = Container::new("harness-created").created().create();
    assert!(exists(Kind::Container, &created) && !is_running(&created));
    assert_eq!(labels_of(Kind::Container, &id)["reaper-test"], "1");
    remove_quietly(Kind::Container, &id);
    assert!(!exists(Kind::Container, &id));
}

#[test]
fn bystanders_are_created_and_checked() {
    let started = std::time::Instant::now();
    let b = Bystanders::create("harness");
    eprintln!("bystanders created in {:?}", started.elapsed());
    b.assert_all_alive();
    // assert_all_alive must notice a vanished bystander.
    remove_quietly(Kind::Container, "anvyl-agent");
    let caught = std::panic::catch_unwind(|| b.assert_all_alive());
    assert!(caught.is_err(), "a removed bystander must be reported");
}

#[test]
fn waits_are_bounded_and_report_elapsed_time() {
    let took = wait_until("a flag is set", Duration::from_secs(1), || true);
    assert!(took < Duration::from_millis(100));
    let err = try_wait_until(Duration::from_millis(100), || false).unwrap_err();
    assert!(err >= Duration::from_millis(100));
}

#[test]
fn the_private_engine_can_be_stopped_and_restarted_with_its_data() {
    let _scope = Scope::new(&["harness-"]);
    let id = Container::new("harness-restart")
        .label("reaper-test", "1")
        .create();
    stop_docker_engine();
    let down = docker(&["version"]);
    assert!(
        !down.status.success(),
        "the engine still answers after stop"
    );
    start_docker_engine();
    assert!(
        exists(Kind::Container, &id),
        "a container survives an engine restart"
    );
    assert!(
        exists(Kind::Image, TEST_IMAGE),
        "the test image survives an engine restart"
    );
    let again = Container::new("harness-after-restart").create();
    assert!(is_running(&again));
}

/// The probes that tell a wedged engine from a healthy one, on a healthy one: ping and a
/// network list answer, and a goroutine dump is taken and kept.
#[test]
fn a_healthy_engine_is_not_reported_wedged_and_can_dump_its_goroutines() {
    assert!(wedge::engine_pings(), "the private engine answers /_ping");
    let diagnosis = wedge::diagnose();
    assert!(diagnosis.contains("not wedged"), "{diagnosis}");
    assert!(!wedge::is_wedged());
    let kept = wedge::goroutine_dump().expect("a goroutine dump");
    let stacks = std::fs::read_to_string(&kept).unwrap_or_default();
    let _ = std::fs::remove_file(&kept);
    assert!(
        stacks.contains("goroutine "),
        "stacks in {}",
        kept.display()
    );
}
