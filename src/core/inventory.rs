//! The actual state: what exists on the Docker engine (and below the paths root), as plain data
//! the planner can reason about. The Docker adapter fills it; nothing here does I/O.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::core::model::{Labels, RelPath, ResourceKind, Timestamp};

/// One Docker object as listed. Images appear once per reference (`repo:tag`), because reaper
/// removes references, not image IDs: an image may also carry someone else's tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerObject {
    pub kind: ResourceKind,
    /// Container, network or image ID; the name for volumes.
    pub id: String,
    /// Container name (no leading `/`), network or volume name, or image reference (`repo:tag`);
    /// empty for an untagged image.
    pub name: String,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Creation time; unknown means "too young to judge", so orphans without it are never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    /// Containers only: the container is running (or restarting, paused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub running: bool,
    /// Images only: the image's other references, which may belong to someone else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_refs: Vec<String>,
}

impl DockerObject {
    /// What to pass to the delete call: the reference for a tagged image (untag, never force),
    /// the ID for everything else.
    pub fn target(&self) -> &str {
        if self.kind == ResourceKind::Image && !self.name.is_empty() {
            &self.name
        } else {
            &self.id
        }
    }

    /// Identity across passes (for backoff): kind plus delete target.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: self.kind,
            target: self.target().to_string(),
        }
    }

    /// What reaper keeps the time it first saw this object under: kind and ID, and for an
    /// image reference the reference with the image it names, so that a tag that appears (or
    /// moves to another image) is a new sighting even when the image is old.
    pub fn sighting_key(&self) -> String {
        if self.kind == ResourceKind::Image && !self.name.is_empty() {
            format!("image/{}@{}", self.name, self.id)
        } else {
            format!("{}/{}", self.kind.as_str(), self.id)
        }
    }

    /// The image repository of a reference (`repo:tag` -> `repo`, keeping a registry port).
    pub fn repository(&self) -> Option<&str> {
        if self.kind != ResourceKind::Image || self.name.is_empty() {
            return None;
        }
        Some(repository_of(&self.name))
    }
}

pub fn repository_of(reference: &str) -> &str {
    let reference = reference.split('@').next().unwrap_or(reference);
    match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => &reference[..i],
        _ => reference,
    }
}

/// The first 12 characters of an ID, as `docker ps` shows it, without a `sha256:` prefix.
/// Cuts on a character boundary: a path target's "ID" is its (possibly non-ASCII) path.
pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.char_indices().nth(12).map_or(id, |(i, _)| &id[..i])
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectKey {
    pub kind: ResourceKind,
    pub target: String,
}

/// Everything the planner may look at about the world, taken at one moment.
#[derive(Clone, Debug, Default)]
pub struct Actual {
    pub objects: Vec<DockerObject>,
    /// The record paths (`spec.paths`, `buildDir`) that currently exist below the paths root.
    pub paths: BTreeSet<RelPath>,
    /// When reaper first saw each object, by [`DockerObject::sighting_key`]. An orphan's
    /// grace counts from the later of this and its creation.
    pub first_seen: BTreeMap<String, Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_cut_on_character_boundaries() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("répertoire/été-2026"), "répertoire/é");
    }

    #[test]
    fn repository_keeps_registry_ports_and_drops_tags() {
        assert_eq!(repository_of("anvyl-agent-x:latest"), "anvyl-agent-x");
        assert_eq!(
            repository_of("localhost:5000/anvyl-agent-x:1"),
            "localhost:5000/anvyl-agent-x"
        );
        assert_eq!(
            repository_of("localhost:5000/anvyl-agent-x"),
            "localhost:5000/anvyl-agent-x"
        );
        assert_eq!(repository_of("anvyl-agent-x@sha256:abc"), "anvyl-agent-x");
    }
}
