//! Bystanders: objects no reaper may ever touch.

use super::*;

/// What a bystander is, its kind, name, labels and whether it runs.
pub(super) type BystanderSpec<'a> = (&'static str, Kind, String, Vec<(&'a str, &'a str)>, bool);

/// Objects that look a bit like ours but are not: each test creates them first and asserts at
/// the end that every one is still there. Dropping removes them (best effort). They live on
/// the engine [`docker_host`] names when they are created (see [`on_engine`]), and every check
/// and the cleanup go to that engine, whichever thread runs them.
pub struct Bystanders {
    tag: String,
    host: String,
    objects: Vec<(Kind, String, &'static str)>,
}

impl Bystanders {
    /// Creates the set (in parallel: it is part of every test). `tag` makes the names unique
    /// per test (lowercase letters and digits).
    pub fn create(tag: &str) -> Bystanders {
        let t = tag;
        let host = docker_host();
        let host = host.as_str();
        let mut b = Bystanders {
            tag: tag.to_string(),
            host: host.to_string(),
            objects: Vec::new(),
        };
        b.clear();
        let other: &[(&str, &str)] = &[
            ("reaper.instance", "someone-else"),
            ("reaper.session", "theirs"),
        ];
        let other_agent: &[(&str, &str)] = &[
            ("reaper.instance", "someone-else"),
            ("reaper.agent", "theirs"),
        ];
        let specs: Vec<BystanderSpec> = vec![
            // Unlabelled, and plainly not ours.
            (
                "unlabelled running container",
                Kind::Container,
                format!("bys-{t}-plain"),
                vec![],
                true,
            ),
            (
                "unlabelled created container",
                Kind::Container,
                format!("bys-{t}-plain-new"),
                vec![],
                false,
            ),
            (
                "unlabelled image",
                Kind::Image,
                format!("bys-{t}-plain:1"),
                vec![],
                false,
            ),
            (
                "unlabelled network",
                Kind::Network,
                format!("bys-{t}-plain"),
                vec![],
                false,
            ),
            (
                "unlabelled volume",
                Kind::Volume,
                format!("bys-{t}-plain"),
                vec![],
                false,
            ),
            // Another reaper instance's objects.
            (
                "other instance's container",
                Kind::Container,
                format!("bys-{t}-other"),
                other.to_vec(),
                true,
            ),
            (
                "other instance's agent container",
                Kind::Container,
                format!("bys-{t}-other-agent"),
                other_agent.to_vec(),
                false,
            ),
            (
                "other instance's network",
                Kind::Network,
                format!("bys-{t}-other"),
                other.to_vec(),
                false,
            ),
            (
                "other instance's volume",
                Kind::Volume,
                format!("bys-{t}-other"),
                other.to_vec(),
                false,
            ),
            (
                "other instance's image",
                Kind::Image,
                format!("bys-{t}-other:1"),
                other.to_vec(),
                false,
            ),
            // Look-alike labels that are not reaper's ownership labels.
            (
                "label reaper.session-x",
                Kind::Container,
                format!("bys-{t}-look1"),
                vec![("reaper.session-x", "a")],
                true,
            ),
            (
                "label reaper.sessionx",
                Kind::Container,
                format!("bys-{t}-look2"),
                vec![("reaper.sessionx", "a")],
                true,
            ),
            (
                "label REAPER.SESSION",
                Kind::Container,
                format!("bys-{t}-look3"),
                vec![("REAPER.SESSION", "a")],
                true,
            ),
            (
                "label reaper.session with an invalid name",
                Kind::Container,
                format!("bys-{t}-look4"),
                vec![("reaper.session", "Bad Value")],
                true,
            ),
            (
                "label reaper.session with '=' in its value",
                Kind::Container,
                format!("bys-{t}-look5"),
                vec![("reaper.session", "a=b")],
                true,
            ),
            (
                "label reaper.agent with an invalid name",
                Kind::Container,
                format!("bys-{t}-look6"),
                vec![("reaper.agent", "Bad Agent!")],
                false,
            ),
            (
                "label session_idx (not the adoption key)",
                Kind::Container,
                format!("bys-{t}-look7"),
                vec![("session_idx", "a")],
                true,
            ),
            (
                "volume labelled reaper.sessionx",
                Kind::Volume,
                format!("bys-{t}-lookvol"),
                vec![("reaper.sessionx", "a")],
                false,
            ),
            (
                "network labelled reaper.agentx",
                Kind::Network,
                format!("bys-{t}-looknet"),
                vec![("reaper.agentx", "a")],
                false,
            ),
            // Names that merely resemble the agent prefix.
            (
                "container named anvyl-agent (no suffix)",
                Kind::Container,
                "anvyl-agent".to_string(),
                vec![],
                true,
            ),
            (
                "container named xanvyl-agent-*",
                Kind::Container,
                format!("xanvyl-agent-{t}"),
                vec![],
                true,
            ),
            (
                "image xanvyl-agent-*",
                Kind::Image,
                format!("xanvyl-agent-{t}:latest"),
                vec![],
                false,
            ),
        ];
        let created: Vec<(&'static str, Kind, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = specs
                .iter()
                .map(|(what, kind, name, labels, running)| {
                    scope.spawn(move || {
                        let id = on_engine(host, || match kind {
                            Kind::Container => {
                                let c = Container::new(name).labels(labels);
                                if *running { c.running() } else { c.created() }.create()
                            }
                            Kind::Image => image(name, labels),
                            Kind::Network => network(name, labels),
                            Kind::Volume => volume(name, labels),
                        });
                        (*what, *kind, id)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| panic!("creating bystanders failed"))
                })
                .collect()
        });
        for (what, kind, id) in created {
            b.add(kind, id, what);
        }
        b.add(Kind::Image, TEST_IMAGE.to_string(), "the test image");
        b
    }

    /// Every bystander, e.g. to check that `reaper orphans` lists none of them.
    pub fn objects(&self) -> Vec<Obj> {
        self.objects
            .iter()
            .map(|(k, id, _)| (*k, id.clone()))
            .collect()
    }

    fn add(&mut self, kind: Kind, id: String, what: &'static str) {
        self.objects.push((kind, id, what));
    }

    /// Panics naming every bystander that vanished.
    pub fn assert_all_alive(&self) {
        let alive = on_engine(&self.host, || existence(&self.objects()));
        let gone: Vec<String> = self
            .objects
            .iter()
            .zip(alive)
            .filter(|(_, alive)| !alive)
            .map(|((kind, id, what), _)| format!("{what} ({} {id})", kind.as_str()))
            .collect();
        assert!(
            gone.is_empty(),
            "bystanders were removed from {}: {}",
            self.host,
            gone.join("; ")
        );
    }

    fn clear(&self) {
        on_engine(&self.host, || {
            remove_named_like(&format!("bys-{}", self.tag));
            remove_named_like(&format!("xanvyl-agent-{}", self.tag));
            remove_quietly(Kind::Container, "anvyl-agent");
        })
    }
}

impl Drop for Bystanders {
    fn drop(&mut self) {
        self.clear();
    }
}
