"""Scenario 6 of scripts/bench, the fleet (issue 14): three reapers, one per private engine,
sharing one 3-member etcd cluster, as hosts host-a, host-b and host-c. bench.py calls
`fleet(bench, quick)`; this file starts everything the scenario needs and always stops it:

- etcd: three members on free loopback ports, data in a temp dir (in memory where /dev/shm
  exists, as the tests do: the box's disk is shared and every etcd write waits for an fsync);
- three private dockerds through scripts/dockerd (their own dirs, no bridge, no iptables), each
  with the test image;
- three release reapers on the cluster, each on its own engine.

A watchdog process kills the etcd members and reapers and destroys the engines should this
process die without its `finally` (a kill -9), as tests/common/etcd.rs does for the tests.

Figures, each with a baseline measured in the same run:
- (a) fleet end: `reaper session end` through host-a -> the last destroy event on any engine,
  10 containers on each of the 3 engines (half of them running); median of 5. Baseline: the
  safe protocol by hand on as many containers on the 3 engines at once (what the engines need
  on this machine); and, for information, one host on sled removing its 10.
- (b) cross-host reaction: `end` through host-a -> the first removal on host-c (p50, p95 over
  >= 20 samples). Baseline: the same end -> the first removal on host-a itself.
- (c) idle cost: CPU of each fleet reaper over a quiet window with 1,000 fleet sessions in etcd.
  Baseline: a sled reaper with 1,000 sessions over the same window.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

from bench import (
    BenchError,
    Destroys,
    Docker,
    Reaper,
    free_port,
    log,
    pct,
    pool_map,
    proc_cpu,
    session_docs,
    stop_then_delete,
)

HOSTS = ("host-a", "host-b", "host-c")
HERE = os.path.dirname(os.path.abspath(__file__))
DOCKERD = os.path.join(HERE, "..", "dockerd")


class Fleet:
    """The etcd cluster, the three engines and their reapers; `close()` stops them all."""

    def __init__(self, bench):
        self.bench = bench
        self.base = tempfile.mkdtemp(
            prefix="reaper-fleet.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
        )
        self.pids = os.path.join(self.base, "pids")
        os.makedirs(self.pids)
        self.engines = []  # dirs given to scripts/dockerd
        self.members = []
        self.reapers = {}
        self.watchdog = subprocess.Popen(
            [
                "sh",
                "-c",
                'while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; '
                'for f in "$2"/pids/*; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done; '
                'for d in "$2"/engine-*; do [ -f "$d" ] && "$3" destroy "$(cat "$d")"; done; '
                'rm -rf "$2"',
                "fleet-watchdog",
                str(os.getpid()),
                self.base,
                DOCKERD,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    # --- etcd ---------------------------------------------------------------------------
    def start_etcd(self):
        if not shutil.which("etcd") or not shutil.which("etcdctl"):
            raise BenchError("the fleet scenario needs etcd and etcdctl (Debian: etcd-server, etcd-client)")
        urls = [(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}") for _ in range(3)]
        initial = ",".join(f"m{i}={peer}" for i, (_, peer) in enumerate(urls))
        for i, (client, peer) in enumerate(urls):
            out = open(os.path.join(self.base, f"etcd-m{i}.log"), "ab")
            p = subprocess.Popen(
                [
                    "etcd",
                    "--name", f"m{i}",
                    "--data-dir", os.path.join(self.base, f"m{i}.data"),
                    "--listen-client-urls", client,
                    "--advertise-client-urls", client,
                    "--listen-peer-urls", peer,
                    "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", initial,
                    "--initial-cluster-state", "new",
                    "--initial-cluster-token", "reaper-bench",
                    "--logger", "zap", "--log-level", "warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
            self._pid(f"etcd-m{i}", p.pid)
            self.members.append((p, out))
        self.endpoints = [c for c, _ in urls]
        deadline = time.time() + 30
        while True:
            r = subprocess.run(
                ["etcdctl", f"--endpoints={','.join(self.endpoints)}", "--command-timeout=2s",
                 "endpoint", "health"],
                capture_output=True,
                env={**os.environ, "ETCDCTL_API": "3"},
                timeout=30,
            )
            if r.returncode == 0:
                return
            if time.time() > deadline:
                raise BenchError(f"etcd not healthy within 30 s: {r.stderr[-300:]!r}; logs in {self.base}")
            time.sleep(0.2)

    def etcd_cpu(self):
        """utime + stime of the three members, in seconds."""
        return sum(proc_cpu(p.pid) for p, _ in self.members)

    # --- engines ------------------------------------------------------------------------
    def start_engines(self):
        for i, host in enumerate(HOSTS):
            d = tempfile.mkdtemp(prefix="rbf.", dir="/tmp")  # short: containerd's sockets
            with open(os.path.join(self.base, f"engine-{i}"), "w") as f:
                f.write(d)
            self.engines.append(d)
            log(f"fleet: starting the private engine of {host} in {d}")
            for verb in ("start", "image"):
                r = subprocess.run([DOCKERD, verb, d], capture_output=True, timeout=300)
                if r.returncode != 0:
                    raise BenchError(f"scripts/dockerd {verb} {d}: {r.stderr[-500:]!r}")
        self.socks = [os.path.join(d, "docker.sock") for d in self.engines]
        self.dockers = [Docker(s) for s in self.socks]
        self.events = [Destroys(s, self.bench.run) for s in self.socks]

    # --- reapers ------------------------------------------------------------------------
    def start_reapers(self):
        prefix = f"/reaper-bench-{self.bench.run}"
        for host, sock in zip(HOSTS, self.socks):
            extra = ["--store-backend", "etcd", "--etcd-prefix", prefix, "--host-name", host]
            for e in self.endpoints:
                extra += ["--etcd-endpoint", e]
            r = self.bench.reaper(f"fleet-{host}", docker_sock=sock, extra=extra)
            self._pid(f"reaper-{host}", r.proc.pid)
            self.reapers[host] = r

    def quiet(self, seconds=0.5):
        for r in self.reapers.values():
            r.quiet(seconds)

    def _pid(self, name, pid):
        with open(os.path.join(self.pids, name), "w") as f:
            f.write(str(pid))

    def close(self):
        for host, r in self.reapers.items():
            try:
                r.stop()
            except Exception as e:
                log(f"fleet: stopping the reaper of {host}: {e}")
        for p, out in self.members:
            p.kill()
            p.wait(10)
            out.close()
        for d in self.engines:
            r = subprocess.run([DOCKERD, "destroy", d], capture_output=True, timeout=300)
            if r.returncode != 0:
                log(f"fleet: could not fully destroy the engine in {d}: {r.stderr[-300:]!r}")
        self.watchdog.kill()
        self.watchdog.wait(5)
        shutil.rmtree(self.base, ignore_errors=True)


def create_on(bench, docker, specs):
    """Creates containers on one engine, PARALLEL at a time (creations and starts never exit)."""
    return pool_map(lambda s: docker.create(s[0], s[1]), specs)


def session_containers(bench, name, n):
    """n containers of session `name`, half of them running."""
    return [({**bench.labels(bench_set=name), "reaper.session": name}, i % 2 == 0) for i in range(n)]


def fleet(bench, quick):
    rounds, per_engine = (1, 4) if quick else (5, 10)
    samples = 3 if quick else 20
    sessions, idle_secs = (20, 3.0) if quick else (1000, bench.a.idle_seconds or 60.0)
    f = Fleet(bench)
    # Every exit leaves the process through close(), also a SIGTERM from the wrapper.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        started = time.time()
        f.start_etcd()
        f.start_engines()
        bench.notes.append(
            f"fleet: etcd (3 members) and three private engines started in {time.time() - started:.1f} s"
        )
        end_baseline(bench, f, rounds, per_engine)
        f.start_reapers()
        fleet_end(bench, f, rounds, per_engine)
        cross_host(bench, f, samples)
        idle(bench, f, sessions, idle_secs)
    finally:
        signal.signal(signal.SIGTERM, previous)
        f.close()


def _terminated(signum, frame):
    raise SystemExit(143)


def end_and_wait(bench, reaper, name, ids_by_engine, events):
    """Ends `name` through `reaper`; returns (seconds from the end's start to the last destroy
    on any engine, seconds the end call itself took)."""
    t = time.time()
    reaper.cli(["session", "end", name])
    returned = time.time()
    last = max(ev.wait(ids, 120) for ev, ids in zip(events, ids_by_engine))
    return last - t, returned - t


def end_baseline(bench, f, rounds, per_engine):
    """One host on sled, its `per_engine` containers on host-a's engine (before the fleet's
    reapers exist, so nothing else acts on that engine)."""
    log(f"fleet: baseline, one sled host ending sessions of {per_engine} containers, {rounds} rounds")
    r = bench.reaper("fleet-sled-base", docker_sock=f.socks[0])
    took = []
    for _ in range(rounds):
        name = bench.uniq("fbase")
        r.apply(session_docs([name]))
        ids = create_on(bench, f.dockers[0], session_containers(bench, name, per_engine))
        r.quiet(0.5)
        took.append(end_and_wait(bench, r, name, [ids], [f.events[0]])[0])
    r.stop()
    bench.reapers.remove(r)
    f.sled_end = statistics.median(took)


def by_hand_on_all(bench, f, ids_by_engine):
    """The safe protocol by raw API on the three engines at once, one thread per engine, each
    stopping one container at a time (the exit deadlock is per engine): what the engines
    themselves need on this machine for the fleet's work. Seconds to the last destroy."""
    t0 = time.time()

    def one(k):
        d, ids = f.dockers[k], ids_by_engine[k]
        states = d.listed(f"bench.run={bench.run}")
        running = [i for i in ids if states.get(i) == "running"]
        stop_then_delete(d, running, [i for i in ids if i not in running], d.remove)

    pool_map(one, range(len(f.dockers)), workers=len(f.dockers))
    return max(ev.wait(ids, 120) for ev, ids in zip(f.events, ids_by_engine)) - t0


def fleet_end(bench, f, rounds, per_engine):
    log(f"fleet: end of {per_engine} containers on each of 3 engines, {rounds} rounds")
    a = f.reapers["host-a"]
    took, calls, by_hand = [], [], []
    for _ in range(rounds):
        name = bench.uniq("fleet")
        a.apply(session_docs([name]))
        ids = [create_on(bench, d, session_containers(bench, name, per_engine)) for d in f.dockers]
        # As many containers of no session (reaper leaves them alone), removed by hand first.
        base = [
            create_on(bench, d, [(bench.labels(bench_set=name + "base"), i % 2 == 0) for i in range(per_engine)])
            for d in f.dockers
        ]
        by_hand.append(by_hand_on_all(bench, f, base))
        f.quiet()
        total, call = end_and_wait(bench, a, name, ids, f.events)
        took.append(total)
        calls.append(call)
    med, hand = statistics.median(took), statistics.median(by_hand)
    bench.row(
        "6 fleet",
        f"end via host-a -> last destroy on any of 3 engines ({per_engine} each, half running; "
        f"median of {rounds})",
        f"{med * 1000:.0f} ms",
        f"{hand * 1000:.0f} ms safe protocol by hand, 3 engines at once",
        f"{med / hand:.2f}x",
        "< 1000 ms",
        "PASS" if med < 1 else "MISS",
    )
    bench.row(
        "6 fleet",
        f"one host on sled ending its {per_engine} on one engine (median of {rounds})",
        f"{f.sled_end * 1000:.0f} ms",
        f"{hand * 1000:.0f} ms by hand, 3 engines",
        f"fleet {med / f.sled_end:.2f}x",
        "-",
        "info",
    )
    bench.notes.append(
        f"fleet end: `reaper session end` through host-a took p50 {statistics.median(calls) * 1000:.0f} ms "
        f"(process start + API call + etcd transaction); rounds {', '.join(f'{t * 1000:.0f}' for t in took)} ms; "
        f"by hand {', '.join(f'{t * 1000:.0f}' for t in by_hand)} ms"
    )


def cross_host(bench, f, samples):
    """One created (never started) container of the session on host-a and one on host-c: their
    removal causes no exit, so the time is the reaction, not the engine's."""
    log(f"fleet: cross-host reaction, {samples} samples")
    a = f.reapers["host-a"]
    far, near = [], []
    for _ in range(samples):
        name = bench.uniq("cross")
        a.apply(session_docs([name]))
        spec = [({**bench.labels(bench_set=name), "reaper.session": name}, False)]
        on_a = create_on(bench, f.dockers[0], spec)
        on_c = create_on(bench, f.dockers[2], spec)
        f.quiet()
        t = time.time()
        a.cli(["session", "end", name])
        far.append(f.events[2].first(on_c, 60) - t)
        near.append(f.events[0].first(on_a, 60) - t)
    p50, p95 = pct(far, 50) * 1000, pct(far, 95) * 1000
    b50, b95 = pct(near, 50) * 1000, pct(near, 95) * 1000
    bench.row(
        "6 fleet",
        f"end via host-a -> first removal on host-c, p50 over {samples}",
        f"{p50:.0f} ms",
        f"{b50:.0f} ms on host-a itself",
        f"{p50 - b50:+.0f} ms",
        "<= 100 ms",
        "PASS" if p50 <= 100 else "MISS",
    )
    bench.row(
        "6 fleet",
        f"same, p95 over {samples}",
        f"{p95:.0f} ms",
        f"{b95:.0f} ms on host-a itself",
        f"{p95 - b95:+.0f} ms",
        "-",
        "info",
    )


def idle(bench, f, sessions, idle_secs):
    log(f"fleet: idle, {sessions} fleet sessions, {idle_secs:.0f} s")
    a = f.reapers["host-a"]
    names = [bench.uniq("fidle") for _ in range(sessions)]
    # 100 per apply: one apply is one etcd transaction, and etcd's default --max-txn-ops is 128.
    for i in range(0, sessions, 100):
        a.apply(session_docs(names[i : i + 100]))
    # The baseline: one host on sled with as many sessions, idle over the same window.
    base = bench.reaper("fleet-sled-idle", docker_sock=f.socks[0])
    base.apply(session_docs([n + "-sled" for n in names]))
    for r in [*f.reapers.values(), base]:
        r.quiet(2.0)
    everyone = {**f.reapers, "sled": base}
    c0 = {h: r.cpu() for h, r in everyone.items()}
    p0 = {h: r.passes()[0] for h, r in everyone.items()}
    e0, t0 = f.etcd_cpu(), time.time()
    time.sleep(idle_secs)
    t1 = time.time()
    pct_of = {h: (r.cpu() - c0[h]) / (t1 - t0) * 100 for h, r in everyone.items()}
    passes = {h: int(r.passes()[0] - p0[h]) for h, r in everyone.items()}
    etcd_pct = (f.etcd_cpu() - e0) / (t1 - t0) * 100
    worst = max(pct_of[h] for h in HOSTS)
    bench.row(
        "6 fleet",
        f"idle CPU over {t1 - t0:.0f} s, {sessions} fleet sessions (worst of 3 hosts)",
        f"{worst:.2f} % of a core",
        f"{pct_of['sled']:.2f} % one sled host, {sessions} sessions",
        "-",
        "< 1 %",
        "PASS" if worst < 1 else "MISS",
    )
    bench.notes.append(
        "fleet idle: CPU per host "
        + ", ".join(f"{h} {pct_of[h]:.2f} %" for h in HOSTS)
        + f"; passes in the window {json.dumps(passes)}; the 3 etcd members together {etcd_pct:.2f} %"
    )
    base.stop()
    bench.reapers.remove(base)
