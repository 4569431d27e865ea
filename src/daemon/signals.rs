//! The daemon's signals: SIGTERM or SIGINT starts a graceful drain and a second one exits at
//! once; SIGHUP asks for a reload. Until a handler is installed, each of these kills the
//! process by its default action (no drain, no final flush), so `run` installs them all before
//! any socket answers.

use futures_util::stream::{self, BoxStream, StreamExt};
use std::future::Future;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::warn;

/// Exit code after a second stop signal: the shell's code for an interrupted process.
const FORCED_EXIT: i32 = 130;

/// Installed signal handlers; a signal that arrives before anyone waits is kept, not lost.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The shutdown future (the first SIGTERM or SIGINT; from then on a second one exits the
    /// process at once) and the reload requests (one per SIGHUP).
    pub fn split(self) -> (impl Future<Output = ()> + Send, BoxStream<'static, ()>) {
        let Signals {
            mut term,
            mut int,
            hup,
        } = self;
        let shutdown = async move {
            stop_signal(&mut term, &mut int).await;
            tokio::spawn(async move {
                stop_signal(&mut term, &mut int).await;
                warn!("Second signal: exiting at once.");
                std::process::exit(FORCED_EXIT);
            });
        };
        let hangups = stream::unfold(hup, |mut hup| async move {
            hup.recv().await.map(|()| ((), hup))
        })
        .boxed();
        (shutdown, hangups)
    }
}

async fn stop_signal(term: &mut Signal, int: &mut Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
