//! When each transaction committed, to the microsecond, beside the binary log that holds it.
//!
//! A binary log records times to the second only (the event header,
//! <https://mariadb.com/kb/en/2-binlog-event-header/>), too coarse for "the last transaction
//! committed at or before T". So Stratus follows each server as a semi-synchronous replica
//! (`local::commit_clock`, <https://mariadb.com/kb/en/semisynchronous-replication/>): with
//! `rpl_semi_sync_master_wait_point = AFTER_SYNC` the server waits for Stratus's acknowledgement
//! of a transaction before it commits it in the engine and answers the client, so the time
//! Stratus receives it lies between its write to the binary log and the moment anyone can see
//! it. Each one is a line of `<binlog file>.commits`:
//!
//! ```text
//! <end position> <unix time in µs> <GTID> <e|s>
//! ```
//!
//! `e` (exact) marks a transaction the server waited for (`[mariadb] exact_commit_times`). `a`
//! (arrival) one received without such a wait: its time is when it reached Stratus, or the end
//! of the binary log's second for it if that is earlier (one caught up after a reconnect), so it
//! is never before the commit but may be after it by the clock's lag. Lines are appended in
//! binary log order, so the transactions at or before a time are a prefix, and the files are
//! archived with the logs.

use std::path::{Path, PathBuf};

/// A position in a server's binary log: file name and byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
}

impl BinlogPos {
    /// The file's sequence number (`mariadb-bin.000042` → 42), which orders files.
    pub fn file_number(&self) -> Option<u64> {
        file_number(&self.file)
    }

    /// Whether this position comes before `other` in the log.
    pub fn before(&self, other: &BinlogPos) -> bool {
        (self.file_number(), self.pos) < (other.file_number(), other.pos)
    }
}

pub fn file_number(file: &str) -> Option<u64> {
    let (_, n) = file.rsplit_once('.')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// The suffix of the file beside `<binlog file>`.
pub const SUFFIX: &str = ".commits";

/// One committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Where it ends in its binary log file.
    pub end: u64,
    /// Microseconds since the Unix epoch.
    pub at_us: i64,
    pub gtid: String,
    /// Whether `at_us` is the acknowledged arrival (`true`) or an arrival the server did not
    /// wait for (a bound above the commit, by the clock's lag).
    pub exact: bool,
}

impl Commit {
    pub fn line(&self) -> String {
        let kind = if self.exact { 'e' } else { 'a' };
        format!("{} {} {} {kind}\n", self.end, self.at_us, self.gtid)
    }

    /// Parses a line (without its newline); `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let mut it = line.split(' ');
        let end = it.next()?.parse().ok()?;
        let at_us = it.next()?.parse().ok()?;
        let gtid = it.next()?.to_owned();
        let exact = match it.next()? {
            "e" => true,
            "a" => false,
            _ => return None,
        };
        it.next().is_none().then_some(Self {
            end,
            at_us,
            gtid,
            exact,
        })
    }

    /// Whether it committed at or before `t_us`. Both kinds of time are at or after the commit,
    /// so a transaction is never placed before `t` when it was after; one the server did not
    /// wait for may be placed after `t` when it committed within the clock's lag before it.
    pub fn at_or_before(&self, t_us: i64) -> bool {
        self.at_us <= t_us
    }
}

/// The complete lines of a `.commits` file (a last line still being written is left out).
pub fn read(path: &Path) -> std::io::Result<Vec<Commit>> {
    let text = std::fs::read_to_string(path)?;
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    Ok(complete.lines().filter_map(Commit::parse).collect())
}

/// The `.commits` files of `dir`, in binary log order, with their log file's name.
pub fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(u64, String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let log = name.strip_suffix(SUFFIX)?.to_owned();
            Some((file_number(&log)?, log, e.path()))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, log, path)| (log, path)).collect()
}

/// The last transaction to replay on top of a backup taken at `base` to have every transaction
/// committed at or before `t_us` and none after: the end of the longest prefix of the log
/// after `base` whose commits are all at or before `t_us`. `None`: nothing after `base` is.
pub fn cut(
    dir: &Path,
    base: &BinlogPos,
    t_us: i64,
) -> std::io::Result<Option<(BinlogPos, Commit)>> {
    let mut last = None;
    for (log, path) in files(dir) {
        let at = BinlogPos {
            file: log.clone(),
            pos: u64::MAX,
        };
        if at.before(base) {
            continue;
        }
        for c in read(&path)? {
            let here = BinlogPos {
                file: log.clone(),
                pos: c.end,
            };
            if !base.before(&here) {
                continue;
            }
            if !c.at_or_before(t_us) {
                return Ok(last);
            }
            last = Some((here, c));
        }
    }
    Ok(last)
}

/// The last transaction recorded in `dir` that ends at or before `pos`.
pub fn last_at_or_before(dir: &Path, pos: &BinlogPos) -> std::io::Result<Option<Commit>> {
    let mut last = None;
    for (log, path) in files(dir) {
        for c in read(&path)? {
            let here = BinlogPos {
                file: log.clone(),
                pos: c.end,
            };
            if pos.before(&here) {
                return Ok(last);
            }
            last = Some(c);
        }
    }
    Ok(last)
}

/// The newest commit time recorded in `dir`, if any.
pub fn newest(dir: &Path) -> Option<i64> {
    files(dir)
        .iter()
        .rev()
        .find_map(|(_, p)| read(p).ok()?.last().map(|c| c.at_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(end: u64, at_us: i64, exact: bool) -> Commit {
        Commit {
            end,
            at_us,
            gtid: format!("0-1-{end}"),
            exact,
        }
    }

    #[test]
    fn lines_round_trip_and_garbage_is_not_a_commit() {
        let x = c(1269, 1_796_068_712_123_456, true);
        assert_eq!(x.line(), "1269 1796068712123456 0-1-1269 e\n");
        assert_eq!(Commit::parse(x.line().trim_end()), Some(x));
        for bad in [
            "",
            "1 2 3",
            "1 2 0-1-1 s",
            "a 2 0-1-1 e",
            "1 2 0-1-1 e extra",
        ] {
            assert_eq!(Commit::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_commit_is_at_or_before_t_by_its_time_whatever_its_kind() {
        let t = 10_500_000; // 10.5 s
        for exact in [true, false] {
            assert!(c(1, 10_499_999, exact).at_or_before(t));
            assert!(c(1, 10_500_000, exact).at_or_before(t));
            assert!(!c(1, 10_500_001, exact).at_or_before(t));
        }
        assert_eq!(Commit::parse("5 6 0-1-5 a").map(|c| c.exact), Some(false));
    }

    #[test]
    fn the_cut_is_the_longest_prefix_after_the_base_at_or_before_t() {
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, cs: &[Commit], tail: &str| {
            let mut text: String = cs.iter().map(Commit::line).collect();
            text.push_str(tail);
            std::fs::write(d.path().join(format!("{name}{SUFFIX}")), text).unwrap();
        };
        write(
            "mariadb-bin.000001",
            &[c(500, 100, true), c(900, 200, true)],
            "",
        );
        write(
            "mariadb-bin.000002",
            &[c(400, 300, true), c(800, 400, true), c(1200, 350, true)],
            "1600 360 0-1-9 e", // half written: not yet there
        );
        std::fs::write(d.path().join("mariadb-bin.000002"), b"log").unwrap();
        let base = BinlogPos {
            file: "mariadb-bin.000001".into(),
            pos: 500,
        };
        let at = |t| {
            cut(d.path(), &base, t)
                .unwrap()
                .map(|(p, _)| (p.file, p.pos))
        };
        assert_eq!(at(150), None, "nothing after the base by then");
        assert_eq!(at(200), Some(("mariadb-bin.000001".into(), 900)));
        assert_eq!(at(399), Some(("mariadb-bin.000002".into(), 400)));
        // 1200 is at 350, but comes after 800 (at 400): not a prefix without 800.
        assert_eq!(at(390), Some(("mariadb-bin.000002".into(), 400)));
        assert_eq!(at(10_000), Some(("mariadb-bin.000002".into(), 1200)));
        let later = BinlogPos {
            file: "mariadb-bin.000002".into(),
            pos: 800,
        };
        assert_eq!(
            cut(d.path(), &later, 10_000).unwrap().map(|(p, _)| p.pos),
            Some(1200)
        );
        assert_eq!(newest(d.path()), Some(350));
        let last = |file: &str, pos| {
            let p = BinlogPos {
                file: file.into(),
                pos,
            };
            last_at_or_before(d.path(), &p).unwrap().map(|c| c.end)
        };
        assert_eq!(last("mariadb-bin.000001", 499), None);
        assert_eq!(last("mariadb-bin.000001", 500), Some(500));
        assert_eq!(last("mariadb-bin.000002", 4), Some(900));
        assert!(base.before(&later) && !later.before(&base));
        assert_eq!(file_number("mariadb-bin.000042"), Some(42));
        assert_eq!(file_number("mariadb-bin.index"), None);
    }
}
