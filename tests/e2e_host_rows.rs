//! Per-host rows in a session's status (issue 14). On sled: one row, this host's, done, with
//! what it removed, in `-o json` and in `describe`. On etcd, two reapers sharing one cluster and
//! the one private engine, scoped apart by `instance` (host-a, host-b): a session ended while
//! host-b is killed stays `Ended` with host-b `pending` while its lease is live, and turns
//! `Cleaned` with two done rows once host-b is back and has removed its part; a host whose
//! lease lapsed turns `gone` and no longer holds the session back, and when it comes back it
//! removes what is left and turns `done`, the session staying `Cleaned`. Bystanders stay.

mod common;

use common::etcd::EtcdCluster;
use common::*;
use serde_json::Value;
use std::time::Duration;

const STEP: Duration = Duration::from_secs(30);

/// The rows of a session as `reaper get -o json` shows them.
fn rows(r: &Reaper, session: &str) -> Vec<Value> {
    r.session(session)["status"]["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// (hostName, state) of each row, in order.
fn states(r: &Reaper, session: &str) -> Vec<(String, String)> {
    rows(r, session)
        .iter()
        .map(|row| {
            let s = |k: &str| row[k].as_str().unwrap_or_default().to_string();
            (s("hostName"), s("state"))
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(h, s)| (h.to_string(), s.to_string()))
        .collect()
}

fn row<'a>(rows: &'a [Value], host: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["hostName"] == host)
        .unwrap_or_else(|| panic!("no row for {host}: {rows:#?}"))
}

fn session_yaml(name: &str) -> String {
    format!("apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {name}\n")
}

/// A container, a network and a volume of `session`, marked for `instance` if given.
fn objects_of(session: &str, suffix: &str, instance: Option<&str>) -> Vec<Obj> {
    let mut labels = vec![("reaper.session", session)];
    if let Some(i) = instance {
        labels.push(("reaper.instance", i));
    }
    let name = format!("{session}-{suffix}");
    vec![
        (
            Kind::Container,
            Container::new(&format!("{name}-c"))
                .labels(&labels)
                .create(),
        ),
        (Kind::Network, network(&format!("{name}-n"), &labels)),
        (Kind::Volume, volume(&format!("{name}-v"), &labels)),
    ]
}

#[test]
fn on_sled_a_session_has_one_row_for_this_host() {
    let _scope = Scope::new(&["e2e-rows-solo"]);
    let bystanders = Bystanders::create("rows-solo");
    let r = Reaper::start(&["--resync-interval", "1s", "--host-name", "host-solo"]);
    let s = "e2e-rows-solo";
    r.apply(&session_yaml(s));
    let objects = objects_of(s, "x", None);
    assert!(rows(&r, s).is_empty(), "a live session has no rows yet");
    r.cli_ok(&["session", "end", s]);
    r.wait_until("the session is cleaned", STEP, || {
        r.phase("session", s) == "Cleaned"
    });
    assert!(all_gone(&objects));

    let record = r.session(s);
    let all = rows(&r, s);
    assert_eq!(states(&r, s), pairs(&[("host-solo", "done")]), "{record:#}");
    let mine = &all[0];
    let counts = |v: &Value| {
        let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX);
        (
            n("containers"),
            n("networks"),
            n("volumes"),
            n("images"),
            n("paths"),
        )
    };
    assert_eq!(counts(&mine["removed"]), (1, 1, 1, 0, 0), "{record:#}");
    assert_eq!(counts(&mine["removed"]), removed_counts(&record));
    assert_eq!(mine["failures"], 0, "{record:#}");
    assert!(mine["reportedAt"].is_string(), "{record:#}");

    let text = r.cli_ok(&["describe", "session", s]);
    for line in [
        "\nHosts:\n  HOST        STATE   REMOVED      ",
        "   FAILURES   REPORTED\n  host-solo   done    containers 1, networks 1, volumes 1   0   ",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }

    // Done is written once: passes after it leave the record as it is.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(r.session(s), record);
    bystanders.assert_all_alive();
}

#[test]
fn in_a_fleet_a_session_waits_for_every_live_host_and_not_for_a_lapsed_one() {
    let _scope = Scope::new(&["e2e-rows-f"]);
    let bystanders = Bystanders::create("rows-fleet");
    let cluster = EtcdCluster::start(false);
    // Each its own host name and instance, on the one engine.
    let a = cluster.start_reaper("/rows", "host-a", "host-a");
    let mut b = cluster.start_reaper("/rows", "host-b", "host-b");

    // Ended while host-b is killed: its lease is still live (10 s), so it holds the session.
    let s1 = "e2e-rows-f1";
    a.apply(&session_yaml(s1));
    let on_a = objects_of(s1, "a", Some("host-a"));
    let on_b = objects_of(s1, "b", Some("host-b"));
    b.kill9();
    a.cli_ok(&["session", "end", s1]);
    a.wait_until("host-a reports done", Duration::from_secs(6), || {
        states(&a, s1) == pairs(&[("host-a", "done"), ("host-b", "pending")])
    });
    assert!(all_gone(&on_a));
    assert_eq!(
        a.phase("session", s1),
        "Ended",
        "host-b is live and pending"
    );
    assert!(all_exist(&on_b), "host-a removed host-b's objects");
    let text = a.cli_ok(&["describe", "session", s1]);
    assert!(text.contains("\n  host-b   pending   0 "), "{text}");

    // host-b is back: it removes its part, reports, and the session is Cleaned.
    b.spawn();
    b.wait_ready();
    a.wait_until("the session is cleaned", STEP, || {
        a.phase("session", s1) == "Cleaned"
    });
    assert!(all_gone(&on_b));
    assert_eq!(
        states(&a, s1),
        pairs(&[("host-a", "done"), ("host-b", "done")])
    );
    let all = rows(&b, s1);
    for host in ["host-a", "host-b"] {
        let r = row(&all, host);
        assert_eq!(r["removed"]["containers"], 1, "{all:#?}");
        assert_eq!(r["removed"]["networks"], 1, "{all:#?}");
        assert_eq!(r["removed"]["volumes"], 1, "{all:#?}");
    }
    assert_eq!(
        removed_counts(&a.session(s1)),
        (2, 2, 2, 0, 0),
        "the session's counts are the sum of its rows"
    );

    // host-b is stopped for longer than its lease: it turns gone, the session Cleaned without it.
    let s2 = "e2e-rows-f2";
    a.apply(&session_yaml(s2));
    let on_a = objects_of(s2, "a", Some("host-a"));
    let on_b = objects_of(s2, "b", Some("host-b"));
    b.kill9();
    a.cli_ok(&["session", "end", s2]);
    a.wait_until(
        "host-b's lease lapses and the session is cleaned",
        STEP,
        || a.phase("session", s2) == "Cleaned",
    );
    assert!(all_gone(&on_a));
    assert_eq!(
        states(&a, s2),
        pairs(&[("host-a", "done"), ("host-b", "gone")])
    );
    assert!(all_exist(&on_b), "nobody removed host-b's objects for it");
    assert!(row(&rows(&a, s2), "host-b")["reportedAt"].is_string());

    // Back again, host-b finds objects of the Cleaned session: they go, its row turns done.
    b.spawn();
    b.wait_ready();
    b.wait_until("host-b reports done", STEP, || {
        states(&b, s2) == pairs(&[("host-a", "done"), ("host-b", "done")])
    });
    assert!(all_gone(&on_b));
    assert_eq!(b.phase("session", s2), "Cleaned");
    assert_eq!(row(&rows(&b, s2), "host-b")["removed"]["containers"], 1);
    bystanders.assert_all_alive();
}
