//! `bench/lifecycle`: the serverless figures of the lifecycle issue, measured on a real
//! `stratus up` (usage: lifecycle STRATUS_BIN [--hydration]).
//!
//! 1. create latency, API call to the first successful query through the proxy, 20 creates
//!    from the warm pool (and 5 with the pool off, for comparison);
//! 2. first query of a held connection after `suspend` and after `park`;
//! 3. autoscaler reaction: CPU-bound load start to the scale-up event, and the way back down;
//! 4. buffer-pool hit ratio on a read-only working set before a suspend and each second after
//!    it, with hydration and without, with the host's page cache as the suspend left it and
//!    dropped before the resume (`--hydration`: this section only);
//! 5. the resource monitor's cost: sampling 200 cgroups every 200 ms.

use anyhow::{Context, bail};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};
use std::time::{Duration, Instant};
use stratus_api::types::CreateRequest;
use stratus_bench::{Stratus, cpu_time, summary};
use stratus_core::time::now_ms;

const ROWS: u32 = 100_000;
const TABLES: u32 = 8;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .context("usage: lifecycle STRATUS_BIN [--hydration]")?;
    let hydration_only = args.any(|a| a == "--hydration");
    println!(
        "Stratus lifecycle benchmark ({} CPUs)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let on = Stratus::start(&bin, "[pool]\nmin = 20\nmax = 24\n")?;
    let off = Stratus::start(&bin, "hydrate = false\n[pool]\nmin = 0\nmax = 0\n")?;
    if !hydration_only {
        create_latency(&on, "warm pool (20 spares ready)").await?;
        create_latency_cold(&off).await?;
        resume_latency(&on).await?;
        scale_reaction(&on).await?;
    }
    hydration(&on, "with hydration", Cache::Warm).await?;
    hydration(&off, "without hydration", Cache::Warm).await?;
    hydration(&on, "with hydration", Cache::Cold).await?;
    hydration(&off, "without hydration", Cache::Cold).await?;
    if !hydration_only {
        monitor_cost()?;
    }
    Ok(())
}

async fn create(
    s: &Stratus,
    name: &str,
    tier: Option<&str>,
    max: Option<u32>,
) -> anyhow::Result<(String, String)> {
    let req = CreateRequest {
        name: name.into(),
        tier: tier.map(str::to_owned),
        max_scu: max,
        ..CreateRequest::default()
    };
    let c = s.client().create(&req).await?;
    Ok((c.user, c.password))
}

async fn first_query(s: &Stratus, user: &str, pw: &str, db: &str) -> anyhow::Result<()> {
    let mut c = Conn::new(s.opts(user, pw, db)).await?;
    let _: Option<u8> = c.query_first("SELECT 1").await?;
    c.disconnect().await?;
    Ok(())
}

async fn create_latency(s: &Stratus, label: &str) -> anyhow::Result<()> {
    println!("1. Create: API call to the first successful query through the proxy");
    s.wait_metric("stratus_warm_pool_ready", 20.0, Duration::from_secs(300))?;
    let mut ms = Vec::new();
    for i in 0..20 {
        let name = format!("c{i}");
        let begin = Instant::now();
        let (user, pw) = create(s, &name, None, None).await?;
        first_query(s, &user, &pw, &name).await?;
        ms.push(begin.elapsed().as_secs_f64() * 1000.0);
    }
    let events = s.client().events(None, None, Some(1000)).await?;
    let pooled = events
        .iter()
        .filter(|e| e.kind == "started" && e.data["warm_pool"] == true)
        .count();
    summary(&format!("{label}, {pooled} of 20 from the pool"), &mut ms);
    Ok(())
}

async fn create_latency_cold(s: &Stratus) -> anyhow::Result<()> {
    let mut ms = Vec::new();
    for i in 0..5 {
        let name = format!("cold{i}");
        let begin = Instant::now();
        let (user, pw) = create(s, &name, None, None).await?;
        first_query(s, &user, &pw, &name).await?;
        ms.push(begin.elapsed().as_secs_f64() * 1000.0);
        s.client().delete(&name).await?;
    }
    summary("without the pool (template copy + start)", &mut ms);
    println!();
    Ok(())
}

async fn resume_latency(s: &Stratus) -> anyhow::Result<()> {
    println!("2. First query of a held connection");
    let (user, pw) = create(s, "resume", None, None).await?;
    let mut conn = Conn::new(s.opts(&user, &pw, "resume")).await?;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(100))")
        .await?;
    conn.query_drop("INSERT INTO t SELECT seq, REPEAT('x', 100) FROM seq_1_to_10000")
        .await?;
    conn.query_drop("SET @session_kept = 42").await?;
    // The proxy reads assigned user variables back before the next command; an operator's
    // suspend right after the assignment would lose them (error 1927, `docs/failover.md`).
    conn.query_drop("DO 0").await?;
    let api = s.client();
    for (label, park) in [("from suspended", false), ("from parked", true)] {
        let mut ms = Vec::new();
        for _ in 0..5 {
            if park {
                api.park("resume", false).await?;
            } else {
                api.suspend("resume", false).await?;
            }
            let begin = Instant::now();
            let kept: Option<u32> = conn.query_first("SELECT @session_kept").await?;
            ms.push(begin.elapsed().as_secs_f64() * 1000.0);
            if kept != Some(42) {
                bail!("session lost across the wake");
            }
        }
        summary(label, &mut ms);
    }
    conn.disconnect().await?;
    println!();
    Ok(())
}

/// Keeps `workers` sessions busy with CPU-bound statements until `stop` flips.
fn cpu_load(
    s: &Stratus,
    user: &str,
    pw: &str,
    db: &str,
    workers: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|_| {
            let (opts, stop) = (s.opts(user, pw, db), stop.clone());
            tokio::spawn(async move {
                let Ok(mut c) = Conn::new(opts).await else {
                    return;
                };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _: Result<Option<u64>, _> = c
                        .query_first("SELECT BENCHMARK(200000, SHA2('stratus', 256))")
                        .await;
                }
                let _ = c.disconnect().await;
            })
        })
        .collect()
}

async fn scale_reaction(s: &Stratus) -> anyhow::Result<()> {
    println!("3. Autoscaler (database at 1 SCU, standard tier, max 4)");
    let (user, pw) = create(s, "scale", Some("standard"), Some(4)).await?;
    let api = s.client();
    let after = api
        .events(Some("scale"), None, Some(1))
        .await?
        .last()
        .map_or(0, |e| e.id);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start_ms = now_ms();
    let load = cpu_load(s, &user, &pw, "scale", 4, &stop);
    let up = wait_event(
        s,
        "scale",
        after,
        "scaled",
        |_| true,
        Duration::from_secs(30),
    )
    .await?;
    println!(
        "  CPU-bound load start → scale-up event       {:>7} ms   ({})",
        up.time_ms - start_ms,
        up.message
    );
    tokio::time::sleep(Duration::from_secs(5)).await; // the load runs on at the new size
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    // A light load goes on: one short statement every half second.
    let stop_ms = now_ms();
    let light = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let heartbeat = {
        let (opts, light) = (s.opts(&user, &pw, "scale"), light.clone());
        tokio::spawn(async move {
            let Ok(mut c) = Conn::new(opts).await else {
                return now_ms();
            };
            let mut last = now_ms();
            while !light.load(std::sync::atomic::Ordering::Relaxed) {
                let _: Result<Option<u8>, _> = c.query_first("SELECT 1").await;
                last = now_ms();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            last
        })
    };
    let down = wait_event(
        s,
        "scale",
        up.id,
        "scaled",
        |m| m.contains("down"),
        Duration::from_secs(120),
    )
    .await?;
    println!(
        "  load stop → scale-down event                {:>7} ms   ({})",
        down.time_ms - stop_ms,
        down.message
    );
    light.store(true, std::sync::atomic::Ordering::Relaxed);
    let last_statement = heartbeat.await?;
    let susp = wait_event(
        s,
        "scale",
        down.id,
        "suspended",
        |_| true,
        Duration::from_secs(120),
    )
    .await?;
    println!(
        "  last statement → suspended                  {:>7} ms   ({})\n",
        susp.time_ms - last_statement,
        susp.message
    );
    Ok(())
}

struct SeenEvent {
    id: i64,
    time_ms: i64,
    message: String,
}

async fn wait_event(
    s: &Stratus,
    db: &str,
    after: i64,
    kind: &str,
    matching: impl Fn(&str) -> bool,
    timeout: Duration,
) -> anyhow::Result<SeenEvent> {
    let begin = Instant::now();
    loop {
        for e in s.client().events(Some(db), Some(after), None).await? {
            if e.kind == kind && matching(&e.message) {
                return Ok(SeenEvent {
                    id: e.id,
                    time_ms: e.time_ms,
                    message: e.message,
                });
            }
        }
        if begin.elapsed() > timeout {
            bail!("no {kind} event for {db} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(pool: &Pool) -> anyhow::Result<(f64, f64)> {
    let mut c = pool.get_conn().await?;
    let rows: Vec<(String, String)> =
        c.query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_buffer_pool_read_requests', 'Innodb_buffer_pool_reads')").await?;
    let get = |n: &str| {
        rows.iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0)
    };
    Ok((
        get("Innodb_buffer_pool_read_requests"),
        get("Innodb_buffer_pool_reads"),
    ))
}

fn ratio(before: (f64, f64), after: (f64, f64)) -> f64 {
    let requests = after.0 - before.0;
    if requests <= 0.0 {
        f64::NAN
    } else {
        1.0 - (after.1 - before.1) / requests
    }
}

/// Random primary-key reads over the whole working set, from `workers` sessions.
fn read_load(
    pool: &Pool,
    workers: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                let Ok(mut c) = pool.get_conn().await else {
                    return;
                };
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ w as u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let (t, id) = (x % u64::from(TABLES) + 1, x % u64::from(ROWS) + 1);
                    let _: Result<Option<String>, _> = c
                        .query_first(format!("SELECT c FROM t{t} WHERE id = {id}"))
                        .await;
                }
            })
        })
        .collect()
}

/// The host's page cache when a database resumes.
#[derive(Clone, Copy, PartialEq)]
enum Cache {
    /// As the suspend left it: the database's pages are still in it, so a read that misses the
    /// buffer pool costs a copy, not a disk read.
    Warm,
    /// Dropped just before the resume (`/proc/sys/vm/drop_caches`), as a database parked for
    /// hours, or on a busy host, finds it.
    Cold,
}

async fn hydration(s: &Stratus, label: &str, cache: Cache) -> anyhow::Result<()> {
    let name = match cache {
        Cache::Warm => "hydra",
        Cache::Cold => "hydracold",
    };
    if label == "with hydration" {
        println!(
            "{}Buffer-pool hit ratio on a read-only working set ({TABLES} tables x {ROWS} rows), {}",
            if cache == Cache::Warm { "4. " } else { "   " },
            match cache {
                Cache::Warm => "the page cache warm",
                Cache::Cold => "the page cache dropped before the resume",
            }
        );
    }
    let (user, pw) = create(s, name, None, None).await?;
    let pool = Pool::new(s.opts(&user, &pw, name));
    {
        let mut c = pool.get_conn().await?;
        for t in 1..=TABLES {
            c.query_drop(format!(
                "CREATE TABLE t{t} (id INT PRIMARY KEY, c CHAR(120) NOT NULL)"
            ))
            .await?;
            c.query_drop(format!(
                "INSERT INTO t{t} SELECT seq, REPEAT(CHAR(65 + seq % 26), 120) FROM seq_1_to_{ROWS}"
            ))
            .await?;
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = read_load(&pool, 4, &stop);
    tokio::time::sleep(Duration::from_secs(15)).await; // warm up
    let a = status(&pool).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = ratio(a, status(&pool).await?);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    pool.clone().disconnect().await?;
    s.client().suspend(name, false).await?;
    if cache == Cache::Cold {
        rustix::fs::sync();
        if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
            println!("  {label:<18} not measured: cannot drop the page cache ({e}; needs root)");
            return Ok(());
        }
    }
    let pool = Pool::new(s.opts(&user, &pw, name));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (resumed, resumed_ms) = (Instant::now(), now_ms());
    // Server-wide counters, and when each was read: the hydration's own lookups are taken out
    // of the second they ended in (its `hydrated` event lists them index by index).
    let mut samples = vec![(status(&pool).await?, now_ms())]; // wakes it
    let load = read_load(&pool, 4, &stop);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push((status(&pool).await?, now_ms()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    let hydrated = s
        .client()
        .events(Some(name), None, Some(1000))
        .await?
        .into_iter()
        .find(|e| e.kind == "hydrated" && e.time_ms >= resumed_ms);
    let mut own = vec![(0.0, 0.0); samples.len() - 1];
    if let Some(e) = &hydrated {
        let started = e.data["started_ms"].as_i64().unwrap_or(0);
        for i in e.data["indexes"].as_array().into_iter().flatten() {
            let done = started + i["done_ms"].as_i64().unwrap_or(0);
            if let Some(w) = samples
                .windows(2)
                .position(|w| w[0].1 < done && done <= w[1].1)
            {
                own[w].0 += i["pages_accessed"].as_f64().unwrap_or(0.0);
                // The server counts read-ahead pages as reads too (`Innodb_buffer_pool_reads`).
                own[w].1 += i["pages_read"].as_f64().unwrap_or(0.0)
                    + i["pages_prefetched"].as_f64().unwrap_or(0.0);
            }
        }
    }
    let server_wide: Vec<f64> = samples.windows(2).map(|w| ratio(w[0].0, w[1].0)).collect();
    let per_second: Vec<f64> = samples
        .windows(2)
        .zip(&own)
        .map(|(w, o)| ratio(w[0].0, (w[1].0.0 - o.0, w[1].0.1 - o.1)))
        .collect();
    let back = per_second
        .iter()
        .position(|r| *r >= 0.9 * before)
        .map_or("not within 30 s".to_owned(), |i| format!("{} s", i + 1));
    let pct = |v: &[f64], i: usize| v.get(i).map_or(f64::NAN, |r| r * 100.0);
    let at = |i: usize| pct(&per_second, i);
    println!(
        "  {label:<18} before {:.2} %   after resume: 1 s {:.2} %  2 s {:.2} %  5 s {:.2} %  10 s {:.2} %  30 s {:.2} %   back to 90 % of before: {back} (resumed {:.0} ms ago at start)",
        before * 100.0,
        at(0),
        at(1),
        at(4),
        at(9),
        at(29),
        resumed.elapsed().as_millis() as f64 - 30_000.0
    );
    if let Some(e) = hydrated {
        println!(
            "  {:<18} {}\n  {:<18} server-wide, its own lookups included: 1 s {:.2} %  2 s {:.2} %  5 s {:.2} %",
            "",
            e.message,
            "",
            pct(&server_wide, 0),
            pct(&server_wide, 1),
            pct(&server_wide, 4)
        );
    }
    pool.disconnect().await?;
    Ok(())
}

/// Samples 200 cgroups every 200 ms for 10 s, as the monitor does (accounting read, window,
/// decision), and reports the CPU it took.
fn monitor_cost() -> anyhow::Result<()> {
    println!("\n5. Resource monitor cost");
    let layout = stratus_cgroup::Layout::detect();
    let parent = format!("stratus-bench-monitor-{}", std::process::id());
    let manager = match stratus_cgroup::Manager::new(layout, &parent) {
        Ok(m) => m,
        Err(e) => {
            println!("  skipped: no cgroups here ({e})");
            return Ok(());
        }
    };
    let names: Vec<String> = (0..200).map(|i| format!("db{i}")).collect();
    for n in &names {
        manager.create(n)?;
    }
    let policy = stratus_core_policy();
    let mut windows: Vec<stratus_control::scaler::Window> =
        names.iter().map(|_| Default::default()).collect();
    let bounds = stratus_control::scaler::Bounds {
        min_scu: 1,
        max_scu: 8,
        cpu_millis_per_scu: 500,
    };
    let me = std::process::id();
    let (cpu0, wall0) = (cpu_time(me), Instant::now());
    for tick in 0..50 {
        let now = tick * 200;
        for (n, w) in names.iter().zip(windows.iter_mut()) {
            if let Some(cpu_ns) = manager
                .open(n)
                .ok()
                .and_then(|cg| cg.usage().ok())
                .map(|u| u.cpu_ns)
            {
                w.push(
                    stratus_control::scaler::Sample { at_ms: now, cpu_ns },
                    30_000,
                );
            }
            let _ = stratus_control::scaler::decide(w, now, 1, bounds, &policy, None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (cpu, wall) = (cpu_time(me) - cpu0, wall0.elapsed());
    println!(
        "  200 databases every 200 ms for {:.1} s: {:.3} s of CPU = {:.2} % of one core",
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64() * 100.0
    );
    for n in &names {
        if let Ok(cg) = manager.open(n) {
            let _ = cg.remove();
        }
    }
    let _ = manager.remove_parent();
    Ok(())
}

fn stratus_core_policy() -> stratus_core::ScalingPolicy {
    stratus_core::ScalingPolicy::default()
}
