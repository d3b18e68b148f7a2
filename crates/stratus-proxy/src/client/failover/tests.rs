//! The failover engine against a scripted server that goes away on cue (`crate::testkit`):
//! each test asserts the exact packets its client receives, what the new backend connection
//! was sent (the replay), and the outcome reported to the directory.

use crate::ProxyConfig;
use crate::backend::BackendError;
use crate::error::SqlError;
use crate::replay::Outcome;
use crate::session::BACKEND_TRACKING;
use crate::testkit::client::CAPS;
use crate::testkit::scripted_backend::{Event, Query, Reply};
use crate::testkit::{Harness, SERVICE};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratus_core::commit_marker::TABLE as MARKER_TABLE;
use stratus_wire::caps::{STATUS_AUTOCOMMIT as AUTOCOMMIT, STATUS_IN_TRANS as IN_TRANS};
use stratus_wire::response;

const READ: &str = "SELECT v FROM t";
const OTHER_READ: &str = "SELECT w FROM u";
const WRITE: &str = "UPDATE t SET v = 2";

/// A small database: `t.v` is 1, `u.w` is 7, every update changes one row.
fn tables(q: &Query<'_>) -> Reply {
    match q.sql {
        READ => Reply::rows(&["v"], &[&["1"]]),
        OTHER_READ => Reply::rows(&["w"], &[&["7"]]),
        s if s.starts_with("UPDATE") => Reply::affected(1),
        _ => Reply::ok(),
    }
}

/// The same, but `t.v` reads 2 on every connection after the first: another session changed
/// it while the server was being replaced.
fn changed_meanwhile(q: &Query<'_>) -> Reply {
    match q.sql {
        READ if q.conn > 1 => Reply::rows(&["v"], &[&["2"]]),
        _ => tables(q),
    }
}

/// `tables`, with `sql` on the first connection answered by `cut` instead.
fn first_connection(sql: &'static str, cut: Reply) -> impl Fn(&Query<'_>) -> Reply {
    move |q| {
        if q.conn == 1 && q.sql == sql {
            cut.clone()
        } else {
            tables(q)
        }
    }
}

fn ok(status: u16, affected: u64) -> Vec<Vec<u8>> {
    vec![response::ok(status, affected, CAPS)]
}

fn v(value: &str, status: u16) -> Vec<Vec<u8>> {
    Reply::rows(&["v"], &[&[value]]).packets(CAPS, status)
}

fn w(value: &str, status: u16) -> Vec<Vec<u8>> {
    Reply::rows(&["w"], &[&[value]]).packets(CAPS, status)
}

fn error(e: SqlError) -> Vec<Vec<u8>> {
    vec![e.packet()]
}

fn rolled_back(why: &str) -> Vec<Vec<u8>> {
    error(SqlError::rolled_back_by_failover(SERVICE, why))
}

#[tokio::test(start_paused = true)]
async fn an_idle_transaction_of_reads_is_replayed_when_its_client_goes_on() {
    let h = Harness::new(tables);
    let mut c = h.client().await;
    assert_eq!(c.query("BEGIN").await, ok(AUTOCOMMIT | IN_TRANS, 0));
    assert_eq!(c.query(READ).await, v("1", AUTOCOMMIT | IN_TRANS));
    h.backend.drop_connections();
    h.sessions_lost_their_backend().await;
    // It holds no locks: nothing is replayed until the client asks.
    assert_eq!(h.backend.connections(), 1);

    assert_eq!(c.query(OTHER_READ).await, w("7", AUTOCOMMIT | IN_TRANS));
    assert_eq!(
        h.backend.queries(2),
        [BACKEND_TRACKING, "BEGIN", READ, OTHER_READ]
    );
    assert_eq!(h.dir().outcomes(), [Outcome::Replayed]);
}

#[tokio::test(start_paused = true)]
async fn an_idle_transaction_that_wrote_is_replayed_before_its_client_asks() {
    let h = Harness::new(tables);
    let mut c = h.client().await;
    c.query("BEGIN").await;
    assert_eq!(c.query(WRITE).await, ok(AUTOCOMMIT | IN_TRANS, 1));
    h.backend.drop_connections();
    // Its locks are taken again at once, before statements that waited for them can run.
    h.backend.seen(Event::Query(2, WRITE.into())).await;

    assert_eq!(c.query(READ).await, v("1", AUTOCOMMIT | IN_TRANS));
    assert_eq!(
        h.backend.queries(2),
        [BACKEND_TRACKING, "BEGIN", WRITE, READ]
    );
    assert_eq!(h.dir().outcomes(), [Outcome::Replayed]);
}

#[tokio::test(start_paused = true)]
async fn a_replay_that_reads_differently_fails_the_next_statement_with_1213() {
    let h = Harness::new(changed_meanwhile);
    let mut c = h.client().await;
    c.query("BEGIN").await;
    assert_eq!(c.query(READ).await, v("1", AUTOCOMMIT | IN_TRANS));
    h.backend.drop_connections();
    h.sessions_lost_their_backend().await;

    assert_eq!(
        c.query(OTHER_READ).await,
        rolled_back("replaying it gave a different result at statement 2 of 2")
    );
    assert_eq!(
        h.backend.queries(2),
        [BACKEND_TRACKING, "BEGIN", READ, "ROLLBACK"]
    );
    // The session goes on, out of the transaction.
    assert_eq!(c.query(OTHER_READ).await, w("7", AUTOCOMMIT));
    assert_eq!(h.dir().outcomes(), [Outcome::Mismatch]);
}

/// A transaction that wrote and read, replayed while its client was idle, with a different
/// read: rolled back on the new server at once (its locks must not wait for the client).
async fn doomed_while_idle(h: &Harness) -> crate::testkit::client::TestClient {
    let mut c = h.client().await;
    c.query("BEGIN").await;
    c.query(WRITE).await;
    assert_eq!(c.query(READ).await, v("1", AUTOCOMMIT | IN_TRANS));
    h.backend.drop_connections();
    h.backend.seen(Event::Query(2, "ROLLBACK".into())).await;
    assert_eq!(
        h.backend.queries(2),
        [BACKEND_TRACKING, "BEGIN", WRITE, READ, "ROLLBACK"]
    );
    c
}

#[tokio::test(start_paused = true)]
async fn a_transaction_lost_while_idle_answers_its_next_statement_with_1213() {
    let h = Harness::new(changed_meanwhile);
    let mut c = doomed_while_idle(&h).await;
    assert_eq!(
        c.query(OTHER_READ).await,
        rolled_back("replaying it gave a different result at statement 3 of 3")
    );
    assert_eq!(c.query(OTHER_READ).await, w("7", AUTOCOMMIT));
    assert_eq!(h.dir().outcomes(), [Outcome::Mismatch]);
}

#[tokio::test(start_paused = true)]
async fn a_transaction_lost_while_idle_answers_rollback_with_ok() {
    let h = Harness::new(changed_meanwhile);
    let mut c = doomed_while_idle(&h).await;
    assert_eq!(c.query("ROLLBACK").await, ok(AUTOCOMMIT, 0));
    // Answered by the proxy: the new server's transaction was rolled back already.
    assert_eq!(
        h.backend.queries(2).last().map(String::as_str),
        Some("ROLLBACK")
    );
    assert_eq!(h.backend.queries(2).len(), 5);
    assert_eq!(h.dir().outcomes(), [Outcome::Ended]);
}

#[tokio::test(start_paused = true)]
async fn an_autocommit_write_cut_off_gets_1927_and_is_not_repeated() {
    let h = Harness::new(first_connection(WRITE, Reply::Drop));
    let mut c = h.client().await;
    assert_eq!(
        c.query(WRITE).await,
        error(SqlError::connection_lost(
            SERVICE,
            "it was not repeated: it may or may not have taken effect"
        ))
    );
    assert_eq!(h.backend.connections(), 1);
    assert_eq!(c.query(READ).await, v("1", AUTOCOMMIT));
    assert_eq!(h.backend.queries(2), [BACKEND_TRACKING, READ]);
    assert_eq!(h.dir().outcomes(), [Outcome::Unknown]);
}

#[tokio::test(start_paused = true)]
async fn a_read_cut_off_in_autocommit_is_retried_transparently() {
    let h = Harness::new(first_connection(READ, Reply::Drop));
    let mut c = h.client().await;
    assert_eq!(c.query(READ).await, v("1", AUTOCOMMIT));
    assert_eq!(h.backend.queries(1), [BACKEND_TRACKING, READ]);
    assert_eq!(h.backend.queries(2), [BACKEND_TRACKING, READ]);
    assert_eq!(h.dir().outcomes(), [Outcome::Retried]);
}

#[tokio::test(start_paused = true)]
async fn a_read_cut_off_before_any_of_its_answer_reached_the_client_is_retried() {
    // Column count and definition arrived; the rows did not. None of it was passed on.
    let partial = Reply::Cut {
        packets: 2,
        answer: Box::new(Reply::rows(&["v"], &[&["1"]])),
    };
    let h = Harness::new(first_connection(READ, partial));
    let mut c = h.client().await;
    assert_eq!(c.query(READ).await, v("1", AUTOCOMMIT));
    assert_eq!(h.dir().outcomes(), [Outcome::Retried]);
}

#[tokio::test(start_paused = true)]
async fn an_answer_cut_off_after_part_of_it_reached_the_client_closes_the_connection() {
    // Larger than what the proxy holds back before passing rows on (`relay::STREAM_CHUNK`).
    let value = "x".repeat(1000);
    let row = [value.as_str()];
    let rows: Vec<&[&str]> = (0..200).map(|_| &row[..]).collect();
    let whole = Reply::rows(&["v"], &rows);
    let full = whole.packets(CAPS, AUTOCOMMIT);
    let cut = Reply::Cut {
        packets: 150,
        answer: Box::new(whole),
    };
    let h = Harness::new(first_connection(READ, cut));
    let mut c = h.client().await;
    let got = c.query_until_closed(READ).await;
    assert!(!got.is_empty() && got.len() <= 150, "{} packets", got.len());
    assert!(
        got == full[..got.len()],
        "a prefix of the answer, then the end"
    );
    // Repeating it would show the client rows twice: it is not repeated.
    assert_eq!(h.backend.connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_statement_cut_off_in_a_transaction_runs_after_the_transaction_is_replayed() {
    let h = Harness::new(first_connection(WRITE, Reply::Drop));
    let mut c = h.client().await;
    c.query("BEGIN").await;
    assert_eq!(c.query(READ).await, v("1", AUTOCOMMIT | IN_TRANS));
    assert_eq!(c.query(WRITE).await, ok(AUTOCOMMIT | IN_TRANS, 1));
    assert_eq!(
        h.backend.queries(2),
        [BACKEND_TRACKING, "BEGIN", READ, WRITE]
    );
    // The transaction wrote: its COMMIT goes with a marker row, in the same transaction.
    assert_eq!(c.query("COMMIT").await, ok(AUTOCOMMIT, 0));
    let sent = h.backend.queries(2);
    assert!(
        sent[4].starts_with(&format!("INSERT INTO {MARKER_TABLE} ")),
        "{sent:?}"
    );
    assert_eq!(sent[5], "COMMIT");
    assert_eq!(h.dir().outcomes(), [Outcome::Replayed]);
}

/// A server that keeps commit markers: the marker row written on connection 1 survives its
/// loss only if `commits` says its `COMMIT` went through before the connection dropped.
fn markers(commits: bool) -> impl Fn(&Query<'_>) -> Reply {
    let kept: Arc<Mutex<Option<String>>> = Arc::default();
    move |q| {
        let mut kept = kept.lock().unwrap();
        if q.sql.starts_with(&format!("INSERT INTO {MARKER_TABLE} ")) {
            let txn = q
                .sql
                .split("VALUES (")
                .nth(1)
                .and_then(|s| s.split(&[',', ')']).nth(1));
            if q.conn == 1 && commits {
                *kept = txn.map(|t| t.trim().to_owned());
            }
            return Reply::affected(1);
        }
        if q.sql
            .starts_with(&format!("SELECT txn FROM {MARKER_TABLE} "))
        {
            return Reply::Rows {
                columns: vec!["txn".into()],
                rows: kept.iter().map(|t| vec![Some(t.clone())]).collect(),
            };
        }
        match (q.conn, q.sql) {
            (1, "COMMIT") => Reply::Drop,
            _ => tables(q),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_commit_cut_off_after_it_committed_is_answered_ok_and_not_replayed() {
    let h = Harness::new(markers(true));
    let mut c = h.client().await;
    c.query("BEGIN").await;
    c.query(WRITE).await;
    assert_eq!(c.query("COMMIT").await, ok(AUTOCOMMIT, 0));
    let sent = h.backend.queries(2);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[1].starts_with(&format!("SELECT txn FROM {MARKER_TABLE} ")));
    assert_eq!(h.dir().outcomes(), [Outcome::CommitConfirmed]);
}

#[tokio::test(start_paused = true)]
async fn a_commit_cut_off_before_it_committed_is_replayed_and_committed() {
    let h = Harness::new(markers(false));
    let mut c = h.client().await;
    c.query("BEGIN").await;
    c.query(WRITE).await;
    assert_eq!(c.query("COMMIT").await, ok(AUTOCOMMIT, 0));
    let checked = h.backend.queries(2);
    assert_eq!(checked.len(), 2, "{checked:?}");
    assert!(checked[1].starts_with(&format!("SELECT txn FROM {MARKER_TABLE} ")));
    // Not committed: replayed from its start, on a connection of its own, and committed.
    let sent = h.backend.queries(3);
    assert_eq!(sent.len(), 5, "{sent:?}");
    assert_eq!(sent[..3], [BACKEND_TRACKING, "BEGIN", WRITE]);
    assert!(sent[3].starts_with(&format!("INSERT INTO {MARKER_TABLE} ")));
    assert_eq!(sent[4], "COMMIT");
    assert_eq!(h.dir().outcomes(), [Outcome::Replayed]);
}

#[tokio::test(start_paused = true)]
async fn a_server_refusing_reconnects_gets_the_client_a_clear_error() {
    let h = Harness::new(tables);
    let mut c = h.client().await;
    c.query("BEGIN").await;
    c.query(READ).await;
    h.backend.refuse();
    h.backend.drop_connections();
    h.sessions_lost_their_backend().await;

    let refused = BackendError::Io(std::io::ErrorKind::ConnectionRefused.into());
    let why = format!(
        "cannot connect to its server ({}: {refused:?})",
        h.backend.addr
    );
    assert_eq!(
        c.query(OTHER_READ).await,
        error(SqlError::unavailable(SERVICE, &why))
    );
    assert_eq!(h.dir().unreachable_reports(), 3, "each refusal reported");
    assert_eq!(h.dir().outcomes(), [Outcome::GaveUp]);
    assert_eq!(h.backend.connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_server_that_accepts_and_never_answers_costs_the_wake_timeout_not_a_hang() {
    let cfg = ProxyConfig {
        wake_timeout: Duration::from_secs(5),
        ..ProxyConfig::default()
    };
    let h = Harness::with_config(cfg, tables);
    let mut c = h.client().await;
    h.backend.go_silent();
    h.backend.drop_connections();
    h.sessions_lost_their_backend().await;

    let asked = tokio::time::Instant::now();
    assert_eq!(
        c.query(READ).await,
        error(SqlError::unavailable(SERVICE, "it did not wake within 5s"))
    );
    assert_eq!(asked.elapsed(), Duration::from_secs(5));
    assert_eq!(h.backend.connections(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_server_refusing_with_an_error_passes_its_error_to_the_client() {
    let h = Harness::new(tables);
    let mut c = h.client().await;
    c.query("BEGIN").await;
    c.query(READ).await;
    h.backend.refuse_with(1040, "Too many connections");
    h.backend.drop_connections();
    h.sessions_lost_their_backend().await;

    assert_eq!(
        c.query(OTHER_READ).await,
        vec![response::err(1040, "", "Too many connections")]
    );
    assert_eq!(h.dir().outcomes(), [Outcome::GaveUp]);
    // Out of the transaction: the next statement starts afresh, once the server takes it.
    h.backend.accept();
    assert_eq!(c.query(READ).await, v("1", AUTOCOMMIT));
    assert_eq!(h.backend.queries(3), [BACKEND_TRACKING, READ]);
}

#[tokio::test(start_paused = true)]
async fn an_error_inside_a_transaction_is_replayed_as_the_same_error() {
    let missing = |q: &Query<'_>| match q.sql {
        "SELECT x FROM gone" => Reply::Err {
            code: 1146,
            message: "Table 'shop.gone' doesn't exist".into(),
        },
        _ => tables(q),
    };
    let h = Harness::new(missing);
    let mut c = h.client().await;
    c.query("BEGIN").await;
    assert_eq!(
        c.query("SELECT x FROM gone").await,
        vec![response::err(
            1146,
            "HY000",
            "Table 'shop.gone' doesn't exist"
        )]
    );
    c.query(READ).await;
    h.backend.drop_connections();
    h.sessions_lost_their_backend().await;

    assert_eq!(c.query(OTHER_READ).await, w("7", AUTOCOMMIT | IN_TRANS));
    assert_eq!(
        h.backend.queries(2),
        [
            BACKEND_TRACKING,
            "BEGIN",
            "SELECT x FROM gone",
            READ,
            OTHER_READ
        ]
    );
    assert_eq!(h.dir().outcomes(), [Outcome::Replayed]);
}

/// The chaos test's replay mismatches with commit times on (`exact_commit_times`): a session
/// whose cut-off `COMMIT` had committed got its OK at once, and its client's next transaction
/// took a lock that another session's transaction, cut off by the same crash and not yet
/// replayed, had held; that replay then read the new value and differed. What a session sends
/// after its part in a recovery is new, and waits for every other session's part.
#[tokio::test(start_paused = true)]
async fn after_a_commit_found_committed_the_next_statement_waits_for_the_others_replays() {
    const HOLDERS_WRITE: &str = "UPDATE u SET w = 8";
    const NEXT_WRITE: &str = "UPDATE u SET w = 9";
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let kept: Arc<Mutex<Option<String>>> = Arc::default();
    let h = Harness::new(move |q| {
        let mut kept = kept.lock().unwrap();
        match q.sql {
            s if s.starts_with(&format!("INSERT INTO {MARKER_TABLE} ")) => {
                // Connection 1's marker commits: the crash comes after its COMMIT went through.
                if q.conn == 1 {
                    *kept = s
                        .split("VALUES (")
                        .nth(1)
                        .and_then(|v| v.split(&[',', ')']).nth(1))
                        .map(|t| t.trim().to_owned());
                }
                Reply::affected(1)
            }
            s if s.starts_with(&format!("SELECT txn FROM {MARKER_TABLE} ")) => Reply::Rows {
                columns: vec!["txn".into()],
                rows: kept.iter().map(|t| vec![Some(t.clone())]).collect(),
            },
            "COMMIT" if q.conn == 1 => Reply::Crash,
            // The holder's replay waits until the test lets it go.
            HOLDERS_WRITE if q.conn > 2 => Reply::Held {
                gate: held.clone(),
                answer: Box::new(Reply::affected(1)),
            },
            _ => tables(q),
        }
    });
    let mut committer = h.client().await;
    committer.query("BEGIN").await;
    committer.query(WRITE).await;
    let mut holder = h.client().await;
    holder.query("BEGIN").await;
    assert_eq!(
        holder.query(HOLDERS_WRITE).await,
        ok(AUTOCOMMIT | IN_TRANS, 1)
    );

    assert_eq!(committer.query("COMMIT").await, ok(AUTOCOMMIT, 0));
    let next = tokio::spawn(async move {
        let answer = committer.query(NEXT_WRITE).await;
        (committer, answer)
    });
    let sent_next = || {
        h.backend
            .log()
            .iter()
            .any(|e| matches!(e, Event::Query(_, s) if s == NEXT_WRITE))
    };
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    // The holder's replay is under way and held.
    let replaying = h.backend.log().iter().find_map(|e| match e {
        Event::Query(c, s) if *c > 2 && s == HOLDERS_WRITE => Some(*c),
        _ => None,
    });
    assert!(
        replaying.is_some(),
        "the holder replays: {:?}",
        h.backend.log()
    );
    assert!(
        !sent_next(),
        "the committer's next statement went before the holder's replay"
    );

    gate.add_permits(1);
    let (_committer, answer) = next.await.unwrap();
    assert_eq!(answer, ok(AUTOCOMMIT, 1));
    let log = h.backend.log();
    let at = |sql: &str| {
        log.iter()
            .rposition(|e| matches!(e, Event::Query(_, s) if s == sql))
    };
    assert!(at(HOLDERS_WRITE) < at(NEXT_WRITE), "{log:?}");
    let mut outcomes = h.dir().outcomes();
    outcomes.sort_by_key(|o| o.index());
    assert_eq!(outcomes, [Outcome::Replayed, Outcome::CommitConfirmed]);
    drop(holder);
}

/// Long data waits on its backend connection for the execute, and no replay recreates it: the
/// session is pinned meanwhile (no idle suspend), and once the connection is lost anyway the
/// execute is refused rather than run with its parameter read from bytes that are not there.
/// The rest of that data does not reach the new connection; after a reset the statement runs.
#[tokio::test(start_paused = true)]
async fn an_execute_whose_long_data_was_lost_with_its_server_is_refused() {
    let h = Harness::new(tables);
    let pinned = || {
        let a = h.proxy.activity.service(SERVICE);
        a.pinned.load(std::sync::atomic::Ordering::Relaxed)
    };
    let mut c = h.client().await;
    let id = c.prepare("INSERT INTO blobs VALUES (?)").await;
    c.send_long_data(id, b"the first piece").await;
    h.backend.seen(Event::LongData(1)).await;
    h.until("long data pins the session", || pinned() == 1)
        .await;

    h.backend.drop_connections();
    h.sessions_lost_their_backend().await;
    assert_eq!(pinned(), 0, "nothing is left on a connection that is gone");
    c.send_long_data(id, b"the second piece").await;
    assert_eq!(
        c.execute(id).await,
        SqlError::long_data_lost(SERVICE).packet()
    );
    let long_data = |conn| {
        let log = h.backend.log();
        let n = |e: &Event| matches!(e, Event::LongData(c) | Event::Executed(c) if *c == conn);
        log.iter().filter(|e| n(e)).count()
    };
    assert_eq!(
        long_data(2),
        0,
        "the new connection got part of the data, or the execute"
    );

    c.send_long_data(id, b"sent again").await;
    let answer = c.execute(id).await;
    assert_eq!(
        answer.first(),
        Some(&0x00),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(long_data(2), 2);
    assert_eq!(pinned(), 0);
}

/// Inside a transaction whose server was lost while the client sat idle, long data goes to
/// the transaction's log: the next execute's replay sends the transaction first, then the
/// data, on the new connection. (Connecting for the data alone would run the execute outside
/// the transaction, with the rest of the transaction gone.)
#[tokio::test(start_paused = true)]
async fn long_data_sent_into_a_transaction_whose_server_was_lost_follows_its_replay() {
    let h = Harness::new(tables);
    let mut c = h.client().await;
    let id = c.prepare("INSERT INTO blobs VALUES (?)").await;
    c.query("BEGIN").await;
    assert_eq!(c.query(READ).await, v("1", AUTOCOMMIT | IN_TRANS));
    h.backend.drop_connections();
    h.sessions_lost_their_backend().await;
    c.send_long_data(id, b"after the loss").await;
    assert_eq!(c.execute(id).await.first(), Some(&0x00));
    let on_new: Vec<Event> = h
        .backend
        .log()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::Query(2, _)
                    | Event::Prepared(2, _)
                    | Event::LongData(2)
                    | Event::Executed(2)
            )
        })
        .collect();
    assert_eq!(
        on_new,
        [
            Event::Query(2, BACKEND_TRACKING.into()),
            Event::Query(2, "BEGIN".into()),
            Event::Query(2, READ.into()),
            Event::Prepared(2, "INSERT INTO blobs VALUES (?)".into()),
            Event::LongData(2),
            Event::Executed(2),
        ]
    );
}
