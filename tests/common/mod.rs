//! Shared helpers for the end-to-end tests: the private Docker engine, object builders that
//! read like sentences, bounded waits, the real `reaper` binary, and bystanders that must survive.
//!
//! Every test runs against the private dockerd that `./scripts/test` starts (tests/e2e_podman.rs
//! against its private Podman service, see [`use_podman`]); nothing here ever talks to the
//! user's own Docker daemon or Podman. Every wait and every subprocess is bounded.
#![allow(dead_code)] // each test binary uses a different subset

mod bystanders;
mod daemon;
mod engine;
pub mod etcd;
pub mod fleet;
mod metrics;
mod objects;
mod private_engine;
mod process;
pub mod proxy;
mod wait;
pub mod wedge;

// Each test binary uses a different subset.
#[allow(unused_imports)]
pub use bystanders::*;
#[allow(unused_imports)]
pub use daemon::*;
#[allow(unused_imports)]
pub use engine::*;
#[allow(unused_imports)]
pub use metrics::*;
#[allow(unused_imports)]
pub use objects::*;
#[allow(unused_imports)]
pub use private_engine::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use wait::*;

use std::time::Duration;

/// The image every test container runs: a static busybox, built by `scripts/dockerd image`.
pub const TEST_IMAGE: &str = "reaper-test/busybox:1";
/// Upper bound for one docker CLI call.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for one `reaper` client call.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to answer `reaper status` after it is spawned.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The instance every test daemon runs as, so objects of "someone-else" are bystanders.
pub const INSTANCE: &str = "e2e";
