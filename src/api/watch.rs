//! `GET /v1/watch/sessions|agents`: the records of a kind, then every change to them, as
//! newline-delimited JSON over a chunked response. It follows the store's change stream
//! (`Store::subscribe`): after each change it lists the kind again and sends what differs, so
//! it needs no event log and a slow reader only ever misses intermediate states.

use hyper::body::{Body, Bytes, Frame};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::wire::{RecordView, WatchEvent, WatchEventType};
use crate::core::model::{OwnerKind, Record};
use crate::store::{Store, StoreError};

/// The content type of the stream: one JSON document per line.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// A burst of store writes (a pass updating many records) becomes one comparison.
const COALESCE: Duration = Duration::from_millis(50);
/// Lines queued for a reader that is slower than the changes.
const QUEUE: usize = 64;

/// A response body fed line by line; dropped (the client gone), it stops its producer.
pub struct LineBody {
    lines: mpsc::Receiver<Bytes>,
}

impl Body for LineBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.lines
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

/// Starts following `kind` in `store`. The stream ends after `timeout` if one is given, when
/// the client goes away, when the daemon shuts down (`stop`), or (with an `ERROR` line) when
/// the store cannot be read.
pub fn watch(
    store: Store,
    kind: OwnerKind,
    timeout: Option<Duration>,
    stop: CancellationToken,
) -> LineBody {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let timeout = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = follow(store, kind, &tx) => {}
            _ = timeout => {}
            _ = stop.cancelled() => {}
        }
    });
    LineBody { lines: rx }
}

type Snapshot = BTreeMap<String, (Vec<u8>, RecordView)>;

async fn follow(store: Store, kind: OwnerKind, tx: &mpsc::Sender<Bytes>) {
    // Subscribed before the first listing, so no change between the two is lost.
    let mut changes = store.subscribe();
    changes.borrow_and_update();
    let mut seen = Snapshot::new();
    let mut first = true;
    loop {
        let now = match snapshot(&store, kind) {
            Ok(now) => now,
            Err(e) => {
                let error = WatchEvent {
                    kind: WatchEventType::Error,
                    object: None,
                    error: Some(format!("the store cannot be read: {e}")),
                };
                let _ = send(tx, &error).await;
                return;
            }
        };
        for event in diff(&seen, &now) {
            if !send(tx, &event).await {
                return;
            }
        }
        if first {
            let bookmark = WatchEvent {
                kind: WatchEventType::Bookmark,
                object: None,
                error: None,
            };
            if !send(tx, &bookmark).await {
                return;
            }
            first = false;
        }
        seen = now;
        tokio::select! {
            _ = tx.closed() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        tokio::time::sleep(COALESCE).await;
        changes.borrow_and_update();
    }
}

/// Sends one line; false when the client is gone.
async fn send(tx: &mpsc::Sender<Bytes>, event: &WatchEvent) -> bool {
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    tx.send(Bytes::from(line)).await.is_ok()
}

fn snapshot(store: &Store, kind: OwnerKind) -> Result<Snapshot, StoreError> {
    let records: Vec<Record> = match kind {
        OwnerKind::Session => store.sessions()?.into_iter().map(Record::Session).collect(),
        OwnerKind::Agent => store.agents()?.into_iter().map(Record::Agent).collect(),
    };
    Ok(records
        .into_iter()
        .map(|r| {
            let view = RecordView::from(r);
            let bytes = serde_json::to_vec(&view).unwrap_or_default();
            (view.owner().name.to_string(), (bytes, view))
        })
        .collect())
}

/// What changed from `before` to `after`, by name: added, modified, then deleted records.
fn diff(before: &Snapshot, after: &Snapshot) -> Vec<WatchEvent> {
    let event = |kind, view: &RecordView| WatchEvent {
        kind,
        object: Some(view.clone()),
        error: None,
    };
    let changed = after
        .iter()
        .filter_map(|(name, (bytes, view))| match before.get(name) {
            None => Some(event(WatchEventType::Added, view)),
            Some((old, _)) if old != bytes => Some(event(WatchEventType::Modified, view)),
            Some(_) => None,
        });
    let deleted = before
        .iter()
        .filter(|(name, _)| !after.contains_key(*name))
        .map(|(_, (_, view))| event(WatchEventType::Deleted, view));
    changed.chain(deleted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::examples;

    fn snap(views: &[RecordView]) -> Snapshot {
        views
            .iter()
            .map(|v| {
                let bytes = serde_json::to_vec(v).expect("encodes");
                (v.owner().name.to_string(), (bytes, v.clone()))
            })
            .collect()
    }

    fn kinds(events: &[WatchEvent]) -> Vec<(WatchEventType, String)> {
        events
            .iter()
            .map(|e| {
                let name = e.object.as_ref().map(|o| o.owner().name.to_string());
                (e.kind, name.unwrap_or_default())
            })
            .collect()
    }

    #[test]
    fn diff_names_added_modified_and_deleted_records() {
        let views: Vec<RecordView> =
            serde_json::from_str(&examples::sessions()).expect("examples read");
        let (s1, s2) = (views[0].clone(), views[1].clone());
        assert_eq!(
            kinds(&diff(&Snapshot::new(), &snap(&[s1.clone(), s2.clone()]))),
            [
                (WatchEventType::Added, "s1".into()),
                (WatchEventType::Added, "s2".into())
            ]
        );
        let mut s2_later = s2.clone();
        if let RecordView::Session { session, .. } = &mut s2_later {
            session.status.removed.containers += 1;
        }
        let events = diff(&snap(&[s1.clone(), s2]), &snap(&[s2_later.clone()]));
        assert_eq!(
            kinds(&events),
            [
                (WatchEventType::Modified, "s2".into()),
                (WatchEventType::Deleted, "s1".into())
            ]
        );
        assert_eq!(events[0].object.as_ref(), Some(&s2_later));
        assert_eq!(events[1].object.as_ref(), Some(&s1), "the last state seen");
        let same = snap(std::slice::from_ref(&s1));
        assert!(diff(&same, &same).is_empty());
    }

    #[test]
    fn events_are_one_json_line_each() {
        let e = WatchEvent {
            kind: WatchEventType::Bookmark,
            object: None,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&e).expect("encodes"),
            r#"{"type":"BOOKMARK"}"#
        );
    }
}
