//! Bad input gets a specific one-line error and leaves nothing half-made.

mod common;

use common::{Stratus, free_port};
use std::process::Stdio;

#[test]
fn invalid_requests_are_refused_with_reasons() {
    let mut s = Stratus::new("bad");
    s.start();
    assert!(
        s.fails(&["db", "create", "Shop"])
            .contains("invalid database name \"Shop\"")
    );
    assert!(
        s.fails(&["db", "create", "a_b"])
            .contains("lowercase letters, digits and '-'")
    );
    assert!(
        s.fails(&["db", "create", "x", "--tier", "gold"])
            .contains("unknown tier")
    );
    assert!(
        s.fails(&["db", "create", "x", "--max-scu", "3"])
            .contains("exceeds the free tier's cap of 2 SCU")
    );
    assert!(
        s.fails(&["db", "create", "x", "--min-scu", "0"])
            .contains("min_scu must be at least 1")
    );
    assert!(
        s.fails(&["db", "create", "x", "--user", "root"])
            .contains("reserved")
    );
    assert!(
        s.json(&["db", "list"]).as_array().unwrap().is_empty(),
        "nothing half-made"
    );

    s.json(&["db", "create", "shop"]);
    assert!(
        s.fails(&["db", "create", "shop"])
            .contains("database shop already exists")
    );
    assert!(
        s.fails(&["db", "scale", "shop", "--scu", "3"])
            .contains("outside this database's range of 1 to 2")
    );
    assert!(
        s.fails(&["db", "scale", "shop", "--scu", "0"])
            .contains("outside")
    );
    assert!(
        s.fails(&["db", "show", "nope"])
            .contains("database nope not found")
    );
    assert!(s.fails(&["db", "park", "nope"]).contains("not found"));
    assert!(
        s.fails(&["user", "create", "shop", "1x"])
            .contains("invalid user name")
    );
    let out = s.cli(&["db", "delete", "shop"]);
    assert!(
        !out.status.success(),
        "delete without --yes and without a terminal is refused"
    );
    assert_eq!(s.json(&["db", "list"]).as_array().unwrap().len(), 1);

    // The API itself answers JSON errors, also for bodies it cannot read.
    for (request, status, code) in [
        (
            "POST /v1/databases HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 9\r\n",
            "400",
            "invalid_argument",
        ),
        (
            "POST /v1/databases/shop/scale HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 9\r\n",
            "400",
            "invalid_argument",
        ),
        (
            "GET /v1/nothing HTTP/1.1\r\nContent-Length: 9\r\n",
            "404",
            "not_found",
        ),
        (
            "PUT /v1/databases HTTP/1.1\r\nContent-Length: 9\r\n",
            "405",
            "method_not_allowed",
        ),
        (
            "GET /v1/usage?since_ms=yesterday HTTP/1.1\r\nContent-Length: 9\r\n",
            "400",
            "invalid_argument",
        ),
        (
            "GET /v1/usage?db=Not_A_Name HTTP/1.1\r\nContent-Length: 9\r\n",
            "400",
            "invalid_argument",
        ),
    ] {
        let answer = raw_http(
            &s.api,
            &s.admin_token(),
            &format!("{request}Connection: close\r\n\r\n{{\"scu\": \"x"),
        );
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains(&format!("\"code\":\"{code}\"")), "{answer}");
    }

    // A second `stratus up` on the same data directory is refused.
    let out = s.up_command().stdout(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("another `stratus up`"),
        "{err}"
    );
    s.stop();
}

fn raw_http(addr: &str, token: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.write_all(
        request
            .replace(
                "HTTP/1.1\r\n",
                &format!("HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n"),
            )
            .as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn up_refuses_foreign_dirs_taken_ports_and_missing_mariadb() {
    // A directory with someone else's files.
    let s = Stratus::new("foreign");
    std::fs::create_dir_all(s.data_dir()).unwrap();
    std::fs::write(s.data_dir().join("thesis.tex"), "precious").unwrap();
    let out = s.up_command().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not a Stratus data directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(s.data_dir()).unwrap().count(),
        1,
        "nothing written into it"
    );

    // A port in use.
    let s = Stratus::new("port");
    let squatter = std::net::TcpListener::bind(&s.api).unwrap();
    let out = s.up_command().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("cannot listen on {}", s.api)),
        "{err}"
    );
    drop(squatter);

    // No MariaDB where the config says.
    let s = Stratus::new("nobin");
    std::fs::write(&s.config, "[mariadb]\nbin_dir = \"/nonexistent\"\n").unwrap();
    let out = s.up_command().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("mariadbd not found")
            && err.contains("mariadb-server"),
        "{err}"
    );

    // A typo in the config file.
    std::fs::write(&s.config, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = s.up_command().output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
}

#[test]
fn the_cli_says_when_the_api_is_unreachable() {
    let out = std::process::Command::new(common::BIN)
        .args(["--api", &format!("127.0.0.1:{}", free_port()), "db", "list"])
        .env("STRATUS_TOKEN", "stratus_000000000000_unused")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot reach the Stratus API"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Outside a cluster and without a kubeconfig, the operator says so in one line and exits.
#[test]
fn the_operator_says_when_there_is_no_cluster() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["operator", "run"])
        .env("HOME", home.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: cannot reach the Kubernetes API: "),
        "{err}"
    );
    assert!(err.contains("kubeconfig"), "says what it tried: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// `stratus … | head` ends quietly when the reader goes, as Unix tools do, never with a panic.
#[test]
fn a_verb_whose_reader_went_away_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(common::BIN)
        .args(["operator", "crds"])
        .stdout(Stdio::from(writer))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}
