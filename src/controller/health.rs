//! What the loop knows about its own health: the engine it talks to, failed passes (logged,
//! counted and shown from one place), a wedged engine, a blast-radius hold, and the gauges.

use super::*;

/// The blast-radius hold names this many of the orphans it holds, in the log and the status.
pub(super) const HOLD_EXAMPLES: usize = 5;

/// This many passes in a row whose listings timed out while `/_ping` answered mean the engine
/// is wedged (the libnetwork exit deadlock), not slow.
pub(super) const WEDGED_AFTER: u32 = 3;

impl<E: Engine> Controller<E> {
    /// Settles what follows from the engine's version: serial exits, and how they are shown.
    pub(super) fn engine_known(&self, engine: EngineInfo) {
        let decision = SerialExits::decide(self.settings().serial_exits, Some(&engine));
        self.engine.set_serial_exits(decision.on);
        self.metrics.set_engine(engine.flavour, decision);
        let explained = decision.explain();
        let changed = self.health().serial_exits != Some(decision);
        if changed {
            info!(engine = %engine, "Engine: {explained}.");
        }
        self.set_health(|h| {
            h.docker_version = Some(engine.to_string());
            h.engine = Some(engine);
            h.serial_exits = Some(decision);
            h.serial_exits_explained = Some(explained);
        });
    }

    /// A pass succeeded within three resync intervals (at least a minute): the loop is alive.
    /// `/healthz` and the systemd watchdog both go by this.
    pub fn reconciled_recently(&self) -> bool {
        let stale = self.settings().resync_interval.max(Duration::from_secs(20)) * 3;
        self.health()
            .last_success
            .is_some_and(|t| Timestamp::now().since(t) < stale)
    }

    pub fn health(&self) -> Health {
        self.health.read().map(|h| h.clone()).unwrap_or_default()
    }

    pub(super) fn set_health(&self, f: impl FnOnce(&mut Health)) {
        if let Ok(mut h) = self.health.write() {
            f(&mut h);
        }
    }

    /// The one place a failed pass is logged, counted and shown in health.
    pub(super) async fn pass_failed(&self, e: &Error, now: Timestamp) {
        self.metrics.reconcile_failed(e.metric_label());
        if matches!(e, Error::Docker(DockerError::Timeout(_))) {
            self.check_wedged().await;
        }
        let safe = e.is_safe_mode();
        if safe {
            error!(error = %e, reason = e.metric_label(), "Safe mode: reaper deletes nothing until its view is trustworthy again.");
        } else {
            warn!(error = %e, reason = e.metric_label(), "Reconcile pass failed; nothing was deleted.");
        }
        self.metrics.set_safe_mode(safe);
        if let Error::Store(StoreError::Io(_) | StoreError::Corrupt(_)) = e {
            self.metrics
                .set_store_up(self.store().backend_name(), false);
        }
        if e.is_docker_down() {
            self.metrics.set_docker_up(false);
        }
        self.set_health(|h| {
            h.last_pass = Some(now);
            h.last_error = Some(e.to_string());
            h.safe_mode = safe;
            match e {
                Error::Store(s) => h.store_error = Some(s.to_string()),
                Error::Docker(d) if e.is_docker_down() => {
                    h.docker_up = false;
                    h.docker_error = Some(d.to_string());
                }
                _ => {}
            }
        });
    }

    /// A listing timed out: if the engine still answers `/_ping`, it may be wedged (the
    /// libnetwork exit deadlock); after `WEDGED_AFTER` such passes in a row, say so and stop
    /// sending removals until it answers again. reaper never restarts dockerd itself.
    pub(super) async fn check_wedged(&self) {
        if self.engine.ping().await.is_err() {
            self.timeouts_while_pinging.store(0, SeqCst);
            return;
        }
        let strikes = self.timeouts_while_pinging.fetch_add(1, SeqCst) + 1;
        if strikes < WEDGED_AFTER || self.health().docker_wedged {
            return;
        }
        error!(
            passes = strikes,
            "Docker is wedged: /_ping answers but listings time out. No removals are sent until \
             it answers again. Take a goroutine dump with `kill -USR1 <dockerd pid>` (dockerd \
             logs where it wrote it), restart dockerd, and upgrade to Docker 20.10.27+ or 23.0+ \
             (moby/libnetwork#2679)."
        );
        self.executor.pause(true);
        self.metrics.set_docker_wedged(true);
        self.set_health(|h| h.docker_wedged = true);
    }

    /// A pass listed everything: whatever wedged the engine is over.
    pub(super) fn engine_answers(&self) {
        self.timeouts_while_pinging.store(0, SeqCst);
        if self.health().docker_wedged {
            info!("Docker answers again; removals resume.");
            self.executor.pause(false);
            self.metrics.set_docker_wedged(false);
            self.set_health(|h| h.docker_wedged = false);
        }
    }

    /// Shows (gauge, status, log) whether the blast-radius guard holds orphan removals back.
    /// Logged when the hold begins or its size changes, not on every pass.
    pub(super) fn note_hold(&self, held: &[Removal], now: Timestamp) {
        let limit = self.settings().max_orphan_removals;
        let before = self.health().blast_radius_held;
        if held.is_empty() {
            if before.is_some() {
                info!("Blast-radius hold ended: orphan removals are within maxOrphanRemovalsPerPass again.");
                self.metrics.set_blast_radius_held(false);
                self.set_health(|h| h.blast_radius_held = None);
            }
            return;
        }
        let examples: Vec<String> = held
            .iter()
            .take(HOLD_EXAMPLES)
            .map(|r| format!("{} {}", r.target.kind(), target_label(&r.target)))
            .collect();
        let hold = BlastRadiusHold {
            orphans: held.len(),
            limit,
            examples,
            since: before.as_ref().map_or(now, |b| b.since),
        };
        if before.as_ref().map(|b| (b.orphans, b.limit)) != Some((hold.orphans, limit)) {
            warn!(
                orphans = hold.orphans,
                max_orphan_removals_per_pass = limit,
                examples = %hold.examples.join(", "),
                "Blast-radius guard: this pass would remove {} orphans, more than \
                 maxOrphanRemovalsPerPass ({limit}), so it removes none of them. A wrong adoption \
                 rule or a lost store looks like this. Check `reaper orphans`; then confirm with \
                 `reaper cleanup --yes`, raise the cap, or fix the rule.",
                hold.orphans
            );
        }
        self.metrics.set_blast_radius_held(true);
        self.set_health(|h| h.blast_radius_held = Some(hold));
    }

    pub(super) fn record_gauges(&self, plan: &Plan, sessions: &[Session], agents: &[Agent]) {
        let pairs =
            |m: &BTreeMap<ResourceKind, i64>| m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>();
        self.metrics
            .set_inventory(&pairs(&plan.observed.owned), &pairs(&plan.observed.orphans));
        let sessions: Vec<(SessionPhase, i64)> = SessionPhase::ALL
            .iter()
            .map(|p| {
                (
                    *p,
                    sessions.iter().filter(|s| s.status.phase == *p).count() as i64,
                )
            })
            .collect();
        let agents: Vec<(AgentPhase, i64)> = AgentPhase::ALL
            .iter()
            .map(|p| {
                (
                    *p,
                    agents.iter().filter(|a| a.status.phase == *p).count() as i64,
                )
            })
            .collect();
        self.metrics.set_phases(&sessions, &agents);
    }
}
