//! Names, labels and relative paths: the small value types every record is made of,
//! with the validation rules Docker and the filesystem impose on them.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: Name,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

/// A record name: 1-63 chars of `a-z 0-9 - . _`, starting and ending alphanumeric.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn new(s: &str) -> Result<Self, String> {
        validate_name(s)?;
        Ok(Name(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::new(&s).map_err(serde::de::Error::custom)
    }
}

pub fn validate_name(s: &str) -> Result<(), String> {
    let ok_char =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_');
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if s.is_empty() || s.len() > 63 {
        return Err(format!("invalid name {s:?}: must be 1-63 characters"));
    }
    if !s.chars().all(ok_char) {
        return Err(format!(
            "invalid name {s:?}: only a-z, 0-9, '-', '.' and '_' are allowed"
        ));
    }
    if !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Err(format!(
            "invalid name {s:?}: must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// Docker accepts almost any label key, but reaper passes keys into server-side filters
/// (`label=KEY=VALUE`), so keys must not contain `=`, whitespace or control characters.
pub fn validate_label(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 253 {
        return Err(format!(
            "invalid label key {key:?}: must be 1-253 characters"
        ));
    }
    if key
        .chars()
        .any(|c| c == '=' || c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(format!(
            "invalid label key {key:?}: must not contain '=', ',', whitespace or control characters"
        ));
    }
    if value.len() > 4096 || value.chars().any(|c| c.is_control()) {
        return Err(format!(
            "invalid value for label {key:?}: must be at most 4096 characters without control characters"
        ));
    }
    Ok(())
}

pub fn validate_labels(labels: &Labels) -> Result<(), String> {
    labels.iter().try_for_each(|(k, v)| validate_label(k, v))
}

/// A path relative to the configured paths root: no absolute paths, no `..`, no NUL, not empty.
/// The filesystem adapter resolves it without following symlinks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RelPath(String);

impl RelPath {
    pub fn new(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("invalid path \"\": must not be empty".into());
        }
        if s.contains('\0') {
            return Err(format!("invalid path {s:?}: must not contain NUL"));
        }
        if s.starts_with('/') {
            return Err(format!(
                "invalid path {s:?}: must be relative to the paths root"
            ));
        }
        let parts: Vec<&str> = s
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.is_empty() {
            return Err(format!(
                "invalid path {s:?}: names no directory below the paths root"
            ));
        }
        if parts.contains(&"..") {
            return Err(format!("invalid path {s:?}: must not contain '..'"));
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(format!(
                "invalid path {s:?}: must not contain control characters"
            ));
        }
        Ok(RelPath(parts.join("/")))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The path's components, each a plain name.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_rule() {
        for ok in ["a", "tdd-run-42", "my.agent_1", "0"] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "-a", "a-", "A", "a b", "a/b", "a\nb", long.as_str()] {
            assert!(Name::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_keys_cannot_inject_into_docker_filters() {
        assert!(validate_label("session_id", "42").is_ok());
        assert!(validate_label("com.example/x", "a=b c").is_ok());
        for bad in ["a=b", "label=", "", "a b", "a\n", "a,b"] {
            assert!(validate_label(bad, "v").is_err(), "{bad:?}");
        }
        assert!(validate_label("k", "line\nbreak").is_err());
    }

    #[test]
    fn relative_paths_cannot_escape_the_root() {
        assert_eq!(RelPath::new("a/./b/").unwrap().as_str(), "a/b");
        for bad in ["", "/etc", "../x", "a/../../b", "a\0b", ".", "./", "a/\nb"] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
    }
}
