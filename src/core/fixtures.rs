//! Test builders that read like sentences: `container("c").label("reaper.session", "s").running()`,
//! `session("s").ended().build()`.

use crate::core::inventory::DockerObject;
use crate::core::model::*;

pub const T0: Timestamp = Timestamp(1_700_000_000_000);

fn object(kind: ResourceKind, id: &str, name: &str) -> DockerObject {
    DockerObject {
        kind,
        id: id.to_string(),
        name: name.to_string(),
        labels: Labels::new(),
        created: Some(T0),
        running: false,
        other_refs: Vec::new(),
    }
}

pub fn container(name: &str) -> DockerObject {
    object(ResourceKind::Container, &format!("id-{name}"), name)
}
pub fn network(name: &str) -> DockerObject {
    object(ResourceKind::Network, &format!("id-{name}"), name)
}
pub fn volume(name: &str) -> DockerObject {
    object(ResourceKind::Volume, name, name)
}
pub fn image(reference: &str) -> DockerObject {
    object(
        ResourceKind::Image,
        &format!("sha256:{reference}"),
        reference,
    )
}

pub trait ObjectExt {
    fn label(self, k: &str, v: &str) -> Self;
    fn running(self) -> Self;
    fn created(self, at: Option<Timestamp>) -> Self;
    fn other_ref(self, r: &str) -> Self;
}

impl ObjectExt for DockerObject {
    fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    fn running(mut self) -> Self {
        self.running = true;
        self
    }
    fn created(mut self, at: Option<Timestamp>) -> Self {
        self.created = at;
        self
    }
    fn other_ref(mut self, r: &str) -> Self {
        self.other_refs.push(r.into());
        self
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Name::new(name).expect("fixture names are valid"),
        labels: Labels::new(),
    }
}

pub struct SessionBuilder(Session);

pub fn session(name: &str) -> SessionBuilder {
    SessionBuilder(Session {
        metadata: meta(name),
        spec: SessionSpec::default(),
        status: SessionStatus {
            created_at: T0,
            ..SessionStatus::default()
        },
    })
}

impl SessionBuilder {
    pub fn matching(mut self, k: &str, v: &str) -> Self {
        self.0.spec.match_.labels.insert(k.into(), v.into());
        self
    }
    pub fn ttl(mut self, d: Duration) -> Self {
        self.0.spec.ttl = Some(d);
        self
    }
    pub fn heartbeat(mut self, d: Duration) -> Self {
        self.0.spec.heartbeat_timeout = Some(d);
        self
    }
    pub fn ended(mut self) -> Self {
        self.0.end(EndReason::Succeeded, T0, Duration::ZERO);
        self
    }
    /// Ended at T0 with a cleanup delay of `delay`: `Ending` until T0 + delay.
    pub fn ending(mut self, delay: Duration) -> Self {
        self.0.spec.cleanup.delay = Some(delay);
        self.0.end(EndReason::Succeeded, T0, delay);
        self
    }
    pub fn cleaned(mut self, at: Timestamp) -> Self {
        self = self.ended();
        self.0.mark_cleaned(at);
        self
    }
    pub fn deleting(mut self) -> Self {
        self.0.mark_for_deletion(T0);
        self
    }
    pub fn keep_images(mut self) -> Self {
        self.0.spec.cleanup.images = false;
        self
    }
    pub fn path(mut self, p: &str) -> Self {
        self.0
            .spec
            .paths
            .push(RelPath::new(p).expect("fixture paths are valid"));
        self
    }
    pub fn build(self) -> Session {
        self.0
    }
}

pub struct AgentBuilder(Agent);

pub fn agent(name: &str) -> AgentBuilder {
    AgentBuilder(Agent {
        metadata: meta(name),
        spec: AgentSpec::default(),
        status: AgentStatus {
            created_at: T0,
            phase_since: T0,
            ..AgentStatus::default()
        },
    })
}

impl AgentBuilder {
    pub fn prefix(mut self, p: &str) -> Self {
        self.0.spec.match_.name_prefix = Some(p.into());
        self
    }
    /// As reported at `T0`; call before `deleting`, which takes no more reports.
    pub fn phase(mut self, phase: AgentPhase) -> Self {
        self.0
            .report(phase, T0, crate::core::model::Duration::ZERO)
            .expect("fixture agents take reports before they are deleted");
        self
    }
    pub fn build_dir(mut self, p: &str) -> Self {
        self.0.spec.build_dir = Some(RelPath::new(p).expect("fixture paths are valid"));
        self
    }
    pub fn deleting(mut self) -> Self {
        self.0.mark_for_deletion(T0);
        self
    }
    pub fn build(self) -> Agent {
        self.0
    }
}
