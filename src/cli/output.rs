//! How the CLI prints what the API returns: aligned tables for people, JSON or YAML for scripts.

use clap::ValueEnum;
use serde_json::Value;

use crate::core::inventory::short_id;
use crate::core::model::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

fn structured(v: &Value, o: Output) -> Option<String> {
    match o {
        Output::Json => Some(serde_json::to_string_pretty(v).unwrap_or_default() + "\n"),
        Output::Yaml => Some(serde_yaml::to_string(v).unwrap_or_default()),
        _ => None,
    }
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Renders rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// "3m", "2h" since an RFC 3339 instant.
fn age(ts: &str) -> String {
    let Some(t) = Timestamp::parse_rfc3339(ts) else {
        return "-".into();
    };
    let secs = Timestamp::now().since(t).as_secs();
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn labels(v: &Value) -> String {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn removed(v: &Value) -> String {
    let n = |k: &str| {
        v.pointer(&format!("/status/removed/{k}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    (n("containers") + n("networks") + n("volumes") + n("images") + n("paths")).to_string()
}

pub fn records(v: &Value, agents: bool, o: Output) -> String {
    if let Some(out) = structured(v, o) {
        return out;
    }
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if items.is_empty() {
        return "No records.\n".into();
    }
    let wide = o == Output::Wide;
    if agents {
        let mut header = vec!["NAME", "PHASE", "SINCE", "REMOVED"];
        if wide {
            header.extend(["PREFIX", "BUILD-DIR", "SOURCE", "LABELS"]);
        }
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|a| {
                let mut r = vec![
                    s(a, "/metadata/name").into(),
                    s(a, "/status/phase").into(),
                    age(s(a, "/status/phaseSince")),
                    removed(a),
                ];
                if wide {
                    let prefix = s(a, "/spec/match/namePrefix");
                    r.extend([
                        if prefix.is_empty() {
                            "<default>".into()
                        } else {
                            prefix.into()
                        },
                        s(a, "/spec/buildDir").into(),
                        s(a, "/status/source").into(),
                        labels(a),
                    ]);
                }
                r
            })
            .collect();
        return table(&header, &rows);
    }
    let mut header = vec!["NAME", "PHASE", "REASON", "AGE", "REMOVED"];
    if wide {
        header.extend(["TTL", "HEARTBEAT", "SOURCE", "LABELS"]);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|x| {
            let deleting = !s(x, "/status/deletingSince").is_empty();
            let phase = if deleting {
                format!("{} (deleting)", s(x, "/status/phase"))
            } else {
                s(x, "/status/phase").into()
            };
            let reason = s(x, "/status/endReason");
            let mut r = vec![
                s(x, "/metadata/name").into(),
                phase,
                if reason.is_empty() {
                    "-".into()
                } else {
                    reason.into()
                },
                age(s(x, "/status/createdAt")),
                removed(x),
            ];
            if wide {
                let or_dash = |p: &str| {
                    if s(x, p).is_empty() {
                        "-".to_string()
                    } else {
                        s(x, p).to_string()
                    }
                };
                r.extend([
                    or_dash("/spec/ttl"),
                    or_dash("/spec/heartbeatTimeout"),
                    s(x, "/status/source").into(),
                    labels(x),
                ]);
            }
            r
        })
        .collect();
    table(&header, &rows)
}

pub fn describe(v: &Value, o: Output) -> String {
    if let Some(out) = structured(v, o) {
        return out;
    }
    let mut out = serde_yaml::to_string(&v["record"]).unwrap_or_default();
    out.push_str("objects:\n");
    let objects = v["objects"].as_array().cloned().unwrap_or_default();
    if objects.is_empty() {
        out.push_str("  <none>\n");
    }
    for obj in objects {
        out.push_str(&format!(
            "  - {} {} {}\n",
            s(&obj, "/kind"),
            s(&obj, "/name"),
            short_id(s(&obj, "/id"))
        ));
    }
    out
}

fn owner(r: &Value) -> String {
    match (
        r.pointer("/owner/kind").and_then(Value::as_str),
        r.pointer("/owner/name").and_then(Value::as_str),
    ) {
        (Some(k), Some(n)) => format!("{k}/{n}"),
        _ => "-".into(),
    }
}

/// Planned removals: KIND, NAME, ID, OWNER, REASON.
pub fn removals(items: &[Value]) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            vec![
                s(r, "/target/kind").into(),
                s(r, "/target/name").into(),
                short_id(s(r, "/target/id")).into(),
                owner(r),
                s(r, "/reason").into(),
            ]
        })
        .collect();
    table(&["KIND", "NAME", "ID", "OWNER", "REASON"], &rows)
}

/// `reaper orphans`: a flat list with an ACTION column (remove now, or wait until).
pub fn orphans(v: &Value, o: Output) -> String {
    let mut flat: Vec<Value> = Vec::new();
    for r in v["removals"].as_array().into_iter().flatten() {
        flat.push(serde_json::json!({
            "kind": s(r, "/target/kind"), "id": s(r, "/target/id"), "name": s(r, "/target/name"),
            "owner": owner(r), "reason": s(r, "/reason"), "action": "remove",
        }));
    }
    for w in v["waiting"].as_array().into_iter().flatten() {
        let until = s(w, "/removableAt");
        flat.push(serde_json::json!({
            "kind": s(w, "/object/kind"), "id": s(w, "/object/id"), "name": s(w, "/object/name"),
            "owner": owner(w), "reason": "orphan",
            "action": if until.is_empty() { "keep (age unknown)".to_string() } else { format!("wait until {until}") },
        }));
    }
    let flat = Value::Array(flat);
    if let Some(out) = structured(&flat, o) {
        return out;
    }
    let rows: Vec<Vec<String>> = flat
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            ["/kind", "/name", "/id", "/owner", "/reason", "/action"]
                .iter()
                .map(|p| {
                    if *p == "/id" {
                        short_id(s(r, p)).to_string()
                    } else {
                        s(r, p).to_string()
                    }
                })
                .collect()
        })
        .collect();
    if rows.is_empty() {
        return "Nothing to remove.\n".into();
    }
    table(&["KIND", "NAME", "ID", "OWNER", "REASON", "ACTION"], &rows)
}

pub fn status(v: &Value, o: Output) -> String {
    if let Some(out) = structured(v, o) {
        return out;
    }
    let h = &v["health"];
    let yes = |p: &str| h.pointer(p).and_then(Value::as_bool).unwrap_or(false);
    let mut out = format!("reaper {}\n", s(v, "/version"));
    out.push_str(&format!(
        "docker:     {}\n",
        if yes("/dockerWedged") {
            "WEDGED: /_ping answers but listings time out; no removals are sent (see the log)"
                .to_string()
        } else if yes("/dockerUp") {
            format!("up, {}", s(h, "/dockerVersion"))
        } else {
            format!("DOWN {}", s(h, "/dockerError"))
        }
    ));
    if !s(h, "/serialExitsExplained").is_empty() {
        out.push_str(&format!("exits:      {}\n", s(h, "/serialExitsExplained")));
    }
    let store_err = s(h, "/storeError");
    out.push_str(&format!(
        "store:      {}\n",
        if store_err.is_empty() {
            "ok".into()
        } else {
            format!("ERROR {store_err}")
        }
    ));
    out.push_str(&format!(
        "safe mode:  {}\n",
        if yes("/safeMode") {
            "ON: nothing is deleted until the store and Docker view are trustworthy"
        } else {
            "off"
        }
    ));
    if yes("/dryRun") {
        out.push_str("dry run:    on (nothing is removed)\n");
    }
    out.push_str(&format!("last pass:  {}\n", or_never(s(h, "/lastPass"))));
    out.push_str(&format!("last ok:    {}\n", or_never(s(h, "/lastSuccess"))));
    if !s(h, "/lastError").is_empty() {
        out.push_str(&format!("last error: {}\n", s(h, "/lastError")));
    }
    let counts = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, n)| format!("{k}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "unknown".into())
    };
    out.push_str(&format!("sessions:   {}\n", counts("/sessions")));
    out.push_str(&format!("agents:     {}\n", counts("/agents")));
    out.push_str(&format!("owned:      {}\n", counts("/health/owned")));
    out.push_str(&format!("orphans:    {}\n", counts("/health/orphans")));
    for e in v["manifestErrors"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "manifest:   INVALID {}: {}\n",
            s(e, "/file"),
            s(e, "/error")
        ));
    }
    out
}

fn or_never(s: &str) -> &str {
    if s.is_empty() {
        "never"
    } else {
        s
    }
}
