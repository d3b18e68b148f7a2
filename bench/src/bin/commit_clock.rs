//! `bench/commit-clock`: what timing every commit costs (usage: commit_clock STRATUS_BIN
//! [SECONDS]). Stratus follows each server as a semi-synchronous replica so that a commit waits
//! for its acknowledgement (the base of point-in-time restore, `commit_times`). This runs
//! autocommit single-row inserts straight to the server's socket with that wait on and off
//! (`rpl_semi_sync_master_enabled`), alternating, at 1 and 8 client threads, and prints commits
//! per second and their ratio, and the median and 99th-percentile commit latency.

use anyhow::Context;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::time::{Duration, Instant};
use stratus_api::types::CreateRequest;
use stratus_bench::{Stratus, quantile};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let bin = std::env::args()
        .nth(1)
        .context("usage: commit_clock STRATUS_BIN [SECONDS]")?;
    let secs: u64 = std::env::args().nth(2).map_or(Ok(5), |s| s.parse())?;
    // Direct connections are not the proxy's: without this the database would suspend itself
    // as idle in the middle of a run.
    let s = Stratus::start(
        &bin,
        "[mariadb]\nexact_commit_times = true\n[policy]\nidle_to_suspend_ms = 86400000\n[pool]\nmin = 0\nmax = 0\n",
    )?;
    let api = s.client();
    api.create(&CreateRequest {
        name: "clock".into(),
        tier: Some("standard".into()),
        password: Some("pw".into()),
        ..CreateRequest::default()
    })
    .await?;
    // 2 vCPU: the cgroup quota never throttles the server on a 2-core machine.
    api.scale("clock", 4).await?;
    let socket = api
        .show("clock")
        .await?
        .backend
        .and_then(|b| b.strip_prefix("unix:").map(str::to_owned))
        .context("no backend socket")?;
    let direct = OptsBuilder::default()
        .socket(Some(socket))
        .user(Some("root"))
        .db_name(Some("clock"));
    let mut admin = Conn::new(direct.clone()).await?;
    admin
        .query_drop("CREATE TABLE clock.t (id BIGINT PRIMARY KEY AUTO_INCREMENT, v INT)")
        .await?;
    println!(
        "Stratus commit-clock benchmark: autocommit INSERTs straight to the server's socket, {secs} s per run"
    );
    println!("  threads  clock   commits/s   p50 ms   p99 ms   on/off");
    for threads in [1usize, 8] {
        let mut rates = [Vec::new(), Vec::new()];
        for round in 0..3 {
            for (i, on) in [true, false].into_iter().enumerate() {
                let on = if round % 2 == 0 { on } else { !on };
                let i = if round % 2 == 0 { i } else { 1 - i };
                admin
                    .query_drop(format!(
                        "SET GLOBAL rpl_semi_sync_master_enabled = {}",
                        if on { "ON" } else { "OFF" }
                    ))
                    .await?;
                let status: Option<(String, String)> = admin
                    .query_first("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")
                    .await?;
                anyhow::ensure!(
                    status.is_some_and(|(_, n)| n == "1"),
                    "Stratus's commit clock is not attached"
                );
                let (rate, mut lat) = run(&direct, threads, Duration::from_secs(secs)).await?;
                lat.sort_by(f64::total_cmp);
                rates[i].push(rate);
                println!(
                    "  {threads:>7}  {:>5}  {rate:>10.0}  {:>7.3}  {:>7.3}",
                    if on { "on" } else { "off" },
                    quantile(&lat, 0.5),
                    quantile(&lat, 0.99),
                );
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "  {threads:>7}  mean on/off commits per second: {:.3}",
            mean(&rates[0]) / mean(&rates[1])
        );
    }
    admin
        .query_drop("SET GLOBAL rpl_semi_sync_master_enabled = ON")
        .await?;
    admin.disconnect().await?;
    Ok(())
}

/// `threads` clients inserting for `length`: commits per second, and each commit's latency in ms.
async fn run(
    opts: &OptsBuilder,
    threads: usize,
    length: Duration,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..threads {
        let opts = opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(opts).await?;
            let mut lat = Vec::new();
            while begin.elapsed() < length {
                let t = Instant::now();
                c.query_drop("INSERT INTO t (v) VALUES (1)").await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            c.disconnect().await?;
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all.len() as f64 / begin.elapsed().as_secs_f64(), all))
}
