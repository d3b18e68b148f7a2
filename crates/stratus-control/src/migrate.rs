//! Live migration (#12, `docs/migration.md`): a database moved to another node while its
//! clients keep working, in the brief's phases: a snapshot of the running server on the
//! target, replication from the source, catch-up, a cut-over at the proxy, and the source
//! removed once the target has served.
//!
//! The cut-over is where clients could notice, so it is short and bounded:
//! 1. the proxy holds each session's next command ([`Gate`], `stratus_proxy::hold`);
//! 2. statements already running and open transactions get a moment to finish ([`DRAIN`]), a
//!    transaction's own statements not being held; whatever is still running or open then is
//!    carried over by the proxy's failover machinery, as after a crash;
//! 3. the source holds every commit (`BACKUP STAGE BLOCK_COMMIT`), so its binary log position is
//!    final, and the target waits for that position (`MASTER_GTID_WAIT`);
//! 4. the target becomes the database's server and the source is stopped at once, its commits
//!    still held: nothing commits there that the target lacks. Sessions reconnect to the target
//!    with their state replayed, open transactions included;
//! 5. the hold is released.
//!
//! Any failure before step 4 removes the copy and leaves the database serving from its source,
//! with a `migration_failed` event that names the phase and the reason.

use crate::nodes::Placed;
use crate::{ControlError, ControlPlane, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::{Duration, Instant};
use stratus_core::{DbState, EventKind, ServiceName};
use stratus_runtime::admin::ServerAdmin;
use stratus_runtime::{Runtime, failpoint};
use stratus_store::Store;

/// The proxy's part in a cut-over: the next command of every session of a database is held
/// until the returned guard is dropped. `None` when that database is held already.
pub trait Gate: Send + Sync + 'static {
    fn hold(&self, db: &str) -> Option<Box<dyn Send>>;
}

/// How long running statements and open transactions get to finish once commands are held;
/// those still running or open then are carried over to the target by the proxy's failover.
pub const DRAIN: Duration = Duration::from_secs(2);
/// How long the source may take to hold its commits (running DDL delays it).
const BLOCK_COMMITS: Duration = Duration::from_secs(5);
/// How long the target may take, at the cut-over, to apply what the source last committed.
const FINAL_CATCH_UP: Duration = Duration::from_secs(10);
/// The longest commands may be held before the promotion: past it the move fails.
const CUT_OVER_LIMIT: Duration = Duration::from_secs(30);
/// How long the target may take to catch up before the cut-over is tried.
const CATCH_UP: Duration = Duration::from_secs(300);
/// How close the target must be before the cut-over: its wait for the source's position
/// succeeds within this.
const CLOSE_ENOUGH: Duration = Duration::from_millis(500);

/// A request to move a database (`POST /v1/databases/{name}/migrate`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The node to move to; placement chooses when unset.
    #[serde(default)]
    pub to: Option<String>,
}

/// What a migration did, phase by phase (also the `migrated` event's data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    pub database: String,
    pub from: String,
    pub to: String,
    /// Why the target was chosen.
    pub placement: String,
    pub copied_bytes: u64,
    /// The snapshot copied, prepared and started on the target as a replica.
    pub copy_ms: u64,
    /// Until the target was within reach of the source.
    pub catch_up_ms: u64,
    /// At the cut-over, the target's wait for the source's last commit.
    pub lag_ms: u64,
    /// Commands held at the proxy: the longest any statement waited because of the move.
    pub pause_ms: u64,
    pub total_ms: u64,
}

/// Where a move under way is: `db show` shows it, and `db migrate` follows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveProgress {
    /// The target node (empty until it is chosen).
    pub to: String,
    /// `starting`, `copy`, `catch-up`, `cut-over` or `clean-up`.
    pub phase: String,
    /// When the phase began, in ms since the epoch.
    pub since_ms: i64,
    /// While it catches up: how far the copy is behind its source, as the copy reports it.
    #[serde(default)]
    pub behind_secs: Option<u64>,
}

impl MoveProgress {
    /// A move to `to` that enters `phase` now.
    fn now(to: &str, phase: &str) -> Self {
        Self {
            to: to.to_owned(),
            phase: phase.to_owned(),
            since_ms: stratus_core::time::now_ms(),
            behind_secs: None,
        }
    }
}

/// Marks a database as migrating for as long as it lives.
struct Migrating<'a, S: Store, R: Runtime> {
    cp: &'a ControlPlane<S, R>,
    name: ServiceName,
}

impl<S: Store, R: Runtime> Drop for Migrating<'_, S, R> {
    fn drop(&mut self) {
        self.cp.migrating().remove(&self.name);
    }
}

/// A failed phase: its name and why.
struct Failed(&'static str, String);

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    fn migrating(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ServiceName, MoveProgress>> {
        self.migrating.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The move of `name` under way, if any.
    pub fn move_progress(&self, name: &ServiceName) -> Option<MoveProgress> {
        self.migrating().get(name).cloned()
    }

    /// Records that the move of `name` to `to` entered `phase`.
    fn entered(&self, name: &ServiceName, to: &str, phase: &str) {
        self.migrating()
            .insert(name.clone(), MoveProgress::now(to, phase));
    }

    /// Connects the proxy's holds (set once, after the proxy starts).
    pub fn set_gate(&self, gate: std::sync::Arc<dyn Gate>) {
        let _ = self.gate.set(gate);
    }

    /// Moves `db` to node `to` (or where placement puts it) while it serves. Returns once the
    /// target serves and the source is gone; on failure the database serves from its source.
    pub async fn migrate(&self, db: &str, to: Option<&str>) -> Result<MigrationReport> {
        self.migrate_for(db, to, None).await
    }

    /// [`Self::migrate`], saying why in its event (`why`: rebalancing's reason).
    pub(crate) async fn migrate_for(
        &self,
        db: &str,
        to: Option<&str>,
        why: Option<String>,
    ) -> Result<MigrationReport> {
        let name = ServiceName::parse(db)?;
        {
            let mut moving = self.migrating();
            if moving.contains_key(&name) {
                return Err(ControlError::WrongState(format!(
                    "database {name} is being migrated already"
                )));
            }
            moving.insert(name.clone(), MoveProgress::now("", "starting"));
        }
        let _migrating = Migrating {
            cp: self,
            name: name.clone(),
        };
        let Some(gate) = self.gate.get().cloned() else {
            return Err(ControlError::Internal(
                "no proxy to hold statements during a cut-over".into(),
            ));
        };
        let _guard = self.lock(&name).await;
        let begin = Instant::now();
        // A sleeping database is woken first: only a running server can be copied live.
        let mut svc = self
            .ensure_running(&name, EventKind::Resumed, "for a migration")
            .await?;
        let from = self.node_of(&svc);
        let mut placed = self.migration_target(&svc, &from, to).await?;
        if let Some(why) = why {
            placed.reason = why;
        }
        let activity = self.activity(&name);
        if activity.pinned_sessions > 0 {
            return Err(ControlError::WrongState(format!(
                "database {name} has {} session(s) holding what cannot move to another server (temporary tables, named locks, a cursor…); try again when they end",
                activity.pinned_sessions
            )));
        }
        svc.state = DbState::Migrating;
        self.store.update_service(&svc).await?;
        let moved = self
            .move_to(&name, &from, &placed, gate.as_ref(), begin)
            .await;
        svc.state = DbState::Active;
        match moved {
            Ok(report) => {
                // The promotion wrote the node and the new log's start: read them back.
                let mut svc = self.load(&name).await?;
                svc.state = DbState::Active;
                svc.node = Some(report.to.clone());
                self.store.update_service(&svc).await?;
                self.moved_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), stratus_core::time::now_ms());
                self.event(
                    &name,
                    EventKind::Migrated,
                    &format!(
                        "moved from node {} to node {} ({}) in {} ms: {} MiB copied in {} ms, caught up in {} ms, cut over with a pause of {} ms ({} ms of lag)",
                        report.from,
                        report.to,
                        report.placement,
                        report.total_ms,
                        report.copied_bytes >> 20,
                        report.copy_ms,
                        report.catch_up_ms,
                        report.pause_ms,
                        report.lag_ms
                    ),
                    serde_json::to_value(&report).unwrap_or_default(),
                )
                .await;
                Ok(report)
            }
            Err(Failed(phase, why)) => {
                let _ = self.runtime.remove_copy(&name, &placed.node).await;
                self.store.update_service(&svc).await?;
                let message = format!(
                    "the move from node {from} to node {} failed during the {phase}; the database serves on node {from}: {why}",
                    placed.node
                );
                self.event(
                    &name,
                    EventKind::MigrationFailed,
                    &message,
                    json!({"from": from, "to": placed.node, "phase": phase, "reason": why}),
                )
                .await;
                Err(ControlError::Runtime(message))
            }
        }
    }

    /// The node named, checked, or else where placement puts the database (never its own).
    async fn migration_target(
        &self,
        svc: &stratus_core::DatabaseService,
        from: &str,
        to: Option<&str>,
    ) -> Result<Placed> {
        // What it weighs where it is, it weighs there.
        let need = self.load_of(svc).0;
        match to {
            Some(to) if to == from => Err(ControlError::Invalid(format!(
                "database {} is on node {to} already",
                svc.name()
            ))),
            Some(to) => {
                if !self.runtime.nodes().iter().any(|n| n.name == to) {
                    return Err(ControlError::Invalid(format!("there is no node {to}")));
                }
                Ok(Placed {
                    node: to.to_owned(),
                    reason: "asked for".to_owned(),
                    data: json!({"node": to, "asked": true}),
                })
            }
            None => self.place(need, Some(from)).await,
        }
    }

    /// The phases, each failing as [`Failed`]; the caller cleans up.
    async fn move_to(
        &self,
        name: &ServiceName,
        from: &str,
        placed: &Placed,
        gate: &dyn Gate,
        begin: Instant,
    ) -> std::result::Result<MigrationReport, Failed> {
        let to = placed.node.as_str();
        let svc = self
            .store
            .service(name)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| Failed("copy", "the database is gone".into()))?;
        let mut spec = self.instance_spec(&svc);
        spec.node = to.to_owned();

        self.entered(name, to, "copy");
        let started = self
            .runtime
            .start_replica(&spec)
            .await
            .map_err(|e| Failed("copy", e.to_string()))?;
        let copy_ms = begin.elapsed().as_millis() as u64;
        self.entered(name, to, "catch-up");
        failpoint::reached("migrate-catching-up").await;

        let catching = Instant::now();
        let mut replica = self
            .runtime
            .admin_on(name, to, Duration::from_secs(10))
            .await
            .map_err(|e| Failed("catch-up", e.to_string()))?;
        // One login to the source for the whole catch-up, not one per look at its position.
        let mut source = self
            .admin(name)
            .await
            .map_err(|e| Failed("catch-up", e.to_string()))?;
        let mut last_report = 0;
        loop {
            let pos = source
                .gtid_binlog_pos()
                .await
                .map_err(|e| Failed("catch-up", e.to_string()))?;
            let reached = replica
                .wait_for_gtid(&pos, CLOSE_ENOUGH)
                .await
                .map_err(|e| Failed("catch-up", e.to_string()))?;
            if reached {
                break;
            }
            let state = replica
                .replica_state()
                .await
                .map_err(|e| Failed("catch-up", e.to_string()))?;
            if let Some(p) = self.migrating().get_mut(name) {
                p.behind_secs = state.seconds_behind;
            }
            if catching.elapsed().as_secs() / 5 != last_report {
                last_report = catching.elapsed().as_secs() / 5;
                tracing::info!(db = %name, "the copy on node {to} is catching up: {state:?}, source at {pos}");
            }
            if let Some(error) = state.error.filter(|_| !state.running) {
                return Err(Failed(
                    "catch-up",
                    format!("the copy stopped replicating: {error}"),
                ));
            }
            if catching.elapsed() > CATCH_UP {
                return Err(Failed(
                    "catch-up",
                    format!(
                        "the copy did not catch up within {} s ({:?} s behind)",
                        CATCH_UP.as_secs(),
                        state.seconds_behind
                    ),
                ));
            }
        }
        source.close().await;
        let catch_up_ms = catching.elapsed().as_millis() as u64;

        // The cut-over. Commands are held from here until `hold` is dropped, on every path, and
        // everything up to the promotion is bounded: a server that hangs fails the move.
        self.entered(name, to, "cut-over");
        let hold = gate
            .hold(name.as_str())
            .ok_or_else(|| Failed("cut-over", "its statements are held already".into()))?;
        let held = Instant::now();
        let prepared = tokio::time::timeout(CUT_OVER_LIMIT, async {
            loop {
                let a = self.activity(name);
                if (a.statements_running == 0 && a.open_transactions == 0) || held.elapsed() >= DRAIN
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // A session may have taken what cannot move since the move began.
            let pinned = self.activity(name).pinned_sessions;
            if pinned > 0 {
                return Err(Failed(
                    "cut-over",
                    format!("{pinned} session(s) came to hold what cannot move to another server (temporary tables, named locks, a cursor…)"),
                ));
            }
            let mut source = self
                .admin(name)
                .await
                .map_err(|e| Failed("cut-over", e.to_string()))?;
            source.block_commits(BLOCK_COMMITS).await.map_err(|e| {
                Failed(
                    "cut-over",
                    format!("the source cannot hold its commits: {e}"),
                )
            })?;
            let pos = source
                .gtid_binlog_pos()
                .await
                .map_err(|e| Failed("cut-over", e.to_string()))?;
            failpoint::reached("migrate-cutting-over").await;
            let waiting = Instant::now();
            let reached = replica
                .wait_for_gtid(&pos, FINAL_CATCH_UP)
                .await
                .map_err(|e| Failed("cut-over", e.to_string()))?;
            if !reached {
                return Err(Failed(
                    "cut-over",
                    format!(
                        "the copy did not apply the source's last transaction ({pos}) within {} s",
                        FINAL_CATCH_UP.as_secs()
                    ),
                ));
            }
            let lag_ms = waiting.elapsed().as_millis() as u64;
            replica
                .stop_replication()
                .await
                .map_err(|e| Failed("cut-over", e.to_string()))?;
            Ok((source, lag_ms))
        })
        .await;
        let (source, lag_ms) = match prepared {
            Ok(done) => done?,
            Err(_) => {
                return Err(Failed(
                    "cut-over",
                    format!("it took over {} s", CUT_OVER_LIMIT.as_secs()),
                ));
            }
        };
        replica.close().await;
        self.runtime
            .promote_replica(name, to)
            .await
            .map_err(|e| Failed("cut-over", e.to_string()))?;
        // From here the target is the server, and the catalog says so before anything else: a
        // restart of Stratus now must find the database where its newest commits are.
        match self.store.service(name).await {
            Ok(Some(mut now)) => {
                now.node = Some(to.to_owned());
                // The new server's binary log is a new one: its archive too.
                now.log_epoch_ms = Some(stratus_core::time::now_ms());
                if let Err(e) = self.store.update_service(&now).await {
                    tracing::error!(db = %name, "the catalog does not say node {to} yet: {e}");
                }
            }
            other => {
                tracing::error!(db = %name, "the catalog does not say node {to} yet: {other:?}")
            }
        }
        // The source dies with its commits still held: nothing commits there that the target
        // lacks. If it will not die, its commits stay held until it does.
        let mut stopped = false;
        for _ in 0..3 {
            match self.runtime.stop_copy(name, from).await {
                Ok(()) => {
                    stopped = true;
                    break;
                }
                Err(e) => {
                    tracing::error!(db = %name, "the old server on node {from} did not stop: {e}")
                }
            }
        }
        if stopped {
            drop(source);
        } else {
            tokio::spawn(async move {
                let _commits_held = source;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            });
        }
        // It caught up with the CPU of the largest size; it serves at the database's own.
        let size = self.resources(svc.scu);
        if let Err(e) = self
            .runtime
            .set_limits(name, size.cpu_millis, size.memory_bytes)
            .await
        {
            tracing::warn!(db = %name, "the new server keeps its catch-up limits until the resync: {e}");
        }
        drop(hold);
        let pause_ms = held.elapsed().as_millis() as u64;

        // The source's data goes once the target has served; until then it is the last good
        // copy, and it stays.
        self.entered(name, to, "clean-up");
        let mut served = false;
        let answering = Instant::now();
        while !served && answering.elapsed() < Duration::from_secs(30) {
            match self.admin(name).await {
                Ok(conn) => {
                    conn.close().await;
                    served = true;
                }
                Err(e) => {
                    tracing::warn!(db = %name, "the new server on node {to} is not answering yet: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        if !served || !stopped {
            tracing::error!(db = %name, "the old copy on node {from} is kept: the new server did not answer, or the old one did not stop");
        } else if let Err(e) = self.runtime.remove_copy(name, from).await {
            tracing::warn!(db = %name, "the old copy on node {from} is not removed: {e}");
        }
        Ok(MigrationReport {
            database: name.to_string(),
            from: from.to_owned(),
            to: to.to_owned(),
            placement: placed.reason.clone(),
            copied_bytes: started.copied_bytes,
            copy_ms,
            catch_up_ms,
            lag_ms,
            pause_ms,
            total_ms: begin.elapsed().as_millis() as u64,
        })
    }
}
