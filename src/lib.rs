//! reaper: a controller that removes the Docker objects of ended workflow sessions and failed
//! agents, and nothing else.
//!
//! The core is pure: `model` (desired state), `inventory` (actual state), `ownership` (is this
//! object ours, and whose?) and `plan` (desired + actual + now -> actions). Everything else is an
//! adapter around it: `store` (sled), `docker` (bollard), `paths` (the filesystem), `api`
//! (HTTP on a Unix socket), `metrics`, and the `controller` loop that ties them together.

pub mod api;
pub mod cli;
pub mod config;
pub mod controller;
pub mod docker;
pub mod executor;
pub mod exit_gate;
pub mod inventory;
pub mod manifest;
pub mod manifest_dir;
pub mod metrics;
pub mod model;
pub mod output;
pub mod ownership;
pub mod paths;
pub mod plan;
pub mod serve;
pub mod store;
pub mod systemd;

#[cfg(test)]
mod fixtures;
