//! `reaper describe` as a person reads it, kubectl style: the record's fields with times
//! relative to now, its effective match (defaults filled in), its conditions, the Docker
//! objects it owns now, and its recent events. JSON and YAML print what was received instead.

use crate::api::wire::RecordView;
use crate::core::inventory::{short_id, DockerObject};
use crate::core::model::{Condition, Event, HostRow, ObjectCounts, Timestamp};

use super::output::{labels, table};
use super::relative_time::{age, relative};

/// Everything `describe` shows, as received from the API.
pub struct Shown<'a> {
    pub record: &'a RecordView,
    pub matches: &'a [String],
    pub objects: &'a [DockerObject],
    pub events: &'a [Event],
}

/// The description, with times relative to `now`.
pub fn text(d: &Shown<'_>, now: Timestamp) -> String {
    let when = |t: Timestamp| format!("{t} ({})", relative(t, now));
    let mut fields: Vec<(&str, String)> = Vec::new();
    let mut hosts = None;
    let (conditions, removed) = match d.record {
        RecordView::Session { session: s, .. } => {
            let st = &s.status;
            fields.push(("Name", s.metadata.name.to_string()));
            fields.push(("Kind", "Session".into()));
            fields.push(("Labels", labels(&s.metadata.labels)));
            fields.push(("Phase", format!("{:?}", st.phase)));
            fields.push(("Created", when(st.created_at)));
            let spec = &s.spec;
            // Deadlines mean something only while the session is live.
            let active = st.phase == crate::core::model::SessionPhase::Active;
            if let Some(ttl) = spec.ttl {
                let mut shown = ttl.to_string();
                if active {
                    let at = relative(st.created_at.plus(ttl), now);
                    shown.push_str(&format!(" (expires {at})"));
                }
                fields.push(("TTL", shown));
            }
            if let Some(hb) = spec.heartbeat_timeout {
                let last = st.last_heartbeat.unwrap_or(st.created_at);
                let mut shown = format!("timeout {hb}, last {}", relative(last, now));
                if active {
                    shown.push_str(&format!(" (lapses {})", relative(last.plus(hb), now)));
                }
                fields.push(("Heartbeat", shown));
            }
            if let Some(at) = st.ended_at {
                let why = st.end_reason.map(|r| format!(", {r}")).unwrap_or_default();
                fields.push(("Ended", format!("{}{why}", when(at))));
            }
            if let Some(at) = st.cleanup_after {
                fields.push(("Cleanup after", when(at)));
            }
            if let Some(at) = st.cleaned_at {
                fields.push(("Cleaned", when(at)));
            }
            if let Some(at) = st.deleting_since {
                fields.push(("Deleting since", when(at)));
            }
            let c = &spec.cleanup;
            let kinds: Vec<&str> = [
                (c.containers, "containers"),
                (c.networks, "networks"),
                (c.volumes, "volumes"),
                (c.images, "images"),
            ]
            .into_iter()
            .filter_map(|(on, k)| on.then_some(k))
            .collect();
            let mut cleanup = format!(
                "{}; stopTimeout {}",
                or_none(&kinds.join(", ")),
                c.stop_timeout
            );
            if let Some(delay) = c.delay {
                cleanup.push_str(&format!("; delay {delay}"));
            }
            if let Some(delay) = c.delay_on_failure {
                cleanup.push_str(&format!("; delayOnFailure {delay}"));
            }
            fields.push(("Cleanup", cleanup));
            if !spec.paths.is_empty() {
                let paths: Vec<String> = spec.paths.iter().map(|p| p.to_string()).collect();
                fields.push(("Paths", paths.join(", ")));
            }
            fields.push(("Source", st.source.clone().unwrap_or_else(|| "-".into())));
            hosts = Some(&st.hosts);
            (&st.conditions, &st.removed)
        }
        RecordView::Agent { agent: a, .. } => {
            let st = &a.status;
            fields.push(("Name", a.metadata.name.to_string()));
            fields.push(("Kind", "Agent".into()));
            fields.push(("Labels", labels(&a.metadata.labels)));
            fields.push((
                "Phase",
                format!("{:?} since {}", st.phase, relative(st.phase_since, now)),
            ));
            fields.push(("Created", when(st.created_at)));
            if let Some(dir) = &a.spec.build_dir {
                fields.push(("Build dir", dir.to_string()));
            }
            if let Some(at) = st.cleanup_after {
                fields.push(("Cleanup after", when(at)));
            }
            if let Some(at) = st.deleting_since {
                fields.push(("Deleting since", when(at)));
            }
            fields.push(("Source", st.source.clone().unwrap_or_else(|| "-".into())));
            (&st.conditions, &st.removed)
        }
    };
    fields.push(("Removed", counts(removed)));
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (key, value) in &fields {
        out.push_str(&format!("{:<width$}{value}\n", format!("{key}:")));
    }
    out.push_str("Match:\n");
    for rule in d.matches {
        out.push_str(&format!("  {rule}\n"));
    }
    out.push_str("Conditions:\n");
    out.push_str(&indented(&conditions_table(conditions, now)));
    if let Some(rows) = hosts {
        out.push_str("Hosts:\n");
        out.push_str(&indented(&hosts_table(rows, now)));
    }
    out.push_str("Objects:\n");
    let objects: Vec<Vec<String>> = d
        .objects
        .iter()
        .map(|o| {
            vec![
                o.kind.to_string(),
                o.name.clone(),
                short_id(&o.id).to_string(),
            ]
        })
        .collect();
    out.push_str(&indented(&or_none_table(&["KIND", "NAME", "ID"], &objects)));
    out.push_str("Events:\n");
    out.push_str(&indented(&events_table(d.events, now)));
    out
}

fn conditions_table(conditions: &[Condition], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| vec![c.type_.clone(), relative(c.since, now), c.message.clone()])
        .collect();
    or_none_table(&["TYPE", "SINCE", "MESSAGE"], &rows)
}

/// Each host's share of a session's cleanup, in host order.
fn hosts_table(rows: &[HostRow], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.host_name.clone(),
                r.state.as_str().into(),
                nonzero_counts(&r.removed),
                r.failures.to_string(),
                r.reported_at
                    .map_or_else(|| "-".into(), |t| relative(t, now)),
            ]
        })
        .collect();
    or_none_table(&["HOST", "STATE", "REMOVED", "FAILURES", "REPORTED"], &rows)
}

/// Newest last, as kubectl lists them; a repeat reads "12s (x3 over 5m)".
fn events_table(events: &[Event], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let mut when = age(e.last_seen, now);
            if e.count > 1 {
                when.push_str(&format!(" (x{} over {})", e.count, age(e.first_seen, now)));
            }
            vec![
                e.type_.as_str().into(),
                e.reason.as_str().into(),
                when,
                e.message.clone(),
            ]
        })
        .collect();
    or_none_table(&["TYPE", "REASON", "AGE", "MESSAGE"], &rows)
}

fn or_none_table(header: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        "<none>\n".into()
    } else {
        table(header, rows)
    }
}

fn indented(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

/// `containers 2, volumes 1`: only what there is, in a table cell; `0` for nothing.
fn nonzero_counts(c: &ObjectCounts) -> String {
    let shown: Vec<String> = [
        ("containers", c.containers),
        ("networks", c.networks),
        ("volumes", c.volumes),
        ("images", c.images),
        ("paths", c.paths),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k} {n}"))
    .collect();
    if shown.is_empty() {
        "0".into()
    } else {
        shown.join(", ")
    }
}

fn counts(c: &ObjectCounts) -> String {
    format!(
        "containers {}, networks {}, volumes {}, images {}, paths {}",
        c.containers, c.networks, c.volumes, c.images, c.paths
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::examples;

    fn first(list: &str) -> RecordView {
        let all: Vec<RecordView> = serde_json::from_str(list).unwrap();
        all.into_iter().next().unwrap()
    }

    #[test]
    fn a_session_reads_like_kubectl_describe() {
        let record = first(&examples::sessions());
        let events: Vec<Event> = serde_json::from_str(
            r#"[{"type": "Normal", "reason": "ended", "message": "session/s1 ended (succeeded)",
                 "count": 1, "firstSeen": "2024-05-01T10:00:00Z", "lastSeen": "2024-05-01T10:00:00Z"},
                {"type": "Warning", "reason": "removalFailed", "message": "volume v1: in use (3 attempts)",
                 "count": 3, "firstSeen": "2024-05-01T10:01:00Z", "lastSeen": "2024-05-01T10:03:00Z"}]"#,
        )
        .unwrap();
        let objects: Vec<DockerObject> = serde_json::from_str(examples::objects()).unwrap();
        let matches = vec!["label reaper.session=s1".to_string()];
        let now: Timestamp = serde_json::from_str(r#""2024-05-01T10:04:00Z""#).unwrap();
        let shown = Shown {
            record: &record,
            matches: &matches,
            objects: &objects,
            events: &events,
        };
        let out = text(&shown, now);
        assert!(out.starts_with("Name:"), "{out}");
        assert!(out.contains("Match:\n  label reaper.session=s1\n"), "{out}");
        assert!(out.contains("Conditions:\n"), "{out}");
        assert!(
            out.contains(
                "Objects:\n  KIND        NAME    ID\n  container   c1      0123456789ab\n"
            ),
            "{out}"
        );
        assert!(
            out.ends_with(
                "Events:\n  TYPE      REASON          AGE                MESSAGE\n  \
                 Normal    ended           4m                 session/s1 ended (succeeded)\n  \
                 Warning   removalFailed   60s (x3 over 3m)   volume v1: in use (3 attempts)\n"
            ),
            "{out}"
        );
        assert!(out.contains("\nPhase:          Ended\n"), "{out}");
        assert!(out.contains("\nTTL:            2h\n"), "{out}");
        assert!(out.contains("  RemovalFailing   "), "{out}");
        assert!(
            out.contains(
                "Hosts:\n  HOST     STATE     REMOVED                                       FAILURES   REPORTED\n  \
                 host-a   done      containers 2, networks 1, images 3, paths 1   5          "
            ),
            "{out}"
        );
        assert!(out.contains("\n  host-b   pending   0 "), "{out}");
    }

    #[test]
    fn nothing_reads_none() {
        let record = first(&examples::agents());
        let shown = Shown {
            record: &record,
            matches: &[],
            objects: &[],
            events: &[],
        };
        let out = text(&shown, Timestamp(0));
        assert!(
            out.contains("Objects:\n  <none>\nEvents:\n  <none>\n"),
            "{out}"
        );
        assert!(!out.contains("Hosts:"), "agents have no host rows: {out}");
    }
}
