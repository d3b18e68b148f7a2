//! One `mariadbd` process: spawning it into its cgroup, knowing it by pidfd, signalling it, and
//! noticing the moment it exits.
//!
//! A pidfd (<https://man7.org/linux/man-pages/man2/pidfd_open.2.html>) names one process for
//! good: signals sent through it never reach a process that later got the same pid, and it
//! becomes readable when the process exits, so exits are noticed at once without polling,
//! whether the process is our child or one adopted from an earlier `stratus up`.

use crate::{Result, RuntimeError};
use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use tokio::io::unix::AsyncFd;

/// A process known by pidfd.
#[derive(Debug)]
pub struct Pidfd {
    pub pid: u32,
    fd: AsyncFd<OwnedFd>,
}

impl Pidfd {
    pub fn open(pid: u32) -> std::io::Result<Self> {
        let raw = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        let fd = rustix::process::pidfd_open(raw, PidfdFlags::NONBLOCK)?;
        #[allow(unsafe_code)]
        // SAFETY: `OwnedFd` keeps the descriptor open and unchanged for as long as the
        // `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(Self { pid, fd })
    }

    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        match rustix::process::pidfd_send_signal(self.fd.get_ref().as_fd(), signal) {
            // Already gone: nothing left to signal.
            Err(rustix::io::Errno::SRCH) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Resolves when the process has exited; reaps it if it is our child and says how it ended.
    pub async fn exited(&self) -> String {
        // Readable means exited; an error here means the fd itself is unusable, and waiting on
        // would never end, so it counts as an exit too.
        if let Ok(mut guard) = self.fd.readable().await {
            guard.retain_ready();
        }
        let status = rustix::process::waitid(
            WaitId::PidFd(self.fd.get_ref().as_fd()),
            WaitIdOptions::EXITED,
        );
        match status {
            Ok(Some(st)) => {
                if let Some(code) = st.exit_status() {
                    format!("exit code {code}")
                } else if let Some(sig) = st.terminating_signal() {
                    format!("signal {sig}{}", signal_name(sig))
                } else {
                    "unknown".into()
                }
            }
            // ECHILD: adopted from an earlier Stratus, so its status went to its new parent.
            _ => "exit status unknown: adopted from an earlier Stratus".into(),
        }
    }

    pub fn has_exited(&self) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            self.fd.get_ref(),
            rustix::event::PollFlags::IN,
        )];
        matches!(rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())), Ok(n) if n > 0)
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        6 => " (SIGABRT)",
        9 => " (SIGKILL, possibly the OOM killer)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// Starts `mariadbd --defaults-file=<cnf>` in its own process group (a Ctrl-C at the terminal is
/// for Stratus, which then stops servers in order), with its output appended to `log`, and
/// already inside the cgroups whose `cgroup.procs` files are given: the child moves itself there
/// before `exec`, so not one instruction of the server runs outside its limits.
pub fn spawn(
    mariadbd: &Path,
    cnf: &Path,
    log: &Path,
    procs_files: &[std::path::PathBuf],
    notify_socket: &str,
) -> Result<Pidfd> {
    let procs: Vec<OwnedFd> = procs_files
        .iter()
        .map(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map(OwnedFd::from)
                .map_err(|e| RuntimeError::io(format!("cannot open {}", p.display()), e))
        })
        .collect::<Result<_>>()?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| RuntimeError::io(format!("cannot open {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| RuntimeError::io("dup of the error log", e))?;
    let mut cmd = Command::new(mariadbd);
    cmd.arg(format!("--defaults-file={}", cnf.display()))
        .env("NOTIFY_SOCKET", notify_socket)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    #[allow(unsafe_code)]
    // SAFETY: the closure runs between fork and exec and only calls write(2) on descriptors
    // opened before the fork and get/setrlimit(2): async-signal-safe, no allocation, no locks.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &procs {
                rustix::io::write(fd, b"0")?;
            }
            server_open_files();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| RuntimeError::io(format!("cannot start {}", mariadbd.display()), e))?;
    // Our child cannot be reaped (so its pid cannot be reused) before we open the pidfd.
    Pidfd::open(child.id()).map_err(|e| RuntimeError::io("pidfd_open on the new mariadbd", e))
}

/// The soft open-files limit a server starts under. `stratus up` raises its own to the hard
/// limit (its clients need it); a server that inherited that keeps it, whatever it needs, and
/// zeroes a table of that many entries (about 16 bytes each: 16 MiB resident at a hard limit of
/// 1,048,576, a quarter of an idle server). From here it raises the limit itself to what its
/// settings need (`open_files_limit`, <https://mariadb.com/kb/en/server-system-variables/#open_files_limit>).
const SERVER_OPEN_FILES: u64 = 1024;

/// Sets the calling process's soft open-files limit to [`SERVER_OPEN_FILES`] (never above its
/// hard limit). Runs in the child between fork and exec: system calls only.
fn server_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit
        .maximum
        .map_or(SERVER_OPEN_FILES, |max| max.min(SERVER_OPEN_FILES));
    if limit.current.is_none_or(|cur| cur > soft) {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(soft),
                ..limit
            },
        );
    }
}

/// The pid in `pid_file` if that process is a `mariadbd` started with exactly `cnf`, opened as a
/// pidfd. The identity is checked after the pidfd is opened, so it cannot change under us.
pub fn adopt(pid_file: &Path, cnf: &Path) -> Option<Pidfd> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let pidfd = Pidfd::open(pid).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // Compared resolved, since a claimed spare runs from its own directory, linked under the
    // database's name.
    let want = std::fs::canonicalize(cnf).ok()?;
    let ours = cmdline.split(|&b| b == 0).any(|arg| {
        arg.strip_prefix(b"--defaults-file=")
            .and_then(|p| std::fs::canonicalize(std::ffi::OsStr::from_bytes(p)).ok())
            .is_some_and(|p| p == want)
    });
    (ours && !pidfd.has_exited()).then_some(pidfd)
}

/// The last `n` lines of a log file, for error messages; empty if unreadable.
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[cfg(test)]
// Children here are reaped through their pidfd (`exited`), which clippy cannot see.
#[allow(clippy::zombie_processes)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_status_of_a_child_is_reported() {
        let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let pidfd = Pidfd::open(child.id()).unwrap();
        assert_eq!(pidfd.exited().await, "exit code 3");
        assert!(pidfd.has_exited());
    }

    #[tokio::test]
    async fn signals_go_through_the_pidfd() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let pidfd = Pidfd::open(child.id()).unwrap();
        assert!(!pidfd.has_exited());
        pidfd.signal(Signal::KILL).unwrap();
        assert!(pidfd.exited().await.starts_with("signal 9"));
        pidfd.signal(Signal::TERM).unwrap();
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nb\n\nc\nd\n").unwrap();
        assert_eq!(log_tail(&p, 2), ["c", "d"]);
        assert!(log_tail(&dir.path().join("none"), 2).is_empty());
    }

    #[tokio::test]
    async fn adopt_refuses_a_stranger() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        std::fs::write(&pid_file, std::process::id().to_string()).unwrap();
        assert!(adopt(&pid_file, &dir.path().join("my.cnf")).is_none());
        std::fs::write(&pid_file, "garbage").unwrap();
        assert!(adopt(&pid_file, &dir.path().join("my.cnf")).is_none());
    }
}
