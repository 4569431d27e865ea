//! What reaper knows about the engine it talks to, and the one decision that follows from it
//! today: whether container exits must be serialised to dodge the libnetwork deadlock.
//!
//! Docker 20.10 before 20.10.27 (and older releases) deadlock when two container exits overlap:
//! one exit's sandbox teardown holds libnetwork's network lock and waits for its controller lock,
//! while the watch loop, handling another exit, holds them the other way round (moby/libnetwork
//! #2679, in Docker 20.10.27 through moby/moby #46693; the create half in moby/moby #42545, 22.06
//! and 23.0+). A stop, a kill or a force delete of a running container each cause an exit.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which engine answers on the Docker API.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    #[default]
    Docker,
    /// Podman's Docker-compatible service (`podman system service`).
    Podman,
}

impl Flavour {
    pub const ALL: [Flavour; 2] = [Flavour::Docker, Flavour::Podman];
    pub fn as_str(&self) -> &'static str {
        match self {
            Flavour::Docker => "docker",
            Flavour::Podman => "podman",
        }
    }
}

/// What `GET /version` told us.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineInfo {
    pub flavour: Flavour,
    pub version: String,
    pub api_version: String,
}

impl fmt::Display for EngineInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.flavour {
            Flavour::Docker => "Docker",
            Flavour::Podman => "Podman",
        };
        write!(f, "{name} {} (API {})", self.version, self.api_version)
    }
}

/// The `engineQuirks.serialExits` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialExitsSetting {
    /// Decide from the engine's version.
    #[default]
    Auto,
    On,
    Off,
}

impl SerialExitsSetting {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

impl FromStr for SerialExitsSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err(format!("invalid value {s:?}: expected auto, on or off")),
        }
    }
}

impl fmt::Display for SerialExitsSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why serial exits are on or off, as a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialExitsReason {
    /// A Docker release with the deadlock.
    AffectedVersion,
    /// A Docker release with the fix.
    FixedVersion,
    /// The version is unknown (not read yet, or unparseable): assume the worst.
    UnknownVersion,
    /// Podman has no libnetwork.
    Podman,
    ConfigOn,
    ConfigOff,
}

impl SerialExitsReason {
    pub const ALL: [SerialExitsReason; 6] = [
        Self::AffectedVersion,
        Self::FixedVersion,
        Self::UnknownVersion,
        Self::Podman,
        Self::ConfigOn,
        Self::ConfigOff,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::AffectedVersion => "affected_version",
            Self::FixedVersion => "fixed_version",
            Self::UnknownVersion => "unknown_version",
            Self::Podman => "podman",
            Self::ConfigOn => "config_on",
            Self::ConfigOff => "config_off",
        }
    }
}

/// Whether at most one container exit may be in flight, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SerialExits {
    pub on: bool,
    pub reason: SerialExitsReason,
}

const UPSTREAM: &str = "moby/libnetwork#2679, fixed in Docker 20.10.27 and 23.0+";

impl SerialExits {
    /// The decision for `setting`, given what the engine said about itself (`None` before it
    /// answered: serial, to be safe).
    pub fn decide(setting: SerialExitsSetting, engine: Option<&EngineInfo>) -> SerialExits {
        use SerialExitsReason as R;
        let (on, reason) = match (setting, engine) {
            (SerialExitsSetting::On, _) => (true, R::ConfigOn),
            (SerialExitsSetting::Off, _) => (false, R::ConfigOff),
            (SerialExitsSetting::Auto, None) => (true, R::UnknownVersion),
            (SerialExitsSetting::Auto, Some(e)) if e.flavour == Flavour::Podman => {
                (false, R::Podman)
            }
            (SerialExitsSetting::Auto, Some(e)) => match has_exit_deadlock(&e.version) {
                Some(true) => (true, R::AffectedVersion),
                Some(false) => (false, R::FixedVersion),
                None => (true, R::UnknownVersion),
            },
        };
        SerialExits { on, reason }
    }

    /// One sentence for the startup log and `reaper status`.
    pub fn explain(&self) -> String {
        let mode = if self.on {
            "on: at most one container stop at a time, networks listed between stops"
        } else {
            "off: container stops run at full concurrency"
        };
        let why = match self.reason {
            SerialExitsReason::AffectedVersion => {
                format!("this engine has the container-exit deadlock ({UPSTREAM})")
            }
            SerialExitsReason::FixedVersion => {
                format!("this engine has the fix for the container-exit deadlock ({UPSTREAM})")
            }
            SerialExitsReason::UnknownVersion => format!(
                "the engine's version is not known, so reaper assumes the container-exit deadlock ({UPSTREAM})"
            ),
            SerialExitsReason::Podman => "Podman has no libnetwork exit deadlock".into(),
            SerialExitsReason::ConfigOn => "engineQuirks.serialExits is on".into(),
            SerialExitsReason::ConfigOff => "engineQuirks.serialExits is off".into(),
        };
        format!("serial exits {mode}; {why}")
    }
}

/// Whether a Docker release (as `GET /version` reports it, e.g. `20.10.24+dfsg1`) has the exit
/// deadlock: everything before 20.10.27 does, 20.10.27 and later do not. `None` when the
/// version cannot be read.
pub fn has_exit_deadlock(version: &str) -> Option<bool> {
    let core = version
        .trim()
        .trim_start_matches('v')
        .split(['+', '-', '~', ' '])
        .next()?;
    let mut parts = core.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    // "20.10" with no patch: the first 20.10 release.
    let patch: u32 = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    Some((major, minor, patch) < (20, 10, 27))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker(version: &str) -> EngineInfo {
        EngineInfo {
            flavour: Flavour::Docker,
            version: version.into(),
            api_version: "1.41".into(),
        }
    }

    #[test]
    fn versions_before_20_10_27_have_the_deadlock() {
        for v in [
            "20.10.24+dfsg1",
            "20.10.26",
            "20.10.0",
            "20.10",
            "19.03.15",
            "18.09.1-ce",
            "1.13.1",
            "v20.10.5",
        ] {
            assert_eq!(has_exit_deadlock(v), Some(true), "{v}");
        }
        for v in [
            "20.10.27",
            "20.10.27+dfsg1",
            "22.06.0-beta.0",
            "23.0.0",
            "24.0.7",
            "26.1.5+dfsg1",
            "28.2.2",
        ] {
            assert_eq!(has_exit_deadlock(v), Some(false), "{v}");
        }
        for v in [
            "",
            "dev",
            "master-dockerproject-2024",
            "20",
            "x.y.z",
            "20.ten.1",
        ] {
            assert_eq!(has_exit_deadlock(v), None, "{v:?}");
        }
    }

    #[test]
    fn auto_follows_the_engine_and_assumes_the_worst_when_unknown() {
        use SerialExitsReason as R;
        let auto = SerialExitsSetting::Auto;
        let d = |v| SerialExits::decide(auto, Some(&docker(v)));
        assert_eq!(
            d("20.10.24+dfsg1"),
            SerialExits {
                on: true,
                reason: R::AffectedVersion
            }
        );
        assert_eq!(
            d("23.0.1"),
            SerialExits {
                on: false,
                reason: R::FixedVersion
            }
        );
        assert_eq!(
            d("nightly"),
            SerialExits {
                on: true,
                reason: R::UnknownVersion
            }
        );
        assert_eq!(
            SerialExits::decide(auto, None),
            SerialExits {
                on: true,
                reason: R::UnknownVersion
            }
        );
        let podman = EngineInfo {
            flavour: Flavour::Podman,
            version: "4.3.1".into(),
            api_version: "1.41".into(),
        };
        assert_eq!(
            SerialExits::decide(auto, Some(&podman)),
            SerialExits {
                on: false,
                reason: R::Podman
            }
        );
    }

    #[test]
    fn the_setting_overrides_the_version() {
        let fixed = docker("24.0.0");
        let affected = docker("20.10.24");
        let on = SerialExits::decide(SerialExitsSetting::On, Some(&fixed));
        assert!(on.on);
        assert_eq!(on.reason, SerialExitsReason::ConfigOn);
        let off = SerialExits::decide(SerialExitsSetting::Off, Some(&affected));
        assert!(!off.on);
        assert_eq!(off.reason, SerialExitsReason::ConfigOff);
    }

    #[test]
    fn the_explanation_names_the_upstream_issue_when_the_version_decides() {
        let s = SerialExits::decide(SerialExitsSetting::Auto, Some(&docker("20.10.24+dfsg1")));
        let text = s.explain();
        assert!(text.starts_with("serial exits on"), "{text}");
        assert!(text.contains("moby/libnetwork#2679"), "{text}");
        assert!(text.contains("20.10.27"), "{text}");
    }

    #[test]
    fn settings_parse_in_any_case() {
        assert_eq!(
            "AUTO".parse::<SerialExitsSetting>(),
            Ok(SerialExitsSetting::Auto)
        );
        assert_eq!(
            "off".parse::<SerialExitsSetting>(),
            Ok(SerialExitsSetting::Off)
        );
        assert!("maybe"
            .parse::<SerialExitsSetting>()
            .unwrap_err()
            .contains("auto, on or off"));
    }
}
