//! Over 500 lines: 450 of code; the rest is the planner's unit and property tests, kept beside the safety rules they pin.
//!
//! The planner: desired state + actual state + now -> what to remove and which records change.
//!
//! Pure and deterministic: it calls neither Docker nor the store, so every safety rule is
//! unit- and property-tested here. Who is live, and what the others lose, is `liveness`; the
//! controller asks this module which paths to look for (`paths_to_probe`) and re-checks by
//! `liveness::LiveOwners`. Two rules above all others:
//! - an object nobody claims (see `ownership`) is never removed;
//! - an object any live owner claims is never removed.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::core::inventory::{Actual, DockerObject};
use crate::core::liveness::{agent_ref, default_stop, session_ref, Standing, Standings};
use crate::core::model::{
    Agent, AgentPhase, CleanupDelays, CleanupReason, Duration, EndReason, Fleet, HostState, Name,
    OwnerKind, OwnerRef, RelPath, ResourceKind, Session, SessionPhase, Timestamp,
};
use crate::core::ownership::{self, Matchers, Rules};

/// The knobs the planner needs from the daemon config.
#[derive(Clone, Debug)]
pub struct PlanConfig {
    pub rules: Rules,
    pub orphan_grace: Duration,
    pub history_retention: Duration,
    /// When this daemon started: heartbeats never lapse because reaper itself was down.
    pub restarted_at: Timestamp,
    /// How long a `Running` agent may have no running container before it is set `Stopped`.
    pub agent_running_grace: Duration,
    /// The daemon's `cleanupDelay` and `cleanupDelayOnFailure`.
    pub cleanup_delays: CleanupDelays,
    /// The blast-radius guard: a normal pass that would remove more orphans than this removes
    /// none of them (a wrong adoption rule or a lost store, not a leak).
    pub max_orphan_removals: usize,
    /// This host and the live hosts of the fleet: whose rows a session waits for.
    pub fleet: Fleet,
}

/// Which pass this is: the normal reconcile, or an operator's `reaper cleanup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Normal,
    /// Remove everything removable now, orphans too, without waiting for their grace period.
    ManualAll,
    /// Remove everything of this owner now, live or not.
    ManualOwner(OwnerRef),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Docker(DockerObject),
    Path { path: RelPath },
}

impl Scope {
    /// The owner a manual cleanup targets: it loses everything, whatever its record says.
    pub fn forced(&self) -> Option<&OwnerRef> {
        match self {
            Scope::ManualOwner(o) => Some(o),
            Scope::Normal | Scope::ManualAll => None,
        }
    }
}

/// The paths worth looking for on disk before planning: those an owner loses in this pass and
/// no live owner declares. A Cleaned session's paths are never among them.
pub fn paths_to_probe(
    sessions: &[Session],
    agents: &[Agent],
    scope: &Scope,
    now: Timestamp,
    restarted_at: Timestamp,
    delays: CleanupDelays,
) -> BTreeSet<RelPath> {
    Standings::new(sessions, agents, scope.forced(), now, restarted_at, delays).paths_to_probe()
}

impl Serialize for Target {
    /// Both shapes carry `kind`, so clients read one flat object.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match self {
            Target::Docker(o) => o.serialize(s),
            Target::Path { path } => {
                let mut st = s.serialize_struct("Target", 3)?;
                st.serialize_field("kind", &ResourceKind::Path)?;
                st.serialize_field("id", path)?;
                st.serialize_field("name", path)?;
                st.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Target {
    /// The flat shape `serialize` writes: a path is the one kind that is not a Docker object.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let o = DockerObject::deserialize(d)?;
        if o.kind != ResourceKind::Path {
            return Ok(Target::Docker(o));
        }
        RelPath::new(&o.id)
            .map(|path| Target::Path { path })
            .map_err(serde::de::Error::custom)
    }
}

impl Target {
    pub fn kind(&self) -> ResourceKind {
        match self {
            Target::Docker(o) => o.kind,
            Target::Path { .. } => ResourceKind::Path,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    pub target: Target,
    /// The owner it is removed on behalf of (for orphans: the missing owner it names).
    pub owner: Option<OwnerRef>,
    pub reason: CleanupReason,
    /// Containers only: the graceful stop timeout before removal.
    pub stop_timeout: Duration,
    /// For `reaper cleanup session|agent NAME`: why each object is NAME's (the ownership rule,
    /// or the record field that declares a path). Empty in other passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub because: Vec<String>,
    /// Stop the running container, and remove nothing: its owner's cleanup is delayed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_only: bool,
}

/// An orphan still inside its grace period: reported by `reaper orphans`, not removed yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Waiting {
    pub object: DockerObject,
    pub owner: Option<OwnerRef>,
    /// When it becomes removable; `None` when its age is unknown (then never by itself).
    pub removable_at: Option<Timestamp>,
}

/// A status change the controller must persist (flushed) before acting on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Transition {
    /// An Active session passed its ttl or heartbeat deadline.
    Expire {
        name: Name,
        reason: EndReason,
        at: Timestamp,
    },
    /// An `Ending` session's cleanup delay passed: on to `Ended` or `Expired`, and cleanup.
    DelayOver { name: Name },
    /// This host's engine holds nothing more of a session that ended (or is being deleted):
    /// its host row turns `done`, and the session `Cleaned` once every live host's is.
    HostDone { name: Name, ended_at: Timestamp },
    /// A Failed agent's objects are gone, or a Running agent has no running container.
    AgentStopped {
        name: Name,
        failed_since: Option<Timestamp>,
    },
    /// A deleted record's objects are gone, or its history expired: remove the record.
    Purge {
        owner: OwnerRef,
        deleting_since: Option<Timestamp>,
    },
}

impl Transition {
    /// The record it changes.
    pub fn owner(&self) -> OwnerRef {
        let session = |name: &Name| OwnerRef {
            kind: OwnerKind::Session,
            name: name.clone(),
        };
        match self {
            Transition::Expire { name, .. }
            | Transition::DelayOver { name }
            | Transition::HostDone { name, .. } => session(name),
            Transition::AgentStopped { name, .. } => OwnerRef {
                kind: OwnerKind::Agent,
                name: name.clone(),
            },
            Transition::Purge { owner, .. } => owner.clone(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// Ours, with a live owner.
    pub owned: BTreeMap<ResourceKind, i64>,
    /// Ours, ownerless: in the grace period or pending removal.
    pub orphans: BTreeMap<ResourceKind, i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub removals: Vec<Removal>,
    pub waiting: Vec<Waiting>,
    pub transitions: Vec<Transition>,
    /// The next instant something changes by itself (a deadline, a grace period, a purge).
    pub next_wake: Option<Timestamp>,
    pub observed: Observed,
    /// Orphan removals held back by the blast-radius guard: more were due in this pass than
    /// `max_orphan_removals`, so none of them is in `removals`. Empty unless held.
    pub held: Vec<Removal>,
}

pub fn plan(
    sessions: &[Session],
    agents: &[Agent],
    actual: &Actual,
    now: Timestamp,
    cfg: &PlanConfig,
    scope: &Scope,
) -> Plan {
    let mut plan = Plan::default();
    for kind in ResourceKind::DOCKER {
        plan.observed.owned.insert(kind, 0);
        plan.observed.orphans.insert(kind, 0);
    }
    let matchers = Matchers::new(sessions, agents, &cfg.rules);
    let mut wake = Wake(None);
    let standing = Standings::new(
        sessions,
        agents,
        scope.forced(),
        now,
        cfg.restarted_at,
        cfg.cleanup_delays,
    );
    for (_, until) in standing.live() {
        wake.at(until);
    }
    for (_, until) in standing.delayed() {
        wake.at(Some(until));
    }

    // Owners with something still to remove, and agents with a running container.
    let mut pending: BTreeSet<OwnerRef> = BTreeSet::new();
    let mut has_running: BTreeSet<OwnerRef> = BTreeSet::new();

    for obj in &actual.objects {
        let claims = ownership::claims(obj, &cfg.rules, &matchers);
        if claims.is_empty() {
            continue;
        }
        if obj.running {
            has_running.extend(
                claims
                    .iter()
                    .filter(|c| c.kind == OwnerKind::Agent)
                    .cloned(),
            );
        }
        let states: Vec<(&OwnerRef, Option<&Standing>)> =
            claims.iter().map(|c| (c, standing.get(c))).collect();
        if states.iter().any(|(_, s)| s.is_some_and(Standing::is_live)) {
            *plan.observed.owned.entry(obj.kind).or_default() += 1;
            continue;
        }
        // An owner within its cleanup delay keeps everything it claims; its running containers
        // are stopped, to free CPU and memory while what it left stays to be looked at.
        let delayed = states.iter().find_map(|(c, s)| match s {
            Some(Standing::Delayed {
                reason,
                stop_timeout,
                ..
            }) => Some((*c, *reason, *stop_timeout)),
            _ => None,
        });
        if let Some((owner, reason, stop_timeout)) = delayed {
            *plan.observed.owned.entry(obj.kind).or_default() += 1;
            if obj.kind == ResourceKind::Container && obj.running {
                plan.removals.push(Removal {
                    target: Target::Docker(obj.clone()),
                    owner: Some(owner.clone()),
                    reason,
                    stop_timeout,
                    because: Vec::new(),
                    stop_only: true,
                });
            }
            continue;
        }
        let removing: Vec<(&OwnerRef, &Standing)> = states
            .iter()
            .filter_map(|(c, s)| s.filter(|s| s.removes(obj.kind)).map(|s| (*c, s)))
            .collect();
        if let Some((
            owner,
            Standing::Dead {
                reason,
                stop_timeout,
                ..
            },
        )) = removing.first()
        {
            pending.extend(removing.iter().map(|(c, _)| (*c).clone()));
            plan.removals.push(Removal {
                target: Target::Docker(obj.clone()),
                owner: Some((*owner).clone()),
                reason: *reason,
                stop_timeout: *stop_timeout,
                because: Vec::new(),
                stop_only: false,
            });
            continue;
        }
        if states.iter().any(|(_, s)| s.is_some()) {
            // Its owner exists and ended, but asked to keep this kind (e.g. `cleanup.images: false`).
            continue;
        }
        // Ours, and nobody who claims it exists: an orphan.
        *plan.observed.orphans.entry(obj.kind).or_default() += 1;
        if matches!(scope, Scope::ManualOwner(_)) {
            continue;
        }
        // The grace counts from when the object appeared to reaper, if later than its creation
        // (a pulled or cached image tagged a moment ago). Unknown creation: never by itself.
        let seen = actual.first_seen.get(&obj.sighting_key()).copied();
        let removable_at = obj
            .created
            .map(|c| seen.map_or(c, |s| c.max(s)).plus(cfg.orphan_grace));
        let ripe = removable_at.is_some_and(|at| now >= at);
        if *scope == Scope::ManualAll || ripe {
            let reason = if *scope == Scope::ManualAll {
                CleanupReason::Manual
            } else {
                CleanupReason::Orphan
            };
            plan.removals.push(Removal {
                target: Target::Docker(obj.clone()),
                owner: claims.first().cloned(),
                reason,
                stop_timeout: default_stop(),
                because: Vec::new(),
                stop_only: false,
            });
        } else {
            wake.at(removable_at);
            plan.waiting.push(Waiting {
                object: obj.clone(),
                owner: claims.first().cloned(),
                removable_at,
            });
        }
    }

    // Paths of dead owners, unless a live owner declares the same path.
    let live_paths = standing.live_paths();
    for (owner, st) in standing.iter() {
        if let Standing::Dead { reason, paths, .. } = st {
            for p in paths
                .iter()
                .filter(|p| actual.paths.contains(*p) && !live_paths.contains(p))
            {
                pending.insert(owner.clone());
                plan.removals.push(Removal {
                    target: Target::Path { path: p.clone() },
                    owner: Some(owner.clone()),
                    reason: *reason,
                    stop_timeout: default_stop(),
                    because: Vec::new(),
                    stop_only: false,
                });
            }
        }
    }

    if let Scope::ManualOwner(target) = scope {
        plan.removals.retain(|r| r.owner.as_ref() == Some(target));
        for r in &mut plan.removals {
            r.because = match &r.target {
                Target::Docker(obj) => ownership::attribution(obj, target, &cfg.rules, &matchers),
                Target::Path { .. } if target.kind == OwnerKind::Agent => {
                    vec!["spec.buildDir of its record".into()]
                }
                Target::Path { .. } => vec!["spec.paths of its record".into()],
            };
        }
    }
    // The blast-radius guard. Only orphans count (an owner that ended, expired or was deleted
    // loses its objects whatever their number), and only in a normal pass: `reaper cleanup`
    // is the operator's confirmation.
    if *scope == Scope::Normal {
        let orphans = plan
            .removals
            .iter()
            .filter(|r| r.reason == CleanupReason::Orphan)
            .count();
        if orphans > cfg.max_orphan_removals {
            let (held, kept) = std::mem::take(&mut plan.removals)
                .into_iter()
                .partition(|r| r.reason == CleanupReason::Orphan);
            plan.held = held;
            plan.removals = kept;
        }
    }
    if *scope == Scope::Normal {
        plan.transitions = transitions(
            sessions,
            agents,
            &standing,
            &pending,
            &has_running,
            now,
            cfg,
            &mut wake,
        );
    }
    let order = |a: &Removal, b: &Removal| {
        (a.target.kind(), target_name(&a.target)).cmp(&(b.target.kind(), target_name(&b.target)))
    };
    plan.removals.sort_by(order);
    plan.held.sort_by(order);
    plan.next_wake = wake.0;
    plan
}

#[allow(clippy::too_many_arguments)]
fn transitions(
    sessions: &[Session],
    agents: &[Agent],
    standing: &Standings,
    pending: &BTreeSet<OwnerRef>,
    has_running: &BTreeSet<OwnerRef>,
    now: Timestamp,
    cfg: &PlanConfig,
    wake: &mut Wake,
) -> Vec<Transition> {
    let mut out = Vec::new();
    for s in sessions {
        let owner = session_ref(s);
        let name = s.metadata.name.clone();
        let busy = pending.contains(&owner);
        if let Some((at, reason)) = s.deadline(cfg.restarted_at).filter(|(at, _)| now >= *at) {
            if s.status.deleting_since.is_none() {
                out.push(Transition::Expire {
                    name: name.clone(),
                    reason,
                    at,
                });
            }
        }
        // Cleanup latency counts from when its objects could go: after any delay.
        let ended_at = || {
            s.status
                .ended_at
                .or(s.deadline(cfg.restarted_at).map(|d| d.0))
                .unwrap_or(now)
                .max(s.status.cleanup_after.unwrap_or_default())
        };
        let fleet = &cfg.fleet;
        let own_row = s.status.host_row(&fleet.this).map(|r| r.state);
        if s.status.deleting_since.is_some() {
            // Purged once every live host is done, this one included.
            if !busy && s.status.all_live_done(fleet, true) {
                out.push(Transition::Purge {
                    owner,
                    deleting_since: s.status.deleting_since,
                });
            } else if !busy && own_row != Some(HostState::Done) {
                out.push(Transition::HostDone {
                    name,
                    ended_at: ended_at(),
                });
            }
            continue;
        }
        match s.status.phase {
            SessionPhase::Ending => match s.status.cleanup_after {
                Some(until) if now < until => wake.at(Some(until)),
                _ => out.push(Transition::DelayOver { name }),
            },
            SessionPhase::Cleaned => {
                // A host that was gone (or pending) when it was cleaned, back and finished.
                if !busy && own_row.is_some_and(|r| r != HostState::Done) {
                    out.push(Transition::HostDone {
                        name: name.clone(),
                        ended_at: ended_at(),
                    });
                }
                let purge_at = s
                    .status
                    .cleaned_at
                    .unwrap_or(now)
                    .plus(cfg.history_retention);
                if now >= purge_at {
                    out.push(Transition::Purge {
                        owner,
                        deleting_since: None,
                    });
                } else {
                    wake.at(Some(purge_at));
                }
            }
            _ if standing.get(&owner).is_some_and(Standing::keeps) => {}
            // Written when its row is not done yet, or the rows would now let it be Cleaned:
            // never again in every pass.
            _ if !busy && s.status.done_report_due(fleet) => out.push(Transition::HostDone {
                name,
                ended_at: ended_at(),
            }),
            _ => {}
        }
    }
    for a in agents {
        let owner = agent_ref(a);
        let busy = pending.contains(&owner);
        if a.status.deleting_since.is_some() {
            if !busy {
                out.push(Transition::Purge {
                    owner,
                    deleting_since: a.status.deleting_since,
                });
            }
            continue;
        }
        match a.status.phase {
            AgentPhase::Failed if !busy && a.cleanup_delayed(now).is_none() => {
                out.push(Transition::AgentStopped {
                    name: a.metadata.name.clone(),
                    failed_since: Some(a.status.phase_since),
                })
            }
            AgentPhase::Running if !has_running.contains(&owner) => {
                let at = a.status.phase_since.plus(cfg.agent_running_grace);
                if now >= at {
                    out.push(Transition::AgentStopped {
                        name: a.metadata.name.clone(),
                        failed_since: None,
                    });
                } else {
                    wake.at(Some(at));
                }
            }
            _ => {}
        }
    }
    out
}

fn target_name(t: &Target) -> &str {
    match t {
        Target::Docker(o) => o.target(),
        Target::Path { path } => path.as_str(),
    }
}

/// The earliest of several future instants.
struct Wake(Option<Timestamp>);

impl Wake {
    fn at(&mut self, t: Option<Timestamp>) {
        if let Some(t) = t {
            self.0 = Some(self.0.map_or(t, |w| w.min(t)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::*;
    use crate::core::model::Duration as D;

    fn cfg() -> PlanConfig {
        PlanConfig {
            rules: Rules::default(),
            orphan_grace: D::from_secs(300),
            history_retention: D::from_secs(86_400),
            restarted_at: T0,
            agent_running_grace: D::from_secs(10),
            cleanup_delays: CleanupDelays::default(),
            max_orphan_removals: 50,
            fleet: Fleet::new("host-a", Default::default()),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp(T0.0 + secs * 1000)
    }

    fn run(
        sessions: &[Session],
        agents: &[Agent],
        objects: Vec<DockerObject>,
        now: Timestamp,
    ) -> Plan {
        run_with(sessions, agents, objects, now, &cfg())
    }

    fn run_with(
        sessions: &[Session],
        agents: &[Agent],
        objects: Vec<DockerObject>,
        now: Timestamp,
        config: &PlanConfig,
    ) -> Plan {
        plan(
            sessions,
            agents,
            &Actual {
                objects,
                paths: Default::default(),
                first_seen: Default::default(),
            },
            now,
            config,
            &Scope::Normal,
        )
    }

    fn removed(p: &Plan) -> Vec<String> {
        p.removals
            .iter()
            .map(|r| match &r.target {
                Target::Docker(o) => o.name.clone(),
                Target::Path { path } => path.to_string(),
            })
            .collect()
    }

    #[test]
    fn an_ending_session_has_its_running_containers_stopped_and_nothing_removed() {
        let s = session("s").ending(D::from_secs(60)).build();
        let objs = vec![
            container("run").label("reaper.session", "s").running(),
            container("idle").label("reaper.session", "s"),
            network("n").label("reaper.session", "s"),
            image("img:1").label("reaper.session", "s"),
        ];
        let p = run(std::slice::from_ref(&s), &[], objs.clone(), at(30));
        assert_eq!(removed(&p), ["run"]);
        assert!(p.removals[0].stop_only, "only stopped: {:?}", p.removals[0]);
        assert_eq!(p.transitions, [], "not cleaned while its delay runs");
        assert_eq!(p.next_wake, Some(at(60)), "the delay's end wakes the loop");
        assert_eq!(p.observed.owned[&ResourceKind::Container], 2);

        // Once the delay is over: on to cleanup, in the same pass.
        let p = run(&[s], &[], objs, at(60));
        assert_eq!(removed(&p), ["idle", "run", "n", "img:1"]);
        assert!(p.removals.iter().all(|r| !r.stop_only));
        assert_eq!(
            p.transitions,
            [Transition::DelayOver {
                name: Name::new("s").unwrap()
            }]
        );
    }

    #[test]
    fn a_session_whose_deadline_passes_in_this_pass_starts_its_delay_at_once() {
        let mut s = session("s").ttl(D::from_secs(60)).build();
        s.spec.cleanup.delay = Some(D::from_secs(30));
        let objs = vec![container("run").label("reaper.session", "s").running()];
        let p = run(&[s.clone()], &[], objs.clone(), at(61));
        assert!(p.removals.iter().all(|r| r.stop_only), "{:?}", p.removals);
        assert!(matches!(p.transitions[..], [Transition::Expire { .. }]));
        // The daemon's default delay applies to a spec without one.
        s.spec.cleanup.delay = None;
        let mut c = cfg();
        c.cleanup_delays.delay = D::from_secs(30);
        let actual = Actual {
            objects: objs,
            ..Actual::default()
        };
        let p = plan(&[s], &[], &actual, at(61), &c, &Scope::Normal);
        assert!(p.removals.iter().all(|r| r.stop_only), "{:?}", p.removals);
    }

    #[test]
    fn a_failed_agent_within_its_delay_is_not_stopped_and_keeps_its_objects() {
        let mut a = agent("a").phase(AgentPhase::Running).build();
        a.report(AgentPhase::Failed, at(0), D::from_secs(60))
            .unwrap();
        let objs = vec![
            container("anvyl-agent-a").running(),
            image("anvyl-agent-a:latest"),
        ];
        let p = run(&[], &[a.clone()], objs.clone(), at(10));
        assert_eq!(removed(&p), ["anvyl-agent-a"]);
        assert!(p.removals[0].stop_only);
        assert_eq!(p.transitions, [], "no AgentStopped while delayed");
        let p = run(&[], &[a], objs, at(60));
        assert_eq!(removed(&p), ["anvyl-agent-a", "anvyl-agent-a:latest"]);
        assert!(p.removals.iter().all(|r| !r.stop_only));
    }

    #[test]
    fn a_manual_cleanup_does_not_wait_for_a_delay() {
        let s = session("s").ending(D::from_secs(3600)).build();
        let objs = vec![
            container("run").label("reaper.session", "s").running(),
            network("n").label("reaper.session", "s"),
        ];
        let owner = OwnerRef {
            kind: OwnerKind::Session,
            name: Name::new("s").unwrap(),
        };
        let actual = Actual {
            objects: objs,
            ..Actual::default()
        };
        let p = plan(
            &[s],
            &[],
            &actual,
            at(1),
            &cfg(),
            &Scope::ManualOwner(owner),
        );
        assert_eq!(removed(&p), ["run", "n"]);
        assert!(p.removals.iter().all(|r| !r.stop_only));
    }

    #[test]
    fn a_delayed_owner_keeps_what_it_shares_with_a_dead_one() {
        let s = session("s").ending(D::from_secs(60)).build();
        let gone = session("gone").ended().build();
        let objs = vec![network("shared")
            .label("reaper.session", "gone")
            .label("session_id", "s")];
        let p = run(&[s, gone], &[], objs, at(1));
        assert!(p.removals.is_empty(), "{:?}", p.removals);
    }

    #[test]
    fn an_ended_session_loses_everything_in_removal_order() {
        let s = session("s").ended().build();
        let objs = vec![
            image("img:1").label("reaper.session", "s"),
            volume("v").label("reaper.session", "s"),
            container("c").label("reaper.session", "s").running(),
            network("n").label("reaper.session", "s"),
        ];
        let p = run(&[s], &[], objs, at(1));
        assert_eq!(removed(&p), ["c", "n", "v", "img:1"]);
        assert!(p
            .removals
            .iter()
            .all(|r| r.reason == CleanupReason::SessionEnded));
        assert!(
            p.transitions.is_empty(),
            "not Cleaned while objects remain: {:?}",
            p.transitions
        );
    }

    #[test]
    fn a_live_session_keeps_its_objects_and_counts_them() {
        let s = session("s").build();
        let p = run(
            &[s],
            &[],
            vec![container("c").label("reaper.session", "s")],
            at(1),
        );
        assert!(p.removals.is_empty());
        assert_eq!(p.observed.owned[&ResourceKind::Container], 1);
    }

    #[test]
    fn a_session_with_nothing_left_becomes_cleaned_then_purged_after_retention() {
        let p = run(&[session("s").ended().build()], &[], vec![], at(1));
        assert_eq!(
            p.transitions,
            [Transition::HostDone {
                name: Name::new("s").unwrap(),
                ended_at: T0
            }]
        );
        let cleaned = session("s").cleaned(at(10)).build();
        let p = run(std::slice::from_ref(&cleaned), &[], vec![], at(20));
        assert!(p.transitions.is_empty());
        assert_eq!(p.next_wake, Some(at(10 + 86_400)));
        let p = run(&[cleaned], &[], vec![], at(10 + 86_400));
        assert!(matches!(p.transitions[..], [Transition::Purge { .. }]));
    }

    fn in_fleet(this: &str, others: &[&str]) -> PlanConfig {
        let live = others.iter().map(|h| h.to_string()).collect();
        PlanConfig {
            fleet: Fleet::new(this, live),
            ..cfg()
        }
    }

    fn host_dones(p: &Plan) -> usize {
        p.transitions
            .iter()
            .filter(|t| matches!(t, Transition::HostDone { .. }))
            .count()
    }

    #[test]
    fn a_done_host_writes_again_only_when_the_rows_would_let_the_session_go() {
        let mut s = session("s").ended().build();
        let a_with_b = in_fleet("host-a", &["host-b"]);
        let plan_with =
            |s: &Session, c: &PlanConfig| run_with(std::slice::from_ref(s), &[], vec![], at(1), c);
        assert_eq!(host_dones(&plan_with(&s, &a_with_b)), 1);
        assert!(!s.report_host_done(&a_with_b.fleet, at(1)).cleaned);
        // host-b is live and pending: no write in every pass.
        assert!(plan_with(&s, &a_with_b).transitions.is_empty());
        // host-b lapsed: one more write, which cleans the session and marks host-b gone.
        let alone = in_fleet("host-a", &[]);
        assert_eq!(host_dones(&plan_with(&s, &alone)), 1);
        assert!(s.report_host_done(&alone.fleet, at(2)).cleaned);
        assert_eq!(s.status.host_row("host-b").unwrap().state, HostState::Gone);
        assert!(plan_with(&s, &alone).transitions.is_empty());

        // host-b comes back: its objects of the Cleaned session go first, then it reports.
        let b = in_fleet("host-b", &["host-a"]);
        let obj = container("c").label("reaper.session", "s");
        let p = run_with(std::slice::from_ref(&s), &[], vec![obj], at(3), &b);
        assert_eq!(removed(&p), ["c"]);
        assert_eq!(host_dones(&p), 0, "not done while its objects are there");
        assert_eq!(host_dones(&plan_with(&s, &b)), 1);
        let r = s.report_host_done(&b.fleet, at(4));
        assert!(r.changed && !r.cleaned, "it stays Cleaned");
        assert_eq!(s.status.phase, SessionPhase::Cleaned);
        assert!(plan_with(&s, &b).transitions.is_empty());
        // A host that had no row when it was cleaned has nothing to say.
        assert!(plan_with(&s, &in_fleet("host-c", &[]))
            .transitions
            .is_empty());
    }

    #[test]
    fn a_deleted_session_is_purged_once_every_live_host_is_done() {
        let mut s = session("s").ended().deleting().build();
        let a = in_fleet("host-a", &["host-b"]);
        let p = |s: &Session, c: &PlanConfig| {
            run_with(std::slice::from_ref(s), &[], vec![], at(1), c).transitions
        };
        assert!(matches!(p(&s, &a)[..], [Transition::HostDone { .. }]));
        s.report_host_done(&a.fleet, at(1));
        assert!(p(&s, &a).is_empty(), "host-b has not reported");
        let b = in_fleet("host-b", &["host-a"]);
        assert!(matches!(p(&s, &b)[..], [Transition::Purge { .. }]));
        // On one host (sled): purged at once, as before rows.
        let single = session("t").ended().deleting().build();
        assert!(matches!(p(&single, &cfg())[..], [Transition::Purge { .. }]));
    }

    #[test]
    fn ttl_and_heartbeat_deadlines_expire_sessions_exactly_on_time() {
        let s = session("s").ttl(D::from_secs(60)).build();
        let obj = || vec![container("c").label("reaper.session", "s")];
        let before = run(std::slice::from_ref(&s), &[], obj(), at(59));
        assert!(before.removals.is_empty());
        assert_eq!(before.next_wake, Some(at(60)));
        let after = run(std::slice::from_ref(&s), &[], obj(), at(60));
        assert_eq!(after.removals[0].reason, CleanupReason::SessionExpired);
        assert!(matches!(
            after.transitions[0],
            Transition::Expire {
                reason: EndReason::TtlExpired,
                ..
            }
        ));

        let hb = session("h").heartbeat(D::from_secs(30)).build();
        let p = run(
            &[hb],
            &[],
            vec![container("c").label("reaper.session", "h")],
            at(31),
        );
        assert_eq!(p.removals[0].reason, CleanupReason::HeartbeatLost);
    }

    #[test]
    fn heartbeats_count_from_a_daemon_restart() {
        let hb = session("h").heartbeat(D::from_secs(30)).build();
        let mut c = cfg();
        c.restarted_at = at(1000);
        let objs = vec![container("c").label("reaper.session", "h")];
        let p = plan(
            &[hb],
            &[],
            &Actual {
                objects: objs,
                paths: Default::default(),
                first_seen: Default::default(),
            },
            at(1010),
            &c,
            &Scope::Normal,
        );
        assert!(
            p.removals.is_empty(),
            "downtime must not expire the session"
        );
        assert_eq!(p.next_wake, Some(at(1030)));
    }

    #[test]
    fn orphans_wait_for_their_grace_period_from_creation() {
        let young = container("young")
            .label("reaper.session", "ghost")
            .created(Some(at(100)));
        let old = container("old").label("reaper.session", "ghost");
        let unknown = container("unknown")
            .label("reaper.session", "ghost")
            .created(None);
        let p = run(&[], &[], vec![young, old, unknown], at(300));
        assert_eq!(removed(&p), ["old"]);
        assert_eq!(p.removals[0].reason, CleanupReason::Orphan);
        assert_eq!(p.waiting.len(), 2);
        assert_eq!(p.next_wake, Some(at(400)));
        assert_eq!(p.observed.orphans[&ResourceKind::Container], 3);
    }

    #[test]
    fn an_orphans_grace_counts_from_when_reaper_first_saw_it_if_later() {
        // Built long ago (a cached layer, a pulled image), tagged `anvyl-agent-x` just now.
        let old_image = image("anvyl-agent-x:latest").created(Some(at(-86_400)));
        let old_volume = volume("v")
            .label("reaper.session", "ghost")
            .created(Some(at(-86_400)));
        // A clock that went backwards: a creation after the sighting still counts.
        let skewed = container("c")
            .label("reaper.session", "ghost")
            .created(Some(at(100)));
        let first_seen = BTreeMap::from([
            (old_image.sighting_key(), at(0)),
            (old_volume.sighting_key(), at(-86_400)),
            (skewed.sighting_key(), at(50)),
        ]);
        let actual = Actual {
            objects: vec![old_image.clone(), old_volume, skewed],
            paths: Default::default(),
            first_seen,
        };
        let p = plan(&[], &[], &actual, at(299), &cfg(), &Scope::Normal);
        assert_eq!(removed(&p), ["v"], "only the volume seen a day ago is ripe");
        let waiting: BTreeMap<&str, Option<Timestamp>> = p
            .waiting
            .iter()
            .map(|w| (w.object.name.as_str(), w.removable_at))
            .collect();
        assert_eq!(waiting["anvyl-agent-x:latest"], Some(at(300)));
        assert_eq!(waiting["c"], Some(at(400)));
        assert_eq!(p.next_wake, Some(at(300)));
        let p = plan(&[], &[], &actual, at(300), &cfg(), &Scope::Normal);
        assert_eq!(removed(&p), ["v", "anvyl-agent-x:latest"]);
    }

    #[test]
    fn a_tag_moved_to_another_image_is_a_new_sighting() {
        let a = image("anvyl-agent-x:latest");
        let mut b = a.clone();
        b.id = "sha256:other".into();
        assert_ne!(a.sighting_key(), b.sighting_key());
        assert_ne!(
            a.sighting_key(),
            image("anvyl-agent-x:v2").sighting_key(),
            "each reference of one image has its own"
        );
    }

    #[test]
    fn a_failed_agent_loses_containers_images_and_build_dir_then_stops() {
        let a = agent("bob")
            .phase(AgentPhase::Failed)
            .build_dir("bob")
            .build();
        let objs = vec![
            container("anvyl-agent-bob").running(),
            image("anvyl-agent-bob:latest"),
            volume("keep").label("reaper.agent", "bob"),
        ];
        let actual = Actual {
            objects: objs,
            paths: [RelPath::new("bob").unwrap()].into(),
            first_seen: Default::default(),
        };
        let p2 = plan(
            &[],
            std::slice::from_ref(&a),
            &actual,
            at(1),
            &cfg(),
            &Scope::Normal,
        );
        assert_eq!(
            removed(&p2),
            ["anvyl-agent-bob", "anvyl-agent-bob:latest", "bob"]
        );
        assert!(p2
            .removals
            .iter()
            .all(|r| r.reason == CleanupReason::AgentFailed));
        assert!(p2.transitions.is_empty());
        let done = plan(&[], &[a], &Actual::default(), at(2), &cfg(), &Scope::Normal);
        assert!(matches!(
            done.transitions[..],
            [Transition::AgentStopped {
                failed_since: Some(_),
                ..
            }]
        ));
    }

    #[test]
    fn a_stopped_agent_loses_only_leftover_containers() {
        let a = agent("bob").phase(AgentPhase::Stopped).build();
        let p = run(
            &[],
            &[a],
            vec![
                container("anvyl-agent-bob"),
                image("anvyl-agent-bob:latest"),
            ],
            at(1),
        );
        assert_eq!(removed(&p), ["anvyl-agent-bob"]);
        assert_eq!(p.removals[0].reason, CleanupReason::AgentStopped);
    }

    #[test]
    fn a_running_agent_without_a_running_container_is_stopped_after_a_grace() {
        let a = agent("bob").phase(AgentPhase::Running).build();
        let idle = vec![container("anvyl-agent-bob")];
        let p = run(&[], std::slice::from_ref(&a), idle, at(5));
        assert!(p.transitions.is_empty());
        assert_eq!(p.next_wake, Some(at(10)));
        let p = run(
            &[],
            std::slice::from_ref(&a),
            vec![container("anvyl-agent-bob")],
            at(10),
        );
        assert!(matches!(
            p.transitions[..],
            [Transition::AgentStopped {
                failed_since: None,
                ..
            }]
        ));
        let p = run(
            &[],
            &[a],
            vec![container("anvyl-agent-bob").running()],
            at(100),
        );
        assert!(p.transitions.is_empty());
    }

    #[test]
    fn any_live_claimant_keeps_an_object() {
        let dead = session("dead").ended().build();
        let live = session("live").matching("session_id", "42").build();
        let obj = container("c")
            .label("reaper.session", "dead")
            .label("session_id", "42");
        let p = run(&[dead, live], &[], vec![obj], at(1));
        assert!(p.removals.is_empty());
        assert!(
            matches!(p.transitions[..], [Transition::HostDone { .. }]),
            "a kept object does not block"
        );
    }

    #[test]
    fn kept_kinds_stay_and_do_not_block_cleaned() {
        let s = session("s").ended().keep_images().build();
        let p = run(
            &[s],
            &[],
            vec![image("img:1").label("reaper.session", "s")],
            at(1),
        );
        assert!(p.removals.is_empty());
        assert!(matches!(p.transitions[..], [Transition::HostDone { .. }]));
    }

    #[test]
    fn deleting_removes_every_kind_then_purges() {
        let s = session("s").keep_images().deleting().build();
        let p = run(
            std::slice::from_ref(&s),
            &[],
            vec![image("img:1").label("reaper.session", "s")],
            at(1),
        );
        assert_eq!(p.removals[0].reason, CleanupReason::SessionDeleted);
        assert!(p.transitions.is_empty());
        let p = run(&[s], &[], vec![], at(2));
        assert!(matches!(p.transitions[..], [Transition::Purge { .. }]));
    }

    #[test]
    fn a_path_shared_with_a_live_owner_is_kept() {
        let dead = session("dead").ended().path("shared").path("own").build();
        let live = session("live").path("shared").build();
        let actual = Actual {
            objects: vec![],
            paths: [
                RelPath::new("shared").unwrap(),
                RelPath::new("own").unwrap(),
            ]
            .into(),
            first_seen: Default::default(),
        };
        let p = plan(&[dead, live], &[], &actual, at(1), &cfg(), &Scope::Normal);
        assert_eq!(removed(&p), ["own"]);
    }

    #[test]
    fn a_cleaned_sessions_paths_are_left_alone() {
        let cleaned = session("c").cleaned(T0).path("reused").build();
        let actual = Actual {
            objects: vec![],
            paths: [RelPath::new("reused").unwrap()].into(),
            first_seen: Default::default(),
        };
        let p = plan(
            std::slice::from_ref(&cleaned),
            &[],
            &actual,
            at(1),
            &cfg(),
            &Scope::Normal,
        );
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        assert!(paths_to_probe(
            &[cleaned],
            &[],
            &Scope::Normal,
            at(1),
            T0,
            crate::core::model::CleanupDelays::default()
        )
        .is_empty());
    }

    #[test]
    fn manual_cleanup_of_a_name_without_a_record() {
        let live = session("live").build();
        let kept_images = session("done").ended().keep_images().build();
        let young = Some(at(100));
        let objs = vec![
            container("anvyl-agent-my-agent").created(young),
            image("anvyl-agent-my-agent:latest").created(young),
            volume("v1").label("reaper.agent", "my-agent"),
            // Someone else's, or nobody's: look-alike names, other labels, a live owner.
            container("anvyl-agent-my-agent2"),
            container("my-agent"),
            container("plain"),
            network("n1").label("reaper.agent", "other"),
            container("shared")
                .label("reaper.agent", "my-agent")
                .label("reaper.session", "live"),
            // Also claimed by an owner that keeps this kind: the manual cleanup still takes it.
            image("exec:1")
                .label("reaper.agent", "my-agent")
                .label("reaper.session", "done"),
        ];
        let actual = Actual {
            objects: objs,
            paths: [RelPath::new("my-agent").unwrap()].into(),
            ..Actual::default()
        };
        let target = OwnerRef {
            kind: OwnerKind::Agent,
            name: Name::new("my-agent").unwrap(),
        };
        let p = plan(
            &[live, kept_images],
            &[],
            &actual,
            at(101),
            &cfg(),
            &Scope::ManualOwner(target.clone()),
        );
        assert_eq!(
            removed(&p),
            [
                "anvyl-agent-my-agent",
                "v1",
                "anvyl-agent-my-agent:latest",
                "exec:1"
            ],
            "no grace, no build dir without a record, nobody else's, never a live owner's"
        );
        for r in &p.removals {
            assert_eq!(r.owner.as_ref(), Some(&target));
            assert_eq!(r.reason, CleanupReason::Manual);
        }
        let why: Vec<&[String]> = p.removals.iter().map(|r| r.because.as_slice()).collect();
        assert_eq!(
            why[0],
            ["container name anvyl-agent-my-agent (adoption.agentNamePrefix anvyl-agent-)"]
        );
        assert_eq!(why[1], ["label reaper.agent=my-agent"]);
        assert!(p.transitions.is_empty());

        // Normal passes leave these alone (grace, or a kept kind) and give no reasons.
        let normal = plan(&[], &[], &actual, at(101), &cfg(), &Scope::Normal);
        assert!(normal.removals.iter().all(|r| r.because.is_empty()));

        // With a record, its build dir goes too, and says which field declared it.
        let a = agent("my-agent")
            .phase(AgentPhase::Running)
            .build_dir("my-agent")
            .build();
        let p = plan(
            &[],
            &[a],
            &actual,
            at(101),
            &cfg(),
            &Scope::ManualOwner(target),
        );
        let path = p.removals.last().unwrap();
        assert_eq!(path.target.kind(), ResourceKind::Path);
        assert_eq!(path.because, ["spec.buildDir of its record"]);
    }

    #[test]
    fn manual_scopes() {
        let live = session("live").build();
        let objs = vec![
            container("a").label("reaper.session", "live"),
            container("young-orphan")
                .label("reaper.session", "ghost")
                .created(Some(at(100))),
        ];
        let actual = Actual {
            objects: objs,
            paths: Default::default(),
            first_seen: Default::default(),
        };
        let all = plan(
            std::slice::from_ref(&live),
            &[],
            &actual,
            at(101),
            &cfg(),
            &Scope::ManualAll,
        );
        assert_eq!(
            removed(&all),
            ["young-orphan"],
            "manual cleanup ignores grace but never live owners"
        );
        assert_eq!(all.removals[0].reason, CleanupReason::Manual);
        let owner = OwnerRef {
            kind: OwnerKind::Session,
            name: Name::new("live").unwrap(),
        };
        let one = plan(
            &[live],
            &[],
            &actual,
            at(101),
            &cfg(),
            &Scope::ManualOwner(owner),
        );
        assert_eq!(removed(&one), ["a"]);
        assert!(one.transitions.is_empty());
    }

    /// `n` ripe orphans of a lost session, named `o0`, `o1`, …
    fn orphans(n: usize) -> Vec<DockerObject> {
        (0..n)
            .map(|i| container(&format!("o{i}")).label("reaper.session", "lost"))
            .collect()
    }

    #[test]
    fn the_blast_radius_guard_holds_every_orphan_above_the_cap() {
        let late = at(10_000);
        let c = PlanConfig {
            max_orphan_removals: 3,
            ..cfg()
        };
        let plan_of = |objects: Vec<DockerObject>, scope: &Scope| {
            let actual = Actual {
                objects,
                paths: Default::default(),
                first_seen: Default::default(),
            };
            plan(&[], &[], &actual, late, &c, scope)
        };
        // At the cap: all go.
        let p = plan_of(orphans(3), &Scope::Normal);
        assert_eq!(removed(&p), ["o0", "o1", "o2"]);
        assert!(p.held.is_empty());
        // One more: none goes, all are held, and still counted as orphans.
        let p = plan_of(orphans(4), &Scope::Normal);
        assert!(p.removals.is_empty(), "{:?}", p.removals);
        assert_eq!(p.held.len(), 4);
        assert!(p.held.iter().all(|r| r.reason == CleanupReason::Orphan));
        assert_eq!(p.observed.orphans[&ResourceKind::Container], 4);
        // `reaper cleanup` (the operator's confirmation) is not capped.
        let p = plan_of(orphans(4), &Scope::ManualAll);
        assert_eq!(p.removals.len(), 4);
        assert!(p.held.is_empty());
    }

    #[test]
    fn the_blast_radius_guard_counts_only_ripe_orphans() {
        let c = PlanConfig {
            max_orphan_removals: 3,
            ..cfg()
        };
        // Ten orphans, of which only two are past their grace: nothing to hold.
        let mut objects = orphans(2);
        objects.extend((0..8).map(|i| {
            container(&format!("young{i}"))
                .label("reaper.session", "lost")
                .created(Some(at(9_900)))
        }));
        let actual = Actual {
            objects,
            paths: Default::default(),
            first_seen: Default::default(),
        };
        let p = plan(&[], &[], &actual, at(10_000), &c, &Scope::Normal);
        assert_eq!(removed(&p), ["o0", "o1"]);
        assert!(p.held.is_empty());
        assert_eq!(p.waiting.len(), 8);
    }

    #[test]
    fn ended_expired_and_deleted_owners_are_not_capped_nor_held_with_orphans() {
        let c = PlanConfig {
            max_orphan_removals: 2,
            ..cfg()
        };
        let ended = session("ended").ended().build();
        let expired = session("expired").ttl(D::from_secs(1)).build();
        let deleted = session("deleted").deleting().build();
        let mut objects = orphans(5);
        for owner in ["ended", "expired", "deleted"] {
            objects.extend(
                (0..4).map(|i| container(&format!("{owner}{i}")).label("reaper.session", owner)),
            );
        }
        let actual = Actual {
            objects,
            paths: Default::default(),
            first_seen: Default::default(),
        };
        let p = plan(
            &[ended, expired, deleted],
            &[],
            &actual,
            at(10_000),
            &c,
            &Scope::Normal,
        );
        assert_eq!(p.removals.len(), 12, "{:?}", removed(&p));
        assert!(p.removals.iter().all(|r| r.reason != CleanupReason::Orphan));
        assert_eq!(p.held.len(), 5);
        // The owners' cleanup proceeds: the expiry is planned as usual.
        assert!(p
            .transitions
            .iter()
            .any(|t| matches!(t, Transition::Expire { .. })));
    }

    #[test]
    fn a_cap_of_zero_holds_every_orphan_removal() {
        let c = PlanConfig {
            max_orphan_removals: 0,
            ..cfg()
        };
        let actual = Actual {
            objects: orphans(1),
            paths: Default::default(),
            first_seen: Default::default(),
        };
        let p = plan(&[], &[], &actual, at(10_000), &c, &Scope::Normal);
        assert!(p.removals.is_empty());
        assert_eq!(p.held.len(), 1);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const NAMES: [&str; 4] = ["s1", "s2", "a1", "a2"];
        const LABEL_KEYS: [&str; 8] = [
            "reaper.session",
            "reaper.agent",
            "session_id",
            "reaper.session-x",
            "REAPER.SESSION",
            "reaper.instance",
            "team",
            "other",
        ];
        const LABEL_VALUES: [&str; 6] = ["s1", "s2", "a1", "a2", "other", "Bad Value"];
        const OBJECT_NAMES: [&str; 7] = [
            "anvyl-agent-a1",
            "anvyl-agent-a2",
            "anvyl-agent",
            "xanvyl-agent-a1",
            "web",
            "anvyl-agent-zz",
            "db",
        ];

        fn arb_object() -> impl Strategy<Value = DockerObject> {
            (
                0..4usize,
                prop::sample::select(OBJECT_NAMES.to_vec()),
                prop::collection::btree_map(
                    prop::sample::select(LABEL_KEYS.to_vec()),
                    prop::sample::select(LABEL_VALUES.to_vec()),
                    0..3,
                ),
                any::<bool>(),
                prop::option::of(0..2000i64),
                prop::collection::vec(
                    prop::sample::select(vec!["anvyl-agent-a1:1", "foreign:1"]),
                    0..2,
                ),
                0..1000u32,
            )
                .prop_map(|(k, name, labels, running, created, refs, n)| {
                    let kind = ResourceKind::DOCKER[k];
                    let name = if kind == ResourceKind::Image {
                        format!("{name}:latest")
                    } else {
                        name.to_string()
                    };
                    DockerObject {
                        kind,
                        id: format!("id{n}-{name}"),
                        name,
                        labels: labels
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        created: created.map(at),
                        running,
                        other_refs: refs.into_iter().map(String::from).collect(),
                    }
                })
        }

        /// Few paths, so that owners often share one.
        const PATHS: [&str; 3] = ["p1", "p2", "p3"];

        fn arb_session() -> impl Strategy<Value = Session> {
            (
                0..2usize,
                0..6u8,
                prop::option::of(1..100u64),
                any::<bool>(),
                prop::collection::vec(prop::sample::select(PATHS.to_vec()), 0..3),
            )
                .prop_map(|(i, state, hb, team, paths)| {
                    let mut b = session(NAMES[i]);
                    if team {
                        b = b.matching("team", "s1");
                    }
                    if let Some(hb) = hb {
                        b = b.heartbeat(D::from_secs(hb));
                    }
                    for p in paths {
                        b = b.path(p);
                    }
                    match state {
                        0 => b.ended(),
                        1 => b.deleting(),
                        2 => b.cleaned(T0),
                        3 => b.cleaned(T0).deleting(),
                        _ => b,
                    }
                    .build()
                })
        }

        fn arb_agent() -> impl Strategy<Value = Agent> {
            (
                2..4usize,
                0..4usize,
                any::<bool>(),
                prop::option::of(prop::sample::select(PATHS.to_vec())),
            )
                .prop_map(|(i, phase, deleting, build_dir)| {
                    let mut b = agent(NAMES[i]).phase(AgentPhase::ALL[phase]);
                    if let Some(dir) = build_dir {
                        b = b.build_dir(dir);
                    }
                    if deleting { b.deleting() } else { b }.build()
                })
        }

        fn arb_scope() -> impl Strategy<Value = Scope> {
            let target = |kind, name| {
                Scope::ManualOwner(OwnerRef {
                    kind,
                    name: Name::new(name).unwrap(),
                })
            };
            prop::sample::select(vec![
                Scope::Normal,
                Scope::ManualAll,
                target(OwnerKind::Session, "s1"),
                target(OwnerKind::Agent, "a1"),
            ])
        }

        /// Records as the store holds them: one per name.
        fn unique<T>(mut records: Vec<T>, name: impl Fn(&T) -> &Name) -> Vec<T> {
            records.sort_by(|a, b| name(a).cmp(name(b)));
            records.dedup_by(|a, b| name(a) == name(b));
            records
        }

        /// Each owner with its declared paths, and whether it loses them (`Some(true)`),
        /// keeps them (`Some(false)`), or neither (a Stopped agent, a Cleaned session: it has
        /// nothing left to lose). Written from the rules as the README states them, apart
        /// from the planner's code.
        fn path_owners(
            sessions: &[Session],
            agents: &[Agent],
            scope: &Scope,
            now: Timestamp,
        ) -> Vec<(OwnerRef, Vec<RelPath>, Option<bool>)> {
            let forced = |o: &OwnerRef| scope.forced() == Some(o);
            let mut out = Vec::new();
            for s in sessions {
                let o = session_ref(s);
                let loses =
                    forced(&o) || (!s.is_live(now, T0) && s.status.phase != SessionPhase::Cleaned);
                let keeps = !forced(&o) && s.is_live(now, T0);
                out.push((o, s.spec.paths.clone(), (loses || keeps).then_some(loses)));
            }
            for a in agents {
                let o = agent_ref(a);
                let loses = forced(&o)
                    || a.status.phase == AgentPhase::Failed
                    || a.status.deleting_since.is_some();
                let keeps = !forced(&o) && a.is_live();
                let paths = a.spec.build_dir.iter().cloned().collect();
                out.push((o, paths, (loses || keeps).then_some(loses)));
            }
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn never_removes_what_is_not_ours_or_has_a_live_owner(
                sessions in prop::collection::vec(arb_session(), 0..3),
                agents in prop::collection::vec(arb_agent(), 0..3),
                objects in prop::collection::vec(arb_object(), 0..12),
                now in 0..3000i64,
                manual in 0..3u8,
                cap in 0..6usize,
                sightings in prop::collection::vec(prop::option::of(0..3000i64), 12),
            ) {
                let mut sessions = sessions;
                sessions.dedup_by(|a, b| a.metadata.name == b.metadata.name);
                let mut agents = agents;
                agents.dedup_by(|a, b| a.metadata.name == b.metadata.name);
                let rules = Rules { instance: String::new(), ..Rules::default() };
                let c = PlanConfig { rules: rules.clone(), max_orphan_removals: cap, ..cfg() };
                let scope = match manual {
                    0 => Scope::Normal,
                    1 => Scope::ManualAll,
                    _ => Scope::ManualOwner(OwnerRef { kind: OwnerKind::Session, name: Name::new("s1").unwrap() }),
                };
                let now = at(now);
                let first_seen: BTreeMap<String, Timestamp> = objects
                    .iter()
                    .zip(&sightings)
                    .filter_map(|(o, s)| Some((o.sighting_key(), at((*s)?))))
                    .collect();
                let actual = Actual { objects, paths: Default::default(), first_seen: first_seen.clone() };
                let p = plan(&sessions, &agents, &actual, now, &c, &scope);
                let orphan_removals = p.removals.iter().filter(|r| r.reason == CleanupReason::Orphan).count();
                prop_assert!(orphan_removals <= c.max_orphan_removals, "the guard let {orphan_removals} orphans through");
                prop_assert!(p.held.is_empty() || (scope == Scope::Normal && orphan_removals == 0 && p.held.len() > c.max_orphan_removals));
                let matchers = Matchers::new(&sessions, &agents, &rules);
                let live = |o: &OwnerRef| {
                    sessions.iter().any(|s| s.metadata.name == o.name && o.kind == OwnerKind::Session && s.is_live(now, T0))
                        || agents.iter().any(|a| a.metadata.name == o.name && o.kind == OwnerKind::Agent && a.is_live())
                };
                for r in &p.removals {
                    let Target::Docker(obj) = &r.target else { continue };
                    let owners = ownership::claims(obj, &rules, &matchers);
                    prop_assert!(!owners.is_empty(), "removed an object that is not ours: {obj:?}");
                    prop_assert!(obj.labels.get("reaper.instance").is_none_or(|v| v.is_empty()));
                    let manual_target = matches!(&scope, Scope::ManualOwner(t) if owners.contains(t));
                    if let Scope::ManualOwner(t) = &scope {
                        prop_assert!(manual_target, "a cleanup of {t} removed another's: {obj:?}");
                        prop_assert_eq!(&r.because, &ownership::attribution(obj, t, &rules, &matchers));
                        prop_assert!(!r.because.is_empty(), "no reason why {obj:?} is {t}'s");
                    }
                    if !manual_target {
                        prop_assert!(!owners.iter().any(live), "removed an object with a live owner: {obj:?}");
                    }
                    if r.reason == CleanupReason::Orphan {
                        let seen = first_seen.get(&obj.sighting_key()).copied();
                        prop_assert!(obj.created.is_some_and(|c| now >= c.plus(c_grace())), "orphan removed inside its grace: {obj:?}");
                        prop_assert!(seen.is_none_or(|s| now >= s.plus(c_grace())), "orphan removed inside its grace from first sight: {obj:?}");
                    }
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn probes_exactly_the_paths_an_owner_loses_and_no_live_owner_declares(
                sessions in prop::collection::vec(arb_session(), 0..3),
                agents in prop::collection::vec(arb_agent(), 0..3),
                now in 0..3000i64,
                scope in arb_scope(),
            ) {
                let sessions = unique(sessions, |s| &s.metadata.name);
                let agents = unique(agents, |a| &a.metadata.name);
                let now = at(now);
                let probed = paths_to_probe(&sessions, &agents, &scope, now, T0, crate::core::model::CleanupDelays::default());
                let owners = path_owners(&sessions, &agents, &scope, now);
                let declared_by = |p: &RelPath, stands: bool| {
                    owners.iter().any(|(_, paths, loses)| paths.contains(p) && *loses == Some(stands))
                };
                for p in &probed {
                    prop_assert!(declared_by(p, true), "probed {p}, which no owner loses: {owners:?}");
                    prop_assert!(!declared_by(p, false), "probed {p}, which a live owner keeps: {owners:?}");
                }
                for (owner, paths, loses) in &owners {
                    for p in paths.iter().filter(|_| *loses == Some(true)) {
                        prop_assert!(
                            probed.contains(p) || declared_by(p, false),
                            "{owner} loses {p}, which is not probed: {owners:?}"
                        );
                    }
                }

                // What the probe finds, the planner removes only on behalf of owners that lose it.
                let c = PlanConfig { rules: Rules { instance: String::new(), ..Rules::default() }, ..cfg() };
                let on_disk = owners.iter().flat_map(|(_, paths, _)| paths.iter().cloned()).collect();
                let actual = Actual { objects: vec![], paths: on_disk, first_seen: Default::default() };
                let p = plan(&sessions, &agents, &actual, now, &c, &scope);
                for r in &p.removals {
                    let Target::Path { path } = &r.target else { continue };
                    prop_assert!(probed.contains(path), "removes {path}, which is never probed");
                    let owner = r.owner.as_ref();
                    prop_assert!(
                        owners.iter().any(|(o, paths, loses)| Some(o) == owner && paths.contains(path) && *loses == Some(true)),
                        "removes {path} for {owner:?}, which does not lose it: {owners:?}"
                    );
                }
            }
        }

        fn c_grace() -> D {
            cfg().orphan_grace
        }
    }
}
