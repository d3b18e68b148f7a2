//! The controllers over the in-memory runtime (`stratus_runtime::fake`) and an in-memory
//! catalog: what each does, in which order, and what it records, without a server. Those that
//! wait for back-off run on tokio's paused clock, which moves straight to the next timer.

use std::sync::Arc;
use std::time::Duration;
use stratus_control::lifecycle::CreateRequest;
use stratus_control::pool::PoolConfig;
use stratus_control::reconcile::{Action, MAX_ATTEMPTS, Trigger};
use stratus_control::suspend::{BUFFER_POOL_FLOOR, CPU_FLOOR_MILLIS};
use stratus_control::{ControlConfig, ControlPlane};
use stratus_core::{DbState, EventKind, ServiceName};
use stratus_runtime::fake::{FakeRuntime, Op};
use stratus_store::{EventFilter, SqliteStore, Store};

type Cp = Arc<ControlPlane<SqliteStore, FakeRuntime>>;

fn control(pool: PoolConfig) -> (Cp, FakeRuntime) {
    let rt = FakeRuntime::default();
    let cfg = ControlConfig {
        pool,
        restart_backoff_max: Duration::from_secs(30),
        ..ControlConfig::default()
    };
    let cp = ControlPlane::new(SqliteStore::in_memory().unwrap(), rt.clone(), cfg);
    (cp, rt)
}

fn pool_of(min: usize, max: usize) -> PoolConfig {
    PoolConfig {
        min,
        max,
        ..PoolConfig::default()
    }
}

fn no_pool() -> PoolConfig {
    PoolConfig {
        min: 0,
        max: 0,
        presized: 0,
    }
}

async fn create(cp: &Cp, name: &str) {
    cp.create(CreateRequest {
        name: name.into(),
        tier: Some("standard".into()),
        min_scu: Some(1),
        max_scu: Some(4),
        ..CreateRequest::default()
    })
    .await
    .unwrap();
}

fn db(name: &str) -> ServiceName {
    ServiceName::parse(name).unwrap()
}

async fn events(cp: &Cp, name: &str) -> Vec<(EventKind, String)> {
    let filter = EventFilter {
        db: Some(name.into()),
        ..EventFilter::default()
    };
    let all = cp.store().events(&filter).await.unwrap();
    all.into_iter().map(|e| (e.kind, e.message)).collect()
}

/// Waits for a condition the controllers bring about in the background. On the paused clock
/// each poll lets every timer due run.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    for _ in 0..20_000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened: {what}");
}

/// Waits until `name` has had `n` refills of its buffer pool (`hydrated` events).
async fn hydrated(cp: &Cp, name: &str, n: usize) {
    until("the hydrated event", || async {
        let ev = events(cp, name).await;
        ev.iter().filter(|(k, _)| *k == EventKind::Hydrated).count() >= n
    })
    .await;
}

/// Gives `name` its scaling `policy` and starts the monitor.
async fn monitor_with(
    cp: &Cp,
    name: &str,
    policy: &stratus_core::ScalingPolicy,
) -> tokio::task::JoinHandle<()> {
    cp.store()
        .set_scaling_policy(&db(name), policy)
        .await
        .unwrap();
    tokio::spawn(cp.clone().monitor())
}

/// A load that keeps `name`'s server at exactly its CPU quota: `quota` millicores of CPU time
/// for every elapsed second, until aborted.
fn at_quota(rt: &FakeRuntime, name: &'static str, quota: u64) -> tokio::task::JoinHandle<()> {
    let rt = rt.clone();
    tokio::spawn(async move {
        let begin = std::time::Instant::now();
        loop {
            let ns = begin.elapsed().as_nanos() as u64 * quota / 1000;
            rt.with_server(name, |s| s.cpu_ns = ns);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn set_state(cp: &Cp, name: &str, state: DbState) {
    let mut svc = cp.store().service(&db(name)).await.unwrap().unwrap();
    svc.state = state;
    cp.store().update_service(&svc).await.unwrap();
}

#[tokio::test]
async fn a_created_database_gets_its_schema_owner_and_size() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    let s = rt.server("shop").expect("running");
    let r = cp.config().scu.resources(1);
    assert_eq!(
        (s.cpu_millis, s.memory_bytes),
        (r.cpu_millis, r.memory_bytes)
    );
    // Outside the binary log, which is the tenant's alone.
    assert_eq!(s.executed[0], stratus_control::accounts::UNLOGGED);
    assert!(
        s.executed[1].starts_with("CREATE DATABASE IF NOT EXISTS `shop`"),
        "{:?}",
        s.executed
    );
    assert!(
        s.executed
            .iter()
            .any(|q| q.starts_with("CREATE USER 'admin'@'%'"))
    );
    let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    assert_eq!(svc.state, DbState::Active);
}

#[tokio::test]
async fn a_failed_create_leaves_nothing_behind() {
    let (cp, rt) = control(no_pool());
    rt.fail(Op::Admin, 1);
    let err = cp
        .create(CreateRequest {
            name: "shop".into(),
            ..CreateRequest::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(rt.server("shop").is_none() && !rt.has_storage("shop"));
    assert!(cp.store().service(&db("shop")).await.unwrap().is_none());
    let ev = events(&cp, "shop").await;
    assert_eq!(ev.last().unwrap().0, EventKind::StartFailed, "{ev:?}");
}

#[tokio::test(start_paused = true)]
async fn a_crashed_server_is_restarted_and_the_restart_recorded() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    tokio::spawn(cp.clone().supervise());
    tokio::task::yield_now().await;
    let pid = rt.server("shop").unwrap().pid;
    rt.crash("shop");
    until("restarted", || async { rt.server("shop").is_some() }).await;
    assert_ne!(rt.server("shop").unwrap().pid, pid);
    until("recorded", || async {
        events(&cp, "shop")
            .await
            .iter()
            .any(|e| e.0 == EventKind::Restarted)
    })
    .await;
    let kinds: Vec<EventKind> = events(&cp, "shop").await.into_iter().map(|e| e.0).collect();
    let crashed = kinds.iter().position(|k| *k == EventKind::Crashed).unwrap();
    assert_eq!(kinds[crashed + 1], EventKind::Restarted, "{kinds:?}");
}

#[tokio::test(start_paused = true)]
async fn a_server_that_will_not_start_is_retried_with_back_off_then_left_to_a_person() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    rt.vanish("shop");
    rt.fail(Op::Start, 1_000);
    rt.take_calls();
    let begin = tokio::time::Instant::now();
    cp.reconcile_until_settled(&db("shop"), Trigger::Recovery, 0)
        .await;
    // Nothing ran, so the clock moved only by the waits between attempts.
    let waited = begin.elapsed();
    let starts = rt.calls().iter().filter(|c| *c == "start shop").count();
    assert_eq!(starts, MAX_ATTEMPTS as usize);
    let expected: u64 = (0..MAX_ATTEMPTS)
        .map(|n| stratus_control::supervisor::backoff(n, Duration::from_secs(30)).as_secs())
        .sum();
    assert_eq!(
        waited.as_secs(),
        expected,
        "0, 1, 2, 4, 8, 16, then 30 s each"
    );
    let ev = events(&cp, "shop").await;
    assert!(
        ev.last()
            .unwrap()
            .1
            .contains("gave up after 20 failed attempts"),
        "{ev:?}"
    );
    assert_eq!(
        ev.iter().filter(|e| e.0 == EventKind::StartFailed).count(),
        MAX_ATTEMPTS as usize + 1
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_that_fails_twice_then_works_ends_the_streak() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    rt.vanish("shop");
    rt.fail(Op::Start, 2);
    cp.reconcile_until_settled(&db("shop"), Trigger::Crash, 0)
        .await;
    assert!(rt.server("shop").is_some());
    let ev = events(&cp, "shop").await;
    assert_eq!(ev.last().unwrap().0, EventKind::Restarted, "{ev:?}");
}

/// Stratus stopped in the middle of things: each database is brought to what the catalog says.
#[tokio::test]
async fn recovery_finishes_or_undoes_what_a_restart_of_stratus_interrupted() {
    let (cp, rt) = control(no_pool());
    for name in ["creating", "parked", "sleeping", "running"] {
        create(&cp, name).await;
    }
    // A creation cut short, a park that stopped short of stopping, a suspended and an active
    // database whose servers are gone.
    set_state(&cp, "creating", DbState::Provisioning).await;
    set_state(&cp, "parked", DbState::Parked).await;
    set_state(&cp, "sleeping", DbState::Suspended).await;
    rt.vanish("sleeping");
    rt.vanish("running");
    cp.recover().await.unwrap();

    assert!(cp.store().service(&db("creating")).await.unwrap().is_none());
    assert!(!rt.has_storage("creating"));
    assert!(rt.server("parked").is_none() && rt.has_storage("parked"));
    let sleeping = rt.server("sleeping").expect("started");
    assert!(sleeping.frozen, "suspended again");
    assert_eq!(
        cp.backend_for_client("sleeping", false).await.unwrap(),
        None
    );
    assert!(rt.server("running").is_some());
    assert!(
        cp.backend_for_client("running", false)
            .await
            .unwrap()
            .is_some()
    );
    let ev = events(&cp, "running").await;
    assert!(
        ev.last()
            .unwrap()
            .1
            .starts_with("started after a restart of Stratus"),
        "{ev:?}"
    );

    // Level-triggered: a second look has nothing to do.
    for name in ["parked", "sleeping", "running"] {
        let done = cp.reconcile(&db(name), Trigger::Recovery).await.unwrap();
        assert_eq!(done, Vec::<Action>::new(), "{name}");
    }
}

#[tokio::test]
async fn suspend_empties_and_freezes_the_server_and_a_client_wakes_it_at_its_size() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    cp.scale("shop", 2).await.unwrap();
    rt.with_server("shop", |s| s.sessions = 3);
    cp.suspend("shop", false, "test").await.unwrap();
    let s = rt.server("shop").unwrap();
    assert!(s.frozen && s.hot_pages_dumped);
    assert_eq!(s.sessions, 0);
    assert_eq!(
        (s.buffer_pool_bytes, s.cpu_millis),
        (BUFFER_POOL_FLOOR, CPU_FLOOR_MILLIS)
    );
    assert_eq!(cp.backend_for_client("shop", false).await.unwrap(), None);

    assert!(cp.backend_for_client("shop", true).await.unwrap().is_some());
    let s = rt.server("shop").unwrap();
    let r = cp.config().scu.resources(1);
    assert!(!s.frozen && s.hot_pages_loading);
    assert_eq!(
        (s.cpu_millis, s.memory_bytes, s.buffer_pool_bytes),
        (r.cpu_millis, r.memory_bytes, r.buffer_pool_bytes),
        "woken at its minimum"
    );
    let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    assert_eq!((svc.state, svc.scu), (DbState::Active, 1));
}

/// A node over its high watermark parks its suspended databases, the longest-suspended first,
/// until it is at its low watermark; active ones are left alone, and a node under its high
/// watermark parks nothing.
#[tokio::test]
async fn memory_pressure_parks_the_longest_suspended_first() {
    let (cp, rt) = control(no_pool());
    rt.set_nodes(&[("n1", 4000, 64 * GIB)]);
    for name in ["a", "b", "c", "busy"] {
        create(&cp, name).await;
    }
    for name in ["b", "a", "c"] {
        cp.suspend(name, false, "test").await.unwrap();
        // Its server still holds its memory (the fake reports its buffer pool as its use).
        rt.with_server(name, |s| s.buffer_pool_bytes = 2 * GIB);
        // Distinct suspend times, which order the parking.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        cp.relieve_memory_pressure().await.unwrap(),
        Vec::<ServiceName>::new()
    );
    // 8 GiB of limits on a 10 GiB node: over 70 %; parking one brings it to 60 %.
    rt.set_nodes(&[("n1", 4000, 10 * GIB)]);
    assert_eq!(cp.relieve_memory_pressure().await.unwrap(), [db("b")]);
    let state = |n: &str| {
        let cp = cp.clone();
        let n = n.to_owned();
        async move { cp.store().service(&db(&n)).await.unwrap().unwrap().state }
    };
    assert_eq!(state("b").await, DbState::Parked);
    for (n, want) in [
        ("a", DbState::Suspended),
        ("c", DbState::Suspended),
        ("busy", DbState::Active),
    ] {
        assert_eq!(state(n).await, want, "{n}");
    }
    let ev = events(&cp, "b").await;
    let (kind, message) = ev.last().unwrap();
    assert_eq!(*kind, EventKind::Parked);
    assert!(message.contains("memory pressure: node n1"), "{message}");
    assert_eq!(
        cp.relieve_memory_pressure().await.unwrap(),
        Vec::<ServiceName>::new()
    );
}

/// A restart of Stratus does not make its suspended databases newly suspended: the catalog
/// says since when, so memory pressure still parks the longest-suspended first (and the park
/// window counts from the suspend).
#[tokio::test]
async fn a_restart_keeps_how_long_databases_have_been_suspended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let rt = FakeRuntime::default();
    rt.set_nodes(&[("n1", 4000, 64 * GIB)]);
    let cfg = ControlConfig {
        pool: no_pool(),
        ..ControlConfig::default()
    };
    let cp = ControlPlane::new(SqliteStore::open(&path).unwrap(), rt.clone(), cfg.clone());
    for name in ["early", "late"] {
        create(&cp, name).await;
    }
    for name in ["early", "late"] {
        cp.suspend(name, false, "test").await.unwrap();
        rt.with_server(name, |s| s.buffer_pool_bytes = 2 * GIB);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(cp);

    let cp = ControlPlane::new(SqliteStore::open(&path).unwrap(), rt.clone(), cfg);
    // Found in the opposite order: counted from the restart, "late" would look the older.
    for name in ["late", "early"] {
        cp.reconcile(&db(name), Trigger::Recovery).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rt.set_nodes(&[("n1", 4000, 5 * GIB)]);
    let parked = cp.relieve_memory_pressure().await.unwrap();
    assert_eq!(
        parked.first(),
        Some(&db("early")),
        "parked in order: {parked:?}"
    );
}

/// The wake reads back, in the background, the mostly-hot indexes the suspend found in the
/// pool, hottest first; what was mostly cold is not read.
#[tokio::test]
async fn a_wake_reads_back_the_indexes_the_suspend_found_hot() {
    use stratus_runtime::hot_pages::{HotIndex, TableName};
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    let idx = |table: &str, hot: u64, size: u64| HotIndex {
        table: TableName::parse(&format!("`shop`.`{table}`")).unwrap(),
        index: "PRIMARY".into(),
        hot_pages: hot,
        size_pages: size,
    };
    rt.with_server("shop", |s| {
        s.hot_indexes = vec![
            idx("orders", 900, 1000),
            idx("items", 50, 50),
            idx("log", 10, 5000),
        ]
    });
    cp.suspend("shop", false, "test").await.unwrap();
    assert!(rt.server("shop").unwrap().warmed.is_empty());
    assert!(cp.backend_for_client("shop", true).await.unwrap().is_some());
    hydrated(&cp, "shop", 1).await;
    assert_eq!(
        rt.server("shop").unwrap().warmed,
        ["shop.orders.PRIMARY", "shop.items.PRIMARY"]
    );
    let ev = events(&cp, "shop").await;
    let (_, msg) = ev.iter().find(|(k, _)| *k == EventKind::Hydrated).unwrap();
    assert!(
        msg.contains("2 index(es) read back") && msg.contains("1 left out"),
        "{msg}"
    );
    let r = cp.config().scu.resources(1);
    assert_eq!(
        rt.server("shop").unwrap().cpu_millis,
        r.cpu_millis,
        "the CPU burst of the refill ends with it"
    );
    assert!(r.cpu_millis < stratus_control::hydration::HYDRATION_CPU_MILLIS);
    assert!(
        rt.calls().iter().any(|c| c.starts_with(&format!(
            "set_limits shop {}",
            stratus_control::hydration::HYDRATION_CPU_MILLIS
        ))),
        "{:?}",
        rt.calls()
    );
}

/// A parked database's next server starts with an empty pool too: its wake reads back what
/// the last server's pool held, whether it was parked after a suspend or straight from active.
#[tokio::test]
async fn a_wake_from_parked_reads_back_the_indexes_the_last_server_held() {
    use stratus_runtime::hot_pages::{HotIndex, TableName};
    let (cp, rt) = control(no_pool());
    let idx = |table: &str| HotIndex {
        table: TableName::parse(&format!("`shop`.`{table}`")).unwrap(),
        index: "PRIMARY".into(),
        hot_pages: 90,
        size_pages: 100,
    };
    create(&cp, "shop").await;
    for (round, suspend_first) in [(1, true), (2, false)] {
        rt.with_server("shop", |s| s.hot_indexes = vec![idx("orders")]);
        if suspend_first {
            cp.suspend("shop", false, "test").await.unwrap();
        }
        cp.park("shop", false).await.unwrap();
        assert!(rt.server("shop").is_none());
        assert!(cp.backend_for_client("shop", true).await.unwrap().is_some());
        hydrated(&cp, "shop", round).await;
        assert_eq!(
            rt.server("shop").unwrap().warmed,
            ["shop.orders.PRIMARY"],
            "round {round}"
        );
    }
}

/// The list outlives a restart of Stratus: the catalog keeps it until the wake uses it.
#[tokio::test]
async fn a_wake_after_a_restart_of_stratus_still_reads_back_what_the_pool_held() {
    use stratus_runtime::hot_pages::{HotIndex, TableName};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let rt = FakeRuntime::default();
    let cfg = ControlConfig {
        pool: no_pool(),
        ..ControlConfig::default()
    };
    let cp = ControlPlane::new(SqliteStore::open(&path).unwrap(), rt.clone(), cfg.clone());
    create(&cp, "shop").await;
    rt.with_server("shop", |s| {
        s.hot_indexes = vec![HotIndex {
            table: TableName::parse("`shop`.`orders`").unwrap(),
            index: "PRIMARY".into(),
            hot_pages: 90,
            size_pages: 100,
        }]
    });
    cp.suspend("shop", false, "test").await.unwrap();
    cp.park("shop", false).await.unwrap();
    drop(cp);

    let cp = ControlPlane::new(SqliteStore::open(&path).unwrap(), rt.clone(), cfg);
    cp.reconcile(&db("shop"), Trigger::Recovery).await.unwrap();
    assert!(cp.backend_for_client("shop", true).await.unwrap().is_some());
    hydrated(&cp, "shop", 1).await;
    assert_eq!(rt.server("shop").unwrap().warmed, ["shop.orders.PRIMARY"]);
    let kept = cp.store().hot_indexes(&db("shop")).await.unwrap();
    assert_eq!(kept, None, "used once");
}

#[tokio::test]
async fn a_host_without_a_freezer_keeps_a_suspended_server_at_its_cpu_floor() {
    let (cp, rt) = control(no_pool());
    rt.set_cannot_freeze();
    create(&cp, "shop").await;
    cp.suspend("shop", false, "test").await.unwrap();
    let s = rt.server("shop").unwrap();
    assert!(!s.frozen);
    assert_eq!(s.cpu_millis, CPU_FLOOR_MILLIS);
    let ev = events(&cp, "shop").await;
    assert!(
        ev.last().unwrap().1.contains("this host cannot freeze"),
        "{ev:?}"
    );
}

/// Growing, the limits go up before the buffer pool; shrinking, the buffer pool goes down
/// before the limits: the pool never meets a limit too small for it.
#[tokio::test]
async fn resizes_apply_limits_and_buffer_pool_in_the_safe_order() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    let order = |calls: Vec<String>| -> Vec<String> {
        calls
            .into_iter()
            .filter(|c| c.starts_with("set_limits") || c.starts_with("resize_buffer_pool"))
            .map(|c| c.split(' ').next().unwrap().to_owned())
            .collect()
    };
    rt.take_calls();
    cp.scale("shop", 4).await.unwrap();
    assert_eq!(
        order(rt.take_calls()),
        ["set_limits", "set_limits", "resize_buffer_pool"],
        "the limits again after the login, which may have restarted the server"
    );
    cp.scale("shop", 1).await.unwrap();
    assert_eq!(order(rt.take_calls()), ["resize_buffer_pool", "set_limits"]);

    // The server refuses the larger pool: the grown limits are put back, the size unchanged.
    rt.fail(Op::ResizeBufferPool, 1);
    assert!(cp.scale("shop", 3).await.is_err());
    assert_eq!(
        order(rt.take_calls()),
        [
            "set_limits",
            "set_limits",
            "resize_buffer_pool",
            "set_limits"
        ]
    );
    let r = cp.config().scu.resources(1);
    assert_eq!(rt.server("shop").unwrap().cpu_millis, r.cpu_millis);
    let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    assert_eq!(svc.scu, 1);
}

/// A tenant with `CREATE USER` dropped or locked Stratus's account: the next operation restarts
/// the server, which restores the account, and goes on; an event says so.
#[tokio::test]
async fn an_operation_on_a_server_that_refuses_stratus_restores_access_and_goes_on() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    let pid = rt.server("shop").unwrap().pid;
    rt.with_server("shop", |s| s.account_refused = true);
    cp.scale("shop", 2).await.unwrap();
    let s = rt.server("shop").unwrap();
    assert_ne!(s.pid, pid, "restarted");
    let r = cp.config().scu.resources(2);
    assert_eq!(
        (s.cpu_millis, s.memory_bytes, s.buffer_pool_bytes),
        (r.cpu_millis, r.memory_bytes, r.buffer_pool_bytes),
        "the restart did not lose the new limits"
    );
    let ev = events(&cp, "shop").await;
    assert!(
        ev.iter().any(|e| e.0 == EventKind::AccessRestored),
        "{ev:?}"
    );
    assert_eq!(ev.last().unwrap().0, EventKind::Scaled);
}

#[tokio::test]
async fn a_parked_database_stays_down_when_an_old_crash_is_reconciled() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    cp.park("shop", false).await.unwrap();
    assert!(rt.server("shop").is_none());
    let done = cp.reconcile(&db("shop"), Trigger::Crash).await.unwrap();
    assert!(done.is_empty() && rt.server("shop").is_none());
    cp.resume("shop").await.unwrap();
    assert!(rt.server("shop").is_some());
}

#[tokio::test(start_paused = true)]
async fn the_warm_pool_fills_serves_a_create_refills_and_drains() {
    let (cp, rt) = control(pool_of(2, 4));
    let pool = tokio::spawn(cp.clone().run_pool());
    until("filled", || async { rt.spares() == 2 }).await;
    let created = cp
        .create(CreateRequest {
            name: "shop".into(),
            ..CreateRequest::default()
        })
        .await
        .unwrap();
    assert!(rt.calls().iter().any(|c| c.starts_with("claim_spare")));
    // The owner account was made while the spare waited, and only named on the create's path.
    let executed = rt.server("shop").unwrap().executed;
    let spare_setup = stratus_control::accounts::spare_sql();
    assert_eq!(executed[..spare_setup.len()], spare_setup);
    assert_eq!(
        executed[spare_setup.len()..],
        stratus_control::accounts::claim_sql(
            &db("shop"),
            &stratus_core::UserName::parse("admin").unwrap(),
            &cp.store().users(&db("shop")).await.unwrap()[0].hash,
        )
    );
    let ev = events(&cp, "shop").await;
    assert!(
        ev.last().unwrap().1.contains("warm pool"),
        "{ev:?} {created:?}"
    );
    // One creation raises the target by one.
    until("refilled", || async { rt.spares() == 3 }).await;
    cp.drain_pool().await;
    assert_eq!(rt.spares(), 0);
    pool.abort();
}

/// A lone create has the host to itself for a moment: while enough spares are still ready, the
/// refill waits 300 ms, so a spare's start does not compete with the create and its first
/// client. A create that follows another within a second is a burst: refilled at once.
#[tokio::test(start_paused = true)]
async fn a_lone_create_is_refilled_after_a_quiet_moment_and_a_burst_at_once() {
    let (cp, rt) = control(PoolConfig {
        presized: 0,
        ..pool_of(3, 8)
    });
    let pool = tokio::spawn(cp.clone().run_pool());
    until("filled", || async { rt.spares() == 3 }).await;
    let starts = || {
        rt.calls()
            .iter()
            .filter(|c| c.starts_with("provision_spare"))
            .count()
    };
    let before = starts();
    let lone = tokio::time::Instant::now();
    create(&cp, "lone").await;
    until("refilled", || async { starts() > before }).await;
    assert!(
        lone.elapsed() >= Duration::from_millis(300),
        "refilled after {:?}",
        lone.elapsed()
    );
    until("the target's four ready", || async { rt.spares() == 4 }).await;

    let before = starts();
    let burst = tokio::time::Instant::now();
    create(&cp, "burst").await;
    until("refilled", || async { starts() > before }).await;
    assert!(
        burst.elapsed() < Duration::from_millis(100),
        "refilled after {:?}",
        burst.elapsed()
    );
    pool.abort();
}

/// A create that finds the pool dry while a spare is on its way waits for that spare rather
/// than start a server of its own beside it; with none on its way it starts one at once.
#[tokio::test(start_paused = true)]
async fn a_create_waits_for_a_spare_already_starting_instead_of_starting_one_cold() {
    // At most one spare: the one a create waits for is the only one on its way, so nothing
    // else is coming once it is ready and the create must still take it.
    let (cp, rt) = control(PoolConfig {
        presized: 0,
        ..pool_of(1, 1)
    });
    let pool = tokio::spawn(cp.clone().run_pool());
    until("filled", || async { rt.spares() == 1 }).await;
    rt.start_spares_in(Duration::from_millis(300));
    create(&cp, "first").await;
    until("a spare on its way", || async {
        cp.pool_status().starting > 0
    })
    .await;
    let begin = tokio::time::Instant::now();
    create(&cp, "second").await;
    let calls = rt.calls();
    assert!(
        !calls.contains(&"provision second".to_owned()),
        "started cold: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("claim_spare ") && c.ends_with(" second")),
        "{calls:?}"
    );
    let waited = begin.elapsed();
    assert!(
        waited <= Duration::from_millis(300),
        "waited {waited:?} for a spare that takes 300 ms"
    );

    // The pool off: nothing to wait for.
    cp.drain_pool().await;
    pool.abort();
    let begin = tokio::time::Instant::now();
    create(&cp, "third").await;
    assert!(rt.calls().contains(&"provision third".to_owned()));
    assert!(
        begin.elapsed() < Duration::from_millis(10),
        "waited for nothing"
    );
}

/// A create waits only for a spare coming to its own node: on another it would wait for
/// nothing it could claim, then start its server cold anyway.
#[tokio::test(start_paused = true)]
async fn a_create_does_not_wait_for_a_spare_starting_on_another_node() {
    let (cp, rt) = control(PoolConfig {
        presized: 0,
        ..pool_of(1, 8)
    });
    rt.set_nodes(&[("n1", 4000, 64 * GIB), ("n2", 4000, 8 * GIB)]);
    let pool = tokio::spawn(cp.clone().run_pool());
    until("filled", || async { rt.spares() == 1 }).await;
    rt.start_spares_in(Duration::from_millis(300));
    create(&cp, "first").await;
    until("a spare on its way to n1", || async {
        let on_n1 = rt
            .calls()
            .into_iter()
            .filter(|c| c == "spare_starting on n1");
        on_n1.count() >= 2
    })
    .await;
    // Now the next database goes to n2, where nothing is coming.
    rt.set_nodes(&[("n1", 4000, 4 * GIB), ("n2", 4000, 64 * GIB)]);
    let begin = tokio::time::Instant::now();
    create(&cp, "second").await;
    assert!(rt.calls().contains(&"provision second".to_owned()));
    assert!(
        begin.elapsed() < Duration::from_millis(10),
        "waited {:?} for a spare on another node",
        begin.elapsed()
    );
    pool.abort();
}

/// A spare whose pool was grown while nobody waited is what a default create claims: its
/// create path has no resize. Without one, the pool grows on the create path with a core,
/// then the database is held to its own quota.
#[tokio::test(start_paused = true)]
async fn a_presized_spare_spares_a_default_create_its_pool_growth() {
    let (cp, rt) = control(pool_of(2, 4));
    let pool = tokio::spawn(cp.clone().run_pool());
    until("filled and one presized", || async {
        cp.pool_status().presized == 1 && rt.spares() == 2
    })
    .await;
    let calls = rt.calls();
    let presized: Vec<_> = calls
        .iter()
        .filter_map(|c| c.strip_prefix("presize_spare "))
        .collect();
    assert_eq!(presized.len(), 1, "one at a time, one wanted: {calls:?}");
    let (key, bytes) = presized[0].split_once(' ').unwrap();
    assert_eq!(bytes, (1u64 << 30).to_string(), "one SCU's pool");

    create(&cp, "shop").await;
    let calls = rt.calls();
    assert!(
        calls.contains(&format!("claim_spare {key} shop")),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("resize_buffer_pool shop")),
        "{calls:?}"
    );

    cp.drain_pool().await;
    pool.abort();

    // Without a presized spare the pool grows on the create path, given a core meanwhile.
    let (cp, rt) = control(PoolConfig {
        presized: 0,
        ..pool_of(1, 1)
    });
    let pool = tokio::spawn(cp.clone().run_pool());
    until("filled", || async { rt.spares() == 1 }).await;
    create(&cp, "shop").await;
    let calls = rt.calls();
    let mem = 2u64 << 30;
    let sizing: Vec<&str> = calls
        .iter()
        .map(String::as_str)
        .filter(|c| c.starts_with("set_limits shop") || c.starts_with("resize_buffer_pool shop"))
        .collect();
    assert_eq!(
        sizing,
        [
            format!("set_limits shop 500 {mem}"),
            format!("set_limits shop 1000 {mem}"),
            format!("resize_buffer_pool shop {}", 1u64 << 30),
            format!("set_limits shop 500 {mem}"),
        ],
        "{calls:?}"
    );
    assert_eq!(rt.server("shop").unwrap().cpu_millis, 500);
    cp.drain_pool().await;
    assert_eq!(rt.spares(), 0);
    pool.abort();
}

/// A spare whose server made another pool than the one asked for is not counted as presized
/// (a create claiming it would skip the resize it needs), and presizing stops rather than
/// trying spare after spare.
#[tokio::test(start_paused = true)]
async fn a_spare_whose_server_rounds_the_pool_is_not_counted_as_presized() {
    let (cp, rt) = control(pool_of(1, 1));
    rt.round_spare_pools_to(3 << 20);
    let pool = tokio::spawn(cp.clone().run_pool());
    until("a presize tried", || async {
        rt.calls().iter().any(|c| c.starts_with("presize_spare")) && cp.pool_status().ready == 1
    })
    .await;
    // Long enough for several more rounds of the refiller.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let calls = rt.calls();
    assert_eq!(cp.pool_status().presized, 0);
    let tried = calls
        .iter()
        .filter(|c| c.starts_with("presize_spare"))
        .count();
    assert_eq!(tried, 1, "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.starts_with("destroy_spare")),
        "{calls:?}"
    );
    create(&cp, "shop").await;
    let calls = rt.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("resize_buffer_pool shop")),
        "{calls:?}"
    );
    cp.drain_pool().await;
    assert_eq!(rt.spares(), 0);
    pool.abort();
}

#[tokio::test(start_paused = true)]
async fn a_spare_that_cannot_be_claimed_gives_way_to_a_new_server() {
    let (cp, rt) = control(pool_of(1, 1));
    let pool = tokio::spawn(cp.clone().run_pool());
    until("filled", || async { rt.spares() == 1 }).await;
    rt.fail(Op::ClaimSpare, 1);
    create(&cp, "shop").await;
    let calls = rt.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("destroy_spare")),
        "{calls:?}"
    );
    assert!(calls.iter().any(|c| c == "provision shop"), "{calls:?}");
    assert!(rt.server("shop").is_some());
    cp.drain_pool().await;
    pool.abort();
}

/// A spare whose server will not start is no lost pool: the refiller backs off and tries
/// again, and the pool fills.
#[tokio::test(start_paused = true)]
async fn a_spare_that_fails_to_start_is_tried_again_after_a_pause() {
    let (cp, rt) = control(pool_of(2, 2));
    rt.fail(Op::ProvisionSpare, 2);
    let begin = tokio::time::Instant::now();
    let pool = tokio::spawn(cp.clone().run_pool());
    until("filled", || async { rt.spares() == 2 }).await;
    let starts = rt
        .calls()
        .iter()
        .filter(|c| c.starts_with("provision_spare"))
        .count();
    assert_eq!(starts, 4, "two failed, each tried again, two made");
    // (the paused clock moves only by the timers that ran)
    assert!(
        begin.elapsed() >= Duration::from_secs(5),
        "a pause after a failure, not a spin: {:?}",
        begin.elapsed()
    );
    cp.drain_pool().await;
    pool.abort();
}

/// A volume that cannot grow (the disk refuses) is tried again after a pause, and grows once
/// it can; the growth is recorded once, when it happened. Real clock: the loop's back-off
/// counts wall-clock time.
#[tokio::test]
async fn a_volume_that_cannot_grow_is_tried_again_and_grows() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    rt.with_server("shop", |s| {
        s.storage_limit = 1 << 30;
        s.storage_used = (1 << 30) - (1 << 24);
    });
    rt.fail(Op::GrowStorage, 1);
    let storage = tokio::spawn(cp.clone().run_storage());
    until("grown", || async {
        rt.server("shop").unwrap().storage_limit > 1 << 30
    })
    .await;
    storage.abort();
    let grows = rt
        .calls()
        .iter()
        .filter(|c| c.starts_with("grow_storage shop"))
        .count();
    assert_eq!(grows, 2, "one refused, one done");
    let grown: Vec<_> = events(&cp, "shop")
        .await
        .into_iter()
        .filter(|(k, _)| *k == EventKind::StorageGrown)
        .collect();
    assert_eq!(grown.len(), 1, "{grown:?}");
}

/// An autoscaling whose resize the runtime refuses leaves the database at its size, recorded
/// as such; the load still there, the next decision grows it.
#[tokio::test]
async fn an_autoscaling_the_runtime_refuses_is_decided_again_and_done() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    let quota = u64::from(cp.config().scu.resources(1).cpu_millis);
    let load = at_quota(&rt, "shop", quota);
    rt.take_calls();
    rt.fail(Op::SetLimits, 1);
    let monitor = tokio::spawn(cp.clone().monitor());
    until("grown", || async {
        cp.store().service(&db("shop")).await.unwrap().unwrap().scu > 1
    })
    .await;
    load.abort();
    monitor.abort();
    let limits = rt
        .calls()
        .iter()
        .filter(|c| c.starts_with("set_limits shop"))
        .count();
    assert!(limits >= 2, "refused once, then done: {:?}", rt.calls());
    let r = cp.config().scu.resources(2);
    let s = rt.server("shop").unwrap();
    assert_eq!(
        (s.cpu_millis, s.buffer_pool_bytes),
        (r.cpu_millis, r.buffer_pool_bytes),
        "the server has the size the catalog says"
    );
}

/// The monitor on the real clock (its windows are wall-clock time): a server using its whole
/// CPU quota is grown, the order of the resize is the safe one, and the measurement is recorded.
#[tokio::test]
async fn the_autoscaler_grows_a_database_pinned_at_its_quota() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    let quota = u64::from(cp.config().scu.resources(1).cpu_millis);
    let load = at_quota(&rt, "shop", quota);
    rt.take_calls();
    let monitor = tokio::spawn(cp.clone().monitor());
    until("grown", || async {
        cp.store().service(&db("shop")).await.unwrap().unwrap().scu > 1
    })
    .await;
    load.abort();
    monitor.abort();
    let scu = cp.store().service(&db("shop")).await.unwrap().unwrap().scu;
    assert_eq!(scu, 2, "pinned at the quota: doubled");
    let r = cp.config().scu.resources(2);
    let s = rt.server("shop").unwrap();
    assert_eq!(
        (s.cpu_millis, s.buffer_pool_bytes),
        (r.cpu_millis, r.buffer_pool_bytes)
    );
    let calls: Vec<String> = rt
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("set_limits") || c.starts_with("resize_buffer_pool"))
        .collect();
    assert!(calls[0].starts_with("set_limits"), "{calls:?}");
    let ev = events(&cp, "shop").await;
    assert!(
        ev.last().unwrap().1.starts_with("autoscaled up 1 → 2 SCU"),
        "{ev:?}"
    );
}

/// A deleted database's measured figures go with it: one made later under the same name
/// starts with none of them (a stale figure of what its pool could hold would weigh it as the
/// old one for a while).
#[tokio::test]
async fn a_database_made_again_under_a_deleted_ones_name_has_none_of_its_figures() {
    let (cp, _rt) = control(no_pool());
    create(&cp, "shop").await;
    let monitor = monitor_with(&cp, "shop", &stratus_core::ScalingPolicy::default()).await;
    until("measured", || async { cp.measured(&db("shop")).is_some() }).await;
    monitor.abort();
    cp.delete("shop").await.unwrap();
    assert_eq!(cp.measured(&db("shop")), None);
    create(&cp, "shop").await;
    assert_eq!(cp.measured(&db("shop")), None);
}

/// A size set by hand on a database that has been idle for a whole down-window is kept for the
/// cooldown and a new down-window, as if the autoscaler had set it, and only then scaled down:
/// samples taken at the old size say nothing about the new one. Real clock, like the monitor.
#[tokio::test]
async fn a_size_set_by_hand_is_not_undone_by_samples_from_before_it() {
    let (cp, _rt) = control(no_pool());
    create(&cp, "shop").await;
    let policy = stratus_core::ScalingPolicy {
        scale_down_window_ms: 1_000,
        ..stratus_core::ScalingPolicy::default()
    };
    let monitor = monitor_with(&cp, "shop", &policy).await;
    // A measurement over the last second means a whole (one-second) down-window of idleness.
    until("measured idle", || async {
        cp.measured(&db("shop")).and_then(|m| m.cpu_millis) == Some(0.0)
    })
    .await;
    cp.scale("shop", 3).await.unwrap();
    let set = std::time::Instant::now();
    until("scaled back down", || async {
        cp.store().service(&db("shop")).await.unwrap().unwrap().scu < 3
    })
    .await;
    let kept = set.elapsed();
    monitor.abort();
    let least = Duration::from_millis(stratus_control::scaler::COOLDOWN_MS.max(1_000) as u64);
    assert!(kept >= least, "kept {kept:?}, less than {least:?}");
    let ev = events(&cp, "shop").await;
    assert!(
        ev.last()
            .unwrap()
            .1
            .starts_with("autoscaled down 3 → 1 SCU"),
        "{ev:?}"
    );
}

/// An idle database is suspended after its policy's idle time, and parked after its time
/// suspended; each is an event that says why.
#[tokio::test]
async fn an_idle_database_is_suspended_then_parked() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    let policy = stratus_core::ScalingPolicy {
        idle_to_suspend_ms: 300,
        suspend_to_park_ms: 300,
        ..stratus_core::ScalingPolicy::default()
    };
    let monitor = monitor_with(&cp, "shop", &policy).await;
    until("suspended", || async {
        rt.server("shop").is_some_and(|s| s.frozen)
    })
    .await;
    until("parked", || async { rt.server("shop").is_none() }).await;
    monitor.abort();
    let kinds: Vec<EventKind> = events(&cp, "shop").await.into_iter().map(|e| e.0).collect();
    assert!(
        kinds.ends_with(&[EventKind::Suspended, EventKind::Parked]),
        "{kinds:?}"
    );
    let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    assert_eq!(svc.state, DbState::Parked);
}

/// A change that fails halfway is undone: the catalog never claims a state the server is not in,
/// and clients are not left waiting on a server held back for nothing.
#[tokio::test]
async fn a_suspend_that_fails_halfway_leaves_the_database_active_at_its_size() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    cp.scale("shop", 2).await.unwrap();
    rt.fail(Op::Freeze, 1);
    let err = cp.suspend("shop", false, "test").await.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    assert_eq!((svc.state, svc.scu), (DbState::Active, 2));
    assert!(
        cp.backend_for_client("shop", false)
            .await
            .unwrap()
            .is_some()
    );
    let s = rt.server("shop").unwrap();
    let r = cp.config().scu.resources(2);
    assert!(!s.frozen);
    assert_eq!(
        (s.cpu_millis, s.buffer_pool_bytes),
        (r.cpu_millis, r.buffer_pool_bytes)
    );
    let ev = events(&cp, "shop").await;
    assert_ne!(ev.last().unwrap().0, EventKind::Suspended, "{ev:?}");
}

#[tokio::test]
async fn a_park_whose_stop_fails_leaves_the_database_active() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    rt.fail(Op::Stop, 1);
    assert!(cp.park("shop", false).await.is_err());
    let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    assert_eq!(svc.state, DbState::Active);
    assert!(
        cp.backend_for_client("shop", false)
            .await
            .unwrap()
            .is_some()
    );
    cp.park("shop", false).await.unwrap();
    assert!(rt.server("shop").is_none());
}

/// A suspended database whose server crashes comes back suspended: restarted, emptied, frozen
/// and held until a client wakes it.
#[tokio::test(start_paused = true)]
async fn a_suspended_database_that_crashes_comes_back_suspended() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    tokio::spawn(cp.clone().supervise());
    cp.suspend("shop", false, "test").await.unwrap();
    tokio::task::yield_now().await;
    rt.crash("shop");
    until("restarted", || async {
        rt.server("shop").is_some_and(|s| s.frozen)
    })
    .await;
    let s = rt.server("shop").unwrap();
    assert_eq!(
        (s.buffer_pool_bytes, s.cpu_millis),
        (BUFFER_POOL_FLOOR, CPU_FLOOR_MILLIS)
    );
    assert_eq!(cp.backend_for_client("shop", false).await.unwrap(), None);
    assert!(cp.backend_for_client("shop", true).await.unwrap().is_some());
    assert!(!rt.server("shop").unwrap().frozen);
}

fn with_backups(pool: PoolConfig) -> (Cp, FakeRuntime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rt = FakeRuntime::default();
    let cfg = ControlConfig {
        pool,
        backup_dir: dir.path().join("backups"),
        ..ControlConfig::default()
    };
    let cp = ControlPlane::new(SqliteStore::in_memory().unwrap(), rt.clone(), cfg);
    (cp, rt, dir)
}

/// A backup that fails leaves nothing that looks like a backup, and says so; a good one is
/// restored into a new database with the source's accounts and data, never over an existing one.
#[tokio::test]
async fn backups_are_whole_or_absent_and_restores_make_new_databases() {
    use stratus_control::backup::RestoreRequest;
    let (cp, rt, dir) = with_backups(no_pool());
    create(&cp, "shop").await;
    rt.fail(Op::Backup, 1);
    assert!(cp.create_backup("shop").await.is_err());
    assert!(cp.backups(Some("shop")).unwrap().is_empty());
    let leftovers = std::fs::read_dir(dir.path().join("backups/shop"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "no partial backup left");
    let ev = events(&cp, "shop").await;
    assert_eq!(ev.last().unwrap().0, EventKind::BackupFailed, "{ev:?}");

    let b = cp.create_backup("shop").await.unwrap();
    assert!(b.verified, "{b:?}");
    let err = cp
        .restore(
            "shop",
            RestoreRequest {
                to: "shop".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        rt.calls()
            .iter()
            .filter(|c| c.starts_with("restore"))
            .count(),
        0
    );

    let copy = cp
        .restore(
            "shop",
            RestoreRequest {
                to: "copy".into(),
                backup: Some(b.id.clone()),
                time: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (copy.state.as_str(), copy.database.as_str()),
        ("active", "shop")
    );
    let source = rt.server("shop").unwrap().executed;
    assert_eq!(
        rt.server("copy").unwrap().executed,
        source,
        "the source's data"
    );
    let users = cp.users("copy").await.unwrap();
    assert!(
        users.iter().any(|u| u.owner && u.name == "admin"),
        "{users:?}"
    );
}

/// A branch shares the source's blocks where the runtime can, and goes through a backup where
/// it cannot; either way it is a new database with the source's data and accounts.
#[tokio::test]
async fn a_branch_copies_at_once_or_through_a_backup() {
    use stratus_control::branch::BranchRequest;
    let (cp, rt, _dir) = with_backups(no_pool());
    create(&cp, "shop").await;
    let req = |to: &str| BranchRequest {
        to: to.into(),
        time: None,
    };
    cp.branch("shop", req("dev")).await.unwrap();
    assert!(rt.calls().contains(&"branch shop dev".to_owned()));
    assert_eq!(
        rt.server("dev").unwrap().executed,
        rt.server("shop").unwrap().executed
    );
    let ev = events(&cp, "dev").await;
    assert!(ev.last().unwrap().1.contains("blocks shared"), "{ev:?}");

    rt.set_cannot_share();
    cp.branch("shop", req("qa")).await.unwrap();
    let calls = rt.calls();
    assert!(!calls.iter().any(|c| c == "branch shop qa"), "{calls:?}");
    assert!(calls.iter().any(|c| c == "restore qa"), "{calls:?}");
    assert_eq!(
        rt.server("qa").unwrap().executed,
        rt.server("shop").unwrap().executed
    );
    let ev = events(&cp, "qa").await;
    assert!(ev.last().unwrap().1.contains("through backup"), "{ev:?}");
    assert!(cp.users("qa").await.unwrap().iter().any(|u| u.owner));
    let err = cp.branch("shop", req("dev")).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

/// A server gone without a notice (its exit missed) is found by the periodic resync, left for
/// one period to a trigger that may be handling it, then started, with an event that says what
/// was found. One the error policy gave up on is left to a person until `db resume`.
#[tokio::test(start_paused = true)]
async fn the_resync_brings_back_what_no_notice_told_of_and_leaves_what_was_given_up() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    create(&cp, "broken").await;
    rt.vanish("shop");
    let mut suspects = std::collections::HashSet::new();
    cp.resync(&mut suspects).await;
    assert!(rt.server("shop").is_none(), "a period for a trigger first");
    cp.resync(&mut suspects).await;
    let pid = rt.server("shop").expect("started by the second look").pid;
    let (kind, message) = events(&cp, "shop").await.pop().unwrap();
    assert_eq!(kind, EventKind::Reconciled, "{message}");
    assert!(message.contains("no server running"), "{message}");
    assert!(message.contains(&format!("pid {pid}")), "{message}");
    rt.take_calls();
    cp.resync(&mut suspects).await;
    cp.resync(&mut suspects).await;
    assert!(
        !rt.calls().iter().any(|c| c.starts_with("start")),
        "nothing to do: {:?}",
        rt.calls()
    );

    // Every start fails until the error policy gives up; the resync does not take over.
    rt.vanish("broken");
    rt.fail(Op::Start, MAX_ATTEMPTS);
    cp.reconcile_until_settled(&db("broken"), Trigger::Crash, 0)
        .await;
    rt.take_calls();
    for _ in 0..3 {
        cp.resync(&mut suspects).await;
    }
    let touched: Vec<String> = rt
        .calls()
        .into_iter()
        .filter(|c| c.ends_with(" broken") || c.contains(" broken "))
        .collect();
    assert_eq!(touched, Vec::<String>::new(), "given up: left alone");
    cp.resume("broken").await.unwrap();
    rt.vanish("broken");

    // Running on its own clock, it looks after `broken` again.
    tokio::spawn(cp.clone().run_resync());
    until("broken started by the resync", || async {
        rt.server("broken").is_some()
            && events(&cp, "broken").await.pop().map(|e| e.0) == Some(EventKind::Reconciled)
    })
    .await;
}

/// A crash whose restart waits out its back-off is the supervisor's: the resync, looking on
/// meanwhile, neither starts the server early nor records anything.
#[tokio::test(start_paused = true)]
async fn the_resync_leaves_a_crash_restart_to_the_supervisor() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    tokio::spawn(cp.clone().supervise());
    tokio::task::yield_now().await; // it listens for exits
    // Two quick crashes: the second restart waits 1 s, then its starts fail four times, with
    // waits of 2, 4, 8 and 16 s: 31 s without a server, over two looks of the resync.
    rt.crash("shop");
    until("restarted once", || async { rt.server("shop").is_some() }).await;
    rt.fail(Op::Start, 4);
    rt.crash("shop");
    let mut suspects = std::collections::HashSet::new();
    for _ in 0..2 {
        cp.resync(&mut suspects).await;
        assert!(
            rt.server("shop").is_none(),
            "still the supervisor's back-off"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    until("restarted by the supervisor", || async {
        rt.server("shop").is_some()
            && events(&cp, "shop").await.pop().map(|e| e.0) == Some(EventKind::Restarted)
    })
    .await;
    let ev = events(&cp, "shop").await;
    assert!(
        !ev.iter().any(|e| e.0 == EventKind::Reconciled),
        "the resync kept out: {ev:?}"
    );
}

/// The catalog's size is a desired size: a server found at other limits or another buffer pool
/// than the catalog's (changed by hand, or a resize a restart of Stratus cut short) is brought
/// back by the resync, in the safe order, with events that say what was found.
#[tokio::test]
async fn the_resync_brings_a_server_at_another_size_back_to_the_catalogs() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    let r = cp.config().scu.resources(1);
    let at =
        |s: stratus_runtime::fake::FakeServer| (s.cpu_millis, s.memory_bytes, s.buffer_pool_bytes);
    let want = at(rt.server("shop").unwrap());
    assert_eq!(want, (r.cpu_millis, r.memory_bytes, r.buffer_pool_bytes));
    let mut suspects = std::collections::HashSet::new();

    // Limits raised by hand: shrinking back, the pool goes first (it is already right).
    rt.with_server("shop", |s| {
        s.cpu_millis *= 4;
        s.memory_bytes *= 4;
    });
    cp.resync(&mut suspects).await;
    assert_ne!(at(rt.server("shop").unwrap()), want, "a period first");
    rt.take_calls();
    cp.resync(&mut suspects).await;
    assert_eq!(at(rt.server("shop").unwrap()), want);
    let sizing: Vec<String> = rt
        .take_calls()
        .into_iter()
        .filter(|c| c.starts_with("set_limits") || c.starts_with("resize_buffer_pool"))
        .map(|c| c.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(sizing, ["resize_buffer_pool", "set_limits"]);
    let ev = events(&cp, "shop").await;
    let (kind, message) = &ev[ev.len() - 2];
    assert_eq!(*kind, EventKind::Scaled, "{message}");
    assert!(
        message.contains(&format!(
            "found by the periodic check at {} millicores",
            r.cpu_millis * 4
        )),
        "{message}"
    );
    let (kind, message) = ev.last().unwrap();
    assert_eq!(*kind, EventKind::Reconciled, "{message}");
    assert!(
        message.contains("at a size other than the catalog's"),
        "{message}"
    );

    // The buffer pool alone, shrunk behind Stratus's back.
    rt.with_server("shop", |s| s.buffer_pool_bytes /= 2);
    cp.resync(&mut suspects).await;
    cp.resync(&mut suspects).await;
    assert_eq!(at(rt.server("shop").unwrap()), want);

    // At its size, the resync looks and changes nothing.
    rt.take_calls();
    cp.resync(&mut suspects).await;
    cp.resync(&mut suspects).await;
    assert!(
        !rt.calls()
            .iter()
            .any(|c| c.starts_with("set_limits") || c.starts_with("resize_buffer_pool")),
        "{:?}",
        rt.calls()
    );
}

/// Stratus stopped in the middle of a grow, after the limits and before the buffer pool: the
/// catalog still holds the old size, and recovery puts the server back at it, so the catalog
/// never claims a size the server is not at. A suspended server is left at its floors.
#[tokio::test]
async fn recovery_brings_back_a_server_a_restart_of_stratus_left_half_resized() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    create(&cp, "sleepy").await;
    cp.suspend("sleepy", false, "test").await.unwrap();
    let one = cp.config().scu.resources(1);
    let two = cp.config().scu.resources(2);
    rt.with_server("shop", |s| {
        s.cpu_millis = two.cpu_millis;
        s.memory_bytes = two.memory_bytes;
    });
    let floors = rt.server("sleepy").unwrap();
    cp.recover().await.unwrap();
    let s = rt.server("shop").unwrap();
    assert_eq!(
        (s.cpu_millis, s.memory_bytes, s.buffer_pool_bytes),
        (one.cpu_millis, one.memory_bytes, one.buffer_pool_bytes)
    );
    let (kind, message) = events(&cp, "shop").await.pop().unwrap();
    assert_eq!(kind, EventKind::Scaled, "{message}");
    assert!(message.contains("after a restart of Stratus"), "{message}");
    assert_eq!(rt.server("sleepy").unwrap(), floors, "suspended: untouched");
    assert_eq!(
        cp.reconcile(&db("shop"), Trigger::Recovery).await.unwrap(),
        Vec::<Action>::new()
    );
}

/// A server that rounds the buffer pool it is given (as one with buffer-pool chunks does) is
/// not taken for one at another size: a wake records the pool the server made of its size, so
/// the resync that follows has nothing to do.
#[tokio::test]
async fn a_pool_the_server_rounded_at_a_wake_is_its_size() {
    let (cp, rt) = control(no_pool());
    create(&cp, "shop").await;
    rt.with_server("shop", |s| s.buffer_pool_unit = 3 << 20);
    cp.suspend("shop", false, "test").await.unwrap();
    assert!(cp.backend_for_client("shop", true).await.unwrap().is_some());
    let r = cp.config().scu.resources(1);
    let pool = rt.server("shop").unwrap().buffer_pool_bytes;
    assert_eq!(pool, r.buffer_pool_bytes.div_ceil(3 << 20) * (3 << 20));
    assert_ne!(pool, r.buffer_pool_bytes, "rounded");
    let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    assert_eq!(
        svc.buffer_pool_bytes, pool,
        "recorded as the server reported it"
    );
    rt.take_calls();
    let mut suspects = std::collections::HashSet::new();
    cp.resync(&mut suspects).await;
    cp.resync(&mut suspects).await;
    assert!(
        !rt.calls()
            .iter()
            .any(|c| c.starts_with("resize_buffer_pool")),
        "{:?}",
        rt.calls()
    );
    assert!(
        !events(&cp, "shop")
            .await
            .iter()
            .any(|e| e.0 == EventKind::Reconciled),
        "nothing to reconcile"
    );
}

const GIB: u64 = 1 << 30;

/// Two nodes of 8 and 16 GiB: a database of 1 SCU (2 GiB) goes where the most memory is left
/// under the 70 % watermark, the catalog, `db show` and the event say where and why, and the
/// next ones fill the larger node until the smaller has more room.
#[tokio::test]
async fn a_new_database_goes_to_the_node_with_the_most_memory_left_and_says_why() {
    let (cp, rt) = control(no_pool());
    rt.set_nodes(&[("n1", 4000, 8 * GIB), ("n2", 4000, 16 * GIB)]);
    // A fake server uses its 2 GiB allowance; a new one needs 192 MiB (a new database's files,
    // which its pool can fill). Room under 70 %: n1 5.6 GiB, n2 11.2 − 2·k after its k-th.
    let mut placed = Vec::new();
    for name in ["a", "b", "c", "d"] {
        create(&cp, name).await;
        let svc = cp.store().service(&db(name)).await.unwrap().unwrap();
        assert_eq!(rt.server(name).unwrap().node, svc.node.clone().unwrap());
        assert_eq!(cp.show(name).await.unwrap().node, svc.node.clone().unwrap());
        placed.push(svc.node.unwrap());
    }
    assert_eq!(placed, ["n2", "n2", "n2", "n1"]);
    let filter = EventFilter {
        db: Some("d".into()),
        ..EventFilter::default()
    };
    let started = cp
        .store()
        .events(&filter)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EventKind::Started)
        .unwrap();
    assert!(
        started
            .message
            .contains("on node n1 (most memory left under the 70 % watermark"),
        "{}",
        started.message
    );
    assert!(
        started.message.contains("n2 uses 6144 of 16384 MiB"),
        "{}",
        started.message
    );
    assert_eq!(started.data["node"], "n1");
    assert_eq!(started.data["placement"]["need_bytes"], 192 << 20);

    let nodes = cp.nodes_view().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].databases, ["d"]);
    assert_eq!(nodes[1].databases, ["a", "b", "c"]);
    assert_eq!(nodes[1].allocated_memory_bytes, 6 * GIB);
    assert_eq!(nodes[1].memory_used_bytes, 6 * GIB);
    assert_eq!(nodes[1].memory_used_pct, 37.5);
    // A parked database is still placed on its node, with nothing allocated.
    cp.park("a", true).await.unwrap();
    let nodes = cp.nodes_view().await.unwrap();
    assert_eq!(nodes[1].databases, ["a", "b", "c"]);
    assert_eq!(nodes[1].allocated_memory_bytes, 4 * GIB);
    // It wakes on its own node, where its storage is.
    cp.resume("a").await.unwrap();
    assert_eq!(rt.server("a").unwrap().node, "n2");
}

#[tokio::test]
async fn a_create_no_node_has_room_for_is_refused_and_leaves_nothing() {
    let (cp, rt) = control(no_pool());
    // A new database weighs 192 MiB (its files, which its pool can fill): more than 70 % of 256.
    rt.set_nodes(&[("small", 1000, 256 << 20)]);
    let err = cp
        .create(CreateRequest {
            name: "shop".into(),
            ..CreateRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "resource_exhausted");
    assert!(
        err.to_string()
            .contains("no node has room for 192 MiB more"),
        "{err}"
    );
    assert!(cp.store().service(&db("shop")).await.unwrap().is_none());
    assert!(rt.calls().iter().all(|c| !c.starts_with("provision")));
}

/// The pool starts its spares where the next database will go, and a create claims one there.
#[tokio::test(start_paused = true)]
async fn the_warm_pool_keeps_its_spares_on_the_node_the_next_database_goes_to() {
    let (cp, rt) = control(pool_of(1, 1));
    rt.set_nodes(&[("n1", 4000, 8 * GIB), ("n2", 4000, 16 * GIB)]);
    let pool = tokio::spawn(cp.clone().run_pool());
    until("filled", || async { rt.spares() == 1 }).await;
    create(&cp, "shop").await;
    assert!(rt.calls().iter().any(|c| c.starts_with("claim_spare")));
    assert_eq!(rt.server("shop").unwrap().node, "n2");
    cp.drain_pool().await;
    pool.abort();
}

/// A database the catalog knew before nodes is given the node its storage is on at recovery.
#[tokio::test]
async fn recovery_records_the_node_of_a_database_made_before_nodes() {
    let (cp, rt) = control(no_pool());
    rt.set_nodes(&[("n1", 4000, 8 * GIB), ("n2", 4000, 16 * GIB)]);
    create(&cp, "shop").await;
    let mut svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    svc.node = None;
    cp.store().update_service(&svc).await.unwrap();
    rt.vanish("shop");
    cp.recover().await.unwrap();
    let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    assert_eq!(svc.node.as_deref(), Some("n2"));
    assert_eq!(rt.server("shop").unwrap().node, "n2");
}

/// The proxy's holds, as a migration sees them: which databases are held now, and how often.
#[derive(Default)]
struct TestGate {
    held: Arc<std::sync::Mutex<Vec<String>>>,
    holds: std::sync::atomic::AtomicU32,
}

struct Held(Arc<std::sync::Mutex<Vec<String>>>, String);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.lock().unwrap().retain(|d| d != &self.1);
    }
}

impl stratus_control::migrate::Gate for TestGate {
    fn hold(&self, db: &str) -> Option<Box<dyn Send>> {
        let mut held = self.held.lock().unwrap();
        if held.iter().any(|d| d == db) {
            return None;
        }
        held.push(db.to_owned());
        self.holds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(Box::new(Held(self.held.clone(), db.to_owned())))
    }
}

fn two_nodes() -> (Cp, FakeRuntime, Arc<TestGate>) {
    let (cp, rt) = control(no_pool());
    rt.set_nodes(&[("n1", 4000, 8 * GIB), ("n2", 4000, 16 * GIB)]);
    let gate = Arc::new(TestGate::default());
    cp.set_gate(gate.clone());
    (cp, rt, gate)
}

/// A move, phase by phase in the safe order: the copy replicates before anything is held, the
/// source's commits are held before its last position is read, the target reaches it before it
/// is promoted, and the source stops before the hold ends and goes after the target served.
#[tokio::test]
async fn a_database_moves_to_another_node_in_the_safe_order_and_says_how_long_it_took() {
    let (cp, rt, gate) = two_nodes();
    create(&cp, "shop").await;
    assert_eq!(rt.server("shop").unwrap().node, "n2");
    rt.take_calls();
    let report = cp.migrate("shop", Some("n1")).await.unwrap();
    assert_eq!((report.from.as_str(), report.to.as_str()), ("n2", "n1"));
    let calls: Vec<String> = rt
        .take_calls()
        .into_iter()
        .filter(|c| {
            [
                "start_replica",
                "wait_for_gtid",
                "block_commits",
                "gtid_binlog_pos",
                "stop_replication",
                "promote_replica",
                "stop_copy",
                "remove_copy",
            ]
            .iter()
            .any(|p| c.starts_with(p))
        })
        .map(|c| c.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        calls,
        [
            "start_replica shop",
            "gtid_binlog_pos shop",
            "wait_for_gtid shop@n1",
            "block_commits shop",
            "gtid_binlog_pos shop",
            "wait_for_gtid shop@n1",
            "stop_replication shop@n1",
            "promote_replica shop",
            "stop_copy shop",
            "remove_copy shop",
        ]
    );
    assert_eq!(gate.holds.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(gate.held.lock().unwrap().is_empty(), "released");
    let server = rt.server("shop").unwrap();
    assert_eq!(server.node, "n1");
    assert!(
        server
            .executed
            .iter()
            .any(|s| s.contains("CREATE DATABASE")),
        "the copy has the source's data"
    );
    let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    assert_eq!(
        (svc.node.as_deref(), svc.state),
        (Some("n1"), DbState::Active)
    );
    let ev = events(&cp, "shop").await;
    let (kind, message) = ev.last().unwrap();
    assert_eq!(*kind, EventKind::Migrated);
    assert!(
        message.starts_with("moved from node n2 to node n1"),
        "{message}"
    );

    // Without --to: placement, never the node it is on.
    let report = cp.migrate("shop", None).await.unwrap();
    assert_eq!(report.to, "n2");
    assert!(
        report.placement.contains("most memory left"),
        "{}",
        report.placement
    );

    // Refused before anything starts: the node it is on, a node that does not exist.
    let err = cp.migrate("shop", Some("n2")).await.unwrap_err();
    assert!(err.to_string().contains("on node n2 already"), "{err}");
    let err = cp.migrate("shop", Some("n9")).await.unwrap_err();
    assert!(err.to_string().contains("no node n9"), "{err}");
    assert!(cp.migrate("nothing", Some("n1")).await.is_err());
}

/// A move that fails in any phase leaves the database on its node, serving, with no copy left
/// and an event that names the phase.
#[tokio::test]
async fn a_move_that_fails_leaves_the_database_where_it_was_and_says_where_it_stopped() {
    let (cp, rt, gate) = two_nodes();
    create(&cp, "shop").await;
    for (op, phase) in [(Op::StartReplica, "copy"), (Op::BlockCommits, "cut-over")] {
        rt.fail(op, 1);
        let err = cp.migrate("shop", Some("n1")).await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("during the {phase}")),
            "{err}"
        );
        assert_eq!(rt.server("shop").unwrap().node, "n2");
        assert!(rt.replica("shop", "n1").is_none(), "no copy left");
        let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
        assert_eq!(
            (svc.node.as_deref(), svc.state),
            (Some("n2"), DbState::Active)
        );
        let ev = events(&cp, "shop").await;
        let (kind, message) = ev.last().unwrap();
        assert_eq!(*kind, EventKind::MigrationFailed);
        assert!(message.contains("serves on node n2"), "{message}");
        assert!(gate.held.lock().unwrap().is_empty(), "released");
    }
    // The copy that never catches up at the cut-over.
    rt.fail(Op::CatchUp, 1);
    let err = cp.migrate("shop", Some("n1")).await;
    // The first wait (catch-up) fails and is tried again; the move then goes through.
    assert!(err.is_ok(), "{err:?}");
}

/// A restart of Stratus in the middle of a move: the database serves where the catalog says and
/// the copy on the other node goes.
#[tokio::test]
async fn a_move_a_restart_of_stratus_interrupted_is_undone() {
    let (cp, rt, _gate) = two_nodes();
    create(&cp, "shop").await;
    let spec_to = stratus_runtime::InstanceSpec {
        name: db("shop"),
        resources: cp.config().scu.resources(1),
        max_resources: cp.config().scu.resources(4),
        storage_bytes: 1 << 30,
        node: "n1".into(),
    };
    use stratus_runtime::Runtime;
    rt.start_replica(&spec_to).await.unwrap();
    let mut svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    svc.state = DbState::Migrating;
    cp.store().update_service(&svc).await.unwrap();
    cp.recover().await.unwrap();
    assert!(rt.replica("shop", "n1").is_none());
    assert_eq!(rt.server("shop").unwrap().node, "n2");
    let svc = cp.store().service(&db("shop")).await.unwrap().unwrap();
    assert_eq!(svc.state, DbState::Active);
    let ev = events(&cp, "shop").await;
    assert!(
        ev.iter()
            .any(|(k, m)| *k == EventKind::MigrationFailed && m.contains("restarted")),
        "{ev:?}"
    );
}

/// Rebalancing: a node pushed over its high watermark by scaling its databases has the one that
/// is cheapest to move per byte freed moved, and only as many as bring it under its low
/// watermark; the next look finds nothing to do.
#[tokio::test]
async fn rebalancing_moves_the_cheapest_database_off_a_node_over_its_watermark_and_no_more() {
    let (cp, rt, _gate) = two_nodes();
    rt.set_nodes(&[("n1", 4000, 64 * GIB), ("n2", 4000, 8 * GIB)]);
    for name in ["a", "b", "c"] {
        create(&cp, name).await;
        assert_eq!(rt.server(name).unwrap().node, "n1");
    }
    // n1 shrinks to 10 GiB: 6 GiB of 1-SCU databases is 60 %, under the 70 % watermark.
    rt.set_nodes(&[("n1", 4000, 10 * GIB), ("n2", 4000, 64 * GIB)]);
    assert_eq!(cp.rebalance_once().await.unwrap(), 0);
    cp.scale("b", 2).await.unwrap(); // 8 of 10 GiB: over
    assert_eq!(cp.rebalance_once().await.unwrap(), 1);
    assert_eq!(
        rt.server("b").unwrap().node,
        "n2",
        "the most memory freed per move"
    );
    assert_eq!(rt.server("a").unwrap().node, "n1");
    assert_eq!(rt.server("c").unwrap().node, "n1");
    let ev = events(&cp, "b").await;
    let (kind, message) = ev.last().unwrap();
    assert_eq!(*kind, EventKind::Migrated);
    assert!(
        message.contains(
            "rebalancing: node n1 uses 8192 of 10240 MiB (80 %), over its high watermark (70 %)"
        ),
        "{message}"
    );
    assert_eq!(cp.rebalance_once().await.unwrap(), 0, "nothing more to do");
    // b moved within the cooldown: its node over the watermark, it stays all the same.
    rt.set_nodes(&[("n1", 4000, 64 * GIB), ("n2", 4000, 4 * GIB)]);
    assert_eq!(
        cp.rebalance_once().await.unwrap(),
        0,
        "moved lately: it stays"
    );
    // A node over the watermark with no other node to take anything: nothing moves.
    cp.scale("a", 4).await.unwrap();
    rt.set_nodes(&[("n1", 4000, 10 * GIB), ("n2", 4000, 4 * GIB)]);
    assert_eq!(cp.rebalance_once().await.unwrap(), 0, "no room anywhere");
    assert_eq!(rt.server("a").unwrap().node, "n1");
}
