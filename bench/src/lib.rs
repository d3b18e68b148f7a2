//! Shared pieces of the benchmarks: a `stratus up` of their own, and small statistics.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `stratus up` in a temporary directory on free ports, stopped on drop.
pub struct Stratus {
    pub dir: std::path::PathBuf,
    pub api: String,
    pub sql_port: u16,
    child: Child,
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Stratus {
    /// Starts `bin up` with `config` (TOML) and returns once it says it is up.
    pub fn start(bin: &str, config: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "stratus-bench-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("stratus.toml");
        std::fs::write(&cfg, config)?;
        let api = format!("127.0.0.1:{}", free_port()?);
        let sql_port = free_port()?;
        let mut child = Command::new(bin)
            .args(["up", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--api",
                &api,
                "--listen",
                &format!("127.0.0.1:{sql_port}"),
                "--config",
            ])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {bin}"))?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains(" is up") => break,
                Some(Ok(_)) => {}
                _ => bail!("stratus up exited before it was up"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            dir,
            api,
            sql_port,
            child,
        })
    }

    /// The API client, with the admin token `stratus up` wrote on its first start (without it
    /// the API answers 401, which says so).
    pub fn client(&self) -> stratus_api::ApiClient {
        let client = stratus_api::ApiClient::new(&format!("http://{}", self.api));
        match std::fs::read_to_string(self.dir.join("data/admin.token")) {
            Ok(token) => client.bearer(token.trim().to_owned()),
            Err(_) => client,
        }
    }

    pub fn opts(&self, user: &str, password: &str, db: &str) -> mysql_async::OptsBuilder {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.sql_port)
            .user(Some(user.to_owned()))
            .pass(Some(password.to_owned()))
            .db_name(Some(db.to_owned()))
            .prefer_socket(false)
    }

    /// `/metrics`, as text.
    fn metrics(&self) -> Option<String> {
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(&self.api).ok()?;
        write!(
            sock,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.api
        )
        .ok()?;
        let mut text = String::new();
        sock.read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// A metric sample from `/metrics`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()?
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// The sum of a metric's samples over all its labels (every database).
    pub fn metric_sum(&self, name: &str) -> Option<f64> {
        let text = self.metrics()?;
        Some(
            text.lines()
                .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum(),
        )
    }

    /// Polls a metric until it reaches at least `want` (bounded).
    pub fn wait_metric(&self, series: &str, want: f64, timeout: Duration) -> anyhow::Result<()> {
        let begin = std::time::Instant::now();
        while self.metric(series).unwrap_or(0.0) < want {
            if begin.elapsed() > timeout {
                bail!("{series} did not reach {want}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Stratus {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Prints one line of latencies in milliseconds (sorted in place): count, p50, p99 and max.
pub fn summary(label: &str, ms: &mut [f64]) {
    ms.sort_by(f64::total_cmp);
    println!(
        "  {label:<44} n={:<4} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        ms.len(),
        quantile(ms, 0.5),
        quantile(ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

/// The `q`-quantile (0..=1) of a sample, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// CPU time (user + system) of a process, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU time of the threads of process `pid` named `name` (`/proc/<pid>/task/*/stat`).
pub fn thread_cpu(pid: u32, name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .map(|t| stat_cpu(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// Utime + stime of a `stat` file of `/proc`.
fn stat_cpu(path: &str) -> Duration {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Duration::from_secs_f64((t(11) + t(12)) / ticks)
}

/// Resident memory of a process (`VmRSS`), in KiB; 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

/// The file descriptors a process holds open; 0 once it is gone.
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A number from `/proc/<pid>/status` (a trailing `kB` dropped).
fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The `mariadbd` processes of the `stratus up` whose data directory is `data_dir`: each with
/// the database (or spare) whose directory its option file is in, and its pid.
pub fn servers(data_dir: &std::path::Path) -> Vec<(String, u32)> {
    let prefix = format!("--defaults-file={}/databases/", data_dir.display());
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.ends_with("mariadbd")) {
            continue;
        }
        let name = args
            .iter()
            .find_map(|a| a.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix("/my.cnf"));
        if let Some(name) = name {
            out.push((name.to_owned(), pid));
        }
    }
    out.sort();
    out
}
