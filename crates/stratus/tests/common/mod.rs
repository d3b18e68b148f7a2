//! A `stratus up` of its own for each test: a temp data directory, free ports, its own cgroup
//! parent, and the CLI pointed at it.

#![allow(dead_code)]

pub mod bank;
pub mod browser;
pub mod raw_client;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stratus");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Stratus {
    pub dir: tempfile::TempDir,
    pub api: String,
    pub listen: String,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub cgroup_parent: String,
    /// Names of the nodes other than `local` (`[[nodes]]`), whose cgroups are removed too.
    pub nodes: Vec<String>,
}

impl Stratus {
    /// A configured but not yet started installation; databases never suspend on their own
    /// (tests of that use [`Stratus::with_policy`]).
    pub fn new(tag: &str) -> Self {
        Self::with_policy(tag, "idle_to_suspend_ms = 3600000")
    }

    /// Like `new`, with a warm pool of `min` spares.
    pub fn with_pool(tag: &str, min: usize) -> Self {
        let s = Self::new(tag);
        let cfg = std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("[pool]\nmin = 0\nmax = 0\n", "");
        std::fs::write(
            &s.config,
            format!("{cfg}[pool]\nmin = {min}\nmax = {}\n", min * 2),
        )
        .unwrap();
        s
    }

    /// Like `new`, with `[policy]` lines for the databases it creates.
    pub fn with_policy(tag: &str, policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Servers run as an unprivileged user, which must traverse it (tempdirs are 0700).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let cgroup_parent = format!("stratus-e2e-{}-{tag}", std::process::id());
        let config = dir.path().join("stratus.toml");
        std::fs::write(
            &config,
            format!(
                "[resources]\ncgroup_parent = \"{cgroup_parent}\"\n[mariadb]\nstop_grace_secs = 30\n[encryption]\nmaster_key_file = \"{}\"\n[policy]\n{policy}\n[pool]\nmin = 0\nmax = 0\n",
                dir.path().join("master.key").display()
            ),
        )
        .unwrap();
        Self {
            api: format!("127.0.0.1:{}", free_port()),
            listen: format!("127.0.0.1:{}", free_port()),
            config,
            child: None,
            cgroup_parent,
            nodes: Vec::new(),
            dir,
        }
    }

    /// Sets `line` (`key = value`) in `[section]` of its configuration, in place of the key's
    /// earlier value (the section is made if missing); for the next start.
    pub fn configure(&self, section: &str, line: &str) {
        let cfg = std::fs::read_to_string(&self.config).unwrap();
        let header = format!("[{section}]");
        let key = |l: &str| l.split('=').next().unwrap_or_default().trim().to_owned();
        let mut out = String::new();
        let mut inside = false;
        for l in cfg.lines() {
            if l.starts_with('[') {
                inside = l == header;
            }
            if !(inside && key(l) == key(line)) {
                out.push_str(l);
                out.push('\n');
            }
        }
        let out = if out.contains(&format!("{header}\n")) {
            out.replacen(&format!("{header}\n"), &format!("{header}\n{line}\n"), 1)
        } else {
            format!("{out}{header}\n{line}\n")
        };
        std::fs::write(&self.config, out).unwrap();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn up_command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["up", "--data-dir"])
            .arg(self.data_dir())
            .args(["--api", &self.api, "--listen", &self.listen, "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("STRATUS_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            );
        cmd
    }

    /// Starts `stratus up` and returns once it says it is up (its own readiness line).
    pub fn start(&mut self) {
        let up = self.up_command();
        self.start_with(up);
    }

    /// [`Stratus::start`] with a command of the caller's (`up_command` with more environment).
    pub fn start_with(&mut self, mut up: Command) {
        let mut child = up
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains(" is up") => break,
                Some(Ok(_)) => continue,
                _ => panic!("stratus up exited before it was up: {:?}", child.wait()),
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// The admin token `stratus up` wrote on its first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .expect("stratus up writes admin.token")
            .trim()
            .to_owned()
    }

    /// `stratus --api … --data-dir … ARGS`, returning the raw output: the CLI finds the admin
    /// token in the data directory, as on the host of a `stratus up`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--api")
            .arg(&self.api)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .env_remove("STRATUS_TOKEN")
            .output()
            .unwrap()
    }

    /// `stratus --api … ARGS` with `token` (in `STRATUS_TOKEN`, as scripts would pass it).
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--api")
            .arg(&self.api)
            .args(args)
            .env("STRATUS_TOKEN", token)
            .output()
            .unwrap()
    }

    /// Runs a verb with `--json` and parses its answer; panics with stderr on failure.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "stratus {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stratus {args:?}: bad JSON ({e})"))
    }

    /// Runs a verb expected to fail; returns its one-line error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "stratus {args:?} should have failed");
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert!(err.starts_with("error: "), "{err}");
        err
    }

    /// Creates an API token (`token create ARGS`); returns its id and secret.
    pub fn token(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let t = self.json(&all);
        (
            t["id"].as_str().unwrap().to_owned(),
            t["secret"].as_str().unwrap().to_owned(),
        )
    }

    /// Runs a verb with `token`, expecting a refusal; returns its one-line error.
    pub fn refused(&self, token: &str, args: &[&str]) -> String {
        let out = self.cli_as(token, args);
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert!(
            !out.status.success(),
            "stratus {args:?} should have been refused"
        );
        assert!(
            err.starts_with("error: ") && err.lines().count() == 1,
            "{err}"
        );
        err
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(c.id() as i32).unwrap(),
                rustix::process::Signal::TERM,
            )
            .unwrap();
            let status = c.wait().unwrap();
            assert!(status.success(), "stratus up exited with {status}");
        }
    }

    /// The private socket of a database's server, from `db show` (only root may reach it).
    pub fn backend_socket(&self, db: &str) -> String {
        let shown = self.json(&["db", "show", db]);
        let backend = shown["backend"].as_str().unwrap();
        backend.strip_prefix("unix:").unwrap().to_owned()
    }

    /// A connection straight to the database's server (its socket, as root), past the proxy.
    pub async fn direct(&self, db: &str) -> mysql_async::Conn {
        mysql_async::Conn::new(
            mysql_async::OptsBuilder::default()
                .socket(Some(self.backend_socket(db)))
                .user(Some("root"))
                .db_name(Some(db)),
        )
        .await
        .unwrap()
    }

    /// How many events of `kind` the event log holds for `db` (its last thousand).
    pub fn event_count(&self, db: &str, kind: &str) -> usize {
        self.json(&["events", "--db", db, "--limit", "1000"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .count()
    }

    /// Polls the event log until an event of `kind` for `db` appears (bounded; a timeout shows
    /// every event of the installation, which tells what happened instead).
    pub fn wait_for_event(&self, db: &str, kind: &str, timeout: Duration) -> Value {
        let begin = Instant::now();
        loop {
            let events = self.json(&["events", "--db", db, "--limit", "200"]);
            if let Some(e) = events
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["kind"] == kind)
            {
                return e.clone();
            }
            if begin.elapsed() >= timeout {
                let all = self.json(&["events", "--limit", "1000"]);
                let lines: Vec<String> = all
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {} {}: {}",
                            e["time_ms"], e["db"], e["kind"], e["message"]
                        )
                    })
                    .collect();
                panic!(
                    "no {kind} event for {db} within {timeout:?}; the events:\n{}",
                    lines.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// mysql_async options for a client of the SQL endpoint.
    pub fn sql_opts(
        &self,
        user: &str,
        password: &str,
        db: Option<&str>,
    ) -> mysql_async::OptsBuilder {
        let (host, port) = self.listen.split_once(':').unwrap();
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(host.to_owned())
            .tcp_port(port.parse().unwrap())
            .user(Some(user.to_owned()))
            .pass(Some(password.to_owned()))
            .db_name(db.map(str::to_owned))
            .prefer_socket(false)
    }

    /// The whole `/metrics` page (its body), `None` when the API does not answer.
    pub fn metrics_text(&self) -> Option<String> {
        self.api_get("/metrics")
    }

    /// The body of `GET path` on the API as admin, `None` when the API does not answer.
    pub fn api_get(&self, path: &str) -> Option<String> {
        // Open on loopback by default; the token makes it work with `metrics_auth` too.
        let token = std::fs::read_to_string(self.data_dir().join("admin.token")).ok();
        self.api_get_as(token.as_deref().map(str::trim), path)
    }

    /// The body of `GET path` with `token` (none: no `Authorization`).
    pub fn api_get_as(&self, token: Option<&str>, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut sock = std::net::TcpStream::connect(&self.api).ok()?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            sock,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
            self.api
        )
        .ok()?;
        let mut text = String::new();
        sock.read_to_string(&mut text).ok()?;
        let (_, body) = text.split_once("\r\n\r\n")?;
        Some(body.to_owned())
    }

    /// A sample from `/metrics`, e.g. `stratus_proxy_pooled_connections{db="shop"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics_text()?
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// Polls a metric until it reaches `want` (bounded).
    pub fn wait_for_metric(&self, series: &str, want: f64, timeout: Duration) {
        let begin = Instant::now();
        while self.metric(series) != Some(want) {
            assert!(
                begin.elapsed() < timeout,
                "{series} did not reach {want}: {:?}",
                self.metric(series)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pids of `mariadbd` processes under this installation's data directory.
    /// The servers of this installation, on any of its nodes (all under its temp directory).
    pub fn mariadbd_pids(&self) -> Vec<u32> {
        let needle = self.dir.path().to_owned();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(needle.to_str().unwrap()))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for Stratus {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Leave nothing running after a failed test.
            let _ = Command::new(BIN)
                .arg("--api")
                .arg(&self.api)
                .arg("--data-dir")
                .arg(self.data_dir())
                .args(["db", "list"])
                .env_remove("STRATUS_TOKEN")
                .output();
            self.kill9();
        }
        thaw_cgroups(&self.cgroup_parent);
        for node in &self.nodes {
            thaw_cgroups(&format!("{}-{node}", self.cgroup_parent));
        }
        for pid in self.mariadbd_pids() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        remove_cgroups(&self.cgroup_parent);
        for node in &self.nodes {
            remove_cgroups(&format!("{}-{node}", self.cgroup_parent));
        }
        unmount_under(self.dir.path());
    }
}

/// Unmounts the volumes left mounted under `dir` (by a killed `stratus up`), so the test's
/// directory can be removed and no loop device outlives it.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    for line in info.lines() {
        // `id parent major:minor root mount-point ...`
        if let Some(at) = line.split(' ').nth(4) {
            if at.starts_with(&prefix) {
                let _ = Command::new("umount").args(["-l", at]).output();
            }
        }
    }
}

/// Thaws every group under `parent` (v1's freezer, v2's `cgroup.freeze`): under v1's freezer a
/// frozen process does not die of SIGKILL until thawed, so a test failing while a database was
/// suspended left its server behind, frozen, for good.
pub fn thaw_cgroups(parent: &str) {
    for (root, file, thawed) in [
        ("/sys/fs/cgroup/freezer", "freezer.state", "THAWED"),
        ("/sys/fs/cgroup", "cgroup.freeze", "0"),
    ] {
        let Ok(groups) = std::fs::read_dir(Path::new(root).join(parent)) else {
            continue;
        };
        for g in groups.flatten() {
            let _ = std::fs::write(g.path().join(file), thawed);
        }
    }
}

/// Removes this test's cgroups (children first) in every hierarchy, once their processes are gone.
pub fn remove_cgroups(parent: &str) {
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for root in roots.flatten() {
        let dir = root.path().join(parent);
        if !dir.is_dir() {
            continue;
        }
        for _ in 0..100 {
            if let Ok(children) = std::fs::read_dir(&dir) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                break;
            }
            // The kernel frees a group only after its last process is reaped.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Now, in RFC 3339 to the microsecond (what `--time` takes).
pub fn now_rfc3339() -> String {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    stratus_core::time::rfc3339_us(us)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
