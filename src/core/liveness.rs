//! Who is live, until when, and what an owner that is not live loses. The planner, the choice
//! of paths to look for on disk and the re-check before each delete all go by these rules, so
//! they cannot drift apart and the planner's property tests see every one of them.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::model::{
    Agent, AgentPhase, CleanupDelays, CleanupReason, CleanupSpec, Duration, EndReason, OwnerKind,
    OwnerRef, RelPath, ResourceKind, Session, SessionPhase, Timestamp,
};

/// How an owner stands at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Keeps everything it claims: until `until` (a ttl or heartbeat deadline), or for as long
    /// as its record says so.
    Live {
        until: Option<Timestamp>,
        paths: Vec<RelPath>,
    },
    /// Over, but keeps what it left until `until` (`cleanup.delay`): nothing of it is removed,
    /// its running containers are stopped (with `stop_timeout`), on behalf of `reason`.
    Delayed {
        until: Timestamp,
        reason: CleanupReason,
        paths: Vec<RelPath>,
        stop_timeout: Duration,
    },
    /// Loses its objects of `kinds` and its `paths`, for `reason`.
    Dead {
        reason: CleanupReason,
        kinds: BTreeSet<ResourceKind>,
        paths: Vec<RelPath>,
        stop_timeout: Duration,
    },
}

impl Standing {
    pub fn is_live(&self) -> bool {
        matches!(self, Standing::Live { .. })
    }

    /// Live, or over but within its cleanup delay: nothing it claims is removed.
    pub fn keeps(&self) -> bool {
        matches!(self, Standing::Live { .. } | Standing::Delayed { .. })
    }

    /// The paths it keeps, or loses.
    pub fn paths(&self) -> &[RelPath] {
        match self {
            Standing::Live { paths, .. }
            | Standing::Delayed { paths, .. }
            | Standing::Dead { paths, .. } => paths,
        }
    }

    /// Whether its objects of this kind go.
    pub fn removes(&self, kind: ResourceKind) -> bool {
        matches!(self, Standing::Dead { kinds, .. } if kinds.contains(&kind))
    }
}

/// Every owner's standing at one instant.
#[derive(Clone, Debug, Default)]
pub struct Standings(BTreeMap<OwnerRef, Standing>);

impl Standings {
    /// `forced` is the owner of a manual cleanup: it loses everything, whatever its record says,
    /// and even when it has no record.
    /// `restarted_at` makes heartbeats count from the daemon's start.
    /// `delays` are the daemon's defaults, for a session whose deadline passed in this pass.
    pub fn new(
        sessions: &[Session],
        agents: &[Agent],
        forced: Option<&OwnerRef>,
        now: Timestamp,
        restarted_at: Timestamp,
        delays: CleanupDelays,
    ) -> Self {
        let mut out = BTreeMap::new();
        for s in sessions {
            let owner = session_ref(s);
            let st = if forced == Some(&owner) {
                dead(
                    CleanupReason::Manual,
                    &ResourceKind::DOCKER,
                    s.spec.paths.clone(),
                    s.spec.cleanup.stop_timeout,
                )
            } else {
                session_standing(s, now, restarted_at, delays)
            };
            out.insert(owner, st);
        }
        for a in agents {
            let owner = agent_ref(a);
            let st = if forced == Some(&owner) {
                dead(
                    CleanupReason::Manual,
                    &ResourceKind::DOCKER,
                    a.spec.build_dir.iter().cloned().collect(),
                    default_stop(),
                )
            } else {
                agent_standing(a, now)
            };
            out.insert(owner, st);
        }
        // A manual cleanup of a name with no record: what the ownership rules attribute to the
        // name goes now. Without a record there is no build dir or path to remove.
        if let Some(owner) = forced.filter(|o| !out.contains_key(o)) {
            let st = dead(
                CleanupReason::Manual,
                &ResourceKind::DOCKER,
                Vec::new(),
                default_stop(),
            );
            out.insert(owner.clone(), st);
        }
        Standings(out)
    }

    pub fn get(&self, owner: &OwnerRef) -> Option<&Standing> {
        self.0.get(owner)
    }

    pub fn is_live(&self, owner: &OwnerRef) -> bool {
        self.get(owner).is_some_and(Standing::is_live)
    }

    /// In owner order.
    pub fn iter(&self) -> impl Iterator<Item = (&OwnerRef, &Standing)> {
        self.0.iter()
    }

    /// Live owners, with the instant their liveness ends by itself (if any).
    pub fn live(&self) -> impl Iterator<Item = (&OwnerRef, Option<Timestamp>)> {
        self.0.iter().filter_map(|(o, st)| match st {
            Standing::Live { until, .. } => Some((o, *until)),
            Standing::Delayed { .. } | Standing::Dead { .. } => None,
        })
    }

    /// Owners within a cleanup delay, with its end.
    pub fn delayed(&self) -> impl Iterator<Item = (&OwnerRef, Timestamp)> {
        self.0.iter().filter_map(|(o, st)| match st {
            Standing::Delayed { until, .. } => Some((o, *until)),
            Standing::Live { .. } | Standing::Dead { .. } => None,
        })
    }

    /// Paths a live (or delayed) owner declares: never removed, whoever else declares them.
    pub fn live_paths(&self) -> BTreeSet<&RelPath> {
        self.paths_of(true).collect()
    }

    /// The paths worth looking for on disk: those some owner loses and no keeping owner
    /// declares.
    pub fn paths_to_probe(&self) -> BTreeSet<RelPath> {
        let live = self.live_paths();
        self.paths_of(false)
            .filter(|p| !live.contains(p))
            .cloned()
            .collect()
    }

    fn paths_of(&self, keeps: bool) -> impl Iterator<Item = &RelPath> {
        self.0
            .values()
            .filter(move |st| st.keeps() == keeps)
            .flat_map(Standing::paths)
    }
}

/// Live owners with the instant their liveness ends by itself: what the re-check before each
/// delete goes by between passes, where time moves on but the records have not changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveOwners {
    live: BTreeMap<OwnerRef, Option<Timestamp>>,
    delayed: BTreeMap<OwnerRef, Timestamp>,
}

impl LiveOwners {
    pub fn new(
        sessions: &[Session],
        agents: &[Agent],
        now: Timestamp,
        restarted_at: Timestamp,
        delays: CleanupDelays,
    ) -> Self {
        let standings = Standings::new(sessions, agents, None, now, restarted_at, delays);
        LiveOwners {
            live: standings
                .live()
                .map(|(o, until)| (o.clone(), until))
                .collect(),
            delayed: standings
                .delayed()
                .map(|(o, until)| (o.clone(), until))
                .collect(),
        }
    }

    /// Still live at `now`: a deadline that passed since the records were read counts.
    pub fn is_live(&self, owner: &OwnerRef, now: Timestamp) -> bool {
        self.live
            .get(owner)
            .is_some_and(|until| until.is_none_or(|at| now < at))
    }

    /// Live, or within a cleanup delay: what it claims must not be removed (only stopped).
    pub fn keeps(&self, owner: &OwnerRef, now: Timestamp) -> bool {
        self.is_live(owner, now) || self.delayed.get(owner).is_some_and(|until| now < *until)
    }
}

fn session_standing(
    s: &Session,
    now: Timestamp,
    restarted_at: Timestamp,
    delays: CleanupDelays,
) -> Standing {
    if s.is_live(now, restarted_at) {
        return Standing::Live {
            until: s.deadline(restarted_at).map(|d| d.0),
            paths: s.spec.paths.clone(),
        };
    }
    // A Cleaned session's paths went when it was cleaned; they are never looked at again, so
    // a directory made later under the same name is not removed on its behalf.
    let paths = if s.status.phase == SessionPhase::Cleaned {
        Vec::new()
    } else {
        s.spec.paths.clone()
    };
    let stop = s.spec.cleanup.stop_timeout;
    if s.status.deleting_since.is_some() {
        return dead(
            CleanupReason::SessionDeleted,
            &ResourceKind::DOCKER,
            paths,
            stop,
        );
    }
    let end = match s.status.phase {
        SessionPhase::Active => s.deadline(restarted_at).map(|d| d.1),
        _ => s.status.end_reason,
    };
    let reason = match end {
        Some(EndReason::TtlExpired) => CleanupReason::SessionExpired,
        Some(EndReason::HeartbeatLost) => CleanupReason::HeartbeatLost,
        Some(EndReason::Manual) => CleanupReason::Manual,
        _ => CleanupReason::SessionEnded,
    };
    // Within its cleanup delay: stored once it is Ending; for a deadline that passed in this
    // pass (the record still says Active), what the expiry will store.
    let until = match (s.status.phase, s.deadline(restarted_at)) {
        (SessionPhase::Ending, _) => s.status.cleanup_after,
        (SessionPhase::Active, Some((at, why))) => Some(at.plus(delays.for_session(s, why))),
        _ => None,
    };
    if let Some(until) = until.filter(|t| now < *t) {
        return Standing::Delayed {
            until,
            reason,
            paths,
            stop_timeout: stop,
        };
    }
    dead(reason, &selected_kinds(&s.spec.cleanup), paths, stop)
}

fn agent_standing(a: &Agent, now: Timestamp) -> Standing {
    let build_dir: Vec<RelPath> = a.spec.build_dir.iter().cloned().collect();
    if a.status.deleting_since.is_some() {
        return dead(
            CleanupReason::AgentDeleted,
            &ResourceKind::DOCKER,
            build_dir,
            default_stop(),
        );
    }
    match a.status.phase {
        AgentPhase::Starting | AgentPhase::Running => Standing::Live {
            until: None,
            paths: build_dir,
        },
        AgentPhase::Failed => match a.cleanup_delayed(now) {
            Some(until) => Standing::Delayed {
                until,
                reason: CleanupReason::AgentFailed,
                paths: build_dir,
                stop_timeout: default_stop(),
            },
            None => dead(
                CleanupReason::AgentFailed,
                &[ResourceKind::Container, ResourceKind::Image],
                build_dir,
                default_stop(),
            ),
        },
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

/// The stop timeout of removals that no session's `cleanup.stopTimeout` governs.
pub fn default_stop() -> Duration {
    CleanupSpec::default().stop_timeout
}

pub fn session_ref(s: &Session) -> OwnerRef {
    OwnerRef {
        kind: OwnerKind::Session,
        name: s.metadata.name.clone(),
    }
}

pub fn agent_ref(a: &Agent) -> OwnerRef {
    OwnerRef {
        kind: OwnerKind::Agent,
        name: a.metadata.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp(T0.0 + secs * 1000)
    }

    fn probe(sessions: &[Session], agents: &[Agent], forced: Option<&OwnerRef>) -> Vec<String> {
        Standings::new(
            sessions,
            agents,
            forced,
            at(1),
            T0,
            crate::core::model::CleanupDelays::default(),
        )
        .paths_to_probe()
        .iter()
        .map(|p| p.to_string())
        .collect()
    }

    #[test]
    fn only_the_paths_an_owner_loses_are_probed() {
        let sessions = [
            session("live").path("live").build(),
            session("ended").ended().path("ended").build(),
            session("cleaned").cleaned(T0).path("cleaned").build(),
            session("deleting").deleting().path("deleting").build(),
        ];
        let agents = [
            agent("running")
                .phase(AgentPhase::Running)
                .build_dir("running")
                .build(),
            agent("failed")
                .phase(AgentPhase::Failed)
                .build_dir("failed")
                .build(),
            agent("stopped").build_dir("stopped").build(),
            agent("gone").build_dir("gone").deleting().build(),
        ];
        assert_eq!(
            probe(&sessions, &agents, None),
            ["deleting", "ended", "failed", "gone"]
        );
    }

    #[test]
    fn a_manual_target_loses_its_paths_whatever_its_phase() {
        let cleaned = session("cleaned").cleaned(T0).path("c").build();
        let running = agent("running")
            .phase(AgentPhase::Running)
            .build_dir("r")
            .build();
        assert_eq!(
            probe(
                std::slice::from_ref(&cleaned),
                &[],
                Some(&session_ref(&cleaned))
            ),
            ["c"]
        );
        assert_eq!(
            probe(
                &[],
                std::slice::from_ref(&running),
                Some(&agent_ref(&running))
            ),
            ["r"]
        );
    }

    #[test]
    fn a_path_a_live_owner_declares_is_not_probed() {
        let sessions = [
            session("live").path("shared").build(),
            session("ended").ended().path("shared").path("own").build(),
        ];
        assert_eq!(probe(&sessions, &[], None), ["own"]);
    }

    #[test]
    fn live_owners_carry_the_deadline_their_liveness_ends_at() {
        let sessions = [
            session("ttl").ttl(Duration::from_secs(60)).build(),
            session("open").build(),
            session("ended").ended().build(),
        ];
        let agents = [
            agent("running").phase(AgentPhase::Running).build(),
            agent("failed").phase(AgentPhase::Failed).build(),
        ];
        let live = LiveOwners::new(
            &sessions,
            &agents,
            at(1),
            T0,
            crate::core::model::CleanupDelays::default(),
        );
        let [ttl, open, ended] = sessions.each_ref().map(session_ref);
        let [running, failed] = agents.each_ref().map(agent_ref);
        assert!(live.is_live(&ttl, at(59)));
        assert!(!live.is_live(&ttl, at(60)), "its deadline passed since");
        assert!(live.is_live(&open, at(1_000_000)));
        assert!(live.is_live(&running, at(1_000_000)));
        assert!(!live.is_live(&ended, at(1)));
        assert!(!live.is_live(&failed, at(1)));
    }
}
