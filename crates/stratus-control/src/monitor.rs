//! The resource monitor and the controllers it feeds: every 200 ms it samples each running
//! database's CPU time from cgroup accounting into its sliding window; the scaler
//! ([`crate::scaler`]) decides sizes from it; the lifecycle suspends a database idle for its
//! window (no statement running, no open transaction, no pinned session: idle connections do not
//! count) and parks one suspended for its park window, or sooner when its node runs short of
//! memory ([`crate::pressure`]). Every change is an event that states the
//! measurements behind it.

use crate::ControlPlane;
use crate::scaler::{self, Bounds, Decision, Sample, Window};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratus_core::time::now_ms;
use stratus_core::{DatabaseService, DbState, EventKind, ScalingPolicy, ServiceName};
use stratus_runtime::Runtime;
use stratus_runtime::admin::ServerAdmin;
use stratus_store::Store;

/// The monitor's tick; `ScalingPolicy::sample_interval_ms` by default.
pub const TICK: Duration = Duration::from_millis(200);
/// How often each active database's buffer-pool hit ratio is read from its server, in ticks
/// (a login and one query, so far less often than CPU).
const HIT_RATIO_TICKS: u32 = 25;
/// How often policies are re-read from the catalog, in ticks.
const REFRESH_TICKS: u32 = 25;
/// How often the nodes' memory is looked at for parking under pressure (`pressure`), in ticks.
const PRESSURE_TICKS: u32 = 25;

/// A look at memory pressure under way; over when dropped, however the look ends.
struct Relieving(Arc<AtomicBool>);

impl Drop for Relieving {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What the monitor keeps per database between ticks.
#[derive(Default)]
struct Tracked {
    window: Window,
    last_change_ms: Option<i64>,
    /// The size the window was measured at (the catalog's, as of the last tick).
    scu: Option<u32>,
    /// When it last became active (idle time counts from here if no statement ran since).
    active_since_ms: i64,
    suspended_since_ms: Option<i64>,
    policy: ScalingPolicy,
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Runs the monitor until the process ends, acting on the current runtime.
    pub async fn monitor(self: Arc<Self>) {
        let here = tokio::runtime::Handle::current();
        self.monitor_acting_on(here).await
    }

    /// [`Self::monitor`], with what it decides (suspend, park, resize) run on `actions`: the
    /// monitor may have a thread of its own, and an action can hold a thread for seconds (a
    /// freeze waits for the cgroup), which would stop its ticks.
    pub async fn monitor_acting_on(self: Arc<Self>, actions: tokio::runtime::Handle) {
        let mut tracked: HashMap<ServiceName, Tracked> = HashMap::new();
        let busy: Arc<Mutex<HashSet<ServiceName>>> = Arc::default();
        let relieving = Arc::new(AtomicBool::new(false));
        let mut services: Vec<DatabaseService> = Vec::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut n = 0u32;
        loop {
            tick.tick().await;
            // Sizes and states every tick (one small catalog read), so a new database is watched
            // from its first 200 ms; policies, which change rarely, every few seconds.
            if let Ok(all) = self.store.services().await {
                services = all;
            }
            tracked.retain(|k, _| services.iter().any(|s| s.name() == k));
            self.down
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|k, _| tracked.contains_key(k));
            // (a sample still running when its database was deleted writes its figures back)
            self.measured
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|k, _| tracked.contains_key(k));
            for svc in &services {
                let fresh = !tracked.contains_key(svc.name());
                if fresh || n % REFRESH_TICKS == 0 {
                    let policy = self
                        .store
                        .scaling_policy(svc.name())
                        .await
                        .unwrap_or_default();
                    tracked
                        .entry(svc.name().clone())
                        .or_insert_with(|| Tracked {
                            active_since_ms: now_ms(),
                            ..Tracked::default()
                        })
                        .policy = policy;
                }
            }
            if n % HIT_RATIO_TICKS == 0 {
                for svc in services
                    .iter()
                    .filter(|s| s.state == DbState::Active && !self.is_suspended(s.name()))
                {
                    let (me, svc) = (self.clone(), svc.clone());
                    tokio::spawn(async move { me.sample_hit_ratio(&svc).await });
                }
            }
            if n % PRESSURE_TICKS == 0 && !relieving.swap(true, Ordering::AcqRel) {
                let (me, relieving) = (self.clone(), Relieving(relieving.clone()));
                actions.spawn(async move {
                    if let Err(e) = me.relieve_memory_pressure().await {
                        tracing::debug!("memory pressure not looked at: {e}");
                    }
                    drop(relieving);
                });
            }
            n = n.wrapping_add(1);
            for svc in &services {
                self.note_down(svc).await;
            }
            let now = now_ms();
            for svc in &services {
                let name = svc.name();
                let Some(t) = tracked.get_mut(name) else {
                    continue;
                };
                if busy
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(name)
                {
                    continue;
                }
                let action = self.observe_one(svc, t, now);
                if let Some(action) = action {
                    busy.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone());
                    if matches!(action, Action::Resize { .. }) {
                        t.last_change_ms = Some(now);
                        t.window.clear();
                    }
                    let (me, busy, name) = (self.clone(), busy.clone(), name.clone());
                    actions.spawn(async move {
                        me.act(&name, action).await;
                        busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                    });
                }
            }
        }
    }

    /// One database's tick: sample, then decide.
    fn observe_one(&self, svc: &DatabaseService, t: &mut Tracked, now: i64) -> Option<Action> {
        let name = svc.name();
        // A size the monitor did not set (by hand, or a wake or a move at another size) is a
        // change like its own: the cooldown and a whole down-window count from it, and samples
        // taken at the old size are dropped. Otherwise a size set by hand on a database that had
        // been idle for a down-window would be undone at the next tick.
        if t.scu.replace(svc.scu).is_some_and(|old| old != svc.scu) {
            t.last_change_ms = Some(now);
            t.window.clear();
        }
        // The state the monitor acts on is the live one (the catalog copy is refreshed slowly).
        let suspended = self.is_suspended(name);
        if suspended {
            let since = *t.suspended_since_ms.get_or_insert(now);
            t.window.clear();
            return park_due(now - since, &t.policy).then_some(Action::Park {
                suspended_ms: now - since,
            });
        }
        if t.suspended_since_ms.take().is_some() {
            t.active_since_ms = now;
        }
        if self.runtime.endpoint(name).is_none()
            || !matches!(svc.state, DbState::Active | DbState::Suspended)
        {
            t.window.clear();
            t.active_since_ms = now;
            return None;
        }
        if self.is_hydrating(name) {
            // Its CPU is Stratus's refill at a burst, not the tenant's load.
            t.window.clear();
        } else if let Some(u) = self.runtime.usage(name) {
            t.window.push(
                Sample {
                    at_ms: now,
                    cpu_ns: u.cpu_ns,
                },
                t.policy.scale_down_window_ms as i64,
            );
            self.record_measurement(name, t.window.usage_millis(1_000), u.memory_bytes);
        }
        let activity = self.activity(name);
        let idle_from = activity.last_statement_ms.max(t.active_since_ms);
        let busy = activity.holds_state() || activity.unread_user_variables > 0;
        if suspend_due(now - idle_from, busy, &t.policy) {
            return Some(Action::Suspend {
                idle_ms: now - idle_from,
            });
        }
        let bounds = Bounds {
            min_scu: svc.spec.min_scu,
            max_scu: svc.spec.max_scu,
            cpu_millis_per_scu: self.cfg.scu.cpu_millis,
        };
        match scaler::decide(&t.window, now, svc.scu, bounds, &t.policy, t.last_change_ms) {
            Decision::Hold => None,
            Decision::Resize {
                to,
                usage_pct,
                window_ms,
            } => Some(Action::Resize {
                from: svc.scu,
                to,
                usage_pct,
                window_ms,
                decided_ms: now,
            }),
        }
    }

    async fn act(&self, name: &ServiceName, action: Action) {
        let result = match action {
            Action::Resize {
                from,
                to,
                usage_pct,
                window_ms,
                decided_ms,
            } => {
                self.autoscale(name, from, to, usage_pct, window_ms, decided_ms)
                    .await
            }
            Action::Suspend { idle_ms } => {
                let why = format!("idle for {} s", idle_ms / 1000);
                self.suspend(name.as_str(), false, &why).await.map(drop)
            }
            Action::Park { suspended_ms } => {
                let why = format!("after {} min suspended", suspended_ms / 60_000);
                self.park_because(name.as_str(), false, &why, true)
                    .await
                    .map(drop)
            }
        };
        if let Err(e) = result {
            tracing::debug!(db = %name, "monitor action not taken: {e}");
        }
    }

    /// Applies an autoscaler decision as any resize is applied ([`crate::sizing`]: growing, the
    /// quota the load waits for comes first), recording the measurement behind it and what the
    /// server made of the new buffer pool.
    async fn autoscale(
        &self,
        name: &ServiceName,
        decided_at: u32,
        to: u32,
        usage_pct: f64,
        window_ms: i64,
        decided_ms: i64,
    ) -> crate::Result<()> {
        let _guard = self.lock(name).await;
        let mut svc = self.load(name).await?;
        // A decision made at another size (someone resized it meanwhile) is about a load at
        // that size: stale, not applied.
        if svc.state != DbState::Active
            || self.is_suspended(name)
            || svc.scu == to
            || svc.scu != decided_at
        {
            return Ok(());
        }
        let (from_scu, from, target) = (svc.scu, self.resources(svc.scu), self.resources(to));
        let grow = to > from_scu;
        let applied = self.apply_size(name, from, target).await?;
        svc.scu = to;
        svc.buffer_pool_bytes = applied.buffer_pool_actual;
        self.store.update_service(&svc).await?;
        let direction = if grow { "up" } else { "down" };
        let applied_ms = now_ms() - decided_ms;
        self.event(
            name,
            EventKind::Scaled,
            &format!(
                "autoscaled {direction} {from_scu} → {to} SCU: CPU at {usage_pct:.0} % of {} millicores over the last {:.1} s{}",
                from.cpu_millis,
                window_ms as f64 / 1000.0,
                if applied.buffer_pool_actual == applied.buffer_pool_requested {
                    String::new()
                } else {
                    format!(
                        "; buffer pool {} bytes instead of the {} asked for",
                        applied.buffer_pool_actual, applied.buffer_pool_requested
                    )
                }
            ),
            json!({"from_scu": from_scu, "to_scu": to, "usage_pct": usage_pct, "window_ms": window_ms,
                   "allocated_millis": from.cpu_millis, "cpu_millis": target.cpu_millis, "memory_bytes": target.memory_bytes,
                   "applied": applied, "applied_ms": applied_ms, "reason": "autoscaler"}),
        )
        .await;
        Ok(())
    }
}

/// Whether a database that ran no statement for `idle_ms` should be suspended: not while it
/// is `busy` (a statement running, a transaction open, a pinned session, user variables the
/// proxy has not read yet). Pure; the fleet simulator runs it too.
pub fn suspend_due(idle_ms: i64, busy: bool, p: &ScalingPolicy) -> bool {
    !busy && idle_ms >= p.idle_to_suspend_ms as i64
}

/// Whether a database suspended for `suspended_ms` should be parked. Pure.
pub fn park_due(suspended_ms: i64, p: &ScalingPolicy) -> bool {
    suspended_ms >= p.suspend_to_park_ms as i64
}

/// The monitor's latest figures for one database, shown by the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Measured {
    /// CPU use over the last second, in millicores.
    pub cpu_millis: Option<f64>,
    pub memory_bytes: u64,
    /// Buffer-pool hit ratio between the last two samples (0..=1).
    pub buffer_pool_hit_ratio: Option<f64>,
    /// `Innodb_buffer_pool_read_requests` and `Innodb_buffer_pool_reads` at the last sample.
    #[serde(skip)]
    counters: Option<(u64, u64)>,
    /// The statements its clients had run through the proxy at the last sample.
    #[serde(skip)]
    statements: Option<u64>,
    /// What its buffer pool could come to hold of its files, at the last sample: more than
    /// their bytes on disk for compressed tables
    /// ([`stratus_runtime::admin::ServerAdmin::pool_fillable_bytes`]).
    #[serde(skip)]
    pub(crate) pool_fillable_bytes: Option<u64>,
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Notes whether `svc` wants a running server and has none (a crash being restarted, a
    /// server that cannot start), for `/metrics` and the usage meter: when that changes, a new
    /// usage interval starts, so such time is not billed as active.
    async fn note_down(&self, svc: &DatabaseService) {
        let wants = matches!(
            svc.state,
            DbState::Active | DbState::Suspended | DbState::Migrating
        );
        let down = wants && self.runtime.endpoint(svc.name()).is_none();
        let changed = {
            let mut seen = self.down.lock().unwrap_or_else(|p| p.into_inner());
            match seen.get_mut(svc.name()) {
                Some(was) if *was == down => false,
                Some(was) => {
                    *was = down;
                    true
                }
                None => {
                    seen.insert(svc.name().clone(), down);
                    true
                }
            }
        };
        if changed {
            if let Err(e) = self.store.usage_stopped(svc.name(), down).await {
                tracing::warn!(db = %svc.name(), "cannot record usage: {e}");
            }
        }
    }

    /// Whether the database's state wants a running server and none runs (as of the monitor's
    /// last look).
    pub fn is_down(&self, name: &ServiceName) -> bool {
        self.down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
            .unwrap_or(false)
    }

    /// Keeps the latest figures. A window too short to measure (for 0.8 s after each resize,
    /// which starts a new one) keeps the last CPU figure on show rather than none.
    fn record_measurement(&self, name: &ServiceName, cpu_millis: Option<f64>, memory_bytes: u64) {
        let mut all = self.measured.lock().unwrap_or_else(|p| p.into_inner());
        let m = all.entry(name.clone()).or_default();
        if cpu_millis.is_some() {
            m.cpu_millis = cpu_millis;
        }
        m.memory_bytes = memory_bytes;
    }

    pub fn measured(&self, name: &ServiceName) -> Option<Measured> {
        self.measured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    /// Reads the buffer pool's request and miss counters and updates the hit ratio.
    /// Reads the counters behind the hit ratio with a login of its own, unless no statement
    /// ran since the last read and none is running: a database idle between two reads has the
    /// same ratio (work that bypasses the proxy is not seen), and a
    /// login per idle database every few seconds was most of the monitor's cost with many of
    /// them (`bench/density`).
    async fn sample_hit_ratio(&self, svc: &DatabaseService) {
        let name = svc.name();
        let activity = self.activity(name);
        let statements = activity.statements_total;
        // (A statement still running counts: a long one is finished only when it ends.)
        if activity.statements_running == 0
            && self
                .measured
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .is_some_and(|m| m.counters.is_some() && m.statements == Some(statements))
        {
            return;
        }
        let Ok(mut conn) = self.admin_unlocked(name).await else {
            return;
        };
        let counters = conn.buffer_pool_counters().await;
        let fillable = conn.pool_fillable_bytes().await;
        conn.close().await;
        let Ok(now) = counters else { return };
        let mut all = self.measured.lock().unwrap_or_else(|p| p.into_inner());
        let m = all.entry(name.clone()).or_default();
        if let Ok(bytes) = fillable {
            m.pool_fillable_bytes = Some(bytes);
        }
        if let Some((requests, reads)) = m.counters {
            let asked = now.0.saturating_sub(requests);
            if asked > 0 {
                m.buffer_pool_hit_ratio =
                    Some(1.0 - now.1.saturating_sub(reads) as f64 / asked as f64);
            }
        }
        m.counters = Some(now);
        m.statements = Some(statements);
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Resize {
        /// The size the decision was made at.
        from: u32,
        to: u32,
        usage_pct: f64,
        window_ms: i64,
        decided_ms: i64,
    },
    Suspend {
        idle_ms: i64,
    },
    Park {
        suspended_ms: i64,
    },
}
