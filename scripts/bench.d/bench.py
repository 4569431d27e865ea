#!/usr/bin/env python3
"""reaper's side-by-side benchmark (issue 5). Run it through scripts/bench, which starts the
private engine and builds the release binary; this file only measures.

Every baseline runs in the same invocation as the figure it is compared with, against the same
engine, because absolute times on a shared machine are noisy. Everything the benchmark creates
carries the label bench.run=<run id> and is removed at the end.

Docker is spoken to directly over its Unix socket (http.client), so the baselines carry no CLI
overhead: "safe" is the raw API doing one stop at a time while deletes (no force) run 8 at a
time; "raw8" is 8 parallel DELETE /containers/{id}?force=1.

Engines with the container-exit deadlock (Docker before 20.10.27, e.g. Debian's 20.10.24) wedge
when two exits overlap (a stop, a kill, a force delete of a running container). On them this
benchmark never runs two exits at once unless --unsafe-parallel-exits asks for the raw8 and
protocol rows, which can wedge the engine. Every call and wait is bounded; when one times out
while GET /_ping still answers, the engine is wedged: the benchmark says so, sends SIGUSR1 to
the dockerd named by --dockerd-pidfile (a goroutine dump, copied out of the engine's directory)
and exits with status 3.
"""

import argparse
import asyncio
import collections
import concurrent.futures
import datetime
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

IMAGE = "reaper-test/busybox:1"
PARALLEL = 8  # deletes and creations at a time (exits: one at a time where they can wedge)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class CallTimeout(BenchError):
    """A Docker call that got no answer in time: a loaded engine, or a wedged one."""


# ------------------------------------------------------------------------------------------
# Docker over its Unix socket
# ------------------------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def has_exit_deadlock(version):
    """Whether a Docker release (as GET /version reports it, e.g. 20.10.24+dfsg1) has the
    container-exit deadlock (moby/libnetwork#2679, fixed in 20.10.27 and 23.0+). The same rule
    as reaper's `engineQuirks.serialExits: auto`; an unreadable version counts as affected."""
    m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+~ ]|$)", (version or "").strip())
    if not m:
        return True
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) < (20, 10, 27)


class Docker:
    """One connection per thread; every call bounded by the socket timeout."""

    def __init__(self, sock_path, timeout=120):
        self.path = sock_path
        self.timeout = timeout
        self.local = threading.local()

    def _conn(self):
        c = getattr(self.local, "conn", None)
        if c is None:
            c = UnixHTTPConnection(self.path, self.timeout)
            self.local.conn = c
        return c

    def call(self, method, path, body=None, ok=(200, 201, 204, 304)):
        for attempt in (1, 2):
            c = self._conn()
            try:
                data = None if body is None else json.dumps(body).encode()
                headers = {"Content-Type": "application/json"} if data is not None else {}
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                raw = r.read()
                break
            except TimeoutError:
                # Never retried: a wedged engine would double every wait.
                c.close()
                self.local.conn = None
                raise CallTimeout(f"docker {method} {path}: no answer within {self.timeout} s")
            except (ConnectionError, http.client.HTTPException, OSError):
                # A kept-alive connection the engine closed: reconnect once.
                c.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        if r.status not in ok:
            raise BenchError(f"docker {method} {path}: {r.status} {raw[:300]!r}")
        return json.loads(raw) if raw and raw[:1] in (b"{", b"[") else None

    def create(self, labels, running):
        body = {
            "Image": IMAGE,
            "Cmd": ["sleep", "3600"],
            "Labels": labels,
            "HostConfig": {"Init": True, "NetworkMode": "none"},
        }
        cid = self.call("POST", "/containers/create", body)["Id"]
        if running:
            self.call("POST", f"/containers/{cid}/start")
        return cid

    def listed(self, label):
        """{id: state} of every container (all states) carrying label."""
        f = urllib.parse.quote(json.dumps({"label": [label]}))
        return {c["Id"]: c["State"] for c in self.call("GET", f"/containers/json?all=1&filters={f}")}

    def force_remove(self, cid):
        self.call("DELETE", f"/containers/{cid}?force=1", ok=(200, 204, 404, 409))

    def stop(self, cid):
        """The one call of the safe protocol that causes an exit (SIGTERM, 5 s grace)."""
        self.call("POST", f"/containers/{cid}/stop?t=5", ok=(204, 304, 404))

    def remove(self, cid):
        """DELETE without force: never an exit (409 if the container is still running)."""
        self.call("DELETE", f"/containers/{cid}", ok=(200, 204, 404))

    def engine(self):
        """(version, whether exits must be serialised) from GET /version."""
        v = self.call("GET", "/version")
        podman = any("podman" in c.get("Name", "").lower() for c in v.get("Components") or [])
        return v.get("Version", "?"), (not podman and has_exit_deadlock(v.get("Version")))

    def _answers(self, path, timeout):
        c = UnixHTTPConnection(self.path, timeout)
        try:
            c.request("GET", path)
            return c.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            c.close()

    def wedged(self):
        """The engine's wedge: GET /_ping answers within 5 s, GET /networks not within 10 s
        (what `docker network ls` does, and it hangs forever once libnetwork deadlocked)."""
        return self._answers("/_ping", 5) and not self._answers("/networks", 10)


def pool_map(fn, items, workers=PARALLEL):
    """fn over items, `workers` at a time; on the first failure nothing more is started."""
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        return [f.result() for f in [ex.submit(fn, i) for i in items]]
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


def stop_then_delete(docker, running, stopped, delete):
    """The safe protocol: this thread stops `running` containers one at a time (never two exits
    in flight) while a pool deletes PARALLEL at a time, first `stopped` (created or exited:
    no exit) and then each container as soon as its stop returned. `delete(cid)` removes one."""
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL)
    try:
        futures = [ex.submit(delete, cid) for cid in stopped]
        for cid in running:
            failed = next((f for f in futures if f.done() and f.exception()), None)
            if failed:
                failed.result()
            docker.stop(cid)
            futures.append(ex.submit(delete, cid))
        for f in futures:
            f.result()
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


def remove_labelled(docker, label):
    """Removes every container carrying label, never two exits at once (leftovers may run)."""
    states = docker.listed(label)
    running = [i for i, st in states.items() if st == "running"]
    rest = [i for i, st in states.items() if st != "running"]
    stop_then_delete(docker, running, rest, docker.force_remove)


def check_wedged(docker, pidfile):
    """After a failure: whether the engine is wedged. If so, says it loudly and has the
    engine dump its goroutines (see dump_goroutines)."""
    if not docker.wedged():
        return False
    log(
        "ENGINE WEDGED: GET /_ping answers, GET /networks (docker network ls) gets no answer "
        "within 10 s: the container-exit deadlock of Docker < 20.10.27 (moby/libnetwork#2679)"
    )
    log(dump_goroutines(pidfile))
    return True


def dump_goroutines(pidfile):
    """SIGUSR1 to a wedged dockerd: it writes its goroutine stacks below its exec root and says
    where in its log. Both are copied out of the engine's directory (which scripts/bench
    destroys) into a kept one. Returns a line saying what was done."""
    if not pidfile:
        return "no --dockerd-pidfile given: no goroutine dump taken"
    try:
        pid = int(open(pidfile).read().strip())
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError) as e:
        return f"could not signal the dockerd of {pidfile}: {e}"
    engine_log = os.path.join(os.path.dirname(pidfile), "dockerd.log")
    keep = tempfile.mkdtemp(prefix="reaper-wedge.")
    dump = None
    deadline = time.time() + 15
    while dump is None and time.time() < deadline:
        time.sleep(0.5)
        try:
            with open(engine_log, errors="replace") as f:
                found = re.findall(r"goroutine stacks written to (\S+?)\"?$", f.read(), re.M)
            dump = found[-1] if found else None
        except OSError:
            pass
    for src in (engine_log, dump):
        if src:
            try:
                shutil.copy(src, keep)
            except OSError as e:
                log(f"could not copy {src}: {e}")
    what = f"goroutine dump {os.path.join(keep, os.path.basename(dump))}" if dump else "no dump found in the log"
    return f"sent SIGUSR1 to dockerd {pid}; {what}; engine log copied to {keep}"


class Destroys:
    """Follows the engine's destroy events for this run: when each container went, by the
    engine's own clock (timeNano), so polling never distorts the measurement. `also` names more
    actions (e.g. kill, die) whose first time per container goes to seen[action]."""

    def __init__(self, sock_path, run, also=()):
        self.path = sock_path
        self.run = run
        self.at = {}
        self.seen = {a: {} for a in also}
        self.cond = threading.Condition()
        self.error = None
        self.ready = threading.Event()
        threading.Thread(target=self._follow, daemon=True).start()
        if not self.ready.wait(10):
            raise BenchError("the Docker event stream did not open within 10 s")

    def _follow(self):
        try:
            f = urllib.parse.quote(
                json.dumps(
                    {
                        "type": ["container"],
                        "event": ["destroy", *self.seen],
                        "label": [f"bench.run={self.run}"],
                    }
                )
            )
            c = UnixHTTPConnection(self.path, timeout=None)
            c.request("GET", f"/events?filters={f}")
            r = c.getresponse()
            self.ready.set()
            while True:
                line = r.readline()
                if not line:
                    raise BenchError("the Docker event stream ended")
                ev = json.loads(line)
                with self.cond:
                    if ev.get("Action", ev.get("status")) == "destroy":
                        self.at[ev["id"]] = ev["timeNano"] / 1e9
                    else:
                        self.seen.get(ev.get("Action"), {}).setdefault(ev["id"], ev["timeNano"] / 1e9)
                    self.cond.notify_all()
        except Exception as e:  # reported by wait()
            self.error = e
            self.ready.set()
            with self.cond:
                self.cond.notify_all()

    def wait(self, ids, timeout, stall=120):
        """The time the last of ids was destroyed (epoch seconds). Fails after `timeout` s, or
        after `stall` s in which none of them went (a wedged engine shows up as a stall)."""
        deadline = time.time() + timeout
        last_count, last_change = -1, time.time()
        with self.cond:
            while True:
                if self.error:
                    raise BenchError(f"event stream: {self.error}")
                missing = [i for i in ids if i not in self.at]
                if not missing:
                    return max(self.at[i] for i in ids)
                now = time.time()
                if len(missing) != last_count:
                    last_count, last_change = len(missing), now
                if now >= deadline or now - last_change >= stall:
                    why = f"within {timeout} s" if now >= deadline else f"and none went for {stall} s"
                    raise BenchError(f"{len(missing)} of {len(ids)} containers not gone {why}")
                self.cond.wait(min(deadline - now, 1.0))

    def first(self, ids, timeout):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                got = [self.at[i] for i in ids if i in self.at]
                if got:
                    return min(got)
                left = deadline - time.time()
                if left <= 0:
                    raise BenchError(f"none of {len(ids)} containers went within {timeout} s")
                self.cond.wait(min(left, 1.0))


# ------------------------------------------------------------------------------------------
# A counting proxy in front of dockerd (bench only)
# ------------------------------------------------------------------------------------------

REQ = re.compile(rb"(GET|POST|DELETE|PUT|HEAD) (/[^ \r\n]*) HTTP/1\.[01]\r\n")
HEX = re.compile(r"[0-9a-f]{64}")


class CountingProxy:
    """Forwards a Unix socket to dockerd's and counts the HTTP requests going through it."""

    def __init__(self, upstream, path):
        self.upstream = upstream
        self.path = path
        self.lock = threading.Lock()
        self.log = []  # (time, "METHOD /path", query)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        if not started.wait(10):
            raise BenchError("the counting proxy did not start")

    def _run(self, started):
        asyncio.set_event_loop(self.loop)

        async def main():
            await asyncio.start_unix_server(self._handle, path=self.path)
            started.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def _scan(self, state, data):
        buf = state[0] + data
        for m in REQ.finditer(buf):
            if m.end() <= len(state[0]):
                continue
            target = m.group(2).decode("latin-1")
            path, _, query = target.partition("?")
            path = re.sub(r"^/v[0-9.]+", "", path)
            path = HEX.sub("{id}", path)
            with self.lock:
                self.log.append((time.time(), f"{m.group(1).decode()} {path}", query))
        state[0] = buf[-300:]

    async def _handle(self, reader, writer):
        try:
            ur, uw = await asyncio.open_unix_connection(self.upstream)
        except OSError:
            writer.close()
            return
        state = [b""]

        async def pipe(src, dst, scan):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if scan:
                        self._scan(state, data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    dst.close()
                except Exception:
                    pass

        await asyncio.gather(pipe(reader, uw, True), pipe(ur, writer, False))

    def since(self, t0, t1=None):
        with self.lock:
            return [e for e in self.log if e[0] >= t0 and (t1 is None or e[0] <= t1)]


def summarize_calls(entries):
    c = collections.Counter(e[1] for e in entries)
    return ", ".join(f"{k} x{v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))


# ------------------------------------------------------------------------------------------
# The reaper daemon under test
# ------------------------------------------------------------------------------------------


def proc_cpu(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Reaper:
    def __init__(self, binary, docker_sock, workdir, name, extra=()):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix=f"{name}.", dir=workdir)
        self.socket = os.path.join(self.dir, "api.sock")
        self.port = free_port()
        self.logfile = os.path.join(self.dir, "reaper.log")
        args = [
            binary,
            "serve",
            "--data-dir",
            os.path.join(self.dir, "data"),
            "--socket",
            self.socket,
            "--metrics-listen",
            f"127.0.0.1:{self.port}",
            "--docker-host",
            f"unix://{docker_sock}",
            "--paths-root",
            os.path.join(self.dir, "paths"),
            *extra,
        ]
        os.makedirs(os.path.join(self.dir, "paths"), exist_ok=True)
        self.out = open(self.logfile, "ab")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.out
        )
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"reaper serve exited ({self.proc.returncode}); log {self.logfile}")
            r = self.cli(["status"], check=False, timeout=5)
            if r.returncode == 0:
                break
            if time.time() > deadline:
                raise BenchError(f"reaper did not answer within 30 s; log {self.logfile}")
            time.sleep(0.1)

    def cli(self, args, stdin=None, check=True, timeout=120):
        r = subprocess.run(
            [self.binary, "--socket", self.socket, *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise BenchError(f"reaper {' '.join(args)}: exit {r.returncode}: {r.stderr[-500:]!r}")
        return r

    def apply(self, docs):
        return self.cli(["apply", "-f", "-"], stdin=docs.encode())

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def passes(self):
        m = self.metrics()
        return (
            m.get("reaper_reconcile_duration_seconds_count", 0.0),
            m.get("reaper_reconcile_duration_seconds_sum", 0.0),
        )

    def cpu(self):
        """utime + stime in seconds."""
        return proc_cpu(self.proc.pid)

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def quiet(self, seconds=1.0, timeout=120):
        """Waits until no pass has run for `seconds`."""
        deadline = time.time() + timeout
        last = self.passes()[0]
        since = time.time()
        while time.time() - since < seconds:
            if time.time() > deadline:
                raise BenchError("reaper never went quiet")
            time.sleep(0.1)
            now = self.passes()[0]
            if now != last:
                last, since = now, time.time()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()


def session_docs(names, spec=None):
    spec = spec or {}
    parts = []
    for n in names:
        doc = {"apiVersion": "reaper/v1", "kind": "Session", "metadata": {"name": n}}
        if spec:
            doc["spec"] = spec
        parts.append(json.dumps(doc))  # JSON is YAML
    return "\n---\n".join(parts) + "\n"


def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def pct(values, p):
    v = sorted(values)
    k = max(0, min(len(v) - 1, math.ceil(p / 100 * len(v)) - 1))
    return v[k]


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, a):
        self.a = a
        self.sock = a.docker_sock
        self.docker = Docker(self.sock)
        self.run = f"{os.getpid()}-{int(time.time())}"
        self.workdir = tempfile.mkdtemp(prefix="reaper-bench.")
        self.events = Destroys(self.sock, self.run)
        self.rows = []
        self.notes = []
        self.reapers = []
        self.seq = 0
        self.wedged = False
        version, self.serial = self.docker.engine()
        # Parallel exits (raw8, protocol, peers as typed) only where they cannot wedge the
        # engine, or when asked for explicitly.
        self.parallel_exits = not self.serial or a.unsafe_parallel_exits
        if self.serial and a.unsafe_parallel_exits:
            log(f"engine {version} has the container-exit deadlock; --unsafe-parallel-exits: "
                "running parallel exits anyway, which can wedge it")
        elif self.serial:
            self.notes.append(
                f"engine {version} has the container-exit deadlock (fixed in 20.10.27 and 23.0+): "
                "no parallel exits; the raw8 and protocol rows were not run and the peers stop "
                "one container at a time (--unsafe-parallel-exits runs them, and can wedge it)"
            )
        # The baseline reaper is held to: the safe protocol where reaper serialises exits
        # (engineQuirks.serialExits: auto), raw8 where it does not.
        self.base_name = "safe protocol" if self.serial else "raw API"

    def row(self, scenario, figure, value, baseline, ratio, target, verdict):
        self.rows.append((scenario, figure, value, baseline, ratio, target, verdict))
        log(f"{scenario} | {figure} | {value} | {baseline} | {ratio} | {target} | {verdict}")

    def against(self, scenario, figure, took, base, base_name):
        """An informational row: a time and its ratio to a baseline, no target."""
        self.row(scenario, figure, f"{took:.2f} s", f"{base:.2f} s {base_name}", f"{took / base:.2f}x", "-", "info")

    def reaper(self, name, docker_sock=None, extra=()):
        r = Reaper(self.a.binary, docker_sock or self.sock, self.workdir, name, extra)
        self.reapers.append(r)
        return r

    def labels(self, **kv):
        lab = {"bench.run": self.run}
        lab.update({k.replace("_", "."): v for k, v in kv.items()})
        return lab

    def create(self, specs):
        """specs: [(labels, running)] -> ids, created PARALLEL at a time."""
        return pool_map(lambda s: self.docker.create(*s), specs)

    def raw_remove(self, ids):
        """raw8: PARALLEL concurrent force-deletes straight to the API. Parallel exits: only
        where they cannot wedge the engine, or with --unsafe-parallel-exits."""
        assert self.parallel_exits, "raw8 on an engine with the exit deadlock"
        t0 = time.time()
        pool_map(self.docker.force_remove, ids)
        return self.events.wait(ids, 120) - t0

    def safe_remove(self, ids, timeout=600):
        """The safe protocol by raw API: one list call for the states, then running containers
        are stopped (stop?t=5) one at a time while DELETEs without force run PARALLEL at a
        time, each stopped container handed to them as soon as its stop returned."""
        t0 = time.time()
        states = self.docker.listed(f"bench.run={self.run}")
        running = [i for i in ids if states.get(i) == "running"]
        stop_then_delete(self.docker, running, [i for i in ids if states.get(i) != "running"], self.docker.remove)
        return self.events.wait(ids, timeout) - t0

    def base_remove(self, ids):
        """What a removal by hand costs on this engine, as reaper does it here: raw8, or the
        safe protocol on an engine with the exit deadlock."""
        return self.safe_remove(ids, 120) if self.serial else self.raw_remove(ids)

    def protocol_remove(self, ids):
        """Raw API with reaper's protocol: fresh inspect, stop (SIGTERM, 5 s timeout) when
        running, then DELETE; PARALLEL at a time. Separates the cost of that protocol on the
        engine from reaper's own overhead. Parallel exits, like raw8."""
        assert self.parallel_exits, "parallel stops on an engine with the exit deadlock"

        def one(cid):
            c = self.docker.call("GET", f"/containers/{cid}/json", ok=(200, 404))
            if c and c["State"]["Running"]:
                self.docker.call("POST", f"/containers/{cid}/stop?t=5", ok=(204, 304, 404))
            self.docker.force_remove(cid)

        t0 = time.time()
        pool_map(one, ids)
        return self.events.wait(ids, 600) - t0

    def uniq(self, prefix):
        self.seq += 1
        return f"b{self.seq}-{prefix}"

    # --- 1. throughput -----------------------------------------------------------------
    def docker_cli(self, *args, timeout=600):
        """The docker CLI against the bench's engine (peer rows); bounded."""
        try:
            subprocess.run(
                ["docker", "-H", f"unix://{self.sock}", *args],
                capture_output=True,
                check=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise CallTimeout(f"docker {' '.join(args)[:80]}: not done within {timeout} s")

    def throughput(self, n, sessions, peers, rounds):
        """reaper against the safe protocol by raw API (one stop at a time, deletes PARALLEL at
        a time) and, where parallel exits are allowed, raw8 (and, with peers, reaper's protocol
        by hand), each run `rounds` times in rotating order on fresh containers; the ratios are
        of the medians. Single runs on this shared machine move by +-10 %, baselines included."""
        per = n // sessions
        log(f"throughput: N={n} over {sessions} sessions, {rounds} round(s)")

        def specs(set_name, owner=None):
            out = []
            for i in range(n):
                lab = self.labels(bench_set=set_name)
                if owner:
                    lab["reaper.session"] = owner(i)
                out.append((lab, i % 2 == 0))
            return out

        setup = [0.0]

        def created(set_name, owner=None):
            t = time.time()
            ids = self.create(specs(set_name, owner))
            setup[0] += time.time() - t
            return ids

        # One daemon for every round, as on a host; each run starts 1 s after its containers
        # were created (reaper's run waits for its passes on the creation events to settle).
        r = self.reaper(f"tp{n}")
        ends = []

        def by_hand(remove, prefix):
            def run():
                ids = created(self.uniq(prefix))
                time.sleep(1.0)
                return remove(ids)

            return run

        def reaper_run():
            names = [self.uniq(f"tp{n}-{k}") for k in range(sessions)]
            r.apply(session_docs(names))
            ids = created(self.uniq("reaper"), owner=lambda i: names[i // per % sessions])
            r.quiet(1.0)
            t0 = time.time()
            for name in names:
                r.cli(["session", "end", name])
            ends.append(time.time() - t0)
            return self.events.wait(ids, 600) - t0

        runs = {"safe": by_hand(self.safe_remove, "safe"), "reaper": reaper_run}
        if self.parallel_exits:
            runs["raw8"] = by_hand(self.raw_remove, "raw")
            if peers:
                runs["protocol"] = by_hand(self.protocol_remove, "proto")
        order = list(runs)
        times = {k: [] for k in runs}
        for k in range(rounds):
            shift = k % len(order)
            for name in order[shift:] + order[:shift]:
                times[name].append(runs[name]())
        r.stop()

        med = statistics.median
        safe, raw = med(times["safe"]), (med(times["raw8"]) if "raw8" in times else None)
        base_key = "safe" if self.serial else "raw8"
        base = med(times[base_key])
        took = med(times["reaper"])
        ratio = took / base
        how = "median of " + str(rounds) + ", " if rounds > 1 else ""
        self.row(
            "1 throughput",
            f"N={n}, {sessions} sessions: first end -> last gone ({how}rotating order)",
            f"{took:.2f} s",
            f"{base:.2f} s {self.base_name}",
            f"{ratio:.2f}x",
            "<= 1.10x",
            "PASS" if ratio <= 1.10 else "MISS",
        )
        self.row(
            "1 throughput (safe)",
            f"N={n}: raw API, one stop -t 5 at a time, DELETE {PARALLEL} parallel ({how}same rounds)",
            f"{safe:.2f} s",
            f"{raw:.2f} s raw8" if raw else "-",
            f"{safe / raw:.2f}x" if raw else "-",
            "-",
            "info",
        )
        per_round = "; ".join(
            f"{k}: " + " ".join(f"{x:.2f}" for x in v) for k, v in times.items()
        )
        self.notes.append(
            f"throughput N={n}: seconds per round ({per_round}); "
            f"reaper/{base_key} per round "
            + " ".join(f"{a / b:.2f}x" for a, b in zip(times["reaper"], times[base_key]))
            + f"; {sessions} sequential `reaper session end` calls took {max(ends):.2f} s at most; "
            f"creating {len(order) * rounds * n} containers took {setup[0]:.1f} s"
        )
        if not peers:
            return
        if "protocol" in times:
            self.against(
                "1 throughput (protocol)",
                f"N={n}: raw API, inspect + stop -t 5 + DELETE, {PARALLEL} parallel ({how}same rounds)",
                med(times["protocol"]),
                base,
                self.base_name,
            )
        # Peers, on the same number of equivalent containers; on an engine with the exit
        # deadlock one exit at a time, as anyone cleaning such an engine by hand must.
        s = self.uniq("prune")
        ids = self.create(specs(s))
        t0 = time.time()
        running = [i for k, i in enumerate(ids) if k % 2 == 0]
        if self.parallel_exits:
            self.docker_cli("stop", *running)
            figure = f"N={n}: docker stop + container prune --filter label"
        else:
            for cid in running:
                self.docker_cli("stop", cid, timeout=60)
            figure = f"N={n}: docker stop, one container at a time, + container prune --filter label"
        self.docker_cli("container", "prune", "-f", "--filter", f"label=bench.set={s}")
        took = self.events.wait(ids, 600) - t0
        self.against("1 throughput (peer)", figure, took, base, self.base_name)
        s = self.uniq("rmf")
        ids = self.create(specs(s))
        if self.parallel_exits:
            script = 'docker -H "$H" rm -f $(docker -H "$H" ps -aq --filter "label=bench.set=$S")'
            figure = f"N={n}: docker rm -f $(docker ps -aq --filter label)"
        else:
            script = (
                'for c in $(timeout 60 docker -H "$H" ps -aq --filter "label=bench.set=$S"); do '
                'timeout 60 docker -H "$H" rm -f "$c" >/dev/null || exit 1; done'
            )
            figure = f"N={n}: docker rm -f of each of $(docker ps -aq --filter label), one at a time"
        t0 = time.time()
        try:
            subprocess.run(
                ["sh", "-c", script],
                env={**os.environ, "H": f"unix://{self.sock}", "S": s},
                capture_output=True,
                check=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            raise CallTimeout(f"docker rm -f of {n} containers: not done within 600 s")
        took = self.events.wait(ids, 600) - t0
        self.against("1 throughput (peer)", figure, took, base, self.base_name)

    # --- 2. reaction latency ---------------------------------------------------------------
    def latency(self, runs, size, expiry_runs):
        log(f"latency: {runs} runs of {size} containers")
        r = self.reaper("lat")
        # The baseline removes the same kind of containers by hand, the way reaper must here.
        short = "safe" if self.serial else "raw"
        lat, raws, ends = [], [], []
        for k in range(runs):
            name = self.uniq("lat")
            r.apply(session_docs([name]))
            base = self.create([(self.labels(bench_set=name + "base"), i % 2 == 0) for i in range(size)])
            ours = self.create(
                [
                    ({**self.labels(bench_set=name), "reaper.session": name}, i % 2 == 0)
                    for i in range(size)
                ]
            )
            raw = self.base_remove(base)
            r.quiet(0.5)
            t = time.time()
            r.cli(["session", "end", name])
            returned = time.time()
            last = self.events.wait(ours, 120)
            ends.append(returned - t)
            raws.append(raw)
            lat.append((last - returned) - raw)
        p50, p99 = pct(lat, 50) * 1000, pct(lat, 99) * 1000
        self.row(
            "2 latency",
            f"end returned -> last of {size} gone, minus {short}; p50 over {runs} runs",
            f"{p50:.0f} ms",
            f"{statistics.median(raws) * 1000:.0f} ms {short} (p50)",
            "-",
            "<= 100 ms",
            "PASS" if p50 <= 100 else "MISS",
        )
        self.row(
            "2 latency",
            f"same, p99 over {runs} runs",
            f"{p99:.0f} ms",
            f"{max(raws) * 1000:.0f} ms {short} (max)",
            "-",
            "<= 300 ms",
            "PASS" if p99 <= 300 else "MISS",
        )
        self.notes.append(
            f"latency: `reaper session end` itself took p50 {statistics.median(ends) * 1000:.0f} ms "
            f"(process start + API call + flushed store write)"
        )

        # ttl and heartbeat: deadline -> first removal (a created container: its removal is quick)
        for kind in ("ttl", "heartbeat"):
            delays, raws = [], []
            for _ in range(expiry_runs):
                raws.append(self.base_remove(self.create([(self.labels(bench_set="one"), False)])))
                name = self.uniq(kind)
                spec = {"ttl": "2s"} if kind == "ttl" else {"heartbeatTimeout": "2s"}
                r.apply(session_docs([name], spec))
                ids = self.create(
                    [({**self.labels(bench_set=name), "reaper.session": name}, False)]
                )
                if kind == "heartbeat":
                    time.sleep(0.5)
                    r.cli(["session", "heartbeat", name])
                st = json.loads(r.cli(["get", "sessions", name, "-o", "json"]).stdout)
                st = st[0] if isinstance(st, list) else st
                status = st["status"]
                if kind == "ttl":
                    deadline = ts(status["createdAt"]) + 2.0
                else:
                    deadline = ts(status["lastHeartbeat"]) + 2.0
                first = self.events.first(ids, 60)
                delays.append(first - deadline)
            worst = max(delays) * 1000
            self.row(
                "2 latency",
                f"{kind} deadline -> first removal (max of {expiry_runs})",
                f"{worst:.0f} ms",
                f"{statistics.median(raws) * 1000:.0f} ms {short} removal of one",
                f"p50 {statistics.median(delays) * 1000:.0f} ms",
                "<= 100 ms",
                "PASS" if worst <= 100 else "MISS",
            )
        r.stop()

    # --- 3 and 4. idle cost and scale, through the counting proxy --------------------------
    def idle_and_scale(self, sessions, foreign, idle_secs, scale_total, scale_foreign, passes):
        proxy_path = os.path.join(self.workdir, "proxy.sock")
        proxy = CountingProxy(self.sock, proxy_path)
        log(f"idle: {sessions} sessions, {foreign} foreign containers, {idle_secs} s")
        t = time.time()
        self.create([(self.labels(bench_set="foreign"), False) for _ in range(foreign)])
        setup = time.time() - t
        r = self.reaper("idle", docker_sock=proxy_path)
        names = [self.uniq("idle") for _ in range(sessions)]
        r.apply(session_docs(names))
        r.quiet(2.0)
        c0, p0, t0 = r.cpu(), r.passes(), time.time()
        rss = []
        while time.time() - t0 < idle_secs:
            time.sleep(min(1.0, idle_secs - (time.time() - t0)) if idle_secs > 1 else 0.2)
            rss.append(r.rss_mib())
        t1 = time.time()
        c1, p1 = r.cpu(), r.passes()
        calls = proxy.since(t0, t1)
        cpu_pct = (c1 - c0) / (t1 - t0) * 100
        self.row(
            "3 idle",
            f"CPU over {t1 - t0:.0f} s ({sessions} sessions, {foreign} foreign)",
            f"{cpu_pct:.2f} % of a core",
            "-",
            "-",
            "< 1 %",
            "PASS" if cpu_pct < 1 else "MISS",
        )
        self.row(
            "3 idle",
            "RSS (max of samples)",
            f"{max(rss):.1f} MiB",
            "-",
            "-",
            "< 40 MiB",
            "PASS" if max(rss) < 40 else "MISS",
        )
        n_passes = int(p1[0] - p0[0])
        allowed = math.floor(idle_secs / 30) + 1  # the default resyncInterval is 30 s
        self.row(
            "3 idle",
            f"Docker API calls while idle ({n_passes} passes)",
            f"{len(calls)} calls",
            "-",
            "-",
            f"no polling: <= {allowed} passes",
            "PASS" if n_passes <= allowed else "MISS",
        )
        self.notes.append(
            f"idle: calls seen by the proxy: {summarize_calls(calls) or 'none'}; "
            f"creating {foreign} foreign containers took {setup:.1f} s"
        )

        # Scale: grow the same engine to scale_total containers, scale_foreign of them foreign;
        # ours belong to live sessions, so a pass lists and plans everything and removes nothing.
        ours = scale_total - scale_foreign
        log(f"scale: {scale_total} containers, {scale_foreign} foreign, {ours} ours")
        t = time.time()
        self.create(
            [(self.labels(bench_set="foreign"), False) for _ in range(scale_foreign - foreign)]
            + [
                ({**self.labels(bench_set="ours"), "reaper.session": names[i % len(names)]}, False)
                for i in range(ours)
            ]
        )
        setup = time.time() - t
        r.quiet(2.0)
        walls, cpus, counts, sizes = [], [], [], []
        for k in range(passes):
            # Touching a record triggers a pass; measure from just before the touch.
            c0, p0, t0 = r.cpu(), r.passes(), time.time()
            r.apply(session_docs([names[0]], {"ttl": f"{100 + k}d"}))
            deadline = time.time() + 60
            while r.passes()[0] <= p0[0]:
                if time.time() > deadline:
                    raise BenchError("the touch did not trigger a pass within 60 s")
                time.sleep(0.05)
            r.quiet(0.5)
            c1, p1, t1 = r.cpu(), r.passes(), time.time()
            n = p1[0] - p0[0]
            walls.append((p1[1] - p0[1]) / n)
            cpus.append((c1 - c0) / n)
            calls = [c for c in proxy.since(t0, t1) if c[1] != "GET /events"]
            counts.append(len(calls) / n)
            sizes += [c for c in calls if re.search(r"(^|&)size=(1|true)", c[2])]
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        self.row(
            "4 scale",
            f"full pass wall ({scale_total} containers, {scale_foreign} foreign; median of {passes})",
            f"{wall * 1000:.0f} ms",
            "-",
            "-",
            "< 1500 ms",
            "PASS" if wall < 1.5 else "MISS",
        )
        self.row(
            "4 scale",
            "reaper CPU per pass (incl. the touching apply)",
            f"{cpu * 1000:.0f} ms",
            "-",
            "-",
            "< 150 ms",
            "PASS" if cpu < 0.15 else "MISS",
        )
        per_pass = statistics.median(counts)
        self.row(
            "4 scale",
            f"Docker API calls per pass ({ours} ours of {scale_total}); size=true asked",
            f"{per_pass:.0f} calls; size {len(sizes)}x",
            f"{ours} our objects",
            f"{per_pass / max(ours, 1):.3f} calls/object",
            "grows with ours; no sizes",
            "PASS" if per_pass < max(ours, 50) and not sizes else "MISS",
        )
        self.notes.append(
            f"scale: calls in the last pass: {summarize_calls(calls)}; "
            f"creating {scale_total - foreign} more containers took {setup:.1f} s"
        )
        r.stop()

    # --- 5. API and store ---------------------------------------------------------------
    def api_store(self, n_apply, n_get):
        log(f"api: apply {n_apply}, get with {n_get}")
        r = self.reaper("api")
        docs = session_docs([self.uniq("api") for _ in range(n_apply)])
        t = time.time()
        out = r.apply(docs)
        took = time.time() - t
        if out.stdout.count(b"created") < n_apply:
            raise BenchError(f"apply created fewer than {n_apply} sessions: {out.stdout[-300:]!r}")
        self.row(
            "5 api",
            f"reaper apply of {n_apply} session documents in one stream",
            f"{took * 1000:.0f} ms",
            "-",
            "-",
            "< 3000 ms",
            "PASS" if took < 3 else "MISS",
        )
        more = n_get - n_apply
        while more > 0:
            k = min(more, 5000)
            r.apply(session_docs([self.uniq("api") for _ in range(k)]))
            more -= k
        times = []
        for _ in range(3):
            t = time.time()
            out = r.cli(["get", "sessions", "-o", "json"])
            times.append(time.time() - t)
            got = len(json.loads(out.stdout)["items"])
            if got != n_get:
                raise BenchError(f"get returned {got} records, expected {n_get}")
        took = statistics.median(times)
        self.row(
            "5 api",
            f"reaper get sessions -o json with {n_get} records (median of 3)",
            f"{took * 1000:.0f} ms",
            "-",
            "-",
            "< 300 ms",
            "PASS" if took < 0.3 else "MISS",
        )
        r.stop()

    # ------------------------------------------------------------------------------------
    def cleanup(self):
        for r in self.reapers:
            try:
                r.stop()
            except Exception as e:
                log(f"stopping a reaper: {e}")
        if self.wedged:
            log(f"the engine is wedged: containers labelled bench.run={self.run} are left to it")
            return
        try:
            remove_labelled(self.docker, f"bench.run={self.run}")
        except Exception as e:
            log(f"removing leftovers: {e}")

    def table(self):
        head = ("scenario", "figure", "reaper", "baseline", "ratio", "target", "result")
        rows = [head] + self.rows
        w = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
        line = lambda r: "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
        out = [line(head), "|" + "|".join("-" * (x + 2) for x in w) + "|"]
        out += [line(r) for r in self.rows]
        return "\n".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", required=True)
    p.add_argument("--docker-sock", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the reaper logs and stores")
    p.add_argument("--n", type=int, nargs="*", help="throughput sizes (default 200 1000)")
    p.add_argument("--idle-seconds", type=float)
    p.add_argument("--peers-all", action="store_true", help="peer rows at every N, not only the first")
    p.add_argument("--rounds", type=int, help="throughput rounds per N (default 5; 1 with --quick)")
    p.add_argument(
        "--only",
        help="comma-separated scenarios to run: 1,2,3,5,6 (3 includes 4; 6 is the fleet, on its "
        "own etcd cluster and three engines of its own; --quick leaves it out unless named)",
    )
    p.add_argument(
        "--unsafe-parallel-exits",
        action="store_true",
        help="run the raw8 and protocol rows, and the peers as typed, even on an engine with the "
        "container-exit deadlock (Docker < 20.10.27): they can wedge it",
    )
    p.add_argument("--dockerd-pidfile", help="the engine's pid file: SIGUSR1 goes there if it wedges")
    a = p.parse_args()
    q = a.quick
    only = set((a.only or ("1,2,3,5" if q else "1,2,3,5,6")).split(","))
    b = Bench(a)
    status = 0
    started = time.time()
    try:
        if "1" in only:
            sizes = a.n or ([10] if q else [200, 1000])
            for i, n in enumerate(sizes):
                b.throughput(
                    n, 5 if q else 20, peers=(i == 0 or a.peers_all), rounds=a.rounds or (1 if q else 5)
                )
        if "2" in only:
            b.latency(3 if q else 30, 4 if q else 10, 1 if q else 5)
        if "3" in only or "4" in only:
            b.idle_and_scale(
                20 if q else 1000,
                20 if q else 1000,
                a.idle_seconds or (3 if q else 60),
                50 if q else 5000,
                40 if q else 4000,
                2 if q else 5,
            )
        if "5" in only:
            b.api_store(50 if q else 5000, 100 if q else 10000)
        if "6" in only:
            from fleet import fleet

            fleet(b, q)
    except Exception as e:
        log(f"error: {e!r}")
        status = 1
        if check_wedged(b.docker, a.dockerd_pidfile):
            b.wedged, status = True, 3
    finally:
        b.cleanup()
    print(b.table())
    print()
    for n in b.notes:
        print(f"- {n}")
    if status == 0 and not a.keep:
        shutil.rmtree(b.workdir, ignore_errors=True)
        print(f"- total bench time {time.time() - started:.0f} s")
    else:
        print(f"- total bench time {time.time() - started:.0f} s; reaper logs kept in {b.workdir}")
    sys.stdout.flush()
    if b.wedged:
        # Calls stuck in the wedged engine hold pool threads until their timeout; don't wait.
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
