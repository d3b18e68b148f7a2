//! Storage end to end: each database's data on a volume of its own that grows by itself before it
//! fills, up to the database's `storage_gb`, where writes fail with the server's own error and
//! deleting data makes room again. Needs root and loop devices, as `stratus up` does for
//! volumes; where the host has none it says so in `stratus status`, which this test checks
//! instead.

mod common;

use common::Stratus;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::time::Duration;

/// 10 MiB in one statement.
const LOAD: &str = "INSERT INTO big (v) SELECT RANDOM_BYTES(1024) FROM seq_1_to_10240";

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_load_grows_the_volume_then_meets_its_maximum_and_a_delete_makes_room() {
    let mut s = Stratus::new("storage");
    s.start();
    let status = s.json(&["status"]);
    if status["storage_note"].is_string() {
        // No volumes on this host: status says why (the limit is then kept by measuring,
        // tested below).
        eprintln!("no volumes here: {}", status["storage_note"]);
        assert_eq!(status["storage"], "plain directories");
        s.stop();
        return;
    }
    s.json(&[
        "db",
        "create",
        "shop",
        "--tier",
        "standard",
        "--storage-gb",
        "2",
        "--password",
        "pw",
    ]);
    let shown = s.json(&["db", "show", "shop"]);
    let first = shown["storage_limit_bytes"].as_u64().unwrap();
    assert!(first < 1 << 30, "starts at 1 GiB: {shown}");
    assert!(shown["storage_used_bytes"].as_u64().unwrap() > 0, "{shown}");

    let mut c = Conn::new(s.sql_opts("shop.admin", "pw", Some("shop")))
        .await
        .unwrap();
    c.query_drop("CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v LONGBLOB)")
        .await
        .unwrap();
    let mut loaded = 0u32;
    let full = loop {
        match c.query_drop(LOAD).await {
            Ok(()) => loaded += 1,
            Err(mysql_async::Error::Server(e)) => break e,
            Err(e) => panic!("after {loaded} loads: {e}"),
        }
        assert!(loaded < 400, "4 GiB written and never full");
    };
    // Well past what the first volume holds, with no error on the way: it grew in time.
    let written = u64::from(loaded) * (10 << 20);
    assert!(
        written > first,
        "only {loaded} loads of 10 MiB before: {full:?}"
    );
    assert_eq!(full.code, 1114, "{full:?}");
    assert!(full.message.contains("is full"), "{full:?}");
    let grown = s.wait_for_event("shop", "storage_grown", Duration::from_secs(5));
    assert!(
        grown["data"]["to_bytes"].as_u64().unwrap() > first,
        "{grown}"
    );
    let shown = s.json(&["db", "show", "shop"]);
    let limit = shown["storage_limit_bytes"].as_u64().unwrap();
    assert!(
        limit <= 2 << 30 && limit > 3 << 29,
        "at its maximum: {shown}"
    );
    assert!(
        s.metric("stratus_database_storage_limit_bytes{db=\"shop\"}")
            .is_some_and(|m| m as u64 == limit)
    );
    assert!(
        s.metric("stratus_database_storage_used_bytes{db=\"shop\"}")
            .is_some()
    );

    // Full at its maximum: said in an event. Deleting data makes room: the freed pages take new
    // rows (the binary log is not on the volume, so the DELETE's own log does not use it up).
    let full_event = s.wait_for_event("shop", "storage_full", Duration::from_secs(10));
    assert!(
        full_event["message"]
            .as_str()
            .unwrap()
            .contains("maximum of 2 GiB"),
        "{full_event}"
    );
    let before: Option<u64> = c.query_first("SELECT COUNT(*) FROM big").await.unwrap();
    assert_eq!(
        before,
        Some(u64::from(loaded) * 10240),
        "the failed load left nothing"
    );
    c.query_drop("DELETE FROM big ORDER BY id LIMIT 20480")
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), 20480);
    let begin = std::time::Instant::now();
    loop {
        // InnoDB frees the deleted rows' pages in the background (purge): bounded.
        match c.query_drop(LOAD).await {
            Ok(()) => break,
            Err(e) if begin.elapsed() < Duration::from_secs(30) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("no room after a DELETE: {e}"),
        }
    }
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM big").await.unwrap();
    assert_eq!(
        n,
        Some(u64::from(loaded - 1) * 10240),
        "two loads deleted, one more made"
    );
    c.disconnect().await.unwrap();
    s.stop();
}

async fn count(s: &Stratus, db: &str) -> u64 {
    let mut c = Conn::new(s.sql_opts(&format!("{db}.admin"), "pw", Some("shop")))
        .await
        .unwrap();
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM big").await.unwrap();
    c.disconnect().await.unwrap();
    n.unwrap()
}

async fn load(s: &Stratus, db: &str, sql: &str) {
    let mut c = Conn::new(s.sql_opts(&format!("{db}.admin"), "pw", Some("shop")))
        .await
        .unwrap();
    c.query_drop(sql).await.unwrap();
    c.disconnect().await.unwrap();
}

/// A branch is the source's data as it was, at once; afterwards each side's writes are its own,
/// and deleting either leaves the other.
#[tokio::test(flavor = "multi_thread")]
async fn a_branch_is_an_independent_copy_made_at_once() {
    let mut s = Stratus::new("branch");
    s.start();
    if s.json(&["status"])["storage_note"].is_string() {
        eprintln!("no volumes here: branches go through a backup (tested with the fake runtime)");
        s.stop();
        return;
    }
    s.json(&[
        "db",
        "create",
        "shop",
        "--password",
        "pw",
        "--tier",
        "standard",
    ]);
    load(
        &s,
        "shop",
        "CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v LONGBLOB)",
    )
    .await;
    for _ in 0..10 {
        load(&s, "shop", LOAD).await;
    }
    let branch = s.json(&["db", "branch", "shop", "shop-dev"]);
    assert_eq!(branch["state"], "active", "{branch}");
    assert_eq!(branch["database"], "shop");
    let made = s.wait_for_event("shop-dev", "branched", Duration::from_secs(5));
    assert_eq!(made["data"]["shared_blocks"], true, "{made}");
    eprintln!(
        "branch of {} MiB ready in {} ms",
        (count(&s, "shop").await * 1024) >> 20,
        made["data"]["ms"]
    );
    assert_eq!(count(&s, "shop-dev").await, 10 * 10240);

    // Each side's writes are its own.
    load(&s, "shop-dev", "DELETE FROM big ORDER BY id LIMIT 51200").await;
    load(&s, "shop", LOAD).await;
    assert_eq!(count(&s, "shop").await, 11 * 10240);
    assert_eq!(count(&s, "shop-dev").await, 5 * 10240);

    // Deleting either leaves the other.
    s.json(&["db", "delete", "shop-dev", "--yes"]);
    assert_eq!(count(&s, "shop").await, 11 * 10240);
    s.json(&["db", "branch", "shop", "shop-two"]);
    s.json(&["db", "delete", "shop", "--yes"]);
    assert_eq!(count(&s, "shop-two").await, 11 * 10240);
    let err = s.fails(&[
        "db",
        "branch",
        "shop-two",
        "x",
        "--time",
        "2026-01-01T00:00:00Z",
    ]);
    // A branch at a past time is a point-in-time restore: it needs a backup from before then.
    assert!(
        err.contains("a verified backup of shop-two taken before"),
        "{err}"
    );
    s.stop();
}

/// Where there are no volumes (here: `[resources] volumes = false`; elsewhere a container, an
/// unprivileged user), the limit is kept by measuring: past `storage_gb` the proxy refuses what
/// adds data with "The table is full", reads and deletes go on, and once a `DELETE` has made room
/// inside the tables, writes work again.
#[tokio::test(flavor = "multi_thread")]
async fn without_volumes_the_limit_is_kept_by_measuring_and_a_delete_makes_room() {
    let mut s = Stratus::new("measured");
    s.configure("resources", "volumes = false");
    s.start();
    let status = s.json(&["status"]);
    assert_eq!(status["storage"], "plain directories", "{status}");
    s.json(&[
        "db",
        "create",
        "shop",
        "--tier",
        "standard",
        "--storage-gb",
        "1",
        "--password",
        "pw",
    ]);
    let mut c = Conn::new(s.sql_opts("shop.admin", "pw", Some("shop")))
        .await
        .unwrap();
    c.query_drop("CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v LONGBLOB)")
        .await
        .unwrap();
    let mut loaded = 0u32;
    let full = loop {
        match c.query_drop(LOAD).await {
            Ok(()) => loaded += 1,
            Err(mysql_async::Error::Server(e)) => break e,
            Err(e) => panic!("after {loaded} loads: {e}"),
        }
        assert!(loaded < 300, "3 GiB written and never refused");
    };
    assert_eq!(full.code, 1114, "{full:?}");
    assert!(
        full.message.contains("storage limit of 1 GiB"),
        "{}",
        full.message
    );
    let shown = s.json(&["db", "show", "shop"]);
    let used = shown["storage_used_bytes"].as_u64().unwrap();
    assert_eq!(shown["storage_limit_bytes"], 1u64 << 30, "{shown}");
    // How far past the limit the measurement that found it full came depends on how busy
    // the host is (it measures once a second); from then on at most the load in flight
    // (10 MiB of rows) lands, with the files InnoDB extends for it (its system tablespace, which
    // holds the undo log, by 64 MiB at a time).
    let marked = s.wait_for_event("shop", "storage_full", Duration::from_secs(10));
    let at_mark = marked["data"]["used_bytes"].as_u64().unwrap();
    assert!(at_mark >= 1 << 30, "{marked}");
    assert!(used <= at_mark + (96 << 20), "{used} bytes used: {marked}");
    eprintln!(
        "marked full at {} MiB, {} MiB once refused",
        at_mark >> 20,
        used >> 20
    );
    // Reads and deletes go on; what adds data stays refused, prepared or not.
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM big").await.unwrap();
    assert!(n.unwrap() > 0);
    let err = c
        .exec_drop("INSERT INTO big (v) VALUES (?)", ("x",))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, mysql_async::Error::Server(e) if e.code == 1114),
        "{err}"
    );
    // Half the rows: more than any overshoot past the limit (a fixed number of rows was less
    // than the overshoot when the machine was busy, and writes stayed refused for good).
    let half = n.unwrap() / 2;
    c.query_drop(format!("DELETE FROM big ORDER BY id LIMIT {half}"))
        .await
        .unwrap();
    assert_eq!(c.affected_rows(), half);
    // The files keep their size; the room inside them counts once purge has freed it.
    let begin = std::time::Instant::now();
    loop {
        match c.query_drop(LOAD).await {
            Ok(()) => break,
            Err(mysql_async::Error::Server(e)) if e.code == 1114 => {}
            Err(e) => panic!("{e}"),
        }
        // Purge runs at the database's CPU quota, beside the rest of the suite.
        assert!(
            begin.elapsed() < Duration::from_secs(120),
            "writes still refused two minutes after the delete"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    c.disconnect().await.unwrap();
    s.stop();
}
