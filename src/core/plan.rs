//! The planner: desired state + actual state + now -> what to remove and which records change.
//!
//! Pure and deterministic: it calls neither Docker nor the store, so every safety rule is
//! unit- and property-tested here. Two rules above all others:
//! - an object nobody claims (see `ownership`) is never removed;
//! - an object any live owner claims is never removed.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::core::inventory::{Actual, DockerObject};
use crate::core::model::{
    Agent, AgentPhase, CleanupReason, CleanupSpec, Duration, EndReason, Name, OwnerKind, OwnerRef,
    RelPath, ResourceKind, Session, SessionPhase, Timestamp,
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
    /// A session that ended has nothing left: phase Cleaned.
    SessionCleaned { name: Name, ended_at: Timestamp },
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
            Transition::Expire { name, .. } | Transition::SessionCleaned { name, .. } => {
                session(name)
            }
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
}

/// How an owner stands in this pass.
#[derive(Clone, Debug)]
enum Standing {
    Live,
    Dead {
        reason: CleanupReason,
        kinds: BTreeSet<ResourceKind>,
        paths: Vec<RelPath>,
        stop_timeout: Duration,
    },
}

impl Standing {
    fn removes(&self, kind: ResourceKind) -> bool {
        matches!(self, Standing::Dead { kinds, .. } if kinds.contains(&kind))
    }
}

const ALL_DOCKER: [ResourceKind; 4] = ResourceKind::DOCKER;

pub fn plan(
    sessions: &[Session],
    agents: &[Agent],
    actual: &Actual,
    now: Timestamp,
    cfg: &PlanConfig,
    scope: &Scope,
) -> Plan {
    let mut plan = Plan::default();
    for kind in ALL_DOCKER {
        plan.observed.owned.insert(kind, 0);
        plan.observed.orphans.insert(kind, 0);
    }
    let matchers = Matchers::new(sessions, agents, &cfg.rules);
    let manual = |o: &OwnerRef| matches!(scope, Scope::ManualOwner(m) if m == o);
    let mut wake = Wake(None);

    let mut standing: BTreeMap<OwnerRef, Standing> = BTreeMap::new();
    for s in sessions {
        let owner = OwnerRef {
            kind: OwnerKind::Session,
            name: s.metadata.name.clone(),
        };
        let st = if manual(&owner) {
            dead(
                CleanupReason::Manual,
                &ALL_DOCKER,
                s.spec.paths.clone(),
                s.spec.cleanup.stop_timeout,
            )
        } else {
            session_standing(s, now, cfg, &mut wake)
        };
        standing.insert(owner, st);
    }
    for a in agents {
        let owner = OwnerRef {
            kind: OwnerKind::Agent,
            name: a.metadata.name.clone(),
        };
        let st = if manual(&owner) {
            dead(
                CleanupReason::Manual,
                &ALL_DOCKER,
                a.spec.build_dir.iter().cloned().collect(),
                default_stop(),
            )
        } else {
            agent_standing(a)
        };
        standing.insert(owner, st);
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
        if states
            .iter()
            .any(|(_, s)| matches!(s, Some(Standing::Live)))
        {
            *plan.observed.owned.entry(obj.kind).or_default() += 1;
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
        let removable_at = obj.created.map(|c| c.plus(cfg.orphan_grace));
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
    let live_paths: BTreeSet<&RelPath> = sessions
        .iter()
        .filter(|s| matches!(standing.get(&session_ref(s)), Some(Standing::Live)))
        .flat_map(|s| s.spec.paths.iter())
        .chain(
            agents
                .iter()
                .filter(|a| matches!(standing.get(&agent_ref(a)), Some(Standing::Live)))
                .flat_map(|a| a.spec.build_dir.iter()),
        )
        .collect();
    for (owner, st) in &standing {
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
                });
            }
        }
    }

    if let Scope::ManualOwner(target) = scope {
        plan.removals.retain(|r| r.owner.as_ref() == Some(target));
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
    plan.removals.sort_by(|a, b| {
        (a.target.kind(), target_name(&a.target)).cmp(&(b.target.kind(), target_name(&b.target)))
    });
    plan.next_wake = wake.0;
    plan
}

#[allow(clippy::too_many_arguments)]
fn transitions(
    sessions: &[Session],
    agents: &[Agent],
    standing: &BTreeMap<OwnerRef, Standing>,
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
        if s.status.deleting_since.is_some() {
            if !busy {
                out.push(Transition::Purge {
                    owner,
                    deleting_since: s.status.deleting_since,
                });
            }
            continue;
        }
        match s.status.phase {
            SessionPhase::Cleaned => {
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
            _ if matches!(standing.get(&owner), Some(Standing::Live)) => {}
            _ if !busy => {
                let ended_at = s
                    .status
                    .ended_at
                    .or(s.deadline(cfg.restarted_at).map(|d| d.0))
                    .unwrap_or(now);
                out.push(Transition::SessionCleaned { name, ended_at });
            }
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
            AgentPhase::Failed if !busy => out.push(Transition::AgentStopped {
                name: a.metadata.name.clone(),
                failed_since: Some(a.status.phase_since),
            }),
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

fn session_standing(s: &Session, now: Timestamp, cfg: &PlanConfig, wake: &mut Wake) -> Standing {
    if s.is_live(now, cfg.restarted_at) {
        wake.at(s.deadline(cfg.restarted_at).map(|d| d.0));
        return Standing::Live;
    }
    let paths = s.spec.paths.clone();
    let stop = s.spec.cleanup.stop_timeout;
    if s.status.deleting_since.is_some() {
        return dead(CleanupReason::SessionDeleted, &ALL_DOCKER, paths, stop);
    }
    let end = match s.status.phase {
        SessionPhase::Active => s.deadline(cfg.restarted_at).map(|d| d.1),
        _ => s.status.end_reason,
    };
    let reason = match end {
        Some(EndReason::TtlExpired) => CleanupReason::SessionExpired,
        Some(EndReason::HeartbeatLost) => CleanupReason::HeartbeatLost,
        Some(EndReason::Manual) => CleanupReason::Manual,
        _ => CleanupReason::SessionEnded,
    };
    dead(reason, &selected_kinds(&s.spec.cleanup), paths, stop)
}

fn agent_standing(a: &Agent) -> Standing {
    let build_dir: Vec<RelPath> = a.spec.build_dir.iter().cloned().collect();
    if a.status.deleting_since.is_some() {
        return dead(
            CleanupReason::AgentDeleted,
            &ALL_DOCKER,
            build_dir,
            default_stop(),
        );
    }
    match a.status.phase {
        AgentPhase::Starting | AgentPhase::Running => Standing::Live,
        AgentPhase::Failed => dead(
            CleanupReason::AgentFailed,
            &[ResourceKind::Container, ResourceKind::Image],
            build_dir,
            default_stop(),
        ),
        AgentPhase::Stopped => dead(
            CleanupReason::AgentStopped,
            &[ResourceKind::Container],
            Vec::new(),
            default_stop(),
        ),
    }
}

fn selected_kinds(c: &CleanupSpec) -> Vec<ResourceKind> {
    [
        (c.containers, ResourceKind::Container),
        (c.networks, ResourceKind::Network),
        (c.volumes, ResourceKind::Volume),
        (c.images, ResourceKind::Image),
    ]
    .into_iter()
    .filter_map(|(on, k)| on.then_some(k))
    .collect()
}

fn dead(
    reason: CleanupReason,
    kinds: &[ResourceKind],
    paths: Vec<RelPath>,
    stop_timeout: Duration,
) -> Standing {
    Standing::Dead {
        reason,
        kinds: kinds.iter().copied().collect(),
        paths,
        stop_timeout,
    }
}

fn default_stop() -> Duration {
    CleanupSpec::default().stop_timeout
}

fn session_ref(s: &Session) -> OwnerRef {
    OwnerRef {
        kind: OwnerKind::Session,
        name: s.metadata.name.clone(),
    }
}

fn agent_ref(a: &Agent) -> OwnerRef {
    OwnerRef {
        kind: OwnerKind::Agent,
        name: a.metadata.name.clone(),
    }
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
        plan(
            sessions,
            agents,
            &Actual {
                objects,
                paths: Default::default(),
            },
            now,
            &cfg(),
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
            [Transition::SessionCleaned {
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
            matches!(p.transitions[..], [Transition::SessionCleaned { .. }]),
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
        assert!(matches!(
            p.transitions[..],
            [Transition::SessionCleaned { .. }]
        ));
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
        };
        let p = plan(&[dead, live], &[], &actual, at(1), &cfg(), &Scope::Normal);
        assert_eq!(removed(&p), ["own"]);
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

        fn arb_session() -> impl Strategy<Value = Session> {
            (
                0..2usize,
                0..5u8,
                prop::option::of(1..100u64),
                any::<bool>(),
            )
                .prop_map(|(i, state, hb, team)| {
                    let mut b = session(NAMES[i]);
                    if team {
                        b = b.matching("team", "s1");
                    }
                    if let Some(hb) = hb {
                        b = b.heartbeat(D::from_secs(hb));
                    }
                    match state {
                        0 => b.ended(),
                        1 => b.deleting(),
                        2 => b.cleaned(T0),
                        _ => b,
                    }
                    .build()
                })
        }

        fn arb_agent() -> impl Strategy<Value = Agent> {
            (2..4usize, 0..4usize, any::<bool>()).prop_map(|(i, phase, deleting)| {
                let b = agent(NAMES[i]).phase(AgentPhase::ALL[phase]);
                if deleting { b.deleting() } else { b }.build()
            })
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
            ) {
                let mut sessions = sessions;
                sessions.dedup_by(|a, b| a.metadata.name == b.metadata.name);
                let mut agents = agents;
                agents.dedup_by(|a, b| a.metadata.name == b.metadata.name);
                let rules = Rules { instance: String::new(), ..Rules::default() };
                let c = PlanConfig { rules: rules.clone(), ..cfg() };
                let scope = match manual {
                    0 => Scope::Normal,
                    1 => Scope::ManualAll,
                    _ => Scope::ManualOwner(OwnerRef { kind: OwnerKind::Session, name: Name::new("s1").unwrap() }),
                };
                let now = at(now);
                let actual = Actual { objects, paths: Default::default() };
                let p = plan(&sessions, &agents, &actual, now, &c, &scope);
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
                    if !manual_target {
                        prop_assert!(!owners.iter().any(live), "removed an object with a live owner: {obj:?}");
                    }
                    if r.reason == CleanupReason::Orphan {
                        prop_assert!(obj.created.is_some_and(|c| now >= c.plus(c_grace())), "orphan removed inside its grace: {obj:?}");
                    }
                }
            }
        }

        fn c_grace() -> D {
            cfg().orphan_grace
        }
    }
}
