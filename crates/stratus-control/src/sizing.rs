//! Applying a size to a running server: the one place that does it, for a manual scale, the
//! autoscaler and a wake alike.
//!
//! Growing: the cgroup first, so the larger buffer pool never meets the old memory limit.
//! Shrinking: the buffer pool first, so the smaller limit never meets the old pool ([`steps`]).
//! `SET GLOBAL innodb_buffer_pool_size` may be adjusted or refused by the server (rounding,
//! `innodb_buffer_pool_size_max`; <https://mariadb.com/kb/en/innodb-buffer-pool/>), so its
//! warnings and the resulting size are read back and recorded, never assumed.

use crate::{ControlPlane, Result};
use stratus_core::{DatabaseService, Resources, ServiceName};
use stratus_runtime::Runtime;
use stratus_runtime::admin::ServerAdmin;
use stratus_store::Store;

/// What a resize really did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub buffer_pool_requested: u64,
    pub buffer_pool_actual: u64,
    pub warnings: Vec<String>,
}

/// One part of a resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The CPU quota and memory limit.
    Limits,
    BufferPool,
}

/// The order of a resize from `from` to `to`: the buffer pool never meets a memory limit too
/// small for it.
pub fn steps(from: Resources, to: Resources) -> [Step; 2] {
    if to.memory_bytes >= from.memory_bytes {
        [Step::Limits, Step::BufferPool]
    } else {
        [Step::BufferPool, Step::Limits]
    }
}

/// CPU a growing buffer pool gets while it grows: InnoDB maps the new memory with
/// `MAP_POPULATE`, so one thread of the server has the kernel zero all of it before the
/// statement returns, about 0.3 s per GiB, and no query runs meanwhile. At half a core (one
/// SCU) that doubles; at a suspended server's floor it is ten times as long.
pub const GROWTH_CPU_MILLIS: u32 = 1000;

/// The CPU quota to hold while the pool grows from `from` to `to`, if it is more than `to`'s:
/// only for a pool that grows under limits already raised (a grow whose memory does not
/// shrink, so the limits step came first).
pub fn growth_burst(from: Resources, to: Resources) -> Option<u32> {
    let grows = to.buffer_pool_bytes > from.buffer_pool_bytes;
    let limits_first = steps(from, to)[0] == Step::Limits;
    (grows && limits_first && to.cpu_millis < GROWTH_CPU_MILLIS).then_some(GROWTH_CPU_MILLIS)
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Moves a running server from `from` to `to`, whole or not at all.
    pub(crate) async fn apply_size(
        &self,
        name: &ServiceName,
        from: Resources,
        to: Resources,
    ) -> Result<Applied> {
        let (applied, conn) = self.resize(name, from, to).await?;
        conn.close().await;
        Ok(applied)
    }

    /// Records the buffer pool the server made of a resize, if the catalog holds another: the
    /// reconciler compares the running server with it. Reads the entry afresh, so a caller's
    /// older copy of `svc` changes nothing else. Caller holds the lock.
    pub(crate) async fn record_pool(&self, svc: &DatabaseService, applied: &Applied) -> Result<()> {
        if applied.buffer_pool_actual != svc.buffer_pool_bytes {
            let mut now = self.load(svc.name()).await?;
            now.buffer_pool_bytes = applied.buffer_pool_actual;
            self.store.update_service(&now).await?;
        }
        Ok(())
    }

    /// [`Self::apply_size`], handing back the connection it logged in with. A grow raises the
    /// limits before logging in: the load waiting for CPU gets it at once, even from a server
    /// too starved to answer a login quickly; a growing pool gets [`growth_burst`] while it
    /// grows. Limits already moved are put back if the login
    /// or the pool fails (a server that refuses Stratus is restarted at `from`, the size the
    /// catalog still holds, to restore its account).
    pub(crate) async fn resize(
        &self,
        name: &ServiceName,
        from: Resources,
        to: Resources,
    ) -> Result<(Applied, R::Admin)> {
        let mut limits_moved = false;
        let mut done = None;
        for step in steps(from, to) {
            match step {
                Step::Limits => {
                    self.runtime
                        .set_limits(name, to.cpu_millis, to.memory_bytes)
                        .await?;
                    limits_moved = true;
                }
                Step::BufferPool => {
                    let pool = async {
                        let mut conn = self.admin(name).await?;
                        // Only after the limits step, which a burst needs too.
                        let burst = growth_burst(from, to);
                        if limits_moved {
                            // The login may have restarted the server to restore Stratus's
                            // account, at the catalog's (old) size: the limits again, first.
                            let cpu = burst.unwrap_or(to.cpu_millis);
                            self.runtime.set_limits(name, cpu, to.memory_bytes).await?;
                        }
                        let begin = std::time::Instant::now();
                        let pool = conn.resize_buffer_pool(to.buffer_pool_bytes).await?;
                        tracing::debug!(db = %name, ms = begin.elapsed().as_millis() as u64,
                            from = from.buffer_pool_bytes, to = to.buffer_pool_bytes, ?burst,
                            "buffer pool resized");
                        if burst.is_some() {
                            // The pool is at `to` now: nothing is rolled back for this. A quota
                            // left high is found by the reconciler's resync.
                            if let Err(e) = self
                                .runtime
                                .set_limits(name, to.cpu_millis, to.memory_bytes)
                                .await
                            {
                                tracing::warn!(db = %name, "cannot end the CPU burst of a growing buffer pool: {e}");
                            }
                        }
                        Ok::<_, crate::ControlError>((pool, conn))
                    }
                    .await;
                    match pool {
                        Ok(p) => done = Some(p),
                        Err(e) => {
                            if limits_moved {
                                let _ = self
                                    .runtime
                                    .set_limits(name, from.cpu_millis, from.memory_bytes)
                                    .await;
                            }
                            return Err(e);
                        }
                    }
                }
            }
        }
        let Some(((actual, warnings), conn)) = done else {
            return Err(crate::ControlError::Internal(
                "a resize without a buffer pool step".into(),
            ));
        };
        Ok((
            Applied {
                buffer_pool_requested: to.buffer_pool_bytes,
                buffer_pool_actual: actual,
                warnings,
            },
            conn,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(memory_bytes: u64) -> Resources {
        Resources {
            scu: 0,
            cpu_millis: 0,
            memory_bytes,
            buffer_pool_bytes: memory_bytes / 2,
        }
    }

    #[test]
    fn limits_lead_a_grow_and_follow_a_shrink() {
        assert_eq!(steps(size(1), size(2)), [Step::Limits, Step::BufferPool]);
        assert_eq!(steps(size(2), size(1)), [Step::BufferPool, Step::Limits]);
        // Same memory (a CPU-only change): limits first, the pool is unchanged anyway.
        assert_eq!(steps(size(2), size(2)), [Step::Limits, Step::BufferPool]);
    }

    #[test]
    fn a_growing_pool_gets_a_core_unless_its_size_gives_more() {
        let at = |memory_bytes, cpu_millis| Resources {
            cpu_millis,
            ..size(memory_bytes)
        };
        assert_eq!(growth_burst(at(1, 50), at(4, 500)), Some(GROWTH_CPU_MILLIS));
        assert_eq!(growth_burst(at(1, 500), at(4, 2000)), None, "more already");
        assert_eq!(growth_burst(at(4, 2000), at(1, 500)), None, "shrinks");
        assert_eq!(growth_burst(at(4, 500), at(4, 1000)), None, "CPU only");
        // A claimed spare: same limits, a small pool grown to the database's.
        let spare = Resources {
            buffer_pool_bytes: 16 << 20,
            ..at(4 << 30, 500)
        };
        assert_eq!(
            growth_burst(spare, at(4 << 30, 500)),
            Some(GROWTH_CPU_MILLIS)
        );
    }
}
