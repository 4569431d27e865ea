//! Replies and requests in the shapes docs/api.md and docs/openapi.yaml document, written out
//! as JSON by hand (not produced by the types), with every optional field set somewhere. The
//! wire tests hold the types to them; the output tests render them. Ages are relative to now,
//! so that the AGE column of a table is stable.

use crate::core::model::Timestamp;

fn ago(secs: i64) -> String {
    Timestamp(Timestamp::now().millis() - secs * 1000).to_string()
}

pub(crate) fn sessions() -> String {
    format!(
        r#"[
  {{"apiVersion": "reaper/v1", "kind": "Session",
    "metadata": {{"name": "s1", "labels": {{"team": "tdd", "b": "2"}}}},
    "spec": {{"ttl": "2h", "heartbeatTimeout": "1m", "match": {{"labels": {{"session_id": "42"}}}},
      "cleanup": {{"containers": true, "networks": true, "volumes": true, "images": false, "stopTimeout": "5s",
        "delay": "0s", "delayOnFailure": "30m"}},
      "paths": ["s1", "s1-cache"]}},
    "status": {{"phase": "Ended", "createdAt": "{c1}", "lastHeartbeat": "{c1}", "endedAt": "{c1}",
      "endReason": "ttlExpired", "cleanupAfter": "{c1}", "cleanedAt": "{c1}", "deletingSince": "{c1}",
      "removed": {{"containers": 2, "networks": 1, "volumes": 0, "images": 3, "paths": 1}},
      "hosts": [
        {{"hostName": "host-a", "state": "done", "removed": {{"containers": 2, "networks": 1, "volumes": 0, "images": 3, "paths": 1}},
          "failures": 5, "lastError": "container c1: busy", "reportedAt": "{c1}"}},
        {{"hostName": "host-b", "state": "pending", "removed": {{"containers": 0, "networks": 0, "volumes": 0, "images": 0, "paths": 0}},
          "failures": 0}}],
      "conditions": [{{"type": "RemovalFailing", "message": "container c1: busy (5 attempts)", "since": "2024-05-01T10:00:00.123Z"}}],
      "events": [{{"type": "Warning", "reason": "removalFailed", "message": "container c1: busy (5 attempts)", "count": 2, "firstSeen": "2024-05-01T10:00:00.123Z", "lastSeen": "2024-05-01T10:01:00Z"}}],
      "source": "api"}}}},
  {{"apiVersion": "reaper/v1", "kind": "Session",
    "metadata": {{"name": "s2"}},
    "spec": {{"match": {{"labels": {{}}}},
      "cleanup": {{"containers": true, "networks": true, "volumes": true, "images": true, "stopTimeout": "5s"}}}},
    "status": {{"phase": "Active", "createdAt": "{c2}",
      "removed": {{"containers": 0, "networks": 0, "volumes": 0, "images": 0, "paths": 0}}}}}}
]"#,
        c1 = ago(630),
        c2 = ago(3 * 3600 + 300)
    )
}

pub(crate) fn agents() -> String {
    format!(
        r#"[
  {{"apiVersion": "reaper/v1", "kind": "Agent",
    "metadata": {{"name": "a1", "labels": {{"team": "x"}}}},
    "spec": {{"match": {{"namePrefix": "anvyl-agent-a1"}}, "buildDir": "a1/build",
      "cleanup": {{"delay": "0s", "delayOnFailure": "1h"}}}},
    "status": {{"phase": "Failed", "createdAt": "{c1}", "phaseSince": "{c1}", "cleanupAfter": "{c1}",
      "deletingSince": "{c1}",
      "removed": {{"containers": 1, "networks": 0, "volumes": 0, "images": 1, "paths": 1}},
      "conditions": [{{"type": "RemovalFailing", "message": "image img:1: in use (5 attempts)", "since": "2024-05-01T10:00:00Z"}}],
      "events": [{{"type": "Warning", "reason": "reported", "message": "agent/a1 reported failed", "count": 1, "firstSeen": "2024-05-01T10:00:00Z", "lastSeen": "2024-05-01T10:00:00Z"}}],
      "source": "/etc/reaper/manifests/agents.yaml"}}}},
  {{"apiVersion": "reaper/v1", "kind": "Agent",
    "metadata": {{"name": "a2"}},
    "spec": {{"match": {{}}}},
    "status": {{"phase": "Running", "createdAt": "{c2}", "phaseSince": "{c2}",
      "removed": {{"containers": 0, "networks": 0, "volumes": 0, "images": 0, "paths": 0}}}}}}
]"#,
        c1 = ago(3 * 86_400 + 60),
        c2 = ago(330)
    )
}

pub(crate) fn objects() -> &'static str {
    r#"[
  {"kind": "container", "id": "0123456789abcdef0123", "name": "c1", "labels": {"reaper.session": "s1"},
   "created": "2024-05-01T10:00:00Z", "running": true},
  {"kind": "image", "id": "sha256:fedcba9876543210fedc", "name": "img:1", "other_refs": ["other:2"]},
  {"kind": "network", "id": "abc", "name": "n1", "created": "2024-05-01T10:00:00.5Z"}
]"#
}

pub(crate) fn orphans() -> &'static str {
    r#"{
  "removals": [
    {"target": {"kind": "container", "id": "0123456789abcdef0123", "name": "c1", "labels": {"reaper.session": "s1"}},
     "owner": {"kind": "session", "name": "s1"}, "reason": "sessionEnded", "stopTimeout": "5s"},
    {"target": {"kind": "container", "id": "89abcdef0123", "name": "c2", "labels": {"reaper.session": "s3"},
      "running": true},
     "owner": {"kind": "session", "name": "s3"}, "reason": "sessionEnded", "stopTimeout": "5s",
     "stopOnly": true},
    {"target": {"kind": "path", "id": "s1/build", "name": "s1/build"},
     "owner": null, "reason": "orphan", "stopTimeout": "0s"}
  ],
  "waiting": [
    {"object": {"kind": "volume", "id": "v1", "name": "v1", "created": "2024-05-01T10:00:00Z"},
     "owner": null, "removableAt": "2024-05-02T10:00:00Z"},
    {"object": {"kind": "network", "id": "fedcba9876543210", "name": "n2"},
     "owner": {"kind": "agent", "name": "a1"}, "removableAt": null}
  ],
  "held": [
    {"target": {"kind": "volume", "id": "data-1", "name": "data-1", "labels": {"app": "web"}},
     "owner": {"kind": "session", "name": "s2"}, "reason": "orphan", "stopTimeout": "5s"}
  ]
}"#
}

pub(crate) fn status_up() -> &'static str {
    r#"{
  "version": "0.1.0",
  "health": {"dockerUp": true, "dockerVersion": "Docker 24.0.7 (API 1.43)", "dockerError": null,
    "engine": {"flavour": "docker", "version": "24.0.7", "apiVersion": "1.43"},
    "serialExits": {"on": false, "reason": "fixed_version"},
    "serialExitsExplained": "off: container stops run at full concurrency",
    "dockerWedged": false, "storeError": null, "safeMode": false, "dryRun": true,
    "lastPass": "2024-05-01T10:00:00.123Z", "lastSuccess": "2024-05-01T10:00:00.123Z", "lastError": null,
    "owned": {"container": 2, "network": 1, "volume": 0, "image": 3, "path": 1},
    "orphans": {"container": 0, "volume": 4},
    "blastRadiusHeld": {"orphans": 60, "limit": 50, "since": "2024-05-01T09:59:00Z",
      "examples": ["container web-1 (0123456789ab)", "volume data-1"]},
    "disk": {"available": true, "error": null, "dataRoot": "/var/lib/docker",
      "measuredAt": "2024-05-01T10:00:00.123Z",
      "usage": {"bytes": {"used": 90000000000, "total": 100000000000}, "inodes": {"used": 120000, "total": 6000000}},
      "highWatermark": "85%", "lowWatermark": "80%", "pressure": true, "exhausted": false,
      "evictions": [{"image": {"kind": "image", "id": "sha256:4f2a", "name": "anvyl-agent-a1:latest",
        "created": "2024-04-01T08:00:00Z"}, "owner": {"kind": "agent", "name": "a1"},
        "size": 10000000000, "frees": 10000000000, "lastUsed": "2024-04-02T09:30:00Z"}]}},
  "sessions": {"active": 1, "cleaned": 0, "ending": 0, "ended": 2, "expired": 0},
  "agents": {"failed": 0, "running": 1, "starting": 0, "stopped": 3},
  "manifestErrors": [{"file": "/m/a.yaml", "error": "a.yaml: document 1, line 3: unknown field"}]
}"#
}

pub(crate) fn status_down() -> &'static str {
    r#"{
  "version": "0.1.0",
  "health": {"dockerUp": false, "dockerVersion": null, "dockerError": "connection refused",
    "engine": null, "serialExits": null, "serialExitsExplained": null,
    "dockerWedged": false, "storeError": "corrupt", "safeMode": true, "dryRun": false,
    "lastPass": "2024-05-01T10:00:00Z", "lastSuccess": null, "lastError": "the store cannot be read: corrupt",
    "owned": {}, "orphans": {}, "blastRadiusHeld": null,
    "disk": {"available": false, "error": "cannot see /var/lib/docker: No such file or directory (os error 2)",
      "dataRoot": "/var/lib/docker", "measuredAt": "2024-05-01T10:00:00Z", "usage": null,
      "highWatermark": "85%", "lowWatermark": "80%", "pressure": false, "exhausted": false,
      "evictions": []}},
  "sessions": null,
  "agents": null,
  "manifestErrors": []
}"#
}

pub(crate) fn status_wedged() -> &'static str {
    r#"{
  "version": "0.1.0",
  "health": {"dockerUp": true, "dockerVersion": "Docker 20.10.17 (API 1.41)", "dockerError": null,
    "engine": {"flavour": "docker", "version": "20.10.17", "apiVersion": "1.41"},
    "serialExits": {"on": true, "reason": "affected_version"},
    "serialExitsExplained": "on: at most one container stop at a time",
    "dockerWedged": true, "storeError": null, "safeMode": false, "dryRun": false,
    "lastPass": null, "lastSuccess": null, "lastError": null,
    "owned": {}, "orphans": {}, "blastRadiusHeld": null, "disk": null},
  "sessions": {"active": 0, "cleaned": 0, "ended": 0, "expired": 0},
  "agents": {"failed": 0, "running": 0, "starting": 0, "stopped": 0},
  "manifestErrors": []
}"#
}

pub(crate) fn cleanup() -> &'static str {
    r#"{
  "planned": [
    {"target": {"kind": "container", "id": "0123456789abcdef0123", "name": "c1", "labels": {"reaper.session": "s1"}},
     "owner": {"kind": "session", "name": "s1"}, "reason": "manual", "stopTimeout": "5s",
     "because": ["label reaper.session=s1"]}
  ],
  "removed": [
    {"kind": "container", "id": "0123456789abcdef0123", "name": "c1"},
    {"kind": "path", "id": "s1/build", "name": "s1/build"}
  ],
  "failed": [
    {"target": {"kind": "image", "id": "sha256:fedcba9876543210fedc", "name": "img:1"},
     "error": "conflict: image is in use"}
  ]
}"#
}

pub(crate) fn apply() -> &'static str {
    r#"{
  "results": [
    {"kind": "session", "name": "s1", "action": "created"},
    {"kind": "agent", "name": "a1", "action": "configured"},
    {"kind": "agent", "name": "a2", "action": "unchanged"}
  ],
  "warnings": ["a.yaml: document 1: status is ignored; status belongs to the daemon"]
}"#
}

pub(crate) fn hosts() -> String {
    format!(
        r#"[
  {{"hostName": "gpu-01", "state": "ready", "version": "0.1.0", "startedAt": "{}",
    "renewedAt": "{}", "safeMode": false}},
  {{"hostName": "gpu-07", "state": "gone", "version": "0.1.0", "startedAt": "{}",
    "renewedAt": "{}", "safeMode": true}}
]"#,
        ago(7200),
        ago(2),
        ago(259200),
        ago(600)
    )
}

pub(crate) fn error() -> &'static str {
    r#"{"error": "2 error(s) in the manifests; nothing was applied",
        "details": ["a.yaml: document 1, line 3: unknown field `ttll`", "a.yaml: document 2: name is missing"]}"#
}
