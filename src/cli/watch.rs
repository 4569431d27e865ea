//! `reaper get --watch`: the current records, then a row (or a document) each time one of
//! them changes, as `kubectl get -w` prints them, until interrupted. It follows the daemon's
//! `GET /v1/watch/sessions|agents` stream.

use std::io::Write;

use super::output::{self, ListOutput};
use super::selector::Selector;
use super::{Failure, Outcome};
use crate::api::client::Client;
use crate::api::wire::{RecordView, WatchEvent, WatchEventType};
use crate::core::model::Timestamp;

/// What `get -w` was asked for.
pub struct Watch<'a> {
    pub plural: &'static str,
    pub names: &'a [String],
    pub selector: &'a Selector,
    pub output: &'a ListOutput,
    pub no_headers: bool,
    pub ignore_not_found: bool,
}

pub async fn run(c: &Client, w: Watch<'_>) -> Outcome {
    let mut printer = Printer::new(w.plural == "agents", w.output, w.no_headers);
    let mut initial: Vec<RecordView> = Vec::new();
    let mut synced = false;
    let mut failed: Option<Failure> = None;
    let path = format!("/v1/watch/{}", w.plural);
    c.watch(&path, |event: WatchEvent| {
        match (event.kind, event.object) {
            (WatchEventType::Error, _) => {
                failed = Some(ended(Some(event.error.unwrap_or_default())));
                return false;
            }
            (WatchEventType::Bookmark, _) if !synced => {
                synced = true;
                let kind = w.plural.trim_end_matches('s');
                if let Some(f) = missing(&initial, kind, w.names, w.ignore_not_found) {
                    failed = Some(f);
                    return false;
                }
                printer.print(&std::mem::take(&mut initial));
            }
            (_, Some(record)) if wanted(&record, &w) => match synced {
                false => initial.push(record),
                true => printer.print(std::slice::from_ref(&record)),
            },
            _ => {}
        }
        true
    })
    .await?;
    Err(failed.unwrap_or_else(|| ended(None)))
}

fn wanted(r: &RecordView, w: &Watch) -> bool {
    let name = r.owner().name.to_string();
    (w.names.is_empty() || w.names.contains(&name)) && w.selector.matches(r.labels())
}

/// The NAMEs asked for that did not exist when the watch began, as `get` says them.
fn missing(
    initial: &[RecordView],
    kind: &str,
    names: &[String],
    ignore_not_found: bool,
) -> Option<Failure> {
    let absent = absent(names.iter().map(String::as_str), |n| {
        initial.iter().any(|r| r.owner().name.as_str() == n)
    });
    (!ignore_not_found && !absent.is_empty()).then(|| not_found(kind, &absent))
}

/// The NAMEs asked for that the watch's first listing (up to its BOOKMARK) did not hold: they
/// do not exist now. Shared with `reaper wait`.
pub(super) fn absent<'a>(
    names: impl IntoIterator<Item = &'a str>,
    listed: impl Fn(&str) -> bool,
) -> Vec<&'a str> {
    names.into_iter().filter(|n| !listed(n)).collect()
}

/// `KIND/NAME not found` for each NAME, one error line each, as `get` says them.
pub(super) fn not_found(kind: &str, names: &[&str]) -> Failure {
    let each: Vec<String> = names
        .iter()
        .map(|n| format!("{kind}/{n} not found"))
        .collect();
    Failure::new(1, each.join("\nerror: "))
}

/// A watch the daemon ended: with an `ERROR` line's reason, or by closing the stream.
pub(super) fn ended(why: Option<String>) -> Failure {
    match why {
        Some(why) => Failure::new(1, format!("the watch ended: {why}")),
        None => Failure::new(1, "the daemon ended the watch (did it shut down?)"),
    }
}

/// Prints records as they come, tables aligned with what was printed before.
struct Printer<'a> {
    agents: bool,
    output: &'a ListOutput,
    header: bool,
    widths: Vec<usize>,
}

impl<'a> Printer<'a> {
    fn new(agents: bool, output: &'a ListOutput, no_headers: bool) -> Self {
        Printer {
            agents,
            output,
            header: !no_headers,
            widths: Vec::new(),
        }
    }

    fn print(&mut self, records: &[RecordView]) {
        if records.is_empty() {
            return;
        }
        let text = self.render(records, Timestamp::now());
        let mut out = std::io::stdout().lock();
        // A closed stdout (`| head`) ends nothing here; the next event tries again.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    fn render(&mut self, records: &[RecordView], now: Timestamp) -> String {
        let table = |header: Vec<&str>, rows: Vec<Vec<String>>, p: &mut Self| {
            let header = std::mem::take(&mut p.header).then_some(header.as_slice());
            output::aligned(header, &rows, &mut p.widths)
        };
        match self.output {
            ListOutput::Name => records.iter().map(|r| format!("{}\n", r.owner())).collect(),
            ListOutput::Json => records
                .iter()
                .filter_map(|r| output::structured(r, output::Output::Json))
                .collect(),
            ListOutput::Yaml => records
                .iter()
                .filter_map(|r| output::structured(r, output::Output::Yaml))
                .map(|doc| format!("---\n{doc}"))
                .collect(),
            ListOutput::JsonPath(t) => records
                .iter()
                .map(|r| t.render(&output::sorted(r)))
                .collect(),
            ListOutput::CustomColumns(c) => {
                let items: Vec<_> = records.iter().map(output::sorted).collect();
                let (header, rows) = c.rows(&items);
                table(header, rows, self)
            }
            o @ (ListOutput::Table | ListOutput::Wide) => {
                let wide = *o == ListOutput::Wide;
                let (header, rows) = output::records_columns(records, self.agents, wide, now);
                table(header, rows, self)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::examples;

    #[test]
    fn later_rows_line_up_with_the_first_and_the_header_is_printed_once() {
        let views: Vec<RecordView> =
            serde_json::from_str(&examples::sessions()).expect("examples read");
        let now = Timestamp::now();
        let table = ListOutput::Table;
        let mut p = Printer::new(false, &table, false);
        assert_eq!(
            p.render(&views[1..], now),
            "NAME   PHASE    REASON   AGE   REMOVED\ns2     Active   -        3h    0\n"
        );
        assert_eq!(
            p.render(&views[..1], now),
            "s1     Ended (deleting)   ttlExpired   10m   7\n"
        );
        let name = ListOutput::Name;
        let mut p = Printer::new(false, &name, false);
        assert_eq!(p.render(&views, now), "session/s1\nsession/s2\n");
        let yaml = ListOutput::Yaml;
        let mut p = Printer::new(false, &yaml, false);
        assert!(p
            .render(&views[..1], now)
            .starts_with("---\napiVersion: reaper/v1\n"));
        let mut p = Printer::new(false, &table, true);
        assert!(p.render(&views[1..], now).starts_with("s2 "));
    }

    #[test]
    fn names_missing_at_the_start_are_errors_unless_ignored() {
        let views: Vec<RecordView> =
            serde_json::from_str(&examples::sessions()).expect("examples read");
        let names = vec!["s1".to_string(), "nope".to_string()];
        assert_eq!(
            missing(&views, "session", &names, false).map(|f| f.message),
            Some("session/nope not found".to_string())
        );
        assert!(missing(&views, "session", &names, true).is_none());
    }
}
