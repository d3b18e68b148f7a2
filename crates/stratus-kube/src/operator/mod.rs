//! `stratus operator run`: the controllers, run against the cluster with the pod's service
//! account. So far one controller, [`database`]: `DatabaseService` resources to running
//! databases and back. Scaling, suspend and park, backups and migration on Kubernetes are
//! still to come (issue #10).
//!
//! It is [kube-rs's `Controller`](https://docs.rs/kube/latest/kube/runtime/struct.Controller.html):
//! a watch of the resources in the operator's namespace, each reconciled on every change and
//! again when its [`database::Plan`] asks; a failure is retried with [`database::backoff`].
//! Replicas elect a leader ([`leader`]); only the leader runs the controllers.

pub mod database;
pub mod leader;

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

/// Why the operator stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to (SIGTERM); the lease was given up.
    Shutdown,
    /// Another replica leads now, or the lease could not be renewed in time: the controllers
    /// stopped before anyone else could start, and the process should exit (its pod restarts
    /// as a follower).
    LostLease,
}

/// Waits to lead, then runs the controllers until `shutdown` resolves or leadership ends.
pub async fn run(
    ctx: Arc<Context>,
    elector: leader::Elector,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Stopped {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None::<Stopped>);
    let stop_tx = Arc::new(stop_tx);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        on_signal.send_replace(Some(Stopped::Shutdown));
    });
    let every = elector.duration / 3;
    let elector = Arc::new(elector);
    // Follow until the lease is ours.
    loop {
        if stop_rx.borrow().is_some() {
            return Stopped::Shutdown;
        }
        match elector.try_lead(now()).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::warn!("leader election: {e}"),
        }
        let mut rx = stop_rx.clone();
        let _ = tokio::time::timeout(every, rx.changed()).await;
    }
    tracing::info!(identity = %elector.identity, "leading");
    let renewer = {
        let (elector, stop) = (elector.clone(), stop_tx.clone());
        tokio::spawn(async move {
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match elector.try_lead(now()).await {
                    Ok(true) => renewed = tokio::time::Instant::now(),
                    Ok(false) => break,
                    // Two renewals missed: stop while the lease is still ours, before another
                    // replica may take it.
                    Err(e) if renewed.elapsed() >= every * 2 => {
                        tracing::warn!("cannot renew the lease: {e}");
                        break;
                    }
                    Err(e) => tracing::warn!("lease renewal failed, retrying: {e}"),
                }
            }
            stop.send_if_modified(|s| {
                let first = s.is_none();
                s.get_or_insert(Stopped::LostLease);
                first
            });
        })
    };
    let mut rx = stop_rx.clone();
    let stopped = async move {
        let _ = rx.wait_for(Option::is_some).await;
    };
    let api: Api<DatabaseService> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(stopped)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(database = %object.name, "reconciled"),
                Err(e) => tracing::warn!("reconcile failed: {e}"),
            }
        })
        .await;
    renewer.abort();
    let why = stop_rx
        .borrow()
        .as_ref()
        .map_or(Stopped::Shutdown, |s| match s {
            Stopped::Shutdown => Stopped::Shutdown,
            Stopped::LostLease => Stopped::LostLease,
        });
    if why == Stopped::Shutdown {
        if let Err(e) = elector.step_down().await {
            tracing::warn!("could not give the lease up (it expires by itself): {e}");
        }
    }
    why
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
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
