//! Human durations as they appear in manifests and config: `500ms`, `5s`, `10m`, `2h`, `1d`,
//! or a sequence such as `1h30m`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A duration written the way operators write it. Serialises back to the same short form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn as_millis(&self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
    pub fn std(&self) -> std::time::Duration {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {input:?}: expected a number and a unit (ms, s, m, h, d), e.g. 500ms, 5s, 10m, 2h, 1d")]
    Invalid { input: String },
    /// Well-formed, but beyond the 100-year cap: a typo, not an intention.
    #[error("duration {input:?} is too large: at most 100 years (36500d)")]
    TooLarge { input: String },
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError::Invalid {
            input: s.to_string(),
        };
        let too_large = || DurationError::TooLarge {
            input: s.to_string(),
        };
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(err());
        }
        let mut total_ms: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
            if digits == 0 {
                return Err(err());
            }
            // All digits: a parse failure can only be an overflow.
            let n: u64 = rest[..digits].parse().map_err(|_| too_large())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit_ms: u64 = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(err()),
            };
            rest = &rest[unit_len..];
            total_ms = n
                .checked_mul(unit_ms)
                .and_then(|v| total_ms.checked_add(v))
                // Cap at ~100 years: anything larger is a typo, not an intention.
                .filter(|v| *v <= 100 * 365 * 86_400_000)
                .ok_or_else(too_large)?;
        }
        Ok(Duration::from_millis(total_ms))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms.is_multiple_of(size) {
                return write!(f, "{}{}", ms / size, unit);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::from_string(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_duration_beyond_the_cap_is_too_large_not_invalid() {
        for big in ["99999999d", "36501d", "99999999999999999999999s"] {
            let e = big.parse::<Duration>().unwrap_err();
            assert!(matches!(e, DurationError::TooLarge { .. }), "{big}: {e}");
            assert!(e.to_string().contains("too large"), "{e}");
        }
        assert!("36500d".parse::<Duration>().is_ok());
        let e = "5 minutes".parse::<Duration>().unwrap_err();
        assert!(matches!(e, DurationError::Invalid { .. }), "{e}");
    }

    #[test]
    fn parses_every_documented_unit() {
        assert_eq!(
            "500ms".parse::<Duration>().unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!("5s".parse::<Duration>().unwrap(), Duration::from_secs(5));
        assert_eq!("10m".parse::<Duration>().unwrap(), Duration::from_secs(600));
        assert_eq!("2h".parse::<Duration>().unwrap(), Duration::from_secs(7200));
        assert_eq!(
            "1d".parse::<Duration>().unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            "1h30m".parse::<Duration>().unwrap(),
            Duration::from_secs(5400)
        );
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-5s",
            "5 s",
            "1.5h",
            "99999999999999999999d",
            "5sm",
            "ms5",
        ] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(Duration::from_secs(7200).to_string(), "2h");
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::from_secs(90).to_string(), "90s");
    }
}
