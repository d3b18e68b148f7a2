//! The storage controller (the brief's auto-scaling storage): every database's data lives on a
//! volume whose size is a hard limit (`stratus-runtime`'s `local::volume`, a PVC on Kubernetes).
//! It starts small and is grown online, before it fills, up to the database's `storage_gb`:
//! when its use passes the brief's threshold for its size (60 % under 100 GiB, 80 % up to
//! 500 GiB, 95 % above), it grows by a step (doubling under 100 GiB, +50 % up to 500 GiB, +25 %
//! above; at least enough to bring the use back under the threshold). At `storage_gb` it grows
//! no more, and a write that does not fit fails in the server ("The table is full"), while
//! deleting data makes room again. Each growth, and the maximum met, is an event.
//!
//! The binary log is kept outside the volume (a binary log write that meets a full disk makes the
//! server wait for space, every client with it); the controller bounds it instead: past as many
//! bytes as the database's maximum, the logs before the current one are deleted (the binary log
//! archive of point-in-time restore, when it exists, must have them first).

use crate::ControlPlane;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use stratus_core::time::now_ms;
use stratus_core::{DbState, EventKind, ServiceName};
use stratus_runtime::Runtime;
use stratus_runtime::admin::ServerAdmin;
use stratus_store::Store;

const GIB: u64 = 1 << 30;
/// How often volumes are measured.
const TICK: Duration = Duration::from_secs(1);

/// The largest volume a database may have.
pub fn max_bytes(storage_gb: u32) -> u64 {
    u64::from(storage_gb) * GIB
}

/// A new database's first volume: 1 GiB (or its maximum, if smaller).
pub fn first_size(storage_gb: u32) -> u64 {
    GIB.min(max_bytes(storage_gb))
}

/// The share of a volume, in percent, past which it is grown.
pub fn threshold_pct(limit: u64) -> u64 {
    match limit {
        l if l < 100 * GIB => 60,
        l if l <= 500 * GIB => 80,
        _ => 95,
    }
}

/// The size a volume of `volume` bytes, whose file system holds `limit` bytes with `used` in
/// use, should grow to, if it is time, within `max`.
pub fn next_size(used: u64, limit: u64, volume: u64, max: u64) -> Option<u64> {
    if volume >= max || used.saturating_mul(100) < limit.saturating_mul(threshold_pct(volume)) {
        return None;
    }
    let step = match volume {
        v if v < 100 * GIB => v,
        v if v <= 500 * GIB => v / 2,
        v => v / 4,
    };
    // Enough that the use is back under the threshold of the new size, too (the file system's
    // own structures are the difference between the volume and what it holds).
    let overhead = volume.saturating_sub(limit);
    let enough = used.saturating_mul(100) / threshold_pct(volume) + overhead + 1;
    Some((volume + step).max(enough).min(max))
}

/// Whether a volume is at its maximum and (nearly) full.
pub fn full_at_max(used: u64, limit: u64, volume: u64, max: u64) -> bool {
    volume >= max && used.saturating_mul(100) >= limit.saturating_mul(FULL_PCT)
}

/// Use, in percent, at which a volume at its maximum counts as full.
const FULL_PCT: u64 = 95;

/// Longest wait for the server to purge its binary logs: a server waiting for disk space holds
/// the log's lock, and the controller must not wait with it.
const PURGE_TIMEOUT: Duration = Duration::from_secs(10);

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// The binary log outgrew its budget (as much as the database's maximum): the logs before
    /// the current one are deleted. It is kept outside the volume, so it is bounded here.
    async fn trim_logs(&self, svc: &stratus_core::DatabaseService, log_bytes: u64, budget: u64) {
        let name = svc.name();
        // What the archive has not copied yet goes there first.
        self.archive_logs(svc).await;
        let purged = tokio::time::timeout(PURGE_TIMEOUT, async {
            let mut conn = self.admin_unlocked(name).await?;
            let n = conn.purge_binary_logs().await;
            conn.close().await;
            Ok::<_, crate::ControlError>(n?)
        })
        .await;
        match purged {
            Ok(Ok(n)) => {
                tracing::info!(db = %name, log_bytes, budget, "binary log over its budget: {n} old file(s) deleted")
            }
            Ok(Err(e)) => {
                tracing::warn!(db = %name, "binary log over its budget, and not purged: {e}")
            }
            Err(_) => {
                tracing::warn!(db = %name, "binary log over its budget, and the purge did not answer within {PURGE_TIMEOUT:?}")
            }
        }
    }

    /// Room inside a database's table files (0 when it cannot be asked: then it is full).
    async fn free_in_tables(&self, name: &ServiceName) -> u64 {
        let free = tokio::time::timeout(PURGE_TIMEOUT, async {
            let mut conn = self.admin_unlocked(name).await?;
            let n = conn.free_in_tables().await;
            conn.close().await;
            Ok::<_, crate::ControlError>(n?)
        })
        .await;
        match free {
            Ok(Ok(n)) => n,
            _ => 0,
        }
    }

    /// The storage limit a database has reached where no volume enforces it, if it has.
    pub fn storage_full(&self, name: &str) -> Option<u64> {
        // Asked before every statement that adds data: nothing full (the rule) costs a load.
        if !self
            .any_storage_full
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let name = ServiceName::parse(name).ok()?;
        self.storage_full
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
            .copied()
    }

    fn set_storage_full(&self, name: &ServiceName, limit: Option<u64>) {
        let mut full = self.storage_full.lock().unwrap_or_else(|p| p.into_inner());
        match limit {
            Some(l) => full.insert(name.clone(), l),
            None => full.remove(name),
        };
        self.any_storage_full
            .store(!full.is_empty(), std::sync::atomic::Ordering::Relaxed);
    }

    /// A volume met its maximum: the database's writes that do not fit fail from now on.
    async fn report_full(
        &self,
        name: &ServiceName,
        storage_gb: u32,
        u: stratus_runtime::StorageUse,
    ) {
        self.event(
            name,
            EventKind::StorageFull,
            &format!(
                "storage full at its maximum of {storage_gb} GiB ({} MiB used): {} until data is deleted or storage_gb raised",
                u.used_bytes >> 20,
                if u.measured {
                    "statements that add data are refused with \"The table is full\""
                } else {
                    "writes that do not fit fail with \"The table is full\""
                }
            ),
            json!({"used_bytes": u.used_bytes, "limit_bytes": u.limit_bytes, "max_bytes": max_bytes(storage_gb)}),
        )
        .await;
    }

    /// Measures and grows volumes until the process ends.
    pub async fn run_storage(self: Arc<Self>) {
        let mut retries = crate::supervisor::Retries::new(Duration::from_secs(60));
        // Databases whose full volume was reported (once, until it is not full any more).
        let mut reported: HashSet<ServiceName> = HashSet::new();
        let mut tick = Self::ticker(TICK);
        loop {
            tick.tick().await;
            let Ok(services) = self.store.services().await else {
                continue;
            };
            for svc in services {
                let name = svc.name().clone();
                if !matches!(svc.state, DbState::Active | DbState::Suspended) {
                    continue;
                }
                if retries.waiting(&name, now_ms()) {
                    continue;
                }
                let Some(u) = self.runtime.storage(&name) else {
                    continue;
                };
                // The meter's storage term (`usage`); a parked database writes nothing, so its
                // last measurement stands.
                if let Err(e) = self.store.record_storage(&name, u.used_bytes).await {
                    tracing::warn!(db = %name, "cannot record storage use: {e}");
                }
                let max = max_bytes(svc.spec.storage_gb);
                if u.log_bytes > max {
                    self.trim_logs(&svc, u.log_bytes, max).await;
                }
                if u.measured && svc.state == DbState::Active {
                    // No volume: the limit is Stratus's to keep (the proxy refuses what adds
                    // data while it is reached). Files do not shrink when rows are deleted:
                    // the room a `DELETE` made inside them counts as free.
                    let full = u.used_bytes >= max
                        && u.used_bytes
                            .saturating_sub(self.free_in_tables(&name).await)
                            >= max;
                    self.set_storage_full(&name, full.then_some(max));
                    if !full {
                        reported.remove(&name);
                    } else if reported.insert(name.clone()) {
                        self.report_full(&name, svc.spec.storage_gb, u).await;
                    }
                    continue;
                }
                if u.measured {
                    continue; // suspended: it writes nothing, and its state stays as it was
                }
                let Some(to) = next_size(u.used_bytes, u.limit_bytes, u.volume_bytes, max) else {
                    if !full_at_max(u.used_bytes, u.limit_bytes, u.volume_bytes, max) {
                        reported.remove(&name);
                    } else if reported.insert(name.clone()) {
                        self.report_full(&name, svc.spec.storage_gb, u).await;
                    }
                    continue;
                };
                match self.runtime.grow_storage(&name, to).await {
                    Ok(now) => {
                        retries.succeeded(&name);
                        let pct = u.used_bytes as f64 * 100.0 / u.limit_bytes.max(1) as f64;
                        self.event(
                            &name,
                            EventKind::StorageGrown,
                            &format!(
                                "storage grown {} → {} MiB at {pct:.0} % used (maximum {} GiB)",
                                u.volume_bytes >> 20,
                                now >> 20,
                                svc.spec.storage_gb
                            ),
                            json!({"from_bytes": u.volume_bytes, "to_bytes": now, "used_bytes": u.used_bytes,
                                   "threshold_pct": threshold_pct(u.volume_bytes), "max_bytes": max}),
                        )
                        .await;
                    }
                    Err(e) => {
                        let wait = retries.failed(&name, now_ms());
                        tracing::warn!(db = %name, "cannot grow storage: {e}; trying again in {wait:?}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn volumes_grow_past_their_threshold_by_a_step_up_to_the_maximum() {
        let max = 10 * GIB;
        let n = |used, volume| next_size(used, volume, volume, max);
        assert_eq!(n(600 * MIB, GIB), None, "under 60 %");
        assert_eq!(n(615 * MIB, GIB), Some(2 * GIB), "doubled");
        // A burst far past the threshold: enough to bring it back under.
        assert_eq!(n(2 * GIB, 2 * GIB), Some(4 * GIB));
        assert_eq!(n(3 * GIB, 3 * GIB), Some(6 * GIB));
        assert_eq!(n(7 * GIB, 8 * GIB), Some(max), "capped");
        assert_eq!(n(10 * GIB, max), None, "at the maximum");
        // The file system holds less than the volume: the cap is on the volume.
        assert_eq!(next_size(1984 * MIB, 1984 * MIB, 2 * GIB, 2 * GIB), None);
        assert_eq!(threshold_pct(200 * GIB), 80);
        assert_eq!(
            next_size(170 * GIB, 200 * GIB, 200 * GIB, 1000 * GIB),
            Some(300 * GIB)
        );
        assert_eq!(threshold_pct(600 * GIB), 95);
        assert_eq!(
            next_size(580 * GIB, 600 * GIB, 600 * GIB, 1000 * GIB),
            Some(750 * GIB)
        );
        assert_eq!(first_size(1), GIB);
    }

    #[test]
    fn growth_never_passes_the_maximum_nor_leaves_use_past_the_threshold() {
        for limit in [GIB, 3 * GIB, 150 * GIB, 700 * GIB] {
            for pct in [0u64, 59, 60, 61, 80, 95, 99, 100] {
                let used = limit / 100 * pct;
                let max = 800 * GIB;
                if let Some(to) = next_size(used, limit, limit, max) {
                    assert!(to > limit && to <= max, "{limit} {pct}: {to}");
                    assert!(
                        to == max || used * 100 < to * threshold_pct(limit),
                        "{limit} {pct}: {to}"
                    );
                }
            }
        }
    }
}
