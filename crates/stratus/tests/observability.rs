//! Prometheus and Grafana (`deploy/`): `/metrics` as `promtool check metrics` reads it, the alert
//! rules with `promtool check rules` and their unit tests (`promtool test rules`), and every
//! query of the rules and the Grafana dashboard against the metrics Stratus exports.
//! `promtool` is in Debian's `prometheus` package (`./dev test` installs it).

mod common;

use common::Stratus;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; ./dev test installs it)");
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn report(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let check = promtool(&["check", "rules", "stratus-alerts.yml"], None);
    assert!(check.status.success(), "{}", report(&check));
    assert!(
        report(&check).contains("SUCCESS: 11 rules found"),
        "{}",
        report(&check)
    );
    let tests = promtool(&["test", "rules", "stratus-alerts.test.yml"], None);
    assert!(tests.status.success(), "{}", report(&tests));
}

/// The metric names a PromQL text names (`stratus_…`), histogram series folded into their
/// family.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("stratus_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.insert(family.to_owned());
        rest = &tail[end..];
    }
    out
}

/// Every `expr` of the dashboard, wherever it is nested.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

/// Database `shop`, created, and a connection to it through the proxy as its owner.
async fn created_and_connected(s: &Stratus) -> (mysql_async::Conn, String) {
    let c = s.json(&["db", "create", "shop"]);
    let (user, pw) = (c["user"].as_str().unwrap(), c["password"].as_str().unwrap());
    let conn = mysql_async::Conn::new(s.sql_opts(user, pw, Some("shop")))
        .await
        .unwrap();
    (conn, user.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_pass_promtool_and_are_all_the_rules_and_dashboard_need() {
    use mysql_async::prelude::Queryable;
    let mut s = Stratus::new("observe");
    s.start();
    let (mut conn, user) = created_and_connected(&s).await;
    // Some of everything: statements, an error, a failed login, so every family has samples.
    conn.query_drop("SELECT 1").await.unwrap();
    assert!(conn.query_drop("SELECT nosuch").await.is_err());
    assert!(
        mysql_async::Conn::new(s.sql_opts(&user, "wrong", Some("shop")))
            .await
            .is_err()
    );
    let text = s.metrics_text().expect("/metrics answers");
    let lint = promtool(&["check", "metrics"], Some(&text));
    assert!(lint.status.success(), "{}", report(&lint));
    assert_eq!(report(&lint).trim(), "", "promtool has nothing to say");

    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            l.strip_prefix("# TYPE ")?
                .split(' ')
                .next()
                .map(str::to_owned)
        })
        .collect();
    for family in [
        "stratus_database_crashes_total",
        "stratus_database_max_scu",
        "stratus_database_storage_max_bytes",
        "stratus_proxy_statement_seconds",
    ] {
        assert!(exported.contains(family), "{family} missing from\n{text}");
    }
    let rules = std::fs::read_to_string(deploy().join("prometheus/stratus-alerts.yml")).unwrap();
    let rule_exprs: String = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect::<Vec<_>>()
        .join("\n");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/stratus.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 19, "{queries:?}");
    for (what, text) in [
        ("alert rules", rule_exprs),
        ("dashboard", queries.join("\n")),
    ] {
        let used = named(&text);
        assert!(!used.is_empty(), "{what} name no metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "the {what} use metrics Stratus does not export: {unknown:?}"
        );
    }
    drop(conn);
    s.stop();
}

/// What the console's charts draw: a sample every 5 s of size, CPU against its quota, memory,
/// hit ratio, statements and connections, from `GET /v1/databases/NAME/history`.
#[tokio::test(flavor = "multi_thread")]
async fn the_history_keeps_samples_for_the_charts() {
    use mysql_async::prelude::Queryable;
    let mut s = Stratus::new("history");
    s.start();
    let (mut conn, _) = created_and_connected(&s).await;
    let begin = std::time::Instant::now();
    let samples = loop {
        conn.query_drop("SELECT 1").await.unwrap();
        let body = s.api_get("/v1/databases/shop/history").unwrap();
        let h: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(h["interval_ms"], 5000);
        let samples = h["samples"].as_array().unwrap().clone();
        if samples.len() >= 2 {
            break samples;
        }
        assert!(begin.elapsed() < std::time::Duration::from_secs(30), "{h}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let (a, b) = (&samples[samples.len() - 2], &samples[samples.len() - 1]);
    assert!(b["t_ms"].as_i64() > a["t_ms"].as_i64());
    assert_eq!(
        (b["scu"].as_u64(), b["cpu_quota_millicores"].as_u64()),
        (Some(1), Some(500))
    );
    assert_eq!(b["connections"], 1);
    assert!(
        b["statements_total"].as_u64() > a["statements_total"].as_u64(),
        "{a} {b}"
    );
    assert!(b["memory_bytes"].as_u64().unwrap() > 0, "{b}");
    let none = s.api_get("/v1/databases/nosuch/history").unwrap();
    assert!(none.contains("not_found"), "{none}");
    drop(conn);
    s.stop();
}
