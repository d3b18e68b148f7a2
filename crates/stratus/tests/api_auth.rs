//! API authentication end to end, through a real `stratus up`: tokens and their file, 401 and
//! 403, developer scope, the `Host` check, and TLS for a non-loopback bind.

mod common;

use common::{Stratus, free_port};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

/// A raw HTTP/1.1 request: (status, head, body).
fn http(
    api: &str,
    method: &str,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> (u16, String, String) {
    let mut sock = std::net::TcpStream::connect(api).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        sock,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]["code"].as_str().unwrap().to_owned()
}

fn names(list: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn tokens_roles_scopes_and_host_names() {
    let mut s = Stratus::new("auth");
    s.start();

    // The first admin token: one line, 0600, and the CLI finds it in the data directory.
    let file = s.data_dir().join("admin.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let admin = std::fs::read_to_string(&file).unwrap();
    assert!(admin.starts_with("stratus_") && admin.ends_with('\n') && admin.lines().count() == 1);
    let admin = admin.trim().to_owned();
    s.json(&["status"]);

    // No token, a wrong one, a wrong Host.
    let (status, head, body) = http(&s.api, "GET", "/v1/databases", &s.api, None);
    assert_eq!(status, 401, "{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert_eq!(error_code(&body), "unauthorized");
    let forged = format!("{}x", admin);
    assert_eq!(
        http(&s.api, "GET", "/v1/databases", &s.api, Some(&forged)).0,
        401
    );
    let (status, _, body) = http(
        &s.api,
        "GET",
        "/v1/databases",
        "evil.example:80",
        Some(&admin),
    );
    assert_eq!((status, error_code(&body).as_str()), (421, "wrong_host"));
    let (status, _, _) = http(&s.api, "GET", "/metrics", "evil.example", None);
    assert_eq!(status, 421, "the Host check covers /metrics too");
    assert_eq!(
        http(&s.api, "GET", "/metrics", &s.api, None).0,
        200,
        "open on loopback"
    );
    let port = s.api.rsplit_once(':').unwrap().1;
    assert_eq!(
        http(
            &s.api,
            "GET",
            "/v1/status",
            &format!("localhost:{port}"),
            Some(&admin)
        )
        .0,
        200
    );

    // The CLI without a token says where it looked.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["--api", &s.api, "--data-dir"])
        .arg(empty.path())
        .args(["db", "list"])
        .env_remove("STRATUS_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("admin.token") && err.lines().count() == 1,
        "{err}"
    );

    s.json(&["db", "create", "shop"]);
    s.json(&["db", "create", "blog"]);

    // A viewer reads, and changes nothing.
    let (viewer_id, viewer) = s.token(&["--role", "viewer", "--name", "dashboards"]);
    assert_eq!(
        names(
            &serde_json::from_slice(&s.cli_as(&viewer, &["db", "list", "--json"]).stdout).unwrap()
        ),
        ["blog", "shop"]
    );
    assert!(s.cli_as(&viewer, &["db", "show", "shop"]).status.success());
    for args in [
        &["db", "create", "other"][..],
        &["db", "scale", "shop", "--scu", "2"],
        &["db", "delete", "shop", "--yes"],
        &["user", "create", "shop", "app"],
        &["token", "list"],
    ] {
        let err = s.refused(&viewer, args);
        assert!(err.contains("viewer token may not"), "{args:?}: {err}");
    }

    // A developer works on its own databases only.
    let (_, dev) = s.token(&["--role", "developer", "--db", "shop", "--db", "dev-*"]);
    let list: serde_json::Value =
        serde_json::from_slice(&s.cli_as(&dev, &["db", "list", "--json"]).stdout).unwrap();
    assert_eq!(names(&list), ["shop"]);
    for args in [
        &["db", "show", "blog"][..],
        &["db", "scale", "blog", "--scu", "2"],
        &["db", "delete", "blog", "--yes"],
        &["db", "park", "blog"],
        &["user", "list", "blog"],
        &["events", "--db", "blog"],
        &["db", "create", "other"],
    ] {
        let err = s.refused(&dev, args);
        assert!(
            err.contains("outside this token's scope"),
            "{args:?}: {err}"
        );
    }
    let err = s.refused(&dev, &["token", "create", "--role", "admin"]);
    assert!(err.contains("may not manage tokens"), "{err}");
    assert!(
        s.cli_as(&dev, &["db", "scale", "shop", "--scu", "2"])
            .status
            .success()
    );
    let out = s.cli_as(&dev, &["db", "create", "dev-a", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: serde_json::Value = serde_json::from_slice(
        &s.cli_as(&dev, &["events", "--json", "--limit", "500"])
            .stdout,
    )
    .unwrap();
    let dbs: std::collections::BTreeSet<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["db"].as_str().unwrap())
        .collect();
    assert!(
        !dbs.is_empty() && dbs.iter().all(|d| *d == "shop" || *d == "dev-a"),
        "{dbs:?}"
    );
    assert!(
        s.cli_as(&dev, &["db", "delete", "dev-a", "--yes"])
            .status
            .success()
    );

    // Bad token requests are clear; deleting a token ends it; the last admin token stays.
    let err = s.fails(&["token", "create", "--role", "admin", "--db", "shop"]);
    assert!(err.contains("every database"), "{err}");
    let err = s.fails(&["token", "create", "--role", "viewer", "--db", "a*b"]);
    assert!(err.contains("invalid database scope"), "{err}");
    s.json(&["token", "delete", &viewer_id]);
    let err = s.refused(&viewer, &["db", "list"]);
    assert!(err.contains("not valid"), "{err}");
    let list = s.json(&["token", "list"]);
    let admin_id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        list.to_string().find("stratus_").is_none(),
        "no secrets in lists"
    );
    let err = s.fails(&["token", "delete", &admin_id]);
    assert!(err.contains("last admin token"), "{err}");

    // Only hashes in the catalog.
    for f in ["catalog.db", "catalog.db-wal"] {
        let bytes = std::fs::read(s.data_dir().join(f)).unwrap_or_default();
        for secret in [&admin, &dev, &viewer] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a token in plain text in {f}"
            );
        }
    }
    s.stop();

    // A restart keeps the tokens and does not make a new admin token; with metrics_auth,
    // /metrics needs a token that covers every database.
    s.configure("http", "metrics_auth = true");
    s.start();
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), admin);
    assert!(s.cli_as(&dev, &["db", "show", "shop"]).status.success());
    assert_eq!(http(&s.api, "GET", "/metrics", &s.api, None).0, 401);
    assert_eq!(http(&s.api, "GET", "/metrics", &s.api, Some(&dev)).0, 403);
    assert_eq!(http(&s.api, "GET", "/metrics", &s.api, Some(&admin)).0, 200);
    s.stop();
}

#[test]
fn a_non_loopback_api_needs_tls_and_gets_it() {
    // Refused at start, before anything else, with a one-line reason.
    let mut s = Stratus::new("auth-tls");
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    s.configure("http", "tls = false");
    let port = free_port();
    s.api = format!("0.0.0.0:{port}");
    let out = s.up_command().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a loopback address") && err.contains("TLS"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // By default such a bind serves HTTPS with the pair Stratus makes, whose CA the CLI trusts
    // from the data directory.
    std::fs::write(&s.config, cfg).unwrap();
    s.start();
    let https = format!("https://localhost:{port}");
    let out = std::process::Command::new(common::BIN)
        .args(["--api", &https, "--data-dir"])
        .arg(s.data_dir())
        .args(["status", "--json"])
        .env_remove("STRATUS_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        status["api"].as_str().unwrap().starts_with("https://"),
        "{status}"
    );
    // Plain HTTP gets no answer from a TLS port.
    let plain = format!("127.0.0.1:{port}");
    let mut sock = std::net::TcpStream::connect(&plain).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    // The TLS server may close on the first bytes, before the whole request is written.
    let _ = write!(sock, "GET /v1/status HTTP/1.1\r\nHost: {plain}\r\n\r\n");
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    s.stop();
}
