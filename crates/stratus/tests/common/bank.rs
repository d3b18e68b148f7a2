//! The bank: a contended transfer workload with a ledger, used where clients must not notice
//! what happens to their database (a crash, a move). Few accounts, and every transfer locks its
//! two accounts first, so transactions cut off mid-way hold locks that others wait for. What
//! must hold: no client error or disconnect, no replay that differs, no read that sees part of
//! a transfer, balances that always add up, and every committed transfer there exactly once.

use super::Stratus;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Error, OptsBuilder, Statement};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ACCOUNTS: i64 = 20;
pub const OPENING: i64 = 1_000;

pub fn opts(s: &Stratus, user: &str, password: &str) -> OptsBuilder {
    s.sql_opts(user, password, Some("bank"))
}

/// Creates the bank: accounts with an opening balance and an empty ledger of transfers.
pub async fn open_bank(s: &Stratus) -> OptsBuilder {
    let c = s.json(&["db", "create", "bank"]);
    let o = opts(
        s,
        c["user"].as_str().unwrap(),
        c["password"].as_str().unwrap(),
    );
    let mut conn = Conn::new(o.clone()).await.unwrap();
    conn.query_drop(
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL);
         CREATE TABLE transfers (id BIGINT PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, amount INT NOT NULL)",
    )
    .await
    .unwrap();
    let values: Vec<String> = (1..=ACCOUNTS)
        .map(|i| format!("({i}, {OPENING})"))
        .collect();
    conn.query_drop(format!("INSERT INTO accounts VALUES {}", values.join(",")))
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    o
}

/// What the clients saw.
#[derive(Default)]
pub struct Tally {
    /// Transfers whose COMMIT was answered OK.
    pub committed: BTreeSet<i64>,
    /// Transfers whose outcome the client cannot know (its connection went away mid-way).
    pub uncertain: BTreeSet<i64>,
    /// Transactions rolled back by failover because their replay differed (error 1213).
    pub mismatches: u64,
    /// What each rolled-back client was told, and when.
    pub mismatch_detail: Vec<String>,
    /// Every other error, with what was running.
    pub errors: Vec<String>,
    pub reads: u64,
    /// Totals a reader saw that were not the opening total: a read that saw part of a
    /// transfer.
    pub inconsistent: Vec<BadRead>,
    /// Which client had a statement succeed when, to find the first after each kill.
    pub successes: Vec<(i64, Instant)>,
}

/// A read that saw a total other than the opening total: what, when, and which kind of read.
pub struct BadRead {
    pub total: i64,
    pub at: Instant,
    pub read: &'static str,
}

pub type Shared = Arc<Mutex<Tally>>;

pub fn ok(t: &Shared, client: i64) {
    t.lock().unwrap().successes.push((client, Instant::now()));
}

pub fn rolled_back_by_failover(e: &Error) -> bool {
    matches!(e, Error::Server(s) if s.code == 1213 && s.message.contains("rolled back by failover"))
}

/// A client that moves money between two accounts in a transaction that first locks both
/// (`SELECT … FOR UPDATE`, one statement, so InnoDB never picks a deadlock victim), through
/// prepared or text statements.
pub async fn writer(
    o: OptsBuilder,
    id: i64,
    prepared: bool,
    stop: Arc<AtomicBool>,
    tally: Shared,
    reconnect: bool,
) {
    let mut conn = first_connection(&o, &stop, reconnect).await;
    let mut stmts: Option<(Statement, Statement, Statement)> = None;
    let mut seed = id as u64 * 7919 + 17;
    let mut n = 0i64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let tid = id * 1_000_000 + n;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let a = (seed >> 33) as i64 % ACCOUNTS + 1;
        let b = (a - 1 + 1 + (seed >> 40) as i64 % (ACCOUNTS - 1)) % ACCOUNTS + 1; // never a
        let (lo, hi) = (a.min(b), a.max(b));
        let amount = (seed >> 50) as i64 % 100 + 1;
        if prepared && stmts.is_none() {
            let lock = conn
                .prep("SELECT id, balance FROM accounts WHERE id IN (?, ?) FOR UPDATE")
                .await;
            let update = conn.prep("UPDATE accounts SET balance = balance + ? WHERE id = ?");
            let update = update.await;
            let insert = conn.prep("INSERT INTO transfers VALUES (?, ?, ?, ?)").await;
            match (lock, update, insert) {
                (Ok(l), Ok(u), Ok(i)) => stmts = Some((l, u, i)),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    tally.lock().unwrap().errors.push(format!("prepare: {e}"));
                    return;
                }
            }
        }
        // Money leaves `a` and reaches `b`; the lower id is locked first.
        let delta = |acct: i64| if acct == a { -amount } else { amount };
        let result: Result<(), Error> = async {
            conn.query_drop("BEGIN").await?;
            ok(&tally, id);
            let locked: Vec<(i64, i64)> = match &stmts {
                Some((lock, _, _)) => conn.exec(lock, (lo, hi)).await?,
                None => {
                    conn.query(format!(
                        "SELECT id, balance FROM accounts WHERE id IN ({lo}, {hi}) FOR UPDATE"
                    ))
                    .await?
                }
            };
            assert_eq!(locked.len(), 2, "both accounts are there");
            ok(&tally, id);
            for acct in [lo, hi] {
                match &stmts {
                    Some((_, update, _)) => conn.exec_drop(update, (delta(acct), acct)).await?,
                    None => {
                        conn.query_drop(format!(
                            "UPDATE accounts SET balance = balance + {} WHERE id = {acct}",
                            delta(acct)
                        ))
                        .await?
                    }
                }
                ok(&tally, id);
            }
            match &stmts {
                Some((_, _, insert)) => conn.exec_drop(insert, (tid, a, b, amount)).await?,
                None => {
                    conn.query_drop(format!(
                        "INSERT INTO transfers VALUES ({tid}, {a}, {b}, {amount})"
                    ))
                    .await?
                }
            }
            ok(&tally, id);
            conn.query_drop("COMMIT").await?;
            ok(&tally, id);
            Ok(())
        }
        .await;
        let disconnected = matches!(result, Err(Error::Io(_) | Error::Driver(_)));
        {
            let mut t = tally.lock().unwrap();
            match result {
                Ok(()) => {
                    t.committed.insert(tid);
                }
                Err(e) if rolled_back_by_failover(&e) => {
                    t.mismatches += 1;
                    t.mismatch_detail
                        .push(format!("{:?}: {e}", std::time::SystemTime::now()));
                }
                // Stratus itself went away: the outcome of this transfer is unknown.
                Err(_) if disconnected && reconnect => {
                    t.uncertain.insert(tid);
                }
                Err(e) => t.errors.push(format!("writer {id} transfer {tid}: {e}")),
            }
        }
        if disconnected {
            if !reconnect {
                return; // counted as an error; nothing more to do on this connection
            }
            conn = reconnect_until(&o, &stop).await;
            stmts = None;
        }
    }
    let _ = conn.disconnect().await;
}

/// A client that reads: the total (always the opening total), one balance, and a read-only
/// transaction over both tables.
pub async fn reader(
    o: OptsBuilder,
    id: i64,
    stop: Arc<AtomicBool>,
    tally: Shared,
    reconnect: bool,
) {
    let mut conn = first_connection(&o, &stop, reconnect).await;
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let result: Result<Option<BadRead>, Error> = async {
            let total: Option<i64> = match i % 3 {
                0 => {
                    conn.query_first("SELECT CAST(SUM(balance) AS SIGNED) FROM accounts")
                        .await?
                }
                1 => {
                    let acct = (i + id) % ACCOUNTS + 1;
                    conn.exec_first::<i64, _, _>(
                        "SELECT balance FROM accounts WHERE id = ?",
                        (acct,),
                    )
                    .await?;
                    None
                }
                _ => {
                    conn.query_drop("START TRANSACTION READ ONLY").await?;
                    let total = conn
                        .query_first("SELECT CAST(SUM(balance) AS SIGNED) FROM accounts")
                        .await?;
                    conn.query_first::<i64, _>("SELECT COUNT(*) FROM transfers")
                        .await?;
                    conn.query_drop("COMMIT").await?;
                    total
                }
            };
            let read = if i % 3 == 0 {
                "autocommit"
            } else {
                "read-only transaction"
            };
            Ok(total
                .filter(|t| *t != ACCOUNTS * OPENING)
                .map(|total| BadRead {
                    total,
                    at: Instant::now(),
                    read,
                }))
        }
        .await;
        let disconnected = matches!(result, Err(Error::Io(_) | Error::Driver(_)));
        {
            let mut t = tally.lock().unwrap();
            match result {
                Ok(wrong) => {
                    t.reads += 1;
                    t.successes.push((100 + id, Instant::now()));
                    t.inconsistent.extend(wrong);
                }
                Err(e) if rolled_back_by_failover(&e) => {
                    t.mismatches += 1;
                    t.mismatch_detail
                        .push(format!("{:?}: {e}", std::time::SystemTime::now()));
                }
                Err(_) if disconnected && reconnect => {}
                Err(e) => t.errors.push(format!("reader {id}: {e}")),
            }
        }
        if disconnected {
            if !reconnect {
                return;
            }
            conn = reconnect_until(&o, &stop).await;
        }
    }
    let _ = conn.disconnect().await;
}

/// The writers (half of them with prepared statements) and readers of a run.
pub struct Clients {
    pub stop: Arc<AtomicBool>,
    pub tally: Shared,
    pub tasks: tokio::task::JoinSet<()>,
}

impl Clients {
    /// `reconnect`: a lost connection is expected (Stratus itself is killed), not an error.
    pub fn start(o: &OptsBuilder, writers: i64, readers: i64, reconnect: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally: Shared = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        for id in 1..=writers {
            let (stop, tally) = (stop.clone(), tally.clone());
            tasks.spawn(writer(o.clone(), id, id % 2 == 0, stop, tally, reconnect));
        }
        for id in 1..=readers {
            let (stop, tally) = (stop.clone(), tally.clone());
            tasks.spawn(reader(o.clone(), id, stop, tally, reconnect));
        }
        Self { stop, tally, tasks }
    }

    /// Stops them and returns what they saw.
    pub async fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(r) = self.tasks.join_next().await {
            r.unwrap();
        }
        std::mem::take(&mut *self.tally.lock().unwrap())
    }
}

/// Waits (bounded) until the writers have committed 50 more transfers.
pub async fn fifty_more_commits(tally: &Shared, when: &str) {
    let committed = || tally.lock().unwrap().committed.len();
    let start = committed();
    let begin = Instant::now();
    while committed() < start + 50 {
        assert!(
            begin.elapsed() < Duration::from_secs(60),
            "no progress {when}"
        );
        // Polling the clients' own tally: there is nothing else to wait on.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client's first connection; where Stratus itself is killed, that may happen before a slow
/// client got its first connection.
pub async fn first_connection(o: &OptsBuilder, stop: &AtomicBool, reconnect: bool) -> Conn {
    if reconnect {
        reconnect_until(o, stop).await
    } else {
        Conn::new(o.clone()).await.unwrap()
    }
}

/// After Stratus itself was killed: connect again once it is back (bounded).
pub async fn reconnect_until(o: &OptsBuilder, stop: &AtomicBool) -> Conn {
    let begin = Instant::now();
    loop {
        match Conn::new(o.clone()).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(
                    begin.elapsed() < Duration::from_secs(120) && !stop.load(Ordering::Relaxed),
                    "could not reconnect: {e}"
                );
                // Waiting for a restarted process we do not control; nothing to wait on but time.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The ledger after the run: balances add up, each account's balance is its opening balance
/// plus what the ledger says moved, every committed transfer is there (once: it is the primary
/// key), and nothing is there that the clients did not commit or could not know about.
pub async fn audit(o: &OptsBuilder, tally: &Tally) -> usize {
    let mut conn = Conn::new(o.clone()).await.unwrap();
    let total: i64 = conn
        .query_first("SELECT CAST(SUM(balance) AS SIGNED) FROM accounts")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total, ACCOUNTS * OPENING, "money was created or destroyed");
    let ledger: Vec<(i64, i64, i64, i64)> = conn
        .query("SELECT id, src, dst, amount FROM transfers")
        .await
        .unwrap();
    let mut expected: BTreeMap<i64, i64> = (1..=ACCOUNTS).map(|i| (i, OPENING)).collect();
    let mut present = BTreeSet::new();
    for (id, src, dst, amount) in &ledger {
        *expected.get_mut(src).unwrap() -= amount;
        *expected.get_mut(dst).unwrap() += amount;
        present.insert(*id);
    }
    let balances: Vec<(i64, i64)> = conn
        .query("SELECT id, balance FROM accounts ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        balances,
        expected.into_iter().collect::<Vec<_>>(),
        "a transfer was applied partly, or twice"
    );
    let lost: Vec<_> = tally.committed.difference(&present).collect();
    assert!(lost.is_empty(), "committed transfers lost: {lost:?}");
    let unexplained: Vec<_> = present
        .iter()
        .filter(|id| !tally.committed.contains(id) && !tally.uncertain.contains(id))
        .collect();
    assert!(
        unexplained.is_empty(),
        "transfers in the ledger that no client committed: {unexplained:?}"
    );
    conn.disconnect().await.unwrap();
    ledger.len()
}
