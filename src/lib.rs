//! reaper: a controller that removes the Docker objects of ended workflow sessions and failed
//! agents, and nothing else.
//!
//! The folders are the layers (see `docs/architecture.md`). `core` is pure: the records and their
//! lifecycle, the manifest reader, the inventory of Docker objects, the ownership rules and the
//! planner; it does no I/O and imports no adapter. Around it are the adapters: `store` (sled),
//! `docker` (bollard), `paths` (the filesystem), `api` (HTTP), `cli` and `metrics`; the
//! `controller` loop ties core and adapters together, and `daemon` runs it all.

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod core;
pub mod daemon;
pub mod disk;
pub mod docker;
pub mod error;
pub mod manifest_dir;
pub mod metrics;
pub mod paths;
pub mod store;

pub use error::Error;
