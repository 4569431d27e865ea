//! The JSON HTTP API: the daemon serves it on a Unix socket (whose file permissions are the
//! access control); the CLI is a thin client of it. `/metrics` and `/healthz` are served
//! separately on loopback TCP. Both sides speak the types of `wire`; the server reaches the
//! running daemon only through the narrow `Daemon` handle.

pub mod client;
pub mod daemon;
pub mod server;
pub mod watch;
pub mod wire;

#[cfg(test)]
pub(crate) mod examples;

/// Request bodies larger than this are refused with 413 before they are read whole.
pub const MAX_BODY_BYTES: usize = crate::core::manifest::MAX_STREAM_BYTES + (1 << 20);
