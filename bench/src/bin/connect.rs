//! `bench/connect`: what a fresh connection costs through the proxy (#15, item 0), measured on a
//! real `stratus up` (usage: connect STRATUS_BIN [N]).
//!
//! One fresh connection is: connect, log in, `SELECT 1`, close; timed in the client process, so
//! no process start is counted, and with each client's own start-up statements turned off
//! (mysql_async's read of `max_allowed_packet` and `wait_timeout`, PyMySQL's `SET AUTOCOMMIT`),
//! so both paths do exactly that. Each client connects N times through the proxy (TCP) and N
//! times directly to the same database's server (its unix socket, as the account without the
//! `<database>.` prefix), in pairs taken back to back (each pair's order alternating), in the
//! same run: the difference is the proxy's, printed as the difference of the two medians and as
//! the median of the pairs' differences (which drift over the run moves much less). Direct
//! logins over the unix socket skip TCP, so the difference slightly overstates the proxy's
//! share. Clients: mysql_async, and PyMySQL when Python has it.
//!
//! With TLS, the direct path is a plain `mariadbd` of the bench's own on 127.0.0.1, with
//! Stratus's certificate (the databases' servers take no TLS: the proxy ends it), so both paths
//! do the same handshake with the same key. PyMySQL, with a context made once from Stratus's CA;
//! and the stock `mariadb` client, timed as whole processes (its start, some 5–10 ms, is in
//! both paths), at its defaults (TLS, with the system's trust store read at each start), with
//! `--ssl-ca` naming Stratus's CA, and with `--skip-ssl`. mysql_async is built without TLS here.
//!
//! Last, with a second `stratus up` and its default warm pool: databases created 1.5 s apart,
//! and the first query on each (#15: it must be as fast as any other).

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

    let tls = s.dir.join("data").join("tls");
    let direct = PlainServer::start(&s.dir.join("direct-tls"), &tls, &t).await?;
    println!(
        "\nWith TLS (direct: a plain mariadbd on 127.0.0.1 with Stratus's certificate, port {})",
        direct.port
    );
    pymysql_tls_rounds(&t, direct.port, &tls.join("ca.pem"), n)?;
    println!("\nThe stock mariadb client, whole processes (connect, log in, SELECT 1, exit)");
    cli_rounds(&t, direct.port, &tls.join("ca.pem"), n.min(100))?;
    drop(direct);
    drop(s);

    // The first query on a database just made: a `stratus up` with its default warm pool.
    let s = Stratus::start(&bin, "[policy]\nidle_to_suspend_ms = 86400000\n")?;
    s.wait_metric(
        "stratus_warm_pool_ready",
        2.0,
        std::time::Duration::from_secs(300),
    )?;
    let creates = n.clamp(5, 20);
    println!(
        "\nCreate, then the first query ({creates} creates per client, 1.5 s apart, the default warm pool)"
    );
    create_rounds(&s, creates).await?;
    Ok(())
}

/// Creates databases 1.5 s apart (as a user would, the pool refilling between), and times for
/// each: the create's answer, the first fresh login and `SELECT 1` through the proxy with
/// mysql_async and with the stock `mariadb` client (at its defaults, and with `--ssl-ca`, so
/// its trust store is not in it), and, for comparison, a later fresh login on the same
/// database.
async fn create_rounds(s: &Stratus, n: usize) -> anyhow::Result<()> {
    let ca = s.dir.join("data").join("tls").join("ca.pem");
    let ca_arg = format!("--ssl-ca={}", ca.display());
    let mut create = Vec::new();
    let mut first = Vec::new();
    let mut total = Vec::new();
    let mut later = Vec::new();
    // The stock client: [--ssl-ca, defaults] × [first, create -> first, later].
    let mut cli_times: [[Vec<f64>; 3]; 2] = Default::default();
    let cli = |user: &str, password: &str, db: &str, args: &[&str]| -> anyhow::Result<f64> {
        let login = Login {
            port: s.sql_port,
            user,
            password,
            db: Some(db),
        };
        Ok(mariadb(&login, args, "SELECT 1")?.0)
    };
    let cli_args: [&[&str]; 2] = [&[ca_arg.as_str()], &[]];
    for i in 0..n * 3 {
        // Creates take turns between the clients, so each database's first query is the
        // first of its kind.
        let with_cli = (i % 3 != 0).then(|| i % 3 - 1);
        let req = CreateRequest {
            name: format!("first-{i}"),
            ..CreateRequest::default()
        };
        let begin = Instant::now();
        let made = s.client().create(&req).await?;
        let answered = begin.elapsed().as_secs_f64() * 1000.0;
        let db = s.client().show(&req.name).await?.database;
        if let Some(mode) = with_cli {
            let args = cli_args[mode];
            let q = cli(&made.user, &made.password, &db, args)?;
            let times = &mut cli_times[mode];
            times[0].push(q);
            times[1].push(answered + q);
            times[2].push(cli(&made.user, &made.password, &db, args)?);
        } else {
            create.push(answered);
            let opts = s
                .opts(&made.user, &made.password, &db)
                .max_allowed_packet(Some(16 << 20))
                .wait_timeout(Some(28_800));
            let q = once(opts.clone()).await?;
            first.push(q);
            total.push(answered + q);
            later.push(once(opts).await?);
        }
        // Gone again, so the host's memory admits the next ones (each holds its size).
        s.client().delete(&req.name).await?;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    }
    let line = |what: &str, v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        println!(
            "  {what:<50} p50 {:>7.2} ms  p99 {:>7.2} ms",
            quantile(v, 0.5),
            quantile(v, 0.99)
        );
    };
    line("create (API answer)", &mut create);
    line("first login + SELECT 1 (mysql_async)", &mut first);
    line("create -> first query answered (mysql_async)", &mut total);
    line("a later login + SELECT 1 (mysql_async)", &mut later);
    for (mode, times) in ["mariadb --ssl-ca", "mariadb defaults"]
        .into_iter()
        .zip(&mut cli_times)
    {
        let [cli_first, cli_total, cli_later] = times;
        line(&format!("first login + SELECT 1 ({mode})"), cli_first);
        line(
            &format!("create -> first query answered ({mode})"),
            cli_total,
        );
        line(&format!("a later login + SELECT 1 ({mode})"), cli_later);
    }
    Ok(())
}

/// A plain `mariadbd` on 127.0.0.1 with TLS, holding the bench's account: the direct path of
/// the TLS logins. Killed on drop.
struct PlainServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PlainServer {
    async fn start(
        dir: &std::path::Path,
        tls: &std::path::Path,
        t: &Target,
    ) -> anyhow::Result<Self> {
        use std::process::{Command, Stdio};
        let data = dir.join("data");
        std::fs::create_dir_all(dir)?;
        let root = rustix::process::geteuid().is_root();
        let mut install = Command::new("mariadb-install-db");
        install.args([
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]);
        if root {
            install.arg("--user=root");
        }
        let out = install.output().context("mariadb-install-db")?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = stratus_bench::free_port()?;
        let socket = dir.join("s.sock");
        let mut cmd = Command::new("mariadbd");
        cmd.args([
            "--no-defaults".to_owned(),
            format!("--datadir={}", data.display()),
            format!("--socket={}", socket.display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--pid-file={}", dir.join("pid").display()),
            format!("--log-error={}", dir.join("error.log").display()),
            "--innodb-buffer-pool-size=64M".into(),
            "--skip-name-resolve".into(),
            format!("--ssl-cert={}", tls.join("cert.pem").display()),
            format!("--ssl-key={}", tls.join("key.pem").display()),
        ]);
        if root {
            cmd.arg("--user=root");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("mariadbd (install mariadb-server)")?;
        let server = Self { child, port };
        let opts = OptsBuilder::default()
            .socket(Some(socket.display().to_string()))
            .user(Some("root"));
        let begin = Instant::now();
        let mut conn = loop {
            match Conn::new(opts.clone()).await {
                Ok(c) => break c,
                Err(_) if begin.elapsed().as_secs() < 60 => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await
                }
                Err(e) => bail!("the plain mariadbd did not start: {e}"),
            }
        };
        let have_ssl: Option<String> = conn.query_first("SELECT @@have_ssl").await?;
        if have_ssl.as_deref() != Some("YES") {
            bail!("the plain mariadbd did not take Stratus's certificate (have_ssl {have_ssl:?})");
        }
        for sql in [
            format!("CREATE DATABASE `{}`", t.database),
            format!(
                "CREATE USER '{}'@'%' IDENTIFIED BY '{}'",
                t.account, t.password
            ),
            format!("GRANT ALL ON `{}`.* TO '{}'@'%'", t.database, t.account),
        ] {
            conn.query_drop(sql).await?;
        }
        conn.disconnect().await?;
        Ok(server)
    }
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
    for i in 0..n {
        // Each pair in turn order, so neither path always follows the other.
        if i % 2 == 0 {
            p.push(once(proxy.clone()).await?);
            d.push(once(direct.clone()).await?);
        } else {
            d.push(once(direct.clone()).await?);
            p.push(once(proxy.clone()).await?);
        }
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
"#;
    let mut args = vec![t.proxy_port.to_string()];
    args.extend([&t.socket, &t.user, &t.account, &t.password, &t.database].map(String::clone));
    args.push(n.to_string());
    pymysql("PyMySQL", SCRIPT, &args)
}

/// Runs a PyMySQL timing script (it defines one timed login, `once`, and the two paths; the
/// rounds are added here, printing `{"proxy": [ms…], "direct": [ms…]}`, or `{"skip": why}`)
/// and reports it as `client`; a machine without Python or PyMySQL is said, not failed.
fn pymysql(client: &str, script: &str, args: &[String]) -> anyhow::Result<()> {
    // Both scripts define `once`, `proxy`, `direct` and `n`: warm both paths, then alternate.
    const ROUNDS: &str = r#"
for _ in range(5):
    once(**proxy); once(**direct)
p, d = [], []
for i in range(int(n)):
    if i % 2 == 0:
        p.append(once(**proxy)); d.append(once(**direct))
    else:
        d.append(once(**direct)); p.append(once(**proxy))
print(json.dumps({"proxy": p, "direct": d}))
"#;
    let script = format!("{script}{ROUNDS}");
    let out = std::process::Command::new(python())
        .args(["-c", &script])
        .args(args)
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        Ok(o) => bail!(
            "{client} run failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("no message")
        ),
        Err(e) => {
            println!("  {client}: not measured (python3: {e})");
            return Ok(());
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if let Some(why) = v["skip"].as_str() {
        println!("  {client}: not measured ({why})");
        return Ok(());
    }
    let list = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default()
    };
    report(client, &mut list("proxy"), &mut list("direct"));
    Ok(())
}

/// The first `python3` on the path that has PyMySQL, else the distribution's (where
/// `python3-pymysql` installs it): a pyenv or virtualenv `python3` ahead of it on the path
/// would leave PyMySQL's rows out.
fn python() -> &'static str {
    let has_pymysql = |py: &str| {
        std::process::Command::new(py)
            .args(["-c", "import pymysql"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|py| has_pymysql(py))
        .unwrap_or("python3")
}

/// PyMySQL with TLS, a context made once from Stratus's CA, through the proxy and to the plain
/// server with the same certificate.
fn pymysql_tls_rounds(
    t: &Target,
    tls_port: u16,
    ca: &std::path::Path,
    n: usize,
) -> anyhow::Result<()> {
    const SCRIPT: &str = r#"
import json, ssl, sys, time
try:
    import pymysql
except ImportError:
    print(json.dumps({"skip": "PyMySQL is not installed"}))
    sys.exit(0)
port, tls_port, user, account, pw, db, ca, n = sys.argv[1:9]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
def once(**kw):
    t = time.perf_counter()
    c = pymysql.connect(host="127.0.0.1", password=pw, database=db, autocommit=None, ssl=ctx, **kw)
    cur = c.cursor(); cur.execute("SELECT 1"); cur.fetchall()
    assert c._sock.version() is not None, "not TLS"
    c.close()
    return (time.perf_counter() - t) * 1000
proxy = dict(port=int(port), user=user)
direct = dict(port=int(tls_port), user=account)
"#;
    let mut args = vec![t.proxy_port.to_string(), tls_port.to_string()];
    args.extend([&t.user, &t.account, &t.password, &t.database].map(String::clone));
    args.extend([ca.display().to_string(), n.to_string()]);
    pymysql("PyMySQL TLS", SCRIPT, &args)
}

/// The stock `mariadb` client, each login a whole process, in three TLS modes, through the
/// proxy and to the plain server.
fn cli_rounds(t: &Target, tls_port: u16, ca: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let ca_arg = format!("--ssl-ca={}", ca.display());
    let modes: [(&str, Vec<&str>); 3] = [
        ("defaults", vec![]),
        ("--ssl-ca", vec![ca_arg.as_str()]),
        ("--skip-ssl", vec!["--skip-ssl"]),
    ];
    for (mode, extra) in modes {
        let run = |port: u16, user: &str| -> anyhow::Result<f64> {
            Ok(mariadb(&Login::of(port, user, t), &extra, "SELECT 1")?.0)
        };
        // What the mode does, as the plain server saw the session.
        let (_, seen) = mariadb(
            &Login::of(tls_port, &t.account, t),
            &extra,
            "SHOW SESSION STATUS LIKE 'Ssl_version'",
        )?;
        let version = seen
            .split_whitespace()
            .nth(1)
            .unwrap_or("no TLS")
            .to_owned();
        println!("  mariadb {mode}: {version}");
        for _ in 0..3 {
            run(t.proxy_port, &t.user)?;
            run(tls_port, &t.account)?;
        }
        let (mut p, mut d) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            if i % 2 == 0 {
                p.push(run(t.proxy_port, &t.user)?);
                d.push(run(tls_port, &t.account)?);
            } else {
                d.push(run(tls_port, &t.account)?);
                p.push(run(t.proxy_port, &t.user)?);
            }
        }
        report(&format!("mariadb {mode}"), &mut p, &mut d);
    }
    Ok(())
}

/// A login of the stock `mariadb` client on 127.0.0.1.
struct Login<'a> {
    port: u16,
    user: &'a str,
    password: &'a str,
    db: Option<&'a str>,
}

impl<'a> Login<'a> {
    /// `user` on `port`, with the bench's password and database.
    fn of(port: u16, user: &'a str, t: &'a Target) -> Self {
        Self {
            port,
            user,
            password: &t.password,
            db: Some(&t.database),
        }
    }
}

/// Runs the stock `mariadb` client once (`extra`: its TLS options) for `sql`: how long the whole
/// process took, in ms, and what it printed. The password goes in `MYSQL_PWD`.
fn mariadb(login: &Login<'_>, extra: &[&str], sql: &str) -> anyhow::Result<(f64, String)> {
    let begin = Instant::now();
    let port = login.port.to_string();
    let mut cmd = std::process::Command::new("mariadb");
    cmd.args([
        "--no-defaults",
        "-h",
        "127.0.0.1",
        "-P",
        &port,
        "-u",
        login.user,
    ]);
    if let Some(db) = login.db {
        cmd.args(["-D", db]);
    }
    let out = cmd
        .args(extra)
        .args(["-N", "-e", sql])
        .env("MYSQL_PWD", login.password)
        .output()
        .context("mariadb (install mariadb-client)")?;
    let ms = begin.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "mariadb {}: {}",
            extra.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((ms, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Prints both paths' p50 and p99 and their difference at p50; and, since the logins come in
/// pairs taken back to back (`proxy[i]` beside `direct[i]`), the median of the pairs'
/// differences, which the machine's drift over a run moves far less than the two medians apart.
fn report(client: &str, proxy: &mut [f64], direct: &mut [f64]) {
    let mut paired: Vec<f64> = proxy
        .iter()
        .zip(direct.iter())
        .map(|(p, d)| p - d)
        .collect();
    paired.sort_by(f64::total_cmp);
    proxy.sort_by(f64::total_cmp);
    direct.sort_by(f64::total_cmp);
    let (p50, d50) = (quantile(proxy, 0.5), quantile(direct, 0.5));
    println!(
        "  {client:<20} proxy  p50 {p50:>6.2} ms  p99 {:>6.2} ms | direct p50 {d50:>6.2} ms  p99 {:>6.2} ms | proxy - direct at p50 {:>5.2} ms, paired {:>5.2} ms",
        quantile(proxy, 0.99),
        quantile(direct, 0.99),
        p50 - d50,
        quantile(&paired, 0.5)
    );
}
