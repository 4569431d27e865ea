//! Registering a session without YAML, shared by `reaper session start` and `reaper run`: the
//! flags become a Session manifest that goes through `apply` and its validation.

use clap::Args;

use super::Failure;
use crate::api::client::Client;
use crate::api::wire::{ApplyRequest, ApplyResponse, RecordView, SessionManifest};
use crate::core::model::{validate_label, Duration, Labels, Name, ObjectMeta, SessionSpec};

/// The session's lifetime and labels, as flags.
#[derive(Args, Debug, Clone, Default)]
pub struct SessionFlags {
    /// The session expires this long after it is registered, whatever else happens (e.g. 2h).
    #[arg(long, value_parser = positive_duration)]
    pub ttl: Option<Duration>,
    /// Keep what the session left this long after it ends, to look at (its running containers
    /// are stopped at once); default: the daemon's `cleanupDelay`.
    #[arg(long, value_name = "DURATION")]
    pub cleanup_delay: Option<Duration>,
    /// A label on the session record, KEY=VALUE (repeatable); shown by `reaper get`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    pub labels: Vec<(String, String)>,
}

/// A duration flag that must be more than zero (a zero ttl or heartbeat would end the session
/// the moment it starts).
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    let d: Duration = s
        .parse()
        .map_err(|e: crate::core::model::DurationError| e.to_string())?;
    if d.0.is_zero() {
        return Err(
            "must be greater than 0s: the session would expire the moment it starts; \
                    give a positive duration such as 30s"
                .into(),
        );
    }
    Ok(d)
}

fn label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid label {s:?}: expected KEY=VALUE"))?;
    validate_label(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

pub fn session_name(s: &str) -> Result<Name, String> {
    Name::new(s)
}

/// Registers `name` as a new Active session. A name already in use (live or finished) is an
/// error: reusing it would share, or at once lose, someone else's objects.
pub async fn register(
    c: &Client,
    name: &Name,
    flags: &SessionFlags,
    heartbeat: Option<Duration>,
    file_name: &str,
) -> Result<(), Failure> {
    match c.get::<RecordView>(&format!("/v1/sessions/{name}")).await {
        Ok(RecordView::Session { session, .. }) => {
            return Err(Failure::new(
                1,
                format!(
                    "session/{name} already exists (phase {}): choose another name, or free it \
                     with `reaper delete session {name}`",
                    session.status.phase.as_str()
                ),
            ))
        }
        Ok(RecordView::Agent { .. }) => {
            return Err(Failure::new(1, "unexpected reply: an agent record"))
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let metadata = ObjectMeta {
        name: name.clone(),
        labels: flags.labels.iter().cloned().collect::<Labels>(),
    };
    let mut spec = SessionSpec {
        ttl: flags.ttl,
        heartbeat_timeout: heartbeat,
        ..SessionSpec::default()
    };
    spec.cleanup.delay = flags.cleanup_delay;
    let file =
        SessionManifest::file(&metadata, &spec, file_name).map_err(|e| Failure::new(1, e))?;
    // Create only: someone who registered the name between the look and this write keeps
    // their session as they declared it.
    let request = ApplyRequest {
        files: vec![file],
        create: true,
    };
    match c.post::<_, ApplyResponse>("/v1/apply", &request).await {
        Ok(applied) if applied.results.len() == 1 => Ok(()),
        Ok(_) => Err(Failure::new(1, "unexpected reply: not one applied record")),
        Err(e) if e.is_conflict() => Err(Failure::new(
            1,
            format!("session/{name} was registered by someone else meanwhile: choose another name"),
        )),
        Err(e) => Err(e.into()),
    }
}
