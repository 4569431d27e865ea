"""``Client``: the daemon's JSON HTTP API (``docs/api.md``) over its Unix socket or over TCP."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Union, cast

from .errors import NotFound, ProtocolError, Unavailable, Unreachable, error_for_status
from .types import (
    AgentPhase,
    AgentRecord,
    ApplyResponse,
    CleanupResponse,
    DockerObject,
    OrphansResponse,
    SessionRecord,
    Status,
    WatchEvent,
)

__all__ = ["Client", "default_socket_path", "Manifests"]

#: What :meth:`Client.apply` takes: YAML text, one manifest as a mapping, or a list of either.
Manifests = Union[str, Mapping[str, Any], Iterable[Union[str, Mapping[str, Any]]]]

_AGENT_PHASES = ("Starting", "Running", "Failed", "Stopped")


def default_socket_path() -> Path:
    """The socket the daemon listens on by default, as ``reaper serve`` and the CLI pick it:
    ``$REAPER_SOCKET`` when set; for root ``/run/reaper/reaper.sock``; else
    ``$XDG_RUNTIME_DIR/reaper/reaper.sock``, else ``reaper.sock`` in the default data dir
    (``$XDG_STATE_HOME/reaper`` or ``~/.local/state/reaper``)."""
    env = os.environ.get("REAPER_SOCKET", "")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/reaper/reaper.sock")

    def absolute(name: str) -> Optional[Path]:
        value = os.environ.get(name, "")
        return Path(value) if value and os.path.isabs(value) else None

    runtime = absolute("XDG_RUNTIME_DIR")
    if runtime:
        return runtime / "reaper" / "reaper.sock"
    state = absolute("XDG_STATE_HOME")
    if state:
        return state / "reaper" / "reaper.sock"
    home = absolute("HOME")
    if home:
        return home / ".local" / "state" / "reaper" / "reaper.sock"
    import tempfile

    return Path(tempfile.gettempdir()) / f"reaper-{os.geteuid()}" / "reaper.sock"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("reaper", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client:
    """One daemon. Every method is one request on a fresh connection, so a client may be shared
    between threads.

    Where it connects, first match wins:

    - ``url="http://HOST:PORT"``: the TCP listener (``apiListen``); every request carries
      ``Authorization: Bearer <token>``, the token being ``token`` or ``$REAPER_API_TOKEN``;
    - ``url="unix:///path/reaper.sock"`` or ``socket="/path/reaper.sock"``;
    - ``$REAPER_SOCKET``, else the daemon's default socket (:func:`default_socket_path`).

    ``timeout`` bounds each request, in seconds (``cleanup`` of many objects is the slowest).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        socket: Union[str, "os.PathLike[str]", None] = None,
        token: Optional[str] = None,
        timeout: float = 60.0,
    ) -> None:
        self.timeout = float(timeout)
        self._token = token
        self._socket: Optional[str] = None
        self._tcp: Optional[urllib.parse.SplitResult] = None
        if url is not None:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme == "unix":
                self._socket = parts.path
            elif parts.scheme in ("http", "https") and parts.hostname:
                self._tcp = parts
                if self._token is None:
                    self._token = os.environ.get("REAPER_API_TOKEN") or None
            else:
                raise ValueError(
                    f"cannot use {url!r}: write http://HOST:PORT for the TCP listener or "
                    "unix:///PATH for a socket"
                )
        elif socket is not None:
            self._socket = os.fspath(socket)
        else:
            self._socket = str(default_socket_path())

    @property
    def address(self) -> str:
        """Where requests go, for messages: the socket path or the URL."""
        if self._tcp is not None:
            return f"{self._tcp.scheme}://{self._tcp.netloc}"
        return cast(str, self._socket)

    def __repr__(self) -> str:
        return f"Client({self.address!r})"

    # -----------------------------------------------------------------------------------------
    # Transport
    # -----------------------------------------------------------------------------------------

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self._tcp is not None:
            cls = (
                http.client.HTTPSConnection
                if self._tcp.scheme == "https"
                else http.client.HTTPConnection
            )
            return cls(cast(str, self._tcp.hostname), self._tcp.port, timeout=timeout)
        return _UnixHTTPConnection(cast(str, self._socket), timeout)

    def _unreachable(self, reason: str) -> Unreachable:
        if self._tcp is not None:
            hint = "is `reaper serve --api-listen` running there?"
        else:
            hint = "is `reaper serve` running? set REAPER_SOCKET or pass socket="
        return Unreachable(f"cannot reach the reaper daemon at {self.address}: {reason} ({hint})")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: Optional[float] = None,
    ) -> Any:
        """One API call: ``body`` (if not None) is sent as JSON; returns the decoded JSON reply.
        Raises a typed :class:`ReaperError` for error statuses, :class:`Unreachable` when no
        answer comes."""
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            with self._answers(conn):
                resp = self._send(conn, method, path, body)
                status, raw = resp.status, resp.read()
        finally:
            conn.close()
        return _decode(status, raw)

    def _lines(self, path: str, timeout: Optional[float]) -> Iterator[Any]:
        """A streamed ``GET``: each line of the reply, decoded, until the daemon ends it.
        ``timeout`` bounds the connection and the wait for each line (None: no bound)."""
        conn = self._connection(timeout)
        try:
            with self._answers(conn):
                resp = self._send(conn, "GET", path, None)
                if resp.status != 200:
                    _decode(resp.status, resp.read())
                    raise ProtocolError(f"the daemon answered HTTP {resp.status} to a watch")
            while True:
                with self._answers(conn):
                    line = resp.readline()
                if not line:
                    return
                if line.strip():
                    yield _decode(200, line)
        finally:
            conn.close()

    @contextlib.contextmanager
    def _answers(self, conn: http.client.HTTPConnection) -> Iterator[None]:
        """Turns a transport failure into :class:`Unreachable`, with why."""
        try:
            yield
        except socket.timeout:
            raise self._unreachable(f"no answer within {conn.timeout} s") from None
        except FileNotFoundError:
            raise self._unreachable("no such socket") from None
        except PermissionError as e:
            raise self._unreachable(
                f"{e.strerror or e} (the socket's owner and group may call the API)"
            ) from None
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(str(e) or type(e).__name__) from None

    def _send(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: Any
    ) -> http.client.HTTPResponse:
        prefix = self._tcp.path.rstrip("/") if self._tcp is not None else ""
        headers = {"Host": "reaper", "Accept": "application/json", "Connection": "close"}
        if self._tcp is not None:
            headers["Host"] = self._tcp.netloc
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, prefix + path, body=data, headers=headers)
        return conn.getresponse()

    # -----------------------------------------------------------------------------------------
    # The API
    # -----------------------------------------------------------------------------------------

    def status(self) -> Status:
        """Daemon, store and Docker health, with record counts per phase."""
        return cast(Status, self.request("GET", "/v1/status"))

    def apply(
        self,
        manifests: Manifests,
        *,
        filename: str = "reaper-client.yaml",
        create: bool = False,
    ) -> ApplyResponse:
        """Applies manifests, all or nothing: YAML text (one or more documents), a manifest as a
        mapping (a record from :meth:`get_session` can be re-applied as is), or a list of
        either. ``filename`` is the name the daemon's error messages show. With ``create``,
        every record must be new (kubectl create): one that exists is a :class:`Conflict`.
        Raises :class:`InvalidManifest` (with every error in ``details``) or :class:`Conflict`;
        nothing is applied then."""
        content = _manifest_text(manifests)
        body: Dict[str, Any] = {"files": [{"name": filename, "content": content}]}
        if create:
            body["create"] = True
        return cast(ApplyResponse, self.request("POST", "/v1/apply", body))

    def list_sessions(self) -> List[SessionRecord]:
        return cast(List[SessionRecord], self.request("GET", "/v1/sessions"))

    def list_agents(self) -> List[AgentRecord]:
        return cast(List[AgentRecord], self.request("GET", "/v1/agents"))

    def watch_sessions(self, *, timeout_seconds: Optional[int] = None) -> Iterator[WatchEvent]:
        """Follows ``GET /v1/watch/sessions``: ``ADDED`` for every session now, one
        ``BOOKMARK``, then ``ADDED``, ``MODIFIED`` or ``DELETED`` (with the last state) for each
        change. A reader that falls behind misses intermediate states, never the latest one.
        It ends after ``timeout_seconds`` (1 to 86400) when given, else when the daemon stops;
        an ``ERROR`` line from the daemon raises :class:`Unavailable`."""
        return self._watch("sessions", timeout_seconds)

    def watch_agents(self, *, timeout_seconds: Optional[int] = None) -> Iterator[WatchEvent]:
        """As :meth:`watch_sessions`, for agents."""
        return self._watch("agents", timeout_seconds)

    def _watch(self, plural: str, timeout_seconds: Optional[int]) -> Iterator[WatchEvent]:
        path = f"/v1/watch/{plural}"
        # The daemon ends the stream then; a little more lets its end arrive.
        bound: Optional[float] = None
        if timeout_seconds is not None:
            path += f"?timeoutSeconds={int(timeout_seconds)}"
            bound = int(timeout_seconds) + self.timeout
        for event in self._lines(path, bound):
            if event.get("type") == "ERROR":
                raise Unavailable(event.get("error") or "the watch ended with an error")
            yield cast(WatchEvent, event)

    def wait_session(
        self, name: str, phases: Iterable[str] = ("Cleaned",), *, timeout: float = 300.0
    ) -> SessionRecord:
        """Returns the session once its phase is one of ``phases`` (``Cleaned`` by default: all
        its objects are gone), following the watch rather than polling. Raises
        :class:`NotFound` when there is no such session (or it is deleted meanwhile) and
        :class:`TimeoutError` after ``timeout`` seconds."""
        wanted = set(phases)
        last: Optional[SessionRecord] = None
        for event in self.watch_sessions(timeout_seconds=max(1, math.ceil(timeout))):
            record = event.get("object")
            if event["type"] == "BOOKMARK":
                if last is None:
                    raise NotFound(f"session {name} not found", status=404)
                continue
            if record is None or record["metadata"]["name"] != name:
                continue
            if event["type"] == "DELETED":
                raise NotFound(f"session {name} was deleted", status=404)
            last = cast(SessionRecord, record)
            if last["status"]["phase"] in wanted:
                return last
        phase = last["status"]["phase"] if last else "unknown"
        raise TimeoutError(
            f"session {name} is still {phase} after {timeout} s (waiting for "
            f"{' or '.join(sorted(wanted))})"
        )

    def get_session(self, name: str) -> SessionRecord:
        return cast(SessionRecord, self.request("GET", f"/v1/sessions/{_seg(name)}"))

    def get_agent(self, name: str) -> AgentRecord:
        return cast(AgentRecord, self.request("GET", f"/v1/agents/{_seg(name)}"))

    def session_objects(self, name: str) -> List[DockerObject]:
        """The Docker objects the session claims now."""
        return cast(List[DockerObject], self.request("GET", f"/v1/sessions/{_seg(name)}/objects"))

    def agent_objects(self, name: str) -> List[DockerObject]:
        """The Docker objects the agent claims now."""
        return cast(List[DockerObject], self.request("GET", f"/v1/agents/{_seg(name)}/objects"))

    def delete_session(self, name: str) -> SessionRecord:
        """Marks the session as being deleted; it disappears once its objects are gone."""
        return cast(SessionRecord, self.request("DELETE", f"/v1/sessions/{_seg(name)}"))

    def delete_agent(self, name: str) -> AgentRecord:
        """Marks the agent as being deleted; it disappears once its objects are gone."""
        return cast(AgentRecord, self.request("DELETE", f"/v1/agents/{_seg(name)}"))

    def end_session(self, name: str, *, failed: bool = False) -> SessionRecord:
        """The workflow is over: an Active session becomes Ended and is cleaned up now. A
        session that is no longer Active is returned unchanged."""
        return cast(
            SessionRecord,
            self.request("POST", f"/v1/sessions/{_seg(name)}/end", {"failed": bool(failed)}),
        )

    def heartbeat(self, name: str, *, timeout: Optional[float] = None) -> SessionRecord:
        """Renews the session's heartbeat; :class:`Conflict` once it is no longer Active."""
        return cast(
            SessionRecord,
            self.request("POST", f"/v1/sessions/{_seg(name)}/heartbeat", timeout=timeout),
        )

    def report_agent(self, name: str, phase: AgentPhase) -> AgentRecord:
        """Reports the agent's phase: ``Starting``, ``Running``, ``Failed`` or ``Stopped``
        (any case)."""
        wanted = str(phase).capitalize()
        if wanted not in _AGENT_PHASES:
            raise ValueError(f"not an agent phase: {phase!r} (one of {', '.join(_AGENT_PHASES)})")
        return cast(
            AgentRecord,
            self.request("POST", f"/v1/agents/{_seg(name)}/report", {"phase": wanted}),
        )

    def orphans(self) -> OrphansResponse:
        """What a normal pass would remove now and why, and orphans still in their grace."""
        return cast(OrphansResponse, self.request("GET", "/v1/orphans"))

    def cleanup_preview(
        self, kind: Optional[str] = None, name: Optional[str] = None
    ) -> CleanupResponse:
        """What :meth:`cleanup` would remove (``planned``), removing nothing."""
        return self.cleanup(kind, name, dry_run=True)

    def cleanup(
        self,
        kind: Optional[str] = None,
        name: Optional[str] = None,
        *,
        dry_run: bool = False,
        timeout: Optional[float] = None,
    ) -> CleanupResponse:
        """Immediate cleanup of one owner (``kind`` ``"session"`` or ``"agent"`` and its
        ``name``) or, with neither, of everything removable, orphans without their grace period.
        A session cleaned up this way is ended (reason ``manual``). The reply waits for the
        removals, so by default it may take 600 s, as the CLI's (or the client's timeout if
        longer); ``timeout`` sets another bound."""
        if (kind is None) != (name is None):
            raise ValueError("give both kind and name, or neither")
        owner = None
        if kind is not None:
            if kind not in ("session", "agent"):
                raise ValueError(f"kind must be 'session' or 'agent', not {kind!r}")
            owner = {"kind": kind, "name": name}
        return cast(
            CleanupResponse,
            self.request(
                "POST",
                "/v1/cleanup",
                {"owner": owner, "dryRun": bool(dry_run)},
                timeout=max(self.timeout, 600.0) if timeout is None else timeout,
            ),
        )


def _seg(name: str) -> str:
    """A record name as one path segment (the daemon refuses bad names with a 400)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"not a record name: {name!r}")
    return urllib.parse.quote(name, safe="")


def _decode(status: int, raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        value = json.loads(text) if text.strip() else None
    except ValueError:
        if 200 <= status < 300:
            raise ProtocolError(
                f"the daemon's reply is not JSON (HTTP {status}): {text[:200]!r}", status=status
            ) from None
        value = None
    if 200 <= status < 300:
        return value
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        details = [str(d) for d in value.get("details") or []]
        raise error_for_status(status, value["error"], details)
    raise error_for_status(status, text.strip()[:500] or f"HTTP {status} with an empty body")


def _manifest_text(manifests: Manifests) -> str:
    if isinstance(manifests, str):
        return manifests
    if isinstance(manifests, Mapping):
        return _document(manifests)
    docs = [m if isinstance(m, str) else _document(m) for m in manifests]
    if not docs:
        raise ValueError("no manifests to apply")
    return "---\n".join(d if d.endswith("\n") else d + "\n" for d in docs)


def _document(manifest: Mapping[str, Any]) -> str:
    # JSON is YAML: the daemon reads it as one flow-style document.
    return json.dumps(manifest, indent=2) + "\n"
