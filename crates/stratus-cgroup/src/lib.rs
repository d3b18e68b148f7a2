//! Small cgroupfs backends for Stratus: one cgroup per database (`mariadbd`)
//! with a CPU quota and a memory limit, usage read from cgroup accounting,
//! and freeze/thaw where a freezer exists.
//!
//! The files are written directly instead of through a cgroup crate: the
//! handful of knobs we need is small, and we must cover every layout the
//! hosts we run on actually have:
//!
//! * **cgroup v2** (unified): one hierarchy, `cpu.max`, `memory.max`,
//!   `cgroup.freeze`. See
//!   <https://docs.kernel.org/admin-guide/cgroup-v2.html>.
//! * **cgroup v1**: one hierarchy per controller (or co-mounted, e.g.
//!   `cpu,cpuacct`). CFS bandwidth control (`cpu.cfs_quota_us`) is described
//!   in <https://docs.kernel.org/scheduler/sched-bwc.html>, CPU accounting
//!   (`cpuacct.usage`) in
//!   <https://docs.kernel.org/admin-guide/cgroup-v1/cpuacct.html>, the memory
//!   controller in <https://docs.kernel.org/admin-guide/cgroup-v1/memory.html>
//!   and the freezer in
//!   <https://docs.kernel.org/admin-guide/cgroup-v1/freezer-subsystem.html>
//!   (overview: <https://docs.kernel.org/admin-guide/cgroup-v1/cgroups.html>).
//! * **hybrid**: v1 controllers plus a controller-less cgroup2 mount at
//!   `/sys/fs/cgroup/unified` (systemd's hybrid mode); handled as v1.
//!
//! [`Layout::detect`] reads `/proc/self/mountinfo`, [`Manager`] creates the
//! parent group and per-database [`Cgroup`]s. When cgroups are unusable (not
//! root, no controllers), [`proc_usage()`] still gives per-process accounting.

mod cgroup;
mod files;
mod layout;
mod proc_usage;
mod v1;
mod v2;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use cgroup::{Cgroup, Manager, Usage};
pub use layout::{Layout, LayoutKind};
pub use proc_usage::proc_usage;

/// Errors from cgroupfs and procfs access. Every variant names the path it
/// concerns, because "Permission denied" alone is useless when a group spans
/// four hierarchies.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A control or accounting file could not be read.
    #[error("cannot read {path}: {}", os_message(.err))]
    Read { path: PathBuf, err: io::Error },
    /// A control file rejected a value.
    #[error("cannot write {value} to {path}: {}", os_message(.err))]
    Write {
        path: PathBuf,
        value: String,
        err: io::Error,
    },
    /// A cgroup directory could not be created.
    #[error("cannot create cgroup {path}: {}", os_message(.err))]
    Create { path: PathBuf, err: io::Error },
    /// `rmdir` refused because processes (or child groups) remain.
    #[error("cannot remove cgroup {path}: processes or child cgroups remain in it ({})", os_message(.err))]
    Busy { path: PathBuf, err: io::Error },
    /// `rmdir` failed for another reason.
    #[error("cannot remove cgroup {path}: {}", os_message(.err))]
    Remove { path: PathBuf, err: io::Error },
    /// A group could not be renamed ([`Manager::rename`]).
    #[error("cannot rename cgroup {from} to {to}: {}", os_message(.err))]
    Rename {
        from: PathBuf,
        to: PathBuf,
        err: io::Error,
    },
    /// [`Manager::open`] on a group that does not exist.
    #[error("cgroup {path} does not exist")]
    NotFound { path: PathBuf },
    /// A group name that could escape the parent or is otherwise unusable.
    #[error("invalid cgroup name {name:?} under {path}: {reason}")]
    InvalidName {
        path: PathBuf,
        name: String,
        reason: &'static str,
    },
    /// A limit the kernel would reject anyway (e.g. a CPU quota below 1 ms).
    #[error("invalid limit for {path}: {reason}")]
    InvalidLimit { path: PathBuf, reason: String },
    /// A file had unexpected contents.
    #[error("cannot parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    /// The kernel did not report the requested freezer state in time.
    #[error("timed out after {timeout:?} waiting for {path} to report {state}")]
    Timeout {
        path: PathBuf,
        state: &'static str,
        timeout: Duration,
    },
    /// The requested feature (e.g. a freezer) does not exist for this group.
    #[error("{what} is not available at {path}")]
    Unsupported { path: PathBuf, what: &'static str },
    /// The host offers no usable cgroup hierarchy.
    #[error(
        "no usable cgroup hierarchy in {path} (need cgroup v2 with the cpu and memory controllers, or cgroup v1 cpu and memory)"
    )]
    NoCgroups { path: PathBuf },
}

impl Error {
    /// The underlying OS error, if any (e.g. to tell `EACCES` from `EBUSY`).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Read { err, .. }
            | Error::Write { err, .. }
            | Error::Create { err, .. }
            | Error::Busy { err, .. }
            | Error::Remove { err, .. } => Some(err),
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// "Permission denied (os error 13)" -> "Permission denied": the errno
/// number adds noise to messages that already name the file.
fn os_message(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_error_message_is_clear() {
        let e = Error::Write {
            path: PathBuf::from("/sys/fs/cgroup/cpu/stratus/shop/cpu.cfs_quota_us"),
            value: "50000".into(),
            err: io::Error::from_raw_os_error(13),
        };
        assert_eq!(
            e.to_string(),
            "cannot write 50000 to /sys/fs/cgroup/cpu/stratus/shop/cpu.cfs_quota_us: Permission denied"
        );
        assert_eq!(e.io_error().and_then(io::Error::raw_os_error), Some(13));
    }
}
