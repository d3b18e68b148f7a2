//! The serverless lifecycle end to end: suspend by hand and by idleness, with clients that stay
//! connected and keep their sessions; autoscaling under a CPU-bound load.

mod common;

use common::Stratus;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::time::Duration;

fn opts(s: &Stratus, user: &str, password: &str) -> OptsBuilder {
    s.sql_opts(user, password, Some("shop"))
}

fn create(s: &Stratus, args: &[&str]) -> (String, String) {
    let mut all = vec!["db", "create", "shop"];
    all.extend_from_slice(args);
    let c = s.json(&all);
    (
        c["user"].as_str().unwrap().to_owned(),
        c["password"].as_str().unwrap().to_owned(),
    )
}

/// The freezer state of the database's cgroup, where the host has a v1 freezer.
fn freezer_state(s: &Stratus) -> Option<String> {
    std::fs::read_to_string(format!(
        "/sys/fs/cgroup/freezer/{}/shop/freezer.state",
        s.cgroup_parent
    ))
    .ok()
    .map(|t| t.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_suspended_database_keeps_its_clients_and_their_sessions() {
    let mut s = Stratus::new("suspend");
    s.start();
    let (user, pw) = create(&s, &[]);
    let mut conn = Conn::new(opts(&s, &user, &pw)).await.unwrap();
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t VALUES (1), (2), (3)")
        .await
        .unwrap();
    conn.query_drop("SET @kept = 'yes', SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    let stmt = conn
        .prep("SELECT COUNT(*) FROM t WHERE id >= ?")
        .await
        .unwrap();

    let pid = s.json(&["db", "show", "shop"])["pid"].as_u64().unwrap();
    let rss = || stratus_cgroup::proc_usage(pid as u32).unwrap().memory_bytes / 1024;
    let active_rss = rss();
    let suspended = s.json(&["db", "suspend", "shop"]);
    assert_eq!(suspended["state"], "suspended");
    assert_eq!(suspended["pid"], pid, "the server keeps running");
    // It gives memory back. Listing its hot pages once kept 20 MiB more than it had active
    // (an information_schema table of every page of its pool, free ones included).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rss() >= active_rss {
        assert!(
            std::time::Instant::now() < deadline,
            "suspended, its server uses {} KiB, active it used {active_rss} KiB",
            rss()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(state) = freezer_state(&s) {
        assert_eq!(state, "FROZEN");
    }
    let event = s.wait_for_event("shop", "suspended", Duration::from_secs(5));
    assert!(
        event["data"]["buffer_pool_after"].as_u64().unwrap()
            < event["data"]["buffer_pool_before"].as_u64().unwrap()
    );

    // The same connection: the statement wakes it, the session is as it was.
    let row: Option<(String, String)> = conn.query_first("SELECT @kept, @@sql_mode").await.unwrap();
    assert_eq!(row, Some(("yes".into(), "ANSI_QUOTES".into())));
    let n: Option<u64> = conn.exec_first(&stmt, (2,)).await.unwrap();
    assert_eq!(n, Some(2));
    let woken = s.wait_for_event("shop", "woken", Duration::from_secs(5));
    assert_eq!(woken["data"]["from"], "suspended");
    assert_eq!(s.json(&["db", "show", "shop"])["state"], "active");
    if let Some(state) = freezer_state(&s) {
        assert_eq!(state, "THAWED");
    }
    conn.disconnect().await.unwrap();
    s.stop();
}

/// Pages of the database's tables in its server's buffer pool, per table or partition.
async fn pages_in_pool(direct: &mut Conn) -> std::collections::BTreeMap<String, u64> {
    direct
        .query::<(String, u64), _>(
            "SELECT TABLE_NAME, COUNT(*) FROM information_schema.INNODB_BUFFER_PAGE \
             WHERE TABLE_NAME LIKE '`shop`.%' GROUP BY TABLE_NAME",
        )
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// A woken database's buffer pool holds again what it held when it was suspended: the server's
/// own reload skips encrypted tables (every table here), so Stratus reads them back. The tables
/// are named by a hostile tenant: the names reach Stratus's statements only as identifiers.
#[tokio::test(flavor = "multi_thread")]
async fn a_woken_database_gets_its_hot_tables_back_in_its_buffer_pool() {
    let mut s = Stratus::new("hydrate");
    s.start();
    let (user, pw) = create(&s, &[]);
    let mut conn = Conn::new(opts(&s, &user, &pw)).await.unwrap();
    // More than the 32 MiB a suspended server keeps, so the suspend pushes pages out.
    conn.query_drop("CREATE TABLE orders (id INT PRIMARY KEY, k INT, c CHAR(200), KEY k (k))")
        .await
        .unwrap();
    conn.query_drop(
        "CREATE TABLE `we``ird */ name; DROP TABLE orders; --` (id INT PRIMARY KEY, c CHAR(200)) \
         PARTITION BY HASH (id) (PARTITION `p*/ OR 1; --`, PARTITION p1)",
    )
    .await
    .unwrap();
    for t in [
        "orders (id, k, c)",
        "`we``ird */ name; DROP TABLE orders; --` (id, c)",
    ] {
        let cols = if t.starts_with("orders") {
            "seq, seq % 1000, REPEAT('x', 200)"
        } else {
            "seq, REPEAT('y', 200)"
        };
        conn.query_drop(format!(
            "INSERT INTO {t} SELECT {cols} FROM seq_1_to_120000"
        ))
        .await
        .unwrap();
    }
    let mut direct = s.direct("shop").await;
    let before = pages_in_pool(&mut direct).await;
    direct.disconnect().await.unwrap();
    assert_eq!(before.len(), 3, "{before:?}");

    s.json(&["db", "suspend", "shop"]);
    let one: Option<u8> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    let hydrated = s.wait_for_event("shop", "hydrated", Duration::from_secs(120));
    let data = &hydrated["data"];
    assert_eq!(data["failed"], 0, "{hydrated}");
    assert_eq!(data["indexes_read"], 4, "{hydrated}");
    assert!(
        data["pages_read"].as_u64().unwrap() + data["pages_prefetched"].as_u64().unwrap() > 1000,
        "the suspend pushed pages out, and they were read back: {hydrated}"
    );
    let mut direct = s.direct("shop").await;
    let after = pages_in_pool(&mut direct).await;
    direct.disconnect().await.unwrap();
    for (table, pages) in &before {
        let back = after.get(table).copied().unwrap_or(0);
        assert!(
            back * 10 >= pages * 9,
            "{table}: {back} of {pages} pages back"
        );
    }
    let rows: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM orders")
        .await
        .unwrap();
    assert_eq!(rows, Some(120_000), "and the names did nothing but name");
    conn.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_database_suspends_itself_and_open_connections_do_not_count() {
    let mut s = Stratus::with_policy("idle", "idle_to_suspend_ms = 1500");
    s.start();
    let (user, pw) = create(&s, &[]);
    let mut conn = Conn::new(opts(&s, &user, &pw)).await.unwrap();
    let one: Option<u8> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    // The connection stays open and idle; the database goes to sleep anyway.
    let event = s.wait_for_event("shop", "suspended", Duration::from_secs(30));
    assert!(
        event["message"].as_str().unwrap().contains("idle for"),
        "{event}"
    );
    let two: Option<u8> = conn.query_first("SELECT 2").await.unwrap();
    assert_eq!(two, Some(2), "and wakes for the next statement");
    conn.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cpu_bound_load_scales_the_database_up() {
    let mut s = Stratus::new("scale");
    s.start();
    let (user, pw) = create(&s, &["--tier", "standard", "--max-scu", "4"]);
    assert_eq!(s.json(&["db", "show", "shop"])["scu"], 1);
    // Two sessions spinning the CPU: far above 90 % of half a vCPU.
    let mut load = Vec::new();
    for _ in 0..2 {
        let o = opts(&s, &user, &pw);
        load.push(tokio::spawn(async move {
            let mut c = Conn::new(o).await.unwrap();
            let _: Option<u64> = c
                .query_first("SELECT BENCHMARK(30000000, SHA2('stratus', 256))")
                .await
                .ok()
                .flatten();
            let _ = c.disconnect().await;
        }));
    }
    // A bound, not a timing: on a busy host the load may take a while to get its half vCPU.
    let scaled = s.wait_for_event("shop", "scaled", Duration::from_secs(60));
    let message = scaled["message"].as_str().unwrap();
    assert!(
        message.contains("autoscaled up") && message.contains("% of 500 millicores"),
        "{message}"
    );
    assert!(
        scaled["data"]["usage_pct"].as_f64().unwrap() >= 90.0,
        "{scaled}"
    );
    assert!(scaled["data"]["to_scu"].as_u64().unwrap() >= 2);
    let measured = &s.json(&["db", "show", "shop"])["measured"];
    assert!(measured["memory_bytes"].as_u64().unwrap() > 0, "{measured}");
    assert!(measured["cpu_millis"].as_f64().unwrap() > 0.0, "{measured}");
    for l in load {
        l.abort();
    }
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn databases_come_from_the_warm_pool_and_it_refills() {
    let mut s = Stratus::with_pool("pool", 2);
    s.start();
    s.wait_for_metric("stratus_warm_pool_ready", 2.0, Duration::from_secs(60));
    // One spare's pool grown to a 1-SCU database's on a real server, for the next create.
    s.wait_for_metric("stratus_warm_pool_presized", 1.0, Duration::from_secs(60));
    let (user, pw) = create(&s, &[]);
    let started = s.wait_for_event("shop", "started", Duration::from_secs(5));
    assert_eq!(started["data"]["warm_pool"], true, "{started}");
    // It says where its time went, and the phases add up to no more than the whole.
    let phases = started["data"]["phases_ms"].as_object().unwrap();
    let names: Vec<&str> = phases.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "accounts",
            "catalog",
            "placed_and_recorded",
            "server",
            "size"
        ],
        "{started}"
    );
    let sum: u64 = phases.values().map(|v| v.as_u64().unwrap()).sum();
    assert!(
        sum <= started["data"]["ready_ms"].as_u64().unwrap(),
        "{started}"
    );
    let shown = s.json(&["db", "show", "shop"]);
    if shown["limits_enforced"] == true {
        assert_eq!(
            (shown["cpu_limit"].as_f64(), shown["memory_limit"].as_u64()),
            (Some(0.5), Some(2 << 30))
        );
    }
    assert_eq!(
        shown["buffer_pool_size"],
        1u64 << 30,
        "sized as a 1 SCU database, not a spare"
    );
    let mut conn = Conn::new(opts(&s, &user, &pw)).await.unwrap();
    // Stratus's setup stayed out of the binary log: it holds the tenant's transactions only.
    let logged = "SELECT @@gtid_binlog_pos";
    let before: Option<String> = conn.query_first(logged).await.unwrap();
    assert_eq!(
        before.as_deref(),
        Some(""),
        "nothing logged before the owner"
    );
    conn.query_drop("CREATE TABLE t (a INT)").await.unwrap();
    let after: Option<String> = conn.query_first(logged).await.unwrap();
    assert_ne!(
        after.as_deref(),
        Some(""),
        "the owner's own statement is logged"
    );
    let n: Option<u64> = conn.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(0));
    // The owner account the spare made while it waited is this owner's: its grants, its
    // password, and no trace of the name it waited under.
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap();
    let account = user.rsplit('.').next().unwrap();
    let owner = format!("TO `{account}`@`%`");
    for on in [
        "GRANT PROCESS, SHOW DATABASES, REPLICATION SLAVE, BINLOG MONITOR, CREATE USER, SLAVE MONITOR ON *.*",
        "GRANT ALL PRIVILEGES ON `%`.*",
        "GRANT SELECT ON `mysql`.*",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON `stratus_meta`.*",
    ] {
        assert!(
            grants
                .iter()
                .any(|g| g.starts_with(on) && g.contains(&owner)),
            "{on}: {grants:?}"
        );
    }
    assert_eq!(grants.len(), 4, "{grants:?}");
    let waiting: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM mysql.global_priv WHERE User LIKE 'stratus_spare%'")
        .await
        .unwrap();
    assert_eq!(waiting, Some(0));
    conn.disconnect().await.unwrap();
    // A creation raises the target; the pool refills past its minimum.
    s.wait_for_metric("stratus_warm_pool_target", 3.0, Duration::from_secs(5));
    s.wait_for_metric("stratus_warm_pool_ready", 3.0, Duration::from_secs(60));
    s.wait_for_metric("stratus_warm_pool_presized", 1.0, Duration::from_secs(60));
    let status = s.json(&["status"]);
    assert_eq!(status["warm_pool"]["ready"], 3, "{status}");
    s.stop();
    assert!(s.mariadbd_pids().is_empty(), "spares stop with Stratus");
}
