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
//! 6. `stratus up` with 200 active databases: its CPU, and its monitor's (the thread
//!    `stratus-monitor`);
//! 7. 10,000 idle client connections across 100 of them: the proxy's memory per connection,
//!    the backend connections held once the clients are idle, and a `SELECT 1` on an idle
//!    connection with a backend, with its backend released, and on a suspended database.
//!
//! 8. memory admission: one-SCU databases that never sleep, created one after another (each
//!    with its first query) until placement refuses one: how many one host admits at once, and
//!    what their servers really use then.
//!
//! `--bursts` runs only the bursts, `--many` only 4 and 5, `--active` only 6 and 7,
//! `--admission` only 8.
//!
//! Databases here suspend after 2 s idle and park 5 s later, so a hundred of them do not hold a
//! hundred servers' memory; the default is 10 s and 4 hours. In 6 and 7 they never suspend by
//! themselves, and are made small (an SCU of 256 MiB with a 64 MiB buffer pool) so that two
//! hundred fit this host's memory admission at once: those sections measure Stratus, not its
//! servers. Idle clients there give their server connection back after 1 s (10 s by default:
//! see section 7).

use anyhow::{Context, bail};
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratus_api::types::CreateRequest;
use stratus_bench::{Stratus, cpu_time, open_files, rss_kib, servers, summary, thread_cpu};

/// Databases go to sleep quickly here (see the module's docs).
const POLICY: &str = "[policy]\nidle_to_suspend_ms = 2000\nsuspend_to_park_ms = 5000\n";
/// Sections 6 and 7: small databases that stay active (see the module's docs).
const ACTIVE: &str = "[scu]\nmemory_bytes = 268435456\nbuffer_pool_fraction = 0.25\n\
                      [policy]\nidle_to_suspend_ms = 86400000\n\
                      [proxy]\nrelease_idle_after_ms = 1000\n";
/// Databases kept active in section 6, and those of them section 7 connects to.
const ACTIVE_DBS: usize = 200;
const CONNECTED_DBS: usize = 100;
const CONNECTIONS_PER_DB: usize = 100;
/// Creates per second in a burst.
const BURST_RATE: f64 = 3.0;
/// Section 8 stops there if placement has not refused a database before.
const ADMISSION_MAX: usize = 300;
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
    let active_only = flags.iter().any(|a| a == "--active");
    let admission_only = flags.iter().any(|a| a == "--admission");
    println!(
        "Stratus density benchmark ({} CPUs)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let all = !bursts_only && !many_only && !active_only && !admission_only;
    if all {
        spare_and_memory(&bin).await?;
    }
    for n in [20, 100].into_iter().filter(|_| all || bursts_only) {
        burst(&bin, n).await?;
    }
    if all || many_only {
        let mut steps = vec![10, 100];
        if large {
            steps.push(1000);
        }
        many(&bin, &steps).await?;
    }
    if all || active_only {
        active(&bin).await?;
    }
    if all || admission_only {
        admission(&bin).await?;
    }
    Ok(())
}

/// A database a run made: its name and owner's credentials.
struct Made {
    name: String,
    user: String,
    password: String,
    /// The client's own clock: the create's answer, its first login, its first `SELECT 1`.
    ms: [f64; 3],
}

impl Made {
    fn opts(&self, s: &Stratus) -> mysql_async::OptsBuilder {
        s.opts(&self.user, &self.password, &self.name)
    }
}

/// Creates `name` and runs its first query through the proxy.
async fn create_and_query(s: &Stratus, name: &str) -> anyhow::Result<Made> {
    let req = CreateRequest {
        name: name.into(),
        ..CreateRequest::default()
    };
    let lap = |t: &mut Instant| {
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        *t = Instant::now();
        ms
    };
    let mut t = Instant::now();
    let created = s.client().create(&req).await?;
    let mut made = Made {
        name: name.to_owned(),
        user: created.user,
        password: created.password,
        ms: [lap(&mut t), 0.0, 0.0],
    };
    let mut c = Conn::new(made.opts(s)).await?;
    made.ms[1] = lap(&mut t);
    let _: Option<u8> = c.query_first("SELECT 1").await?;
    made.ms[2] = lap(&mut t);
    c.disconnect().await?;
    Ok(made)
}

/// How often database `name`'s CPU quota held its server back so far (cgroup v1 `cpu.stat`,
/// or v2's), read through the server's own cgroup.
fn throttled(s: &Stratus, name: &str) -> Option<String> {
    let pid = server_of(s, name).ok()?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let stat = cgroups.lines().find_map(|l| {
        let (_, rest) = l.split_once(':')?;
        let (controllers, path) = rest.split_once(':')?;
        let dir = match controllers {
            "" => format!("/sys/fs/cgroup{path}"),
            c if c.split(',').any(|c| c == "cpu") => format!("/sys/fs/cgroup/cpu{path}"),
            _ => return None,
        };
        std::fs::read_to_string(format!("{dir}/cpu.stat")).ok()
    })?;
    let field = |k: &str| {
        stat.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
    };
    let periods = field("nr_throttled ")?;
    // v1 counts nanoseconds, v2 microseconds.
    let ms = field("throttled_time ")
        .map(|ns| ns as f64 / 1e6)
        .or_else(|| field("throttled_usec ").map(|us| us as f64 / 1e3))?;
    Some(format!(
        "its CPU quota throttled it {periods} time(s), {ms:.1} ms in all"
    ))
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
            done.map(|made| (made, start.elapsed().as_secs_f64() * 1000.0))
        }));
    }
    let mut ms = Vec::new();
    let mut slowest: Option<(Made, f64)> = None;
    let mut made_all = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await? {
            Ok((made, v)) => {
                ms.push(v);
                made_all.push(made.ms);
                if slowest.as_ref().is_none_or(|(_, m)| v > *m) {
                    slowest = Some((made, v));
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    let events = s.client().events(None, None, Some(10_000)).await?;
    let pooled = events
        .iter()
        .filter(|e| e.kind == "started" && e.data["warm_pool"] == true)
        .count();
    summary(&format!("burst of {n}, {pooled} from the pool"), &mut ms);
    // Two parts of every create's time, as distributions: the statements that make the owner's
    // account and schema (timed by Stratus), and the client's first login with its `SELECT 1`.
    let mut accounts: Vec<f64> = events
        .iter()
        .filter(|e| e.kind == "started" && e.db.starts_with('b'))
        .filter_map(|e| e.data["phases_ms"]["accounts"].as_f64())
        .collect();
    summary("  of it: account statements", &mut accounts);
    let mut first: Vec<f64> = made_all.iter().map(|m| m[1] + m[2]).collect();
    summary("  of it: first login + SELECT 1", &mut first);
    // Where the slowest one's time went: the create (its phases as Stratus timed them), the
    // first login, the first query; and whether its server's CPU quota held it back.
    if let Some((made, total)) = slowest {
        let name = &made.name;
        let started = events.iter().find(|e| e.kind == "started" && e.db == *name);
        if let Some(e) = started {
            let p = &e.data["phases_ms"];
            let [create, login, query] = made.ms;
            let source = if e.data["warm_pool"] == true {
                "from the pool"
            } else {
                "started cold"
            };
            let quota =
                throttled(s.as_ref(), name).unwrap_or_else(|| "its CPU quota unread".into());
            println!(
                "    slowest, {name}: {total:.1} ms = create {create:.1} (server {}, size {}, accounts {}, \
                 catalog {}; {source}) + login {login:.1} + SELECT 1 {query:.1}; {quota}",
                p["server"], p["size"], p["accounts"], p["catalog"],
            );
        }
    }
    if !errors.is_empty() {
        println!("    {} failed, e.g.: {}", errors.len(), errors[0]);
    }
    if n == 100 {
        println!();
    }
    Ok(())
}

/// Creates databases with [`CREATORS`] clients until there are `until`; returns how long it
/// took, and what was made with each create's latency. A create the host refuses for memory
/// is tried again a second later, as a client that backs off would, for up to a minute: its
/// latency counts from the first try, and the refusals are reported.
async fn create_until(
    s: &Arc<Stratus>,
    from: usize,
    until: usize,
) -> anyhow::Result<(Duration, Vec<(Made, f64)>)> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let next = Arc::new(AtomicUsize::new(from));
    let (refusals, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let begin = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CREATORS {
        let (s, next) = (s.clone(), next.clone());
        let (refusals, failures) = (refusals.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let mut ms = Vec::new();
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= until {
                    return Ok::<_, anyhow::Error>(ms);
                }
                let start = Instant::now();
                loop {
                    match create_and_query(&s, &format!("d{i}")).await {
                        Ok(made) => ms.push((made, start.elapsed().as_secs_f64() * 1000.0)),
                        Err(e)
                            if e.to_string().contains("no node has room")
                                && start.elapsed() < Duration::from_secs(60) =>
                        {
                            if refusals.fetch_add(1, Relaxed) == 0 {
                                println!("    the first refusal, d{i}: {e}");
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                        Err(e) => {
                            if failures.fetch_add(1, Relaxed) == 0 {
                                println!("    the first failure, d{i}: {e}");
                            }
                        }
                    }
                    break;
                }
            }
        }));
    }
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await??);
    }
    let (refused, failed) = (refusals.load(Relaxed), failures.load(Relaxed));
    if refused + failed > 0 {
        println!(
            "    {refused} refusals for memory, each tried again 1 s later; {failed} creates not made"
        );
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
        // Each database's files take about 60 MiB (a 32 MiB redo log among them): stop short
        // of filling the disk rather than measure a host out of space.
        let free = rustix::fs::statvfs(&s.dir)
            .map(|v| v.f_bavail * v.f_frsize)
            .unwrap_or(u64::MAX);
        let need = (n - have) as u64 * (64 << 20) + (4 << 30);
        if free < need {
            lines.push(format!(
                "  {n:>5} databases: not measured, they need about {:.0} GiB of disk and {:.0} GiB is free",
                need as f64 / (1u64 << 30) as f64,
                free as f64 / (1u64 << 30) as f64
            ));
            break;
        }
        let (took, made) = create_until(&s, have, n).await?;
        let mut ms: Vec<f64> = made.iter().map(|(_, ms)| *ms).collect();
        if have > 0 {
            let made = ms.len();
            println!(
                "  {} creates in {:.1} s: {made} made, {:.2} a second",
                n - have,
                took.as_secs_f64(),
                made as f64 / took.as_secs_f64(),
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

/// Sections 6 and 7 (see the module's docs).
async fn active(bin: &str) -> anyhow::Result<()> {
    let s = Arc::new(Stratus::start(bin, ACTIVE)?);
    s.wait_metric("stratus_warm_pool_ready", 2.0, Duration::from_secs(300))?;
    let (took, made) = create_until(&s, 0, ACTIVE_DBS).await?;
    let made: Vec<Made> = made.into_iter().map(|(m, _)| m).collect();
    let pid = s.pid();
    // Settled: the pool full again, every new server done with its start.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (cpu0, monitor0, t0) = (
        cpu_time(pid),
        thread_cpu(pid, "stratus-monitor"),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let secs = t0.elapsed().as_secs_f64();
    let pct = |d: Duration| d.as_secs_f64() / secs * 100.0;
    println!(
        "\n6. `stratus up` with {} active databases (made in {:.1} s), idle, over {secs:.0} s",
        made.len(),
        took.as_secs_f64()
    );
    println!(
        "  `stratus up` CPU {:.2} % of a core, of it the monitor {:.2} %   RSS {:.1} MiB",
        pct(cpu_time(pid) - cpu0),
        pct(thread_cpu(pid, "stratus-monitor") - monitor0),
        mib(rss_kib(pid))
    );
    connections(&s, &made).await
}

/// Section 8: one-SCU databases at the installation's defaults that never sleep, made one after
/// another until placement refuses one (at most [`ADMISSION_MAX`]).
async fn admission(bin: &str) -> anyhow::Result<()> {
    let s = Stratus::start(bin, "[policy]\nidle_to_suspend_ms = 86400000\n")?;
    s.wait_metric("stratus_warm_pool_ready", 2.0, Duration::from_secs(300))?;
    let begin = Instant::now();
    let mut made = 0;
    let mut refusal = None;
    while made < ADMISSION_MAX {
        match create_and_query(&s, &format!("a{made}")).await {
            Ok(_) => made += 1,
            Err(e) if e.to_string().contains("no node has room") => {
                refusal = Some(e.to_string());
                break;
            }
            Err(e) => return Err(e),
        }
    }
    let took = begin.elapsed();
    let nodes = s.client().nodes().await?;
    println!("\n8. Memory admission: one-SCU databases that never sleep, made one after another");
    println!(
        "  {made} active at once, made in {:.1} s; {}",
        took.as_secs_f64(),
        refusal.map_or_else(
            || format!("stopped at {ADMISSION_MAX}"),
            |r| format!("the next refused: {r}")
        )
    );
    for n in nodes {
        println!(
            "  node {}: servers use {:.0} MiB ({} % of {:.0} MiB), placement weighs {:.0} MiB ({} %)",
            n.name,
            mib(n.memory_used_bytes >> 10),
            n.memory_used_pct,
            mib(n.memory_bytes >> 10),
            mib(n.memory_load_bytes >> 10),
            n.memory_load_pct
        );
    }
    Ok(())
}

/// Section 7: [`CONNECTIONS_PER_DB`] idle connections to each of [`CONNECTED_DBS`] databases,
/// which stay active. A session gives its server connection back once its client has been
/// idle for `release_idle_after_ms` (1 s here, 10 s by default: ten thousand clients and as
/// many server sessions would need more descriptors than this host gives one process, 20,000,
/// and the databases are connected to one after another).
async fn connections(s: &Arc<Stratus>, made: &[Made]) -> anyhow::Result<()> {
    let dbs = &made[..CONNECTED_DBS.min(made.len())];
    let want = dbs.len() * CONNECTIONS_PER_DB;
    println!(
        "\n7. {want} idle client connections across {} active databases",
        dbs.len()
    );
    let pid = s.pid();
    // `stratus up`'s descriptors beyond one per client are its server sessions, held or kept
    // for reuse (a server's own thread count is no measure: a closed session's thread may wait
    // in its cache).
    let files0 = open_files(pid);
    let sessions = |clients: usize| open_files(pid).saturating_sub(files0 + clients);
    let rss0 = rss_kib(pid);
    let mut conns: Vec<Vec<Conn>> = Vec::new();
    let (mut held, mut most_held) = (Vec::new(), 0);
    let mut failed = Vec::new();
    for m in dbs {
        // Opened 50 at a time, each one login and nothing else.
        let limit = Arc::new(tokio::sync::Semaphore::new(50));
        let mut opening = Vec::new();
        for _ in 0..CONNECTIONS_PER_DB {
            let (limit, opts) = (limit.clone(), m.opts(s));
            opening.push(tokio::spawn(async move {
                let _slot = limit.acquire_owned().await?;
                anyhow::Ok(Conn::new(opts).await?)
            }));
        }
        let mut these = Vec::new();
        for o in opening {
            match o.await? {
                Ok(c) => these.push(c),
                Err(e) => failed.push(e.to_string()),
            }
        }
        let clients = conns.iter().map(Vec::len).sum::<usize>() + these.len();
        most_held = most_held.max(sessions(clients));
        // Two of them, on a connection whose server session is there.
        for c in these.iter_mut().take(2) {
            let begin = Instant::now();
            let _: Option<u8> = c.query_first("SELECT 1").await?;
            held.push(begin.elapsed().as_secs_f64() * 1000.0);
        }
        conns.push(these);
    }
    let opened: usize = conns.iter().map(Vec::len).sum();
    if !failed.is_empty() {
        println!(
            "    {} of {want} connections failed, e.g.: {}",
            failed.len(),
            failed[0]
        );
    }
    // Every session lets its connection go once its client is idle.
    let begin = Instant::now();
    while s
        .metric_sum("stratus_proxy_backend_connections")
        .unwrap_or(f64::MAX)
        > 0.0
    {
        if begin.elapsed() > Duration::from_secs(120) {
            println!("    sessions still holding a server connection after 120 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Idle: nothing runs on them while the memory settles.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss1, held_after) = (rss_kib(pid), sessions(opened));
    let in_use = s.metric_sum("stratus_proxy_backend_connections");
    let pooled = s.metric_sum("stratus_proxy_pooled_connections");
    println!(
        "  `stratus up` RSS {:.1} → {:.1} MiB with {opened} clients: {:.1} KiB per idle client connection",
        mib(rss0),
        mib(rss1),
        (rss1 as f64 - rss0 as f64) / opened.max(1) as f64
    );
    println!(
        "  server sessions for them: {most_held} at most while connecting, {held_after} once they were idle ({} held by a session, {} kept for reuse)",
        in_use.unwrap_or(f64::NAN),
        pooled.unwrap_or(f64::NAN)
    );
    // The pool closes what it kept once unused for `pool_idle_timeout_secs` (60 s).
    let begin = Instant::now();
    while s
        .metric_sum("stratus_proxy_pooled_connections")
        .unwrap_or(f64::MAX)
        > 0.0
        && begin.elapsed() < Duration::from_secs(180)
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "  {:.0} s later, the pool's kept connections closed: {} server sessions, `stratus up` RSS {:.1} MiB",
        begin.elapsed().as_secs_f64(),
        sessions(opened),
        mib(rss_kib(pid))
    );
    summary("SELECT 1, idle, with a server session", &mut held);
    let mut released = Vec::new();
    for these in &mut conns {
        for c in these.iter_mut().take(3) {
            let begin = Instant::now();
            let _: Option<u8> = c.query_first("SELECT 1").await?;
            released.push(begin.elapsed().as_secs_f64() * 1000.0);
        }
    }
    summary(
        "SELECT 1, idle, session released (database active)",
        &mut released,
    );
    // A sleeping database: its first statement wakes it.
    let mut woken = Vec::new();
    for (m, these) in dbs.iter().zip(&mut conns).take(20) {
        s.client().suspend(&m.name, false).await?;
        let c = &mut these[3];
        let begin = Instant::now();
        let _: Option<u8> = c.query_first("SELECT 1").await?;
        woken.push(begin.elapsed().as_secs_f64() * 1000.0);
    }
    summary("SELECT 1, no session, database suspended", &mut woken);
    drop(conns);
    Ok(())
}
