//! A private `mariadbd` for the tests that need a real server (the proxy end to end, the
//! operator's option file): on 127.0.0.1 and a socket, in a temporary directory, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use stratus_core::Endpoint;
use stratus_runtime::admin::{AdminConn, AdminLogin};

/// A private `mariadbd` listening on 127.0.0.1 (and a socket for its setup); killed on drop.
pub struct Server {
    _dir: tempfile::TempDir,
    child: Child,
    pub port: u16,
    pub socket: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts it, with `extra` options after the test's own, and makes `admin@'%'` (password `pw`)
/// with the database `shop`, as the operator's provisioning would.
pub async fn mariadbd(extra: &[String]) -> Server {
    let mariadb = stratus_runtime::binaries::MariaDb::locate(None).expect("MariaDB installed");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut install = Command::new(&mariadb.install_db);
    install.args([
        "--no-defaults",
        &format!("--datadir={}", data.display()),
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
    ]);
    if as_root() {
        install.arg("--user=root");
    }
    let lock = install_lock();
    let out = install.output().unwrap();
    drop(lock);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let server = start(dir, &data, extra);
    let mut conn = setup_login(&server.socket).await;
    for sql in [
        "CREATE DATABASE shop",
        "CREATE USER admin@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('pw')",
        "GRANT ALL ON shop.* TO admin@'%'",
    ] {
        conn.exec(sql).await.unwrap();
    }
    conn.close().await;
    server
}

/// Whether the tests run as root, whose servers must be told to stay root (their files are
/// root's).
pub fn as_root() -> bool {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0
}

/// Starts a server on the existing data directory `data`, its socket and logs in `dir`, with
/// `extra` options after the test's own; returns before it takes connections
/// ([`setup_login`] waits for that).
pub fn start(dir: tempfile::TempDir, data: &Path, extra: &[String]) -> Server {
    let mariadb = stratus_runtime::binaries::MariaDb::locate(None).expect("MariaDB installed");
    let socket = dir.path().join("s.sock");
    let port = free_port();
    let mut cmd = Command::new(&mariadb.mariadbd);
    cmd.args([
        "--no-defaults",
        &format!("--datadir={}", data.display()),
        &format!("--socket={}", socket.display()),
        &format!("--port={port}"),
        "--bind-address=127.0.0.1",
        &format!("--pid-file={}", dir.path().join("pid").display()),
        &format!("--log-error={}", dir.path().join("error.log").display()),
        "--innodb-buffer-pool-size=32M",
        "--skip-name-resolve",
    ]);
    if as_root() {
        cmd.arg("--user=root");
    }
    cmd.args(extra);
    spawn(dir, cmd, socket, port)
}

/// Runs `mariadbd` as `cmd` says, listening on `socket` and `port`; killed on drop, with `dir`.
pub fn spawn(dir: tempfile::TempDir, mut cmd: Command, socket: PathBuf, port: u16) -> Server {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server {
        _dir: dir,
        child,
        port,
        socket,
    }
}

/// Held while `mariadb-install-db` runs: one install at a time across the test processes (two
/// side by side failed now and then: "Installation of system tables failed").
pub fn install_lock() -> std::fs::File {
    let lock =
        std::fs::File::create(std::env::temp_dir().join("stratus-kube-test-install.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    lock
}

/// Root's login over the socket, once the server takes it (at most 60 s).
pub async fn setup_login(socket: &Path) -> AdminConn {
    let endpoint = Endpoint::Unix(socket.into());
    let root = AdminLogin {
        user: "root".into(),
        password: None,
    };
    for _ in 0..600 {
        if let Ok(conn) = AdminConn::connect("shop", &endpoint, &root, Duration::from_secs(5)).await
        {
            return conn;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("mariadbd did not start");
}
