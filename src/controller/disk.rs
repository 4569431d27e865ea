//! Disk pressure, once per pass (and the loop passes at least once a minute): measure the
//! filesystem holding Docker's data root, learn when each image was last used, plan evictions
//! (`core::eviction`, pure) and hand them to the executor's queue, which re-checks each on a
//! fresh look. Nothing here fails the pass: a disk that cannot be measured evicts nothing.

use super::*;
use crate::api::wire::DiskStatus;
use crate::core::eviction::{self, ContainerUse, DiskFacts, DiskUsage, EvictionPlan, ImageFacts};

/// The disk is measured at least this often, whatever the resync interval.
pub(super) const DISK_MEASURE_EVERY: Duration = Duration::from_secs(60);

/// Last uses are kept among the store's sightings, as `last-use/<image ID>/<millis>`: a later
/// use is a new key (the first sighting of a key wins), and the older one is forgotten.
const LAST_USE_PREFIX: &str = "last-use/";

/// Container creations noted from events and not yet matched to an image are kept up to this
/// many: a burst beyond it is still seen by the listing, if its containers live that long.
const MAX_NOTED_USES: usize = 4096;

/// Whether a sighting key is a last use, which the pass's first sightings leave alone.
pub(super) fn is_last_use_key(key: &str) -> bool {
    key.starts_with(LAST_USE_PREFIX)
}

fn last_use_key(image_id: &str, at: Timestamp) -> String {
    format!("{LAST_USE_PREFIX}{image_id}/{}", at.millis())
}

/// The image ID a last-use key is about.
fn last_use_image(key: &str) -> Option<&str> {
    key.strip_prefix(LAST_USE_PREFIX)?
        .rsplit_once('/')
        .map(|(id, _)| id)
}

/// What disk pressure keeps between passes.
#[derive(Default)]
pub(super) struct DiskState {
    /// Evictions queued, with the bytes each frees, for the metrics once it is done.
    evicting: BTreeMap<crate::core::inventory::ObjectKey, u64>,
    /// Containers created since the last listing, by the image their create call named, with
    /// when: the uses a container gone before the next listing would hide.
    created_from: Vec<(String, Timestamp)>,
    /// The data root and when `/info` named it: asked again at most once a minute.
    root: Option<(String, Instant)>,
    /// When every image and container was last listed: without pressure and without new
    /// containers, once a minute is enough to learn last uses, so an idle host's engine is not
    /// listed whole in every pass.
    inventoried: Option<Instant>,
}

/// Whether `at` is within the last `DISK_MEASURE_EVERY`.
fn recent(at: Option<Instant>) -> bool {
    at.is_some_and(|t| t.elapsed() < DISK_MEASURE_EVERY)
}

impl<E: Engine> Controller<E> {
    /// A container was created from the image named `image` (a `create` event): a use, which
    /// the next pass matches to an image ID and keeps.
    pub(super) fn note_use(&self, image: &str, time_secs: i64) {
        let mut disk = lock(&self.disk);
        if disk.created_from.len() < MAX_NOTED_USES {
            let at = Timestamp::from_unix_secs(time_secs);
            disk.created_from.push((image.to_string(), at));
        }
    }

    /// Measures, plans and (unless `dry_run`) queues the evictions; shows the result in
    /// `reaper status` and the metrics.
    pub(super) async fn disk_step(
        &self,
        sessions: &[Session],
        agents: &[Agent],
        dry_run: bool,
        now: Timestamp,
    ) {
        let settings = self.settings();
        let config = settings.disk_pressure.clone();
        let mut status = DiskStatus {
            measured_at: now,
            high_watermark: config.high_watermark,
            low_watermark: config.low_watermark,
            ..DiskStatus::default()
        };
        let measured = match self.measure_disk().await {
            Ok((root, usage)) => {
                status.data_root = Some(root);
                status.available = true;
                usage
            }
            Err((root, e)) => {
                let was = self.health().disk.map(|d| (d.available, d.error));
                if was != Some((false, Some(e.clone()))) {
                    warn!(error = %e, "Disk pressure unavailable: reaper cannot measure Docker's data root, so it evicts nothing.");
                }
                status.data_root = root;
                status.error = Some(e);
                self.metrics.set_disk(None);
                self.set_health(|h| h.disk = Some(status));
                return;
            }
        };
        status.usage = Some(measured);
        let rules = &settings.rules;
        let matchers = Matchers::new(sessions, agents, rules);
        // Usage alone says whether there is pressure: without it, images need listing only to
        // learn last uses.
        let usage_only = DiskFacts {
            usage: measured,
            ..DiskFacts::default()
        };
        let quiet = eviction::plan_evictions(&usage_only, rules, &matchers, &config, now);
        // New containers wait for the next listing while removals run: a listing of every
        // image on a loaded engine takes seconds, and the pass after the removals (which turns
        // a session Cleaned or a failed agent Stopped) would wait behind it.
        let skip_listing = !quiet.pressure && {
            let disk = lock(&self.disk);
            recent(disk.inventoried) && (disk.created_from.is_empty() || !self.executor.is_idle())
        };
        let facts = match skip_listing {
            true => Ok(usage_only),
            false => self.disk_facts(measured).await,
        };
        let plan = match facts {
            Ok(facts) => eviction::plan_evictions(&facts, rules, &matchers, &config, now),
            Err(e) => {
                warn!(error = %e, "Could not list images for disk pressure; nothing is evicted this pass.");
                status.error = Some(e);
                EvictionPlan {
                    pressure: false,
                    ..EvictionPlan::default()
                }
            }
        };
        self.metrics.set_disk(Some((
            measured.bytes.ratio(),
            measured.inodes.ratio(),
            plan.pressure,
            plan.evictions.len(),
        )));
        if plan.pressure {
            info!(
                bytes = %format_ratio(measured.bytes.ratio()),
                inodes = %format_ratio(measured.inodes.ratio()),
                high_watermark = %config.high_watermark,
                evictions = plan.evictions.len(),
                exhausted = plan.exhausted,
                "Disk pressure: evicting our idle images, least recently used first."
            );
        }
        for e in &plan.evictions {
            let image = e.image.target();
            if dry_run {
                info!(image = %image, size = e.size, frees = e.frees, last_used = %e.last_used, "Dry run: would evict.");
            } else {
                let removal = e.removal();
                let key = executor::key_of(&removal.target);
                lock(&self.disk).evicting.insert(key, e.frees);
                // The outcome comes back through `Hooks::finished`, like every removal's.
                let _ = self.executor.submit(removal, None);
            }
        }
        status.pressure = plan.pressure;
        status.exhausted = plan.exhausted;
        status.evictions = plan.evictions;
        self.set_health(|h| h.disk = Some(status));
    }

    /// The data root (from `/info`) and its filesystem's usage, or why it cannot be measured.
    async fn measure_disk(&self) -> Result<(String, DiskUsage), (Option<String>, String)> {
        let known = lock(&self.disk)
            .root
            .clone()
            .filter(|(_, at)| recent(Some(*at)));
        let root = match known {
            Some((root, _)) => root,
            None => {
                let root = self
                    .engine
                    .data_root()
                    .await
                    .map_err(|e| (None, format!("the engine named no data root: {e}")))?;
                lock(&self.disk).root = Some((root.clone(), Instant::now()));
                root
            }
        };
        let path = std::path::PathBuf::from(&root);
        let usage = tokio::task::spawn_blocking(move || crate::disk::measure(&path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|e| (Some(root.clone()), e))?;
        Ok((root, usage))
    }

    /// The images, what uses them, and when each was last used: the store's last uses merged
    /// with the containers listed now, the later ones written back.
    async fn disk_facts(&self, usage: DiskUsage) -> Result<DiskFacts, String> {
        let (images, uses) = self
            .engine
            .disk_inventory()
            .await
            .map_err(|e| e.to_string())?;
        lock(&self.disk).inventoried = Some(Instant::now());
        let last_use = self
            .remember_last_use(&images, &uses)
            .await
            .map_err(|e| e.to_string())?;
        Ok(DiskFacts {
            usage,
            in_use: uses.iter().map(|u| u.image_id.clone()).collect(),
            images,
            last_use,
        })
    }

    /// Last use per image ID: the latest of what the store kept and the containers' creation.
    /// Later uses are written (durable with the store's next flush); the last uses of images
    /// that are gone are forgotten. A write that fails only loses a use until the next pass.
    async fn remember_last_use(
        &self,
        images: &[ImageFacts],
        uses: &[ContainerUse],
    ) -> Result<BTreeMap<String, Timestamp>, StoreError> {
        let store = self.store();
        let mut kept: BTreeMap<String, (Timestamp, Vec<String>)> = BTreeMap::new();
        for (key, at) in store.sightings()? {
            if let Some(id) = last_use_image(&key) {
                let entry = kept.entry(id.to_string()).or_insert((at, Vec::new()));
                entry.0 = entry.0.max(at);
                entry.1.push(key);
            }
        }
        // Containers listed now, and those the events saw created (maybe gone since).
        let noted = std::mem::take(&mut lock(&self.disk).created_from);
        let from_events = noted.iter().filter_map(|(name, at)| {
            let image = images.iter().find(|i| i.named_by(name))?;
            Some((&image.id, *at))
        });
        let listed = uses.iter().filter_map(|u| Some((&u.image_id, u.created?)));
        let mut seen: BTreeMap<String, Timestamp> = BTreeMap::new();
        for (id, at) in listed.chain(from_events) {
            let t = seen.entry(id.clone()).or_insert(at);
            *t = (*t).max(at);
        }
        let present: BTreeSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        let mut new = BTreeMap::new();
        let mut forget = Vec::new();
        let mut last_use: BTreeMap<String, Timestamp> = BTreeMap::new();
        for (id, (at, keys)) in &kept {
            if present.contains(id.as_str()) {
                last_use.insert(id.clone(), *at);
            } else {
                forget.extend(keys.iter().cloned());
            }
        }
        for (id, at) in seen {
            if last_use.get(&id).is_some_and(|k| *k >= at) {
                continue;
            }
            new.insert(last_use_key(&id, at), at);
            if let Some((_, keys)) = kept.get(&id) {
                forget.extend(keys.iter().cloned());
            }
            last_use.insert(id, at);
        }
        if !new.is_empty() || !forget.is_empty() {
            if let Err(e) = self.note_store(store.note_sightings(new, forget).await) {
                warn!(error = %e, "Could not keep the last uses of images; they are learnt again next pass.");
            }
        }
        Ok(last_use)
    }

    /// The bytes an eviction frees once its outcome is known (0 for another removal).
    pub(super) fn evicted(&self, removal: &Removal) -> u64 {
        let key = executor::key_of(&removal.target);
        lock(&self.disk).evicting.remove(&key).unwrap_or(0)
    }
}

fn format_ratio(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_use_keys_name_their_image_and_are_told_from_first_sightings() {
        let key = last_use_key("sha256:abc", Timestamp(1_700_000_000_123));
        assert_eq!(key, "last-use/sha256:abc/1700000000123");
        assert_eq!(last_use_image(&key), Some("sha256:abc"));
        assert!(is_last_use_key(&key));
        // First sightings (what orphan grace counts from) are another thing.
        for sighting in ["image/anvyl-agent-a:1@sha256:abc", "container/0123"] {
            assert!(!is_last_use_key(sighting));
            assert_eq!(last_use_image(sighting), None);
        }
    }
}
