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

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts it, with `extra` options after the test's own, and makes `admin@'%'` (password `pw`)
/// with the database `shop`, as the operator's provisioning would.
pub async fn mariadbd(extra: &[String]) -> Server {
    let mariadb = stratus_runtime::binaries::MariaDb::locate(None).expect("MariaDB installed");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // As root the server must be told to stay root (the test's files are root's).
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let mut install = Command::new(&mariadb.install_db);
    install.args([
        "--no-defaults",
        &format!("--datadir={}", data.display()),
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
    ]);
    if root {
        install.arg("--user=root");
    }
    // One install at a time across the test processes: two run side by side failed now and
    // then ("Installation of system tables failed").
    let lock =
        std::fs::File::create(std::env::temp_dir().join("stratus-kube-test-install.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let out = install.output().unwrap();
    drop(lock);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
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
    if root {
        cmd.arg("--user=root");
    }
    cmd.args(extra);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        _dir: dir,
        child,
        port,
        socket: socket.clone(),
    };
    let mut conn = setup_login(&socket).await;
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
