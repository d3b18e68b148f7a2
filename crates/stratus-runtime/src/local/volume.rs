//! A volume per database: a sparse image file formatted as XFS with reflink
//! (<https://man7.org/linux/man-pages/man8/mkfs.xfs.8.html>), loop-mounted over the database's data
//! directory (`nodev,nosuid,noexec`). Its size is a real limit (a full volume makes the server's
//! writes fail, not the host's disk fill), its use is what `statvfs` says, it grows online
//! (`xfs_growfs` after the image and its loop device are enlarged), and files copied within it
//! can share blocks. A sparse image costs only what is written to it.
//!
//! The image files themselves live in one more XFS file system, the pool (a sparse image of
//! [`POOL_BYTES`] mounted at `<data dir>/volumes`), whatever the host's own file system is: there
//! a volume is copied by reflink in an instant, blocks shared until either side writes them,
//! which is how a branch is made ([`Volumes::snapshot`]). Copies share their file system's UUID,
//! so every volume is mounted `nouuid`.
//!
//! Mounting needs root and loop devices; where either is missing (an unprivileged user, a
//! container), [`Volumes::probe`] says why and databases live in plain directories.

use crate::{Result, RuntimeError};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// XFS refuses file systems smaller than 300 MiB.
pub const MIN_BYTES: u64 = 300 << 20;
/// The pool's size: sparse, so it costs what the volumes in it hold; each volume's own size is
/// what limits a database.
pub const POOL_BYTES: u64 = 4 << 40;

#[derive(Clone)]
pub struct Volumes {
    /// Where the image files are.
    dir: PathBuf,
}

fn run(cmd: &mut Command) -> std::result::Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn err(context: &str) -> impl FnOnce(String) -> RuntimeError + '_ {
    move |why| RuntimeError::Other(format!("{context}: {why}"))
}

/// Whether something is mounted at `path` (its device differs from its parent's).
pub fn is_mounted(path: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    me.dev() != parent.dev()
}

/// Bytes used and bytes in all of the file system mounted at `path`.
pub fn usage(path: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    let size = s.f_blocks * s.f_frsize;
    let free = s.f_bfree * s.f_frsize;
    Some((size.saturating_sub(free), size))
}

impl Volumes {
    /// Volumes under `dir`, if this host lets Stratus make them: root, the tools, and a trial
    /// volume made, mounted and removed. `Err` says why not.
    pub fn probe(dir: &Path) -> std::result::Result<Self, String> {
        if !rustix::process::geteuid().is_root() {
            return Err("Stratus does not run as root, so it cannot mount volumes".into());
        }
        for tool in [
            "mkfs.xfs",
            "xfs_growfs",
            "xfs_freeze",
            "losetup",
            "mount",
            "umount",
            "cp",
        ] {
            let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(tool).is_file());
            if !found {
                return Err(format!(
                    "{tool} is not installed (package xfsprogs / mount)"
                ));
            }
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        if !is_mounted(dir) {
            let pool = dir.with_extension("img");
            if !pool.exists() {
                let f = std::fs::File::create_new(&pool)
                    .map_err(|e| format!("cannot create {}: {e}", pool.display()))?;
                f.set_len(POOL_BYTES)
                    .map_err(|e| format!("cannot size {}: {e}", pool.display()))?;
                drop(f);
                // A small log: mkfs writes the whole log, which for a file system this size
                // would be 2 GiB of zeroes on the host's disk for a pool of a few volumes.
                if let Err(e) = run(Command::new("mkfs.xfs")
                    .args(["-q", "-m", "reflink=1", "-l", "size=64m"])
                    .arg(&pool))
                {
                    let _ = std::fs::remove_file(&pool);
                    return Err(e);
                }
            }
            run(Command::new("mount")
                .args(["-t", "xfs", "-o", "loop,nodev,nosuid,noexec"])
                .arg(&pool)
                .arg(dir))?;
        }
        let v = Self {
            dir: dir.to_owned(),
        };
        let trial = dir.join(".probe-mnt");
        let _ = std::fs::create_dir(&trial);
        let made = v.create(".probe", MIN_BYTES, &trial);
        let _ = v.remove(".probe", &trial);
        let _ = std::fs::remove_dir(&trial);
        made.map_err(|e| format!("a trial volume failed: {e}"))?;
        Ok(v)
    }

    fn image(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.img"))
    }

    pub fn exists(&self, key: &str) -> bool {
        self.image(key).is_file()
    }

    /// The size of the volume of `key` (its image).
    pub fn size(&self, key: &str) -> Option<u64> {
        std::fs::metadata(self.image(key)).ok().map(|m| m.len())
    }

    /// Makes a volume of `bytes` for `key` and mounts it at `at` (an existing empty directory).
    pub fn create(&self, key: &str, bytes: u64, at: &Path) -> Result<()> {
        let image = self.image(key);
        let made = (|| {
            let f = std::fs::File::create_new(&image)
                .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
            f.set_len(bytes.max(MIN_BYTES))
                .map_err(|e| format!("cannot size {}: {e}", image.display()))?;
            drop(f);
            run(Command::new("mkfs.xfs")
                .args(["-q", "-m", "reflink=1"])
                .arg(&image))?;
            Ok::<_, String>(())
        })();
        if let Err(why) = made {
            let _ = std::fs::remove_file(&image);
            return Err(RuntimeError::Other(format!("volume of {key}: {why}")));
        }
        self.mount(key, at)
    }

    /// Mounts the volume of `key` at `at` unless it is mounted already (after a reboot, loop
    /// devices and mounts are gone while the images stay).
    pub fn mount(&self, key: &str, at: &Path) -> Result<()> {
        if is_mounted(at) {
            return Ok(());
        }
        std::fs::create_dir_all(at)
            .map_err(|e| RuntimeError::io(format!("cannot create {}", at.display()), e))?;
        run(Command::new("mount")
            .args(["-t", "xfs", "-o", "loop,nouuid,nodev,nosuid,noexec"])
            .arg(self.image(key))
            .arg(at))
        .map(drop)
        .map_err(err(&format!("cannot mount the volume of {key}")))
    }

    /// Grows the volume of `key`, mounted at `at`, to `bytes`, online.
    pub fn grow(&self, key: &str, bytes: u64, at: &Path) -> Result<()> {
        let image = self.image(key);
        let context = format!("cannot grow the volume of {key}");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .map_err(|e| RuntimeError::io(context.clone(), e))?;
        if f.metadata().map(|m| m.len()).unwrap_or(0) >= bytes {
            return Ok(());
        }
        f.set_len(bytes)
            .map_err(|e| RuntimeError::io(context.clone(), e))?;
        drop(f);
        // `/dev/loopN: []: (/path/key.img)`: the device the image is attached to.
        let listed = run(Command::new("losetup").arg("-j").arg(&image)).map_err(err(&context))?;
        let device = listed
            .split(':')
            .next()
            .filter(|d| d.starts_with("/dev/loop"))
            .ok_or_else(|| RuntimeError::Other(format!("{context}: it is not attached")))?;
        run(Command::new("losetup").args(["-c", device])).map_err(err(&context))?;
        run(Command::new("xfs_growfs").arg(at))
            .map(drop)
            .map_err(err(&context))
    }

    /// Unmounts (which detaches the loop device) and deletes the volume of `key`.
    pub fn remove(&self, key: &str, at: &Path) -> Result<()> {
        if is_mounted(at) {
            run(Command::new("umount").arg(at))
                .map_err(err(&format!("cannot unmount the volume of {key}")))?;
        }
        match std::fs::remove_file(self.image(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::io(
                format!("cannot delete the volume of {key}"),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// Unmounts the volume of `key` (Stratus is shutting down); the image stays.
    pub fn unmount(&self, at: &Path) {
        if is_mounted(at) {
            let _ = run(Command::new("umount").arg(at));
        }
    }

    /// Unmounts the pool, once its volumes are (Stratus is shutting down).
    pub fn unmount_pool(&self) {
        self.unmount(&self.dir);
    }

    /// Copies the volume of `from`, mounted at `at`, into a new volume `to` that shares its
    /// blocks. The file system is frozen for the copy (`xfs_freeze`), so the copy is whole and
    /// consistent, as a power cut would have left it; it takes milliseconds whatever it holds.
    pub fn snapshot(&self, from: &str, at: &Path, to: &str) -> Result<()> {
        let context = format!("cannot copy the volume of {from}");
        run(Command::new("xfs_freeze").arg("-f").arg(at)).map_err(err(&context))?;
        let copied = run(Command::new("cp")
            .arg("--reflink=always")
            .arg(self.image(from))
            .arg(self.image(to)));
        let thawed = run(Command::new("xfs_freeze").arg("-u").arg(at));
        if copied.is_err() {
            let _ = std::fs::remove_file(self.image(to));
        }
        copied.map_err(err(&context))?;
        thawed.map(drop).map_err(err(&context))
    }
}

/// The disk space the files under `dir` take (their allocated blocks, so sparse files count
/// for what they hold), for directories no volume limits.
pub fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}
