//! `bench/density`: how one host copes with bursts of creates and with many databases (issue
//! #15), on a real `stratus up` (usage: density STRATUS_BIN [--large]).
//!
//! 1. one spare's start: its server's CPU-seconds, and the wall time to replace a claimed one;
//! 2. memory per server (RSS): an idle spare, a database after its first query, the same one
//!    suspended;
//! 3. bursts of 20 and 100 creates arriving at 3 per second: create → first query through the
//!    proxy, p50 and p99, and how many found a spare;
//! 4. the sustained create rate: three clients creating back to back from 10 to 100 databases
//!    (to 1,000 with `--large`);
//! 5. `stratus up`'s own CPU (% of one core over 30 s) and RSS with 10 and 100 databases (and
//!    1,000 with `--large`), every one parked.
//!
//! `--bursts` runs only the bursts, `--many` only the last two.
//!
//! Databases here suspend after 2 s idle and park 5 s later, so a hundred of them do not hold a
//! hundred servers' memory; the default is 10 s and 4 hours.

use anyhow::{Context, bail};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratus_api::types::CreateRequest;
use stratus_bench::{Stratus, cpu_time, rss_kib, servers, summary};

/// Databases go to sleep quickly here (see the module's docs).
const POLICY: &str = "[policy]\nidle_to_suspend_ms = 2000\nsuspend_to_park_ms = 5000\n";
/// Creates per second in a burst.
const BURST_RATE: f64 = 3.0;
/// Clients creating at once for the sustained rate.
const CREATORS: usize = 3;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .context("usage: density STRATUS_BIN [--large] [--bursts]")?;
    let flags: Vec<String> = args.collect();
    let large = flags.iter().any(|a| a == "--large");
    let bursts_only = flags.iter().any(|a| a == "--bursts");
    let many_only = flags.iter().any(|a| a == "--many");
    println!(
        "Stratus density benchmark ({} CPUs)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if !bursts_only && !many_only {
        spare_and_memory(&bin).await?;
    }
    for n in [20, 100].into_iter().filter(|_| !many_only) {
        burst(&bin, n).await?;
    }
    if bursts_only {
        return Ok(());
    }
    let mut steps = vec![10, 100];
    if large {
        steps.push(1000);
    }
    many(&bin, &steps).await?;
    Ok(())
}

/// Creates `name` and runs its first query through the proxy.
async fn create_and_query(s: &Stratus, name: &str) -> anyhow::Result<()> {
    let req = CreateRequest {
        name: name.into(),
        ..CreateRequest::default()
    };
    let made = s.client().create(&req).await?;
    let mut c = Conn::new(s.opts(&made.user, &made.password, name)).await?;
    let _: Option<u8> = c.query_first("SELECT 1").await?;
    c.disconnect().await?;
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The server of database `name`, from the pid file in its directory (a server claimed from
/// the pool was started under the spare's name, which its command line keeps).
fn server_of(s: &Stratus, name: &str) -> anyhow::Result<u32> {
    let file = s.dir.join("data/databases").join(name).join("mariadbd.pid");
    std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .with_context(|| format!("no server runs for {name} ({} unreadable)", file.display()))
}

async fn spare_and_memory(bin: &str) -> anyhow::Result<()> {
    println!("1. One spare's start");
    let s = Stratus::start(bin, "[pool]\nmin = 3\nmax = 3\npresized = 0\n")?;
    s.wait_metric("stratus_warm_pool_ready", 3.0, Duration::from_secs(300))?;
    let spares = servers(&s.dir.join("data"));
    if spares.len() != 3 {
        bail!("expected 3 spare servers, found {spares:?}");
    }
    let cpu: Vec<f64> = spares
        .iter()
        .map(|(_, pid)| cpu_time(*pid).as_secs_f64())
        .collect();
    let rss: Vec<u64> = spares.iter().map(|(_, pid)| rss_kib(*pid)).collect();
    println!(
        "  CPU of one server's start (3 started together)    {:.2} s  (each: {})",
        cpu.iter().sum::<f64>() / cpu.len() as f64,
        cpu.iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // A create claims one; from then until the pool is full again is one spare's start,
    // alone (to within the 50 ms the metric is polled at).
    let begin = Instant::now();
    create_and_query(&s, "m1").await?;
    let created = begin.elapsed();
    s.wait_metric("stratus_warm_pool_ready", 3.0, Duration::from_secs(300))?;
    println!(
        "  wall time of one spare's start, alone             {:.0} ms  (from the create; the create took {:.1} ms)",
        begin.elapsed().as_secs_f64() * 1000.0,
        created.as_secs_f64() * 1000.0
    );
    println!("\n2. Memory per server (RSS)");
    println!(
        "  an idle spare                                     {:.1} MiB  (each: {})",
        mib(rss.iter().sum::<u64>()) / rss.len() as f64,
        rss.iter()
            .map(|r| format!("{:.1}", mib(*r)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let pid = server_of(&s, "m1")?;
    println!(
        "  a database after its first query                  {:.1} MiB",
        mib(rss_kib(pid))
    );
    s.client().suspend("m1", false).await?;
    // The buffer pool may shrink after the call returns: read until it stays put.
    let mut rss = rss_kib(pid);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss_kib(pid);
        if now.abs_diff(rss) < 256 {
            break;
        }
        rss = now;
    }
    println!(
        "  the same, suspended (once its RSS stays put)      {:.1} MiB",
        mib(rss)
    );
    println!();
    Ok(())
}

async fn burst(bin: &str, n: usize) -> anyhow::Result<()> {
    if n == 20 {
        println!(
            "3. Bursts: creates arriving at {BURST_RATE}/s, create → first query (default pool: min 2, max 8)"
        );
    }
    let s = Arc::new(Stratus::start(bin, POLICY)?);
    s.wait_metric("stratus_warm_pool_ready", 2.0, Duration::from_secs(300))?;
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = s.clone();
        let at = begin + Duration::from_secs_f64(i as f64 / BURST_RATE);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let start = Instant::now();
            let done = create_and_query(&s, &format!("b{i}")).await;
            done.map(|()| start.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut ms = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await? {
            Ok(v) => ms.push(v),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let events = s.client().events(None, None, Some(10_000)).await?;
    let pooled = events
        .iter()
        .filter(|e| e.kind == "started" && e.data["warm_pool"] == true)
        .count();
    summary(&format!("burst of {n}, {pooled} from the pool"), &mut ms);
    if !errors.is_empty() {
        println!("    {} failed, e.g.: {}", errors.len(), errors[0]);
    }
    if n == 100 {
        println!();
    }
    Ok(())
}

/// Creates databases with [`CREATORS`] clients until there are `until`; returns how long it
/// took and each create's latency.
async fn create_until(
    s: &Arc<Stratus>,
    from: usize,
    until: usize,
) -> anyhow::Result<(Duration, Vec<f64>)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let begin = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CREATORS {
        let (s, next, failures) = (s.clone(), next.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let mut ms = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= until {
                    return Ok::<_, anyhow::Error>(ms);
                }
                let start = Instant::now();
                match create_and_query(&s, &format!("d{i}")).await {
                    Ok(()) => ms.push(start.elapsed().as_secs_f64() * 1000.0),
                    // Refused (the host full, say): reported, and the run goes on.
                    Err(e) => {
                        if failures.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                            println!("    the first refused, d{i}: {e}");
                        }
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await??);
    }
    let failed = failures.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        println!("    {failed} of {} creates refused", until - from);
    }
    Ok((begin.elapsed(), all))
}

/// Waits until no database is active or suspended (bounded).
async fn all_parked(s: &Stratus, timeout: Duration) -> anyhow::Result<()> {
    let begin = Instant::now();
    loop {
        let list = s.client().list().await?;
        // (a database whose create failed is neither, and is not waited for)
        let awake = list
            .iter()
            .filter(|d| d.state == "active" || d.state == "suspended")
            .count();
        if awake == 0 {
            return Ok(());
        }
        if begin.elapsed() > timeout {
            bail!("{awake} of {} databases not parked", list.len());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn many(bin: &str, steps: &[usize]) -> anyhow::Result<()> {
    let s = Arc::new(Stratus::start(bin, POLICY)?);
    s.wait_metric("stratus_warm_pool_ready", 2.0, Duration::from_secs(300))?;
    let mut have = 0;
    let mut lines = Vec::new();
    println!("4. Sustained create rate ({CREATORS} clients creating back to back)");
    for &n in steps {
        let (took, mut ms) = create_until(&s, have, n).await?;
        if have > 0 {
            let made = ms.len();
            println!(
                "  {} creates in {:.1} s: {made} made ({:.2}/s), {} refused",
                n - have,
                took.as_secs_f64(),
                made as f64 / took.as_secs_f64(),
                n - have - made
            );
            summary("create → first query, of those made", &mut ms);
        }
        have = n;
        all_parked(&s, Duration::from_secs(600)).await?;
        // Settled: the pool full again, nothing running but spares.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let pid = s.pid();
        let cpu0 = cpu_time(pid);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(30)).await;
        let pct = (cpu_time(pid) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
        // Those that exist: a refused create made none.
        let count = s.client().list().await?.len();
        lines.push(format!(
            "  {count:>5} databases, all parked: `stratus up` CPU {pct:>5.2} % of a core   RSS {:>6.1} MiB",
            mib(rss_kib(pid))
        ));
    }
    println!("\n5. `stratus up` itself, with many databases");
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
