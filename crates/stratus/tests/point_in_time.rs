//! Point-in-time restore end to end: a ledger written without pause, a time T taken between two
//! of its transactions, and `db restore --time T` must bring back exactly what was committed at
//! T, no transaction more and none less; also after `mariadbd` was killed between T and the
//! restore (from an incremental backup), as a branch (`db branch --time`), and after the source
//! was deleted (and another
//! database made under its name).

mod common;

use common::{Stratus, now_rfc3339};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A time and the ledger then.
type Mark = (String, Vec<(u64, i64)>);

/// The ledger as a client sees it: every entry, in order.
async fn ledger(c: &mut Conn) -> Vec<(u64, i64)> {
    c.query("SELECT id, amount FROM ledger ORDER BY id")
        .await
        .unwrap()
}

/// Writes transactions back to back (an entry and the running balance, in one transaction)
/// until `stop`; on a request, notes the time right after a commit, and the ledger then, before
/// its next transaction begins. Through a crash of the server it carries on: the proxy keeps
/// its session.
async fn writer(
    mut c: Conn,
    stop: Arc<AtomicBool>,
    mut marks: mpsc::Receiver<oneshot::Sender<Mark>>,
) -> u64 {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let amount = (n % 7) as i64 + 1;
        let tx: Result<(), mysql_async::Error> = async {
            c.query_drop("BEGIN").await?;
            c.exec_drop("INSERT INTO ledger (amount) VALUES (?)", (amount,))
                .await?;
            c.exec_drop(
                "UPDATE balance SET total = total + ? WHERE id = 1",
                (amount,),
            )
            .await?;
            c.query_drop("COMMIT").await
        }
        .await;
        // A crash under it is the proxy's to hide: the transaction is carried over.
        tx.unwrap_or_else(|e| panic!("transaction {n}: {e}"));
        n += 1;
        if let Ok(reply) = marks.try_recv() {
            let t = now_rfc3339();
            let _ = reply.send((t, ledger(&mut c).await));
        }
    }
    n
}

async fn mark(marks: &mpsc::Sender<oneshot::Sender<Mark>>) -> Mark {
    let (tx, rx) = oneshot::channel();
    marks.send(tx).await.unwrap();
    rx.await.unwrap()
}

/// The owner's connection to database `db` (every database here has password `pw-bank`).
async fn connect(s: &Stratus, db: &str) -> Conn {
    Conn::new(s.sql_opts(&format!("{db}.admin"), "pw-bank", Some("bank")))
        .await
        .unwrap()
}

async fn restored_ledger(s: &Stratus, db: &str) -> (Vec<(u64, i64)>, i64) {
    let mut c = connect(s, db).await;
    let rows = ledger(&mut c).await;
    let total: Option<i64> = c
        .query_first("SELECT total FROM balance WHERE id = 1")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    (rows, total.unwrap())
}

fn sum(rows: &[(u64, i64)]) -> i64 {
    rows.iter().map(|r| r.1).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_to_a_time_has_exactly_the_transactions_committed_by_then() {
    // The defaults: exact to the transaction, every commit waits for Stratus to note its time.
    let mut s = Stratus::new("pitr");
    s.start();
    s.json(&["db", "create", "bank", "--password", "pw-bank"]);
    let mut c = connect(&s, "bank").await;
    c.query_drop(
        "CREATE TABLE ledger (id BIGINT PRIMARY KEY AUTO_INCREMENT, amount INT NOT NULL); \
         CREATE TABLE balance (id INT PRIMARY KEY, total BIGINT NOT NULL); \
         INSERT INTO balance VALUES (1, 0)",
    )
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (marks, rx) = mpsc::channel(1);
    let w = tokio::spawn(writer(c, stop.clone(), rx));

    // A backup taken under the writes, then more of them.
    let b = s.json(&["backup", "create", "bank"]);
    assert_eq!(b["verified"], true, "{b}");
    tokio::time::sleep(Duration::from_millis(700)).await; // workload, not readiness
    let (t1, at_t1) = mark(&marks).await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let restored = s.json(&["db", "restore", "bank", "--to", "bank-t1", "--time", &t1]);
    assert_eq!(restored["state"], "active", "{restored}");
    let (rows, total) = restored_ledger(&s, "bank-t1").await;
    assert!(at_t1.len() > 10, "a workload ran: {}", at_t1.len());
    assert_eq!(rows.len(), at_t1.len(), "entries at {t1}");
    assert_eq!(rows, at_t1, "the ledger at {t1}, exactly");
    assert_eq!(total, sum(&at_t1), "the balance agrees with the ledger");

    // An incremental backup on top of the full one: the base of the restores to later times.
    let inc = s.json(&["backup", "create", "bank", "--incremental"]);
    assert_eq!(
        (&inc["kind"], &inc["base"], &inc["verified"]),
        (&"incremental".into(), &b["id"], &true.into()),
        "{inc}"
    );
    let err = s.fails(&["backup", "delete", b["id"].as_str().unwrap()]);
    assert!(err.contains("base of incremental"), "{err}");

    // `mariadbd` killed between T and the restore: the writer carries on through the proxy.
    let (t2, at_t2) = mark(&marks).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = s.json(&["db", "show", "bank"])["pid"].as_u64().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let begin = std::time::Instant::now();
    while s.json(&["db", "show", "bank"])["pid"].as_u64() == Some(pid) {
        assert!(begin.elapsed() < Duration::from_secs(30), "not restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // workload
    let (t3, at_t3) = mark(&marks).await;
    assert!(at_t3.len() > at_t2.len(), "writes went on after the crash");
    stop.store(true, Ordering::Relaxed);
    let written = w.await.unwrap();

    let mut c = connect(&s, "bank").await;
    let source = ledger(&mut c).await;
    c.disconnect().await.unwrap();
    assert_eq!(
        source.len() as u64,
        written,
        "every acknowledged commit is in the source"
    );
    let restored = s.json(&["db", "restore", "bank", "--to", "bank-t2", "--time", &t2]);
    let events = s.json(&["events", "--db", "bank-t2", "--limit", "20"]);
    assert!(
        events.to_string().contains(inc["id"].as_str().unwrap()),
        "restored from the incremental backup: {events}"
    );
    assert_eq!(restored["state"], "active");
    let (rows, total) = restored_ledger(&s, "bank-t2").await;
    assert_eq!(rows, at_t2, "the ledger at {t2}, after a crash");
    assert_eq!(total, sum(&at_t2));
    // A branch at a past time is the same restore.
    s.json(&["db", "branch", "bank", "bank-t3", "--time", &t3]);
    assert_eq!(
        restored_ledger(&s, "bank-t3").await.0,
        at_t3,
        "at {t3}, after the crash"
    );

    // The source is untouched by all of it.
    let mut c = connect(&s, "bank").await;
    assert_eq!(ledger(&mut c).await, source);
    c.disconnect().await.unwrap();

    // A deleted database is restored to a time while its backups are kept, under its own
    // name: the new `bank` has a binary log of its own (from file 1 again), archived apart.
    s.json(&["db", "delete", "bank", "--yes"]);
    s.json(&["db", "restore", "bank", "--to", "bank", "--time", &t2]);
    assert_eq!(restored_ledger(&s, "bank").await.0, at_t2);
    let mut c = connect(&s, "bank").await;
    let b = s.json(&["backup", "create", "bank"]);
    assert_eq!(b["verified"], true, "{b}");
    c.query_drop("INSERT INTO ledger (amount) VALUES (100)")
        .await
        .unwrap();
    let t4 = now_rfc3339();
    let at_t4 = ledger(&mut c).await;
    c.query_drop("INSERT INTO ledger (amount) VALUES (200)")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    s.json(&["db", "restore", "bank", "--to", "bank-t4", "--time", &t4]);
    assert_eq!(
        restored_ledger(&s, "bank-t4").await.0,
        at_t4,
        "the new bank at {t4}"
    );
    s.json(&["db", "restore", "bank", "--to", "bank-old", "--time", &t2]);
    assert_eq!(
        restored_ledger(&s, "bank-old").await.0,
        at_t2,
        "the deleted bank at {t2}, still"
    );

    // A time in the future, or before any backup, is refused with a reason.
    let err = s.fails(&[
        "db",
        "restore",
        "bank",
        "--to",
        "x",
        "--time",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(err.contains("future"), "{err}");
    let err = s.fails(&[
        "db",
        "restore",
        "bank",
        "--to",
        "x",
        "--time",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(err.contains("backup"), "{err}");
    let err = s.fails(&["db", "restore", "bank", "--to", "x", "--time", "yesterday"]);
    assert!(err.contains("RFC 3339"), "{err}");
    s.stop();
}

/// A `stratus up` without the commit clock, and database `bank` with a ledger of one row, a
/// verified backup, then a second row; the owner's connection and the backup.
async fn without_clock(tag: &str) -> (Stratus, Conn, serde_json::Value) {
    let mut s = Stratus::new(tag);
    s.configure("mariadb", "commit_clock = false");
    s.start();
    s.json(&["db", "create", "bank", "--password", "pw-bank"]);
    let mut c = connect(&s, "bank").await;
    c.query_drop(
        "CREATE TABLE ledger (id INT PRIMARY KEY, amount INT); INSERT INTO ledger VALUES (1, 5)",
    )
    .await
    .unwrap();
    let b = s.json(&["backup", "create", "bank"]);
    assert_eq!(b["verified"], true, "{b}");
    c.query_drop("INSERT INTO ledger VALUES (2, 6)")
        .await
        .unwrap();
    (s, c, b)
}

/// With the commit clock turned off there are no commit times to cut the log by: a restore to a
/// time is refused with what to do, and nothing is made; a whole backup still restores.
#[tokio::test(flavor = "multi_thread")]
async fn without_commit_times_a_restore_to_a_time_is_refused_and_says_how_to_get_them() {
    let (s, c, b) = without_clock("pitr-off").await;
    let t = now_rfc3339();

    let err = s.fails(&["db", "restore", "bank", "--to", "bank-t", "--time", &t]);
    assert!(err.contains("commit_clock = true"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    let listed = s.json(&["db", "list"]).to_string();
    assert!(!listed.contains("bank-t"), "nothing was made: {listed}");

    let whole = s.json(&[
        "db",
        "restore",
        "bank",
        "--to",
        "bank-b",
        "--backup",
        b["id"].as_str().unwrap(),
    ]);
    assert_eq!(whole["state"], "active", "{whole}");
    let mut r = connect(&s, "bank-b").await;
    let rows: Vec<(i32, i32)> = r
        .query("SELECT id, amount FROM ledger ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, [(1, 5)]);
    r.disconnect().await.unwrap();
    c.disconnect().await.unwrap();
}

/// A restore to a time after the last write (the commonest one: "as it was a moment ago") ends
/// exactly at the end of the archived log, where the server's applier never stops by itself.
/// The database comes from the warm pool and was scaled, parked, woken by its backup and
/// branched, as in the README's walk-through.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_to_after_the_last_write_has_every_transaction() {
    let mut s = Stratus::with_pool("pitr-now", 1);
    s.start();
    let created = s.json(&["db", "create", "bank", "--password", "pw-bank"]);
    assert_eq!(created["state"], "active", "{created}");
    s.json(&["db", "scale", "bank", "--scu", "2"]);
    s.json(&["db", "park", "bank"]);
    let b = s.json(&["backup", "create", "bank"]);
    assert_eq!(b["verified"], true, "{b}");
    s.json(&["db", "branch", "bank", "bank-dev"]);
    let mut c = connect(&s, "bank").await;
    c.query_drop("CREATE TABLE ledger (id INT PRIMARY KEY, amount INT)")
        .await
        .unwrap();
    c.query_drop("INSERT INTO ledger VALUES (1, 5), (2, 6)")
        .await
        .unwrap();
    let t = now_rfc3339();
    c.disconnect().await.unwrap();

    let restored = s.json(&["db", "restore", "bank", "--to", "bank-now", "--time", &t]);
    assert_eq!(restored["state"], "active", "{restored}");
    let mut r = connect(&s, "bank-now").await;
    let rows: Vec<(i32, i32)> = r
        .query("SELECT id, amount FROM ledger ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, [(1, 5), (2, 6)]);
    r.disconnect().await.unwrap();
}

/// Transactions committed while no commit times were noted (here: before the clock was turned
/// on) are known only to have committed before the clock began to follow the server: a restore
/// to a time before then, after the backup, is refused rather than quietly left without them;
/// a time after then has them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_time_where_transactions_have_no_commit_times_is_refused_and_after_them_they_are_kept() {
    let (mut s, c, _) = without_clock("pitr-gap").await;
    let untimed = now_rfc3339();
    c.disconnect().await.unwrap();
    s.stop();

    s.configure("mariadb", "commit_clock = true");
    s.start();
    let mut c = connect(&s, "bank").await;
    let before_3 = now_rfc3339();
    c.query_drop("INSERT INTO ledger VALUES (3, 7)")
        .await
        .unwrap();
    let after_3 = now_rfc3339();
    c.disconnect().await.unwrap();

    let err = s.fails(&[
        "db", "restore", "bank", "--to", "bank-0", "--time", &untimed,
    ]);
    assert!(err.contains("known only"), "{err}");
    assert!(err.contains("--backup"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    let listed = s.json(&["db", "list"]).to_string();
    assert!(!listed.contains("bank-0"), "nothing was made: {listed}");

    for (name, t, want) in [
        ("bank-1", &before_3, vec![(1, 5), (2, 6)]),
        ("bank-2", &after_3, vec![(1, 5), (2, 6), (3, 7)]),
    ] {
        let restored = s.json(&["db", "restore", "bank", "--to", name, "--time", t]);
        assert_eq!(restored["state"], "active", "{restored}");
        let mut r = connect(&s, name).await;
        let rows: Vec<(i32, i32)> = r
            .query("SELECT id, amount FROM ledger ORDER BY id")
            .await
            .unwrap();
        assert_eq!(rows, want, "at {t}");
        r.disconnect().await.unwrap();
    }

    // The clock turned off again: what is written now has no time, and a restore to a time
    // after it is refused rather than made without it.
    s.stop();
    s.configure("mariadb", "commit_clock = false");
    s.start();
    let mut c = connect(&s, "bank").await;
    c.query_drop("INSERT INTO ledger VALUES (4, 8)")
        .await
        .unwrap();
    c.disconnect().await.unwrap();
    let now = now_rfc3339();
    let err = s.fails(&["db", "restore", "bank", "--to", "bank-3", "--time", &now]);
    assert!(err.contains("have no commit times"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    s.stop();
}
