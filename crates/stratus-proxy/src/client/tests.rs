//! What a session tells the control plane (`crate::activity`), as its client receives each
//! answer: a client (or the person behind it) acts on an answer at once, from any thread, and an
//! operator's suspend or park refuses while a statement runs or a transaction is open, so the
//! gauges must already say what the answer says when its bytes are written.

use crate::activity::ActivitySnapshot;
use crate::testkit::client::TestClient;
use crate::testkit::scripted_backend::{Query, Reply};
use crate::testkit::{Harness, SERVICE};
use std::sync::{Arc, Mutex};

fn server(q: &Query<'_>) -> Reply {
    match q.sql {
        "SELECT 1" => Reply::rows(&["1"], &[&["1"]]),
        s if s.starts_with("INSERT") => Reply::affected(1),
        _ => Reply::ok(),
    }
}

/// A client, and the database's gauges as they stood at the proxy's latest write to it.
async fn watched(h: &Harness) -> (TestClient, impl Fn() -> ActivitySnapshot) {
    let seen = Arc::new(Mutex::new(ActivitySnapshot::default()));
    let (proxy, record) = (h.proxy.clone(), seen.clone());
    let on_write = move || *record.lock().unwrap() = proxy.activity.snapshot(SERVICE);
    let client = h.client_watched(Some(Arc::new(on_write))).await;
    (client, move || *seen.lock().unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_statement_is_over_for_the_control_plane_when_its_answer_goes_out() {
    let h = Harness::new(server);
    let (mut c, at_answer) = watched(&h).await;
    for sql in ["SELECT 1", "INSERT INTO t VALUES (1)", "SET @a = 1"] {
        c.query(sql).await;
        assert_eq!(at_answer().running, 0, "still running at its answer: {sql}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_transaction_is_open_and_then_over_as_its_client_hears_it() {
    let h = Harness::new(server);
    let (mut c, at_answer) = watched(&h).await;
    c.query("BEGIN").await;
    assert_eq!(at_answer().in_transaction, 1);
    c.query("INSERT INTO t VALUES (1)").await;
    assert_eq!(at_answer().in_transaction, 1);
    c.query("COMMIT").await;
    let a = at_answer();
    assert_eq!((a.running, a.in_transaction), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn state_only_the_backend_holds_counts_as_its_client_hears_of_it() {
    let h = Harness::new(server);
    let (mut c, at_answer) = watched(&h).await;
    c.query("CREATE TEMPORARY TABLE tmp (a INT)").await;
    assert_eq!(
        at_answer().pinned,
        1,
        "the temporary table pins the session"
    );
    c.query("DROP TEMPORARY TABLE tmp").await;
    assert_eq!(at_answer().pinned, 0);
    c.query("SET @a = 1").await;
    assert_eq!(
        at_answer().unread_vars,
        1,
        "a user variable not read back yet"
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_the_proxy_gives_itself_after_a_failover_ends_the_statement_first() {
    let h = Harness::new(server);
    let (mut c, at_answer) = watched(&h).await;
    c.query("BEGIN").await;
    c.query("SELECT 1").await;
    h.backend.drop_connections();
    h.sessions_lost_their_backend().await;
    // A transaction of reads cut off by a crash: COMMIT is answered by the proxy (`ended`).
    c.query("COMMIT").await;
    let a = at_answer();
    assert_eq!((a.running, a.in_transaction), (0, 0));
}

/// What statements do to the session's pins, beyond what the classifier says of each.
#[test]
fn named_locks_and_temporary_tables_a_batch_takes_and_releases() {
    use stratus_wire::classify::{Pin, classify_all};
    let effects = |sql: &str| super::effects(sql.as_bytes(), &classify_all(sql.as_bytes()));

    let e = effects("SELECT GET_LOCK('a', 0), GET_LOCK(@b, 0)");
    assert_eq!(e.pin, [Pin::NamedLock, Pin::NamedLock], "each call counts");
    assert_eq!(e.lock_names, [Some("a".to_owned()), None]);
    assert!(!e.release_all_locks);

    assert!(effects("DO RELEASE_ALL_LOCKS()").release_all_locks);
    // Whatever the order, a lock taken in the batch is held after it.
    for sql in [
        "DO RELEASE_ALL_LOCKS(); DO GET_LOCK('a', 0)",
        "DO GET_LOCK('a', 0); DO RELEASE_ALL_LOCKS()",
    ] {
        assert!(!effects(sql).release_all_locks, "{sql}");
    }

    let alone = effects("DROP TEMPORARY TABLE IF EXISTS t");
    assert_eq!(
        (alone.unpin, alone.drop_if_exists),
        (vec![Pin::TempTable], true),
        "counted unless the answer has a note"
    );
    let batch = effects("DROP TEMPORARY TABLE IF EXISTS t; SELECT 1");
    assert!(batch.unpin.is_empty(), "the note may be lost among others");
    let plain = effects("DROP TEMPORARY TABLE t");
    assert_eq!(
        (plain.unpin, plain.drop_if_exists),
        (vec![Pin::TempTable], false)
    );
    let quiet = effects("SET STATEMENT sql_notes = 0 FOR DROP TEMPORARY TABLE IF EXISTS t");
    assert!(quiet.unpin.is_empty(), "no note to tell a missing table");

    // A statement that pins for another reason may take locks too.
    let both = effects("CREATE TEMPORARY TABLE t SELECT GET_LOCK('a', 0) AS got");
    assert_eq!(both.pin, [Pin::TempTable, Pin::NamedLock]);
    assert_eq!(both.lock_names, [Some("a".to_owned())]);
    let table = effects("CREATE TEMPORARY TABLE t (a INT)");
    assert!(table.lock_names.is_empty());
}

/// The role a session sets is kept as its statement, to run again on a new connection.
#[test]
fn a_set_role_statement_is_kept_as_written() {
    use stratus_wire::classify::classify_all;
    let effects = |sql: &[u8]| super::effects(sql, &classify_all(sql));
    let e = effects(b"SELECT 1; SET ROLE `read er`; DO 2");
    assert_eq!(e.role.as_deref(), Some("SET ROLE `read er`"));
    assert!(!e.opaque);
    assert_eq!(
        effects(b"SET ROLE NONE").role.as_deref(),
        Some("SET ROLE NONE")
    );
    assert_eq!(
        effects(b"SET DEFAULT ROLE r").role,
        None,
        "an account's setting"
    );
    // Not UTF-8 (a latin1 name): it could not be sent again as it was.
    let odd = effects(b"SET ROLE `r\xe9`");
    assert_eq!((odd.role, odd.opaque), (None, true));
}

/// `COM_PROCESS_KILL` (`mysql_kill()`, as PyMySQL's `kill()` sends it) is `KILL CONNECTION` of
/// the id it carries, found as the statement's is: the server knows no greeting id. A payload
/// too short for an id is malformed.
#[tokio::test(start_paused = true)]
async fn com_process_kill_ends_the_session_its_id_names() {
    use stratus_wire::command::COM_PROCESS_KILL;
    let h = Harness::new(server);
    let mut victim = h.client().await;
    victim.query("SELECT 1").await;
    assert!(crate::GREETING_IDS.contains(&victim.id));
    let mut killer = h.client().await;
    let mut payload = vec![COM_PROCESS_KILL];
    payload.extend_from_slice(&victim.id.to_le_bytes());
    assert_eq!(killer.command(&payload).await.first(), Some(&0x00));
    // Closed without a word, as the server closes a connection another one killed.
    assert_eq!(victim.until_closed().await, Vec::<Vec<u8>>::new());

    let malformed = crate::error::SqlError::malformed_packet().packet();
    assert_eq!(killer.command(&[COM_PROCESS_KILL, 1]).await, malformed);
    assert_eq!(
        killer.query("SELECT 1").await.len(),
        4,
        "the session goes on"
    );
}

/// `KILL 0` names no thread (0 is what a session without a backend connection has): unknown,
/// as on a server, whoever sits idle without one.
#[tokio::test(start_paused = true)]
async fn kill_0_names_no_session() {
    let cfg = crate::ProxyConfig {
        release_idle_after: std::time::Duration::from_secs(1),
        ..crate::ProxyConfig::default()
    };
    let h = Harness::with_config(cfg, server);
    let mut idle = h.client().await;
    idle.query("SELECT 1").await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut killer = h.client().await;
    let answer = killer.query("KILL 0").await;
    assert_eq!(answer, [crate::error::SqlError::no_such_thread(0).packet()]);
    assert_eq!(
        idle.query("SELECT 1").await.len(),
        4,
        "the idle session goes on"
    );
}

/// Every client connection holds its session's task for as long as it lives, and the task is as
/// large as the largest future the session ever awaits in place: connecting to a server (waking
/// it, logging in, TLS) made it 8 KiB in a debug build, half of what an idle client cost
/// (#15's goal: 16 KiB). Such rare, large paths are boxed; this keeps them so.
#[tokio::test]
async fn a_sessions_task_is_small() {
    let h = Harness::new(server);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    let task = crate::client::run(h.proxy.clone(), stream, "127.0.0.1:1".parse().unwrap());
    let size = std::mem::size_of_val(&task);
    assert!(size <= 5 * 1024, "a session's task takes {size} bytes");
}
