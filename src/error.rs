//! The crate's error: why a reconcile pass (or a request that needs a fresh view) failed.
//! Each variant is a reason to delete nothing; `metric_label` names it in a bounded set, so
//! the log line and `reaper_reconcile_errors_total{error}` always agree.

use crate::docker::DockerError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the store cannot be read: {0}")]
    Store(#[from] StoreError),
    #[error("the Docker view is incomplete: {0}")]
    Docker(#[from] DockerError),
    #[error("the paths root cannot be read: {0}")]
    Paths(String),
}

impl Error {
    /// Every value `metric_label` returns, so counters can start at zero.
    pub const METRIC_LABELS: [&'static str; 6] = [
        "store",
        "docker_unavailable",
        "docker_timeout",
        "docker_exits_in_flight",
        "docker",
        "paths",
    ];

    /// A bounded label: the error's reason, never its message.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Store(_) => "store",
            Error::Docker(DockerError::Unavailable(_)) => "docker_unavailable",
            Error::Docker(DockerError::Timeout(_)) => "docker_timeout",
            Error::Docker(DockerError::ExitsInFlight(_)) => "docker_exits_in_flight",
            Error::Docker(_) => "docker",
            Error::Paths(_) => "paths",
        }
    }

    /// The engine did not answer (or not in time): Docker is down, not lying.
    pub fn is_docker_down(&self) -> bool {
        matches!(
            self,
            Error::Docker(DockerError::Timeout(_) | DockerError::Unavailable(_))
        )
    }

    /// Serial exits kept the network API busy: a partial view, and nothing is wrong.
    pub fn is_waiting_for_exits(&self) -> bool {
        matches!(self, Error::Docker(DockerError::ExitsInFlight(_)))
    }

    /// The view cannot be trusted although everything answers: safe mode.
    pub fn is_safe_mode(&self) -> bool {
        !self.is_docker_down() && !self.is_waiting_for_exits()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_label_is_declared_and_the_classes_do_not_overlap() {
        let all = [
            Error::Store(StoreError::Io("disk".into())),
            Error::Docker(DockerError::Unavailable("gone".into())),
            Error::Docker(DockerError::Timeout(Duration::from_secs(1))),
            Error::Docker(DockerError::ExitsInFlight(Duration::from_secs(1))),
            Error::Docker(DockerError::Other("500".into())),
            Error::Paths("root".into()),
        ];
        let labels: Vec<_> = all.iter().map(Error::metric_label).collect();
        assert_eq!(labels, Error::METRIC_LABELS);
        let safe: Vec<_> = all.iter().map(Error::is_safe_mode).collect();
        assert_eq!(safe, [true, false, false, false, true, true]);
        assert!(all[1].is_docker_down() && all[2].is_docker_down());
        assert!(all[3].is_waiting_for_exits() && !all[3].is_docker_down());
    }
}
