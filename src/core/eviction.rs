//! Over 500 lines: 250 of code (the pure disk-pressure planner) and its unit and property tests.
//!
//! Disk pressure: which of our idle images to evict, least recently used first, so that the
//! filesystem holding Docker's data root gets back below the low watermark. A pure function of
//! the usage measured, the images on the engine, what uses them, when each was last used, the
//! `diskPressure` config and now. Whose an image is comes from `ownership`, as everywhere.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use crate::core::inventory::{repository_of, DockerObject};
use crate::core::model::{
    CleanupReason, Duration, Labels, OwnerRef, Percent, ResourceKind, Timestamp,
};
use crate::core::ownership::{self, Matchers, Rules};
use crate::core::plan::{Removal, Target};

/// The label that keeps an image from eviction whatever the disk says.
pub const KEEP_LABEL: &str = "reaper.keep";

/// `diskPressure:` in the config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskPressureConfig {
    /// Evict when bytes or inodes in use pass this share of the filesystem.
    pub high_watermark: Percent,
    /// Evict until both are below this.
    pub low_watermark: Percent,
    /// Never evict an image created or last used more recently.
    pub min_image_age: Duration,
    /// Image reference patterns (`*` for any characters) never evicted.
    pub keep: Vec<String>,
}

/// Used and total, of bytes or of inodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub used: u64,
    /// What is in use plus what is still available to reaper's user (as `df` counts).
    pub total: u64,
}

impl Usage {
    /// The share in use; an empty filesystem (no total) is not full.
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.used as f64 / self.total as f64
        }
    }
}

/// What `statvfs` said about the filesystem holding Docker's data root.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    pub bytes: Usage,
    pub inodes: Usage,
}

impl DiskUsage {
    fn above(&self, mark: Percent) -> bool {
        self.bytes.ratio() > mark.ratio() || self.inodes.ratio() > mark.ratio()
    }

    fn below(&self, mark: Percent) -> bool {
        self.bytes.ratio() < mark.ratio() && self.inodes.ratio() < mark.ratio()
    }

    /// Usage once an image of `bytes` is gone. Images' inode counts are unknown: each is taken
    /// to hold inodes in the proportion it holds bytes.
    fn without(&self, bytes: u64) -> DiskUsage {
        let inodes = match self.bytes.used {
            0 => 0,
            used => ((self.inodes.used as u128 * bytes.min(used) as u128) / used as u128) as u64,
        };
        DiskUsage {
            bytes: Usage {
                used: self.bytes.used.saturating_sub(bytes),
                ..self.bytes
            },
            inodes: Usage {
                used: self.inodes.used.saturating_sub(inodes),
                ..self.inodes
            },
        }
    }
}

/// One image on the engine, by ID, with every reference it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFacts {
    pub id: String,
    pub references: Vec<String>,
    #[serde(default)]
    pub labels: Labels,
    pub created: Option<Timestamp>,
    pub size: u64,
}

impl ImageFacts {
    /// Whether a container create call that named the image `name` (a reference, a reference
    /// without its tag, a full or short ID) meant this image.
    pub fn named_by(&self, name: &str) -> bool {
        let hex = |id: &str| id.strip_prefix("sha256:").unwrap_or(id).to_string();
        let by_id = name.len() >= 12
            && name
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c.is_ascii_lowercase())
            && hex(&self.id).starts_with(&hex(name));
        by_id
            || self.references.iter().any(|r| {
                r == name || (repository_of(name) == name && *r == format!("{name}:latest"))
            })
    }

    /// The image as one object per reference (as the inventory lists images), or one untagged.
    fn objects(&self) -> Vec<DockerObject> {
        let object = |name: &str| DockerObject {
            kind: ResourceKind::Image,
            id: self.id.clone(),
            name: name.to_string(),
            labels: self.labels.clone(),
            created: self.created,
            running: false,
            other_refs: self
                .references
                .iter()
                .filter(|r| *r != name)
                .cloned()
                .collect(),
        };
        if self.references.is_empty() {
            vec![object("")]
        } else {
            self.references.iter().map(|r| object(r)).collect()
        }
    }
}

/// A container (in any state, anyone's) and the image it is made from: that image is in use,
/// and was last used no earlier than the container's creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerUse {
    pub image_id: String,
    pub created: Option<Timestamp>,
}

/// What the planner is given besides the config.
#[derive(Clone, Debug, Default)]
pub struct DiskFacts {
    pub usage: DiskUsage,
    pub images: Vec<ImageFacts>,
    /// IDs of the images some container (in any state, anyone's) is made from.
    pub in_use: BTreeSet<String>,
    /// When a container was last created from each image, by image ID.
    pub last_use: BTreeMap<String, Timestamp>,
}

/// One reference to remove (untag; the image goes with its last reference).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Eviction {
    pub image: DockerObject,
    pub owner: Option<OwnerRef>,
    /// The image's size.
    pub size: u64,
    /// What removing this reference frees: the size with the image's last reference, else 0.
    pub frees: u64,
    /// Its last use, or its creation if never used: the LRU key.
    pub last_used: Timestamp,
}

impl Eviction {
    /// The removal the executor carries out. On behalf of no owner: an owner may be live, and
    /// its record is not the eviction's business.
    pub fn removal(&self) -> Removal {
        Removal {
            target: Target::Docker(self.image.clone()),
            owner: None,
            reason: CleanupReason::DiskPressure,
            stop_timeout: Duration::ZERO,
            because: Vec::new(),
            stop_only: false,
        }
    }
}

/// What to evict now, in order, and where that leaves the disk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvictionPlan {
    /// Usage is above the high watermark.
    pub pressure: bool,
    pub evictions: Vec<Eviction>,
    /// Usage once every planned eviction is done (inodes estimated).
    pub projected: DiskUsage,
    /// Under pressure, and even evicting everything of ours that may go leaves usage at or
    /// above the low watermark: the disk fills with what is not ours.
    pub exhausted: bool,
}

/// Plans the evictions: none unless usage is above the high watermark; then our idle, old
/// enough, unkept images, least recently used first (ties: the bigger first), until the
/// projected usage is below the low watermark.
pub fn plan_evictions(
    facts: &DiskFacts,
    rules: &Rules,
    matchers: &Matchers,
    config: &DiskPressureConfig,
    now: Timestamp,
) -> EvictionPlan {
    let mut plan = EvictionPlan {
        pressure: facts.usage.above(config.high_watermark),
        projected: facts.usage,
        ..EvictionPlan::default()
    };
    if !plan.pressure {
        return plan;
    }
    let mut candidates: Vec<(Timestamp, &ImageFacts, Vec<DockerObject>)> = facts
        .images
        .iter()
        .filter_map(|image| {
            let last_used = evictable(image, facts, config, now)?;
            let ours: Vec<DockerObject> = image
                .objects()
                .into_iter()
                .filter(|o| ownership::is_ours(o, rules, matchers))
                .collect();
            (!ours.is_empty()).then_some((last_used, image, ours))
        })
        .collect();
    candidates.sort_by(|a, b| {
        (a.0, std::cmp::Reverse(a.1.size), &a.1.id).cmp(&(
            b.0,
            std::cmp::Reverse(b.1.size),
            &b.1.id,
        ))
    });
    for (last_used, image, ours) in candidates {
        if plan.projected.below(config.low_watermark) {
            return plan;
        }
        // Bytes come back only when every reference goes: a shared tag is untagged, not freed.
        let all_ours = ours.len() == image.references.len().max(1);
        let last = ours.len() - 1;
        for (i, object) in ours.into_iter().enumerate() {
            let frees = if all_ours && i == last { image.size } else { 0 };
            plan.projected = plan.projected.without(frees);
            plan.evictions.push(Eviction {
                owner: ownership::claims(&object, rules, matchers)
                    .into_iter()
                    .next(),
                image: object,
                size: image.size,
                frees,
                last_used,
            });
        }
    }
    plan.exhausted = !plan.projected.below(config.low_watermark);
    plan
}

/// The image's LRU key when nothing but ownership keeps it from eviction: not used by any
/// container, old enough since creation and last use, no keep pattern or keep label.
fn evictable(
    image: &ImageFacts,
    facts: &DiskFacts,
    config: &DiskPressureConfig,
    now: Timestamp,
) -> Option<Timestamp> {
    if facts.in_use.contains(&image.id) || kept(&image.labels, &image.references, &config.keep) {
        return None;
    }
    // Unknown age is "too young to judge", as for orphans.
    let created = image.created?;
    let last_use = facts.last_use.get(&image.id).copied();
    let latest = last_use.map_or(created, |u| u.max(created));
    if now.millis() - latest.millis() < config.min_image_age.as_millis() {
        return None;
    }
    Some(last_use.unwrap_or(created))
}

/// Kept whatever the disk says: a `reaper.keep=true` label, or a reference matching a `keep`
/// pattern. Checked when planning and again on the image as it is right before its delete.
pub fn kept(labels: &Labels, references: &[String], keep: &[String]) -> bool {
    labels.get(KEEP_LABEL).is_some_and(|v| v == "true")
        || references
            .iter()
            .any(|r| keep.iter().any(|p| pattern_matches(p, r)))
}

/// The re-check before an eviction's delete, on the image as it is now: still ours, and not kept.
pub fn may_evict(
    fresh: &DockerObject,
    rules: &Rules,
    matchers: &Matchers,
    keep: &[String],
) -> bool {
    let references: Vec<String> = std::iter::once(fresh.name.clone())
        .filter(|n| !n.is_empty())
        .chain(fresh.other_refs.iter().cloned())
        .collect();
    fresh.kind == ResourceKind::Image
        && ownership::is_ours(fresh, rules, matchers)
        && !kept(&fresh.labels, &references, keep)
}

/// A `keep` pattern: `*` matches any run of characters, everything else itself.
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Greedy match with backtracking to the last star: linear in practice, no recursion.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::T0;
    use crate::core::ownership::SESSION_LABEL;

    const MIB: u64 = 1 << 20;

    fn config() -> DiskPressureConfig {
        DiskPressureConfig {
            high_watermark: "85%".parse().unwrap(),
            low_watermark: "80%".parse().unwrap(),
            min_image_age: Duration::from_secs(600),
            keep: vec!["anvyl-agent-base:*".into()],
        }
    }

    fn usage(used_mib: u64) -> DiskUsage {
        DiskUsage {
            bytes: Usage {
                used: used_mib * MIB,
                total: 100 * MIB,
            },
            inodes: Usage {
                used: 10,
                total: 1000,
            },
        }
    }

    fn hours(h: i64) -> Timestamp {
        Timestamp(T0.millis() + h * 3_600_000)
    }

    /// An image of ours (an agent's repository) of `mib` MiB created at `created`.
    fn ours(name: &str, mib: u64, created: Timestamp) -> ImageFacts {
        ImageFacts {
            id: format!("sha256:{name}"),
            references: vec![format!("anvyl-agent-{name}:latest")],
            labels: Labels::new(),
            created: Some(created),
            size: mib * MIB,
        }
    }

    fn plan(facts: &DiskFacts) -> EvictionPlan {
        plan_evictions(
            facts,
            &Rules::default(),
            &Matchers::default(),
            &config(),
            hours(100),
        )
    }

    fn evicted(p: &EvictionPlan) -> Vec<&str> {
        p.evictions.iter().map(|e| e.image.name.as_str()).collect()
    }

    #[test]
    fn nothing_is_evicted_below_the_high_watermark() {
        let facts = DiskFacts {
            usage: usage(85),
            images: vec![ours("a", 10, hours(0))],
            ..DiskFacts::default()
        };
        let p = plan(&facts);
        assert!(!p.pressure);
        assert!(p.evictions.is_empty());
    }

    #[test]
    fn least_recently_used_go_first_until_below_the_low_watermark() {
        let mut facts = DiskFacts {
            usage: usage(90),
            images: vec![
                ours("new", 4, hours(1)),
                ours("old", 4, hours(0)),
                ours("used", 4, hours(0)),
                ours("mid", 4, hours(2)),
            ],
            ..DiskFacts::default()
        };
        // Used lately, so it goes after the one created at hour 2 and never used.
        facts.last_use.insert("sha256:used".into(), hours(3));
        let p = plan(&facts);
        // 90 - 4 - 4 = 82, - 4 = 78 < 80: three go, the most recently used stays.
        assert_eq!(
            evicted(&p),
            [
                "anvyl-agent-old:latest",
                "anvyl-agent-new:latest",
                "anvyl-agent-mid:latest"
            ]
        );
        assert_eq!(p.projected.bytes.used, 78 * MIB);
        assert!(!p.exhausted);
    }

    #[test]
    fn ties_go_to_the_bigger_image() {
        let facts = DiskFacts {
            usage: usage(90),
            images: vec![ours("small", 2, hours(0)), ours("big", 20, hours(0))],
            ..DiskFacts::default()
        };
        assert_eq!(evicted(&plan(&facts)), ["anvyl-agent-big:latest"]);
    }

    #[test]
    fn foreign_used_young_and_kept_images_stay_and_say_the_disk_is_exhausted() {
        let mut labelled_keep = ours("labelled", 5, hours(0));
        labelled_keep
            .labels
            .insert(KEEP_LABEL.into(), "true".into());
        let mut base = ours("base", 5, hours(0));
        base.references = vec!["anvyl-agent-base:1".into()];
        let foreign = ImageFacts {
            id: "sha256:web".into(),
            references: vec!["web:1".into()],
            ..ours("web", 5, hours(0))
        };
        let mut facts = DiskFacts {
            usage: usage(95),
            images: vec![
                foreign,
                labelled_keep,
                base,
                ours("inuse", 5, hours(0)),
                ours("young", 5, Timestamp(hours(100).millis() - 60_000)),
                ours("recent", 5, hours(0)),
            ],
            ..DiskFacts::default()
        };
        facts.in_use.insert("sha256:inuse".into());
        facts.last_use.insert("sha256:recent".into(), hours(100));
        let p = plan(&facts);
        assert!(p.pressure && p.exhausted);
        assert!(p.evictions.is_empty(), "{:?}", evicted(&p));
    }

    #[test]
    fn a_shared_tag_is_untagged_and_frees_nothing() {
        let mut shared = ours("shared", 30, hours(0));
        shared.references.push("web:1".into());
        let facts = DiskFacts {
            usage: usage(90),
            images: vec![shared, ours("later", 30, hours(1))],
            ..DiskFacts::default()
        };
        let p = plan(&facts);
        assert_eq!(
            evicted(&p),
            ["anvyl-agent-shared:latest", "anvyl-agent-later:latest"]
        );
        assert_eq!(p.evictions[0].frees, 0);
        assert_eq!(p.evictions[0].image.other_refs, ["web:1"]);
        assert_eq!(p.evictions[1].frees, 30 * MIB);
    }

    #[test]
    fn an_image_with_two_references_of_ours_frees_its_bytes_with_the_last() {
        let mut two = ours("two", 30, hours(0));
        two.references.push("anvyl-agent-two:v2".into());
        let facts = DiskFacts {
            usage: usage(90),
            images: vec![two],
            ..DiskFacts::default()
        };
        let frees: Vec<u64> = plan(&facts).evictions.iter().map(|e| e.frees).collect();
        assert_eq!(frees, [0, 30 * MIB]);
    }

    #[test]
    fn inode_pressure_alone_triggers_eviction() {
        let mut facts = DiskFacts {
            usage: usage(10),
            images: vec![ours("a", 5, hours(0))],
            ..DiskFacts::default()
        };
        facts.usage.inodes.used = 900;
        let p = plan(&facts);
        assert!(p.pressure);
        assert_eq!(evicted(&p), ["anvyl-agent-a:latest"]);
        // Half the bytes in use go, so half the inodes are taken to go with them.
        assert_eq!(p.projected.inodes.used, 450);
    }

    #[test]
    fn a_create_call_names_an_image_by_reference_or_id() {
        let mut image = ours("a", 1, T0);
        image.id = "sha256:0123456789abcdef".into();
        for name in [
            "anvyl-agent-a:latest",
            "anvyl-agent-a",
            "sha256:0123456789abcdef",
            "0123456789ab",
        ] {
            assert!(image.named_by(name), "{name}");
        }
        for name in [
            "anvyl-agent-a:2",
            "anvyl-agent",
            "0123",
            "sha256:0123456789ac",
        ] {
            assert!(!image.named_by(name), "{name}");
        }
    }

    #[test]
    fn keep_patterns_match_with_stars() {
        assert!(pattern_matches("anvyl-agent-base:*", "anvyl-agent-base:1"));
        assert!(pattern_matches("*", ""));
        assert!(pattern_matches("a*b*c", "axxbyyc"));
        assert!(!pattern_matches("a*b*c", "axxbyy"));
        assert!(!pattern_matches(
            "anvyl-agent-base:*",
            "anvyl-agent-based:1"
        ));
        assert!(pattern_matches("exact:1", "exact:1"));
        assert!(!pattern_matches("exact:1", "exact:10"));
    }

    #[test]
    fn the_recheck_refuses_what_is_no_longer_ours_or_is_kept() {
        let rules = Rules::default();
        let m = Matchers::default();
        let keep = config().keep;
        let obj = |name: &str| ours(name, 1, T0).objects().remove(0);
        assert!(may_evict(&obj("a"), &rules, &m, &keep));
        let mut labelled = obj("a");
        labelled.labels.insert(KEEP_LABEL.into(), "true".into());
        assert!(!may_evict(&labelled, &rules, &m, &keep));
        let mut tagged_base = obj("a");
        tagged_base.other_refs.push("anvyl-agent-base:2".into());
        assert!(!may_evict(&tagged_base, &rules, &m, &keep));
        let mut foreign = obj("a");
        foreign.name = "web:1".into();
        assert!(!may_evict(&foreign, &rules, &m, &keep));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const REFS: [&str; 6] = [
            "anvyl-agent-a1:1",
            "anvyl-agent-a2:1",
            "anvyl-agent-base:1",
            "web:1",
            "other:2",
            "anvyl-agent-a1:2",
        ];

        fn arb_image(i: usize) -> impl Strategy<Value = ImageFacts> {
            (
                prop::sample::subsequence(REFS.to_vec(), 0..3),
                prop::option::of(prop::sample::select(vec!["s1", "other"])),
                any::<bool>(),
                prop::option::of(0..200i64),
                1..40u64,
            )
                .prop_map(move |(refs, session, keep, created, mib)| {
                    let mut labels = Labels::new();
                    if let Some(s) = session {
                        labels.insert(SESSION_LABEL.into(), s.into());
                    }
                    if keep {
                        labels.insert(KEEP_LABEL.into(), "true".into());
                    }
                    ImageFacts {
                        id: format!("sha256:{i}"),
                        references: refs.into_iter().map(String::from).collect(),
                        labels,
                        created: created.map(|m| Timestamp(T0.millis() + m * 60_000)),
                        size: mib * MIB,
                    }
                })
        }

        fn arb_facts() -> impl Strategy<Value = DiskFacts> {
            (
                (0..8usize).prop_flat_map(|n| (0..n).map(arb_image).collect::<Vec<_>>()),
                0..=100u64,
                0..=1000u64,
                prop::collection::btree_set(0..8usize, 0..4),
                prop::collection::btree_map(0..8usize, 0..200i64, 0..4),
            )
                .prop_map(|(images, bytes, inodes, in_use, last_use)| DiskFacts {
                    usage: DiskUsage {
                        bytes: Usage {
                            used: bytes * MIB,
                            total: 100 * MIB,
                        },
                        inodes: Usage {
                            used: inodes,
                            total: 1000,
                        },
                    },
                    images,
                    in_use: in_use.into_iter().map(|i| format!("sha256:{i}")).collect(),
                    last_use: last_use
                        .into_iter()
                        .map(|(i, m)| (format!("sha256:{i}"), Timestamp(T0.millis() + m * 60_000)))
                        .collect(),
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn never_plans_what_must_stay_and_stops_below_the_low_watermark(
                facts in arb_facts(),
                now in 0..300i64,
                high in 50..100u32,
                gap in 0..30u32,
            ) {
                let now = Timestamp(T0.millis() + now * 60_000);
                let config = DiskPressureConfig {
                    high_watermark: Percent::from_ratio(f64::from(high) / 100.0).unwrap(),
                    low_watermark: Percent::from_ratio(f64::from(high.saturating_sub(gap)) / 100.0).unwrap(),
                    min_image_age: Duration::from_secs(600),
                    keep: vec!["anvyl-agent-base:*".into()],
                };
                let rules = Rules::default();
                let matchers = Matchers::default();
                let p = plan_evictions(&facts, &rules, &matchers, &config, now);
                if !p.pressure {
                    prop_assert!(p.evictions.is_empty());
                }
                let by_id: BTreeMap<&str, &ImageFacts> =
                    facts.images.iter().map(|i| (i.id.as_str(), i)).collect();
                let mut usage = facts.usage;
                let mut last_key = None;
                for e in &p.evictions {
                    let image = by_id[e.image.id.as_str()];
                    // Never foreign, in use, young or kept.
                    prop_assert!(ownership::is_ours(&e.image, &rules, &matchers));
                    prop_assert!(!facts.in_use.contains(&image.id));
                    prop_assert!(!kept(&image.labels, &image.references, &config.keep));
                    let created = image.created.expect("an image of unknown age is never planned");
                    let latest = facts.last_use.get(&image.id).map_or(created, |u| (*u).max(created));
                    prop_assert!(now.millis() - latest.millis() >= config.min_image_age.as_millis());
                    // Least recently used first.
                    prop_assert!(last_key.is_none_or(|k| k <= e.last_used));
                    last_key = Some(e.last_used);
                    // Each image was still needed when it was planned: no eviction once
                    // below the low watermark.
                    prop_assert!(!usage.below(config.low_watermark));
                    usage = usage.without(e.frees);
                }
                prop_assert_eq!(usage, p.projected);
                prop_assert_eq!(p.exhausted, p.pressure && !p.projected.below(config.low_watermark));
            }
        }
    }
}
