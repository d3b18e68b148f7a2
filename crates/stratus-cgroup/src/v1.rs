//! cgroup v1 backend: one directory per controller hierarchy.
//!
//! * CPU quota: CFS bandwidth control, `cpu.cfs_period_us` /
//!   `cpu.cfs_quota_us` (<https://docs.kernel.org/scheduler/sched-bwc.html>).
//! * CPU usage: `cpuacct.usage` in ns
//!   (<https://docs.kernel.org/admin-guide/cgroup-v1/cpuacct.html>).
//! * Memory: `memory.limit_in_bytes`, `memory.usage_in_bytes`
//!   (<https://docs.kernel.org/admin-guide/cgroup-v1/memory.html>).
//! * Freezer: `freezer.state` FROZEN/FREEZING/THAWED
//!   (<https://docs.kernel.org/admin-guide/cgroup-v1/freezer-subsystem.html>).
//!
//! cpu and cpuacct may be co-mounted (same directory) or separate; every
//! operation that touches "all hierarchies" deduplicates directories so a
//! co-mounted hierarchy is written once.

use std::path::{Path, PathBuf};

use crate::files;
use crate::{Error, Result, Usage};

/// CFS period used for every quota we set: the kernel default (100 ms), so
/// millicores map to `quota = millis * 100` µs.
pub(crate) const PERIOD_US: u64 = 100_000;

/// v1 reports "no limit" as the largest page-aligned `i64`
/// (9223372036854771712); anything this large is treated as unlimited.
const UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// Directories of one group (or the parent, or the mount roots) in each
/// v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1Dirs {
    pub cpu: PathBuf,
    pub cpuacct: Option<PathBuf>,
    pub memory: PathBuf,
    pub freezer: Option<PathBuf>,
}

impl V1Dirs {
    /// The same relative group in every hierarchy.
    pub fn join(&self, rel: &str) -> V1Dirs {
        V1Dirs {
            cpu: self.cpu.join(rel),
            cpuacct: self.cpuacct.as_ref().map(|p| p.join(rel)),
            memory: self.memory.join(rel),
            freezer: self.freezer.as_ref().map(|p| p.join(rel)),
        }
    }

    /// Each distinct directory once (co-mounted hierarchies share one).
    pub fn distinct(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::with_capacity(4);
        let all = [
            Some(self.cpu.as_path()),
            self.cpuacct.as_deref(),
            Some(self.memory.as_path()),
            self.freezer.as_deref(),
        ];
        for dir in all.into_iter().flatten() {
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
        out
    }

    pub fn set_cpu_limit(&self, millicores: Option<u32>) -> Result<()> {
        let quota = self.cpu.join("cpu.cfs_quota_us");
        let period = self.cpu.join("cpu.cfs_period_us");
        match millicores {
            Some(m) => {
                let q = quota_us(&quota, m)?;
                files::write(&period, &PERIOD_US.to_string())?;
                files::write(&quota, &q.to_string())
            }
            None => {
                // Quota first: removing the limit is always accepted.
                files::write(&quota, "-1")?;
                files::write(&period, &PERIOD_US.to_string())
            }
        }
    }

    pub fn cpu_limit(&self) -> Result<Option<u32>> {
        let quota_path = self.cpu.join("cpu.cfs_quota_us");
        let quota = files::parse_i64(&quota_path, &files::read(&quota_path)?)?;
        let Ok(quota) = u64::try_from(quota) else {
            return Ok(None); // -1
        };
        let period_path = self.cpu.join("cpu.cfs_period_us");
        let period = files::read_u64(&period_path)?;
        millicores(&period_path, quota, period).map(Some)
    }

    pub fn set_memory_limit(&self, bytes: Option<u64>) -> Result<()> {
        let path = self.memory.join("memory.limit_in_bytes");
        match bytes {
            Some(b) => files::write(&path, &b.to_string()),
            None => files::write(&path, "-1"),
        }
    }

    pub fn memory_limit(&self) -> Result<Option<u64>> {
        let v = files::read_u64(&self.memory.join("memory.limit_in_bytes"))?;
        Ok((v < UNLIMITED_THRESHOLD).then_some(v))
    }

    pub fn usage(&self) -> Result<Usage> {
        let cpu_ns = match &self.cpuacct {
            Some(dir) => files::read_u64(&dir.join("cpuacct.usage"))?,
            // Without cpuacct, only some kernels expose usage in cpu.stat.
            None => {
                let path = self.cpu.join("cpu.stat");
                let text = files::read(&path)?;
                files::keyed_u64(&path, &text, "usage_usec")
                    .map_err(|_| Error::Unsupported {
                        path: path.clone(),
                        what: "CPU accounting (no cpuacct hierarchy)",
                    })?
                    .saturating_mul(1000)
            }
        };
        let memory_bytes = files::read_u64(&self.memory.join("memory.usage_in_bytes"))?;
        Ok(Usage {
            cpu_ns,
            memory_bytes,
        })
    }

    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.distinct()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// The memory hierarchy is authoritative for membership: it is the one
    /// that matters for the limit, and it always exists in this backend.
    pub fn pids(&self) -> Result<Vec<u32>> {
        files::read_pids(&self.memory.join("cgroup.procs"))
    }

    pub fn can_freeze(&self) -> bool {
        self.freezer
            .as_ref()
            .is_some_and(|d| d.join("freezer.state").exists())
    }

    fn freezer_state_path(&self) -> Result<PathBuf> {
        match &self.freezer {
            Some(d) => Ok(d.join("freezer.state")),
            None => Err(Error::Unsupported {
                path: self.memory.clone(),
                what: "the v1 freezer hierarchy",
            }),
        }
    }

    /// Requests a freezer state; returns the file that reports it. The
    /// kernel reports `FREEZING` until every task is frozen.
    pub fn request_frozen(&self, frozen: bool) -> Result<PathBuf> {
        let path = self.freezer_state_path()?;
        files::write(&path, state_name(frozen))?;
        Ok(path)
    }

    /// Whether `freezer.state` reports exactly the requested state.
    pub fn frozen_state_reached(&self, frozen: bool) -> Result<bool> {
        let path = self.freezer_state_path()?;
        Ok(files::read_trimmed(&path)? == state_name(frozen))
    }
}

fn state_name(frozen: bool) -> &'static str {
    if frozen { "FROZEN" } else { "THAWED" }
}

/// Millicores -> CFS quota in µs at [`PERIOD_US`]. The kernel rejects quotas
/// below 1 ms, so reject them here with a clearer message.
pub(crate) fn quota_us(path: &Path, millicores: u32) -> Result<u64> {
    let q = u64::from(millicores) * (PERIOD_US / 1000);
    if q < 1000 {
        return Err(Error::InvalidLimit {
            path: path.to_path_buf(),
            reason: format!(
                "CPU limit {millicores} millicores is below the kernel minimum of 10 millicores (1 ms quota per 100 ms period)"
            ),
        });
    }
    Ok(q)
}

/// quota/period -> millicores, rounded to nearest.
pub(crate) fn millicores(path: &Path, quota_us: u64, period_us: u64) -> Result<u32> {
    if period_us == 0 {
        return Err(Error::Parse {
            path: path.to_path_buf(),
            reason: "CFS period is 0".into(),
        });
    }
    let m = (u128::from(quota_us) * 1000 + u128::from(period_us) / 2) / u128::from(period_us);
    u32::try_from(m).map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        reason: format!("CPU quota {quota_us}/{period_us} is out of range"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millicores_conversion() {
        let p = Path::new("cpu.cfs_quota_us");
        assert_eq!(millicores(p, 25_000, 100_000).unwrap(), 250);
        assert_eq!(millicores(p, 50_000, 50_000).unwrap(), 1000);
        assert_eq!(millicores(p, 1, 3).unwrap(), 333);
        assert!(millicores(p, 1, 0).is_err());
        assert!(millicores(p, u64::MAX, 1).is_err());
        assert_eq!(quota_us(p, 250).unwrap(), 25_000);
        assert_eq!(quota_us(p, u32::MAX).unwrap(), u64::from(u32::MAX) * 100);
        assert!(matches!(quota_us(p, 9), Err(Error::InvalidLimit { .. })));
        assert!(matches!(quota_us(p, 0), Err(Error::InvalidLimit { .. })));
    }

    #[test]
    fn distinct_dedupes_comounted() {
        let root = Path::new("/c");
        let d = V1Dirs {
            cpu: root.join("cpu,cpuacct"),
            cpuacct: Some(root.join("cpu,cpuacct")),
            memory: root.join("memory"),
            freezer: None,
        }
        .join("stratus/shop");
        assert_eq!(
            d.procs_files(),
            vec![
                PathBuf::from("/c/cpu,cpuacct/stratus/shop/cgroup.procs"),
                PathBuf::from("/c/memory/stratus/shop/cgroup.procs"),
            ]
        );
    }
}
