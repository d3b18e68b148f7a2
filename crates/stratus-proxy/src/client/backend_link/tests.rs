//! Idle clients give their backend connection back (`release_idle`), against a scripted server
//! on the paused clock: when, when not, and what the next connection is given.

use crate::session::BACKEND_TRACKING;
use crate::testkit::client::CAPS;
use crate::testkit::scripted_backend::{Event, Query, Reply};
use crate::testkit::{Harness, SERVICE};
use std::sync::atomic::Ordering;
use std::time::Duration;
use stratus_wire::caps::STATUS_AUTOCOMMIT;

fn server(q: &Query<'_>) -> Reply {
    match q.sql {
        "SELECT 1" => Reply::rows(&["1"], &[&["1"]]),
        "SELECT LAST_INSERT_ID()" => Reply::rows(&["LAST_INSERT_ID()"], &[&["42"]]),
        // Asked of every connection before it is kept.
        "SELECT CURRENT_ROLE() IS NULL" => Reply::rows(&["no role"], &[&["1"]]),
        _ => Reply::ok(),
    }
}

/// Longer than the default `release_idle_after` (10 s).
const IDLE: Duration = Duration::from_secs(11);

/// (backend connections held by sessions, kept in the pool, idle releases so far)
fn counts(h: &Harness) -> (u64, u64, u64) {
    let a = h.proxy.activity.service(SERVICE);
    let l = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    (l(&a.backends), l(&a.pooled), l(&a.idle_releases))
}

async fn released(h: &Harness, n: u64) {
    h.until("the idle session's connection is in the pool", || {
        counts(h) == (0, 1, n)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_clients_connection_goes_back_to_the_pool_and_its_next_command_takes_it_again() {
    let h = Harness::new(server);
    let one = Reply::rows(&["1"], &[&["1"]]).packets(CAPS, STATUS_AUTOCOMMIT);
    let mut c = h.client().await;
    assert_eq!(c.query("SELECT 1").await, one);
    assert_eq!(counts(&h), (1, 0, 0));

    tokio::time::sleep(IDLE).await;
    released(&h, 1).await;
    assert!(h.backend.log().contains(&Event::Reset(1)));

    // The next command logs in again on the kept connection, which is given the session and
    // the LAST_INSERT_ID() the old one had, before the command.
    assert_eq!(c.query("SELECT 1").await, one);
    assert_eq!(counts(&h), (1, 0, 1));
    assert_eq!(h.backend.connections(), 1);
    assert!(h.backend.log().contains(&Event::ChangeUser(1)));
    assert_eq!(
        h.backend.queries(1),
        [
            BACKEND_TRACKING,
            "SELECT 1",
            "SELECT LAST_INSERT_ID()",
            "SELECT CURRENT_ROLE() IS NULL",
            BACKEND_TRACKING,
            BACKEND_TRACKING,
            "DO LAST_INSERT_ID(42)",
            "SELECT 1",
        ]
    );

    // And it is released again after the next idle spell.
    tokio::time::sleep(IDLE).await;
    released(&h, 2).await;
}

#[tokio::test(start_paused = true)]
async fn a_client_that_keeps_talking_keeps_its_connection() {
    let h = Harness::new(server);
    let mut c = h.client().await;
    for _ in 0..6 {
        c.query("SELECT 1").await;
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    assert_eq!(counts(&h), (1, 0, 0));
    assert_eq!(h.backend.connections(), 1);
    assert!(!h.backend.log().contains(&Event::Reset(1)));
}

#[tokio::test(start_paused = true)]
async fn a_session_in_a_transaction_or_with_a_temporary_table_keeps_its_connection() {
    let h = Harness::new(server);
    let mut c = h.client().await;
    c.query("BEGIN").await;
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(counts(&h), (1, 0, 0), "released inside a transaction");
    c.query("COMMIT").await;

    c.query("CREATE TEMPORARY TABLE scratch (a INT)").await;
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(counts(&h), (1, 0, 0), "released with a temporary table");
    c.query("DROP TEMPORARY TABLE scratch").await;

    // Once nothing ties it, the next idle spell releases it.
    tokio::time::sleep(IDLE).await;
    released(&h, 1).await;
}

#[tokio::test(start_paused = true)]
async fn releases_are_off_at_zero() {
    let cfg = crate::ProxyConfig {
        release_idle_after: Duration::ZERO,
        ..crate::ProxyConfig::default()
    };
    let h = Harness::with_config(cfg, server);
    let mut c = h.client().await;
    c.query("SELECT 1").await;
    tokio::time::sleep(IDLE * 10).await;
    assert_eq!(counts(&h), (1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn state_the_proxy_cannot_see_or_replay_keeps_the_connection() {
    let h = Harness::new(server);
    // A procedure may take locks or make temporary tables the proxy does not see; so may a
    // statement run by EXECUTE; a statement prepared from a variable would be prepared again
    // from its later value; one-shot transaction characteristics live on the connection only.
    for sql in [
        "CALL take_a_lock()",
        "EXECUTE IMMEDIATE 'SELECT GET_LOCK(''l'', 0)'",
        "PREPARE s FROM @query",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ] {
        let mut c = h.client().await;
        c.query(sql).await;
        tokio::time::sleep(IDLE * 3).await;
        assert_eq!(counts(&h), (1, 0, 0), "released after {sql}");
        c.quit().await;
        h.until("the connection is kept", || counts(&h).1 == 1)
            .await;
        // The next client takes the kept one.
    }
}

#[tokio::test(start_paused = true)]
async fn the_next_transaction_uses_its_characteristics_and_the_connection_is_free_again() {
    let h = Harness::new(server);
    let mut c = h.client().await;
    c.query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        .await;
    tokio::time::sleep(IDLE * 2).await;
    assert_eq!(counts(&h), (1, 0, 0));
    c.query("BEGIN").await;
    c.query("COMMIT").await;
    tokio::time::sleep(IDLE).await;
    released(&h, 1).await;
}

#[tokio::test(start_paused = true)]
async fn a_session_whose_password_changed_keeps_its_connection() {
    let h = Harness::new(server);
    let mut c = h.client().await;
    c.query("SELECT 1").await;
    // Another session changed the account's password: a new connection would be refused.
    h.dir().set_password("rotated");
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(counts(&h), (1, 0, 0));
    assert_eq!(
        c.query("SELECT 1").await,
        Reply::rows(&["1"], &[&["1"]]).packets(CAPS, STATUS_AUTOCOMMIT)
    );
}

/// The server's answer to the idle release's question about lock `l`, whichever way `held`
/// says; `GET_LOCK` and `RELEASE_LOCK` change nothing here, as a lock not held would not.
fn lock_server(
    held: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> impl Fn(&Query<'_>) -> Reply {
    move |q| match q.sql {
        "SELECT IS_USED_LOCK('l') <=> CONNECTION_ID()" => {
            let v = if held.load(Ordering::Relaxed) {
                "1"
            } else {
                "0"
            };
            Reply::rows(&["held"], &[&[v]])
        }
        _ => server(q),
    }
}

#[tokio::test(start_paused = true)]
async fn a_named_lock_keeps_the_connection_for_as_long_as_the_server_says_it_is_held() {
    let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = Harness::new(lock_server(held.clone()));
    let mut c = h.client().await;
    c.query("SELECT GET_LOCK('l', 0)").await;
    // Releasing a lock the session does not hold releases nothing: counting calls would
    // say the session holds none.
    c.query("SELECT RELEASE_LOCK('another')").await;
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(counts(&h), (1, 0, 0), "released while holding a named lock");
    assert!(
        h.backend
            .queries(1)
            .contains(&"SELECT IS_USED_LOCK('l') <=> CONNECTION_ID()".to_owned()),
        "the server was asked"
    );

    held.store(false, Ordering::Relaxed);
    c.query("SELECT RELEASE_LOCK('l')").await;
    tokio::time::sleep(IDLE).await;
    released(&h, 1).await;
}

/// The lifecycle's view of the same: a session is pinned (no idle suspend) while it may hold a
/// named lock, and once idle the server is asked, without the idle release.
#[tokio::test(start_paused = true)]
async fn a_named_lock_pins_the_session_until_the_server_says_it_is_free() {
    let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let cfg = crate::ProxyConfig {
        release_idle_after: Duration::ZERO,
        ..crate::ProxyConfig::default()
    };
    let h = Harness::with_config(cfg, lock_server(held.clone()));
    let pinned = || {
        h.proxy
            .activity
            .service(SERVICE)
            .pinned
            .load(Ordering::Relaxed)
    };
    let asked = || {
        let q = h.backend.queries(1);
        let ask = "SELECT IS_USED_LOCK('l') <=> CONNECTION_ID()";
        q.iter().filter(|s| *s == ask).count()
    };
    let mut c = h.client().await;
    c.query("SELECT GET_LOCK('l', 0)").await;
    c.query("SELECT RELEASE_LOCK('another')").await;
    assert_eq!(
        pinned(),
        1,
        "a RELEASE_LOCK that released nothing unpinned the session"
    );
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!((pinned(), asked()), (1, 1), "asked once per idle spell");

    held.store(false, Ordering::Relaxed);
    c.query("SELECT RELEASE_LOCK('l')").await;
    assert_eq!(
        pinned(),
        1,
        "unpinned before the server said the lock is free"
    );
    tokio::time::sleep(IDLE).await;
    h.until("the server said the lock is free", || pinned() == 0)
        .await;
    assert_eq!(asked(), 2);
    assert_eq!(counts(&h), (1, 0, 0), "released although releases are off");
}

#[tokio::test(start_paused = true)]
async fn a_lock_by_a_name_the_proxy_cannot_read_keeps_the_connection_until_all_are_released() {
    let h = Harness::new(server);
    let mut c = h.client().await;
    c.query("SELECT GET_LOCK(CONCAT('job-', 7), 0)").await;
    c.query("SELECT RELEASE_LOCK(CONCAT('job-', 7))").await;
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(counts(&h), (1, 0, 0), "released after a RELEASE_LOCK");
    c.query("DO RELEASE_ALL_LOCKS()").await;
    tokio::time::sleep(IDLE).await;
    released(&h, 1).await;
}

#[tokio::test(start_paused = true)]
async fn dropping_a_temporary_table_that_does_not_exist_leaves_the_others_counted() {
    let h = Harness::new(|q: &Query<'_>| match q.sql {
        // The server's note: unknown table.
        "DROP TEMPORARY TABLE IF EXISTS missing" => Reply::warned(1),
        _ => server(q),
    });
    let mut c = h.client().await;
    c.query("CREATE TEMPORARY TABLE scratch (a INT)").await;
    c.query("DROP TEMPORARY TABLE IF EXISTS missing").await;
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(counts(&h), (1, 0, 0), "released with a temporary table");
    c.query("DROP TEMPORARY TABLE IF EXISTS scratch").await;
    tokio::time::sleep(IDLE).await;
    released(&h, 1).await;
}

#[tokio::test(start_paused = true)]
async fn long_data_waiting_for_its_execute_keeps_the_connection() {
    let h = Harness::new(server);
    let mut c = h.client().await;
    let id = c.prepare("INSERT INTO blobs VALUES (?)").await;
    c.send_long_data(id, b"a large value, in pieces").await;
    tokio::time::sleep(IDLE * 3).await;
    assert_eq!(counts(&h), (1, 0, 0), "released with long data waiting");
    assert_eq!(c.execute(id).await.first(), Some(&0x00));
    assert_eq!(
        h.backend
            .log()
            .iter()
            .filter(|e| matches!(e, Event::LongData(1) | Event::Executed(1)))
            .count(),
        2,
        "the data and its execute went to the same connection"
    );
    tokio::time::sleep(IDLE).await;
    released(&h, 1).await;
}
