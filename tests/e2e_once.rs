//! `serve --once`: one reconcile pass over the stored records and the engine, then exit;
//! exit code 0 when every removal succeeded.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn once_runs_a_single_pass_and_exits_zero_when_all_removals_succeed() {
    let _scope = Scope::new(&["e2e-once-"]);
    let bystanders = Bystanders::create("once");

    // Record a session with a short ttl, then stop the daemon before it can act.
    let mut r = Reaper::start(&["--resync-interval", "1h"]);
    r.apply(
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-once-s}\nspec: {ttl: 2s}\n",
    );
    let applied = std::time::Instant::now();
    let status = r.stop();
    assert!(
        status.success(),
        "reaper exited with {status} on SIGTERM\n{}",
        r.log_tail()
    );

    let label = [("reaper.session", "e2e-once-s")];
    let objs: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("e2e-once-s-run").labels(&label).create(),
        ),
        (
            Kind::Container,
            Container::new("e2e-once-s-new")
                .labels(&label)
                .created()
                .create(),
        ),
        (Kind::Network, network("e2e-once-s-net", &label)),
        (Kind::Volume, volume("e2e-once-s-vol", &label)),
    ];
    // An orphan created while reaper was down: its grace counts from when reaper first sees it.
    let ghost = vec![(
        Kind::Container,
        Container::new("e2e-once-ghost")
            .label("reaper.session", "e2e-once-ghost")
            .created()
            .create(),
    )];
    // Past the ttl.
    let ready = (applied + Duration::from_millis(2500))
        .max(std::time::Instant::now() + Duration::from_millis(1500));
    std::thread::sleep(ready.saturating_duration_since(std::time::Instant::now()));

    r.set_extra(&["--once", "--orphan-grace-period", "3s"]);
    r.spawn();
    r.assert_exits_cleanly(Duration::from_secs(60));
    assert!(
        all_gone(&objs),
        "serve --once left objects behind: {:?}\n{}",
        present(&objs),
        r.log_tail()
    );
    assert!(
        all_exist(&ghost),
        "an orphan first seen by this run was removed before its grace\n{}",
        r.log_tail()
    );

    // The next run counts the grace from the sighting the first one stored, not from its own
    // start: the orphan goes now.
    std::thread::sleep(Duration::from_millis(3200));
    r.spawn();
    let status = r
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("serve --once did not exit within 60s\n{}", r.log_tail()));
    assert!(status.success(), "serve --once exited with {status}");
    assert!(
        all_gone(&ghost),
        "the second --once kept an orphan first seen over 3 s before: the sighting was lost\n{}",
        r.log_tail()
    );

    // The pass recorded its result: a normal daemon on the same data dir sees it cleaned.
    r.set_extra(&["--resync-interval", "1h"]);
    r.spawn();
    r.wait_ready();
    let rec = r.session("e2e-once-s");
    assert_eq!(
        rec["status"]["phase"], "Cleaned",
        "record after --once: {rec:#}"
    );
    assert_eq!(
        rec["status"]["endReason"], "ttlExpired",
        "record after --once: {rec:#}"
    );
    bystanders.assert_all_alive();
}

#[test]
fn once_with_nothing_to_do_exits_zero_and_removes_nothing() {
    let _scope = Scope::new(&["e2e-once-"]);
    let bystanders = Bystanders::create("once0");
    let young = vec![(
        Kind::Container,
        Container::new("e2e-once-young")
            .label("reaper.session", "e2e-once-nobody")
            .create(),
    )];
    let mut r = Reaper::prepare(&["--once"]);
    r.spawn();
    r.assert_exits_cleanly(Duration::from_secs(60));
    // Default grace period (5m): a young orphan stays.
    assert!(
        all_exist(&young),
        "serve --once removed an orphan within its grace period"
    );
    bystanders.assert_all_alive();
}
