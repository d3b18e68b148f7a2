//! `stratus operator run`: the controllers, run against the cluster with the pod's service
//! account. The [`database`] controller: `DatabaseService` resources to running databases and
//! back, suspended, parked, woken and moved when their spec asks or when idle ([`server`] holds
//! the SQL this takes); and the autoscaler ([`scaler`]), whose choices the database controller
//! carries out; and the [`backups`] controller, which runs each `BackupSchedule`'s backups as
//! Jobs; and the warm [`pool`] of spare servers new databases claim. Live migration on
//! Kubernetes is still to come (issue #10).
//!
//! It is [kube-rs's `Controller`](https://docs.rs/kube/latest/kube/runtime/struct.Controller.html):
//! a watch of the resources in the operator's namespace, each reconciled on every change and
//! again when its [`database::Plan`] asks; a failure is retried with [`database::backoff`].
//! Replicas elect a leader ([`leader`]); only the leader runs the controllers.

pub mod backups;
pub mod database;
pub mod leader;
pub mod metrics;
pub mod pool;
pub mod scaler;
pub mod server;
pub mod usage;

use crate::objects::Settings;
use crate::runtime::{KubeError, KubeRuntime};
use crate::v1alpha1::{BackupSchedule, DatabaseService};
use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub runtime: KubeRuntime,
    pub settings: Settings,
    pub sizes: database::Sizes,
    /// Publishes Kubernetes Events about the resources.
    pub recorder: Recorder,
    /// SQL in the databases' servers (suspend and resume).
    pub servers: Arc<dyn server::ServerSql>,
    /// What `/metrics` says of this replica.
    pub metrics: Arc<metrics::OperatorMetrics>,
    /// Failures in a row per resource, for the back-off.
    failures: Mutex<HashMap<String, u32>>,
    /// Each database's idle clock: the resource's generation it was set at, and the start of
    /// its idle time ([`database::Seen::last_active`]).
    clocks: Mutex<HashMap<String, (Option<i64>, i64)>>,
    /// The autoscaler's samples and choices ([`scaler`]).
    pub scaling: scaler::Scaling,
    /// The warm pool's sizing ([`pool`]); off (0 and 0) unless set.
    pub pool: stratus_control::pool::PoolConfig,
    /// When databases were created recently: the pool's demand.
    claims: Mutex<std::collections::VecDeque<i64>>,
    /// Wakes the pool's loop after a claim.
    pub(crate) pool_wake: tokio::sync::Notify,
}

impl Context {
    /// `identity`: this replica, named in its Events.
    pub fn new(client: Client, settings: Settings, sizes: database::Sizes, identity: &str) -> Self {
        let reporter = Reporter {
            controller: "stratus-operator".into(),
            instance: Some(identity.into()),
        };
        let runtime = KubeRuntime::new(client.clone(), settings.clone());
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            servers: Arc::new(server::AdminSql {
                runtime: runtime.clone(),
            }),
            metrics: Arc::default(),
            runtime,
            client,
            settings,
            sizes,
            failures: Mutex::default(),
            clocks: Mutex::default(),
            scaling: scaler::Scaling::default(),
            pool: stratus_control::pool::PoolConfig {
                min: 0,
                max: 0,
                presized: 0,
            },
            claims: Mutex::default(),
            pool_wake: tokio::sync::Notify::new(),
        }
    }

    /// The same, with a warm pool of this sizing.
    pub fn with_pool(mut self, pool: stratus_control::pool::PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// Whether databases may take spares (and the pool's loop makes them).
    pub(crate) fn pool_on(&self) -> bool {
        self.pool.min.max(self.pool.max) > 0
    }

    /// A database was created at `now_ms` (from a spare or not): it counts towards demand, and
    /// the pool refills.
    pub(crate) fn pool_demand(&self, now_ms: i64) {
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(now_ms);
        self.pool_wake.notify_one();
    }

    /// Creations in the demand window before `now_ms`.
    pub(crate) fn recent_creates(&self, now_ms: i64) -> usize {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        while claims
            .front()
            .is_some_and(|t| now_ms - *t > stratus_control::pool::DEMAND_WINDOW_MS)
        {
            claims.pop_front();
        }
        claims.len()
    }

    /// The idle clock of `db`, if it was set at this `generation` of its resource.
    pub(crate) fn idle_clock(&self, db: &str, generation: Option<i64>) -> Option<i64> {
        let clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        clocks
            .get(db)
            .filter(|(at, _)| *at == generation)
            .map(|(_, last)| *last)
    }

    pub(crate) fn set_idle_clock(&self, db: &str, generation: Option<i64>, last: Option<i64>) {
        let mut clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        match last {
            Some(last) => clocks.insert(db.to_owned(), (generation, last)),
            None => clocks.remove(db),
        };
    }

    /// The same, with other hands for SQL in the servers (tests script them).
    pub fn with_servers(mut self, servers: Arc<dyn server::ServerSql>) -> Self {
        self.servers = servers;
        self
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
///
/// Leading ends, at the latest, a third of the lease's duration before another replica may take
/// the lease over: the deadline counts from the start of the last renewal that succeeded, every
/// request is bounded by a third of the duration, and the controllers are dropped at once
/// (reconciles under way are cut off) rather than finished.
pub async fn run(
    ctx: Arc<Context>,
    elector: leader::Elector,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Stopped {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    let every = elector.duration / 3;
    let elector = Arc::new(elector);
    // One election request, bounded; the instant it started (what a won lease counts from).
    async fn attempt(
        e: Arc<leader::Elector>,
        bound: std::time::Duration,
    ) -> Result<(bool, tokio::time::Instant), String> {
        let start = tokio::time::Instant::now();
        match tokio::time::timeout(bound, e.try_lead(now())).await {
            Ok(Ok(leads)) => Ok((leads, start)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {bound:?}")),
        }
    }
    // Follow until the lease is ours.
    let mut since = loop {
        if *stop_rx.borrow() {
            return Stopped::Shutdown;
        }
        match attempt(elector.clone(), every).await {
            Ok((true, start)) => break start,
            Ok((false, _)) => {}
            Err(e) => tracing::warn!("leader election: {e}"),
        }
        let mut rx = stop_rx.clone();
        let _ = tokio::time::timeout(every, rx.changed()).await;
    };
    tracing::info!(identity = %elector.identity, "leading");
    let metrics = ctx.metrics.clone();
    metrics.leading.store(true, Ordering::Relaxed);
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let renewer = {
        let elector = elector.clone();
        tokio::spawn(async move {
            loop {
                let valid_until = since + elector.duration - every;
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = tokio::time::sleep_until(valid_until) => break,
                }
                match attempt(elector.clone(), every).await {
                    Ok((true, start)) => since = start,
                    Ok((false, _)) => break,
                    Err(e) => tracing::warn!("lease renewal failed, retrying: {e}"),
                }
                if tokio::time::Instant::now() >= since + elector.duration - every {
                    break;
                }
            }
            tracing::warn!("lost the lease: stopping the controllers");
            let _ = lost_tx.send(());
        })
    };
    let graceful = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let api: Api<DatabaseService> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    // The autoscaler's choices reach their databases' reconciles through this.
    let (scale_tx, scale_rx) = futures::channel::mpsc::unbounded();
    let autoscaler = tokio::spawn(autoscale(ctx.clone(), scale_tx));
    // Run even when the pool is off: it then removes the spares an earlier setting left.
    let warm_pool = tokio::spawn(pool::run(ctx.clone()));
    let databases = Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(graceful())
        .reconcile_on(scale_rx)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(database = %object.name, "reconciled"),
                Err(e) => tracing::warn!("reconcile failed: {e}"),
            }
        });
    // Backups: the schedules, and the Jobs they own (a Job's end reconciles its schedule).
    let schedules: Api<BackupSchedule> =
        Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let backups = Controller::new(schedules, watcher::Config::default());
    // A database about to leave its node (a move, a park) ends its backup under way: its
    // schedules are looked at when it changes.
    let known = backups.store();
    let databases_api: Api<DatabaseService> =
        Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let backups = backups
        .owns(
            jobs,
            watcher::Config::default().labels(crate::backup_job::JOBS_SELECTOR),
        )
        .watches(databases_api, watcher::Config::default(), move |ds| {
            let name = ds.name_any();
            known
                .state()
                .into_iter()
                .filter(|bs| bs.spec.database == name)
                .map(|bs| ObjectRef::from_obj(&*bs))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(graceful())
        .run(reconcile_schedule, schedule_error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(schedule = %object.name, "reconciled"),
                Err(e) => tracing::warn!("reconcile failed: {e}"),
            }
        });
    let controllers = futures::future::join(databases, backups);
    let why = tokio::select! {
        _ = controllers => Stopped::Shutdown,
        _ = lost_rx => Stopped::LostLease,
    };
    metrics.leading.store(false, Ordering::Relaxed);
    metrics.usage.clear();
    renewer.abort();
    autoscaler.abort();
    warm_pool.abort();
    if why == Stopped::Shutdown {
        if let Err(e) = elector.step_down().await {
            tracing::warn!("could not give the lease up (it expires by itself): {e}");
        }
    }
    why
}

/// The autoscaler's loop ([`scaler::round`] every [`scaler::EVERY`]), while this replica leads:
/// each database with a new size is handed to its reconcile.
async fn autoscale(
    ctx: Arc<Context>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<DatabaseService>>,
) {
    let http = reqwest::Client::new();
    let mut every = tokio::time::interval(scaler::EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for db in scaler::round(&ctx.scaling, &http).await {
            let object = ObjectRef::new(&db).within(&ctx.settings.namespace);
            if trigger.unbounded_send(object).is_err() {
                return;
            }
        }
    }
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

async fn reconcile(ds: Arc<DatabaseService>, ctx: Arc<Context>) -> Result<Action, KubeError> {
    let done = database::reconcile(&ds, &ctx).await;
    settle(done, &ds.object_ref(&()), ds.name_any(), &ctx).await
}

async fn reconcile_schedule(
    bs: Arc<BackupSchedule>,
    ctx: Arc<Context>,
) -> Result<Action, KubeError> {
    let done = backups::reconcile(&bs, &ctx).await;
    settle(done, &bs.object_ref(&()), schedule_key(&bs), &ctx).await
}

/// What a reconcile of the object `reference` (its entry `key` in the failure counts) ended in,
/// for the controller: look again when it asked, or let the error policy back off. A failure is
/// what the user sees (`kubectl describe`): a status is written last, so a step that failed
/// before it leaves the old status, and only this Event says why; the recorder folds repeats
/// into one Event with a count.
async fn settle(
    done: Result<Option<std::time::Duration>, KubeError>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    key: String,
    ctx: &Context,
) -> Result<Action, KubeError> {
    match done {
        Ok(requeue) => {
            ctx.metrics.reconciled.fetch_add(1, Ordering::Relaxed);
            ctx.failures().remove(&key);
            Ok(requeue.map_or_else(Action::await_change, Action::requeue))
        }
        Err(e) => {
            ctx.metrics.failed.fetch_add(1, Ordering::Relaxed);
            let event = Event {
                type_: EventType::Warning,
                reason: "ReconcileFailed".into(),
                note: Some(note_of(&e.to_string())),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(pe) = ctx.recorder.publish(&event, reference).await {
                tracing::warn!(object = %key, "event not recorded: {pe}");
            }
            Err(e)
        }
    }
}

/// A status as a merge patch: each of `optional` the status leaves out is sent as `null`, or
/// the API server would keep its old value (a message about a problem long mended).
pub(crate) fn status_merge_patch(
    status: &impl serde::Serialize,
    optional: &[&str],
) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        for key in optional {
            map.entry(*key).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({ "status": v })
}

/// An Event's note is at most 1 KiB.
fn note_of(text: &str) -> String {
    let mut end = text.len().min(1024);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A schedule's entry in the failure counts, apart from a database of the same name.
fn schedule_key(bs: &BackupSchedule) -> String {
    format!("backupschedule/{}", bs.name_any())
}

fn schedule_error_policy(bs: Arc<BackupSchedule>, e: &KubeError, ctx: Arc<Context>) -> Action {
    back_off(schedule_key(&bs), e, &ctx)
}

fn error_policy(ds: Arc<DatabaseService>, e: &KubeError, ctx: Arc<Context>) -> Action {
    back_off(ds.name_any(), e, &ctx)
}

/// The error policy: one more failure in a row for `key`, and the wait [`database::backoff`]
/// gives for that many.
fn back_off(key: String, e: &KubeError, ctx: &Context) -> Action {
    let mut failures = ctx.failures();
    let n = failures.entry(key.clone()).or_default();
    *n += 1;
    tracing::warn!(object = %key, attempt = *n, "{e}");
    Action::requeue(database::backoff(*n))
}
