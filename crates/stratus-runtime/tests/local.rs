//! The local runtime against real `mariadbd` processes and this host's cgroups.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;
use stratus_core::{Endpoint, ScuSize, ServiceName};
use stratus_runtime::admin::AdminConn;
use stratus_runtime::{InstanceSpec, LocalConfig, LocalRuntime, Runtime, RuntimeError};

fn spec(name: &str, scu: u32) -> InstanceSpec {
    let size = ScuSize::default();
    InstanceSpec {
        name: ServiceName::parse(name).unwrap(),
        resources: size.resources(scu),
        max_resources: size.resources(2),
        storage_bytes: 1 << 30,
        node: stratus_runtime::local::DEFAULT_NODE.to_owned(),
    }
}

/// A temporary root the servers' unprivileged user may traverse (tempdirs are 0700).
fn root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

/// Each test gets its own root and its own cgroup parent, so tests run in parallel.
fn config(dir: &tempfile::TempDir, tag: &str) -> LocalConfig {
    let mut cfg = LocalConfig::new(dir.path());
    cfg.cgroup_parent = format!("stratus-test-{}-{tag}", std::process::id());
    // Volumes are tested through `stratus up` (`tests/storage.rs`), whose harness unmounts them.
    cfg.volumes = false;
    cfg
}

async fn admin(rt: &LocalRuntime, spec: &InstanceSpec, endpoint: &Endpoint) -> AdminConn {
    AdminConn::connect(
        spec.name.as_str(),
        endpoint,
        &rt.admin_login(),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn provision_limit_stop_start_crash_and_destroy() {
    let dir = root();
    let rt = LocalRuntime::new(config(&dir, "life")).await.unwrap();
    let mut exits = rt.exits();
    let s = spec("shop", 1);
    let inst = rt.provision(&s).await.unwrap();
    assert!(!inst.adopted);

    let mut conn = admin(&rt, &s, &inst.endpoint).await;
    conn.exec("CREATE DATABASE shop").await.unwrap();
    conn.exec("CREATE TABLE shop.t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    conn.exec("INSERT INTO shop.t VALUES (1), (2)")
        .await
        .unwrap();
    let bp: Option<u64> = conn
        .query_value("SELECT @@innodb_buffer_pool_size")
        .await
        .unwrap();
    assert_eq!(bp, Some(s.resources.buffer_pool_bytes));
    let binlog: Option<u8> = conn.query_value("SELECT @@log_bin").await.unwrap();
    assert_eq!(binlog, Some(1), "binary log on for later replication");
    conn.close().await;

    let seen = rt.observe(&s.name).await;
    assert_eq!(seen.pid, Some(inst.pid));
    assert_eq!(seen.backend, Some(inst.endpoint.to_string()));
    if rt.info().resource_control != "none" {
        assert_eq!(seen.cpu_limit_millis, Some(500));
        assert_eq!(seen.memory_limit_bytes, Some(2 << 30));
        assert!(
            seen.cpu_usage_ns.unwrap() > 0,
            "the server is accounted in its cgroup"
        );
        rt.set_limits(&s.name, 1000, 4 << 30).await.unwrap();
        let seen = rt.observe(&s.name).await;
        assert_eq!(
            (seen.cpu_limit_millis, seen.memory_limit_bytes),
            (Some(1000), Some(4 << 30))
        );
    } else {
        eprintln!(
            "no resource control here: {:?}",
            rt.info().resource_control_note
        );
    }

    assert!(
        rt.stop(&s.name, Duration::from_secs(30)).await.unwrap(),
        "graceful stop"
    );
    assert_eq!(rt.observe(&s.name).await.pid, None);
    let again = rt.start(&s).await.unwrap();
    let mut conn = admin(&rt, &s, &again.endpoint).await;
    let n: Option<u64> = conn
        .query_value("SELECT COUNT(*) FROM shop.t")
        .await
        .unwrap();
    assert_eq!(n, Some(2), "data survives a stop");
    conn.close().await;

    // A crash is reported with how the process ended.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(again.pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let notice = tokio::time::timeout(Duration::from_secs(10), exits.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(notice.name, s.name);
    assert!(notice.status.starts_with("signal 9"), "{}", notice.status);
    // InnoDB recovers it on the next start.
    let third = rt.start(&s).await.unwrap();
    let mut conn = admin(&rt, &s, &third.endpoint).await;
    let n: Option<u64> = conn
        .query_value("SELECT COUNT(*) FROM shop.t")
        .await
        .unwrap();
    assert_eq!(n, Some(2));
    conn.close().await;

    rt.destroy(&s.name).await.unwrap();
    assert!(!dir.path().join("databases/shop").exists());
    assert!(matches!(
        rt.start(&s).await,
        Err(RuntimeError::NoStorage(_))
    ));
    // A requested stop is not a crash.
    assert!(exits.try_recv().is_err());
    rt.remove_cgroup_parent().unwrap();
}

#[tokio::test]
async fn a_new_runtime_adopts_running_servers() {
    let dir = root();
    let s = spec("adopt", 1);
    let first = {
        let rt = LocalRuntime::new(config(&dir, "adopt")).await.unwrap();
        rt.provision(&s).await.unwrap()
        // Dropped without stopping, as when `stratus up` is killed.
    };
    let rt = LocalRuntime::new(config(&dir, "adopt")).await.unwrap();
    let inst = rt.start(&s).await.unwrap();
    assert!(inst.adopted);
    assert_eq!((inst.pid, &inst.endpoint), (first.pid, &first.endpoint));
    let mut exits = rt.exits();
    assert!(rt.stop(&s.name, Duration::from_secs(30)).await.unwrap());
    assert!(
        exits.try_recv().is_err(),
        "a requested stop of an adopted server is no crash"
    );
    rt.destroy(&s.name).await.unwrap();
    rt.remove_cgroup_parent().unwrap();
}

#[tokio::test]
async fn a_broken_server_explains_itself() {
    let dir = root();
    let rt = LocalRuntime::new(config(&dir, "fail")).await.unwrap();
    let s = spec("broken", 1);
    rt.provision(&s).await.unwrap();
    rt.stop(&s.name, Duration::from_secs(30)).await.unwrap();

    // Without its system tables the server cannot start; the error shows its log.
    std::fs::remove_dir_all(dir.path().join("databases/broken/data/mysql")).unwrap();
    let err = rt.start(&s).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RuntimeError::StartFailed { .. }), "{msg}");
    assert!(msg.contains("error log"), "{msg}");
    rt.destroy(&s.name).await.unwrap();

    // Provisioning over existing storage is refused and leaves it alone.
    let s2 = spec("exists", 1);
    std::fs::create_dir_all(dir.path().join("databases/exists/keep")).unwrap();
    assert!(matches!(
        rt.provision(&s2).await,
        Err(RuntimeError::StorageExists(_))
    ));
    assert!(dir.path().join("databases/exists/keep").exists());
    rt.remove_cgroup_parent().unwrap();
}

/// A start that fails once the server's secrets are written for it (here: its option file
/// cannot be written) leaves neither its plain data key nor its TLS key behind.
#[tokio::test]
async fn a_failed_start_leaves_no_key_behind() {
    let dir = root();
    let mut cfg = config(&dir, "secrets");
    cfg.master_key = Some(dir.path().join("master.key"));
    let rt = LocalRuntime::new(cfg.clone()).await.unwrap();
    let s = spec("leaky", 1);
    rt.provision(&s).await.unwrap();
    rt.stop(&s.name, Duration::from_secs(30)).await.unwrap();
    drop(rt);

    // Never read by a server: the start fails before one runs.
    cfg.server_tls = Some(stratus_runtime::ServerTls {
        cert_pem: "certificate".into(),
        key_pem: "private key".into(),
    });
    let rt = LocalRuntime::new(cfg).await.unwrap();
    let cnf = dir.path().join("databases/leaky/my.cnf");
    std::fs::remove_file(&cnf).unwrap();
    std::fs::create_dir_all(cnf.join("in-the-way")).unwrap();
    let err = rt.start(&s).await.unwrap_err();
    assert!(err.to_string().contains("my.cnf"), "{err}");

    let shm = std::path::Path::new("/dev/shm");
    let keys = if shm.is_dir() {
        shm.join(format!(
            "stratus-{:08x}-keys",
            stratus_runtime::local::config::server_id(&dir.path().to_string_lossy())
        ))
    } else {
        dir.path().join("keys")
    };
    let left: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with("leaky"))
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", keys.display());

    std::fs::remove_dir_all(&cnf).unwrap();
    rt.destroy(&s.name).await.unwrap();
    let _ = std::fs::remove_dir(&keys);
    rt.remove_cgroup_parent().unwrap();
}

/// A database whose time zone tables are empty or half full (made before the template had
/// them, restored from such a backup, or stopped while they were filled) has them filled after
/// its next start, as a database made now has them, outside the binary log.
#[tokio::test]
async fn a_database_without_time_zones_gets_them_at_its_next_start() {
    let dir = root();
    let rt = LocalRuntime::new(config(&dir, "zones")).await.unwrap();
    let s = spec("zones", 1);
    let inst = rt.provision(&s).await.unwrap();
    let mut conn = admin(&rt, &s, &inst.endpoint).await;
    let zones = "SELECT COUNT(*) FROM mysql.time_zone_name";
    let made_with: Option<u64> = conn.query_value(zones).await.unwrap();
    assert!(made_with.unwrap() > 400, "{made_with:?}");
    // As many as the runtime expects, or every start would fill them again.
    assert_eq!(made_with, Some(rt.time_zones()));
    // Half of them, as a start stopped while filling them leaves them.
    conn.exec(
        "TRUNCATE mysql.time_zone; DELETE FROM mysql.time_zone_name WHERE Name > 'Europe'; \
         TRUNCATE mysql.time_zone_transition; TRUNCATE mysql.time_zone_transition_type",
    )
    .await
    .unwrap();
    let gtid = "SELECT @@gtid_binlog_pos";
    let logged: Option<String> = conn.query_value(gtid).await.unwrap();
    conn.close().await;
    rt.stop(&s.name, Duration::from_secs(30)).await.unwrap();

    let inst = rt.start(&s).await.unwrap();
    let mut conn = admin(&rt, &s, &inst.endpoint).await;
    // Filled when they are all there and Stratus's connection that filled them has ended
    // (its last statements reorder the tables).
    let filling = format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{}' \
         AND ID <> CONNECTION_ID() AND COMMAND NOT LIKE 'Binlog Dump%'",
        rt.admin_login().user
    );
    let begin = std::time::Instant::now();
    let mut now = None;
    while begin.elapsed() < Duration::from_secs(60) {
        now = conn.query_value(zones).await.unwrap();
        let busy: Option<u64> = conn.query_value(&filling).await.unwrap();
        if now == made_with && busy == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(now, made_with, "the time zones are back");
    let after: Option<String> = conn.query_value(gtid).await.unwrap();
    assert_eq!(after, logged, "not in the binary log");
    let helsinki: Option<String> = conn
        .query_value("SELECT CONVERT_TZ('2001-01-01 01:00:00', 'UTC', 'Europe/Helsinki')")
        .await
        .unwrap();
    assert_eq!(helsinki.as_deref(), Some("2001-01-01 03:00:00"));
    conn.close().await;
    rt.destroy(&s.name).await.unwrap();
    rt.remove_cgroup_parent().unwrap();
}

/// A template made without time zones (no `tzdata` then) is made again once the system has
/// them, so that databases get them.
#[tokio::test]
async fn a_template_without_time_zones_is_made_again() {
    let dir = root();
    let rt = LocalRuntime::new(config(&dir, "rezone")).await.unwrap();
    let zones = rt.time_zones();
    assert!(zones > 400, "{zones}");
    drop(rt);
    std::fs::write(dir.path().join("template/TIME_ZONES"), "0\n").unwrap();
    let rt = LocalRuntime::new(config(&dir, "rezone")).await.unwrap();
    assert_eq!(rt.time_zones(), zones);
    let _ = rt.remove_cgroup_parent();
}

/// The uid a process runs as, from `/proc/<pid>/status`.
fn process_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_server_is_confined_and_gives_stratus_its_account_back() {
    let dir = root();
    let rt = LocalRuntime::new(config(&dir, "confined")).await.unwrap();
    let s = spec("confined", 1);
    let inst = rt.provision(&s).await.unwrap();
    assert_eq!(
        inst.access_restored, None,
        "a new server is not a restored one"
    );
    let db_dir = dir.path().join("databases/confined");
    let Endpoint::Unix(socket) = &inst.endpoint else {
        panic!(
            "a local server is reached over its socket, not {}",
            inst.endpoint
        )
    };
    assert!(socket.starts_with(&db_dir), "{}", socket.display());

    let mut conn = admin(&rt, &s, &inst.endpoint).await;
    let (networking, file_dir, plugin_dir, symlinks): (u8, String, String, String) = conn
        .query_rows("SELECT @@skip_networking, @@secure_file_priv, @@plugin_dir, @@have_symlink")
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        networking, 1,
        "no TCP listener: nothing can bypass the proxy"
    );
    assert!(
        file_dir.starts_with(&db_dir.join("files").display().to_string()),
        "{file_dir}"
    );
    assert!(
        plugin_dir.starts_with(&dir.path().join("plugins").display().to_string()),
        "{plugin_dir}"
    );
    assert_eq!(symlinks, "DISABLED");
    // Named time zones are known, as on a managed database (the template loads them).
    let helsinki: Vec<(Option<String>,)> = conn
        .query_rows("SELECT CONVERT_TZ('2001-01-01 01:00:00', 'UTC', 'Europe/Helsinki')")
        .await
        .unwrap();
    assert_eq!(helsinki, [(Some("2001-01-01 03:00:00".to_owned()),)]);
    let mut accounts: Vec<(String, String)> = conn
        .query_rows("SELECT User, Host FROM mysql.global_priv")
        .await
        .unwrap();
    accounts.sort();
    let admin_user = rt.admin_login().user;
    let mut want = vec![
        (admin_user.clone(), "localhost".to_owned()),
        ("mariadb.sys".to_owned(), "localhost".to_owned()),
    ];
    want.sort();
    assert_eq!(
        accounts, want,
        "only Stratus's socket-authenticated account and MariaDB's own"
    );

    let meta = std::fs::metadata(&db_dir).unwrap();
    assert_eq!(
        meta.mode() & 0o077,
        0,
        "the database's directory is closed to others"
    );
    if rustix::process::geteuid().is_root() {
        let uid = process_uid(inst.pid);
        assert_ne!(uid, 0, "mariadbd must not run as root");
        assert_eq!(
            meta.uid(),
            uid,
            "its directory belongs to the server's user"
        );
    }

    // A tenant with CREATE USER can drop Stratus's account; the next start restores it.
    conn.exec(&format!("DROP USER '{admin_user}'@'localhost'"))
        .await
        .unwrap();
    conn.close().await;
    let refused = AdminConn::connect(
        s.name.as_str(),
        &inst.endpoint,
        &rt.admin_login(),
        Duration::from_secs(5),
    )
    .await
    .err()
    .expect("the dropped account cannot log in");
    assert!(AdminConn::is_access_denied(&refused), "{refused}");
    assert!(rt.stop(&s.name, Duration::from_secs(30)).await.unwrap());
    let again = rt.start(&s).await.unwrap();
    assert_eq!(again.access_restored.as_deref(), Some("missing"));
    let mut conn = admin(&rt, &s, &again.endpoint).await;
    conn.exec("DO 1").await.unwrap();
    conn.close().await;
    // An intact account is not reported as restored.
    assert!(rt.stop(&s.name, Duration::from_secs(30)).await.unwrap());
    assert_eq!(rt.start(&s).await.unwrap().access_restored, None);
    let conn = admin(&rt, &s, &again.endpoint).await;
    conn.close().await;
    rt.destroy(&s.name).await.unwrap();
    rt.remove_cgroup_parent().unwrap();
}

#[tokio::test]
async fn a_spare_becomes_a_database_without_a_restart() {
    let dir = root();
    let rt = LocalRuntime::new(config(&dir, "spare")).await.unwrap();
    let s = spec("claimed", 2);
    // Its setup runs before it is handed out.
    let setup = ["CREATE DATABASE made_while_waiting".to_owned()];
    let spare = rt
        .provision_spare(s.max_resources, "local", &setup)
        .await
        .unwrap();
    assert_eq!(
        rt.unclaimed_spares(),
        std::slice::from_ref(&spare.key),
        "listed while unclaimed"
    );
    let other = rt
        .provision_spare(s.max_resources, "local", &[])
        .await
        .unwrap();

    let inst = rt.claim_spare(&spare, &s).await.unwrap();
    assert_eq!(inst.endpoint, spare.endpoint);
    assert_eq!(rt.unclaimed_spares(), std::slice::from_ref(&other.key));
    let mut conn = admin(&rt, &s, &inst.endpoint).await;
    conn.exec("CREATE DATABASE claimed").await.unwrap();
    conn.exec("DROP DATABASE made_while_waiting").await.unwrap();
    conn.close().await;
    let seen = rt.observe(&s.name).await;
    assert_eq!(
        seen.pid,
        Some(inst.pid),
        "the same process, now the database's"
    );
    if rt.info().resource_control != "none" {
        assert_eq!(
            (seen.cpu_limit_millis, seen.memory_limit_bytes),
            (Some(1000), Some(4 << 30))
        );
        // Its processes are in the database's group, whichever way they got there.
        let parent = config(&dir, "spare").cgroup_parent;
        let groups = std::fs::read_to_string(format!("/proc/{}/cgroup", inst.pid)).unwrap();
        assert!(groups.contains(&format!("/{parent}/claimed\n")), "{groups}");
        assert!(!groups.contains(&spare.key), "{groups}");
    }

    // It behaves as any database: stop, start under its own name, adoption by a new runtime.
    assert!(rt.stop(&s.name, Duration::from_secs(30)).await.unwrap());
    rt.start(&s).await.unwrap();
    drop(rt);
    let rt = LocalRuntime::new(config(&dir, "spare")).await.unwrap();
    assert!(rt.start(&s).await.unwrap().adopted);
    rt.destroy(&s.name).await.unwrap();
    assert!(!dir.path().join("databases/claimed").exists());
    assert!(
        !dir.path().join("databases").join(&spare.key).exists(),
        "its storage went with it"
    );
    rt.destroy_spare(&other.key).await.unwrap();
    assert!(rt.unclaimed_spares().is_empty());
    rt.remove_cgroup_parent().unwrap();
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Inserts `n` rows one transaction each; for each, its GTID and the times around its commit.
async fn timed_commits(conn: &mut AdminConn, n: u32) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    for i in 0..n {
        let before = now_us();
        conn.exec(&format!("INSERT INTO l.t (v) VALUES ({i})"))
            .await
            .unwrap();
        let after = now_us();
        let gtid: Option<String> = conn.query_value("SELECT @@last_gtid").await.unwrap();
        out.push((gtid.unwrap(), before, after));
    }
    out
}

fn assert_timed(binlog: &std::path::Path, commits: &[(String, i64, i64)]) {
    use stratus_runtime::commit_times;
    for (log, _) in commit_times::files(binlog) {
        assert!(binlog.join(&log).is_file(), "times beside {log}, not a log");
    }
    let recorded: Vec<commit_times::Commit> = commit_times::files(binlog)
        .iter()
        .flat_map(|(_, p)| commit_times::read(p).unwrap())
        .collect();
    for (gtid, before, after) in commits {
        let c = recorded
            .iter()
            .find(|c| &c.gtid == gtid)
            .unwrap_or_else(|| panic!("{gtid} not recorded in {recorded:?}"));
        assert_eq!(c.kind, commit_times::Kind::Exact, "{c:?}");
        assert!(
            *before <= c.at_us && c.at_us <= *after,
            "{gtid} timed {} outside its commit {before}..{after}",
            c.at_us
        );
    }
}

/// Waits (bounded) until the commit clock follows the server: a start waits for it only 2 s,
/// then serves with commit times to the second until it attaches, which a busy host can
/// delay.
async fn clock_attached(conn: &mut AdminConn) {
    let begin = std::time::Instant::now();
    loop {
        let clients: Vec<(String, String)> = conn
            .query_rows("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")
            .await
            .unwrap();
        if clients[0].1 == "1" {
            return;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(60),
            "the commit clock never attached"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_commit_is_timed_within_its_commit_across_a_crash() {
    let dir = root();
    let mut cfg = config(&dir, "clock");
    cfg.exact_commit_times = true;
    let rt = LocalRuntime::new(cfg).await.unwrap();
    let mut exits = rt.exits();
    let s = spec("clock", 1);
    let inst = rt.provision(&s).await.unwrap();
    let binlog = dir.path().join("databases/clock/binlog");
    let mut conn = admin(&rt, &s, &inst.endpoint).await;
    conn.exec("CREATE DATABASE l").await.unwrap();
    conn.exec("CREATE TABLE l.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT) ENGINE=InnoDB")
        .await
        .unwrap();
    clock_attached(&mut conn).await;
    let first = timed_commits(&mut conn, 20).await;
    assert_timed(&binlog, &first);
    conn.close().await;

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(inst.pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), exits.recv())
        .await
        .unwrap()
        .unwrap();
    let again = rt.start(&s).await.unwrap();
    let mut conn = admin(&rt, &s, &again.endpoint).await;
    clock_attached(&mut conn).await;
    let second = timed_commits(&mut conn, 5).await;
    assert_timed(&binlog, &second);
    conn.close().await;
    rt.destroy(&s.name).await.unwrap();
    rt.remove_cgroup_parent().unwrap();
}

/// Commits made while no Stratus followed the server (it was killed; the server ran on) are
/// caught up when the next one adopts it: each with bounds that hold its commit, never an
/// exact time.
#[tokio::test]
async fn commits_made_while_no_clock_followed_are_caught_up_with_bounds() {
    use stratus_runtime::commit_times::{self, Kind};
    let dir = root();
    let s = spec("unclocked", 1);
    let binlog = dir.path().join("databases/unclocked/binlog");
    let (inst, timed) = {
        let rt = LocalRuntime::new(config(&dir, "unclocked")).await.unwrap();
        let inst = rt.provision(&s).await.unwrap();
        let mut conn = admin(&rt, &s, &inst.endpoint).await;
        conn.exec("CREATE DATABASE l").await.unwrap();
        conn.exec("CREATE TABLE l.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
            .await
            .unwrap();
        let timed = timed_commits(&mut conn, 3).await;
        conn.close().await;
        (inst, timed)
        // Dropped without stopping, as when `stratus up` is killed: its clock goes with it.
    };
    let mut conn = AdminConn::connect(
        s.name.as_str(),
        &inst.endpoint,
        &LocalRuntime::new(config(&dir, "unclocked"))
            .await
            .unwrap()
            .admin_login(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let unclocked = timed_commits(&mut conn, 3).await;
    conn.close().await;

    let rt = LocalRuntime::new(config(&dir, "unclocked")).await.unwrap();
    assert!(rt.start(&s).await.unwrap().adopted);
    let mut conn = admin(&rt, &s, &inst.endpoint).await;
    let after = timed_commits(&mut conn, 2).await;
    conn.close().await;
    assert_timed(&binlog, &timed);
    assert_timed(&binlog, &after);
    let recorded: Vec<commit_times::Commit> = commit_times::files(&binlog)
        .iter()
        .flat_map(|(_, p)| commit_times::read(p).unwrap())
        .collect();
    for (gtid, before, after) in &unclocked {
        let c = recorded
            .iter()
            .find(|c| &c.gtid == gtid)
            .unwrap_or_else(|| panic!("{gtid} not caught up in {recorded:?}"));
        assert!(matches!(c.kind, Kind::CaughtUp { .. }), "{c:?}");
        assert!(
            c.not_before_us() <= *before && *after <= c.at_us,
            "{gtid} committed within {before}..{after}, outside its bounds {c:?}"
        );
    }
    rt.destroy(&s.name).await.unwrap();
    rt.remove_cgroup_parent().unwrap();
}

#[tokio::test]
async fn a_restore_applies_an_incremental_backup_then_replays_the_log_to_an_exact_commit() {
    use stratus_runtime::{LogReplay, RestoreFrom, commit_times};
    let dir = root();
    let mut cfg = config(&dir, "pitr");
    cfg.exact_commit_times = true;
    let rt = LocalRuntime::new(cfg).await.unwrap();
    let s = spec("pitr", 1);
    let inst = rt.provision(&s).await.unwrap();
    let mut conn = admin(&rt, &s, &inst.endpoint).await;
    conn.exec("CREATE DATABASE l").await.unwrap();
    conn.exec("CREATE TABLE l.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT) ENGINE=InnoDB")
        .await
        .unwrap();
    timed_commits(&mut conn, 3).await;
    let full = dir.path().join("full");
    rt.backup(&s.name, &full, None).await.unwrap();
    timed_commits(&mut conn, 2).await;
    let inc = dir.path().join("inc");
    let taken = rt.backup(&s.name, &inc, Some(&full)).await.unwrap();
    let checkpoints = std::fs::read_to_string(inc.join("data/xtrabackup_checkpoints")).unwrap();
    assert!(
        checkpoints.contains("backup_type = incremental"),
        "{checkpoints}"
    );
    let base = taken.binlog.expect("the backup's binary log position");
    // Past the backup: a rotation, then more.
    let mut after = timed_commits(&mut conn, 3).await;
    conn.exec("FLUSH BINARY LOGS").await.unwrap();
    after.extend(timed_commits(&mut conn, 5).await);
    conn.close().await;
    let archive = dir.path().join("archive");
    rt.archive_logs(&s.name, &archive).await.unwrap();

    // The time right after the 6th commit past the incremental backup: 3 + 2 + 6 rows.
    let t = after[5].2;
    let commit_times::Cut::Upto(to, last) = commit_times::cut(&archive, &base, t).unwrap() else {
        panic!("no cut at {t}");
    };
    assert_eq!(last.gtid, after[5].0);
    let r = spec("pitr-copy", 1);
    let listing = |d: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(d.join("data/l"))
            .unwrap()
            .flatten()
            .map(|e| (e.file_name(), e.metadata().unwrap().len()))
            .collect();
        v.sort();
        v
    };
    let inc_files = listing(&inc);
    let from = RestoreFrom {
        full,
        incrementals: vec![inc.clone()],
        replay: Some(LogReplay {
            archive: archive.clone(),
            from: base,
            to,
        }),
    };
    let copy = rt.restore(&r, &from).await.unwrap();
    assert_eq!(
        listing(&inc),
        inc_files,
        "the incremental backup is left as it was"
    );
    let mut conn = admin(&rt, &r, &copy.endpoint).await;
    let (n, last): (Option<u64>, Option<i64>) = (
        conn.query_value("SELECT COUNT(*) FROM l.t").await.unwrap(),
        conn.query_value("SELECT v FROM l.t ORDER BY id DESC LIMIT 1")
            .await
            .unwrap(),
    );
    assert_eq!(
        (n, last),
        (Some(11), Some(2)),
        "3 + 2 + 6 rows, the last the third of the batch after the rotation"
    );
    let slaves: Vec<mysql_async::Row> = conn.query_rows("SHOW ALL SLAVES STATUS").await.unwrap();
    assert!(slaves.is_empty(), "nothing left replicating");
    conn.exec("INSERT INTO l.t (v) VALUES (100)").await.unwrap();
    conn.close().await;
    for db in [&s.name, &r.name] {
        rt.destroy(db).await.unwrap();
    }
    rt.remove_cgroup_parent().unwrap();
}

/// Live migration's first step and its end, on two nodes of one host: a replica made from a
/// snapshot of the running server on the other node catches up with what the source commits
/// after the snapshot (data encrypted at rest, its key opened on the other node), and once
/// promoted it is the database's server and the source can go.
#[tokio::test]
async fn a_replica_on_another_node_catches_up_and_takes_over() {
    let dir = root();
    let second = root();
    let key = dir.path().join("master.key");
    let mut one = config(&dir, "nodes-one");
    one.master_key = Some(key.clone());
    let mut two = config(&second, "nodes-two");
    two.master_key = Some(key);
    two.node = "n2".into();
    let rt = stratus_runtime::LocalNodes::new(vec![one, two])
        .await
        .unwrap();
    let s = spec("moving", 1);
    let inst = rt.provision(&s).await.unwrap();
    let mut conn = AdminConn::connect(
        "moving",
        &inst.endpoint,
        &rt.admin_login(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    conn.exec("CREATE DATABASE moving").await.unwrap();
    conn.exec("CREATE TABLE moving.t (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    for i in 0..100 {
        conn.exec(&format!(
            "INSERT INTO moving.t VALUES ({i}, REPEAT('x', 1000))"
        ))
        .await
        .unwrap();
    }

    let mut to = s.clone();
    to.node = "n2".into();
    let started = rt.start_replica(&to).await.unwrap();
    assert!(!started.snapshot_gtid.is_empty());
    assert!(started.copied_bytes > 0);
    assert!(
        rt.start_replica(&to).await.is_err(),
        "one replica at a time"
    );
    // Written after the snapshot: reaches the replica through replication.
    for i in 100..150 {
        conn.exec(&format!("INSERT INTO moving.t VALUES ({i}, 'late')"))
            .await
            .unwrap();
    }
    let pos: String = conn
        .query_value("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    let mut replica = rt
        .admin_on(&s.name, "n2", Duration::from_secs(5))
        .await
        .unwrap();
    let waited: Option<i64> = replica
        .query_value(&format!("SELECT MASTER_GTID_WAIT('{pos}', 60)"))
        .await
        .unwrap();
    assert_eq!(waited, Some(0), "caught up with {pos}");
    let rows: Option<i64> = replica
        .query_value("SELECT COUNT(*) FROM moving.t")
        .await
        .unwrap();
    assert_eq!(rows, Some(150));
    assert_eq!(
        rt.node_of(&s.name).as_deref(),
        Some("local"),
        "still served from its source"
    );
    conn.close().await;

    // Promotion: calls go to the replica, and the old server is removed.
    replica.exec("STOP SLAVE").await.unwrap();
    replica.exec("RESET SLAVE ALL").await.unwrap();
    replica.close().await;
    rt.promote_replica(&s.name, "n2").await.unwrap();
    assert!(
        rt.remove_copy(&s.name, "n2").await.is_err(),
        "the server is not a copy"
    );
    rt.remove_copy(&s.name, "local").await.unwrap();
    assert!(!dir.path().join("databases/moving").exists());
    assert_eq!(rt.node_of(&s.name).as_deref(), Some("n2"));
    let endpoint = rt.endpoint(&s.name).unwrap();
    let mut moved = AdminConn::connect(
        "moving",
        &endpoint,
        &rt.admin_login(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    moved
        .exec("INSERT INTO moving.t VALUES (150, 'after')")
        .await
        .unwrap();
    let rows: Option<i64> = moved
        .query_value("SELECT COUNT(*) FROM moving.t")
        .await
        .unwrap();
    assert_eq!(rows, Some(151));
    let accounts: Option<i64> = moved
        .query_value("SELECT COUNT(*) FROM mysql.user WHERE user = 'stratus_replication'")
        .await
        .unwrap();
    assert_eq!(
        accounts,
        Some(0),
        "the replication account went with the migration"
    );
    moved.close().await;
    rt.destroy(&s.name).await.unwrap();
    rt.remove_cgroup_parents().unwrap();
}

/// The process list tells an idle server from a busy one: what the operator on Kubernetes
/// suspends by. Stratus's own session never counts.
#[tokio::test]
async fn client_activity_sees_running_statements_and_open_transactions_only() {
    use stratus_runtime::admin::{AdminLogin, ServerAdmin};
    let dir = root();
    let rt = LocalRuntime::new(config(&dir, "activity")).await.unwrap();
    let s = spec("quiet", 1);
    let inst = rt.provision(&s).await.unwrap();
    let mut conn = admin(&rt, &s, &inst.endpoint).await;
    conn.exec("CREATE DATABASE quiet").await.unwrap();
    conn.exec("CREATE TABLE quiet.t (id INT PRIMARY KEY) ENGINE=InnoDB")
        .await
        .unwrap();
    conn.exec("INSERT INTO quiet.t VALUES (1)").await.unwrap();
    conn.exec("CREATE USER app@'%' IDENTIFIED BY 'app-pw'")
        .await
        .unwrap();
    conn.exec("GRANT ALL ON quiet.* TO app@'%'").await.unwrap();
    conn.exec("CREATE USER app@localhost IDENTIFIED BY 'app-pw'")
        .await
        .unwrap();
    conn.exec("GRANT ALL ON quiet.* TO app@localhost")
        .await
        .unwrap();
    let none = conn.client_activity().await.unwrap();
    assert_eq!(
        (none.connections, none.busy, none.idle_ms),
        (0, false, None)
    );

    let app = AdminLogin {
        user: "app".into(),
        password: Some("app-pw".into()),
    };
    let connect = || AdminConn::connect("quiet", &inst.endpoint, &app, Duration::from_secs(5));
    let mut client = connect().await.unwrap();
    client.exec("SELECT 1").await.unwrap();
    // The server answers before it marks the session `Sleep` again: a statement that just
    // ended may still show as running for a moment, so idleness is looked at until it shows.
    let idle = eventually(&mut conn, |a| !a.busy).await;
    assert_eq!(idle.connections, 1);
    assert!(idle.idle_ms.is_some(), "{idle:?}");

    // A transaction open between statements is busy.
    client.exec("BEGIN").await.unwrap();
    client
        .exec("SELECT * FROM quiet.t WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    // InnoDB's transaction list is a cache refreshed only after 0.1 s without a read: looked
    // at until it shows.
    let busy = eventually(&mut conn, |a| a.busy).await;
    assert_eq!(busy.connections, 1);
    client.exec("COMMIT").await.unwrap();
    eventually(&mut conn, |a| !a.busy).await;

    // A running statement is busy; seen while it runs, on another client connection.
    let mut other = connect().await.unwrap();
    let sleeping = tokio::spawn(async move {
        other.exec("DO SLEEP(3)").await.unwrap();
        other.close().await;
    });
    let busy = eventually(&mut conn, |a| a.busy).await;
    assert_eq!(busy.connections, 2);
    sleeping.await.unwrap();
    client.close().await;
    conn.close().await;
    rt.destroy(&s.name).await.unwrap();
    rt.remove_cgroup_parent().unwrap();
}

/// The first activity `want` accepts, looked at every 150 ms for at most 5 s: InnoDB refreshes
/// `INNODB_TRX` only once it went unread for 100 ms (`CACHE_MIN_IDLE_TIME_NS` in
/// `trx0i_s.cc`), so a faster poll would read its first answer forever.
async fn eventually(
    conn: &mut AdminConn,
    want: impl Fn(&stratus_runtime::admin::ClientActivity) -> bool,
) -> stratus_runtime::admin::ClientActivity {
    use stratus_runtime::admin::ServerAdmin;
    let mut last = None;
    for _ in 0..33 {
        let a = conn.client_activity().await.unwrap();
        if want(&a) {
            return a;
        }
        last = Some(a);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!("never as wanted; last {last:?}");
}
