//! The `suspended` state: the server keeps running but holds nothing. Its hot page list is
//! dumped, its sessions are closed (the proxy keeps the clients), its buffer pool shrunk to a
//! floor, its CPU quota cut, and its cgroup frozen where the host allows. Waking it is a thaw,
//! the old size back, and the hot pages reloaded in the background while queries already run
//! (<https://mariadb.com/kb/en/innodb-buffer-pool/#dumping-and-restoring-the-buffer-pool>).

use crate::{ControlError, ControlPlane, Result};
use serde_json::json;
use std::time::{Duration, Instant};
use stratus_core::scu::MIB;
use stratus_core::{DatabaseService, DbState, EventKind, ServiceName};
use stratus_runtime::Runtime;
use stratus_runtime::admin::{AdminConn, quote_str};
use stratus_store::Store;

/// The buffer pool a suspended server keeps.
pub const BUFFER_POOL_FLOOR: u64 = 32 * MIB;
/// The CPU a suspended server keeps where it cannot be frozen.
pub const CPU_FLOOR_MILLIS: u32 = 50;
/// Longest wait for the buffer pool dump to finish.
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

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
        let mut conn = self.admin(&name).await?;
        let dumped = dump_buffer_pool(&mut conn).await?;
        let closed = close_sessions(&mut conn, &self.runtime.admin_login().user).await?;
        let before: Option<u64> = conn
            .query_value("SELECT @@GLOBAL.innodb_buffer_pool_size")
            .await?;
        conn.exec(&format!(
            "SET GLOBAL innodb_buffer_pool_size = {BUFFER_POOL_FLOOR}"
        ))
        .await?;
        let after: Option<u64> = conn
            .query_value("SELECT @@GLOBAL.innodb_buffer_pool_size")
            .await?;
        conn.close().await;
        let memory = self.resources(svc.scu).memory_bytes;
        self.runtime
            .set_limits(&name, CPU_FLOOR_MILLIS, memory)
            .await?;
        let frozen = self.runtime.freeze(&name).await?;
        // It wakes at its minimum; the autoscaler grows it again if the load asks.
        let size_before = svc.scu;
        svc.scu = svc.spec.min_scu;
        svc.buffer_pool_bytes = self.resources(svc.scu).buffer_pool_bytes;
        svc.state = DbState::Suspended;
        self.store.update_service(&svc).await?;
        self.set_suspended(&name, true);
        let ms = begin.elapsed().as_millis() as u64;
        self.event(
            &name,
            EventKind::Suspended,
            &format!(
                "suspended ({reason}) in {ms} ms: {closed} session(s) closed, buffer pool {} → {} MiB, {}",
                before.unwrap_or(0) / MIB,
                after.unwrap_or(0) / MIB,
                if frozen { "frozen" } else { "CPU at its floor (this host cannot freeze)" }
            ),
            json!({"reason": reason, "suspend_ms": ms, "sessions_closed": closed, "hot_pages_dumped": dumped,
                   "buffer_pool_before": before, "buffer_pool_after": after, "frozen": frozen,
                   "scu_before": size_before, "wakes_at_scu": svc.scu,
                   "last_statement_ms": activity.last_statement_ms}),
        )
        .await;
        Ok(self.view(&svc).await)
    }

    /// Brings a suspended server back to its size: thaw, limits, buffer pool, and the hot pages
    /// reloading in the background. Caller holds the lock.
    pub(crate) async fn unsuspend(&self, svc: &DatabaseService) -> Result<()> {
        let name = svc.name();
        self.runtime.thaw(name).await?;
        let r = self.resources(svc.scu);
        self.runtime
            .set_limits(name, r.cpu_millis, r.memory_bytes)
            .await?;
        let mut conn = self.admin(name).await?;
        conn.exec(&format!(
            "SET GLOBAL innodb_buffer_pool_size = {}",
            r.buffer_pool_bytes
        ))
        .await?;
        if self.cfg.hydrate {
            // Asynchronous in the server: queries run while the pages come back.
            conn.exec("SET GLOBAL innodb_buffer_pool_load_now = ON")
                .await?;
        }
        conn.close().await;
        Ok(())
    }

    pub(crate) fn set_suspended(&self, name: &ServiceName, on: bool) {
        let mut set = self.suspended.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            set.insert(name.clone());
        } else {
            set.remove(name);
        }
    }

    pub(crate) fn is_suspended(&self, name: &ServiceName) -> bool {
        self.suspended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }
}

/// Dumps the buffer pool's page list and waits for the server to finish writing it. Returns
/// the server's status line.
async fn dump_buffer_pool(conn: &mut AdminConn) -> Result<String> {
    conn.exec("SET GLOBAL innodb_buffer_pool_dump_now = ON")
        .await?;
    let begin = Instant::now();
    loop {
        let status: Option<String> =
            conn.query_value("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_DUMP_STATUS'").await?;
        let status = status.unwrap_or_default();
        if status.contains("completed") || begin.elapsed() > DUMP_TIMEOUT {
            return Ok(status);
        }
        // Polling the server's own progress report: the dump has no completion signal.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Closes every client session on the server; the proxy notices and keeps its clients.
async fn close_sessions(conn: &mut AdminConn, admin_user: &str) -> Result<u64> {
    let ids: Vec<u64> = conn
        .query_rows(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER NOT IN ({}, 'system user', 'event_scheduler')",
            quote_str(admin_user)
        ))
        .await?;
    let mut closed = 0;
    for id in ids {
        // Gone already is fine.
        if conn.exec(&format!("KILL CONNECTION {id}")).await.is_ok() {
            closed += 1;
        }
    }
    Ok(closed)
}
