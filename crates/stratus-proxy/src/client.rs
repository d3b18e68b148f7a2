//! One client session: greeting, authentication at the proxy, then commands relayed to the
//! database's server, waking it when needed and recreating the session on every new backend
//! connection. Protocol: <https://mariadb.com/kb/en/connection/>,
//! <https://mariadb.com/kb/en/2-text-protocol/>, <https://mariadb.com/kb/en/3-binary-protocol-prepared-statements/>.

use crate::activity::ServiceActivity;
use crate::backend::{Backend, BackendError, Login};
use crate::error::{ER_LOCK_DEADLOCK, SqlError};
use crate::kill;
use crate::login::login;
use crate::pool;
use crate::prepared::Statements;
use crate::recovery::{Recovery, Ticket};
use crate::relay::{
    Pending, RelayError, STREAM_CHUNK, forward_infile, idle_backend_closed, learn_ok,
};
use crate::replay::{self, Checksum, Entry, Failover, Marker, OnLoss, Outcome, TxLog};
use crate::session::{BACKEND_TRACKING, SessionState};
use crate::stream::{ClientIo, ClientStream, End, ReadError};
use crate::{Directory, Proxy};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use stratus_core::Endpoint;
use stratus_core::time::now_ms;
use stratus_wire::auth::{self, NATIVE_PLUGIN};
use stratus_wire::caps;
use stratus_wire::classify::{self, Kind, Statement};
use stratus_wire::command::*;
use stratus_wire::handshake::{ChangeUser, auth_switch_request};
use stratus_wire::packet::{self, HEADER_LEN};
use stratus_wire::response;
use stratus_wire::tracker::{Expect, Step, Tracker};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

mod credentials;
mod user_vars;

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
    let link = Arc::new(crate::SessionLink {
        service: login.service.clone(),
        user: login.backend_login.user.clone(),
        backend_thread: std::sync::atomic::AtomicU32::new(0),
        killed: std::sync::atomic::AtomicBool::new(false),
        wake: tokio::sync::Notify::new(),
    });
    let id = login.connection_id;
    proxy.sessions_lock().insert(id, link.clone());
    let _registered = Registered(&proxy, id);
    let mut session = Session {
        recovery: proxy.recoveries.of(&login.service),
        ticket: None,
        doomed: None,
        unattended: false,
        last_sent: Instant::now(),
        id,
        proxy: proxy.clone(),
        link,
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
        unread_reported: false,
        in_trans_reported: false,
        password_unknown: false,
        hold_answer: false,
        txlog: TxLog::default(),
        autocommit: true,
        hashing: false,
        marker: Marker::default(),
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
    if matches!(end, End::Client | End::Idle | End::Shutdown) {
        session.release_backend().await;
    }
    tracing::debug!(db = %session.service, ?end, "session ended");
}

/// Removes a session from the proxy's registry when it ends, however it ends.
struct Registered<'a, D: Directory>(&'a Proxy<D>, u32);

impl<D: Directory> Drop for Registered<'_, D> {
    fn drop(&mut self) {
        self.0.sessions_lock().remove(&self.1);
    }
}

struct Session<D: Directory> {
    proxy: Arc<Proxy<D>>,
    /// What other sessions see of this one (its greeting id is its key).
    link: Arc<crate::SessionLink>,
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
    unread_reported: bool,
    in_trans_reported: bool,
    /// The client changed its own password to one the proxy could not learn (`credentials`).
    password_unknown: bool,
    /// Keep the next answer from the client until the proxy has acted on it (accounts changed
    /// in SQL must be in the catalog before the client can try them).
    hold_answer: bool,
    /// The open transaction, kept to be replayed after a failover.
    txlog: TxLog,
    /// Autocommit is on, as the last answer's status said.
    autocommit: bool,
    /// Checksum the next answer: the session is in a transaction, or may be starting one.
    hashing: bool,
    /// This session's row in the commit marker table.
    marker: Marker,
    /// Its greeting id, its name in its database's recovery.
    id: u32,
    /// Its database's recovery: the order in which sessions carry on after a lost server.
    recovery: Arc<Recovery>,
    /// Its place in the current recovery, from noticing its backend lost until its cut-off
    /// statement is sent again (or it gives up).
    ticket: Option<Ticket>,
    /// Its transaction was lost while the session sat idle and could not be carried over: what
    /// the client's next command hears, with the failover's start and attempts.
    doomed: Option<(ReplayError, (Instant, u32))>,
    /// Carrying over a transaction without the client asking: a database asleep on purpose is
    /// not woken for that.
    unattended: bool,
    /// When the last command was sent to a backend: a cut-off statement's place in the order of
    /// a recovery.
    last_sent: Instant,
}

/// What the transaction log needs to know of a command.
struct Recording {
    /// It may change data (its transaction's `COMMIT` then needs a marker).
    writes: bool,
    /// One statement (a multi-statement query cannot be told apart when replayed).
    single: bool,
    kind: Option<Kind>,
}

/// A command on its way to the backend, in the form the failover loop needs to send it again:
/// a statement command's id is mapped afresh for every backend connection.
enum Outgoing<'a> {
    Raw(&'a [u8]),
    Prepare {
        raw: &'a [u8],
        sql: &'a [u8],
    },
    Statement {
        raw: &'a mut BytesMut,
        lp: &'a packet::Logical,
        id: u32,
        cmd: u8,
    },
}

/// Where the failover loop goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Send,
    /// Replay the transaction, then send.
    Replay,
    /// Find out whether the interrupted `COMMIT` committed.
    Resolve,
}

/// Why a transaction could not be carried over to a new backend.
#[derive(Debug)]
enum ReplayError {
    /// The new backend went away too: try again, within the limits.
    Lost,
    /// A statement's answer differed from the one the client saw (its index).
    Mismatch(usize),
    NotReplayable(&'static str),
    /// No backend to replay on.
    Unavailable(SqlError),
}

/// An answer read from the backend and not passed on.
struct Drained {
    error: Option<u16>,
    checksum: u64,
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
    /// Checksum of the answer, when the session was hashing.
    checksum: Option<u64>,
    /// The client sent a local file during the statement.
    infile: bool,
}

impl<D: Directory> Session<D> {
    fn client_caps(&self) -> u64 {
        self.login.client_caps
    }

    /// How long the client may send nothing before it is disconnected: its session's
    /// `interactive_timeout` if it logged in as interactive, else its `wait_timeout`
    /// (<https://mariadb.com/kb/en/server-system-variables/#wait_timeout>), as the server
    /// would apply them. Held connections do not count as the client's activity, so a database
    /// that sleeps does not shorten it.
    fn idle_timeout(&self) -> Duration {
        let name = if self.client_caps() & caps::INTERACTIVE != 0 {
            "interactive_timeout"
        } else {
            "wait_timeout"
        };
        let secs = self
            .state
            .variables
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
        // The server's own range: 1 s to a year.
        Duration::from_secs(secs.clamp(1, 31_536_000))
    }

    async fn serve(&mut self) -> End {
        let mut idle_since = tokio::time::Instant::now();
        // Armed once and again only after it fires, like the idle timer below: a fresh wait
        // per statement would lock the notifier's waiter list every time.
        let link = self.link.clone();
        let woken = link.wake.notified();
        tokio::pin!(woken);
        // One timer for the session, re-armed only when it fires early or the timeout shrinks:
        // arming one per statement would cost every statement a timer-wheel insert.
        let idle = tokio::time::sleep_until(idle_since + self.idle_timeout());
        tokio::pin!(idle);
        loop {
            // Shutting down: a session holding no transaction is closed as the server closes
            // its connections; one in a transaction may still finish it.
            if self.link.killed.load(Ordering::Relaxed) {
                let _ = self
                    .client
                    .send(0, &SqlError::connection_killed().packet())
                    .await;
                return End::Killed;
            }
            if self.proxy.shutting_down.load(Ordering::Relaxed) && !self.state.in_transaction {
                let _ = self
                    .client
                    .send(0, &SqlError::shutting_down().packet())
                    .await;
                return End::Shutdown;
            }
            // Measured from the last command, not from whatever woke this loop: a backend that
            // went away (park, crash) is no activity of the client's.
            let idle_deadline = idle_since + self.idle_timeout();
            if idle_deadline < idle.deadline() {
                idle.as_mut().reset(idle_deadline);
            }
            let read_vars = (self.state.user_vars_unread && self.backend.is_some())
                .then(|| idle_since + user_vars::READ_DELAY);
            let lp = tokio::select! {
                biased;
                r = self.client.read(self.proxy.cfg.max_packet) => r,
                () = idle_backend_closed(self.backend.as_mut()) => {
                    // The server closed an idle connection (it was parked or crashed): the next
                    // statement gets a new one. A transaction holding locks is carried over at
                    // once, before statements that were waiting for those locks run again.
                    self.drop_backend();
                    if self.holds_locks() && !self.link.killed.load(Ordering::Relaxed) {
                        self.recover_idle().await;
                        self.report_state();
                    }
                    continue;
                }
                () = &mut idle => {
                    if tokio::time::Instant::now() >= idle_deadline {
                        // MariaDB closes such a connection without a word; so does the proxy.
                        return End::Idle;
                    }
                    idle.as_mut().reset(idle_deadline);
                    continue;
                }
                () = &mut woken => {
                    woken.set(link.wake.notified());
                    continue;
                }
                () = user_vars::due(read_vars) => {
                    self.user_vars_idle().await;
                    self.report_state();
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
            idle_since = tokio::time::Instant::now();
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
        if self.state.user_vars_unread
            && let Some(err) = self.user_vars_before(cmd, &packet::payload(&raw, lp)).await
        {
            self.client.send(seq, &err.packet()).await?;
            return Ok(true);
        }
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
                    self.txlog.clear();
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
            COM_INIT_DB => {
                // Inside a transaction it is part of it: a replay must change schema there too.
                self.hashing = self.state.in_transaction;
                let out = Outgoing::Raw(&raw);
                let r = self
                    .forward_retrying(out, seq, Expect::One, OnLoss::Retry)
                    .await?;
                let class = Recording {
                    writes: false,
                    single: true,
                    kind: Some(Kind::Use),
                };
                let payload = packet::payload(&raw, lp).into_owned();
                self.record(None, &r, &payload, Some(Expect::One), class);
            }
            COM_FIELD_LIST | COM_SET_OPTION | COM_STATISTICS | COM_PROCESS_INFO
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
        let mut s = if self.autocommit {
            caps::STATUS_AUTOCOMMIT
        } else {
            0
        };
        if self.state.in_transaction {
            s |= caps::STATUS_IN_TRANS;
        }
        s
    }

    async fn query(&mut self, raw: &BytesMut, lp: &packet::Logical, seq: u8) -> Result<(), End> {
        let payload = packet::payload(raw, lp);
        let sql = &payload[1..];
        if let Some(k) = kill::parse(sql) {
            return self.kill(k, seq).await;
        }
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
        let in_trans = self.state.in_transaction;
        let on_loss = replay::on_loss(
            stmts,
            sql,
            in_trans,
            self.autocommit,
            self.state.pinned_besides_transaction(),
        );
        let kind = stmts.first().map(|s| s.kind);
        self.hashing = in_trans || !self.autocommit || kind == Some(Kind::Begin);
        let before = (!in_trans && self.hashing).then(|| self.state.clone());
        // Stratus's own account is protected inside the server, not here: a text match is
        // bypassed by `EXECUTE IMMEDIATE` or a procedure, and the server restores the account
        // whenever Stratus finds it refused (`stratus-control`'s `accounts`).
        let accounts = stmts.iter().any(|s| s.kind == Kind::AccountManagement);
        self.hold_answer = accounts;
        let expect = Expect::ResultSets { binary: false };
        let relayed = self
            .forward_retrying(Outgoing::Raw(raw), seq, expect, on_loss)
            .await;
        self.hold_answer = false;
        let relayed = relayed?;
        if relayed.error.is_none() {
            self.after_statements(sql, stmts).await;
        }
        let class = Recording {
            writes: stmts.iter().any(replay::may_write),
            single: stmts.len() == 1,
            kind,
        };
        self.record(before, &relayed, &payload, Some(expect), class);
        if let Some(answer) = relayed.held {
            self.client.write(&answer).await?;
        }
        Ok(())
    }

    /// Keeps the transaction log in step with the session after a command was answered.
    /// `before` is the session as it was before the command, when the command may have begun a
    /// transaction.
    fn record(
        &mut self,
        before: Option<SessionState>,
        r: &Relayed,
        payload: &[u8],
        expect: Option<Expect>,
        class: Recording,
    ) {
        if !self.state.in_transaction {
            self.txlog.clear();
            return;
        }
        let restarts = matches!(
            class.kind,
            Some(Kind::Begin | Kind::Commit | Kind::Rollback)
        );
        if !self.txlog.active || restarts {
            self.txlog
                .begin(before.unwrap_or_else(|| self.state.clone()));
            if !class.single {
                self.txlog.forbid("it began inside a multi-statement query");
            } else if class.kind != Some(Kind::Begin) && restarts {
                self.txlog.forbid("it began with AND CHAIN");
            }
        }
        match (r.checksum, r.infile) {
            (Some(checksum), false) => {
                let entry = Entry {
                    payload: payload.to_vec(),
                    expect,
                    checksum,
                };
                let limit = self.proxy.cfg.replay.max_bytes;
                self.txlog.push(entry, class.writes, limit);
            }
            (None, _) => self.txlog.forbid("its first statement was not recorded"),
            (_, true) => self.txlog.forbid("it loaded a local file"),
        }
    }

    /// Learns what successful statements did to the session.
    async fn after_statements(&mut self, sql: &[u8], stmts: &[Statement]) {
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
            // A procedure given user variables assigns them when they are OUT parameters (as
            // connectors pass those). One given none is not read back after: the session would
            // count as holding values it has not read for nothing.
            let text = sql.get(s.span.clone()).unwrap_or_default();
            read_user_vars |= s.sets_user_vars || s.kind == Kind::Call && text.contains(&b'@');
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
            self.learn_own_password(sql, stmts).await;
        }
        // Read back before the client's next command, not now: `user_vars`.
        self.state.user_vars_unread |= read_user_vars;
    }

    /// `KILL` of a connection id: the id is the one the proxy greeted a client with, so it is
    /// found among the proxy's sessions, of this database only, and the statement the server
    /// gets names that session's current backend thread. The server judges the privilege for
    /// `KILL QUERY`; for `KILL CONNECTION` the killed session must also end its client
    /// connection rather than fail over, so the proxy allows it as the server allows a user
    /// without `CONNECTION ADMIN` (its own account's sessions) and marks the session first.
    async fn kill(&mut self, k: kill::Kill, seq: u8) -> Result<(), End> {
        let target = u32::try_from(k.id)
            .ok()
            .and_then(|id| self.proxy.sessions_lock().get(&id).cloned())
            .filter(|t| t.service == self.service);
        let Some(target) = target else {
            return self
                .client
                .send(seq, &SqlError::no_such_thread(k.id).packet())
                .await;
        };
        let own = Arc::ptr_eq(&target, &self.link);
        if k.scope == kill::Scope::Connection {
            if own {
                self.link.killed.store(true, Ordering::Relaxed);
                let _ = self
                    .client
                    .send(seq, &SqlError::connection_killed().packet())
                    .await;
                return Err(End::Killed);
            }
            if target.user != self.login.user {
                return self
                    .client
                    .send(seq, &SqlError::not_owner_of_thread(k.id).packet())
                    .await;
            }
            target.killed.store(true, Ordering::Relaxed);
            target.wake.notify_one();
        }
        let thread = target.backend_thread.load(Ordering::Relaxed);
        if thread == 0 {
            // Nothing runs there: the server would have nothing to do either.
            let ok = response::ok(self.status(), 0, self.client_caps());
            return self.client.send(seq, &ok).await;
        }
        let sql = k.for_thread(thread);
        if k.scope == kill::Scope::Connection {
            // The killed session ends its client and closes its backend by itself once woken;
            // the server's KILL interrupts a statement it may be running. Either may come
            // first, so a thread already gone is no error.
            if let Err(e) = self.ensure_backend().await {
                return self.client.send(seq, &e.packet()).await;
            }
            let answer = match self.backend.as_mut() {
                Some(b) => match b.query(&sql).await {
                    Ok(_) => None,
                    Err(BackendError::Server(e)) if e.code == 1094 => None,
                    Err(BackendError::Server(e)) => Some(e),
                    Err(_) => {
                        self.drop_backend();
                        None
                    }
                },
                None => None,
            };
            let packet = match answer {
                Some(e) => e.packet(),
                None => response::ok(self.status(), 0, self.client_caps()),
            };
            return self.client.send(seq, &packet).await;
        }
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(sql.as_bytes());
        let mut out = Vec::with_capacity(payload.len() + HEADER_LEN);
        packet::write(&mut out, &mut 0, &payload);
        let framed = BytesMut::from(&out[..]);
        let expect = Expect::ResultSets { binary: false };
        let relayed = self
            .forward_retrying(Outgoing::Raw(&framed), seq, expect, OnLoss::Report)
            .await?;
        if let Some(answer) = relayed.held {
            self.client.write(&answer).await?;
        }
        Ok(())
    }

    async fn prepare(&mut self, raw: &BytesMut, lp: &packet::Logical, seq: u8) -> Result<(), End> {
        let sql = packet::payload(raw, lp)[1..].to_vec();
        self.hashing = false;
        // Preparing changes nothing on the server: always safe to send again.
        let out = Outgoing::Prepare { raw, sql: &sql };
        self.forward_retrying(out, seq, Expect::Prepare, OnLoss::Retry)
            .await
            .map(|_| ())
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
        let in_trans = self.state.in_transaction;
        let pinned = self.state.pinned_besides_transaction();
        let autocommit = self.autocommit;
        let Some(stmt) = self.stmts.get_mut(id) else {
            if cmd == COM_STMT_CLOSE || cmd == COM_STMT_SEND_LONG_DATA {
                return Ok(()); // no answer is expected
            }
            return self
                .client
                .send(seq, &SqlError::unknown_statement(id).packet())
                .await;
        };
        if cmd == COM_STMT_CLOSE {
            let stmt = self.stmts.remove(id);
            if let (Some(b), Some(bid)) = (self.backend.as_mut(), stmt.and_then(|s| s.backend_id)) {
                let _ = b.send(COM_STMT_CLOSE, &bid.to_le_bytes()).await;
            }
            return Ok(());
        }
        let class = Recording {
            writes: replay::may_write(&stmt.class),
            single: true,
            kind: Some(stmt.class.kind),
        };
        let assigns =
            stmt.class.sets_user_vars || stmt.class.kind == Kind::Call && stmt.sql.contains(&b'@');
        let on_loss = match cmd {
            COM_STMT_EXECUTE => replay::on_loss(
                std::slice::from_ref(&stmt.class),
                &stmt.sql,
                in_trans,
                autocommit,
                pinned,
            ),
            COM_STMT_RESET => OnLoss::Retry,
            _ => OnLoss::Report, // COM_STMT_FETCH: its cursor was on the lost connection
        };
        self.hashing = in_trans || !autocommit;
        // What the transaction log keeps: the command with its parameter types, so that it
        // means the same whatever the client binds later.
        let recorded = self.hashing.then(|| {
            let payload = packet::payload(raw, lp);
            match execute_layout(&payload, stmt.params) {
                Some(layout) if cmd == COM_STMT_EXECUTE && layout.types.is_none() => {
                    match &stmt.types {
                        Some(types) => bind_types(&payload, &layout, types),
                        None => payload.into_owned(),
                    }
                }
                _ => payload.into_owned(),
            }
        });
        let before = (!in_trans && self.hashing).then(|| self.state.clone());
        let Some(expect) = expect_payload(&packet::payload(raw, lp)) else {
            // COM_STMT_SEND_LONG_DATA: no answer, so a lost backend shows at the next command.
            if self.ensure_backend().await.is_ok() {
                if let Ok(rebound) = self.statement_bytes(raw, lp, id, cmd).await {
                    self.send_to_backend(rebound.as_deref().unwrap_or(raw))
                        .await;
                }
            }
            if let (true, Some(payload)) = (self.txlog.active, recorded) {
                let entry = Entry {
                    payload,
                    expect: None,
                    checksum: 0,
                };
                self.txlog
                    .push(entry, false, self.proxy.cfg.replay.max_bytes);
            }
            return Ok(());
        };
        let out = Outgoing::Statement { raw, lp, id, cmd };
        let r = self.forward_retrying(out, seq, expect, on_loss).await?;
        if cmd == COM_STMT_EXECUTE && assigns && r.error.is_none() {
            self.state.user_vars_unread = true;
        }
        if expect == Expect::Cursor && r.status & caps::STATUS_CURSOR_EXISTS != 0 {
            self.state.cursors += 1;
        } else if (cmd == COM_STMT_FETCH && r.status & caps::STATUS_LAST_ROW_SENT != 0)
            || cmd == COM_STMT_RESET
        {
            self.state.cursors = self.state.cursors.saturating_sub(1);
        }
        match recorded {
            Some(payload) => self.record(before, &r, &payload, Some(expect), class),
            None => self.record(before, &r, &[], Some(expect), class),
        }
        Ok(())
    }

    /// A statement command as the current backend must get it: the statement prepared there
    /// (if it was not), its id put in place of the virtual one in `raw`, and the parameter types
    /// supplied if this backend has not seen them, in which case the command is rebuilt and
    /// returned.
    async fn statement_bytes(
        &mut self,
        raw: &mut BytesMut,
        lp: &packet::Logical,
        id: u32,
        cmd: u8,
    ) -> Result<Option<Vec<u8>>, Reprepare> {
        let backend_id = self.ensure_prepared(id).await?;
        let Some(stmt) = self.stmts.get_mut(id) else {
            return Err(Reprepare::Refused(SqlError::unknown_statement(id)));
        };
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
        Ok(rebound)
    }

    /// The statement's id on the current backend, preparing it there if needed.
    async fn ensure_prepared(&mut self, id: u32) -> Result<u32, Reprepare> {
        let Some(stmt) = self.stmts.get_mut(id) else {
            return Err(Reprepare::Refused(SqlError::unknown_statement(id)));
        };
        if let Some(bid) = stmt.backend_id {
            return Ok(bid);
        }
        let sql = stmt.sql.clone();
        let Some(b) = self.backend.as_mut() else {
            return Err(Reprepare::Lost);
        };
        b.send(COM_STMT_PREPARE, &sql)
            .await
            .map_err(|_| Reprepare::Lost)?;
        let mut t = Tracker::new(Expect::Prepare, b.caps & caps::DEPRECATE_EOF != 0);
        loop {
            let p = b.read_packet().await.map_err(|_| Reprepare::Lost)?;
            if t.feed(&p) == Step::Done {
                if p.first() == Some(&0xff) && t.prepare_ok.is_none() {
                    // The server's own answer, whatever its code (1105 included).
                    return Err(match BackendError::server(&p) {
                        BackendError::Server(e) => Reprepare::Refused(e),
                        _ => Reprepare::Lost,
                    });
                }
                break;
            }
        }
        // An answer that ends without a statement: the connection's state is unknown.
        let bid = t
            .prepare_ok
            .map(|p| p.statement_id)
            .ok_or(Reprepare::Lost)?;
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
        let parsed = ChangeUser::decode(&payload[1..], self.client_caps());
        let Ok(ChangeUser {
            user,
            auth_response: mut reply,
            schema,
            charset,
            auth_plugin: plugin,
            ..
        }) = parsed
        else {
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
        self.txlog.clear();
        self.state.schema =
            (!schema.is_empty()).then(|| String::from_utf8_lossy(&schema).into_owned());
        self.stmts.clear();
        if service != self.service {
            self.activity = ServiceSlot::take(self.proxy.activity.service(&service)).0;
            self.service = service;
        }
        self.login.user = user_name.into_bytes();
        self.login.stage1 = stage1;
        self.password_unknown = false;
        if let Some(cs) = charset {
            self.login.charset = cs as u8;
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
        self.txlog.clear();
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
            let mut last = None;
            for _ in 0..3 {
                let a = match addr {
                    Some(a) => a,
                    None if self.unattended => dir
                        .backend_after_loss(&svc)
                        .await
                        .map_err(|m| SqlError::unavailable(&svc, &m))?
                        .ok_or_else(|| SqlError::unavailable(&svc, "it is asleep"))?,
                    None => {
                        woke = true;
                        dir.backend(&svc, true)
                            .await
                            .map_err(|m| SqlError::unavailable(&svc, &m))?
                            .ok_or_else(|| SqlError::unavailable(&svc, "it did not start"))?
                    }
                };
                match self.connect(a.clone()).await {
                    Ok(()) => return Ok(woke),
                    Err(BackendError::Server(e)) => return Err(e),
                    // Stopped or crashed between lookup and connect: once the directory has seen
                    // it gone, the lookup wakes or waits for the restart.
                    Err(e) => {
                        last = Some(format!("{a}: {e:?}"));
                        dir.unreachable(&svc, &a).await;
                        addr = None;
                    }
                }
            }
            let why = format!(
                "cannot connect to its server ({})",
                last.unwrap_or_default()
            );
            Err(SqlError::unavailable(&svc, &why))
        };
        let woke = match tokio::time::timeout(deadline, attempt).await {
            Ok(Ok(woke)) => woke,
            Ok(Err(e)) => return Err(self.login_refused(e).await),
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
    async fn connect(&mut self, addr: Endpoint) -> Result<(), BackendError> {
        let timeout = self.proxy.cfg.wake_timeout;
        let kept = pool::take(
            &self.pool_key(addr.clone()),
            self.proxy.cfg.pool_idle_timeout,
            &self.proxy.activity,
        );
        // A kept connection logs in again first: the account may have been locked, dropped or
        // stripped of privileges since it was made, and the server must say so now.
        let kept = match kept {
            Some(mut b) => match b
                .change_user(&self.login, self.state.schema.as_deref())
                .await
            {
                Ok(()) => match b.query(BACKEND_TRACKING).await {
                    Ok(_) => Some(b),
                    Err(BackendError::Server(e)) => return Err(BackendError::Server(e)),
                    Err(_) => None,
                },
                // Unknown schema: a new connection handles that as a server would.
                Err(BackendError::Server(e)) if e.code != 1049 => {
                    return Err(BackendError::Server(e));
                }
                // Gone meanwhile: a new connection instead.
                Err(_) => None,
            },
            None => None,
        };
        let mut b = match kept {
            Some(b) => b,
            None => {
                let b = match Backend::connect(
                    addr.clone(),
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
        self.link
            .backend_thread
            .store(b.connection_id, Ordering::Relaxed);
        self.backend = Some(b);
        // A new connection runs nothing before the transactions cut off with the last server
        // are carried over and their cut-off statements sent again. A session that is part of
        // that recovery waits for its turn before sending instead.
        if self.ticket.is_none() {
            self.recovery.settled(self.proxy.cfg.replay.timeout).await;
        }
        Ok(())
    }

    fn pool_key(&self, addr: Endpoint) -> pool::Key {
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
        let Some(mut b) = self.backend.take() else {
            return;
        };
        // A connection that ever profiled keeps its `SHOW PROFILES` history through a reset and
        // a change of user: the next client would see this one's statements. Not kept.
        if self
            .state
            .variables
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("profiling"))
        {
            return;
        }
        if self.marker.txn > 0 && !self.state.in_transaction {
            // The session's commit marker is of no more use. (Inside a transaction the client
            // left open, the pool's reset rolls that back; the row is pruned later.)
            let sql = replay::marker_delete_sql(self.marker.session);
            let deleted = match b.query(&sql).await {
                Ok(_) if !self.autocommit => b.query("COMMIT").await.is_ok(),
                Ok(_) => true,
                Err(_) => false,
            };
            if !deleted {
                return;
            }
        }
        let key = self.pool_key(b.addr.clone());
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
        self.link.backend_thread.store(0, Ordering::Relaxed);
        // Whatever was pinned to that connection is gone with it; a recorded transaction lives
        // on in its log, and the next command replays it.
        self.state.in_transaction = self.txlog.active;
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

    /// Forwards a command that is safe to repeat and relays its answer.
    async fn forward(&mut self, raw: &[u8], seq: u8, expect: Expect) -> Result<Relayed, End> {
        self.hashing = false;
        self.forward_retrying(Outgoing::Raw(raw), seq, expect, OnLoss::Retry)
            .await
    }

    /// Sends a command and relays its answer. When the backend is lost before the client saw
    /// any of the answer, `on_loss` says what the command may get on a new one (see
    /// [`replay`]); a transaction the session had open is replayed first.
    async fn forward_retrying(
        &mut self,
        mut out: Outgoing<'_>,
        seq: u8,
        expect: Expect,
        on_loss: OnLoss,
    ) -> Result<Relayed, End> {
        let limits = self.proxy.cfg.replay;
        if let Some((e, f)) = self.doomed.take() {
            // The transaction was lost while the session sat idle and could not be carried
            // over: a ROLLBACK gets what it asked for, anything else hears why.
            return if on_loss == OnLoss::Rollback {
                self.ended(seq, Some(f), Outcome::Ended).await
            } else {
                self.replay_failed(seq, Some(f), e).await
            };
        }
        let lost_in_transaction = self.backend.is_none() && self.txlog.active;
        if lost_in_transaction
            && (on_loss == OnLoss::Rollback || on_loss == OnLoss::Commit && !self.txlog.wrote)
        {
            // The crash ended a transaction that has nothing to commit: replaying its reads
            // only to end it could differ for nothing.
            return self
                .ended(seq, Some((Instant::now(), 0)), Outcome::Ended)
                .await;
        }
        // A backend lost while the session sat in its transaction: the transaction goes first.
        let mut next = if lost_in_transaction {
            if self.holds_locks() {
                let ticket = self.ticket.take();
                self.ticket = Some(self.recovery.lost(ticket, self.id, true, None));
            }
            Next::Replay
        } else {
            Next::Send
        };
        let mut failover: Option<(Instant, u32)> =
            (next == Next::Replay).then(|| (Instant::now(), 0));
        let marked = on_loss == OnLoss::Commit && self.txlog.wrote && self.marker.enabled;
        if marked {
            self.marker.txn += 1;
        }
        self.marker.written = false;
        // Counted as running throughout, so the lifecycle never suspends or parks the database
        // under a failover.
        self.activity.running.fetch_add(1, Ordering::Relaxed);
        let result = loop {
            let ready = match next {
                Next::Send => self
                    .ensure_backend()
                    .await
                    .map_err(ReplayError::Unavailable),
                Next::Replay => self.replay_transaction().await,
                Next::Resolve => match self.commit_resolved().await {
                    Ok(true) => {
                        break self.ended(seq, failover, Outcome::CommitConfirmed).await;
                    }
                    Ok(false) => {
                        next = Next::Replay;
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match ready {
                Ok(()) => {}
                Err(ReplayError::Lost) => {
                    let f = failover.get_or_insert_with(|| (Instant::now(), 0));
                    f.1 += 1;
                    if f.1 >= limits.attempts || f.0.elapsed() > limits.timeout {
                        break self.give_up(seq, *f, on_loss).await;
                    }
                    continue;
                }
                Err(e) => break self.replay_failed(seq, failover, e).await,
            }
            if let Some(ticket) = self.ticket.take() {
                // Carried over: wait for the others' transactions and for statements cut off
                // before this one, then go (the ticket dropped lets the next one go).
                ticket.replayed();
                ticket.turn(limits.timeout).await;
            }
            let sent = match &mut out {
                Outgoing::Raw(raw) => self.exchange(raw, expect, None, marked).await,
                Outgoing::Prepare { raw, sql } => {
                    self.exchange(raw, expect, Some(sql.to_vec()), false).await
                }
                Outgoing::Statement { raw, lp, id, cmd } => {
                    match self.statement_bytes(raw, lp, *id, *cmd).await {
                        Ok(None) => self.exchange(raw, expect, None, false).await,
                        Ok(Some(bytes)) => self.exchange(&bytes, expect, None, false).await,
                        // Preparing it again found the backend gone: a lost backend like any.
                        Err(Reprepare::Lost) => Err(RelayError::LostBeforeAnswer),
                        Err(Reprepare::Refused(e)) => break self.answer_error(seq, e).await,
                    }
                }
            };
            match sent {
                Ok(r) => {
                    if let Some(f) = failover {
                        let outcome = if next == Next::Replay || self.txlog.active && f.1 > 0 {
                            Outcome::Replayed
                        } else {
                            Outcome::Retried
                        };
                        self.report_failover(f, outcome, String::new());
                    }
                    break Ok(r);
                }
                Err(RelayError::LostBeforeAnswer) if self.link.killed.load(Ordering::Relaxed) => {
                    // Killed on purpose, not lost: no failover; the client hears why.
                    self.drop_backend();
                    self.txlog.clear();
                    let _ = self
                        .client
                        .send(seq, &SqlError::connection_killed().packet())
                        .await;
                    break Err(End::Killed);
                }
                Err(RelayError::LostBeforeAnswer) => {
                    self.drop_backend();
                    let resent = matches!(on_loss, OnLoss::Retry | OnLoss::Replay | OnLoss::Commit);
                    let ticket = self.ticket.take();
                    self.ticket = Some(self.recovery.lost(
                        ticket,
                        self.id,
                        self.holds_locks(),
                        resent.then_some(self.last_sent),
                    ));
                    let f = failover.get_or_insert_with(|| (Instant::now(), 0));
                    f.1 += 1;
                    if f.1 >= limits.attempts || f.0.elapsed() > limits.timeout {
                        break self.give_up(seq, *f, on_loss).await;
                    }
                    tracing::info!(db = %self.service, ?on_loss, "backend lost before answering");
                    next = match on_loss {
                        OnLoss::Retry | OnLoss::Replay if self.txlog.active => Next::Replay,
                        OnLoss::Retry => Next::Send,
                        OnLoss::Commit if self.marker.written => Next::Resolve,
                        // Nothing to commit, or the crash ended it: either way it is over.
                        OnLoss::Commit if !self.txlog.wrote => {
                            break self.ended(seq, failover, Outcome::Ended).await;
                        }
                        OnLoss::Rollback => {
                            break self.ended(seq, failover, Outcome::Ended).await;
                        }
                        OnLoss::Replay | OnLoss::Commit | OnLoss::Report => {
                            break self.unknown_outcome(seq, *f, on_loss).await;
                        }
                    };
                }
                Err(e) => {
                    self.drop_backend();
                    self.txlog.clear();
                    break Err(match e {
                        RelayError::LostMidway => End::Protocol,
                        _ => End::Client,
                    });
                }
            }
        };
        self.ticket = None;
        self.activity.running.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// The open transaction took locks (it wrote, or read with a locking clause) and can be
    /// replayed: after a crash it goes before anything that may have waited for those locks.
    fn holds_locks(&self) -> bool {
        self.txlog.active && self.txlog.wrote && self.txlog.unreplayable.is_none()
    }

    /// Carries the open transaction over to a new server as soon as the session notices its
    /// backend gone, while its client is idle: statements of other sessions that were waiting
    /// for its locks must not get them first. If it cannot be carried over the client hears
    /// why at its next command; if there is no server to carry it to (the database was put to
    /// sleep), the next command tries again.
    async fn recover_idle(&mut self) {
        let limits = self.proxy.cfg.replay;
        let ticket = self.ticket.take();
        self.ticket = Some(self.recovery.lost(ticket, self.id, true, None));
        self.activity.running.fetch_add(1, Ordering::Relaxed);
        self.unattended = true;
        let mut f = (Instant::now(), 0);
        let result = loop {
            f.1 += 1;
            match self.replay_transaction().await {
                Err(ReplayError::Lost)
                    if f.1 < limits.attempts && f.0.elapsed() < limits.timeout => {}
                other => break other,
            }
        };
        self.unattended = false;
        match result {
            Ok(()) => self.report_failover(f, Outcome::Replayed, String::new()),
            Err(e @ (ReplayError::Mismatch(_) | ReplayError::NotReplayable(_))) => {
                // Its locks must not wait for the client: rolled back now.
                if let Some(b) = self.backend.as_mut() {
                    if b.query("ROLLBACK").await.is_err() {
                        self.drop_backend();
                    }
                }
                self.doomed = Some((e, f));
            }
            Err(ReplayError::Lost | ReplayError::Unavailable(_)) => self.drop_backend(),
        }
        self.ticket = None;
        self.activity.running.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sends a command's packets to the backend and relays the answer, keeping the database's
    /// activity figures. With `marked`, the commit marker goes first, in the same write.
    async fn exchange(
        &mut self,
        bytes: &[u8],
        expect: Expect,
        prepared_sql: Option<Vec<u8>>,
        marked: bool,
    ) -> Result<Relayed, RelayError> {
        let begin = Instant::now();
        self.last_sent = begin;
        let result = async {
            if marked {
                let mut both = Vec::with_capacity(bytes.len() + 160);
                let sql = replay::marker_sql(self.marker.session, self.marker.txn);
                let mut payload = vec![COM_QUERY];
                payload.extend_from_slice(sql.as_bytes());
                packet::write(&mut both, &mut 0, &payload);
                both.extend_from_slice(bytes);
                self.send_to_backend(&both).await;
                // From here the marker may have been written, even if its answer never comes.
                self.marker.written = true;
                let d = self.drain(Expect::ResultSets { binary: false }).await?;
                if d.error == Some(ER_LOCK_DEADLOCK) {
                    // The marker's row lock made this transaction a deadlock victim: the server
                    // rolled it back, so the COMMIT behind commits nothing, and the client must
                    // hear of the deadlock, not get that COMMIT's OK.
                    self.marker.written = false;
                    self.drain(expect).await?;
                    self.state.in_transaction = false;
                    let err = SqlError::deadlock();
                    // COMMIT is one packet (sequence 0): its answer is number 1.
                    self.client
                        .send(1, &err.packet())
                        .await
                        .map_err(|_| RelayError::Client)?;
                    return Ok(Relayed {
                        error: Some(ER_LOCK_DEADLOCK),
                        ..Relayed::default()
                    });
                }
                if let Some(code) = d.error {
                    self.marker.written = false;
                    if replay::marker_unusable(code) {
                        // No table or no privilege: this session commits without markers.
                        self.marker.enabled = false;
                        tracing::warn!(db = %self.service, code, "cannot write commit markers; an interrupted COMMIT will be reported as of unknown outcome");
                    }
                }
            } else {
                self.send_to_backend(bytes).await;
            }
            self.relay(expect, prepared_sql).await
        }
        .await;
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

    /// Reads one answer from the backend without passing it on (the marker's, and those of a
    /// replayed transaction), with its checksum.
    async fn drain(&mut self, expect: Expect) -> Result<Drained, RelayError> {
        let Some(b) = self.backend.as_mut() else {
            return Err(RelayError::LostBeforeAnswer);
        };
        let mut t = Tracker::new(expect, b.caps & caps::DEPRECATE_EOF != 0);
        let mut sum = Checksum::default();
        loop {
            let Ok(p) = b.read_packet().await else {
                return Err(RelayError::LostBeforeAnswer);
            };
            let step = t.feed(&p);
            sum.add(&t, &p, b.caps);
            match step {
                Step::More => {}
                Step::Done => {
                    return Ok(Drained {
                        error: t.error,
                        checksum: sum.finish(),
                    });
                }
                // Never recorded, so never replayed; a server asking now is not the same.
                Step::LocalInfile => return Err(RelayError::LostMidway),
            }
        }
    }

    /// Carries the session's open transaction over to a new backend: the session as it was when
    /// the transaction began, then each recorded command, its answer compared with the one the
    /// client saw.
    async fn replay_transaction(&mut self) -> Result<(), ReplayError> {
        if let Some(why) = self.txlog.unreplayable {
            return Err(ReplayError::NotReplayable(why));
        }
        let Some(start) = self.txlog.start.clone() else {
            return Err(ReplayError::NotReplayable("its start was not recorded"));
        };
        self.drop_backend();
        let current = std::mem::replace(&mut self.state, start);
        let connected = self.ensure_backend().await;
        let schema = self.state.schema.clone();
        self.state = current;
        if schema.is_none() {
            self.state.schema = None; // dropped meanwhile
        }
        connected.map_err(ReplayError::Unavailable)?;
        let entries = std::mem::take(&mut self.txlog.entries);
        let result = self.replay_entries(&entries).await;
        self.txlog.entries = entries;
        if matches!(result, Err(ReplayError::Lost)) {
            self.drop_backend();
        }
        result?;
        self.state.in_transaction = true;
        tracing::info!(db = %self.service, statements = self.txlog.entries.len(), "transaction replayed");
        Ok(())
    }

    async fn replay_entries(&mut self, entries: &[Entry]) -> Result<(), ReplayError> {
        for (i, e) in entries.iter().enumerate() {
            let mut payload = e.payload.clone();
            let cmd = payload.first().copied().unwrap_or(COM_QUERY);
            if cmd != COM_QUERY {
                let Some(vid) = statement_id(&payload) else {
                    return Err(ReplayError::Mismatch(i));
                };
                // A statement that cannot be prepared again (its table gone, say) is a
                // difference like any other; a lost backend is tried again.
                let bid = match self.ensure_prepared(vid).await {
                    Ok(bid) => bid,
                    Err(Reprepare::Lost) => return Err(ReplayError::Lost),
                    Err(Reprepare::Refused(_)) => return Err(ReplayError::Mismatch(i)),
                };
                if cmd == COM_STMT_EXECUTE {
                    if let Some(stmt) = self.stmts.get_mut(vid) {
                        if let Some(types) = execute_layout(&payload, stmt.params)
                            .and_then(|l| l.types)
                            .and_then(|t| payload.get(t))
                        {
                            stmt.types = Some(types.to_vec());
                            stmt.types_sent = true;
                        }
                    }
                }
                set_statement_id(&mut payload, bid);
            }
            let mut framed = Vec::with_capacity(payload.len() + HEADER_LEN);
            packet::write(&mut framed, &mut 0, &payload);
            self.send_to_backend(&framed).await;
            let Some(expect) = e.expect else { continue };
            let d = self.drain(expect).await.map_err(|_| ReplayError::Lost)?;
            if d.checksum != e.checksum {
                return Err(ReplayError::Mismatch(i));
            }
        }
        Ok(())
    }

    /// Whether the interrupted `COMMIT` committed, by its marker on a new backend.
    async fn commit_resolved(&mut self) -> Result<bool, ReplayError> {
        self.ensure_backend()
            .await
            .map_err(ReplayError::Unavailable)?;
        let Some(b) = self.backend.as_mut() else {
            return Err(ReplayError::Lost);
        };
        let rows = b
            .query(&replay::marker_check_sql(self.marker.session))
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(BackendError::Server(e)) => return Err(ReplayError::Unavailable(e)),
            Err(_) => {
                self.drop_backend();
                return Err(ReplayError::Lost);
            }
        };
        if !self.autocommit {
            // The locking read opened a transaction of the proxy's own.
            let _ = b.query("ROLLBACK").await;
        }
        let found = rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok());
        Ok(found == Some(self.marker.txn))
    }

    /// The interrupted transaction is over (committed, rolled back, or had nothing to commit):
    /// the client gets the OK its `COMMIT` or `ROLLBACK` would have got.
    async fn ended(
        &mut self,
        seq: u8,
        failover: Option<(Instant, u32)>,
        outcome: Outcome,
    ) -> Result<Relayed, End> {
        self.forget_transaction();
        let status = self.status();
        self.client
            .send(seq, &response::ok(status, 0, self.client_caps()))
            .await?;
        self.report_failover(
            failover.unwrap_or((Instant::now(), 1)),
            outcome,
            String::new(),
        );
        Ok(Relayed {
            status,
            ..Relayed::default()
        })
    }

    /// The transaction could not be carried over: roll back what was replayed and tell the
    /// client, in the terms of a deadlock, whose remedy (run the transaction again) is the same.
    async fn replay_failed(
        &mut self,
        seq: u8,
        failover: Option<(Instant, u32)>,
        e: ReplayError,
    ) -> Result<Relayed, End> {
        let f = failover.unwrap_or((Instant::now(), 1));
        let total = self.txlog.entries.len();
        let (outcome, err) = match e {
            ReplayError::Mismatch(i) => (
                Outcome::Mismatch,
                self.rolled_back(&format!(
                    "replaying it gave a different result at statement {} of {total}",
                    i + 1
                )),
            ),
            ReplayError::NotReplayable(why) => (
                Outcome::NotReplayable,
                self.rolled_back(&format!("it cannot be replayed: {why}")),
            ),
            ReplayError::Unavailable(e) => (Outcome::GaveUp, e),
            ReplayError::Lost => (Outcome::GaveUp, self.rolled_back("no new server took it")),
        };
        if let Some(b) = self.backend.as_mut() {
            if b.query("ROLLBACK").await.is_err() {
                self.drop_backend();
            }
        }
        self.forget_transaction();
        self.report_failover(f, outcome, err.message.clone());
        self.answer_error(seq, err).await
    }

    fn rolled_back(&self, why: &str) -> SqlError {
        SqlError::rolled_back_by_failover(&self.service, why)
    }

    /// Out of attempts or time.
    async fn give_up(
        &mut self,
        seq: u8,
        f: (Instant, u32),
        on_loss: OnLoss,
    ) -> Result<Relayed, End> {
        let in_trans = self.txlog.active;
        self.drop_backend();
        self.forget_transaction();
        let err = if in_trans {
            self.rolled_back(&format!("it was not carried over within {} attempts", f.1))
        } else {
            self.lost_during_statement(&format!(
                "no new connection answered it ({on_loss:?}) in {} attempts",
                f.1
            ))
        };
        self.report_failover(f, Outcome::GaveUp, err.message.clone());
        self.answer_error(seq, err).await
    }

    /// A statement whose effect cannot be known was cut off: say so.
    async fn unknown_outcome(
        &mut self,
        seq: u8,
        f: (Instant, u32),
        on_loss: OnLoss,
    ) -> Result<Relayed, End> {
        let was_in = self.txlog.active;
        self.forget_transaction();
        let what = match on_loss {
            OnLoss::Commit => {
                "whether the transaction committed is unknown (commit markers are off for this session)"
            }
            _ if was_in => "the transaction was rolled back, unless the statement had committed it",
            _ => "it may or may not have taken effect",
        };
        let err = self.lost_during_statement(&format!("it was not repeated: {what}"));
        self.report_failover(f, Outcome::Unknown, err.message.clone());
        self.answer_error(seq, err).await
    }

    fn lost_during_statement(&self, why: &str) -> SqlError {
        SqlError::connection_lost(&self.service, why)
    }

    /// The client's transaction is over, whatever ended it.
    fn forget_transaction(&mut self) {
        self.txlog.clear();
        self.state.in_transaction = false;
    }

    /// Answers the command with an error; the session goes on.
    async fn answer_error(&mut self, seq: u8, err: SqlError) -> Result<Relayed, End> {
        self.activity.errors.fetch_add(1, Ordering::Relaxed);
        self.client.send(seq, &err.packet()).await?;
        Ok(Relayed {
            error: Some(err.code),
            ..Relayed::default()
        })
    }

    /// Counts a failover and tells the control plane.
    fn report_failover(&self, f: (Instant, u32), outcome: Outcome, detail: String) {
        let duration = f.0.elapsed();
        self.activity.failovers[outcome.index()].fetch_add(1, Ordering::Relaxed);
        self.activity.failover_latency.observe(duration);
        let replayed = if matches!(outcome, Outcome::Replayed) {
            self.txlog.entries.len()
        } else {
            0
        };
        self.proxy.dir.failover(
            &self.service,
            Failover {
                outcome,
                attempts: f.1,
                replayed,
                duration,
                detail,
            },
        );
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
        let mut sum = self.hashing.then(Checksum::default);
        let mut prepared_sql = prepared_sql;
        let rewrite_info = client_caps & caps::SESSION_TRACK == 0;
        let mut tracking_touched = false;
        loop {
            while let Some(total) = packet::complete(&b.buf[pos..]) {
                let start = pos;
                pos += total;
                let step = t.feed(&b.buf[start + HEADER_LEN..pos]);
                if let Some(sum) = sum.as_mut() {
                    sum.add(&t, &b.buf[start + HEADER_LEN..pos], backend_caps);
                }
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
                        relayed.checksum = sum.map(|s| s.finish());
                        settle(&mut self.state, &mut self.autocommit, &t, expect);
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
                            relayed.checksum = sum.map(|s| s.finish());
                            settle(&mut self.state, &mut self.autocommit, &t, expect);
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
                        relayed.infile = true;
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
                // Packets read but not yet passed on never reached the client: for it, the
                // statement got no answer.
                return Err(if forwarded {
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
        let unread = self.state.user_vars_unread;
        track(
            &self.activity.unread_vars,
            &mut self.unread_reported,
            unread,
        );
    }

    /// Withdraws this session's transaction and pin from the counters (it ends or starts over).
    fn release_pins(&mut self) {
        track(
            &self.activity.in_transaction,
            &mut self.in_trans_reported,
            false,
        );
        track(&self.activity.pinned, &mut self.pinned_reported, false);
        track(&self.activity.unread_vars, &mut self.unread_reported, false);
    }
}

/// Learns the transaction and autocommit state from the end of an answer. An error leaves the
/// transaction open, except a deadlock, which rolls it back
/// (<https://mariadb.com/kb/en/innodb-lock-modes/#deadlocks>); a prepare answer carries no
/// status.
fn settle(state: &mut SessionState, autocommit: &mut bool, t: &Tracker, expect: Expect) {
    if t.error == Some(ER_LOCK_DEADLOCK) {
        state.in_transaction = false;
    } else if t.error.is_none()
        && expect != Expect::Prepare
        && (expect != Expect::One || t.last_was_ok)
    {
        state.in_transaction = t.status & caps::STATUS_IN_TRANS != 0;
        *autocommit = t.status & caps::STATUS_AUTOCOMMIT != 0;
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

/// Why a statement could not be prepared again on a new backend: a condition of the proxy's
/// own (the backend went away), or the server's answer, passed on as it is — never told apart by
/// error code, since a server may itself answer 1105.
enum Reprepare {
    Lost,
    Refused(SqlError),
}

/// MariaDB's default `wait_timeout` and `interactive_timeout` (8 hours); Stratus's servers
/// keep the defaults, and tenants cannot change globals.
const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 28_800;
