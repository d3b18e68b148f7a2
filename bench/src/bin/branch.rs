//! `bench/branch`: how long a branch of a large database takes (usage: branch STRATUS_BIN
//! [GIB]). Loads GIB (default 1) of rows into a database, then times `db branch` from the API
//! call to its answer and to the first query (`SELECT 1`) answered by the branch through the
//! proxy, three times; checks each branch holds every row and that its writes stay its own.

use anyhow::Context;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::time::Instant;
use stratus_api::types::{BranchRequest, CreateRequest};
use stratus_bench::Stratus;

/// 10 MiB of rows per statement.
const LOAD: &str = "INSERT INTO big (v) SELECT RANDOM_BYTES(1024) FROM seq_1_to_10240";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let bin = std::env::args()
        .nth(1)
        .context("usage: branch STRATUS_BIN [GIB]")?;
    let gib: u32 = std::env::args().nth(2).map_or(Ok(1), |g| g.parse())?;
    let s = Stratus::start(&bin, "[pool]\nmin = 0\nmax = 0\n")?;
    let api = s.client();
    let status = api.status().await?;
    println!("Stratus branch benchmark: storage {}", status.storage);
    if let Some(why) = &status.storage_note {
        println!("  ({why}: branches go through a backup here)");
    }
    let created = api
        .create(&CreateRequest {
            name: "big".into(),
            tier: Some("standard".into()),
            storage_gb: Some(gib * 3 + 1),
            password: Some("pw".into()),
            ..CreateRequest::default()
        })
        .await?;
    let mut c = Conn::new(s.opts(&created.user, "pw", "big")).await?;
    c.query_drop("CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v LONGBLOB)")
        .await?;
    let begin = Instant::now();
    for _ in 0..gib * 103 {
        c.query_drop(LOAD).await?;
    }
    let used = api.show("big").await?.storage_used_bytes.unwrap_or(0);
    println!(
        "  loaded {gib} GiB of rows in {:.1} s; {} MiB on the volume",
        begin.elapsed().as_secs_f64(),
        used >> 20
    );
    let rows: Option<u64> = c.query_first("SELECT COUNT(*) FROM big").await?;
    c.disconnect().await?;
    for i in 1..=3 {
        let name = format!("big-{i}");
        let begin = Instant::now();
        api.branch(
            "big",
            &BranchRequest {
                to: name.clone(),
                time: None,
            },
        )
        .await?;
        let made = begin.elapsed();
        let mut b = Conn::new(s.opts(&format!("{name}.admin"), "pw", "big")).await?;
        let _: Option<u8> = b.query_first("SELECT 1").await?;
        let ready = begin.elapsed();
        // Counting reads the whole table from disk: not part of the branch's time.
        let n: Option<u64> = b.query_first("SELECT COUNT(*) FROM big").await?;
        anyhow::ensure!(
            n == rows,
            "branch {name} has {n:?} rows, the source {rows:?}"
        );
        b.query_drop("DELETE FROM big ORDER BY id LIMIT 10240")
            .await?;
        b.disconnect().await?;
        println!(
            "  branch {i}: API answered in {:>6.0} ms, first query on it in {:>6.0} ms ({} rows, then 10240 deleted on the branch only)",
            made.as_secs_f64() * 1000.0,
            ready.as_secs_f64() * 1000.0,
            n.unwrap_or(0)
        );
    }
    let mut c = Conn::new(s.opts(&created.user, "pw", "big")).await?;
    let after: Option<u64> = c.query_first("SELECT COUNT(*) FROM big").await?;
    anyhow::ensure!(
        after == rows,
        "the source changed: {after:?} rows, was {rows:?}"
    );
    println!("  source unchanged: {} rows", after.unwrap_or(0));
    Ok(())
}
