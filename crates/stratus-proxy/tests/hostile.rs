//! The proxy's front door against bad, slow, oversized and too many clients, and its
//! authentication (native, switched from caching_sha2, TLS with SNI routing), without any
//! database behind it: the directory here knows accounts but no running servers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use stratus_proxy::{Account, Directory, Endpoint, Proxy, ProxyConfig};
use stratus_wire::auth::{scramble_reply, stage1_of};
use stratus_wire::caps;
use stratus_wire::handshake::{Greeting, HandshakeResponse};
use stratus_wire::packet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

struct Accounts(HashMap<(String, String), Account>);

impl Directory for Accounts {
    async fn account(&self, service: &str, user: &str) -> Option<Account> {
        self.0.get(&(service.to_owned(), user.to_owned())).copied()
    }

    async fn backend(&self, _service: &str, wake: bool) -> Result<Option<Endpoint>, String> {
        if wake {
            Err("no databases in this test".into())
        } else {
            Ok(None)
        }
    }

    async fn unreachable(&self, _service: &str, _addr: &Endpoint) {}

    async fn accounts_changed(&self, _service: &str) {}

    fn failover(&self, _service: &str, _report: stratus_proxy::replay::Failover) {}
}

fn stage2(password: &str) -> [u8; 20] {
    use sha1::Digest;
    sha1::Sha1::digest(stage1_of(password.as_bytes()).0).into()
}

async fn start(cfg: ProxyConfig) -> SocketAddr {
    let mut accounts = HashMap::new();
    accounts.insert(
        ("shop".into(), "admin".into()),
        Account {
            stage2: stage2("secret"),
            require_tls: false,
        },
    );
    accounts.insert(
        ("vault".into(), "admin".into()),
        Account {
            stage2: stage2("secret"),
            require_tls: true,
        },
    );
    let proxy = Proxy::new(cfg, Accounts(accounts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxy.serve(listener));
    addr
}

fn config() -> ProxyConfig {
    ProxyConfig {
        threads: 0,
        ..ProxyConfig::default()
    }
}

/// Reads one packet's payload, or `None` when the proxy closed the connection.
async fn read_packet<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut header))
        .await
        .expect("proxy answers")
        .ok()?;
    let (len, seq) = packet::header(&header).unwrap();
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((seq, payload))
}

async fn write_packet<S: AsyncWrite + Unpin>(s: &mut S, seq: u8, payload: &[u8]) {
    let mut out = Vec::new();
    packet::write(&mut out, &mut { seq }, payload);
    s.write_all(&out).await.unwrap();
}

fn response(user: &str, password: &str, scramble: &[u8; 20], plugin: &str) -> Vec<u8> {
    HandshakeResponse {
        capabilities: caps::PROTOCOL_41
            | caps::SECURE_CONNECTION
            | caps::PLUGIN_AUTH
            | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | caps::SESSION_TRACK
            | caps::DEPRECATE_EOF,
        max_packet: 1 << 24,
        charset: 45,
        user: user.as_bytes().to_vec(),
        auth_response: scramble_reply(&stage1_of(password.as_bytes()), scramble).to_vec(),
        database: None,
        auth_plugin: Some(plugin.as_bytes().to_vec()),
        attributes: None,
    }
    .encode()
}

/// Connects and logs in; returns the stream and the proxy's answer to the login.
async fn login(addr: SocketAddr, user: &str, password: &str) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (_, greeting) = read_packet(&mut s).await.unwrap();
    let g = Greeting::decode(&greeting).unwrap();
    write_packet(
        &mut s,
        1,
        &response(user, password, &g.scramble, "mysql_native_password"),
    )
    .await;
    let (_, answer) = read_packet(&mut s).await.unwrap();
    (s, answer)
}

fn err_code(payload: &[u8]) -> Option<u16> {
    (payload.first() == Some(&0xff)).then(|| u16::from_le_bytes([payload[1], payload[2]]))
}

#[tokio::test]
async fn login_then_commands_without_a_running_database() {
    let addr = start(config()).await;
    let (mut s, answer) = login(addr, "shop.admin", "secret").await;
    assert_eq!(answer[0], 0x00, "logged in without waking anything");
    write_packet(&mut s, 0, &[0x0e]).await; // COM_PING, answered by the proxy
    assert_eq!(read_packet(&mut s).await.unwrap().1[0], 0x00);
    write_packet(&mut s, 0, &[0x99, 1, 2]).await;
    assert_eq!(err_code(&read_packet(&mut s).await.unwrap().1), Some(1047));
    write_packet(&mut s, 0, b"\x03SELECT 1").await;
    let (seq, e) = read_packet(&mut s).await.unwrap();
    assert_eq!((seq, err_code(&e)), (1, Some(1105)));
    assert!(String::from_utf8_lossy(&e).contains("database shop is unavailable"));
    write_packet(&mut s, 0, &[0x08]).await; // COM_SHUTDOWN is not for clients
    assert_eq!(err_code(&read_packet(&mut s).await.unwrap().1), Some(1227));
    write_packet(&mut s, 0, &[]).await; // an empty command packet
    assert!(err_code(&read_packet(&mut s).await.unwrap().1).is_some());
    write_packet(&mut s, 0, &[0x01]).await; // COM_QUIT
    assert!(read_packet(&mut s).await.is_none());
}

#[tokio::test]
async fn bad_credentials_get_the_same_denial() {
    let addr = start(config()).await;
    for user in ["shop.admin", "nosuch.admin", "shop.nobody", "admin"] {
        let password = if user == "shop.admin" {
            "wrong"
        } else {
            "secret"
        };
        let (mut s, answer) = login(addr, user, password).await;
        assert_eq!(err_code(&answer), Some(1045), "{user}");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains(&format!(
                "Access denied for user '{user}'@'127.0.0.1' (using password: YES)"
            )),
            "{text}"
        );
        assert!(
            read_packet(&mut s).await.is_none(),
            "closed after the denial"
        );
    }
}

#[tokio::test]
async fn caching_sha2_clients_are_switched_to_native() {
    let addr = start(config()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (_, greeting) = read_packet(&mut s).await.unwrap();
    let g = Greeting::decode(&greeting).unwrap();
    let mut r = HandshakeResponse::decode(&response(
        "shop.admin",
        "secret",
        &g.scramble,
        "caching_sha2_password",
    ))
    .unwrap();
    r.auth_response = vec![7; 32]; // a SHA-256 scramble the proxy cannot use
    write_packet(&mut s, 1, &r.encode()).await;
    let (seq, switch) = read_packet(&mut s).await.unwrap();
    assert_eq!(seq, 2);
    assert!(
        switch.starts_with(b"\xfemysql_native_password\x00"),
        "auth switch request"
    );
    let scramble: [u8; 20] = switch[23..43].try_into().unwrap();
    write_packet(&mut s, 3, &scramble_reply(&stage1_of(b"secret"), &scramble)).await;
    let (seq, ok) = read_packet(&mut s).await.unwrap();
    assert_eq!((seq, ok[0]), (4, 0x00));
}

#[tokio::test]
async fn malformed_slow_oversized_and_excess_clients() {
    let addr = start(ProxyConfig {
        handshake_timeout: Duration::from_millis(300),
        max_packet: 1 << 20,
        max_connections: 3,
        ..config()
    })
    .await;

    // A handshake response that is not one.
    let mut s = TcpStream::connect(addr).await.unwrap();
    read_packet(&mut s).await.unwrap();
    write_packet(&mut s, 1, &[1, 2, 3, 4, 5]).await;
    assert_eq!(err_code(&read_packet(&mut s).await.unwrap().1), Some(1043));
    assert!(read_packet(&mut s).await.is_none());

    // A client that never answers the greeting is cut off.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    read_packet(&mut slow).await.unwrap();
    let (_, e) = read_packet(&mut slow).await.unwrap();
    assert_eq!(err_code(&e), Some(1043));
    assert!(read_packet(&mut slow).await.is_none());

    // A packet over the limit is refused before it is buffered.
    let (mut s, _) = login(addr, "shop.admin", "secret").await;
    s.write_all(&[0xff, 0xff, 0x20, 0, 0x03]).await.unwrap(); // claims ~2 MiB
    assert_eq!(err_code(&read_packet(&mut s).await.unwrap().1), Some(1153));
    assert!(read_packet(&mut s).await.is_none());

    // Over the connection limit: the extra client gets the server's own error first thing.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        read_packet(&mut c).await.unwrap();
        held.push(c);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let (seq, e) = read_packet(&mut extra).await.unwrap();
    assert_eq!((seq, err_code(&e)), (0, Some(1040)));
    drop(held);

    // One bad client never harmed the others: a good login still works.
    let (_, ok) = login(addr, "shop.admin", "secret").await;
    assert_eq!(ok[0], 0x00);
}

#[tokio::test]
async fn tls_with_server_name_routing_and_required_tls() {
    let dir = tempfile::tempdir().unwrap();
    let tls = stratus_proxy::tls::load_or_create(dir.path(), None, None, Some("db.test")).unwrap();
    let addr = start(ProxyConfig {
        tls: Some(tls),
        ..config()
    })
    .await;

    // A database that requires TLS refuses a plain login with the server's own error.
    let (_, answer) = login(addr, "vault.admin", "secret").await;
    assert_eq!(err_code(&answer), Some(3159));

    // Over TLS, trusting the generated certificate, `shop.db.test` routes user `admin` to shop.
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(dir.path().join("cert.pem")).unwrap();
    for cert in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    for (server_name, user) in [("shop.db.test", "admin"), ("vault.db.test", "vault.admin")] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (_, greeting) = read_packet(&mut s).await.unwrap();
        let g = Greeting::decode(&greeting).unwrap();
        assert_ne!(g.capabilities & caps::SSL, 0, "TLS offered");
        let full = response(user, "secret", &g.scramble, "mysql_native_password");
        let mut ssl_request = full[..32].to_vec();
        ssl_request[..4].copy_from_slice(
            &((caps::SSL | caps::PROTOCOL_41 | caps::SECURE_CONNECTION) as u32).to_le_bytes(),
        );
        let caps_full = u32::from_le_bytes(full[..4].try_into().unwrap()) | caps::SSL as u32;
        write_packet(&mut s, 1, &ssl_request).await;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
        let mut tls = connector.connect(name, s).await.unwrap();
        let mut full = full;
        full[..4].copy_from_slice(&caps_full.to_le_bytes());
        write_packet(&mut tls, 2, &full).await;
        let (seq, ok) = read_packet(&mut tls).await.unwrap();
        assert_eq!(
            (seq, ok[0]),
            (3, 0x00),
            "{server_name}: {}",
            String::from_utf8_lossy(&ok)
        );
    }
}
