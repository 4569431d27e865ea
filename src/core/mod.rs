//! The pure core: what reaper believes and decides, with no I/O. Records and their lifecycle
//! (`model`), the hardened YAML reader (`yaml`) and manifests (`manifest`), the Docker objects
//! seen (`inventory`), the spellings of an image repository (`reference`), whose objects are
//! (`ownership`), which idle images of ours to evict under disk pressure (`eviction`), who is live and what the others lose (`liveness`), and what to do about it
//! (`plan`). It imports no adapter: `scripts/check-layers` fails the build if it does.

pub mod eviction;
pub mod inventory;
pub mod liveness;
pub mod manifest;
pub mod model;
pub mod ownership;
pub mod plan;
pub mod reference;
pub mod yaml;

/// Test builders that read like sentences: `session("s").ended().build()`.
#[cfg(test)]
pub(crate) mod fixtures;
