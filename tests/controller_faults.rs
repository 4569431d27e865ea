//! The controller against a fault-injecting engine (the `Engine` trait is the seam) and a real
//! sled store: a failed listing deletes nothing and enters safe mode; a 409 is retried with
//! backoff instead of spinning; an object whose labels no longer say it is ours on the last
//! look is skipped. End-to-end behaviour against the real engine is tested in `e2e_*`.

use futures_util::Stream;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reaper::controller::{Controller, Settings, StoreSlot};
use reaper::docker::{DockerError, Engine, EventHint, Selectors};
use reaper::inventory::DockerObject;
use reaper::metrics::Metrics;
use reaper::model::{Labels, ResourceKind, Timestamp};
use reaper::ownership::Rules;
use reaper::plan::Scope;

#[derive(Default)]
struct FakeEngine {
    objects: Mutex<Vec<DockerObject>>,
    fail_list: Mutex<bool>,
    remove_error: Mutex<Option<DockerError>>,
    /// Labels the object has on the last look, if they changed since the listing.
    relabel: Mutex<Option<Labels>>,
    removes: AtomicUsize,
}

impl Engine for FakeEngine {
    async fn ping(&self) -> Result<String, DockerError> {
        Ok("fake".into())
    }
    async fn list(&self, _: &Selectors) -> Result<Vec<DockerObject>, DockerError> {
        if *self.fail_list.lock().unwrap() {
            return Err(DockerError::Other("status 500: listing broke".into()));
        }
        Ok(self.objects.lock().unwrap().clone())
    }
    async fn inspect(&self, obj: &DockerObject) -> Result<Option<DockerObject>, DockerError> {
        let found = self
            .objects
            .lock()
            .unwrap()
            .iter()
            .find(|o| o.id == obj.id)
            .cloned();
        Ok(found.map(|mut o| {
            if let Some(l) = self.relabel.lock().unwrap().clone() {
                o.labels = l;
            }
            o
        }))
    }
    async fn stop(&self, _: &str, _: Duration) -> Result<(), DockerError> {
        Ok(())
    }
    async fn remove(&self, obj: &DockerObject) -> Result<(), DockerError> {
        self.removes.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.remove_error.lock().unwrap().clone() {
            return Err(e);
        }
        self.objects.lock().unwrap().retain(|o| o.id != obj.id);
        Ok(())
    }
    fn events(
        &self,
        _: i64,
    ) -> impl Stream<Item = Result<EventHint, DockerError>> + Send + 'static {
        futures_util::stream::pending()
    }
}

fn orphan(id: &str) -> DockerObject {
    DockerObject {
        kind: ResourceKind::Container,
        id: id.into(),
        name: format!("c-{id}"),
        labels: BTreeMap::from([("reaper.session".to_string(), "ghost".to_string())]),
        created: Some(Timestamp(Timestamp::now().0 - 3_600_000)),
        running: false,
        other_refs: Vec::new(),
    }
}

fn controller(engine: Arc<FakeEngine>) -> (Controller<FakeEngine>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (slot, err) = StoreSlot::open(&dir.path().join("store"));
    assert!(err.is_none());
    let settings = Settings {
        rules: Rules::default(),
        orphan_grace: reaper::model::Duration::from_secs(1),
        history_retention: reaper::model::Duration::from_secs(3600),
        resync_interval: Duration::from_secs(30),
        concurrency: 4,
        paths_root: dir.path().join("paths"),
        dry_run: false,
    };
    let metrics = Arc::new(Metrics::new().unwrap());
    (Controller::new(slot, engine, metrics, settings), dir)
}

fn metric(ctl: &Controller<FakeEngine>, line_start: &str) -> f64 {
    ctl.metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test]
async fn a_failed_listing_deletes_nothing_and_enters_safe_mode() {
    let engine = Arc::new(FakeEngine::default());
    engine.objects.lock().unwrap().push(orphan("a"));
    *engine.fail_list.lock().unwrap() = true;
    let (ctl, _dir) = controller(engine.clone());

    assert!(ctl.pass(&Scope::Normal, false).await.is_err());
    assert_eq!(engine.removes.load(Ordering::SeqCst), 0);
    assert!(ctl.health().safe_mode);
    assert_eq!(metric(&ctl, "reaper_safe_mode "), 1.0);

    *engine.fail_list.lock().unwrap() = false;
    let (_, report) = ctl.pass(&Scope::Normal, false).await.unwrap();
    assert_eq!(
        report.removed.len(),
        1,
        "the orphan goes once the view is whole again"
    );
    assert!(!ctl.health().safe_mode);
    assert_eq!(metric(&ctl, "reaper_safe_mode "), 0.0);
}

#[tokio::test]
async fn a_conflict_is_retried_with_backoff_not_in_a_tight_loop() {
    let engine = Arc::new(FakeEngine::default());
    engine.objects.lock().unwrap().push(orphan("busy"));
    *engine.remove_error.lock().unwrap() =
        Some(DockerError::Conflict("removal in progress".into()));
    let (ctl, _dir) = controller(engine.clone());

    let (_, first) = ctl.pass(&Scope::Normal, false).await.unwrap();
    assert_eq!(first.failed.len(), 1);
    // Ten immediate passes: the object is in backoff, so no further delete is attempted.
    for _ in 0..10 {
        let (_, r) = ctl.pass(&Scope::Normal, false).await.unwrap();
        assert_eq!(r.deferred, 1);
    }
    assert_eq!(engine.removes.load(Ordering::SeqCst), 1);
    assert_eq!(
        metric(
            &ctl,
            "reaper_cleanup_failures_total{error=\"conflict\",resource=\"container\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &ctl,
            "reaper_cleanup_attempts_total{resource=\"container\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn an_object_that_is_no_longer_ours_on_the_last_look_is_skipped() {
    let engine = Arc::new(FakeEngine::default());
    engine.objects.lock().unwrap().push(orphan("x"));
    // The listing said ours; the fresh inspect says someone else's.
    *engine.relabel.lock().unwrap() =
        Some(BTreeMap::from([("app".to_string(), "theirs".to_string())]));
    let (ctl, _dir) = controller(engine.clone());

    let (plan, report) = ctl.pass(&Scope::Normal, false).await.unwrap();
    assert_eq!(plan.removals.len(), 1, "the listing made it look removable");
    assert_eq!(report.skipped, 1);
    assert_eq!(engine.removes.load(Ordering::SeqCst), 0);
}
