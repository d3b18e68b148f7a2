//! One client session: greeting, authentication at the proxy, then commands relayed to the
//! database's server, waking it when needed and recreating the session on every new backend
//! connection. Protocol: <https://mariadb.com/kb/en/connection/>,
//! <https://mariadb.com/kb/en/2-text-protocol/>, <https://mariadb.com/kb/en/3-binary-protocol-prepared-statements/>.

use crate::activity::ServiceActivity;
use crate::backend::{Backend, BackendError, Login};
use crate::error::SqlError;
use crate::login::login;
use crate::pool;
use crate::prepared::Statements;
use crate::relay::{
    Pending, RelayError, STREAM_CHUNK, forward_infile, idle_backend_closed, learn_ok,
};
use crate::session::{BACKEND_TRACKING, SessionState, UserVar, user_var_literal};
use crate::stream::{ClientIo, ClientStream, End, ReadError};
use crate::{Directory, Proxy};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use stratus_core::time::now_ms;
use stratus_wire::auth::{self, NATIVE_PLUGIN};
use stratus_wire::caps;
use stratus_wire::classify::{self, Kind, Statement};
use stratus_wire::command::*;
use stratus_wire::handshake::auth_switch_request;
use stratus_wire::packet::{self, HEADER_LEN};
use stratus_wire::response;
use stratus_wire::tracker::{Expect, Step, Tracker};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Decrements a counter when dropped, so every path out of a session releases its slots.
struct Slot<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session's place in its database's connection count, released when dropped.
struct ServiceSlot(Arc<ServiceActivity>);

impl ServiceSlot {
    fn take(activity: Arc<ServiceActivity>) -> (Self, u64) {
        let n = activity.connections.fetch_add(1, Ordering::Relaxed) + 1;
        (Self(activity), n)
    }
}

impl Drop for ServiceSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::ops::Deref for ServiceSlot {
    type Target = ServiceActivity;
    fn deref(&self) -> &ServiceActivity {
        &self.0
    }
}

pub async fn run<D: Directory>(proxy: Arc<Proxy<D>>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let total = proxy.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let _slot = Slot(&proxy.connections);
    let mut client = ClientIo {
        stream: ClientStream::Plain(stream),
        buf: BytesMut::with_capacity(8 * 1024),
    };
    if total > proxy.cfg.max_connections {
        let _ = client
            .send(
                0,
                &SqlError::too_many_connections("Stratus proxy limit reached").packet(),
            )
            .await;
        return;
    }
    let login = match tokio::time::timeout(
        proxy.cfg.handshake_timeout,
        login(&proxy, &mut client, peer),
    )
    .await
    {
        Ok(Ok(l)) => l,
        Ok(Err(_)) => return,
        Err(_) => {
            let _ = client
                .send(
                    0,
                    &SqlError::handshake("login not completed in time").packet(),
                )
                .await;
            return;
        }
    };
    let (activity, per_service) = ServiceSlot::take(proxy.activity.service(&login.service));
    if per_service > proxy.cfg.max_connections_per_service {
        let msg = format!(
            "database {} has {} connections, its limit",
            login.service, proxy.cfg.max_connections_per_service
        );
        let _ = client
            .send(
                login.next_seq,
                &SqlError::too_many_connections(&msg).packet(),
            )
            .await;
        return;
    }
    let mut session = Session {
        proxy: proxy.clone(),
        client,
        activity,
        service: login.service,
        login: login.backend_login,
        scramble: login.scramble,
        peer,
        backend: None,
        state: SessionState {
            schema: login.schema,
            ..SessionState::default()
        },
        stmts: Statements::default(),
        pinned_reported: false,
        in_trans_reported: false,
        user_vars_pending: false,
        hold_answer: false,
    };
    // Connect at once if the database runs (so a bad schema fails the login, as on a server);
    // a sleeping database is woken by the first statement, not by the connection.
    if let Ok(Some(addr)) = session.proxy.dir.backend(&session.service, false).await {
        match session.connect(addr).await {
            Ok(()) => {}
            Err(BackendError::Server(e)) => {
                let _ = session.client.send(login.next_seq, &e.packet()).await;
                return;
            }
            Err(e) => {
                tracing::debug!(db = %session.service, "backend not reachable at login: {e:?}")
            }
        }
    }
    let ok = response::ok(caps::STATUS_AUTOCOMMIT, 0, session.login.client_caps);
    if session.client.send(login.next_seq, &ok).await.is_err() {
        return;
    }
    let end = session.serve().await;
    session.release_pins();
    if matches!(end, End::Client) {
        session.release_backend().await;
    }
    tracing::debug!(db = %session.service, ?end, "session ended");
}

struct Session<D: Directory> {
    proxy: Arc<Proxy<D>>,
    client: ClientIo,
    activity: ServiceSlot,
    service: String,
    login: Login,
    /// The greeting's scramble, against which `COM_CHANGE_USER` answers are checked.
    peer: SocketAddr,
    scramble: [u8; 20],
    backend: Option<Backend>,
    state: SessionState,
    stmts: Statements,
    pinned_reported: bool,
    in_trans_reported: bool,
    /// User variables changed by a statement that left warnings: reading them back then would
    /// clear the warnings before the client asks for them, so it waits for the next statement.
    user_vars_pending: bool,
    /// Keep the next answer from the client until the proxy has acted on it (accounts changed
    /// in SQL must be in the catalog before the client can try them).
    hold_answer: bool,
}

/// How relaying one response went.
#[derive(Debug, Default)]
struct Relayed {
    /// The answer, when the session asked to hold it back (`hold_answer`).
    held: Option<Vec<u8>>,
    status: u16,
    warnings: u16,
    error: Option<u16>,
    state_changed: bool,
}

impl<D: Directory> Session<D> {
    fn client_caps(&self) -> u64 {
        self.login.client_caps
    }

    async fn serve(&mut self) -> End {
        loop {
            let lp = tokio::select! {
                biased;
                r = self.client.read(self.proxy.cfg.max_packet) => r,
                () = idle_backend_closed(self.backend.as_mut()) => {
                    // The server closed an idle connection (it was parked or crashed): the next
                    // statement gets a new one.
                    self.drop_backend();
                    continue;
                }
            };
            let lp = match lp {
                Ok(Some(lp)) => lp,
                Ok(None) | Err(ReadError::Io) => return End::Client,
                Err(ReadError::TooLarge(limit)) => {
                    let seq =
                        packet::header(&self.client.buf).map_or(0, |(_, s)| s.wrapping_add(1));
                    let _ = self
                        .client
                        .send(seq, &SqlError::packet_too_large(limit).packet())
                        .await;
                    return End::Protocol;
                }
            };
            let raw = self.client.buf.split_to(lp.consumed);
            let seq = lp.last_seq.wrapping_add(1);
            let result = self.command(raw, &lp, seq).await;
            self.report_state();
            match result {
                Ok(true) => {}
                Ok(false) => return End::Client,
                Err(end) => return end,
            }
        }
    }

    /// Handles one command; `Ok(false)` when the client quit.
    async fn command(
        &mut self,
        mut raw: BytesMut,
        lp: &packet::Logical,
        seq: u8,
    ) -> Result<bool, End> {
        let Some(&cmd) = raw.get(HEADER_LEN) else {
            self.client
                .send(seq, &SqlError::handshake("empty command packet").packet())
                .await?;
            return Ok(true);
        };
        match cmd {
            COM_QUIT => return Ok(false),
            COM_PING => {
                let ok = response::ok(self.status(), 0, self.client_caps());
                self.client.send(seq, &ok).await?;
            }
            COM_QUERY => self.query(&raw, lp, seq).await?,
            COM_STMT_PREPARE => self.prepare(&raw, lp, seq).await?,
            COM_STMT_EXECUTE
            | COM_STMT_SEND_LONG_DATA
            | COM_STMT_CLOSE
            | COM_STMT_RESET
            | COM_STMT_FETCH => self.statement_command(&mut raw, lp, seq, cmd).await?,
            COM_RESET_CONNECTION => {
                if self.backend.is_some() {
                    let r = self.forward(&raw, seq, Expect::One).await?;
                    if r.error.is_none() {
                        self.after_reset().await;
                    }
                } else {
                    self.state.reset();
                    self.stmts.clear();
                    self.client
                        .send(
                            seq,
                            &response::ok(caps::STATUS_AUTOCOMMIT, 0, self.client_caps()),
                        )
                        .await?;
                }
            }
            COM_CHANGE_USER => self.change_user(&raw, lp, seq).await?,
            COM_INIT_DB | COM_FIELD_LIST | COM_SET_OPTION | COM_STATISTICS | COM_PROCESS_INFO
            | COM_PROCESS_KILL | COM_DEBUG | COM_REFRESH => {
                let expect = expect(cmd).unwrap_or(Expect::One);
                self.forward(&raw, seq, expect).await?;
            }
            COM_SHUTDOWN => {
                self.client
                    .send(
                        seq,
                        &SqlError::not_allowed("shutting the server down").packet(),
                    )
                    .await?
            }
            other => {
                self.client
                    .send(seq, &SqlError::unknown_command(other).packet())
                    .await?
            }
        }
        Ok(true)
    }

    /// Current status flags as the proxy knows them.
    fn status(&self) -> u16 {
        let mut s = caps::STATUS_AUTOCOMMIT;
        if self.state.in_transaction {
            s |= caps::STATUS_IN_TRANS;
        }
        s
    }

    async fn query(&mut self, raw: &BytesMut, lp: &packet::Logical, seq: u8) -> Result<(), End> {
        let payload = packet::payload(raw, lp);
        let sql = &payload[1..];
        let multi = self.client_caps() & caps::MULTI_STATEMENTS != 0;
        let one;
        let many;
        let stmts: &[Statement] = if multi {
            many = classify::classify_all(sql);
            &many
        } else {
            one = classify::classify(sql);
            std::slice::from_ref(&one)
        };
        if self.user_vars_pending && !is_diagnostics(sql) {
            self.read_user_vars().await;
        }
        let retry_safe = stmts.iter().all(|s| s.read_only) && self.state.pinned().is_none();
        let accounts = stmts.iter().any(|s| s.kind == Kind::AccountManagement);
        if accounts && names_admin_account(sql) {
            let err = SqlError::not_allowed("the stratus_admin account");
            return self.client.send(seq, &err.packet()).await;
        }
        self.hold_answer = accounts;
        let relayed = self
            .forward_retrying(raw, seq, Expect::ResultSets { binary: false }, retry_safe)
            .await;
        self.hold_answer = false;
        let relayed = relayed?;
        if relayed.error.is_none() {
            self.after_statements(sql, stmts, relayed.warnings).await;
        }
        if let Some(answer) = relayed.held {
            self.client.write(&answer).await?;
        }
        Ok(())
    }

    /// Learns what successful statements did to the session.
    async fn after_statements(&mut self, sql: &[u8], stmts: &[Statement], warnings: u16) {
        let mut read_user_vars = false;
        let mut accounts = false;
        for s in stmts {
            accounts |= s.kind == Kind::AccountManagement;
            if let Some(p) = s.pin {
                self.state.pin(p);
            }
            if let Some(p) = s.unpin {
                self.state.unpin(p);
            }
            read_user_vars |= s.sets_user_vars;
            match (s.kind, &s.prepared_name) {
                (Kind::Prepare, Some(name)) => {
                    let text = String::from_utf8_lossy(sql.get(s.span.clone()).unwrap_or_default())
                        .into_owned();
                    self.state
                        .text_prepared
                        .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                    self.state.text_prepared.push((name.to_string(), text));
                }
                (Kind::Deallocate, Some(name)) => self
                    .state
                    .text_prepared
                    .retain(|(n, _)| !n.eq_ignore_ascii_case(name)),
                _ => {}
            }
        }
        if accounts {
            self.proxy.dir.accounts_changed(&self.service).await;
        }
        if read_user_vars {
            if warnings == 0 {
                self.read_user_vars().await;
            } else {
                self.user_vars_pending = true;
            }
        }
    }

    /// Snapshots every user variable with its type, to recreate them on a new backend.
    async fn read_user_vars(&mut self) {
        self.user_vars_pending = false;
        let Some(b) = self.backend.as_mut() else {
            return;
        };
        let sql = "SELECT VARIABLE_NAME, VARIABLE_VALUE, VARIABLE_TYPE, CHARACTER_SET_NAME FROM information_schema.USER_VARIABLES";
        match b.query(sql).await {
            Ok(rows) => {
                self.state.user_vars = rows
                    .into_iter()
                    .filter_map(|r| {
                        let mut it = r.into_iter();
                        let name = String::from_utf8(it.next()??).ok()?;
                        let value = it.next()?;
                        let ty = it
                            .next()
                            .flatten()
                            .map(|t| String::from_utf8_lossy(&t).into_owned())
                            .unwrap_or_default();
                        let cs = it
                            .next()
                            .flatten()
                            .map(|c| String::from_utf8_lossy(&c).into_owned());
                        Some(UserVar {
                            literal: user_var_literal(value.as_deref(), &ty, cs.as_deref()),
                            name,
                        })
                    })
                    .collect();
            }
            Err(e) => tracing::warn!(db = %self.service, "cannot read user variables back: {e:?}"),
        }
    }

    async fn prepare(&mut self, raw: &BytesMut, lp: &packet::Logical, seq: u8) -> Result<(), End> {
        let sql = packet::payload(raw, lp)[1..].to_vec();
        if let Err(e) = self.ensure_backend().await {
            return self.client.send(seq, &e.packet()).await;
        }
        self.send_to_backend(raw).await;
        match self.relay(Expect::Prepare, Some(sql)).await {
            Ok(_) => Ok(()),
            Err(e) => self.relay_failed(e, seq).await,
        }
    }

    /// Commands that name a prepared statement: its virtual id is mapped to the backend's,
    /// preparing it there first if this backend has not seen it.
    async fn statement_command(
        &mut self,
        raw: &mut BytesMut,
        lp: &packet::Logical,
        seq: u8,
        cmd: u8,
    ) -> Result<(), End> {
        let Some(id) = statement_id(&raw[HEADER_LEN..]) else {
            return self
                .client
                .send(
                    seq,
                    &SqlError::handshake("statement command without an id").packet(),
                )
                .await;
        };
        if self.stmts.get_mut(id).is_none() {
            if cmd == COM_STMT_CLOSE || cmd == COM_STMT_SEND_LONG_DATA {
                return Ok(()); // no answer is expected
            }
            return self
                .client
                .send(seq, &SqlError::unknown_statement(id).packet())
                .await;
        }
        if cmd == COM_STMT_CLOSE {
            let stmt = self.stmts.remove(id);
            if let (Some(b), Some(bid)) = (self.backend.as_mut(), stmt.and_then(|s| s.backend_id)) {
                let _ = b.send(COM_STMT_CLOSE, &bid.to_le_bytes()).await;
            }
            return Ok(());
        }
        if let Err(e) = self.ensure_backend().await {
            if cmd == COM_STMT_SEND_LONG_DATA {
                return Ok(());
            }
            return self.client.send(seq, &e.packet()).await;
        }
        let backend_id = match self.ensure_prepared(id).await {
            Ok(bid) => bid,
            Err(e) => {
                if cmd == COM_STMT_SEND_LONG_DATA {
                    return Ok(());
                }
                return self.client.send(seq, &e.packet()).await;
            }
        };
        let Some(stmt) = self.stmts.get_mut(id) else {
            return Ok(());
        };
        // Parameter types: remembered when bound, supplied to a backend that has not seen them.
        let mut rebound: Option<Vec<u8>> = None;
        if cmd == COM_STMT_EXECUTE {
            let payload = packet::payload(raw, lp);
            if let Some(layout) = execute_layout(&payload, stmt.params) {
                if let Some(types) = layout.types.clone() {
                    stmt.types = payload.get(types).map(<[u8]>::to_vec);
                    stmt.types_sent = true;
                } else if let (false, Some(types)) = (stmt.types_sent, &stmt.types) {
                    let mut p = bind_types(&payload, &layout, types);
                    set_statement_id(&mut p, backend_id);
                    stmt.types_sent = true;
                    let mut framed = Vec::with_capacity(p.len() + HEADER_LEN);
                    packet::write(&mut framed, &mut { lp.seq }, &p);
                    rebound = Some(framed);
                }
            }
        }
        if rebound.is_none() {
            // The id sits in the first physical packet, right after the command byte.
            if let Some(b) = raw.get_mut(HEADER_LEN + 1..HEADER_LEN + 5) {
                b.copy_from_slice(&backend_id.to_le_bytes());
            }
        }
        let bytes: &[u8] = rebound.as_deref().unwrap_or(raw);
        let Some(expect) = expect(cmd) else {
            self.send_to_backend(bytes).await;
            return Ok(());
        };
        match self.exchange(bytes, expect).await {
            Ok(r) => {
                if cmd == COM_STMT_EXECUTE && r.status & caps::STATUS_CURSOR_EXISTS != 0 {
                    self.state.cursors += 1;
                } else if (cmd == COM_STMT_FETCH && r.status & caps::STATUS_LAST_ROW_SENT != 0)
                    || cmd == COM_STMT_RESET
                {
                    self.state.cursors = self.state.cursors.saturating_sub(1);
                }
                Ok(())
            }
            Err(e) => self.relay_failed(e, seq).await,
        }
    }

    /// The statement's id on the current backend, preparing it there if needed.
    async fn ensure_prepared(&mut self, id: u32) -> Result<u32, SqlError> {
        let Some(stmt) = self.stmts.get_mut(id) else {
            return Err(SqlError::unknown_statement(id));
        };
        if let Some(bid) = stmt.backend_id {
            return Ok(bid);
        }
        let sql = stmt.sql.clone();
        let Some(b) = self.backend.as_mut() else {
            return Err(SqlError::unavailable(&self.service, "no backend"));
        };
        let lost = |_| {
            SqlError::unavailable(
                &self.service,
                "lost the backend while preparing a statement again",
            )
        };
        b.send(COM_STMT_PREPARE, &sql).await.map_err(lost)?;
        let mut t = Tracker::new(Expect::Prepare, b.caps & caps::DEPRECATE_EOF != 0);
        loop {
            let p = b.read_packet().await.map_err(lost)?;
            if t.feed(&p) == Step::Done {
                if p.first() == Some(&0xff) && t.prepare_ok.is_none() {
                    return Err(match BackendError::server(&p) {
                        BackendError::Server(e) => e,
                        _ => SqlError::unavailable(
                            &self.service,
                            "statement cannot be prepared again",
                        ),
                    });
                }
                break;
            }
        }
        let bid = t
            .prepare_ok
            .map(|p| p.statement_id)
            .ok_or_else(|| SqlError::unavailable(&self.service, "bad prepare answer"))?;
        if let Some(stmt) = self.stmts.get_mut(id) {
            stmt.backend_id = Some(bid);
        }
        Ok(bid)
    }

    async fn change_user(
        &mut self,
        raw: &BytesMut,
        lp: &packet::Logical,
        seq: u8,
    ) -> Result<(), End> {
        let payload = packet::payload(raw, lp).into_owned();
        let caps = self.client_caps();
        let parsed = (|| {
            let mut r = stratus_wire::lenenc::Reader::new(&payload[1..], "change user");
            let user = r.nul_bytes()?.to_vec();
            let auth = if caps & caps::SECURE_CONNECTION != 0 {
                let n = r.u8()?;
                r.bytes(usize::from(n))?.to_vec()
            } else {
                r.nul_bytes()?.to_vec()
            };
            let schema = if r.is_empty() {
                Vec::new()
            } else {
                r.nul_bytes()?.to_vec()
            };
            let charset = if r.remaining() >= 2 {
                Some(r.u16()? as u8)
            } else {
                None
            };
            let plugin = if caps & caps::PLUGIN_AUTH != 0 && !r.is_empty() {
                Some(r.nul_bytes().map(<[u8]>::to_vec).unwrap_or_default())
            } else {
                None
            };
            Ok::<_, stratus_wire::Malformed>((user, auth, schema, charset, plugin))
        })();
        let Ok((user, mut reply, schema, charset, plugin)) = parsed else {
            self.client
                .send(
                    seq,
                    &SqlError::handshake("malformed COM_CHANGE_USER").packet(),
                )
                .await?;
            return Err(End::Protocol);
        };
        let mut next = seq;
        if plugin
            .as_deref()
            .is_some_and(|p| p != NATIVE_PLUGIN.as_bytes())
        {
            self.client
                .send(next, &auth_switch_request(NATIVE_PLUGIN, &self.scramble))
                .await?;
            let lp = match self.client.read(64 * 1024).await {
                Ok(Some(lp)) => lp,
                _ => return Err(End::Client),
            };
            let raw = self.client.buf.split_to(lp.consumed);
            reply = packet::payload(&raw, &lp).into_owned();
            next = lp.last_seq.wrapping_add(1);
        }
        let host = self.peer.ip().to_string();
        let routed = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| u.split_once('.'))
            .map(|(s, u)| (s.to_owned(), u.to_owned()));
        let verified = match &routed {
            Some((svc, u)) => self
                .proxy
                .dir
                .account(svc, u)
                .await
                .filter(|a| !a.require_tls || self.client.stream.is_tls())
                .and_then(|a| auth::verify(&a.stage2, &self.scramble, &reply)),
            None => None,
        };
        let (Some((service, user_name)), Some(stage1)) = (routed, verified) else {
            self.client
                .send(
                    next,
                    &SqlError::access_denied(&user, &host, !reply.is_empty()).packet(),
                )
                .await?;
            return Err(End::Protocol);
        };
        // A new identity: a fresh session, on a backend connection made when first needed.
        self.drop_backend();
        self.release_pins();
        self.state = SessionState::default();
        self.state.schema =
            (!schema.is_empty()).then(|| String::from_utf8_lossy(&schema).into_owned());
        self.stmts.clear();
        if service != self.service {
            self.activity = ServiceSlot::take(self.proxy.activity.service(&service)).0;
            self.service = service;
        }
        self.login.user = user_name.into_bytes();
        self.login.stage1 = stage1;
        if let Some(cs) = charset {
            self.login.charset = cs;
        }
        self.client
            .send(
                next,
                &response::ok(caps::STATUS_AUTOCOMMIT, 0, self.client_caps()),
            )
            .await
    }

    /// After `COM_RESET_CONNECTION` succeeded on the backend: the server forgot the session,
    /// including the tracking Stratus asked for.
    async fn after_reset(&mut self) {
        self.release_pins();
        self.state.reset();
        self.stmts.clear();
        if let Some(b) = self.backend.as_mut() {
            if let Err(e) = b.query(BACKEND_TRACKING).await {
                tracing::warn!(db = %self.service, "tracking setup after reset failed: {e:?}");
                self.drop_backend();
            }
        }
    }

    /// Makes sure there is a backend connection, waking the database if it is not running, and
    /// recreates the session on it.
    async fn ensure_backend(&mut self) -> Result<(), SqlError> {
        if self.backend.is_some() {
            return Ok(());
        }
        let proxy = self.proxy.clone();
        let dir = &proxy.dir;
        let svc = self.service.clone();
        let begin = Instant::now();
        let deadline = self.proxy.cfg.wake_timeout;
        let attempt = async {
            let mut woke = false;
            let mut addr = dir
                .backend(&svc, false)
                .await
                .map_err(|m| SqlError::unavailable(&svc, &m))?;
            for _ in 0..3 {
                let a = match addr {
                    Some(a) => a,
                    None => {
                        woke = true;
                        dir.backend(&svc, true)
                            .await
                            .map_err(|m| SqlError::unavailable(&svc, &m))?
                            .ok_or_else(|| SqlError::unavailable(&svc, "it did not start"))?
                    }
                };
                match self.connect(a).await {
                    Ok(()) => return Ok(woke),
                    Err(BackendError::Server(e)) => return Err(e),
                    // Stopped between lookup and connect: wake it.
                    Err(_) => addr = None,
                }
            }
            Err(SqlError::unavailable(&svc, "cannot connect to its server"))
        };
        let woke = match tokio::time::timeout(deadline, attempt).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(SqlError::unavailable(
                    &svc,
                    &format!("it did not wake within {deadline:?}"),
                ));
            }
        };
        if woke {
            self.activity.wakes.fetch_add(1, Ordering::Relaxed);
            self.activity.wake_latency.observe(begin.elapsed());
            tracing::info!(db = %self.service, ms = begin.elapsed().as_millis() as u64, "woke database for a held client");
        }
        Ok(())
    }

    /// Opens a backend connection as the client's user and replays the session on it.
    async fn connect(&mut self, addr: SocketAddr) -> Result<(), BackendError> {
        let timeout = self.proxy.cfg.wake_timeout;
        let kept = pool::take(
            &self.pool_key(addr),
            self.proxy.cfg.pool_idle_timeout,
            &self.proxy.activity,
        );
        let mut b = match kept {
            Some(b) => b,
            None => {
                let b = match Backend::connect(
                    addr,
                    &self.login,
                    self.state.schema.as_deref(),
                    timeout,
                )
                .await
                {
                    // The schema is gone (dropped meanwhile): continue without one, as the
                    // server would.
                    Err(BackendError::Server(e))
                        if e.code == 1049 && self.state.schema.is_some() =>
                    {
                        self.state.schema = None;
                        Backend::connect(addr, &self.login, None, timeout).await?
                    }
                    other => other?,
                };
                let mut b = b;
                b.query(BACKEND_TRACKING).await?;
                b
            }
        };
        for (i, sql) in self.state.replay().into_iter().enumerate() {
            if let Err(e) = b.query(&sql).await {
                tracing::warn!(db = %self.service, "could not recreate session state ({sql}): {e:?}");
                if i == 0 && !self.state.variables.is_empty() {
                    // One bad variable must not cost the others.
                    for one in self.state.replay_variables_one_by_one() {
                        if let Err(e) = b.query(&one).await {
                            tracing::warn!(db = %self.service, "could not recreate ({one}): {e:?}");
                        }
                    }
                }
            }
        }
        self.stmts.backend_changed();
        self.backend = Some(b);
        Ok(())
    }

    fn pool_key(&self, addr: SocketAddr) -> pool::Key {
        pool::Key {
            service: self.service.clone(),
            addr,
            user: self.login.user.clone(),
            stage1: self.login.stage1.0,
            caps: self.login.client_caps,
            charset: self.login.charset,
            schema: self.state.schema.clone(),
        }
    }

    /// After the client left: keep a healthy backend connection for the next client.
    async fn release_backend(&mut self) {
        let Some(b) = self.backend.take() else { return };
        let key = self.pool_key(b.addr);
        let cfg = &self.proxy.cfg;
        pool::give_back(
            key,
            b,
            cfg.pool_idle_timeout,
            cfg.pool_max_idle,
            &self.proxy.activity,
        )
        .await;
    }

    fn drop_backend(&mut self) {
        self.backend = None;
        // Whatever was pinned to that connection is gone with it.
        self.state.in_transaction = false;
        self.state.temp_tables = 0;
        self.state.named_locks = 0;
        self.state.table_locks = false;
        self.state.handlers = 0;
        self.state.xa = false;
        self.state.cursors = 0;
    }

    async fn send_to_backend(&mut self, bytes: &[u8]) {
        if let Some(b) = self.backend.as_mut() {
            if b.stream.write_all(bytes).await.is_err() {
                // Noticed when reading the answer.
            }
        }
    }

    /// Forwards a command and relays its answer; a lost backend is reported to the client.
    async fn forward(&mut self, raw: &[u8], seq: u8, expect: Expect) -> Result<Relayed, End> {
        self.forward_retrying(raw, seq, expect, false).await
    }

    /// Like `forward`; a statement that is safe to repeat is sent once more on a new backend
    /// when the first one vanished before answering.
    async fn forward_retrying(
        &mut self,
        raw: &[u8],
        seq: u8,
        expect: Expect,
        retry_safe: bool,
    ) -> Result<Relayed, End> {
        for attempt in 0..2 {
            if let Err(e) = self.ensure_backend().await {
                self.client.send(seq, &e.packet()).await?;
                return Ok(Relayed {
                    error: Some(e.code),
                    ..Relayed::default()
                });
            }
            match self.exchange(raw, expect).await {
                Ok(r) => return Ok(r),
                Err(RelayError::LostBeforeAnswer) if attempt == 0 && retry_safe => {
                    tracing::info!(db = %self.service, "backend lost before answering; retrying the statement");
                    continue;
                }
                Err(e) => {
                    self.relay_failed(e, seq).await?;
                    return Ok(Relayed {
                        error: Some(1927),
                        ..Relayed::default()
                    });
                }
            }
        }
        Ok(Relayed::default())
    }

    /// Sends a statement's packets to the backend and relays the answer, keeping the
    /// database's activity figures.
    async fn exchange(&mut self, bytes: &[u8], expect: Expect) -> Result<Relayed, RelayError> {
        let begin = Instant::now();
        self.activity.running.fetch_add(1, Ordering::Relaxed);
        self.send_to_backend(bytes).await;
        let result = self.relay(expect, None).await;
        self.activity.running.fetch_sub(1, Ordering::Relaxed);
        self.activity.latency.observe(begin.elapsed());
        self.activity.statements.fetch_add(1, Ordering::Relaxed);
        self.activity
            .last_statement_ms
            .store(now_ms(), Ordering::Relaxed);
        if matches!(result, Ok(Relayed { error: Some(_), .. })) {
            self.activity.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn relay_failed(&mut self, e: RelayError, seq: u8) -> Result<(), End> {
        self.drop_backend();
        match e {
            RelayError::Client => Err(End::Client),
            RelayError::LostMidway => Err(End::Protocol),
            RelayError::LostBeforeAnswer => {
                let err = SqlError {
                    code: 1927,
                    state: "70100",
                    message: format!(
                        "Connection to database {} was lost during the statement; it was not repeated",
                        self.service
                    ),
                };
                self.activity.errors.fetch_add(1, Ordering::Relaxed);
                self.client.send(seq, &err.packet()).await
            }
        }
    }

    /// Relays the backend's answer to the client as it arrives, learning session state from
    /// OK packets and rewriting the few packets whose client view differs. Unchanged packets
    /// go out straight from the read buffer; one write per response, or per chunk of a large
    /// one.
    async fn relay(
        &mut self,
        expect: Expect,
        prepared_sql: Option<Vec<u8>>,
    ) -> Result<Relayed, RelayError> {
        let client_caps = self.login.client_caps;
        let Some(b) = self.backend.as_mut() else {
            return Err(RelayError::LostBeforeAnswer);
        };
        let backend_caps = b.caps;
        let mut t = Tracker::new(expect, backend_caps & caps::DEPRECATE_EOF != 0);
        let mut pos = 0usize;
        let mut out = Pending::default();
        let mut forwarded = false;
        let mut relayed = Relayed::default();
        let mut prepared_sql = prepared_sql;
        let rewrite_info = client_caps & caps::SESSION_TRACK == 0;
        let mut tracking_touched = false;
        loop {
            while let Some(total) = packet::complete(&b.buf[pos..]) {
                let start = pos;
                pos += total;
                let step = t.feed(&b.buf[start + HEADER_LEN..pos]);
                // Only the prepare-OK packet: the statement text is taken once, then gone.
                if let Some(ok) = t.prepare_ok
                    && let Some(sql) = prepared_sql.take()
                {
                    let vid = self.stmts.add(sql, ok);
                    b.buf[start + HEADER_LEN + 1..start + HEADER_LEN + 5]
                        .copy_from_slice(&vid.to_le_bytes());
                }
                if t.last_was_ok && (t.state_changed || rewrite_info) {
                    relayed.state_changed |= t.state_changed;
                    let (replacement, touched) = learn_ok(
                        &mut self.state,
                        client_caps,
                        backend_caps,
                        &b.buf[start..pos],
                    );
                    tracking_touched |= touched;
                    if let Some(new) = replacement {
                        out.replace(&b.buf, start, pos, &new);
                    }
                }
                match step {
                    Step::More => {}
                    Step::Done if self.hold_answer => {
                        relayed.held = Some(out.take(&mut b.buf, pos));
                        relayed.status = t.status;
                        relayed.warnings = t.warnings;
                        relayed.error = t.error;
                        self.state.in_transaction = t.status & caps::STATUS_IN_TRANS != 0;
                        return Ok(relayed);
                    }
                    Step::Done | Step::LocalInfile => {
                        out.send(&mut self.client.stream, &mut b.buf, pos, true)
                            .await?;
                        pos = 0;
                        if step == Step::Done {
                            relayed.status = t.status;
                            relayed.warnings = t.warnings;
                            relayed.error = t.error;
                            self.state.in_transaction = t.status & caps::STATUS_IN_TRANS != 0;
                            if tracking_touched {
                                // The client changed its session tracking; Stratus still needs all.
                                if let Err(e) = b.query(BACKEND_TRACKING).await {
                                    tracing::warn!("tracking setup failed: {e:?}");
                                }
                            }
                            return Ok(relayed);
                        }
                        // LOCAL INFILE: the client sends the file, ending with an empty packet.
                        forwarded = true;
                        forward_infile(&mut self.client, b, self.proxy.cfg.max_packet).await?;
                        t.infile_sent();
                    }
                }
            }
            if pos >= STREAM_CHUNK {
                out.send(&mut self.client.stream, &mut b.buf, pos, false)
                    .await?;
                pos = 0;
                forwarded = true;
            }
            if b.fill().await.is_err() {
                return Err(if forwarded || pos > 0 {
                    RelayError::LostMidway
                } else {
                    RelayError::LostBeforeAnswer
                });
            }
        }
    }

    /// Tells the activity counters when this session's transaction or pin state changed.
    fn report_state(&mut self) {
        let pinned = self.state.pinned().is_some();
        track(
            &self.activity.in_transaction,
            &mut self.in_trans_reported,
            self.state.in_transaction,
        );
        track(&self.activity.pinned, &mut self.pinned_reported, pinned);
    }

    /// Withdraws this session's transaction and pin from the counters (it ends or starts over).
    fn release_pins(&mut self) {
        track(
            &self.activity.in_transaction,
            &mut self.in_trans_reported,
            false,
        );
        track(&self.activity.pinned, &mut self.pinned_reported, false);
    }
}

/// Moves one session's contribution to a shared gauge when its own flag changes.
fn track(gauge: &std::sync::atomic::AtomicU64, reported: &mut bool, now: bool) {
    if now != *reported {
        if now {
            gauge.fetch_add(1, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
        *reported = now;
    }
}

/// Whether an account statement names Stratus's own account, which clients may not touch.
fn names_admin_account(sql: &[u8]) -> bool {
    sql.windows(ADMIN_ACCOUNT.len())
        .any(|w| w.eq_ignore_ascii_case(ADMIN_ACCOUNT))
}

const ADMIN_ACCOUNT: &[u8] = b"stratus_admin";

/// Statements that read the previous statement's diagnostics, before which the proxy must not
/// run statements of its own.
fn is_diagnostics(sql: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&sql[..sql.len().min(256)]).to_ascii_uppercase();
    let t = text.trim_start();
    t.starts_with("SHOW WARNINGS")
        || t.starts_with("SHOW ERRORS")
        || t.starts_with("SHOW COUNT")
        || t.starts_with("GET ")
        || text.contains("@@WARNING_COUNT")
        || text.contains("@@ERROR_COUNT")
}
