//! Detection of the host's cgroup layout from `/proc/self/mountinfo`
//! (format: `proc(5)`, "/proc/pid/mountinfo").
//!
//! Mountinfo rather than probing `/sys/fs/cgroup` because v1 hierarchies may
//! be mounted anywhere and co-mounted (`cpu,cpuacct`) or not, and because a
//! cgroup2 mount is only usable for us if it carries the cpu and memory
//! controllers (hybrid hosts mount an empty one at `/sys/fs/cgroup/unified`).

use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// What the host offers, parsed from `/proc/self/mountinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// First cgroup2 mount whose `cgroup.controllers` lists cpu and memory.
    v2: Option<PathBuf>,
    /// First cgroup2 mount of any kind (hybrid detection).
    unified: Option<PathBuf>,
    /// v1 mount points per controller (equal when co-mounted).
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
    freezer: Option<PathBuf>,
}

/// Which backend a [`Layout`] leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// Unified hierarchy with the cpu and memory controllers.
    V2,
    /// v1 controllers, no cgroup2 mount.
    V1,
    /// v1 controllers plus a cgroup2 mount (used as v1).
    Hybrid,
    /// Nothing usable: no resource control.
    None,
}

impl fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayoutKind::V2 => "cgroup v2",
            LayoutKind::V1 => "cgroup v1",
            LayoutKind::Hybrid => "cgroup v1 (hybrid)",
            LayoutKind::None => "none",
        })
    }
}

/// v1 paths handed to the backend.
pub(crate) struct V1Mounts {
    pub cpu: PathBuf,
    pub cpuacct: Option<PathBuf>,
    pub memory: PathBuf,
    pub freezer: Option<PathBuf>,
}

pub(crate) const MOUNTINFO: &str = "/proc/self/mountinfo";

impl Layout {
    /// Reads `/proc/self/mountinfo`. Never panics; when it cannot be read
    /// the layout is empty and [`Layout::kind`] is [`LayoutKind::None`].
    pub fn detect() -> Layout {
        match std::fs::read_to_string(MOUNTINFO) {
            Ok(text) => Layout::from_mountinfo(&text, None),
            Err(e) => {
                tracing::debug!("cannot read {MOUNTINFO}: {e}; assuming no cgroups");
                Layout::default()
            }
        }
    }

    /// Pure parse of mountinfo text. With `fs_root`, mount point `P` becomes
    /// `fs_root.join(P without leading '/')`, so tests can use a temp dir;
    /// whether a cgroup2 mount carries controllers is read from
    /// `<mount>/cgroup.controllers` under that root.
    pub fn from_mountinfo(mountinfo: &str, fs_root: Option<&Path>) -> Layout {
        let mut layout = Layout::default();
        for line in mountinfo.lines() {
            let Some(m) = parse_line(line) else { continue };
            let mount = match fs_root {
                Some(root) => root.join(m.mount_point.strip_prefix("/").unwrap_or(&m.mount_point)),
                None => m.mount_point,
            };
            match m.fs_type {
                "cgroup2" => {
                    if layout.unified.is_none() {
                        layout.unified = Some(mount.clone());
                    }
                    if layout.v2.is_none() && v2_has_cpu_and_memory(&mount) {
                        layout.v2 = Some(mount);
                    }
                }
                "cgroup" => {
                    for opt in m.super_options.split(',') {
                        let slot = match opt {
                            "cpu" => &mut layout.cpu,
                            "cpuacct" => &mut layout.cpuacct,
                            "memory" => &mut layout.memory,
                            "freezer" => &mut layout.freezer,
                            _ => continue,
                        };
                        // First mount wins; later ones are usually bind mounts.
                        if slot.is_none() {
                            *slot = Some(mount.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        layout
    }

    /// The backend this layout leads to. v1 wins over v2 when v1 has both
    /// cpu and memory: a controller bound to v1 is absent from v2, and on
    /// hybrid hosts the processes' limits live in v1.
    pub fn kind(&self) -> LayoutKind {
        let v1 = self.cpu.is_some() && self.memory.is_some();
        if v1 {
            if self.unified.is_some() {
                LayoutKind::Hybrid
            } else {
                LayoutKind::V1
            }
        } else if self.v2.is_some() {
            LayoutKind::V2
        } else {
            LayoutKind::None
        }
    }

    /// Whether groups can be frozen: v1 needs the freezer hierarchy; on v2
    /// the freezer is part of the core (`cgroup.freeze`, Linux 5.2+).
    pub fn can_freeze(&self) -> bool {
        match self.kind() {
            LayoutKind::V2 => true,
            LayoutKind::V1 | LayoutKind::Hybrid => self.freezer.is_some(),
            LayoutKind::None => false,
        }
    }

    pub(crate) fn v2_mount(&self) -> Option<&Path> {
        self.v2.as_deref()
    }

    pub(crate) fn v1_mounts(&self) -> Option<V1Mounts> {
        Some(V1Mounts {
            cpu: self.cpu.clone()?,
            cpuacct: self.cpuacct.clone(),
            memory: self.memory.clone()?,
            freezer: self.freezer.clone(),
        })
    }
}

fn v2_has_cpu_and_memory(mount: &Path) -> bool {
    match std::fs::read_to_string(mount.join("cgroup.controllers")) {
        Ok(text) => {
            let has = |c: &str| text.split_whitespace().any(|t| t == c);
            has("cpu") && has("memory")
        }
        Err(_) => false,
    }
}

struct MountLine<'a> {
    mount_point: PathBuf,
    fs_type: &'a str,
    super_options: &'a str,
}

/// One mountinfo line: `id parent maj:min root mount_point options
/// [optional fields...] - fs_type source super_options`. The optional fields
/// (`shared:N`, `master:N`, ...) vary in number, hence the search for `-`.
fn parse_line(line: &str) -> Option<MountLine<'_>> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 {
        return None;
    }
    let fs_type = *fields.get(sep + 1)?;
    let super_options = fields.get(sep + 3).copied().unwrap_or("");
    Some(MountLine {
        mount_point: unescape(fields[4]),
        fs_type,
        super_options,
    })
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash
/// (`\040`, `\011`, `\012`, `\134`) in mount points.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(b) = bytes.get(i + 1..i + 4).and_then(octal_byte) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    let mut value: u16 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return None;
        }
        value = value * 8 + u16::from(d - b'0');
    }
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const HYBRID: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const CLASSIC_V1: &str = "\
25 21 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,freezer
32 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpuset
";

    const PURE_V2: &str = "\
24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn hybrid_with_separate_cpu_and_cpuacct() {
        let l = Layout::from_mountinfo(HYBRID, None);
        assert_eq!(l.cpu, p("/sys/fs/cgroup/cpu"));
        assert_eq!(l.cpuacct, p("/sys/fs/cgroup/cpuacct"));
        assert_eq!(l.memory, p("/sys/fs/cgroup/memory"));
        assert_eq!(l.freezer, p("/sys/fs/cgroup/freezer"));
        assert_eq!(l.unified, p("/sys/fs/cgroup/unified"));
        // No cgroup.controllers readable under a fake root: not usable as v2.
        let root = tempfile::tempdir().unwrap();
        let l2 = Layout::from_mountinfo(HYBRID, Some(root.path()));
        assert_eq!(l2.v2, None);
        assert_eq!(l2.kind(), LayoutKind::Hybrid);
        assert_eq!(l.kind(), LayoutKind::Hybrid);
        assert!(l.can_freeze());
        assert_eq!(l.kind().to_string(), "cgroup v1 (hybrid)");
    }

    #[test]
    fn classic_v1_comounted_cpu_cpuacct() {
        let l = Layout::from_mountinfo(CLASSIC_V1, None);
        assert_eq!(l.cpu, p("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.cpuacct, l.cpu);
        assert_eq!(l.memory, p("/sys/fs/cgroup/memory"));
        assert_eq!(l.freezer, p("/sys/fs/cgroup/freezer"));
        assert_eq!(l.unified, None);
        assert_eq!(l.kind(), LayoutKind::V1);
        assert_eq!(l.kind().to_string(), "cgroup v1");
        assert!(l.can_freeze());
    }

    #[test]
    fn pure_v2_reads_controllers_from_fake_root() {
        let root = tempfile::tempdir().unwrap();
        let cg = root.path().join("sys/fs/cgroup");
        fs::create_dir_all(&cg).unwrap();
        fs::write(
            cg.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        let l = Layout::from_mountinfo(PURE_V2, Some(root.path()));
        assert_eq!(l.v2, Some(cg.clone()));
        assert_eq!(l.kind(), LayoutKind::V2);
        assert_eq!(l.kind().to_string(), "cgroup v2");
        assert!(l.can_freeze());

        // Without cpu+memory delegated, v2 is not usable.
        fs::write(cg.join("cgroup.controllers"), "cpuset io pids\n").unwrap();
        let l = Layout::from_mountinfo(PURE_V2, Some(root.path()));
        assert_eq!(l.v2, None);
        assert_eq!(l.unified, Some(cg));
        assert_eq!(l.kind(), LayoutKind::None);
        assert!(!l.can_freeze());
    }

    #[test]
    fn v2_preferred_only_when_v1_lacks_cpu_or_memory() {
        let root = tempfile::tempdir().unwrap();
        let cg = root.path().join("sys/fs/cgroup/unified");
        fs::create_dir_all(&cg).unwrap();
        fs::write(cg.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let both = Layout::from_mountinfo(HYBRID, Some(root.path()));
        assert_eq!(both.kind(), LayoutKind::Hybrid);
        let only_cpu_v1 = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let l = Layout::from_mountinfo(only_cpu_v1, Some(root.path()));
        assert_eq!(l.kind(), LayoutKind::V2);
    }

    #[test]
    fn no_cgroups() {
        let text = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
23 1 0:22 / /sys rw,nosuid - sysfs sysfs rw
";
        for l in [
            Layout::from_mountinfo(text, None),
            Layout::from_mountinfo("", None),
            Layout::default(),
        ] {
            assert_eq!(l.kind(), LayoutKind::None);
            assert_eq!(l.kind().to_string(), "none");
            assert!(!l.can_freeze());
        }
    }

    #[test]
    fn escaped_mount_points_and_optional_fields() {
        let text = "\
50 31 0:40 / /mnt/my\\040cgroups/cpu\\134x rw,relatime shared:21 master:3 propagate_from:2 - cgroup cgroup rw,cpu,cpuacct
51 31 0:41 / /mnt/mem\\011tab rw,relatime shared:22 - cgroup none rw,memory
";
        let l = Layout::from_mountinfo(text, None);
        assert_eq!(l.cpu, p("/mnt/my cgroups/cpu\\x"));
        assert_eq!(l.cpuacct, p("/mnt/my cgroups/cpu\\x"));
        assert_eq!(l.memory, p("/mnt/mem\ttab"));
        assert_eq!(l.kind(), LayoutKind::V1);
        assert!(!l.can_freeze());
        // Incomplete escapes are kept verbatim.
        assert_eq!(unescape("/a\\04"), PathBuf::from("/a\\04"));
        assert_eq!(unescape("/a\\999"), PathBuf::from("/a\\999"));
        assert_eq!(unescape("/a\\777"), PathBuf::from("/a\\777"));
    }

    #[test]
    fn garbage_lines_are_skipped() {
        let text = "\
garbage
1 2 3 - cgroup cgroup rw,cpu
- - - - - - - - -
32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup
32 31 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup
\u{0}\u{ffff} \\\\\\
";
        let l = Layout::from_mountinfo(text, None);
        assert_eq!(l.cpu, None);
        assert_eq!(l.memory, None);
        assert_eq!(l.kind(), LayoutKind::None);
    }

    #[test]
    fn first_mount_wins() {
        let text = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
90 31 0:29 / /var/lib/other/cpu rw - cgroup cgroup rw,cpu
";
        let l = Layout::from_mountinfo(text, None);
        assert_eq!(l.cpu, p("/sys/fs/cgroup/cpu"));
        assert_eq!(l.cpuacct, None);
    }

    #[test]
    fn detect_does_not_panic() {
        let _ = Layout::detect().kind();
    }
}
