//! Kept connections against a scripted server (`crate::testkit`): reset when kept, logged in
//! again when reused, and replaced when their server went away meanwhile.

use crate::session::BACKEND_TRACKING;
use crate::testkit::client::CAPS;
use crate::testkit::scripted_backend::{Event, Query, Reply};
use crate::testkit::{Harness, SERVICE};
use std::sync::atomic::Ordering;
use stratus_wire::caps::STATUS_AUTOCOMMIT;

const READ: &str = "SELECT v FROM t";

fn tables(_: &Query<'_>) -> Reply {
    Reply::rows(&["v"], &[&["1"]])
}

async fn kept(h: &Harness, n: u64) {
    let pooled = &h.proxy.activity.service(SERVICE).pooled;
    h.until("the connection is kept", || {
        pooled.load(Ordering::Relaxed) == n
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_kept_connection_is_logged_in_again_and_a_dead_one_replaced() {
    let h = Harness::new(tables);
    let answer = Reply::rows(&["v"], &[&["1"]]).packets(CAPS, STATUS_AUTOCOMMIT);
    let mut c = h.client().await;
    assert_eq!(c.query(READ).await, answer);
    c.quit().await;
    kept(&h, 1).await;
    assert!(h.backend.log().contains(&Event::Reset(1)));

    // The next client gets it, after the server checked the account again.
    let mut c = h.client().await;
    assert_eq!(c.query(READ).await, answer);
    assert_eq!(h.backend.connections(), 1);
    let log = h.backend.log();
    let reset = log.iter().position(|e| *e == Event::Reset(1));
    let change = log.iter().position(|e| *e == Event::ChangeUser(1));
    assert!(reset < change, "{log:?}");
    assert_eq!(
        h.backend.queries(1),
        [
            BACKEND_TRACKING,
            READ,
            // Asked before it is kept: a role on it would pass to the next session.
            "SELECT CURRENT_ROLE() IS NULL",
            BACKEND_TRACKING,
            BACKEND_TRACKING,
            READ
        ]
    );
    c.quit().await;
    kept(&h, 1).await;

    // Its server goes away while it is kept: the next client gets a new connection.
    h.backend.drop_connections();
    h.backend.seen(Event::Closed(1)).await;
    let mut c = h.client().await;
    assert_eq!(c.query(READ).await, answer);
    assert_eq!(h.backend.queries(2), [BACKEND_TRACKING, READ]);
}

#[tokio::test(start_paused = true)]
async fn a_kept_connection_unused_too_long_is_closed_by_the_sweep() {
    let h = Harness::new(tables);
    let idle = h.proxy.cfg.pool_idle_timeout;
    let c = h.client().await;
    c.quit().await;
    kept(&h, 1).await;

    let pooled = || {
        h.proxy
            .activity
            .service(SERVICE)
            .pooled
            .load(Ordering::Relaxed)
    };
    // Not yet: a sweep leaves it.
    crate::pool::sweep(idle, &h.proxy.activity).await;
    assert_eq!(pooled(), 1);

    tokio::time::advance(idle + std::time::Duration::from_secs(1)).await;
    crate::pool::sweep(idle, &h.proxy.activity).await;
    assert_eq!(pooled(), 0);
    h.backend.seen(Event::Closed(1)).await;
}

/// With sessions on the proxy's own runtime (`threads = 0`), the proxy sweeps that runtime's
/// pool itself: no session thread is there to be asked.
#[tokio::test(start_paused = true)]
async fn sessions_on_the_callers_runtime_have_their_pool_swept_too() {
    let cfg = crate::ProxyConfig {
        threads: 0,
        ..crate::ProxyConfig::default()
    };
    let h = Harness::with_config(cfg, tables);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let serving = tokio::spawn(h.proxy.clone().serve(listener));
    let c = h.client().await;
    c.quit().await;
    kept(&h, 1).await;
    tokio::time::sleep(h.proxy.cfg.pool_idle_timeout * 2).await;
    h.backend.seen(Event::Closed(1)).await;
    kept(&h, 0).await;
    serving.abort();
}
