//! `bench/connect`: what a fresh connection costs through the proxy (#15, item 0), measured on a
//! real `stratus up` (usage: connect STRATUS_BIN [N]).
//!
//! One fresh connection is: connect, log in, `SELECT 1`, close; timed in the client process, so
//! no process start is counted, and with each client's own start-up statements turned off
//! (mysql_async's read of `max_allowed_packet` and `wait_timeout`, PyMySQL's `SET AUTOCOMMIT`),
//! so both paths do exactly that. Each client connects N times through the proxy (TCP) and N
//! times directly to the same database's server (its unix socket, as the account without the
//! `<database>.` prefix), alternating, in the same run: the difference is the proxy's. Direct
//! logins over the unix socket skip TCP, so the difference slightly overstates the proxy's
//! share. Clients: mysql_async, and PyMySQL when Python has it. Without TLS so far: mysql_async
//! is built without TLS here, and TLS logins are still to be added for PyMySQL and the `mariadb`
//! client (`docs/connection-setup.md` measured them against a separate server).

use anyhow::{Context, bail};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use std::time::Instant;
use stratus_api::types::CreateRequest;
use stratus_bench::{Stratus, quantile};

/// How one client logs in, through the proxy and directly.
struct Target {
    proxy_port: u16,
    socket: String,
    /// `<database>.<account>`, the proxy's login.
    user: String,
    /// The account as the server knows it.
    account: String,
    password: String,
    database: String,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bin = args.next().context("usage: connect STRATUS_BIN [N]")?;
    let n: usize = args.next().map_or(Ok(200), |s| s.parse())?;
    println!(
        "Stratus fresh-connection benchmark ({} CPUs, {n} connections per client and path)\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // The database must not suspend between rounds, nor a spare start beside the measurement.
    let s = Stratus::start(
        &bin,
        "[policy]\nidle_to_suspend_ms = 86400000\n[pool]\nmin = 0\nmax = 0\n",
    )?;
    let req = CreateRequest {
        name: "conn".into(),
        ..CreateRequest::default()
    };
    let created = s.client().create(&req).await?;
    let view = s.client().show("conn").await?;
    let Some(socket) = view
        .backend
        .and_then(|b| b.strip_prefix("unix:").map(str::to_owned))
    else {
        bail!("the database's server has no unix socket to connect to directly");
    };
    let account = created
        .user
        .split_once('.')
        .map(|(_, a)| a.to_owned())
        .context("the login has no <database>. prefix")?;
    let t = Target {
        proxy_port: s.sql_port,
        socket,
        user: created.user.clone(),
        account,
        password: created.password.clone(),
        database: view.database.clone(),
    };

    println!("Fresh connection: connect, log in, SELECT 1, close (no TLS)");
    mysql_async_rounds(&s, &t, n).await?;
    pymysql_rounds(&t, n)?;
    Ok(())
}

async fn mysql_async_rounds(s: &Stratus, t: &Target, n: usize) -> anyhow::Result<()> {
    // The proxy path is the bench's usual one (`Stratus::opts`).
    let proxy = s
        .opts(&t.user, &t.password, &t.database)
        .max_allowed_packet(Some(16 << 20))
        .wait_timeout(Some(28_800));
    let direct = OptsBuilder::default()
        .socket(Some(t.socket.clone()))
        .user(Some(t.account.clone()))
        .pass(Some(t.password.clone()))
        .db_name(Some(t.database.clone()))
        .max_allowed_packet(Some(16 << 20))
        .wait_timeout(Some(28_800));
    // Warm both paths (the first login fills caches on either side).
    for _ in 0..5 {
        once(proxy.clone()).await?;
        once(direct.clone()).await?;
    }
    let (mut p, mut d) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        p.push(once(proxy.clone()).await?);
        d.push(once(direct.clone()).await?);
    }
    report("mysql_async", &mut p, &mut d);
    Ok(())
}

async fn once(opts: OptsBuilder) -> anyhow::Result<f64> {
    let begin = Instant::now();
    let mut c = Conn::new(opts).await?;
    let _: Option<u8> = c.query_first("SELECT 1").await?;
    c.disconnect().await?;
    Ok(begin.elapsed().as_secs_f64() * 1000.0)
}

/// The same with PyMySQL, timed inside one Python process.
fn pymysql_rounds(t: &Target, n: usize) -> anyhow::Result<()> {
    const SCRIPT: &str = r#"
import json, sys, time
try:
    import pymysql
except ImportError:
    print(json.dumps({"skip": "PyMySQL is not installed"}))
    sys.exit(0)
port, sock, user, account, pw, db, n = sys.argv[1:8]
def once(**kw):
    t = time.perf_counter()
    c = pymysql.connect(password=pw, database=db, autocommit=None, **kw)
    cur = c.cursor(); cur.execute("SELECT 1"); cur.fetchall(); c.close()
    return (time.perf_counter() - t) * 1000
proxy = dict(host="127.0.0.1", port=int(port), user=user, ssl_disabled=True)
direct = dict(unix_socket=sock, user=account, ssl_disabled=True)
for _ in range(5):
    once(**proxy); once(**direct)
p, d = [], []
for _ in range(int(n)):
    p.append(once(**proxy)); d.append(once(**direct))
print(json.dumps({"proxy": p, "direct": d}))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(t.proxy_port.to_string())
        .args([&t.socket, &t.user, &t.account, &t.password, &t.database])
        .arg(n.to_string())
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => bail!(
            "PyMySQL run failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("no message")
        ),
        Err(e) => {
            println!("  PyMySQL: not measured (python3: {e})");
            return Ok(());
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if let Some(why) = v["skip"].as_str() {
        println!("  PyMySQL: not measured ({why})");
        return Ok(());
    }
    let list = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default()
    };
    report("PyMySQL", &mut list("proxy"), &mut list("direct"));
    Ok(())
}

fn report(client: &str, proxy: &mut [f64], direct: &mut [f64]) {
    proxy.sort_by(f64::total_cmp);
    direct.sort_by(f64::total_cmp);
    let (p50, d50) = (quantile(proxy, 0.5), quantile(direct, 0.5));
    println!(
        "  {client:<12} proxy  p50 {p50:>6.2} ms  p99 {:>6.2} ms | direct p50 {d50:>6.2} ms  p99 {:>6.2} ms | proxy - direct at p50 {:>5.2} ms",
        quantile(proxy, 0.99),
        quantile(direct, 0.99),
        p50 - d50
    );
}
