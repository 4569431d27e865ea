"""reaper's Python client: hold a session while a workflow runs, so that the Docker objects it
labels go when it ends, fails or dies. Standard library only.

    import docker, reaper_client
    with reaper_client.session(ttl="2h", heartbeat="30s") as s:
        docker.from_env().containers.run(image, labels=s.labels, detach=True)

:class:`Client` covers the rest of the daemon's API (``docs/api.md``).
"""

from .client import Client, default_socket_path
from .durations import Duration, duration_text, seconds
from .errors import (
    BadRequest,
    Conflict,
    InvalidManifest,
    NotFound,
    ProtocolError,
    ReaperError,
    RequestTimeout,
    StorageFull,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from .session import INSTANCE_LABEL, SESSION_LABEL, Session, session

__version__ = "0.1.0"

__all__ = [
    "Client",
    "default_socket_path",
    "Duration",
    "duration_text",
    "seconds",
    "Session",
    "session",
    "SESSION_LABEL",
    "INSTANCE_LABEL",
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
]
