//! `bench/migration`: a live migration of a large database under load (usage: migration
//! STRATUS_BIN [GIB]). Loads GIB (default 1) of rows into a database on node `local`, starts
//! clients that read and write through the proxy (a point read of the large table, and a
//! transaction updating a small one), moves the database to node `n2` with `db migrate`, and
//! prints Stratus's own account of the move (each phase, the lag at the cut-over, the time
//! commands were held) beside what the clients saw: their statement latency before the move,
//! and the longest a statement took while it ran. Any client error fails the run.

use anyhow::Context;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stratus_api::types::CreateRequest;
use stratus_bench::{Stratus, quantile};

/// 10 MiB of rows per statement.
const LOAD: &str = "INSERT INTO big (v) SELECT RANDOM_BYTES(1024) FROM seq_1_to_10240";
const CLIENTS: u64 = 4;

/// Each statement's end and how long it took; errors by message.
#[derive(Default)]
struct Seen {
    latencies: Vec<(Instant, Duration)>,
    errors: Vec<String>,
}

async fn client(
    o: mysql_async::OptsBuilder,
    id: u64,
    rows: u64,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut c = match Conn::new(o).await {
        Ok(c) => c,
        Err(e) => {
            seen.lock().unwrap().errors.push(format!("connect: {e}"));
            return;
        }
    };
    let mut i = id * 7919;
    while !stop.load(Ordering::Relaxed) {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let begin = Instant::now();
        let r: Result<(), mysql_async::Error> = async {
            let key = (i >> 33) % rows.max(1) + 1;
            let _: Option<u64> = c
                .exec_first("SELECT LENGTH(v) FROM big WHERE id = ?", (key,))
                .await?;
            c.query_drop("BEGIN").await?;
            c.exec_drop(
                "UPDATE hot SET n = n + 1 WHERE id = ?",
                ((i >> 40) % 100 + 1,),
            )
            .await?;
            c.query_drop("COMMIT").await?;
            Ok(())
        }
        .await;
        let mut s = seen.lock().unwrap();
        match r {
            Ok(()) => s.latencies.push((Instant::now(), begin.elapsed())),
            Err(e) => s.errors.push(format!("client {id}: {e}")),
        }
    }
    let _ = c.disconnect().await;
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let bin = std::env::args()
        .nth(1)
        .context("usage: migration STRATUS_BIN [GIB]")?;
    let gib: u32 = std::env::args().nth(2).map_or(Ok(1), |g| g.parse())?;
    let dir = std::env::temp_dir().join(format!("stratus-bench-n2-{}", std::process::id()));
    let config = format!(
        "[pool]\nmin = 0\nmax = 0\n[[nodes]]\nname = \"local\"\n[[nodes]]\nname = \"n2\"\ndata_dir = \"{}\"\n",
        dir.display()
    );
    let s = Stratus::start(&bin, &config)?;
    let api = s.client();
    let created = api
        .create(&CreateRequest {
            name: "big".into(),
            tier: Some("standard".into()),
            storage_gb: Some(gib * 3 + 1),
            password: Some("pw".into()),
            ..CreateRequest::default()
        })
        .await?;
    let from = api.show("big").await?.node;
    let to = if from == "local" { "n2" } else { "local" };
    let o = s.opts(&created.user, "pw", "big");
    let mut c = Conn::new(o.clone()).await?;
    c.query_drop("CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v LONGBLOB)")
        .await?;
    c.query_drop("CREATE TABLE hot (id INT PRIMARY KEY, n BIGINT NOT NULL)")
        .await?;
    c.query_drop("INSERT INTO hot SELECT seq, 0 FROM seq_1_to_100")
        .await?;
    let begin = Instant::now();
    for _ in 0..gib * 103 {
        c.query_drop(LOAD).await?;
    }
    let rows: u64 = c.query_first("SELECT MAX(id) FROM big").await?.unwrap_or(0);
    let used = api.show("big").await?.storage_used_bytes.unwrap_or(0);
    c.disconnect().await?;
    println!(
        "Stratus migration benchmark: {gib} GiB of rows loaded in {:.0} s ({} MiB on its volume), {CLIENTS} clients reading and writing through the proxy",
        begin.elapsed().as_secs_f64(),
        used >> 20
    );

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..CLIENTS {
        tasks.spawn(client(o.clone(), id, rows, stop.clone(), seen.clone()));
    }
    tokio::time::sleep(Duration::from_secs(10)).await; // a steady load before the move
    let started = Instant::now();
    let report = api
        .migrate(
            "big",
            &stratus_control::migrate::MigrateRequest {
                to: Some(to.to_owned()),
            },
        )
        .await?;
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await; // and after it
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    anyhow::ensure!(seen.errors.is_empty(), "client errors: {:?}", seen.errors);
    let mut before: Vec<f64> = seen
        .latencies
        .iter()
        .filter(|(at, _)| *at < started)
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    before.sort_by(f64::total_cmp);
    let during = seen
        .latencies
        .iter()
        .filter(|(at, d)| *at >= started && *at - *d <= ended)
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    // When (from the move's start) the statements that took over 200 ms during it began.
    let mut slow: Vec<(f64, f64)> = seen
        .latencies
        .iter()
        .filter(|(at, d)| *at >= started && *at - *d <= ended && d.as_millis() > 200)
        .map(|(at, d)| {
            (
                ((*at - *d) - started).as_secs_f64(),
                d.as_secs_f64() * 1000.0,
            )
        })
        .collect();
    slow.sort_by(|a, b| a.0.total_cmp(&b.0));
    let after = api.show("big").await?;
    anyhow::ensure!(
        after.node == to,
        "the database is on {}, not {to}",
        after.node
    );
    println!(
        "  moved {} -> {}: total {:.1} s (copy {:.1} s of {} MiB, catch-up {:.1} s, cut-over)",
        report.from,
        report.to,
        report.total_ms as f64 / 1000.0,
        report.copy_ms as f64 / 1000.0,
        report.copied_bytes >> 20,
        report.catch_up_ms as f64 / 1000.0
    );
    println!(
        "  at the cut-over: lag {} ms (the target's wait for the source's last commit); commands held {} ms",
        report.lag_ms, report.pause_ms
    );
    println!(
        "  clients: {} transactions, 0 errors; latency before the move p50 {:.1} ms, p99 {:.1} ms; the longest during the move {:.0} ms",
        seen.latencies.len(),
        quantile(&before, 0.5),
        quantile(&before, 0.99),
        during
    );
    let cut_over_at = (report.copy_ms + report.catch_up_ms) as f64 / 1000.0;
    // What clients felt of the cut-over: the longest statement running at any moment from its
    // start to a second after the move (reconnections to the new server included).
    let window = (
        started + Duration::from_secs_f64(cut_over_at),
        ended + Duration::from_secs(1),
    );
    let felt = seen
        .latencies
        .iter()
        .filter(|(at, d)| *at >= window.0 && *at - *d <= window.1)
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .fold(0.0, f64::max);
    println!("  the longest statement from the cut-over to a second after the move: {felt:.0} ms");
    println!(
        "  statements over 200 ms during the move (began at s after its start, took ms; the cut-over began at {cut_over_at:.1} s): {:?}",
        slow.iter()
            .map(|(at, ms)| format!("{at:.1}s:{ms:.0}"))
            .collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
