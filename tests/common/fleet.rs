//! A fleet of three hosts for issue 14's tests: a 3-member etcd cluster (plain or mTLS), three
//! private dockerds of the test's own, each with the test image, and three reapers `host-a`,
//! `host-b`, `host-c`, one per engine, all on the cluster under one prefix. Every engine has
//! its bystanders from the start.
//!
//! Dropping the fleet stops everything, in order: the reapers, the bystanders, the engines
//! (destroyed) and the etcd members. Scenario steps run through [`Fleet::steps`], which runs
//! every step even when one fails, heals the fleet in between and fails at the end naming
//! the failed steps; [`Deferred`] checks let a step go on to its end past a failed check.

use std::time::Duration;

use serde_json::Value;

use super::etcd::EtcdCluster;
use super::*;

/// The host names of the fleet, one per engine, in order.
pub const HOSTS: [&str; 3] = ["host-a", "host-b", "host-c"];

/// A named scenario step (see [`Fleet::steps`]).
pub type Step = (&'static str, fn(&mut Fleet));

pub struct Fleet {
    // Dropped in this order: reapers, bystanders, engines, etcd.
    reapers: Vec<Reaper>,
    bystanders: Vec<Bystanders>,
    engines: Vec<PrivateEngine>,
    etcd: EtcdCluster,
    stopped_members: Vec<usize>,
    prefix: String,
}

impl Fleet {
    /// Starts the cluster and the engines (at once), then the three reapers.
    pub fn start(tls: bool) -> Fleet {
        let started = std::time::Instant::now();
        let (etcd, engines) = std::thread::scope(|s| {
            let etcd = s.spawn(move || EtcdCluster::start(tls));
            let engines = PrivateEngine::start_many(HOSTS.len());
            (etcd.join(), engines)
        });
        let etcd = etcd.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let bystanders = engines
            .iter()
            .map(|e| e.run(|| Bystanders::create("fleet")))
            .collect();
        let mut fleet = Fleet {
            reapers: Vec::new(),
            bystanders,
            engines,
            etcd,
            stopped_members: Vec::new(),
            prefix: format!("/fleet-{}", std::process::id()),
        };
        for i in 0..HOSTS.len() {
            let r = Reaper::prepare(&[]);
            fleet.reapers.push(r);
            fleet.configure(i, &fleet.etcd_args());
            fleet.spawn(i);
        }
        for i in 0..HOSTS.len() {
            fleet.reapers[i].wait_ready();
        }
        eprintln!("=== fleet (tls: {tls}) up in {:?}", started.elapsed());
        fleet
    }

    /// The `serve` flags that put a reaper on the cluster, with the trusted certificates.
    pub fn etcd_args(&self) -> Vec<String> {
        self.etcd.serve_args(&self.prefix)
    }

    /// Sets host `i`'s `serve` flags for its next start: its name, its engine, quick passes
    /// and a short orphan grace, plus `etcd` (the store flags).
    pub fn configure(&mut self, i: usize, etcd: &[String]) {
        let mut args: Vec<String> = vec![
            "--host-name".into(),
            HOSTS[i].into(),
            "--docker-host".into(),
            self.engines[i].host(),
            "--resync-interval".into(),
            "1s".into(),
            "--orphan-grace-period".into(),
            "1s".into(),
        ];
        args.extend(etcd.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.reapers[i].set_extra(&args);
    }

    pub fn etcd(&self) -> &EtcdCluster {
        &self.etcd
    }

    /// The key prefix every reaper of the fleet uses.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Host `i`'s reaper (0 = host-a).
    pub fn reaper(&self, i: usize) -> &Reaper {
        &self.reapers[i]
    }

    pub fn engine(&self, i: usize) -> &PrivateEngine {
        &self.engines[i]
    }

    /// Runs `f` with the docker helpers pointed at host `i`'s engine.
    pub fn on<T>(&self, i: usize, f: impl FnOnce() -> T) -> T {
        self.engines[i].run(f)
    }

    /// Starts host `i`'s reaper (again) without waiting for it.
    pub fn spawn(&mut self, i: usize) {
        let r = &mut self.reapers[i];
        self.engines[i].run(|| r.spawn());
    }

    /// Starts host `i`'s reaper (again) and waits until it answers.
    pub fn start_reaper(&mut self, i: usize) {
        self.spawn(i);
        self.reapers[i].wait_ready();
    }

    /// `kill -9` of host `i`'s reaper: its lease stays until it lapses.
    pub fn kill9(&mut self, i: usize) {
        self.reapers[i].kill9();
    }

    /// Stops etcd member `m` (kept stopped until [`Fleet::start_member`] or a heal).
    pub fn stop_member(&mut self, m: usize) {
        self.etcd.stop_member(m);
        self.stopped_members.push(m);
    }

    pub fn start_member(&mut self, m: usize) {
        self.stopped_members.retain(|&s| s != m);
        self.etcd.start_member(m);
        self.etcd.wait_ready(&[m]);
    }

    /// After a failed step: every member and every reaper running again.
    fn heal(&mut self) {
        for m in std::mem::take(&mut self.stopped_members) {
            self.etcd.start_member(m);
        }
        self.etcd.wait_ready(&[0, 1, 2]);
        for i in 0..HOSTS.len() {
            if self.reapers[i].pid().is_none() {
                self.start_reaper(i);
            }
        }
    }

    /// Runs every step, each one's failure reported without hiding the steps after it (the
    /// fleet is healed after a failure); panics at the end naming the failed steps.
    pub fn steps(&mut self, steps: &[Step]) {
        let mut failed = Vec::new();
        for (name, step) in steps {
            eprintln!("=== step {name}");
            let started = std::time::Instant::now();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&mut *self)));
            eprintln!("=== step {name}: {:?}", started.elapsed());
            if let Err(panic) = outcome {
                // Only deferred checks failed: the scenario itself ran, its logs say nothing.
                if !panic.is::<DeferredFailed>() {
                    for r in &self.reapers {
                        eprintln!("{}", r.log_tail());
                    }
                }
                failed.push(*name);
                self.heal();
            }
        }
        self.assert_bystanders();
        assert!(failed.is_empty(), "failed steps: {}", failed.join(", "));
    }

    /// Panics naming every bystander missing on any engine.
    pub fn assert_bystanders(&self) {
        for b in &self.bystanders {
            b.assert_all_alive();
        }
    }

    /// Creates on every engine a session's objects, labelled for it: a running container (with
    /// `--init`) on an internal network with a volume mounted, a created container, the network
    /// and the volume. Returns them per engine.
    pub fn session_objects(&self, session: &str) -> Vec<Vec<Obj>> {
        (0..HOSTS.len())
            .map(|i| self.on(i, || objects_for(session)))
            .collect()
    }

    pub fn all_gone(&self, i: usize, objs: &[Obj]) -> bool {
        self.on(i, || all_gone(objs))
    }

    pub fn all_exist(&self, i: usize, objs: &[Obj]) -> bool {
        self.on(i, || all_exist(objs))
    }

    /// Whether each engine's share of `objs` is gone.
    pub fn gone_everywhere(&self, objs: &[Vec<Obj>]) -> bool {
        (0..objs.len()).all(|i| self.all_gone(i, &objs[i]))
    }

    /// Waits until every engine's share of `objs` is gone, naming what is left on a timeout.
    pub fn wait_gone_everywhere(&self, what: &str, objs: &[Vec<Obj>], timeout: Duration) {
        if try_wait_until(timeout, || self.gone_everywhere(objs)).is_err() {
            let left: Vec<String> = (0..objs.len())
                .map(|i| format!("{}: {:?}", HOSTS[i], self.on(i, || present(&objs[i]))))
                .collect();
            panic!(
                "{what}: still present after {timeout:?}: {}",
                left.join("; ")
            );
        }
    }

    /// Whether every engine's share of `objs` still exists.
    pub fn exist_everywhere(&self, objs: &[Vec<Obj>]) -> bool {
        (0..objs.len()).all(|i| self.all_exist(i, &objs[i]))
    }

    /// The session's phase as host `i` reads it ("" when the call fails).
    pub fn phase(&self, i: usize, session: &str) -> String {
        self.reapers[i].phase("sessions", session)
    }

    /// Waits until every running reaper reads `phase` for the session.
    pub fn wait_phase(&self, session: &str, phase: &str, timeout: Duration) {
        let running: Vec<usize> = (0..HOSTS.len())
            .filter(|&i| self.reapers[i].pid().is_some())
            .collect();
        self.reapers[running[0]].wait_until(
            &format!("session {session} is {phase} on {running:?}"),
            timeout,
            || running.iter().all(|&i| self.phase(i, session) == phase),
        );
    }

    /// `status.hosts` of a session as host-a reads it: (hostName, state) per row, in order.
    pub fn host_rows(&self, session: &str) -> Vec<(String, String)> {
        host_rows(&self.reapers[0].session(session))
    }

    /// Whether host `i`'s `reaper status -o json` says safe mode.
    pub fn safe_mode(&self, i: usize) -> bool {
        let out = self.reapers[i].cli(&["status", "-o", "json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["health"]["safeMode"].as_bool())
            .unwrap_or(false)
    }

    /// `reaper get hosts -o json` through host `i`: (name, state, safeMode) per item.
    pub fn hosts(&self, i: usize) -> Result<Vec<(String, String, bool)>, String> {
        let out = self.reapers[i].cli(&["get", "hosts", "-o", "json"]);
        if !out.status.success() {
            return Err(format!(
                "reaper get hosts failed: {}",
                stderr_of(&out).trim()
            ));
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("reaper get hosts -o json printed invalid JSON: {e}"))?;
        if v["kind"] != "List" {
            return Err(format!("reaper get hosts -o json is not a List: {v}"));
        }
        Ok(v["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|h| {
                (
                    h["hostName"].as_str().unwrap_or("").to_string(),
                    h["state"].as_str().unwrap_or("").to_string(),
                    h["safeMode"].as_bool().unwrap_or(false),
                )
            })
            .collect())
    }
}

/// Waits until `reaper get hosts` through host `i` lists `expected` (name, state, safeMode);
/// returns what it listed last. Gives up at once when the verb fails (e.g. it does not exist).
pub fn wait_hosts(
    f: &Fleet,
    i: usize,
    expected: &[(&str, &str, bool)],
    timeout: Duration,
) -> Result<Vec<(String, String, bool)>, String> {
    let same = |l: &Vec<(String, String, bool)>| {
        l.len() == expected.len()
            && l.iter()
                .zip(expected)
                .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2 == b.2)
    };
    let mut last = f.hosts(i);
    let _ = try_wait_until(timeout, || {
        last = f.hosts(i);
        last.as_ref().map_or(true, same)
    });
    last
}

/// What [`Fleet::session_objects`] creates on the current engine.
pub fn objects_for(session: &str) -> Vec<Obj> {
    let label = [("reaper.session", session)];
    let net = network(&format!("{session}-net"), &label);
    let vol = volume(&format!("{session}-vol"), &label);
    let running = Container::new(&format!("{session}-run"))
        .labels(&label)
        .network(&net)
        .volume(&vol)
        .running()
        .create();
    let idle = Container::new(&format!("{session}-idle"))
        .labels(&label)
        .created()
        .create();
    vec![
        (Kind::Container, running),
        (Kind::Container, idle),
        (Kind::Network, net),
        (Kind::Volume, vol),
    ]
}

/// `status.hosts` of a session record: (hostName, state) per row, in order.
pub fn host_rows(session: &Value) -> Vec<(String, String)> {
    session["status"]["hosts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["hostName"].as_str().unwrap_or("").to_string(),
                r["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The expected rows: each host of the fleet with its state.
pub fn rows(states: [&str; 3]) -> Vec<(String, String)> {
    HOSTS
        .iter()
        .zip(states)
        .map(|(h, s)| (h.to_string(), s.to_string()))
        .collect()
}

/// Checks whose failure must not stop the scenario: each failed one is remembered and
/// [`Deferred::finish`] panics listing them all (used for what other branches build: per-host
/// rows and `reaper get hosts`).
#[derive(Default)]
pub struct Deferred {
    failures: Vec<String>,
}

impl Deferred {
    pub fn new() -> Deferred {
        Deferred::default()
    }

    /// Remembers `what` as failed unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("deferred check failed: {what}");
            self.failures.push(what);
        }
    }

    /// Checks that `actual == expected`.
    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, actual: T, expected: T) {
        let ok = actual == expected;
        self.check(ok, || {
            format!("{what}: expected {expected:?}, got {actual:?}")
        });
    }

    /// Panics (with a [`DeferredFailed`]) listing the failed checks, if any.
    pub fn finish(self) {
        if !self.failures.is_empty() {
            eprintln!(
                "{} deferred check(s) failed:\n- {}",
                self.failures.len(),
                self.failures.join("\n- ")
            );
            std::panic::panic_any(DeferredFailed);
        }
    }
}

/// The panic of [`Deferred::finish`]: the step ran to its end, only its deferred checks failed.
pub struct DeferredFailed;
