//! Usage metering (`stratus usage`, `GET /v1/usage`): SCU-seconds are size × active time, the
//! suspended and parked time is counted apart, and the figures are the same after `stratus up`
//! is killed and started again.

mod common;

use common::Stratus;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Runs a verb and returns when it started and ended, as seen from here.
fn timed(s: &Stratus, args: &[&str]) -> (Instant, Instant) {
    let begin = Instant::now();
    s.json(args);
    (begin, Instant::now())
}

fn usage(s: &Stratus) -> Value {
    usage_of(s, "shop")
}

fn usage_of(s: &Stratus, db: &str) -> Value {
    let all = s.json(&["usage", "--db", db]);
    let rows = all.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{all}");
    rows[0].clone()
}

fn secs(a: Instant, b: Instant) -> f64 {
    b.duration_since(a).as_secs_f64()
}

#[test]
fn scu_seconds_are_size_times_active_time_and_survive_a_kill_of_stratus() {
    let mut s = Stratus::new("usage");
    s.start();
    let created = timed(&s, &["db", "create", "shop"]); // 1 SCU
    // The measured stretches: their length is what is metered, not a wait for readiness.
    std::thread::sleep(Duration::from_secs(2));
    let scaled = timed(&s, &["db", "scale", "shop", "--scu", "2"]);
    std::thread::sleep(Duration::from_secs(20));
    let suspended = timed(&s, &["db", "suspend", "shop"]);
    std::thread::sleep(Duration::from_secs(3));
    let parked = timed(&s, &["db", "park", "shop"]);
    std::thread::sleep(Duration::from_secs(1));
    let before = usage(&s);

    // Each change took effect somewhere inside its command: the meter must fall between the
    // shortest and the longest reading of the test's own clock.
    let low = secs(created.1, scaled.0) + 2.0 * secs(scaled.1, suspended.0);
    let high = secs(created.0, scaled.1) + 2.0 * secs(scaled.0, suspended.1);
    let metered = before["scu_seconds"].as_f64().unwrap();
    assert!(
        (low..=high).contains(&metered),
        "{metered} not in {low}..{high}: {before}"
    );
    // And within 2 % of size × active time as Stratus's own events date the changes. The meter
    // turns when the catalog records a change, and `started` and `scaled` are written right
    // after theirs; `suspended` is written once the server has been emptied, and says how long
    // that took after the change was recorded (`suspend_ms`: about half a second on a busy
    // machine, twice that in SCU-seconds at 2 SCU).
    let events = s.json(&["events", "--db", "shop"]);
    let event = |kind: &str| -> Value {
        let e = events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind);
        e.unwrap_or_else(|| panic!("no {kind} event: {events}"))
            .clone()
    };
    let at = |kind: &str| event(kind)["time_ms"].as_f64().unwrap() / 1000.0;
    let suspend_s = event("suspended")["data"]["suspend_ms"].as_f64().unwrap() / 1000.0;
    let expected =
        (at("scaled") - at("started")) + 2.0 * (at("suspended") - suspend_s - at("scaled"));
    assert!(
        (metered - expected).abs() <= 0.02 * expected,
        "{metered} vs {expected} from the events"
    );
    eprintln!(
        "scu_seconds {metered:.3}: bracket {low:.3}..{high:.3}, from the events {expected:.3} \
         (suspended in {suspend_s:.3} s)"
    );
    let suspended_s = before["suspended_seconds"].as_f64().unwrap();
    assert!(
        (secs(suspended.1, parked.0)..=secs(suspended.0, parked.1)).contains(&suspended_s),
        "{before}"
    );
    assert!(before["parked_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        before["storage_gib_hours"].as_f64().unwrap() > 0.0,
        "storage was measured: {before}"
    );

    // Killed and started again: what was closed stays exactly as it was; parked time runs on.
    s.kill9();
    s.start();
    let after = usage(&s);
    for key in [
        "scu_seconds",
        "active_seconds",
        "suspended_seconds",
        "from_ms",
    ] {
        assert_eq!(after[key], before[key], "{key}: {before} then {after}");
    }
    assert!(after["parked_seconds"].as_f64() > before["parked_seconds"].as_f64());

    // The text form, and the window.
    let out = s.cli(&["usage", "--since", "1h"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SCU-SECONDS") && text.contains("shop"),
        "{text}"
    );
    let recent = s.json(&["usage", "--db", "shop", "--since", "1s"]);
    assert_eq!(
        recent[0]["scu_seconds"], 0.0,
        "parked for the last second: {recent}"
    );
    let bad = s.fails(&["usage", "--since", "yesterday-ish"]);
    assert!(bad.contains("--since"), "{bad}");
}

/// A graceful stop of Stratus stops its servers: the time until the next start is not billed.
#[test]
fn time_while_stratus_is_stopped_is_not_billed_as_active() {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap();
    let mut s = Stratus::new("usage-stop");
    s.start();
    s.json(&["db", "create", "shop"]);
    // The test's clock brackets both readings: what was billed between them is at most the
    // time between them less the 4 s with nothing running (and the catalog's millisecond).
    let asked = std::time::Instant::now();
    let before = usage(&s);
    s.stop();
    // The measured stretch with no Stratus and no server.
    std::thread::sleep(Duration::from_secs(4));
    s.start();
    let after = usage(&s);
    let elapsed = asked.elapsed().as_secs_f64();
    assert!(f(&after, "stopped_seconds") >= 4.0, "{after}");
    let billed = f(&after, "scu_seconds") - f(&before, "scu_seconds");
    assert!(
        billed <= elapsed - 4.0 + 0.002,
        "billed {billed} s of {elapsed} with 4 s stopped: {after}"
    );
    assert_eq!(s.metric("stratus_database_down{db=\"shop\"}"), Some(0.0));
}

/// A token for one database sees that database's usage and history only.
#[test]
fn a_token_sees_the_usage_of_its_databases_only() {
    let mut s = Stratus::new("usage-scope");
    s.start();
    s.json(&["db", "create", "shop"]);
    s.json(&["db", "create", "blog"]);
    let (_, token) = s.token(&["--role", "developer", "--db", "shop"]);
    let out = s.cli_as(&token, &["--json", "usage"]);
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["db"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop"]);
    let refused = s.refused(&token, &["usage", "--db", "blog"]);
    assert!(refused.contains("blog"), "{refused}");
    // The console's history route keeps to the token's scope too.
    let other = s
        .api_get_as(Some(&token), "/v1/databases/blog/history")
        .unwrap();
    assert!(other.contains("\"code\":\"forbidden\""), "{other}");
    let own = s
        .api_get_as(Some(&token), "/v1/databases/shop/history")
        .unwrap();
    assert!(own.contains("\"interval_ms\""), "{own}");
}
