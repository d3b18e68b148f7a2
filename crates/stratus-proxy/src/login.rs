//! The connection phase at the proxy (<https://mariadb.com/kb/en/connection/>): greeting, the
//! optional TLS upgrade, routing by user name or TLS server name, and authentication against the
//! catalog's `mysql_native_password` hash, switching other plugins to it. Repeated failures
//! are counted and slowed down by [`crate::throttle`].

use crate::backend::Login;
use crate::error::SqlError;
use crate::stream::{ClientIo, ClientStream, End, Prefixed};
use crate::throttle::Key;
use crate::tls::service_from_server_name;
use crate::{Directory, Proxy};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use stratus_wire::auth::{self, NATIVE_PLUGIN, Stage1};
use stratus_wire::caps;
use stratus_wire::handshake::{Greeting, HandshakeResponse, auth_switch_request, is_ssl_request};
use stratus_wire::packet;

/// A successful login.
pub(crate) struct LoggedIn {
    pub(crate) service: String,
    pub(crate) backend_login: Login,
    pub(crate) schema: Option<String>,
    pub(crate) scramble: [u8; 20],
    /// The connection id the client was greeted with: its session's id for `KILL`.
    pub(crate) connection_id: u32,
    /// Sequence id for the proxy's answer to the login.
    pub(crate) next_seq: u8,
    /// The client asked for the compressed protocol, which starts after the login's OK.
    pub(crate) compressed: bool,
}

pub(crate) fn scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    getrandom::fill(&mut s).expect("the OS random number generator is unavailable");
    // Printable, NUL-free: the second part travels NUL-terminated.
    s.iter_mut().for_each(|b| *b = 0x21 + *b % 94);
    s
}

pub(crate) async fn login<D: Directory>(
    proxy: &Proxy<D>,
    client: &mut ClientIo,
    peer: SocketAddr,
) -> Result<LoggedIn, End> {
    let begin = Instant::now();
    let scramble = scramble();
    let tls = proxy.cfg.tls.as_ref();
    let connection_id = proxy.connection_id();
    let greeting = Greeting {
        server_version: proxy.cfg.server_version.as_bytes().to_vec(),
        connection_id,
        scramble,
        capabilities: caps::PROXY_OFFERS | if tls.is_some() { caps::SSL } else { 0 },
        charset: 45,
        status: caps::STATUS_AUTOCOMMIT,
        auth_plugin: NATIVE_PLUGIN.as_bytes().to_vec(),
    };
    client.send(0, &greeting.encode()).await?;
    let lp = match client.read(64 * 1024).await {
        Ok(Some(lp)) => lp,
        _ => return Err(End::Client),
    };
    let mut raw = client.buf.split_to(lp.consumed);
    let mut lp = lp;
    if is_ssl_request(&packet::payload(&raw, &lp)) {
        let Some(tls) = tls else {
            let err = SqlError::handshake("TLS is not enabled on this Stratus endpoint");
            client.send(lp.seq.wrapping_add(1), &err.packet()).await?;
            return Err(End::Protocol);
        };
        let ClientStream::Plain(tcp) = std::mem::replace(&mut client.stream, ClientStream::Gone)
        else {
            return Err(End::Protocol);
        };
        // Bytes after the SSL request are the start of the TLS handshake.
        let prefix = client.buf.split();
        let accepted = tls
            .acceptor
            .accept(Prefixed { prefix, inner: tcp })
            .await
            .map_err(|_| End::Client)?;
        client.stream = ClientStream::Tls(Box::new(accepted));
        lp = match client.read(64 * 1024).await {
            Ok(Some(lp)) => lp,
            _ => return Err(End::Client),
        };
        raw = client.buf.split_to(lp.consumed);
    }
    let payload = packet::payload(&raw, &lp);
    let mut seq = lp.last_seq.wrapping_add(1);
    let resp = match HandshakeResponse::decode(&payload) {
        Ok(r) => r,
        Err(e) => {
            client
                .send(seq, &SqlError::handshake(&e.to_string()).packet())
                .await?;
            return Err(End::Protocol);
        }
    };
    let host = peer.ip().to_string();
    let deny = |password: bool| SqlError::access_denied(&resp.user, &host, password);
    // Route `<service>.<user>`, or by the TLS server name `<service>.<domain>`.
    let sni_service = sni_service(client, tls);
    let routed = route(&resp.user, sni_service.as_deref(), None);
    let mut reply = resp.auth_response.clone();
    let plugin = resp
        .auth_plugin
        .as_deref()
        .unwrap_or(NATIVE_PLUGIN.as_bytes());
    if plugin != NATIVE_PLUGIN.as_bytes() {
        if resp.capabilities & caps::PLUGIN_AUTH == 0 {
            client
                .send(seq, &SqlError::unsupported_plugin(plugin).packet())
                .await?;
            return Err(End::Protocol);
        }
        // caching_sha2_password (MySQL 8 drivers) and others: switch to the native plugin.
        client
            .send(seq, &auth_switch_request(NATIVE_PLUGIN, &scramble))
            .await?;
        let lp = match client.read(64 * 1024).await {
            Ok(Some(lp)) => lp,
            _ => return Err(End::Client),
        };
        let raw = client.buf.split_to(lp.consumed);
        reply = packet::payload(&raw, &lp).into_owned();
        seq = lp.last_seq.wrapping_add(1);
    }
    let attempt = Attempt::new(proxy, peer, routed, &resp.user);
    let account = match routed {
        Some((service, user)) => proxy.dir.account(service, user).await,
        None => None,
    };
    let stage1: Option<Stage1> = account.and_then(|a| auth::verify(&a.stage2, &scramble, &reply));
    let (Some(stage1), Some(account), Some((service, user))) = (stage1, account, routed) else {
        attempt.failed(routed.map(|(s, _)| s).filter(|_| account.is_some()));
        throttle_wait(proxy, attempt.delay, begin).await;
        client.send(seq, &deny(!reply.is_empty()).packet()).await?;
        return Err(End::Protocol);
    };
    throttle_wait(proxy, attempt.delay, begin).await;
    attempt.succeeded();
    if account.require_tls && !client.stream.is_tls() {
        client
            .send(seq, &SqlError::secure_transport_required().packet())
            .await?;
        return Err(End::Protocol);
    }
    let schema = resp
        .database
        .as_deref()
        .filter(|d| !d.is_empty() && resp.capabilities & caps::CONNECT_WITH_DB != 0)
        .map(|d| String::from_utf8_lossy(d).into_owned());
    Ok(LoggedIn {
        service: service.to_owned(),
        backend_login: Login {
            user: user.as_bytes().to_vec(),
            stage1,
            charset: resp.charset,
            // Compression ends at the proxy: backend connections are local, and pooled alike.
            client_caps: resp.capabilities & caps::PROXY_OFFERS & !caps::COMPRESS,
            attributes: resp.attributes,
            tls: proxy
                .cfg
                .backend_tls
                .clone()
                .zip(client.stream.negotiated()),
        },
        schema,
        scramble,
        connection_id,
        next_seq: seq,
        compressed: resp.capabilities & caps::COMPRESS != 0,
    })
}

/// One try of a password, at a login or a change of user: failures count against the source and
/// the account it named, and a throttled try waits [`delay`](Self::delay) before its answer,
/// whatever the answer is, so the delay tells nothing.
pub(crate) struct Attempt<'a, D: Directory> {
    proxy: &'a Proxy<D>,
    keys: [Key; 2],
    pub(crate) delay: Duration,
}

impl<'a, D: Directory> Attempt<'a, D> {
    pub(crate) fn new(
        proxy: &'a Proxy<D>,
        peer: SocketAddr,
        routed: Option<(&str, &str)>,
        user: &[u8],
    ) -> Self {
        let keys = [
            Key::source(peer.ip()),
            match routed {
                Some((service, user)) => Key::account(&format!("{service}.{user}")),
                None => Key::account(&String::from_utf8_lossy(user)),
            },
        ];
        let delay = proxy.activity.logins.delay(&keys);
        Self { proxy, keys, delay }
    }

    /// A wrong password, user or database; `service`: the database, if the account exists.
    pub(crate) fn failed(&self, service: Option<&str>) {
        let proxy = self.proxy;
        if let Some(s) = service {
            proxy
                .activity
                .service(s)
                .login_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        for started in proxy.activity.logins.failed(&self.keys, service.is_some()) {
            // Names of no account would let anyone fill the event log; their source is reported.
            if matches!(started.key, Key::Source(_)) || service.is_some() {
                tracing::info!(
                    "failed logins: {} {} delayed from now on",
                    started.key.kind(),
                    started.key
                );
                proxy.dir.login_throttled(service, started);
            }
        }
    }

    pub(crate) fn succeeded(&self) {
        self.proxy.activity.logins.succeeded(&self.keys);
    }
}

/// Waits out a throttled login's delay, ending early enough that the answer still beats the
/// handshake timeout (which would otherwise answer in its place).
async fn throttle_wait<D: Directory>(proxy: &Proxy<D>, delay: Duration, begin: Instant) {
    const MARGIN: Duration = Duration::from_millis(500);
    let left = proxy
        .cfg
        .handshake_timeout
        .saturating_sub(begin.elapsed() + MARGIN);
    let delay = delay.min(left);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The database the TLS server name `<service>.<domain>` names, if the client sent one.
pub(crate) fn sni_service(client: &ClientIo, tls: Option<&crate::tls::Tls>) -> Option<String> {
    let domain = tls.and_then(|t| t.domain.as_deref())?;
    service_from_server_name(client.stream.server_name()?, domain).map(str::to_owned)
}

/// The database and account a user name names: `<service>.<user>`, or a plain user name of the
/// database the TLS server name (`sni`) names, or, for `COM_CHANGE_USER`, of the database the
/// session is on (`current`), as a server knows only its own accounts. A prefix other than the
/// TLS server name's database is refused.
pub(crate) fn route<'a>(
    user: &'a [u8],
    sni: Option<&'a str>,
    current: Option<&'a str>,
) -> Option<(&'a str, &'a str)> {
    let u = std::str::from_utf8(user).ok()?;
    match (u.split_once('.'), sni) {
        (Some((s, _)), Some(sni)) if s != sni => None,
        (Some(pair), _) => Some(pair),
        (None, Some(sni)) => Some((sni, u)),
        (None, None) => current.map(|c| (c, u)),
    }
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn user_names_route_by_prefix_then_tls_name_then_the_current_database() {
        assert_eq!(route(b"shop.app", None, None), Some(("shop", "app")));
        assert_eq!(route(b"app", Some("shop"), None), Some(("shop", "app")));
        assert_eq!(
            route(b"shop.app", Some("shop"), None),
            Some(("shop", "app"))
        );
        // The TLS name's database is the only one its connection reaches.
        assert_eq!(route(b"other.app", Some("shop"), Some("shop")), None);
        assert_eq!(route(b"app", None, None), None, "a login must name it");
        assert_eq!(route(b"app", None, Some("shop")), Some(("shop", "app")));
        assert_eq!(
            route(b"app", Some("shop"), Some("other")),
            Some(("shop", "app"))
        );
        assert_eq!(route(b"\xff", None, Some("shop")), None);
    }
}
