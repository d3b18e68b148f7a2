//! The local runtime against real `mariadbd` processes and this host's cgroups.

use mysql_async::prelude::Queryable;
use std::time::Duration;
use stratus_core::{ScuSize, ServiceName};
use stratus_runtime::admin::AdminConn;
use stratus_runtime::{InstanceSpec, LocalConfig, LocalRuntime, Runtime, RuntimeError};

fn spec(name: &str, scu: u32) -> InstanceSpec {
    let size = ScuSize::default();
    InstanceSpec {
        name: ServiceName::parse(name).unwrap(),
        port: 0,
        admin_password: stratus_core::random_password(),
        resources: size.resources(scu),
        max_resources: size.resources(2),
    }
}

/// Each test gets its own root and its own cgroup parent, so tests run in parallel.
fn config(dir: &tempfile::TempDir, tag: &str) -> LocalConfig {
    let mut cfg = LocalConfig::new(dir.path());
    cfg.cgroup_parent = format!("stratus-test-{}-{tag}", std::process::id());
    cfg
}

async fn admin(spec: &InstanceSpec, port: u16) -> AdminConn {
    AdminConn::connect(
        spec.name.as_str(),
        "127.0.0.1",
        port,
        &spec.admin_password,
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn provision_limit_stop_start_crash_and_destroy() {
    let dir = tempfile::tempdir().unwrap();
    let rt = LocalRuntime::new(config(&dir, "life")).await.unwrap();
    let mut exits = rt.exits();
    let s = spec("shop", 1);
    let inst = rt.provision(&s).await.unwrap();
    assert!(!inst.adopted);

    // The admin password was rotated away from the template's.
    let mut conn = admin(&s, inst.port).await;
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
    assert_eq!(seen.backend, Some(format!("127.0.0.1:{}", inst.port)));
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
    let mut conn = admin(&s, again.port).await;
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
    let mut conn = admin(&s, third.port).await;
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
    let dir = tempfile::tempdir().unwrap();
    let s = spec("adopt", 1);
    let first = {
        let rt = LocalRuntime::new(config(&dir, "adopt")).await.unwrap();
        rt.provision(&s).await.unwrap()
        // Dropped without stopping, as when `stratus up` is killed.
    };
    let rt = LocalRuntime::new(config(&dir, "adopt")).await.unwrap();
    let inst = rt.start(&s).await.unwrap();
    assert!(inst.adopted);
    assert_eq!((inst.pid, inst.port), (first.pid, first.port));
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
async fn a_taken_port_is_replaced_and_a_broken_server_explains_itself() {
    let dir = tempfile::tempdir().unwrap();
    let rt = LocalRuntime::new(config(&dir, "fail")).await.unwrap();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s = spec("ports", 1);
    s.port = squatter.local_addr().unwrap().port();
    let inst = rt.provision(&s).await.unwrap();
    assert_ne!(inst.port, s.port, "moved off the taken port");
    rt.stop(&s.name, Duration::from_secs(30)).await.unwrap();

    // Without its system tables the server cannot start; the error shows its log.
    std::fs::remove_dir_all(dir.path().join("databases/ports/data/mysql")).unwrap();
    s.port = inst.port;
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

#[tokio::test]
async fn mysql_async_sees_a_normal_server() {
    // The server speaks plain MySQL protocol to other clients too, e.g. the user's own.
    let dir = tempfile::tempdir().unwrap();
    let rt = LocalRuntime::new(config(&dir, "plain")).await.unwrap();
    let s = spec("plain", 1);
    let inst = rt.provision(&s).await.unwrap();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(inst.port)
        .user(Some("stratus_admin"))
        .pass(Some(s.admin_password.clone()));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let v: Option<String> = conn.query_first("SELECT VERSION()").await.unwrap();
    assert!(v.unwrap().contains("MariaDB"));
    conn.disconnect().await.unwrap();
    rt.destroy(&s.name).await.unwrap();
    rt.remove_cgroup_parent().unwrap();
}

#[tokio::test]
async fn a_spare_becomes_a_database_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rt = LocalRuntime::new(config(&dir, "spare")).await.unwrap();
    let s = spec("claimed", 2);
    let spare = rt.provision_spare(s.max_resources).await.unwrap();
    assert_eq!(
        rt.unclaimed_spares(),
        std::slice::from_ref(&spare.key),
        "listed while unclaimed"
    );
    let other = rt.provision_spare(s.max_resources).await.unwrap();

    let inst = rt.claim_spare(&spare, &s).await.unwrap();
    assert_eq!(inst.port, spare.port);
    assert_eq!(rt.unclaimed_spares(), std::slice::from_ref(&other.key));
    let mut conn = admin(&s, inst.port).await;
    conn.exec("CREATE DATABASE claimed").await.unwrap();
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
