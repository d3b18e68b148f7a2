//! The front door, tried as a hostile client would: reserved database names, repeated wrong
//! passwords, and the names on the certificate clients verify.

mod common;

use common::Stratus;
use mysql_async::Conn;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn reserved_database_names_are_refused() {
    let mut s = Stratus::new("reserved");
    s.start();
    for name in ["mysql", "template", "sys", "tls"] {
        let err = s.fails(&["db", "create", name]);
        assert!(
            err.contains(&format!("database name \"{name}\" is reserved")),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    // The API answers 400 with a JSON error saying the same.
    let (status, body) = post_json(&s, "/v1/databases", r#"{"name": "information_schema"}"#);
    assert_eq!(status, 400, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("database name \"information_schema\" is reserved"),
        "{body}"
    );
    assert!(
        s.json(&["db", "list"]).as_array().unwrap().is_empty(),
        "nothing half-made"
    );
    // `test` is an ordinary name: each database has a server of its own.
    s.json(&["db", "create", "test"]);
    s.stop();
}

/// A raw `POST` to the API with the admin token: (status, body).
fn post_json(s: &Stratus, path: &str, json: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(&s.api).unwrap();
    write!(
        sock,
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        s.api,
        s.admin_token(),
        json.len()
    )
    .unwrap();
    let mut text = String::new();
    sock.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The answer to a login, and how long it took.
async fn timed_login(s: &Stratus, user: &str, pw: &str) -> (Result<(), u16>, Duration) {
    let begin = Instant::now();
    let result = match Conn::new(s.sql_opts(user, pw, None)).await {
        Ok(conn) => {
            let _ = conn.disconnect().await;
            Ok(())
        }
        Err(mysql_async::Error::Server(e)) => Err(e.code),
        Err(e) => panic!("login of {user} failed without a server error: {e}"),
    };
    (result, begin.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_wrong_passwords_are_counted_delayed_and_reported() {
    let mut s = Stratus::new("throttle");
    s.start();
    let c = s.json(&["db", "create", "shop"]);
    let (user, pw) = (c["user"].as_str().unwrap(), c["password"].as_str().unwrap());

    let mut took = Vec::new();
    for _ in 0..8 {
        let (result, t) = timed_login(&s, user, "wrong").await;
        assert_eq!(result, Err(1045), "still Access denied");
        took.push(t);
    }
    // Three failures answer at once, then 250 ms doubling: the 8th waited 4 s.
    assert!(took[7] >= Duration::from_millis(200), "{took:?}");
    s.wait_for_metric(
        "stratus_proxy_login_failures_total{db=\"shop\"}",
        8.0,
        Duration::from_secs(5),
    );
    assert_eq!(
        s.metric("stratus_proxy_login_throttled{kind=\"source\"}"),
        Some(1.0)
    );
    assert_eq!(
        s.metric("stratus_proxy_login_throttled{kind=\"account\"}"),
        Some(1.0)
    );

    // One event per throttled key (the source and the account), not one per failure.
    s.wait_for_event("shop", "login_throttled", Duration::from_secs(10));
    let events = s.json(&["events", "--db", "shop"]);
    let throttled: Vec<_> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "login_throttled")
        .map(|e| e["data"]["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(throttled.len(), 2, "{events:#}");
    assert!(throttled.contains(&"source".to_owned()) && throttled.contains(&"account".to_owned()));

    // The right password still gets in, after the same wait; the success resets the count.
    let (result, t) = timed_login(&s, user, pw).await;
    assert_eq!(result, Ok(()));
    assert!(t >= Duration::from_millis(200), "{t:?}");
    assert_eq!(
        s.metric("stratus_proxy_login_throttled{kind=\"source\"}"),
        Some(0.0)
    );

    // A name of no account counts apart, without a label per name.
    let (result, _) = timed_login(&s, "nope.admin", "wrong").await;
    assert_eq!(result, Err(1045));
    assert_eq!(
        s.metric("stratus_proxy_login_failures_total{db=\"_unknown\"}"),
        Some(1.0)
    );
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_distribution_client_verifies_the_certificate_against_the_ca_file() {
    let mut s = Stratus::new("certnames");
    s.configure("tls", "domain = \"db.test\"");
    s.start();
    let c = s.json(&["db", "create", "shop"]);
    let (user, pw) = (c["user"].as_str().unwrap(), c["password"].as_str().unwrap());
    let ca = s.data_dir().join("tls").join("ca.pem");
    let port = s.listen.split_once(':').unwrap().1.to_owned();
    let mariadb = |host: &str, ca: &std::path::Path| {
        Command::new("mariadb")
            .args(["--protocol=tcp", "-h", host, "-P", &port])
            .arg(format!("-u{user}"))
            .arg(format!("-p{pw}"))
            .arg("--ssl-verify-server-cert")
            .arg(format!("--ssl-ca={}", ca.display()))
            .args(["-e", "status"])
            .output()
            .unwrap()
    };
    for host in ["127.0.0.1", "localhost"] {
        let out = mariadb(host, &ca);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Cipher in use"), "over TLS: {stdout}");
    }
    // The check is real: a client trusting only the public CAs refuses the certificate.
    let public = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    if public.exists() {
        let out = mariadb("127.0.0.1", public);
        assert!(!out.status.success(), "verified against the wrong CA");
    }
    s.stop();
}
