//! Fallback accounting without cgroups, from procfs (`proc(5)`): used when
//! the host gives us no writable cgroups, so usage is still reported (per
//! process rather than per group, children not included).

use std::path::{Path, PathBuf};

use crate::{Error, Result, Usage, files};

/// CPU time (`utime + stime` from `/proc/<pid>/stat`) and resident memory
/// (`VmRSS` from `/proc/<pid>/status`) of one process.
pub fn proc_usage(pid: u32) -> Result<Usage> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = dir.join("stat");
    let ticks = parse_stat_ticks(&stat, &files::read(&stat)?)?;
    let status = dir.join("status");
    let memory_bytes = parse_status_rss(&status, &files::read(&status)?)?;
    Ok(Usage {
        cpu_ns: ticks_to_ns(ticks, rustix::param::clock_ticks_per_second()),
        memory_bytes,
    })
}

fn ticks_to_ns(ticks: u64, hz: u64) -> u64 {
    if hz == 0 {
        return 0;
    }
    u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(hz)).unwrap_or(u64::MAX)
}

/// `utime + stime` in clock ticks. The command name (field 2) is in
/// parentheses and may itself contain spaces and ')', so fields are counted
/// from the last ')'.
fn parse_stat_ticks(path: &Path, text: &str) -> Result<u64> {
    let parse_err = |reason: &str| Error::Parse {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| parse_err("no ')' after the command name"))?;
    // After ')': field 3 (state) is index 0, so utime (14) and stime (15)
    // are indexes 11 and 12.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        return Err(parse_err("too few fields for utime/stime"));
    };
    let utime = files::parse_u64(path, utime)?;
    let stime = files::parse_u64(path, stime)?;
    Ok(utime.saturating_add(stime))
}

/// `VmRSS` in bytes; absent for zombies and kernel threads, which use no
/// memory, hence 0.
fn parse_status_rss(path: &Path, text: &str) -> Result<u64> {
    let Some(value) = text.lines().find_map(|l| l.strip_prefix("VmRSS:")) else {
        return Ok(0);
    };
    let mut it = value.split_whitespace();
    let kb = files::parse_u64(path, it.next().unwrap_or(""))?;
    match it.next() {
        Some("kB") | None => Ok(kb.saturating_mul(1024)),
        Some(unit) => Err(Error::Parse {
            path: path.to_path_buf(),
            reason: format!("unexpected VmRSS unit {unit:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields() {
        let p = Path::new("/proc/1/stat");
        let text = "1234 (my (weird) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000000 200 18446744073709551615\n";
        assert_eq!(parse_stat_ticks(p, text).unwrap(), 300);
        assert!(parse_stat_ticks(p, "").is_err());
        assert!(parse_stat_ticks(p, "1 (x) S 1 2").is_err());
        assert!(parse_stat_ticks(p, "1 (x) S 1 1 1 0 -1 0 0 0 0 0 a b").is_err());
    }

    #[test]
    fn status_rss() {
        let p = Path::new("/proc/1/status");
        let text = "Name:\tsh\nVmPeak:\t 9999 kB\nVmRSS:\t    1536 kB\nThreads: 1\n";
        assert_eq!(parse_status_rss(p, text).unwrap(), 1536 * 1024);
        assert_eq!(parse_status_rss(p, "Name:\tkworker\n").unwrap(), 0);
        assert!(parse_status_rss(p, "VmRSS: x kB\n").is_err());
        assert!(parse_status_rss(p, "VmRSS: 1 MB\n").is_err());
    }

    #[test]
    fn ticks() {
        assert_eq!(ticks_to_ns(250, 100), 2_500_000_000);
        assert_eq!(ticks_to_ns(1, 0), 0);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn own_process() {
        let u = proc_usage(std::process::id()).unwrap();
        assert!(u.memory_bytes > 0);
        assert!(matches!(proc_usage(u32::MAX), Err(Error::Read { .. })));
    }
}
