//! The controller against a fault-injecting engine (the `Engine` trait is the seam) and a real
//! sled store: a failed listing deletes nothing and enters safe mode; a 409 is retried with
//! backoff instead of spinning; an object whose labels no longer say it is ours on the last
//! look is skipped; passes do not wait for removals, yet never call an owner done, or remove
//! what an owner revived meanwhile, while its removals are still queued.
//! End-to-end behaviour against the real engine is tested in `e2e_*`.

use futures_util::Stream;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reaper::controller::executor::Outcome;
use reaper::controller::{Controller, Settings};
use reaper::core::inventory::DockerObject;
use reaper::core::model::{
    Agent, AgentPhase, EndReason, EngineInfo, Flavour, Labels, Name, Record, ResourceKind,
    SerialExitsReason, SerialExitsSetting, Session, SessionPhase, Timestamp,
};
use reaper::core::ownership::Rules;
use reaper::core::plan::Scope;
use reaper::docker::{DockerError, Engine, EventHint, Selectors};
use reaper::metrics::Metrics;
use reaper::store::{Store, API_SOURCE};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct FakeEngine {
    objects: Mutex<Vec<DockerObject>>,
    fail_list: Mutex<bool>,
    remove_error: Mutex<Option<DockerError>>,
    /// Labels the object has on the last look, if they changed since the listing.
    relabel: Mutex<Option<Labels>>,
    removes: AtomicUsize,
    inspects: AtomicUsize,
    lists: AtomicUsize,
    /// Kinds in the order their deletes started.
    removed_kinds: Mutex<Vec<ResourceKind>>,
    /// Held for writing by a test: every inspect (the first step of a removal) waits.
    hold: tokio::sync::RwLock<()>,
    /// The listing shows nothing, though the objects are still there to inspect.
    hidden: Mutex<bool>,
    /// Listed, but gone by the time anyone looks: a listing taken as they were removed.
    stale: Mutex<Vec<DockerObject>>,
    /// Docker events, for whoever follows them.
    events: Mutex<Option<tokio::sync::broadcast::Sender<EventHint>>>,
    /// What `GET /version` says; Docker 20.10.24, the Debian engine, unless set.
    version: Mutex<Option<EngineInfo>>,
    /// Listings time out while `/_ping` answers: the engine is wedged.
    wedged: Mutex<bool>,
    /// What the controller last asked of the exit gate.
    serial_exits: Mutex<Option<bool>>,
}

impl Engine for FakeEngine {
    async fn version(&self) -> Result<EngineInfo, DockerError> {
        Ok(self.version.lock().unwrap().clone().unwrap_or(EngineInfo {
            flavour: Flavour::Docker,
            version: "20.10.24+dfsg1".into(),
            api_version: "1.41".into(),
        }))
    }
    async fn ping(&self) -> Result<(), DockerError> {
        Ok(())
    }
    fn set_serial_exits(&self, on: bool) {
        *self.serial_exits.lock().unwrap() = Some(on);
    }
    async fn list(&self, _: &Selectors) -> Result<Vec<DockerObject>, DockerError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        if *self.fail_list.lock().unwrap() {
            return Err(DockerError::Other("status 500: listing broke".into()));
        }
        if *self.wedged.lock().unwrap() {
            return Err(DockerError::Timeout(Duration::from_secs(30)));
        }
        if *self.hidden.lock().unwrap() {
            return Ok(Vec::new());
        }
        let stale = self.stale.lock().unwrap().clone();
        Ok(self
            .objects
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .chain(stale)
            .collect())
    }
    async fn inspect(&self, obj: &DockerObject) -> Result<Option<DockerObject>, DockerError> {
        let _released = self.hold.read().await;
        self.inspects.fetch_add(1, Ordering::SeqCst);
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
        // A graceful stop takes a while: long enough for anything not held back to overtake.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }
    async fn remove(&self, obj: &DockerObject) -> Result<(), DockerError> {
        self.removes.fetch_add(1, Ordering::SeqCst);
        self.removed_kinds.lock().unwrap().push(obj.kind);
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
        let rx = self
            .events
            .lock()
            .unwrap()
            .as_ref()
            .map(|tx| tx.subscribe());
        futures_util::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            loop {
                match rx.recv().await {
                    Ok(hint) => return Some((Ok(hint), Some(rx))),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        })
    }
}

fn owned(id: &str, label: &str, owner: &str) -> DockerObject {
    let mut o = orphan(id);
    o.labels = BTreeMap::from([(label.to_string(), owner.to_string())]);
    o
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

/// A controller with its removal worker running, as the daemon has it.
fn controller(engine: Arc<FakeEngine>) -> (Arc<Controller<FakeEngine>>, tempfile::TempDir) {
    controller_with(engine, SerialExitsSetting::Auto)
}

fn controller_with(
    engine: Arc<FakeEngine>,
    serial_exits: SerialExitsSetting,
) -> (Arc<Controller<FakeEngine>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let settings = Settings {
        rules: Rules::default(),
        orphan_grace: reaper::core::model::Duration::from_secs(0),
        max_orphan_removals: 50,
        agent_running_grace: reaper::core::model::Duration::from_secs(10),
        cleanup_delays: Default::default(),
        history_retention: reaper::core::model::Duration::from_secs(3600),
        resync_interval: Duration::from_secs(30),
        concurrency: 4,
        paths_root: dir.path().join("paths"),
        dry_run: false,
        serial_exits,
        disk_pressure: Default::default(),
        host_name: "host-a".into(),
    };
    let metrics = Arc::new(Metrics::new().unwrap());
    let ctl = Arc::new(Controller::new(store, engine, metrics, settings));
    tokio::spawn(ctl.clone().run_removals(CancellationToken::new()));
    (ctl, dir)
}

/// A sample as `/metrics` would serve it now.
fn metric(ctl: &Controller<FakeEngine>, line_start: &str) -> f64 {
    ctl.scrape()
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

/// An engine whose data root reaper cannot see (a remote engine; here, one that names none):
/// disk pressure says it is unavailable, in status and metrics, and the pass goes on.
#[tokio::test]
async fn disk_pressure_is_unavailable_when_the_data_root_cannot_be_seen() {
    let engine = Arc::new(FakeEngine::default());
    engine.objects.lock().unwrap().push(orphan("a"));
    let (ctl, _dir) = controller(engine.clone());

    let (_, report) = ctl.pass(&Scope::Normal, false).await.unwrap();
    assert_eq!(
        report.removed.len(),
        1,
        "the rest of the pass is unaffected"
    );
    let disk = ctl.health().disk.expect("measured in the pass");
    assert!(!disk.available && !disk.pressure && disk.evictions.is_empty());
    assert!(
        disk.error
            .as_deref()
            .unwrap_or_default()
            .contains("no data root"),
        "{disk:?}"
    );
    assert_eq!(metric(&ctl, "reaper_disk_pressure_available "), 0.0);
    assert_eq!(metric(&ctl, "reaper_disk_pressure "), 0.0);
}

/// Sixty ripe orphans at once, as after a lost store: the guard holds every one of them until
/// the operator confirms (`reaper cleanup`, a manual pass) or raises the cap.
#[tokio::test]
async fn a_mass_of_orphans_is_held_until_confirmed_or_the_cap_is_raised() {
    let engine = Arc::new(FakeEngine::default());
    engine
        .objects
        .lock()
        .unwrap()
        .extend((0..60).map(|i| orphan(&format!("o{i:02}"))));
    let (ctl, _dir) = controller(engine.clone());

    for _ in 0..3 {
        let (plan, report) = ctl.pass(&Scope::Normal, false).await.unwrap();
        assert!(report.removed.is_empty() && plan.removals.is_empty());
        assert_eq!(plan.held.len(), 60);
    }
    assert_eq!(engine.removes.load(Ordering::SeqCst), 0);
    let held = ctl
        .health()
        .blast_radius_held
        .expect("the hold is in the status");
    assert_eq!((held.orphans, held.limit), (60, 50));
    assert_eq!(held.examples.len(), 5);
    assert!(held.examples[0].starts_with("container c-o00"), "{held:?}");
    assert_eq!(metric(&ctl, "reaper_blast_radius_held "), 1.0);
    assert_eq!(
        metric(&ctl, "reaper_orphans{resource=\"container\"}"),
        60.0,
        "held orphans are still counted"
    );

    // Raising the cap (a SIGHUP reload) ends the hold: the next pass removes them all.
    let mut settings = ctl.settings();
    settings.max_orphan_removals = 60;
    ctl.reload(settings);
    let (_, report) = ctl.pass(&Scope::Normal, false).await.unwrap();
    assert_eq!(report.removed.len(), 60);
    assert!(ctl.health().blast_radius_held.is_none());
    assert_eq!(metric(&ctl, "reaper_blast_radius_held "), 0.0);
}

/// A wrong adoption rule (`sessionLabelKeys: [app]`) makes every `app=…` object an orphan; the
/// guard holds them, and fixing the rule (a reload) ends the hold with nothing removed.
#[tokio::test]
async fn fixing_a_wrong_adoption_rule_ends_the_hold_and_removes_nothing() {
    let engine = Arc::new(FakeEngine::default());
    engine.objects.lock().unwrap().extend((0..55).map(|i| {
        let mut o = orphan(&format!("web{i:02}"));
        o.labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        o
    }));
    let (ctl, _dir) = controller(engine.clone());
    let mut settings = ctl.settings();
    settings.rules.session_label_keys = vec!["app".into()];
    ctl.reload(settings.clone());
    ctl.pass(&Scope::Normal, false).await.unwrap();
    assert_eq!(ctl.health().blast_radius_held.map(|h| h.orphans), Some(55));

    settings.rules.session_label_keys = vec!["session_id".into()];
    ctl.reload(settings);
    let (plan, report) = ctl.pass(&Scope::Normal, false).await.unwrap();
    assert!(plan.held.is_empty() && report.removed.is_empty());
    assert!(ctl.health().blast_radius_held.is_none());
    assert_eq!(metric(&ctl, "reaper_blast_radius_held "), 0.0);
    assert_eq!(engine.removes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_manual_cleanup_confirms_what_the_guard_holds() {
    let engine = Arc::new(FakeEngine::default());
    engine
        .objects
        .lock()
        .unwrap()
        .extend((0..51).map(|i| orphan(&format!("o{i:02}"))));
    let (ctl, _dir) = controller(engine.clone());
    ctl.pass(&Scope::Normal, false).await.unwrap();
    assert!(ctl.health().blast_radius_held.is_some());

    let (_, report) = ctl.pass(&Scope::ManualAll, false).await.unwrap();
    assert_eq!(report.removed.len(), 51);
    // The manual pass itself says nothing about the hold; the next normal one ends it.
    ctl.pass(&Scope::Normal, false).await.unwrap();
    assert!(ctl.health().blast_radius_held.is_none());
    assert_eq!(metric(&ctl, "reaper_blast_radius_held "), 0.0);
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

/// A controller whose store holds `record` and whose engine holds `object`.
async fn one_record_one_object(
    record: Record,
    object: DockerObject,
) -> (
    Arc<FakeEngine>,
    Arc<Controller<FakeEngine>>,
    tempfile::TempDir,
) {
    let engine = Arc::new(FakeEngine::default());
    engine.objects.lock().unwrap().push(object);
    let (ctl, dir) = controller(engine.clone());
    ctl.store()
        .apply(vec![record], API_SOURCE, Timestamp::now())
        .await
        .unwrap();
    (engine, ctl, dir)
}

// Tests whose deadlines are tokio timers (removal backoff, event coalescing, the resync) run on
// a paused clock. Those that write records do not: sled flushes on its own threads, and a paused
// runtime waiting for them would jump its clock past `within`'s limit. Wall-clock deadlines
// (ttl, heartbeat, orphan grace) come from `Timestamp::now`, which a paused clock does not move.
/// Bounds every wait in these tests: a hang fails clearly instead of stalling the suite.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 10 s"))
}

#[tokio::test]
async fn passes_go_on_while_removals_run_and_an_owner_is_done_only_once_they_are() {
    let name = Name::new("run-1").unwrap();
    let (engine, ctl, _dir) = one_record_one_object(
        Record::Session(Session::named(name)),
        owned("c1", "reaper.session", "run-1"),
    )
    .await;
    let store = ctl.store();
    end_session(&ctl, "run-1").await;

    let hold = engine.hold.write().await;
    let (_, first) = within(
        "a pass with a removal stuck",
        ctl.reconcile(&Scope::Normal, false),
    )
    .await
    .unwrap();
    assert_eq!(first.len(), 1);
    // The next pass plans the same object again: it is not queued a second time.
    let (_, second) = within("a second pass", ctl.reconcile(&Scope::Normal, false))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    let depth = r#"reaper_removal_queue_depth{resource="container"}"#;
    assert_eq!(metric(&ctl, depth), 1.0, "one object queued, once");
    // A listing that no longer shows the object must not mark the session Cleaned while its
    // removal (and the count it adds) is still under way.
    *engine.hidden.lock().unwrap() = true;
    let (plan, _) = within("a third pass", ctl.reconcile(&Scope::Normal, false))
        .await
        .unwrap();
    assert!(
        !plan.transitions.is_empty(),
        "the listing alone would call it done"
    );
    assert_eq!(
        store.session("run-1").unwrap().unwrap().status.phase,
        SessionPhase::Ended
    );
    *engine.hidden.lock().unwrap() = false;

    drop(hold);
    for (_, ticket) in first.into_iter().chain(second) {
        assert_eq!(
            within("the removal", ticket.outcome()).await,
            Outcome::Removed
        );
    }
    assert_eq!(
        engine.removes.load(Ordering::SeqCst),
        1,
        "one job, one delete"
    );
    assert_eq!(metric(&ctl, depth), 0.0, "the queue drained");

    within("the confirming pass", ctl.pass(&Scope::Normal, false))
        .await
        .unwrap();
    let s = store.session("run-1").unwrap().unwrap();
    assert_eq!(s.status.phase, SessionPhase::Cleaned);
    assert_eq!(
        s.status.removed.total(),
        1,
        "counted before it was called done"
    );
}

#[tokio::test]
async fn an_owner_revived_while_its_removal_is_queued_keeps_its_objects() {
    let name = Name::new("bot").unwrap();
    let (engine, ctl, _dir) = one_record_one_object(
        Record::Agent(Agent::named(name)),
        owned("c1", "reaper.agent", "bot"),
    )
    .await;
    let store = ctl.store();
    let set_phase = |phase| {
        let store = store.clone();
        async move {
            store
                .update_agent("bot", |a| {
                    a.report(phase, Timestamp::now(), Default::default())
                        .unwrap();
                    Ok(())
                })
                .await
                .unwrap();
        }
    };
    set_phase(AgentPhase::Failed).await;

    let hold = engine.hold.write().await;
    let (_, tickets) = within("a pass", ctl.reconcile(&Scope::Normal, false))
        .await
        .unwrap();
    assert_eq!(tickets.len(), 1, "a failed agent's container is removed");
    // The agent starts again (what `reaper agent report running` records) before the delete.
    set_phase(AgentPhase::Running).await;
    drop(hold);
    let (_, ticket) = tickets.into_iter().next().unwrap();
    assert!(matches!(
        within("the removal", ticket.outcome()).await,
        Outcome::Skipped(_)
    ));
    assert_eq!(engine.removes.load(Ordering::SeqCst), 0);
    assert_eq!(engine.objects.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn removal_order_holds_across_passes() {
    let engine = Arc::new(FakeEngine::default());
    let (ctl, _dir) = controller(engine.clone());
    let mut network = orphan("n1");
    network.kind = ResourceKind::Network;
    let mut container = orphan("c1");
    container.running = true;
    engine.objects.lock().unwrap().push(container);

    // The container's removal is under way when a later pass plans the network.
    let hold = engine.hold.write().await;
    let (_, mut tickets) = within("a pass", ctl.reconcile(&Scope::Normal, false))
        .await
        .unwrap();
    engine.objects.lock().unwrap().push(network);
    let (_, more) = within("a second pass", ctl.reconcile(&Scope::Normal, false))
        .await
        .unwrap();
    tickets.extend(more);
    drop(hold);
    for (_, ticket) in tickets {
        assert_eq!(
            within("a removal", ticket.outcome()).await,
            Outcome::Removed
        );
    }
    assert_eq!(
        *engine.removed_kinds.lock().unwrap(),
        [ResourceKind::Container, ResourceKind::Network],
        "a network waits for every container removal queued before it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_queue_that_only_skipped_does_not_wake_the_loop_again() {
    let engine = Arc::new(FakeEngine::default());
    engine.objects.lock().unwrap().push(orphan("x"));
    *engine.relabel.lock().unwrap() =
        Some(BTreeMap::from([("app".to_string(), "theirs".to_string())]));
    let (ctl, _dir) = controller(engine.clone());
    let stop = CancellationToken::new();
    let lp = tokio::spawn(ctl.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    within("the loop", lp).await.unwrap();
    // The plan keeps proposing it and the re-check keeps refusing: that is one look per resync
    // (30 s here), not a pass per emptied queue.
    let looks = engine.inspects.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&looks),
        "{looks} inspects in 1 s: the loop spins"
    );
}

#[tokio::test]
async fn an_object_already_gone_when_its_turn_comes_is_not_counted() {
    let engine = Arc::new(FakeEngine::default());
    engine.stale.lock().unwrap().push(orphan("went"));
    let (ctl, _dir) = controller(engine.clone());

    let (plan, report) = within("a pass", ctl.pass(&Scope::Normal, false))
        .await
        .unwrap();
    assert_eq!(plan.removals.len(), 1, "the stale listing planned it");
    assert!(report.removed.is_empty());
    assert_eq!(report.skipped, 1);
    assert_eq!(engine.removes.load(Ordering::SeqCst), 0);
    assert_eq!(
        metric(
            &ctl,
            "reaper_cleanup_attempts_total{resource=\"container\"}"
        ),
        0.0,
        "a removal someone else (or an earlier job) did is not ours to count"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_object_that_went_by_other_means_does_not_make_the_loop_spin() {
    let engine = Arc::new(FakeEngine::default());
    engine.objects.lock().unwrap().push(orphan("flaky"));
    *engine.remove_error.lock().unwrap() = Some(DockerError::Conflict("in use".into()));
    let (ctl, _dir) = controller(engine.clone());
    let stop = CancellationToken::new();
    let lp = tokio::spawn(ctl.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        engine.removes.load(Ordering::SeqCst),
        1,
        "the first try failed"
    );
    // Someone else removes it; its backoff (about 1 s) then runs out with nothing to retry.
    engine.objects.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.cancel();
    within("the loop", lp).await.unwrap();
    let lists = engine.lists.load(Ordering::SeqCst);
    assert!(lists <= 5, "{lists} listings in under 3 s: the loop spins");
}

#[tokio::test(start_paused = true)]
async fn a_failed_removal_is_retried_when_its_backoff_ends_not_at_the_resync() {
    let engine = Arc::new(FakeEngine::default());
    engine.objects.lock().unwrap().push(orphan("flaky"));
    *engine.remove_error.lock().unwrap() = Some(DockerError::Conflict("in use".into()));
    let (ctl, _dir) = controller(engine.clone());
    let stop = CancellationToken::new();
    let lp = tokio::spawn(ctl.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    *engine.remove_error.lock().unwrap() = None;
    // Backoff is about 1 s; the resync is 30 s.
    let gone = within("the retry", async {
        while !engine.objects.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    gone.await;
    assert_eq!(engine.removes.load(Ordering::SeqCst), 2);
    stop.cancel();
    within("the loop", lp).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_docker_events_costs_a_few_passes_not_one_each() {
    let engine = Arc::new(FakeEngine::default());
    let (tx, _) = tokio::sync::broadcast::channel(1024);
    *engine.events.lock().unwrap() = Some(tx.clone());
    let (ctl, _dir) = controller(engine.clone());
    let stop = CancellationToken::new();
    let lp = tokio::spawn(ctl.clone().run(stop.clone()));
    let ev = tokio::spawn(ctl.clone().watch_events(stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = engine.lists.load(Ordering::SeqCst);
    // A workflow system starts 200 containers of ours within about a second.
    for i in 0..200 {
        let hint = EventHint {
            object: orphan(&format!("new-{i}")),
            time_secs: Timestamp::now().millis() / 1000,
            labelled: true,
            gone: false,
            created_from: None,
        };
        tx.send(hint).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    within("the loop", lp).await.unwrap();
    within("the event follower", ev).await.unwrap();
    let passes = engine.lists.load(Ordering::SeqCst) - before;
    assert!(
        (1..=10).contains(&passes),
        "{passes} passes for 200 events in about 1.5 s"
    );
}

/// Network and volume events carry no labels: a new one is looked at, a gone one checked
/// against the last listing, and only those of ours start a pass (and so update the counts).
#[tokio::test]
async fn network_and_volume_events_of_ours_start_a_pass_and_others_do_not() {
    let engine = Arc::new(FakeEngine::default());
    let (tx, _) = tokio::sync::broadcast::channel(64);
    *engine.events.lock().unwrap() = Some(tx.clone());
    let (ctl, _dir) = controller(engine.clone());
    // Orphans stay (and are counted) rather than being removed at once.
    let mut settings = ctl.settings();
    settings.orphan_grace = reaper::core::model::Duration::from_secs(3600);
    ctl.reload(settings);
    let stop = CancellationToken::new();
    let lp = tokio::spawn(ctl.clone().run(stop.clone()));
    let ev = tokio::spawn(ctl.clone().watch_events(stop.clone()));
    let settle = || tokio::time::sleep(Duration::from_millis(700));
    settle().await;

    let object = |kind, id: &str, labels: &[(&str, &str)]| DockerObject {
        kind,
        id: id.into(),
        name: id.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        created: Some(Timestamp::now()),
        running: false,
        other_refs: Vec::new(),
    };
    let event = |kind, id: &str, gone| EventHint {
        object: object(kind, id, &[]),
        time_secs: Timestamp::now().millis() / 1000,
        labelled: false,
        gone,
        created_from: None,
    };
    let passes = || engine.lists.load(Ordering::SeqCst);
    let orphans = |kind| ctl.health().orphans.get(&kind).copied().unwrap_or(0);
    let ghost = [("reaper.session", "ghost")];
    let (network, volume) = (ResourceKind::Network, ResourceKind::Volume);

    // Not ours: looked at, no pass.
    engine.objects.lock().unwrap().extend([
        object(network, "n-theirs", &[("team", "x")]),
        object(volume, "v-theirs", &[]),
    ]);
    let before = passes();
    tx.send(event(network, "n-theirs", false)).unwrap();
    tx.send(event(volume, "v-theirs", false)).unwrap();
    settle().await;
    assert_eq!(
        passes(),
        before,
        "an event of someone else's started a pass"
    );
    assert!(
        engine.inspects.load(Ordering::SeqCst) >= 2,
        "new objects are looked at"
    );

    // Ours: a pass, which counts them.
    engine.objects.lock().unwrap().extend([
        object(network, "n-ours", &ghost),
        object(volume, "v-ours", &ghost),
    ]);
    tx.send(event(network, "n-ours", false)).unwrap();
    within("a pass for a network of ours", async {
        while orphans(network) != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tx.send(event(volume, "v-ours", false)).unwrap();
    within("a pass for a volume of ours", async {
        while orphans(volume) != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // Ours goes: the last listing knew it, so a pass counts it gone.
    engine
        .objects
        .lock()
        .unwrap()
        .retain(|o| o.id != "n-ours" && o.id != "v-ours");
    tx.send(event(network, "n-ours", true)).unwrap();
    tx.send(event(volume, "v-ours", true)).unwrap();
    within("a pass for objects of ours gone", async {
        while orphans(network) + orphans(volume) != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    settle().await;

    // Someone else's goes: no pass.
    let before = passes();
    engine.objects.lock().unwrap().clear();
    tx.send(event(network, "n-theirs", true)).unwrap();
    tx.send(event(volume, "v-theirs", true)).unwrap();
    settle().await;
    assert_eq!(
        passes(),
        before,
        "a removal of someone else's started a pass"
    );

    stop.cancel();
    within("the loop", lp).await.unwrap();
    within("the event follower", ev).await.unwrap();
}

/// Marks a session ended, as `reaper session end` does; the store's change stream wakes the
/// loop.
async fn end_session(ctl: &Controller<FakeEngine>, name: &str) {
    ctl.store()
        .update_session(name, |s| {
            s.end(EndReason::Succeeded, Timestamp::now(), Default::default());
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_burst_of_ends_while_removals_queue_up_makes_one_pass_not_one_each() {
    let engine = Arc::new(FakeEngine::default());
    let (ctl, _dir) = controller(engine.clone());
    let names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    let mut records = Vec::new();
    for (i, n) in names.iter().enumerate() {
        records.push(Record::Session(Session::named(Name::new(n).unwrap())));
        // The first session alone fills the four slots and three more rounds.
        let count = if i == 0 { 16 } else { 1 };
        for k in 0..count {
            let c = owned(&format!("{n}-c{k}"), "reaper.session", n);
            engine.objects.lock().unwrap().push(c);
        }
    }
    ctl.store()
        .apply(records, API_SOURCE, Timestamp::now())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let lp = tokio::spawn(ctl.clone().run(stop.clone()));
    let depth = r#"reaper_removal_queue_depth{resource="container"}"#;

    let hold = engine.hold.write().await;
    end_session(&ctl, "s0").await;
    within("the first session's removals to queue", async {
        while metric(&ctl, depth) < 16.0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let before = engine.lists.load(Ordering::SeqCst);
    for n in &names[1..] {
        end_session(&ctl, n).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Every end is still planned, within the coalescing bound, though no slot is free.
    within("the other sessions' removals to queue", async {
        while metric(&ctl, depth) < 35.0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let passes = engine.lists.load(Ordering::SeqCst) - before;
    assert!(
        (1..=3).contains(&passes),
        "{passes} passes for 19 ends while the queue was backlogged"
    );

    drop(hold);
    within("the queue to drain", async {
        while metric(&ctl, depth) > 0.0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(engine.removes.load(Ordering::SeqCst), 35);
    stop.cancel();
    within("the loop", lp).await.unwrap();
}

#[tokio::test]
async fn serial_exits_follow_the_engine_version_unless_the_config_says_otherwise() {
    let engine = Arc::new(FakeEngine::default());
    let (ctl, _dir) = controller(engine.clone());
    ctl.pass(&Scope::Normal, false).await.unwrap();
    assert_eq!(*engine.serial_exits.lock().unwrap(), Some(true));
    let h = ctl.health();
    assert_eq!(
        h.serial_exits.map(|s| s.reason),
        Some(SerialExitsReason::AffectedVersion)
    );
    let why = h.serial_exits_explained.unwrap_or_default();
    assert!(why.contains("moby/libnetwork#2679"), "{why}");
    assert_eq!(
        metric(
            &ctl,
            "reaper_engine_info{flavour=\"docker\",reason=\"affected_version\",serial_exits=\"on\"}"
        ),
        1.0
    );

    let fixed = Arc::new(FakeEngine::default());
    *fixed.version.lock().unwrap() = Some(EngineInfo {
        flavour: Flavour::Docker,
        version: "24.0.7".into(),
        api_version: "1.43".into(),
    });
    let (ctl, _dir) = controller(fixed.clone());
    ctl.pass(&Scope::Normal, false).await.unwrap();
    assert_eq!(*fixed.serial_exits.lock().unwrap(), Some(false));

    let forced_off = Arc::new(FakeEngine::default());
    let (ctl, _dir) = controller_with(forced_off.clone(), SerialExitsSetting::Off);
    ctl.pass(&Scope::Normal, false).await.unwrap();
    assert_eq!(*forced_off.serial_exits.lock().unwrap(), Some(false));
    assert_eq!(
        ctl.health().serial_exits.map(|s| s.reason),
        Some(SerialExitsReason::ConfigOff)
    );
}

#[tokio::test]
async fn a_wedged_engine_gets_no_more_removals_until_it_answers_again() {
    let engine = Arc::new(FakeEngine::default());
    for id in ["w1", "w2", "w3", "w4", "w5", "w6"] {
        engine.objects.lock().unwrap().push(orphan(id));
    }
    let (ctl, _dir) = controller(engine.clone());
    // Four removals start (concurrency 4) and hang on the engine; two wait in the queue.
    let held = engine.hold.write().await;
    let (_, tickets) = ctl.reconcile(&Scope::Normal, false).await.unwrap();
    assert_eq!(tickets.len(), 6);
    // Lets the removal worker start the four it has slots for.
    tokio::time::sleep(Duration::from_millis(50)).await;

    *engine.wedged.lock().unwrap() = true;
    for pass in 1..=3 {
        assert!(ctl.reconcile(&Scope::Normal, false).await.is_err());
        assert_eq!(ctl.health().docker_wedged, pass == 3, "after {pass} passes");
    }
    assert_eq!(metric(&ctl, "reaper_docker_wedged "), 1.0);
    assert!(
        !ctl.health().safe_mode,
        "a wedged engine is not an untrustworthy view"
    );

    // The four in flight finish (each call has its own timeout); the two queued do not start.
    drop(held);
    within("the removals in flight", async {
        while engine.removes.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        engine.removes.load(Ordering::SeqCst),
        4,
        "a removal was sent to a wedged engine"
    );

    *engine.wedged.lock().unwrap() = false;
    ctl.reconcile(&Scope::Normal, false).await.unwrap();
    assert!(!ctl.health().docker_wedged);
    assert_eq!(metric(&ctl, "reaper_docker_wedged "), 0.0);
    within("the queued removals after the engine answered", async {
        while engine.removes.load(Ordering::SeqCst) < 6 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A cleanup by name of an owner with no record (`reaper cleanup agent NAME`) goes through the
/// same re-check on a fresh look as every removal: an object that is no longer the name's, or
/// that a live owner claims now, is skipped.
#[tokio::test]
async fn a_cleanup_by_name_without_a_record_is_rechecked_before_each_delete() {
    use reaper::core::model::{OwnerKind, OwnerRef};
    let engine = Arc::new(FakeEngine::default());
    engine
        .objects
        .lock()
        .unwrap()
        .push(owned("x", "reaper.agent", "my-agent"));
    let (ctl, _dir) = controller(engine.clone());
    ctl.store()
        .apply(
            vec![Record::Session(Session::named(Name::new("live").unwrap()))],
            API_SOURCE,
            Timestamp::now(),
        )
        .await
        .unwrap();
    let scope = Scope::ManualOwner(OwnerRef {
        kind: OwnerKind::Agent,
        name: Name::new("my-agent").unwrap(),
    });
    let relabel = |pairs: &[(&str, &str)]| {
        *engine.relabel.lock().unwrap() = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    };

    // On the last look it is another agent's.
    relabel(&[("reaper.agent", "my-agent2")]);
    let (plan, report) = ctl.pass(&scope, false).await.unwrap();
    assert_eq!(plan.removals.len(), 1, "the listing made it the name's");
    assert_eq!(plan.removals[0].because, ["label reaper.agent=my-agent"]);
    assert_eq!(report.skipped, 1);
    // On the last look a live session claims it too.
    relabel(&[("reaper.agent", "my-agent"), ("reaper.session", "live")]);
    let (_, report) = ctl.pass(&scope, false).await.unwrap();
    assert_eq!(report.skipped, 1);
    assert_eq!(engine.removes.load(Ordering::SeqCst), 0);

    // Still the name's alone: it goes, and no record is made for the name.
    *engine.relabel.lock().unwrap() = None;
    let (_, report) = ctl.pass(&scope, false).await.unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(engine.removes.load(Ordering::SeqCst), 1);
    assert!(ctl.store().agent("my-agent").unwrap().is_none());
}
