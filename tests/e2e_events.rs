//! Docker events of ours start a pass for networks and volumes too, so `reaper status` and the
//! metrics follow them at once, not at the next resync; events of objects that are not ours
//! start none.

mod common;

use common::*;
use std::time::Duration;

/// The sum of a metric's series whose labels contain `labels` (e.g. `resource="network"`).
fn metric_sum(addr: &str, name: &str, labels: &str) -> f64 {
    scrape(addr)
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `health.<which>.<kind>` from `reaper status -o json` (0 when absent).
fn count(r: &Reaper, which: &str, kind: &str) -> i64 {
    r.json(&["status", "-o", "json"])["health"][which][kind]
        .as_i64()
        .unwrap_or(0)
}

#[test]
fn network_and_volume_events_of_ours_update_status_without_waiting_for_a_resync() {
    let _scope = Scope::new(&["e2e-ev-"]);
    let bystanders = Bystanders::create("events");
    // No resync within the test: only events (and deadlines) start passes.
    let r = Reaper::start(&["--resync-interval", "1h"]);
    r.apply("apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-ev-s}\nspec: {}\n");
    let addr = r.metrics_addr();
    let passes = || metric_sum(&addr, "reaper_reconciles_total", "result=");
    std::thread::sleep(Duration::from_millis(500));

    // Someone else's network and volume: no pass.
    let before = passes();
    let theirs = [
        ("reaper.instance", "someone-else"),
        ("reaper.session", "e2e-ev-s"),
    ];
    let other_net = network("e2e-ev-theirs-net", &theirs);
    let other_vol = volume("e2e-ev-theirs-vol", &[("team", "x")]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        passes(),
        before,
        "events of objects not ours started a pass"
    );

    // Ours: counted within moments (the resync is an hour away).
    let net = network("e2e-ev-net", &[("reaper.session", "e2e-ev-s")]);
    r.wait_until("the new network is counted", Duration::from_secs(5), || {
        count(&r, "owned", "network") == 1
    });
    assert_eq!(
        metric_sum(&addr, "reaper_owned_objects", "resource=\"network\""),
        1.0
    );
    let vol = volume("e2e-ev-vol", &[("reaper.session", "e2e-ev-ghost")]);
    r.wait_until(
        "the new orphan volume is counted",
        Duration::from_secs(5),
        || count(&r, "orphans", "volume") == 1,
    );
    assert_eq!(
        metric_sum(&addr, "reaper_orphans", "resource=\"volume\""),
        1.0
    );

    // Gone: counted gone within moments too.
    docker_ok(&["network", "rm", &net]);
    docker_ok(&["volume", "rm", &vol]);
    r.wait_until(
        "the removed network and volume are no longer counted",
        Duration::from_secs(5),
        || count(&r, "owned", "network") == 0 && count(&r, "orphans", "volume") == 0,
    );
    assert_eq!(
        metric_sum(&addr, "reaper_owned_objects", "resource=\"network\""),
        0.0
    );

    // Someone else's go: no pass.
    std::thread::sleep(Duration::from_millis(500));
    let before = passes();
    docker_ok(&["network", "rm", &other_net]);
    docker_ok(&["volume", "rm", &other_vol]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        passes(),
        before,
        "removals of objects not ours started a pass"
    );
    bystanders.assert_all_alive();
}
