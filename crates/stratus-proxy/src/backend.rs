//! A connection to a database's own server, logged in as the client's user with the
//! `SHA1(password)` learnt when the client authenticated at the proxy.

use crate::backend_tls::{BackendTls, Negotiated};
use crate::error::SqlError;
use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use stratus_core::Endpoint;
use stratus_wire::auth::{NATIVE_PLUGIN, Stage1, scramble_reply};
use stratus_wire::caps;
use stratus_wire::handshake::{ChangeUser, Greeting, HandshakeResponse, decode_auth_switch};
use stratus_wire::lenenc::Reader;
use stratus_wire::packet;
use stratus_wire::response::ErrPacket;
use stratus_wire::tracker::{Expect, Step, Tracker};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf, Ready};
use tokio::net::TcpStream;

/// Capabilities the proxy always asks of a backend, whatever the client negotiated: session
/// tracking is how it learns the session's state.
const ALWAYS: u64 = caps::PROTOCOL_41
    | caps::SECURE_CONNECTION
    | caps::PLUGIN_AUTH
    | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | caps::SESSION_TRACK
    | caps::TRANSACTIONS;

#[derive(Debug)]
pub enum BackendError {
    /// Could not reach it, or it went away: the database may be stopped.
    Io(std::io::Error),
    /// It answered with an error (bad schema, access denied…): passed on to the client.
    Server(SqlError),
    Protocol(&'static str),
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        BackendError::Io(e)
    }
}

impl BackendError {
    pub fn server(payload: &[u8]) -> Self {
        match ErrPacket::decode(payload) {
            Ok(e) => BackendError::Server(SqlError {
                code: e.code,
                state: state_str(e.sql_state),
                message: String::from_utf8_lossy(e.message).into_owned(),
            }),
            Err(_) => BackendError::Protocol("malformed error packet"),
        }
    }
}

/// SQL states are interned: the few a server sends for login errors, else the generic one.
/// None stays none: an error sent in place of the greeting (`Too many connections`) has no
/// state, and reaches the client without one, as directly.
fn state_str(state: Option<&[u8]>) -> &'static str {
    match state {
        Some(b"28000") => "28000",
        Some(b"42000") => "42000",
        Some(b"08004") => "08004",
        Some(b"08S01") => "08S01",
        None => "",
        Some(_) => "HY000",
    }
}

/// What the client asked for at login, reused for every backend connection of its session.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: Vec<u8>,
    pub stage1: Stage1,
    pub charset: u8,
    pub client_caps: u64,
    pub attributes: Option<Vec<u8>>,
    /// The client's TLS with the proxy, which its backend connections repeat where the server
    /// offers TLS (`backend_tls`).
    pub tls: Option<(Arc<BackendTls>, Negotiated)>,
}

pub struct Backend {
    pub stream: BackendStream,
    pub buf: BytesMut,
    /// Capabilities in force on this connection.
    pub caps: u64,
    pub addr: Endpoint,
    pub connection_id: u32,
    /// The greeting's scramble, for `COM_CHANGE_USER`.
    scramble: [u8; 20],
    /// A session profiled on it: `SHOW PROFILES` keeps that history through a reset, so the
    /// connection is never given to another session.
    pub profiled: bool,
    /// A session set a role on it (`SET ROLE`), which neither a reset nor a change of user
    /// undoes on MariaDB 10.11: never given to another session either.
    pub role_set: bool,
    /// A session ran statements whose effects the proxy cannot see on it (`CALL`, `EXECUTE`,
    /// `EXECUTE IMMEDIATE`), which may have set a role: asked before it is kept.
    pub opaque: bool,
    /// A replica registered on it (`COM_REGISTER_SLAVE`), which stays until it closes: never
    /// given to another session.
    pub replica: bool,
    /// The server offers TLS (it was started with a certificate), so an account may be made to
    /// require it.
    pub offers_tls: bool,
}

/// The byte stream to a server: its private unix socket on this host, or TCP to a pod.
pub enum BackendStream {
    Unix(crate::backend_unix::BackendUnix),
    /// The unix socket, with TLS for a client that used it.
    UnixTls(Box<tokio_rustls::client::TlsStream<crate::backend_unix::BackendUnix>>),
    Tcp(TcpStream),
    /// A scripted server in the same process, for tests of whole sessions
    /// (`crate::testkit`). Absent from other builds, so the relay's matches compile as they
    /// would without it.
    #[cfg(test)]
    Memory(crate::testkit::net::MemoryStream),
}

impl BackendStream {
    async fn connect(addr: &Endpoint) -> io::Result<Self> {
        #[cfg(test)]
        if let Some(memory) = crate::testkit::net::dial(addr) {
            return memory.map(BackendStream::Memory);
        }
        Ok(match addr {
            Endpoint::Unix(path) => {
                BackendStream::Unix(crate::backend_unix::BackendUnix::connect(path).await?)
            }
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                BackendStream::Tcp(s)
            }
        })
    }

    pub async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        match self {
            // Readability is all the relay waits for, and all a server's socket is registered for.
            BackendStream::Unix(s) => s.readable().await,
            BackendStream::UnixTls(s) => s.get_ref().0.readable().await,
            BackendStream::Tcp(s) => s.ready(interest).await,
            #[cfg(test)]
            BackendStream::Memory(s) => s.ready(interest).await,
        }
    }

    pub fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            BackendStream::Unix(s) => s.try_read_io(f),
            BackendStream::UnixTls(s) => s.get_ref().0.try_read_io(f),
            BackendStream::Tcp(s) => s.try_io(interest, f),
            #[cfg(test)]
            BackendStream::Memory(_) => f(),
        }
    }

    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            BackendStream::Unix(s) => s.try_read(buf),
            // Bytes read here would be part of a record: looked at, not taken.
            BackendStream::UnixTls(s) => s.get_ref().0.try_peek(buf),
            BackendStream::Tcp(s) => s.try_read(buf),
            #[cfg(test)]
            BackendStream::Memory(s) => s.try_read(buf),
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::UnixTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            BackendStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(test)]
            BackendStream::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::UnixTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            BackendStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(test)]
            BackendStream::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Unix(s) => Pin::new(s).poll_flush(cx),
            BackendStream::UnixTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            BackendStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(test)]
            BackendStream::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::UnixTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            BackendStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(test)]
            BackendStream::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Rows of a result the proxy reads for itself: text values, `None` for NULL.
pub type Rows = Vec<Vec<Option<Vec<u8>>>>;

/// Room for a read of a backend's answers: a sysbench range of 100 rows is about 13 KiB.
const BACKEND_READ: usize = 16 * 1024;

impl Backend {
    pub async fn connect(
        addr: Endpoint,
        login: &Login,
        schema: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, BackendError> {
        let stream = tokio::time::timeout(timeout, BackendStream::connect(&addr))
            .await
            .map_err(|_| BackendError::Io(std::io::ErrorKind::TimedOut.into()))??;
        let mut b = Backend {
            stream,
            buf: BytesMut::with_capacity(BACKEND_READ),
            caps: 0,
            addr,
            connection_id: 0,
            scramble: [0; 20],
            profiled: false,
            role_set: false,
            opaque: false,
            replica: false,
            offers_tls: false,
        };
        let greeting = b.read_packet().await?;
        if greeting.first() == Some(&0xff) {
            return Err(BackendError::server(&greeting));
        }
        let g = Greeting::decode(&greeting)
            .map_err(|_| BackendError::Protocol("malformed greeting"))?;
        b.connection_id = g.connection_id;
        b.scramble = g.scramble;
        b.offers_tls = g.capabilities & caps::SSL != 0;
        let mut caps =
            (login.client_caps & caps::PROXY_OFFERS & g.capabilities) | (ALWAYS & g.capabilities);
        caps &= !(caps::SSL | caps::COMPRESS | caps::CONNECT_WITH_DB | caps::CLIENT_MYSQL);
        if schema.is_some() {
            caps |= caps::CONNECT_WITH_DB;
        }
        if login.attributes.is_none() {
            caps &= !caps::CONNECT_ATTRS;
        }
        // TLS as the client had it, where the server offers it (one started before it was
        // given a certificate does not, until its next start).
        let tls = login.tls.as_ref().filter(|_| {
            g.capabilities & caps::SSL != 0 && matches!(b.stream, BackendStream::Unix(_))
        });
        if tls.is_some() {
            caps |= caps::SSL;
        }
        b.caps = caps;
        let response = HandshakeResponse {
            capabilities: caps,
            max_packet: 1 << 30,
            charset: login.charset,
            user: login.user.clone(),
            auth_response: scramble_reply(&login.stage1, &g.scramble).to_vec(),
            database: schema.map(|s| s.as_bytes().to_vec()),
            auth_plugin: Some(NATIVE_PLUGIN.as_bytes().to_vec()),
            attributes: login.attributes.clone(),
        };
        let response = response.encode();
        let mut seq = 1;
        if let Some((config, negotiated)) = tls {
            // The SSL request is the response's fixed part (<https://mariadb.com/kb/en/connection/#sslrequest-packet>).
            let mut out = Vec::new();
            packet::write(&mut out, &mut seq, &response[..32]);
            b.write(&out).await?;
            let endpoint = b.addr.clone();
            b = match b.upgrade(config, *negotiated, timeout).await {
                Ok(b) => {
                    config.trusted(&endpoint.to_string());
                    b
                }
                // The server's certificate is not one the proxy trusts (a server still running
                // from before its certificate was made again): the leg is a local socket only
                // root reaches, so the session goes on without TLS there, as with a server
                // that offers none, rather than not at all.
                Err(BackendError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    if config.first_untrusted(&endpoint.to_string()) {
                        tracing::warn!(server = %endpoint, "the server's TLS certificate is not trusted ({e}); connections to it are plain until it starts again");
                    } else {
                        tracing::debug!(server = %endpoint, "untrusted TLS certificate; this connection is plain");
                    }
                    let plain = Login {
                        tls: None,
                        ..login.clone()
                    };
                    return Box::pin(Self::connect(endpoint, &plain, schema, timeout)).await;
                }
                Err(e) => return Err(e),
            };
        }
        let mut out = Vec::new();
        packet::write(&mut out, &mut seq, &response);
        b.write(&out).await?;
        b.finish_auth(login, seq.wrapping_add(1)).await?;
        Ok(b)
    }

    /// Runs the TLS handshake over the socket the SSL request went on.
    async fn upgrade(
        mut self,
        config: &BackendTls,
        negotiated: Negotiated,
        timeout: Duration,
    ) -> Result<Self, BackendError> {
        let BackendStream::Unix(socket) = self.stream else {
            return Err(BackendError::Protocol(
                "TLS over a socket that is not the server's own",
            ));
        };
        let connecting = config
            .connector(negotiated)
            .connect(BackendTls::server_name(), socket);
        let tls = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| BackendError::Io(std::io::ErrorKind::TimedOut.into()))??;
        self.stream = BackendStream::UnixTls(Box::new(tls));
        Ok(self)
    }

    /// Logs in again on this connection as `login` (`COM_CHANGE_USER`,
    /// <https://mariadb.com/kb/en/com_change_user/>): the server checks the account afresh, so
    /// a kept connection never serves an account that was locked, dropped, given a new
    /// password or had privileges revoked since it was made. The session is reset as by
    /// `COM_RESET_CONNECTION`.
    pub async fn change_user(
        &mut self,
        login: &Login,
        schema: Option<&str>,
    ) -> Result<(), BackendError> {
        let body = ChangeUser {
            user: login.user.clone(),
            auth_response: scramble_reply(&login.stage1, &self.scramble).to_vec(),
            schema: schema.unwrap_or_default().as_bytes().to_vec(),
            charset: Some(u16::from(login.charset)),
            auth_plugin: Some(NATIVE_PLUGIN.as_bytes().to_vec()),
            attributes: login.attributes.clone(),
        }
        .encode(self.caps | caps::PLUGIN_AUTH);
        let mut out = Vec::with_capacity(body.len() + 4);
        packet::write(&mut out, &mut 0, &body);
        self.write(&out).await?;
        self.finish_auth(login, 2).await
    }

    /// Reads the server's answers to a login until OK or ERR, answering a request to switch to
    /// a fresh scramble; `seq` is the sequence number of such an answer.
    async fn finish_auth(&mut self, login: &Login, mut seq: u8) -> Result<(), BackendError> {
        loop {
            let reply = self.read_packet().await?;
            match reply.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => return Err(BackendError::server(&reply)),
                Some(0xfe) => {
                    // The server wants the native plugin with a fresh scramble.
                    let (plugin, data) = decode_auth_switch(&reply)
                        .map_err(|_| BackendError::Protocol("bad auth switch"))?;
                    if plugin != NATIVE_PLUGIN.as_bytes() {
                        return Err(BackendError::Protocol(
                            "backend asked for an unsupported auth plugin",
                        ));
                    }
                    let mut out = Vec::new();
                    packet::write(&mut out, &mut seq, &scramble_reply(&login.stage1, &data));
                    seq = seq.wrapping_add(1);
                    self.write(&out).await?;
                }
                _ => return Err(BackendError::Protocol("unexpected packet during login")),
            }
        }
    }

    /// Writes `bytes` whole and pushes them out: TLS keeps records it could not write yet until
    /// flushed, and the server would wait for them (a plain socket's flush does nothing).
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads more bytes; an end of stream is an error (the server went away).
    pub async fn fill(&mut self) -> Result<(), BackendError> {
        crate::stream::make_room(&mut self.buf, BACKEND_READ);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(BackendError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(())
    }

    /// One whole logical packet's payload, removed from the buffer.
    pub async fn read_packet(&mut self) -> Result<Vec<u8>, BackendError> {
        loop {
            if let Ok(Some(lp)) = packet::logical(&self.buf, usize::MAX) {
                let payload = packet::payload(&self.buf, &lp).into_owned();
                let _ = self.buf.split_to(lp.consumed);
                return Ok(payload);
            }
            self.fill().await?;
        }
    }

    /// Sends a command of the proxy's own (sequence 0).
    pub async fn send(&mut self, command: u8, body: &[u8]) -> Result<(), BackendError> {
        let mut payload = Vec::with_capacity(1 + body.len());
        payload.push(command);
        payload.extend_from_slice(body);
        let mut out = Vec::with_capacity(payload.len() + 8);
        packet::write(&mut out, &mut 0, &payload);
        self.write(&out).await?;
        Ok(())
    }

    /// Runs a statement of the proxy's own that answers with one OK (a `SET`): that OK's
    /// payload, for the session state changes it carries, or the server's error.
    pub async fn exec_ok(&mut self, sql: &str) -> Result<Vec<u8>, BackendError> {
        self.send(stratus_wire::command::COM_QUERY, sql.as_bytes())
            .await?;
        let p = self.read_packet().await?;
        match p.first() {
            Some(0x00) => Ok(p),
            Some(0xff) => Err(BackendError::server(&p)),
            _ => Err(BackendError::Protocol(
                "a statement of the proxy's own answered with rows",
            )),
        }
    }

    /// Runs a statement of the proxy's own and reads its whole response: rows of its first
    /// result set (if any), or the server's error.
    pub async fn query(&mut self, sql: &str) -> Result<Rows, BackendError> {
        self.send(stratus_wire::command::COM_QUERY, sql.as_bytes())
            .await?;
        let mut tracker = Tracker::new(
            Expect::ResultSets { binary: false },
            self.caps & caps::DEPRECATE_EOF != 0,
        );
        let mut rows = Vec::new();
        let mut columns: Option<u64> = None;
        let mut defs_left = 0u64;
        let mut error = None;
        loop {
            let p = self.read_packet().await?;
            let step = tracker.feed(&p);
            if p.first() == Some(&0xff) && tracker.is_done() && error.is_none() {
                error = Some(BackendError::server(&p));
            } else if tracker.result_sets == 1 && !tracker.is_done() {
                match columns {
                    None => {
                        let n = Reader::new(&p, "column count").lenenc().unwrap_or(0);
                        columns = Some(n);
                        defs_left = n;
                    }
                    Some(_) if defs_left > 0 => defs_left -= 1,
                    Some(n) if !stratus_wire::response::is_eof(&p) => rows.push(text_row(&p, n)),
                    Some(_) => {}
                }
            }
            if step == Step::Done {
                return match error {
                    Some(e) => Err(e),
                    None => Ok(rows),
                };
            }
            if step == Step::LocalInfile {
                return Err(BackendError::Protocol("LOCAL INFILE in a proxy statement"));
            }
        }
    }
}

fn text_row(payload: &[u8], columns: u64) -> Vec<Option<Vec<u8>>> {
    let mut r = Reader::new(payload, "row");
    (0..columns)
        .map(|_| {
            if payload.get(r.pos()) == Some(&0xfb) {
                let _ = r.u8();
                None
            } else {
                r.lenenc_bytes().ok().map(<[u8]>::to_vec)
            }
        })
        .collect()
}
