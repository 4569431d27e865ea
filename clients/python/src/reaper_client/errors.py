"""Typed errors. Each carries the daemon's message (the API's error body) when there is one."""

from __future__ import annotations

from typing import Dict, List, Optional, Type

__all__ = [
    "ReaperError",
    "Unreachable",
    "ProtocolError",
    "BadRequest",
    "Unauthorized",
    "NotFound",
    "RequestTimeout",
    "Conflict",
    "TooLarge",
    "InvalidManifest",
    "Unavailable",
    "StorageFull",
    "error_for_status",
]


class ReaperError(Exception):
    """Base of every error this package raises.

    ``message`` is the daemon's ``error`` text (or this client's own explanation), ``details``
    the daemon's ``details`` list (every manifest error with its location), ``status`` the HTTP
    status, or ``None`` when no answer came.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        details: Optional[List[str]] = None,
    ) -> None:
        self.message = message
        self.status = status
        self.details: List[str] = list(details or [])
        super().__init__(message)

    def __str__(self) -> str:
        if not self.details:
            return self.message
        return self.message + "".join("\n  " + d for d in self.details)


class Unreachable(ReaperError):
    """No answer from the daemon: no socket, connection refused, permission denied, timeout."""


class ProtocolError(ReaperError):
    """The daemon answered something that is not the API's JSON."""


class BadRequest(ReaperError):
    """400: the request is malformed (a bad name, an invalid body, one record named twice)."""


class Unauthorized(ReaperError):
    """401: the TCP listener wants ``Authorization: Bearer <apiToken>``."""


class NotFound(ReaperError):
    """404: no such record (or path)."""


class RequestTimeout(ReaperError):
    """408: the request body did not arrive in time."""


class Conflict(ReaperError):
    """409: the record is declared by a manifest file, is being deleted, or is no longer Active;
    also raised by :func:`reaper_client.session` when its name is already taken."""


class TooLarge(ReaperError):
    """413: the request body is over the daemon's limit."""


class InvalidManifest(BadRequest):
    """422: invalid manifests; ``details`` has every error with its file, document, line and
    field. Nothing was applied."""


class Unavailable(ReaperError):
    """503: the store is corrupt, or the Docker engine or the paths root cannot be read."""


class StorageFull(ReaperError):
    """507: the store cannot write (disk full or I/O error)."""


_BY_STATUS: Dict[int, Type[ReaperError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    408: RequestTimeout,
    409: Conflict,
    413: TooLarge,
    422: InvalidManifest,
    503: Unavailable,
    507: StorageFull,
}


def error_for_status(status: int, message: str, details: Optional[List[str]] = None) -> ReaperError:
    """The typed error for an HTTP error status (``ReaperError`` for statuses the API does not
    document, such as a 500)."""
    cls = _BY_STATUS.get(status, ReaperError)
    return cls(message, status=status, details=details)
