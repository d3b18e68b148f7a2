//! Small helpers for cgroupfs/procfs files that attach the path to every
//! error and never panic on unexpected contents.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Error, Result};

pub(crate) fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|err| Error::Read {
        path: path.to_path_buf(),
        err,
    })
}

pub(crate) fn read_trimmed(path: &Path) -> Result<String> {
    read(path).map(|s| s.trim().to_string())
}

/// Writes `value` in one `write(2)`: cgroupfs acts on each write, so the
/// value must not be split. No `O_CREAT`: a missing control file means the
/// controller is absent and must be reported, not papered over. `O_TRUNC`
/// is ignored by cgroupfs but keeps fake trees in tests correct.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let err = |err| Error::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        err,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    let n = file.write(value.as_bytes()).map_err(err)?;
    if n != value.len() {
        return Err(err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write ({n} of {} bytes)", value.len()),
        )));
    }
    Ok(())
}

pub(crate) fn parse_u64(path: &Path, text: &str) -> Result<u64> {
    text.trim().parse().map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        reason: format!("expected an unsigned integer, found {:?}", text.trim()),
    })
}

pub(crate) fn parse_i64(path: &Path, text: &str) -> Result<i64> {
    text.trim().parse().map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        reason: format!("expected an integer, found {:?}", text.trim()),
    })
}

pub(crate) fn read_u64(path: &Path) -> Result<u64> {
    parse_u64(path, &read(path)?)
}

/// Value of `key` in a flat-keyed file ("key value" per line: `cpu.stat`,
/// `cgroup.events`).
pub(crate) fn keyed_u64(path: &Path, text: &str, key: &str) -> Result<u64> {
    text.lines()
        .filter_map(|line| line.split_once(char::is_whitespace))
        .find(|(k, _)| *k == key)
        .ok_or_else(|| Error::Parse {
            path: path.to_path_buf(),
            reason: format!("no {key:?} entry"),
        })
        .and_then(|(_, v)| parse_u64(path, v))
}

/// PIDs listed in a `cgroup.procs` file, one per line.
pub(crate) fn read_pids(path: &Path) -> Result<Vec<u32>> {
    read(path)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse().map_err(|_| Error::Parse {
                path: path.to_path_buf(),
                reason: format!("expected a pid, found {l:?}"),
            })
        })
        .collect()
}

/// `mkdir`, tolerating an existing directory (groups are reused).
pub(crate) fn mkdir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(err) => Err(Error::Create {
            path: path.to_path_buf(),
            err,
        }),
    }
}

/// `rmdir`, tolerating a directory that is already gone (idempotent remove).
pub(crate) fn rmdir(path: &Path) -> Result<()> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::ResourceBusy | io::ErrorKind::DirectoryNotEmpty
            ) =>
        {
            Err(Error::Busy {
                path: path.to_path_buf(),
                err,
            })
        }
        Err(err) => Err(Error::Remove {
            path: path.to_path_buf(),
            err,
        }),
    }
}

/// Bounded readiness poll of kernel state: checks `reached` every 1 ms until
/// it returns true or `timeout` elapses. Freezing is asynchronous in the
/// kernel and offers no blocking wait short of inotify on cgroup.events
/// (v2 only), so a short poll is the portable option.
pub(crate) fn poll_until(
    path: &Path,
    state: &'static str,
    timeout: Duration,
    mut reached: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if reached()? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                path: path.to_path_buf(),
                state,
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values() {
        let p = Path::new("cpu.stat");
        let text = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
        assert_eq!(keyed_u64(p, text, "usage_usec").unwrap(), 1234);
        assert_eq!(keyed_u64(p, text, "system_usec").unwrap(), 234);
        assert!(matches!(
            keyed_u64(p, text, "nope"),
            Err(Error::Parse { .. })
        ));
        assert!(keyed_u64(p, "usage_usec x\n", "usage_usec").is_err());
    }

    #[test]
    fn write_truncates_and_requires_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cpu.cfs_quota_us");
        assert!(matches!(write(&f, "1"), Err(Error::Write { .. })));
        fs::write(&f, "100000\n").unwrap();
        write(&f, "-1").unwrap();
        assert_eq!(read_trimmed(&f).unwrap(), "-1");
    }

    #[test]
    fn pids_and_rmdir() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cgroup.procs");
        fs::write(&f, "1\n22\n\n333\n").unwrap();
        assert_eq!(read_pids(&f).unwrap(), vec![1, 22, 333]);
        fs::write(&f, "1\nabc\n").unwrap();
        assert!(read_pids(&f).is_err());
        let busy = dir.path();
        assert!(matches!(rmdir(busy), Err(Error::Busy { .. })));
        let gone = dir.path().join("gone");
        rmdir(&gone).unwrap();
        mkdir(&gone).unwrap();
        mkdir(&gone).unwrap();
        rmdir(&gone).unwrap();
        assert!(!gone.exists());
    }

    #[test]
    fn poll_times_out() {
        let p = Path::new("freezer.state");
        let err = poll_until(p, "FROZEN", Duration::from_millis(5), || Ok(false)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }));
        let mut n = 0;
        poll_until(p, "FROZEN", Duration::from_secs(5), || {
            n += 1;
            Ok(n == 3)
        })
        .unwrap();
    }
}
