//! Proves the observability story for real: a real Prometheus scrapes a real reaper on loopback
//! while a scenario makes every metric move (sessions end, expire, lose their heartbeat and are
//! deleted; an agent fails; an orphan passes its grace; two removals fail because a bystander
//! uses what they would remove; the Docker engine restarts; the paths root turns unreadable, so
//! reaper enters safe mode; a declared manifest file is invalid for a while). Then every dashboard expression must
//! be accepted by Prometheus and return data (no all-NaN panel), every alert rule must load and
//! evaluate, `promtool check metrics` must pass on the scrapes, and each movement must be visible
//! in Prometheus, not only in reaper.
//!
//! The Prometheus side is `scripts/check-observability --live URL --run CMD`: CMD is a handshake
//! that hands control back to this test while Prometheus scrapes, so the scenario is written
//! with the shared helpers and the script stays the one place that knows how to check the
//! dashboard and the rules.

mod common;

use common::*;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on everything the script does after the scenario (scrapes, queries, rule checks).
const CHECK_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on Prometheus becoming ready and scraping before the scenario may start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one step of the scenario (an object going, a metric moving).
const STEP: Duration = Duration::from_secs(30);

/// The names this test creates all contain one of these (for `Scope`).
const PATTERNS: &[&str] = &["obs-", "anvyl-agent-obs-"];
const AGENT: &str = "obs-agent";

/// Every one of these must be accepted by Prometheus and return at least one sample after the
/// scenario: each is a movement the scenario causes, seen through Prometheus. `$job` and
/// `$instance` are substituted by the script, as for the dashboard.
const EXPECTATIONS: &[&str] = &[
    // Cleanups, by every reason the scenario causes and by every resource kind.
    r#"increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", reason="sessionEnded"}[10m]) > 0"#,
    r#"increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", reason="sessionExpired"}[10m]) > 0"#,
    r#"increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", reason="heartbeatLost"}[10m]) > 0"#,
    r#"increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", reason="sessionDeleted"}[10m]) > 0"#,
    r#"increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", reason="agentFailed"}[10m]) > 0"#,
    r#"increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", reason="orphan"}[10m]) > 0"#,
    r#"sum(increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", resource="container"}[10m])) > 0"#,
    r#"sum(increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", resource="network"}[10m])) > 0"#,
    r#"sum(increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", resource="volume"}[10m])) > 0"#,
    r#"sum(increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", resource="image"}[10m])) > 0"#,
    r#"sum(increase(reaper_cleanups_total{job=~"$job", instance=~"$instance", resource="path"}[10m])) > 0"#,
    // Failed removals: a volume in use is a 409, a network with active endpoints a 403; both
    // are conflicts (they clear once the user goes).
    r#"increase(reaper_cleanup_failures_total{job=~"$job", instance=~"$instance", resource="volume", error="conflict"}[10m]) > 0"#,
    r#"sum(increase(reaper_cleanup_failures_total{job=~"$job", instance=~"$instance", resource="network", error="conflict"}[10m])) > 0"#,
    r#"increase(reaper_cleanup_attempts_total{job=~"$job", instance=~"$instance", resource="network"}[10m]) > 0"#,
    r#"increase(reaper_cleanup_attempts_total{job=~"$job", instance=~"$instance", resource="volume"}[10m]) > 0"#,
    r#"increase(reaper_docker_api_errors_total{job=~"$job", instance=~"$instance", operation="remove"}[10m]) > 0"#,
    // The SLI, for both kinds of owner.
    r#"increase(reaper_owner_end_to_cleanup_seconds_count{job=~"$job", instance=~"$instance", owner="session"}[10m]) > 0"#,
    r#"increase(reaper_owner_end_to_cleanup_seconds_count{job=~"$job", instance=~"$instance", owner="agent"}[10m]) > 0"#,
    // The loop: successful passes, and failed ones while the engine was down.
    r#"increase(reaper_reconciles_total{job=~"$job", instance=~"$instance", result="success"}[10m]) > 0"#,
    r#"increase(reaper_reconciles_total{job=~"$job", instance=~"$instance", result="error"}[10m]) > 0"#,
    r#"increase(reaper_reconcile_duration_seconds_count{job=~"$job", instance=~"$instance"}[10m]) > 0"#,
    r#"time() - reaper_last_successful_reconcile_timestamp_seconds{job=~"$job", instance=~"$instance"} < 30"#,
    // Docker health: down during the engine restart, up again now, and the stream reconnected.
    r#"min_over_time(reaper_docker_up{job=~"$job", instance=~"$instance"}[10m]) == 0"#,
    r#"reaper_docker_up{job=~"$job", instance=~"$instance"} == 1"#,
    r#"increase(reaper_docker_event_stream_restarts_total{job=~"$job", instance=~"$instance"}[10m]) > 0"#,
    r#"sum(increase(reaper_docker_api_errors_total{job=~"$job", instance=~"$instance", operation!="remove"}[10m])) > 0"#,
    // Gauges: orphans in their grace, objects with a live owner, records by phase.
    r#"max_over_time(reaper_orphans{job=~"$job", instance=~"$instance", resource="container"}[10m]) > 0"#,
    r#"max_over_time(reaper_orphans{job=~"$job", instance=~"$instance", resource="volume"}[10m]) > 0"#,
    r#"reaper_owned_objects{job=~"$job", instance=~"$instance", resource="container"} > 0"#,
    r#"reaper_owned_objects{job=~"$job", instance=~"$instance", resource="network"} > 0"#,
    r#"reaper_owned_objects{job=~"$job", instance=~"$instance", resource="volume"} > 0"#,
    r#"reaper_owned_objects{job=~"$job", instance=~"$instance", resource="image"} > 0"#,
    r#"reaper_sessions{job=~"$job", instance=~"$instance", phase="active"} > 0"#,
    r#"reaper_sessions{job=~"$job", instance=~"$instance", phase="ended"} > 0"#,
    r#"reaper_sessions{job=~"$job", instance=~"$instance", phase="cleaned"} >= 3"#,
    r#"max_over_time(reaper_agents{job=~"$job", instance=~"$instance", phase="running"}[10m]) > 0"#,
    r#"reaper_agents{job=~"$job", instance=~"$instance", phase="stopped"} > 0"#,
    r#"reaper_build_info{job=~"$job", instance=~"$instance", version!=""} == 1"#,
    // Safe mode and manifest errors came and went.
    r#"max_over_time(reaper_safe_mode{job=~"$job", instance=~"$instance"}[10m]) == 1"#,
    r#"reaper_safe_mode{job=~"$job", instance=~"$instance"} == 0"#,
    r#"max_over_time(reaper_manifest_errors{job=~"$job", instance=~"$instance"}[10m]) > 0"#,
    r#"reaper_manifest_errors{job=~"$job", instance=~"$instance"} == 0"#,
    // The fleet as sled sees it: this one host, ready.
    r#"reaper_fleet_hosts{job=~"$job", instance=~"$instance", state="ready"} == 1"#,
    r#"reaper_fleet_hosts{job=~"$job", instance=~"$instance", state="gone"} == 0"#,
    // Disk pressure: the private engine's data root is on this host, so it is measured.
    r#"reaper_disk_pressure_available{job=~"$job", instance=~"$instance"} == 1"#,
    r#"reaper_disk_usage_ratio{job=~"$job", instance=~"$instance", resource="bytes"} > 0"#,
];

/// The error class a failed removal of a network with active endpoints counts under: the
/// engine answers 403 ("has active endpoints"), which the adapter treats as a conflict.
const NETWORK_IN_USE_CLASSES: &[&str] = &["conflict"];

#[test]
fn a_real_prometheus_sees_every_metric_move_and_every_panel_and_rule_works() {
    let started = Instant::now();
    require_tool("promtool");
    require_tool("prometheus");
    let _scope = Scope::new(PATTERNS);
    let bystanders = Bystanders::create("obs");
    let tmp = tempfile::Builder::new()
        .prefix("reaper-obs-test")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir(&manifests).expect("manifest dir");
    let r = Reaper::start(&[
        "--orphan-grace-period",
        "3s",
        "--resync-interval",
        "2s",
        "--manifests",
        &manifests.display().to_string(),
    ]);
    let mut check = Check::spawn(&r, tmp.path());
    check.wait_for_go(&r);
    eprintln!(
        "Prometheus scrapes reaper after {:?}; running the scenario",
        started.elapsed()
    );

    let blocker = scenario(&r, &manifests);

    check.finish();
    let (status, output) = check.wait(CHECK_TIMEOUT);
    assert!(
        status.success(),
        "scripts/check-observability --live failed ({status}):\n{output}\n{}",
        r.log_tail()
    );
    // Guard against a script that passes without checking: it must have run every expectation
    // and loaded every rule of the alerts file.
    let alerts = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/prometheus/alerts.yaml"
    ))
    .expect("manifests/prometheus/alerts.yaml");
    let rules = alerts
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(
        rules, 13,
        "the alerts file changed: update this count and docs/metrics.md"
    );
    let summary = format!(
        "{} expectations and {rules} rules checked",
        EXPECTATIONS.len()
    );
    assert!(
        output.contains(&summary) && output.contains("dashboard expressions"),
        "the live check did not report `{summary}`:\n{output}"
    );
    eprintln!("{}", output.trim_end());

    // Which class the failed network removal counted under, for the report.
    let metrics = scrape(&r);
    let network_failures: Vec<(&str, f64)> = NETWORK_IN_USE_CLASSES
        .iter()
        .map(|c| {
            let n = sample_sum(
                &metrics,
                "reaper_cleanup_failures_total",
                &[("resource", "network"), ("error", c)],
            );
            (*c, n)
        })
        .collect();
    eprintln!("network-in-use failures by class: {network_failures:?}");

    assert!(
        is_running(&blocker),
        "the bystander that used the session's network and volume was touched"
    );
    bystanders.assert_all_alive();
    eprintln!("observability test took {:?}", started.elapsed());
}

/// Runs the scenario against `r`; returns the bystander container that blocks two removals.
fn scenario(r: &Reaper, manifests: &Path) -> String {
    // 1. The engine goes away and comes back: docker_up drops, passes fail, the event stream
    //    breaks and reconnects. First, so that the containers of the rest keep running.
    let restarts_before = metric(r, "reaper_docker_event_stream_restarts_total", &[]);
    stop_docker_engine();
    r.wait_until("reaper_docker_up reads 0", STEP, || {
        metric(r, "reaper_docker_up", &[]) == 0.0
    });
    // Long enough for a few 1 s scrapes to see it down.
    std::thread::sleep(Duration::from_secs(3));
    start_docker_engine();
    r.wait_until(
        "reaper_docker_up reads 1 and the event stream restarted",
        STEP,
        || {
            metric(r, "reaper_docker_up", &[]) == 1.0
                && metric(r, "reaper_docker_event_stream_restarts_total", &[]) > restarts_before
        },
    );

    // 2. Safe mode: an ended session has a path to delete, but the paths root is not a
    //    directory any more, so reaper's view is untrustworthy and it deletes nothing.
    let root = r.paths_root();
    let away = root.with_extension("away");
    std::fs::rename(&root, &away).expect("move the paths root away");
    std::fs::write(&root, "not a directory").expect("a file where the paths root was");
    r.apply(
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: obs-safe}\n\
         spec: {paths: [obs-safe]}\n",
    );
    r.cli_ok(&["session", "end", "obs-safe"]);
    r.wait_until("reaper_safe_mode reads 1", STEP, || {
        metric(r, "reaper_safe_mode", &[]) == 1.0
    });
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(&root).expect("remove the file");
    std::fs::rename(&away, &root).expect("put the paths root back");
    r.wait_until(
        "reaper_safe_mode reads 0 and the session is cleaned",
        STEP,
        || {
            metric(r, "reaper_safe_mode", &[]) == 0.0
                && r.phase("sessions", "obs-safe") == "Cleaned"
        },
    );

    // 3. A manifest file in the declared directory fails validation for a while.
    let broken = manifests.join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: Bad Name}\n",
    )
    .expect("write a broken manifest");
    r.wait_until("reaper_manifest_errors reads 1", STEP, || {
        metric(r, "reaper_manifest_errors", &[]) == 1.0
    });
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(&broken).expect("remove the broken manifest");
    r.wait_until("reaper_manifest_errors reads 0", STEP, || {
        metric(r, "reaper_manifest_errors", &[]) == 0.0
    });

    // 4. Records first, then their objects (as the README asks of launchers).
    r.apply(
        "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: obs-ttl}\n\
         spec: {ttl: 6s, cleanup: {stopTimeout: 1s}}\n---\n\
         apiVersion: reaper/v1\nkind: Session\nmetadata: {name: obs-hb}\n\
         spec: {heartbeatTimeout: 2s, cleanup: {stopTimeout: 1s}}\n---\n\
         apiVersion: reaper/v1\nkind: Session\nmetadata: {name: obs-end}\n\
         spec: {cleanup: {stopTimeout: 1s}, paths: [obs-end]}\n---\n\
         apiVersion: reaper/v1\nkind: Session\nmetadata: {name: obs-del}\n\
         spec: {cleanup: {stopTimeout: 1s}}\n---\n\
         apiVersion: reaper/v1\nkind: Session\nmetadata: {name: obs-stuck}\n---\n\
         apiVersion: reaper/v1\nkind: Session\nmetadata: {name: obs-live}\n---\n\
         apiVersion: reaper/v1\nkind: Agent\nmetadata: {name: obs-agent}\n\
         spec: {buildDir: obs-agent}\n",
    );
    let of = |s: &'static str| [("reaper.session", s)];
    let ttl = Container::new("obs-ttl-c").labels(&of("obs-ttl")).create();
    let hb = Container::new("obs-hb-c").labels(&of("obs-hb")).create();
    r.cli_ok(&["session", "heartbeat", "obs-hb"]);
    let end: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("obs-end-c").labels(&of("obs-end")).create(),
        ),
        (Kind::Network, network("obs-end-net", &of("obs-end"))),
        (Kind::Volume, volume("obs-end-vol", &of("obs-end"))),
        (Kind::Image, image("obs-end-img:1", &of("obs-end"))),
    ];
    let end_dir = write_file(&r.paths_root(), "obs-end/work/out.txt", "x");
    let del = Container::new("obs-del-c").labels(&of("obs-del")).create();
    // A live session keeps one object of every kind to the end: owned_objects stays non-zero.
    Container::new("obs-live-c")
        .labels(&of("obs-live"))
        .create();
    network("obs-live-net", &of("obs-live"));
    volume("obs-live-vol", &of("obs-live"));
    image("obs-live-img:1", &of("obs-live"));
    // The stuck session's network and volume are used by a container that is not ours.
    let stuck_net = network("obs-stuck-net", &of("obs-stuck"));
    let stuck_vol = volume("obs-stuck-vol", &of("obs-stuck"));
    let blocker = Container::new("obs-blocker")
        .network(&stuck_net)
        .volume(&stuck_vol)
        .create();
    // An agent as its launcher runs it.
    r.cli_ok(&["agent", "report", AGENT, "starting"]);
    let build_dir = r.paths_root().join(AGENT);
    write_file(&build_dir, "src/main.sh", "echo hi\n");
    let agent_ref = format!("anvyl-agent-{AGENT}:latest");
    let agent: Vec<Obj> = vec![
        (Kind::Image, image(&agent_ref, &[])),
        (
            Kind::Container,
            Container::new(&format!("anvyl-agent-{AGENT}"))
                .image(&agent_ref)
                .create(),
        ),
    ];
    r.cli_ok(&["agent", "report", AGENT, "running"]);
    // Orphans: ours by label, owned by a session that does not exist.
    let orphans: Vec<Obj> = vec![
        (
            Kind::Container,
            Container::new("obs-orphan-c")
                .labels(&of("obs-gone"))
                .create(),
        ),
        (Kind::Volume, volume("obs-orphan-vol", &of("obs-gone"))),
    ];
    // Let a pass and a scrape see every owner live with its objects.
    r.wait_until(
        "reaper counts the live sessions' objects as owned",
        STEP,
        || {
            ["container", "network", "volume", "image"]
                .iter()
                .all(|k| metric(r, "reaper_owned_objects", &[("resource", k)]) > 0.0)
                && metric(r, "reaper_orphans", &[("resource", "container")]) > 0.0
        },
    );
    std::thread::sleep(Duration::from_millis(1500));

    // 5. Owners stop being live, each in its own way.
    let ended = Instant::now();
    r.cli_ok(&["session", "end", "obs-end"]);
    r.cli_ok(&["session", "end", "obs-stuck"]);
    r.cli_ok(&["agent", "report", AGENT, "failed"]);
    r.cli_ok(&["delete", "session", "obs-del", "--wait"]);

    r.wait_until("the ended session's objects are gone", STEP, || {
        all_gone(&end) && !end_dir.exists()
    });
    r.wait_until("the failed agent's objects are gone", STEP, || {
        all_gone(&agent) && !build_dir.exists()
    });
    r.wait_until("the orphans are gone after their grace", STEP, || {
        all_gone(&orphans)
    });
    r.wait_until("the expired sessions' containers are gone", STEP, || {
        all_gone(&[
            (Kind::Container, ttl.clone()),
            (Kind::Container, hb.clone()),
        ])
    });
    r.wait_until("the deleted session's container is gone", STEP, || {
        !exists(Kind::Container, &del)
    });
    r.wait_until("sessions read Cleaned and the agent Stopped", STEP, || {
        ["obs-end", "obs-ttl", "obs-hb"]
            .iter()
            .all(|s| r.phase("sessions", s) == "Cleaned")
            && r.phase("agents", AGENT) == "Stopped"
    });
    r.wait_until(
        "the stuck session's network and volume removals have failed",
        STEP,
        || {
            let m = scrape(r);
            sample_sum(
                &m,
                "reaper_cleanup_failures_total",
                &[("resource", "volume"), ("error", "conflict")],
            ) > 0.0
                && sample_sum(
                    &m,
                    "reaper_cleanup_failures_total",
                    &[("resource", "network")],
                ) > 0.0
        },
    );
    eprintln!(
        "every owner was cleaned up (or failed) {:?} after the ends",
        ended.elapsed()
    );
    assert!(
        exists(Kind::Network, &stuck_net) && exists(Kind::Volume, &stuck_vol),
        "the network and volume in use by a bystander were removed"
    );
    assert_eq!(r.phase("sessions", "obs-stuck"), "Ended");
    assert_eq!(r.phase("sessions", "obs-live"), "Active");
    // A few more scrapes after the last movement.
    std::thread::sleep(Duration::from_secs(2));
    blocker
}

// ---------------------------------------------------------------------------------------------
// scripts/check-observability --live, run in the background around the scenario
// ---------------------------------------------------------------------------------------------

/// The script, in its own process group so that a failing test can stop it and the Prometheus
/// it started (and nothing else) by that group's ID.
struct Check {
    child: Option<Child>,
    output: PathBuf,
    go: PathBuf,
    done: PathBuf,
}

impl Check {
    fn spawn(r: &Reaper, dir: &Path) -> Check {
        let go = dir.join("go");
        let done = dir.join("done");
        let output = dir.join("check-observability.log");
        // The scenario command: tell the test to go, then wait (bounded) for it to finish.
        let run = format!(
            "touch '{go}'; for _ in $(seq 3000); do \
               if [ -e '{done}' ]; then exit \"$(cat '{done}')\"; fi; sleep 0.1; done; \
             echo 'the test never finished its scenario' >&2; exit 1",
            go = go.display(),
            done = done.display()
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-observability");
        let log = File::create(&output).expect("script log");
        let log2 = log.try_clone().expect("script log");
        let mut cmd = Command::new(script);
        cmd.arg("--live")
            .arg(format!("http://{}", r.metrics_addr()))
            .args(["--run", &run])
            .args(["--run-timeout", "330"])
            .args(["--timeout", &CHECK_TIMEOUT.as_secs().to_string()])
            .arg("--fail-on-nan");
        for e in EXPECTATIONS {
            cmd.args(["--expect", e]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
        Check {
            child: Some(child),
            output,
            go,
            done,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits until the script has Prometheus scraping reaper and runs the scenario command.
    fn wait_for_go(&mut self, r: &Reaper) {
        let t0 = Instant::now();
        while !self.go.exists() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "scripts/check-observability exited ({status}) before the scenario:\n{}",
                    self.output()
                );
            }
            if t0.elapsed() > START_TIMEOUT {
                panic!(
                    "Prometheus did not scrape reaper within {START_TIMEOUT:?}:\n{}\n{}",
                    self.output(),
                    r.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Tells the scenario command that the scenario succeeded.
    fn finish(&self) {
        let mut f = File::create(&self.done).expect("done file");
        f.write_all(b"0").expect("write done file");
    }

    /// Waits (bounded) for the script to exit; returns its status and output.
    fn wait(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let t0 = Instant::now();
        loop {
            let child = self.child.as_mut().expect("the script is running");
            if let Some(status) = child.try_wait().expect("wait for the script") {
                self.child = None;
                return (status, self.output());
            }
            if t0.elapsed() > timeout {
                self.stop();
                panic!(
                    "scripts/check-observability did not finish within {timeout:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to the script's process group (its trap stops Prometheus), then SIGKILL.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let signal = |sig: &str| {
            let _ = run_with_timeout(
                Command::new("kill").args([sig, "--", &group]),
                None,
                Duration::from_secs(5),
            );
        };
        signal("-TERM");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                // Prometheus may outlive the shell by a moment.
                std::thread::sleep(Duration::from_millis(500));
                signal("-KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        signal("-KILL");
        let _ = child.wait();
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        if self.child.is_some() {
            eprintln!("--- check-observability output ---\n{}", self.output());
            self.stop();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading reaper's own /metrics
// ---------------------------------------------------------------------------------------------

/// Fails (never skips) when a Prometheus tool is missing.
fn require_tool(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is missing: install Debian's `prometheus` package \
         (./scripts/test does it through scripts/lib.sh ensure_packages)"
    );
}

/// One scrape of reaper's /metrics (HTTP/1.0 over loopback, bounded).
fn scrape(r: &Reaper) -> String {
    let addr = r.metrics_addr();
    let get = || -> std::io::Result<String> {
        let mut s = TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    };
    let body = get().unwrap_or_else(|e| panic!("scraping {addr}: {e}"));
    assert!(
        body.starts_with("HTTP/1.") && body.lines().next().is_some_and(|l| l.contains(" 200 ")),
        "GET /metrics on {addr}: {}",
        body.lines().next().unwrap_or("")
    );
    body
}

fn metric(r: &Reaper, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample_sum(&scrape(r), name, labels)
}

/// The sum of the samples of `name` whose labels include all of `labels`.
fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
