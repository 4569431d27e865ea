//! Following Docker's events: hints that start a pass early. Events about containers carry
//! labels; network and volume events do not, so a new one is inspected before it counts as ours.

use super::*;

/// Docker events of ours start at most one pass per this interval: a workflow system starting
/// a hundred containers should not cost a hundred full listings.
pub(super) const EVENT_COALESCE: Duration = Duration::from_millis(250);

impl<E: Engine> Controller<E> {
    /// Follows the Docker event stream; events about our containers, networks and volumes
    /// trigger a pass. Reconnects with backoff and resumes shortly before the last event seen.
    pub async fn watch_events(self: Arc<Self>, shutdown: CancellationToken) {
        let mut since = Timestamp::now().millis() / 1000;
        let mut backoff = PASS_BACKOFF_MIN;
        // The first event nudges at once; more within EVENT_COALESCE make one nudge at its end.
        let mut last_nudge = Instant::now()
            .checked_sub(EVENT_COALESCE)
            .unwrap_or_else(Instant::now);
        let mut held: Option<Instant> = None;
        // Network and volume events name the object only: whether a new one is ours takes a
        // look, off this loop (a network call may wait for container stops to finish).
        let (looked, mut found_ours) = tokio::sync::mpsc::unbounded_channel::<()>();
        loop {
            let mut stream = Box::pin(self.engine.events(since.saturating_sub(1)));
            loop {
                let ours = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(held.unwrap_or_else(Instant::now)), if held.is_some() => {
                        held = None;
                        last_nudge = Instant::now();
                        self.nudge();
                        false
                    }
                    Some(()) = found_ours.recv() => true,
                    item = stream.next() => match item {
                        Some(Ok(hint)) => {
                            backoff = PASS_BACKOFF_MIN;
                            since = since.max(hint.time_secs);
                            if let Some(image) = &hint.created_from {
                                self.note_use(image, hint.time_secs);
                            }
                            // A nudge already held back covers this event: its pass lists
                            // after it.
                            held.is_none() && self.event_is_ours(&hint, &looked)
                        }
                        Some(Err(e)) => {
                            debug!(error = %e, "Docker event stream broke.");
                            break;
                        }
                        None => break,
                    }
                };
                if ours && held.is_none() {
                    let due = last_nudge + EVENT_COALESCE;
                    if Instant::now() >= due {
                        last_nudge = Instant::now();
                        self.nudge();
                    } else {
                        held = Some(due);
                    }
                }
            }
            self.metrics.event_stream_restarted();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(PASS_BACKOFF_MAX);
            // Events may have been missed while disconnected: resync.
            self.trigger();
        }
    }

    /// Whether an event is about an object of ours, by the same rules as a listing. A container
    /// event carries its labels. A network or volume event does not: one that is gone was ours
    /// if the last listing said so; a new one is inspected by a task that reports through
    /// `looked` when it is ours (this returns false meanwhile). Unknown rules: assume ours.
    pub(super) fn event_is_ours(
        self: &Arc<Self>,
        hint: &EventHint,
        looked: &UnboundedSender<()>,
    ) -> bool {
        let Some(desired) = lock(&self.desired).clone() else {
            return true;
        };
        if hint.labelled {
            return ownership::is_ours(&hint.object, &desired.rules, &desired.matchers);
        }
        if hint.gone {
            return lock(&self.listed_ours).contains(&(hint.object.kind, hint.object.id.clone()));
        }
        let (ctl, object, looked) = (self.clone(), hint.object.clone(), looked.clone());
        tokio::spawn(async move {
            let ours = match ctl.engine.inspect(&object).await {
                Ok(Some(fresh)) => ownership::is_ours(&fresh, &desired.rules, &desired.matchers),
                // Gone already: nothing to count.
                Ok(None) => false,
                Err(e) => {
                    debug!(error = %e, kind = %object.kind, id = %object.id, "Could not look at a new object; a pass will.");
                    true
                }
            };
            if ours {
                let _ = looked.send(());
            }
        });
        false
    }
}
