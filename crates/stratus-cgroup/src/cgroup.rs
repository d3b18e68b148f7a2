//! [`Manager`] (parent group, create/open) and the per-database [`Cgroup`]
//! handle that dispatches to the v1 or v2 backend.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::layout::{Layout, LayoutKind, MOUNTINFO};
use crate::v1::V1Dirs;
use crate::{Error, Result, files, v2};

/// Resource usage of a group (or of one process, see [`crate::proc_usage()`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Cumulative CPU time in nanoseconds.
    pub cpu_ns: u64,
    /// Current memory charge in bytes (RSS for [`crate::proc_usage()`]).
    pub memory_bytes: u64,
}

/// Directories of one group level in the backend in use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dirs {
    V1(V1Dirs),
    V2(PathBuf),
}

impl Dirs {
    fn join(&self, rel: &str) -> Dirs {
        match self {
            Dirs::V1(d) => Dirs::V1(d.join(rel)),
            Dirs::V2(d) => Dirs::V2(d.join(rel)),
        }
    }

    fn distinct(&self) -> Vec<&Path> {
        match self {
            Dirs::V1(d) => d.distinct(),
            Dirs::V2(d) => vec![d.as_path()],
        }
    }

    /// A representative directory for error messages.
    fn primary(&self) -> &Path {
        match self {
            Dirs::V1(d) => &d.cpu,
            Dirs::V2(d) => d,
        }
    }
}

/// Creates and opens the per-database cgroups under one parent group
/// (e.g. "stratus").
#[derive(Debug, Clone)]
pub struct Manager {
    kind: LayoutKind,
    parent: Dirs,
}

impl Manager {
    /// Creates `<mount>/<parent>` in each used hierarchy; on v2 also enables
    /// `+cpu +memory` in the subtree_control of the mount root and of each
    /// parent level, without which the children get no `cpu.max` /
    /// `memory.max`. `parent` may be nested ("stratus/node1"); each component
    /// is validated like a group name. Fails when the layout kind is
    /// [`LayoutKind::None`] or the hierarchy is not writable; the caller then
    /// runs without resource control and says so.
    pub fn new(layout: Layout, parent: &str) -> Result<Manager> {
        let kind = layout.kind();
        let no_cgroups = || Error::NoCgroups {
            path: PathBuf::from(MOUNTINFO),
        };
        let roots = match kind {
            LayoutKind::None => return Err(no_cgroups()),
            LayoutKind::V2 => Dirs::V2(layout.v2_mount().ok_or_else(no_cgroups)?.to_path_buf()),
            LayoutKind::V1 | LayoutKind::Hybrid => {
                let m = layout.v1_mounts().ok_or_else(no_cgroups)?;
                Dirs::V1(V1Dirs {
                    cpu: m.cpu,
                    cpuacct: m.cpuacct,
                    memory: m.memory,
                    freezer: m.freezer,
                })
            }
        };
        let components: Vec<&str> = parent.split('/').collect();
        for c in &components {
            validate_name(roots.primary(), c).map_err(|e| match e {
                Error::InvalidName { path, reason, .. } => Error::InvalidName {
                    path,
                    name: parent.to_string(),
                    reason,
                },
                other => other,
            })?;
        }
        for root in roots.distinct() {
            if matches!(roots, Dirs::V2(_)) {
                v2::enable_controllers(root)?;
            }
            let mut dir = root.to_path_buf();
            for c in &components {
                dir.push(c);
                files::mkdir(&dir)?;
                if matches!(roots, Dirs::V2(_)) {
                    v2::enable_controllers(&dir)?;
                }
            }
        }
        let parent = roots.join(parent);
        tracing::debug!(%kind, parent = %parent.primary().display(), "cgroup parent ready");
        Ok(Manager { kind, parent })
    }

    /// The backend in use.
    pub fn kind(&self) -> LayoutKind {
        self.kind
    }

    /// Creates (or reuses if it already exists) `<parent>/<name>` in every
    /// used hierarchy. Reuse matters after a control-plane restart: the
    /// database process may still be running inside the group.
    pub fn create(&self, name: &str) -> Result<Cgroup> {
        validate_name(self.parent.primary(), name)?;
        let dirs = self.parent.join(name);
        for dir in dirs.distinct() {
            files::mkdir(dir)?;
        }
        Ok(Cgroup {
            name: name.to_string(),
            dirs,
        })
    }

    /// Removes the (last level of the) parent group in every hierarchy, for
    /// tidy shutdown of test installations. Fails with [`Error::Busy`] while
    /// any database group remains under it.
    pub fn remove_parent(&self) -> Result<()> {
        let mut first_err = None;
        for dir in self.parent.distinct() {
            if let Err(e) = files::rmdir(dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Removes every group under the parent that has no processes left, then
    /// the parent if it is empty: a tidy host after a clean shutdown. Groups
    /// still in use stay; nothing fails for them.
    pub fn remove_unused(&self) {
        for dir in self.parent.distinct() {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = files::rmdir(&e.path());
                    }
                }
            }
            let _ = files::rmdir(dir);
        }
    }

    /// A group by name without looking whether it exists, for reads that fail by themselves
    /// if it does not (its files cannot be read): the monitor reads every database's usage
    /// five times a second, and [`Self::open`]'s look at every hierarchy's directory was a
    /// third of its CPU (`bench/density`).
    pub fn named(&self, name: &str) -> Result<Cgroup> {
        validate_name(self.parent.primary(), name)?;
        Ok(Cgroup {
            name: name.to_string(),
            dirs: self.parent.join(name),
        })
    }

    /// Renames group `from` to `to` in every hierarchy, processes, limits and memory charge
    /// included. Nothing migrates: moving a server's processes ([`Cgroup::add_pid`]) was
    /// most of a warm-pool claim, 5–26 ms in a burst (the kernel's migration, most likely its
    /// wait for an RCU grace period in each hierarchy). cgroup v1 allows it; v2 does not, so there it fails at once
    /// ([`Error::Unsupported`]) and the caller moves the processes instead. A failure part of
    /// the way renames the hierarchies already done back.
    pub fn rename(&self, from: &str, to: &str) -> Result<Cgroup> {
        validate_name(self.parent.primary(), from)?;
        validate_name(self.parent.primary(), to)?;
        if let Dirs::V2(d) = &self.parent {
            return Err(Error::Unsupported {
                path: d.join(from),
                what: "renaming a cgroup (cgroup v2)",
            });
        }
        let (old, new) = (self.parent.join(from), self.parent.join(to));
        let pairs: Vec<(&Path, &Path)> = old.distinct().into_iter().zip(new.distinct()).collect();
        for (i, (a, b)) in pairs.iter().enumerate() {
            // `rename` would replace an empty directory at `to`: refuse as `mkdir` would.
            let renamed = if b.exists() {
                Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
            } else {
                std::fs::rename(a, b)
            };
            if let Err(err) = renamed {
                for (a, b) in &pairs[..i] {
                    let _ = std::fs::rename(b, a);
                }
                return Err(Error::Rename {
                    from: a.to_path_buf(),
                    to: b.to_path_buf(),
                    err,
                });
            }
        }
        Ok(Cgroup {
            name: to.to_string(),
            dirs: new,
        })
    }

    /// Opens an existing group; fails with [`Error::NotFound`] if it is
    /// missing in any hierarchy.
    pub fn open(&self, name: &str) -> Result<Cgroup> {
        validate_name(self.parent.primary(), name)?;
        let dirs = self.parent.join(name);
        if let Some(missing) = dirs.distinct().into_iter().find(|d| !d.is_dir()) {
            return Err(Error::NotFound {
                path: missing.to_path_buf(),
            });
        }
        Ok(Cgroup {
            name: name.to_string(),
            dirs,
        })
    }
}

/// Rejects names that could escape the parent (`/`, `..`), hidden or
/// special entries (leading `.`), and the empty name.
fn validate_name(parent: &Path, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("name is empty")
    } else if name.contains('/') {
        Some("name must not contain '/'")
    } else if name.contains("..") {
        Some("name must not contain '..'")
    } else if name.starts_with('.') {
        Some("name must not start with '.'")
    } else if name.contains('\0') {
        Some("name must not contain NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            path: parent.to_path_buf(),
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// One database's cgroup (a directory per hierarchy on v1, one on v2).
#[derive(Debug, Clone)]
pub struct Cgroup {
    name: String,
    dirs: Dirs,
}

impl Cgroup {
    /// The group's name under the parent.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// CPU quota in millicores (500 = half a CPU) over a 100 ms period;
    /// `None` removes the limit. Values below 10 are rejected (the kernel's
    /// minimum quota is 1 ms).
    pub fn set_cpu_limit(&self, millicores: Option<u32>) -> Result<()> {
        match &self.dirs {
            Dirs::V1(d) => d.set_cpu_limit(millicores),
            Dirs::V2(d) => v2::set_cpu_limit(d, millicores),
        }
    }

    /// The CPU quota as read back from the kernel; `None` = unlimited.
    pub fn cpu_limit(&self) -> Result<Option<u32>> {
        match &self.dirs {
            Dirs::V1(d) => d.cpu_limit(),
            Dirs::V2(d) => v2::cpu_limit(d),
        }
    }

    /// Memory limit in bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`);
    /// `None` = unlimited. v1 rounds down to the page size.
    pub fn set_memory_limit(&self, bytes: Option<u64>) -> Result<()> {
        match &self.dirs {
            Dirs::V1(d) => d.set_memory_limit(bytes),
            Dirs::V2(d) => v2::set_memory_limit(d, bytes),
        }
    }

    /// The memory limit as read back; `None` = unlimited (v1's huge
    /// "unlimited" value, >= 2^62, included).
    pub fn memory_limit(&self) -> Result<Option<u64>> {
        match &self.dirs {
            Dirs::V1(d) => d.memory_limit(),
            Dirs::V2(d) => v2::memory_limit(d),
        }
    }

    /// Cumulative CPU time and current memory charge of the group.
    pub fn usage(&self) -> Result<Usage> {
        match &self.dirs {
            Dirs::V1(d) => d.usage(),
            Dirs::V2(d) => v2::usage(d),
        }
    }

    /// The `cgroup.procs` files a pid must be written to: one per distinct
    /// v1 hierarchy (co-mounted ones once), one on v2. The runtime opens
    /// these before fork and writes "0" from the child.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        match &self.dirs {
            Dirs::V1(d) => d.procs_files(),
            Dirs::V2(d) => vec![v2::procs_file(d)],
        }
    }

    /// Moves `pid` (its whole thread group) into the group in every
    /// hierarchy.
    pub fn add_pid(&self, pid: u32) -> Result<()> {
        let value = pid.to_string();
        for path in self.procs_files() {
            files::write(&path, &value)?;
        }
        Ok(())
    }

    /// Processes in the group (v1: as seen by the memory hierarchy).
    pub fn pids(&self) -> Result<Vec<u32>> {
        match &self.dirs {
            Dirs::V1(d) => d.pids(),
            Dirs::V2(d) => files::read_pids(&v2::procs_file(d)),
        }
    }

    /// Whether this group has a freezer (v1 freezer hierarchy, v2
    /// `cgroup.freeze`).
    pub fn can_freeze(&self) -> bool {
        match &self.dirs {
            Dirs::V1(d) => d.can_freeze(),
            Dirs::V2(d) => v2::can_freeze(d),
        }
    }

    /// Freezes every process and waits (polling every 1 ms, at most
    /// `timeout`) until the kernel reports the group frozen. On timeout the
    /// group is thawed again (best effort) so it is not left half-frozen,
    /// and [`Error::Timeout`] is returned.
    pub fn freeze(&self, timeout: Duration) -> Result<()> {
        let result = self.set_frozen(true, timeout);
        if matches!(result, Err(Error::Timeout { .. })) {
            if let Err(e) = self.request_frozen(false) {
                tracing::warn!(group = %self.name, "cannot thaw after freeze timeout: {e}");
            }
        }
        result
    }

    /// Thaws the group and waits until the kernel reports it thawed.
    pub fn thaw(&self, timeout: Duration) -> Result<()> {
        self.set_frozen(false, timeout)
    }

    /// Whether the kernel reports the group fully frozen (v1 `FREEZING`
    /// counts as not frozen).
    pub fn is_frozen(&self) -> Result<bool> {
        self.frozen_state_reached(true)
    }

    fn request_frozen(&self, frozen: bool) -> Result<PathBuf> {
        match &self.dirs {
            Dirs::V1(d) => d.request_frozen(frozen),
            Dirs::V2(d) => v2::request_frozen(d, frozen),
        }
    }

    fn frozen_state_reached(&self, frozen: bool) -> Result<bool> {
        match &self.dirs {
            Dirs::V1(d) => d.frozen_state_reached(frozen),
            Dirs::V2(d) => Ok(v2::is_frozen(d)? == frozen),
        }
    }

    fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<()> {
        let report = self.request_frozen(frozen)?;
        let state = match (&self.dirs, frozen) {
            (Dirs::V1(_), true) => "FROZEN",
            (Dirs::V1(_), false) => "THAWED",
            (Dirs::V2(_), true) => "frozen 1",
            (Dirs::V2(_), false) => "frozen 0",
        };
        files::poll_until(&report, state, timeout, || {
            self.frozen_state_reached(frozen)
        })
    }

    /// Removes the group in every hierarchy. Fails with [`Error::Busy`] if
    /// processes remain; succeeds if the group is already gone. Every
    /// hierarchy is attempted; the first error is returned.
    pub fn remove(&self) -> Result<()> {
        let mut first_err = None;
        for dir in self.dirs.distinct() {
            if let Err(e) = files::rmdir(dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    const V1_MOUNTINFO: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V1_COMOUNTED: &str = "\
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw shared:14 - cgroup cgroup rw,memory
";

    const V2_MOUNTINFO: &str = "0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot";

    fn touch(dir: &Path, files: &[(&str, &str)]) {
        for (name, content) in files {
            fs::write(dir.join(name), content).unwrap();
        }
    }

    fn fake_v1(mountinfo: &str, hierarchies: &[&str]) -> (TempDir, Layout) {
        let root = tempfile::tempdir().unwrap();
        for h in hierarchies {
            fs::create_dir_all(root.path().join("sys/fs/cgroup").join(h)).unwrap();
        }
        let layout = Layout::from_mountinfo(mountinfo, Some(root.path()));
        (root, layout)
    }

    fn fake_v2() -> (TempDir, Layout, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let cg = root.path().join("sys/fs/cgroup");
        fs::create_dir_all(cg.join("stratus")).unwrap();
        touch(
            &cg,
            &[
                (
                    "cgroup.controllers",
                    "cpuset cpu io memory hugetlb pids rdma misc\n",
                ),
                ("cgroup.subtree_control", ""),
            ],
        );
        touch(&cg.join("stratus"), &[("cgroup.subtree_control", "")]);
        // The pure-v2 sample line lacks the leading mount id; real lines have it.
        let line = format!("35 24 {V2_MOUNTINFO}\n");
        let layout = Layout::from_mountinfo(&line, Some(root.path()));
        (root, layout, cg)
    }

    #[test]
    fn v1_manager_create_and_limits() {
        let (root, layout) = fake_v1(V1_MOUNTINFO, &["cpu", "cpuacct", "memory", "freezer"]);
        assert_eq!(layout.kind(), LayoutKind::Hybrid);
        let mgr = Manager::new(layout, "stratus").unwrap();
        assert_eq!(mgr.kind(), LayoutKind::Hybrid);
        let cg_root = root.path().join("sys/fs/cgroup");
        for h in ["cpu", "cpuacct", "memory", "freezer"] {
            assert!(cg_root.join(h).join("stratus").is_dir(), "{h}");
        }
        assert!(matches!(mgr.open("shop"), Err(Error::NotFound { .. })));
        // Unchecked, a missing group's usage still fails: its files are not there.
        assert!(mgr.named("shop").unwrap().usage().is_err());
        assert!(mgr.named("../shop").is_err());
        let cg = mgr.create("shop").unwrap();
        assert_eq!(cg.name(), "shop");
        // Reuse of an existing group.
        mgr.create("shop").unwrap();
        let cpu = cg_root.join("cpu/stratus/shop");
        let acct = cg_root.join("cpuacct/stratus/shop");
        let mem = cg_root.join("memory/stratus/shop");
        let frz = cg_root.join("freezer/stratus/shop");
        touch(
            &cpu,
            &[
                ("cpu.cfs_quota_us", "-1\n"),
                ("cpu.cfs_period_us", "100000\n"),
                ("cgroup.procs", ""),
            ],
        );
        touch(
            &acct,
            &[("cpuacct.usage", "123456789\n"), ("cgroup.procs", "")],
        );
        touch(
            &mem,
            &[
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.usage_in_bytes", "4096\n"),
                ("cgroup.procs", ""),
            ],
        );
        touch(&frz, &[("freezer.state", "THAWED\n"), ("cgroup.procs", "")]);
        let cg = mgr.open("shop").unwrap();

        assert_eq!(cg.cpu_limit().unwrap(), None);
        assert_eq!(cg.memory_limit().unwrap(), None, "v1 unlimited value");
        cg.set_cpu_limit(Some(250)).unwrap();
        assert_eq!(
            fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap(),
            "25000"
        );
        assert_eq!(
            fs::read_to_string(cpu.join("cpu.cfs_period_us")).unwrap(),
            "100000"
        );
        assert_eq!(cg.cpu_limit().unwrap(), Some(250));
        cg.set_cpu_limit(None).unwrap();
        assert_eq!(
            fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap(),
            "-1"
        );
        assert_eq!(cg.cpu_limit().unwrap(), None);
        assert!(matches!(
            cg.set_cpu_limit(Some(5)),
            Err(Error::InvalidLimit { .. })
        ));

        cg.set_memory_limit(Some(256 << 20)).unwrap();
        assert_eq!(cg.memory_limit().unwrap(), Some(256 << 20));
        cg.set_memory_limit(None).unwrap();
        assert_eq!(
            fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap(),
            "-1"
        );

        assert_eq!(
            cg.usage().unwrap(),
            Usage {
                cpu_ns: 123456789,
                memory_bytes: 4096
            }
        );
        assert_eq!(
            cg.procs_files(),
            vec![
                cpu.join("cgroup.procs"),
                acct.join("cgroup.procs"),
                mem.join("cgroup.procs"),
                frz.join("cgroup.procs"),
            ]
        );
        cg.add_pid(4242).unwrap();
        for f in cg.procs_files() {
            assert_eq!(fs::read_to_string(f).unwrap(), "4242");
        }
        assert_eq!(cg.pids().unwrap(), vec![4242]);

        // Freezer: a fake file does not change state by itself, so FROZEN is
        // reached immediately after our write, and THAWED likewise.
        assert!(cg.can_freeze());
        assert!(!cg.is_frozen().unwrap());
        cg.freeze(Duration::from_millis(100)).unwrap();
        assert!(cg.is_frozen().unwrap());
        cg.thaw(Duration::from_millis(100)).unwrap();
        assert!(!cg.is_frozen().unwrap());
    }

    #[test]
    fn a_group_is_renamed_in_every_v1_hierarchy_or_in_none() {
        let (root, layout) = fake_v1(V1_MOUNTINFO, &["cpu", "cpuacct", "memory", "freezer"]);
        let mgr = Manager::new(layout, "stratus").unwrap();
        let cg_root = root.path().join("sys/fs/cgroup");
        mgr.create("_spare-1").unwrap();
        let shop = mgr.rename("_spare-1", "shop").unwrap();
        assert_eq!(shop.name(), "shop");
        for h in ["cpu", "cpuacct", "memory", "freezer"] {
            assert!(cg_root.join(h).join("stratus/shop").is_dir(), "{h}");
            assert!(!cg_root.join(h).join("stratus/_spare-1").exists(), "{h}");
        }
        // Onto a group that exists (here only in the last hierarchy): refused, and the ones
        // renamed before it are renamed back.
        mgr.create("_spare-2").unwrap();
        fs::create_dir(cg_root.join("freezer/stratus/taken")).unwrap();
        let err = mgr.rename("_spare-2", "taken").unwrap_err();
        assert!(matches!(err, Error::Rename { .. }), "{err}");
        for h in ["cpu", "cpuacct", "memory", "freezer"] {
            assert!(cg_root.join(h).join("stratus/_spare-2").is_dir(), "{h}");
        }
        assert!(!cg_root.join("cpu/stratus/taken").exists());
        assert!(matches!(
            mgr.rename("_spare-2", "../x"),
            Err(Error::InvalidName { .. })
        ));
    }

    #[test]
    fn v2_does_not_rename() {
        let (_root, layout, cg_root) = fake_v2();
        let mgr = Manager::new(layout, "stratus").unwrap();
        mgr.create("_spare-1").unwrap();
        assert!(matches!(
            mgr.rename("_spare-1", "shop"),
            Err(Error::Unsupported { .. })
        ));
        assert!(cg_root.join("stratus/_spare-1").is_dir());
    }

    #[test]
    fn v1_comounted_cpu_cpuacct_uses_one_directory() {
        let (root, layout) = fake_v1(V1_COMOUNTED, &["cpu,cpuacct", "memory"]);
        assert_eq!(layout.kind(), LayoutKind::V1);
        assert!(!layout.can_freeze());
        let mgr = Manager::new(layout, "stratus").unwrap();
        let cg = mgr.create("shop").unwrap();
        let cpu = root.path().join("sys/fs/cgroup/cpu,cpuacct/stratus/shop");
        let mem = root.path().join("sys/fs/cgroup/memory/stratus/shop");
        assert_eq!(
            cg.procs_files(),
            vec![cpu.join("cgroup.procs"), mem.join("cgroup.procs")]
        );
        touch(&cpu, &[("cpuacct.usage", "77\n")]);
        touch(&mem, &[("memory.usage_in_bytes", "8192\n")]);
        assert_eq!(
            cg.usage().unwrap(),
            Usage {
                cpu_ns: 77,
                memory_bytes: 8192
            }
        );
        assert!(!cg.can_freeze());
        assert!(matches!(
            cg.freeze(Duration::from_millis(10)),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn v1_freeze_without_state_file_is_a_clear_error() {
        let (root, layout) = fake_v1(V1_MOUNTINFO, &["cpu", "cpuacct", "memory", "freezer"]);
        let cg = Manager::new(layout, "stratus")
            .unwrap()
            .create("shop")
            .unwrap();
        // The directory exists but freezer.state does not (tmpfs).
        assert!(!cg.can_freeze());
        let err = cg.freeze(Duration::from_millis(5)).unwrap_err();
        assert!(matches!(err, Error::Write { .. }), "{err}");
        let want = root
            .path()
            .join("sys/fs/cgroup/freezer/stratus/shop/freezer.state");
        assert!(err.to_string().contains(&*want.to_string_lossy()), "{err}");
    }

    #[test]
    fn v2_manager_create_and_limits() {
        let (_root, layout, cg_root) = fake_v2();
        assert_eq!(layout.kind(), LayoutKind::V2);
        let mgr = Manager::new(layout, "stratus").unwrap();
        assert_eq!(mgr.kind(), LayoutKind::V2);
        assert_eq!(
            fs::read_to_string(cg_root.join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory"
        );
        assert_eq!(
            fs::read_to_string(cg_root.join("stratus/cgroup.subtree_control")).unwrap(),
            "+cpu +memory"
        );
        let cg = mgr.create("shop").unwrap();
        let dir = cg_root.join("stratus/shop");
        touch(
            &dir,
            &[
                ("cpu.max", "max 100000\n"),
                ("memory.max", "max\n"),
                (
                    "cpu.stat",
                    "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 0\n",
                ),
                ("memory.current", "1048576\n"),
                ("cgroup.procs", "1\n2\n"),
                ("cgroup.freeze", "0\n"),
                ("cgroup.events", "populated 1\nfrozen 0\n"),
            ],
        );
        assert_eq!(cg.cpu_limit().unwrap(), None);
        cg.set_cpu_limit(Some(1500)).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "150000 100000"
        );
        assert_eq!(cg.cpu_limit().unwrap(), Some(1500));
        cg.set_cpu_limit(None).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "max 100000"
        );
        assert_eq!(cg.cpu_limit().unwrap(), None);

        assert_eq!(cg.memory_limit().unwrap(), None);
        cg.set_memory_limit(Some(256 << 20)).unwrap();
        assert_eq!(cg.memory_limit().unwrap(), Some(256 << 20));
        cg.set_memory_limit(None).unwrap();
        assert_eq!(fs::read_to_string(dir.join("memory.max")).unwrap(), "max");

        assert_eq!(
            cg.usage().unwrap(),
            Usage {
                cpu_ns: 1_234_000,
                memory_bytes: 1_048_576
            }
        );
        assert_eq!(cg.procs_files(), vec![dir.join("cgroup.procs")]);
        assert_eq!(cg.pids().unwrap(), vec![1, 2]);
        cg.add_pid(7).unwrap();
        assert_eq!(cg.pids().unwrap(), vec![7]);

        assert!(cg.can_freeze());
        assert!(!cg.is_frozen().unwrap());
        // Nothing updates cgroup.events in a fake tree: the wait times out
        // and the group is thawed again.
        let err = cg.freeze(Duration::from_millis(5)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("cgroup.events"), "{err}");
        assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "0");
        touch(&dir, &[("cgroup.events", "populated 1\nfrozen 1\n")]);
        cg.freeze(Duration::from_millis(5)).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "1");
        assert!(cg.is_frozen().unwrap());

        // Removal on tmpfs fails (control files are real files there).
        assert!(matches!(cg.remove(), Err(Error::Busy { .. })));
    }

    #[test]
    fn v2_cpu_max_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("50000 100000\n", Some(Some(500))),
            ("max\n", Some(None)),
            ("25000\n", Some(Some(250))),
            ("1000 1000\n", Some(Some(1000))),
            ("", None),
            ("x 100000", None),
            ("100 0", None),
        ];
        for (text, want) in cases {
            touch(dir.path(), &[("cpu.max", text)]);
            assert_eq!(v2::cpu_limit(dir.path()).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn remove_is_idempotent() {
        let (_root, layout) = fake_v1(V1_MOUNTINFO, &["cpu", "cpuacct", "memory", "freezer"]);
        let mgr = Manager::new(layout, "stratus").unwrap();
        let cg = mgr.create("empty").unwrap();
        cg.remove().unwrap();
        cg.remove().unwrap();
        assert!(matches!(mgr.open("empty"), Err(Error::NotFound { .. })));
    }

    #[test]
    fn name_validation() {
        let (root, layout) = fake_v1(V1_MOUNTINFO, &["cpu", "cpuacct", "memory", "freezer"]);
        let mgr = Manager::new(layout.clone(), "stratus").unwrap();
        for bad in [
            "", "a/b", "/etc", "..", "a..b", "../x", ".hidden", ".", "a\0b",
        ] {
            for result in [mgr.create(bad).map(|_| ()), mgr.open(bad).map(|_| ())] {
                match result {
                    Err(Error::InvalidName { name, .. }) => assert_eq!(name, bad),
                    other => panic!("{bad:?}: {other:?}"),
                }
            }
        }
        assert!(!root.path().join("sys/fs/cgroup/cpu/x").exists());
        mgr.create("shop-1_db.x").unwrap();
        for bad in ["", "..", "a/../b", "/abs", "a//b", ".x"] {
            assert!(
                matches!(
                    Manager::new(layout.clone(), bad),
                    Err(Error::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        let nested = Manager::new(layout, "stratus/node1").unwrap();
        nested.create("db").unwrap();
        assert!(
            root.path()
                .join("sys/fs/cgroup/memory/stratus/node1/db")
                .is_dir()
        );
    }

    #[test]
    fn manager_errors() {
        let err = Manager::new(Layout::default(), "stratus").unwrap_err();
        assert!(matches!(err, Error::NoCgroups { .. }));
        assert!(err.to_string().contains("/proc/self/mountinfo"), "{err}");
        // Hierarchy mount points that do not exist: creation fails clearly.
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::from_mountinfo(V1_MOUNTINFO, Some(root.path()));
        let err = Manager::new(layout, "stratus").unwrap_err();
        assert!(matches!(err, Error::Create { .. }), "{err}");
        assert!(
            err.to_string().starts_with("cannot create cgroup "),
            "{err}"
        );
        // v2 whose subtree_control cannot be written.
        let (_root, layout, cg) = fake_v2();
        fs::remove_file(cg.join("cgroup.subtree_control")).unwrap();
        let err = Manager::new(layout, "stratus").unwrap_err();
        assert!(
            err.to_string().starts_with("cannot write +cpu +memory to "),
            "{err}"
        );
    }

    #[test]
    fn garbage_contents_are_errors_not_panics() {
        let (root, layout) = fake_v1(V1_COMOUNTED, &["cpu,cpuacct", "memory"]);
        let cg = Manager::new(layout, "s").unwrap().create("g").unwrap();
        let cpu = root.path().join("sys/fs/cgroup/cpu,cpuacct/s/g");
        let mem = root.path().join("sys/fs/cgroup/memory/s/g");
        assert!(matches!(cg.usage(), Err(Error::Read { .. })));
        touch(
            &cpu,
            &[("cpu.cfs_quota_us", "lots\n"), ("cpuacct.usage", "-5")],
        );
        touch(
            &mem,
            &[
                ("memory.limit_in_bytes", ""),
                ("memory.usage_in_bytes", "1"),
            ],
        );
        assert!(matches!(cg.cpu_limit(), Err(Error::Parse { .. })));
        assert!(matches!(cg.memory_limit(), Err(Error::Parse { .. })));
        assert!(matches!(cg.usage(), Err(Error::Parse { .. })));
        touch(
            &cpu,
            &[("cpu.cfs_quota_us", "5000"), ("cpu.cfs_period_us", "0")],
        );
        assert!(matches!(cg.cpu_limit(), Err(Error::Parse { .. })));
    }
}
