//! CI check for the benchmark (issue 5): `scripts/bench --quick` starts, runs every scenario
//! against the suite's private engine and the test build of reaper, and finishes.
//!
//! The targets themselves are not asserted: the machine is shared and a tiny N says nothing
//! about throughput. What is asserted is that each scenario produced its rows with a figure
//! and a verdict, so a bench that silently stops measuring something fails here.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{docker_host, run_with_timeout, stderr_of, stdout_of};

/// The quick bench takes ~30 s; the bound leaves room for a slow, shared machine.
const BENCH_TIMEOUT: Duration = Duration::from_secs(150);

/// Every row the quick bench must print: (scenario, a fragment of the figure's name).
const ROWS: &[(&str, &str)] = &[
    ("1 throughput", "first end -> last gone"),
    // The safe protocol (one stop at a time), the baseline on engines with the exit deadlock
    // such as the suite's; the parallel-exit rows (raw8, protocol) are left out there.
    ("1 throughput (safe)", "one stop -t 5 at a time"),
    ("1 throughput (peer)", "container prune"),
    ("1 throughput (peer)", "docker rm -f"),
    ("2 latency", "p50 over"),
    ("2 latency", "p99 over"),
    ("2 latency", "ttl deadline"),
    ("2 latency", "heartbeat deadline"),
    ("3 idle", "CPU over"),
    ("3 idle", "RSS"),
    ("3 idle", "Docker API calls while idle"),
    ("4 scale", "full pass wall"),
    ("4 scale", "reaper CPU per pass"),
    ("4 scale", "Docker API calls per pass"),
    ("5 api", "reaper apply of"),
    ("5 api", "reaper get sessions"),
];

#[test]
fn quick_bench_runs_every_scenario_to_the_end() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench");
    let started = Instant::now();
    let out = run_with_timeout(
        Command::new(script)
            .arg("--quick")
            .env("REAPER_BENCH_DOCKER_HOST", docker_host())
            .env("REAPER_BENCH_BIN", env!("CARGO_BIN_EXE_reaper")),
        None,
        BENCH_TIMEOUT,
    );
    let (stdout, stderr) = (stdout_of(&out), stderr_of(&out));
    assert!(
        out.status.success(),
        "scripts/bench --quick failed ({}) after {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status,
        started.elapsed()
    );

    let rows: Vec<Vec<String>> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    for (scenario, figure) in ROWS {
        let row = rows
            .iter()
            .find(|r| r.first().is_some_and(|s| s == scenario) && r[1].contains(figure))
            .unwrap_or_else(|| {
                panic!("no row for {scenario:?} / {figure:?} in the bench output:\n{stdout}")
            });
        assert_eq!(row.len(), 7, "malformed row {row:?}");
        assert!(
            row[2].chars().any(|c| c.is_ascii_digit()),
            "row {row:?} has no measured figure"
        );
        assert!(
            ["PASS", "MISS", "info"].contains(&row[6].as_str()),
            "row {row:?} has no verdict"
        );
    }

    // Nothing the bench created may outlive it on the shared engine.
    let left = common::docker_ok(&["ps", "-aq", "--filter", "label=bench.run"]);
    assert!(left.is_empty(), "the bench left containers behind: {left}");
}
