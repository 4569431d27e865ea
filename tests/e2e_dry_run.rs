//! Dry run: `serve --dry-run` plans and reports, and removes nothing at all; `orphans` shows
//! what would go and why, and never lists a bystander.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

#[test]
fn dry_run_removes_nothing_and_orphans_lists_what_would_go() {
    let _scope = Scope::new(&["e2e-dr-"]);
    let bystanders = Bystanders::create("dryrun");
    let r = Reaper::start(&[
        "--dry-run",
        "--resync-interval",
        "2s",
        "--orphan-grace-period",
        "1s",
    ]);
    r.apply(
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-dr-s}\n\
         spec:\n  paths: [e2e-dr-tmp]\n---\n\
         apiVersion: reaper/v1\nkind: Agent\nmetadata: {name: e2e-dr-agent}\nspec: {buildDir: e2e-dr-agent}\n",
    );
    let tmp = write_file(&r.paths_root().join("e2e-dr-tmp"), "f.txt", "x");
    let build = write_file(&r.paths_root().join("e2e-dr-agent"), "f.txt", "x");
    let label = [("reaper.session", "e2e-dr-s")];
    let session_objs: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("e2e-dr-s-run").labels(&label).create(),
        ),
        (
            Kind::Container,
            Container::new("e2e-dr-s-new")
                .labels(&label)
                .created()
                .create(),
        ),
        (Kind::Network, network("e2e-dr-s-net", &label)),
        (Kind::Volume, volume("e2e-dr-s-vol", &label)),
    ];
    let ghost_objs: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("e2e-dr-ghost")
                .label("reaper.session", "e2e-dr-ghost")
                .create(),
        ),
        (
            Kind::Container,
            Container::new("anvyl-agent-e2e-dr-ghost")
                .created()
                .create(),
        ),
    ];
    let mut everything = session_objs.clone();
    everything.extend(ghost_objs.iter().cloned());

    r.cli_ok(&["session", "end", "e2e-dr-s"]);
    r.cli_ok(&["agent", "report", "e2e-dr-agent", "failed"]);
    // Past the grace period and more than one resync: still nothing removed.
    assert_holds_for(
        "nothing is removed in dry-run mode",
        Duration::from_millis(4500),
        || all_exist(&everything) && tmp.exists() && build.exists(),
    );

    let listed = r.json(&["orphans", "-o", "json"]);
    let entries = listed
        .as_array()
        .unwrap_or_else(|| panic!("orphans -o json is not an array: {listed:#}"));
    let lists = |id: &str| entries.iter().any(|e| entry_is(e, id));
    for (kind, id) in &everything {
        assert!(
            lists(id),
            "orphans -o json does not list {} {id}:\n{listed:#}",
            kind.as_str()
        );
    }
    for e in entries {
        for field in ["kind", "id", "name", "owner", "reason", "action"] {
            assert!(e.get(field).is_some(), "orphans entry lacks {field:?}: {e}");
        }
        assert!(
            e["reason"].as_str().is_some_and(|s| !s.is_empty()),
            "an orphans entry without a reason: {e}"
        );
    }
    for (kind, id) in bystanders.objects() {
        assert!(
            !lists(&id),
            "orphans -o json lists bystander {} {id}:\n{listed:#}",
            kind.as_str()
        );
    }

    assert_ne!(
        r.phase("sessions", "e2e-dr-s"),
        "Cleaned",
        "a dry run cannot have cleaned the session"
    );
    let rec = r.session("e2e-dr-s");
    assert_eq!(
        removed_counts(&rec),
        (0, 0, 0, 0, 0),
        "a dry run counted removals: {rec:#}"
    );
    assert!(
        all_exist(&everything),
        "objects vanished: {:?}",
        missing(&everything)
    );
    // The log names owners as people write them, not as Rust debug-prints them.
    let log = r.log();
    assert!(log.contains("Dry run: would remove."), "{}", r.log_tail());
    assert!(log.contains("owner=session/e2e-dr-s"), "{}", r.log_tail());
    assert!(
        !log.contains("Some("),
        "a debug struct in the log:\n{}",
        r.log_tail()
    );
    bystanders.assert_all_alive();
}

/// Whether an `orphans` entry names this object (full or short ID, or container name).
fn entry_is(e: &Value, id: &str) -> bool {
    let eid = e["id"].as_str().unwrap_or("");
    let name = e["name"].as_str().unwrap_or("");
    let bare = |s: &str| s.trim_start_matches("sha256:").to_string();
    (!eid.is_empty()
        && (bare(eid) == bare(id) || (eid.len() >= 12 && bare(id).starts_with(&bare(eid)))))
        || (!name.is_empty() && (name == id || name.trim_start_matches('/') == id))
}
