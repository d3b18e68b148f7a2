//! The Stratus control plane: the controllers of the brief, each a loop or an operation over
//! desired state (the [`Store`]) and observed state (the [`Runtime`]).
//!
//! * [`lifecycle`]: create, park, resume, delete, and recovery after Stratus itself restarts.
//! * [`sizing`]: applying a size in the safe order (cgroup before buffer pool when growing,
//!   buffer pool before cgroup when shrinking) and recording what the server really did.
//! * [`accounts`]: the SQL that creates a service's schema and users.
//! * [`backup`]: backups, verified and kept beside their record, and restores from them.
//! * [`schedule`]: the backup controller, which runs each database's schedule and retention.
//! * [`reconcile`]: the level-triggered reconciler that brings each database's server to what
//!   the catalog says (after a restart of Stratus, a crash, a missed notice), with back-off.
//! * [`supervisor`]: hears servers that exit on their own and hands them to the reconciler.
//!
//! Operations on one database are serialised by a per-database lock, so a park never races a
//! scale or a crash restart.

pub mod accounts;
pub mod backup;
pub mod branch;
pub mod copy;
mod error;
pub mod gateway;
pub mod history;
pub mod hydration;
pub mod lifecycle;
pub mod migrate;
pub mod monitor;
pub mod nodes;
pub mod placement;
pub mod pool;
pub mod pressure;
pub mod reconcile;
mod recovered;
pub mod scaler;
pub mod schedule;
pub mod sizing;
pub mod storage;
pub mod supervisor;
pub mod suspend;
pub mod view;

pub use error::{ControlError, Result};
pub use view::{CreatedDatabase, CreatedUser, DatabaseView, UserView};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stratus_core::{DatabaseService, EventKind, Resources, ScuSize, ServiceName};
use stratus_runtime::{InstanceSpec, Runtime};
use stratus_store::Store;

/// Installation-wide settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub scu: ScuSize,
    /// How long a server gets to shut down cleanly before it is killed.
    pub stop_grace: Duration,
    /// Where clients connect: the proxy. Servers themselves accept nobody but Stratus.
    pub endpoint: (String, u16),
    /// Longest wait between restarts of a server that keeps crashing.
    pub restart_backoff_max: Duration,
    /// The scaling policy new databases get.
    pub default_policy: stratus_core::ScalingPolicy,
    /// The warm pool of spare servers.
    pub pool: pool::PoolConfig,
    /// How often every database is reconciled without a trigger (`reconcile::run_resync`).
    pub resync_every: Duration,
    /// Reload the hot pages after a suspend (off only to measure what it is worth).
    pub hydrate: bool,
    /// Where backups are kept (`backup`).
    pub backup_dir: std::path::PathBuf,
    /// Node memory watermarks for placement and rebalancing (`placement`).
    pub watermarks: placement::Watermarks,
    /// How often rebalancing looks at the nodes, and how long a moved database stays put.
    pub rebalance_every: Duration,
    pub move_cooldown: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            scu: ScuSize::default(),
            stop_grace: Duration::from_secs(60),
            endpoint: ("127.0.0.1".to_owned(), 6033),
            restart_backoff_max: Duration::from_secs(30),
            default_policy: stratus_core::ScalingPolicy::default(),
            pool: pool::PoolConfig::default(),
            resync_every: Duration::from_secs(30),
            hydrate: true,
            backup_dir: "backups".into(),
            watermarks: placement::Watermarks::default(),
            rebalance_every: Duration::from_secs(10),
            move_cooldown: Duration::from_secs(600),
        }
    }
}

/// Reports a database's client activity (the proxy's figures).
pub type ActivitySource = Arc<dyn Fn(&str) -> stratus_core::ActivityView + Send + Sync>;

pub struct ControlPlane<S: Store, R: Runtime> {
    activity: std::sync::OnceLock<ActivitySource>,
    /// Databases suspended right now: their servers run but must not be handed to clients
    /// until woken. Kept in memory because the proxy asks on every new connection.
    suspended: Mutex<std::collections::HashSet<ServiceName>>,
    /// When each of them was suspended (ms since the epoch): parking under memory pressure
    /// takes the longest-suspended first (`pressure`).
    suspended_at: Mutex<HashMap<ServiceName, i64>>,
    /// Databases whose server is starting or still rolling back the transactions it recovered:
    /// not handed to clients yet (`recovered`).
    settling: Mutex<std::collections::HashSet<ServiceName>>,
    /// Databases at their storage limit where no volume enforces it, with the limit: the proxy
    /// refuses their statements that add data (`storage`).
    storage_full: Mutex<HashMap<ServiceName, u64>>,
    /// Databases the error policy is retrying, or gave up on (left to a person): the resync
    /// leaves them alone, so it neither doubles the retries nor undoes the giving up.
    retrying: Mutex<HashMap<ServiceName, reconcile::Retrying>>,
    /// Whether `storage_full` holds any database, readable without its lock.
    any_storage_full: std::sync::atomic::AtomicBool,
    pool: Mutex<pool::PoolState>,
    /// The monitor's latest figures per database.
    measured: Mutex<HashMap<ServiceName, monitor::Measured>>,
    /// Wakes the pool's refiller when a spare is taken.
    pool_wake: tokio::sync::Notify,
    /// Signals that a spare finished starting (kept, or removed while shutting down).
    pool_settled: tokio::sync::Notify,
    store: S,
    runtime: R,
    cfg: ControlConfig,
    locks: Mutex<HashMap<ServiceName, Arc<tokio::sync::Mutex<()>>>>,
    started: Instant,
    /// Databases being moved to another node (`migrate`): one move at a time each.
    migrating: Mutex<HashMap<ServiceName, migrate::MoveProgress>>,
    /// The proxy's holds, for cut-overs (`migrate::Gate`).
    gate: std::sync::OnceLock<Arc<dyn migrate::Gate>>,
    /// When each database last moved (ms since the epoch): rebalancing's cooldown.
    moved_at: Mutex<HashMap<ServiceName, i64>>,
    /// Unexpected exits of each database's server since Stratus started (a Prometheus counter:
    /// it starts again from 0 with Stratus, which `rate()` and `increase()` allow for).
    crashes: Mutex<HashMap<ServiceName, u64>>,
    /// The last hour of each database's samples (`history`).
    history: history::History,
    /// Per database, whether its state wants a running server and none runs, as the monitor
    /// last saw it (`stratus_database_down`, and the usage meter's stopped time).
    down: Mutex<HashMap<ServiceName, bool>>,
    /// Databases whose pool is being refilled after a wake (`hydration`), with the refill's
    /// number and the handle that stops it.
    hydrating: Mutex<HashMap<ServiceName, hydration::Refill>>,
    /// Numbers the refills, so one that ends clears only its own entry.
    refills: std::sync::atomic::AtomicU64,
    /// Itself, for the work it starts in the background from a `&self` method.
    me: std::sync::Weak<Self>,
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    pub fn new(store: S, runtime: R, cfg: ControlConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            activity: std::sync::OnceLock::new(),
            suspended: Mutex::new(std::collections::HashSet::new()),
            suspended_at: Mutex::new(HashMap::new()),
            settling: Mutex::new(std::collections::HashSet::new()),
            storage_full: Mutex::new(HashMap::new()),
            retrying: Mutex::new(HashMap::new()),
            any_storage_full: std::sync::atomic::AtomicBool::new(false),
            pool: Mutex::new(pool::PoolState::default()),
            measured: Mutex::new(HashMap::new()),
            pool_wake: tokio::sync::Notify::new(),
            pool_settled: tokio::sync::Notify::new(),
            store,
            runtime,
            cfg,
            locks: Mutex::new(HashMap::new()),
            started: Instant::now(),
            migrating: Mutex::new(HashMap::new()),
            gate: std::sync::OnceLock::new(),
            moved_at: Mutex::new(HashMap::new()),
            crashes: Mutex::new(HashMap::new()),
            history: history::History::default(),
            down: Mutex::new(HashMap::new()),
            hydrating: Mutex::new(HashMap::new()),
            refills: std::sync::atomic::AtomicU64::new(0),
            me: me.clone(),
        })
    }

    /// Connects the data plane's activity figures (set once, after the proxy starts).
    pub fn set_activity_source(&self, source: ActivitySource) {
        let _ = self.activity.set(source);
    }

    pub fn activity(&self, name: &ServiceName) -> stratus_core::ActivityView {
        self.activity
            .get()
            .map(|f| f(name.as_str()))
            .unwrap_or_default()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    pub fn config(&self) -> &ControlConfig {
        &self.cfg
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A controller's tick: a missed one is not made up in a burst.
    fn ticker(period: Duration) -> tokio::time::Interval {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    }

    /// The lock that serialises every operation on one database.
    async fn lock(&self, name: &ServiceName) -> tokio::sync::OwnedMutexGuard<()> {
        self.db_mutex(name).lock_owned().await
    }

    /// The database's lock if no one holds it now.
    fn try_lock(&self, name: &ServiceName) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.db_mutex(name).try_lock_owned().ok()
    }

    fn db_mutex(&self, name: &ServiceName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(name.clone()).or_default().clone()
    }

    async fn load(&self, name: &ServiceName) -> Result<DatabaseService> {
        self.store
            .service(name)
            .await?
            .ok_or_else(|| ControlError::NotFound(format!("database {name}")))
    }

    fn resources(&self, scu: u32) -> Resources {
        self.cfg.scu.resources(scu)
    }

    /// A database about to be made: `provisioning`, at its minimum size.
    fn new_service(
        &self,
        spec: stratus_core::ServiceSpec,
        require_tls: bool,
        default_schema: Option<String>,
    ) -> DatabaseService {
        let now = stratus_core::time::now_ms();
        DatabaseService {
            scu: spec.min_scu,
            buffer_pool_bytes: self.resources(spec.min_scu).buffer_pool_bytes,
            spec,
            state: stratus_core::DbState::Provisioning,
            require_tls,
            default_schema,
            node: None,
            log_epoch_ms: None,
            created_at_ms: now,
            updated_at_ms: now,
        }
    }

    fn instance_spec(&self, svc: &DatabaseService) -> InstanceSpec {
        InstanceSpec {
            name: svc.spec.name.clone(),
            resources: self.resources(svc.scu),
            max_resources: self.resources(svc.spec.max_scu),
            storage_bytes: storage::first_size(svc.spec.storage_gb),
            node: self.node_of(svc),
        }
    }

    /// Where clients connect.
    fn endpoint(&self) -> (String, u16) {
        self.cfg.endpoint.clone()
    }

    /// The user name a client logs in with: `<service>.<user>`, which the proxy routes on.
    fn client_user(&self, service: &ServiceName, user: &stratus_core::UserName) -> String {
        format!("{service}.{user}")
    }

    /// Replaces the master key of encryption at rest (every database's key wrapped anew) and
    /// records it. Returns how many database keys were wrapped.
    pub async fn rotate_master_key(&self) -> Result<usize> {
        let n = self.runtime.rotate_master_key().await?;
        let message =
            format!("master key of encryption at rest replaced; {n} database key(s) wrapped again");
        tracing::info!("{message}");
        self.store
            .record_event(
                "",
                EventKind::KeyRotated,
                &message,
                serde_json::json!({"wrapped": n}),
            )
            .await?;
        Ok(n)
    }

    /// Records what the proxy did for a client session whose server was lost.
    pub async fn failover_event(&self, db: &str, message: &str, data: serde_json::Value) {
        if let Ok(name) = ServiceName::parse(db) {
            self.event(&name, EventKind::Failover, message, data).await;
        }
    }

    /// Records an event; a failure to record is logged, never fatal to the operation itself.
    async fn event(
        &self,
        db: &ServiceName,
        kind: EventKind,
        message: &str,
        data: serde_json::Value,
    ) {
        tracing::info!(db = %db, kind = kind.as_str(), "{message}");
        if let Err(e) = self
            .store
            .record_event(db.as_str(), kind, message, data)
            .await
        {
            tracing::error!(db = %db, "cannot record event: {e}");
        }
    }
}
