//! Image repositories as the engines spell them. Pure: no I/O.
//!
//! Docker lists an image tagged `anvyl-agent-x` by its familiar name `anvyl-agent-x`. Podman
//! lists the same image as `docker.io/library/anvyl-agent-x` when it came in through the
//! Docker-compatible API (a `docker build` or `docker tag` against Podman's socket), and as
//! `localhost/anvyl-agent-x` when Podman built or committed it itself. All three name the same
//! local repository, so the name-prefix rules compare [`canonical_repository`].

/// The spellings of "this repository, with no registry of its own" that are stripped, longest
/// first: Docker Hub's official namespace, Docker Hub, and Podman's local pseudo-registry.
const LOCAL_SPELLINGS: [&str; 3] = ["docker.io/library/", "docker.io/", "localhost/"];

/// The repository an engine-qualified repository names: `docker.io/library/x`, `docker.io/x`
/// and `localhost/x` become `x` (`docker.io/org/x` and `localhost/org/x` become `org/x`). One
/// spelling is stripped, once; anything else is returned unchanged.
///
/// In particular a reference to another registry keeps its registry: `ghcr.io/org/anvyl-agent-x`
/// and `localhost:5000/anvyl-agent-x` stay as they are, so a name-prefix rule such as
/// `anvyl-agent-` never matches them through their last path component. Such an image is ours
/// only by its labels. Matching the last component would make every `anvyl-agent-*` image of
/// every registry and organisation ours, a widening this function must never make.
///
/// Takes a repository (no tag or digest: see [`crate::core::inventory::repository_of`]).
pub fn canonical_repository(repository: &str) -> &str {
    LOCAL_SPELLINGS
        .iter()
        .find_map(|spelling| repository.strip_prefix(spelling))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(repository)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::inventory::repository_of;

    #[test]
    fn local_spellings_name_the_bare_repository() {
        for r in [
            "anvyl-agent-x",
            "docker.io/library/anvyl-agent-x",
            "docker.io/anvyl-agent-x",
            "localhost/anvyl-agent-x",
        ] {
            assert_eq!(canonical_repository(r), "anvyl-agent-x", "{r}");
        }
        assert_eq!(canonical_repository("docker.io/org/x"), "org/x");
        assert_eq!(canonical_repository("localhost/org/x"), "org/x");
        assert_eq!(
            canonical_repository(repository_of("docker.io/library/anvyl-agent-x:latest")),
            "anvyl-agent-x"
        );
    }

    #[test]
    fn other_registries_keep_their_registry() {
        for r in [
            "ghcr.io/org/anvyl-agent-x",
            "ghcr.io/anvyl-agent-x",
            "localhost:5000/anvyl-agent-x",
            "registry.example.com:443/anvyl-agent-x",
            "quay.io/library/anvyl-agent-x",
            "index.docker.io/library/anvyl-agent-x",
            // Not a spelling of a local repository: a name that only starts like one.
            "localhostx/anvyl-agent-x",
            "docker.iox/anvyl-agent-x",
            "localhost",
            "docker.io/library/",
            "localhost/",
            "",
        ] {
            assert_eq!(canonical_repository(r), r, "{r} must stay as it is");
        }
    }

    #[test]
    fn one_spelling_is_stripped_once() {
        assert_eq!(
            canonical_repository("docker.io/library/localhost/x"),
            "localhost/x"
        );
        assert_eq!(canonical_repository("localhost/docker.io/x"), "docker.io/x");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// A repository path with no registry: lowercase components without `.` or `:`, the
        /// first of which is not `localhost`.
        fn bare() -> impl Strategy<Value = String> {
            prop::collection::vec("[a-z0-9][a-z0-9_-]{0,8}", 1..4)
                .prop_filter("no registry", |c| c[0] != "localhost")
                .prop_map(|c| c.join("/"))
        }

        /// A registry host other than docker.io and localhost: it has a `.` or a port.
        fn registry() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z][a-z0-9-]{0,8}\\.[a-z]{2,4}",
                "[a-z][a-z0-9-]{0,8}:[0-9]{1,5}",
            ]
            .prop_filter("not a local spelling", |r| r != "docker.io")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn every_local_spelling_names_the_bare_repository(r in bare()) {
                let canonical = |spelled: String| canonical_repository(&spelled).to_string();
                prop_assert_eq!(canonical(r.clone()), r.clone());
                prop_assert_eq!(canonical(format!("localhost/{r}")), r.clone());
                // On Docker Hub, `library/` is part of the spelling (`docker.io/library/x` is
                // `x`), so a repository in a namespace called `library` is left out here.
                if !r.starts_with("library/") {
                    prop_assert_eq!(canonical(format!("docker.io/{r}")), r.clone());
                    prop_assert_eq!(canonical(format!("docker.io/library/{r}")), r.clone());
                }
            }

            #[test]
            fn another_registry_is_never_stripped(reg in registry(), r in bare()) {
                let full = format!("{reg}/{r}");
                prop_assert_eq!(canonical_repository(&full), full.as_str());
            }

            #[test]
            fn it_only_ever_strips_one_local_spelling(s in "[a-z0-9./:_-]{0,30}") {
                let out = canonical_repository(&s);
                prop_assert!(s.ends_with(out));
                if out != s {
                    let cut = &s[..s.len() - out.len()];
                    prop_assert!(LOCAL_SPELLINGS.contains(&cut), "cut {cut:?} from {s:?}");
                    prop_assert!(!out.is_empty());
                }
            }
        }
    }
}
