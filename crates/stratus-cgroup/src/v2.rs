//! cgroup v2 backend: one directory in the unified hierarchy
//! (<https://docs.kernel.org/admin-guide/cgroup-v2.html>).
//!
//! * CPU quota: `cpu.max` ("$MAX $PERIOD", "max" = unlimited).
//! * CPU usage: `usage_usec` in `cpu.stat`.
//! * Memory: `memory.max`, `memory.current`.
//! * Freezer: `cgroup.freeze`, completion reported as `frozen 1` in
//!   `cgroup.events` (core feature since Linux 5.2, no controller needed).

use std::path::{Path, PathBuf};

use crate::files;
use crate::v1::{PERIOD_US, millicores, quota_us};
use crate::{Error, Result, Usage};

/// Same threshold as v1: absurdly large limits mean "unlimited".
const UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// Enables the cpu and memory controllers for `dir`'s children. Skipped when
/// already enabled, so a delegated subtree whose root we may not write still
/// works.
pub(crate) fn enable_controllers(dir: &Path) -> Result<()> {
    let path = dir.join("cgroup.subtree_control");
    if let Ok(text) = files::read(&path) {
        let has = |c: &str| {
            text.split_whitespace()
                .any(|t| t.trim_start_matches('+') == c)
        };
        if has("cpu") && has("memory") {
            return Ok(());
        }
    }
    files::write(&path, "+cpu +memory")
}

pub(crate) fn set_cpu_limit(dir: &Path, millicores: Option<u32>) -> Result<()> {
    let path = dir.join("cpu.max");
    let value = match millicores {
        Some(m) => format!("{} {PERIOD_US}", quota_us(&path, m)?),
        None => format!("max {PERIOD_US}"),
    };
    files::write(&path, &value)
}

pub(crate) fn cpu_limit(dir: &Path) -> Result<Option<u32>> {
    let path = dir.join("cpu.max");
    let text = files::read(&path)?;
    let mut it = text.split_whitespace();
    let (Some(quota), period) = (it.next(), it.next()) else {
        return Err(Error::Parse {
            path,
            reason: "empty cpu.max".into(),
        });
    };
    if quota == "max" {
        return Ok(None);
    }
    let quota = files::parse_u64(&path, quota)?;
    let period = match period {
        Some(p) => files::parse_u64(&path, p)?,
        None => PERIOD_US,
    };
    millicores(&path, quota, period).map(Some)
}

pub(crate) fn set_memory_limit(dir: &Path, bytes: Option<u64>) -> Result<()> {
    let path = dir.join("memory.max");
    match bytes {
        Some(b) => files::write(&path, &b.to_string()),
        None => files::write(&path, "max"),
    }
}

pub(crate) fn memory_limit(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join("memory.max");
    let text = files::read_trimmed(&path)?;
    if text == "max" {
        return Ok(None);
    }
    let v = files::parse_u64(&path, &text)?;
    Ok((v < UNLIMITED_THRESHOLD).then_some(v))
}

pub(crate) fn usage(dir: &Path) -> Result<Usage> {
    let stat = dir.join("cpu.stat");
    let usec = files::keyed_u64(&stat, &files::read(&stat)?, "usage_usec")?;
    let memory_bytes = files::read_u64(&dir.join("memory.current"))?;
    Ok(Usage {
        cpu_ns: usec.saturating_mul(1000),
        memory_bytes,
    })
}

pub(crate) fn procs_file(dir: &Path) -> PathBuf {
    dir.join("cgroup.procs")
}

pub(crate) fn can_freeze(dir: &Path) -> bool {
    dir.join("cgroup.freeze").exists()
}

/// Requests a freezer state via `cgroup.freeze`; returns the file that
/// reports completion (`cgroup.events`): the write only requests it, tasks
/// stop at their next return to user space.
pub(crate) fn request_frozen(dir: &Path, frozen: bool) -> Result<PathBuf> {
    let freeze = dir.join("cgroup.freeze");
    if !freeze.exists() {
        return Err(Error::Unsupported {
            path: freeze,
            what: "the cgroup v2 freezer (Linux 5.2+)",
        });
    }
    files::write(&freeze, if frozen { "1" } else { "0" })?;
    Ok(dir.join("cgroup.events"))
}

pub(crate) fn is_frozen(dir: &Path) -> Result<bool> {
    let events = dir.join("cgroup.events");
    let text = files::read(&events)?;
    Ok(files::keyed_u64(&events, &text, "frozen")? == 1)
}
