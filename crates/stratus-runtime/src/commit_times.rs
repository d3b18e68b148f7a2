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
//! <end position> <unix time in µs> <GTID> e|a
//! <end position> <unix time in µs> <GTID> c <not before, µs>
//! <end position> <unix time in µs> <GTIDs written by then, or -> g <not before, µs>
//! ```
//!
//! * `e` (exact): a transaction the server waited for (`[mariadb] exact_commit_times`).
//! * `a` (arrival): one received as it happened, without such a wait; its time may be after the
//!   commit by the clock's lag (milliseconds).
//! * `c` (caught up): one committed while the clock was not connected and read afterwards, or
//!   one the server did not wait for although it normally waits (it gave up on a slow clock).
//!   It committed at some time between the two: not before the lower bound (that of the line
//!   before it; binary log order is commit order), not after the time it arrived.
//! * `g` (gap): the clock could not read the log from where it stopped (the server no longer
//!   had it, or nothing had followed the server before): any transactions that end at or
//!   before this position and after the line before it have no line of their own; they
//!   committed between the lower bound and the time.
//!
//! Lines are appended in binary log order, which is commit order, so the transactions at or
//! before a time are a prefix, and the files are archived with the logs. A restore to a time
//! that falls inside a `c` or `g` line's bounds is refused (`Cut::Untimed`) rather than guessed.

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

/// How well a line's time is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Acknowledged before the server committed it: the time lies within the commit.
    Exact,
    /// Received as it happened, not waited for: after the commit by the clock's lag.
    Arrival,
    /// Read after a reconnection, or not waited for where the server waits: committed at or
    /// after `not_before_us`, at or before the time.
    CaughtUp { not_before_us: i64 },
    /// Transactions the clock never read, ending at this line's position: committed at or after
    /// `not_before_us` and at or before the time.
    Gap { not_before_us: i64 },
}

/// One committed transaction, or a stretch of them (`Kind::Gap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Where it ends in its binary log file.
    pub end: u64,
    /// Microseconds since the Unix epoch: never before the commit.
    pub at_us: i64,
    /// Its GTID; for a gap, the server's `gtid_binlog_pos` by then (`-`: none).
    pub gtid: String,
    pub kind: Kind,
}

impl Commit {
    pub fn line(&self) -> String {
        let (end, at, gtid) = (self.end, self.at_us, &self.gtid);
        match self.kind {
            Kind::Exact => format!("{end} {at} {gtid} e\n"),
            Kind::Arrival => format!("{end} {at} {gtid} a\n"),
            Kind::CaughtUp { not_before_us } => format!("{end} {at} {gtid} c {not_before_us}\n"),
            Kind::Gap { not_before_us } => format!("{end} {at} {gtid} g {not_before_us}\n"),
        }
    }

    /// Parses a line (without its newline); `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let mut it = line.split(' ');
        let end = it.next()?.parse().ok()?;
        let at_us = it.next()?.parse().ok()?;
        let gtid = it.next()?.to_owned();
        let tag = it.next()?;
        let mut bound = || -> Option<i64> { it.next()?.parse().ok() };
        let kind = match (tag, gtid.as_str()) {
            ("e", g) if g != "-" => Kind::Exact,
            ("a", g) if g != "-" => Kind::Arrival,
            ("c", g) if g != "-" => Kind::CaughtUp {
                not_before_us: bound()?,
            },
            ("g", _) => Kind::Gap {
                not_before_us: bound()?,
            },
            _ => return None,
        };
        it.next().is_none().then_some(Self {
            end,
            at_us,
            gtid,
            kind,
        })
    }

    /// The earliest it may have committed: its time unless the time is only a bound.
    pub fn not_before_us(&self) -> i64 {
        match self.kind {
            Kind::Exact | Kind::Arrival => self.at_us,
            Kind::CaughtUp { not_before_us } | Kind::Gap { not_before_us } => {
                not_before_us.min(self.at_us)
            }
        }
    }

    /// Whether it committed at or before `t_us`. Every kind of time is at or after the commit,
    /// so a transaction is never placed before `t` when it was after; an `Arrival` may be
    /// placed after `t` when it committed within the clock's lag before it.
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

/// Where the log after a backup is cut for a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Nothing after the backup's position committed by then.
    Nothing,
    /// Replay up to this position, the end of this line's transaction (or gap).
    Upto(BinlogPos, Commit),
    /// The time falls where commit times are known only between two bounds: transactions there
    /// may have committed before it or after it.
    Untimed { not_before_us: i64, by_us: i64 },
}

/// The last transaction to replay on top of a backup taken at `base` to have every transaction
/// committed at or before `t_us` and none after: the end of the longest prefix of the log
/// after `base` whose commits are all at or before `t_us`. `Untimed` when the first line past
/// that prefix may have committed before `t_us` as well as after it.
pub fn cut(dir: &Path, base: &BinlogPos, t_us: i64) -> std::io::Result<Cut> {
    let mut last = Cut::Nothing;
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
                if c.not_before_us() <= t_us {
                    return Ok(Cut::Untimed {
                        not_before_us: c.not_before_us(),
                        by_us: c.at_us,
                    });
                }
                return Ok(last);
            }
            last = Cut::Upto(here, c);
        }
    }
    Ok(last)
}

/// The last line recorded in `dir` that ends at or before `pos`.
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

/// Whether the lines of `dir` reach every transaction of `gtid_binlog_pos` (a server's
/// `@@gtid_binlog_pos`, `domain-server-sequence` per domain, comma-separated): for each domain,
/// a line of that domain (or a gap that had seen it) at that sequence number or later.
/// Sequence numbers only grow within a domain.
pub fn covers(dir: &Path, gtid_binlog_pos: &str) -> std::io::Result<bool> {
    let mut newest: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for (_, path) in files(dir) {
        for c in read(&path)? {
            for (domain, seq) in c.gtid.split(',').filter_map(domain_seq) {
                let n = newest.entry(domain).or_default();
                *n = (*n).max(seq);
            }
        }
    }
    Ok(gtid_binlog_pos
        .split(',')
        .filter_map(domain_seq)
        .all(|(domain, seq)| newest.get(&domain).is_some_and(|&n| n >= seq)))
}

/// `0-1-42` → domain 0, sequence number 42.
fn domain_seq(gtid: &str) -> Option<(u32, u64)> {
    let mut it = gtid.trim().split('-');
    let domain = it.next()?.parse().ok()?;
    it.next()?.parse::<u32>().ok()?;
    let seq = it.next()?.parse().ok()?;
    it.next().is_none().then_some((domain, seq))
}

/// The last line recorded in `dir`, with its log file's name.
pub fn last(dir: &Path) -> Option<(String, Commit)> {
    files(dir)
        .into_iter()
        .rev()
        .find_map(|(log, p)| Some((log, read(&p).ok()?.pop()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(end: u64, at_us: i64, kind: Kind) -> Commit {
        Commit {
            end,
            at_us,
            gtid: match kind {
                Kind::Gap { .. } => "-".into(),
                _ => format!("0-1-{end}"),
            },
            kind,
        }
    }

    fn e(end: u64, at_us: i64) -> Commit {
        c(end, at_us, Kind::Exact)
    }

    #[test]
    fn lines_round_trip_and_garbage_is_not_a_commit() {
        let x = e(1269, 1_796_068_712_123_456);
        assert_eq!(x.line(), "1269 1796068712123456 0-1-1269 e\n");
        for x in [
            x,
            c(7, 8, Kind::Arrival),
            c(7, 8, Kind::CaughtUp { not_before_us: 3 }),
            c(7, 8, Kind::Gap { not_before_us: 0 }),
            Commit {
                gtid: "0-1-5,1-1-2".into(),
                ..c(7, 8, Kind::Gap { not_before_us: 0 })
            },
        ] {
            assert_eq!(Commit::parse(x.line().trim_end()), Some(x));
        }
        for bad in [
            "",
            "1 2 3",
            "1 2 0-1-1 s",
            "a 2 0-1-1 e",
            "1 2 0-1-1 e extra",
            "1 2 0-1-1 c",
            "1 2 0-1-1 c x",
            "1 2 - e",
            "1 2 - g 0 1",
        ] {
            assert_eq!(Commit::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_commit_is_at_or_before_t_by_its_time_whatever_its_kind() {
        let t = 10_500_000; // 10.5 s
        for kind in [
            Kind::Exact,
            Kind::Arrival,
            Kind::CaughtUp { not_before_us: 0 },
            Kind::Gap { not_before_us: 0 },
        ] {
            assert!(c(1, 10_499_999, kind).at_or_before(t));
            assert!(c(1, 10_500_000, kind).at_or_before(t));
            assert!(!c(1, 10_500_001, kind).at_or_before(t));
        }
        assert_eq!(e(1, 5).not_before_us(), 5);
        assert_eq!(
            c(1, 5, Kind::CaughtUp { not_before_us: 2 }).not_before_us(),
            2
        );
    }

    fn write(dir: &Path, name: &str, cs: &[Commit], tail: &str) {
        let mut text: String = cs.iter().map(Commit::line).collect();
        text.push_str(tail);
        std::fs::write(dir.join(format!("{name}{SUFFIX}")), text).unwrap();
    }

    fn pos(file: &str, pos: u64) -> BinlogPos {
        BinlogPos {
            file: file.into(),
            pos,
        }
    }

    fn upto(cut: Cut) -> Option<(String, u64)> {
        match cut {
            Cut::Upto(p, _) => Some((p.file, p.pos)),
            Cut::Nothing => None,
            Cut::Untimed { .. } => panic!("untimed: {cut:?}"),
        }
    }

    #[test]
    fn the_cut_is_the_longest_prefix_after_the_base_at_or_before_t() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "mariadb-bin.000001",
            &[e(500, 100), e(900, 200)],
            "",
        );
        write(
            d.path(),
            "mariadb-bin.000002",
            &[e(400, 300), e(800, 400), e(1200, 350)],
            "1600 360 0-1-9 e", // half written: not yet there
        );
        std::fs::write(d.path().join("mariadb-bin.000002"), b"log").unwrap();
        let base = pos("mariadb-bin.000001", 500);
        let at = |t| upto(cut(d.path(), &base, t).unwrap());
        assert_eq!(at(150), None, "nothing after the base by then");
        assert_eq!(at(200), Some(("mariadb-bin.000001".into(), 900)));
        assert_eq!(at(399), Some(("mariadb-bin.000002".into(), 400)));
        // 1200 is at 350, but comes after 800 (at 400): not a prefix without 800.
        assert_eq!(at(390), Some(("mariadb-bin.000002".into(), 400)));
        assert_eq!(at(10_000), Some(("mariadb-bin.000002".into(), 1200)));
        let later = pos("mariadb-bin.000002", 800);
        assert_eq!(
            upto(cut(d.path(), &later, 10_000).unwrap()),
            Some(("mariadb-bin.000002".into(), 1200))
        );
        assert_eq!(last(d.path()).map(|(_, c)| c.at_us), Some(350));
        let before = |file: &str, p| {
            last_at_or_before(d.path(), &pos(file, p))
                .unwrap()
                .map(|c| c.end)
        };
        assert_eq!(before("mariadb-bin.000001", 499), None);
        assert_eq!(before("mariadb-bin.000001", 500), Some(500));
        assert_eq!(before("mariadb-bin.000002", 4), Some(900));
        assert!(base.before(&later) && !later.before(&base));
        assert_eq!(file_number("mariadb-bin.000042"), Some(42));
        assert_eq!(file_number("mariadb-bin.index"), None);
    }

    #[test]
    fn the_lines_cover_a_servers_gtids_when_each_domain_has_reached_them() {
        let d = tempfile::tempdir().unwrap();
        let gap = Commit {
            gtid: "0-1-5,1-1-2".into(),
            ..c(300, 50, Kind::Gap { not_before_us: 0 })
        };
        write(
            d.path(),
            "mariadb-bin.000001",
            &[gap, e(500, 100), e(900, 200)], // 0-1-500, 0-1-900
            "",
        );
        let covers = |pos| covers(d.path(), pos).unwrap();
        assert!(covers(""), "nothing written");
        assert!(covers("0-1-900"));
        assert!(covers("0-3-6,1-1-2"), "whatever the server id");
        assert!(!covers("0-1-901"), "one past the last line");
        assert!(!covers("0-1-900,1-1-3"));
        assert!(!covers("0-1-900,2-1-1"), "a domain never seen");
    }

    /// Where a time falls inside the bounds of a stretch the clock did not see as it happened,
    /// the cut is refused; before the stretch, or once it is surely committed, it is not.
    #[test]
    fn a_time_inside_untimed_bounds_is_untimed_and_either_side_is_cut() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "mariadb-bin.000001",
            &[
                e(500, 100),
                e(900, 200),
                // The clock could not follow: what ends at 1500 committed in 200..=600.
                c(1500, 600, Kind::Gap { not_before_us: 200 }),
                e(1700, 700),
                // Caught up after a reconnection: committed in 750..=900.
                c(1900, 900, Kind::CaughtUp { not_before_us: 750 }),
                e(2100, 950),
            ],
            "",
        );
        let base = pos("mariadb-bin.000001", 500);
        let at = |t| cut(d.path(), &base, t).unwrap();
        assert_eq!(upto(at(199)), None);
        // From the commit before the gap on, a transaction of the gap may already be in.
        for t in [200, 201, 599] {
            assert_eq!(
                at(t),
                Cut::Untimed {
                    not_before_us: 200,
                    by_us: 600
                },
                "{t}"
            );
        }
        assert_eq!(upto(at(600)), Some(("mariadb-bin.000001".into(), 1500)));
        // Before the caught-up one's lower bound it is surely after: a clean cut.
        assert_eq!(upto(at(749)), Some(("mariadb-bin.000001".into(), 1700)));
        assert!(matches!(at(750), Cut::Untimed { by_us: 900, .. }));
        assert_eq!(upto(at(950)), Some(("mariadb-bin.000001".into(), 2100)));
        // A base past the gap does not need its times.
        let past = pos("mariadb-bin.000001", 1500);
        assert_eq!(
            upto(cut(d.path(), &past, 300).unwrap()),
            None,
            "nothing after 1500 by 300"
        );
    }
}
