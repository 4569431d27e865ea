//! A daemon started before Docker (its socket does not exist yet, as at boot or while dockerd
//! restarts) stays up, says so in `reaper status`, deletes nothing, and starts cleaning up as
//! soon as the socket appears. Against the private engine, reached through a symlink made late.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_daemon_started_before_docker_waits_for_it_and_then_cleans_up() {
    let _scope = Scope::new(&["e2e-late-"]);
    let bystanders = Bystanders::create("late");
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("docker.sock");
    let host = format!("unix://{}", late.display());
    let mut r = Reaper::prepare(&["--docker-host", &host, "--orphan-grace-period", "1s"]);
    r.spawn();
    r.wait_ready();

    let status = r.cli_ok(&["status"]);
    assert!(status.contains("DOWN"), "{status}");
    assert!(
        status.contains(&format!("no Docker socket at {}", late.display())),
        "{status}"
    );
    // It keeps running and retrying: still up a few seconds later.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        r.wait_exit(Duration::ZERO).is_none(),
        "the daemon exited\n{}",
        r.log_tail()
    );
    r.cli_ok(&["status"]);

    // An orphan of ours waits, and goes once Docker is reachable.
    let orphan = vec![(
        Kind::Container,
        Container::new("e2e-late-orphan")
            .label("reaper.session", "e2e-late-gone")
            .create(),
    )];
    let real = docker_host();
    let real = real.strip_prefix("unix://").expect("a unix:// DOCKER_HOST");
    std::os::unix::fs::symlink(real, &late).unwrap();
    r.wait_until("Docker up in status", Duration::from_secs(60), || {
        r.cli_ok(&["status"]).contains("docker:     up")
    });
    wait_until("the orphan removed", Duration::from_secs(60), || {
        all_gone(&orphan)
    });
    bystanders.assert_all_alive();
}
