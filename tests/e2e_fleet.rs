// Over 500 lines on purpose: every fleet scenario lives in this one binary so that they share one slow start of the fleet (three dockerds, three etcd members, three reapers) per transport.
//! Issue 14's fleet, end to end: three hosts (a private dockerd and a reaper each, `host-a`,
//! `host-b`, `host-c`) sharing one 3-member etcd cluster, plain and with mTLS (see
//! tests/common/fleet.rs). One `end` cleans every engine, and the session turns Cleaned with
//! a done row per host; a reaper killed mid-cleanup finishes its part after a restart; one
//! member down changes nothing; without quorum nothing is deleted anywhere until it is back;
//! concurrent writers through two hosts lose no update; a host down during `end` cleans up when
//! it returns (pending while its lease lives, gone once it lapsed); a client without a trusted
//! certificate is refused. Bystanders on all three engines stay throughout.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::fleet::*;
use common::*;
use reaper::core::model::Timestamp;
use reaper::store::{EtcdStore, EtcdTls};
use serde_json::Value;

/// Objects of an ended session are gone from every engine within this.
const CLEANUP_WITHIN: Duration = Duration::from_secs(30);

fn session_yaml(name: &str, labels: &str, cleanup: &str) -> String {
    format!(
        "apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n\
         spec:\n  heartbeatTimeout: 1h\n  cleanup: {{{cleanup}}}\n"
    )
}

/// Applies a session through host `i` and checks every host reads it.
fn apply_session(f: &Fleet, i: usize, name: &str, cleanup: &str) {
    f.reaper(i).apply(&session_yaml(name, "", cleanup));
    f.wait_phase(name, "Active", Duration::from_secs(10));
}

/// The per-host rows of a cleaned session: one done row per host, each with its own share.
fn check_done_rows(later: &mut Deferred, f: &Fleet, session: &str, states: [&str; 3]) {
    let record = f.reaper(0).session(session);
    later.eq(
        &format!("{session}: status.hosts (hostName, state)"),
        host_rows(&record),
        rows(states),
    );
    for row in record["status"]["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if row["state"] != "done" {
            continue;
        }
        let removed = &row["removed"];
        later.eq(
            &format!("{session}: {} row's removed", row["hostName"]),
            (
                removed["containers"].as_u64(),
                removed["networks"].as_u64(),
                removed["volumes"].as_u64(),
                removed["images"].as_u64(),
                removed["paths"].as_u64(),
            ),
            (Some(2), Some(1), Some(1), Some(0), Some(0)),
        );
        // A removal may fail once and succeed on retry (e.g. a volume still in use by a
        // container that goes a moment later): counted, and then its message is kept.
        let failures = row["failures"].as_u64();
        later.check(
            failures == Some(0) || (failures > Some(0) && row["lastError"].is_string()),
            || {
                format!(
                    "{session}: {} row's failures and lastError: {row}",
                    row["hostName"]
                )
            },
        );
    }
}

/// `reaper get hosts` when every host is up and out of safe mode.
const ALL_READY: &[(&str, &str, bool)] = &[
    ("host-a", "ready", false),
    ("host-b", "ready", false),
    ("host-c", "ready", false),
];

/// `reaper get hosts` through host `i` lists `expected` (name, state, safeMode) within `timeout`.
fn check_hosts(
    later: &mut Deferred,
    f: &Fleet,
    i: usize,
    what: &str,
    expected: &[(&str, &str, bool)],
    timeout: Duration,
) {
    let listed = wait_hosts(f, i, expected, timeout);
    let expected: Vec<(String, String, bool)> = expected
        .iter()
        .map(|(n, s, m)| (n.to_string(), s.to_string(), *m))
        .collect();
    later.eq(what, listed, Ok(expected));
}

// ---- End once, clean everywhere ----

fn end_once_clean_everywhere(f: &mut Fleet) {
    let s = "fl-once";
    apply_session(f, 0, s, "");
    let objs = f.session_objects(s);
    let out = f.reaper(0).cli_ok(&["session", "end", s]);
    assert!(out.contains(&format!("session/{s}")), "{out}");
    f.wait_gone_everywhere("one end through host-a", &objs, CLEANUP_WITHIN);
    f.wait_phase(s, "Cleaned", Duration::from_secs(10));
    let record = f.reaper(2).session(s);
    assert_eq!(
        removed_counts(&record),
        (6, 3, 3, 0, 0),
        "status.removed counts every host's removals: {record:#}"
    );
    let mut later = Deferred::new();
    check_done_rows(&mut later, f, s, ["done", "done", "done"]);
    let described = f.reaper(1).cli_ok(&["describe", "session", s]);
    let table = described
        .split_once("Hosts:")
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();
    later.check(
        table.contains("HOST")
            && table.contains("REMOVED")
            && HOSTS.iter().all(|h| {
                table
                    .lines()
                    .any(|l| l.trim_start().starts_with(h) && l.contains("done"))
            }),
        || format!("describe session {s} shows a Hosts: table with three done rows:\n{described}"),
    );
    check_hosts(
        &mut later,
        f,
        1,
        "reaper get hosts lists the three hosts ready",
        ALL_READY,
        Duration::from_secs(10),
    );
    for (series, value) in [("ready", 3.0), ("gone", 0.0)] {
        later.eq(
            &format!("host-a's reaper_fleet_hosts{{state=\"{series}\"}}"),
            metric(
                &f.reaper(0).metrics_addr(),
                &format!("reaper_fleet_hosts{{state=\"{series}\"}}"),
            ),
            Some(value),
        );
    }
    later.finish();
}

// ---- Kill -9 mid-cleanup ----

fn kill9_mid_cleanup(f: &mut Fleet) {
    let keep = "fl-keep";
    apply_session(f, 1, keep, "");
    let kept = f.session_objects(keep);
    let s = "fl-kill";
    apply_session(f, 0, s, "stopTimeout: 5s");
    let mut objs = f.session_objects(s);
    // On host-b a container whose `sleep` ignores SIGTERM: stopping it takes the whole
    // stopTimeout, which keeps host-b's cleanup under way when its reaper is killed.
    let slow = f.on(1, || {
        Container::new(&format!("{s}-slow"))
            .label("reaper.session", s)
            .ignoring_sigterm()
            .create()
    });
    objs[1].push((Kind::Container, slow.clone()));
    f.reaper(0).cli_ok(&["session", "end", s]);
    f.reaper(0).wait_until(
        "host-a and host-c removed their share",
        CLEANUP_WITHIN,
        || f.all_gone(0, &objs[0]) && f.all_gone(2, &objs[2]),
    );
    assert!(
        f.on(1, || exists(Kind::Container, &slow)),
        "host-b's slow container is already gone: the kill would not be mid-cleanup"
    );
    f.kill9(1);
    f.start_reaper(1);
    f.wait_gone_everywhere("host-b after its restart", &objs, CLEANUP_WITHIN);
    f.wait_phase(s, "Cleaned", Duration::from_secs(10));
    // Nothing else lost: the other session, its objects and record, everywhere.
    assert!(f.exist_everywhere(&kept), "another session's objects went");
    f.wait_phase(keep, "Active", Duration::from_secs(5));
    f.assert_bystanders();
    let mut later = Deferred::new();
    let record = f.reaper(0).session(s);
    later.eq(
        &format!("{s}: status.hosts (hostName, state)"),
        host_rows(&record),
        rows(["done", "done", "done"]),
    );
    later.finish();
}

// ---- One etcd member stopped ----

fn one_member_stopped(f: &mut Fleet) {
    f.stop_member(0);
    let s = "fl-member";
    apply_session(f, 1, s, "");
    let objs = f.session_objects(s);
    f.reaper(2).cli_ok(&["session", "heartbeat", s]);
    f.reaper(2).cli_ok(&["session", "end", s]);
    f.wait_gone_everywhere("end with one member stopped", &objs, CLEANUP_WITHIN);
    f.wait_phase(s, "Cleaned", Duration::from_secs(10));
    for (i, host) in HOSTS.iter().enumerate() {
        assert!(
            !f.safe_mode(i),
            "{host} is in safe mode with 2 of 3 members"
        );
    }
    f.start_member(0);
    let mut later = Deferred::new();
    check_done_rows(&mut later, f, s, ["done", "done", "done"]);
    later.finish();
}

// ---- Quorum lost ----

fn quorum_lost(f: &mut Fleet) {
    let s = "fl-quorum";
    // Ended with a short delay, then quorum lost before the delay passes.
    apply_session(f, 0, s, "delay: 2s");
    let mut pending = f.session_objects(s);
    f.reaper(0).cli_ok(&["session", "end", s]);
    f.stop_member(1);
    f.stop_member(2);
    // An orphan on each engine appears during the outage: its record may exist, unseen.
    for (i, objs) in pending.iter_mut().enumerate() {
        let ghost = f.on(i, || {
            Container::new("fl-ghost")
                .label("reaper.session", "fl-ghost")
                .create()
        });
        objs.push((Kind::Container, ghost));
    }
    f.reaper(0).wait_until(
        "all three hosts show safe mode",
        Duration::from_secs(20),
        || (0..HOSTS.len()).all(|i| f.safe_mode(i)),
    );
    for (i, host) in HOSTS.iter().enumerate() {
        let status = f.reaper(i).cli_ok(&["status"]);
        assert!(status.contains("safe mode:  ON"), "{host}: {status}");
    }
    assert_holds_for(
        "nothing is deleted on any host while etcd has no quorum (the delay and the orphan \
         grace have passed)",
        Duration::from_secs(5),
        || f.exist_everywhere(&pending),
    );
    f.start_member(1);
    f.start_member(2);
    f.wait_gone_everywhere(
        "the pending cleanups once etcd is back",
        &pending,
        CLEANUP_WITHIN,
    );
    f.reaper(0)
        .wait_until("safe mode ends everywhere", Duration::from_secs(20), || {
            (0..HOSTS.len()).all(|i| !f.safe_mode(i))
        });
    f.wait_phase(s, "Cleaned", Duration::from_secs(10));
    let mut later = Deferred::new();
    check_done_rows(&mut later, f, s, ["done", "done", "done"]);
    check_hosts(
        &mut later,
        f,
        2,
        "reaper get hosts: all ready, out of safe mode, once quorum is back",
        ALL_READY,
        Duration::from_secs(15),
    );
    later.finish();
}

// ---- Concurrent writers ----

/// A `reaper` client of one host's daemon, usable from any thread.
#[derive(Clone)]
struct Client {
    socket: PathBuf,
}

impl Client {
    fn of(r: &Reaper) -> Client {
        Client { socket: r.socket() }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        run_with_timeout(
            Command::new(Reaper::bin())
                .arg("--socket")
                .arg(&self.socket)
                .args(args),
            stdin.map(str::as_bytes),
            CLI_TIMEOUT,
        )
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "reaper {}: {}",
            args.join(" "),
            stderr_of(&out)
        );
        stdout_of(&out)
    }

    /// `POST path` with a JSON body to the daemon's API, straight over its socket (no process
    /// per call, so two writers' calls overlap closely); returns the status and the body.
    fn post(&self, path: &str, body: &Value) -> (u16, String) {
        use std::io::{Read, Write};
        let body = body.to_string();
        let mut conn = std::os::unix::net::UnixStream::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.socket.display()));
        conn.set_read_timeout(Some(CLI_TIMEOUT)).unwrap();
        write!(
            conn,
            "POST {path} HTTP/1.1\r\nHost: reaper\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let mut response = String::new();
        conn.read_to_string(&mut response)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("POST {path}: not an HTTP response: {response:?}"));
        (status, response)
    }

    /// `POST /v1/apply` of these manifests; returns the status and the body.
    fn apply(&self, yaml: &str) -> (u16, String) {
        let files = serde_json::json!({"files": [{"name": "cw.yaml", "content": yaml}]});
        self.post("/v1/apply", &files)
    }

    fn sessions(&self) -> Vec<Value> {
        let out = self.ok(&["get", "sessions", "-o", "json"], None);
        list_items(&serde_json::from_str(&out).expect("JSON"))
    }
}

/// What one writer saw of its own calls.
#[derive(Default, Debug)]
struct Written {
    /// When it last sent a heartbeat of each of the other writer's spec records (ms since
    /// the epoch; the daemon stamps the heartbeat later, on the same clock).
    last_heartbeat_sent: BTreeMap<String, i64>,
    /// For each apply of the record the other writer ends: whether it was accepted.
    applies_of_ended: Vec<bool>,
}

const ROUNDS: usize = 40;
/// Records each writer re-applies in one batch while the other heartbeats them one by one:
/// many chances per round for two writes to the same key to race.
const SPECS: usize = 5;

fn spec_name(writer: &str, k: usize) -> String {
    format!("cw-{writer}-spec{k}")
}

/// Writer `me` (a or b) through `c`, each round: re-applies its own spec records in one batch
/// (label gen = round), heartbeats the other writer's spec records, re-applies
/// `cw-<other>-end` (refused once that one has ended), and half way ends `cw-<me>-end`.
fn writer(c: &Client, me: &str, other: &str) -> Written {
    let mut w = Written::default();
    let empty = serde_json::json!({});
    for round in 0..ROUNDS {
        let gen = format!("gen: \"{round}\"");
        let batch: Vec<String> = (0..SPECS)
            .map(|k| session_yaml(&spec_name(me, k), &gen, ""))
            .collect();
        let (status, body) = c.apply(&batch.join("---\n"));
        assert_eq!(status, 200, "host-{me}: apply of its spec records: {body}");
        for k in 0..SPECS {
            let name = spec_name(other, k);
            let sent = Timestamp::now().millis();
            let (status, body) = c.post(&format!("/v1/sessions/{name}/heartbeat"), &empty);
            assert_eq!(status, 200, "host-{me}: heartbeat of {name}: {body}");
            w.last_heartbeat_sent.insert(name, sent);
        }
        let (status, body) = c.apply(&session_yaml(&format!("cw-{other}-end"), &gen, ""));
        assert!(
            status == 200 || (status == 409 && body.contains("ended")),
            "host-{me}: re-apply of cw-{other}-end failed for another reason than its end: {body}"
        );
        w.applies_of_ended.push(status == 200);
        if round == ROUNDS / 2 {
            let name = format!("cw-{me}-end");
            let (status, body) = c.post(
                &format!("/v1/sessions/{name}/end"),
                &serde_json::json!({"failed": false}),
            );
            assert_eq!(status, 200, "host-{me}: end of {name}: {body}");
        }
    }
    w
}

/// One observation of a session: (phase, lastHeartbeat in ms, generation label).
fn observed(s: &Value) -> (String, i64, i64) {
    let heartbeat = s["status"]["lastHeartbeat"]
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .map(|t| t.millis())
        .unwrap_or(0);
    let gen = s["metadata"]["labels"]["gen"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or(-1);
    (
        s["status"]["phase"].as_str().unwrap_or("").to_string(),
        heartbeat,
        gen,
    )
}

fn over(phase: &str) -> bool {
    phase == "Ended" || phase == "Cleaned"
}

fn concurrent_writers(f: &mut Fleet) {
    let mut names: Vec<String> = vec!["cw-a-end".into(), "cw-b-end".into()];
    for k in 0..SPECS {
        names.extend([spec_name("a", k), spec_name("b", k)]);
    }
    let initial: Vec<String> = names
        .iter()
        .map(|n| session_yaml(n, "gen: \"-1\"", ""))
        .collect();
    f.reaper(0).apply(&initial.join("---\n"));
    f.wait_phase("cw-b-end", "Active", Duration::from_secs(10));
    let (a, b, watcher) = (
        Client::of(f.reaper(0)),
        Client::of(f.reaper(1)),
        Client::of(f.reaper(2)),
    );
    let done = std::sync::atomic::AtomicBool::new(false);
    let (wa, wb, regressions) = std::thread::scope(|s| {
        let ta = s.spawn(|| writer(&a, "a", "b"));
        let tb = s.spawn(|| writer(&b, "b", "a"));
        // A third host watches: a heartbeat time or a generation going back, or an ended
        // session turning Active again, is a lost update.
        let tw = s.spawn(|| {
            let mut last: BTreeMap<String, (String, i64, i64)> = BTreeMap::new();
            let mut regressions = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for (name, now) in observe_all(&watcher.sessions()) {
                    if let Some(before) = last.get(&name) {
                        if now.1 < before.1
                            || now.2 < before.2
                            || (over(&before.0) && !over(&now.0))
                        {
                            regressions.push(format!("{name}: {before:?} then {now:?}"));
                        }
                    }
                    last.insert(name, now);
                }
            }
            regressions
        });
        let wa = ta.join();
        let wb = tb.join();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let regressions = tw.join().expect("the watcher");
        (
            wa.unwrap_or_else(|p| std::panic::resume_unwind(p)),
            wb.unwrap_or_else(|p| std::panic::resume_unwind(p)),
            regressions,
        )
    });
    assert!(
        regressions.is_empty(),
        "a lost update, seen from host-c: {regressions:?}"
    );
    // The one state a serial order of the writes gives, record by record: (phase is over,
    // lastHeartbeat at least, gen).
    let mut expected: BTreeMap<String, (bool, i64, i64)> = BTreeMap::new();
    for (me, other, theirs) in [("a", "b", &wb), ("b", "a", &wa)] {
        // The ended record's applies by the other writer: accepted up to the end, refused
        // after it, never accepted again (an end that did not hold would be a lost update).
        let accepted = theirs.applies_of_ended.iter().filter(|&&ok| ok).count();
        assert!(
            theirs.applies_of_ended[..accepted].iter().all(|&ok| ok),
            "cw-{me}-end: applies by host-{other} were refused, then accepted again: {:?}",
            theirs.applies_of_ended
        );
        expected.insert(format!("cw-{me}-end"), (true, 0, accepted as i64 - 1));
        for k in 0..SPECS {
            let name = spec_name(me, k);
            let heartbeat = theirs.last_heartbeat_sent[&name];
            expected.insert(name, (false, heartbeat, (ROUNDS - 1) as i64));
        }
    }
    let serial = |sessions: &[Value]| {
        let seen = observe_all(sessions);
        expected.iter().all(|(name, (ended, heartbeat, gen))| {
            seen.get(name)
                .is_some_and(|(phase, hb, g)| over(phase) == *ended && hb >= heartbeat && g == gen)
        })
    };
    // Every host converges on it.
    for (i, host) in HOSTS.iter().enumerate() {
        let mut last = Vec::new();
        let converged = try_wait_until(Duration::from_secs(10), || {
            last = f.reaper(i).list("sessions");
            serial(&last)
        });
        assert!(
            converged.is_ok(),
            "{host} does not read the serial outcome {expected:?}: {:?}",
            observe_all(&last)
        );
    }
}

/// [`observed`] for each concurrent writers' record in a listing, by name.
fn observe_all(sessions: &[Value]) -> BTreeMap<String, (String, i64, i64)> {
    sessions
        .iter()
        .filter_map(|s| {
            let name = s["metadata"]["name"].as_str()?;
            name.starts_with("cw-")
                .then(|| (name.to_string(), observed(s)))
        })
        .collect()
}

// ---- A host down during end ----

fn host_down_during_end(f: &mut Fleet) {
    let s = "fl-down";
    apply_session(f, 0, s, "");
    let objs = f.session_objects(s);
    f.kill9(2);
    f.reaper(0).cli_ok(&["session", "end", s]);
    f.reaper(0).wait_until(
        "host-a and host-b removed their share",
        CLEANUP_WITHIN,
        || f.all_gone(0, &objs[0]) && f.all_gone(1, &objs[1]),
    );
    // host-c's lease is still live (10 s): the session waits for it.
    let mut later = Deferred::new();
    std::thread::sleep(Duration::from_millis(1500));
    let phase = f.phase(0, s);
    assert!(over(&phase), "the session is no longer ended: {phase}");
    later.eq(
        &format!("{s}: phase while host-c's lease is live"),
        phase.as_str(),
        "Ended",
    );
    later.eq(
        &format!("{s}: status.hosts while host-c is down"),
        f.host_rows(s),
        rows(["done", "done", "pending"]),
    );
    assert!(
        f.all_exist(2, &objs[2]),
        "host-c's objects went while its reaper was down"
    );
    f.start_reaper(2);
    f.wait_gone_everywhere("host-c after it came back", &objs, CLEANUP_WITHIN);
    f.wait_phase(s, "Cleaned", Duration::from_secs(10));
    check_done_rows(&mut later, f, s, ["done", "done", "done"]);
    later.finish();
}

fn host_lapsed_during_end(f: &mut Fleet) {
    let s = "fl-lapsed";
    apply_session(f, 0, s, "");
    let objs = f.session_objects(s);
    f.kill9(2);
    f.reaper(0).cli_ok(&["session", "end", s]);
    let mut later = Deferred::new();
    // Its 10 s lease lapses: host-c no longer holds back Cleaned, and shows as gone.
    f.wait_phase(s, "Cleaned", Duration::from_secs(25));
    f.reaper(0).wait_until(
        "host-a and host-b removed their share",
        CLEANUP_WITHIN,
        || f.all_gone(0, &objs[0]) && f.all_gone(1, &objs[1]),
    );
    let gone = try_wait_until(Duration::from_secs(15), || {
        f.host_rows(s) == rows(["done", "done", "gone"])
    });
    later.check(gone.is_ok(), || {
        format!(
            "{s}: status.hosts after host-c's lease lapsed: expected done, done, gone; got {:?}",
            f.host_rows(s)
        )
    });
    check_hosts(
        &mut later,
        f,
        0,
        "reaper get hosts while host-c is down",
        &[
            ("host-a", "ready", false),
            ("host-b", "ready", false),
            ("host-c", "gone", false),
        ],
        Duration::from_secs(10),
    );
    later.eq(
        "host-a's reaper_fleet_hosts{state=\"gone\"} while host-c is down",
        metric(
            &f.reaper(0).metrics_addr(),
            "reaper_fleet_hosts{state=\"gone\"}",
        ),
        Some(1.0),
    );
    assert!(
        f.all_exist(2, &objs[2]),
        "host-c's objects went while its reaper was down"
    );
    f.start_reaper(2);
    f.wait_gone_everywhere(
        "host-c removes its objects when it returns",
        &objs,
        CLEANUP_WITHIN,
    );
    assert_eq!(f.phase(2, s), "Cleaned", "the session stays Cleaned");
    let back = try_wait_until(Duration::from_secs(10), || {
        f.host_rows(s) == rows(["done", "done", "done"])
    });
    later.check(back.is_ok(), || {
        format!(
            "{s}: status.hosts once host-c cleaned up: expected all done; got {:?}",
            f.host_rows(s)
        )
    });
    check_hosts(
        &mut later,
        f,
        0,
        "reaper get hosts once host-c is back",
        ALL_READY,
        Duration::from_secs(10),
    );
    later.finish();
}

// ---- mTLS ----

fn untrusted_clients_are_refused(f: &mut Fleet) {
    let etcd = f.etcd();
    let endpoints = etcd.endpoints();
    let rogue = etcd.rogue_certs();
    let key = format!("{}/records/session/fl-once", f.prefix());
    for (case, certs) in [
        ("a certificate from another CA", Some(&rogue)),
        ("no certificate", None),
    ] {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["--command-timeout=2s", "--dial-timeout=1s"])
            .arg(format!("--cacert={}", rogue.ca.display()));
        if let Some(c) = certs {
            cmd.arg(format!("--cert={}", c.cert.display()))
                .arg(format!("--key={}", c.key.display()));
        }
        let out = run_with_timeout(cmd.args(["get", &key]), None, Duration::from_secs(20));
        assert!(
            !out.status.success(),
            "etcdctl with {case} was served: {}",
            stdout_of(&out)
        );
        let mut settings = etcd.settings(f.prefix(), "host-rogue");
        settings.tls = certs.map(|c| EtcdTls {
            ca_file: c.ca.clone(),
            cert_file: c.cert.clone(),
            key_file: c.key.clone(),
        });
        assert!(
            EtcdStore::open(&settings).is_err(),
            "reaper's store opened etcd with {case}"
        );
    }
    // With the trusted certificate (what every reaper of the fleet presents) it reads.
    let out = run_with_timeout(
        &mut etcd.etcdctl(
            &[&endpoints[0]],
            &["get", "--keys-only", "--prefix", f.prefix()],
        ),
        None,
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("/hosts/host-a"),
        "host-a's presence key is missing: {}",
        stdout_of(&out)
    );
}

const STEPS: &[Step] = &[
    ("end once, clean everywhere", end_once_clean_everywhere),
    (KILL9, kill9_mid_cleanup),
    (CONCURRENT, concurrent_writers),
    ("a host down during end", host_down_during_end),
    ("one etcd member stopped", one_member_stopped),
    ("quorum lost", quorum_lost),
    (LAPSED, host_lapsed_during_end),
];

const KILL9: &str = "kill -9 mid-cleanup";
const CONCURRENT: &str = "concurrent writers";
const LAPSED: &str = "a host lapsed during end";

#[test]
fn fleet_without_tls() {
    let mut fleet = Fleet::start(false);
    fleet.steps(STEPS);
}

/// The steps over mTLS too, the certificate check first, but for three whose subject does not
/// touch the transport and that take longest: the lapsed lease (etcd's lease timing), kill -9
/// (a restart over mTLS is in "a host down during end") and the concurrent writers (the
/// revision compare is the same transaction either way). The binary stays within ~4 minutes.
#[test]
fn fleet_with_mtls() {
    let mut fleet = Fleet::start(true);
    let mut steps = vec![(
        "a client without a trusted certificate is refused",
        untrusted_clients_are_refused as fn(&mut Fleet),
    )];
    steps.extend(
        STEPS
            .iter()
            .filter(|(name, _)| ![LAPSED, KILL9, CONCURRENT].contains(name)),
    );
    fleet.steps(&steps);
}
