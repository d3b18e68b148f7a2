//! Exercises the backend against this host's real /sys/fs/cgroup. Needs
//! root and a usable layout; otherwise it explains why and returns early.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use stratus_cgroup::{Cgroup, Error, Layout, LayoutKind, Manager, proc_usage};

/// Kills the child and removes what the test created even when an
/// assertion fails midway, so no stray groups are left on the host.
struct Cleanup {
    child: Option<Child>,
    group: Option<Cgroup>,
    parent_dirs: Vec<PathBuf>,
}

impl Cleanup {
    fn kill_child(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.kill_child();
        if let Some(group) = self.group.take() {
            // Thaw first: a frozen group would keep the killed child alive.
            let _ = group.thaw(Duration::from_secs(1));
            if let Err(e) = group.remove() {
                eprintln!("cleanup: {e}");
            }
        }
        for dir in &self.parent_dirs {
            if let Err(e) = std::fs::remove_dir(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("cleanup: cannot remove {}: {e}", dir.display());
                }
            }
        }
    }
}

/// Bounded wait (no sleeping): re-reads `probe` until `done` holds.
fn wait_for<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = probe();
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v:?}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn real_host_cgroup_lifecycle() {
    let layout = Layout::detect();
    let kind = layout.kind();
    eprintln!("detected layout: {kind} ({layout:?})");
    if kind == LayoutKind::None {
        eprintln!("skipping: no usable cgroup hierarchy on this host");
        return;
    }
    let parent = format!("stratus-test-{}", std::process::id());
    let mgr = match Manager::new(layout.clone(), &parent) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipping: cgroups not writable here (not root?): {e}");
            return;
        }
    };
    assert_eq!(mgr.kind(), kind);

    let cg = mgr.create("shop").expect("create group");
    let mut parent_dirs: Vec<PathBuf> = cg
        .procs_files()
        .iter()
        .filter_map(|f| Some(f.parent()?.parent()?.to_path_buf()))
        .collect();
    parent_dirs.dedup();
    let mut cleanup = Cleanup {
        child: None,
        group: Some(cg.clone()),
        parent_dirs,
    };
    assert_eq!(cg.name(), "shop");
    for f in cg.procs_files() {
        assert!(f.exists(), "{} missing", f.display());
        assert!(f.to_string_lossy().contains(&parent), "{}", f.display());
    }
    if kind == LayoutKind::V2 {
        assert_eq!(cg.procs_files().len(), 1);
    }
    // Reuse and open.
    mgr.create("shop").expect("reuse group");
    let cg = mgr.open("shop").expect("open group");
    assert!(matches!(mgr.open("nope"), Err(Error::NotFound { .. })));

    // Limits round-trip exactly through the kernel.
    cg.set_cpu_limit(Some(250)).expect("set cpu");
    assert_eq!(cg.cpu_limit().expect("read cpu"), Some(250));
    cg.set_memory_limit(Some(256 << 20)).expect("set memory");
    assert_eq!(cg.memory_limit().expect("read memory"), Some(256 << 20));
    cg.set_cpu_limit(None).expect("unset cpu");
    assert_eq!(cg.cpu_limit().expect("read cpu"), None);
    cg.set_memory_limit(None).expect("unset memory");
    assert_eq!(cg.memory_limit().expect("read memory"), None);
    cg.set_cpu_limit(Some(250)).expect("set cpu");
    cg.set_memory_limit(Some(256 << 20)).expect("set memory");

    let before = cg.usage().expect("usage");
    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("spawn sh");
    let pid = child.id();
    cleanup.child = Some(child);
    cg.add_pid(pid).expect("add pid");
    assert!(cg.pids().expect("pids").contains(&pid));

    let after = wait_for(
        "group CPU usage to grow",
        || cg.usage().expect("usage"),
        |u| u.cpu_ns > before.cpu_ns,
    );
    eprintln!("group usage: before {before:?}, after {after:?}");

    let pu = wait_for(
        "proc_usage CPU time to grow",
        || proc_usage(pid).expect("proc_usage"),
        |u| u.cpu_ns > 0,
    );
    assert!(pu.memory_bytes > 0, "{pu:?}");
    eprintln!("proc_usage({pid}): {pu:?}");

    // Renamed with its process in it (v1): the process is in the renamed group, and the
    // group's limits and usage went with it. v2 refuses, changing nothing.
    match mgr.rename("shop", "shop-renamed") {
        Ok(renamed) => {
            assert_ne!(kind, LayoutKind::V2);
            cleanup.group = Some(renamed.clone());
            assert!(renamed.pids().expect("pids").contains(&pid));
            let seen = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            assert!(seen.contains("shop-renamed"), "{seen}");
            assert_eq!(renamed.cpu_limit().expect("read cpu"), Some(250));
            assert!(renamed.usage().expect("usage").cpu_ns >= after.cpu_ns);
            assert!(matches!(mgr.open("shop"), Err(Error::NotFound { .. })));
            mgr.rename("shop-renamed", "shop").expect("rename back");
            cleanup.group = Some(cg.clone());
        }
        Err(e) => {
            assert_eq!(kind, LayoutKind::V2, "{e}");
            assert!(matches!(e, Error::Unsupported { .. }), "{e}");
        }
    }

    // Processes remain: removal must fail clearly and leave the group.
    let err = cg.remove().expect_err("remove with a live process");
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    eprintln!("expected removal error: {err}");
    assert!(mgr.open("shop").is_ok());

    assert_eq!(cg.can_freeze(), layout.can_freeze());
    if cg.can_freeze() {
        cg.freeze(Duration::from_secs(5)).expect("freeze");
        assert!(cg.is_frozen().expect("is_frozen"));
        eprintln!("group frozen");
        cg.thaw(Duration::from_secs(5)).expect("thaw");
        assert!(!cg.is_frozen().expect("is_frozen"));
    } else {
        eprintln!("no freezer on this host; freeze not tested");
    }

    cleanup.kill_child();
    wait_for(
        "the group to become empty",
        || cg.pids().expect("pids"),
        Vec::is_empty,
    );
    cg.remove().expect("remove group");
    cg.remove().expect("remove is idempotent");
    assert!(matches!(mgr.open("shop"), Err(Error::NotFound { .. })));
    for f in cg.procs_files() {
        assert!(!f.exists(), "{} still exists", f.display());
    }
    cleanup.group = None;
    let dirs = std::mem::take(&mut cleanup.parent_dirs);
    for dir in &dirs {
        std::fs::remove_dir(dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
    }
}
