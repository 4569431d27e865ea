//! Carries out planned removals: stage by stage in removal order (containers, networks, volumes,
//! images, paths), with bounded parallelism, a fresh ownership re-check right before each delete,
//! and per-object exponential backoff so a stuck object never spins.
//! It does not know why an action was chosen.

use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

use crate::docker::Engine;
use crate::inventory::{DockerObject, ObjectKey};
use crate::model::{ErrorClass, ResourceKind};
use crate::paths;
use crate::plan::{Removal, Target};

/// Backoff after a failed removal: 1 s doubling up to 5 min, with jitter.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// After this many consecutive failures an object is reported on its owner's status.
pub const FAILING_AFTER: u32 = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Removed,
    Failed {
        class: ErrorClass,
        message: String,
        failures: u32,
    },
    /// The fresh look showed it is no longer ours to remove (owner came back, tag moved).
    Skipped(String),
    /// Still backing off from an earlier failure.
    Deferred,
}

#[derive(Clone, Debug)]
pub struct Executed {
    pub removal: Removal,
    pub outcome: Outcome,
}

/// The re-check the executor applies to the fresh object: may this still be removed?
pub type Recheck<'a> = dyn Fn(&DockerObject, &Removal) -> bool + Send + Sync + 'a;

#[derive(Debug)]
struct Backoff {
    failures: u32,
    retry_at: Instant,
}

pub struct Executor {
    concurrency: usize,
    paths_root: PathBuf,
    backoff: Mutex<HashMap<ObjectKey, Backoff>>,
}

impl Executor {
    pub fn new(concurrency: usize, paths_root: PathBuf) -> Self {
        Executor {
            concurrency: concurrency.max(1),
            paths_root,
            backoff: Mutex::new(HashMap::new()),
        }
    }

    /// The earliest instant a deferred object may be retried.
    pub fn next_retry(&self) -> Option<Instant> {
        self.backoff.lock().ok()?.values().map(|b| b.retry_at).min()
    }

    pub async fn execute<E: Engine>(
        &self,
        engine: &E,
        removals: Vec<Removal>,
        recheck: &Recheck<'_>,
    ) -> Vec<Executed> {
        let mut out = Vec::with_capacity(removals.len());
        let mut by_kind: HashMap<ResourceKind, Vec<Removal>> = HashMap::new();
        for r in removals {
            by_kind.entry(r.target.kind()).or_default().push(r);
        }
        for kind in ResourceKind::ALL {
            let Some(stage) = by_kind.remove(&kind) else {
                continue;
            };
            let done: Vec<Executed> = futures_util::stream::iter(stage)
                .map(|r| async move {
                    let outcome = self.one(engine, &r, recheck).await;
                    Executed {
                        removal: r,
                        outcome,
                    }
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            out.extend(done);
        }
        out
    }

    async fn one<E: Engine>(&self, engine: &E, r: &Removal, recheck: &Recheck<'_>) -> Outcome {
        let key = key_of(&r.target);
        if self.deferred(&key) {
            return Outcome::Deferred;
        }
        let result = match &r.target {
            Target::Docker(obj) => remove_docker(engine, obj, r, recheck).await,
            Target::Path { path } => {
                let (root, path) = (self.paths_root.clone(), path.clone());
                match tokio::task::spawn_blocking(move || paths::remove_below(&root, &path)).await {
                    Ok(Ok(_)) => Ok(true),
                    Ok(Err(e)) => Err((ErrorClass::Io, e.to_string())),
                    Err(e) => Err((ErrorClass::Other, e.to_string())),
                }
            }
        };
        match result {
            Ok(true) => {
                self.forget(&key);
                Outcome::Removed
            }
            Ok(false) => Outcome::Skipped("no longer removable on a fresh look".into()),
            Err((class, message)) => Outcome::Failed {
                class,
                message,
                failures: self.failed(key),
            },
        }
    }

    fn deferred(&self, key: &ObjectKey) -> bool {
        self.backoff
            .lock()
            .is_ok_and(|b| b.get(key).is_some_and(|b| Instant::now() < b.retry_at))
    }

    fn forget(&self, key: &ObjectKey) {
        if let Ok(mut b) = self.backoff.lock() {
            b.remove(key);
        }
    }

    fn failed(&self, key: ObjectKey) -> u32 {
        let Ok(mut map) = self.backoff.lock() else {
            return 1;
        };
        let b = map.entry(key).or_insert(Backoff {
            failures: 0,
            retry_at: Instant::now(),
        });
        b.failures += 1;
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << b.failures.min(16).saturating_sub(1))
            .min(BACKOFF_MAX);
        b.retry_at = Instant::now() + exp + jitter(exp / 5);
        b.failures
    }
}

/// Ok(true): gone. Ok(false): skipped by the re-check. Err: failed with a class.
async fn remove_docker<E: Engine>(
    engine: &E,
    obj: &DockerObject,
    r: &Removal,
    recheck: &Recheck<'_>,
) -> Result<bool, (ErrorClass, String)> {
    let fail = |e: crate::docker::DockerError| (e.class(), e.to_string());
    let Some(fresh) = engine.inspect(obj).await.map_err(fail)? else {
        return Ok(true);
    };
    // Never trust the listing alone: the labels on the object itself must still say it is ours,
    // and a reference must still point at the image that was planned.
    if fresh.id != obj.id || !recheck(&fresh, r) {
        return Ok(false);
    }
    if fresh.kind == ResourceKind::Container && fresh.running {
        match engine.stop(&fresh.id, r.stop_timeout.std()).await {
            Ok(()) | Err(crate::docker::DockerError::NotFound) => {}
            Err(e) => return Err(fail(e)),
        }
    }
    engine.remove(&fresh).await.map(|()| true).map_err(fail)
}

fn key_of(t: &Target) -> ObjectKey {
    match t {
        Target::Docker(o) => o.key(),
        Target::Path { path } => ObjectKey {
            kind: ResourceKind::Path,
            target: path.to_string(),
        },
    }
}

fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let max_ms = max.as_millis().max(1) as u64;
    Duration::from_millis(u64::from(nanos) % max_ms)
}
