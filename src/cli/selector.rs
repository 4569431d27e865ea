//! Label selectors for `reaper get -l`, as kubectl spells them: `k=v` (or `k==v`), `k!=v`, `k`
//! (the label exists) and `!k` (it does not), comma-separated; every requirement must hold.

use crate::core::model::Labels;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Every `-l` given, each a comma-separated list of requirements.
    pub fn parse<'a>(given: impl IntoIterator<Item = &'a str>) -> Result<Selector, String> {
        let mut out = Vec::new();
        for part in given.into_iter().flat_map(|s| s.split(',')) {
            let part = part.trim();
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(key(k, part)?, v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(key(k, part)?, v.trim().to_string())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(key(k, part)?)
            } else {
                Requirement::Exists(key(part, part)?)
            };
            out.push(req);
        }
        Ok(Selector(out))
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        })
    }
}

fn key(k: &str, part: &str) -> Result<String, String> {
    let k = k.trim();
    let valid = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
    if valid {
        Ok(k.to_string())
    } else {
        Err(format!(
            "invalid label selector {part:?}: expected key=value, key!=value, key or !key"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_requirement_must_hold() {
        let tdd = labels(&[("team", "tdd"), ("tier", "ci")]);
        let ops = labels(&[("team", "ops")]);
        let s = Selector::parse(["team=tdd"]).unwrap();
        assert!(s.matches(&tdd) && !s.matches(&ops));
        let s = Selector::parse(["team!=tdd"]).unwrap();
        assert!(!s.matches(&tdd) && s.matches(&ops) && s.matches(&Labels::new()));
        let s = Selector::parse(["team==tdd,tier"]).unwrap();
        assert!(s.matches(&tdd) && !s.matches(&ops));
        let s = Selector::parse(["!tier", "team"]).unwrap();
        assert!(!s.matches(&tdd) && s.matches(&ops));
        assert!(Selector::parse(Vec::<&str>::new()).unwrap().matches(&ops));
    }

    #[test]
    fn a_malformed_selector_says_what_is_expected() {
        for bad in ["=tdd", "", "team tdd=x", "!"] {
            let err = Selector::parse([bad]).unwrap_err();
            assert!(err.contains("expected key=value"), "{bad:?}: {err}");
        }
    }
}
