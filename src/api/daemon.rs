//! What the API needs from the running daemon, and nothing more. Handlers depend on this
//! handle instead of the controller, so the server knows no engine type and a test can serve
//! the API from a stand-in.

use futures_util::future::BoxFuture;

use super::wire::{CleanupResponse, Health, ManifestError, Preview};
use crate::core::inventory::DockerObject;
use crate::core::model::OwnerRef;
use crate::core::plan::Scope;
use crate::store::{Store, StoreError};

/// The store or the Docker view cannot be read right now (the API answers 503).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// The metrics exposition, with its content type.
pub struct Scrape {
    pub content_type: &'static str,
    pub body: String,
}

pub trait Daemon: Send + Sync + 'static {
    /// The record store, if it can be read now; an error means it cannot. Writing to it is
    /// all a handler does to have a change acted on: the controller follows the store.
    fn store(&self) -> Result<Store, StoreError>;
    /// Daemon, store and Docker health as the last pass left them.
    fn health(&self) -> Health;
    /// A pass succeeded recently: the loop is alive (`/healthz`).
    fn reconciled_recently(&self) -> bool;
    /// Files of the watched manifest directory that fail validation.
    fn manifest_errors(&self) -> Vec<ManifestError>;
    /// What a pass in `scope` would remove now, and what waits; removes nothing.
    fn preview<'a>(&'a self, scope: &'a Scope) -> BoxFuture<'a, Result<Preview, Unavailable>>;
    /// The Docker objects `owner` claims now.
    fn owned_by<'a>(
        &'a self,
        owner: &'a OwnerRef,
    ) -> BoxFuture<'a, Result<Vec<DockerObject>, Unavailable>>;
    /// A pass in `scope` that waits for its removals and reports them (`reaper cleanup`).
    fn clean_up<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<CleanupResponse, Unavailable>>;
    /// Every metric, brought up to date.
    fn scrape(&self) -> Scrape;
    /// The config's `cleanupDelay` and `cleanupDelayOnFailure`, for records that set neither.
    fn cleanup_delays(&self) -> crate::core::model::CleanupDelays;
    /// The daemon-wide ownership rules, for a record's effective match.
    fn rules(&self) -> crate::core::ownership::Rules;
}
