//! Wall-clock instants as unix milliseconds: cheap to compare in the planner, shown as RFC 3339.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

use super::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }
    pub fn from_unix_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }
    pub fn millis(&self) -> i64 {
        self.0
    }
    pub fn as_secs_f64(&self) -> f64 {
        self.0 as f64 / 1000.0
    }
    pub fn plus(&self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis()))
    }
    /// Milliseconds from `earlier` to `self`, never negative.
    pub fn since(&self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
    /// Parses RFC 3339 as Docker reports network and volume creation times.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        match t.format(&time::format_description::well_known::Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    /// RFC 3339, or the `<millis>ms` that `Display` falls back to for an instant RFC 3339
    /// cannot show, so that whatever the daemon writes the CLI reads back.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s)
            .or_else(|| s.strip_suffix("ms")?.parse().ok().map(Timestamp))
            .ok_or_else(|| serde::de::Error::custom(format!("invalid RFC 3339 timestamp {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let t = Timestamp(1_700_000_000_123);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2024-05-01T10:00:00.123456789+02:00"),
            Some(Timestamp(1_714_550_400_123))
        );
        assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn reads_back_what_it_writes_even_outside_rfc_3339() {
        for t in [
            Timestamp(1_700_000_000_123),
            Timestamp(0),
            Timestamp(-70_000_000_000_000),
        ] {
            let json = serde_json::to_string(&t).expect("encodes");
            assert_eq!(
                serde_json::from_str::<Timestamp>(&json).ok(),
                Some(t),
                "{json}"
            );
        }
        assert!(serde_json::from_str::<Timestamp>(r#""soon""#).is_err());
    }
}
