//! The binary log archive of a local server: its files copied as they grow, by offset. A binary
//! log file is only ever appended to (<https://mariadb.com/kb/en/binary-log/>), so what was
//! copied stays right and a copy resumes where the last one stopped, after a crash of the server
//! or of Stratus alike; an event half written when copied is completed by the next copy.

use crate::{Result, RuntimeError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Whether `name` is one of the server's binary log files (`mariadb-bin.000001`), its index,
/// or the commit times beside a log file (`mariadb-bin.000001.commits`, also only appended to).
fn is_log(name: &str) -> bool {
    let name = name
        .strip_suffix(crate::commit_times::SUFFIX)
        .filter(|n| !n.ends_with(".index"))
        .unwrap_or(name);
    match name.strip_prefix("mariadb-bin.") {
        Some("index") => true,
        Some(n) => n.len() >= 6 && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Copies what is new in the binary log files of `from` into `to`. Returns the bytes copied.
pub fn copy_new(from: &Path, to: &Path) -> Result<u64> {
    let io = |what: &str, p: &Path| {
        let what = format!("{what} {}", p.display());
        move |e| RuntimeError::io(what, e)
    };
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(0); // no binary log yet
    };
    std::fs::create_dir_all(to).map_err(io("cannot create", to))?;
    // Commit times first: each names a transaction already written to its log, so the logs
    // copied after them hold every transaction the archived times name.
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| {
        !e.file_name()
            .to_string_lossy()
            .ends_with(crate::commit_times::SUFFIX)
    });
    let mut copied = 0;
    for e in entries {
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| is_log(n)) else {
            continue;
        };
        let (src, dst) = (e.path(), to.join(name));
        let len = e.metadata().map_err(io("cannot read", &src))?.len();
        if name.ends_with(".index") {
            // Rewritten in place by the server: copied whole.
            std::fs::copy(&src, &dst).map_err(io("cannot copy", &src))?;
            continue;
        }
        let have = std::fs::metadata(&dst).map_or(0, |m| m.len());
        if have >= len {
            continue;
        }
        copied += copy_range(&src, &dst, have, len)?;
    }
    Ok(copied)
}

/// Copies `src`'s bytes `from..to` to the same offsets of `dst`. At offsets, not appended: two
/// copies that overlap (the backup schedule's and a restore's, run at once) write the same
/// bytes to the same places, where appends would each add them, and the archive would hold
/// events twice, which a replay cannot parse.
fn copy_range(src: &Path, dst: &Path, from: u64, to: u64) -> Result<u64> {
    let io = |what: &str, p: &Path| {
        let what = format!("{what} {}", p.display());
        move |e| RuntimeError::io(what, e)
    };
    let mut r = std::fs::File::open(src).map_err(io("cannot open", src))?;
    r.seek(SeekFrom::Start(from))
        .map_err(io("cannot read", src))?;
    let mut w = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(dst)
        .map_err(io("cannot open", dst))?;
    w.seek(SeekFrom::Start(from))
        .map_err(io("cannot write", dst))?;
    let n = std::io::copy(&mut r.take(to - from), &mut w).map_err(io("cannot copy", src))?;
    w.flush().map_err(io("cannot write", dst))?;
    w.sync_data().map_err(io("cannot sync", dst))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_only_what_is_new_and_only_the_logs() {
        let d = tempfile::tempdir().unwrap();
        let (from, to) = (d.path().join("binlog"), d.path().join("archive"));
        std::fs::create_dir(&from).unwrap();
        std::fs::write(from.join("mariadb-bin.000001"), b"first events").unwrap();
        std::fs::write(from.join("mariadb-bin.index"), b"./mariadb-bin.000001\n").unwrap();
        std::fs::write(from.join("mariadb-bin.state"), b"not a log").unwrap();
        assert_eq!(copy_new(&from, &to).unwrap(), 12);
        assert_eq!(copy_new(&from, &to).unwrap(), 0, "nothing new");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(from.join("mariadb-bin.000001"))
            .unwrap();
        f.write_all(b", more").unwrap();
        std::fs::write(from.join("mariadb-bin.000002"), b"next").unwrap();
        assert_eq!(copy_new(&from, &to).unwrap(), 6 + 4);
        assert_eq!(
            std::fs::read(to.join("mariadb-bin.000001")).unwrap(),
            b"first events, more"
        );
        assert!(to.join("mariadb-bin.index").exists());
        assert!(!to.join("mariadb-bin.state").exists());
        assert!(!is_log("mariadb-bin.1") && is_log("mariadb-bin.000123"));
        assert!(is_log("mariadb-bin.000123.commits") && !is_log("mariadb-bin.1.commits"));
    }

    /// Two copies that both found the archive at the same length (run at once) leave it as the
    /// log is, not with the new bytes twice.
    #[test]
    fn overlapping_copies_leave_the_log_once() {
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (d.path().join("log"), d.path().join("copy"));
        std::fs::write(&src, b"first events, more").unwrap();
        std::fs::write(&dst, b"first").unwrap();
        assert_eq!(copy_range(&src, &dst, 5, 12).unwrap(), 7);
        assert_eq!(copy_range(&src, &dst, 5, 18).unwrap(), 13);
        assert_eq!(std::fs::read(&dst).unwrap(), b"first events, more");
    }
}
