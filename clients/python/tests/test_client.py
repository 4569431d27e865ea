"""The client against a real reaper daemon and a real Docker engine.

Run by tests/python_client.rs (``./scripts/test --test python_client``), which starts the daemon
and passes, in the environment: REAPER_SOCKET (the daemon's socket), DOCKER_HOST (the private
engine), REAPER_TEST_IMAGE (the busybox test image), REAPER_TEST_API_URL and
REAPER_TEST_API_TOKEN (the daemon's TCP listener and its token), REAPER_TEST_INSTANCE (the
daemon's instance), REAPER_TEST_EXAMPLE (the README example). A missing variable fails every
test: these tests never skip.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from typing import Callable, List

import docker
import docker.errors
import reaper_client
from reaper_client import (
    BadRequest,
    Client,
    Conflict,
    InvalidManifest,
    NotFound,
    ReaperError,
    Unauthorized,
    Unreachable,
)

# How long the daemon may take to remove a finished session's objects (stops are serial on
# Docker 20.10: the libnetwork exit deadlock).
CLEANUP_BOUND = 60.0
PID = os.getpid()
_n = 0


def env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise RuntimeError(f"{name} is not set: run these tests through tests/python_client.rs")
    return value


def unique(prefix: str) -> str:
    global _n
    _n += 1
    return f"{prefix}-{PID}-{_n}"


def wait_until(what: str, cond: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.1)


class Engine:
    """docker-py against the private engine, as a workflow system would use it."""

    def __init__(self) -> None:
        env("DOCKER_HOST")
        self.docker = docker.from_env(timeout=60)
        self.image = env("REAPER_TEST_IMAGE")

    def run(self, name: str, labels: dict, start: bool = True) -> str:
        kwargs = dict(
            name=name, labels=labels, init=True, network_mode="none", detach=True
        )
        if start:
            c = self.docker.containers.run(self.image, ["sleep", "3600"], **kwargs)
        else:
            c = self.docker.containers.create(self.image, ["sleep", "3600"], **kwargs)
        return c.id

    def exists(self, cid: str) -> bool:
        try:
            self.docker.containers.get(cid)
            return True
        except docker.errors.NotFound:
            return False

    def running(self, cid: str) -> bool:
        try:
            return self.docker.containers.get(cid).status == "running"
        except docker.errors.NotFound:
            return False

    def labelled(self, key: str, value: str) -> List[str]:
        """Containers, networks and volumes labelled key=value."""
        f = {"label": f"{key}={value}"}
        found = [f"container {c.name}" for c in self.docker.containers.list(all=True, filters=f)]
        found += [f"network {n.name}" for n in self.docker.networks.list(filters=f)]
        found += [f"volume {v.name}" for v in self.docker.volumes.list(filters=f)]
        return found

    def remove_quietly(self, cid: str) -> None:
        try:
            self.docker.containers.get(cid).remove(force=True, v=True)
        except docker.errors.APIError:
            pass


ENGINE: Engine
CLIENT: Client
BYSTANDERS: List[str] = []
OTHER_SESSION = f"pyby-other-{PID}"


def setUpModule() -> None:
    global ENGINE, CLIENT
    ENGINE = Engine()
    CLIENT = Client(socket=env("REAPER_SOCKET"))
    CLIENT.status()
    # Bystanders: an unlabelled container, and one of another (live) session.
    CLIENT.apply(
        {
            "apiVersion": "reaper/v1",
            "kind": "Session",
            "metadata": {"name": OTHER_SESSION},
            "spec": {"ttl": "1h"},
        }
    )
    BYSTANDERS.append(ENGINE.run(f"pyby-plain-{PID}", {}))
    BYSTANDERS.append(ENGINE.run(f"pyby-other-{PID}", {"reaper.session": OTHER_SESSION}))


def tearDownModule() -> None:
    for cid in BYSTANDERS:
        ENGINE.remove_quietly(cid)


class ReaperTestCase(unittest.TestCase):
    def assert_bystanders_alive(self) -> None:
        gone = [cid[:12] for cid in BYSTANDERS if not ENGINE.running(cid)]
        self.assertEqual(gone, [], "bystander containers were stopped or removed")

    def assert_cleaned_up(self, name: str, containers: List[str], reason: str) -> float:
        """Waits until the session's containers and labelled objects are gone; checks why it
        ended; returns how long the objects took to go."""
        took = wait_until(
            f"session {name}'s objects are gone",
            lambda: not any(ENGINE.exists(c) for c in containers)
            and not ENGINE.labelled("reaper.session", name),
            CLEANUP_BOUND,
        )
        record = CLIENT.get_session(name)
        self.assertEqual(record["status"].get("endReason"), reason, record)
        wait_until(
            f"session {name} is Cleaned",
            lambda: CLIENT.get_session(name)["status"]["phase"] == "Cleaned",
            CLEANUP_BOUND,
        )
        self.assert_bystanders_alive()
        return took


class SessionTest(ReaperTestCase):
    def test_success_ends_the_session_and_its_objects_go(self) -> None:
        containers = []
        with reaper_client.session(ttl="1h", heartbeat="30s", labels={"team": "py"}) as s:
            self.assertRegex(s.name, r"^py-[0-9a-f]{12}$")
            self.assertEqual(s.labels, {"reaper.session": s.name})
            record = CLIENT.get_session(s.name)
            self.assertEqual(record["status"]["phase"], "Active")
            self.assertEqual(record["spec"].get("ttl"), "1h")
            self.assertEqual(record["spec"].get("heartbeatTimeout"), "30s")
            self.assertEqual(record["metadata"].get("labels"), {"team": "py"})
            containers.append(ENGINE.run(unique("pyc-ok"), s.labels))
            containers.append(ENGINE.run(unique("pyc-ok-created"), s.labels, start=False))
            net = ENGINE.docker.networks.create(unique("pyc-ok-net"), labels=s.labels, internal=True)
            vol = ENGINE.docker.volumes.create(unique("pyc-ok-vol"), labels=s.labels)
            claimed = {o["name"] for o in CLIENT.session_objects(s.name)}
            self.assertTrue({net.name, vol.name} <= claimed, claimed)
            time.sleep(0.5)
            self.assertTrue(all(ENGINE.exists(c) for c in containers), "removed while Active")
        ended = time.monotonic()
        self.assertIsNotNone(s.record)
        self.assertEqual(s.record["status"]["phase"], "Ended")
        took = self.assert_cleaned_up(s.name, containers, "succeeded")
        print(f"success: objects gone {took:.1f} s after the block ({time.monotonic() - ended:.1f} s with checks)")

    def test_an_exception_ends_the_session_as_failed_and_propagates(self) -> None:
        class Boom(Exception):
            pass

        containers = []
        with self.assertRaises(Boom) as caught:
            with reaper_client.session(unique("py-boom"), ttl="1h", heartbeat="30s") as s:
                containers.append(ENGINE.run(unique("pyc-boom"), s.labels))
                raise Boom("the workflow failed")
        self.assertEqual(str(caught.exception), "the workflow failed")
        self.assertEqual(s.record["status"].get("endReason"), "failed")
        self.assert_cleaned_up(s.name, containers, "failed")

    CHILD = textwrap.dedent(
        """
        import json, signal, sys, time
        import docker, reaper_client
        if sys.argv[4] == "exit-on-sigterm":
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        engine = docker.from_env(timeout=60)
        with reaper_client.session(sys.argv[1], ttl="1h", heartbeat="2s") as s:
            c = engine.containers.run(sys.argv[2], ["sleep", "3600"], name=sys.argv[3],
                                      labels=s.labels, init=True, network_mode="none",
                                      detach=True)
            print(json.dumps({"name": s.name, "container": c.id}), flush=True)
            time.sleep(3600)
        """
    )

    def start_child(self, name: str, mode: str) -> "tuple[subprocess.Popen[str], str]":
        """A child process that holds session `name` with a 2 s heartbeat and one container;
        returns it and the container's ID once the container runs."""
        child = subprocess.Popen(
            [sys.executable, "-c", self.CHILD, name, ENGINE.image, unique("pyc-child"), mode],
            stdout=subprocess.PIPE,
            text=True,
        )

        def reap() -> None:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()

        self.addCleanup(reap)
        line: List[str] = []
        reader = threading.Thread(target=lambda: line.append(child.stdout.readline()))
        reader.start()
        reader.join(60)
        self.assertTrue(line and line[0].strip(), f"the child said nothing (exit {child.poll()})")
        hello = json.loads(line[0])
        self.assertEqual(hello["name"], name)
        return child, hello["container"]

    def test_a_child_killed_with_kill_9_lets_the_heartbeat_lapse(self) -> None:
        name = unique("py-kill9")
        child, cid = self.start_child(name, "default")
        # Three heartbeat periods: the child's heartbeat thread keeps the session alive.
        first = CLIENT.get_session(name)["status"].get("lastHeartbeat")
        time.sleep(6)
        record = CLIENT.get_session(name)
        self.assertEqual(record["status"]["phase"], "Active", record)
        self.assertNotEqual(record["status"].get("lastHeartbeat"), first, "no heartbeat came")
        self.assertTrue(ENGINE.running(cid))
        os.kill(child.pid, signal.SIGKILL)
        self.assertEqual(child.wait(10), -signal.SIGKILL)
        killed = time.monotonic()
        self.assert_cleaned_up(name, [cid], "heartbeatLost")
        print(f"kill -9: objects gone and session Cleaned {time.monotonic() - killed:.1f} s after the kill")

    def test_sigterm_turned_into_an_exit_ends_the_session_as_failed_at_once(self) -> None:
        """README's advice for SIGTERM."""
        name = unique("py-term")
        child, cid = self.start_child(name, "exit-on-sigterm")
        os.kill(child.pid, signal.SIGTERM)
        self.assertEqual(child.wait(30), 143)
        # Ended by the child, not by the heartbeat lapsing.
        self.assertEqual(CLIENT.get_session(name)["status"].get("endReason"), "failed")
        self.assert_cleaned_up(name, [cid], "failed")

    def test_instance_label_scopes_objects_to_this_daemon(self) -> None:
        instance = env("REAPER_TEST_INSTANCE")
        with reaper_client.session(unique("py-inst"), heartbeat="30s", instance=instance) as s:
            self.assertEqual(s.labels, {"reaper.session": s.name, "reaper.instance": instance})
            mine = ENGINE.run(unique("pyc-inst"), s.labels)
            # The same session name, for another reaper instance: never ours.
            theirs = ENGINE.run(unique("pyby-inst"), {**s.labels, "reaper.instance": "someone-else"})
        self.addCleanup(ENGINE.remove_quietly, theirs)
        wait_until("this instance's container is gone", lambda: not ENGINE.exists(mine),
                   CLEANUP_BOUND)
        wait_until(f"session {s.name} is Cleaned",
                   lambda: CLIENT.get_session(s.name)["status"]["phase"] == "Cleaned",
                   CLEANUP_BOUND)
        self.assertTrue(ENGINE.running(theirs), "another instance's container was touched")
        self.assertEqual(CLIENT.get_session(s.name)["status"]["removed"]["containers"], 1)
        self.assert_bystanders_alive()

    def test_a_taken_name_is_refused_before_anything_is_changed(self) -> None:
        name = unique("py-taken")
        with reaper_client.session(name, ttl="1h", heartbeat=None) as s:
            with self.assertRaises(Conflict) as live:
                reaper_client.session(name, ttl="5m").start()
            self.assertIn("Active", str(live.exception))
            self.assertEqual(CLIENT.get_session(name)["spec"].get("ttl"), "1h")
            self.assertNotIn("heartbeatTimeout", CLIENT.get_session(name)["spec"])
        self.assertEqual(s.record["status"]["phase"], "Ended")
        with self.assertRaises(Conflict) as finished:
            with reaper_client.session(name):
                self.fail("the body ran under a finished session's name")
        self.assertIn("reaper delete session", str(finished.exception))

    def test_a_name_taken_between_the_look_and_the_write_is_left_as_its_owner_declared_it(
        self,
    ) -> None:
        name = unique("py-race")
        with reaper_client.session(name, ttl="1h", heartbeat=None):
            late = reaper_client.session(name, ttl="5m", heartbeat="2s")
            # The late starter looked before the name was taken.
            late._refuse_taken_name = lambda: None  # type: ignore[method-assign]
            with self.assertRaises(Conflict) as raced:
                late.start()
            self.assertEqual(raced.exception.status, 409)
            self.assertIn("already exists", str(raced.exception))
            spec = CLIENT.get_session(name)["spec"]
            self.assertEqual(spec.get("ttl"), "1h", "the owner's session was reconfigured")
            self.assertNotIn("heartbeatTimeout", spec)

    def test_wait_session_follows_the_watch_until_the_objects_are_gone(self) -> None:
        s = reaper_client.session(unique("py-wait"), heartbeat=None).start()
        c = ENGINE.run(unique("pyw-c"), s.labels)
        self.addCleanup(ENGINE.remove_quietly, c)
        waited: List[object] = []
        waiter = threading.Thread(
            target=lambda: waited.append(CLIENT.wait_session(s.name, timeout=CLEANUP_BOUND))
        )
        waiter.start()
        time.sleep(0.5)  # the waiter sees the session Active first: the change comes later
        self.assertTrue(waiter.is_alive(), "wait_session returned for an Active session")
        s.end()
        waiter.join(CLEANUP_BOUND + 5)
        self.assertFalse(waiter.is_alive(), "wait_session did not return")
        self.assertEqual(len(waited), 1, "wait_session raised in its thread")
        cleaned = waited[0]
        assert isinstance(cleaned, dict)
        self.assertEqual(cleaned["status"]["phase"], "Cleaned")
        self.assertEqual(cleaned["status"]["removed"]["containers"], 1)
        self.assertFalse(ENGINE.exists(c), "Cleaned while its container is still there")
        # Already there: at once, from the listing the watch starts with.
        t0 = time.monotonic()
        self.assertEqual(CLIENT.wait_session(s.name, timeout=10)["status"]["phase"], "Cleaned")
        self.assertLess(time.monotonic() - t0, 5)

        with reaper_client.session(unique("py-wait-live"), heartbeat=None) as live:
            t0 = time.monotonic()
            with self.assertRaises(TimeoutError) as late:
                CLIENT.wait_session(live.name, timeout=1)
            self.assertIn("still Active", str(late.exception))
            self.assertLess(time.monotonic() - t0, 10)
        with self.assertRaises(NotFound):
            CLIENT.wait_session(unique("py-wait-none"), timeout=5)

        events = list(CLIENT.watch_sessions(timeout_seconds=1))
        kinds = [e["type"] for e in events]
        self.assertEqual(kinds.count("BOOKMARK"), 1, kinds)
        listed = [e["object"]["metadata"]["name"] for e in events[: kinds.index("BOOKMARK")]]
        self.assertIn(s.name, listed)
        self.assert_bystanders_alive()

    def test_a_session_over_tcp_with_the_bearer_token(self) -> None:
        url, token = env("REAPER_TEST_API_URL"), env("REAPER_TEST_API_TOKEN")
        client = Client(url, token=token)
        with reaper_client.session(unique("py-tcp"), heartbeat="3s", client=client) as s:
            self.assertEqual(CLIENT.get_session(s.name)["status"]["phase"], "Active")
        self.assertEqual(CLIENT.get_session(s.name)["status"].get("endReason"), "succeeded")

        with self.assertRaises(Unauthorized) as wrong:
            Client(url, token="wrong-token").status()
        self.assertEqual(wrong.exception.status, 401)
        self.assertTrue(wrong.exception.message, "the daemon's message is carried")
        os.environ["REAPER_API_TOKEN"] = token
        try:
            self.assertIn("version", Client(url).status())
        finally:
            del os.environ["REAPER_API_TOKEN"]


class UnreachableTest(ReaperTestCase):
    def test_no_socket(self) -> None:
        path = os.path.join(tempfile.mkdtemp(), "reaper.sock")
        client = Client(socket=path)
        with self.assertRaises(Unreachable) as caught:
            client.status()
        message = str(caught.exception)
        self.assertIn(path, message)
        self.assertIn("reaper serve", message)
        self.assertIsNone(caught.exception.status)
        ran = []
        with self.assertRaises(Unreachable):
            with reaper_client.session(unique("py-nowhere"), client=client):
                ran.append(True)
        self.assertEqual(ran, [], "the body must not run without a session")

    def test_a_stale_socket_file(self) -> None:
        path = os.path.join(tempfile.mkdtemp(), "reaper.sock")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        with self.assertRaises(Unreachable) as caught:
            Client(socket=path).status()
        self.assertIn("refused", str(caught.exception).lower())

    def test_socket_from_the_environment(self) -> None:
        saved = os.environ["REAPER_SOCKET"]
        os.environ["REAPER_SOCKET"] = "/nonexistent/reaper.sock"
        try:
            with self.assertRaises(Unreachable) as caught:
                Client().status()
            self.assertIn("/nonexistent/reaper.sock", str(caught.exception))
        finally:
            os.environ["REAPER_SOCKET"] = saved
        self.assertIn("version", Client().status())

    def test_tcp_port_with_nothing_listening(self) -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(Unreachable) as caught:
            Client(f"http://127.0.0.1:{port}", token="t").status()
        self.assertIn(f"127.0.0.1:{port}", str(caught.exception))


class ClientTest(ReaperTestCase):
    def test_errors_are_typed_and_carry_the_daemons_message(self) -> None:
        with self.assertRaises(NotFound) as nf:
            CLIENT.get_session("no-such-session")
        self.assertEqual(nf.exception.status, 404)
        self.assertIn("no-such-session", nf.exception.message)
        with self.assertRaises(BadRequest) as bad:
            CLIENT.request("POST", "/v1/apply", {"manifests": []})
        self.assertEqual(bad.exception.status, 400)
        self.assertIn("invalid request body", bad.exception.message)
        self.assertNotIsInstance(bad.exception, InvalidManifest)
        with self.assertRaises(InvalidManifest) as invalid:
            CLIENT.apply(
                "apiVersion: reaper/v1\nkind: Session\nmetadata: {name: x}\nspec: {ttl: forever}\n",
                filename="bad.yaml",
            )
        self.assertEqual(invalid.exception.status, 422)
        self.assertTrue(any("bad.yaml" in d and "ttl" in d for d in invalid.exception.details),
                        invalid.exception.details)
        self.assertIsInstance(invalid.exception, BadRequest)
        self.assertIsInstance(invalid.exception, ReaperError)
        name = unique("py-ended")
        CLIENT.apply({"apiVersion": "reaper/v1", "kind": "Session", "metadata": {"name": name},
                      "spec": {"ttl": "1h"}})
        CLIENT.end_session(name)
        with self.assertRaises(Conflict) as conflict:
            CLIENT.heartbeat(name)
        self.assertEqual(conflict.exception.status, 409)
        with self.assertRaises(ValueError):
            reaper_client.session(ttl="forever")
        with self.assertRaises(ValueError):
            CLIENT.report_agent("a", "dancing")

    def test_the_rest_of_the_api(self) -> None:
        status = CLIENT.status()
        self.assertTrue(status["health"]["dockerUp"], status)
        agent = unique("py-agent")
        reply = CLIENT.apply([
            {"apiVersion": "reaper/v1", "kind": "Agent", "metadata": {"name": agent}, "spec": {}},
        ])
        self.assertEqual(reply["results"], [{"kind": "agent", "name": agent, "action": "created"}])
        with self.assertRaises(Conflict) as exists:
            CLIENT.apply({"apiVersion": "reaper/v1", "kind": "Agent", "metadata": {"name": agent},
                          "spec": {"match": {"namePrefix": "changed-"}}}, create=True)
        self.assertIn(f"agent/{agent} already exists", str(exists.exception))
        self.assertNotIn("namePrefix", CLIENT.get_agent(agent)["spec"].get("match", {}))
        self.assertIn(agent, [a["metadata"]["name"] for a in CLIENT.list_agents()])
        self.assertEqual(CLIENT.report_agent(agent, "running")["status"]["phase"], "Running")
        self.assertEqual(CLIENT.get_agent(agent)["status"]["phase"], "Running")
        # A record re-applies as is: unchanged.
        again = CLIENT.apply(CLIENT.get_agent(agent))
        self.assertEqual(again["results"][0]["action"], "unchanged")

        cid = ENGINE.run(unique("pyc-agent"), {"reaper.agent": agent})
        self.assertIn(cid, [o["id"] for o in CLIENT.agent_objects(agent)])
        preview = CLIENT.cleanup_preview("agent", agent)
        self.assertIn(cid, [r["target"]["id"] for r in preview["planned"]])
        self.assertEqual(preview["removed"], [])
        self.assertTrue(ENGINE.exists(cid), "a preview removes nothing")
        done = CLIENT.cleanup("agent", agent)
        self.assertIn(cid, [o["id"] for o in done["removed"]], done)
        self.assertEqual(done["failed"], [])
        self.assertFalse(ENGINE.exists(cid))

        deleting = CLIENT.delete_agent(agent)
        self.assertIn("deletingSince", deleting["status"])
        wait_until(f"agent {agent} is deleted", lambda: agent not in
                   [a["metadata"]["name"] for a in CLIENT.list_agents()], CLEANUP_BOUND)
        with self.assertRaises(NotFound):
            CLIENT.get_agent(agent)

        session = unique("py-listed")
        CLIENT.apply(f"apiVersion: reaper/v1\nkind: Session\nmetadata: {{name: {session}}}\n"
                     "spec: {ttl: 1h}\n")
        self.assertIn(session, [r["metadata"]["name"] for r in CLIENT.list_sessions()])
        self.assertEqual(CLIENT.delete_session(session)["metadata"]["name"], session)
        orphans = CLIENT.orphans()
        self.assertEqual(set(orphans), {"removals", "waiting", "held"})
        claimed = {r["target"]["id"] for r in orphans["removals"]}
        self.assertFalse(claimed & set(BYSTANDERS), "bystanders planned for removal")
        self.assert_bystanders_alive()


class ReadmeExampleTest(ReaperTestCase):
    def test_the_readme_example_runs_and_its_objects_go(self) -> None:
        out = subprocess.run(
            [sys.executable, env("REAPER_TEST_EXAMPLE")],
            env={**os.environ, "EXECUTOR_IMAGE": ENGINE.image},
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        words = out.stdout.split()
        self.assertEqual(words[0], "session", out.stdout)
        name = words[1]
        self.assertEqual(CLIENT.get_session(name)["status"].get("endReason"), "succeeded")
        self.assert_cleaned_up(name, [f"{name}-executor"], "succeeded")


if __name__ == "__main__":
    unittest.main()
