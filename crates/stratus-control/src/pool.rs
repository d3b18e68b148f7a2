//! The warm pool (the brief's "Pre-Fabricated Database Pools"): spare servers already running,
//! owned by nobody. Creating a database claims one (checked out, secured with fresh admin
//! credentials and the user's account, sized, routed) instead of starting a server, which
//! takes a create from a few hundred milliseconds to a few dozen. The pool refills in the
//! background; its target follows the recent creation rate between a minimum and a maximum.

use crate::ControlPlane;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use stratus_core::Tier;
use stratus_core::time::now_ms;
use stratus_runtime::{Runtime, Spare};
use stratus_store::Store;

/// Pool sizing; an installation setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PoolConfig {
    /// Spares kept ready at least (0 turns the pool off).
    pub min: usize,
    /// Spares kept ready at most, however fast databases are being created.
    pub max: usize,
    /// Spares kept with a new database's buffer pool already grown (see [`presize_due`]).
    pub presized: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min: 2,
            max: 8,
            presized: 1,
        }
    }
}

/// How far back creations count towards the target.
pub const DEMAND_WINDOW_MS: i64 = 5 * 60_000;
/// Re-evaluation of the target when nothing else wakes the refiller, and the pause after a
/// spare failed to start.
const REVIEW: Duration = Duration::from_secs(5);

/// How long the refiller leaves the host to a lone create that claimed a spare, while at
/// least [`QUIET_SLACK`] others are still ready: a spare's start takes a core for about 0.3 s,
/// and beside it the create itself took 17 ms instead of 7 at the median (`bench/connect`).
/// Otherwise, and in a burst (the previous create less than [`BURST_GAP`] before), the pool
/// refills at once: held back at the first create of a burst of 3 per second, with two spares
/// ready, it ran dry at the third (`bench/density --bursts`).
const QUIET_AFTER_CLAIM: Duration = Duration::from_millis(300);

/// Spares still ready after a claim for the refiller to hold back: the next create, even a
/// third of a second later, still finds one.
const QUIET_SLACK: usize = 2;

/// Creates closer together than this are a burst, which the pool must keep up with.
const BURST_GAP: Duration = Duration::from_secs(1);

/// How long a create that finds no spare ready waits for one already on its way before it
/// starts a server of its own ([`ControlPlane::take_spare_soon`]). A spare's start takes about
/// 0.3 s of a busy host's time and a cold start from the template more, so a start in flight
/// is nearly always the sooner; past this something is wrong with it.
const SPARE_WAIT: Duration = Duration::from_secs(2);

/// How many spares start side by side: twice the host's cores (a start takes about 0.15 s of
/// CPU, `bench/density`), so a burst of creates is met by several at once rather than one after
/// the other.
fn starts_at_once() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
}

#[derive(Debug, Default)]
pub(crate) struct PoolState {
    /// Shutting down: make no more spares, and remove any that finishes starting.
    closed: bool,
    ready: Vec<Spare>,
    starting: usize,
    /// Ready spares taken out of `ready` while their pool grows.
    presizing: usize,
    /// The nodes of the spares on their way: those starting, once placed, and those growing.
    coming: Vec<String>,
    /// The servers do not make the presized size exactly: presizing is pointless.
    presize_off: bool,
    /// After a spare failed to start: no new start before this.
    retry_at: Option<tokio::time::Instant>,
    /// When databases were created recently.
    creates: VecDeque<i64>,
    /// No spare starts or grows before this: a create just claimed one, and its first client
    /// is about to log in (see [`QUIET_AFTER_CLAIM`]).
    quiet_until: Option<tokio::time::Instant>,
    /// The last claim or attempt at one, on the clock `quiet_until` is on.
    last_create: Option<tokio::time::Instant>,
}

impl PoolState {
    /// A spare on its way to `node` has arrived (or failed to).
    fn arrived(&mut self, node: &str) {
        if let Some(i) = self.coming.iter().position(|n| n == node) {
            self.coming.swap_remove(i);
        }
    }
}

/// What `stratus status` shows of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PoolStatus {
    pub ready: usize,
    /// Of the ready ones, those whose pool is already a new database's.
    #[serde(default)]
    pub presized: usize,
    pub starting: usize,
    pub target: usize,
    pub min: usize,
    pub max: usize,
}

/// The pool's target: the minimum plus one spare per creation in the demand window, capped.
pub fn target(cfg: PoolConfig, recent_creates: usize) -> usize {
    if cfg.min == 0 && cfg.max == 0 {
        return 0;
    }
    (cfg.min + recent_creates).clamp(cfg.min, cfg.max.max(cfg.min))
}

/// Whether to grow one more spare's buffer pool to a new database's now. A spare idles on
/// 16 MiB; growing InnoDB's pool to a database's gigabyte makes the kernel zero that memory
/// on the spot (0.3 s of CPU per GiB, 0.6–0.7 s at one SCU's quota) while the server answers
/// nothing, which would otherwise sit on every create's path. A presized spare holds that
/// memory while it waits, so only `want` of them are kept, and one grows at a time.
pub fn presize_due(unsized_ready: usize, presized: usize, presizing: usize, want: usize) -> bool {
    presizing == 0 && presized < want && unsized_ready > 0
}

/// What the refiller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolStep {
    /// Start a spare.
    Start,
    /// Remove a ready spare beyond the target.
    Remove,
    /// Nothing until demand changes or a spare is taken.
    Wait,
}

/// The pool's next step, from the spares ready and starting and its target. Spares starting
/// count as made, so a slow start is not doubled; only ready ones can be removed.
pub fn next_step(ready: usize, starting: usize, target: usize) -> PoolStep {
    if ready > target {
        PoolStep::Remove
    } else if ready + starting < target {
        PoolStep::Start
    } else {
        PoolStep::Wait
    }
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    fn pool_state(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pool_status(&self) -> PoolStatus {
        let now = now_ms();
        let st = self.pool_state();
        let recent = st
            .creates
            .iter()
            .filter(|t| now - **t <= DEMAND_WINDOW_MS)
            .count();
        PoolStatus {
            ready: st.ready.len() + st.presizing,
            presized: st.ready.iter().filter(|s| self.is_presized(s)).count(),
            starting: st.starting,
            target: target(self.cfg.pool, recent),
            min: self.cfg.pool.min,
            max: self.cfg.pool.max,
        }
    }

    /// The size of a database created with the defaults (one SCU), whose buffer pool presized
    /// spares have.
    fn presized(&self) -> stratus_core::Resources {
        self.resources(1)
    }

    fn is_presized(&self, spare: &Spare) -> bool {
        spare.buffer_pool_bytes == self.presized().buffer_pool_bytes
    }

    /// A spare on `node` to claim, if one is ready, preferring one whose pool is already
    /// `buffer_pool_bytes`; counts the creation towards demand either way.
    pub(crate) fn take_spare(&self, node: &str, buffer_pool_bytes: u64) -> Option<Spare> {
        let spare = {
            let mut st = self.pool_state();
            st.creates.push_back(now_ms());
            let now = tokio::time::Instant::now();
            let lone = st.last_create.is_none_or(|t| now - t >= BURST_GAP);
            st.last_create = Some(now);
            let spare = self.pick(&mut st, node, buffer_pool_bytes);
            let left_here = st.ready.iter().filter(|s| s.node == node).count();
            st.quiet_until = (lone && spare.is_some() && left_here >= QUIET_SLACK)
                .then(|| now + QUIET_AFTER_CLAIM);
            spare
        };
        self.pool_wake.notify_one();
        spare
    }

    /// As [`Self::take_spare`], but when none is ready while some are starting or growing
    /// their pool on `node` (or not yet placed), the first of those to be ready on `node`, for
    /// up to [`SPARE_WAIT`]: a
    /// server started cold beside them would take longer than they still need and slow them
    /// down, which is how a burst's creates came to find the pool dry one after another.
    pub(crate) async fn take_spare_soon(
        &self,
        node: &str,
        buffer_pool_bytes: u64,
    ) -> Option<Spare> {
        if let Some(spare) = self.take_spare(node, buffer_pool_bytes) {
            return Some(spare);
        }
        let deadline = tokio::time::Instant::now() + SPARE_WAIT;
        loop {
            let settled = self.pool_settled.notified();
            tokio::pin!(settled);
            // Registered before the look, so a spare that is ready just after it is not missed.
            settled.as_mut().enable();
            {
                let mut st = self.pool_state();
                // First: the spare waited for may be what woke this look.
                if !st.closed
                    && let Some(spare) = self.pick(&mut st, node, buffer_pool_bytes)
                {
                    drop(st);
                    self.pool_wake.notify_one();
                    return Some(spare);
                }
                // A start not yet placed may be placed here.
                let unplaced = st.starting + st.presizing > st.coming.len();
                if st.closed || !(unplaced || st.coming.iter().any(|n| n == node)) {
                    return None;
                }
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return None;
            }
        }
    }

    /// Takes the ready spare on `node` that suits a pool of `buffer_pool_bytes` best: that
    /// size, else one not presized (those are kept for the default size), else any.
    fn pick(&self, st: &mut PoolState, node: &str, buffer_pool_bytes: u64) -> Option<Spare> {
        let here = |s: &Spare| s.node == node;
        let i = st
            .ready
            .iter()
            .rposition(|s| here(s) && s.buffer_pool_bytes == buffer_pool_bytes)
            .or_else(|| (st.ready.iter()).rposition(|s| here(s) && !self.is_presized(s)))
            .or_else(|| st.ready.iter().rposition(here))?;
        Some(st.ready.remove(i))
    }

    /// Keeps the pool at its target until the process ends. Spares an earlier run left behind
    /// are removed first: their passwords died with it.
    pub async fn run_pool(self: Arc<Self>) {
        for key in self.runtime.unclaimed_spares() {
            if let Err(e) = self.runtime.destroy_spare(&key).await {
                tracing::warn!("cannot remove leftover spare {key}: {e}");
            }
        }
        let max_resources = self.resources(Tier::STANDARD_MAX_SCU);
        let presized = self.presized();
        let at_once = starts_at_once();
        loop {
            let (step, surplus, to_presize, started, pause) = {
                let mut st = self.pool_state();
                let starting_before = st.starting;
                if st.closed {
                    return;
                }
                let now = now_ms();
                while st
                    .creates
                    .front()
                    .is_some_and(|t| now - *t > DEMAND_WINDOW_MS)
                {
                    st.creates.pop_front();
                }
                let want = target(self.cfg.pool, st.creates.len());
                let step = next_step(st.ready.len() + st.presizing, st.starting, want);
                // Starts and growths wait while a create has the host (removals do not).
                let quiet = st
                    .quiet_until
                    .map(|at| at.saturating_duration_since(tokio::time::Instant::now()))
                    .filter(|d| !d.is_zero() && !st.ready.is_empty());
                let is_presized = |s: &Spare| self.is_presized(s);
                let (mut surplus, mut to_presize) = (None, None);
                match step {
                    // A presized spare is the last to go.
                    PoolStep::Remove => {
                        surplus = match st.ready.iter().position(|s| !is_presized(s)) {
                            Some(i) => Some(st.ready.remove(i)),
                            None => st.ready.pop(),
                        }
                    }
                    // Spares start side by side, up to what the host takes at once; after a
                    // failure, not before the pause is over.
                    // After a failure, one at a time until one works.
                    PoolStep::Start
                        if quiet.is_none()
                            && st.starting < at_once
                            && st.retry_at.is_none_or(|at| {
                                at <= tokio::time::Instant::now() && st.starting == 0
                            }) =>
                    {
                        st.starting += 1
                    }
                    PoolStep::Start => {}
                    PoolStep::Wait if quiet.is_some() => {}
                    PoolStep::Wait => {
                        let ready_presized = st.ready.iter().filter(|s| is_presized(s)).count();
                        let unsized_ready = st.ready.len() - ready_presized;
                        let want_presized = if st.presize_off {
                            0
                        } else {
                            self.cfg.pool.presized.min(want)
                        };
                        if presize_due(unsized_ready, ready_presized, st.presizing, want_presized) {
                            let i = st.ready.iter().rposition(|s| !is_presized(s));
                            to_presize = i.map(|i| st.ready.remove(i));
                            if let Some(spare) = &to_presize {
                                st.presizing += 1;
                                st.coming.push(spare.node.clone());
                            }
                        }
                    }
                }
                let started = st.starting > starting_before;
                // What is left of a pause after a failure, seen under the same lock.
                let retry = st
                    .retry_at
                    .map(|at| at.saturating_duration_since(tokio::time::Instant::now()))
                    .filter(|d| !d.is_zero());
                let pause = match (retry, quiet) {
                    (Some(r), Some(q)) => Some(r.min(q)),
                    (r, q) => r.or(q),
                };
                (step, surplus, to_presize, started, pause)
            };
            if let Some(spare) = surplus {
                let _ = self.runtime.destroy_spare(&spare.key).await;
                continue;
            }
            if let Some(mut spare) = to_presize {
                let want = presized.buffer_pool_bytes;
                let grown = self.runtime.presize_spare(&spare, presized).await;
                let (failed, orphan) = {
                    let mut st = self.pool_state();
                    st.arrived(&spare.node);
                    match grown {
                        Ok(_) if st.closed => (None, Some(spare)),
                        Ok(bytes) => {
                            if bytes != want {
                                // The servers round this size (another chunk size): no spare
                                // will ever be at it, so stop trying. The spare is kept at the
                                // size it has, and a create resizes it as any other.
                                tracing::warn!(
                                    "a spare's server made a buffer pool of {bytes} bytes of \
                                     {want}: presized spares are off until Stratus restarts"
                                );
                                st.presize_off = true;
                            }
                            spare.buffer_pool_bytes = bytes;
                            st.ready.push(spare);
                            st.presizing -= 1;
                            (None, None)
                        }
                        // Its pool is in an unknown state: not worth keeping.
                        Err(e) => (Some(e), Some(spare)),
                    }
                };
                let what = "presize a spare of the warm pool";
                self.settle(orphan, |st| &mut st.presizing, failed, what)
                    .await;
                continue;
            }
            if step == PoolStep::Start && started {
                // In the background: the loop goes on to start the next one beside it.
                let cp = self.clone();
                tokio::spawn(async move {
                    cp.start_spare(max_resources).await;
                    cp.pool_wake.notify_one();
                });
                continue;
            }
            // Waiting: for a claim, a start's end, or the end of a pause after a failure.
            let wait = pause.map_or(REVIEW, |p| p.min(REVIEW));
            let _ = tokio::time::timeout(wait, self.pool_wake.notified()).await;
        }
    }

    /// Starts one spare where the next database would go, and adds it to the pool (or removes
    /// it, if the pool closed meanwhile). A failure pauses further starts for [`REVIEW`].
    async fn start_spare(&self, max_resources: stratus_core::Resources) {
        {
            let mut st = self.pool_state();
            if st.closed {
                // Drained before it began: nothing to start, and nothing to wait for.
                st.starting -= 1;
                drop(st);
                self.pool_settled.notify_waiters();
                return;
            }
        }
        // Where the next database would go; a spare elsewhere would wait unclaimed.
        let need = self.need_of_new(1, 0);
        let placed = self.place_new(need).await;
        if let Ok(placed) = &placed {
            self.pool_state().coming.push(placed.node.clone());
            // A create waiting on another node need not wait for this one.
            self.pool_settled.notify_waiters();
        }
        let made = match &placed {
            Ok(placed) => {
                self.runtime
                    .provision_spare(max_resources, &placed.node, &crate::accounts::spare_sql())
                    .await
            }
            Err(e) => Err(stratus_runtime::RuntimeError::Other(e.to_string())),
        };
        let (failed, orphan) = {
            let mut st = self.pool_state();
            if let Ok(placed) = &placed {
                st.arrived(&placed.node);
            }
            match made {
                Ok(spare) if st.closed => (None, Some(spare)),
                Ok(spare) => {
                    st.ready.push(spare);
                    st.starting -= 1;
                    st.retry_at = None;
                    (None, None)
                }
                Err(e) => {
                    st.starting -= 1;
                    st.retry_at = Some(tokio::time::Instant::now() + REVIEW);
                    (Some(e), None)
                }
            }
        };
        if let Some(spare) = orphan {
            let _ = self.runtime.destroy_spare(&spare.key).await;
            self.pool_state().starting -= 1;
        }
        self.pool_settled.notify_waiters();
        if let Some(e) = failed {
            tracing::warn!(
                "cannot start a spare for the warm pool: {e}; trying again in {REVIEW:?}"
            );
        }
    }

    /// The end of a spare's start or presize. A spare nobody may keep is removed before it
    /// stops counting in `busy`, so a drain waits for its server; a failure backs off.
    async fn settle(
        &self,
        orphan: Option<Spare>,
        busy: fn(&mut PoolState) -> &mut usize,
        failed: Option<impl std::fmt::Display>,
        what: &str,
    ) {
        if let Some(spare) = orphan {
            let _ = self.runtime.destroy_spare(&spare.key).await;
            *busy(&mut self.pool_state()) -= 1;
        }
        self.pool_settled.notify_waiters();
        if let Some(e) = failed {
            tracing::warn!("cannot {what}: {e}");
            // Back off before trying again, not a readiness wait.
            tokio::time::sleep(REVIEW).await;
        }
    }

    /// Stops every spare (Stratus is shutting down).
    pub async fn drain_pool(&self) {
        let spares = {
            let mut st = self.pool_state();
            st.closed = true;
            std::mem::take(&mut st.ready)
        };
        for spare in spares {
            let _ = self.runtime.destroy_spare(&spare.key).await;
        }
        // A spare still starting or growing is removed by the refiller when it is done: wait
        // for that, or its server would outlive Stratus.
        loop {
            let settled = self.pool_settled.notified();
            let busy = {
                let st = self.pool_state();
                st.starting + st.presizing
            };
            if busy == 0 {
                return;
            }
            settled.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_starting_count_and_only_ready_ones_are_removed() {
        assert_eq!(next_step(0, 0, 2), PoolStep::Start);
        assert_eq!(next_step(1, 1, 2), PoolStep::Wait, "one on its way");
        assert_eq!(next_step(3, 0, 2), PoolStep::Remove);
        assert_eq!(
            next_step(2, 3, 2),
            PoolStep::Wait,
            "starting ones are not removed"
        );
        assert_eq!(next_step(0, 0, 0), PoolStep::Wait, "off");
    }

    #[test]
    fn one_spare_grows_at_a_time_up_to_the_number_wanted() {
        assert!(presize_due(2, 0, 0, 1));
        assert!(!presize_due(2, 0, 1, 2), "one at a time");
        assert!(!presize_due(1, 1, 0, 1), "enough");
        assert!(!presize_due(0, 0, 0, 1), "none to grow");
        assert!(!presize_due(2, 0, 0, 0), "off");
    }

    #[test]
    fn target_follows_demand_within_bounds() {
        let cfg = PoolConfig {
            min: 2,
            max: 5,
            presized: 1,
        };
        assert_eq!(target(cfg, 0), 2);
        assert_eq!(target(cfg, 2), 4);
        assert_eq!(target(cfg, 50), 5);
        let sized = |min, max| PoolConfig {
            min,
            max,
            presized: 0,
        };
        assert_eq!(target(sized(0, 0), 10), 0, "off");
        assert_eq!(target(sized(3, 1), 0), 3, "a max below the min is the min");
    }
}
