//! Issue 11: Debian's dockerd 20.10.24 deadlocks when two container exits overlap. On such an
//! engine reaper keeps at most one exit (stop, kill, forced delete) in flight and calls the
//! network API only between exits. A counting proxy between reaper and the private engine
//! measures it; with `--serial-exits off` the same measure sees exits overlap, so it can fail.

mod common;

use common::proxy::{classify, Class, CountingProxy, Parser};
use common::*;
use serde_json::{json, Value};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Upper bound for ending every session of a scenario until all its objects are gone.
const CLEAN_LIMIT: Duration = Duration::from_secs(180);

/// Sessions with running containers (the first of each on the session's internal network) and
/// that network, all labelled `reaper.session`.
struct Scenario {
    sessions: Vec<String>,
    containers: Vec<Obj>,
    networks: Vec<Obj>,
}

impl Scenario {
    /// Registers the sessions first (as a workflow system should), then creates the objects.
    fn create(r: &Reaper, prefix: &str, sessions: usize, per_session: usize) -> Scenario {
        let names: Vec<String> = (0..sessions).map(|i| format!("{prefix}-s{i}")).collect();
        let docs: Vec<String> = names
            .iter()
            .map(|n| format!("apiVersion: reaper/v1\nkind: Session\nmetadata:\n  name: {n}\n"))
            .collect();
        r.apply(&docs.join("---\n"));
        let mut networks = Vec::new();
        let mut specs = Vec::new();
        for n in &names {
            let net = network(&format!("{n}-net"), &[("reaper.session", n)]);
            for i in 0..per_session {
                let c = Container::new(&format!("{n}-c{i}"))
                    .label("reaper.session", n)
                    .running();
                specs.push(if i == 0 { c.network(&net) } else { c });
            }
            networks.push((Kind::Network, net));
        }
        let created = Instant::now();
        let containers: Vec<Obj> = create_in_parallel(specs)
            .into_iter()
            .map(|id| (Kind::Container, id))
            .collect();
        eprintln!(
            "created {} running containers in {:?}",
            containers.len(),
            created.elapsed()
        );
        Scenario {
            sessions: names,
            containers,
            networks,
        }
    }

    fn objects(&self) -> Vec<Obj> {
        self.containers
            .iter()
            .chain(&self.networks)
            .cloned()
            .collect()
    }

    /// Ends every session back to back and waits (bounded) until all objects are gone and
    /// every session is `Cleaned`. Returns the time from the first `session end` until all
    /// objects were gone. A timeout says whether the engine wedged (with a goroutine dump).
    fn end_and_wait(&self, r: &Reaper) -> Duration {
        let started = Instant::now();
        for n in &self.sessions {
            r.cli_ok(&["session", "end", n]);
        }
        let objs = self.objects();
        if let Err(elapsed) = try_wait_until(CLEAN_LIMIT, || all_gone(&objs)) {
            let diagnosis = wedge::diagnose();
            let left = if wedge::is_wedged() {
                String::new()
            } else {
                format!("; still present: {}", present(&objs).join(", "))
            };
            panic!(
                "the objects of {} sessions were not all gone after {elapsed:?} (limit \
                 {CLEAN_LIMIT:?}): {diagnosis}{left}\n{}",
                self.sessions.len(),
                r.log_tail()
            );
        }
        let took = started.elapsed();
        for n in &self.sessions {
            r.wait_until(
                &format!("session {n} is Cleaned"),
                Duration::from_secs(30),
                || r.phase("sessions", n) == "Cleaned",
            );
            let rec = r.session(n);
            let per_session = (self.containers.len() / self.sessions.len()) as u64;
            assert_eq!(
                removed_counts(&rec),
                (per_session, 1, 0, 0, 0),
                "status.removed: {rec:#}"
            );
        }
        took
    }
}

/// Creates the containers with a few workers (starts are not exits: they may overlap).
fn create_in_parallel(specs: Vec<Container>) -> Vec<String> {
    let per_worker = specs.len().div_ceil(4).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = specs
            .chunks(per_worker)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .cloned()
                        .map(Container::create)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a worker creating containers panicked"))
            .collect()
    })
}

/// What `reaper status -o json` says about serial exits (`health.serialExits`: on, reason)
/// once the engine answered, and the sentence explaining it.
fn serial_exits_status(r: &Reaper) -> (Value, String) {
    let mut health = Value::Null;
    r.wait_until(
        "`reaper status` reports serial exits",
        Duration::from_secs(10),
        || {
            health = r.json(&["status", "-o", "json"])["health"].clone();
            !health["serialExits"].is_null()
        },
    );
    let explained = health["serialExitsExplained"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (health["serialExits"].clone(), explained)
}

/// The `reaper_engine_info` series the daemon exports (its labels say the mode and why).
fn engine_info_series(r: &Reaper) -> String {
    scrape(&r.metrics_addr())
        .lines()
        .find(|l| l.starts_with("reaper_engine_info{"))
        .unwrap_or_default()
        .to_string()
}

/// The docker CLI through the proxy, bounded like [`docker`].
fn docker_via(proxy: &CountingProxy, args: &[&str]) -> Output {
    run_with_timeout(
        Command::new("docker")
            .arg("-H")
            .arg(proxy.host())
            .args(args)
            .env_remove("DOCKER_CONTEXT"),
        None,
        DOCKER_TIMEOUT,
    )
}

#[test]
fn on_an_affected_engine_reaper_keeps_one_exit_in_flight_and_networks_apart() {
    let _scope = Scope::new(&["e2e-serial-"]);
    let bystanders = Bystanders::create("serial");
    let proxy = CountingProxy::start();
    let r = Reaper::start(&["--docker-host", &proxy.host()]);
    // Debian's 20.10.24 is affected, so the default (auto) turns serial exits on, and says so.
    let (serial, explained) = serial_exits_status(&r);
    assert_eq!(
        serial,
        json!({"on": true, "reason": "affected_version"}),
        "{explained}"
    );
    assert!(explained.starts_with("serial exits on"), "{explained}");
    assert!(
        r.log().contains(&explained),
        "the startup log explains serial exits ({explained})\n{}",
        r.log_tail()
    );
    let info = engine_info_series(&r);
    assert!(
        info.contains("serial_exits=\"on\"") && info.contains("reason=\"affected_version\""),
        "reaper_engine_info: {info}"
    );
    let scenario = Scenario::create(&r, "e2e-serial", 5, 12);

    let took = scenario.end_and_wait(&r);
    let counts = proxy.counts();
    eprintln!(
        "serial exits (auto): {} containers and {} networks of {} sessions gone {took:?} after \
         the first `session end`; proxy: {counts}",
        scenario.containers.len(),
        scenario.networks.len(),
        scenario.sessions.len()
    );
    assert_eq!(
        counts.max_exits_in_flight, 1,
        "exits overlapped on an affected engine: {counts}"
    );
    assert!(
        counts.exits_total >= 60,
        "every running container is stopped once: {counts}"
    );
    assert_eq!(
        counts.network_during_exit, 0,
        "a network call overlapped an exit: {counts}"
    );
    assert!(
        counts.networks_total > 0,
        "no network call went through the proxy: {counts}"
    );
    assert_eq!(
        counts.unparsed_connections, 0,
        "the proxy lost track of requests: {counts}"
    );
    bystanders.assert_all_alive();
}

#[test]
fn with_serial_exits_off_exits_overlap_as_before() {
    let _scope = Scope::new(&["e2e-overlap-"]);
    let bystanders = Bystanders::create("overlap");
    let proxy = CountingProxy::start();
    let r = Reaper::start(&["--docker-host", &proxy.host(), "--serial-exits", "off"]);
    let (serial, explained) = serial_exits_status(&r);
    assert_eq!(
        serial,
        json!({"on": false, "reason": "config_off"}),
        "{explained}"
    );
    let info = engine_info_series(&r);
    assert!(
        info.contains("serial_exits=\"off\"") && info.contains("reason=\"config_off\""),
        "reaper_engine_info: {info}"
    );
    let scenario = Scenario::create(&r, "e2e-overlap", 2, 12);

    let took = scenario.end_and_wait(&r);
    let counts = proxy.counts();
    eprintln!(
        "serial exits off: {} containers and {} networks of {} sessions gone {took:?} after \
         the first `session end`; proxy: {counts}",
        scenario.containers.len(),
        scenario.networks.len(),
        scenario.sessions.len()
    );
    assert!(
        counts.max_exits_in_flight > 1,
        "with serial exits off, exits should overlap: {counts}"
    );
    assert_eq!(counts.unparsed_connections, 0, "{counts}");
    bystanders.assert_all_alive();
}

/// The proxy itself, driven by the docker CLI: a stop, a kill and a forced delete are exits, a
/// plain delete is not; a network list during a stop overlaps it; a second exit request while
/// one is in flight makes two. Only one real exit ever runs at a time here.
#[test]
fn the_counting_proxy_sees_exits_and_network_calls() {
    let _scope = Scope::new(&["e2e-proxy-"]);
    let proxy = CountingProxy::start();
    let slow = Container::new("e2e-proxy-slow").ignoring_sigterm().create();
    let created = Container::new("e2e-proxy-created").created().create();
    let running = Container::new("e2e-proxy-running").create();

    std::thread::scope(|s| {
        // Waits its whole 3 s grace period: in flight while the rest happens.
        let stop = s.spawn(|| docker_via(&proxy, &["stop", "-t", "3", &slow]));
        wait_until("the stop is in flight", Duration::from_secs(10), || {
            proxy.counts().exits_in_flight == 1
        });
        let ls = docker_via(&proxy, &["network", "ls"]);
        assert!(ls.status.success(), "{}", stderr_of(&ls));
        // Refused at once (the container does not run), so no second real exit.
        let kill = docker_via(&proxy, &["kill", &created]);
        assert!(!kill.status.success(), "kill of a created container");
        assert!(stop.join().expect("stop").status.success());
    });
    let counts = proxy.counts();
    assert_eq!(counts.max_exits_in_flight, 2, "{counts}");
    assert_eq!(counts.network_during_exit, 1, "{counts}");
    assert_eq!(counts.exits_in_flight, 0, "{counts}");

    let rm = docker_via(&proxy, &["rm", &created]);
    assert!(rm.status.success(), "{}", stderr_of(&rm));
    assert_eq!(proxy.exits_total(), 2, "a plain delete is no exit");
    let rm = docker_via(&proxy, &["rm", "-f", &running]);
    assert!(rm.status.success(), "{}", stderr_of(&rm));
    let counts = proxy.counts();
    eprintln!("proxy self-test: {counts}");
    assert_eq!(
        counts.exits_total, 3,
        "a forced delete is an exit: {counts}"
    );
    assert_eq!(counts.max_exits_in_flight, 2, "{counts}");
    assert_eq!(counts.unparsed_connections, 0, "{counts}");
    // Streams (here the events stream `docker events` reads) still flow through it.
    let events = docker_via(
        &proxy,
        &[
            "events",
            "--since",
            "1m",
            "--until",
            "0s",
            "--filter",
            "container=e2e-proxy-slow",
        ],
    );
    // (`--until` is whole seconds: only what happened well before now is sure to be there.)
    assert!(
        stdout_of(&events).contains("container start"),
        "events through the proxy: {}",
        stdout_of(&events)
    );
}

#[test]
fn the_proxy_reads_requests_like_the_engine() {
    assert_eq!(
        classify("POST", "/v1.41/containers/abc/stop?t=5"),
        Class::Exit
    );
    assert_eq!(classify("POST", "/containers/abc/kill"), Class::Exit);
    assert_eq!(
        classify("DELETE", "/v1.41/containers/abc?force=1"),
        Class::Exit
    );
    assert_eq!(
        classify("DELETE", "/containers/abc?v=0&force=true"),
        Class::Exit
    );
    assert_eq!(
        classify("DELETE", "/containers/abc?force=false"),
        Class::Other
    );
    assert_eq!(classify("DELETE", "/containers/abc"), Class::Other);
    assert_eq!(classify("POST", "/containers/abc/start"), Class::Other);
    assert_eq!(classify("GET", "/v1.41/networks?filters=x"), Class::Network);
    assert_eq!(classify("DELETE", "/networks/abc"), Class::Network);
    assert_eq!(classify("GET", "/v1.41/containers/json"), Class::Other);

    let mut p = Parser::default();
    let head = |m: &str, t: &str| vec![(m.to_string(), t.to_string())];
    let (h, _) = p.feed(b"POST /containers/a/stop HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
    assert_eq!(h, head("POST", "/containers/a/stop"));
    // The body's end and a header split across reads.
    let (h, _) = p.feed(b"cdGET /networks HTTP/1.1\r\n");
    assert!(h.is_empty(), "{h:?}");
    let (h, gave_up) = p.feed(b"\r\n");
    assert_eq!(h, head("GET", "/networks"));
    assert!(!gave_up);
    let (_, gave_up) = p.feed(b"POST /build HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert!(gave_up, "a chunked body is not followed");
}
