//! Reading the world for a pass: the records, the Docker objects (with when reaper first saw
//! each), the paths worth probing; and the desired state the re-check before a delete goes by.

use super::*;

/// The desired state at one store generation, reduced to what the re-check before a delete
/// needs: who claims an object, and until when each owner is live.
pub(super) struct Desired {
    pub(super) generation: u64,
    pub(super) rules: Rules,
    pub(super) matchers: Matchers,
    pub(super) live: LiveOwners,
}

impl<E: Engine> Controller<E> {
    /// Reads the desired and the actual state. Any error makes the whole view untrustworthy.
    /// Objects seen for the first time are noted as seen at `now`, the instant the pass plans
    /// for, so that a grace of zero means "this pass".
    pub(super) async fn observe(
        &self,
        scope: &Scope,
        now: Timestamp,
    ) -> Result<(Vec<Session>, Vec<Agent>, Actual), Error> {
        let store = self.store();
        // These reads decide deletions: a shared store must answer with every write so far.
        store.sync().await?;
        let generation = store.generation();
        let sessions = store.sessions()?;
        let agents = store.agents()?;
        // At start and after every reconnect: the engine may have been upgraded meanwhile.
        if !self.health().docker_up {
            let engine = self.engine.version().await?;
            self.engine_known(engine);
        }
        let settings = self.settings();
        let desired = self.desired_at(generation, &sessions, &agents);
        let matchers = &desired.matchers;
        let rules = &settings.rules;
        let selectors = Selectors::new(
            [SESSION_LABEL.to_string(), AGENT_LABEL.to_string()]
                .into_iter()
                .chain(rules.session_label_keys.iter().cloned())
                .chain(matchers.label_keys().map(String::from)),
            std::iter::once(rules.agent_name_prefix.clone())
                .chain(matchers.name_prefixes().map(String::from)),
        );
        let objects = self.engine.list(&selectors).await?;
        *lock(&self.listed_ours) = objects
            .iter()
            .filter(|o| matches!(o.kind, ResourceKind::Network | ResourceKind::Volume))
            .filter(|o| ownership::is_ours(o, rules, matchers))
            .map(|o| (o.kind, o.id.clone()))
            .collect();
        let first_seen = self.first_seen(&objects, now).await?;
        let candidates = plan::paths_to_probe(
            &sessions,
            &agents,
            scope,
            Timestamp::now(),
            self.restarted_at,
            settings.cleanup_delays,
        );
        let root = settings.paths_root.clone();
        let paths = tokio::task::spawn_blocking(move || {
            let mut found = std::collections::BTreeSet::new();
            for p in candidates {
                match paths::exists_below(&root, &p) {
                    Ok(true) => {
                        found.insert(p);
                    }
                    Ok(false) => {}
                    // The root itself is unreadable: the whole view is in doubt.
                    Err(e @ paths::PathError::Root { .. }) => {
                        return Err(Error::Paths(e.to_string()))
                    }
                    // One path is odd (e.g. a symlink on the way): plan it, so its removal is
                    // refused and reported on its owner, without stopping everyone's cleanup.
                    Err(_) => {
                        found.insert(p);
                    }
                }
            }
            Ok::<_, Error>(found)
        })
        .await
        .map_err(|e| Error::Paths(e.to_string()))??;
        Ok((
            sessions,
            agents,
            Actual {
                objects,
                paths,
                first_seen,
            },
        ))
    }

    /// When reaper first saw each listed object: what the store kept, plus `now` for the new
    /// ones, which are written to the store (durable with its next flush). An unreadable
    /// store fails the pass, as for records; a failed write does not. Sightings of
    /// objects no longer listed are forgotten: should one come back, its grace starts again,
    /// which only ever delays a removal.
    pub(super) async fn first_seen(
        &self,
        objects: &[DockerObject],
        now: Timestamp,
    ) -> Result<BTreeMap<String, Timestamp>, StoreError> {
        let store = self.store();
        let mut known = store.sightings()?;
        let listed: BTreeSet<String> = objects.iter().map(DockerObject::sighting_key).collect();
        let new: BTreeMap<String, Timestamp> = listed
            .iter()
            .filter(|k| !known.contains_key(*k))
            .map(|k| (k.clone(), now))
            .collect();
        // Last uses of images are kept beside first sightings; `disk` forgets those.
        known.retain(|k, _| !disk::is_last_use_key(k));
        let gone: Vec<String> = known
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        // A sighting that cannot be kept only makes a grace start later (the next pass sees
        // the object "first" again): no reason to stop this pass's other removals.
        if let Err(e) = self.note_store(store.note_sightings(new.clone(), gone).await) {
            warn!(error = %e, "Could not keep first sightings; the grace of new objects starts again next pass.");
        }
        known.retain(|k, _| listed.contains(k));
        known.extend(new);
        Ok(known)
    }

    /// The desired state for the re-check before a delete, read again only if the store
    /// changed since the last pass. `None` (do not delete) when the store cannot be read.
    pub(super) fn desired(&self) -> Option<Arc<Desired>> {
        let store = self.store();
        // Held while reading, so that concurrent deletes read the store once between them.
        let mut cache = lock(&self.desired);
        let generation = store.generation();
        if let Some(d) = cache.as_ref().filter(|d| d.generation == generation) {
            return Some(d.clone());
        }
        let sessions = store.sessions().ok()?;
        let agents = store.agents().ok()?;
        Some(self.build_desired(&mut cache, generation, &sessions, &agents))
    }

    /// The desired state at `generation`, from records read at (or after) it.
    pub(super) fn desired_at(
        &self,
        generation: u64,
        sessions: &[Session],
        agents: &[Agent],
    ) -> Arc<Desired> {
        let mut cache = lock(&self.desired);
        match cache.as_ref().filter(|d| d.generation == generation) {
            Some(d) => d.clone(),
            None => self.build_desired(&mut cache, generation, sessions, agents),
        }
    }

    pub(super) fn build_desired(
        &self,
        cache: &mut Option<Arc<Desired>>,
        generation: u64,
        sessions: &[Session],
        agents: &[Agent],
    ) -> Arc<Desired> {
        let rules = self.settings().rules;
        let now = Timestamp::now();
        let d = Arc::new(Desired {
            generation,
            matchers: Matchers::new(sessions, agents, &rules),
            rules,
            live: LiveOwners::new(
                sessions,
                agents,
                now,
                self.restarted_at,
                self.settings().cleanup_delays,
            ),
        });
        *cache = Some(d.clone());
        d
    }
}
