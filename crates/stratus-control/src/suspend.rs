//! The `suspended` state: the server keeps running but holds nothing. It is held back from
//! clients, its hot page list is dumped, its sessions are closed (the proxy keeps the clients),
//! its buffer pool shrunk to a floor, its CPU quota cut, and its cgroup frozen where the host
//! allows. Waking it is a thaw, the old size back, and the hot pages reloaded in the background
//! while queries already run
//! (<https://mariadb.com/kb/en/innodb-buffer-pool/#dumping-and-restoring-the-buffer-pool>; for
//! encrypted tables, which the server's reload skips, by [`crate::hydration`]).
//! The lifecycle reconciler ([`crate::reconcile`]) orders these steps; this file holds the two
//! that act inside the server, `empty` and `fill`.

use crate::{ControlError, ControlPlane, Result};
use serde_json::json;
use std::time::{Duration, Instant};
use stratus_core::scu::MIB;
use stratus_core::{DatabaseService, DbState, EventKind, Resources, ServiceName};
use stratus_runtime::Runtime;
use stratus_runtime::admin::ServerAdmin;
use stratus_store::Store;

/// The buffer pool a suspended server keeps.
pub const BUFFER_POOL_FLOOR: u64 = 32 * MIB;
/// The CPU a suspended server keeps where it cannot be frozen.
pub const CPU_FLOOR_MILLIS: u32 = 50;
/// Longest wait for the buffer pool dump to finish.
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

/// What emptying a server found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Emptied {
    /// The server's report on the hot page dump.
    pub hot_pages: String,
    pub sessions_closed: u64,
    pub buffer_pool_before: u64,
    pub buffer_pool_after: u64,
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Suspends an active database. Refused while clients hold state it would lose, unless
    /// forced.
    pub async fn suspend(
        &self,
        db: &str,
        force: bool,
        reason: &str,
    ) -> Result<crate::DatabaseView> {
        let name = ServiceName::parse(db)?;
        let _guard = self.lock(&name).await;
        let mut svc = self.load(&name).await?;
        match svc.state {
            DbState::Suspended => return Ok(self.view(&svc).await),
            DbState::Active if self.runtime.endpoint(&name).is_some() => {}
            other => {
                return Err(ControlError::WrongState(format!(
                    "database {name} is {other}{}; only a running database can be suspended",
                    if other == DbState::Active {
                        " but its server is not running"
                    } else {
                        ""
                    }
                )));
            }
        }
        let activity = self.activity(&name);
        if activity.holds_state() && !force {
            return Err(ControlError::WrongState(format!(
                "database {name} has {} running statement(s), {} open transaction(s) and {} pinned session(s); \
                 suspending now would lose them. Retry when they finish, or force it",
                activity.statements_running, activity.open_transactions, activity.pinned_sessions
            )));
        }
        let begin = Instant::now();
        let done = self.transition(&mut svc, DbState::Suspended).await?;
        let e = done.emptied.unwrap_or_default();
        let frozen = done.frozen.unwrap_or(false);
        // It wakes at its minimum; the autoscaler grows it again if the load asks.
        let size_before = svc.scu;
        svc.scu = svc.spec.min_scu;
        svc.buffer_pool_bytes = self.resources(svc.scu).buffer_pool_bytes;
        self.store.update_service(&svc).await?;
        let ms = begin.elapsed().as_millis() as u64;
        self.event(
            &name,
            EventKind::Suspended,
            &format!(
                "suspended ({reason}) in {ms} ms: {} session(s) closed, buffer pool {} → {} MiB, {}",
                e.sessions_closed,
                e.buffer_pool_before / MIB,
                e.buffer_pool_after / MIB,
                if frozen { "frozen" } else { "CPU at its floor (this host cannot freeze)" }
            ),
            json!({"reason": reason, "suspend_ms": ms, "sessions_closed": e.sessions_closed, "hot_pages_dumped": e.hot_pages,
                   "buffer_pool_before": e.buffer_pool_before, "buffer_pool_after": e.buffer_pool_after, "frozen": frozen,
                   "scu_before": size_before, "wakes_at_scu": svc.scu,
                   "last_statement_ms": activity.last_statement_ms}),
        )
        .await;
        Ok(self.view(&svc).await)
    }

    /// Makes a running server hold nothing (the reconciler's `Empty`): the hot page list
    /// dumped, sessions closed, buffer pool at its floor, CPU quota at its floor (the memory
    /// limit kept: lowering it under a frozen process's charge could fail). Caller holds the
    /// lock.
    pub(crate) async fn empty(&self, svc: &DatabaseService) -> Result<Emptied> {
        let name = svc.name();
        // A refill still running from the last wake has nothing left to fill.
        self.stop_hydration(name);
        let mut conn = self.admin(name).await?;
        let buffer_pool_before = conn.buffer_pool_size().await?;
        // A server emptied already (adopted after a restart of Stratus) keeps the list it
        // dumped when it still had its pages.
        let hot_pages = if buffer_pool_before > BUFFER_POOL_FLOOR {
            if self.cfg.hydrate {
                self.note_hot_indexes(name, &mut conn).await;
            }
            conn.dump_buffer_pool(DUMP_TIMEOUT).await?
        } else {
            "kept from before".to_owned()
        };
        let sessions_closed = conn.close_sessions().await?;
        let (buffer_pool_after, _) = conn.resize_buffer_pool(BUFFER_POOL_FLOOR).await?;
        conn.close().await;
        let memory = self.resources(svc.scu).memory_bytes;
        self.runtime
            .set_limits(name, CPU_FLOOR_MILLIS, memory)
            .await?;
        Ok(Emptied {
            hot_pages,
            sessions_closed,
            buffer_pool_before,
            buffer_pool_after,
        })
    }

    /// Gives an emptied server its size back (the reconciler's `Fill`): limits, buffer pool,
    /// and the hot pages reloading in the background. Caller holds the lock; it is thawed.
    pub(crate) async fn fill(&self, svc: &DatabaseService) -> Result<()> {
        let name = svc.name();
        let to = self.resources(svc.scu);
        // As `empty` left it: CPU and buffer pool at their floors.
        let from = Resources {
            cpu_millis: CPU_FLOOR_MILLIS,
            buffer_pool_bytes: BUFFER_POOL_FLOOR,
            ..to
        };
        let (applied, mut conn) = self.resize(name, from, to).await?;
        if self.cfg.hydrate {
            // What the server reloads itself (unencrypted tablespaces), then what it cannot.
            conn.load_buffer_pool().await?;
            self.start_hydration(name, applied.buffer_pool_actual).await;
        }
        conn.close().await;
        self.record_pool(svc, &applied).await
    }

    /// Holds a database back from clients (`on`) or stops holding it. `since`: when it was
    /// suspended, if that was before now (the catalog's word after a restart of Stratus), which
    /// the park window and memory pressure's longest-suspended-first order count from.
    pub(crate) fn set_suspended(&self, name: &ServiceName, on: bool, since: Option<i64>) {
        let mut set = self.suspended.lock().unwrap_or_else(|p| p.into_inner());
        let mut at = self.suspended_at.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            if set.insert(name.clone()) {
                let now = stratus_core::time::now_ms();
                at.insert(name.clone(), since.map_or(now, |s| s.min(now)));
            }
        } else {
            set.remove(name);
            at.remove(name);
        }
    }

    pub(crate) fn is_suspended(&self, name: &ServiceName) -> bool {
        self.suspended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }
}
