//! Over 500 lines: 630 of code (one printer per reply type) and its tests of the printed text.
//!
//! How the CLI prints what the API returns: aligned tables for people, JSON or YAML for scripts.
//! Everything it prints comes from the `wire` types; none of it is looked up by string.

use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

use crate::api::wire::{DiskStatus, Health, Preview, RecordView, Status};
use crate::core::inventory::{short_id, DockerObject};
use crate::core::model::{
    Agent, CleanupReason, Labels, ObjectCounts, OwnerRef, ResourceKind, Session, Timestamp,
    API_VERSION,
};
use crate::core::plan::{Removal, Target};

use super::custom_columns::Columns;
use super::jsonpath::{Template, TemplateError};
use super::relative_time::{age, relative, relative_or_never};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

/// `reaper get -o`: the shared formats, `name` (`session/NAME` per line, for scripts), and
/// kubectl's `jsonpath=TEMPLATE` and `custom-columns=HEADER:.path,…`.
#[derive(Clone, Debug, PartialEq)]
pub enum ListOutput {
    Table,
    Wide,
    Json,
    Yaml,
    Name,
    JsonPath(Template),
    CustomColumns(Columns),
}

impl ListOutput {
    /// What `-o` names in `reaper get --help`.
    pub const HELP: &'static str = "table, wide, json, yaml, name, jsonpath=TEMPLATE \
        (e.g. '{.items[*].metadata.name}'), custom-columns=HEADER:.path,… \
        (e.g. NAME:.metadata.name,PHASE:.status.phase)";

    /// Parses `-o`'s value; a bad template says at which column of the value and why.
    pub fn parse(value: &str) -> Result<ListOutput, String> {
        let with_caret = |e: TemplateError| {
            let pad = " ".repeat(e.column.saturating_sub(1));
            format!("{e}\n  {value}\n  {pad}^")
        };
        if let Some(t) = value.strip_prefix("jsonpath=") {
            return Template::parse(t, "jsonpath=".len())
                .map(ListOutput::JsonPath)
                .map_err(with_caret);
        }
        if let Some(c) = value.strip_prefix("custom-columns=") {
            return Columns::parse(c, "custom-columns=".len())
                .map(ListOutput::CustomColumns)
                .map_err(with_caret);
        }
        Ok(match value {
            "table" => ListOutput::Table,
            "wide" => ListOutput::Wide,
            "json" => ListOutput::Json,
            "yaml" => ListOutput::Yaml,
            "name" => ListOutput::Name,
            "jsonpath" | "custom-columns" => {
                return Err(format!(
                    "{value} needs a template: {value}=…; one of {}",
                    Self::HELP
                ))
            }
            _ => return Err(format!("expected one of {}", Self::HELP)),
        })
    }
}

/// JSON or YAML of what was received. Through a `Value`, whose keys are sorted, so the text
/// does not depend on the order in which a type declares its fields.
pub(super) fn structured(v: &impl Serialize, o: Output) -> Option<String> {
    match o {
        Output::Json => Some(serde_json::to_string_pretty(&sorted(v)).unwrap_or_default() + "\n"),
        Output::Yaml => Some(serde_yaml::to_string(&sorted(v)).unwrap_or_default()),
        _ => None,
    }
}

pub(super) fn sorted(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// A value as the API spells it (`Active`, `ttlExpired`): tables show what JSON shows.
fn wire_name(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Renders rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    aligned(Some(header), rows, &mut Vec::new())
}

/// Rows (after `header`, if any) left-aligned to `widths`, which grow to fit them: `get
/// --watch` keeps its widths, so later rows line up with the first ones.
pub(super) fn aligned(
    header: Option<&[&str]>,
    rows: &[Vec<String>],
    widths: &mut Vec<usize>,
) -> String {
    let header: Option<Vec<String>> = header.map(|h| h.iter().map(|c| c.to_string()).collect());
    for r in header.iter().chain(rows) {
        widths.resize(widths.len().max(r.len()), 0);
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
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
    header.iter().chain(rows).map(|r| line(r)).collect()
}

pub(super) fn labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn removed(counts: &ObjectCounts) -> String {
    counts.total().to_string()
}

fn or_dash(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}

/// What `reaper get` received: one record, or a list.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Listed {
    One(Box<RecordView>),
    All(Vec<RecordView>),
}

impl Listed {
    pub fn items(&self) -> &[RecordView] {
        match self {
            Listed::One(r) => std::slice::from_ref(r.as_ref()),
            Listed::All(v) => v,
        }
    }
}

/// One item named on the command line as itself; a list as kubectl prints one (`apiVersion`,
/// `kind: List`, `items`), so a script reads every list the same way.
fn document<T: Serialize>(items: &[T], one: bool) -> Value {
    match (one, items) {
        (true, [item]) => sorted(item),
        _ => sorted(&List {
            api_version: API_VERSION,
            kind: "List",
            items,
        }),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct List<'a, T> {
    api_version: &'static str,
    kind: &'static str,
    items: &'a [T],
}

/// What `reaper get` prints of any kind of item: how each one is named (`-o name`) and tabled.
pub(super) struct Printable<'a, T> {
    pub items: &'a [T],
    /// One item was named on the command line: JSON and YAML print it as itself.
    pub one: bool,
    pub name: &'a dyn Fn(&T) -> String,
    /// The table of the items, wide or not, with its header line.
    pub table: &'a dyn Fn(&[T], bool) -> String,
    /// What a table of no items says.
    pub empty: &'static str,
}

/// `p` in the format `-o` names; `--no-headers` drops a table's header line.
pub(super) fn list_as<T: Serialize>(
    p: Printable<'_, T>,
    o: &ListOutput,
    no_headers: bool,
) -> String {
    let printed = match o {
        ListOutput::Name => return p.items.iter().map(|i| (p.name)(i) + "\n").collect(),
        ListOutput::JsonPath(t) => return t.render(&document(p.items, p.one)),
        ListOutput::Json => {
            return structured(&document(p.items, p.one), Output::Json).unwrap_or_default()
        }
        ListOutput::Yaml => {
            return structured(&document(p.items, p.one), Output::Yaml).unwrap_or_default()
        }
        _ if p.items.is_empty() => {
            return match no_headers {
                true => String::new(),
                false => p.empty.into(),
            }
        }
        ListOutput::CustomColumns(c) => {
            let items: Vec<Value> = p.items.iter().map(sorted).collect();
            let (header, rows) = c.rows(&items);
            table(&header, &rows)
        }
        ListOutput::Wide => (p.table)(p.items, true),
        ListOutput::Table => (p.table)(p.items, false),
    };
    if no_headers {
        return printed
            .split_once('\n')
            .map(|(_, rows)| rows.to_string())
            .unwrap_or_default();
    }
    printed
}

pub fn records(listed: &Listed, agents: bool, o: Output, now: Timestamp) -> String {
    let o = match o {
        Output::Table => ListOutput::Table,
        Output::Wide => ListOutput::Wide,
        Output::Json => ListOutput::Json,
        Output::Yaml => ListOutput::Yaml,
    };
    records_as(listed, agents, &o, false, now)
}

/// `records`, with `reaper get`'s own choices: `-o name`, and `--no-headers` for tables.
pub fn records_as(
    listed: &Listed,
    agents: bool,
    o: &ListOutput,
    no_headers: bool,
    now: Timestamp,
) -> String {
    let printable = Printable {
        items: listed.items(),
        one: matches!(listed, Listed::One(_)),
        name: &|r: &RecordView| r.owner().to_string(),
        table: &|items: &[RecordView], wide| {
            let o = if wide { Output::Wide } else { Output::Table };
            records_table(items, agents, o, now)
        },
        empty: "No records.\n",
    };
    list_as(printable, o, no_headers)
}

fn records_table(items: &[RecordView], agents: bool, o: Output, now: Timestamp) -> String {
    let (header, rows) = records_columns(items, agents, o == Output::Wide, now);
    table(&header, &rows)
}

/// The header and rows of `get`'s table (`wide` adds columns); records of the other kind are
/// left out.
pub(super) fn records_columns(
    items: &[RecordView],
    agents: bool,
    wide: bool,
    now: Timestamp,
) -> (Vec<&'static str>, Vec<Vec<String>>) {
    if agents {
        let mut header = vec!["NAME", "PHASE", "SINCE", "REMOVED"];
        if wide {
            header.extend(["PREFIX", "BUILD-DIR", "CLEANUP-IN", "SOURCE", "LABELS"]);
        }
        let rows = items
            .iter()
            .filter_map(|r| match r {
                RecordView::Agent { agent, .. } => Some(agent_row(agent, wide, now)),
                RecordView::Session { .. } => None,
            })
            .collect();
        return (header, rows);
    }
    let mut header = vec!["NAME", "PHASE", "REASON", "AGE", "REMOVED"];
    if wide {
        header.extend(["TTL", "HEARTBEAT", "CLEANUP-IN", "SOURCE", "LABELS"]);
    }
    let rows = items
        .iter()
        .filter_map(|r| match r {
            RecordView::Session { session, .. } => Some(session_row(session, wide, now)),
            RecordView::Agent { .. } => None,
        })
        .collect();
    (header, rows)
}

fn agent_row(a: &Agent, wide: bool, now: Timestamp) -> Vec<String> {
    let mut r = vec![
        a.metadata.name.to_string(),
        wire_name(&a.status.phase),
        age(a.status.phase_since, now),
        removed(&a.status.removed),
    ];
    if wide {
        r.extend([
            a.spec
                .match_
                .name_prefix
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "<default>".into()),
            a.spec
                .build_dir
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            or_dash(a.cleanup_delayed(now).map(|t| relative(t, now))),
            a.status.source.clone().unwrap_or_default(),
            labels(&a.metadata.labels),
        ]);
    }
    r
}

fn session_row(s: &Session, wide: bool, now: Timestamp) -> Vec<String> {
    let phase = wire_name(&s.status.phase);
    let phase = if s.status.deleting_since.is_some() {
        format!("{phase} (deleting)")
    } else {
        phase
    };
    let mut r = vec![
        s.metadata.name.to_string(),
        phase,
        or_dash(s.status.end_reason.map(|r| r.as_str().to_string())),
        age(s.status.created_at, now),
        removed(&s.status.removed),
    ];
    if wide {
        r.extend([
            or_dash(s.spec.ttl.map(|d| d.to_string())),
            or_dash(s.spec.heartbeat_timeout.map(|d| d.to_string())),
            or_dash(s.cleanup_delayed(now).map(|t| relative(t, now))),
            s.status.source.clone().unwrap_or_default(),
            labels(&s.metadata.labels),
        ]);
    }
    r
}

/// What `reaper describe` received: the record, its effective match, the objects it claims
/// now and its recent events.
#[derive(Debug, Serialize)]
pub struct Described {
    pub record: RecordView,
    #[serde(rename = "match")]
    pub matches: Vec<String>,
    pub objects: Vec<DockerObject>,
    pub events: Vec<crate::core::model::Event>,
}

pub fn describe(d: &Described, o: Output, now: Timestamp) -> String {
    if let Some(out) = structured(d, o) {
        return out;
    }
    super::describe::text(
        &super::describe::Shown {
            record: &d.record,
            matches: &d.matches,
            objects: &d.objects,
            events: &d.events,
        },
        now,
    )
}

fn owner(o: Option<&OwnerRef>) -> String {
    o.map_or_else(|| "-".into(), ToString::to_string)
}

/// A removal target's kind, ID and name, as the API shows them (a path is its own ID and name).
pub fn target_fields(t: &Target) -> (ResourceKind, &str, &str) {
    match t {
        Target::Docker(o) => (o.kind, o.id.as_str(), o.name.as_str()),
        Target::Path { path } => (ResourceKind::Path, path.as_str(), path.as_str()),
    }
}

/// Planned removals: KIND, NAME, ID, OWNER, REASON, and WHY (the rules that make each one the
/// owner's) when a cleanup of one owner says.
pub fn removals(items: &[Removal]) -> String {
    let why = items.iter().any(|r| !r.because.is_empty());
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            let (kind, id, name) = target_fields(&r.target);
            let mut row = vec![
                kind.to_string(),
                name.into(),
                short_id(id).into(),
                owner(r.owner.as_ref()),
                r.reason.to_string(),
            ];
            if why {
                row.push(r.because.join("; "));
            }
            row
        })
        .collect();
    let mut header = vec!["KIND", "NAME", "ID", "OWNER", "REASON"];
    if why {
        header.push("WHY");
    }
    table(&header, &rows)
}

/// One line of `reaper orphans`.
#[derive(Debug, Serialize)]
struct OrphanRow {
    kind: ResourceKind,
    id: String,
    name: String,
    owner: String,
    reason: CleanupReason,
    /// As scripts read it: "wait until <RFC 3339>".
    action: String,
    /// For the table, which says "wait: removable in 4m" instead.
    #[serde(skip)]
    removable_at: Option<Timestamp>,
}

impl OrphanRow {
    fn action_for_people(&self, now: Timestamp) -> String {
        match self.removable_at {
            Some(t) => format!("wait: removable {}", relative(t, now)),
            None => self.action.clone(),
        }
    }
}

fn removal_row(r: &Removal, action: String) -> OrphanRow {
    let (kind, id, name) = target_fields(&r.target);
    OrphanRow {
        kind,
        id: id.into(),
        name: name.into(),
        owner: owner(r.owner.as_ref()),
        reason: r.reason,
        action,
        removable_at: None,
    }
}

/// `reaper orphans`: a flat list with an ACTION column (remove now, or wait until).
pub fn orphans(p: &Preview, o: Output, now: Timestamp) -> String {
    let remove = p.removals.iter().map(|r| {
        let action = match r.stop_only {
            true => "stop (cleanup delayed)",
            false => "remove",
        };
        removal_row(r, action.into())
    });
    let wait = p.waiting.iter().map(|w| OrphanRow {
        kind: w.object.kind,
        id: w.object.id.clone(),
        name: w.object.name.clone(),
        owner: owner(w.owner.as_ref()),
        reason: CleanupReason::Orphan,
        action: match w.removable_at {
            Some(t) => format!("wait until {t}"),
            None => "keep (age unknown)".into(),
        },
        removable_at: w.removable_at,
    });
    let held = p.held.iter().map(|r| {
        removal_row(
            r,
            "held (blast radius: confirm with `reaper cleanup --yes`)".into(),
        )
    });
    let flat: Vec<OrphanRow> = remove.chain(wait).chain(held).collect();
    if let Some(out) = structured(&flat, o) {
        return out;
    }
    if flat.is_empty() {
        return "Nothing to remove.\n".into();
    }
    let rows: Vec<Vec<String>> = flat
        .iter()
        .map(|r| {
            vec![
                r.kind.to_string(),
                r.name.clone(),
                short_id(&r.id).to_string(),
                r.owner.clone(),
                r.reason.to_string(),
                r.action_for_people(now),
            ]
        })
        .collect();
    table(&["KIND", "NAME", "ID", "OWNER", "REASON", "ACTION"], &rows)
}

pub fn status(v: &Status, o: Output, now: Timestamp) -> String {
    if let Some(out) = structured(v, o) {
        return out;
    }
    let h: &Health = &v.health;
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let mut out = format!("reaper {}\n", v.version);
    out.push_str(&format!(
        "docker:     {}\n",
        if h.docker_wedged {
            "WEDGED: /_ping answers but listings time out; no removals are sent (see the log)"
                .to_string()
        } else if h.docker_up {
            format!("up, {}", text(&h.docker_version))
        } else {
            format!("DOWN {}", text(&h.docker_error))
        }
    ));
    if let Some(explained) = h.serial_exits_explained.as_ref().filter(|s| !s.is_empty()) {
        out.push_str(&format!("exits:      {explained}\n"));
    }
    out.push_str(&format!(
        "store:      {}\n",
        match h.store_error.as_ref().filter(|s| !s.is_empty()) {
            None => "ok".into(),
            Some(e) => format!("ERROR {e}"),
        }
    ));
    out.push_str(&format!(
        "safe mode:  {}\n",
        if h.safe_mode {
            "ON: nothing is deleted until the store and Docker view are trustworthy"
        } else {
            "off"
        }
    ));
    if let Some(held) = &h.blast_radius_held {
        out.push_str(&format!(
            "held:       BLAST RADIUS: {} orphans due for removal, more than \
             maxOrphanRemovalsPerPass ({}), so none is removed (since {}); e.g. {}. Check \
             `reaper orphans`, then confirm with `reaper cleanup --yes`, raise the cap, or fix \
             the rule\n",
            held.orphans,
            held.limit,
            relative(held.since, now),
            held.examples.join(", ")
        ));
    }
    if let Some(disk) = &h.disk {
        out.push_str(&format!("disk:       {}\n", disk_summary(disk)));
    }
    if h.dry_run {
        out.push_str("dry run:    on (nothing is removed)\n");
    }
    out.push_str(&format!(
        "last pass:  {}\n",
        relative_or_never(h.last_pass, now)
    ));
    out.push_str(&format!(
        "last ok:    {}\n",
        relative_or_never(h.last_success, now)
    ));
    if let Some(e) = h.last_error.as_ref().filter(|s| !s.is_empty()) {
        out.push_str(&format!("last error: {e}\n"));
    }
    let phases = |m: &Option<BTreeMap<String, usize>>| {
        m.as_ref().map_or_else(
            || "unknown".into(),
            |m| counts(m.iter().map(|(k, n)| (k.as_str(), *n as i64))),
        )
    };
    let kinds = |m: &BTreeMap<ResourceKind, i64>| counts(m.iter().map(|(k, n)| (k.as_str(), *n)));
    out.push_str(&format!("sessions:   {}\n", phases(&v.sessions)));
    out.push_str(&format!("agents:     {}\n", phases(&v.agents)));
    out.push_str(&format!("owned:      {}\n", kinds(&h.owned)));
    out.push_str(&format!("orphans:    {}\n", kinds(&h.orphans)));
    for e in &v.manifest_errors {
        out.push_str(&format!("manifest:   INVALID {}: {}\n", e.file, e.error));
    }
    out
}

/// Disk pressure in one line, for `reaper status`.
fn disk_summary(d: &DiskStatus) -> String {
    let Some(usage) = d.usage.filter(|_| d.available) else {
        let why = d.error.clone().unwrap_or_default();
        return format!("UNAVAILABLE: {why}; nothing is evicted");
    };
    let mut line = format!(
        "bytes {}, inodes {} (high {}, low {})",
        percent(usage.bytes.ratio()),
        percent(usage.inodes.ratio()),
        d.high_watermark,
        d.low_watermark
    );
    if d.pressure {
        line.push_str(&format!(
            ": PRESSURE, {} image references to evict",
            d.evictions.len()
        ));
        if d.exhausted {
            line.push_str("; what fills the disk is not ours to evict");
        }
    }
    if let Some(e) = &d.error {
        line.push_str(&format!(" (last error: {e})"));
    }
    line
}

/// `reaper disk`: usage, the watermarks and what is evicted now, in order, with sizes.
pub fn disk(d: &Option<DiskStatus>, o: Output) -> String {
    if let Some(out) = structured(d, o) {
        return out;
    }
    let Some(d) = d else {
        return "disk: not measured yet (the daemon measures in every pass)\n".into();
    };
    let mut out = format!(
        "data root:  {}\n",
        d.data_root.as_deref().unwrap_or("unknown")
    );
    out.push_str(&format!("measured:   {}\n", d.measured_at));
    match d.usage.filter(|_| d.available) {
        None => {
            out.push_str(&format!(
                "UNAVAILABLE: {}; nothing is evicted\n",
                d.error.clone().unwrap_or_default()
            ));
            return out;
        }
        Some(u) => {
            out.push_str(&format!(
                "bytes:      {} ({} of {})\n",
                percent(u.bytes.ratio()),
                human_bytes(u.bytes.used),
                human_bytes(u.bytes.total)
            ));
            out.push_str(&format!(
                "inodes:     {} ({} of {})\n",
                percent(u.inodes.ratio()),
                u.inodes.used,
                u.inodes.total
            ));
        }
    }
    out.push_str(&format!(
        "watermarks: high {}, low {}\n",
        d.high_watermark, d.low_watermark
    ));
    out.push_str(&format!(
        "pressure:   {}\n",
        match (d.pressure, d.exhausted) {
            (false, _) => "no: nothing is evicted",
            (true, false) => "YES: evicting the images below, in this order",
            (true, true) =>
                "YES, and evicting all of ours that may go is not enough: the rest is not ours",
        }
    ));
    if let Some(e) = &d.error {
        out.push_str(&format!("error:      {e}\n"));
    }
    if d.evictions.is_empty() {
        return out;
    }
    let rows: Vec<Vec<String>> = d
        .evictions
        .iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                (i + 1).to_string(),
                e.image.target().to_string(),
                short_id(&e.image.id).to_string(),
                human_bytes(e.size),
                human_bytes(e.frees),
                e.last_used.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ORDER", "IMAGE", "ID", "SIZE", "FREES", "LAST USED"],
        &rows,
    ));
    out
}

fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// Bytes in binary units, one decimal: `12.0 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `name=n` pairs, sorted by name.
fn counts<'a>(pairs: impl Iterator<Item = (&'a str, i64)>) -> String {
    pairs
        .collect::<BTreeMap<_, _>>()
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    //! The expected texts are what the CLI printed before it read replies into the wire types
    //! (when it printed the JSON it received as is): `reaper` output must not change with them.
    use super::*;
    use crate::api::examples;
    use serde::de::DeserializeOwned;

    fn typed<T: DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).expect("example reads into its wire type")
    }

    /// `-o json|yaml` as it was: the received JSON, re-printed with its keys sorted.
    fn as_received(json: &str, o: Output) -> String {
        let v: Value = serde_json::from_str(json).expect("JSON");
        match o {
            Output::Json => serde_json::to_string_pretty(&v).expect("encodes") + "\n",
            _ => serde_yaml::to_string(&v).expect("encodes"),
        }
    }

    /// A minute after the examples' fixed times (2024-05-01T10:00:00Z).
    fn now() -> Timestamp {
        Timestamp::parse_rfc3339("2024-05-01T10:01:00Z").expect("RFC 3339")
    }

    fn first(list: &str) -> String {
        let v: Vec<Value> = typed(list);
        v[0].to_string()
    }

    #[test]
    fn get_prints_tables_as_before() {
        let sessions = Listed::All(typed(&examples::sessions()));
        let agents = Listed::All(typed(&examples::agents()));
        assert_eq!(
            records(&sessions, false, Output::Table, Timestamp::now()),
            "NAME   PHASE              REASON       AGE   REMOVED\n\
             s1     Ended (deleting)   ttlExpired   10m   7\n\
             s2     Active             -            3h    0\n"
        );
        assert_eq!(
            records(&sessions, false, Output::Wide, Timestamp::now()),
            "NAME   PHASE              REASON       AGE   REMOVED   TTL   HEARTBEAT   CLEANUP-IN   SOURCE   LABELS\n\
             s1     Ended (deleting)   ttlExpired   10m   7         2h    1m          -            api      b=2,team=tdd\n\
             s2     Active             -            3h    0         -     -           -                     <none>\n"
        );
        assert_eq!(
            records(&agents, true, Output::Table, Timestamp::now()),
            "NAME   PHASE     SINCE   REMOVED\n\
             a1     Failed    3d      3\n\
             a2     Running   5m      0\n"
        );
        assert_eq!(
            records(&agents, true, Output::Wide, Timestamp::now()),
            "NAME   PHASE     SINCE   REMOVED   PREFIX           BUILD-DIR   CLEANUP-IN   SOURCE                              LABELS\n\
             a1     Failed    3d      3         anvyl-agent-a1   a1/build    -            /etc/reaper/manifests/agents.yaml   team=x\n\
             a2     Running   5m      0         <default>                    -                                                <none>\n"
        );
        let one = Listed::One(Box::new(typed(&first(&examples::sessions()))));
        assert_eq!(
            records(&one, false, Output::Table, Timestamp::now()),
            "NAME   PHASE              REASON       AGE   REMOVED\n\
             s1     Ended (deleting)   ttlExpired   10m   7\n"
        );
        assert_eq!(
            records(
                &Listed::All(Vec::new()),
                false,
                Output::Table,
                Timestamp::now()
            ),
            "No records.\n"
        );
    }

    #[test]
    fn get_prints_a_list_as_kind_list_and_one_record_as_itself() {
        for o in [Output::Json, Output::Yaml] {
            for list in [examples::sessions(), examples::agents()] {
                let wrapped =
                    format!(r#"{{"apiVersion": "reaper/v1", "kind": "List", "items": {list}}}"#);
                assert_eq!(
                    records(&Listed::All(typed(&list)), false, o, Timestamp::now()),
                    as_received(&wrapped, o)
                );
                let one = first(&list);
                assert_eq!(
                    records(
                        &Listed::One(Box::new(typed(&one))),
                        true,
                        o,
                        Timestamp::now()
                    ),
                    as_received(&one, o)
                );
            }
            assert_eq!(
                records(&Listed::All(Vec::new()), false, o, Timestamp::now()),
                as_received(
                    r#"{"apiVersion": "reaper/v1", "kind": "List", "items": []}"#,
                    o
                )
            );
        }
    }

    #[test]
    fn get_prints_jsonpath_and_custom_columns() {
        let sessions = Listed::All(typed(&examples::sessions()));
        let now = Timestamp::now();
        let o = |v: &str| ListOutput::parse(v).expect("parses");
        let names = o("jsonpath={range .items[*]}{.metadata.name}:{.status.phase}{\"\\n\"}{end}");
        assert_eq!(
            records_as(&sessions, false, &names, false, now),
            "s1:Ended\ns2:Active\n"
        );
        let one = Listed::One(Box::new(typed(&first(&examples::sessions()))));
        let phase = o("jsonpath={.status.phase}");
        assert_eq!(records_as(&one, false, &phase, false, now), "Ended");
        let cols = o("custom-columns=NAME:.metadata.name,TEAM:.metadata.labels.team");
        assert_eq!(
            records_as(&sessions, false, &cols, false, now),
            "NAME   TEAM\ns1     tdd\ns2     <none>\n"
        );
        assert_eq!(
            records_as(&sessions, false, &cols, true, now),
            "s1     tdd\ns2     <none>\n"
        );
    }

    #[test]
    fn bad_output_formats_say_where_and_why() {
        let e = ListOutput::parse("jsonpath={.items[*}").expect_err("refused");
        assert_eq!(
            e,
            "at column 19: expected ']'\n  jsonpath={.items[*}\n                    ^"
        );
        let e = ListOutput::parse("custom-columns=NAME").expect_err("refused");
        assert!(
            e.starts_with("at column 16: column \"NAME\" has no ':'"),
            "{e}"
        );
        let e = ListOutput::parse("jsonpath").expect_err("refused");
        assert!(e.starts_with("jsonpath needs a template"), "{e}");
        let e = ListOutput::parse("xml").expect_err("refused");
        assert!(e.starts_with("expected one of table, wide"), "{e}");
    }

    #[test]
    fn describe_prints_as_received_in_json_and_yaml() {
        let record = first(&examples::agents());
        let events = r#"[{"type": "Warning", "reason": "reported", "message": "agent/a1 reported failed",
            "count": 2, "firstSeen": "2024-05-01T10:00:00Z", "lastSeen": "2024-05-01T10:05:00Z"}]"#;
        let described = Described {
            record: typed(&record),
            matches: vec!["label reaper.agent=a1".into()],
            objects: typed(examples::objects()),
            events: typed(events),
        };
        let received = format!(
            r#"{{"record": {record}, "match": ["label reaper.agent=a1"], "objects": {}, "events": {events}}}"#,
            examples::objects()
        );
        let now = Timestamp(0);
        for o in [Output::Json, Output::Yaml] {
            assert_eq!(describe(&described, o, now), as_received(&received, o));
        }
    }

    #[test]
    fn orphans_and_removals_print_as_before() {
        let preview: Preview = typed(examples::orphans());
        assert_eq!(
            orphans(&preview, Output::Table, now()),
            "KIND        NAME       ID             OWNER        REASON         ACTION\n\
             container   c1         0123456789ab   session/s1   sessionEnded   remove\n\
             container   c2         89abcdef0123   session/s3   sessionEnded   stop (cleanup delayed)\n\
             path        s1/build   s1/build       -            orphan         remove\n\
             volume      v1         v1             -            orphan         wait: removable in 23h\n\
             network     n2         fedcba987654   agent/a1     orphan         keep (age unknown)\n\
             volume      data-1     data-1         session/s2   orphan         held (blast radius: confirm with `reaper cleanup --yes`)\n"
        );
        let flat = r#"[
            {"action": "remove", "id": "0123456789abcdef0123", "kind": "container", "name": "c1",
             "owner": "session/s1", "reason": "sessionEnded"},
            {"action": "stop (cleanup delayed)", "id": "89abcdef0123", "kind": "container", "name": "c2",
             "owner": "session/s3", "reason": "sessionEnded"},
            {"action": "remove", "id": "s1/build", "kind": "path", "name": "s1/build",
             "owner": "-", "reason": "orphan"},
            {"action": "wait until 2024-05-02T10:00:00Z", "id": "v1", "kind": "volume", "name": "v1",
             "owner": "-", "reason": "orphan"},
            {"action": "keep (age unknown)", "id": "fedcba9876543210", "kind": "network", "name": "n2",
             "owner": "agent/a1", "reason": "orphan"},
            {"action": "held (blast radius: confirm with `reaper cleanup --yes`)", "id": "data-1",
             "kind": "volume", "name": "data-1", "owner": "session/s2", "reason": "orphan"}
        ]"#;
        for o in [Output::Json, Output::Yaml] {
            assert_eq!(orphans(&preview, o, now()), as_received(flat, o));
        }
        assert!(orphans(&preview, Output::Yaml, now()).contains("  owner: '-'\n"));
        let none: Preview = typed(r#"{"removals": [], "waiting": []}"#);
        assert_eq!(orphans(&none, Output::Table, now()), "Nothing to remove.\n");
        assert_eq!(orphans(&none, Output::Json, now()), "[]\n");
        assert_eq!(orphans(&none, Output::Yaml, now()), "[]\n");
        assert_eq!(
            removals(&preview.removals),
            "KIND        NAME       ID             OWNER        REASON\n\
             container   c1         0123456789ab   session/s1   sessionEnded\n\
             container   c2         89abcdef0123   session/s3   sessionEnded\n\
             path        s1/build   s1/build       -            orphan\n"
        );
        // A cleanup of one owner says why each object is that owner's.
        let cleanup: crate::api::wire::CleanupResponse = typed(examples::cleanup());
        assert_eq!(
            removals(&cleanup.planned),
            "KIND        NAME   ID             OWNER        REASON   WHY\n\
             container   c1     0123456789ab   session/s1   manual   label reaper.session=s1\n"
        );
    }

    #[test]
    fn disk_prints_usage_watermarks_and_evictions_in_order() {
        let up: Status = typed(examples::status_up());
        assert_eq!(
            disk(&up.health.disk, Output::Table),
            "data root:  /var/lib/docker\n\
             measured:   2024-05-01T10:00:00.123Z\n\
             bytes:      90.0% (83.8 GiB of 93.1 GiB)\n\
             inodes:     2.0% (120000 of 6000000)\n\
             watermarks: high 85%, low 80%\n\
             pressure:   YES: evicting the images below, in this order\n\
             ORDER   IMAGE                   ID     SIZE      FREES     LAST USED\n\
             1       anvyl-agent-a1:latest   4f2a   9.3 GiB   9.3 GiB   2024-04-02T09:30:00Z\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&disk(&up.health.disk, Output::Json)).unwrap();
        assert_eq!(json["evictions"][0]["frees"], 10_000_000_000u64);
        let down: Status = typed(examples::status_down());
        assert!(disk(&down.health.disk, Output::Table)
            .contains("UNAVAILABLE: cannot see /var/lib/docker"));
        assert_eq!(disk(&None, Output::Json), "null\n");
    }

    #[test]
    fn status_prints_as_before() {
        assert_eq!(
            status(&typed(examples::status_up()), Output::Table, now()),
            "reaper 0.1.0\n\
             docker:     up, Docker 24.0.7 (API 1.43)\n\
             exits:      off: container stops run at full concurrency\n\
             store:      ok\n\
             safe mode:  off\n\
             held:       BLAST RADIUS: 60 orphans due for removal, more than maxOrphanRemovalsPerPass (50), so none is removed (since 2m ago); e.g. container web-1 (0123456789ab), volume data-1. Check `reaper orphans`, then confirm with `reaper cleanup --yes`, raise the cap, or fix the rule\n\
             disk:       bytes 90.0%, inodes 2.0% (high 85%, low 80%): PRESSURE, 1 image references to evict\n\
             dry run:    on (nothing is removed)\n\
             last pass:  59s ago\n\
             last ok:    59s ago\n\
             sessions:   active=1 cleaned=0 ended=2 ending=0 expired=0\n\
             agents:     failed=0 running=1 starting=0 stopped=3\n\
             owned:      container=2 image=3 network=1 path=1 volume=0\n\
             orphans:    container=0 volume=4\n\
             manifest:   INVALID /m/a.yaml: a.yaml: document 1, line 3: unknown field\n"
        );
        assert_eq!(
            status(&typed(examples::status_down()), Output::Table, now()),
            "reaper 0.1.0\n\
             docker:     DOWN connection refused\n\
             store:      ERROR corrupt\n\
             safe mode:  ON: nothing is deleted until the store and Docker view are trustworthy\n\
             disk:       UNAVAILABLE: cannot see /var/lib/docker: No such file or directory (os error 2); nothing is evicted\n\
             last pass:  60s ago\n\
             last ok:    never\n\
             last error: the store cannot be read: corrupt\n\
             sessions:   unknown\n\
             agents:     unknown\n\
             owned:      \n\
             orphans:    \n"
        );
        assert_eq!(
            status(&typed(examples::status_wedged()), Output::Table, now()),
            "reaper 0.1.0\n\
             docker:     WEDGED: /_ping answers but listings time out; no removals are sent (see the log)\n\
             exits:      on: at most one container stop at a time\n\
             store:      ok\n\
             safe mode:  off\n\
             last pass:  never\n\
             last ok:    never\n\
             sessions:   active=0 cleaned=0 ended=0 expired=0\n\
             agents:     failed=0 running=0 starting=0 stopped=0\n\
             owned:      \n\
             orphans:    \n"
        );
        for example in [
            examples::status_up(),
            examples::status_down(),
            examples::status_wedged(),
        ] {
            for o in [Output::Json, Output::Yaml] {
                assert_eq!(status(&typed(example), o, now()), as_received(example, o));
            }
        }
    }
}
