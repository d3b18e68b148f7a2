//! Encryption at rest, end to end: a distinctive string written through the proxy (a table row,
//! an undo image, the redo log, the binary log) is found nowhere in the database's files, and the
//! data stays readable across a rotation of the master key. See `docs/security.md`.

mod common;

use common::Stratus;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every regular file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ty) = e.file_type() else { continue };
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_file()
                && std::fs::read(e.path())
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(e.path());
            }
        }
    }
    found
}

/// Waits (bounded) until the background threads have encrypted every tablespace the server
/// had from its template.
async fn wait_all_encrypted(conn: &mut Conn) {
    let begin = Instant::now();
    loop {
        let (total, encrypted): (u64, u64) = conn
            .query_first(
                "SELECT COUNT(*), SUM(ENCRYPTION_SCHEME = 1 AND ROTATING_OR_FLUSHING = 0) \
                 FROM information_schema.INNODB_TABLESPACES_ENCRYPTION",
            )
            .await
            .unwrap()
            .unwrap();
        if total > 0 && total == encrypted {
            return;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(60),
            "{encrypted} of {total} tablespaces encrypted after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn data_redo_undo_and_binlog_are_unreadable_on_disk_and_survive_key_rotation() {
    let mut s = Stratus::new("encryption");
    s.start();
    let status = s.json(&["status"]);
    assert!(
        status["encryption"]
            .as_str()
            .is_some_and(|e| e.contains("file_key_management")),
        "{status}"
    );
    let created = s.json(&["db", "create", "vault"]);
    let (user, pw) = (
        created["user"].as_str().unwrap().to_owned(),
        created["password"].as_str().unwrap().to_owned(),
    );
    let dir = s.data_dir().join("databases/vault");
    let mut conn = Conn::new(s.sql_opts(&user, &pw, Some("vault")))
        .await
        .unwrap();
    wait_all_encrypted(&mut conn).await;
    assert!(
        conn.query_drop("CREATE TABLE plain (v TEXT) ENCRYPTED=NO")
            .await
            .is_err(),
        "a tenant cannot opt a table out of encryption"
    );

    const SECRET: &str = "ZebraQuokka-7731-stratus-secret";
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(100))")
        .await
        .unwrap();
    conn.query_drop(format!("INSERT INTO t VALUES (1, '{SECRET}-row')"))
        .await
        .unwrap();
    // An undo image that is rolled back, a temporary table, a sort that spills.
    conn.query_drop(format!(
        "BEGIN; UPDATE t SET v = '{SECRET}-undo' WHERE id = 1; ROLLBACK"
    ))
    .await
    .unwrap();
    conn.query_drop(format!(
        "CREATE TEMPORARY TABLE tmp (v TEXT) ENGINE=InnoDB; INSERT INTO tmp VALUES ('{SECRET}-tmp'); DROP TEMPORARY TABLE tmp"
    ))
    .await
    .unwrap();
    // While running: the redo and binary logs hold the row already.
    assert_eq!(
        files_containing(&dir, SECRET.as_bytes()),
        Vec::<PathBuf>::new()
    );

    // Parked, the server has flushed everything and stopped.
    s.json(&["db", "park", "vault"]);
    assert_eq!(
        files_containing(&dir, SECRET.as_bytes()),
        Vec::<PathBuf>::new(),
        "plaintext under the database's directory"
    );
    assert!(
        dir.join("data/ib_logfile0").exists(),
        "the redo log was searched"
    );
    assert!(
        std::fs::read_dir(dir.join("binlog"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("mariadb-bin.0")),
        "the binary log (beside the data, off its volume) was searched"
    );
    // No plain data key is left where the server read it at start.
    let wrapped = std::fs::read_to_string(dir.join("data-key.wrapped")).unwrap();
    assert!(wrapped.starts_with("stratus-data-key-v1 "), "{wrapped}");

    // Readable again after a wake, and after the master key is replaced.
    let v: Option<String> = conn
        .query_first("SELECT v FROM t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some(format!("{SECRET}-row").as_str()));
    let master = s.dir.path().join("master.key");
    let before = std::fs::read_to_string(&master).unwrap();
    // Only an admin token may rotate: a developer of this very database may not.
    let dev = s.json(&["token", "create", "--role", "developer", "--db", "vault"]);
    let refused = s.cli_as(dev["secret"].as_str().unwrap(), &["key", "rotate"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("rotate encryption keys"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&master).unwrap(),
        before,
        "unchanged"
    );
    let rotated = s.json(&["key", "rotate"]);
    assert_eq!(rotated["wrapped"], 1, "{rotated}");
    let after = std::fs::read_to_string(&master).unwrap();
    assert_ne!(before, after, "a new master key");
    assert_eq!(after.lines().count(), 1, "the old master key is destroyed");
    s.json(&["db", "park", "vault"]);
    let v: Option<String> = conn
        .query_first("SELECT v FROM t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        v.as_deref(),
        Some(format!("{SECRET}-row").as_str()),
        "readable with the new master key"
    );
    let events = s.json(&["events", "--limit", "500"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "key_rotated"),
        "{events}"
    );
    conn.disconnect().await.unwrap();

    // Without its master key the data cannot be opened: a copy of the data directory is useless.
    s.stop();
    std::fs::rename(&master, s.dir.path().join("master.key.away")).unwrap();
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&master)
            .unwrap();
    }
    let out = std::process::Command::new(common::BIN)
        .args(["up", "--data-dir"])
        .arg(s.data_dir())
        .args(["--api", &s.api, "--listen", &s.listen, "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("master key"), "{err}");
}
