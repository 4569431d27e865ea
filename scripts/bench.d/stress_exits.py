#!/usr/bin/env python3
"""Stress test for the container-exit deadlock (issue 11). Run it through scripts/stress-exits,
which starts the private engine and builds the release binary; this file only drives it.

One `reaper serve` against the engine; then, `--rounds` times: register `--sessions` sessions,
create `--per-session` RUNNING containers for each (busybox, --init, --network none, sleep 3600)
through the raw API, end every session with the reaper CLI, wait (bounded) until all of them are
destroyed, and check that `docker network ls` answers within 10 s. From the engine's own kill
and die events it also reports how many container exits were in flight at once (1 when exits are
serialised; more than 1 on an engine with the deadlock fails the run). A hang is a failure:
when GET /_ping answers but the networks do not, the engine is wedged; then the engine dumps its
goroutines (SIGUSR1) and the exit status is 3.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the benchmark's Docker client, event follower and reaper driver)

NETWORK_LS_TIMEOUT = 10


def exits_in_flight(kills, dies, ids):
    """The most container exits in flight at once: each exit runs from its first kill event to
    its die event (engine clock)."""
    edges = []
    for i in ids:
        if i in kills and i in dies:
            edges += [(kills[i], 1), (dies[i], -1)]
    most = cur = 0
    for _, step in sorted(edges):  # at a tie the die (-1) sorts first: no overlap
        cur += step
        most = max(most, cur)
    return most


def network_ls(sock):
    """Seconds `docker network ls` took, or None when it did not answer in time."""
    t = time.time()
    try:
        subprocess.run(
            ["docker", "-H", f"unix://{sock}", "network", "ls"],
            capture_output=True,
            check=True,
            timeout=NETWORK_LS_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return None
    return time.time() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--docker-sock", required=True)
    p.add_argument("--dockerd-pidfile", help="the engine's pid file: SIGUSR1 goes there if it wedges")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--per-session", type=int, default=5, help="running containers per session")
    p.add_argument("--gone-timeout", type=float, default=300, help="bound on one round's removals (s)")
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an argument for `reaper serve` (repeatable), e.g. --serve-arg=--serial-exits=on",
    )
    p.add_argument("--keep", action="store_true", help="keep reaper's log and store")
    a = p.parse_args()

    docker = bench.Docker(a.docker_sock)
    version, serial = docker.engine()
    run = f"stress-{os.getpid()}-{int(time.time())}"
    events = bench.Destroys(a.docker_sock, run, also=("kill", "die"))
    workdir = tempfile.mkdtemp(prefix="reaper-stress.")
    n = a.sessions * a.per_session
    print(
        f"engine {version} ({'has' if serial else 'does not have'} the exit deadlock); "
        f"{a.rounds} rounds of {n} running containers over {a.sessions} sessions; "
        f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}",
        flush=True,
    )
    reaper = None
    results, status, wedged = [], 0, False
    started = time.time()
    try:
        reaper = bench.Reaper(a.binary, a.docker_sock, workdir, "stress", a.serve_arg)
        for k in range(1, a.rounds + 1):
            names = [f"r{k}-s{j}" for j in range(a.sessions)]
            reaper.apply(bench.session_docs(names))
            specs = [
                ({"bench.run": run, "reaper.session": names[i // a.per_session]}, True)
                for i in range(n)
            ]
            ids = bench.pool_map(lambda s: docker.create(*s), specs)
            reaper.quiet(0.5)
            t0 = time.time()
            for name in names:
                reaper.cli(["session", "end", name])
            clean = events.wait(ids, a.gone_timeout) - t0
            most = exits_in_flight(events.seen["kill"], events.seen["die"], ids)
            nls = network_ls(a.docker_sock)
            results.append((clean, most, nls))
            print(
                f"round {k:2}: {n} gone {clean:6.2f} s after the first end; "
                f"exits in flight at most {most}; docker network ls "
                + (f"ok in {nls:.2f} s" if nls is not None else f"HUNG (> {NETWORK_LS_TIMEOUT} s)"),
                flush=True,
            )
            if nls is None:
                raise bench.BenchError(f"docker network ls did not answer within {NETWORK_LS_TIMEOUT} s")
        if serial and max(m for _, m, _ in results) > 1:
            # Not a hang, but what the rounds exist to rule out.
            status = 1
            bench.log("FAILED: container exits overlapped on an engine with the exit deadlock")
    except Exception as e:
        bench.log(f"error: {e!r}")
        status = 1
        if bench.check_wedged(docker, a.dockerd_pidfile):
            wedged, status = True, 3
        if reaper:
            r = reaper.cli(["status"], check=False, timeout=10)
            bench.log(f"reaper status: {(r.stdout + r.stderr).decode(errors='replace').strip()}")
    finally:
        if reaper:
            reaper.stop()
        if not wedged:
            try:
                bench.remove_labelled(docker, f"bench.run={run}")
            except Exception as e:
                bench.log(f"removing leftovers: {e}")

    if results:
        cleans = [c for c, _, _ in results]
        lss = [x for _, _, x in results if x is not None]
        print(
            f"summary: {len(results)} of {a.rounds} rounds done in {time.time() - started:.0f} s; "
            f"time to clean {n}: median {statistics.median(cleans):.2f} s, "
            f"min {min(cleans):.2f} s, max {max(cleans):.2f} s; "
            f"exits in flight at most {max(m for _, m, _ in results)}; "
            f"docker network ls answered {len(lss)} of {len(results)} times"
            + (f", slowest {max(lss):.2f} s" if lss else "")
        )
    print("result: " + ("ok" if status == 0 else "ENGINE WEDGED" if wedged else "FAILED"), flush=True)
    if status == 0 and not a.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"reaper's log and store kept in {workdir}")
    sys.stdout.flush()
    if wedged:
        sys.stderr.flush()
        os._exit(status)  # calls stuck in the engine hold threads until their timeout
    return status


if __name__ == "__main__":
    sys.exit(main())
