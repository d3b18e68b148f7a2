//! The web console in a headless Chromium (`common::browser`), against a `stratus up` of its
//! own: the databases list, one database's page with its charts drawn from its samples and its
//! events on them, and a database created and deleted through the page.
//!
//! `STRATUS_SCREENSHOTS=DIR` also writes `console-databases.png` and `console-database.png`
//! there (the README's pictures come from it: `docs/`).

mod common;

use common::Stratus;
use common::browser::Browser;
use std::time::Duration;

#[test]
fn the_console_shows_databases_their_charts_and_events_and_creates_and_deletes() {
    let mut s = Stratus::new("console");
    s.start();
    let token = s.admin_token();
    s.json(&[
        "db",
        "create",
        "shop",
        "--tier",
        "standard",
        "--min-scu",
        "1",
        "--max-scu",
        "4",
    ]);
    // Something to draw: a size change (an event) and samples on both sides of it.
    s.json(&["db", "scale", "shop", "--scu", "2"]);

    let mut b = Browser::start(1280, 1000);
    let base = format!("http://{}", s.api.trim_start_matches("http://"));
    b.goto(&format!("{base}/#token={token}"));
    let list = Duration::from_secs(30);
    b.wait_for(
        r#"document.querySelector('tr[data-db="shop"] [data-state="active"]')"#,
        list,
    );
    assert_eq!(
        b.eval("location.hash"),
        "#/",
        "the token left the address at once"
    );
    assert_eq!(
        b.eval("[localStorage.length, document.cookie]"),
        serde_json::json!([0, ""]),
        "kept in the tab only"
    );
    assert_eq!(
        b.eval(r#"document.querySelector('tr[data-db="shop"] td:nth-child(3)').textContent"#),
        "2"
    );
    let shots = std::env::var_os("STRATUS_SCREENSHOTS").map(std::path::PathBuf::from);
    if let Some(dir) = &shots {
        std::fs::write(dir.join("console-databases.png"), b.screenshot()).unwrap();
    }

    // One database: six charts with samples in them, and its events drawn and listed. Samples
    // come every 5 s: the page is looked at until it holds three.
    b.eval("location.hash = '#/db/shop'");
    b.wait_for(
        "document.querySelectorAll('#charts .chart canvas').length === 6 && \
         Number(document.getElementById('charts').dataset.samples) >= 3",
        Duration::from_secs(60),
    );
    let events = b.eval("Number(document.getElementById('charts').dataset.events)");
    assert!(
        events.as_u64().unwrap() >= 2,
        "created and scaled: {events}"
    );
    let kinds = b.eval("[...document.querySelectorAll('#events tr')].map(r => r.dataset.kind)");
    let kinds: Vec<&str> = kinds
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert!(
        kinds.contains(&"created") && kinds.contains(&"scaled"),
        "{kinds:?}"
    );
    // Drawn: the SCU chart's canvas has the series' colour in it, and an event line's.
    let drawn = b.eval(
        "(() => { const c = document.querySelector('[data-chart=scu] canvas'); \
           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
           let series = 0, event = 0; \
           for (let i = 0; i < d.length; i += 4) { \
             if (d[i] < 90 && d[i+1] > 90 && d[i+1] < 140 && d[i+2] > 200) series++; \
             if (d[i] > 200 && d[i+1] > 100 && d[i+1] < 150 && d[i+2] < 80) event++; } \
           return [series, event]; })()",
    );
    let (series, event) = (drawn[0].as_u64().unwrap(), drawn[1].as_u64().unwrap());
    assert!(
        series > 50 && event > 20,
        "pixels of the line {series}, of events {event}"
    );
    if let Some(dir) = &shots {
        std::fs::write(dir.join("console-database.png"), b.screenshot()).unwrap();
    }

    // Created through the page: its password shown once, in the connection string.
    b.eval("location.hash = '#/'");
    b.wait_for("document.getElementById('create')", list);
    b.eval(
        "(() => { const f = document.getElementById('create'); \
           f.elements.name.value = 'web'; f.elements.tier.value = 'free'; f.requestSubmit(); })()",
    );
    let conn = b.wait_for(
        "document.getElementById('connection-string')?.textContent",
        Duration::from_secs(60),
    );
    assert!(
        conn.as_str().unwrap().starts_with("mysql://web.admin:"),
        "{conn}"
    );
    b.wait_for(r#"document.querySelector('tr[data-db="web"]')"#, list);
    assert_eq!(s.json(&["db", "show", "web"])["state"], "active");

    // Deleted through its page, once confirmed.
    b.eval("location.hash = '#/db/web'");
    b.wait_for("document.querySelector('[data-action=delete]')", list);
    b.eval("window.confirm = () => true; document.querySelector('[data-action=delete]').click()");
    b.wait_for(r#"location.hash === '#/' && document.querySelector('tr[data-db="shop"]') && !document.querySelector('tr[data-db="web"]')"#, list);
    let names: Vec<String> = s
        .json(&["db", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["shop"]);
    s.stop();
}

/// The page and its files are served without a token and say where scripts may come from; the
/// data behind them is not.
#[test]
fn the_console_files_need_no_token_but_the_data_does() {
    let mut s = Stratus::new("console-files");
    s.start();
    let get = |path: &str| {
        std::process::Command::new("curl")
            .args([
                "-s",
                "-i",
                "--path-as-is",
                &format!("http://{}{path}", s.api),
            ])
            .output()
            .unwrap()
    };
    let page = String::from_utf8(get("/").stdout).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("content-security-policy: default-src 'self'"),
        "{page}"
    );
    assert!(page.contains("<script src=\"/console/console.js\">"));
    for file in [
        "/console/console.js",
        "/console/uPlot.iife.min.js",
        "/console/uPlot.min.css",
    ] {
        let r = String::from_utf8_lossy(&get(file).stdout).into_owned();
        assert!(
            r.starts_with("HTTP/1.1 200"),
            "{file}: {}",
            &r[..r.len().min(200)]
        );
    }
    let data = String::from_utf8(get("/v1/databases").stdout).unwrap();
    assert!(data.starts_with("HTTP/1.1 401"), "{data}");
    // Only the console's own files go without a token; another name under /console is no file
    // of it, and needs one like any route.
    let other = String::from_utf8(get("/console/admin.token").stdout).unwrap();
    assert!(other.starts_with("HTTP/1.1 401"), "{other}");
    let with_token = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", s.admin_token()))
        .arg(format!("http://{}/console/admin.token", s.api))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&with_token.stdout), "404");
    let missing = String::from_utf8(get("/console/../v1/databases").stdout).unwrap();
    assert!(!missing.starts_with("HTTP/1.1 200"), "{missing}");
    s.stop();
}
