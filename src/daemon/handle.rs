//! The controller as the API sees it: the narrow `api::daemon::Daemon` handle, so that the
//! server depends on what it uses and not on the controller or its engine type.

use futures_util::future::{BoxFuture, FutureExt};

use crate::api::daemon::{Daemon, Scrape, Unavailable};
use crate::api::wire::{CleanupResponse, FailedRemoval, Health, ManifestError, Preview};
use crate::controller::Controller;
use crate::core::inventory::DockerObject;
use crate::core::model::OwnerRef;
use crate::core::plan::Scope;
use crate::docker::Engine;
use crate::store::{Store, StoreError};

impl<E: Engine> Daemon for Controller<E> {
    fn store(&self) -> Result<Store, StoreError> {
        let store = Controller::store(self);
        store.health()?;
        Ok(store.clone())
    }

    fn health(&self) -> Health {
        Controller::health(self)
    }

    fn reconciled_recently(&self) -> bool {
        Controller::reconciled_recently(self)
    }

    fn manifest_errors(&self) -> Vec<ManifestError> {
        Controller::manifest_errors(self)
            .into_iter()
            .map(|(file, error)| ManifestError { file, error })
            .collect()
    }

    fn preview<'a>(&'a self, scope: &'a Scope) -> BoxFuture<'a, Result<Preview, Unavailable>> {
        async move {
            let plan = Controller::preview(self, scope)
                .await
                .map_err(unavailable)?;
            Ok(Preview {
                removals: plan.removals,
                waiting: plan.waiting,
                held: plan.held,
            })
        }
        .boxed()
    }

    fn owned_by<'a>(
        &'a self,
        owner: &'a OwnerRef,
    ) -> BoxFuture<'a, Result<Vec<DockerObject>, Unavailable>> {
        async move { Controller::owned_by(self, owner).await.map_err(unavailable) }.boxed()
    }

    fn clean_up<'a>(
        &'a self,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<CleanupResponse, Unavailable>> {
        async move {
            let (plan, report) = self.pass(scope, false).await.map_err(unavailable)?;
            Ok(CleanupResponse {
                planned: plan.removals,
                removed: report.removed,
                failed: report
                    .failed
                    .into_iter()
                    .map(|(target, error)| FailedRemoval { target, error })
                    .collect(),
            })
        }
        .boxed()
    }

    fn cleanup_delays(&self) -> crate::core::model::CleanupDelays {
        self.settings().cleanup_delays
    }

    fn rules(&self) -> crate::core::ownership::Rules {
        self.settings().rules.clone()
    }

    fn scrape(&self) -> Scrape {
        // Unchanged when the store cannot list them now (reaper_store_up says why).
        if let Ok(hosts) = Controller::store(self).hosts(crate::core::model::Timestamp::now()) {
            let ready = hosts.iter().filter(|h| h.ready).count();
            self.metrics.set_fleet_hosts(ready, hosts.len() - ready);
        }
        Scrape {
            content_type: self.metrics.content_type(),
            body: Controller::scrape(self),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> Unavailable {
    Unavailable(e.to_string())
}
