//! `reaper wait`: blocks until records reach a phase or are gone, as `kubectl wait` does. It
//! follows the daemon's watch stream rather than polling, so it returns the moment the change is
//! committed. `reaper delete --wait` waits the same way.

use std::collections::BTreeSet;
use std::time::Duration;

use super::watch::{absent, ended, not_found};
use super::{kind_str, Failure, Kind, Outcome};
use crate::api::client::Client;
use crate::api::wire::{RecordView, WatchEvent, WatchEventType};
use crate::core::model::{AgentPhase, SessionPhase};

/// What `--for` asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `phase=PHASE`, as given: checked against the kind's phases once the kind is known.
    Phase(String),
    /// `delete`: the record does not exist (at once if it never did).
    Deleted,
}

impl Condition {
    pub const HELP: &'static str = "phase=PHASE (any case), or delete";

    pub fn parse(s: &str) -> Result<Condition, String> {
        if s == "delete" {
            return Ok(Condition::Deleted);
        }
        match s.split_once('=') {
            Some(("phase", p)) if !p.is_empty() => Ok(Condition::Phase(p.to_string())),
            _ => Err(format!("{s:?}: write phase=PHASE or delete")),
        }
    }
}

/// The phases a kind's records go through, as the API spells them.
fn phases(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Session => SessionPhase::ALL.iter().map(SessionPhase::as_str).collect(),
        Kind::Agent => AgentPhase::ALL.iter().map(AgentPhase::as_str).collect(),
    }
}

fn phase_of(r: &RecordView) -> &'static str {
    match r {
        RecordView::Session { session, .. } => session.status.phase.as_str(),
        RecordView::Agent { agent, .. } => agent.status.phase.as_str(),
    }
}

/// `reaper wait KIND NAME… --for COND`: prints `KIND/NAME condition met` for each record as it
/// gets there; fails when one does not exist (unless waiting for its deletion), is deleted while
/// awaited for a phase, or `timeout` passes first.
pub async fn wait(
    c: &Client,
    kind: Kind,
    names: &[String],
    condition: &Condition,
    timeout: Duration,
) -> Outcome {
    until(c, kind, names, condition, timeout, |name| {
        println!("{}/{name} condition met", kind_str(kind));
    })
    .await
}

/// Waits as `wait` does and calls `met` for each record once it meets the condition.
pub async fn until(
    c: &Client,
    kind: Kind,
    names: &[String],
    condition: &Condition,
    timeout: Duration,
    mut met: impl FnMut(&str),
) -> Outcome {
    let wanted = match condition {
        Condition::Deleted => None,
        Condition::Phase(p) => {
            let known = phases(kind);
            let Some(phase) = known.iter().find(|k| k.eq_ignore_ascii_case(p)) else {
                return Err(Failure::new(
                    2,
                    format!(
                        "--for phase={p}: {} phases are {}",
                        kind_str(kind),
                        known.join(", ")
                    ),
                ));
            };
            Some(*phase)
        }
    };
    let what = |n: &str| format!("{}/{n}", kind_str(kind));
    let mut pending: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut synced = false;
    let mut failed: Option<Failure> = None;
    let path = format!("/v1/watch/{}", kind.plural());
    let watched = c.watch(&path, |event: WatchEvent| {
        match (event.kind, event.object) {
            (WatchEventType::Error, _) => {
                failed = Some(ended(Some(event.error.unwrap_or_default())));
            }
            (WatchEventType::Bookmark, _) => {
                synced = true;
                // What the listing did not hold does not exist now.
                let absent = absent(pending.iter().copied(), |n| listed.contains(n));
                if wanted.is_some() && !absent.is_empty() {
                    failed = Some(not_found(kind_str(kind), &absent));
                }
                for name in absent.into_iter().filter(|_| wanted.is_none()) {
                    pending.remove(name);
                    met(name);
                }
            }
            (WatchEventType::Deleted, Some(r)) => {
                let name = r.owner().name.to_string();
                if pending.remove(name.as_str()) {
                    match wanted {
                        None => met(&name),
                        Some(phase) => {
                            failed = Some(Failure::new(
                                1,
                                format!("{} was deleted before it was {phase}", what(&name)),
                            ));
                        }
                    }
                }
            }
            (_, Some(r)) => {
                let name = r.owner().name.to_string();
                if !synced {
                    listed.insert(name.clone());
                }
                if wanted.is_some_and(|p| p == phase_of(&r)) && pending.remove(name.as_str()) {
                    met(&name);
                }
            }
            _ => {}
        }
        failed.is_none() && !pending.is_empty()
    });
    match tokio::time::timeout(timeout, watched).await {
        Ok(result) => result?,
        Err(_) => {
            let left: Vec<String> = pending.iter().map(|n| what(n)).collect();
            return Err(Failure::new(
                1,
                format!(
                    "timed out after {timeout:?} waiting for the condition on {}",
                    left.join(", ")
                ),
            ));
        }
    }
    if let Some(f) = failed {
        return Err(f);
    }
    match pending.is_empty() {
        true => Ok(()),
        false => Err(ended(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_takes_a_phase_or_delete_and_says_how_otherwise() {
        assert_eq!(
            Condition::parse("phase=cleaned"),
            Ok(Condition::Phase("cleaned".into()))
        );
        assert_eq!(Condition::parse("delete"), Ok(Condition::Deleted));
        for bad in ["", "phase", "phase=", "deleted", "condition=Ready"] {
            let e = Condition::parse(bad).unwrap_err();
            assert!(e.contains("write phase=PHASE or delete"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_kind_lists_its_phases_as_the_api_spells_them() {
        assert_eq!(
            phases(Kind::Session),
            ["active", "ending", "ended", "expired", "cleaned"]
        );
        assert_eq!(
            phases(Kind::Agent),
            ["starting", "running", "failed", "stopped"]
        );
    }
}
