"""The client's parts without a daemon: durations, where it connects, how replies become errors,
and the heartbeat thread against a fake daemon that misbehaves on purpose."""

from __future__ import annotations

import ast
import datetime
import json
import os
import socket
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import Callable, List, Optional, Tuple
from unittest import mock

import reaper_client
from reaper_client import (
    Client,
    Conflict,
    InvalidManifest,
    NotFound,
    ProtocolError,
    ReaperError,
    StorageFull,
    Unavailable,
    Unreachable,
)
from reaper_client.client import _manifest_text


class PackageTest(unittest.TestCase):
    def test_stdlib_only_and_python_3_9_syntax(self) -> None:
        """The installed package imports only the standard library and itself, and parses as
        Python 3.9, its oldest supported version (the test venv's Python is newer)."""
        files = sorted(Path(reaper_client.__file__).parent.rglob("*.py"))
        self.assertGreaterEqual(len(files), 5)
        stdlib = getattr(sys, "stdlib_module_names", None)
        bad = []
        for f in files:
            tree = ast.parse(f.read_text(), str(f), feature_version=(3, 9))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top != "reaper_client" and stdlib is not None and top not in stdlib:
                        bad.append(f"{f.name} imports {name}")
        self.assertEqual(bad, [])
        self.assertTrue((Path(reaper_client.__file__).parent / "py.typed").is_file())


class DurationTest(unittest.TestCase):
    def test_parse(self) -> None:
        s = reaper_client.seconds
        self.assertEqual(s("500ms"), 0.5)
        self.assertEqual(s("30s"), 30)
        self.assertEqual(s("10m"), 600)
        self.assertEqual(s("2h"), 7200)
        self.assertEqual(s("1d"), 86400)
        self.assertEqual(s("1h30m"), 5400)
        self.assertEqual(s(datetime.timedelta(minutes=2)), 120)
        self.assertEqual(s(1.5), 1.5)
        for bad in ("", "5", "s", "5 s", "-5s", "1.5s", "5sec", "1h 30m", True, -1, None):
            with self.assertRaises(ValueError, msg=repr(bad)):
                s(bad)  # type: ignore[arg-type]

    def test_text(self) -> None:
        t = reaper_client.duration_text
        self.assertEqual(t("2h"), "2h")
        self.assertEqual(t(30), "30s")
        self.assertEqual(t(1.5), "1500ms")
        self.assertEqual(t(datetime.timedelta(hours=1)), "3600s")
        with self.assertRaises(ValueError):
            t("forever")


class AddressTest(unittest.TestCase):
    def socket_with(self, euid: int, **env: str) -> Path:
        with mock.patch.dict(os.environ, env, clear=True), mock.patch("os.geteuid", return_value=euid):
            return reaper_client.default_socket_path()

    def test_default_socket_follows_the_daemon(self) -> None:
        self.assertEqual(self.socket_with(0, XDG_RUNTIME_DIR="/run/user/0"),
                         Path("/run/reaper/reaper.sock"))
        self.assertEqual(self.socket_with(1000, REAPER_SOCKET="/x/r.sock"), Path("/x/r.sock"))
        self.assertEqual(self.socket_with(1000, XDG_RUNTIME_DIR="/run/user/1000", HOME="/home/u"),
                         Path("/run/user/1000/reaper/reaper.sock"))
        # Relative values are ignored, as the XDG base directory spec says.
        self.assertEqual(self.socket_with(1000, XDG_RUNTIME_DIR="rel", XDG_STATE_HOME="/state"),
                         Path("/state/reaper/reaper.sock"))
        self.assertEqual(self.socket_with(1000, HOME="/home/u"),
                         Path("/home/u/.local/state/reaper/reaper.sock"))

    def test_urls(self) -> None:
        self.assertEqual(Client("http://10.0.0.1:9734", token="t").address, "http://10.0.0.1:9734")
        self.assertEqual(Client("unix:///tmp/r.sock").address, "/tmp/r.sock")
        self.assertEqual(Client(socket="/tmp/s.sock").address, "/tmp/s.sock")
        for bad in ("ftp://x", "10.0.0.1:9734", "http://"):
            with self.assertRaises(ValueError, msg=bad):
                Client(bad)

    def test_manifests_become_yaml_documents(self) -> None:
        self.assertEqual(_manifest_text("kind: Session\n"), "kind: Session\n")
        one = {"apiVersion": "reaper/v1", "kind": "Agent", "metadata": {"name": "a"}}
        self.assertEqual(json.loads(_manifest_text(one)), one)
        docs = _manifest_text([one, "kind: x"]).split("---\n")
        self.assertEqual(len(docs), 2)
        self.assertEqual(json.loads(docs[0]), one)
        with self.assertRaises(ValueError):
            _manifest_text([])

    def test_session_labels_and_manifest(self) -> None:
        s = reaper_client.session("n1", ttl=None, heartbeat=3, instance="host-a",
                                  match_labels={"session_id": "42"}, labels={"team": "t"})
        self.assertEqual(s.labels, {"reaper.session": "n1", "reaper.instance": "host-a",
                                    "session_id": "42"})
        self.assertEqual(s.manifest(), {
            "apiVersion": "reaper/v1", "kind": "Session",
            "metadata": {"name": "n1", "labels": {"team": "t"}},
            "spec": {"heartbeatTimeout": "3s", "match": {"labels": {"session_id": "42"}}},
        })
        names = {reaper_client.session().name for _ in range(100)}
        self.assertEqual(len(names), 100)
        for n in names:
            self.assertRegex(n, r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
            self.assertLessEqual(len(n), 63)


Handler = Callable[[str, str, bytes], Optional[Tuple[int, bytes]]]


class FakeDaemon:
    """An HTTP/1.1 server on a Unix socket that answers with ``handler(method, path, body)``
    (``None``: never answer). Every request is recorded."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: List[Tuple[str, str]] = []
        self.bodies: List[bytes] = []
        self.path = os.path.join(tempfile.mkdtemp(), "fake.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v)
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append((method, path))
            self.bodies.append(body)
            answer = self.handler(method, path, body)
            if answer is None:
                time.sleep(5)
                return
            status, payload = answer
            conn.sendall(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
            )

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def error(status: int, message: str, details: Optional[List[str]] = None) -> Tuple[int, bytes]:
    body = {"error": message}
    if details:
        body["details"] = details  # type: ignore[assignment]
    return status, json.dumps(body).encode()


class RepliesTest(unittest.TestCase):
    def call(self, answer: Optional[Tuple[int, bytes]], timeout: float = 5.0) -> object:
        fake = FakeDaemon(lambda m, p, b: answer)
        self.addCleanup(fake.close)
        return Client(socket=fake.path, timeout=timeout).status()

    def test_errors_by_status(self) -> None:
        cases = [(404, NotFound), (409, Conflict), (422, InvalidManifest), (503, Unavailable),
                 (507, StorageFull), (500, ReaperError), (418, ReaperError)]
        for status, cls in cases:
            with self.assertRaises(cls, msg=str(status)) as caught:
                self.call(error(status, f"daemon says {status}", ["a.yaml: line 1: x"]))
            self.assertIs(type(caught.exception), cls)
            self.assertEqual(caught.exception.status, status)
            self.assertEqual(caught.exception.message, f"daemon says {status}")
            self.assertEqual(caught.exception.details, ["a.yaml: line 1: x"])
            self.assertIn("a.yaml: line 1: x", str(caught.exception))

    def test_bodies_that_are_not_the_api(self) -> None:
        with self.assertRaises(ProtocolError):
            self.call((200, b"<html>"))
        with self.assertRaises(ReaperError) as caught:
            self.call((502, b"bad gateway"))
        self.assertEqual((caught.exception.status, caught.exception.message), (502, "bad gateway"))
        self.assertEqual(self.call((200, b'{"version": "1"}')), {"version": "1"})

    def test_no_answer_in_time_is_unreachable(self) -> None:
        started = time.monotonic()
        with self.assertRaises(Unreachable) as caught:
            self.call(None, timeout=0.5)
        self.assertLess(time.monotonic() - started, 3)
        self.assertIn("no answer within", str(caught.exception))


def record(name: str, phase: str = "Active") -> bytes:
    return json.dumps({"apiVersion": "reaper/v1", "kind": "Session", "metadata": {"name": name},
                       "spec": {}, "status": {"phase": phase}}).encode()


class HeartbeatThreadTest(unittest.TestCase):
    """The thread renews every third of the heartbeat, rides out a daemon that is briefly
    unavailable, and stops once the session is no longer Active."""

    def test_retries_transient_errors_and_stops_on_conflict(self) -> None:
        beats: List[float] = []
        state = {"created": False}

        def handler(method: str, path: str, body: bytes) -> Tuple[int, bytes]:
            if method == "GET" and path == "/v1/sessions/hb":
                return (200, record("hb")) if state["created"] else error(404, "session hb not found")
            if path == "/v1/apply":
                state["created"] = True
                return 200, b'{"results": [{"kind": "session", "name": "hb", "action": "created"}], "warnings": []}'
            if path.endswith("/heartbeat"):
                beats.append(time.monotonic())
                n = len(beats)
                if n in (2, 3):
                    return error(503, "store unavailable")
                if n >= 5:
                    return error(409, "session hb is no longer Active")
                return 200, record("hb")
            if path.endswith("/end"):
                return 200, record("hb", "Ended")
            return error(404, "no such endpoint")

        fake = FakeDaemon(handler)
        self.addCleanup(fake.close)
        s = reaper_client.session("hb", heartbeat="300ms", client=Client(socket=fake.path))
        with s:
            time.sleep(2.5)
            self.assertEqual(len(beats), 5, "the thread stops after the conflict")
            self.assertIsInstance(s.heartbeat_error, Conflict)
            self.assertFalse(s._thread.is_alive())  # type: ignore[union-attr]
        gaps = [b - a for a, b in zip(beats, beats[1:])]
        self.assertTrue(all(0.05 < g < 1.0 for g in gaps), gaps)
        self.assertEqual(fake.requests[-1], ("POST", "/v1/sessions/hb/end"))
        self.assertEqual(s.record["status"]["phase"], "Ended")  # type: ignore[index]

    def test_ending_fails_quietly_under_an_exception_and_loudly_without(self) -> None:
        applied: List[str] = []

        def handler(method: str, path: str, body: bytes) -> Tuple[int, bytes]:
            if method == "GET":
                # Taken names are looked up before the apply; the record is read after it.
                return (200, record("x")) if applied else error(404, "session x not found")
            if path == "/v1/apply":
                applied.append(path)
                return 200, b'{"results": [{"kind": "session", "name": "x", "action": "created"}], "warnings": []}'
            applied.clear()
            return error(503, "docker is down")

        fake = FakeDaemon(handler)
        self.addCleanup(fake.close)
        client = Client(socket=fake.path)
        with self.assertLogs("reaper_client", "ERROR") as logs:
            with self.assertRaises(KeyError):
                with reaper_client.session("x", heartbeat=None, client=client):
                    raise KeyError("the workflow's own error wins")
        self.assertIn("docker is down", logs.output[0])
        with self.assertRaises(Unavailable):
            with reaper_client.session("x", heartbeat=None, client=client):
                pass
        ends = [r for r in fake.requests if r[1].endswith("/end")]
        self.assertEqual(len(ends), 2)

    def test_which_exits_end_the_session_as_failed(self) -> None:
        applied: List[str] = []

        def handler(method: str, path: str, body: bytes) -> Tuple[int, bytes]:
            if method == "GET":
                return (200, record("e")) if applied else error(404, "session e not found")
            if path == "/v1/apply":
                applied.append(path)
                return 200, b'{"results": [{"kind": "session", "name": "e", "action": "created"}], "warnings": []}'
            applied.clear()
            return 200, record("e", "Ended")

        fake = FakeDaemon(handler)
        self.addCleanup(fake.close)
        client = Client(socket=fake.path)
        cases = [(None, False), (SystemExit(0), False), (SystemExit(None), False),
                 (SystemExit(143), True), (SystemExit("message"), True),
                 (KeyboardInterrupt(), True), (ValueError("x"), True)]
        for raised, failed in cases:
            try:
                with reaper_client.session("e", heartbeat=None, client=client):
                    if raised is not None:
                        raise raised
            except BaseException as e:
                self.assertIs(e, raised, "the block's own exception propagates")
            ends = [json.loads(b) for (m, p), b in zip(fake.requests, fake.bodies)
                    if p.endswith("/end")]
            self.assertEqual(ends[-1], {"failed": failed}, repr(raised))
        self.assertEqual(len(ends), len(cases))


if __name__ == "__main__":
    unittest.main()
