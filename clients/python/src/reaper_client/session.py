"""``session()``: hold a reaper session for the length of a ``with`` block."""

from __future__ import annotations

import logging
import secrets
import threading
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Type

from .client import Client
from .durations import Duration, duration_text, seconds
from .errors import Conflict, NotFound, ReaperError
from .types import Labels, SessionRecord

__all__ = ["Session", "session", "SESSION_LABEL", "INSTANCE_LABEL"]

#: The label that makes a Docker object belong to a session.
SESSION_LABEL = "reaper.session"
#: The label that scopes an object to one reaper instance (the daemon's ``instance``).
INSTANCE_LABEL = "reaper.instance"

log = logging.getLogger("reaper_client")


def _generated_name(prefix: str) -> str:
    # 1-63 characters of a-z 0-9 - . _, starting and ending with a letter or digit.
    return f"{prefix}-{secrets.token_hex(6)}"


class Session:
    """A reaper session held while the ``with`` block runs (see :func:`session`).

    ``name`` is the session's name and ``labels`` the labels to put on every Docker object the
    workflow creates (``{"reaper.session": name}``, plus ``reaper.instance`` and the match labels
    when given). ``record`` is the session record as last seen; ``heartbeat_error`` the last
    error of the heartbeat thread, if any.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        ttl: Optional[Duration] = "2h",
        heartbeat: Optional[Duration] = "30s",
        labels: Optional[Mapping[str, str]] = None,
        match_labels: Optional[Mapping[str, str]] = None,
        cleanup: Optional[Mapping[str, Any]] = None,
        paths: Optional[List[str]] = None,
        instance: Optional[str] = None,
        client: Optional[Client] = None,
        name_prefix: str = "py",
    ) -> None:
        self.name: str = name if name is not None else _generated_name(name_prefix)
        self.client = client if client is not None else Client()
        self._ttl = duration_text(ttl) if ttl is not None else None
        self._heartbeat = duration_text(heartbeat) if heartbeat is not None else None
        if self._heartbeat is not None and seconds(self._heartbeat) <= 0:
            raise ValueError("heartbeat must be longer than 0s (or None for no heartbeat)")
        self._meta_labels = dict(labels or {})
        self._match_labels = dict(match_labels or {})
        self._cleanup = dict(cleanup or {})
        self._paths = list(paths or [])
        self.labels: Labels = {SESSION_LABEL: self.name}
        if instance:
            self.labels[INSTANCE_LABEL] = instance
        self.labels.update(self._match_labels)
        self.record: Optional[SessionRecord] = None
        self.heartbeat_error: Optional[ReaperError] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started = False

    def __repr__(self) -> str:
        return f"Session({self.name!r})"

    def manifest(self) -> Dict[str, Any]:
        """The Session manifest this registers."""
        metadata: Dict[str, Any] = {"name": self.name}
        if self._meta_labels:
            metadata["labels"] = self._meta_labels
        spec: Dict[str, Any] = {}
        if self._ttl is not None:
            spec["ttl"] = self._ttl
        if self._heartbeat is not None:
            spec["heartbeatTimeout"] = self._heartbeat
        if self._match_labels:
            spec["match"] = {"labels": self._match_labels}
        if self._cleanup:
            spec["cleanup"] = self._cleanup
        if self._paths:
            spec["paths"] = self._paths
        return {"apiVersion": "reaper/v1", "kind": "Session", "metadata": metadata, "spec": spec}

    # -----------------------------------------------------------------------------------------

    def start(self) -> "Session":
        """Registers the session (Active) and starts the heartbeat thread. A name that is already
        taken, by a live session or a finished one, is a :class:`Conflict`: a finished session's
        name would get the new objects removed at once."""
        if self._started:
            raise RuntimeError(f"session {self.name} was already started")
        self._refuse_taken_name()
        try:
            # Create only: whoever registered the name between our look and this write keeps
            # their session as they declared it.
            reply = self.client.apply(self.manifest(), filename=f"session {self.name}", create=True)
        except Conflict:
            self._refuse_taken_name()
            raise
        for warning in reply.get("warnings", []):
            log.warning("reaper: %s", warning)
        self._started = True
        try:
            self.record = self.client.get_session(self.name)
        except ReaperError as e:
            # Registered all the same: the heartbeat thread reads the record again.
            log.warning("reaper: cannot read session %s after registering it: %s", self.name, e)
        if self._heartbeat is not None:
            self._thread = threading.Thread(
                target=self._beat,
                args=(seconds(self._heartbeat),),
                name=f"reaper-heartbeat-{self.name}",
                daemon=True,
            )
            self._thread.start()
        return self

    def _refuse_taken_name(self) -> None:
        try:
            old = self.client.get_session(self.name)
        except NotFound:
            return
        status = old.get("status", {})
        phase = status.get("phase", "?")
        if phase == "Active":
            raise Conflict(
                f"session {self.name} already exists and is Active: another workflow holds it; "
                "choose another name"
            )
        ended = status.get("endedAt") or status.get("cleanedAt")
        when = f" (ended {ended})" if ended else ""
        raise Conflict(
            f"session {self.name} already exists in phase {phase}{when}: its name would get new "
            f"objects removed at once; delete the old record (`reaper delete session "
            f"{self.name}`) or choose another name"
        )

    def _beat(self, period: float) -> None:
        interval = period / 3
        while not self._stop.wait(interval):
            try:
                self.record = self.client.heartbeat(self.name, timeout=max(period, 1.0))
                self.heartbeat_error = None
            except (Conflict, NotFound) as e:
                # Ended, expired or deleted: nothing left to keep alive.
                self.heartbeat_error = e
                log.warning("reaper: session %s is no longer kept alive: %s", self.name, e)
                return
            except ReaperError as e:
                self.heartbeat_error = e
                log.warning("reaper: heartbeat of session %s failed (will retry): %s", self.name, e)

    def end(self, *, failed: bool = False) -> SessionRecord:
        """Stops the heartbeat and ends the session (cleanup starts now). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.client.timeout)
        self.record = self.client.end_session(self.name, failed=failed)
        return self.record

    def __enter__(self) -> "Session":
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        failed = exc_type is not None and not (
            isinstance(exc, SystemExit) and exc.code in (0, None)
        )
        try:
            self.end(failed=failed)
        except ReaperError as e:
            if exc_type is None:
                raise
            # Never hide the workflow's own exception; the heartbeat lapses or the ttl passes.
            log.error("reaper: could not end session %s as failed: %s", self.name, e)


def session(
    name: Optional[str] = None,
    ttl: Optional[Duration] = "2h",
    heartbeat: Optional[Duration] = "30s",
    labels: Optional[Mapping[str, str]] = None,
    *,
    match_labels: Optional[Mapping[str, str]] = None,
    cleanup: Optional[Mapping[str, Any]] = None,
    paths: Optional[List[str]] = None,
    instance: Optional[str] = None,
    client: Optional[Client] = None,
    name_prefix: str = "py",
) -> Session:
    """A session for a ``with`` block::

        with reaper_client.session("tdd-run-42", ttl="2h", heartbeat="30s") as s:
            docker.from_env().containers.run(image, labels=s.labels, detach=True)

    Entering registers the session (Active) and renews its heartbeat from a daemon thread every
    third of ``heartbeat``; leaving ends it, or ends it as failed when an exception escapes the
    block (the exception still propagates; ``sys.exit(0)`` counts as success, any other exit
    status, ``KeyboardInterrupt`` included, as failure). If the process dies (``kill -9``), the heartbeat
    lapses and the daemon cleans up; ``ttl`` bounds the session in any case. ``None`` leaves
    either out.

    - ``name``: 1-63 characters of ``a-z 0-9 - . _``; without it a unique name
      ``<name_prefix>-<12 hex digits>`` is made. A name already taken is a :class:`Conflict`.
    - ``labels``: the record's own labels (``metadata.labels``, shown by ``reaper get -o wide``).
    - ``match_labels``: extra labels that also claim objects for the session (``spec.match``);
      they are added to ``s.labels``.
    - ``cleanup``: ``spec.cleanup`` (``containers``, ``networks``, ``volumes``, ``images``,
      ``stopTimeout``); ``paths``: directories below the daemon's paths root to delete.
    - ``instance``: the daemon's ``instance``, when it has one; adds ``reaper.instance`` to
      ``s.labels``.
    - ``client``: a :class:`Client`; by default ``$REAPER_SOCKET`` or the default socket.
    """
    return Session(
        name,
        ttl=ttl,
        heartbeat=heartbeat,
        labels=labels,
        match_labels=match_labels,
        cleanup=cleanup,
        paths=paths,
        instance=instance,
        client=client,
        name_prefix=name_prefix,
    )
