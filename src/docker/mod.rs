//! The Docker seam: the `Engine` trait (the operations reaper uses), the error classes the
//! controller acts on, and what to list. `bollard.rs` implements it against the real engine;
//! tests inject faults through it. It decides nothing.

mod bollard;
pub mod exit_gate;

pub use self::bollard::Docker;

use futures_util::Stream;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use crate::core::eviction::{ContainerUse, ImageFacts};
use crate::core::inventory::DockerObject;
use crate::core::model::{EngineInfo, ErrorClass};

#[derive(Debug, Clone, thiserror::Error)]
pub enum DockerError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("Docker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Docker is unreachable: {0}")]
    Unavailable(String),
    /// Serial exits: no moment without a container exit in flight came to call the network
    /// API. Nothing is wrong with the engine; the caller retries later and deletes nothing on
    /// the partial view meanwhile.
    #[error(
        "no moment without a container stop in flight came within {0:?} to call the network API"
    )]
    ExitsInFlight(Duration),
    /// The engine answered in terms its API schema does not know (Podman 4.3's `stopped`).
    #[error("Docker's answer could not be parsed: {0}")]
    Unparseable(String),
    #[error("Docker error: {0}")]
    Other(String),
}

impl DockerError {
    pub fn class(&self) -> ErrorClass {
        match self {
            DockerError::Conflict(_) => ErrorClass::Conflict,
            DockerError::Timeout(_) | DockerError::ExitsInFlight(_) => ErrorClass::Timeout,
            DockerError::Unavailable(_) => ErrorClass::DockerUnavailable,
            DockerError::NotFound | DockerError::Unparseable(_) | DockerError::Other(_) => {
                ErrorClass::Other
            }
        }
    }
}

/// What to list: reaper asks the engine only for objects that might be ours (by label key or
/// name prefix) and re-checks every one of them client-side. It never asks for sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selectors {
    pub label_keys: BTreeSet<String>,
    pub name_prefixes: BTreeSet<String>,
}

impl Selectors {
    /// Drops prefixes covered by a shorter one, so each object is listed once.
    pub fn new(
        label_keys: impl IntoIterator<Item = String>,
        prefixes: impl IntoIterator<Item = String>,
    ) -> Self {
        let all: BTreeSet<String> = prefixes.into_iter().filter(|p| !p.is_empty()).collect();
        let name_prefixes = all
            .iter()
            .filter(|p| !all.iter().any(|q| q != *p && p.starts_with(q.as_str())))
            .cloned()
            .collect();
        Selectors {
            label_keys: label_keys.into_iter().collect(),
            name_prefixes,
        }
    }
}

/// A hint from the event stream: an object of this kind, ID and name (and, for a container,
/// these labels) changed.
#[derive(Clone, Debug)]
pub struct EventHint {
    pub object: DockerObject,
    pub time_secs: i64,
    /// The event carried the object's labels. Container events do; network and volume events
    /// name the object only, so whether it is ours takes a look (or the last listing).
    pub labelled: bool,
    /// The object is gone (destroyed, removed).
    pub gone: bool,
    /// A container was created from this image, as the create call named it (a reference or
    /// an ID): a use of the image, which disk pressure orders evictions by.
    pub created_from: Option<String>,
}

/// The engine operations reaper uses. The controller is generic over it so tests can inject
/// faults; production uses [`Docker`].
pub trait Engine: Send + Sync + 'static {
    /// `GET /version`: what the engine is. Also settles the API version to speak.
    fn version(&self) -> impl Future<Output = Result<EngineInfo, DockerError>> + Send;
    /// `GET /_ping`: the engine answers at all (it may still be wedged elsewhere).
    fn ping(&self) -> impl Future<Output = Result<(), DockerError>> + Send;
    /// On: at most one call that can end a running container in flight, and network calls
    /// only between them (see `exit_gate`).
    fn set_serial_exits(&self, on: bool);
    fn list(
        &self,
        selectors: &Selectors,
    ) -> impl Future<Output = Result<Vec<DockerObject>, DockerError>> + Send;
    /// A fresh look at one listed object; `None` if it is gone. For an image reference, the
    /// object returned carries the ID the reference points to now.
    fn inspect(
        &self,
        obj: &DockerObject,
    ) -> impl Future<Output = Result<Option<DockerObject>, DockerError>> + Send;
    /// Stops a running container, giving it `timeout` to exit after SIGTERM.
    fn stop(
        &self,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), DockerError>> + Send;
    /// Removes one object by ID (by reference for a tagged image: untag, never force). A
    /// container is force-removed only while exits may overlap; with serial exits it must be
    /// stopped first, and one that started meanwhile is refused with a conflict.
    fn remove(&self, obj: &DockerObject) -> impl Future<Output = Result<(), DockerError>> + Send;
    fn events(
        &self,
        since_secs: i64,
    ) -> impl Stream<Item = Result<EventHint, DockerError>> + Send + 'static;
    /// `GET /info`'s `DockerRootDir`: where the engine keeps images and containers, as the
    /// engine's host sees it. (Fault-injecting engines need not have one.)
    fn data_root(&self) -> impl Future<Output = Result<String, DockerError>> + Send {
        async {
            Err(DockerError::Other(
                "this engine reports no data root".into(),
            ))
        }
    }
    /// Every image (anyone's) with its size and references, and every container (in any state,
    /// anyone's) with the image it is made from: what disk-pressure eviction plans with.
    fn disk_inventory(
        &self,
    ) -> impl Future<Output = Result<(Vec<ImageFacts>, Vec<ContainerUse>), DockerError>> + Send
    {
        async {
            Err(DockerError::Other(
                "this engine lists no image sizes".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_drop_prefixes_covered_by_shorter_ones() {
        let s = Selectors::new(
            ["reaper.session".to_string()],
            [
                "anvyl-agent-".to_string(),
                "anvyl-agent-bob".to_string(),
                "custom-".to_string(),
                String::new(),
            ],
        );
        assert_eq!(
            s.name_prefixes.into_iter().collect::<Vec<_>>(),
            ["anvyl-agent-", "custom-"]
        );
    }
}
