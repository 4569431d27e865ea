//! `reaper run -- CMD`: wraps a workflow in a session with no code change. It registers the
//! session, runs CMD with the session's labels in a file, renews the heartbeat while CMD runs,
//! and ends the session when CMD exits. If `reaper run` itself is killed (even with `kill -9`),
//! the heartbeat lapses and the daemon cleans up: no try/finally needed anywhere.

use clap::Args;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use tokio::signal::unix::{signal, SignalKind};

use super::register::{positive_duration, register, session_name, SessionFlags};
use super::Failure;
use crate::api::client::Client;
use crate::api::wire::{EndRequest, HeartbeatRequest, RecordView};
use crate::core::model::{Duration, Name};
use crate::core::ownership::SESSION_LABEL;

/// `reaper run`'s own failures, before CMD could start (as `env` and `timeout` use 125).
pub const EXIT_REAPER_FAILED: i32 = 125;
/// CMD exists but cannot be executed (as shells do).
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// CMD was not found (as shells do).
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The session's name; without it, a unique name is made and printed on stderr.
    #[arg(long, value_parser = session_name)]
    pub session: Option<Name>,
    #[command(flatten)]
    pub flags: SessionFlags,
    /// The session ends (and its objects go) when no heartbeat came for this long; `reaper run`
    /// renews it every third of it while CMD runs.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub heartbeat: Duration,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Runs the wrapped command; returns the exit code `reaper run` exits with.
pub async fn run(socket: &Path, args: RunArgs) -> i32 {
    let c = Client::new(socket);
    let program = args.command[0].clone();
    let name = match args.session.clone() {
        Some(n) => n,
        None => {
            let n = generated_name();
            eprintln!("reaper: session/{n}");
            n
        }
    };
    let not_started = |f: Failure| {
        eprintln!("error: {}; {program} was not started", f.message);
        EXIT_REAPER_FAILED
    };
    if let Err(f) = register(&c, &name, &args.flags, Some(args.heartbeat), "reaper run").await {
        return not_started(f);
    }
    let labels = match LabelFile::write(&name) {
        Ok(l) => l,
        Err(e) => {
            end(&c, &name, true).await;
            return not_started(Failure::new(1, format!("cannot write the label file: {e}")));
        }
    };
    let child = tokio::process::Command::new(&program)
        .args(&args.command[1..])
        .env("REAPER_SESSION", name.as_str())
        .env("REAPER_LABEL_FILE", &labels.path)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            end(&c, &name, true).await;
            eprintln!("error: cannot run {program}: {e}; session/{name} ended as failed");
            return match e.kind() {
                std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
                _ => EXIT_NOT_EXECUTABLE,
            };
        }
    };
    let status = supervise(&c, &name, &mut child, args.heartbeat).await;
    let code = exit_code(status);
    end(&c, &name, code != 0).await;
    code
}

/// Waits for CMD, renewing the heartbeat and forwarding SIGINT, SIGTERM and SIGHUP to it.
async fn supervise(
    c: &Client,
    name: &Name,
    child: &mut tokio::process::Child,
    heartbeat: Duration,
) -> std::io::Result<ExitStatus> {
    let pid = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let (mut int, mut term, mut hup) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
    );
    let mut renew = tokio::time::interval(heartbeat.0 / 3);
    renew.tick().await; // registration was the first beat
    let mut failing = false;
    loop {
        let forward = tokio::select! {
            status = child.wait() => return status,
            _ = renew.tick() => {
                let path = format!("/v1/sessions/{name}/heartbeat");
                match c.post::<_, RecordView>(&path, &HeartbeatRequest {}).await {
                    Ok(_) if failing => {
                        eprintln!("reaper: heartbeat of session/{name} renewed again");
                        failing = false;
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        eprintln!("reaper: cannot renew the heartbeat of session/{name}: {e}");
                        failing = true;
                    }
                    Err(_) => {}
                }
                None
            }
            _ = int.recv() => Some(rustix::process::Signal::INT),
            _ = term.recv() => Some(rustix::process::Signal::TERM),
            _ = hup.recv() => Some(rustix::process::Signal::HUP),
        };
        if let (Some(sig), Some(pid)) = (forward, pid) {
            // The child may have exited meanwhile; its status comes with the next wait.
            let _ = rustix::process::kill_process(pid, sig);
        }
    }
}

/// CMD's exit code, or 128+N when a signal ended it (as shells report it).
fn exit_code(status: std::io::Result<ExitStatus>) -> i32 {
    match status {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(1),
        Err(e) => {
            eprintln!("error: lost track of the command: {e}");
            1
        }
    }
}

/// Ends the session; if the daemon cannot be told, the heartbeat will lapse instead.
async fn end(c: &Client, name: &Name, failed: bool) {
    let path = format!("/v1/sessions/{name}/end");
    if let Err(e) = c.post::<_, RecordView>(&path, &EndRequest { failed }).await {
        eprintln!(
            "reaper: cannot end session/{name}: {e}; it ends when its heartbeat lapses instead"
        );
    }
}

/// A name no other run on any host is likely to pick: time, process id and a random part.
fn generated_name() -> Name {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = format!("run-{secs:x}-{:06x}", h.finish() & 0xff_ffff);
    Name::new(&name).expect("a generated name is valid")
}

/// `REAPER_LABEL_FILE`: one `key=value` per line, for `docker run --label-file`. Removed when
/// `reaper run` exits normally.
struct LabelFile {
    path: PathBuf,
}

impl LabelFile {
    fn write(name: &Name) -> std::io::Result<LabelFile> {
        let dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let path = dir.join(format!("reaper-run-{name}-{}.labels", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(f, "{SESSION_LABEL}={name}")?;
        Ok(LabelFile { path })
    }
}

impl Drop for LabelFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_death_is_reported_as_128_plus_its_number() {
        assert_eq!(exit_code(Ok(ExitStatus::from_raw(3 << 8))), 3);
        assert_eq!(exit_code(Ok(ExitStatus::from_raw(9))), 137);
        assert_eq!(exit_code(Ok(ExitStatus::from_raw(0))), 0);
    }

    #[test]
    fn generated_names_are_valid_and_differ() {
        assert_ne!(generated_name(), generated_name());
    }
}
