//! Over 500 lines: one Engine method per Docker call, each with its timeout and error class; splitting by resource kind would repeat that wrapping.
//!
//! The `Engine` against a real Docker (or Podman) engine through bollard: a timeout on every
//! call, errors sorted into their classes, server-side filters re-checked client-side by the
//! caller, never `size=true`, and the exit gate on engines that need it.

use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, InspectNetworkOptions,
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RemoveVolumeOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::exit_gate::{ExitGate, NetworkPermit};
use super::{DockerError, Engine, EventHint, Selectors};
use crate::core::eviction::{ContainerUse, ImageFacts};
use crate::core::inventory::DockerObject;
use crate::core::model::{DockerOp, EngineInfo, Flavour, Labels, ResourceKind, Timestamp};
use crate::metrics::Metrics;

pub struct Docker {
    /// Connected on first use, and again until it works: a socket that does not exist yet
    /// (dockerd not started, or restarting) is a pass that fails, not a daemon that exits.
    client: std::sync::Mutex<Option<bollard::Docker>>,
    host: String,
    timeout: Duration,
    negotiated: AtomicBool,
    metrics: Arc<Metrics>,
    gate: ExitGate,
}

/// bollard's client-wide request timeout, only a backstop: every call has its own bound (see
/// `call`), and a stop's is `stopTimeout` plus `dockerTimeout`, which a client-wide
/// `dockerTimeout` would cut short.
const BOLLARD_BACKSTOP: Duration = Duration::from_secs(24 * 3600);
/// A container listing the engine described in terms the API schema does not know is asked
/// this many times in all, this far apart.
const UNPARSEABLE_ATTEMPTS: u32 = 4;
const UNPARSEABLE_PAUSE: Duration = Duration::from_millis(250);

impl Docker {
    /// `host` is `unix:///path` or `tcp://host:port`. Connecting is lazy: nothing is sent yet,
    /// and a Unix socket that does not exist yet is looked for again on every call. Only a
    /// `host` that can never work is an error.
    pub fn new(host: &str, timeout: Duration, metrics: Arc<Metrics>) -> Result<Self, DockerError> {
        let client = match connect(host) {
            Ok(c) => Some(c),
            Err(_) if host.starts_with("unix://") => None,
            Err(e) => return Err(e),
        };
        Ok(Docker {
            client: std::sync::Mutex::new(client),
            host: host.to_string(),
            timeout,
            negotiated: AtomicBool::new(false),
            metrics,
            gate: ExitGate::default(),
        })
    }

    /// Runs one call with a timeout, counting failures (but not "not found") by operation.
    async fn call<T>(
        &self,
        op: DockerOp,
        timeout: Duration,
        fut: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, DockerError> {
        let result = match tokio::time::timeout(timeout, fut).await {
            // bollard's own timeout carries no duration; it is this call's bound all the same.
            Ok(r) => r.map_err(|e| match from_bollard(e) {
                DockerError::Timeout(_) => DockerError::Timeout(timeout),
                e => e,
            }),
            Err(_) => Err(DockerError::Timeout(timeout)),
        };
        if let Err(e) = &result {
            if !matches!(e, DockerError::NotFound) {
                self.metrics.docker_api_error(op);
            }
        }
        result
    }

    /// Waits (bounded by `dockerTimeout`) for a moment when a network call cannot overlap a
    /// container exit.
    async fn network_permit(&self) -> Result<NetworkPermit<'_>, DockerError> {
        self.gate
            .network(self.timeout)
            .await
            .ok_or(DockerError::ExitsInFlight(self.timeout))
    }

    async fn list_kind(
        &self,
        kind: ResourceKind,
        filter: (&str, String),
    ) -> Result<Vec<DockerObject>, DockerError> {
        let filters: HashMap<&str, Vec<String>> = HashMap::from([(filter.0, vec![filter.1])]);
        let c = &self.client()?;
        let t = self.timeout;
        Ok(match kind {
            ResourceKind::Container => {
                // Podman 4.3 lists a container it is stopping in state `stopped`, which the
                // API's schema (and so bollard) does not know. The state lasts a moment, so a
                // listing that cannot be parsed is asked again a few times before the pass
                // gives up (and deletes nothing).
                let mut attempts = 1;
                loop {
                    let opts = ListContainersOptionsBuilder::default()
                        .all(true)
                        .size(false)
                        .filters(&filters)
                        .build();
                    match self
                        .call(DockerOp::List, t, c.list_containers(Some(opts)))
                        .await
                    {
                        Err(DockerError::Unparseable(_)) if attempts < UNPARSEABLE_ATTEMPTS => {
                            attempts += 1;
                            tokio::time::sleep(UNPARSEABLE_PAUSE).await;
                        }
                        r => break r?.into_iter().map(container_object).collect(),
                    }
                }
            }
            ResourceKind::Image => {
                let opts = ListImagesOptionsBuilder::default()
                    .all(false)
                    .filters(&filters)
                    .build();
                self.call(DockerOp::List, t, c.list_images(Some(opts)))
                    .await?
                    .into_iter()
                    .flat_map(image_objects)
                    .collect()
            }
            ResourceKind::Network => {
                let opts = ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build();
                let _permit = self.network_permit().await?;
                self.call(DockerOp::List, t, c.list_networks(Some(opts)))
                    .await?
                    .into_iter()
                    .map(network_object)
                    .collect()
            }
            ResourceKind::Volume => {
                let opts = ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build();
                let resp = self
                    .call(DockerOp::List, t, c.list_volumes(Some(opts)))
                    .await?;
                resp.volumes
                    .unwrap_or_default()
                    .into_iter()
                    .map(volume_object)
                    .collect()
            }
            ResourceKind::Path => Vec::new(),
        })
    }
}

/// A client for `host`; for a Unix socket, only once the socket exists.
fn connect(host: &str) -> Result<bollard::Docker, DockerError> {
    if let Some(path) = host.strip_prefix("unix://") {
        // bollard calls a socket it may not look at "not found": say what it is.
        if let Err(e) = std::fs::metadata(path) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                return Err(DockerError::Unavailable(format!(
                    "no permission to reach the Docker socket {path}: run reaper in the group \
                     that owns it (usually docker), or set `docker.host` to a socket it may use"
                )));
            }
        }
        bollard::Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
    } else {
        bollard::Docker::connect_with_host(host)
    }
    .map(|c| c.with_timeout(BOLLARD_BACKSTOP))
    .map_err(|e| match e {
        bollard::errors::Error::SocketNotFoundError(path) => DockerError::Unavailable(format!(
            "no Docker socket at {path} (is dockerd running? is `docker.host` right?); \
             retrying"
        )),
        e => DockerError::Unavailable(format!("{host}: {e}")),
    })
}

impl Docker {
    /// The client, connecting first if the socket was missing until now.
    fn client(&self) -> Result<bollard::Docker, DockerError> {
        let mut client = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &*client {
            return Ok(c.clone());
        }
        let c = connect(&self.host)?;
        *client = Some(c.clone());
        Ok(c)
    }
}

impl Engine for Docker {
    async fn version(&self) -> Result<EngineInfo, DockerError> {
        let v = self
            .call(DockerOp::Ping, self.timeout, self.client()?.version())
            .await?;
        if !self.negotiated.load(Ordering::Relaxed) {
            // The engine may be older than bollard's default API version (20.10 speaks 1.41).
            self.call(
                DockerOp::Ping,
                self.timeout,
                self.client()?.negotiate_version(),
            )
            .await?;
            self.negotiated.store(true, Ordering::Relaxed);
        }
        Ok(engine_info(v))
    }

    async fn ping(&self) -> Result<(), DockerError> {
        self.call(DockerOp::Ping, self.timeout, self.client()?.ping())
            .await
            .map(|_| ())
    }

    fn set_serial_exits(&self, on: bool) {
        self.gate.set_serial(on);
    }

    async fn list(&self, s: &Selectors) -> Result<Vec<DockerObject>, DockerError> {
        let mut calls = Vec::new();
        for kind in ResourceKind::DOCKER {
            for key in &s.label_keys {
                calls.push((kind, ("label", key.clone())));
            }
            for prefix in &s.name_prefixes {
                match kind {
                    ResourceKind::Container => calls.push((kind, ("name", prefix.clone()))),
                    ResourceKind::Image => {
                        // Docker matches `anvyl-agent-*` against familiar names only, so a
                        // `localhost/` spelling (Podman's own builds) needs its own pattern.
                        calls.push((kind, ("reference", format!("{prefix}*"))));
                        calls.push((kind, ("reference", format!("localhost/{prefix}*"))));
                    }
                    _ => {}
                }
            }
        }
        let results =
            futures_util::future::join_all(calls.into_iter().map(|(k, f)| self.list_kind(k, f)))
                .await;
        // A single failed listing makes the whole view incomplete: the caller deletes nothing.
        let mut seen: BTreeMap<(ResourceKind, String, String), DockerObject> = BTreeMap::new();
        for r in results {
            for o in r? {
                seen.entry((o.kind, o.id.clone(), o.name.clone()))
                    .or_insert(o);
            }
        }
        Ok(seen.into_values().collect())
    }

    async fn inspect(&self, obj: &DockerObject) -> Result<Option<DockerObject>, DockerError> {
        let c = &self.client()?;
        let t = self.timeout;
        let found = match obj.kind {
            ResourceKind::Container => self
                .call(
                    DockerOp::Inspect,
                    t,
                    c.inspect_container(&obj.id, None::<InspectContainerOptions>),
                )
                .await
                .map(|r| {
                    let state = r.state.unwrap_or_default();
                    DockerObject {
                        kind: ResourceKind::Container,
                        id: r.id.unwrap_or_default(),
                        name: r
                            .name
                            .unwrap_or_default()
                            .trim_start_matches('/')
                            .to_string(),
                        labels: labels(r.config.and_then(|c| c.labels)),
                        created: r.created.as_deref().and_then(Timestamp::parse_rfc3339),
                        running: state.running.unwrap_or(false)
                            || state.restarting.unwrap_or(false)
                            || state.paused.unwrap_or(false),
                        other_refs: Vec::new(),
                    }
                }),
            ResourceKind::Image => self
                .call(DockerOp::Inspect, t, c.inspect_image(obj.target()))
                .await
                .map(|r| {
                    let tags = r.repo_tags.unwrap_or_default();
                    DockerObject {
                        kind: ResourceKind::Image,
                        id: r.id.unwrap_or_default(),
                        name: obj.name.clone(),
                        labels: labels(r.config.and_then(|c| c.labels)),
                        created: r.created.as_deref().and_then(Timestamp::parse_rfc3339),
                        running: false,
                        other_refs: tags.into_iter().filter(|t| *t != obj.name).collect(),
                    }
                }),
            ResourceKind::Network => {
                let _permit = self.network_permit().await?;
                self.call(
                    DockerOp::Inspect,
                    t,
                    c.inspect_network(&obj.id, None::<InspectNetworkOptions>),
                )
                .await
                .map(|n| DockerObject {
                    kind: ResourceKind::Network,
                    id: n.id.unwrap_or_default(),
                    name: n.name.unwrap_or_default(),
                    labels: labels(n.labels),
                    created: n.created.as_deref().and_then(Timestamp::parse_rfc3339),
                    running: false,
                    other_refs: Vec::new(),
                })
            }
            ResourceKind::Volume => self
                .call(DockerOp::Inspect, t, c.inspect_volume(&obj.id))
                .await
                .map(volume_object),
            ResourceKind::Path => return Ok(None),
        };
        match found {
            Ok(o) => Ok(Some(o)),
            Err(DockerError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        let secs = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptionsBuilder::default().t(secs).build();
        // Held until the engine answers, that is until the container has exited.
        let _permit = self.gate.exit().await;
        match self
            .call(
                DockerOp::Stop,
                timeout + self.timeout,
                self.client()?.stop_container(id, Some(opts)),
            )
            .await
        {
            // 304: already stopped.
            Err(DockerError::Other(m)) if m.starts_with("status 304") => Ok(()),
            r => r,
        }
    }

    async fn remove(&self, obj: &DockerObject) -> Result<(), DockerError> {
        let c = &self.client()?;
        let t = self.timeout;
        let target = obj.target();
        let r = match obj.kind {
            ResourceKind::Container => {
                // force: a container restarted by its policy between our stop and this call
                // still goes. Not with serial exits: killing it would be an exit outside the
                // gate; the engine refuses the delete with a conflict and a later pass stops it.
                let opts = RemoveContainerOptionsBuilder::default()
                    .force(!self.gate.is_serial())
                    .v(false)
                    .build();
                self.call(DockerOp::Remove, t, c.remove_container(target, Some(opts)))
                    .await
            }
            ResourceKind::Image => {
                let opts = RemoveImageOptionsBuilder::default()
                    .force(false)
                    .noprune(false)
                    .build();
                self.call(
                    DockerOp::Remove,
                    t,
                    c.remove_image(target, Some(opts), None),
                )
                .await
                .map(|_| ())
            }
            ResourceKind::Network => {
                let _permit = self.network_permit().await?;
                self.call(DockerOp::Remove, t, c.remove_network(target))
                    .await
            }
            ResourceKind::Volume => {
                let opts = RemoveVolumeOptionsBuilder::default().force(false).build();
                self.call(DockerOp::Remove, t, c.remove_volume(target, Some(opts)))
                    .await
            }
            ResourceKind::Path => Ok(()),
        };
        match r {
            Err(DockerError::NotFound) => Ok(()), // already gone is success
            r => r,
        }
    }

    fn events(
        &self,
        since_secs: i64,
    ) -> impl Stream<Item = Result<EventHint, DockerError>> + Send + 'static {
        // Only the type is filtered server-side: the engines spell actions differently (see
        // `event_hint`), and Podman 4.3's `event=die` filter matches nothing.
        let filters: HashMap<&str, Vec<String>> = HashMap::from([(
            "type",
            ["container", "network", "volume"]
                .map(String::from)
                .to_vec(),
        )]);
        let opts = EventsOptionsBuilder::default()
            .since(&since_secs.to_string())
            .filters(&filters)
            .build();
        let client = match self.client() {
            Ok(c) => c,
            // No socket yet: the follower reconnects after a backoff.
            Err(e) => return futures_util::stream::once(std::future::ready(Err(e))).left_stream(),
        };
        client
            .events(Some(opts))
            .filter_map(|r| {
                std::future::ready(match r {
                    Ok(m) => event_hint(m).map(Ok),
                    Err(e) => Some(Err(from_bollard(e))),
                })
            })
            .right_stream()
    }

    async fn data_root(&self) -> Result<String, DockerError> {
        let info = self
            .call(DockerOp::Ping, self.timeout, self.client()?.info())
            .await?;
        info.docker_root_dir
            .filter(|d| !d.is_empty())
            .ok_or_else(|| DockerError::Other("the engine's /info names no DockerRootDir".into()))
    }

    async fn disk_inventory(&self) -> Result<(Vec<ImageFacts>, Vec<ContainerUse>), DockerError> {
        let c = &self.client()?;
        let t = self.timeout;
        let images = ListImagesOptionsBuilder::default().all(false).build();
        let images = self
            .call(DockerOp::List, t, c.list_images(Some(images)))
            .await?;
        let containers = ListContainersOptionsBuilder::default()
            .all(true)
            .size(false)
            .build();
        let containers = self
            .call(DockerOp::List, t, c.list_containers(Some(containers)))
            .await?;
        Ok((
            images.into_iter().map(image_facts).collect(),
            containers.into_iter().filter_map(container_use).collect(),
        ))
    }
}

/// An image as disk-pressure eviction sees it: all its references, its size.
fn image_facts(i: bollard::models::ImageSummary) -> ImageFacts {
    ImageFacts {
        references: i
            .repo_tags
            .into_iter()
            .filter(|t| t != "<none>:<none>")
            .collect(),
        id: i.id,
        labels: i.labels.into_iter().collect(),
        created: Some(whole_second(i.created)),
        size: u64::try_from(i.size).unwrap_or(0),
    }
}

fn container_use(c: bollard::models::ContainerSummary) -> Option<ContainerUse> {
    Some(ContainerUse {
        image_id: c.image_id.filter(|i| !i.is_empty())?,
        created: c.created.map(whole_second),
    })
}

/// Podman's Docker-compatible service names itself among the version's components.
fn engine_info(v: bollard::models::SystemVersion) -> EngineInfo {
    let podman = v
        .components
        .iter()
        .flatten()
        .any(|c| c.name.to_ascii_lowercase().contains("podman"));
    EngineInfo {
        flavour: if podman {
            Flavour::Podman
        } else {
            Flavour::Docker
        },
        version: v.version.unwrap_or_default(),
        api_version: v.api_version.unwrap_or_default(),
    }
}

/// Container actions that can change what reaper decides, as Docker and Podman spell them:
/// Docker's `die` and `destroy` are Podman's `die` (`died` in its filters) and `remove`.
const CONTAINER_ACTIONS: [&str; 6] = ["create", "start", "die", "died", "destroy", "remove"];

/// Network and volume actions that change what reaper counts, in both engines' spellings.
const NETWORK_VOLUME_ACTIONS: [&str; 3] = ["create", "destroy", "remove"];

/// Actions after which the object is gone.
const GONE_ACTIONS: [&str; 3] = ["destroy", "remove", "delete"];

/// Event attributes that are not the container's labels: Docker's and Podman's
/// (`containerExitCode`, `podId`).
const NOT_LABELS: [&str; 5] = ["name", "image", "exitCode", "containerExitCode", "podId"];

/// The hint in one engine event, or `None` for an event that cannot change a decision (another
/// type, or an action such as `kill`, `exec_start`, Podman's `cleanup`, or a network's
/// `connect`).
fn event_hint(m: bollard::models::EventMessage) -> Option<EventHint> {
    use bollard::models::EventMessageTypeEnum as T;
    let action = m.action.as_deref()?;
    let gone = GONE_ACTIONS.contains(&action);
    let kind = match m.typ? {
        T::CONTAINER if CONTAINER_ACTIONS.contains(&action) => ResourceKind::Container,
        T::NETWORK if NETWORK_VOLUME_ACTIONS.contains(&action) => ResourceKind::Network,
        T::VOLUME if NETWORK_VOLUME_ACTIONS.contains(&action) => ResourceKind::Volume,
        _ => return None,
    };
    let time_secs = m.time.unwrap_or(0);
    if kind != ResourceKind::Container {
        // Network and volume events carry the ID (a volume's is its name) and no labels.
        let actor = m.actor?;
        let id = actor.id.filter(|id| !id.is_empty())?;
        let name = actor
            .attributes
            .and_then(|mut a| a.remove("name"))
            .unwrap_or_else(|| id.clone());
        return Some(EventHint {
            object: DockerObject {
                kind,
                id,
                name,
                labels: Labels::new(),
                created: None,
                running: false,
                other_refs: Vec::new(),
            },
            time_secs,
            labelled: false,
            gone,
            created_from: None,
        });
    }
    let mut attrs = m.actor.and_then(|a| a.attributes).unwrap_or_default();
    let name = attrs.remove("name").unwrap_or_default();
    let created_from = match action {
        "create" => attrs.get("image").filter(|i| !i.is_empty()).cloned(),
        _ => None,
    };
    for key in NOT_LABELS {
        attrs.remove(key);
    }
    Some(EventHint {
        object: DockerObject {
            kind: ResourceKind::Container,
            id: String::new(),
            name,
            // Container events carry the container's labels as attributes.
            labels: attrs.into_iter().collect(),
            created: None,
            running: false,
            other_refs: Vec::new(),
        },
        time_secs,
        labelled: true,
        gone,
        created_from,
    })
}

/// Listings give creation times in whole seconds. Ages count from the last instant of that
/// second, so nothing is ever judged older than it really is.
fn whole_second(secs: i64) -> Timestamp {
    Timestamp(Timestamp::from_unix_secs(secs).0 + 999)
}

fn labels(l: Option<HashMap<String, String>>) -> Labels {
    l.unwrap_or_default().into_iter().collect()
}

fn container_object(c: bollard::models::ContainerSummary) -> DockerObject {
    use bollard::models::ContainerSummaryStateEnum as S;
    DockerObject {
        kind: ResourceKind::Container,
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels: labels(c.labels),
        created: c.created.map(whole_second),
        running: matches!(c.state, Some(S::RUNNING | S::RESTARTING | S::PAUSED)),
        other_refs: Vec::new(),
    }
}

/// One object per reference; an untagged image is one object with an empty name.
fn image_objects(i: bollard::models::ImageSummary) -> Vec<DockerObject> {
    let refs: Vec<String> = i
        .repo_tags
        .into_iter()
        .filter(|t| t != "<none>:<none>")
        .collect();
    let base = DockerObject {
        kind: ResourceKind::Image,
        id: i.id,
        name: String::new(),
        labels: i.labels.into_iter().collect(),
        created: Some(whole_second(i.created)),
        running: false,
        other_refs: Vec::new(),
    };
    if refs.is_empty() {
        return vec![base];
    }
    refs.iter()
        .map(|r| DockerObject {
            name: r.clone(),
            other_refs: refs.iter().filter(|o| *o != r).cloned().collect(),
            ..base.clone()
        })
        .collect()
}

fn network_object(n: bollard::models::Network) -> DockerObject {
    DockerObject {
        kind: ResourceKind::Network,
        id: n.id.unwrap_or_default(),
        name: n.name.unwrap_or_default(),
        labels: labels(n.labels),
        created: n.created.as_deref().and_then(Timestamp::parse_rfc3339),
        running: false,
        other_refs: Vec::new(),
    }
}

fn volume_object(v: bollard::models::Volume) -> DockerObject {
    DockerObject {
        kind: ResourceKind::Volume,
        id: v.name.clone(),
        name: v.name,
        labels: v.labels.into_iter().collect(),
        // Volume times are whole seconds too: assume the end of that second.
        created: v
            .created_at
            .as_deref()
            .and_then(Timestamp::parse_rfc3339)
            .map(|t| {
                if t.0 % 1000 == 0 {
                    Timestamp(t.0 + 999)
                } else {
                    t
                }
            }),
        running: false,
        other_refs: Vec::new(),
    }
}

fn from_bollard(e: bollard::errors::Error) -> DockerError {
    use bollard::errors::Error as B;
    match e {
        B::DockerResponseServerError {
            status_code: 404, ..
        } => DockerError::NotFound,
        B::DockerResponseServerError {
            status_code: 409,
            message,
        } => DockerError::Conflict(message),
        // A network with endpoints left is refused with a 403; like a 409 it clears once
        // the containers using it are gone.
        B::DockerResponseServerError { message, .. }
            if message.contains("has active endpoints") =>
        {
            DockerError::Conflict(message)
        }
        // The engine reports some races as 500s (moby #27381).
        B::DockerResponseServerError { message, .. }
            if message.contains("already in progress")
                || message.contains("device or resource busy") =>
        {
            DockerError::Conflict(message)
        }
        B::DockerResponseServerError {
            status_code,
            message,
        } => DockerError::Other(format!("status {status_code}: {message}")),
        B::RequestTimeoutError => DockerError::Timeout(Duration::ZERO),
        e @ (B::JsonDataError { .. } | B::JsonSerdeError { .. } | B::StrParseError { .. }) => {
            DockerError::Unparseable(e.to_string())
        }
        e => DockerError::Unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses one line of an engine's event stream as bollard does.
    fn hint(line: &str) -> Option<EventHint> {
        event_hint(serde_json::from_str(line).expect("an event bollard can parse"))
    }

    // Recorded from Debian's Docker 20.10.24 and Podman 4.3.1 (API 1.41, `--events-backend
    // file`), IDs shortened.
    const DOCKER_DIE: &str = r#"{"status":"die","id":"b98b3dd93cd3","from":"reaper-test/busybox:1","Type":"container","Action":"die","Actor":{"ID":"b98b3dd93cd3","Attributes":{"exitCode":"137","image":"reaper-test/busybox:1","name":"ev1","reaper.session":"s1"}},"scope":"local","time":1795777308,"timeNano":1795777308886988155}"#;
    const DOCKER_KILL: &str = r#"{"status":"kill","id":"b98b3dd93cd3","from":"reaper-test/busybox:1","Type":"container","Action":"kill","Actor":{"ID":"b98b3dd93cd3","Attributes":{"image":"reaper-test/busybox:1","name":"ev1","reaper.session":"s1","signal":"9"}},"scope":"local","time":1795777308,"timeNano":1795777308851396590}"#;
    const PODMAN_DIE: &str = r#"{"status":"die","id":"72b3a1f300b4","from":"docker.io/reaper-test/busybox:1","Type":"container","Action":"die","Actor":{"ID":"72b3a1f300b4","Attributes":{"containerExitCode":"137","exitCode":"137","image":"docker.io/reaper-test/busybox:1","name":"anvyl-agent-t1","podId":"","session_id":"9"}},"scope":"local","time":1795777144,"timeNano":1795777144529458178}"#;
    const PODMAN_CLEANUP: &str = r#"{"status":"cleanup","id":"72b3a1f300b4","from":"docker.io/reaper-test/busybox:1","Type":"container","Action":"cleanup","Actor":{"ID":"72b3a1f300b4","Attributes":{"containerExitCode":"0","image":"docker.io/reaper-test/busybox:1","name":"anvyl-agent-t1","podId":"","session_id":"9"}},"scope":"local","time":1795777144,"timeNano":1795777144590821730}"#;

    const DOCKER_NETWORK_CREATE: &str = r#"{"Type":"network","Action":"create","Actor":{"ID":"33ff56ae9bed41e9454d7b04b83fa6ead8d0b8bef2db66a234bf0306279f603b","Attributes":{"name":"wn1","type":"bridge"}},"scope":"local","time":1795791560,"timeNano":1795791560338155326}"#;
    const DOCKER_VOLUME_CREATE: &str = r#"{"Type":"volume","Action":"create","Actor":{"ID":"wv1","Attributes":{"driver":"local"}},"scope":"local","time":1795791560,"timeNano":1795791560376287926}"#;

    #[test]
    fn network_and_volume_events_name_the_object_without_labels() {
        for (action, gone) in [("create", false), ("destroy", true), ("remove", true)] {
            let n = hint(&with_action(DOCKER_NETWORK_CREATE, "create", action))
                .unwrap_or_else(|| panic!("a network's {action} is a hint"));
            assert_eq!(n.object.kind, ResourceKind::Network);
            assert_eq!(
                n.object.id,
                "33ff56ae9bed41e9454d7b04b83fa6ead8d0b8bef2db66a234bf0306279f603b"
            );
            assert_eq!(n.object.name, "wn1");
            assert!(n.object.labels.is_empty(), "`type` is not a label");
            assert_eq!((n.labelled, n.gone), (false, gone), "{action}");
            let v = hint(&with_action(DOCKER_VOLUME_CREATE, "create", action))
                .unwrap_or_else(|| panic!("a volume's {action} is a hint"));
            assert_eq!(v.object.kind, ResourceKind::Volume);
            assert_eq!(
                (v.object.id.as_str(), v.object.name.as_str()),
                ("wv1", "wv1")
            );
            assert!(v.object.labels.is_empty(), "`driver` is not a label");
            assert_eq!((v.labelled, v.gone), (false, gone), "{action}");
            assert_eq!(v.time_secs, 1795791560);
        }
        let no_id = DOCKER_VOLUME_CREATE.replace(r#""ID":"wv1","#, "");
        assert!(hint(&no_id).is_none());
    }

    /// `line` with its action (and status) replaced.
    fn with_action(line: &str, from: &str, to: &str) -> String {
        line.replace(&format!("\"{from}\""), &format!("\"{to}\""))
    }

    #[test]
    fn docker_events_carry_the_container_name_and_labels() {
        for action in ["create", "start", "die", "destroy"] {
            let h = hint(&with_action(DOCKER_DIE, "die", action))
                .unwrap_or_else(|| panic!("Docker's {action} is a hint"));
            assert_eq!(h.object.kind, ResourceKind::Container);
            assert!(h.labelled);
            assert_eq!(h.gone, action == "destroy");
            assert_eq!(h.object.name, "ev1");
            assert_eq!(
                h.object.labels,
                Labels::from([("reaper.session".into(), "s1".into())]),
                "{action}"
            );
            assert_eq!(h.time_secs, 1795777308);
            // Only a create is a use of the image, for disk pressure.
            let used = (action == "create").then(|| "reaper-test/busybox:1".to_string());
            assert_eq!(h.created_from, used, "{action}");
        }
    }

    #[test]
    fn podman_events_in_both_spellings_carry_only_the_labels() {
        for action in ["create", "start", "die", "died", "remove"] {
            let h = hint(&with_action(PODMAN_DIE, "die", action))
                .unwrap_or_else(|| panic!("Podman's {action} is a hint"));
            assert_eq!(h.object.name, "anvyl-agent-t1");
            // No containerExitCode, podId, exitCode or image among the labels.
            assert_eq!(
                h.object.labels,
                Labels::from([("session_id".into(), "9".into())]),
                "{action}"
            );
            assert_eq!(h.time_secs, 1795777144);
        }
    }

    #[test]
    fn other_actions_and_types_are_no_hints() {
        assert!(hint(DOCKER_KILL).is_none());
        assert!(hint(PODMAN_CLEANUP).is_none());
        for action in [
            "kill",
            "stop",
            "init",
            "attach",
            "exec_start: sh -c true",
            "oom",
        ] {
            assert!(
                hint(&with_action(DOCKER_DIE, "die", action)).is_none(),
                "{action}"
            );
        }
        // A network has no `die`; `connect` and `disconnect` change nothing reaper counts.
        let network = DOCKER_DIE.replace(r#""Type":"container""#, r#""Type":"network""#);
        assert!(hint(&network).is_none());
        for action in ["connect", "disconnect"] {
            assert!(hint(&with_action(DOCKER_NETWORK_CREATE, "create", action)).is_none());
        }
        for action in ["mount", "unmount"] {
            assert!(hint(&with_action(DOCKER_VOLUME_CREATE, "create", action)).is_none());
        }
        let image = DOCKER_DIE.replace(r#""Type":"container""#, r#""Type":"image""#);
        assert!(hint(&with_action(&image, "die", "delete")).is_none());
        let untyped = DOCKER_DIE.replace(r#""Type":"container","#, "");
        assert!(hint(&untyped).is_none());
        let no_action = DOCKER_DIE.replace(r#""Action":"die","#, "");
        assert!(hint(&no_action).is_none());
    }

    #[test]
    fn the_flavour_comes_from_the_version_components() {
        let component = |name: &str| bollard::models::SystemVersionComponents {
            name: name.into(),
            version: "4.3.1".into(),
            ..Default::default()
        };
        let podman = engine_info(bollard::models::SystemVersion {
            version: Some("4.3.1".into()),
            api_version: Some("1.41".into()),
            components: Some(vec![component("Podman Engine")]),
            ..Default::default()
        });
        assert_eq!(podman.flavour, Flavour::Podman);
        assert_eq!(podman.to_string(), "Podman 4.3.1 (API 1.41)");
        let docker = engine_info(bollard::models::SystemVersion {
            version: Some("20.10.24+dfsg1".into()),
            components: Some(vec![component("Engine"), component("containerd")]),
            ..Default::default()
        });
        assert_eq!(docker.flavour, Flavour::Docker);
        assert_eq!(docker.version, "20.10.24+dfsg1");
    }

    #[test]
    fn images_become_one_object_per_reference() {
        let i = bollard::models::ImageSummary {
            id: "sha256:1".into(),
            repo_tags: vec!["a:1".into(), "b:2".into()],
            ..Default::default()
        };
        let objs = image_objects(i);
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].target(), "a:1");
        assert_eq!(objs[0].other_refs, ["b:2"]);
        let dangling = bollard::models::ImageSummary {
            id: "sha256:2".into(),
            ..Default::default()
        };
        assert_eq!(image_objects(dangling)[0].target(), "sha256:2");
    }
}
