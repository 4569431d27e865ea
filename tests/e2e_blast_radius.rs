//! The blast-radius guard (`maxOrphanRemovalsPerPass`): a lost store, or a second daemon that
//! knows nothing of another's live sessions, turns many objects into "orphans" at once. reaper
//! then removes none of them and reports the hold (status, `reaper_blast_radius_held`, log)
//! until the operator confirms with `reaper cleanup --yes`.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// The hold as `reaper status -o json` shows it (`Value::Null` when not held).
fn hold(r: &Reaper) -> Value {
    r.json(&["status", "-o", "json"])["health"]["blastRadiusHeld"].clone()
}

/// Light objects labelled for `session`: created (never started) containers, volumes and
/// internal networks, `n` in all.
fn objects_of(session: &str, tag: &str, n: usize) -> Vec<Obj> {
    let label = [("reaper.session", session)];
    (0..n)
        .map(|i| {
            let name = format!("{tag}-{i:02}");
            match i % 6 {
                0..=2 => (
                    Kind::Container,
                    Container::new(&name).labels(&label).created().create(),
                ),
                3 | 4 => (Kind::Volume, volume(&name, &label)),
                _ => (Kind::Network, network(&name, &label)),
            }
        })
        .collect()
}

#[test]
fn a_wiped_store_holds_sixty_orphans_until_the_operator_confirms() {
    let _scope = Scope::new(&["e2e-br-"]);
    let bystanders = Bystanders::create("brwipe");
    let mut r = Reaper::start(&["--orphan-grace-period", "1s", "--resync-interval", "1s"]);
    r.apply("apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-br-s}\nspec: {}\n");
    let objs = objects_of("e2e-br-s", "e2e-br-o", 60);
    assert_holds_for(
        "the live session keeps its objects",
        Duration::from_secs(2),
        || all_exist(&objs),
    );
    assert!(hold(&r).is_null(), "no hold while the owner is live");

    // The store is lost: every one of the sixty is now an orphan, past its grace once seen.
    r.stop();
    std::fs::remove_dir_all(r.data_dir()).expect("wipe the data dir");
    r.spawn();
    r.wait_ready();
    r.wait_until("the blast-radius hold", Duration::from_secs(20), || {
        hold(&r)["orphans"] == 60
    });
    let held = hold(&r);
    assert_eq!(held["limit"], 50, "{held}");
    assert_eq!(held["examples"].as_array().map(Vec::len), Some(5), "{held}");
    assert_eq!(
        metric(&r.metrics_addr(), "reaper_blast_radius_held"),
        Some(1.0)
    );
    let listed = r.json(&["orphans", "-o", "json"]);
    let held_rows = listed
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("held")))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        held_rows, 60,
        "`reaper orphans` shows what is held: {listed:#}"
    );
    let text = r.cli_ok(&["status"]);
    assert!(
        text.contains("BLAST RADIUS: 60 orphans") && text.contains("reaper cleanup --yes"),
        "{text}"
    );
    assert!(
        r.log()
            .contains("Blast-radius guard: this pass would remove 60 orphans"),
        "{}",
        r.log_tail()
    );
    // Several passes later (resync 1 s), still nothing removed.
    assert_holds_for("held orphans stay", Duration::from_secs(3), || {
        all_exist(&objs)
    });
    assert_eq!(
        metric(&r.metrics_addr(), "reaper_blast_radius_held"),
        Some(1.0)
    );

    // The operator confirms: everything goes, and the hold ends.
    r.cli_ok(&["cleanup", "--yes"]);
    wait_until(
        "the confirmed orphans are gone",
        Duration::from_secs(60),
        || all_gone(&objs),
    );
    r.wait_until("the hold ends", Duration::from_secs(10), || {
        hold(&r).is_null()
    });
    assert_eq!(
        metric(&r.metrics_addr(), "reaper_blast_radius_held"),
        Some(0.0)
    );
    bystanders.assert_all_alive();
}

#[test]
fn a_second_daemon_with_an_empty_store_holds_rather_than_removes_anothers_live_objects() {
    let _scope = Scope::new(&["e2e-br2-"]);
    let bystanders = Bystanders::create("brsecond");
    let first = Reaper::start(&["--orphan-grace-period", "1s", "--resync-interval", "1s"]);
    let mut theirs = Vec::new();
    for s in ["e2e-br2-a", "e2e-br2-b", "e2e-br2-c"] {
        first.apply(&format!(
            "apiVersion: reaper/v1\nkind: Session\nmetadata: {{name: {s}}}\nspec: {{}}\n"
        ));
        theirs.extend(objects_of(s, &format!("{s}-o"), 4));
    }

    // Past the grace period for all twelve, so that no pass of the second daemon sees only a few.
    std::thread::sleep(Duration::from_millis(1500));
    // Same engine, same instance, an empty store, and a cap below the twelve objects.
    let second = Reaper::start(&[
        "--orphan-grace-period",
        "1s",
        "--resync-interval",
        "1s",
        "--max-orphan-removals-per-pass",
        "5",
    ]);
    second.wait_until("the second daemon holds", Duration::from_secs(20), || {
        hold(&second)["orphans"] == 12
    });
    assert_eq!(hold(&second)["limit"], 5);
    assert_eq!(
        metric(&second.metrics_addr(), "reaper_blast_radius_held"),
        Some(1.0)
    );
    assert_holds_for(
        "the first daemon's live objects survive the second",
        Duration::from_secs(3),
        || all_exist(&theirs),
    );
    for s in ["e2e-br2-a", "e2e-br2-b", "e2e-br2-c"] {
        assert_eq!(first.phase("session", s), "Active");
    }
    assert!(hold(&first).is_null(), "the owner's daemon holds nothing");
    assert_eq!(
        metric(&first.metrics_addr(), "reaper_blast_radius_held"),
        Some(0.0)
    );
    bystanders.assert_all_alive();
}
