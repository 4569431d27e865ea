//! The fleet's hosts as an operator sees them (issue 14): `reaper get hosts` and `reaper delete
//! host`, and `reaper_fleet_hosts{state}`.
//! - On etcd (a private 3-member cluster), two reapers share the cluster and the private engine
//!   (hosts host-a and host-b, different instances): both are listed ready, with version and a
//!   recent renewal, and each sees the other's safe mode come and go. One is killed with kill -9: its lease lapses and it is listed gone, and the
//!   other's metric says so. A ready host cannot be forgotten; the gone one can. Restarted, it
//!   is ready again.
//! - On sled: the one host, ready.
//!
//! Bad names and unknown hosts get clear errors. Bystanders stay throughout.

mod common;

use common::etcd::EtcdCluster;
use common::*;
use serde_json::Value;
use std::time::Duration;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The lease is 10 s; the other host's watch sees its key go at once after that.
const LAPSE: Duration = Duration::from_secs(30);
const READY: &str = "reaper_fleet_hosts{state=\"ready\"}";
const GONE: &str = "reaper_fleet_hosts{state=\"gone\"}";

/// `get hosts -o json`'s items, by name.
fn hosts(r: &Reaper) -> Vec<Value> {
    list_items(&r.json(&["get", "hosts", "-o", "json"]))
}

/// A field of one host as `get hosts -o json` lists it (`Null` if it is not listed).
fn field_of(r: &Reaper, host: &str, field: &str) -> Value {
    let out = r.cli(&["get", "hosts", "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| {
            v["items"]
                .as_array()?
                .iter()
                .find(|h| h["hostName"] == host)
                .map(|h| h[field].clone())
        })
        .unwrap_or(Value::Null)
}

fn state_of(r: &Reaper, host: &str) -> Option<String> {
    field_of(r, host, "state").as_str().map(String::from)
}

fn names(hosts: &[Value]) -> Vec<&str> {
    hosts
        .iter()
        .filter_map(|h| h["hostName"].as_str())
        .collect()
}

/// Seconds since an RFC 3339 time (negative if after now).
fn seconds_ago(rfc3339: &Value) -> f64 {
    let t = reaper::core::model::Timestamp::parse_rfc3339(rfc3339.as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {rfc3339}"));
    (reaper::core::model::Timestamp::now().millis() - t.millis()) as f64 / 1000.0
}

/// A client call that must fail; returns stderr.
fn cli_fails(r: &Reaper, args: &[&str]) -> String {
    let out = r.cli(args);
    assert!(
        !out.status.success(),
        "reaper {} should have failed: {}",
        args.join(" "),
        stdout_of(&out)
    );
    stderr_of(&out)
}

#[test]
fn a_killed_host_turns_gone_is_forgotten_only_then_and_comes_back_ready() {
    let _scope = Scope::new(&["e2e-hosts-"]);
    let bystanders = Bystanders::create("hosts");
    let cluster = EtcdCluster::start(false);
    let a = cluster.start_reaper("/e2e-hosts", "host-a", INSTANCE);
    let mut b = cluster.start_reaper("/e2e-hosts", "host-b", "e2e-hosts-b");

    // Both ready, seen from either, with version and a recent renewal.
    a.wait_until("host-a lists both hosts", Duration::from_secs(20), || {
        names(&hosts(&a)) == ["host-a", "host-b"]
    });
    for r in [&a, &b] {
        let listed = hosts(r);
        assert_eq!(names(&listed), ["host-a", "host-b"], "{listed:#?}");
        for h in &listed {
            assert_eq!(h["state"], "ready", "{h:#}");
            assert_eq!(h["version"], VERSION, "{h:#}");
            assert_eq!(h["safeMode"], false, "{h:#}");
            let renewed = seconds_ago(&h["renewedAt"]);
            assert!(
                (-5.0..15.0).contains(&renewed),
                "last renewal {renewed}s ago: {h:#}"
            );
            assert!(seconds_ago(&h["startedAt"]) >= renewed - 1.0, "{h:#}");
            let keys: Vec<&String> = h.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                [
                    "hostName",
                    "renewedAt",
                    "safeMode",
                    "startedAt",
                    "state",
                    "version"
                ],
                "the documented shape of a host"
            );
        }
    }
    let table = a.cli_ok(&["get", "hosts"]);
    let header = table.lines().next().unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "STATE",
            "SAFE-MODE",
            "VERSION",
            "LAST-RENEWAL",
            "AGE"
        ],
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("host-b ") && l.contains(" ready ") && l.contains(VERSION)),
        "{table}"
    );
    a.wait_until(
        "host-a's metric counts two ready hosts",
        Duration::from_secs(10),
        || {
            metric(&a.metrics_addr(), READY) == Some(2.0)
                && metric(&a.metrics_addr(), GONE) == Some(0.0)
        },
    );

    // Safe mode travels with a host's entry: with both paths roots unreadable while an ended
    // session has a path, both hosts delete nothing, and each lists the other so.
    let roots: Vec<_> = [&a, &b]
        .iter()
        .map(|r| {
            let root = r.paths_root();
            let away = root.with_extension("away");
            std::fs::rename(&root, &away).expect("move the paths root away");
            std::fs::write(&root, "not a directory").expect("a file where the paths root was");
            (root, away)
        })
        .collect();
    a.apply("apiVersion: reaper/v1\nkind: Session\nmetadata: {name: e2e-hosts-safe}\nspec: {paths: [e2e-hosts-safe]}\n");
    a.cli_ok(&["session", "end", "e2e-hosts-safe"]);
    a.wait_until(
        "host-a lists host-b in safe mode",
        Duration::from_secs(30),
        || field_of(&a, "host-b", "safeMode") == true,
    );
    let table = a.cli_ok(&["get", "hosts", "host-b", "--no-headers"]);
    assert!(
        table.contains(" ready ") && table.contains(" on "),
        "{table}"
    );
    for (root, away) in roots {
        std::fs::remove_file(&root).expect("remove the file");
        std::fs::rename(&away, &root).expect("put the paths root back");
    }
    a.wait_until(
        "host-a lists host-b out of safe mode",
        Duration::from_secs(30),
        || {
            field_of(&a, "host-b", "safeMode") == false
                && field_of(&b, "host-a", "safeMode") == false
        },
    );

    // A ready host is not forgotten, this one or another; bad input is refused with reasons.
    for host in ["host-b", "host-a"] {
        let err = cli_fails(&a, &["delete", "host", host]);
        assert!(
            err.contains(&format!("host/{host} is ready")) && err.contains("gone"),
            "{err}"
        );
    }
    let err = cli_fails(&a, &["delete", "host", "host-z"]);
    assert!(err.contains("host/host-z not found"), "{err}");
    assert!(a
        .cli_ok(&["delete", "host", "host-z", "--ignore-not-found"])
        .is_empty());
    let err = cli_fails(&a, &["get", "hosts", "host-a", "host-z"]);
    assert!(err.contains("host/host-z not found"), "{err}");
    for bad in ["a/b", "x y", "../etc"] {
        let err = cli_fails(&a, &["delete", "host", bad]);
        assert!(
            err.contains("invalid host name"),
            "delete host {bad}: {err}"
        );
        let err = cli_fails(&a, &["get", "hosts", bad]);
        assert!(err.contains("invalid host name"), "get hosts {bad}: {err}");
    }
    let err = cli_fails(&a, &["get", "hosts", "-l", "team=x"]);
    assert!(err.contains("hosts have no labels"), "{err}");

    // kill -9: host-b's lease lapses and host-a lists it gone, with its last renewal.
    b.kill9();
    let killed_at = reaper::core::model::Timestamp::now();
    let took = a.wait_until("host-b is listed gone", LAPSE, || {
        state_of(&a, "host-b").as_deref() == Some("gone")
    });
    eprintln!("host-b listed gone {took:?} after kill -9");
    assert!(
        took >= Duration::from_secs(3),
        "gone before its lease could lapse: {took:?}"
    );
    let listed = hosts(&a);
    let gone = listed.iter().find(|h| h["hostName"] == "host-b").unwrap();
    let renewed = seconds_ago(&gone["renewedAt"]);
    let since_kill = reaper::core::model::Timestamp::now()
        .since(killed_at)
        .as_secs_f64();
    assert!(
        renewed >= since_kill - 1.0,
        "a gone host's last renewal is before it was killed: {gone:#}"
    );
    assert_eq!(state_of(&a, "host-a").as_deref(), Some("ready"));
    let table = a.cli_ok(&["get", "hosts", "host-b", "--no-headers"]);
    assert!(
        table.starts_with("host-b ") && table.contains(" gone "),
        "{table}"
    );
    a.wait_until(
        "host-a's metric counts host-b gone",
        Duration::from_secs(10),
        || {
            metric(&a.metrics_addr(), GONE) == Some(1.0)
                && metric(&a.metrics_addr(), READY) == Some(1.0)
        },
    );

    // Gone: forgotten, and no longer listed.
    let out = a.cli_ok(&["delete", "host", "host-b"]);
    assert_eq!(out.trim(), "host/host-b forgotten");
    assert_eq!(names(&hosts(&a)), ["host-a"]);
    assert_eq!(a.cli_ok(&["get", "hosts", "-o", "name"]), "host/host-a\n");
    let err = cli_fails(&a, &["delete", "host", "host-b"]);
    assert!(err.contains("host/host-b not found"), "{err}");
    a.wait_until(
        "host-a's metric forgets host-b",
        Duration::from_secs(10),
        || metric(&a.metrics_addr(), GONE) == Some(0.0),
    );

    // Restarted: ready again, from its first renewal.
    b.spawn();
    b.wait_ready();
    a.wait_until("host-b is ready again", Duration::from_secs(20), || {
        state_of(&a, "host-b").as_deref() == Some("ready")
    });
    let back = hosts(&a);
    let b_entry = back.iter().find(|h| h["hostName"] == "host-b").unwrap();
    assert!(seconds_ago(&b_entry["startedAt"]) < 30.0, "{b_entry:#}");
    a.wait_until(
        "host-a's metric counts two ready hosts again",
        Duration::from_secs(10),
        || {
            metric(&a.metrics_addr(), READY) == Some(2.0)
                && metric(&a.metrics_addr(), GONE) == Some(0.0)
        },
    );
    bystanders.assert_all_alive();
}

#[test]
fn on_sled_the_one_host_is_listed_ready() {
    let _scope = Scope::new(&["e2e-hosts-sled-"]);
    let bystanders = Bystanders::create("hostssled");
    let r = Reaper::start(&["--host-name", "e2e-hosts-solo"]);
    let listed = hosts(&r);
    assert_eq!(names(&listed), ["e2e-hosts-solo"], "{listed:#?}");
    let h = &listed[0];
    assert_eq!(h["state"], "ready");
    assert_eq!(h["version"], VERSION);
    assert_eq!(h["safeMode"], false);
    assert!(seconds_ago(&h["renewedAt"]).abs() < 10.0, "{h:#}");
    assert_eq!(
        r.cli_ok(&["get", "hosts", "-o", "name"]),
        "host/e2e-hosts-solo\n"
    );
    let one = r.json(&["get", "hosts", "e2e-hosts-solo", "-o", "json"]);
    assert_eq!(
        one["hostName"], "e2e-hosts-solo",
        "one named host prints as itself"
    );
    let yaml = r.cli_ok(&["get", "hosts", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: List") && yaml.contains("state: ready"),
        "{yaml}"
    );
    let rows = r.cli_ok(&["get", "hosts", "--no-headers"]);
    assert!(
        rows.starts_with("e2e-hosts-solo ")
            && rows.contains(" ready ")
            && rows.lines().count() == 1,
        "{rows}"
    );
    let err = cli_fails(&r, &["delete", "host", "e2e-hosts-solo"]);
    assert!(err.contains("host/e2e-hosts-solo is ready"), "{err}");
    let err = cli_fails(&r, &["delete", "host", "e2e-hosts-other"]);
    assert!(err.contains("host/e2e-hosts-other not found"), "{err}");
    r.wait_until(
        "the metric counts this host ready",
        Duration::from_secs(10),
        || {
            metric(&r.metrics_addr(), READY) == Some(1.0)
                && metric(&r.metrics_addr(), GONE) == Some(0.0)
        },
    );
    bystanders.assert_all_alive();
}
