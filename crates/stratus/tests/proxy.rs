//! Clients through the proxy: routing, authentication at the proxy, and sessions that survive
//! their database being parked under them.

mod common;

use common::Stratus;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use std::process::Command;

/// A connection to database `shop` through the proxy, as `user`.
async fn shop_conn(s: &Stratus, user: &str, pw: &str) -> Conn {
    Conn::new(s.sql_opts(user, pw, Some("shop"))).await.unwrap()
}

fn created(s: &Stratus, name: &str) -> (String, String) {
    let c = s.json(&["db", "create", name]);
    assert_eq!(
        c["port"].as_u64().unwrap().to_string(),
        s.listen.split_once(':').unwrap().1,
        "create hands out the proxy"
    );
    (
        c["user"].as_str().unwrap().to_owned(),
        c["password"].as_str().unwrap().to_owned(),
    )
}

/// sql_mode, sort_buffer_size, three user variables, the current schema.
type SessionRow = (String, u64, String, u64, String, Option<String>, String);

#[tokio::test(flavor = "multi_thread")]
async fn session_state_survives_park_and_wake() {
    let mut s = Stratus::new("held");
    s.start();
    let (user, pw) = created(&s, "shop");
    assert_eq!(user, "shop.admin");
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("CREATE DATABASE other").await.unwrap();
    conn.query_drop("CREATE TABLE other.t (id INT PRIMARY KEY, v VARCHAR(10))")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO other.t VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    conn.query_drop("USE other").await.unwrap();
    conn.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES', SESSION sort_buffer_size = 1048576")
        .await
        .unwrap();
    conn.query_drop("SET @greeting = 'hello', @answer = 42, @ratio = 1.5, @nothing = NULL")
        .await
        .unwrap();
    conn.query_drop("PREPARE text_stmt FROM 'SELECT v FROM t WHERE id = ?'")
        .await
        .unwrap();
    let stmt = conn.prep("SELECT v FROM t WHERE id = ?").await.unwrap();
    let v: Option<String> = conn.exec_first(&stmt, (1,)).await.unwrap();
    assert_eq!(v.as_deref(), Some("a"));
    let pid_before = s.json(&["db", "show", "shop"])["pid"].as_u64().unwrap();

    let parked = s.json(&["db", "park", "shop"]);
    assert_eq!(parked["state"], "parked");
    assert!(parked["pid"].is_null());

    // Same connection, no reconnect: the statement wakes the database and finds its session.
    let row: Option<SessionRow> = conn
        .query_first("SELECT @@sql_mode, @@sort_buffer_size, @greeting, @answer, CAST(@ratio AS CHAR), @nothing, DATABASE()")
        .await
        .unwrap();
    assert_eq!(
        row.unwrap(),
        (
            "ANSI_QUOTES".into(),
            1_048_576,
            "hello".into(),
            42,
            "1.5".into(),
            None,
            "other".into()
        )
    );
    let v: Option<String> = conn.exec_first(&stmt, (2,)).await.unwrap();
    assert_eq!(
        v.as_deref(),
        Some("b"),
        "the prepared statement works on the new server"
    );
    conn.query_drop("SET @id = 1").await.unwrap();
    let v: Option<String> = conn
        .query_first("EXECUTE text_stmt USING @id")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("a"), "text PREPARE survived too");
    let shown = s.json(&["db", "show", "shop"]);
    assert_eq!(shown["state"], "active");
    assert_ne!(shown["pid"].as_u64().unwrap(), pid_before, "a new mariadbd");
    s.wait_for_event("shop", "woken", std::time::Duration::from_secs(5));
    conn.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_connection_wakes_a_parked_database() {
    let mut s = Stratus::new("wake");
    s.start();
    let (user, pw) = created(&s, "app");
    s.json(&["db", "park", "app"]);
    // Logging in needs no running server; the first statement wakes it.
    let mut conn = Conn::new(s.sql_opts(&user, &pw, Some("app")))
        .await
        .unwrap();
    let one: Option<u32> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    let woken = s.wait_for_event("app", "woken", std::time::Duration::from_secs(5));
    assert!(woken["data"]["resume_ms"].is_number());
    conn.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_get_the_servers_own_denial() {
    let mut s = Stratus::new("deny");
    s.start();
    let (user, pw) = created(&s, "vault");
    for (u, p) in [
        (user.as_str(), "wrong"),
        ("nosuch.admin", pw.as_str()),
        ("vault.nobody", pw.as_str()),
        ("admin", pw.as_str()),
    ] {
        let err = Conn::new(s.sql_opts(u, p, None)).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("1045") && msg.contains(&format!("Access denied for user '{u}'")),
            "{u}: {msg}"
        );
    }
    // The stratus_admin account is not reachable through the proxy.
    let err = Conn::new(s.sql_opts("vault.stratus_admin", "x", None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1045"));
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn distribution_clients_work_unchanged() {
    let mut s = Stratus::new("clients");
    s.start();
    let (user, pw) = created(&s, "shop");
    let (host, port) = s.listen.split_once(':').unwrap();
    let base = [
        "--protocol=tcp".to_owned(),
        format!("-h{host}"),
        format!("-P{port}"),
        format!("-u{user}"),
        format!("-p{pw}"),
    ];
    let run = |prog: &str, extra: &[&str]| {
        let out = Command::new(prog).args(&base).args(extra).output().unwrap();
        assert!(
            out.status.success(),
            "{prog} {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(
        "mariadb",
        &[
            "shop",
            "-e",
            "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1,'x'),(2,'y');\n\
             DELIMITER $$\nCREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END$$",
        ],
    );
    assert_eq!(
        run("mariadb", &["-N", "-B", "shop", "-e", "CALL p()"]),
        "1\n2\n",
        "multi-result sets"
    );
    // LOAD DATA LOCAL INFILE: the server asks the client for the file, through the proxy.
    let csv = s.dir.path().join("rows.csv");
    std::fs::write(&csv, "10,ten\n11,eleven\n").unwrap();
    let load = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE t FIELDS TERMINATED BY ','",
        csv.display()
    );
    run("mariadb", &["--local-infile=1", "shop", "-e", &load]);
    assert_eq!(
        run(
            "mariadb",
            &["-N", "-B", "shop", "-e", "SELECT v FROM t WHERE id = 11"]
        ),
        "eleven\n"
    );
    run("mariadb", &["shop", "-e", "DELETE FROM t WHERE id >= 10"]);
    let dump = run(
        "mariadb-dump",
        &["--single-transaction", "--routines", "shop"],
    );
    assert!(
        dump.contains("INSERT INTO `t` VALUES") && dump.contains("CREATE DEFINER"),
        "{dump}"
    );
    // And the dump loads back through the proxy.
    run("mariadb", &["-e", "CREATE DATABASE copy"]);
    let out = Command::new("mariadb")
        .args(&base)
        .arg("copy")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(dump.as_bytes())?;
            c.wait_with_output()
        });
    assert!(out.unwrap().status.success());
    assert_eq!(
        run(
            "mariadb",
            &["-N", "-B", "copy", "-e", "SELECT COUNT(*) FROM t"]
        ),
        "2\n"
    );
    s.stop();
}

/// A zip bomb: compressed packets of under 1% of the size of the one packet of 272 MiB they
/// inflate to, sent by a logged-in client. The proxy holds packets still coming in from
/// compressed clients up to a budget (256 MiB across all of them), then refuses this one (1041)
/// and ends its session;
/// other sessions go on, and the budget is free again once it has gone (a 2 MB compressed
/// statement runs).
#[tokio::test(flavor = "multi_thread")]
async fn a_zip_bomb_is_refused_past_the_budget_for_packets_still_coming_in() {
    use common::raw_client::RawClient;
    use std::io::{Read, Write};
    use stratus_wire::compressed::{Deflater, HEADER_LEN, Header, Inflater};
    let mut s = Stratus::new("zip-bomb");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut other = shop_conn(&s, &user, &pw).await;
    let stream = std::net::TcpStream::connect(&s.listen).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut raw = stream.try_clone().unwrap();
    let _client = RawClient::try_login(stream, &user, &pw, "shop", stratus_wire::caps::COMPRESS)
        .unwrap_or_else(|e| panic!("a compressed login: {e:?}"));
    // Seventeen physical packets of 16 MiB - 1 (one logical packet never finished), cut into
    // compressed packets of 16 MiB - 1 each.
    const MAX: usize = 0xff_ffff;
    let total = 17 * (4 + MAX);
    let (mut deflater, mut seq, mut sent) = (Deflater::default(), 0u8, 0usize);
    let mut at = 0;
    while at < total {
        let end = total.min(at + MAX);
        let mut plain = vec![0u8; end - at];
        for i in 0..17 {
            let header = i * (4 + MAX);
            for (k, b) in [0xff, 0xff, 0xff, i as u8].into_iter().enumerate() {
                if (at..end).contains(&(header + k)) {
                    plain[header + k - at] = b;
                }
            }
        }
        let mut wire = Vec::new();
        deflater.write(&mut wire, &mut seq, &plain);
        sent += wire.len();
        if raw.write_all(&wire).is_err() {
            break; // refused and closed before the rest
        }
        at = end;
    }
    assert!(sent < total / 100, "{sent} bytes sent for {total}");
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    let h = Header::parse(&answer).expect("an answer before the close");
    let mut plain = Vec::new();
    Inflater::default()
        .inflate(&h, &answer[HEADER_LEN..h.total()], &mut plain)
        .unwrap();
    assert_eq!(u16::from_le_bytes([plain[5], plain[6]]), 1041, "{plain:?}");
    let n: Option<u32> = other.query_first("SELECT 1").await.unwrap();
    assert_eq!(n, Some(1));
    let opts = s
        .sql_opts(&user, &pw, Some("shop"))
        .compression(Some(mysql_async::Compression::fast()));
    let mut conn = Conn::new(opts).await.unwrap();
    let big = "x".repeat(2_000_000);
    let len: Option<u64> = conn
        .query_first(format!("SELECT LENGTH('{big}')"))
        .await
        .unwrap();
    assert_eq!(len, Some(2_000_000));
    conn.disconnect().await.unwrap();
    other.disconnect().await.unwrap();
    s.stop();
}

/// A relay in front of the proxy that counts the bytes each way: (client to proxy, proxy to
/// client), once the client has gone.
async fn counting_relay(to: &str) -> (String, tokio::task::JoinHandle<(u64, u64)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let to = to.to_owned();
    let counted = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut proxy = tokio::net::TcpStream::connect(to).await.unwrap();
        tokio::io::copy_bidirectional(&mut client, &mut proxy)
            .await
            .unwrap()
    });
    (addr, counted)
}

/// The compressed protocol (`mariadb --compress`, mysqlnd's `MYSQLI_CLIENT_COMPRESS`,
/// mysql_async's `compression`) is spoken between the client and the proxy: the answers are the
/// same and the client receives a fraction of their bytes. Both clients' ways of numbering the
/// packets inside (mysql_common checks the server's; Connector/C numbers its own as it likes)
/// are covered: text and binary results larger than one compressed packet, more than 256
/// packets in one answer, an error, and a local file of several compressed packets.
#[tokio::test(flavor = "multi_thread")]
async fn compressed_sessions_get_the_same_answers_in_fewer_bytes() {
    let mut s = Stratus::new("compressed");
    s.start();
    let (user, pw) = created(&s, "shop");
    let (relay, counted) = counting_relay(&s.listen).await;
    let (host, port) = relay.split_once(':').unwrap();
    let csv = s.dir.path().join("rows.csv");
    let lines: String = (1..=40_000).map(|i| format!("{i},row {i}\n")).collect();
    std::fs::write(&csv, &lines).unwrap();
    let opts = s
        .sql_opts(&user, &pw, Some("shop"))
        .ip_or_hostname(host.to_owned())
        .tcp_port(port.parse().unwrap())
        .compression(Some(mysql_async::Compression::fast()))
        .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new([csv.clone()])));
    let mut conn = Conn::new(opts).await.unwrap();
    conn.query_drop("CREATE TABLE big (id INT PRIMARY KEY, v LONGTEXT)")
        .await
        .unwrap();
    let row = "stratus ".repeat(250_000);
    conn.exec_drop("INSERT INTO big VALUES (?, ?)", (1, &row))
        .await
        .unwrap();
    conn.query_drop(format!("INSERT INTO big VALUES (2, '{row}')"))
        .await
        .unwrap();
    let back: Vec<(u32, String)> = conn
        .query("SELECT id, v FROM big ORDER BY id")
        .await
        .unwrap();
    assert!(
        back == [(1, row.clone()), (2, row.clone())],
        "text rows differ"
    );
    let one: Option<String> = conn
        .exec_first("SELECT v FROM big WHERE id = ?", (2,))
        .await
        .unwrap();
    assert!(one.as_ref() == Some(&row), "binary row differs");
    let many: Vec<u32> = conn.query("SELECT seq FROM seq_1_to_3000").await.unwrap();
    assert_eq!(many, (1..=3000).collect::<Vec<u32>>());
    // Ten copies of the row: 20 MB, more than 256 compressed packets, whose ids wrap.
    let copies: Vec<u64> = conn
        .query("SELECT LENGTH(v) FROM big, seq_1_to_5 ORDER BY seq")
        .await
        .unwrap();
    assert_eq!(copies, [2_000_000; 10]);
    let whole: Vec<String> = conn.query("SELECT v FROM big, seq_1_to_5").await.unwrap();
    assert!(
        whole.len() == 10 && whole.iter().all(|v| *v == row),
        "the 20 MB answer"
    );
    // A change of user, compressed as before it (the server's auth switch, a reply).
    conn.change_user(
        mysql_async::ChangeUserOpts::default()
            .with_user(Some(user.clone()))
            .with_pass(Some(pw.clone()))
            .with_db_name(Some("shop".into())),
    )
    .await
    .unwrap();
    let back: Option<u32> = conn.query_first("SELECT COUNT(*) FROM big").await.unwrap();
    assert_eq!(back, Some(2));
    let err = conn.query_drop("SELECT * FROM nope").await.unwrap_err();
    assert_eq!(code(&err), Some(1146), "{err}");
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    conn.query_drop(format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE t FIELDS TERMINATED BY ','",
        csv.display()
    ))
    .await
    .unwrap();
    let n: Option<(u32, u64)> = conn
        .query_first("SELECT COUNT(*), SUM(LENGTH(v)) FROM t")
        .await
        .unwrap();
    let expected_len: usize = (1..=40_000).map(|i| format!("row {i}").len()).sum();
    assert_eq!(n, Some((40_000, expected_len as u64)));
    conn.disconnect().await.unwrap();
    let (sent, received) = counted.await.unwrap();
    // The answers above carry four copies of the 2 MB row; compressed, a few KiB each.
    assert!(
        received < 1_000_000 && sent < 1_000_000,
        "not compressed: {sent} bytes sent, {received} received"
    );

    // MariaDB's own client, compressed, over TLS (which the proxy offers).
    let (host, port) = s.listen.split_once(':').unwrap();
    let mariadb = |sql: &str| {
        let out = Command::new("mariadb")
            .args([
                "--protocol=tcp",
                "--compress",
                "--local-infile=1",
                "-N",
                "-B",
            ])
            .args([format!("-h{host}"), format!("-P{port}")])
            .args([format!("-u{user}"), format!("-p{pw}"), "shop".into()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(sql.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    mariadb(&format!(
        "CREATE TABLE u LIKE t; LOAD DATA LOCAL INFILE '{}' INTO TABLE u FIELDS TERMINATED BY ','",
        csv.display()
    ));
    assert_eq!(
        mariadb("SELECT COUNT(*), SUM(LENGTH(v)) FROM u"),
        format!("40000\t{expected_len}\n")
    );
    let status = mariadb("status");
    assert!(
        status.contains("Cipher in use") && status.contains("Compressed"),
        "{status}"
    );
    assert_eq!(
        mariadb("SELECT LENGTH(v), MD5(v) = MD5(REPEAT('stratus ', 250000)) FROM big"),
        "2000000\t1\n2000000\t1\n"
    );
    assert_eq!(
        mariadb(&format!("SELECT '{row}' = REPEAT('stratus ', 250000)")),
        "1\n",
        "a 2 MB command"
    );
    s.stop();
}

/// Reads compressed packets until `want` packets are inside them: the compressed packets' ids,
/// and the packets inside (id, payload).
fn read_compressed(stream: &mut impl std::io::Read, want: usize) -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
    use stratus_wire::compressed::{HEADER_LEN, Header, Inflater};
    let mut inflater = Inflater::default();
    let (mut ids, mut plain) = (Vec::new(), Vec::new());
    loop {
        let mut packets = Vec::new();
        let mut rest = &plain[..];
        while let Some(total) = stratus_wire::packet::complete(rest) {
            packets.push((rest[3], rest[4..total].to_vec()));
            rest = &rest[total..];
        }
        if packets.len() >= want {
            return (ids, packets);
        }
        let mut head = [0u8; HEADER_LEN];
        stream.read_exact(&mut head).unwrap();
        let h = Header::parse(&head).unwrap();
        let mut payload = vec![0; h.len];
        stream.read_exact(&mut payload).unwrap();
        inflater.inflate(&h, &payload, &mut plain).unwrap();
        ids.push(h.seq);
    }
}

/// A compressed packet with id `seq` around `payload`, announced as `uncompressed` bytes (0: as
/// it is).
fn compressed_packet(seq: u8, uncompressed: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![payload.len() as u8, 0, 0, seq, uncompressed, 0, 0];
    p.extend_from_slice(payload);
    p
}

/// The server reads the packets inside compressed ones whatever their ids, and numbers its
/// answer after the last compressed packet it read; the proxy answers the same, byte for byte,
/// when a client numbers the packet inside as it likes or spreads it over two compressed
/// packets. A hostile client's malformed compressed packets (one that inflates to more than
/// it announced, one that is not zlib at all) end its own session, and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn compressed_packets_are_answered_as_the_server_answers_them() {
    use common::raw_client::RawClient;
    use std::io::{Read, Write};
    let mut s = Stratus::new("compressed-raw");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut other = shop_conn(&s, &user, &pw).await;
    // `SELECT 1` as a packet with id 5, then with id 0 deflated (zlib, level 1: 13 bytes once
    // inflated).
    let select = b"\x09\x00\x00\x05\x03SELECT 1";
    let deflated = [
        0x78, 0x01, 0xe3, 0x64, 0x60, 0x60, 0x60, 0x0e, 0x76, 0xf5, 0x71, 0x75, 0x0e, 0x51, 0x30,
        0x04, 0x00, 0x0a, 0xb2, 0x02, 0x1e,
    ];
    let tries = [
        compressed_packet(0, 0, select),
        [
            compressed_packet(0, 0, &select[..6]),
            compressed_packet(1, 0, &select[6..]),
        ]
        .concat(),
        compressed_packet(0, 13, &deflated),
    ];
    let answers = |mut stream: Box<dyn common::raw_client::Stream>| {
        tries
            .iter()
            .map(|t| {
                stream.write_all(t).unwrap();
                // Column count, its definition, EOF, the row, EOF.
                read_compressed(&mut stream, 5)
            })
            .collect::<Vec<_>>()
    };
    let login = |stream: Box<dyn common::raw_client::Stream>, user: &str| {
        RawClient::try_login(stream, user, &pw, "shop", stratus_wire::caps::COMPRESS)
            .unwrap_or_else(|e| panic!("a compressed login: {e:?}"))
    };
    let socket = std::os::unix::net::UnixStream::connect(s.backend_socket("shop")).unwrap();
    let raw = socket.try_clone().unwrap();
    let _direct = login(Box::new(socket), user.split_once('.').unwrap().1);
    let direct = answers(Box::new(raw));
    assert_eq!(
        direct[1].0,
        [2],
        "the server's answer follows the second compressed packet"
    );
    let tcp = std::net::TcpStream::connect(&s.listen).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let raw = tcp.try_clone().unwrap();
    let _proxied = login(Box::new(tcp), &user);
    assert_eq!(answers(Box::new(raw)), direct);

    for bad in [
        compressed_packet(0, 3, &deflated),
        compressed_packet(0, 100, b"not zlib!"),
    ] {
        let stream = std::net::TcpStream::connect(&s.listen).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut raw = stream.try_clone().unwrap();
        let _client = login(Box::new(stream), &user);
        raw.write_all(&tries[2]).unwrap();
        read_compressed(&mut raw, 5);
        // The session ends: the proxy closes the connection (a hang fails on the timeout).
        raw.write_all(&bad).unwrap();
        raw.read_to_end(&mut Vec::new()).unwrap();
    }
    let n: Option<u32> = other.query_first("SELECT 1").await.unwrap();
    assert_eq!(n, Some(1));
    other.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_managed_in_sql_are_kept_in_the_catalog() {
    let mut s = Stratus::new("accounts");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut owner = shop_conn(&s, &user, &pw).await;
    owner
        .query_drop("CREATE USER 'app'@'%' IDENTIFIED BY 'first'")
        .await
        .unwrap();
    owner
        .query_drop("GRANT SELECT ON shop.* TO 'app'@'%'")
        .await
        .unwrap();
    let mut app = Conn::new(s.sql_opts("shop.app", "first", Some("shop")))
        .await
        .unwrap();
    let one: Option<u8> = app.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    app.disconnect().await.unwrap();
    let users = s.json(&["user", "list", "shop"]);
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["name"] == "app" && u["owner"] == false),
        "{users}"
    );

    owner
        .query_drop("ALTER USER 'app'@'%' IDENTIFIED BY 'second'")
        .await
        .unwrap();
    assert!(
        Conn::new(s.sql_opts("shop.app", "first", None))
            .await
            .is_err(),
        "old password refused"
    );
    Conn::new(s.sql_opts("shop.app", "second", None))
        .await
        .unwrap()
        .disconnect()
        .await
        .unwrap();

    owner.query_drop("DROP USER 'app'@'%'").await.unwrap();
    let err = Conn::new(s.sql_opts("shop.app", "second", None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1045"), "{err}");
    let users = s.json(&["user", "list", "shop"]);
    assert_eq!(users.as_array().unwrap().len(), 1, "{users}");
    owner.disconnect().await.unwrap();
    s.stop();
}

/// A login naming a schema that does not exist is refused (1049, as by the server: the
/// recovery from a schema dropped under a session does not apply to one never taken; PHP's
/// `pdo_mysql___construct` used to get in without a schema).
#[tokio::test(flavor = "multi_thread")]
async fn a_login_to_an_unknown_schema_is_refused_as_by_the_server() {
    use common::raw_client::{Answer, RawClient};
    let mut s = Stratus::new("refused-logins");
    s.start();
    let (user, pw) = created(&s, "shop");
    match Conn::new(s.sql_opts(&user, &pw, Some("letshopeitdoesnotexist"))).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1049, "{e}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a login to an unknown schema was let through"),
    }
    // Asleep at the login, the database cannot say: the first statement hears it, once, and
    // the session goes on without a schema rather than refusing everything after.
    s.json(&["db", "park", "shop"]);
    let stream = std::net::TcpStream::connect(&s.listen).unwrap();
    let mut late = RawClient::try_login(stream, &user, &pw, "letshopeitdoesnotexist", 0)
        .expect("a login while asleep is answered before the server is asked");
    let first = late.exec("DO 1");
    assert!(matches!(first, Answer::Err { code: 1049, .. }), "{first:?}");
    assert!(matches!(late.exec("DO 1"), Answer::Ok { .. }));
    assert!(matches!(late.exec("USE shop"), Answer::Ok { .. }));
    s.stop();
}

/// Runs the stock `mariadb` client through the proxy over TLS (trusting Stratus's CA), with
/// `args`; its output, or its error.
fn mariadb_tls(s: &Stratus, user: &str, pw: &str, args: &[&str]) -> Result<String, String> {
    let ca = s.data_dir().join("tls").join("ca.pem");
    let (host, port) = s.listen.split_once(':').unwrap();
    let out = Command::new("mariadb")
        .args(["--protocol=tcp", "-h", host, "-P", port, "-N", "-B"])
        .arg(format!("-u{user}"))
        .arg(format!("-p{pw}"))
        .arg(format!("--ssl-ca={}", ca.display()))
        .args(args)
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// The proxy repeats a client's TLS to its server, so the server sees the session as the
/// client made it: `Ssl_version` and `Ssl_cipher` are the client's (and empty for a client
/// without TLS, also on a connection kept from a TLS one), and an account may `REQUIRE SSL`,
/// which then logs in with TLS only, refused without it as the server refuses it, or `REQUIRE
/// CIPHER`, which logs in with that cipher only. A client
/// certificate cannot be required (the proxy cannot show the client's to the server): such a
/// statement is refused with the reason, and nothing of its batch runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_clients_tls_is_what_its_server_sees_and_an_account_may_require_it() {
    let mut s = Stratus::new("require-tls");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut owner = shop_conn(&s, &user, &pw).await;
    for sql in [
        "CREATE USER 'app'@'%' IDENTIFIED BY 'first' REQUIRE X509",
        "CREATE USER 'app'@'%' IDENTIFIED BY 'first' REQUIRE SSL AND SUBJECT '/CN=a'; CREATE TABLE t (a INT)",
    ] {
        match owner.query_drop(sql).await {
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!((e.code, e.state.as_str()), (1235, "42000"), "{sql}: {e}");
                assert!(
                    e.message.contains("REQUIRE SSL and REQUIRE CIPHER work"),
                    "{e}"
                );
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    let made: Vec<String> = owner
        .query("SELECT user FROM mysql.user WHERE user = 'app' UNION SELECT table_name FROM information_schema.tables WHERE table_schema = 'shop'")
        .await
        .unwrap();
    assert!(made.is_empty(), "nothing of a refused batch runs: {made:?}");

    // The server's own view, and the client's ("Cipher in use is …" in `status`).
    let views =
        "SHOW STATUS LIKE 'Ssl_version'; SHOW STATUS LIKE 'Ssl_cipher'; SELECT @@have_ssl; \\s";
    let seen = |out: &str| -> (String, String, String) {
        let value = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let client = value("SSL:").replace("Cipher in use is ", "");
        (value("Ssl_version\t"), value("Ssl_cipher\t"), client)
    };
    for version in ["TLSv1.3", "TLSv1.2"] {
        let out = mariadb_tls(
            &s,
            &user,
            &pw,
            &[&format!("--tls-version={version}"), "-e", views],
        )
        .unwrap();
        let (server_version, server_cipher, client_cipher) = seen(&out);
        assert_eq!(server_version, version, "{out}");
        assert!(!server_cipher.is_empty(), "{out}");
        assert_eq!(server_cipher, client_cipher, "{out}");
        assert!(out.lines().any(|l| l == "YES"), "have_ssl: {out}");
    }
    // The same client without TLS, right after the TLS one left its connection to be kept
    // (the same account and settings): the server sees no TLS. Then TLS again.
    let plain = mariadb_tls(&s, &user, &pw, &["--skip-ssl", "-e", views]).unwrap();
    assert_eq!(
        seen(&plain),
        (String::new(), String::new(), "Not in use".to_owned()),
        "{plain}"
    );
    let out = mariadb_tls(&s, &user, &pw, &["-e", views]).unwrap();
    assert_eq!(seen(&out).0, "TLSv1.3", "{out}");
    let tls13_cipher = seen(&out).1;
    let plain: Vec<(String, String)> = owner.query("SHOW STATUS LIKE 'Ssl_cipher'").await.unwrap();
    assert_eq!(plain, [("Ssl_cipher".to_owned(), String::new())]);

    // A TLS session whose server connection is lost goes on over a new one, with TLS again.
    let ca = s.data_dir().join("tls").join("ca.pem");
    let (host, port) = s.listen.split_once(':').unwrap();
    let mut cli = Command::new("mariadb")
        .args([
            "--protocol=tcp",
            "-h",
            host,
            "-P",
            port,
            "-N",
            "-B",
            "--unbuffered",
        ])
        .args([
            format!("-u{user}"),
            format!("-p{pw}"),
            format!("--ssl-ca={}", ca.display()),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_cli = cli.stdin.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = cli.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let _ = lines_tx.send(line.unwrap_or_default());
        }
    });
    let line = || {
        lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("an answer from the client")
    };
    use std::io::Write as _;
    writeln!(to_cli, "SELECT CONNECTION_ID();").unwrap();
    let first = line();
    // Killed on the server, not through the proxy (which would end the session, as the server
    // ends a killed connection): to the proxy, a lost connection.
    let mut server = s.direct("shop").await;
    server.query_drop(format!("KILL {first}")).await.unwrap();
    server.disconnect().await.unwrap();
    writeln!(
        to_cli,
        "SHOW STATUS LIKE 'Ssl_version'; SELECT CONNECTION_ID();"
    )
    .unwrap();
    assert_eq!(
        line(),
        "Ssl_version\tTLSv1.3",
        "TLS on the new server connection"
    );
    assert_ne!(line(), first, "a new server connection");
    drop(to_cli);
    assert!(cli.wait().unwrap().success());

    owner
        .query_drop("CREATE USER 'app'@'%' IDENTIFIED BY 'first' REQUIRE SSL")
        .await
        .unwrap();
    owner
        .query_drop("GRANT SELECT ON shop.* TO 'app'@'%'")
        .await
        .unwrap();
    let out = mariadb_tls(&s, "shop.app", "first", &["-e", "SELECT CURRENT_USER()"]).unwrap();
    assert_eq!(out.trim(), "app@%");
    // Without TLS the server refuses it, as it refuses it directly.
    let direct = Command::new("mariadb")
        .arg(format!("--socket={}", s.backend_socket("shop")))
        .args(["-uapp", "-pfirst", "--skip-ssl", "-e", "SELECT 1"])
        .output()
        .unwrap();
    let direct = String::from_utf8_lossy(&direct.stderr).into_owned();
    assert!(direct.contains("ERROR 1045"), "{direct}");
    match Conn::new(s.sql_opts("shop.app", "first", Some("shop"))).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1045, "{e}"),
        Ok(mut c) => {
            let err = c.query_drop("SELECT 1").await.unwrap_err();
            panic!("logged in without TLS; then: {err}");
        }
        Err(other) => panic!("{other}"),
    }

    // REQUIRE CIPHER: the server checks its own connection's cipher, which is the client's:
    // the named one logs in, another (TLS 1.2's) is refused, as directly.
    owner
        .query_drop(format!(
            "CREATE USER 'pinned'@'%' IDENTIFIED BY 'second' REQUIRE CIPHER '{tls13_cipher}'"
        ))
        .await
        .unwrap();
    owner
        .query_drop("GRANT SELECT ON shop.* TO 'pinned'@'%'")
        .await
        .unwrap();
    let out = mariadb_tls(
        &s,
        "shop.pinned",
        "second",
        &["-e", "SELECT CURRENT_USER()"],
    );
    assert_eq!(out.as_deref().map(str::trim), Ok("pinned@%"));
    let other = mariadb_tls(
        &s,
        "shop.pinned",
        "second",
        &["--tls-version=TLSv1.2", "-e", "SELECT 1"],
    )
    .unwrap_err();
    assert!(other.contains("ERROR 1045"), "{other}");
    owner.disconnect().await.unwrap();
    s.stop();
}

/// A server still running from before the servers' certificate was made again (Stratus killed,
/// `tls/servers/` lost, Stratus started again: it adopts the server) has a certificate the
/// proxy no longer trusts. A TLS client's session goes on with the server's leg plain (a local
/// socket only root reaches), as with a server that takes no TLS, rather than failing.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_with_an_untrusted_certificate_is_reached_without_tls() {
    let mut s = Stratus::new("untrusted");
    s.start();
    let (user, pw) = created(&s, "shop");
    let pid = s.json(&["db", "show", "shop"])["pid"].clone();
    s.kill9();
    std::fs::remove_dir_all(s.data_dir().join("tls").join("servers")).unwrap();
    s.start();
    assert_eq!(
        s.json(&["db", "show", "shop"])["pid"],
        pid,
        "adopted, with its old certificate"
    );
    let views = "SHOW STATUS LIKE 'Ssl_version'; \\s";
    for _ in 0..2 {
        let out = mariadb_tls(&s, &user, &pw, &["-e", views]).unwrap();
        assert!(
            out.contains("Cipher in use is"),
            "TLS with the proxy: {out}"
        );
        assert!(
            out.lines().any(|l| l == "Ssl_version\t"),
            "none with the server: {out}"
        );
    }
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_connections_are_reused_clean() {
    let mut s = Stratus::new("pool");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut first = shop_conn(&s, &user, &pw).await;
    first
        .query_drop("SET @secret = 'from the first client', SESSION sql_mode = 'ANSI'")
        .await
        .unwrap();
    first
        .query_drop("CREATE TEMPORARY TABLE scratch (a INT)")
        .await
        .unwrap();
    let id1: Option<u64> = first.query_first("SELECT CONNECTION_ID()").await.unwrap();
    first.disconnect().await.unwrap();
    // The connection is reset and kept once the client has gone.
    s.wait_for_metric(
        "stratus_proxy_pooled_connections{db=\"shop\"}",
        1.0,
        std::time::Duration::from_secs(10),
    );

    let mut second = shop_conn(&s, &user, &pw).await;
    let id2: Option<u64> = second.query_first("SELECT CONNECTION_ID()").await.unwrap();
    assert_eq!(id1, id2, "the backend connection was kept and reused");
    let row: Option<(Option<String>, String)> = second
        .query_first("SELECT @secret, @@sql_mode")
        .await
        .unwrap();
    let (secret, mode) = row.unwrap();
    assert_eq!(secret, None, "nothing of the first session leaks");
    assert_ne!(mode, "ANSI");
    assert!(
        second.query_drop("SELECT * FROM scratch").await.is_err(),
        "its temporary table is gone"
    );
    second.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn pinned_sessions_are_reported_and_not_parked_under_their_clients() {
    let mut s = Stratus::new("pinned");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let shown = s.json(&["db", "show", "shop"]);
    assert_eq!(shown["activity"]["open_transactions"], 1, "{shown}");
    assert_eq!(shown["activity"]["connections"], 1);
    let err = s.fails(&["db", "park", "shop"]);
    assert!(
        err.contains("1 open transaction") && err.contains("force"),
        "{err}"
    );
    conn.query_drop("COMMIT").await.unwrap();

    conn.query_drop("CREATE TEMPORARY TABLE scratch (a INT)")
        .await
        .unwrap();
    assert_eq!(
        s.json(&["db", "show", "shop"])["activity"]["pinned_sessions"],
        1
    );
    assert!(
        s.fails(&["db", "park", "shop"])
            .contains("1 pinned session")
    );
    conn.query_drop("DROP TEMPORARY TABLE scratch")
        .await
        .unwrap();
    assert_eq!(
        s.json(&["db", "show", "shop"])["activity"]["pinned_sessions"],
        0
    );
    assert_eq!(
        s.json(&["db", "park", "shop"])["state"],
        "parked",
        "idle connections do not hold it"
    );
    let n: Option<u64> = conn.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(1), "the committed row, after a wake");
    conn.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn many_clients_waking_one_database_cause_one_wake() {
    let mut s = Stratus::new("herd");
    s.start();
    let (user, pw) = created(&s, "shop");
    s.json(&["db", "park", "shop"]);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let o = s.sql_opts(&user, &pw, Some("shop"));
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::new(o).await.unwrap();
            let one: Option<u32> = c.query_first("SELECT 1").await.unwrap();
            c.disconnect().await.unwrap();
            one
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Some(1));
    }
    let events = s.json(&["events", "--db", "shop"]);
    let wakes = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "woken")
        .count();
    assert_eq!(wakes, 1, "{events}");
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn change_user_switches_identity_and_starts_a_fresh_session() {
    let mut s = Stratus::new("chuser");
    s.start();
    let (user, pw) = created(&s, "shop");
    s.json(&["user", "create", "shop", "app", "--password", "apppw"]);
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("SET @left_behind = 1").await.unwrap();
    // A role outlives a change of user on a MariaDB 10.11 connection: the new account must not
    // inherit it.
    conn.query_drop("CREATE ROLE clerk").await.unwrap();
    conn.query_drop("SET ROLE clerk").await.unwrap();
    let opts = mysql_async::ChangeUserOpts::default()
        .with_user(Some("shop.app".into()))
        .with_pass(Some("apppw".into()))
        .with_db_name(Some("shop".into()));
    conn.change_user(opts).await.unwrap();
    let row: Option<(String, Option<u8>, Option<String>)> = conn
        .query_first("SELECT CURRENT_USER(), @left_behind, CURRENT_ROLE()")
        .await
        .unwrap();
    assert_eq!(
        row,
        Some(("app@%".into(), None, None)),
        "the new user, none of the old session"
    );
    // A plain user name is an account of the database the session is on, as on a server
    // (MariaDB Connector/Python's `test_change_user` names its user so).
    let owner = user.split_once('.').unwrap().1;
    let plain = mysql_async::ChangeUserOpts::default()
        .with_user(Some(owner.into()))
        .with_pass(Some(pw.clone()))
        .with_db_name(Some("shop".into()));
    // A role the account gets at login (`DEFAULT ROLE`, no `SET ROLE` the proxy could see)
    // does not pass to the new account either.
    let mut defaulted = shop_conn(&s, &user, &pw).await;
    defaulted
        .query_drop("SET DEFAULT ROLE clerk")
        .await
        .unwrap();
    let mut defaulted = shop_conn(&s, &user, &pw).await;
    let role: Option<Option<String>> = defaulted
        .query_first("SELECT CURRENT_ROLE()")
        .await
        .unwrap();
    assert_eq!(role, Some(Some("clerk".into())));
    let to_app = mysql_async::ChangeUserOpts::default()
        .with_user(Some("shop.app".into()))
        .with_pass(Some("apppw".into()))
        .with_db_name(Some("shop".into()));
    defaulted.change_user(to_app).await.unwrap();
    let role: Option<Option<String>> = defaulted
        .query_first("SELECT CURRENT_ROLE()")
        .await
        .unwrap();
    assert_eq!(role, Some(None), "the owner's default role passed to app");
    let mut undo = shop_conn(&s, &user, &pw).await;
    undo.query_drop("SET DEFAULT ROLE NONE").await.unwrap();
    let thread: Option<u32> = conn.query_first("SELECT CONNECTION_ID()").await.unwrap();
    conn.change_user(plain).await.unwrap();
    let now: Option<(String, u32)> = conn
        .query_first("SELECT CURRENT_USER(), CONNECTION_ID()")
        .await
        .unwrap();
    assert_eq!(
        now,
        Some((format!("{owner}@%"), thread.unwrap())),
        "the same server thread, as on a server"
    );
    // The new account's schema is the server's to check before the change takes: an unknown
    // one, or one the account may not use, is refused, and the session goes on as the old
    // account in its old schema, reset as the server resets it.
    conn.query_drop("SET @left_behind = 2").await.unwrap();
    for (who, password, code) in [
        (user.as_str(), pw.as_str(), 1049),
        ("shop.app", "apppw", 1044),
    ] {
        let refused = mysql_async::ChangeUserOpts::default()
            .with_user(Some(who.into()))
            .with_pass(Some(password.into()))
            .with_db_name(Some("nosuch".into()));
        let err = conn.change_user(refused).await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("ERROR {code}")),
            "{who}: {err}"
        );
        let row: Option<(String, String, Option<u8>)> = conn
            .query_first("SELECT CURRENT_USER(), DATABASE(), @left_behind")
            .await
            .unwrap();
        assert_eq!(row, Some((format!("{owner}@%"), "shop".into(), None)));
    }
    // A wrong password too, as on a server: 1045, the session goes on; and as on a server, a
    // connection that saw three changes fail refuses every further one, right or wrong.
    let bad = mysql_async::ChangeUserOpts::default()
        .with_user(Some("shop.app".into()))
        .with_pass(Some("wrong".into()));
    let err = conn.change_user(bad).await.unwrap_err();
    assert!(err.to_string().contains("ERROR 1045"), "{err}");
    // Counted with failed logins, whose throttle it meets.
    s.wait_for_metric(
        "stratus_proxy_login_failures_total{db=\"shop\"}",
        1.0,
        std::time::Duration::from_secs(5),
    );
    let now: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(now, Some(format!("{owner}@%")));
    let right = mysql_async::ChangeUserOpts::default()
        .with_user(Some("shop.app".into()))
        .with_pass(Some("apppw".into()));
    let err = conn.change_user(right).await.unwrap_err();
    assert!(err.to_string().contains("ERROR 1047"), "{err}");
    // ... and never one of another database's, whatever its password.
    created(&s, "other");
    s.json(&[
        "user",
        "create",
        "other",
        "stranger",
        "--password",
        "strangerpw",
    ]);
    let mut conn = shop_conn(&s, &user, &pw).await;
    let theirs = mysql_async::ChangeUserOpts::default()
        .with_user(Some("stranger".into()))
        .with_pass(Some("strangerpw".into()));
    let err = conn.change_user(theirs).await.unwrap_err();
    assert!(err.to_string().contains("1045"), "{err}");
    // Named with its database, it is theirs to log in as; the schema is checked on a
    // connection to their server.
    let mut conn = shop_conn(&s, &user, &pw).await;
    for (schema, refused) in [("nosuch", true), ("other", false)] {
        let prefixed = mysql_async::ChangeUserOpts::default()
            .with_user(Some("other.stranger".into()))
            .with_pass(Some("strangerpw".into()))
            .with_db_name(Some(schema.into()));
        let r = conn.change_user(prefixed).await;
        assert_eq!(r.is_err(), refused, "{schema}: {r:?}");
    }
    let row: Option<(String, String)> = conn
        .query_first("SELECT CURRENT_USER(), DATABASE()")
        .await
        .unwrap();
    assert_eq!(row, Some(("stranger@%".into(), "other".into())));
    s.stop();
}

/// MariaDB's array execute (`COM_STMT_BULK_EXECUTE`: what Connector/J, /Python and /Node.js
/// send for a batch) is answered as the server answers it, NULL and DEFAULT indicators
/// included; and on a new backend connection a bulk that relies on the parameter types bound
/// on the old one is given them.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_executes_are_answered_as_the_server_answers_them() {
    use common::raw_client::{Answer, RawClient, Value};
    let mut s = Stratus::new("bulk");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut setup = shop_conn(&s, &user, &pw).await;
    let table =
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT, w VARCHAR(10) DEFAULT 'dflt')";
    setup.query_drop(table).await.unwrap();
    setup.disconnect().await.unwrap();
    let insert = "INSERT INTO t (v, w) VALUES (?, ?)";
    let rows = |v: i32| {
        [
            [Value::Int(v), Value::Text("a")],
            [Value::Null, Value::Text("b")],
            [Value::Int(v + 1), Value::Default],
        ]
    };
    let socket = s.backend_socket("shop");
    let owner = user.split_once('.').unwrap().1;
    let mut direct = RawClient::login(
        std::os::unix::net::UnixStream::connect(&socket).unwrap(),
        owner,
        &pw,
        "shop",
    );
    let proxied = || {
        RawClient::login(
            std::net::TcpStream::connect(&s.listen).unwrap(),
            &user,
            &pw,
            "shop",
        )
    };
    let mut proxy = proxied();
    // The greeting names the server as the server names itself (`-log`: it keeps a binary log).
    for c in [&mut proxy, &mut direct] {
        let version = c.value("SELECT VERSION()");
        assert_eq!(c.server_version, version);
    }
    let (id, params) = proxy.prepare(insert);
    assert_eq!(params, 2);
    let (did, _) = direct.prepare(insert);
    let through = proxy.bulk(id, &rows(1), true);
    assert_eq!(
        through,
        Answer::Ok {
            affected: 3,
            insert_id: 1
        }
    );
    let past = direct.bulk(did, &rows(10), true);
    assert_eq!(
        past,
        Answer::Ok {
            affected: 3,
            insert_id: 4
        },
        "the same answer directly"
    );
    // An error is the server's, word for word.
    let (dup_sql, bad_rows) = (
        "INSERT INTO t (id, w) VALUES (?, ?)",
        [[Value::Int(1), Value::Text("x")]],
    );
    let (bad, _) = proxy.prepare(dup_sql);
    let (dbad, _) = direct.prepare(dup_sql);
    assert_eq!(
        proxy.bulk(bad, &bad_rows, true),
        direct.bulk(dbad, &bad_rows, true)
    );

    // An execute cut short (Connector/Node.js sends one for a statement given no values, and
    // a server reads past its end, out of step from then on) is refused as malformed; the
    // session goes on, and so does its connection.
    let (one, _) = proxy.prepare("SELECT ?");
    let cut = [&[0x17][..], &one.to_le_bytes(), &[0, 1, 0, 0, 0, 1]].concat();
    assert_eq!(
        proxy.raw(&cut),
        Answer::Err {
            code: 1835,
            message: "Malformed communication packet".into()
        }
    );
    assert_eq!(proxy.value("SELECT 7"), "7");

    // Its backend connection goes away (killed past the proxy): the next bulk, which carries
    // no types, runs on a new one, prepared again and given the types bound before.
    let thread = proxy.value("SELECT CONNECTION_ID()");
    assert_eq!(
        direct.exec(&format!("KILL {thread}")),
        Answer::Ok {
            affected: 0,
            insert_id: 0
        }
    );
    s.wait_for_metric(
        "stratus_proxy_backend_connections{db=\"shop\"}",
        0.0,
        std::time::Duration::from_secs(10),
    );
    assert_eq!(
        proxy.bulk(id, &rows(20), false),
        Answer::Ok {
            affected: 3,
            insert_id: 7
        }
    );
    assert_ne!(
        proxy.value("SELECT CONNECTION_ID()"),
        thread,
        "a new connection"
    );

    // Inside a transaction whose connection is lost, the bulk is replayed with the rest of
    // it, with the insert ids the client was told.
    let ok = Answer::Ok {
        affected: 0,
        insert_id: 0,
    };
    let thread = proxy.value("SELECT CONNECTION_ID()");
    assert_eq!(proxy.exec("BEGIN"), ok);
    let in_trans = proxy.bulk(id, &rows(30), false);
    assert_eq!(direct.exec(&format!("KILL {thread}")), ok);
    assert_eq!(proxy.exec("COMMIT"), ok);
    assert_eq!(
        in_trans,
        Answer::Ok {
            affected: 3,
            insert_id: 10
        }
    );
    let mut check = shop_conn(&s, &user, &pw).await;
    let got: Vec<(i64, Option<i32>, String)> = check
        .query("SELECT id, v, w FROM t ORDER BY id")
        .await
        .unwrap();
    let want: Vec<(i64, Option<i32>, String)> = [1, 10, 20, 30]
        .iter()
        .enumerate()
        .flat_map(|(i, &v)| {
            let first = 3 * i as i64 + 1;
            [
                (first, Some(v), "a".to_owned()),
                (first + 1, None, "b".to_owned()),
                (first + 2, Some(v + 1), "dflt".to_owned()),
            ]
        })
        .collect();
    assert_eq!(got, want);

    // The id of the statement prepared last (`LAST_STMT_ID`, as Connector/C's direct
    // execute sends it) names it; after a failed prepare, or an unknown id, none: as the
    // server answers, word for word.
    const LAST: u32 = u32::MAX;
    let (_, _) = proxy.prepare(insert);
    let (_, _) = direct.prepare(insert);
    let affected = |a: Answer| match a {
        Answer::Ok { affected, .. } => affected,
        Answer::Err { .. } => panic!("{a:?}"),
    };
    assert_eq!(affected(proxy.bulk(LAST, &rows(40), true)), 3);
    assert_eq!(affected(direct.bulk(LAST, &rows(40), true)), 3);
    let failed = "INSERT INTO no_such_table VALUES (?)";
    assert_eq!(proxy.prepare_error(failed), direct.prepare_error(failed));
    assert_eq!(
        proxy.bulk(LAST, &rows(50), true),
        direct.bulk(LAST, &rows(50), true)
    );
    assert_eq!(
        proxy.bulk(12345, &rows(50), true),
        direct.bulk(12345, &rows(50), true)
    );

    // An execute that carries no parameter types where the server needs them. For the
    // statement prepared last the server refuses it as malformed, and so does the proxy. With a
    // value for a statement whose types were never bound, MariaDB 10.11 reads the value without
    // a type and crashes (Connector/C's `test_mdev19838` sends one): the proxy refuses it before
    // the server sees it. NULLs are not read, and run.
    let malformed = Answer::Err {
        code: 1835,
        message: "Malformed communication packet".into(),
    };
    let untyped = |id: u32, nulls: u8, values: &[u8]| {
        [
            &[0x17][..],
            &id.to_le_bytes(),
            &[0, 1, 0, 0, 0, nulls, 0],
            values,
        ]
        .concat()
    };
    let (fresh, _) = proxy.prepare(insert);
    assert_eq!(
        proxy.raw(&untyped(fresh, 0, &[1, b'9', 1, b'x'])),
        malformed
    );
    assert_eq!(proxy.raw(&untyped(LAST, 0b11, &[])), malformed);
    let (dfresh, _) = direct.prepare(insert);
    assert_eq!(
        direct.raw(&untyped(LAST, 0b11, &[])),
        malformed,
        "as the server answers it (and it is still up)"
    );
    assert_eq!(affected(proxy.raw(&untyped(fresh, 0b11, &[]))), 1);
    assert_eq!(affected(direct.raw(&untyped(dfresh, 0b11, &[]))), 1);
    s.stop();
}

/// Session variables are recreated on a new server connection as they were: one whose value
/// tracking reports empty (a NULL storage engine), and a collation set after its character set
/// (setting a character set resets its collation).
#[tokio::test(flavor = "multi_thread")]
async fn session_variables_are_recreated_as_they_were_on_a_new_server_connection() {
    let mut s = Stratus::new("variables");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut c = shop_conn(&s, &user, &pw).await;
    c.query_drop("SET SESSION default_tmp_storage_engine = NULL")
        .await
        .unwrap();
    c.query_drop(
        "SET @@character_set_connection = 'latin1', SESSION collation_connection = 'latin1_bin'",
    )
    .await
    .unwrap();
    c.query_drop("SET @@max_join_size = 1000, SESSION sql_big_selects = 1")
        .await
        .unwrap();
    // `SET @@x`, which the server's tracking does not report, as a prepared statement, and
    // inside a transaction (where the proxy reads it back with a `SELECT`).
    c.exec_drop("SET @@sql_mode = ?", ("ANSI_QUOTES",))
        .await
        .unwrap();
    c.query_drop("START TRANSACTION").await.unwrap();
    c.query_drop("SET @@lc_time_names = 'de_DE'").await.unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let read = "SELECT @@default_tmp_storage_engine, @@collation_connection, @@sql_big_selects, \
                @@sql_mode, @@lc_time_names";
    type Seen = Option<(Option<String>, String, u8, String, String)>;
    let before: Seen = c.query_first(read).await.unwrap();
    assert_eq!(
        before,
        Some((
            None,
            "latin1_bin".to_owned(),
            1,
            "ANSI_QUOTES".to_owned(),
            "de_DE".to_owned()
        )),
        "as the server has them"
    );
    let thread: Option<u64> = c.query_first("SELECT CONNECTION_ID()").await.unwrap();
    let mut server = s.direct("shop").await;
    server
        .query_drop(format!("KILL {}", thread.unwrap()))
        .await
        .unwrap();
    let after: Seen = c.query_first(read).await.unwrap();
    let now: Option<u64> = c.query_first("SELECT CONNECTION_ID()").await.unwrap();
    assert_ne!(now, thread, "a new server connection");
    assert_eq!(after, before);
    server.disconnect().await.unwrap();
    c.disconnect().await.unwrap();
    s.stop();
}

/// After a network error (a command past `max_allowed_packet`, packets out of order) the
/// server closes the connection; so does the proxy, rather than go on over a new one as if the
/// session had not been lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_network_error_ends_the_session_as_the_server_ends_its_connection() {
    use common::raw_client::{Answer, RawClient};
    let mut s = Stratus::new("neterror");
    s.start();
    let (user, pw) = created(&s, "shop");
    let owner = user.split_once('.').unwrap().1;
    // A bound on waiting for the close, so that a session left open fails the test.
    let bound = Some(std::time::Duration::from_secs(30));
    let socket = std::os::unix::net::UnixStream::connect(s.backend_socket("shop")).unwrap();
    socket.set_read_timeout(bound).unwrap();
    let mut direct = RawClient::login(socket, owner, &pw, "shop");
    let tcp = std::net::TcpStream::connect(&s.listen).unwrap();
    tcp.set_read_timeout(bound).unwrap();
    let mut proxy = RawClient::login(tcp, &user, &pw, "shop");
    let select = [&[stratus_wire::command::COM_QUERY][..], b"SELECT 1"].concat();
    let out_of_order = direct.raw_numbered(3, &select);
    assert!(
        matches!(&out_of_order, Answer::Err { code: 1156, .. }),
        "{out_of_order:?}"
    );
    assert!(direct.closed(), "the server closed its connection");
    assert_eq!(proxy.raw_numbered(3, &select), out_of_order);
    assert!(proxy.closed(), "the proxy closed the session");

    // The same code signalled closes nothing, on the server or the proxy.
    let mut c = shop_conn(&s, &user, &pw).await;
    let thread: Option<u64> = c.query_first("SELECT CONNECTION_ID()").await.unwrap();
    let signalled = c
        .query_drop("SIGNAL SQLSTATE '08S01' SET MYSQL_ERRNO = 1156, MESSAGE_TEXT = 'not really'")
        .await
        .unwrap_err();
    assert!(
        matches!(&signalled, mysql_async::Error::Server(e) if e.code == 1156),
        "{signalled}"
    );
    let same: Option<u64> = c.query_first("SELECT CONNECTION_ID()").await.unwrap();
    assert_eq!(same, thread, "the session goes on, on its connection");
    c.disconnect().await.unwrap();

    // Past the server's `max_allowed_packet` (16 MiB) and within the proxy's own limit (a
    // client that lets itself send it).
    let opts = mysql_async::OptsBuilder::from_opts(s.sql_opts(&user, &pw, Some("shop")))
        .max_allowed_packet(Some(64 << 20));
    let mut c = Conn::new(opts).await.unwrap();
    let big = format!("SELECT '{}'", "a".repeat(17 << 20));
    match c.query_drop(big).await.unwrap_err() {
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1153, "{e:?}"),
        other => panic!("{other}"),
    }
    let after = c.query_drop("SELECT 1").await.unwrap_err();
    assert!(
        matches!(
            after,
            mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)
        ),
        "the connection is gone, got {after}"
    );
    let mut fresh = shop_conn(&s, &user, &pw).await;
    let one: Option<u8> = fresh.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_client_is_disconnected_after_its_wait_timeout() {
    let mut s = Stratus::new("waittimeout");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut short = shop_conn(&s, &user, &pw).await;
    let mut default = shop_conn(&s, &user, &pw).await;
    short
        .query_drop("SET SESSION wait_timeout = 1")
        .await
        .unwrap();
    // Set as `@@wait_timeout`, which the server's session tracking does not report.
    let mut unscoped = shop_conn(&s, &user, &pw).await;
    unscoped.query_drop("SET @@wait_timeout = 1").await.unwrap();
    // Idleness is what is tested: the clients send nothing until the proxy has closed both
    // (bounded), and the one left at the default stays.
    s.wait_for_metric(
        "stratus_proxy_connections{db=\"shop\"}",
        1.0,
        std::time::Duration::from_secs(60),
    );
    for mut client in [short, unscoped] {
        let err = client.query_drop("SELECT 1").await.unwrap_err();
        assert!(
            matches!(
                err,
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)
            ),
            "closed as the server closes an idle connection, got {err}"
        );
    }
    let one: Option<u8> = default.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the default timeout is the server's 8 hours");
    default.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_open_transaction_commit_then_closes_sessions() {
    let mut s = Stratus::new("sigterm");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut busy = shop_conn(&s, &user, &pw).await;
    busy.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    busy.query_drop("BEGIN").await.unwrap();
    busy.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let mut idle = shop_conn(&s, &user, &pw).await;

    let pid = s.child.as_ref().unwrap().id();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    // Shutting down is seen from outside as the endpoint refusing new clients (bounded).
    let begin = std::time::Instant::now();
    while Conn::new(s.sql_opts(&user, &pw, None)).await.is_ok() {
        assert!(
            begin.elapsed() < std::time::Duration::from_secs(10),
            "still accepting clients 10 s after SIGTERM"
        );
    }
    // A statement that raced the signal may still be answered; the session closes before the
    // next (bounded).
    let begin = std::time::Instant::now();
    let err = loop {
        match idle.query_drop("SELECT 1").await {
            Ok(()) => assert!(
                begin.elapsed() < std::time::Duration::from_secs(10),
                "an idle session still served 10 s after SIGTERM"
            ),
            Err(e) => break e,
        }
    };
    assert!(
        !matches!(err, mysql_async::Error::Server(ref e) if e.code != 1053),
        "an idle session is closed with ER_SERVER_SHUTDOWN or at once: {err}"
    );
    busy.query_drop("COMMIT").await.unwrap();
    assert!(
        busy.query_drop("SELECT 1").await.is_err(),
        "closed once its transaction ended"
    );
    let status = s.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "stratus up exited with {status}");

    s.start();
    let mut again = shop_conn(&s, &user, &pw).await;
    let n: Option<u32> = again.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(
        n,
        Some(1),
        "the transaction committed before the server stopped"
    );
    again.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn affected_rows_reach_the_client_whole() {
    let mut s = Stratus::new("affected");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
        .await
        .unwrap();
    conn.query_drop("CREATE TEMPORARY TABLE scratch (id INT)")
        .await
        .unwrap();
    let mut tx = conn
        .start_transaction(mysql_async::TxOpts::default())
        .await
        .unwrap();
    tx.query_drop("INSERT INTO t VALUES (1, 'foo'), (2, 'bar')")
        .await
        .unwrap();
    assert_eq!(
        tx.affected_rows(),
        2,
        "affected rows of a multi-row INSERT in a transaction"
    );
    tx.commit().await.unwrap();
    conn.disconnect().await.unwrap();

    // Each LOAD DATA LOCAL of a multi-statement query reports its own rows.
    let file = s.dir.path().join("three.csv");
    std::fs::write(&file, "10,a\n11,b\n12,c\n").unwrap();
    let opts = s
        .sql_opts(&user, &pw, Some("shop"))
        .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new([file.clone()])));
    let mut conn = Conn::new(opts).await.unwrap();
    let load = |table: &str| {
        format!(
            "LOAD DATA LOCAL INFILE '{}' INTO TABLE {table} FIELDS TERMINATED BY ','",
            file.display()
        )
    };
    conn.query_drop("CREATE TABLE u LIKE t").await.unwrap();
    let result = conn
        .query_iter(format!("{}; {}", load("t"), load("u")))
        .await
        .unwrap();
    let affected = affected_per_result(result).await;
    assert_eq!(affected.first(), Some(&3), "LOAD DATA reports its rows");
    let n: Option<u32> = conn.query_first("SELECT COUNT(*) FROM u").await.unwrap();
    assert_eq!(n, Some(3), "the second LOAD DATA ran too");
    // The same client code against the server itself (its socket, as root) sees the same.
    let socket = s.backend_socket("shop");
    let mut direct = Conn::new(
        mysql_async::OptsBuilder::default()
            .socket(Some(socket))
            .user(Some("root"))
            .db_name(Some("shop"))
            .local_infile_handler(Some(mysql_async::WhiteListFsHandler::new([file.clone()]))),
    )
    .await
    .unwrap();
    direct
        .query_drop("CREATE TABLE v LIKE t; CREATE TABLE w LIKE t")
        .await
        .unwrap();
    let result = direct
        .query_iter(format!("{}; {}", load("v"), load("w")))
        .await
        .unwrap();
    assert_eq!(affected_per_result(result).await, affected);
    direct.disconnect().await.unwrap();
    conn.disconnect().await.unwrap();
    s.stop();
}

/// The affected-row counts a client reads while walking a multi-result answer.
async fn affected_per_result(
    mut result: mysql_async::QueryResult<'_, '_, mysql_async::TextProtocol>,
) -> Vec<u64> {
    let mut affected = Vec::new();
    loop {
        affected.push(result.affected_rows());
        result.collect::<mysql_async::Row>().await.unwrap();
        if result.is_empty() {
            return affected;
        }
    }
}

/// Runs `SELECT SLEEP(secs)` on `sleeper` and, once the server's process list shows it, has
/// `killer` run `KILL QUERY` of `id` (by default the thread id the list shows); checks the
/// statement was interrupted. Returns the sleeper and that thread id.
async fn interrupted(sleeper: Conn, killer: &mut Conn, secs: u32, id: Option<u64>) -> (Conn, u64) {
    interrupted_by(sleeper, killer, secs, id, |id| format!("KILL QUERY {id}")).await
}

/// [`interrupted`], with the statement `kill` makes of the id.
async fn interrupted_by(
    mut sleeper: Conn,
    killer: &mut Conn,
    secs: u32,
    id: Option<u64>,
    kill: fn(u64) -> String,
) -> (Conn, u64) {
    let sql = format!("SELECT SLEEP({secs})");
    let sleeping = tokio::spawn(async move {
        let r: Result<Option<u8>, _> = sleeper.query_first(sql).await;
        (r, sleeper)
    });
    let listed = format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP({secs})%'"
    );
    // Bounded: the statement runs on its server within a moment.
    let begin = std::time::Instant::now();
    let thread = loop {
        if let Some(id) = killer.query_first::<u64, _>(&listed).await.unwrap() {
            break id;
        }
        assert!(begin.elapsed() < std::time::Duration::from_secs(10));
    };
    killer.query_drop(kill(id.unwrap_or(thread))).await.unwrap();
    let (r, sleeper) = sleeping.await.unwrap();
    match r {
        Ok(v) => assert_eq!(v, Some(1), "SLEEP interrupted returns 1"),
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1317, "{e}"),
        Err(e) => panic!("{e}"),
    }
    (sleeper, thread)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_acts_on_greeting_ids_and_on_server_thread_ids() {
    let mut s = Stratus::new("kill");
    s.start();
    let (user, pw) = created(&s, "shop");
    let (other_user, other_pw) = created(&s, "other");
    let connect = |u: String, p: String| {
        let opts = s.sql_opts(&u, &p, None);
        async move { Conn::new(opts).await.unwrap() }
    };

    // KILL QUERY with the id from the greeting cancels that client's running statement.
    let sleeper = connect(user.clone(), pw.clone()).await;
    let sleeper_id = sleeper.id();
    let mut killer = connect(user.clone(), pw.clone()).await;
    let (mut sleeper, _) = interrupted(sleeper, &mut killer, 20, Some(sleeper_id.into())).await;
    let one: Option<u8> = sleeper.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the connection survives KILL QUERY");
    assert!(
        sleeper_id >= 1 << 30,
        "greeting ids are apart from the server's thread ids: {sleeper_id}"
    );

    // So does KILL QUERY with the server's thread id, as the process list shows it.
    let (mut sleeper, thread) = interrupted(sleeper, &mut killer, 21, None).await;
    let same: Option<u64> = sleeper.query_first("SELECT CONNECTION_ID()").await.unwrap();
    assert_eq!(same, Some(thread));

    // A thread that serves no session (a kept connection) is unknown, and stays.
    let mut gone = connect(user.clone(), pw.clone()).await;
    let kept: Option<u64> = gone.query_first("SELECT CONNECTION_ID()").await.unwrap();
    gone.disconnect().await.unwrap();
    let pooled = "stratus_proxy_pooled_connections{db=\"shop\"}";
    s.wait_for_metric(pooled, 1.0, std::time::Duration::from_secs(30));
    let err = killer
        .query_drop(format!("KILL {}", kept.unwrap()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1094"), "{err}");
    assert_eq!(s.metric(pooled), Some(1.0));

    // KILL CONNECTION of another session of the same account ends it, with no failover and
    // without a word: as the server does, the connection is closed under the statement it
    // runs (the client reads a lost connection, not an error packet).
    let lost = |r: Result<(), mysql_async::Error>| match r {
        Err(mysql_async::Error::Server(e)) => panic!("an answer from a killed session: {e}"),
        Err(_) => {}
        Ok(()) => panic!("the killed session went on"),
    };
    let busy = tokio::spawn(async move { sleeper.query_drop("SELECT SLEEP(22)").await });
    let listed =
        "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(22)%'";
    let begin = std::time::Instant::now();
    while killer
        .query_first::<u64, _>(listed)
        .await
        .unwrap()
        .is_none()
    {
        assert!(begin.elapsed() < std::time::Duration::from_secs(10));
    }
    killer
        .query_drop(format!("KILL CONNECTION {sleeper_id}"))
        .await
        .unwrap();
    lost(busy.await.unwrap());
    // So is an idle one: its next command finds the connection gone.
    let mut idle = connect(user.clone(), pw.clone()).await;
    let idle_id = idle.id();
    killer
        .query_drop(format!("KILL CONNECTION {idle_id}"))
        .await
        .unwrap();
    lost(idle.query_drop("SELECT 1").await);

    // Ids of another database's sessions are unknown here.
    let stranger = connect(other_user, other_pw).await;
    let err = killer
        .query_drop(format!("KILL QUERY {}", stranger.id()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1094"), "{err}");

    // A prepared `KILL ?` (mysql2's `execute`, Connector/J's server-side statements) names
    // sessions by the same ids, whether the id is bound as a number or as text.
    for as_text in [false, true] {
        let mut idle = connect(user.clone(), pw.clone()).await;
        let r = if as_text {
            killer
                .exec_drop("KILL CONNECTION ?", (idle.id().to_string(),))
                .await
        } else {
            killer.exec_drop("KILL CONNECTION ?", (idle.id(),)).await
        };
        r.unwrap();
        lost(idle.query_drop("SELECT 1").await);
    }
    let err = killer
        .exec_drop("KILL ?", (stranger.id(),))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1094"), "{err}");

    // KILL of one's own id ends one's own connection.
    let own = killer.id();
    let err = killer.query_drop(format!("KILL {own}")).await.unwrap_err();
    assert!(err.to_string().contains("1927"), "{err}");
    assert!(killer.query_drop("SELECT 1").await.is_err());
    stranger.disconnect().await.unwrap();
    s.stop();
}

/// A `KILL` behind a comment, or among other statements of one query (mysql2's pool test
/// kills with `KILL ?; SELECT SLEEP(0.05)`), names sessions by the same ids as a lone one.
#[tokio::test(flavor = "multi_thread")]
async fn kill_behind_a_comment_or_in_a_batch_names_the_same_sessions() {
    let mut s = Stratus::new("kill-batch");
    s.start();
    let (user, pw) = created(&s, "shop");
    let connect = || {
        let opts = s.sql_opts(&user, &pw, None);
        async move { Conn::new(opts).await.unwrap() }
    };
    let sleeper = connect().await;
    let id = u64::from(sleeper.id());
    let mut killer = connect().await;
    let (sleeper, _) = interrupted_by(sleeper, &mut killer, 23, Some(id), |id| {
        format!("/* app:shop */ KILL QUERY {id} -- cancel")
    })
    .await;
    let (mut sleeper, _) = interrupted_by(sleeper, &mut killer, 24, Some(id), |id| {
        format!("KILL QUERY {id}; SELECT 1")
    })
    .await;
    let one: Option<u8> = sleeper.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the connection survives KILL QUERY");

    // A batch that fails before its KILL leaves the session alone, as on the server; so does
    // one with a KILL inside a string, which is no KILL.
    let err = killer
        .query_drop(format!("DO no_such_function(); KILL {id}"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1305"), "{err}");
    killer
        .query_drop(format!("SELECT '1'; SELECT ';KILL {id};'"))
        .await
        .unwrap();
    let one: Option<u8> = sleeper.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the session goes on");

    // KILL CONNECTION in a batch ends the session without a word, and the batch goes on.
    killer
        .query_drop(format!("SET @after = 6; KILL {id}; SET @after = 7"))
        .await
        .unwrap();
    let after: Option<u8> = killer.query_first("SELECT @after").await.unwrap();
    assert_eq!(after, Some(7));
    match sleeper.query_drop("SELECT 1").await {
        Err(mysql_async::Error::Server(e)) => panic!("an answer from a killed session: {e}"),
        Err(_) => {}
        Ok(()) => panic!("the killed session went on"),
    }
    // Multi-statements turned on after the login (`COM_SET_OPTION`, as PHP's `multi_query`
    // does) split the query for the proxy as for the server: the KILL in it is found.
    {
        use common::raw_client::{Answer, RawClient};
        let target = connect().await;
        let stream = std::net::TcpStream::connect(&s.listen).unwrap();
        let mut raw = RawClient::login(stream, &user, &pw, "shop");
        let on = raw.raw(&[stratus_wire::command::COM_SET_OPTION, 0, 0]);
        assert!(matches!(on, Answer::Ok { .. }), "{on:?}");
        let kill = raw.exec(&format!("KILL QUERY {}; DO 1", target.id()));
        assert!(matches!(kill, Answer::Ok { .. }), "{kill:?}");
        assert!(matches!(raw.next_answer(), Answer::Ok { .. }));
    }
    // An id of no session of this database is the server's to answer, as before.
    let err = killer
        .query_drop("KILL 1073741823; SELECT 1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1094"), "{err}");

    // A session killing itself in a batch, by its greeting id or by `CONNECTION_ID()`, or with
    // `KILL CONNECTION_ID()` alone: the statements before the KILL run, the KILL is answered
    // 1927, and the connection is gone, as directly (not carried on over a new one).
    for batch in [
        "SET @before = 1; KILL {own}; SET @after = 1",
        "SET @before = 1; KILL CONNECTION_ID(); SET @after = 1",
        "KILL CONNECTION_ID()",
    ] {
        let mut me = connect().await;
        let sql = batch.replace("{own}", &me.id().to_string());
        let err = me.query_drop(&sql).await.unwrap_err();
        assert!(err.to_string().contains("1927"), "{sql}: {err}");
        match me.query_drop("SELECT 1").await {
            Err(mysql_async::Error::Server(e)) => panic!("{sql}: an answer after it: {e}"),
            Err(_) => {}
            Ok(()) => panic!("{sql}: the session went on over another connection"),
        }
    }
    let after: Option<u8> = killer.query_first("SELECT 1").await.unwrap();
    assert_eq!(after, Some(1), "the other sessions go on");
    // The server runs nothing past a KILL of its own connection: a session named after it
    // goes on.
    let mut me = connect().await;
    let mut spared = connect().await;
    let sql = format!("KILL {}; KILL {}", me.id(), spared.id());
    let err = me.query_drop(&sql).await.unwrap_err();
    assert!(err.to_string().contains("1927"), "{err}");
    let one: Option<u8> = spared.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "a KILL the server never ran ended a session");
    s.stop();
}

/// Makes account `name` of `shop`, which may read it (`require`: its TLS clause, or "").
async fn reader(owner: &mut Conn, name: &str, password: &str, require: &str) {
    owner
        .query_drop(format!(
            "CREATE USER '{name}'@'%' IDENTIFIED BY '{password}' {require}"
        ))
        .await
        .unwrap();
    owner
        .query_drop(format!("GRANT SELECT ON shop.* TO '{name}'@'%'"))
        .await
        .unwrap();
}

/// `COM_CHANGE_USER` on a TLS session: the server's connection stays TLS, so an account that
/// `REQUIRE`s SSL may be changed to, and on a plain session it is refused as the server
/// refuses it (MariaDB's `mysqltest` sends the command as applications' connectors do).
#[tokio::test(flavor = "multi_thread")]
async fn change_user_on_a_tls_session_keeps_tls_to_the_server() {
    let mut s = Stratus::new("change-user-tls");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut owner = shop_conn(&s, &user, &pw).await;
    reader(&mut owner, "app", "first", "REQUIRE SSL").await;
    let script = s.dir.path().join("change_user.test");
    std::fs::write(
        &script,
        "SHOW STATUS LIKE 'Ssl_version';\n\
         change_user shop.app,first,shop;\n\
         SELECT CURRENT_USER();\n\
         SHOW STATUS LIKE 'Ssl_version';\n",
    )
    .unwrap();
    let ca = format!("--ssl-ca={}", s.data_dir().join("tls/ca.pem").display());
    let out = mariadb_test(&s, &user, &pw, &ca, &script);
    let tls_lines = out.lines().filter(|l| *l == "Ssl_version\tTLSv1.3").count();
    assert_eq!(tls_lines, 2, "TLS before and after the change: {out}");
    assert!(out.contains("app@%"), "{out}");

    // Without TLS the change is refused, as the server refuses the account's login, while a
    // change to an account that does not require TLS goes through.
    reader(&mut owner, "plain", "second", "").await;
    std::fs::write(
        &script,
        "--error ER_ACCESS_DENIED_ERROR\n\
         change_user shop.app,first,shop;\n\
         --echo refused\n\
         change_user shop.plain,second,shop;\n\
         SELECT CURRENT_USER();\n",
    )
    .unwrap();
    let out = mariadb_test(&s, &user, &pw, "--skip-ssl", &script);
    assert!(out.contains("refused"), "{out}");
    assert!(out.contains("plain@%"), "{out}");
    s.stop();
}

/// Runs `mariadb-test` (the MariaDB test suite's client) on `file` through the proxy in `mode`;
/// a run that does not end within a minute is killed and reported as a hang.
fn mariadb_test(s: &Stratus, user: &str, pw: &str, mode: &str, file: &std::path::Path) -> String {
    let (host, port) = s.listen.split_once(':').unwrap();
    let mut child = Command::new("mariadb-test")
        .args([
            mode,
            "-h",
            host,
            "-P",
            port,
            "-u",
            user,
            &format!("-p{pw}"),
            "-D",
            "shop",
        ])
        .stdin(std::fs::File::open(file).unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mariadb-test (Debian package mariadb-test; ./dev test installs it)");
    let begin = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if begin.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("mariadb-test {mode} hung through the proxy");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mariadb-test {mode}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_procedure_looping_over_a_cursor_answers_in_every_protocol() {
    let mut s = Stratus::new("callps");
    s.start();
    let (user, pw) = created(&s, "shop");
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keywords_call.test");
    for mode in ["--ps-protocol", "--cursor-protocol", "--sp-protocol"] {
        let out = mariadb_test(&s, &user, &pw, mode, &file);
        assert!(
            out.contains("SELECT @@lpad; -- Unknown system variable 'lpad'"),
            "{mode}: {out}"
        );
    }
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_never_gets_the_previous_clients_profile_or_role() {
    let mut s = Stratus::new("profiles");
    s.start();
    let (user, pw) = created(&s, "shop");
    for (n, statement) in ["SELECT 'first client'", "SELECT 'second client'"]
        .into_iter()
        .enumerate()
    {
        let mut conn = shop_conn(&s, &user, &pw).await;
        conn.query_drop("SET profiling = 1").await.unwrap();
        conn.query_drop(statement).await.unwrap();
        let profiles: Vec<(u32, f64, String)> = conn.query("SHOW PROFILES").await.unwrap();
        let queries: Vec<&str> = profiles.iter().map(|p| p.2.as_str()).collect();
        assert_eq!(
            queries,
            vec![statement],
            "client {n} sees only its own statements"
        );
        conn.disconnect().await.unwrap();
    }
    // A reset forgets the session's `profiling`, but the server keeps the history on the
    // connection: it is not given to the next client either.
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("SET profiling = 1").await.unwrap();
    conn.query_drop("SELECT 'reset client'").await.unwrap();
    conn.query_drop("SET profiling = 0").await.unwrap();
    assert!(conn.reset().await.unwrap(), "COM_RESET_CONNECTION");
    let profiles: Vec<(u32, f64, String)> = conn.query("SHOW PROFILES").await.unwrap();
    assert_eq!(profiles.len(), 1, "the server keeps it through the reset");
    conn.disconnect().await.unwrap();
    // The session is over once it holds no connection; the one it had was not kept.
    let within = std::time::Duration::from_secs(30);
    s.wait_for_metric(
        "stratus_proxy_backend_connections{db=\"shop\"}",
        0.0,
        within,
    );
    let pooled = s.metric("stratus_proxy_pooled_connections{db=\"shop\"}");
    assert_eq!(pooled.unwrap_or(0.0), 0.0);
    let mut next = shop_conn(&s, &user, &pw).await;
    let profiles: Vec<(u32, f64, String)> = next.query("SHOW PROFILES").await.unwrap();
    assert!(profiles.is_empty(), "the next client sees {profiles:?}");
    next.disconnect().await.unwrap();

    // A role set on a connection outlives a reset and a change of user: such a connection
    // is not given to the next client of the account either, whose session starts without it.
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("CREATE ROLE auditor").await.unwrap();
    conn.query_drop("SET ROLE auditor").await.unwrap();
    conn.disconnect().await.unwrap();
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("SET ROLE auditor").await.unwrap();
    assert!(conn.reset().await.unwrap(), "COM_RESET_CONNECTION");
    conn.disconnect().await.unwrap();
    s.wait_for_metric(
        "stratus_proxy_backend_connections{db=\"shop\"}",
        0.0,
        within,
    );
    let pooled = "stratus_proxy_pooled_connections{db=\"shop\"}";
    let mut next = shop_conn(&s, &user, &pw).await;
    let role: Option<Option<String>> = next.query_first("SELECT CURRENT_ROLE()").await.unwrap();
    assert_eq!(role, Some(None), "the next client has the last one's role");
    next.disconnect().await.unwrap();
    s.wait_for_metric(pooled, 1.0, within);
    // A batch that failed after its `SET ROLE` leaves the role on the connection too (this
    // one is the kept connection just left).
    let mut conn = shop_conn(&s, &user, &pw).await;
    let failed = conn
        .query_drop("SET ROLE auditor; SELECT * FROM no_such_table")
        .await;
    assert!(failed.is_err());
    conn.disconnect().await.unwrap();
    s.wait_for_metric(
        "stratus_proxy_backend_connections{db=\"shop\"}",
        0.0,
        within,
    );
    assert_eq!(
        s.metric(pooled).unwrap_or(0.0),
        0.0,
        "kept with a role on it"
    );
    // So may a procedure or a dynamic statement, unseen: their connection is asked. One
    // without a role is kept as any other.
    let mut next = shop_conn(&s, &user, &pw).await;
    next.query_drop("CREATE PROCEDURE take_role() SET ROLE auditor")
        .await
        .unwrap();
    next.query_drop("CREATE PROCEDURE nothing() BEGIN END")
        .await
        .unwrap();
    next.query_drop("CALL nothing()").await.unwrap();
    next.disconnect().await.unwrap();
    s.wait_for_metric(pooled, 1.0, within);
    for sql in ["CALL take_role()", "EXECUTE IMMEDIATE 'SET ROLE auditor'"] {
        let mut conn = shop_conn(&s, &user, &pw).await;
        conn.query_drop(sql).await.unwrap();
        conn.disconnect().await.unwrap();
    }
    s.wait_for_metric(
        "stratus_proxy_backend_connections{db=\"shop\"}",
        0.0,
        within,
    );
    assert_eq!(s.metric(pooled).unwrap_or(0.0), 0.0);
    let mut next = shop_conn(&s, &user, &pw).await;
    let role: Option<Option<String>> = next.query_first("SELECT CURRENT_ROLE()").await.unwrap();
    assert_eq!(role, Some(None), "the next client has a role set unseen");
    next.disconnect().await.unwrap();

    // A role the account gets at login (`DEFAULT ROLE`) is on its connection unseen too: such a
    // connection is not kept, or the account's next session would have the role after it was
    // revoked (MariaDB keeps a connection's role across the pool's change of user).
    s.json(&["user", "create", "shop", "clerk", "--password", "clerkpw"]);
    let mut owner = shop_conn(&s, &user, &pw).await;
    owner.query_drop("GRANT auditor TO clerk").await.unwrap();
    owner.disconnect().await.unwrap();
    let mut clerk = shop_conn(&s, "shop.clerk", "clerkpw").await;
    clerk.query_drop("SET DEFAULT ROLE auditor").await.unwrap();
    clerk.disconnect().await.unwrap();
    let mut clerk = shop_conn(&s, "shop.clerk", "clerkpw").await;
    let role: Option<Option<String>> = clerk.query_first("SELECT CURRENT_ROLE()").await.unwrap();
    assert_eq!(role, Some(Some("auditor".into())));
    clerk.disconnect().await.unwrap();
    s.wait_for_metric(
        "stratus_proxy_backend_connections{db=\"shop\"}",
        0.0,
        within,
    );
    let mut owner = shop_conn(&s, &user, &pw).await;
    owner.query_drop("REVOKE auditor FROM clerk").await.unwrap();
    owner.disconnect().await.unwrap();
    let mut clerk = shop_conn(&s, "shop.clerk", "clerkpw").await;
    let role: Option<Option<String>> = clerk.query_first("SELECT CURRENT_ROLE()").await.unwrap();
    assert_eq!(role, Some(None), "the role outlived its revoke");
    s.stop();
}

/// Every statement's rows (values as SQL literals), or its error code.
async fn answers(conn: &mut Conn, statements: &[&str]) -> Vec<Result<Vec<Vec<String>>, u16>> {
    let mut out = Vec::new();
    for sql in statements {
        let r: Result<Vec<mysql_async::Row>, _> = conn.query(*sql).await;
        out.push(match r {
            Ok(rows) => Ok(rows
                .into_iter()
                .map(|r| r.unwrap().iter().map(|v| v.as_sql(false)).collect())
                .collect()),
            Err(mysql_async::Error::Server(e)) => Err(e.code),
            Err(e) => panic!("{sql}: {e}"),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn diagnostics_after_a_user_variable_assignment_are_the_servers() {
    let mut s = Stratus::new("diag");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t VALUES (1), (2), (3), (4), (5)")
        .await
        .unwrap();
    let statements = [
        "SET @a = 1",
        "SELECT ROW_COUNT()",
        "SELECT SQL_CALC_FOUND_ROWS @b := id FROM t ORDER BY id LIMIT 1",
        "SELECT FOUND_ROWS()",
        "SELECT found_rows()",
        // An assignment that warns: its warnings are the client's to read, as often as it likes.
        "SET @c = 'abc' + 1",
        "SHOW WARNINGS",
        "SELECT @@warning_count",
        "SHOW COUNT(*) WARNINGS",
        "SELECT @a, @b, @c",
        "SELECT @d := 7, ROW_COUNT()",
        "SELECT ROW_COUNT()",
        "SELECT @d",
        // `SET @@x`, whose values the proxy asks for (the server's tracking does not report
        // them): by assigning them again, which leaves the diagnostics as they were.
        "SELECT SQL_CALC_FOUND_ROWS id FROM t ORDER BY id LIMIT 2",
        "SET @@sql_mode = 'ANSI_QUOTES', @@wait_timeout = 600",
        "SELECT FOUND_ROWS(), ROW_COUNT()",
        "SET @@max_heap_table_size = 1",
        "SHOW WARNINGS",
        "SELECT @@sql_mode, @@wait_timeout, @@max_heap_table_size",
    ];
    let proxied = answers(&mut conn, &statements).await;
    let mut server = s.direct("shop").await;
    let direct = answers(&mut server, &statements).await;
    for ((sql, p), d) in statements.iter().zip(&proxied).zip(&direct) {
        assert_eq!(p, d, "{sql}: through the proxy, then directly");
    }
    assert_eq!(
        direct[1],
        Ok(vec![vec!["'0'".to_owned()]]),
        "MariaDB's answer"
    );
    assert_eq!(
        direct[3],
        Ok(vec![vec!["'5'".to_owned()]]),
        "MariaDB's answer"
    );
    server.disconnect().await.unwrap();
    conn.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn user_variables_of_an_idle_client_survive_suspend_and_park() {
    let mut s = Stratus::with_policy("idlevars", "idle_to_suspend_ms = 300");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut conn = shop_conn(&s, &user, &pw).await;
    // The statement woke the database if it had gone to sleep already.
    conn.query_drop("SET @kept = 'yes', @n = 42").await.unwrap();
    // The client says nothing more; the database goes to sleep under it, then is parked.
    let begin = std::time::Instant::now();
    while s.json(&["db", "show", "shop"])["state"] != "suspended" {
        assert!(
            begin.elapsed() < std::time::Duration::from_secs(60),
            "never suspended"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(s.json(&["db", "park", "shop"])["state"], "parked");
    let row: Option<(String, u32)> = conn.query_first("SELECT @kept, @n").await.unwrap();
    assert_eq!(row, Some(("yes".into(), 42)));
    conn.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_user_variables_were_read_back_is_reported() {
    let mut s = Stratus::new("crashvars");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut conn = shop_conn(&s, &user, &pw).await;
    let kill = |s: &Stratus| {
        let pid = s.json(&["db", "show", "shop"])["pid"].as_u64().unwrap();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
    };
    // Read back (before the next statement), then the server dies: carried over.
    conn.query_drop("SET @a = 1").await.unwrap();
    conn.query_drop("DO 0").await.unwrap();
    kill(&s);
    let a: Option<u32> = conn.query_first("SELECT @a").await.unwrap();
    assert_eq!(a, Some(1));
    // The server dies while the proxy has not read them back yet: the client is told.
    conn.query_drop("SET @a = 2, @b = 3").await.unwrap();
    kill(&s);
    let err = conn.query_drop("SELECT @a, @b").await.unwrap_err();
    assert!(
        matches!(&err, mysql_async::Error::Server(e) if e.code == 1927 && e.message.contains("user variables")),
        "{err}"
    );
    let row: Option<(Option<u32>, Option<u32>)> = conn.query_first("SELECT @a, @b").await.unwrap();
    assert_eq!(row, Some((Some(1), None)), "the values last read back");
    conn.disconnect().await.unwrap();
    s.stop();
}

/// The server error code of a failed statement or login.
fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(e) => Some(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_changes_its_own_password_keeps_working_after_a_reconnect() {
    let mut s = Stratus::new("passwd");
    s.start();
    // The owner: `ALTER USER` needs the CREATE USER privilege, even for one's own account.
    let (user, first) = created(&s, "shop");
    let login = |pw: &str| Conn::new(s.sql_opts(&user, pw, Some("shop")));
    let mut conn = login(&first).await.unwrap();
    let mut server = s.direct("shop").await;
    let mut old = first.clone();
    for (change, new, honoured) in [
        ("SET PASSWORD = PASSWORD('pw1')", "pw1", true),
        (
            "SET PASSWORD FOR CURRENT_USER() = PASSWORD('pw2')",
            "pw2",
            true,
        ),
        ("ALTER USER 'admin'@'%' IDENTIFIED BY 'p''w3'", "p'w3", true),
        // MariaDB 10.11 answers this one OK and keeps the password; the session must too.
        (
            "ALTER USER CURRENT_USER() IDENTIFIED BY 'pw4'",
            "pw4",
            false,
        ),
    ] {
        conn.query_drop(change).await.unwrap();
        let changed: Option<bool> = server
            .exec_first(
                "SELECT JSON_VALUE(Priv, '$.authentication_string') = PASSWORD(?) \
                 FROM mysql.global_priv WHERE User = 'admin' AND Host = '%'",
                (new,),
            )
            .await
            .unwrap();
        let changed = changed.unwrap();
        if honoured {
            assert!(changed, "{change} changed the password on the server");
        }
        let (now, other) = if changed {
            (new.to_owned(), old.clone())
        } else {
            (old.clone(), new.to_owned())
        };
        // Its server's sessions are closed: the next statement logs in to the server again.
        assert_eq!(s.json(&["db", "suspend", "shop"])["state"], "suspended");
        let me: Option<String> = conn
            .query_first("SELECT CURRENT_USER()")
            .await
            .unwrap_or_else(|e| panic!("after {change}: {e}"));
        assert_eq!(me.as_deref(), Some("admin@%"));
        login(&now).await.unwrap().disconnect().await.unwrap();
        let refused = login(&other).await.unwrap_err();
        assert_eq!(code(&refused), Some(1045), "{change}: {refused}");
        old = now;
    }
    // A new password the statement does not say (its hash): the next login to the server
    // cannot be made, and the client is told why.
    let hash: Option<String> = conn.query_first("SELECT PASSWORD('pw5')").await.unwrap();
    conn.query_drop(format!(
        "ALTER USER 'admin'@'%' IDENTIFIED BY PASSWORD '{}'",
        hash.unwrap()
    ))
    .await
    .unwrap();
    assert_eq!(s.json(&["db", "suspend", "shop"])["state"], "suspended");
    let err = conn.query_drop("SELECT 1").await.unwrap_err();
    assert!(
        matches!(&err, mysql_async::Error::Server(e) if e.code == 1045 && e.message.contains("password was changed")),
        "{err}"
    );
    login("pw5").await.unwrap().disconnect().await.unwrap();
    server.disconnect().await.unwrap();
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn current_user_is_the_servers_account_without_the_database_prefix() {
    let mut s = Stratus::new("curuser");
    s.start();
    created(&s, "shop");
    s.json(&["user", "create", "shop", "app", "--password", "apppw"]);
    let mut conn = Conn::new(s.sql_opts("shop.app", "apppw", Some("shop")))
        .await
        .unwrap();
    let (current, user): (String, String) = conn
        .query_first("SELECT CURRENT_USER(), USER()")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current, "app@%", "the account, as SHOW GRANTS names it");
    assert_eq!(
        user, "app@localhost",
        "the server sees the proxy's local login"
    );
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap();
    assert!(grants[0].starts_with("GRANT"), "{grants:?}");
    assert!(grants[0].contains("TO `app`@`%`"), "{grants:?}");
    let mine: Vec<String> = conn.query("SHOW GRANTS FOR CURRENT_USER()").await.unwrap();
    assert_eq!(
        mine, grants,
        "CURRENT_USER() names the account SHOW GRANTS shows"
    );
    conn.disconnect().await.unwrap();
    s.stop();
}

/// A global status counter of the database's server, read on a direct connection.
async fn server_counter(s: &Stratus, name: &str) -> u64 {
    let mut server = s.direct("shop").await;
    let row: Option<(String, u64)> = server
        .query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .await
        .unwrap();
    server.disconnect().await.unwrap();
    row.unwrap().1
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_client_completes_table_and_column_names() {
    let mut s = Stratus::new("rehash");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40), total DECIMAL(10,2)); CREATE TABLE customers (name VARCHAR(40)); CREATE DATABASE other; CREATE TABLE other.t (a INT)")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    let before = server_counter(&s, "Com_show_fields").await;
    // Interactive, as a person runs it: the client reads every table's columns with
    // COM_FIELD_LIST when it connects and on `USE`. (In batch mode it does not; `script` gives
    // it a terminal.)
    let (host, port) = s.listen.split_once(':').unwrap();
    let client =
        format!("mariadb --auto-rehash --protocol=tcp -h{host} -P{port} -u{user} -p{pw} shop");
    let input = s.dir.path().join("typed.sql");
    std::fs::write(
        &input,
        "USE other;\nSELECT CONCAT('still ', 'here') AS m, COUNT(*) FROM t;\nquit\n",
    )
    .unwrap();
    let out = Command::new("script")
        .args(["-qec", &client, "/dev/null"])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("still here") && !text.contains("ERROR"),
        "the session answers after the field lists: {text}"
    );
    let listed = server_counter(&s, "Com_show_fields").await - before;
    assert_eq!(listed, 3, "two tables at connect, one at USE");
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_are_fetched_from_a_server_side_cursor() {
    let mut s = Stratus::new("fetch");
    s.start();
    let (user, pw) = created(&s, "shop");
    let file = s.dir.path().join("cursor.test");
    std::fs::write(
        &file,
        "CREATE TABLE c (id INT PRIMARY KEY, v VARCHAR(10));\n\
         INSERT INTO c VALUES (1, 'one'), (2, 'two'), (3, 'three');\n\
         SELECT id, v FROM c ORDER BY id;\n\
         SELECT v FROM c WHERE id > 1 ORDER BY id DESC;\n\
         UPDATE c SET v = 'deux' WHERE id = 2;\n\
         SELECT GROUP_CONCAT(v ORDER BY id) AS after_update FROM c;\n",
    )
    .unwrap();
    let before = server_counter(&s, "Com_stmt_fetch").await;
    // Every result set is read through a read-only cursor (COM_STMT_EXECUTE with
    // CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH), on one connection.
    let out = mariadb_test(&s, &user, &pw, "--cursor-protocol", &file);
    for row in ["1\tone", "3\tthree", "three\ntwo", "one,deux,three"] {
        assert!(out.contains(row), "{row:?} in {out}");
    }
    let fetched = server_counter(&s, "Com_stmt_fetch").await - before;
    assert!(fetched >= 3, "{fetched} COM_STMT_FETCH reached the server");
    s.stop();
}

/// Hostile to the password learning above: a session that changes *another* account's password
/// (or names its own user on another host) must keep logging in with its own.
#[tokio::test(flavor = "multi_thread")]
async fn changing_another_accounts_password_leaves_the_sessions_own_login_alone() {
    let mut s = Stratus::new("passwd-other");
    s.start();
    let (user, pw) = created(&s, "shop");
    s.json(&["user", "create", "shop", "app", "--password", "apppw"]);
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("ALTER USER 'app'@'%' IDENTIFIED BY 'taken1'")
        .await
        .unwrap();
    conn.query_drop("ALTER USER app IDENTIFIED BY 'taken2'")
        .await
        .unwrap();
    // Writing another account's password row directly is not the owner's to do (`mysql` is
    // read-only to it), and what the server refused is learnt by nobody.
    let err = conn
        .query_drop("SET PASSWORD FOR app = PASSWORD('taken4')")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(1044), "{err}");
    // The owner's name on a host that has no such account: refused by the server, learnt by
    // nobody.
    let err = conn
        .query_drop("ALTER USER 'admin'@'localhost' IDENTIFIED BY 'taken3'")
        .await
        .unwrap_err();
    assert!(code(&err).is_some(), "{err}");
    // The next statement logs in to the server again, with the owner's own password.
    assert_eq!(s.json(&["db", "suspend", "shop"])["state"], "suspended");
    let me: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert_eq!(me.as_deref(), Some("admin@%"));
    shop_conn(&s, &user, &pw).await.disconnect().await.unwrap();
    shop_conn(&s, "shop.app", "taken2")
        .await
        .disconnect()
        .await
        .unwrap();
    s.stop();
}

/// A client that narrows its own session tracking with `SET @@session_track_…` (a form the
/// server's tracking does not report) still has its later settings carried to a new
/// connection: the proxy keeps the backend tracking everything.
#[tokio::test(flavor = "multi_thread")]
async fn narrowing_tracking_unscoped_loses_nothing_at_a_release() {
    let mut s = Stratus::new("narrowed");
    s.configure("proxy", "release_idle_after_ms = 1000");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut c = shop_conn(&s, &user, &pw).await;
    c.query_drop("SET @@session_track_system_variables = 'autocommit'")
        .await
        .unwrap();
    c.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    let releases = "stratus_proxy_idle_releases_total{db=\"shop\"}";
    s.wait_for_metric(releases, 1.0, std::time::Duration::from_secs(30));
    let mode: Option<String> = c.query_first("SELECT @@sql_mode").await.unwrap();
    assert_eq!(mode.as_deref(), Some("ANSI_QUOTES"));
    s.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_client_gives_its_server_connection_back_and_finds_its_session_again() {
    let mut s = Stratus::new("release");
    s.configure("proxy", "release_idle_after_ms = 1000");
    s.start();
    let (user, pw) = created(&s, "shop");
    let backends = "stratus_proxy_backend_connections{db=\"shop\"}";
    let releases = "stratus_proxy_idle_releases_total{db=\"shop\"}";
    let within = std::time::Duration::from_secs(30);

    // Sessions that their connection holds something for keep it however long they idle.
    let mut profiled = shop_conn(&s, &user, &pw).await;
    profiled.query_drop("SET profiling = 1").await.unwrap();
    profiled.query_drop("SELECT 'profiled'").await.unwrap();
    let mut temporary = shop_conn(&s, &user, &pw).await;
    temporary
        .query_drop("CREATE TEMPORARY TABLE scratch (a INT)")
        .await
        .unwrap();
    temporary
        .query_drop("INSERT INTO scratch VALUES (7)")
        .await
        .unwrap();
    // Taken through a prepared statement (the binary protocol), as connectors do.
    let mut locked = shop_conn(&s, &user, &pw).await;
    let got: Option<u8> = locked
        .exec_first("SELECT GET_LOCK(?, 0)", ("held",))
        .await
        .unwrap();
    assert_eq!(got, Some(1));
    // Taken by name; releasing a lock it does not hold leaves it held.
    let mut named = shop_conn(&s, &user, &pw).await;
    named
        .query_drop("SELECT GET_LOCK('by name', 0), RELEASE_LOCK('not held')")
        .await
        .unwrap();

    let mut idle = shop_conn(&s, &user, &pw).await;
    idle.query_drop("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10))")
        .await
        .unwrap();
    idle.query_drop("INSERT INTO t (v) VALUES ('a'), ('b')")
        .await
        .unwrap();
    // `SET @@x`: a form the server's session tracking does not report.
    idle.query_drop("SET @@sql_mode = 'ANSI_QUOTES', @greeting = 'hello'")
        .await
        .unwrap();
    idle.query_drop("PREPARE text_stmt FROM 'SELECT v FROM t WHERE id = ?'")
        .await
        .unwrap();
    // No variable tracks the current role: the proxy keeps the statement. Neither a reset nor a
    // change of user undoes a role, so that connection is released but not kept.
    let mut roled = shop_conn(&s, &user, &pw).await;
    roled.query_drop("CREATE ROLE reader").await.unwrap();
    roled.query_drop("SET ROLE reader").await.unwrap();
    let stmt = idle.prep("SELECT v FROM t WHERE id = ?").await.unwrap();
    let mut open = shop_conn(&s, &user, &pw).await;
    open.query_drop("BEGIN").await.unwrap();
    open.query_drop("INSERT INTO t (v) VALUES ('c')")
        .await
        .unwrap();
    let thread_before: Option<u64> = idle.query_first("SELECT CONNECTION_ID()").await.unwrap();

    // Only the session that holds nothing lets its connection go.
    let begin = std::time::Instant::now();
    while s.metric(releases).unwrap_or(0.0) < 2.0 {
        assert!(begin.elapsed() < within, "never released");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.wait_for_metric(backends, 5.0, within);
    s.wait_for_metric("stratus_proxy_pooled_connections{db=\"shop\"}", 1.0, within);

    // Another client of the same account gets that connection, reset: nothing of the idle
    // session's is there.
    let mut other = shop_conn(&s, &user, &pw).await;
    let taken: Option<u64> = other.query_first("SELECT CONNECTION_ID()").await.unwrap();
    assert_eq!(
        taken, thread_before,
        "the idle session's connection, kept and reused"
    );
    let row: Option<(Option<String>, String, u64, Option<String>)> = other
        .query_first("SELECT @greeting, @@sql_mode, LAST_INSERT_ID(), CURRENT_ROLE()")
        .await
        .unwrap();
    let (greeting, mode, last_id, role) = row.unwrap();
    assert_eq!(
        (greeting, last_id, role),
        (None, 0, None),
        "nothing of the idle session leaks"
    );
    assert_ne!(mode, "ANSI_QUOTES");
    assert!(
        other
            .query_drop("EXECUTE text_stmt USING @greeting")
            .await
            .is_err()
    );

    // The idle client's next statements find its session on a new connection.
    let row: Option<(String, String, u64)> = idle
        .query_first("SELECT @@sql_mode, @greeting, LAST_INSERT_ID()")
        .await
        .unwrap();
    assert_eq!(row, Some(("ANSI_QUOTES".into(), "hello".into(), 1)));
    let role: Option<String> = roled.query_first("SELECT CURRENT_ROLE()").await.unwrap();
    assert_eq!(role.as_deref(), Some("reader"));
    let v: Option<String> = idle.exec_first(&stmt, (2,)).await.unwrap();
    assert_eq!(
        v.as_deref(),
        Some("b"),
        "the prepared statement works there"
    );
    idle.query_drop("SET @id = 1").await.unwrap();
    let v: Option<String> = idle
        .query_first("EXECUTE text_stmt USING @id")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("a"), "and the text one");

    // The others kept theirs.
    let profiles: Vec<(u32, f64, String)> = profiled.query("SHOW PROFILES").await.unwrap();
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    assert_eq!(profiles[0].2, "SELECT 'profiled'");
    let a: Option<u32> = temporary
        .query_first("SELECT a FROM scratch")
        .await
        .unwrap();
    assert_eq!(a, Some(7));
    let mine: Option<u8> = locked
        .query_first("SELECT IS_USED_LOCK('held') = CONNECTION_ID()")
        .await
        .unwrap();
    assert_eq!(mine, Some(1));
    let mine: Option<u8> = named
        .query_first("SELECT IS_USED_LOCK('by name') = CONNECTION_ID()")
        .await
        .unwrap();
    assert_eq!(mine, Some(1));
    open.query_drop("COMMIT").await.unwrap();
    let n: Option<u32> = other.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(3), "the open transaction committed where it began");

    for c in [profiled, temporary, locked, named, roled, idle, open, other] {
        c.disconnect().await.unwrap();
    }
    s.stop();
}

/// A replica that stops reading its stream is cut off after its session's `net_write_timeout`,
/// as the server cuts off one it cannot write to: it does not hold its session, and its
/// database awake, for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_stops_reading_is_cut_off_after_its_net_write_timeout() {
    use common::raw_client::RawClient;
    use stratus_wire::command::COM_BINLOG_DUMP;
    let mut s = Stratus::new("stalled-replica");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v LONGBLOB)")
        .await
        .unwrap();
    // More log than the sockets between the server and the client can hold (a few MiB each).
    for id in 0..6 {
        conn.query_drop(format!(
            "INSERT INTO t VALUES ({id}, REPEAT('x', 10 << 20))"
        ))
        .await
        .unwrap();
    }
    let logs: Vec<(String, u64)> = conn.query("SHOW BINARY LOGS").await.unwrap();
    let mut replica = RawClient::login(
        std::net::TcpStream::connect(&s.listen).unwrap(),
        &user,
        &pw,
        "shop",
    );
    replica.exec("SET SESSION net_write_timeout = 2");
    replica.exec("SET @master_binlog_checksum = @@global.binlog_checksum");
    let mut dump = vec![COM_BINLOG_DUMP, 4, 0, 0, 0, 0, 0];
    dump.extend_from_slice(&4242u32.to_le_bytes());
    dump.extend_from_slice(logs[0].0.as_bytes());
    replica.send(&dump);
    let connections = "stratus_proxy_connections{db=\"shop\"}";
    s.wait_for_metric(connections, 2.0, std::time::Duration::from_secs(10));
    // It reads nothing from here on; the bound is the test's, far past the 2 s.
    s.wait_for_metric(connections, 1.0, std::time::Duration::from_secs(60));
    assert_eq!(
        s.metric("stratus_proxy_statements_running{db=\"shop\"}"),
        Some(0.0),
        "nothing keeps the database awake"
    );
    drop(replica);
    conn.disconnect().await.unwrap();
    s.stop();
}

/// A tenant's own replica reads its database's binary log through the proxy, as change-data-
/// capture tools do (here `mariadb-binlog --read-from-remote-server`): the same events as
/// directly, and the session ends with the dump, as the server ends it. A replica that would
/// take a server id of Stratus's own replicas (the commit clock's) is refused, registration or
/// dump, and its session goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_replica_reads_its_binary_log_through_the_proxy() {
    use common::raw_client::{Answer, RawClient};
    use stratus_wire::command::{COM_BINLOG_DUMP, COM_REGISTER_SLAVE};
    let mut s = Stratus::new("replica");
    s.start();
    let (user, pw) = created(&s, "shop");
    let mut conn = shop_conn(&s, &user, &pw).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t VALUES (1, 'cdc-probe-4711')")
        .await
        .unwrap();
    let logs: Vec<(String, u64)> = conn.query("SHOW BINARY LOGS").await.unwrap();
    let (file, end) = logs.last().unwrap().clone();
    let binlog = |how: &[String]| {
        let out = Command::new("mariadb-binlog")
            .args(["--read-from-remote-server", "--verbose"])
            .arg(format!("--stop-position={end}"))
            .args(how)
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{how:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (host, port) = s.listen.split_once(':').unwrap();
    // (MariaDB 10.11's clients use TLS unless told not to)
    let proxied = binlog(&[
        "--protocol=tcp".into(),
        format!("--host={host}"),
        format!("--port={port}"),
        format!("--user={user}"),
        format!("--password={pw}"),
        "--skip-ssl".into(),
    ]);
    assert!(proxied.contains("'cdc-probe-4711'"), "{proxied}");
    let direct = binlog(&[
        format!("--socket={}", s.backend_socket("shop")),
        format!("--user={}", user.split_once('.').unwrap().1),
        format!("--password={pw}"),
    ]);
    assert!(
        proxied == direct,
        "the events differ:\n{proxied}\n---\n{direct}"
    );
    // Over TLS, which the proxy repeats to the server: the dump is relayed between two TLS
    // streams, with the same events.
    let tls = binlog(&[
        "--protocol=tcp".into(),
        format!("--host={host}"),
        format!("--port={port}"),
        format!("--user={user}"),
        format!("--password={pw}"),
        format!("--ssl-ca={}", s.data_dir().join("tls/ca.pem").display()),
    ]);
    assert!(tls == direct, "the events differ:\n{tls}\n---\n{direct}");

    // A replica that follows the log (a blocking dump) streams until its session is killed.
    let mut follower = Command::new("mariadb-binlog")
        .args(["--read-from-remote-server", "--stop-never"])
        .arg("--stop-never-slave-server-id=4242")
        .args([
            "--protocol=tcp",
            &format!("--host={host}"),
            &format!("--port={port}"),
        ])
        .args([
            format!("--user={user}"),
            format!("--password={pw}"),
            file.clone(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dumping = "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%' AND USER = 'admin'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let thread = loop {
        if let Some(id) = conn.query_first::<u64, _>(dumping).await.unwrap() {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dump never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    conn.query_drop(format!("KILL {thread}")).await.unwrap();
    let ended = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still streaming after its KILL"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(!ended.success(), "the killed stream reports its end");

    let mut raw = RawClient::login(
        std::net::TcpStream::connect(&s.listen).unwrap(),
        &user,
        &pw,
        "shop",
    );
    let clock_id = 0x7000_0002u32.to_le_bytes();
    let mut dump = vec![COM_BINLOG_DUMP, 4, 0, 0, 0, 0, 0];
    dump.extend_from_slice(&clock_id);
    dump.extend_from_slice(file.as_bytes());
    let mut register = vec![COM_REGISTER_SLAVE];
    register.extend_from_slice(&clock_id);
    register.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    for (what, packet) in [("dump", &dump), ("registration", &register)] {
        match raw.raw(packet) {
            Answer::Err {
                code: 1227,
                message,
            } => assert!(message.contains("server id"), "{message}"),
            other => panic!("a {what} under Stratus's server id: {other:?}"),
        }
    }
    assert_eq!(raw.value("SELECT v FROM t"), "cdc-probe-4711");

    // A dump that fails once begun (no such file) ends the connection, as the server ends it.
    let stream = std::net::TcpStream::connect(&s.listen).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut tail = stream.try_clone().unwrap();
    let mut failing = RawClient::login(stream, &user, &pw, "shop");
    let mut missing = vec![COM_BINLOG_DUMP, 4, 0, 0, 0, 0, 0];
    missing.extend_from_slice(&42u32.to_le_bytes());
    missing.extend_from_slice(b"no-such-bin.000001");
    match failing.raw(&missing) {
        Answer::Err { code: 1236, .. } => {}
        other => panic!("a dump of a file that does not exist: {other:?}"),
    }
    std::io::Read::read_to_end(&mut tail, &mut Vec::new()).expect("the connection closed");

    // An account without `REPLICATION SLAVE` is refused by the server, whose connection then
    // goes on reading commands: so does the proxy, which must not have become a blind pipe to
    // it (its own answers still apply: a `KILL` of a greeting id, which the server would not
    // know).
    s.json(&["user", "create", "shop", "app", "--password", "app-pw-1"]);
    let victim = shop_conn(&s, "shop.app", "app-pw-1").await;
    let mut app = RawClient::login(
        std::net::TcpStream::connect(&s.listen).unwrap(),
        "shop.app",
        "app-pw-1",
        "shop",
    );
    dump[7..11].copy_from_slice(&42u32.to_le_bytes());
    match app.raw(&dump) {
        Answer::Err {
            code: 1227,
            message,
        } => {
            assert!(message.contains("REPLICATION SLAVE"), "{message}")
        }
        other => panic!("a dump without the privilege: {other:?}"),
    }
    match app.exec(&format!("KILL {}", victim.id())) {
        Answer::Ok { .. } => {}
        other => panic!("the KILL after the refused dump: {other:?}"),
    }
    conn.disconnect().await.unwrap();
    s.stop();
}
