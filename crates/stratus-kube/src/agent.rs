//! The database pod's agent (`stratus operator agent`): a sidecar that reads its server's CPU
//! time every 200 ms, as `stratus up`'s monitor reads a cgroup, and hands the samples to the
//! operator's autoscaler ([`crate::operator::scaler`]), which runs the same decision as one
//! machine (`stratus_control::scaler::decide`).
//!
//! Why a sidecar: the metrics API averages over 10 to 60 s (metrics-server's resolution), too
//! coarse for the brief's "90 % over the last second", and a container cannot read another
//! container's cgroup. With the pod's process namespace shared
//! ([`shareProcessNamespace`](https://kubernetes.io/docs/tasks/configure-pod-container/share-process-namespace/)),
//! the agent finds the server by its pid file and reads its user and system time from
//! `/proc/PID/stat` ([proc_pid_stat(5)](https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html)),
//! which any user may read; it runs as another user than the server, so it cannot trace it.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use stratus_control::scaler::Sample;

/// The port the agent serves its samples on, inside the pod.
pub const PORT: u16 = 9104;

/// How often the agent reads the server's CPU time: the brief's 200 ms.
pub const SAMPLE_EVERY_MS: u64 = 200;

/// How much the agent keeps: what an operator that missed some fetches (a restart, a slow API)
/// catches up on. The operator keeps its own window as long as the policy needs.
pub const KEEP_MS: i64 = 60_000;

/// What `GET /cpu?after=MS` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSamples {
    /// The agent's clock (Unix ms) when it answered: how fresh the samples are.
    pub now_ms: i64,
    /// The server's process, while there is one.
    pub pid: Option<u32>,
    /// `[at_ms, cpu_ns]` after the asked time, oldest first. A server restarted between two
    /// samples shows as a counter that goes back, which starts a window afresh.
    pub samples: Vec<(i64, u64)>,
}

/// The user plus system time of a process in clock ticks, from the text of `/proc/PID/stat`.
/// Its second field, the command, is in parentheses and may itself hold spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the command: state (3), ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt,
    // majflt, cmajflt, utime (14), stime (15).
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// Reads one process's CPU time, found through its pid file, and keeps the samples.
#[derive(Debug)]
pub struct Sampler {
    pid_file: PathBuf,
    proc_root: PathBuf,
    /// Nanoseconds per clock tick (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
    ns_per_tick: u64,
    pid: Option<u32>,
    samples: VecDeque<Sample>,
}

impl Sampler {
    pub fn new(pid_file: &Path) -> Self {
        let ticks = rustix::param::clock_ticks_per_second().max(1);
        Self {
            pid_file: pid_file.to_owned(),
            proc_root: "/proc".into(),
            ns_per_tick: 1_000_000_000 / ticks,
            pid: None,
            samples: VecDeque::new(),
        }
    }

    /// Takes one sample at `now_ms`. No server (not started yet, restarting): nothing is kept,
    /// and the next server's samples start a new window.
    pub fn sample(&mut self, now_ms: i64) {
        self.pid = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        let ticks = self.pid.and_then(|pid| {
            let stat = std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("stat"));
            stat.ok().as_deref().and_then(cpu_ticks)
        });
        let Some(ticks) = ticks else {
            self.samples.clear();
            return;
        };
        self.samples.push_back(Sample {
            at_ms: now_ms,
            cpu_ns: ticks.saturating_mul(self.ns_per_tick),
        });
        while self
            .samples
            .front()
            .is_some_and(|f| now_ms - f.at_ms > KEEP_MS)
        {
            self.samples.pop_front();
        }
    }

    /// The samples taken after `after_ms`.
    pub fn since(&self, after_ms: i64, now_ms: i64) -> CpuSamples {
        CpuSamples {
            now_ms,
            pid: self.pid,
            samples: self
                .samples
                .iter()
                .filter(|s| s.at_ms > after_ms)
                .map(|s| (s.at_ms, s.cpu_ns))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command() {
        // A real line (`cat /proc/self/stat`), its command changed to hold `) (` and spaces.
        let line = "4242 (my) (odd name) S 1 4242 4242 0 -1 4194560 1034 0 0 0 \
                    57 13 0 0 20 0 37 0 123456 1903165440 30000 18446744073709551615";
        assert_eq!(cpu_ticks(line), Some(70));
        assert_eq!(cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
        assert_eq!(cpu_ticks(""), None);
    }

    /// A real process: the test's own, which spends CPU between two samples.
    #[test]
    fn samples_a_process_through_its_pid_file_and_forgets_a_gone_one() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("server.pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let mut s = Sampler::new(&pid_file);
        s.sample(1_000);
        // Spin until the kernel has accounted at least one more tick to this process.
        let first = s.samples[0].cpu_ns;
        let mut x = 0u64;
        let mut at = 1_000;
        while s.samples.back().unwrap().cpu_ns == first {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
            at += 200;
            s.sample(at);
        }
        let got = s.since(1_000, at);
        assert_eq!(got.pid, Some(std::process::id()));
        assert!(!got.samples.is_empty());
        assert!(got.samples.iter().all(|&(t, _)| t > 1_000));
        assert!(got.samples.last().unwrap().1 > first);
        // Kept for KEEP_MS only.
        s.sample(at + KEEP_MS + 1);
        assert_eq!(s.since(0, at + KEEP_MS + 1).samples.len(), 1);
        // The server gone (its pid file removed while it restarts): nothing is kept.
        std::fs::remove_file(&pid_file).unwrap();
        s.sample(at + KEEP_MS + 200);
        let gone = s.since(0, at + KEEP_MS + 200);
        assert_eq!((gone.pid, gone.samples.len()), (None, 0));
    }
}
