//! `stratus operator run`: the controllers, run against the cluster with the pod's service
//! account. So far one controller, [`database`]: `DatabaseService` resources to running
//! databases and back. Scaling, suspend and park, backups and migration on Kubernetes are
//! still to come (issue #10).
//!
//! It is [kube-rs's `Controller`](https://docs.rs/kube/latest/kube/runtime/struct.Controller.html):
//! a watch of the resources in the operator's namespace, each reconciled on every change and
//! again when its [`database::Plan`] asks; a failure is retried with [`database::backoff`].

pub mod database;

use crate::objects::Settings;
use crate::runtime::{KubeError, KubeRuntime};
use crate::v1alpha1::DatabaseService;
use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub runtime: KubeRuntime,
    pub settings: Settings,
    pub sizes: database::Sizes,
    /// Failures in a row per resource, for the back-off.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, sizes: database::Sizes) -> Self {
        Self {
            runtime: KubeRuntime::new(client.clone(), settings.clone()),
            client,
            settings,
            sizes,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the controllers until `shutdown` resolves; reconciles under way are finished first.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<DatabaseService> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(database = %object.name, "reconciled"),
                Err(e) => tracing::warn!("reconcile failed: {e}"),
            }
        })
        .await;
}

async fn reconcile(ds: Arc<DatabaseService>, ctx: Arc<Context>) -> Result<Action, KubeError> {
    let requeue = database::reconcile(&ds, &ctx).await?;
    ctx.failures().remove(&ds.name_any());
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

fn error_policy(ds: Arc<DatabaseService>, e: &KubeError, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures();
    let n = failures.entry(ds.name_any()).or_default();
    *n += 1;
    tracing::warn!(database = %ds.name_any(), attempt = *n, "{e}");
    Action::requeue(database::backoff(*n))
}
