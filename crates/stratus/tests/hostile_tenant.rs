//! A hostile tenant: a database's owner, with nothing but its account through the proxy, tries
//! every way into Stratus's own account, the host's files, server plugins, the account tables,
//! another tenant's data and backend, and tries to lock Stratus out of its server. Each attempt
//! must fail, or (lock-out) be undone by Stratus with an event. See `docs/security.md`.

mod common;

use common::Stratus;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn created(s: &Stratus, name: &str) -> (String, String) {
    let c = s.json(&["db", "create", name]);
    (
        c["user"].as_str().unwrap().to_owned(),
        c["password"].as_str().unwrap().to_owned(),
    )
}

/// A started installation with a database `vault`, its owner's name and password, and the
/// owner connected through the proxy.
async fn vault(tag: &str) -> (Stratus, String, String, Conn) {
    let mut s = Stratus::new(tag);
    s.start();
    let (user, pw) = created(&s, "vault");
    let owner = Conn::new(s.sql_opts(&user, &pw, Some("vault")))
        .await
        .unwrap();
    (s, user, pw, owner)
}

/// The MariaDB account Stratus manages its servers with: its own OS user's name.
fn stratus_account() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `sql`, which must fail; returns the server's error code.
async fn refused(conn: &mut Conn, sql: &str) -> u16 {
    match conn.query_drop(sql).await {
        Ok(()) => panic!("the owner could run: {sql}"),
        Err(mysql_async::Error::Server(e)) => e.code,
        Err(e) => panic!("{sql}: not a server error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_owner_cannot_become_stratus_or_reach_files_plugins_accounts_or_other_tenants() {
    let (mut s, user, _, mut owner) = vault("hostile").await;
    let (other_user, other_pw) = created(&s, "other");
    let mut other = Conn::new(s.sql_opts(&other_user, &other_pw, Some("other")))
        .await
        .unwrap();
    other
        .query_drop(
            "CREATE TABLE secrets (v VARCHAR(40)); INSERT INTO secrets VALUES ('other tenant')",
        )
        .await
        .unwrap();
    other.disconnect().await.unwrap();

    owner
        .query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let me = format!("'{}'@'localhost'", stratus_account());

    // Stratus's account as a definer: needs SET USER or SUPER, which the owner lacks.
    for sql in [
        format!("CREATE DEFINER={me} PROCEDURE p() SQL SECURITY DEFINER SELECT 1"),
        format!("CREATE DEFINER={me} FUNCTION f() RETURNS INT SQL SECURITY DEFINER RETURN 1"),
        format!("CREATE DEFINER={me} VIEW v AS SELECT 1"),
        format!("CREATE DEFINER={me} TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET @x = 1"),
        format!("CREATE DEFINER={me} EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT 1"),
        "CREATE DEFINER='stratus_admin'@'127.0.0.1' PROCEDURE p2() SELECT 1".to_owned(),
    ] {
        assert_eq!(refused(&mut owner, &sql).await, 1227, "{sql}");
    }

    // Files of the host: no FILE privilege, and the server could not reach them anyway.
    let catalog = s.data_dir().join("catalog.db");
    let read: Option<Option<Vec<u8>>> = owner
        .query_first(format!("SELECT LOAD_FILE('{}')", catalog.display()))
        .await
        .unwrap();
    assert_eq!(read, Some(None), "LOAD_FILE of the catalog gave something");
    let outfile = s.dir.path().join("written-by-tenant");
    for sql in [
        format!("SELECT 1 INTO OUTFILE '{}'", outfile.display()),
        format!("SELECT 1 INTO DUMPFILE '{}'", outfile.display()),
        "LOAD DATA INFILE '/etc/passwd' INTO TABLE t".to_owned(),
    ] {
        let code = refused(&mut owner, &sql).await;
        assert!(matches!(code, 1045 | 1227), "{sql}: {code}");
    }
    assert!(!outfile.exists());
    // Table files placed outside the data directory are ignored, not written there.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    owner
        .query_drop(format!(
            "CREATE TABLE placed (id INT) ENGINE=InnoDB DATA DIRECTORY='{}'",
            elsewhere.path().display()
        ))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "a table's files landed outside the server's data directory"
    );

    // Server privileges, plugins, the account tables, Stratus's own schema.
    let mine = format!("'{}'@'%'", user.split_once('.').unwrap().1);
    for (sql, code) in [
        (format!("GRANT FILE ON *.* TO {mine}"), 1045),
        (format!("GRANT SUPER ON *.* TO {mine}"), 1045),
        (format!("GRANT SET USER ON *.* TO {mine}"), 1045),
        (format!("GRANT ALL PRIVILEGES ON *.* TO {mine}"), 1045),
        ("INSTALL SONAME 'ha_federatedx'".to_owned(), 1142),
        (
            "INSTALL PLUGIN federated SONAME 'ha_federatedx.so'".to_owned(),
            1142,
        ),
        (
            "UPDATE mysql.global_priv SET Priv = JSON_SET(Priv, '$.access', 549755812863)"
                .to_owned(),
            1142,
        ),
        ("DELETE FROM mysql.global_priv".to_owned(), 1142),
        (
            "INSERT INTO mysql.plugin VALUES ('federated', 'ha_federatedx.so')".to_owned(),
            1142,
        ),
        ("DROP TABLE mysql.db".to_owned(), 1142),
        (format!("GRANT UPDATE ON mysql.global_priv TO {mine}"), 1142),
        ("FLUSH PRIVILEGES".to_owned(), 1227),
        ("SET GLOBAL read_only = ON".to_owned(), 1227),
        // Its own size is Stratus's to set (the reconciler would put it back anyway).
        (
            "SET GLOBAL innodb_buffer_pool_size = 17179869184".to_owned(),
            1227,
        ),
        ("SHUTDOWN".to_owned(), 1227),
        (
            "CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'localhost')".to_owned(),
            1227,
        ),
        ("DROP DATABASE stratus_meta".to_owned(), 1044),
    ] {
        assert_eq!(refused(&mut owner, &sql).await, code, "{sql}");
    }
    let grants: Vec<String> = owner.query("SHOW GRANTS").await.unwrap();
    let global = grants.iter().find(|g| g.contains(" ON *.* ")).unwrap();
    for forbidden in [
        " FILE",
        "SUPER",
        "SET USER",
        "RELOAD",
        "SHUTDOWN",
        "ALL PRIVILEGES",
    ] {
        assert!(
            !global.contains(forbidden),
            "owner holds {forbidden}: {global}"
        );
    }

    // Another tenant: its data lives in another server, reachable only through the proxy.
    let code = refused(&mut owner, "SELECT * FROM other.secrets").await;
    assert!(matches!(code, 1049 | 1146), "{code}");
    let socket = s.backend_socket("other");
    owner
        .query_drop(format!(
            "CREATE TABLE stolen (v VARCHAR(40)) ENGINE=FEDERATED CONNECTION='mysql://{other_user}:{other_pw}@localhost/other/secrets?socket={socket}'"
        ))
        .await
        .ok();
    let stolen: Result<Vec<String>, _> = owner.query("SELECT v FROM stolen").await;
    assert!(
        !matches!(&stolen, Ok(rows) if rows.iter().any(|r| r == "other tenant")),
        "a FEDERATED table reached another tenant: {stolen:?}"
    );
    owner.disconnect().await.unwrap();
    s.stop();
}

/// `KILL`, alone or among other statements of a query, reaches the owner's own sessions only:
/// not Stratus's connections to the owner's server, not another tenant's sessions.
#[tokio::test(flavor = "multi_thread")]
async fn the_owner_cannot_kill_stratus_or_another_tenant() {
    let (mut s, _, _, mut owner) = vault("hostile-kill").await;
    let (other_user, other_pw) = created(&s, "other");
    let mut other = Conn::new(s.sql_opts(&other_user, &other_pw, Some("other")))
        .await
        .unwrap();
    let thread = "SELECT CONNECTION_ID()";
    let other_thread: Option<u64> = other.query_first(thread).await.unwrap();
    // Stratus's own connections to the owner's server: the commit clock's binary log reader,
    // and one as its controllers make. The owner sees them (it has `PROCESS`, as an RDS master
    // user sees `rdsadmin`'s), so it knows their ids.
    let mut stratus = s.direct("vault").await;
    let stratus_thread: u64 = stratus.query_first(thread).await.unwrap().unwrap();
    let others = "SELECT ID FROM information_schema.PROCESSLIST \
                  WHERE USER <> SUBSTRING_INDEX(USER(), '@', 1) ORDER BY ID";
    let stratus_threads: Vec<u64> = owner.query(others).await.unwrap();
    assert!(
        stratus_threads.contains(&stratus_thread),
        "{stratus_threads:?}"
    );
    let reader = "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'";
    let clock: Option<u64> = owner.query_first(reader).await.unwrap();
    assert!(clock.is_some(), "no binary log reader: {stratus_threads:?}");
    let ids = stratus_threads
        .iter()
        .copied()
        .chain([u64::from(other.id())]);
    for id in ids {
        for sql in [
            format!("KILL {id}"),
            format!("KILL QUERY {id}"),
            format!("KILL HARD CONNECTION {id}"),
            format!("DO 1; KILL {id}"),
            format!("DO 1; KILL QUERY {id}; DO 2"),
            format!("/* a */ KILL CONNECTION {id}; DO 1"),
        ] {
            assert_eq!(refused(&mut owner, &sql).await, 1094, "{sql}");
        }
    }
    // By account: the server's to judge, and it lets an owner kill only its own threads.
    for sql in [
        format!("KILL USER '{}'", stratus_account()),
        format!("DO 1; KILL QUERY USER '{}'", stratus_account()),
    ] {
        assert_eq!(refused(&mut owner, &sql).await, 1095, "{sql}");
    }
    // Everything is where it was: the same server threads, answering.
    let still: Option<u64> = stratus.query_first(thread).await.unwrap();
    assert_eq!(
        still,
        Some(stratus_thread),
        "Stratus's connection was killed"
    );
    let still: Option<u64> = owner.query_first(reader).await.unwrap();
    assert_eq!(still, clock, "the commit clock's reader was killed");
    let still: Option<u64> = other.query_first(thread).await.unwrap();
    assert_eq!(
        still, other_thread,
        "the other tenant's session failed over"
    );
    let one: Option<u8> = owner.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    stratus.disconnect().await.unwrap();
    other.disconnect().await.unwrap();
    owner.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_os_user_finds_no_secret_and_no_backend() {
    let (mut s, user, pw, mut owner) = vault("osuser").await;
    let port: Option<(u8, u16)> = owner
        .query_first("SELECT @@skip_networking, @@port")
        .await
        .unwrap();
    assert_eq!(
        port.map(|p| p.0),
        Some(1),
        "the server listens on no TCP port"
    );
    owner.disconnect().await.unwrap();
    let data = s.data_dir();
    let socket = s.backend_socket("vault");

    // Modes, as root sees them: secrets 0600, nothing under the data directory open to others.
    for secret in ["catalog.db", "admin.token", "tls/key.pem"] {
        let mode = std::fs::metadata(data.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{secret} is {mode:o}");
    }
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o007, 0, "the data directory is {mode:o}");

    // As `nobody`: nothing under the data directory can be read, and no server reached.
    let as_nobody = |args: &[&str]| {
        Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let readable = as_nobody(&["find", data.to_str().unwrap(), "-readable", "-type", "f"]);
    assert!(
        readable.stdout.is_empty(),
        "readable by nobody: {}",
        String::from_utf8_lossy(&readable.stdout)
    );
    let login = as_nobody(&[
        "mariadb",
        "--no-defaults",
        "-S",
        &socket,
        "-u",
        user.split_once('.').unwrap().1,
        &format!("-p{pw}"),
        "-e",
        "SELECT 1",
    ]);
    assert!(
        !login.status.success(),
        "nobody reached the server directly"
    );
    let err = String::from_utf8_lossy(&login.stderr);
    assert!(err.contains("2002"), "{err}");

    // No file under the data directory holds the owner's password in plain text.
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                stack.push(p);
            } else if ty.is_file() {
                let bytes = std::fs::read(&p).unwrap_or_default();
                assert!(
                    !bytes.windows(pw.len()).any(|w| w == pw.as_bytes()),
                    "the password is in {}",
                    p.display()
                );
            }
        }
    }
    s.stop();
}

/// Counts `access_restored` events of `db`.
fn restored(s: &Stratus, db: &str) -> usize {
    s.json(&["events", "--db", db, "--limit", "500"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "access_restored")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_locked_out_stratus_restores_its_access_and_operations_still_work() {
    let (mut s, _, _, mut owner) = vault("lockout").await;
    let me = format!("'{}'@'localhost'", stratus_account());
    owner
        .query_drop("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    // 1. EXECUTE IMMEDIATE, which no text filter sees; then a scale must apply whole.
    owner
        .query_drop(format!("EXECUTE IMMEDIATE CONCAT('DROP USER ', {me:?})"))
        .await
        .unwrap();
    let scaled = s.json(&["db", "scale", "vault", "--scu", "2"]);
    assert_eq!(scaled["scu"], 2, "{scaled}");
    assert_eq!(restored(&s, "vault"), 1);
    let shown = s.json(&["db", "show", "vault"]);
    assert_eq!(shown["scu"], 2);
    assert_eq!(
        shown["buffer_pool_size"].as_u64(),
        Some(2 << 30),
        "the server has the new size too: {shown}"
    );

    // 2. PREPARE from a built string, locking the account; then a suspend.
    owner
        .query_drop(format!(
            "PREPARE s FROM CONCAT('ALTER USER ', {me:?}, ' ACCOUNT LOCK')"
        ))
        .await
        .unwrap();
    owner.query_drop("EXECUTE s").await.unwrap();
    let suspended = s.json(&["db", "suspend", "vault"]);
    assert_eq!(suspended["state"], "suspended");
    assert_eq!(restored(&s, "vault"), 2);
    let n: Option<u32> = owner.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(1), "the owner's session lived through it all");

    // 3. A procedure; then a park, and a wake by the next statement.
    owner
        .query_drop(format!(
            "CREATE PROCEDURE lock_out() BEGIN DROP USER {me}; END"
        ))
        .await
        .unwrap();
    owner.query_drop("CALL lock_out()").await.unwrap();
    let parked = s.json(&["db", "park", "vault"]);
    assert_eq!(parked["state"], "parked");
    let n: Option<u32> = owner.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(1), "woken from parked");
    assert_eq!(s.json(&["db", "show", "vault"])["state"], "active");

    // 4. Dropped while nobody asks: the next start restores it before any client gets in.
    owner
        .query_drop(format!(
            "EXECUTE IMMEDIATE 'DROP USER {}'",
            me.replace('\'', "''")
        ))
        .await
        .unwrap();
    s.json(&["db", "park", "vault"]);
    s.json(&["db", "resume", "vault"]);
    let events = s.json(&["events", "--db", "vault", "--limit", "500"]);
    let lost = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "access_restored")
        .collect::<Vec<_>>();
    assert_eq!(
        lost.len(),
        4,
        "one per lock-out: two found by operations, two by the next start: {events}"
    );
    assert!(
        lost.iter().all(|e| e["data"]["restored"] == true),
        "{events}"
    );
    owner.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn privilege_changes_reach_pooled_backend_connections() {
    let (mut s, _, _, mut owner) = vault("pooledprivs").await;
    owner
        .query_drop("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    s.json(&["user", "create", "vault", "app", "--password", "app-pw-1"]);
    let app_reads = || async {
        let mut c = Conn::new(s.sql_opts("vault.app", "app-pw-1", Some("vault"))).await?;
        let n: Option<u32> = c.query_first("SELECT COUNT(*) FROM t").await?;
        c.disconnect().await?;
        Ok::<_, mysql_async::Error>(n)
    };
    assert_eq!(app_reads().await.unwrap(), Some(1));
    s.wait_for_metric(
        "stratus_proxy_pooled_connections{db=\"vault\"}",
        1.0,
        Duration::from_secs(10),
    );

    // Indirect, so the proxy cannot have seen an account statement: the server must judge.
    owner
        .query_drop("EXECUTE IMMEDIATE 'REVOKE ALL PRIVILEGES ON vault.* FROM ''app''@''%'''")
        .await
        .unwrap();
    let err = app_reads().await.unwrap_err();
    assert!(
        err.to_string().contains("1044") || err.to_string().contains("1142"),
        "{err}"
    );

    owner
        .query_drop("GRANT ALL PRIVILEGES ON vault.* TO 'app'@'%'")
        .await
        .unwrap();
    assert_eq!(app_reads().await.unwrap(), Some(1));
    owner
        .query_drop("EXECUTE IMMEDIATE 'ALTER USER ''app''@''%'' ACCOUNT LOCK'")
        .await
        .unwrap();
    let err = app_reads().await.unwrap_err();
    assert!(err.to_string().contains("4151"), "{err}");
    owner.disconnect().await.unwrap();
    s.stop();
    assert!(Path::new(&s.data_dir()).exists());
}
