//! Hydration: a database woken from `suspended` gets back the pages its buffer pool held, so
//! its hit ratio holds up after the wake instead of starting from an empty pool.
//!
//! MariaDB's own reload (`innodb_buffer_pool_load_now`) brings back nothing of an encrypted
//! table ([`stratus_runtime::hot_pages`]), and every database here is encrypted. So `empty`
//! notes the indexes that fill the pool before it shrinks it, and after the wake a task reads the
//! mostly-hot ones back with an index scan each, hottest first, in the background: the wake does
//! not wait for it, and the tenant's statements run meanwhile. A `hydrated` event says what was
//! read, index by index, with what it cost (the pages it looked up and read count in the
//! server's global buffer-pool counters too; `bench/lifecycle` takes them out of its hit ratio).
//!
//! What is left out: an index of which less than half was in the pool (reading it whole would
//! mostly bring in pages nobody asked for), indexes beyond what the woken pool can hold, and
//! partitions' subpartitions. A parked database's next server starts with an empty pool as well:
//! the list noted at its suspend, or asked of its server when it is parked straight from active,
//! is read back when it wakes. The list is kept in the catalog as well, so a wake after a
//! restart of Stratus reads it back too.

use crate::ControlPlane;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use stratus_core::scu::MIB;
use stratus_core::{DbState, EventKind, ServiceName};
use stratus_runtime::Runtime;
use stratus_runtime::RuntimeError;
use stratus_runtime::admin::{HotIndex, ServerAdmin, Warmed};
use stratus_store::Store;

/// Share of an index that must have been in the pool for it to be read back whole.
const MOSTLY_HOT: f64 = 0.5;
/// Share of the woken buffer pool that reading back may fill.
const POOL_SHARE: f64 = 0.8;
/// InnoDB's page (`innodb_page_size`, which Stratus leaves at its default).
const PAGE_BYTES: u64 = 16 * 1024;
/// Longest read of one index.
const INDEX_LIMIT_SECS: u64 = 30;
/// Longest a refill runs: what is not read by then is left, and the autoscaler counts the
/// server's CPU again.
const HYDRATION_LIMIT: std::time::Duration = std::time::Duration::from_secs(120);
/// Indexes listed one by one in the `hydrated` event.
const EVENT_INDEXES: usize = 100;
/// Sessions reading indexes back at once.
const SESSIONS: usize = 4;
/// CPU a woken server gets while its pool refills, if its size gives it less: at one SCU's
/// half core, shared with the tenant's first statements, reading back 64 MiB took 2 s
/// (`bench/lifecycle --hydration`), past the second in which it matters most.
pub const HYDRATION_CPU_MILLIS: u32 = 2000;

/// A refill under way: its number, and the handle that stops it.
pub(crate) struct Refill {
    number: u64,
    stop: Option<tokio::task::AbortHandle>,
}

/// The indexes to read back into a pool of `pool_bytes`, in order, and how many are left out.
pub fn plan(hot: &[HotIndex], pool_bytes: u64) -> (Vec<HotIndex>, usize) {
    let budget = (pool_bytes as f64 * POOL_SHARE) as u64 / PAGE_BYTES;
    let mut by_heat: Vec<&HotIndex> = hot.iter().collect();
    by_heat.sort_by_key(|h| std::cmp::Reverse(h.hot_pages));
    let mut used: u64 = 0;
    let mut chosen = Vec::new();
    for h in by_heat {
        let mostly_hot = h.hot_pages as f64 >= MOSTLY_HOT * h.size_pages as f64;
        if mostly_hot && used.saturating_add(h.size_pages) <= budget {
            used += h.size_pages;
            chosen.push(h.clone());
        }
    }
    let left_out = hot.len() - chosen.len();
    (chosen, left_out)
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Notes what fills a server's pool before `empty` shrinks it. A failure only costs the
    /// hydration.
    pub(crate) async fn note_hot_indexes(&self, name: &ServiceName, conn: &mut R::Admin) {
        let found = match conn.hot_indexes().await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(db = %name, "cannot list the buffer pool's hot indexes; the wake will not refill it: {e}");
                Vec::new()
            }
        };
        // In the catalog, so a wake after a restart of Stratus finds it too; not worth failing
        // the suspend or park over.
        let kept = (!found.is_empty())
            .then(|| serde_json::to_string(&found).ok())
            .flatten();
        if let Err(e) = self.store.set_hot_indexes(name, kept.as_deref()).await {
            tracing::warn!(db = %name, "cannot keep the hot index list; the wake will not refill the pool: {e}");
        }
    }

    /// Starts reading back what the server's pool held before it was emptied or stopped, now
    /// that it has `pool_bytes` again. The catalog's list is used once.
    pub(crate) async fn start_hydration(&self, name: &ServiceName, pool_bytes: u64) {
        let kept = match self.store.hot_indexes(name).await {
            Ok(Some(kept)) => kept,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(db = %name, "cannot read the hot index list from the catalog: {e}");
                return;
            }
        };
        let _ = self.store.set_hot_indexes(name, None).await;
        let Ok(hot) = serde_json::from_str::<Vec<HotIndex>>(&kept) else {
            return;
        };
        let (chosen, left_out) = plan(&hot, pool_bytes);
        let Some(me) = self.me.upgrade().filter(|_| !chosen.is_empty()) else {
            return;
        };
        let number = self.refills.fetch_add(1, Ordering::Relaxed);
        self.hydrating_map()
            .insert(name.clone(), Refill { number, stop: None });
        let task_name = name.clone();
        let task = tokio::spawn(async move {
            me.hydrate(&task_name, chosen, left_out).await;
            let mut map = me.hydrating_map();
            if map.get(&task_name).is_some_and(|r| r.number == number) {
                map.remove(&task_name);
            }
        });
        if let Some(r) = self
            .hydrating_map()
            .get_mut(name)
            .filter(|r| r.number == number)
        {
            r.stop = Some(task.abort_handle());
        }
    }

    fn hydrating_map(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceName, Refill>> {
        self.hydrating.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a woken server's pool is being refilled: its CPU is partly Stratus's, at a
    /// burst, and neither the autoscaler nor the resync counts it.
    pub(crate) fn is_hydrating(&self, name: &ServiceName) -> bool {
        self.hydrating_map().contains_key(name)
    }

    /// Stops a refill (its server is being emptied, stopped or deleted): what it reads would go
    /// nowhere, and its burst must not outlive it. Whoever stops it sets the limits next.
    pub(crate) fn stop_hydration(&self, name: &ServiceName) {
        if let Some(Refill { stop: Some(h), .. }) = self.hydrating_map().remove(name) {
            h.abort();
        }
    }

    async fn hydrate(self: &Arc<Self>, name: &ServiceName, chosen: Vec<HotIndex>, left_out: usize) {
        let (begin, started_ms) = (Instant::now(), stratus_core::time::now_ms());
        // The reads take CPU the woken database's own statements would otherwise wait behind.
        self.burst(name, true).await;
        let sessions = SESSIONS.min(chosen.len());
        let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
            chosen,
        )));
        let mut reading = tokio::task::JoinSet::new();
        for _ in 0..sessions {
            let (me, name, queue) = (self.clone(), name.clone(), queue.clone());
            reading.spawn(async move { me.read_back(&name, &queue, begin).await });
        }
        let (mut done, mut failed) = (Vec::new(), 0);
        let deadline = tokio::time::Instant::now() + HYDRATION_LIMIT;
        loop {
            match tokio::time::timeout_at(deadline, reading.join_next()).await {
                Ok(Some(Ok((ok, bad)))) => {
                    done.extend(ok);
                    failed += bad;
                }
                Ok(Some(Err(_))) => {}
                Ok(None) => break,
                // What is not read by now is not worth the autoscaler's blindness.
                Err(_) => {
                    reading.abort_all();
                    failed += sessions;
                    break;
                }
            }
        }
        // Left by sessions that lost their connection.
        failed += queue.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.burst(name, false).await;
        done.sort_by_key(|(_, _, ms)| *ms);
        let mut total = Warmed::default();
        for (_, w, _) in &done {
            total.add(*w);
        }
        let listed: Vec<_> = done
            .iter()
            .take(EVENT_INDEXES)
            .map(|(idx, w, ms)| {
                json!({"table": idx.table.to_string(), "index": idx.index,
                       "hot_pages": idx.hot_pages, "size_pages": idx.size_pages,
                       "pages_accessed": w.pages_accessed, "pages_read": w.pages_read,
                       "pages_prefetched": w.pages_prefetched, "done_ms": ms})
            })
            .collect();
        let (ms, read) = (begin.elapsed().as_millis() as u64, done.len());
        let pages = total.pages_read + total.pages_prefetched;
        self.event(
            name,
            EventKind::Hydrated,
            &format!(
                "buffer pool refilled after the wake in {ms} ms: {read} index(es) read back, {pages} pages ({} MiB) from disk; \
                 {left_out} left out (mostly cold, or beyond the pool){}",
                pages * PAGE_BYTES / MIB,
                if failed > 0 { format!(", {failed} not read (changed, gone, or suspended again)") } else { String::new() }
            ),
            json!({"started_ms": started_ms, "ms": ms, "indexes_read": read, "left_out": left_out,
                   "failed": failed, "pages_accessed": total.pages_accessed,
                   "pages_read": total.pages_read, "pages_prefetched": total.pages_prefetched,
                   "indexes": listed}),
        )
        .await;
    }

    /// Starts or ends the refill's CPU burst, for a database still awake at a size below it;
    /// under its lock, so a resize or suspend meanwhile keeps the limits it set.
    async fn burst(&self, name: &ServiceName, on: bool) {
        let _guard = self.lock(name).await;
        let svc = match self.load(name).await {
            Ok(svc) if svc.state == DbState::Active && !self.is_suspended(name) => svc,
            _ => return,
        };
        let r = self.resources(svc.scu);
        if r.cpu_millis >= HYDRATION_CPU_MILLIS {
            return;
        }
        let cpu = if on {
            HYDRATION_CPU_MILLIS
        } else {
            r.cpu_millis
        };
        if let Err(e) = self.runtime.set_limits(name, cpu, r.memory_bytes).await {
            tracing::warn!(db = %name, on, "cannot change the CPU burst of refilling the buffer pool: {e}");
        }
    }

    /// One session reading indexes off the shared queue until it is empty: what it read (with
    /// when it finished each, in ms from `begin`) and how many it could not.
    async fn read_back(
        &self,
        name: &ServiceName,
        queue: &std::sync::Mutex<std::collections::VecDeque<HotIndex>>,
        begin: Instant,
    ) -> (Vec<(HotIndex, Warmed, u64)>, usize) {
        let next = || queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        let (mut done, mut failed) = (Vec::new(), 0);
        // No repair of Stratus's account from here (`admin` would restart the server, and this
        // does not hold the database's lock): a refused login only costs the refill.
        let mut conn = match self.admin_login(name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(db = %name, "cannot refill the buffer pool: {e}");
                return (done, 0);
            }
        };
        while let Some(idx) = next() {
            // Suspended again meanwhile: its pool is at the floor, nothing to fill.
            if self.is_suspended(name) {
                failed += 1;
                continue;
            }
            match conn.warm_index(&idx, INDEX_LIMIT_SECS).await {
                Ok(w) => done.push((idx, w, begin.elapsed().as_millis() as u64)),
                // The table changed or went (a tenant's DDL), or the read ran out of time.
                Err(RuntimeError::Sql {
                    source: mysql_async::Error::Server(e),
                    ..
                }) => {
                    tracing::debug!(db = %name, table = %idx.table, index = %idx.index, "not read back: {e}");
                    failed += 1;
                }
                Err(e) => {
                    tracing::debug!(db = %name, "refilling the buffer pool stopped: {e}");
                    failed += 1;
                    break;
                }
            }
        }
        conn.close().await;
        (done, failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_runtime::hot_pages::TableName;

    fn idx(table: &str, hot: u64, size: u64) -> HotIndex {
        HotIndex {
            table: TableName {
                schema: "d".into(),
                table: table.into(),
                partition: None,
            },
            index: "PRIMARY".into(),
            hot_pages: hot,
            size_pages: size,
        }
    }

    fn names(v: &[HotIndex]) -> Vec<&str> {
        v.iter().map(|h| h.table.table.as_str()).collect()
    }

    #[test]
    fn hottest_first_and_only_what_is_mostly_hot() {
        let hot = [idx("a", 10, 10), idx("b", 90, 100), idx("cold", 10, 1000)];
        let (chosen, left_out) = plan(&hot, 1 << 30);
        assert_eq!(names(&chosen), ["b", "a"]);
        assert_eq!(left_out, 1);
    }

    #[test]
    fn what_the_woken_pool_cannot_hold_is_left_out() {
        // A 32 MiB pool: 80 % of it is 1,638 pages of 16 KiB.
        let hot = [
            idx("big", 2000, 2000),
            idx("fits", 1500, 1500),
            idx("too", 200, 200),
        ];
        let (chosen, left_out) = plan(&hot, 32 * MIB);
        assert_eq!(names(&chosen), ["fits"]);
        assert_eq!(left_out, 2);
        assert_eq!(plan(&[], 32 * MIB), (Vec::new(), 0));
    }
}
