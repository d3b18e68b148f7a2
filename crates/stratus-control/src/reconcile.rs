//! The lifecycle reconciler, shaped like kube-rs's `controller-rs`
//! (<https://kube.rs/controllers/reconciler/>): for one database, a pure, level-triggered
//! [`plan`] from what the catalog wants and what the runtime shows to the actions that close the
//! gap; an executor ([`ControlPlane::reconcile`]) that applies them through the [`Runtime`]; and
//! an error policy ([`ControlPlane::reconcile_until_settled`]) that tries again with back-off.
//!
//! It is what suspends, wakes and parks a database (an operation records the new desired state
//! and converges to it, [`ControlPlane::transition`]), and what brings databases back after
//! Stratus restarts, after a server crashes, and after a missed notice: whatever happened, it
//! looks at the state now, not at the event, so running it twice does nothing the second time.
//! Everything that acts on a database holds its lock, so the reconciler never sees one half done.
//!
//! The catalog's size is a desired size too: a running server found at other limits or another
//! buffer pool (a resize cut short by a restart of Stratus, a limit changed by hand) is brought
//! back to it ([`Action::Resize`], [`size_seen`]).

use crate::supervisor::backoff;
use crate::{ControlPlane, Result};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use stratus_core::{DatabaseService, DbState, EventKind, Resources, ServiceName};
use stratus_runtime::Runtime;
use stratus_runtime::admin::ServerAdmin;
use stratus_store::Store;

/// What is seen of one database now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// This runtime serves its server (it started or adopted it).
    pub serving: bool,
    /// A server process exists, served or not. Looked for only where it changes the plan (a
    /// parked database): looking adopts an unserved server without the login a start makes.
    pub process: bool,
    /// Its processes are frozen (meaningful when serving).
    pub frozen: bool,
    /// The control plane holds it back from clients as suspended (set before it is emptied,
    /// cleared after it is filled again).
    pub held: bool,
    /// How its size compares with the catalog's; looked at only for an active server that is
    /// neither frozen nor held (the others are at their floors, or cannot answer).
    pub size: SizeSeen,
}

/// How a running server's size compares with the one the catalog wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SizeSeen {
    /// Not looked at, or nothing of it could be observed.
    #[default]
    Unknown,
    Matches,
    /// Its limits or its buffer pool are not the catalog's.
    Differs,
}

/// A running server's size as observed; `None` for what cannot be (limits without resource
/// control, a buffer pool behind a failed login).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeFound {
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub buffer_pool_bytes: Option<u64>,
}

impl SizeFound {
    /// The limits the runtime enforces, with the buffer pool as read (if it was).
    fn of(o: &stratus_runtime::Observed, buffer_pool_bytes: Option<u64>) -> Self {
        Self {
            cpu_millis: o.cpu_limit_millis,
            memory_bytes: o.memory_limit_bytes,
            buffer_pool_bytes,
        }
    }
}

/// Whether `found` is the size of `want`. The kernel keeps a memory limit in whole pages, so
/// one a page (of any size up to 64 KiB) below the one set is the one set. The buffer pool
/// matches the size asked for or the one the server reported when it was last sized
/// (`pool_recorded`): the server may round what it is asked for
/// (<https://mariadb.com/kb/en/innodb-system-variables/#innodb_buffer_pool_size>). Pure.
pub fn size_seen(want: Resources, pool_recorded: u64, found: SizeFound) -> SizeSeen {
    const LARGEST_PAGE: u64 = 64 << 10;
    let checks = [
        found.cpu_millis.map(|c| c == want.cpu_millis),
        found
            .memory_bytes
            .map(|m| m <= want.memory_bytes && want.memory_bytes - m < LARGEST_PAGE),
        found
            .buffer_pool_bytes
            .map(|b| b == want.buffer_pool_bytes || b == pool_recorded),
    ];
    if checks.contains(&Some(false)) {
        SizeSeen::Differs
    } else if checks.contains(&Some(true)) {
        SizeSeen::Matches
    } else {
        SizeSeen::Unknown
    }
}

/// One step towards the desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Its creation was interrupted (Stratus stopped during it): remove what exists of it.
    Abandon,
    Stop,
    /// Unfreeze, so the server can be adopted, answer, or die. A no-op when not frozen.
    Thaw,
    /// Start the server, or adopt one that runs.
    Start,
    /// Make a held server hold nothing: hot page list dumped, sessions closed, buffer pool and
    /// CPU at their floors (`suspend`).
    Empty,
    /// Give an emptied server its size back and reload its hot pages.
    Fill,
    Freeze,
    /// Hold it back from clients until a client wakes it.
    Hold,
    /// Stop holding it back.
    Release,
    /// Bring a running server's limits and buffer pool to the catalog's size, from whatever
    /// size it is found at.
    Resize,
}

/// The actions that take a database in `state` from what is `seen` to what the state wants.
/// Pure; an empty plan means there is nothing to do.
pub fn plan(state: DbState, seen: Seen) -> Vec<Action> {
    use Action::*;
    let mut out = Vec::new();
    match state {
        // Creation holds the database's lock throughout: seen here, it was cut short.
        DbState::Provisioning => out.push(Abandon),
        // Deleting removes the entry, so `deleted` is never stored; were it, nothing should run.
        DbState::Parked | DbState::Deleted => {
            if seen.serving || seen.process {
                out.push(Stop);
            }
            if seen.held {
                out.push(Release);
            }
        }
        DbState::Active | DbState::Migrating => {
            if !seen.serving {
                // A new server starts at its size: nothing to fill.
                out.extend([Thaw, Start]);
                if seen.held {
                    out.push(Release);
                }
            } else if seen.held {
                out.extend([Thaw, Fill, Release]);
            } else if seen.frozen {
                // Its size is looked at once it can answer: by the next look.
                out.push(Thaw);
            } else if state == DbState::Active && seen.size == SizeSeen::Differs {
                out.push(Resize);
            }
        }
        // Held first, so no client is handed the server while it is emptied.
        DbState::Suspended => {
            if !seen.serving {
                out.extend([Hold, Thaw, Start, Empty, Freeze]);
            } else if !seen.held {
                out.extend([Hold, Empty, Freeze]);
            }
        }
    }
    out
}

/// What was seen, in words, for the resync's event.
fn describe(seen: Seen) -> &'static str {
    match (seen.serving, seen.process, seen.frozen, seen.held) {
        (false, false, ..) => "no server running",
        (false, true, ..) => "a server running that should not",
        (true, _, true, false) => "its server frozen though not suspended",
        (true, _, false, true) => "its server held back from clients and not frozen",
        (true, _, false, false) if seen.size == SizeSeen::Differs => {
            "its server at a size other than the catalog's"
        }
        (true, ..) => "its server in a state other than wanted",
    }
}

/// What made the reconciler look, for the events it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Stratus started and found the catalog.
    Recovery,
    /// The server exited without being asked.
    Crash,
    /// An operation changed the desired state (it records its own event).
    Request,
    /// The periodic resync: a trigger was missed (or never came), or none exists for what
    /// changed (a server's cgroup thawed by hand).
    Resync,
}

/// What the error policy is doing about one database.
#[derive(Debug, Default)]
pub(crate) struct Retrying {
    /// Its retry loops running now (a crash and a recovery may each have one).
    loops: u32,
    /// One gave up: left to a person until something brings it where it should be.
    gave_up: bool,
}

/// Failed attempts in a row before the error policy stops trying and leaves it to a person.
pub const MAX_ATTEMPTS: u32 = 20;

/// How long a look at a server's buffer pool waits for a login: a server pinned at its CPU
/// quota answers slowly, and the look is no reason to wait on it.
const LOOK_LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the applied actions did, for the event of the operation that asked for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Done {
    pub started_pid: Option<u32>,
    pub stopped_gracefully: Option<bool>,
    pub emptied: Option<crate::suspend::Emptied>,
    /// Whether the freeze took (false where the host cannot freeze).
    pub frozen: Option<bool>,
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// What the runtime shows of a database, looked at without side effects where possible.
    async fn seen(&self, svc: &DatabaseService) -> Seen {
        let name = svc.name();
        let serving = self.runtime.endpoint(name).is_some();
        let held = self.is_suspended(name);
        if serving {
            let o = self.runtime.observe(name).await;
            // A refilling pool runs at a CPU burst (`hydration`): not a size to undo.
            let size =
                if svc.state == DbState::Active && !o.frozen && !held && !self.is_hydrating(name) {
                    let found = self.size_found(svc, &o).await;
                    size_seen(self.resources(svc.scu), svc.buffer_pool_bytes, found)
                } else {
                    SizeSeen::Unknown
                };
            return Seen {
                serving,
                process: true,
                frozen: o.frozen,
                held,
                size,
            };
        }
        let process = matches!(svc.state, DbState::Parked | DbState::Deleted)
            && self.runtime.observe(name).await.pid.is_some();
        Seen {
            serving,
            process,
            frozen: false,
            held,
            size: SizeSeen::Unknown,
        }
    }

    /// The size a running server is at: its enforced limits and, when they are the catalog's
    /// (or cannot be seen), its buffer pool, through a short login that changes nothing (a
    /// refused or slow one leaves the pool unknown; restoring access is for the actions, not
    /// the look).
    async fn size_found(&self, svc: &DatabaseService, o: &stratus_runtime::Observed) -> SizeFound {
        let mut found = SizeFound::of(o, None);
        let limits = size_seen(self.resources(svc.scu), svc.buffer_pool_bytes, found);
        if limits != SizeSeen::Differs
            && let Ok(mut conn) = self.runtime.admin(svc.name(), LOOK_LOGIN_TIMEOUT).await
        {
            found.buffer_pool_bytes = conn.buffer_pool_size().await.ok();
            conn.close().await;
        }
        found
    }

    /// Brings one database to what the catalog says, once: observe, plan, apply. Returns the
    /// actions taken. An error leaves the rest of the plan for the next attempt.
    pub async fn reconcile(&self, name: &ServiceName, why: Trigger) -> Result<Vec<Action>> {
        let _guard = self.lock(name).await;
        let Some(svc) = self.store.service(name).await? else {
            return Ok(Vec::new());
        };
        let (seen, actions, done) = self.converge(&svc, why).await?;
        if why == Trigger::Resync && !actions.is_empty() {
            let started = done
                .started_pid
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            self.event(
                name,
                EventKind::Reconciled,
                &format!(
                    "found {} while {}, with no notice of why; did {}{started}",
                    describe(seen),
                    svc.state,
                    actions
                        .iter()
                        .map(|a| format!("{a:?}").to_lowercase())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                json!({"seen": format!("{seen:?}"), "actions": format!("{actions:?}"), "pid": done.started_pid}),
            )
            .await;
        }
        Ok(actions)
    }

    /// Every `resync_every`, looks at every database that no error policy is retrying and
    /// reconciles the ones found other than the catalog says twice in a row (kube-rs's periodic
    /// requeue): a lost notice, or a change no notice exists for, is caught within two periods,
    /// while one that its trigger is already handling (a crash between its exit and the
    /// supervisor's restart) is left to it. One that fails is handed to the error policy.
    pub async fn run_resync(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.resync_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // immediate: recovery has just looked at everything
        let mut suspects = HashSet::new();
        loop {
            tick.tick().await;
            self.resync(&mut suspects).await;
        }
    }

    /// One pass of [`Self::run_resync`]; `suspects` are the databases the last pass found off.
    pub async fn resync(self: &Arc<Self>, suspects: &mut HashSet<ServiceName>) {
        let Ok(services) = self.store.services().await else {
            return;
        };
        let mut off_now = HashSet::new();
        for svc in services {
            let name = svc.name().clone();
            if self.retrying().contains_key(&name) {
                // Converged since (by hand, or by a loop that won): no longer given up.
                if self.diverges(&name).await == Some(false) {
                    self.settled(&name);
                }
                continue;
            }
            // Busy (an operation, a backup, a restore): looked at next time.
            if self.diverges(&name).await != Some(true) {
                continue;
            }
            if !suspects.contains(&name) {
                off_now.insert(name);
                continue;
            }
            if let Err(e) = self.reconcile(&name, Trigger::Resync).await {
                tracing::warn!(db = %name, "resync: {e}");
                let me = self.clone();
                tokio::spawn(
                    async move { me.reconcile_until_settled(&name, Trigger::Resync, 1).await },
                );
            }
        }
        *suspects = off_now;
    }

    /// Whether the database is other than its desired state (its plan is not empty); `None`
    /// when someone holds its lock (busy: looked at next time) or it is gone. The look itself
    /// runs without the lock: it may wait on a slow server's login, and must not hold back the
    /// autoscaler meanwhile. Whatever is done is planned again under the lock ([`Self::reconcile`]).
    async fn diverges(&self, name: &ServiceName) -> Option<bool> {
        drop(self.try_lock(name)?);
        let svc = self.store.service(name).await.ok()??;
        Some(!plan(svc.state, self.seen(&svc).await).is_empty())
    }

    fn retrying(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceName, Retrying>> {
        self.retrying.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database is where it should be: whatever gave up on it is over (a loop still
    /// running keeps its mark until it ends).
    pub(crate) fn settled(&self, name: &ServiceName) {
        let mut all = self.retrying();
        if let Some(r) = all.get_mut(name) {
            r.gave_up = false;
            if r.loops == 0 {
                all.remove(name);
            }
        }
    }

    /// Plans and applies for `svc` as given; returns what was seen, the plan and what it did.
    /// Caller holds the lock.
    async fn converge(
        &self,
        svc: &DatabaseService,
        why: Trigger,
    ) -> Result<(Seen, Vec<Action>, Done)> {
        let seen = self.seen(svc).await;
        let actions = plan(svc.state, seen);
        let mut done = Done::default();
        for &action in &actions {
            self.apply(svc, action, why, &mut done).await?;
        }
        if why == Trigger::Request {
            // An operation (`db resume`) brought it where it should be.
            self.settled(svc.name());
        }
        Ok((seen, actions, done))
    }

    /// Makes `to` the desired state of `svc` and converges to it. If that fails, the previous
    /// desired state is put back (and converged to, as far as it goes), so the catalog never
    /// claims a state the server was not brought to. Caller holds the lock.
    pub(crate) async fn transition(&self, svc: &mut DatabaseService, to: DbState) -> Result<Done> {
        let before = svc.clone();
        svc.state = to;
        self.store.update_service(svc).await?;
        match self.converge(svc, Trigger::Request).await {
            Ok((_, _, done)) => Ok(done),
            Err(e) => {
                *svc = before;
                self.store.update_service(svc).await?;
                if let Err(back) = self.converge(svc, Trigger::Request).await {
                    tracing::warn!(db = %svc.name(), "after a failed change to {to}, returning to {} failed too: {back}", svc.state);
                }
                Err(e)
            }
        }
    }

    /// The error policy: reconciles until it succeeds, waiting [`backoff`] between attempts
    /// (`attempt` counts those already failed), and gives up after [`MAX_ATTEMPTS`] with an
    /// event that says how to try again.
    pub async fn reconcile_until_settled(
        &self,
        name: &ServiceName,
        why: Trigger,
        mut attempt: u32,
    ) {
        self.retrying().entry(name.clone()).or_default().loops += 1;
        let end = |gave_up: bool| {
            let mut all = self.retrying();
            if let Some(r) = all.get_mut(name) {
                r.loops = r.loops.saturating_sub(1);
                // The last loop to end says: a success settles it, giving up leaves it.
                r.gave_up = gave_up;
                if r.loops == 0 && !r.gave_up {
                    all.remove(name);
                }
            }
        };
        for _ in 0..MAX_ATTEMPTS {
            // Back-off between attempts on a failing server, not a readiness wait; the lock is
            // not held meanwhile, so the database can still be parked or deleted.
            tokio::time::sleep(backoff(attempt, self.cfg.restart_backoff_max)).await;
            match self.reconcile(name, why).await {
                Ok(_) => {
                    end(false);
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    tracing::debug!(db = %name, attempt, "reconcile failed: {e}");
                }
            }
        }
        end(true);
        self.event(
            name,
            EventKind::StartFailed,
            &format!(
                "gave up after {MAX_ATTEMPTS} failed attempts; `stratus db resume {name}` tries again"
            ),
            json!({}),
        )
        .await;
    }

    /// The executor: one action.
    async fn apply(
        &self,
        svc: &DatabaseService,
        action: Action,
        why: Trigger,
        done: &mut Done,
    ) -> Result<()> {
        let name = svc.name();
        match action {
            Action::Abandon => {
                let _ = self.runtime.destroy(name).await;
                let _ = self.store.delete_service(name).await;
                self.event(
                    name,
                    EventKind::StartFailed,
                    "creation was interrupted by a restart of Stratus; removed",
                    json!({}),
                )
                .await;
            }
            Action::Stop => {
                // What its pool held is kept for the next start (a park's wake), whose pool
                // MariaDB does not refill (nothing of it is unencrypted): noted when it was
                // emptied, or by a park from active.
                self.stop_hydration(name);
                done.stopped_gracefully = Some(self.runtime.stop(name, self.cfg.stop_grace).await?);
            }
            Action::Thaw => self.runtime.thaw(name).await?,
            Action::Start => {
                let instance = self.start_recorded(svc, why).await?;
                done.started_pid = Some(instance.pid);
                if self.cfg.hydrate && svc.state == DbState::Active && !instance.adopted {
                    // Woken from parked: the indexes its last server's pool held, if known.
                    let pool = self.resources(svc.scu).buffer_pool_bytes;
                    self.start_hydration(name, pool).await;
                }
                // An adopted server is at whatever size it was left at: a resize may have been
                // cut short by the restart of Stratus. It serves either way, so a resize that
                // fails here is left to the next look rather than failing the start.
                if instance.adopted && svc.state == DbState::Active {
                    if let Err(e) = self.resize_to_catalog(svc, why).await {
                        tracing::warn!(db = %svc.name(), "adopted at another size, not resized yet: {e}");
                    }
                }
            }
            Action::Resize => self.resize_to_catalog(svc, why).await?,
            Action::Empty => done.emptied = Some(self.empty(svc).await?),
            Action::Fill => self.fill(svc).await?,
            Action::Freeze => done.frozen = Some(self.runtime.freeze(name).await?),
            Action::Hold => {
                // Found suspended at a restart: since its last change in the catalog, which its
                // suspend was, rather than from now on.
                let since = (why == Trigger::Recovery).then_some(svc.updated_at_ms);
                self.set_suspended(name, true, since)
            }
            Action::Release => self.set_suspended(name, false, None),
        }
        Ok(())
    }

    /// The reconciler's `Resize`: if the running server is found at a size other than the
    /// catalog's, brings it there the way every resize is made ([`crate::sizing`]), records the
    /// buffer pool the server made of it and a `scaled` event.
    async fn resize_to_catalog(&self, svc: &DatabaseService, why: Trigger) -> Result<()> {
        let name = svc.name();
        let to = self.resources(svc.scu);
        let o = self.runtime.observe(name).await;
        let mut conn = self.admin(name).await?;
        let pool = conn.buffer_pool_size().await?;
        conn.close().await;
        let found = SizeFound::of(&o, Some(pool));
        if size_seen(to, svc.buffer_pool_bytes, found) != SizeSeen::Differs {
            return Ok(());
        }
        let from = Resources {
            cpu_millis: found.cpu_millis.unwrap_or(to.cpu_millis),
            memory_bytes: found.memory_bytes.unwrap_or(to.memory_bytes),
            buffer_pool_bytes: pool,
            ..to
        };
        let applied = self.apply_size(name, from, to).await?;
        self.record_pool(svc, &applied).await?;
        let known = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
        let whence = match why {
            Trigger::Recovery => "after a restart of Stratus",
            Trigger::Crash => "after a crash",
            Trigger::Request => "by request",
            Trigger::Resync => "by the periodic check",
        };
        self.event(
            name,
            EventKind::Scaled,
            &format!(
                "brought back to its size of {} SCU, found {whence} at {} millicores, {} bytes of memory and a buffer pool of {pool} bytes",
                svc.scu,
                known(found.cpu_millis.map(|c| c.to_string())),
                known(found.memory_bytes.map(|m| m.to_string())),
            ),
            json!({"to_scu": svc.scu, "cpu_millis": to.cpu_millis, "memory_bytes": to.memory_bytes,
                   "found": {"cpu_millis": found.cpu_millis, "memory_bytes": found.memory_bytes, "buffer_pool_bytes": pool},
                   "applied": applied, "reason": "reconciler"}),
        )
        .await;
        Ok(())
    }

    /// Starts (or adopts) the server and, unless an operation asked for it (it records its
    /// own), records how, in the terms of what made it necessary.
    async fn start_recorded(
        &self,
        svc: &DatabaseService,
        why: Trigger,
    ) -> Result<stratus_runtime::Instance> {
        let name = svc.name();
        let begin = Instant::now();
        let started = self.start_server(svc).await;
        let ms = begin.elapsed().as_millis() as u64;
        let instance = match started {
            Ok(instance) => instance,
            Err(e) => {
                let message = match why {
                    Trigger::Recovery => {
                        format!("could not start after a restart of Stratus: {e}")
                    }
                    Trigger::Crash => format!("restart after crash failed: {e}"),
                    Trigger::Resync => format!("start by the periodic check failed: {e}"),
                    Trigger::Request => return Err(e),
                };
                self.event(name, EventKind::StartFailed, &message, json!({}))
                    .await;
                return Err(e);
            }
        };
        let (kind, message) = match why {
            // Its event is the resync's, which says what was found.
            Trigger::Request | Trigger::Resync => return Ok(instance),
            Trigger::Recovery => {
                self.tend_commit_markers(svc).await;
                if instance.adopted {
                    (
                        EventKind::Adopted,
                        format!(
                            "running mariadbd (pid {}) adopted after a restart of Stratus",
                            instance.pid
                        ),
                    )
                } else {
                    (
                        EventKind::Started,
                        format!("started after a restart of Stratus in {ms} ms"),
                    )
                }
            }
            Trigger::Crash => (
                EventKind::Restarted,
                format!("restarted after crash in {ms} ms (crash recovery included)"),
            ),
        };
        self.event(
            name,
            kind,
            &message,
            json!({"pid": instance.pid, "start_ms": ms}),
        )
        .await;
        Ok(instance)
    }
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::*;
    use proptest::prelude::*;

    const ALL: [DbState; 6] = [
        DbState::Provisioning,
        DbState::Active,
        DbState::Suspended,
        DbState::Parked,
        DbState::Migrating,
        DbState::Deleted,
    ];

    fn seen(serving: bool, frozen: bool, held: bool) -> Seen {
        Seen {
            serving,
            process: serving,
            frozen,
            held,
            size: SizeSeen::Unknown,
        }
    }

    const SIZES: [SizeSeen; 3] = [SizeSeen::Unknown, SizeSeen::Matches, SizeSeen::Differs];

    #[test]
    fn a_database_that_should_run_is_started_and_a_parked_one_stopped() {
        assert_eq!(plan(DbState::Active, Seen::default()), [Thaw, Start]);
        assert_eq!(
            plan(DbState::Suspended, Seen::default()),
            [Hold, Thaw, Start, Empty, Freeze]
        );
        let orphan = Seen {
            process: true,
            ..Seen::default()
        };
        assert_eq!(plan(DbState::Parked, orphan), [Stop]);
        assert_eq!(plan(DbState::Parked, Seen::default()), []);
        assert_eq!(
            plan(DbState::Provisioning, seen(true, false, false)),
            [Abandon]
        );
    }

    #[test]
    fn what_is_already_so_is_left_alone() {
        assert_eq!(plan(DbState::Active, seen(true, false, false)), []);
        assert_eq!(plan(DbState::Suspended, seen(true, true, true)), []);
        // A host without a freezer: held, never frozen, and that is enough.
        assert_eq!(plan(DbState::Suspended, seen(true, false, true)), []);
        assert_eq!(plan(DbState::Deleted, seen(false, false, false)), []);
    }

    #[test]
    fn half_done_transitions_are_finished() {
        // A wake: thawed, given its size, then handed out.
        assert_eq!(
            plan(DbState::Active, seen(true, true, true)),
            [Thaw, Fill, Release]
        );
        // Stratus stopped during a wake, after the thaw: frozen no more, still held.
        assert_eq!(
            plan(DbState::Active, seen(true, false, true)),
            [Thaw, Fill, Release]
        );
        // A suspend: held back first, then emptied and frozen.
        assert_eq!(
            plan(DbState::Suspended, seen(true, false, false)),
            [Hold, Empty, Freeze]
        );
        assert_eq!(
            plan(DbState::Parked, seen(true, true, true)),
            [Stop, Release]
        );
    }

    #[test]
    fn a_running_server_at_another_size_is_resized_and_only_when_active() {
        let off = Seen {
            size: SizeSeen::Differs,
            ..seen(true, false, false)
        };
        assert_eq!(plan(DbState::Active, off), [Resize]);
        let fine = Seen {
            size: SizeSeen::Matches,
            ..off
        };
        assert_eq!(plan(DbState::Active, fine), []);
        let unknown = Seen {
            size: SizeSeen::Unknown,
            ..off
        };
        assert_eq!(plan(DbState::Active, unknown), [], "nothing to go on");
        // A migration owns its server's size; a frozen server cannot be looked at: its size is
        // looked at once thawed.
        assert_eq!(plan(DbState::Migrating, off), []);
        assert_eq!(plan(DbState::Active, seen(true, true, false)), [Thaw]);
    }

    #[test]
    fn a_size_matches_on_what_can_be_seen_and_the_pool_the_server_rounded_to() {
        let want = Resources {
            scu: 2,
            cpu_millis: 500,
            memory_bytes: 1 << 30,
            buffer_pool_bytes: 512 << 20,
        };
        let found = |c, m, b| SizeFound {
            cpu_millis: c,
            memory_bytes: m,
            buffer_pool_bytes: b,
        };
        let exact = found(Some(500), Some(1 << 30), Some(512 << 20));
        assert_eq!(size_seen(want, 512 << 20, exact), SizeSeen::Matches);
        // A limit not in whole pages reads back rounded down to one.
        let odd = Resources {
            memory_bytes: 1_000_000_000,
            ..want
        };
        let paged = found(
            Some(500),
            Some(1_000_000_000 / 4096 * 4096),
            Some(512 << 20),
        );
        assert_eq!(size_seen(odd, 512 << 20, paged), SizeSeen::Matches);
        let above = found(Some(500), Some(1_000_000_000 + 4096), Some(512 << 20));
        assert_eq!(size_seen(odd, 512 << 20, above), SizeSeen::Differs);
        // The server rounded the pool it was last asked for: what it reported then matches.
        let rounded = found(Some(500), Some(1 << 30), Some(640 << 20));
        assert_eq!(size_seen(want, 640 << 20, rounded), SizeSeen::Matches);
        assert_eq!(size_seen(want, 512 << 20, rounded), SizeSeen::Differs);
        // Limits moved and the pool not (a grow cut short), or the pool alone (a shrink).
        let grown = found(Some(1000), Some(2 << 30), Some(512 << 20));
        assert_eq!(size_seen(want, 512 << 20, grown), SizeSeen::Differs);
        let shrunk = found(Some(500), Some(1 << 30), Some(256 << 20));
        assert_eq!(size_seen(want, 512 << 20, shrunk), SizeSeen::Differs);
        // Without resource control, the pool alone decides; with nothing seen, nothing does.
        assert_eq!(
            size_seen(want, 512 << 20, found(None, None, Some(512 << 20))),
            SizeSeen::Matches
        );
        assert_eq!(
            size_seen(want, 512 << 20, found(Some(250), None, None)),
            SizeSeen::Differs
        );
        assert_eq!(
            size_seen(want, 512 << 20, found(None, None, None)),
            SizeSeen::Unknown
        );
    }

    /// A model of what each action does to what is seen.
    fn step(s: &mut Seen, a: Action, can_freeze: bool) -> bool {
        match a {
            Abandon => return false,
            Stop => {
                s.serving = false;
                s.process = false;
                s.frozen = false;
                s.size = SizeSeen::Unknown;
            }
            Thaw => s.frozen = false,
            // A server starts, and is filled, at its size.
            Start | Fill => {
                s.serving = true;
                s.process = true;
                s.size = SizeSeen::Matches;
            }
            Empty => {}
            Freeze => s.frozen = can_freeze,
            Hold => s.held = true,
            Release => s.held = false,
            Resize => s.size = SizeSeen::Matches,
        }
        true
    }

    proptest! {
        /// Level-triggered: applying a plan leaves nothing to do, from any starting point, with
        /// or without a freezer.
        #[test]
        fn a_plan_applied_converges(
            i in 0usize..6, z in 0usize..3,
            serving: bool, process: bool, frozen: bool, held: bool, can_freeze: bool,
        ) {
            let state = ALL[i];
            // As `seen` looks: only at a server that can answer and is not held.
            let size = if serving && !frozen && !held { SIZES[z] } else { SizeSeen::Unknown };
            let mut s = Seen { serving, process: process || serving, frozen: frozen && serving, held, size };
            let mut alive = true;
            for a in plan(state, s) {
                alive &= step(&mut s, a, can_freeze);
            }
            if alive {
                prop_assert_eq!(plan(state, s), Vec::<Action>::new(), "{:?} then {:?}", state, s);
                prop_assert_eq!(s.serving, state.wants_process() && state != DbState::Provisioning);
                prop_assert_eq!(s.held, state == DbState::Suspended);
            }
        }
    }
}
