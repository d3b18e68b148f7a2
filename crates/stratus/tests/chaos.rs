//! Failover under chaos: clients keep working through the proxy while the database's server is
//! killed again and again, and while Stratus itself is killed and restarted. The workload is
//! contended (few accounts, every transfer locks its two accounts first), so transactions cut off
//! by a crash hold locks that others wait for. What must hold: no client error or disconnect,
//! no replay that differs, no read that sees part of a transfer, a ledger whose balances always
//! add up, and every committed transfer there exactly once.

mod common;

use common::Stratus;
use common::bank::*;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Error};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn signal(pid: u64, sig: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), sig)
        .unwrap();
}

fn server_pid(s: &Stratus) -> u64 {
    server_pid_other_than(s, None)
}

/// The server's pid once it has one other than `killed` (bounded): a restart after a crash
/// takes its crash recovery first, longer on a busy host.
fn server_pid_other_than(s: &Stratus, killed: Option<u64>) -> u64 {
    let begin = Instant::now();
    loop {
        let shown = s.json(&["db", "show", "bank"]);
        match shown["pid"].as_u64() {
            Some(pid) if Some(pid) != killed => return pid,
            _ => assert!(
                begin.elapsed() < Duration::from_secs(120),
                "no server restarted: {shown}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// For each kill, how long until every client had a statement succeed again: the stall the
/// slowest client saw, from the kill to its next successful statement.
fn failover_latencies(kills: &[Instant], successes: &[(i64, Instant)]) -> Vec<u128> {
    let clients: BTreeSet<i64> = successes.iter().map(|(c, _)| *c).collect();
    kills
        .iter()
        .filter_map(|k| {
            clients
                .iter()
                .map(|c| {
                    successes
                        .iter()
                        .filter(|(who, at)| who == c && at > k)
                        .map(|(_, at)| at.duration_since(*k).as_millis())
                        .min()
                })
                .collect::<Option<Vec<u128>>>()?
                .into_iter()
                .max()
        })
        .collect()
}

/// Each bad read with the time since the kill before it, to tell reads near a restart from
/// others.
fn bad_reads(bad: &[BadRead], kills: &[Instant]) -> Vec<String> {
    bad.iter()
        .map(|b| {
            let after = kills
                .iter()
                .enumerate()
                .rfind(|(_, k)| **k <= b.at)
                .map(|(i, k)| {
                    format!(
                        "{} ms after kill {}",
                        b.at.duration_since(*k).as_millis(),
                        i + 1
                    )
                })
                .unwrap_or_else(|| "before the first kill".into());
            format!("{} ({}, {after})", b.total, b.read)
        })
        .collect()
}

fn outcomes(s: &Stratus) -> String {
    [
        "retried",
        "replayed",
        "commit_confirmed",
        "ended",
        "mismatch",
        "not_replayable",
        "unknown",
        "gave_up",
    ]
    .iter()
    .map(|o| {
        let n = s
            .metric(&format!(
                "stratus_proxy_failovers_total{{db=\"bank\",outcome=\"{o}\"}}"
            ))
            .unwrap_or(0.0);
        format!("{o} {n}")
    })
    .collect::<Vec<_>>()
    .join(", ")
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_carry_on_while_the_server_is_killed_every_9_s() {
    let mut s = Stratus::new("chaos");
    s.start();
    let o = open_bank(&s).await;
    let clients = Clients::start(&o, 4, 2, false);
    let begin = Instant::now();
    let mut kills = Vec::new();
    let mut killed = None;
    for k in 1..=5u32 {
        // The chaos schedule: a kill every 9 s of wall time, of a server that has restarted.
        tokio::time::sleep_until((begin + Duration::from_secs(9) * k).into()).await;
        let pid = server_pid_other_than(&s, killed);
        signal(pid, rustix::process::Signal::KILL);
        kills.push(Instant::now());
        killed = Some(pid);
    }
    tokio::time::sleep_until((begin + Duration::from_secs(50)).into()).await;
    let tally = clients.stop().await;
    let ledger = audit(&o, &tally).await;
    let latencies = failover_latencies(&kills, &tally.successes);
    let events = s.json(&["events", "--db", "bank", "--limit", "1000"]);
    let crashed = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "crashed")
        .count();
    let failovers = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "failover")
        .count();
    println!(
        "chaos: {} kills of mariadbd in {:.0} s; {} transfers committed ({} in the ledger), {} reads; \
         {} rolled back by failover (replay mismatch); {} other errors; \
         {} reads saw a total other than {}: {:?}",
        kills.len(),
        begin.elapsed().as_secs_f64(),
        tally.committed.len(),
        ledger,
        tally.reads,
        tally.mismatches,
        tally.errors.len(),
        tally.inconsistent.len(),
        ACCOUNTS * OPENING,
        bad_reads(&tally.inconsistent, &kills)
    );
    let proxy_mean_ms = s
        .metric("stratus_proxy_failover_seconds_sum{db=\"bank\"}")
        .zip(s.metric("stratus_proxy_failover_seconds_count{db=\"bank\"}"))
        .map_or(0.0, |(sum, n)| sum * 1000.0 / n.max(1.0));
    println!(
        "chaos: failover latency, kill -> next successful statement of every client (ms): {latencies:?}; \
         the proxy's own (lost backend -> answer), mean over all cut-off statements: {proxy_mean_ms:.1} ms"
    );
    println!("chaos: proxy failovers by outcome: {}", outcomes(&s));
    println!("chaos: events: {crashed} crashed, {failovers} failover");
    assert!(
        tally.errors.is_empty(),
        "client errors: {:#?}",
        tally.errors
    );
    assert_eq!(
        tally.mismatches, 0,
        "replays that differed: {:#?} (kills at {kills:?})",
        tally.mismatch_detail
    );
    assert!(
        tally.inconsistent.is_empty(),
        "reads that saw part of a transfer: {:?}",
        bad_reads(&tally.inconsistent, &kills)
    );
    assert_eq!(crashed, kills.len(), "every kill was noticed");
    assert_eq!(
        latencies.len(),
        kills.len(),
        "clients carried on after every kill"
    );
    let replayed = s
        .metric("stratus_proxy_failovers_total{db=\"bank\",outcome=\"replayed\"}")
        .unwrap_or(0.0);
    assert!(
        replayed > 0.0,
        "transactions were replayed: {}",
        outcomes(&s)
    );
    assert!(failovers > 0, "failovers are recorded as events");
    assert!(tally.committed.len() > 100, "the writers made progress");
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_stratus_loses_connections_not_commits() {
    let mut s = Stratus::new("chaos-up");
    s.start();
    let o = open_bank(&s).await;
    let before = s.json(&["db", "show", "bank"]);
    let clients = Clients::start(&o, 3, 1, true);
    let tally = clients.tally.clone();
    for round in 0..2 {
        // Let the clients commit, then take Stratus away under them.
        fifty_more_commits(&tally, &format!("round {round}")).await;
        s.kill9();
        s.start();
    }
    fifty_more_commits(&tally, "after the restarts").await;
    let tally = clients.stop().await;
    let ledger = audit(&o, &tally).await;
    println!(
        "stratus restarted twice: {} transfers committed, {} of unknown outcome, {} in the ledger; {} other errors",
        tally.committed.len(),
        tally.uncertain.len(),
        ledger,
        tally.errors.len()
    );
    assert!(
        tally.inconsistent.is_empty(),
        "totals other than the opening total: {:?}",
        bad_reads(&tally.inconsistent, &[])
    );
    assert!(
        tally.errors.is_empty(),
        "client errors: {:#?}",
        tally.errors
    );
    // The catalog is intact: the same database, its server adopted, its accounts working.
    let after = s.json(&["db", "show", "bank"]);
    for field in ["name", "state", "scu", "port", "pid", "user"] {
        assert_eq!(before[field], after[field], "{field} changed");
    }
    let users = s.json(&["user", "list", "bank"]);
    assert_eq!(users.as_array().unwrap().len(), 1, "{users}");
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_match_or_roll_back_and_commits_are_answered_truthfully() {
    let mut s = Stratus::new("replay");
    s.start();
    let o = open_bank(&s).await;
    let mut conn = Conn::new(o.clone()).await.unwrap();
    let count = |c: &'static str| format!("SELECT COUNT(*) FROM transfers WHERE src = {c}");

    // A transaction whose replay gives the same answers carries on.
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop("INSERT INTO transfers VALUES (1, 1, 2, 10)")
        .await
        .unwrap();
    let seen: Option<i64> = conn.query_first(count("1")).await.unwrap();
    signal(server_pid(&s), rustix::process::Signal::KILL);
    conn.query_drop("INSERT INTO transfers VALUES (2, 1, 3, 10)")
        .await
        .unwrap();
    conn.query_drop("COMMIT").await.unwrap();
    let after: Option<i64> = conn.query_first(count("1")).await.unwrap();
    assert_eq!((seen, after), (Some(1), Some(2)));

    // One whose replay differs is rolled back, with an error that says so; the session goes on.
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop("INSERT INTO transfers VALUES (3, 2, 1, 10)")
        .await
        .unwrap();
    let _: Option<f64> = conn.query_first("SELECT RAND()").await.unwrap();
    signal(server_pid(&s), rustix::process::Signal::KILL);
    let err = conn
        .query_drop("INSERT INTO transfers VALUES (4, 2, 1, 10)")
        .await
        .unwrap_err();
    assert!(rolled_back_by_failover(&err), "{err}");
    let rolled_back: Option<i64> = conn.query_first(count("2")).await.unwrap();
    assert_eq!(
        rolled_back,
        Some(0),
        "nothing of the mismatched transaction stays"
    );

    // A COMMIT that the server never answered: the marker says it did not commit, so the
    // transaction is replayed and committed, once.
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop("INSERT INTO transfers VALUES (5, 3, 1, 10)")
        .await
        .unwrap();
    let pid = server_pid(&s);
    signal(pid, rustix::process::Signal::STOP);
    let commit = tokio::spawn(async move { conn.query_drop("COMMIT").await.map(|()| conn) });
    s.wait_for_metric(
        "stratus_proxy_statements_running{db=\"bank\"}",
        1.0,
        Duration::from_secs(10),
    );
    signal(pid, rustix::process::Signal::KILL);
    let mut conn = commit.await.unwrap().expect("the COMMIT is answered OK");
    let committed: Option<i64> = conn.query_first(count("3")).await.unwrap();
    assert_eq!(committed, Some(1));

    // A write outside a transaction cut off the same way: its effect is unknown, and the client
    // is told so rather than the statement being repeated.
    let pid = server_pid(&s);
    signal(pid, rustix::process::Signal::STOP);
    let write = tokio::spawn(async move {
        let r = conn
            .query_drop("INSERT INTO transfers VALUES (6, 4, 1, 10)")
            .await;
        (r, conn)
    });
    s.wait_for_metric(
        "stratus_proxy_statements_running{db=\"bank\"}",
        1.0,
        Duration::from_secs(10),
    );
    signal(pid, rustix::process::Signal::KILL);
    let (r, mut conn) = write.await.unwrap();
    let err = r.unwrap_err();
    assert!(
        matches!(&err, Error::Server(e) if e.code == 1927 && e.message.contains("may or may not")),
        "{err}"
    );
    let n: Option<i64> = conn.query_first(count("4")).await.unwrap();
    assert_eq!(n, Some(0), "the server never saw it");

    println!("replay: proxy failovers by outcome: {}", outcomes(&s));
    let m = |o: &str| {
        s.metric(&format!(
            "stratus_proxy_failovers_total{{db=\"bank\",outcome=\"{o}\"}}"
        ))
        .unwrap_or(0.0)
    };
    assert_eq!(
        (m("replayed"), m("mismatch"), m("unknown")),
        (2.0, 1.0, 1.0),
        "{}",
        outcomes(&s)
    );
}

/// Two sessions, one holding a row lock and idle, the other waiting for that lock when the
/// server is killed: after the restart the holder's transaction is carried over first, so the
/// waiting statement still waits for it, and then sees what the holder committed. (Replayed
/// each on its own, the waiting one took the lock first and the holder's replay differed.)
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_waiting_for_a_lock_at_the_crash_still_waits_for_its_holder() {
    let mut s = Stratus::new("order");
    s.start();
    let o = open_bank(&s).await;
    let mut holder = Conn::new(o.clone()).await.unwrap();
    let mut waiter = Conn::new(o.clone()).await.unwrap();
    holder.query_drop("BEGIN").await.unwrap();
    let before: Option<i64> = holder
        .query_first("SELECT balance FROM accounts WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    waiter.query_drop("BEGIN").await.unwrap();
    let waiting = tokio::spawn(async move {
        let seen: Result<Option<i64>, Error> = waiter
            .query_first("SELECT balance FROM accounts WHERE id = 1 FOR UPDATE")
            .await;
        (seen, waiter)
    });
    // The waiter's statement is in the server, waiting for the lock.
    s.wait_for_metric(
        "stratus_proxy_statements_running{db=\"bank\"}",
        1.0,
        Duration::from_secs(10),
    );
    signal(server_pid(&s), rustix::process::Signal::KILL);
    // The holder carries on as if nothing happened: its replayed read matches.
    holder
        .query_drop("UPDATE accounts SET balance = balance - 10 WHERE id = 1")
        .await
        .expect("the holder's transaction was carried over first");
    assert!(
        !waiting.is_finished(),
        "the waiter still waits for the lock"
    );
    holder.query_drop("COMMIT").await.unwrap();
    let (seen, mut waiter) = waiting.await.unwrap();
    assert_eq!(
        seen.expect("the waiter's statement was sent again"),
        before.map(|b| b - 10),
        "the waiter saw what the holder committed"
    );
    waiter.query_drop("COMMIT").await.unwrap();
    println!("order: proxy failovers by outcome: {}", outcomes(&s));
}

/// A transaction that inserted into an AUTO_INCREMENT table is carried over with the values its
/// client was given: InnoDB does not hand out again a value whose insert a crash rolled back
/// (its counter is logged as it is taken), so a plain replay would get the next one and differ.
#[tokio::test(flavor = "multi_thread")]
async fn an_insert_is_replayed_with_the_auto_increment_values_its_client_saw() {
    let mut s = Stratus::new("autoinc");
    s.start();
    let o = open_bank(&s).await;
    let mut conn = Conn::new(o.clone()).await.unwrap();
    conn.query_drop("CREATE TABLE notes (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO notes (v) VALUES (0)")
        .await
        .unwrap();
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop("INSERT INTO notes (v) VALUES (1), (2)")
        .await
        .unwrap();
    let first: Option<u64> = conn.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
    conn.exec_drop("INSERT INTO notes (v) VALUES (?)", (3,))
        .await
        .unwrap();
    let third = conn.last_insert_id();
    // Another session's commit makes the log durable, the counter's advance with it.
    let mut other = Conn::new(o.clone()).await.unwrap();
    other
        .query_drop("INSERT INTO transfers VALUES (1, 1, 2, 10)")
        .await
        .unwrap();
    signal(server_pid(&s), rustix::process::Signal::KILL);
    conn.query_drop("INSERT INTO notes (v) VALUES (4)")
        .await
        .expect("the transaction is carried over");
    conn.query_drop("COMMIT").await.unwrap();
    let rows: Vec<(u64, i64)> = conn
        .query("SELECT id, v FROM notes ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows[0], (1, 0));
    assert_eq!((first, third), (Some(2), Some(4)), "the ids the client saw");
    assert_eq!(
        &rows[1..4],
        &[(2, 1), (3, 2), (4, 3)],
        "kept across the failover"
    );
    assert_eq!(rows.len(), 5, "{rows:?}");
    other.disconnect().await.ok();
    conn.disconnect().await.unwrap();
}
