//! Live migration between two nodes of one `stratus up` (#12), under load: the bank's
//! contended transfers (`common::bank`) and `sysbench oltp_read_write` at 8 threads run through
//! the proxy while the database moves, and no client may notice: no error, no disconnect, no
//! read that sees part of a transfer, a ledger that adds up, and each session's state intact.
//! Then the faults: the target killed while it is copied, while it catches up and during the
//! cut-over; each time the source serves on and nothing is lost.

mod common;

use common::bank::*;
use common::{Stratus, now_rfc3339};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `local` (the data directory, more memory: databases start there) and `n2`, a second "disk".
fn two_nodes(s: &mut Stratus) -> PathBuf {
    s.nodes.push("n2".to_owned());
    let disk2 = s.dir.path().join("disk2");
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!(
            "{cfg}[[nodes]]\nname = \"local\"\nmemory_bytes = {}\n\
             [[nodes]]\nname = \"n2\"\ndata_dir = \"{}\"\nmemory_bytes = {}\n",
            64u64 << 30,
            disk2.display(),
            32u64 << 30
        ),
    )
    .unwrap();
    disk2
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `sysbench oltp_read_write` on the bank's database through the proxy. Each transaction
/// writes one row (no index updates, no delete-and-insert), so InnoDB has no deadlock to pick a
/// victim in, and sysbench stops at any error at all (`--mysql-ignore-errors=none`).
fn sysbench(s: &Stratus, o: &Opts, args: &[&str]) -> Command {
    let (host, port) = s.listen.split_once(':').unwrap();
    let mut cmd = Command::new("sysbench");
    cmd.arg("oltp_read_write")
        .arg(format!("--mysql-host={host}"))
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-user={}", o.user().unwrap()))
        .arg(format!("--mysql-password={}", o.pass().unwrap()))
        .arg("--mysql-db=bank")
        .args(["--tables=2", "--table-size=10000", "--db-ps-mode=auto"])
        .args([
            "--index_updates=0",
            "--delete_inserts=0",
            "--mysql-ignore-errors=none",
        ])
        .args(args);
    cmd
}

/// `db migrate bank --to n2 --json` in a thread of its own, for a test that acts meanwhile.
fn migrate_in_background(s: &Stratus) -> std::thread::JoinHandle<std::process::Output> {
    let (api, dir) = (s.api.clone(), s.data_dir());
    std::thread::spawn(move || {
        Command::new(common::BIN)
            .args(["--api", &api, "--data-dir"])
            .arg(&dir)
            .args(["db", "migrate", "bank", "--to", "n2", "--json"])
            .output()
            .unwrap()
    })
}

/// The longest any client went without a successful statement between `from` and `to`.
fn longest_stall(successes: &[(i64, Instant)], from: Instant, to: Instant) -> Duration {
    let mut by_client: std::collections::BTreeMap<i64, Vec<Instant>> = Default::default();
    for (c, at) in successes {
        by_client.entry(*c).or_default().push(*at);
    }
    by_client
        .values_mut()
        .map(|times| {
            times.sort();
            times
                .windows(2)
                .filter(|w| w[1] > from && w[0] < to)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or_default()
        })
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_moves_to_another_node_under_load_and_no_client_notices() {
    let mut s = Stratus::new("migrate");
    let disk2 = two_nodes(&mut s);
    s.start();
    let o = open_bank(&s).await;
    let opts = Opts::from(o.clone());
    let before = s.json(&["db", "show", "bank"]);
    assert_eq!(before["node"], "local");
    let source_pid = before["pid"].as_u64().unwrap();
    let source_dir = s.data_dir().join("databases").join("bank");
    assert!(source_dir.exists());

    let prepared = sysbench(&s, &opts, &["prepare"]).output().unwrap();
    assert!(prepared.status.success(), "{prepared:?}");

    // A session with state of every kind the move must carry.
    let mut session = Conn::new(s.sql_opts(opts.user().unwrap(), opts.pass().unwrap(), None))
        .await
        .unwrap();
    session
        .query_drop("USE bank; SET @carried = 42; SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    let stmt = session
        .prep("SELECT COUNT(*) FROM accounts WHERE id <= ?")
        .await
        .unwrap();

    let clients = Clients::start(&o, 4, 2, false);
    let bench = sysbench(
        &s,
        &opts,
        &["--threads=8", "--time=25", "--report-interval=0", "run"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    fifty_more_commits(&clients.tally, "before the move").await;

    // Two moves at once: one goes through, the other is refused while it runs.
    let began = Instant::now();
    let (one, other) = (migrate_in_background(&s), migrate_in_background(&s));
    let (one, other) = (one.join().unwrap(), other.join().unwrap());
    let moved_at = Instant::now();
    let (out, refused) = if one.status.success() {
        (one, other)
    } else {
        (other, one)
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = String::from_utf8_lossy(&refused.stderr);
    assert!(refused.contains("being migrated already"), "{refused}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();

    fifty_more_commits(&clients.tally, "after the move").await;
    let tally = clients.stop().await;
    let bench = bench.wait_with_output().unwrap();
    let bench_out = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "sysbench: {bench_out}{}",
        String::from_utf8_lossy(&bench.stderr)
    );

    // What the clients saw.
    let stall = longest_stall(&tally.successes, began, moved_at);
    println!(
        "migration under load: {report}; {} transfers, {} reads; longest stall of a bank client {} ms",
        tally.committed.len(),
        tally.reads,
        stall.as_millis()
    );
    assert!(
        tally.errors.is_empty(),
        "client errors: {:#?}",
        tally.errors
    );
    assert_eq!(tally.mismatches, 0, "{:#?}", tally.mismatch_detail);
    assert!(
        tally.inconsistent.is_empty(),
        "reads that saw part of a transfer: {}",
        tally.inconsistent.len()
    );
    audit(&o, &tally).await;
    // sysbench stopped at any error; it may also report none it ignored or reconnected for.
    let stat = |line: &str| {
        let l = bench_out
            .lines()
            .find(|l| l.trim_start().starts_with(line))
            .unwrap_or_else(|| panic!("no {line} in {bench_out}"));
        l.split(':')
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_owned)
    };
    assert_eq!(stat("ignored errors:").as_deref(), Some("0"), "{bench_out}");
    assert_eq!(stat("reconnects:").as_deref(), Some("0"), "{bench_out}");
    for outcome in ["ended", "mismatch", "not_replayable", "unknown", "gave_up"] {
        let series = format!("stratus_proxy_failovers_total{{db=\"bank\",outcome=\"{outcome}\"}}");
        assert_eq!(s.metric(&series), Some(0.0), "{series}");
    }
    println!(
        "sysbench through the move: {} transactions, 0 errors",
        stat("transactions:").unwrap_or_default()
    );

    // The session carried its state across.
    let (carried, mode, schema): (i64, String, String) = session
        .query_first("SELECT @carried, @@sql_mode, DATABASE()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (carried, mode.as_str(), schema.as_str()),
        (42, "ANSI_QUOTES", "bank")
    );
    let n: i64 = session.exec_first(&stmt, (5,)).await.unwrap().unwrap();
    assert_eq!(n, 5, "the prepared statement still runs");
    session.disconnect().await.unwrap();

    // Where it is now, and what is left of where it was.
    assert_eq!(report["from"], "local");
    assert_eq!(report["to"], "n2");
    let after = s.json(&["db", "show", "bank"]);
    assert_eq!(after["node"], "n2");
    assert_eq!(after["state"], "active");
    let data = after["data_dir"].as_str().unwrap();
    assert!(data.starts_with(disk2.to_str().unwrap()), "{data}");
    assert!(!alive(source_pid), "the source's server is gone");
    assert!(!source_dir.exists(), "the source's data is gone");
    // The copy caught up with durability relaxed; the server it became is as durable as any,
    // and its commits wait for its commit clock again (a write through the proxy shows it).
    let mut root = s.direct("bank").await;
    let flush: u32 = root
        .query_first("SELECT @@innodb_flush_log_at_trx_commit")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(flush, 1);
    let before = acked(&mut root).await;
    let mut client = Conn::new(o.clone()).await.unwrap();
    client
        .query_drop("CREATE TABLE after_move (x INT PRIMARY KEY)")
        .await
        .unwrap();
    client
        .query_drop("INSERT INTO after_move VALUES (1)")
        .await
        .unwrap();
    client.disconnect().await.unwrap();
    assert!(
        acked(&mut root).await > before,
        "the commit clock acknowledged it"
    );
    root.disconnect().await.unwrap();
    let events = s.json(&["events", "--db", "bank", "--limit", "1000"]);
    let migrated: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "migrated")
        .collect();
    assert_eq!(migrated.len(), 1, "one migrated event");
    for phase in ["copy_ms", "catch_up_ms", "pause_ms", "lag_ms", "total_ms"] {
        assert!(
            migrated[0]["data"][phase].is_u64(),
            "{phase}: {}",
            migrated[0]
        );
    }
    s.stop();
}

/// Commits a server's commit clock has acknowledged (`Rpl_semi_sync_master_yes_tx`).
async fn acked(root: &mut Conn) -> u64 {
    let (_, n): (String, u64) = root
        .query_first(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_YES_TX'",
        )
        .await
        .unwrap()
        .unwrap();
    n
}

/// Waits (bounded) for the armed failpoint `name` to be reached (`stratus_runtime::failpoint`)
/// by the move running in `migrate`.
fn reached(
    dir: &Path,
    name: &str,
    migrate: &std::thread::JoinHandle<std::process::Output>,
) -> PathBuf {
    let file = dir.join(format!("{name}.reached"));
    let begin = Instant::now();
    while !file.exists() {
        assert!(
            !migrate.is_finished(),
            "the move ended before {name} was reached"
        );
        assert!(
            begin.elapsed() < Duration::from_secs(120),
            "{name} never reached"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    file
}

/// The `mariadbd` of the copy on node n2 (its data is under `disk2`).
fn target_pid(disk2: &Path) -> u32 {
    let needle = disk2.join("databases").join("bank");
    let needle = needle.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("mariadbd") && c.contains(needle)
            })
        })
        .expect("the copy's server runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_killed_in_any_phase_leaves_the_source_serving_and_nothing_lost() {
    let mut s = Stratus::new("migrate-faults");
    let disk2 = two_nodes(&mut s);
    let points = s.dir.path().join("failpoints");
    std::fs::create_dir(&points).unwrap();
    let mut up = s.up_command();
    up.env("STRATUS_FAILPOINTS", &points);
    s.start_with(up);
    let o = open_bank(&s).await;
    let source_pid = s.json(&["db", "show", "bank"])["pid"].as_u64().unwrap();
    let clients = Clients::start(&o, 4, 2, false);
    let phases = [
        ("migrate-replica-started", "copy"),
        ("migrate-catching-up", "catch-up"),
        ("migrate-cutting-over", "cut-over"),
    ];
    let only = std::env::var("FAULT_ONLY").ok();
    for (point, phase) in phases
        .into_iter()
        .filter(|(p, _)| only.as_deref().is_none_or(|o| o == *p))
    {
        fifty_more_commits(&clients.tally, point).await;
        std::fs::write(points.join(point), b"").unwrap();
        let migrate = migrate_in_background(&s);
        let file = reached(&points, point, &migrate);
        // `db show` says where the move is.
        let shown = s.json(&["db", "show", "bank"]);
        let moving = (
            shown["moving"]["to"].as_str(),
            shown["moving"]["phase"].as_str(),
        );
        assert_eq!(moving, (Some("n2"), Some(phase)), "{shown}");
        let pid = target_pid(&disk2);
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        std::fs::remove_file(&file).unwrap();
        let out = migrate.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{point}: the move went through");
        assert!(
            err.contains(&format!("failed during the {phase}"))
                && err.contains("serves on node local"),
            "{point}: {err}"
        );
        let shown = s.json(&["db", "show", "bank"]);
        assert_eq!(
            (shown["node"].as_str(), shown["state"].as_str()),
            (Some("local"), Some("active"))
        );
        assert!(shown["moving"].is_null(), "{point}: {shown}");
        assert_eq!(
            shown["pid"].as_u64(),
            Some(source_pid),
            "{point}: the source never stopped"
        );
        assert!(
            !disk2.join("databases").join("bank").exists(),
            "{point}: the copy is gone"
        );
        let events = s.json(&["events", "--db", "bank", "--limit", "1000"]);
        let failed = events
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["kind"] == "migration_failed")
            .unwrap();
        assert_eq!(failed["data"]["phase"], phase, "{failed}");
    }
    fifty_more_commits(&clients.tally, "after the faults").await;
    let tally = clients.stop().await;
    assert!(
        tally.errors.is_empty(),
        "client errors: {:#?}",
        tally.errors
    );
    assert_eq!(tally.mismatches, 0, "{:#?}", tally.mismatch_detail);
    assert!(tally.inconsistent.is_empty());
    audit(&o, &tally).await;
    s.stop();
}

/// Writes the nodes' memory, `local` first, and rebalancing every second.
fn sized_nodes(s: &Stratus, local_bytes: u64, n2_bytes: u64) {
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let cfg = cfg.split("[[nodes]]").next().unwrap().to_owned();
    let cfg = cfg.replace("[placement]\nrebalance_every_secs = 1\n", "");
    let disk2 = s.dir.path().join("disk2");
    std::fs::write(
        &s.config,
        format!(
            "{cfg}[placement]\nrebalance_every_secs = 1\n\
             [[nodes]]\nname = \"local\"\nmemory_bytes = {local_bytes}\n\
             [[nodes]]\nname = \"n2\"\ndata_dir = \"{}\"\nmemory_bytes = {n2_bytes}\n",
            disk2.display(),
        ),
    )
    .unwrap();
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// `node list`'s entry for `local`.
fn local_node(s: &Stratus) -> Value {
    let list = s.json(&["node", "list"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "local")
        .unwrap()
        .clone()
}

/// Waits until `db`'s measured CPU is low: a server that just started or grew its pool looks
/// busy, and a busy database is dearer to move than an idle one.
fn settled(s: &Stratus, db: &str, scu: u32) {
    let begin = Instant::now();
    loop {
        let shown = s.json(&["db", "show", db]);
        let cpu = shown["measured"]["cpu_millis"].as_f64();
        if shown["scu"] == scu && cpu.is_some_and(|c| c < 50.0) {
            return;
        }
        assert!(begin.elapsed() < Duration::from_secs(90), "{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Inserts about `mb` MB of rows into `db`'s table `bulk` (made if missing), straight on its
/// server.
async fn bulk_rows(s: &Stratus, db: &str, mb: u32) {
    let mut conn = s.direct(db).await;
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS bulk (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(4000))",
    )
    .await
    .unwrap();
    // 12,500 rows of 4,000 bytes: 50 MB a statement.
    for _ in 0..mb.div_ceil(50) {
        conn.query_drop("INSERT INTO bulk (v) SELECT REPEAT('x', 4000) FROM seq_1_to_12500")
            .await
            .unwrap();
    }
}

/// The rebalancing controller with real servers: `local` pushed over its 70 % watermark by a
/// database's data growing into its pool has the database that frees the most memory per move
/// moved to `n2`, and only that one. A database weighs what its pool can come to hold of its
/// own data: a scale-up of a database with little data leaves the node under its watermark,
/// where counting its whole pool would take it over.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_pushed_over_its_watermark_by_a_growing_database_sheds_one_database() {
    let mut s = Stratus::new("rebalance");
    s.nodes.push("n2".to_owned());
    // Small SCUs: a 128 MiB pool at 1 SCU, 512 MiB at 4, so a few hundred MB of data tell.
    s.configure("scu", &format!("memory_bytes = {}", 256 * MIB));
    s.configure("scu", "buffer_pool_fraction = 0.5");
    sized_nodes(&s, 64 * GIB, 8 * GIB);
    s.start();
    for name in ["a", "b", "c"] {
        s.json(&["db", "create", name, "--tier", "standard", "--max-scu", "8"]);
        assert_eq!(s.json(&["db", "show", name])["node"], "local");
    }
    // `b` holds 300 MB of rows in a 512 MiB pool: it weighs its files, about 465 MiB.
    s.json(&["db", "scale", "b", "--scu", "4"]);
    s.json(&["db", "scale", "c", "--scu", "4"]);
    bulk_rows(&s, "b", 300).await;
    // Started again so that what the servers use is a start's, then `local` sized so that the
    // three databases take 60 % of it.
    s.stop();
    s.start();
    settled(&s, "b", 4);
    settled(&s, "c", 4);
    let load = local_node(&s)["memory_load_bytes"].as_u64().unwrap();
    s.stop();
    sized_nodes(&s, load * 100 / 60, 64 * GIB);
    s.start();
    for (db, scu) in [("b", 4), ("c", 4)] {
        settled(&s, db, scu);
    }
    let local = local_node(&s);
    assert!(local["memory_load_pct"].as_f64().unwrap() < 70.0, "{local}");
    // `a` at 4 SCU: a 512 MiB pool that its 165 MiB of files cannot fill weighs those files,
    // and the node stays under its watermark (counting the pool would take it over 90 %).
    s.json(&["db", "scale", "a", "--scu", "4"]);
    settled(&s, "a", 4);
    let local = local_node(&s);
    assert!(local["memory_load_pct"].as_f64().unwrap() < 70.0, "{local}");
    // `c` takes on 200 MB: its pool can hold them, and the node goes over. `c` is busy (dear to
    // move); `b` weighs the most and is idle: it is the one that moves.
    bulk_rows(&s, "c", 200).await;
    let moved = s.wait_for_event("b", "migrated", Duration::from_secs(120));
    let message = moved["message"].as_str().unwrap();
    assert!(
        message.contains("rebalancing: node local uses")
            && message.contains("over its high watermark (70 %)"),
        "{message}"
    );
    assert_eq!(s.json(&["db", "show", "b"])["node"], "n2");
    let local = local_node(&s);
    assert!(local["memory_load_pct"].as_f64().unwrap() < 70.0, "{local}");
    // Only that one: the next looks (one a second) find the node under its watermark. Time must
    // pass for a move not to happen; nothing else can show it.
    std::thread::sleep(Duration::from_secs(3));
    let events = s.json(&["events", "--limit", "1000"]);
    let moves: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "migrated")
        .collect();
    assert_eq!(moves.len(), 1, "{moves:?}");
    for name in ["a", "c"] {
        assert_eq!(s.json(&["db", "show", name])["node"], "local");
    }
    s.stop();
}

/// The local TCP ports `pid` listens on.
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let link = std::fs::read_link(e.ok()?.path()).ok()?;
            let l = link.to_str()?;
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening = f.get(3) == Some(&"0A");
            let ours = f.get(9).is_some_and(|i| inodes.iter().any(|x| x == i));
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (listening && ours).then_some(port)
        })
        .collect()
}

/// What a tenant can try against a move: start one with its own token, log in to the relay
/// the replica uses (on the source's socket the server would take it for Stratus itself), or
/// use the replication account through the proxy. All refused, and the move goes through.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_can_neither_move_its_database_nor_reach_the_replication_relay() {
    let mut s = Stratus::new("migrate-hostile");
    two_nodes(&mut s);
    let points = s.dir.path().join("failpoints");
    std::fs::create_dir(&points).unwrap();
    let mut up = s.up_command();
    up.env("STRATUS_FAILPOINTS", &points);
    s.start_with(up);
    let o = open_bank(&s).await;
    let opts = Opts::from(o.clone());

    let (_, dev) = s.token(&["--role", "developer", "--db", "bank"]);
    let err = s.refused(&dev, &["db", "migrate", "bank", "--to", "n2"]);
    assert!(err.contains("takes a token for all databases"), "{err}");

    std::fs::write(points.join("migrate-catching-up"), b"").unwrap();
    let migrate = migrate_in_background(&s);
    let file = reached(&points, "migrate-catching-up", &migrate);
    let stratus_pid = s.child.as_ref().unwrap().id();
    let own: Vec<u16> = [&s.api, &s.listen]
        .iter()
        .map(|a| a.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let relays: Vec<u16> = listening_ports(stratus_pid)
        .into_iter()
        .filter(|p| !own.contains(p))
        .collect();
    assert_eq!(
        relays.len(),
        1,
        "one relay while the copy replicates: {relays:?}"
    );
    // This test runs as root, not as the servers' user: turned away before a byte.
    use std::io::Read;
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", relays[0])).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0u8; 64];
    assert_eq!(
        sock.read(&mut greeting).unwrap_or(0),
        0,
        "the relay answered a stranger"
    );
    // The replication account is no account of the tenant's.
    let stolen = s
        .sql_opts("bank.stratus_replication", "anything", Some("bank"))
        .prefer_socket(false);
    let err = Conn::new(stolen).await.unwrap_err();
    assert!(err.to_string().contains("1045"), "{err}");

    std::fs::remove_file(&file).unwrap();
    let out = migrate.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.json(&["db", "show", "bank"])["node"], "n2");
    let mut c = Conn::new(o).await.unwrap();
    let n: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM mysql.user WHERE user = 'stratus_replication'")
        .await
        .unwrap_or(None);
    assert!(
        n.is_none_or(|n| n == 0),
        "the account is gone with the move"
    );
    c.disconnect().await.unwrap();
    let _ = opts;
    s.stop();
}

/// The moved database's new server starts a binary log of its own: its archive is kept apart
/// from the old one's (not appended to it by file name), a full backup is taken at once, and a
/// point-in-time restore to a moment after the move has exactly what was committed by then.
#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_restore_works_across_a_move() {
    let mut s = Stratus::new("migrate-pitr");
    two_nodes(&mut s);
    s.start();
    let c = s.json(&["db", "create", "shop", "--password", "pw"]);
    let o = s.sql_opts(c["user"].as_str().unwrap(), "pw", Some("shop"));
    let mut conn = Conn::new(o.clone()).await.unwrap();
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t SELECT seq FROM seq_1_to_100")
        .await
        .unwrap();
    s.json(&["backup", "create", "shop"]);
    conn.disconnect().await.unwrap();
    s.json(&["db", "migrate", "shop", "--to", "n2"]);
    // A full backup of the new server's log, by itself.
    let begin = Instant::now();
    loop {
        if s.event_count("shop", "backup_taken") >= 2 {
            break;
        }
        assert!(
            begin.elapsed() < Duration::from_secs(120),
            "no backup after the move"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut conn = Conn::new(o).await.unwrap();
    conn.query_drop("INSERT INTO t SELECT seq FROM seq_101_to_150")
        .await
        .unwrap();
    let t = now_rfc3339();
    conn.query_drop("INSERT INTO t SELECT seq FROM seq_151_to_200")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    s.json(&["db", "restore", "shop", "--to", "back", "--time", &t]);
    let mut back = Conn::new(s.sql_opts("back.admin", "pw", Some("shop")))
        .await
        .unwrap();
    let n: Option<i64> = back.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(150), "what was committed by {t}, after the move");
    back.disconnect().await.unwrap();
    let archives: Vec<String> = std::fs::read_dir(s.data_dir().join("backups").join("shop"))
        .unwrap()
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            n.starts_with("binlog-").then_some(n)
        })
        .collect();
    assert_eq!(
        archives.len(),
        2,
        "one archive per binary log: {archives:?}"
    );
    s.stop();
}
