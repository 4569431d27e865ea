//! A share of a whole written as operators write it: `85%` (or `0.85`). Config watermarks.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A ratio from 0 to 1, written and shown as a percentage.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Percent(f64);

impl Percent {
    /// `None` outside 0..=100%.
    pub fn from_ratio(ratio: f64) -> Option<Percent> {
        (0.0..=1.0).contains(&ratio).then_some(Percent(ratio))
    }

    pub const fn ratio(&self) -> f64 {
        self.0
    }
}

impl FromStr for Percent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("invalid percentage {s:?}: expected 0% to 100%, e.g. 85%");
        let t = s.trim();
        let ratio = match t.strip_suffix('%') {
            Some(n) => n.trim().parse::<f64>().map_err(|_| err())? / 100.0,
            None => t.parse::<f64>().map_err(|_| err())?,
        };
        if !ratio.is_finite() {
            return Err(err());
        }
        Percent::from_ratio(ratio).ok_or_else(err)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 85%, 72.5%: no trailing zeros.
        let p = (self.0 * 1000.0).round() / 10.0;
        write!(f, "{p}%")
    }
}

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML may give `0.85` as a number or `85%` as a string.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Percent::from_ratio(n).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid percentage {n}: expected 0% to 100%, e.g. 85%"
                ))
            }),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_parse_and_show_as_written() {
        assert_eq!("85%".parse::<Percent>().unwrap().ratio(), 0.85);
        assert_eq!("0.8".parse::<Percent>().unwrap().to_string(), "80%");
        assert_eq!("72.5%".parse::<Percent>().unwrap().to_string(), "72.5%");
        for bad in ["", "%", "101%", "-1%", "abc", "NaN%", "inf"] {
            assert!(bad.parse::<Percent>().is_err(), "{bad:?} must be refused");
        }
        let from_yaml: Percent = serde_yaml::from_str("0.9").unwrap();
        assert_eq!(from_yaml.to_string(), "90%");
        assert!(serde_yaml::from_str::<Percent>("1.5").is_err());
    }
}
