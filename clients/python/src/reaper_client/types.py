"""The API's records and replies as ``TypedDict``s, following ``docs/openapi.yaml``.

Replies are the decoded JSON (plain dicts): these types describe them for type checkers and
readers. A ``TypedDict`` named after a schema has that schema's properties; ``total=False``
bases hold the optional ones. ``SCHEMAS`` maps each schema (or inline object, by its path in the
document) to its type; the repository's tests check both against ``docs/openapi.yaml``.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Optional, TypedDict, Union

__all__ = [
    "Labels",
    "AgentCleanup",
    "BlastRadiusHold",
    "ErrorBody",
    "ObjectMeta",
    "ObjectCounts",
    "Condition",
    "Event",
    "SessionMatch",
    "SessionCleanup",
    "SessionSpec",
    "HostState",
    "HostRow",
    "SessionStatus",
    "SessionRecord",
    "AgentMatch",
    "AgentSpec",
    "AgentStatus",
    "AgentRecord",
    "OwnerRef",
    "DockerObject",
    "Removal",
    "Waiting",
    "EngineInfo",
    "SerialExits",
    "Health",
    "ManifestError",
    "Status",
    "ApplyResult",
    "ApplyResponse",
    "OrphansResponse",
    "CleanupFailure",
    "CleanupResponse",
    "WatchEvent",
    "SessionPhase",
    "EndReason",
    "AgentPhase",
    "OwnerKind",
    "ResourceKind",
    "CleanupReason",
    "SCHEMAS",
]

Labels = Dict[str, str]
SessionPhase = Literal["Active", "Ending", "Ended", "Expired", "Cleaned"]
EndReason = Literal["succeeded", "failed", "ttlExpired", "heartbeatLost", "manual"]
AgentPhase = Literal["Starting", "Running", "Failed", "Stopped"]
OwnerKind = Literal["session", "agent"]
ResourceKind = Literal["container", "network", "volume", "image", "path"]
CleanupReason = Literal[
    "sessionEnded",
    "sessionExpired",
    "heartbeatLost",
    "sessionDeleted",
    "agentFailed",
    "agentStopped",
    "agentDeleted",
    "orphan",
    "manual",
    "diskPressure",
]


class _ErrorBodyOptional(TypedDict, total=False):
    details: List[str]


class ErrorBody(_ErrorBodyOptional):
    """Every error reply."""

    error: str


class _ObjectMetaOptional(TypedDict, total=False):
    labels: Labels


class ObjectMeta(_ObjectMetaOptional):
    name: str


class ObjectCounts(TypedDict):
    containers: int
    networks: int
    volumes: int
    images: int
    paths: int


class Condition(TypedDict):
    type: str
    message: str
    since: str


class Event(TypedDict):
    """One of a record's recent events (``GET /v1/sessions/NAME/events``)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    count: int
    firstSeen: str
    lastSeen: str


class SessionMatch(TypedDict):
    labels: Labels


class _SessionCleanupOptional(TypedDict, total=False):
    delay: str
    delayOnFailure: str


class SessionCleanup(_SessionCleanupOptional):
    containers: bool
    networks: bool
    volumes: bool
    images: bool
    stopTimeout: str


class _SessionSpecOptional(TypedDict, total=False):
    ttl: str
    heartbeatTimeout: str
    paths: List[str]


class SessionSpec(_SessionSpecOptional):
    match: SessionMatch
    cleanup: SessionCleanup


HostState = Literal["pending", "done", "gone"]


class _HostRowOptional(TypedDict, total=False):
    lastError: str
    reportedAt: str


class HostRow(_HostRowOptional):
    """One host's share of a session's cleanup (``status.hosts``, see docs/fleet.md)."""

    hostName: str
    state: HostState
    removed: ObjectCounts
    failures: int


class _SessionStatusOptional(TypedDict, total=False):
    lastHeartbeat: str
    endedAt: str
    endReason: EndReason
    cleanupAfter: str
    cleanedAt: str
    deletingSince: str
    hosts: List[HostRow]
    conditions: List[Condition]
    events: List[Event]
    source: str


class SessionStatus(_SessionStatusOptional):
    phase: SessionPhase
    createdAt: str
    removed: ObjectCounts


class SessionRecord(TypedDict):
    """A session as stored; it can be re-applied as is (its status is ignored)."""

    apiVersion: Literal["reaper/v1"]
    kind: Literal["Session"]
    metadata: ObjectMeta
    spec: SessionSpec
    status: SessionStatus


class AgentMatch(TypedDict, total=False):
    namePrefix: str


class AgentCleanup(TypedDict, total=False):
    delay: str
    delayOnFailure: str


class _AgentSpecOptional(TypedDict, total=False):
    buildDir: str
    cleanup: AgentCleanup


class AgentSpec(_AgentSpecOptional):
    match: AgentMatch


class _AgentStatusOptional(TypedDict, total=False):
    cleanupAfter: str
    deletingSince: str
    conditions: List[Condition]
    events: List[Event]
    source: str


class AgentStatus(_AgentStatusOptional):
    phase: AgentPhase
    createdAt: str
    phaseSince: str
    removed: ObjectCounts


class AgentRecord(TypedDict):
    """An agent as stored; it can be re-applied as is (its status is ignored)."""

    apiVersion: Literal["reaper/v1"]
    kind: Literal["Agent"]
    metadata: ObjectMeta
    spec: AgentSpec
    status: AgentStatus


class OwnerRef(TypedDict):
    kind: OwnerKind
    name: str


class _DockerObjectOptional(TypedDict, total=False):
    labels: Labels
    created: str
    running: bool
    other_refs: List[str]


class DockerObject(_DockerObjectOptional):
    """One Docker object as listed (images once per reference); a build directory as a removal
    target is ``{"kind": "path", "id": PATH, "name": PATH}``."""

    kind: ResourceKind
    id: str
    name: str


class _RemovalOptional(TypedDict, total=False):
    because: List[str]
    stopOnly: bool


class Removal(_RemovalOptional):
    target: DockerObject
    owner: Optional[OwnerRef]
    reason: CleanupReason
    stopTimeout: str


class Waiting(TypedDict):
    object: DockerObject
    owner: Optional[OwnerRef]
    removableAt: Optional[str]


class EngineInfo(TypedDict):
    flavour: Literal["docker", "podman"]
    version: str
    apiVersion: str


SerialExits = TypedDict("SerialExits", {"on": bool, "reason": str})


class BlastRadiusHold(TypedDict):
    orphans: int
    limit: int
    examples: List[str]
    since: str


class Usage(TypedDict):
    used: int
    total: int


DiskUsage = TypedDict("DiskUsage", {"bytes": Usage, "inodes": Usage})


class Eviction(TypedDict):
    image: DockerObject
    owner: Optional[OwnerRef]
    size: int
    frees: int
    lastUsed: str


class DiskStatus(TypedDict):
    available: bool
    error: Optional[str]
    dataRoot: Optional[str]
    measuredAt: str
    usage: Optional[DiskUsage]
    highWatermark: str
    lowWatermark: str
    pressure: bool
    exhausted: bool
    evictions: List[Eviction]


class Health(TypedDict):
    dockerUp: bool
    dockerVersion: Optional[str]
    dockerError: Optional[str]
    engine: Optional[EngineInfo]
    serialExits: Optional[SerialExits]
    serialExitsExplained: Optional[str]
    dockerWedged: bool
    storeError: Optional[str]
    safeMode: bool
    dryRun: bool
    lastPass: Optional[str]
    lastSuccess: Optional[str]
    lastError: Optional[str]
    owned: Dict[str, int]
    orphans: Dict[str, int]
    blastRadiusHeld: Optional[BlastRadiusHold]
    disk: Optional[DiskStatus]


class ManifestError(TypedDict):
    file: str
    error: str


class Status(TypedDict):
    version: str
    health: Health
    sessions: Optional[Dict[str, int]]
    agents: Optional[Dict[str, int]]
    manifestErrors: List[ManifestError]


class ApplyResult(TypedDict):
    kind: OwnerKind
    name: str
    action: Literal["created", "configured", "unchanged"]


class ApplyResponse(TypedDict):
    results: List[ApplyResult]
    warnings: List[str]


class OrphansResponse(TypedDict):
    removals: List[Removal]
    waiting: List[Waiting]
    held: List[Removal]


class CleanupFailure(TypedDict):
    target: DockerObject
    error: str


class CleanupResponse(TypedDict):
    planned: List[Removal]
    removed: List[DockerObject]
    failed: List[CleanupFailure]


class _WatchEventOptional(TypedDict, total=False):
    object: Union[SessionRecord, AgentRecord]
    error: str


class WatchEvent(_WatchEventOptional):
    """One line of a watch: the record (its last state for ``DELETED``); neither record nor
    error for ``BOOKMARK``; ``error`` for ``ERROR``, the last line."""

    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]


#: Each type and where its object is in docs/openapi.yaml (a schema under
#: components/schemas, or a path to an inline object below one).
SCHEMAS: Dict[str, type] = {
    "Error": ErrorBody,
    "ObjectMeta": ObjectMeta,
    "ObjectCounts": ObjectCounts,
    "Condition": Condition,
    "Event": Event,
    "SessionRecord": SessionRecord,
    "SessionSpec": SessionSpec,
    "SessionSpec.match": SessionMatch,
    "SessionSpec.cleanup": SessionCleanup,
    "SessionStatus": SessionStatus,
    "HostRow": HostRow,
    "AgentRecord": AgentRecord,
    "AgentSpec": AgentSpec,
    "AgentSpec.match": AgentMatch,
    "AgentSpec.cleanup": AgentCleanup,
    "AgentStatus": AgentStatus,
    "OwnerRef": OwnerRef,
    "DockerObject": DockerObject,
    "Removal": Removal,
    "Waiting": Waiting,
    "Health": Health,
    "Health.engine": EngineInfo,
    "Health.serialExits": SerialExits,
    "Health.blastRadiusHeld": BlastRadiusHold,
    "Health.disk": DiskStatus,
    "Health.disk.usage": DiskUsage,
    "Health.disk.evictions[]": Eviction,
    "Usage": Usage,
    "Status": Status,
    "Status.manifestErrors[]": ManifestError,
    "ApplyResponse": ApplyResponse,
    "ApplyResponse.results[]": ApplyResult,
    "CleanupResponse": CleanupResponse,
    "CleanupResponse.failed[]": CleanupFailure,
    "WatchEvent": WatchEvent,
}
