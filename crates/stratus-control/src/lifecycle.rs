//! The lifecycle controller: `provisioning → active ⇄ suspended → parked → active`, and
//! `deleted`. Every transition is recorded as an event with its inputs and timings.

use crate::accounts::{UNLOGGED, claim_sql, provision_sql};
use crate::reconcile::Trigger;
use crate::view::{CreatedDatabase, DatabaseView, connection_string};
use crate::{ControlError, ControlPlane, Result};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use stratus_core::commit_marker;
use stratus_core::time::rfc3339;
use stratus_core::{
    DatabaseService, DbState, EventKind, NativeHash, Resources, ServiceName, ServiceSpec, Tier,
    User, UserName, random_password,
};
use stratus_runtime::Runtime;
use stratus_runtime::admin::ServerAdmin;
use stratus_store::Store;

/// A request to create a database, as the API receives it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub min_scu: Option<u32>,
    #[serde(default)]
    pub max_scu: Option<u32>,
    #[serde(default)]
    pub storage_gb: Option<u32>,
    /// The owner account's name; `admin` when unset.
    #[serde(default)]
    pub user: Option<String>,
    /// The owner's password; generated when unset.
    #[serde(default)]
    pub password: Option<String>,
    /// Refuse clients that do not use TLS.
    #[serde(default)]
    pub require_tls: Option<bool>,
}

/// Where a create's time went, in milliseconds, for its `started` event: the server (a spare
/// claimed, or a new one started), its size (the buffer pool grown, or the admin login), the
/// database and owner account made in it, and the catalog updated.
struct ProvisionPhases {
    server: u64,
    size: u64,
    accounts: u64,
    catalog: u64,
}

/// The owner account every database gets unless the request names another.
pub const DEFAULT_OWNER: &str = "admin";

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Creates a database and returns once it accepts logins. On failure nothing remains but
    /// the events that say why.
    pub async fn create(&self, req: CreateRequest) -> Result<CreatedDatabase> {
        let begin = Instant::now();
        let name = ServiceName::parse_new(&req.name)?;
        let tier: Tier = req
            .tier
            .as_deref()
            .unwrap_or("free")
            .parse()
            .map_err(ControlError::Invalid)?;
        let spec = ServiceSpec::new(name.clone(), tier, req.min_scu, req.max_scu, req.storage_gb)?;
        let owner_name = UserName::parse(req.user.as_deref().unwrap_or(DEFAULT_OWNER))?;
        if req.password.as_deref().is_some_and(str::is_empty) {
            return Err(ControlError::Invalid("password must not be empty".into()));
        }
        let password = req.password.unwrap_or_else(random_password);
        let _guard = self.lock(&name).await;

        let mut svc = self.new_service(spec, req.require_tls.unwrap_or(false), None);
        let placed = self.place_new(self.need_of_new(svc.scu, 0)).await?;
        svc.node = Some(placed.node.clone());
        let now = svc.created_at_ms;
        let owner = User {
            service: name.clone(),
            name: owner_name.clone(),
            hash: NativeHash::of_password(&password),
            owner: true,
            created_at_ms: now,
        };
        let summary = format!(
            "database {name} requested: {} tier, {}–{} SCU, owner {owner_name}",
            svc.spec.tier, svc.spec.min_scu, svc.spec.max_scu
        );
        self.store.create_service(&svc, &owner, &summary).await?;
        if self.cfg.default_policy != stratus_core::ScalingPolicy::default() {
            self.store
                .set_scaling_policy(&name, &self.cfg.default_policy)
                .await?;
        }

        let recorded_ms = begin.elapsed().as_millis() as u64;
        let (from_pool, phases) = match self.provision(&mut svc, &owner).await {
            Ok(done) => done,
            Err(e) => {
                let _ = self.runtime.destroy(&name).await;
                let _ = self.store.delete_service(&name).await;
                self.event(
                    &name,
                    EventKind::StartFailed,
                    &format!("creation failed, nothing kept: {e}"),
                    json!({}),
                )
                .await;
                return Err(e);
            }
        };
        let ready_ms = begin.elapsed().as_millis() as u64;
        let source = if from_pool {
            "a spare from the warm pool"
        } else {
            "a new server"
        };
        self.event(
            &name,
            EventKind::Started,
            &format!(
                "database {name} ready in {ready_ms} ms on {source}, on node {} ({})",
                placed.node, placed.reason
            ),
            json!({"ready_ms": ready_ms, "scu": svc.scu, "warm_pool": from_pool,
                   "node": placed.node, "placement": placed.data,
                   "phases_ms": {"placed_and_recorded": recorded_ms, "server": phases.server,
                                 "size": phases.size, "accounts": phases.accounts,
                                 "catalog": phases.catalog}}),
        )
        .await;
        let (host, port) = self.endpoint();
        let user = self.client_user(&name, &owner_name);
        Ok(CreatedDatabase {
            name: name.to_string(),
            state: svc.state.to_string(),
            connection_string: connection_string(&user, &password, &host, port, name.as_str()),
            host,
            port,
            user,
            password,
            database: name.to_string(),
            ready_ms,
        })
    }

    /// A server for a new database: a spare from the warm pool if one is ready or on its way,
    /// else a fresh copy of the template. Also says whether it was a spare, and where the time went.
    async fn provision(
        &self,
        svc: &mut DatabaseService,
        owner: &User,
    ) -> Result<(bool, ProvisionPhases)> {
        let mut clock = Instant::now();
        let mut lap = move || {
            let ms = clock.elapsed().as_millis() as u64;
            clock = Instant::now();
            ms
        };
        let spec = self.instance_spec(svc);
        let mut spare_pool = None;
        let spare = self
            .take_spare_soon(&spec.node, spec.resources.buffer_pool_bytes)
            .await;
        let instance = match spare {
            Some(spare) => match self.runtime.claim_spare(&spare, &spec).await {
                Ok(instance) => {
                    spare_pool = Some(spare.buffer_pool_bytes);
                    instance
                }
                Err(e) => {
                    tracing::warn!(db = %svc.name(), "could not claim spare {}: {e}; starting a new server", spare.key);
                    let _ = self.runtime.destroy_spare(&spare.key).await;
                    self.runtime.provision(&spec).await?
                }
            },
            None => self.runtime.provision(&spec).await?,
        };
        let _ = instance;
        let server = lap();
        let name = svc.name().clone();
        let mut conn = match spare_pool {
            // A spare not presized to this database's pool idles on a small one; give it the
            // database's.
            Some(bytes) if bytes != spec.resources.buffer_pool_bytes => {
                let from = Resources {
                    buffer_pool_bytes: bytes,
                    ..spec.resources
                };
                self.resize(&name, from, spec.resources).await?.1
            }
            _ => self.admin(&name).await?,
        };
        let size = lap();
        let statements = match spare_pool {
            Some(_) => claim_sql(&name, &owner.name, &owner.hash),
            None => std::iter::once(UNLOGGED.to_owned())
                .chain(provision_sql(&name, &owner.name, &owner.hash, false))
                .collect(),
        };
        for sql in statements {
            conn.exec(&sql).await?;
        }
        let bp = conn.buffer_pool_size().await?;
        conn.close().await;
        let accounts = lap();
        svc.buffer_pool_bytes = bp;
        svc.state = DbState::Active;
        self.store.update_service(svc).await?;
        let phases = ProvisionPhases {
            server,
            size,
            accounts,
            catalog: lap(),
        };
        Ok((spare_pool.is_some(), phases))
    }

    pub async fn show(&self, db: &str) -> Result<DatabaseView> {
        let name = ServiceName::parse(db)?;
        let svc = self.load(&name).await?;
        Ok(self.view(&svc).await)
    }

    pub async fn list(&self) -> Result<Vec<DatabaseView>> {
        let mut out = Vec::new();
        for svc in self.store.services().await? {
            out.push(self.view(&svc).await);
        }
        Ok(out)
    }

    pub(crate) async fn view(&self, svc: &DatabaseService) -> DatabaseView {
        let seen = self.runtime.observe(svc.name()).await;
        let storage = self.runtime.storage(svc.name());
        let configured = self.resources(svc.scu);
        let enforced = seen.cpu_limit_millis.is_some() && seen.memory_limit_bytes.is_some();
        let (host, port) = self.endpoint();
        DatabaseView {
            name: svc.name().to_string(),
            state: svc.state.to_string(),
            tier: svc.spec.tier.to_string(),
            scu: svc.scu,
            min_scu: svc.spec.min_scu,
            max_scu: svc.spec.max_scu,
            storage_gb: svc.spec.storage_gb,
            require_tls: svc.require_tls,
            host,
            port,
            database: svc.schema().to_owned(),
            cpu_limit: f64::from(seen.cpu_limit_millis.unwrap_or(configured.cpu_millis)) / 1000.0,
            memory_limit: seen.memory_limit_bytes.unwrap_or(configured.memory_bytes),
            limits_enforced: enforced,
            buffer_pool_size: svc.buffer_pool_bytes,
            data_dir: seen.storage,
            node: self.node_of(svc),
            pid: seen.pid,
            backend: seen.backend,
            cpu_usage_seconds: seen.cpu_usage_ns.map(|ns| ns as f64 / 1e9),
            activity: self.activity(svc.name()),
            measured: self.measured(svc.name()),
            moving: self.move_progress(svc.name()),
            memory_usage: seen.memory_usage_bytes,
            storage_used_bytes: storage.map(|u| u.used_bytes),
            // Without a volume the limit is the one Stratus keeps by measuring.
            storage_limit_bytes: storage.map(|u| {
                if u.measured {
                    crate::storage::max_bytes(svc.spec.storage_gb)
                } else {
                    u.limit_bytes
                }
            }),
            created_at: rfc3339(svc.created_at_ms),
            updated_at: rfc3339(svc.updated_at_ms),
        }
    }

    /// Sets a database's size by hand. A parked database keeps the size for its next start.
    pub async fn scale(&self, db: &str, scu: u32) -> Result<DatabaseView> {
        let name = ServiceName::parse(db)?;
        let _guard = self.lock(&name).await;
        let mut svc = self.load(&name).await?;
        svc.spec.check_scu(scu)?;
        let from = self.resources(svc.scu);
        let to = self.resources(scu);
        // A suspended server is frozen: its new size applies when it wakes.
        let running = self.runtime.endpoint(&name).is_some() && !self.is_suspended(&name);
        let applied = if running {
            let applied = self.apply_size(&name, from, to).await?;
            svc.buffer_pool_bytes = applied.buffer_pool_actual;
            Some(applied)
        } else {
            svc.buffer_pool_bytes = to.buffer_pool_bytes;
            None
        };
        let old = svc.scu;
        svc.scu = scu;
        self.store.update_service(&svc).await?;
        let message = match &applied {
            Some(a) if a.buffer_pool_actual != a.buffer_pool_requested => format!(
                "scaled {old} → {scu} SCU by request; buffer pool {} bytes instead of the {} asked for",
                a.buffer_pool_actual, a.buffer_pool_requested
            ),
            Some(_) => format!("scaled {old} → {scu} SCU by request"),
            None => {
                format!("size set to {scu} SCU by request; applies when the database next starts")
            }
        };
        self.event(
            &name,
            EventKind::Scaled,
            &message,
            json!({"from_scu": old, "to_scu": scu, "cpu_millis": to.cpu_millis, "memory_bytes": to.memory_bytes,
                   "applied": applied, "reason": "manual"}),
        )
        .await;
        Ok(self.view(&svc).await)
    }

    /// Stops the server and keeps its storage.
    pub async fn park(&self, db: &str, force: bool) -> Result<DatabaseView> {
        self.park_because(db, force, "by request", false).await
    }

    /// Parks, recording `reason` in the event. `only_if_suspended`: for a decision made about a
    /// suspended database (idle long enough, memory pressure), which a client may have woken
    /// since; then it is left as it is.
    pub(crate) async fn park_because(
        &self,
        db: &str,
        force: bool,
        reason: &str,
        only_if_suspended: bool,
    ) -> Result<DatabaseView> {
        let name = ServiceName::parse(db)?;
        let _guard = self.lock(&name).await;
        let mut svc = self.load(&name).await?;
        let asleep = svc.state == DbState::Suspended && self.is_suspended(&name);
        if svc.state == DbState::Parked || (only_if_suspended && !asleep) {
            return Ok(self.view(&svc).await);
        }
        let activity = self.activity(&name);
        if activity.holds_state() && !force {
            return Err(ControlError::WrongState(format!(
                "database {name} has {} running statement(s), {} open transaction(s) and {} pinned session(s) \
                 (temporary tables, locks, cursors); parking now would lose them. Retry when they finish, \
                 or force it",
                activity.statements_running, activity.open_transactions, activity.pinned_sessions
            )));
        }
        if !svc.state.can_become(DbState::Parked) {
            return Err(ControlError::WrongState(format!(
                "database {name} is {} and cannot be parked",
                svc.state
            )));
        }
        let begin = Instant::now();
        if self.cfg.hydrate && svc.state == DbState::Active {
            // What its pool holds, for the wake's new server (a suspended one was asked when it
            // was emptied; an active one answers, where a frozen one would not).
            if let Ok(mut conn) = self.admin(&name).await {
                self.note_hot_indexes(&name, &mut conn).await;
                conn.close().await;
            }
        }
        let done = self.transition(&mut svc, DbState::Parked).await?;
        let graceful = done.stopped_gracefully.unwrap_or(true);
        let ms = begin.elapsed().as_millis() as u64;
        let how = if graceful {
            "stopped cleanly"
        } else {
            "killed after the grace period"
        };
        self.event(
            &name,
            EventKind::Parked,
            &format!("parked {reason}: mariadbd {how} in {ms} ms, storage kept"),
            json!({"graceful": graceful, "stop_ms": ms, "reason": reason}),
        )
        .await;
        Ok(self.view(&svc).await)
    }

    /// Starts a parked (or suspended) database again.
    pub async fn resume(&self, db: &str) -> Result<DatabaseView> {
        let name = ServiceName::parse(db)?;
        let _guard = self.lock(&name).await;
        let svc = self
            .ensure_running(&name, EventKind::Resumed, "by request")
            .await?;
        Ok(self.view(&svc).await)
    }

    /// Makes sure the server runs, resuming a parked database. Caller holds the lock.
    pub(crate) async fn ensure_running(
        &self,
        name: &ServiceName,
        kind: EventKind,
        reason: &str,
    ) -> Result<DatabaseService> {
        let mut svc = self.load(name).await?;
        match svc.state {
            DbState::Active | DbState::Migrating if self.runtime.endpoint(name).is_some() => {
                return Ok(svc);
            }
            DbState::Provisioning => {
                return Err(ControlError::WrongState(format!(
                    "database {name} is still being created"
                )));
            }
            _ => {}
        }
        let begin = Instant::now();
        let from = svc.state;
        let done = self.transition(&mut svc, DbState::Active).await?;
        let pid = match done.started_pid {
            Some(pid) => pid,
            None => self.runtime.observe(name).await.pid.unwrap_or(0),
        };
        let ms = begin.elapsed().as_millis() as u64;
        let verb = if kind == EventKind::Woken {
            "woken"
        } else {
            "resumed"
        };
        self.event(
            name,
            kind,
            &format!("{verb} from {from} in {ms} ms ({reason})"),
            json!({"from": from, "resume_ms": ms, "pid": pid, "reason": reason}),
        )
        .await;
        Ok(svc)
    }

    /// Deletes a database with its data.
    pub async fn delete(&self, db: &str) -> Result<()> {
        let name = ServiceName::parse(db)?;
        let _guard = self.lock(&name).await;
        self.load(&name).await?;
        self.runtime.destroy(&name).await?;
        self.store.delete_service(&name).await?;
        self.set_suspended(&name, false, None);
        self.stop_hydration(&name);
        self.settled(&name);
        // A database made later under the same name starts without this one's figures (its
        // hit-ratio counters, what its pool could hold).
        self.measured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        self.event(
            &name,
            EventKind::Deleted,
            &format!("database {name} deleted with its data"),
            json!({}),
        )
        .await;
        Ok(())
    }

    /// Creates the commit marker table where an older server lacks it, and prunes rows left by
    /// proxies that were killed. Best effort: without the table, commits are just not marked.
    pub(crate) async fn tend_commit_markers(&self, svc: &DatabaseService) {
        let result = async {
            let mut conn = self.admin(svc.name()).await?;
            for sql in commit_marker::DDL {
                conn.exec(sql).await?;
            }
            conn.exec(commit_marker::PRUNE).await?;
            conn.close().await;
            Ok::<_, ControlError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(db = %svc.name(), "cannot tend the commit marker table: {e}");
        }
    }

    /// After Stratus starts: adopt or start every database that should run, finish or undo
    /// what a crash of Stratus interrupted ([`crate::reconcile`]). Databases are recovered
    /// concurrently; one that fails is tried again in the background, with back-off.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for mut svc in self.store.services().await? {
            if svc.node.is_none() {
                // Made before nodes: it is where its storage is.
                svc.node = Some(self.node_of(&svc));
                self.store.update_service(&svc).await?;
            }
            // A move this restart cut short: the database serves where the catalog says, once
            // started there.
            let interrupted = svc.state == DbState::Migrating;
            if interrupted {
                svc.state = DbState::Active;
                self.store.update_service(&svc).await?;
            }
            let me = self.clone();
            tasks.spawn(async move {
                let name = svc.name().clone();
                let started = me.reconcile(&name, Trigger::Recovery).await;
                if interrupted {
                    me.abandon_migration(&svc).await;
                }
                if started.is_err() {
                    tokio::spawn(async move {
                        me.reconcile_until_settled(&name, Trigger::Recovery, 1)
                            .await
                    });
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// A migration a restart of Stratus interrupted, once the database was started where the
    /// catalog says (the node changes there the moment a copy is promoted): a copy it may have
    /// left on another node goes.
    async fn abandon_migration(&self, svc: &DatabaseService) {
        let on = self.node_of(svc);
        let mut removed = Vec::new();
        for node in self.runtime.nodes() {
            if node.name != on
                && self
                    .runtime
                    .remove_copy(svc.name(), &node.name)
                    .await
                    .is_ok()
            {
                removed.push(node.name);
            }
        }
        self.event(
            svc.name(),
            EventKind::MigrationFailed,
            &format!("Stratus restarted during a move; the database serves on node {on}"),
            json!({"phase": "restart", "node": on, "copies_removed_on": removed}),
        )
        .await;
    }

    /// Stops every running server cleanly (Stratus is shutting down). Desired states stay as
    /// they are, so the next start brings the same databases back.
    pub async fn shutdown(self: &Arc<Self>) {
        let mut tasks = tokio::task::JoinSet::new();
        let services = self.store.services().await.unwrap_or_default();
        for svc in services {
            let me = self.clone();
            tasks.spawn(async move {
                let name = svc.name().clone();
                let _guard = me.lock(&name).await;
                if me.runtime.observe(&name).await.pid.is_none() {
                    return;
                }
                let begin = Instant::now();
                let graceful = me
                    .runtime
                    .stop(&name, me.cfg.stop_grace)
                    .await
                    .unwrap_or(false);
                let ms = begin.elapsed().as_millis() as u64;
                // Until the next `stratus up` starts it again, it is not billed as running.
                if let Err(e) = me.store.usage_stopped(&name, true).await {
                    tracing::warn!(db = %name, "cannot record usage: {e}");
                }
                me.event(
                    &name,
                    EventKind::Stopped,
                    &format!("stopped for Stratus shutdown in {ms} ms (graceful: {graceful})"),
                    json!({"graceful": graceful, "stop_ms": ms}),
                )
                .await;
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}
