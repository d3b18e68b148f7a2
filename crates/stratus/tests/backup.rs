//! Backups and restore end to end, through the CLI, against real `mariadbd` processes and
//! `mariadb-backup`: what a restore brings back, that the source is untouched, that a damaged
//! backup is never used, that a deleted database can be restored, and that a token cannot reach
//! another tenant's backups.

mod common;

use common::Stratus;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;

async fn rows(s: &Stratus, user: &str, pw: &str, schema: &str) -> Vec<(u32, String)> {
    let mut c = Conn::new(s.sql_opts(user, pw, Some(schema))).await.unwrap();
    let r: Vec<(u32, String)> = c.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    c.disconnect().await.unwrap();
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_brings_back_the_data_at_the_backup_and_leaves_the_source_alone() {
    let mut s = Stratus::new("backup");
    s.start();
    s.json(&["db", "create", "shop", "--password", "pw-shop"]);
    let mut c = Conn::new(s.sql_opts("shop.admin", "pw-shop", Some("shop")))
        .await
        .unwrap();
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40))")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (1,'one'),(2,'two')")
        .await
        .unwrap();
    // A transaction open across the backup: not in it, since it has not committed.
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (3,'uncommitted at the backup')")
        .await
        .unwrap();
    let b = s.json(&["backup", "create", "shop"]);
    assert_eq!(b["verified"], true, "{b}");
    let id = b["id"].as_str().unwrap().to_owned();
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (4,'after')")
        .await
        .unwrap();
    c.disconnect().await.unwrap();

    let restored = s.json(&[
        "db",
        "restore",
        "shop",
        "--to",
        "shop-copy",
        "--backup",
        &id,
    ]);
    assert_eq!(restored["state"], "active");
    assert_eq!(
        restored["database"], "shop",
        "the source's schema, under its name"
    );
    let at_backup = vec![(1, "one".to_owned()), (2, "two".to_owned())];
    // The source's accounts, with their passwords, came along.
    assert_eq!(
        rows(&s, "shop-copy.admin", "pw-shop", "shop").await,
        at_backup
    );
    assert_eq!(
        rows(&s, "shop.admin", "pw-shop", "shop").await.len(),
        4,
        "source untouched"
    );

    // The copy is independent: its writes do not reach the source.
    let mut c = Conn::new(s.sql_opts("shop-copy.admin", "pw-shop", Some("shop")))
        .await
        .unwrap();
    c.query_drop("DELETE FROM t").await.unwrap();
    c.disconnect().await.unwrap();
    assert_eq!(rows(&s, "shop.admin", "pw-shop", "shop").await.len(), 4);

    // A deleted database is restored from its backups, the newest verified one by default.
    s.json(&["db", "delete", "shop", "--yes"]);
    let listed = s.json(&["backup", "list", "shop"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    s.json(&["db", "restore", "shop", "--to", "shop-again"]);
    assert_eq!(
        rows(&s, "shop-again.admin", "pw-shop", "shop").await,
        at_backup
    );

    // A damaged backup is refused, and nothing is created.
    let dir = s.data_dir().join("backups").join("shop").join(&id);
    let ibd = dir.join("data").join("shop").join("t.ibd");
    let mut bytes = std::fs::read(&ibd).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0xff;
    std::fs::write(&ibd, bytes).unwrap();
    let err = s.fails(&["db", "restore", "shop", "--to", "shop-bad", "--backup", &id]);
    assert!(
        err.contains("failed verification") && err.contains("t.ibd"),
        "{err}"
    );
    let err = s.fails(&["db", "show", "shop-bad"]);
    assert!(err.contains("not found"), "{err}");
    let err = s.fails(&["backup", "verify", &id]);
    assert!(err.contains("t.ibd differs"), "{err}");
    let listed = s.json(&["backup", "list", "shop"]);
    assert_eq!(listed[0]["verified"], false, "{listed}");
    let err = s.fails(&["db", "restore", "shop", "--to", "shop-bad"]);
    assert!(err.contains("a verified backup of shop not found"), "{err}");

    s.json(&["backup", "delete", &id]);
    assert_eq!(s.json(&["backup", "list", "shop"]), serde_json::json!([]));
    let events = s.json(&["events", "--db", "shop-copy"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "restored"),
        "{events}"
    );
    s.stop();
}

/// A developer token for `blog-*` cannot back up, list, delete or restore `shop`'s backups, nor
/// restore `shop` into a database of its own; ids that are paths are not ids.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_reaches_only_the_backups_of_its_own_databases() {
    let mut s = Stratus::new("backup-scope");
    s.start();
    s.json(&["db", "create", "shop", "--password", "pw-shop"]);
    let id = s.json(&["backup", "create", "shop"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, dev) = s.token(&["--role", "developer", "--db", "blog-*"]);
    for args in [
        vec!["backup", "create", "shop"],
        vec!["backup", "list", "shop"],
        vec!["backup", "delete", id.as_str()],
        vec!["db", "restore", "shop", "--to", "blog-stolen"],
        vec![
            "db",
            "restore",
            "shop",
            "--to",
            "blog-stolen",
            "--backup",
            id.as_str(),
        ],
    ] {
        let err = s.refused(&dev, &args);
        assert!(
            err.contains("outside this token's scope"),
            "{args:?}: {err}"
        );
    }
    // Its own database's backups are its own, and naming another's backup for it is refused.
    s.cli_as(&dev, &["db", "create", "blog-a"]);
    let err = s.refused(
        &dev,
        &[
            "db",
            "restore",
            "blog-a",
            "--to",
            "blog-b",
            "--backup",
            id.as_str(),
        ],
    );
    assert!(err.contains("is a backup of shop"), "{err}");
    for bad in ["../../etc", "shop-*", "shop"] {
        let err = s.fails(&["backup", "delete", bad]);
        assert!(err.contains("is not a backup id"), "{bad}: {err}");
    }
    assert_eq!(
        s.json(&["backup", "list", "shop"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    s.stop();
}

/// A schedule runs by itself: a short cron (every two seconds) takes backups with no command,
/// and retention keeps the newest two.
#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_takes_backups_by_itself_and_retention_keeps_the_newest() {
    let mut s = Stratus::new("backup-cron");
    s.start();
    s.json(&["db", "create", "shop", "--password", "pw-shop"]);
    let err = s.fails(&["backup", "schedule", "shop", "--cron", "61 * * * *"]);
    assert!(err.contains("not a minute"), "{err}");
    let set = s.json(&[
        "backup",
        "schedule",
        "shop",
        "--cron",
        "*/2 * * * * *",
        "--keep-last",
        "2",
    ]);
    assert_eq!(set["keep_last"], 2, "{set}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let deleted = loop {
        let events = s.json(&["events", "--db", "shop"]);
        let deleted = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "backup_deleted")
            .count();
        if deleted >= 1 {
            break deleted;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no backup deleted by retention: {events}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(deleted >= 1);
    s.json(&["backup", "schedule", "shop", "--cron", ""]);
    let kept = s.json(&["backup", "list", "shop"]);
    let kept = kept.as_array().unwrap();
    assert!(kept.len() <= 2 && !kept.is_empty(), "{kept:?}");
    assert!(kept.iter().all(|b| b["verified"] == true), "{kept:?}");
    s.stop();
}

/// Incremental backups on a schedule of their own, on top of the newest verified backup, and a
/// restore from one (its full backup, then it).
#[tokio::test(flavor = "multi_thread")]
async fn scheduled_incremental_backups_build_on_the_last_one_and_restore_whole() {
    let mut s = Stratus::new("backup-inc");
    s.start();
    s.json(&["db", "create", "shop", "--password", "pw-shop"]);
    let mut c = Conn::new(s.sql_opts("shop.admin", "pw-shop", Some("shop")))
        .await
        .unwrap();
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40))")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (1,'in the full backup')")
        .await
        .unwrap();
    let err = s.fails(&["backup", "create", "shop", "--incremental"]);
    assert!(err.contains("take a full one first"), "{err}");
    let full = s.json(&["backup", "create", "shop"]);
    c.query_drop("INSERT INTO t VALUES (2,'in an incremental one')")
        .await
        .unwrap();
    s.json(&[
        "backup",
        "schedule",
        "shop",
        "--cron",
        "",
        "--incremental-cron",
        "*/2 * * * * *",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let inc = loop {
        let list = s.json(&["backup", "list", "shop"]);
        if let Some(b) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["kind"] == "incremental")
        {
            break b.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no incremental backup: {list}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    s.json(&["backup", "schedule", "shop", "--incremental-cron", ""]);
    assert_eq!(inc["base"], full["id"], "{inc}");
    assert_eq!(inc["verified"], true, "{inc}");
    assert!(
        inc["bytes"].as_u64() < full["bytes"].as_u64(),
        "only what changed: {inc} vs {full}"
    );
    c.disconnect().await.unwrap();
    s.json(&[
        "db",
        "restore",
        "shop",
        "--to",
        "shop-inc",
        "--backup",
        inc["id"].as_str().unwrap(),
    ]);
    assert_eq!(
        rows(&s, "shop-inc.admin", "pw-shop", "shop").await,
        vec![
            (1, "in the full backup".to_owned()),
            (2, "in an incremental one".to_owned())
        ]
    );
    s.stop();
}

/// Where the server's binary log is at (`SHOW MASTER STATUS`).
async fn log_position(c: &mut Conn) -> (String, u64) {
    let row: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().unwrap();
    (row.get(0).unwrap(), row.get(1).unwrap())
}

/// Waits (bounded) until the archive holds `file` up to `pos`, byte for byte as the server
/// wrote it.
fn archived(s: &Stratus, (file, pos): &(String, u64)) {
    let src = s.data_dir().join("databases/shop/binlog").join(file);
    // The archive of this incarnation of `shop`: `binlog-<its creation time>`.
    let dst = || {
        std::fs::read_dir(s.data_dir().join("backups/shop"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("binlog-")
            })
            .map(|a| a.join(file))
    };
    let begin = std::time::Instant::now();
    let dst = loop {
        if let Some(d) = dst().filter(|d| std::fs::metadata(d).map_or(0, |m| m.len()) >= *pos) {
            break d;
        }
        assert!(
            begin.elapsed() < std::time::Duration::from_secs(10),
            "{file} not archived up to {pos} within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (a, b) = (std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    let n = *pos as usize;
    assert_eq!(a[..n], b[..n], "{file} archived as written");
}

/// Every committed transaction reaches the binary log archive within seconds, and still does
/// after `mariadbd` is killed: the base of point-in-time restore.
#[tokio::test(flavor = "multi_thread")]
async fn every_commit_reaches_the_binary_log_archive_even_across_a_crash() {
    let mut s = Stratus::new("archive");
    s.start();
    s.json(&["db", "create", "shop", "--password", "pw-shop"]);
    let mut c = Conn::new(s.sql_opts("shop.admin", "pw-shop", Some("shop")))
        .await
        .unwrap();
    c.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let before = log_position(&mut c).await;
    // Killed at once, most likely before the archive's next look: the commit is in the file
    // the server left, and reaches the archive from there.
    let pid = s.json(&["db", "show", "shop"])["pid"].as_u64().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    archived(&s, &before);
    s.wait_for_event("shop", "restarted", std::time::Duration::from_secs(30));
    c.disconnect().await.ok();
    let mut c = Conn::new(s.sql_opts("shop.admin", "pw-shop", Some("shop")))
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    let after = log_position(&mut c).await;
    archived(&s, &after);
    c.disconnect().await.unwrap();
    s.stop();
}
