//! Over 500 lines: 320 of code (the one place that decides ownership, and by which rule) and its tests.
//!
//! "Is this Docker object ours, and who owns it?" decided from labels, names and the records'
//! own match rules. This is the only place that decides ownership; the planner and the executor's
//! last-moment re-check both call it.

use serde::{Deserialize, Serialize};

use crate::core::inventory::{repository_of, DockerObject};
use crate::core::model::{Agent, Labels, Name, OwnerKind, OwnerRef, Record, ResourceKind, Session};
use crate::core::reference::canonical_repository;

pub const SESSION_LABEL: &str = "reaper.session";
pub const AGENT_LABEL: &str = "reaper.agent";
pub const INSTANCE_LABEL: &str = "reaper.instance";

/// The daemon-wide ownership rules (config `instance` and `adoption`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Objects whose `reaper.instance` label names another instance are never ours.
    pub instance: String,
    /// Label keys whose value names the owning session (`reaper.session` always counts).
    pub session_label_keys: Vec<String>,
    /// Container names and image repositories `<prefix><agent>` belong to agent `<agent>`
    /// (repositories also as Podman spells them: see [`canonical_repository`]).
    pub agent_name_prefix: String,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            instance: String::new(),
            session_label_keys: vec!["session_id".into()],
            agent_name_prefix: "anvyl-agent-".into(),
        }
    }
}

/// The records' own match rules (`spec.match`), indexed once per pass.
#[derive(Clone, Debug, Default)]
pub struct Matchers {
    session_labels: Vec<(Name, Labels)>,
    agent_prefixes: Vec<(Name, String)>,
}

impl Matchers {
    pub fn new(sessions: &[Session], agents: &[Agent], rules: &Rules) -> Self {
        Matchers {
            session_labels: sessions
                .iter()
                .filter(|s| !s.spec.match_.labels.is_empty())
                .map(|s| (s.metadata.name.clone(), s.spec.match_.labels.clone()))
                .collect(),
            agent_prefixes: agents
                .iter()
                .map(|a| {
                    (
                        a.metadata.name.clone(),
                        a.name_prefix(&rules.agent_name_prefix),
                    )
                })
                .filter(|(_, prefix)| !prefix.is_empty())
                .collect(),
        }
    }

    /// Label keys the records match on, for server-side list filters.
    pub fn label_keys(&self) -> impl Iterator<Item = &str> {
        self.session_labels
            .iter()
            .flat_map(|(_, l)| l.keys().map(String::as_str))
    }

    /// Name prefixes the records match on, for server-side list filters.
    pub fn name_prefixes(&self) -> impl Iterator<Item = &str> {
        self.agent_prefixes.iter().map(|(_, p)| p.as_str())
    }
}

/// Why an object is an owner's: the rule that attributes it, as people read it (`reaper
/// cleanup session|agent NAME` lists it for each object).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis<'a> {
    /// `reaper.session=<name>` or `reaper.agent=<name>`.
    Label { key: &'a str, value: &'a str },
    /// A key of `adoption.sessionLabelKeys` whose value names the session.
    AdoptionLabel { key: &'a str, value: &'a str },
    /// The session record's `spec.match.labels`, all of them present.
    MatchLabels(&'a Labels),
    /// A container name or image repository `<adoption.agentNamePrefix><agent>`.
    AdoptionName {
        what: &'static str,
        name: &'a str,
        prefix: &'a str,
    },
    /// A container name or image repository that starts with the agent record's name prefix.
    NamePrefix {
        what: &'static str,
        name: &'a str,
        prefix: &'a str,
    },
}

impl std::fmt::Display for Basis<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Basis::Label { key, value } => write!(f, "label {key}={value}"),
            Basis::AdoptionLabel { key, value } => {
                write!(f, "label {key}={value} (adoption.sessionLabelKeys)")
            }
            Basis::MatchLabels(labels) => {
                let all: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "labels {} (spec.match.labels)", all.join(","))
            }
            Basis::AdoptionName { what, name, prefix } => {
                write!(f, "{what} {name} (adoption.agentNamePrefix {prefix})")
            }
            Basis::NamePrefix { what, name, prefix } => {
                write!(f, "{what} {name} (spec.match.namePrefix {prefix})")
            }
        }
    }
}

/// Every owner that claims `obj`, strongest claim first, without duplicates. Empty means the
/// object is not ours and must never be touched.
pub fn claims(obj: &DockerObject, rules: &Rules, matchers: &Matchers) -> Vec<OwnerRef> {
    let mut out: Vec<OwnerRef> = Vec::new();
    for (claim, _) in claims_with_basis(obj, rules, matchers) {
        if !out.contains(&claim) {
            out.push(claim);
        }
    }
    out
}

/// Why `owner` claims `obj`, one line per rule that attributes it (empty: it does not).
pub fn attribution(
    obj: &DockerObject,
    owner: &OwnerRef,
    rules: &Rules,
    matchers: &Matchers,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, basis) in claims_with_basis(obj, rules, matchers)
        .into_iter()
        .filter(|(c, _)| c == owner)
    {
        let line = basis.to_string();
        if !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

/// Every claim on `obj` with the rule it comes from, strongest first (an owner may appear
/// more than once). The one place the ownership rules are applied.
pub fn claims_with_basis<'a>(
    obj: &'a DockerObject,
    rules: &'a Rules,
    matchers: &'a Matchers,
) -> Vec<(OwnerRef, Basis<'a>)> {
    if obj
        .labels
        .get(INSTANCE_LABEL)
        .is_some_and(|v| *v != rules.instance)
    {
        return Vec::new();
    }
    let by_name = match obj.kind {
        ResourceKind::Container => name_claims(&obj.name, "container name", rules, matchers),
        ResourceKind::Image => obj
            .repository()
            .map(|r| repository_claims(r, rules, matchers))
            .unwrap_or_default(),
        _ => Vec::new(),
    };

    // A label on an image is shared by all its tags. If the image also carries a reference that
    // is not ours by name, that reference may be someone else's: the label proves nothing then.
    let label_counts = obj.kind != ResourceKind::Image
        || obj
            .other_refs
            .iter()
            .all(|r| !repository_claims(repository_of(r), rules, matchers).is_empty());

    let mut out = if label_counts {
        label_claims(&obj.labels, rules, matchers)
    } else {
        Vec::new()
    };
    out.extend(by_name);
    out
}

/// The rules by which Docker objects are this record's, as people read them, with the defaults
/// filled in (an agent's `namePrefix` when its manifest sets none): what `reaper describe`
/// shows as the effective match.
pub fn effective_match(record: &Record, rules: &Rules) -> Vec<String> {
    let mut out = Vec::new();
    match record {
        Record::Session(s) => {
            let name = &s.metadata.name;
            out.push(format!("label {SESSION_LABEL}={name}"));
            for key in &rules.session_label_keys {
                out.push(format!("label {key}={name} (adoption.sessionLabelKeys)"));
            }
            if !s.spec.match_.labels.is_empty() {
                out.push(Basis::MatchLabels(&s.spec.match_.labels).to_string());
            }
        }
        Record::Agent(a) => {
            out.push(format!("label {AGENT_LABEL}={}", a.metadata.name));
            let prefix = a.name_prefix(&rules.agent_name_prefix);
            let from = match a.spec.match_.name_prefix {
                Some(_) => "spec.match.namePrefix".to_string(),
                None => format!(
                    "default namePrefix: adoption.agentNamePrefix {:?} + name",
                    rules.agent_name_prefix
                ),
            };
            out.push(format!(
                "container names and image repositories starting with {prefix} ({from})"
            ));
        }
    }
    if !rules.instance.is_empty() {
        out.push(format!(
            "only objects without {INSTANCE_LABEL}, or with {INSTANCE_LABEL}={}",
            rules.instance
        ));
    }
    out
}

pub fn is_ours(obj: &DockerObject, rules: &Rules, matchers: &Matchers) -> bool {
    !claims_with_basis(obj, rules, matchers).is_empty()
}

fn owner(kind: OwnerKind, value: &str) -> Option<OwnerRef> {
    Name::new(value).ok().map(|name| OwnerRef { kind, name })
}

fn label_claims<'a>(
    labels: &'a Labels,
    rules: &'a Rules,
    matchers: &'a Matchers,
) -> Vec<(OwnerRef, Basis<'a>)> {
    let mut out = Vec::new();
    for (key, kind) in [
        (SESSION_LABEL, OwnerKind::Session),
        (AGENT_LABEL, OwnerKind::Agent),
    ] {
        if let Some((key, value)) = labels.get_key_value(key) {
            out.extend(owner(kind, value).map(|o| (o, Basis::Label { key, value })));
        }
    }
    for (name, want) in &matchers.session_labels {
        if want.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            let o = OwnerRef {
                kind: OwnerKind::Session,
                name: name.clone(),
            };
            out.push((o, Basis::MatchLabels(want)));
        }
    }
    for key in &rules.session_label_keys {
        if let Some((key, value)) = labels.get_key_value(key.as_str()) {
            out.extend(
                owner(OwnerKind::Session, value).map(|o| (o, Basis::AdoptionLabel { key, value })),
            );
        }
    }
    out
}

fn name_claims<'a>(
    name: &'a str,
    what: &'static str,
    rules: &'a Rules,
    matchers: &'a Matchers,
) -> Vec<(OwnerRef, Basis<'a>)> {
    let mut out = Vec::new();
    for (agent, prefix) in &matchers.agent_prefixes {
        if name.starts_with(prefix.as_str()) {
            let o = OwnerRef {
                kind: OwnerKind::Agent,
                name: agent.clone(),
            };
            out.push((o, Basis::NamePrefix { what, name, prefix }));
        }
    }
    let prefix = rules.agent_name_prefix.as_str();
    if !prefix.is_empty() {
        if let Some(rest) = name.strip_prefix(prefix) {
            out.extend(
                owner(OwnerKind::Agent, rest)
                    .map(|o| (o, Basis::AdoptionName { what, name, prefix })),
            );
        }
    }
    out
}

/// Name claims on an image repository: agent name prefixes apply to the repository as listed
/// and to its [`canonical_repository`], so Podman's `docker.io/library/anvyl-agent-x` and
/// `localhost/anvyl-agent-x` are agent `x`'s like Docker's `anvyl-agent-x`. A reference to
/// another registry (`ghcr.io/org/anvyl-agent-x`) is not: see [`canonical_repository`].
fn repository_claims<'a>(
    repository: &'a str,
    rules: &'a Rules,
    matchers: &'a Matchers,
) -> Vec<(OwnerRef, Basis<'a>)> {
    const WHAT: &str = "image repository";
    let mut out = name_claims(repository, WHAT, rules, matchers);
    let canonical = canonical_repository(repository);
    if canonical != repository {
        out.extend(name_claims(canonical, WHAT, rules, matchers));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::*;

    fn claims_of(obj: &DockerObject) -> Vec<String> {
        claims(obj, &Rules::default(), &Matchers::default())
            .iter()
            .map(|o| o.to_string())
            .collect()
    }

    #[test]
    fn the_effective_match_fills_in_the_default_name_prefix() {
        let agent = Record::Agent(Agent::named(Name::new("a1").unwrap()));
        let shown = effective_match(&agent, &Rules::default());
        assert_eq!(shown[0], "label reaper.agent=a1");
        assert!(
            shown[1].starts_with("container names and image repositories starting with anvyl-agent-a1 (default namePrefix"),
            "{shown:?}"
        );
        let session = Record::Session(session("s1").build());
        assert_eq!(
            effective_match(&session, &Rules::default()),
            [
                "label reaper.session=s1",
                "label session_id=s1 (adoption.sessionLabelKeys)"
            ]
        );
    }

    #[test]
    fn our_labels_and_adoption_rules_claim_objects() {
        assert_eq!(
            claims_of(&container("c").label("reaper.session", "s1")),
            ["session/s1"]
        );
        assert_eq!(
            claims_of(&volume("v").label("reaper.agent", "a1")),
            ["agent/a1"]
        );
        assert_eq!(
            claims_of(&container("c").label("session_id", "42")),
            ["session/42"]
        );
        assert_eq!(claims_of(&container("anvyl-agent-bob")), ["agent/bob"]);
        assert_eq!(claims_of(&image("anvyl-agent-bob:latest")), ["agent/bob"]);
    }

    #[test]
    fn podman_spellings_of_a_name_owned_image_are_ours() {
        for reference in [
            "docker.io/library/anvyl-agent-bob:latest",
            "docker.io/anvyl-agent-bob:latest",
            "localhost/anvyl-agent-bob:latest",
            "localhost/anvyl-agent-bob@sha256:abc",
        ] {
            assert_eq!(claims_of(&image(reference)), ["agent/bob"], "{reference}");
        }
        // A record's own name prefix too, and the prefix as it was written still counts.
        let rules = Rules::default();
        let a = agent("my-agent").prefix("custom-").build();
        let b = agent("other").prefix("localhost/team-").build();
        let m = Matchers::new(&[], &[a, b], &rules);
        for (reference, owner) in [
            ("localhost/custom-1:dev", "agent/my-agent"),
            ("docker.io/library/custom-1:dev", "agent/my-agent"),
            ("localhost/team-x:1", "agent/other"),
        ] {
            let got: Vec<String> = claims(&image(reference), &rules, &m)
                .iter()
                .map(|o| o.to_string())
                .collect();
            assert_eq!(got, [owner], "{reference}");
        }
    }

    /// The decision on registry references: a name prefix never matches the last path
    /// component of a reference to another registry or namespace. Only labels make it ours.
    #[test]
    fn a_registry_reference_is_not_ours_by_name() {
        for reference in [
            "ghcr.io/org/anvyl-agent-bob:latest",
            "ghcr.io/anvyl-agent-bob:1",
            "localhost:5000/anvyl-agent-bob:1",
            "docker.io/org/anvyl-agent-bob:1",
            "localhost/org/anvyl-agent-bob:1",
            "org/anvyl-agent-bob:1",
            "quay.io/library/anvyl-agent-bob:1",
        ] {
            assert!(
                claims_of(&image(reference)).is_empty(),
                "{reference} must not be ours by name"
            );
        }
        let labelled = image("ghcr.io/org/anvyl-agent-bob:latest").label("reaper.agent", "bob");
        assert_eq!(claims_of(&labelled), ["agent/bob"]);
        // A container name is never a reference: no spelling is stripped from it.
        assert!(claims_of(&container("localhost/anvyl-agent-bob")).is_empty());
    }

    #[test]
    fn attribution_says_which_rule_makes_an_object_an_owners() {
        let rules = Rules::default();
        let m = Matchers::default();
        let agent = |n: &str| OwnerRef {
            kind: OwnerKind::Agent,
            name: Name::new(n).unwrap(),
        };
        let session = |n: &str| OwnerRef {
            kind: OwnerKind::Session,
            name: Name::new(n).unwrap(),
        };
        let why = |obj: &DockerObject, o: &OwnerRef| attribution(obj, o, &rules, &m);

        let both = container("anvyl-agent-my-agent").label("reaper.agent", "my-agent");
        assert_eq!(
            why(&both, &agent("my-agent")),
            [
                "label reaper.agent=my-agent",
                "container name anvyl-agent-my-agent (adoption.agentNamePrefix anvyl-agent-)"
            ]
        );
        assert_eq!(
            why(
                &image("localhost/anvyl-agent-my-agent:1"),
                &agent("my-agent")
            ),
            ["image repository anvyl-agent-my-agent (adoption.agentNamePrefix anvyl-agent-)"]
        );
        assert_eq!(
            why(&volume("v").label("session_id", "run-1"), &session("run-1")),
            ["label session_id=run-1 (adoption.sessionLabelKeys)"]
        );
        // Look-alike names belong to someone else, or to nobody.
        assert!(why(&container("anvyl-agent-my-agent2"), &agent("my-agent")).is_empty());
        assert!(why(&container("my-agent"), &agent("my-agent")).is_empty());
        assert!(why(&both, &session("my-agent")).is_empty());
        // A label that proves nothing (a foreign tag on the image) is not given as a reason.
        let shared = image("exec:1")
            .label("reaper.session", "s")
            .other_ref("someone/else:latest");
        assert!(why(&shared, &session("s")).is_empty());

        // The records' own rules.
        let s = session_rec();
        let a = crate::core::fixtures::agent("custom")
            .prefix("custom-")
            .build();
        let m = Matchers::new(&[s], &[a], &rules);
        let obj = container("custom-1")
            .label("team", "tdd")
            .label("run", "42");
        assert_eq!(
            attribution(&obj, &session("tdd-run-42"), &rules, &m),
            ["labels run=42,team=tdd (spec.match.labels)"]
        );
        assert_eq!(
            attribution(&obj, &agent("custom"), &rules, &m),
            ["container name custom-1 (spec.match.namePrefix custom-)"]
        );
    }

    fn session_rec() -> crate::core::model::Session {
        crate::core::fixtures::session("tdd-run-42")
            .matching("team", "tdd")
            .matching("run", "42")
            .build()
    }

    #[test]
    fn look_alikes_are_never_ours() {
        for obj in [
            container("c").label("reaper.session-x", "s1"),
            container("c").label("reaper.sessionx", "s1"),
            container("c").label("REAPER.SESSION", "s1"),
            container("c").label("reaper.session", "Bad Value"),
            container("c").label("reaper.session", "a=b"),
            container("c").label("reaper.session", ""),
            container("anvyl-agent"),
            container("anvyl-agent-"),
            container("xanvyl-agent-foo"),
            network("anvyl-agent-foo"),
            image("xanvyl-agent-foo:1"),
            container("c"),
        ] {
            assert!(claims_of(&obj).is_empty(), "{obj:?} must not be ours");
        }
    }

    #[test]
    fn another_instance_is_never_ours() {
        let rules = Rules {
            instance: "host-a".into(),
            ..Rules::default()
        };
        let m = Matchers::default();
        let other = container("anvyl-agent-x")
            .label("reaper.instance", "host-b")
            .label("reaper.session", "s");
        assert!(claims(&other, &rules, &m).is_empty());
        let mine = container("c")
            .label("reaper.instance", "host-a")
            .label("reaper.session", "s");
        assert_eq!(claims(&mine, &rules, &m).len(), 1);
        // Without an instance configured, a scoped object still belongs to its own instance.
        assert!(claims(&other, &Rules::default(), &m).is_empty());
    }

    #[test]
    fn record_match_rules_claim_objects() {
        let rules = Rules::default();
        let s = session("tdd-run-42")
            .matching("team", "tdd")
            .matching("run", "42")
            .build();
        let a = agent("my-agent").prefix("custom-").build();
        let m = Matchers::new(&[s], &[a], &rules);
        let both = container("c").label("team", "tdd").label("run", "42");
        let owners = claims(&both, &rules, &m);
        assert!(owners.iter().any(|o| o.name.as_str() == "tdd-run-42"));
        assert!(
            claims(&container("c").label("team", "tdd"), &rules, &m).is_empty(),
            "ALL labels must match"
        );
        assert_eq!(claims(&container("custom-1"), &rules, &m).len(), 1);
    }

    #[test]
    fn an_image_shared_with_a_foreign_tag_is_not_ours_by_label() {
        let shared = image("exec:1")
            .label("reaper.session", "s")
            .other_ref("someone/else:latest");
        assert!(claims_of(&shared).is_empty());
        let alone = image("exec:1").label("reaper.session", "s");
        assert_eq!(claims_of(&alone), ["session/s"]);
        // Our reference by name stays ours even when someone else tagged the same image.
        let named = image("anvyl-agent-bob:latest").other_ref("someone/else:latest");
        assert_eq!(claims_of(&named), ["agent/bob"]);
        // Podman's spellings of our own references are not someone else's.
        let podman = image("docker.io/library/anvyl-agent-bob:latest")
            .label("reaper.session", "s")
            .other_ref("localhost/anvyl-agent-bob:dev");
        assert_eq!(claims_of(&podman), ["session/s", "agent/bob"]);
        let foreign = image("localhost/exec:1")
            .label("reaper.session", "s")
            .other_ref("ghcr.io/org/anvyl-agent-bob:1");
        assert!(claims_of(&foreign).is_empty());
    }
}
