//! `stratus up` end to end, through the CLI, against real `mariadbd` processes: the "Done
//! when" of the foundation issue.

mod common;

use common::Stratus;
use mysql_async::prelude::Queryable;
use std::process::Command;
use std::time::Duration;

async fn connect(host: &str, port: u16, user: &str, password: &str, db: &str) -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_owned())
        .tcp_port(port)
        .user(Some(user.to_owned()))
        .pass(Some(password.to_owned()))
        .db_name(Some(db.to_owned()));
    mysql_async::Conn::new(opts).await.unwrap()
}

/// The stock `mariadb` client, as a user would run it.
fn mariadb(port: u16, user: &str, password: &str, db: &str, sql: &str) -> String {
    let out = Command::new("mariadb")
        .args([
            "--protocol=tcp",
            "-h127.0.0.1",
            &format!("-P{port}"),
            &format!("-u{user}"),
            &format!("-p{password}"),
        ])
        .args(["-N", "-B", db, "-e", sql])
        .output()
        .expect("the mariadb client is installed");
    assert!(
        out.status.success(),
        "mariadb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_scale_park_resume_and_survive_kill9() {
    let mut s = Stratus::new("life");
    s.start();
    let created = s.json(&["db", "create", "shop"]);
    assert_eq!(created["state"], "active");
    let (port, user, pw) = (
        created["port"].as_u64().unwrap() as u16,
        created["user"].as_str().unwrap().to_owned(),
        created["password"].as_str().unwrap().to_owned(),
    );
    assert_eq!(created["host"], "127.0.0.1");
    let out = mariadb(
        port,
        &user,
        &pw,
        "shop",
        "SELECT @@gtid_binlog_pos = ''; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1,'one'),(2,'two'); SELECT v FROM t ORDER BY id",
    );
    // A server started for the create (no warm pool here) was set up outside the binary log.
    assert_eq!(out, "1\none\ntwo\n", "nothing logged before the owner");

    // Scale to 2 SCU: 1 vCPU, 4 GiB, buffer pool in proportion.
    let shown = s.json(&["db", "scale", "shop", "--scu", "2"]);
    assert_eq!(shown["scu"], 2);
    assert_eq!(shown["cpu_limit"], 1.0);
    assert_eq!(shown["memory_limit"], 4u64 << 30);
    assert_eq!(shown["buffer_pool_size"], 2u64 << 30);
    let mut conn = connect("127.0.0.1", port, &user, &pw, "shop").await;
    let bp: Option<u64> = conn
        .query_first("SELECT @@innodb_buffer_pool_size")
        .await
        .unwrap();
    assert_eq!(bp, Some(2 << 30), "the server itself reports the new pool");
    conn.disconnect().await.unwrap();
    if shown["limits_enforced"] == true {
        let cg = s.cgroup_parent.clone();
        let quota =
            std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/{cg}/shop/cpu.cfs_quota_us"))
                .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/{cg}/shop/cpu.max")))
                .unwrap();
        assert!(quota.starts_with("100000"), "1 vCPU of quota, got {quota}");
    }
    let pid = shown["pid"].as_u64().unwrap() as u32;
    assert!(std::path::Path::new(shown["data_dir"].as_str().unwrap()).is_dir());
    let backend = shown["backend"].as_str().unwrap();
    assert_ne!(
        backend,
        format!("127.0.0.1:{port}"),
        "clients get the proxy, not the server"
    );
    assert!(
        backend.starts_with("unix:"),
        "servers listen on a private socket only, not {backend}"
    );

    // Park stops the process; resume brings it back with the data.
    let parked = s.json(&["db", "park", "shop"]);
    assert_eq!(parked["state"], "parked");
    assert!(parked["pid"].is_null());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "mariadbd is gone"
    );
    let resumed = s.json(&["db", "resume", "shop"]);
    assert_eq!(resumed["state"], "active");
    let port = resumed["port"].as_u64().unwrap() as u16;
    assert_eq!(
        mariadb(port, &user, &pw, "shop", "SELECT COUNT(*) FROM t"),
        "2\n"
    );
    assert_eq!(resumed["scu"], 2, "size kept across park");
    let events = s.json(&["events", "--db", "shop"]);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in ["created", "started", "scaled", "parked", "resumed"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    // kill -9 of Stratus itself: the database is found again, data intact.
    s.kill9();
    s.start();
    let list = s.json(&["db", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "shop");
    assert_eq!(list[0]["state"], "active");
    let port = list[0]["port"].as_u64().unwrap() as u16;
    assert_eq!(
        mariadb(port, &user, &pw, "shop", "SELECT v FROM t WHERE id = 2"),
        "two\n"
    );

    // A clean stop stops every server.
    s.stop();
    assert!(
        s.mariadbd_pids().is_empty(),
        "servers left running: {:?}",
        s.mariadbd_pids()
    );
    // And the next start brings it back.
    s.start();
    let shown = s.json(&["db", "show", "shop"]);
    assert!(shown["pid"].is_number());
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_server_is_restarted_and_users_can_be_added() {
    let mut s = Stratus::new("crash");
    s.start();
    let created = s.json(&[
        "db",
        "create",
        "app",
        "--user",
        "owner",
        "--password",
        "s3cret!'\"pw",
    ]);
    assert_eq!(created["user"], "app.owner");
    let pid = s.json(&["db", "show", "app"])["pid"].as_u64().unwrap();
    assert_eq!(
        s.metric("stratus_database_crashes_total{db=\"app\"}"),
        Some(0.0)
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let crashed = s.wait_for_event("app", "crashed", Duration::from_secs(30));
    // What the crash-looping alert counts (deploy/prometheus).
    assert_eq!(
        s.metric("stratus_database_crashes_total{db=\"app\"}"),
        Some(1.0)
    );
    assert!(
        crashed["message"].as_str().unwrap().contains("signal 9"),
        "{crashed}"
    );
    s.wait_for_event("app", "restarted", Duration::from_secs(60));
    let shown = s.json(&["db", "show", "app"]);
    assert_ne!(shown["pid"].as_u64().unwrap(), pid);
    let port = shown["port"].as_u64().unwrap() as u16;
    assert_eq!(
        mariadb(port, "app.owner", "s3cret!'\"pw", "app", "SELECT 1"),
        "1\n"
    );

    // A second user, limited to the database's schema.
    let u = s.json(&["user", "create", "app", "reader", "--password", "r"]);
    assert_eq!(u["user"], "app.reader");
    assert_eq!(
        mariadb(
            port,
            "app.reader",
            "r",
            "app",
            "CREATE TABLE x (a INT); SELECT COUNT(*) FROM x"
        ),
        "0\n"
    );
    let users = s.json(&["user", "list", "app"]);
    assert_eq!(users.as_array().unwrap().len(), 2);
    assert!(
        s.fails(&["user", "create", "app", "reader"])
            .contains("already exists")
    );
    assert!(
        s.fails(&["user", "delete", "app", "owner"])
            .contains("owns database")
    );
    s.json(&["user", "delete", "app", "reader"]);
    s.json(&["db", "delete", "app", "--yes"]);
    assert!(s.json(&["db", "list"]).as_array().unwrap().is_empty());
    assert!(!s.data_dir().join("databases/app").exists());
    s.stop();
}

/// The catalog's size is what the server is kept at: a buffer pool and a CPU quota changed
/// behind Stratus's back (as root on the server's socket and in its cgroup, where a restart of
/// Stratus in the middle of a resize would leave them) are put back by the periodic resync,
/// with events that say what was found.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_resized_behind_stratus_is_brought_back_to_its_size() {
    let mut s = Stratus::new("resync-size");
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("resync_every_secs = 1\n{cfg}")).unwrap();
    s.start();
    s.json(&[
        "db",
        "create",
        "shop",
        "--tier",
        "standard",
        "--min-scu",
        "2",
        "--max-scu",
        "2",
    ]);
    let shown = s.json(&["db", "show", "shop"]);
    let pool = shown["buffer_pool_size"].as_u64().unwrap();
    let mut root = s.direct("shop").await;
    // Pinned at 2 SCU, so the autoscaler has no say; its pool may not grow past its maximum.
    root.query_drop(format!("SET GLOBAL innodb_buffer_pool_size = {}", pool / 2))
        .await
        .unwrap();
    let shrunk: Option<u64> = root
        .query_first("SELECT @@innodb_buffer_pool_size")
        .await
        .unwrap();
    assert_eq!(shrunk, Some(pool / 2));
    // With resource control, the CPU quota too (cgroup v1 or v2).
    let cg = s.cgroup_parent.clone();
    let v1 = format!("/sys/fs/cgroup/cpu/{cg}/shop/cpu.cfs_quota_us");
    let v2 = format!("/sys/fs/cgroup/{cg}/shop/cpu.max");
    let quota = || {
        std::fs::read_to_string(&v1)
            .or_else(|_| std::fs::read_to_string(&v2))
            .map(|q| q.split_whitespace().next().unwrap_or_default().to_owned())
    };
    let enforced = shown["limits_enforced"] == true;
    let want_quota = quota().ok();
    if enforced {
        let q: u64 = want_quota.as_deref().unwrap().parse().unwrap();
        if std::path::Path::new(&v1).exists() {
            std::fs::write(&v1, (q * 3).to_string()).unwrap();
        } else {
            std::fs::write(&v2, format!("{} 100000", q * 3)).unwrap();
        }
        assert_ne!(quota().ok(), want_quota);
    }

    let event = s.wait_for_event("shop", "reconciled", Duration::from_secs(60));
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains("at a size other than the catalog's"),
        "{message}"
    );
    let back: Option<u64> = root
        .query_first("SELECT @@innodb_buffer_pool_size")
        .await
        .unwrap();
    assert_eq!(back, Some(pool), "the buffer pool is the catalog's again");
    if enforced {
        assert_eq!(quota().ok(), want_quota, "the CPU quota too");
    }
    let scaled = s.json(&["events", "--db", "shop", "--limit", "200"]);
    let scaled = scaled
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "scaled" && e["data"]["reason"] == "reconciler")
        .expect("a scaled event");
    assert_eq!(scaled["data"]["found"]["buffer_pool_bytes"], pool / 2);
    assert_eq!(s.json(&["db", "show", "shop"])["scu"], 2);
    root.disconnect().await.unwrap();
    s.stop();
}
