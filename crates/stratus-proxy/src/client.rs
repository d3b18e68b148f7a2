//! One client session: greeting, authentication at the proxy, then commands relayed to the
//! database's server, waking it when needed and recreating the session on every new backend
//! connection. Protocol: <https://mariadb.com/kb/en/connection/>,
//! <https://mariadb.com/kb/en/2-text-protocol/>, <https://mariadb.com/kb/en/3-binary-protocol-prepared-statements/>.

use crate::activity::{ServiceActivity, SessionShare};
use crate::backend::{Backend, BackendError, Login};
use crate::error::{ER_CONNECTION_KILLED, ER_LOCK_DEADLOCK, SqlError};
use crate::kill;
use crate::login::login;
use crate::prepared::LongData;
use crate::prepared::Statements;
use crate::recovery::{Recovery, Ticket};
use crate::relay::idle_backend_closed;
use crate::replay::{self, Entry, Marker, OnLoss, TxLog};
use crate::session::{BACKEND_TRACKING, Effects, SessionState};
use crate::storage_limit;
use crate::stream::{ClientIo, ClientStream, End};
use crate::{Directory, Proxy};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use stratus_wire::caps;
use stratus_wire::classify::{self, Kind, Pin, Statement, named_lock_calls};
use stratus_wire::command::*;
use stratus_wire::packet::{self, HEADER_LEN};
use stratus_wire::response;
use stratus_wire::tracker::{Expect, Tracker};
use tokio::net::TcpStream;

mod backend_link;
mod change_user;
mod credentials;
mod failover;
mod replica;
mod user_vars;

#[cfg(test)]
mod tests;

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
    session(proxy, ClientStream::Plain(stream), peer).await
}

/// A session over a client's byte stream, whatever carries it: a TCP socket from `run`, or an
/// in-memory pipe in tests.
pub(crate) async fn session<D: Directory>(
    proxy: Arc<Proxy<D>>,
    stream: ClientStream,
    peer: SocketAddr,
) {
    let total = proxy.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let _slot = Slot(&proxy.connections);
    let mut client = ClientIo {
        stream,
        buf: BytesMut::with_capacity(crate::stream::CLIENT_READ),
        inflated: 0,
    };
    if total > proxy.cfg.max_connections {
        let _ = client
            .send(
                0,
                &SqlError::too_many_connections("Stratus proxy limit reached")
                    .before_greeting()
                    .packet(),
            )
            .await;
        return;
    }
    let login = match tokio::time::timeout(
        proxy.cfg.handshake_timeout,
        // Boxed: its future is large and done with once the session is in.
        Box::pin(login(&proxy, &mut client, peer)),
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
        identity: std::sync::Mutex::new(crate::Identity {
            service: login.service.clone(),
            user: login.backend_login.user.clone(),
        }),
        backend_thread: std::sync::atomic::AtomicU32::new(0),
        killed: crate::KillMarks::default(),
        wake: tokio::sync::Notify::new(),
        idle: crate::idle::IdleClock::new(
            Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            proxy.cfg.release_idle_after,
        ),
    });
    let id = login.connection_id;
    proxy.sessions_lock().insert(id, link.clone());
    let _registered = Registered(&proxy, id, proxy.watch_idle(link.clone()));
    let schema_unconfirmed = login.schema.is_some();
    let mut session = Session {
        recovery: proxy.recoveries.of(&login.service),
        ticket: None,
        recovered: false,
        after_net_error: false,
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
        share: SessionShare::default(),
        password_unknown: false,
        schema_unconfirmed,
        failed_changes: 0,
        hold_answer: false,
        on_success: None,
        txlog: TxLog::default(),
        autocommit: true,
        hashing: false,
        marker: Marker::default(),
    };
    // Connect at once if the database runs (so a bad schema fails the login, as on a server);
    // a sleeping database is woken by the first statement, not by the connection.
    // Boxed, as the directory's futures may be large (Kubernetes' asks the API server).
    if let Ok(Some(addr)) = Box::pin(proxy.dir.backend(&session.service, false)).await {
        match Box::pin(session.connect(addr)).await {
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
    if login.compressed {
        session.client.compress();
    }
    let end = session.serve().await;
    session.release_pins();
    if matches!(end, End::Client | End::Idle | End::Shutdown) {
        Box::pin(session.release_backend()).await;
    }
    tracing::debug!(db = %session.service, ?end, "session ended");
}

/// A session that ends holding a backend connection (killed, a protocol error) closes it.
impl<D: Directory> Drop for Session<D> {
    fn drop(&mut self) {
        if self.backend.is_some() {
            self.activity.backends.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Removes a session from the proxy's registry and stops its idle watcher when it ends, however
/// it ends.
struct Registered<'a, D: Directory>(&'a Proxy<D>, u32, tokio::task::JoinHandle<()>);

impl<D: Directory> Drop for Registered<'_, D> {
    fn drop(&mut self) {
        self.2.abort();
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
    /// What this session counts for in `activity`.
    share: SessionShare,
    /// The client changed its own password to one the proxy could not learn (`credentials`).
    password_unknown: bool,
    /// The schema the client logged in or changed user with, which no server has taken yet: an
    /// unknown one is the client's error (1049), not one dropped meanwhile.
    schema_unconfirmed: bool,
    /// `COM_CHANGE_USER`s refused on this connection (`change_user`).
    failed_changes: u8,
    /// Keep the next answer from the client until the proxy has acted on it (accounts changed
    /// in SQL must be in the catalog before the client can try them).
    hold_answer: bool,
    /// What the command being answered does to the session if it succeeds (`relay` takes it on
    /// before the answer goes out).
    on_success: Option<Effects>,
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
    /// It took part in a recovery since its last command: what it sends next is new, and goes
    /// after every other session's part.
    recovered: bool,
    /// The last answer was a network error (`response::closes_connection`): if the server
    /// now closes the connection, the session ends with it rather than failing over (a
    /// `SIGNAL` of such a code closes nothing, and the session goes on).
    after_net_error: bool,
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
    /// The auto-increment value the answer reports, when the session was hashing.
    insert_id: Option<u64>,
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
        self.timeout_variable(name, DEFAULT_IDLE_TIMEOUT_SECS)
    }

    /// A timeout variable of the session's (seconds) as it last set it, the server's `default`
    /// if it did not, within the server's range for them: 1 s to a year.
    fn timeout_variable(&self, name: &str, default: u64) -> Duration {
        let secs = self
            .state
            .variables
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .unwrap_or(default);
        Duration::from_secs(secs.clamp(1, 31_536_000))
    }

    async fn serve(&mut self) -> End {
        let mut idle_since = tokio::time::Instant::now();
        // The server was asked about the session's named locks in this idle spell.
        let mut locks_asked = false;
        // Armed once and again only after it fires: a fresh wait per statement would lock the
        // notifier's waiter list every time. Kill, shutdown and the idle deadline all come
        // through it; the idle timer itself runs elsewhere (see `crate::idle`).
        let link = self.link.clone();
        link.idle.touch(idle_since);
        let woken = link.wake.notified();
        tokio::pin!(woken);
        loop {
            // Killed by another session: closed without a word, as the server closes it (the
            // client's next read finds the connection lost, 2013; only a session that kills
            // itself hears 1927).
            if self.link.killed.any() {
                return End::Killed;
            }
            // Shutting down: a session holding no transaction is closed as the server closes
            // its connections; one in a transaction may still finish it.
            if self.proxy.shutting_down.load(Ordering::Relaxed) && !self.state.in_transaction {
                let _ = self
                    .client
                    .send(0, &SqlError::shutting_down().packet())
                    .await;
                return End::Shutdown;
            }
            // The last command may have changed the timeout. It counts from the end of that
            // command, not from whatever woke this loop: a backend that went away (park, crash)
            // is no activity of the client's.
            link.idle.set_timeout(self.idle_timeout());
            let idle_reads = (self.backend.is_some()
                && (self.state.user_vars_unread
                    || (!self.state.lock_names.is_empty() && !locks_asked)))
                .then(|| idle_since + user_vars::READ_DELAY);
            let lp = tokio::select! {
                biased;
                r = self.client.read(self.proxy.cfg.max_packet) => r,
                () = idle_backend_closed(self.backend.as_mut()) => {
                    self.drop_backend();
                    // Closed after the network error it answered: so is the session.
                    if self.after_net_error {
                        self.txlog.clear();
                        return End::Protocol;
                    }
                    // The server closed an idle connection (it was parked or crashed): the next
                    // statement gets a new one. A transaction holding locks is carried over at
                    // once, before statements that were waiting for those locks run again.
                    // Idle without a backend now: no release will come to give this back.
                    self.client.rest();
                    if self.holds_locks() && !self.link.killed.any() {
                        self.recover_idle().await;
                    }
                    // What was pinned to that connection is gone with it.
                    self.report_state();
                    continue;
                }
                () = &mut woken => {
                    woken.set(link.wake.notified());
                    if link.idle.expired() {
                        // MariaDB closes such a connection without a word; so does the proxy.
                        return End::Idle;
                    }
                    if link.idle.release_due() {
                        Box::pin(self.release_idle()).await;
                        self.client.rest();
                        self.report_state();
                    }
                    continue;
                }
                () = user_vars::due(idle_reads) => {
                    self.idle_reads().await;
                    locks_asked = true;
                    self.report_state();
                    continue;
                }
            };
            let lp = match lp {
                Ok(Some(lp)) => lp,
                Ok(None) => return End::Client,
                Err(e) => {
                    let Some(refusal) = e.refusal() else {
                        return End::Client;
                    };
                    let seq =
                        packet::header(&self.client.buf).map_or(0, |(_, s)| s.wrapping_add(1));
                    let _ = self.client.send(seq, &refusal.packet()).await;
                    return End::Protocol;
                }
            };
            // Killed while the command came in: the server would have shut the connection
            // before reading it.
            if self.link.killed.any() {
                return End::Killed;
            }
            let raw = self.client.buf.split_to(lp.consumed);
            let seq = lp.last_seq.wrapping_add(1);
            let result = self.command(raw, &lp, seq).await;
            idle_since = tokio::time::Instant::now();
            link.idle.touch(idle_since);
            locks_asked = false;
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
        // A database moving to another server: nothing reaches a server until it has, but an
        // open transaction runs on to its end (a boundary the move needs no replay at).
        if cmd != COM_QUIT && !self.state.in_transaction {
            self.proxy.holds.wait(&self.service).await;
        }
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
            | COM_STMT_BULK_EXECUTE
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
                    self.session_reset();
                    self.client
                        .send(
                            seq,
                            &response::ok(caps::STATUS_AUTOCOMMIT, 0, self.client_caps()),
                        )
                        .await?;
                }
            }
            // Boxed, as every path a session takes rarely and whose future is large: a session's
            // task is as large as the largest future it awaits in place, and every idle client
            // holds its task (`a_sessions_task_is_small`).
            COM_CHANGE_USER => Box::pin(self.change_user(&raw, lp, seq)).await?,
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
            COM_PROCESS_KILL => {
                // `mysql_kill()`: `KILL CONNECTION` of the 4-byte id it carries, which is one
                // the proxy greeted with or a server thread's, as for the statement.
                let id = packet::payload(&raw, lp)
                    .get(1..5)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                match id {
                    Some(id) => {
                        let k = kill::Kill {
                            scope: kill::Scope::Connection,
                            mode: None,
                            id: id.into(),
                        };
                        Box::pin(self.kill(k, seq)).await?
                    }
                    None => {
                        let malformed = SqlError::malformed_packet().packet();
                        self.client.send(seq, &malformed).await?
                    }
                }
            }
            COM_SET_OPTION => {
                let expect = expect(cmd).unwrap_or(Expect::One);
                let relayed = self.forward(&raw, seq, expect).await?;
                // `MYSQL_OPTION_MULTI_STATEMENTS_ON` (0) or `_OFF` (1), as PHP's mysqlnd sends
                // around `multi_query`: the server splits the session's queries from now on (or
                // stops), so the proxy classifies them alike, and a new backend connection is
                // made so.
                if relayed.error.is_none() {
                    match packet::payload(&raw, lp).get(1..3) {
                        Some([0, 0]) => self.login.client_caps |= caps::MULTI_STATEMENTS,
                        Some([1, 0]) => self.login.client_caps &= !caps::MULTI_STATEMENTS,
                        _ => {}
                    }
                }
            }
            COM_FIELD_LIST | COM_STATISTICS | COM_PROCESS_INFO | COM_DEBUG | COM_REFRESH => {
                let expect = expect(cmd).unwrap_or(Expect::One);
                self.forward(&raw, seq, expect).await?;
            }
            COM_REGISTER_SLAVE => Box::pin(self.register_replica(&raw, lp, seq)).await?,
            COM_BINLOG_DUMP => Box::pin(self.binlog_dump(&raw, lp, seq)).await?,
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
            return Box::pin(self.kill(k, seq)).await;
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
        // Only where the server runs the batch as statements, and only once nothing refuses it.
        if multi
            && stmts.iter().any(|s| s.kind == Kind::Kill)
            && self.refusal(sql, stmts).is_none()
            && let Some(BatchKills {
                text,
                marked,
                itself,
            }) = self.kills_in_batch(sql, stmts)
        {
            let stmts = classify::classify_all(&text);
            let framed = BytesMut::from(&query(&text)[..]);
            let payload = [&[COM_QUERY][..], &text].concat();
            let answered = self.run_query(&framed, &payload, &stmts, seq).await;
            // A batch that failed may have stopped before its `KILL`: the marked sessions go on
            // (not woken yet, they have not seen the mark). One that ran it and failed later
            // leaves its sessions to fail over instead of ending. One that ended by killing its
            // own connection ran every `KILL` before that one.
            let ran = match answered {
                Ok(None) => true,
                Ok(Some(ER_CONNECTION_KILLED)) => itself,
                _ => false,
            };
            for target in marked {
                if ran {
                    target.wake.notify_one();
                } else {
                    target.killed.unmark();
                }
            }
            return self.killed_itself(answered);
        }
        let answered = self.run_query(raw, &payload, stmts, seq).await;
        if stmts.iter().any(|s| s.kind == Kind::Kill) {
            return self.killed_itself(answered);
        }
        answered.map(drop)
    }

    /// A query with a `KILL` the server answered with `ER_CONNECTION_KILLED`: it killed the
    /// connection it ran on (`KILL CONNECTION_ID()`, or the session's own id in a batch), and
    /// closed it. The client's connection ends as well, as it would directly, rather than
    /// go on over another one.
    fn killed_itself(&mut self, answered: Result<Option<u16>, End>) -> Result<(), End> {
        if let Ok(Some(ER_CONNECTION_KILLED)) = answered {
            self.link.killed.mark();
        }
        answered.map(drop)
    }

    /// What the proxy refuses before the server sees a query: an account statement the server
    /// would lock the account out with (`requires_tls_refused`), data past the database's
    /// storage limit.
    fn refusal(&self, sql: &[u8], stmts: &[Statement]) -> Option<SqlError> {
        if let Some(refused) = self.requires_tls_refused(sql, stmts) {
            return Some(refused);
        }
        // A later statement of a multi-statement query is judged without its own text: its DDL
        // counts as adding data.
        let adds = stmts
            .iter()
            .enumerate()
            .any(|(i, s)| storage_limit::adds_data(s, if i == 0 { sql } else { b"CREATE" }));
        let limit = adds.then(|| self.proxy.dir.storage_full(&self.service))??;
        Some(storage_limit::refused(&self.service, limit))
    }

    /// A `COM_QUERY` (`raw`, framed; `payload`, its command and text) and its statements;
    /// the error the server's answer ended with, if any.
    async fn run_query(
        &mut self,
        raw: &BytesMut,
        payload: &[u8],
        stmts: &[Statement],
        seq: u8,
    ) -> Result<Option<u16>, End> {
        let sql = &payload[1..];
        if let Some(refused) = self.refusal(sql, stmts) {
            self.client.send(seq, &refused.packet()).await?;
            return Ok(Some(refused.code));
        }
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
        self.on_success = Some(effects(sql, stmts));
        let expect = Expect::ResultSets { binary: false };
        let relayed = self
            .forward_retrying(Outgoing::Raw(raw), seq, expect, on_loss)
            .await;
        self.hold_answer = false;
        self.on_success = None;
        let relayed = relayed?;
        if relayed.error.is_none() && stmts.iter().any(|s| !s.untracked_vars.is_empty()) {
            let names: Vec<String> = stmts
                .iter()
                .flat_map(|s| s.untracked_vars.clone())
                .collect();
            self.read_untracked(&names, relayed.warnings).await;
        }
        if relayed.error.is_none() {
            self.after_statements(sql, stmts).await;
        } else if stmts.iter().any(|s| s.sets_role)
            && let Some(b) = self.backend.as_mut()
        {
            // A batch that failed after its `SET ROLE` leaves the role on the connection,
            // which the session does not know of: never given to another client.
            b.role_set = true;
        }
        let class = Recording {
            writes: stmts.iter().any(replay::may_write),
            single: stmts.len() == 1,
            kind,
        };
        self.record(before, &relayed, payload, Some(expect), class);
        if let Some(answer) = relayed.held {
            self.report_state();
            self.client.write(&answer).await?;
        }
        Ok(relayed.error)
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
            self.stmts.log_ended();
            return;
        }
        let restarts = matches!(
            class.kind,
            Some(Kind::Begin | Kind::Commit | Kind::Rollback)
        );
        if !self.txlog.active || restarts {
            self.stmts.log_ended();
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
                    insert_id: r.insert_id,
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
        let mut accounts = false;
        for s in stmts {
            accounts |= s.kind == Kind::AccountManagement;
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
            Box::pin(self.proxy.dir.accounts_changed(&self.service)).await;
            Box::pin(self.learn_own_password(sql, stmts)).await;
        }
    }

    /// `KILL` of a connection id: the id the proxy greeted a client with, or the server thread
    /// id of a session's current backend connection (what `CONNECTION_ID()` and the process
    /// list show); either is found among the proxy's sessions of this database only, and the
    /// statement the server gets names that session's current backend thread. Threads that
    /// serve no session (kept connections, Stratus's own) are unknown (1094). The server
    /// judges the privilege for `KILL QUERY`; for `KILL CONNECTION` the killed session must
    /// also end its client connection rather than fail over, so the proxy allows it as the
    /// server allows a user without `CONNECTION ADMIN` (its own account's sessions) and marks
    /// the session first.
    async fn kill(&mut self, k: kill::Kill, seq: u8) -> Result<(), End> {
        let Some(target) = self.kill_target(k.id) else {
            return self
                .client
                .send(seq, &SqlError::no_such_thread(k.id).packet())
                .await;
        };
        let own = Arc::ptr_eq(&target, &self.link);
        if k.scope == kill::Scope::Connection {
            if own {
                self.link.killed.mark();
                let _ = self
                    .client
                    .send(seq, &SqlError::connection_killed().packet())
                    .await;
                return Err(End::Killed);
            }
            if target.identity().user != self.login.user {
                return self
                    .client
                    .send(seq, &SqlError::not_owner_of_thread(k.id).packet())
                    .await;
            }
            target.killed.mark();
            target.wake.notify_one();
        }
        let thread = target.backend_thread.load(Ordering::SeqCst);
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
        let framed = BytesMut::from(&query(sql.as_bytes())[..]);
        let expect = Expect::ResultSets { binary: false };
        let relayed = self
            .forward_retrying(Outgoing::Raw(&framed), seq, expect, OnLoss::Report)
            .await?;
        if let Some(answer) = relayed.held {
            self.client.write(&answer).await?;
        }
        Ok(())
    }

    /// The session a `KILL` names: by the id the proxy greeted it with, or by the server
    /// thread id of its current backend connection; sessions of this database only.
    fn kill_target(&self, id: u64) -> Option<Arc<crate::SessionLink>> {
        let id = u32::try_from(id).ok()?;
        let sessions = self.proxy.sessions_lock();
        let here = |t: &&Arc<crate::SessionLink>| t.identity().service == self.service;
        if crate::GREETING_IDS.contains(&id) {
            sessions.get(&id).filter(here).cloned()
        } else {
            // A server thread id, as `CONNECTION_ID()` and `SHOW PROCESSLIST` show them: the
            // session of this database whose connection that thread serves now (0 is no
            // thread: sessions without a connection have it).
            (sessions.values())
                .filter(|_| id != 0)
                .find(|t| here(t) && t.backend_thread.load(Ordering::Relaxed) == id)
                .cloned()
        }
    }

    /// `KILL`s among other statements of one query (`KILL ?; SELECT …` with multi-statements),
    /// answered as a lone `KILL` is ([`Self::kill`]): each that names another session of this
    /// database is rewritten to name that session's current backend thread, and the batch runs
    /// on the server as it is otherwise. A `KILL CONNECTION` of a session of the same account
    /// marks that session first (before its thread is read, as [`Self::kill`] does, so that an
    /// idle release cannot hand that thread to another session meanwhile), so that it ends
    /// rather than fails over when the server kills its connection; the caller wakes it once the
    /// batch is answered, or takes the mark back if the batch failed. A `KILL` of a session
    /// without a backend connection becomes `DO 0` (nothing to interrupt, and an OK as the
    /// `KILL`'s); one of an id of no session of this database, or a `KILL CONNECTION` of another
    /// account's session, becomes a `SIGNAL` of the error a lone one gets, so that no server
    /// thread but a session's is ever named. Only a `KILL` with no quote before it in the text
    /// is rewritten: the classifier splits statements without the session's `sql_mode` or
    /// character set, and must not be trusted to have found a `KILL` that is really inside a
    /// string. A session naming itself names `CONNECTION_ID()`, not marked: the server
    /// answers a `KILL` of its own connection (1927) before it closes it, and the caller ends
    /// the session on that answer. `None` if no `KILL` was rewritten.
    fn kills_in_batch(&self, sql: &[u8], stmts: &[Statement]) -> Option<BatchKills> {
        let mut text = Vec::new();
        let mut copied = 0;
        let mut killed = Vec::new();
        let mut itself = false;
        let quote = (sql.iter())
            .position(|b| matches!(b, b'\'' | b'"' | b'`'))
            .unwrap_or(sql.len());
        // Bounded work for a query of any size: each `KILL` looks through the sessions.
        let kills = stmts
            .iter()
            .filter(|s| s.kind == Kind::Kill)
            .take(KILLS_PER_BATCH);
        for s in kills {
            if s.span.start > quote {
                break;
            }
            let Some(k) = sql.get(s.span.clone()).and_then(kill::parse) else {
                continue;
            };
            let connection = k.scope == kill::Scope::Connection;
            let statement = match self.kill_target(k.id) {
                // As a lone `KILL` is answered: a kept connection, another database's session
                // or Stratus's own connection to the server is no thread of this client's.
                None => SqlError::no_such_thread(k.id).signal(),
                // Itself: the connection the batch runs on, which a thread id read now may
                // not be (none while idle, another once failed over).
                Some(target) if Arc::ptr_eq(&target, &self.link) => {
                    itself |= connection;
                    k.for_own_connection()
                }
                Some(target) if connection && target.identity().user != self.login.user => {
                    SqlError::not_owner_of_thread(k.id).signal()
                }
                Some(target) => {
                    // Past a `KILL` of its own connection the server runs nothing more: the
                    // sessions named after it are not marked.
                    if connection && !itself {
                        target.killed.mark();
                        killed.push(target.clone());
                    }
                    match target.backend_thread.load(Ordering::SeqCst) {
                        0 => "DO 0".to_owned(),
                        thread => k.for_thread(thread),
                    }
                }
            };
            text.extend_from_slice(&sql[copied..s.span.start]);
            text.extend_from_slice(statement.as_bytes());
            copied = s.span.end;
        }
        if copied == 0 {
            for target in killed {
                target.killed.unmark();
            }
            return None;
        }
        text.extend_from_slice(&sql[copied..]);
        Some(BatchKills {
            text,
            marked: killed,
            itself,
        })
    }

    async fn prepare(&mut self, raw: &BytesMut, lp: &packet::Logical, seq: u8) -> Result<(), End> {
        let sql = packet::payload(raw, lp)[1..].to_vec();
        self.hashing = false;
        // Preparing changes nothing on the server: always safe to send again.
        let out = Outgoing::Prepare { raw, sql: &sql };
        let r = (self.forward_retrying(out, seq, Expect::Prepare, OnLoss::Retry)).await?;
        if r.error.is_some() {
            self.stmts.prepare_failed();
        }
        Ok(())
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
        let Some(given) = statement_id(&raw[HEADER_LEN..]) else {
            return self
                .client
                .send(
                    seq,
                    &SqlError::handshake("statement command without an id").packet(),
                )
                .await;
        };
        // The id of the statement prepared last names it from here on: in what reaches the
        // backend and in the transaction's log alike.
        let id = self.stmts.resolve(given);
        if id != given {
            raw[HEADER_LEN + 1..HEADER_LEN + 5].copy_from_slice(&id.to_le_bytes());
        }
        let in_trans = self.state.in_transaction;
        let pinned = self.state.pinned_besides_transaction();
        let autocommit = self.autocommit;
        if cmd == COM_STMT_CLOSE {
            // No answer is expected, for an unknown statement either.
            let stmt = self.stmts.remove(id);
            if let (Some(b), Some(bid)) = (self.backend.as_mut(), stmt.and_then(|s| s.backend_id)) {
                let _ = b.send(COM_STMT_CLOSE, &bid.to_le_bytes()).await;
            }
            return Ok(());
        }
        // The limit first: nothing full (the rule) costs an atomic load, not a second lookup
        // of the statement on every execute.
        if executes(cmd)
            && let Some(limit) = self.proxy.dir.storage_full(&self.service)
            && let Some(stmt) = self.stmts.get_mut(id)
            && storage_limit::adds_data(&stmt.class, &stmt.sql)
        {
            let refused = storage_limit::refused(&self.service, limit);
            return self.client.send(seq, &refused.packet()).await;
        }
        // Inside a transaction whose connection is gone, long data goes to its log alone: the
        // next command's replay sends it with the rest of the transaction.
        let replay_due = self.backend.is_none() && self.txlog.active;
        if cmd == COM_STMT_SEND_LONG_DATA && !replay_due {
            // Connected first: long data belongs to the connection it reaches, and one made for
            // it must not count it lost. A failure shows at the next command.
            let _ = self.ensure_backend().await;
        }
        let logged = self.txlog.active && (in_trans || !autocommit);
        let Some((stmt, long_data)) = self.stmts.for_command(id, cmd, logged) else {
            if cmd == COM_STMT_SEND_LONG_DATA {
                return Ok(()); // no answer is expected
            }
            return self
                .client
                .send(seq, &SqlError::unknown_statement(id).packet())
                .await;
        };
        // Its header, bitmap and types are in the first physical packet, whole if short.
        let first = packet::header(raw).map_or(0, |(len, _)| len);
        let first = raw.get(HEADER_LEN..HEADER_LEN + first).unwrap_or_default();
        let last = given == crate::prepared::LAST_STMT_ID;
        if cmd == COM_STMT_EXECUTE
            && check_execute(first, stmt.params, last, stmt.types.is_some()) != ExecuteCheck::Sound
        {
            // Refused before a server misreads it: read past its end, it falls out of step with
            // the proxy (and that connection would serve the next client of the pool); read
            // without types, it crashes. The server's own answer to an untyped direct execute.
            return self
                .client
                .send(seq, &SqlError::malformed_packet().packet())
                .await;
        }
        // A prepared `KILL ?` names a session by the client's id (its greeting's or a thread's),
        // as a text `KILL` does: answered the same way, never sent to the server as it is.
        if cmd == COM_STMT_EXECUTE
            && stmt.class.kind == Kind::Kill
            && let Some(form) = kill::parse_prepared(&stmt.sql)
            && let Some(id) = execute_whole_number(first, stmt.types.as_deref())
        {
            // Types bound here are the statement's from now on; no server has seen them.
            if let Some(types) = sent_types(first, stmt.params) {
                stmt.types = first.get(types).map(<[u8]>::to_vec);
                stmt.types_sent = false;
            }
            return self.kill(form.with_id(id), seq).await;
        }
        match (cmd, long_data) {
            (COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE, LongData::Lost) => {
                let lost = SqlError::long_data_lost(&self.service);
                return self.client.send(seq, &lost.packet()).await;
            }
            // The rest of long data whose start was lost: the new connection gets none of it,
            // or the next execute after a reset would find it there.
            (COM_STMT_SEND_LONG_DATA, LongData::Lost) => return Ok(()),
            _ => {}
        }
        // An execute whose long data is on this connection alone cannot run again on another.
        let pinned = pinned || long_data == (LongData::Sent { logged: false });
        // `SET @@x = ?`, prepared: read back as the text statement is.
        let stmt_untracked = stmt.class.untracked_vars.clone();
        let class = Recording {
            writes: replay::may_write(&stmt.class),
            single: true,
            kind: Some(stmt.class.kind),
        };
        let on_loss = match cmd {
            COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => replay::on_loss(
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
            (stmt.types.as_deref())
                .and_then(|types| with_types(&payload, stmt.params, types))
                .unwrap_or_else(|| payload.into_owned())
        });
        let before = (!in_trans && self.hashing).then(|| self.state.clone());
        let Some(expect) = expect_payload(&packet::payload(raw, lp)) else {
            // COM_STMT_SEND_LONG_DATA: no answer, so a lost backend shows at the next command.
            let mut sent = false;
            if !replay_due
                && self.ensure_backend().await.is_ok()
                && let Ok(rebound) = self.statement_bytes(raw, lp, id, cmd).await
            {
                self.send_to_backend(rebound.as_deref().unwrap_or(raw))
                    .await;
                sent = true;
            }
            if !sent && !replay_due {
                self.stmts.long_data_not_sent(id);
            }
            if let (true, Some(payload)) = (self.txlog.active, recorded) {
                let entry = Entry {
                    payload,
                    expect: None,
                    checksum: 0,
                    insert_id: None,
                };
                self.txlog
                    .push(entry, false, self.proxy.cfg.replay.max_bytes);
            }
            return Ok(());
        };
        let out = Outgoing::Statement { raw, lp, id, cmd };
        // Taken on as the answer goes out; a cursor closed is counted after (counting it a
        // moment longer only makes a park wait).
        let mut effects = match executes(cmd) {
            true => effects(&stmt.sql, std::slice::from_ref(&stmt.class)),
            false => Effects::default(),
        };
        effects.cursor_if_open = expect == Expect::Cursor;
        self.on_success = Some(effects);
        let r = self.forward_retrying(out, seq, expect, on_loss).await;
        self.on_success = None;
        let r = r?;
        if executes(cmd) && r.error.is_none() && !stmt_untracked.is_empty() {
            self.read_untracked(&stmt_untracked, r.warnings).await;
        }
        if (cmd == COM_STMT_FETCH && r.status & caps::STATUS_LAST_ROW_SENT != 0)
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

    /// After `COM_RESET_CONNECTION` succeeded on the backend: the server forgot the session,
    /// including the tracking Stratus asked for.
    async fn after_reset(&mut self) {
        let (profiled, role) = (self.profiled(), self.state.role.is_some());
        if let Some(b) = self.backend.as_mut() {
            b.profiled |= profiled;
            b.role_set |= role;
            b.opaque |= self.state.opaque;
        }
        self.session_reset();
        if let Some(b) = self.backend.as_mut() {
            if let Err(e) = b.query(BACKEND_TRACKING).await {
                tracing::warn!(db = %self.service, "tracking setup after reset failed: {e:?}");
                self.drop_backend();
            }
        }
    }

    /// Before an answer the proxy writes itself: the command is over for the control plane
    /// before the client can act on it (as `relay` does for the server's answers).
    fn answered(&mut self) {
        self.share.running(&self.activity, false);
        self.report_state();
    }

    /// Tells the activity counters when this session's transaction or pin state changed.
    fn report_state(&mut self) {
        let long_data = self.stmts.long_data_pending();
        self.share.publish(&self.activity, &self.state, long_data);
    }

    /// Withdraws this session's transaction and pin from the counters (it ends or starts over).
    fn release_pins(&mut self) {
        self.share.withdraw(&self.activity);
    }
}

/// A multi-statement query with its `KILL`s rewritten ([`Session::kills_in_batch`]).
struct BatchKills {
    text: Vec<u8>,
    /// Sessions marked killed before the batch runs (never the session itself).
    marked: Vec<Arc<crate::SessionLink>>,
    /// It kills the connection it runs on: the server runs nothing after that `KILL`.
    itself: bool,
}

/// What statements of a query do to the session if they succeed: pins taken and released, and
/// whether user variables are to be read back (before the client's next command, not at once:
/// `user_vars`).
fn effects(sql: &[u8], stmts: &[Statement]) -> Effects {
    let mut e = Effects::default();
    let mut release_all_locks = false;
    for s in stmts {
        let text = sql.get(s.span.clone()).unwrap_or_default();
        e.pin.extend(s.pin);
        // The classifier reports one pin a statement: any statement that pins may also take
        // named locks (`CREATE TEMPORARY TABLE t SELECT GET_LOCK(...)`).
        if s.pin.is_some() || s.unpin == Some(Pin::NamedLock) {
            // Every `GET_LOCK` counts, with its name when the proxy can read it.
            let calls = named_lock_calls(text);
            let counted = usize::from(s.pin == Some(Pin::NamedLock));
            let extra = calls.taken.len().saturating_sub(counted);
            e.pin.extend(std::iter::repeat_n(Pin::NamedLock, extra));
            if counted == 1 && calls.taken.is_empty() {
                e.lock_names.push(None);
            }
            e.lock_names.extend(calls.taken);
            release_all_locks |= calls.release_all;
        }
        if s.unpin == Some(Pin::TempTable) && contains_word(text, b"EXISTS") {
            // `DROP TEMPORARY TABLE IF EXISTS` of a missing table succeeds with a note: alone,
            // its answer's warnings tell; among others, or with notes turned off for it, it is
            // not counted as a drop.
            if stmts.len() > 1 || contains_word(text, b"sql_notes") {
                continue;
            }
            e.drop_if_exists = true;
        }
        e.unpin.extend(s.unpin);
        // A procedure given user variables assigns them when they are OUT parameters (as
        // connectors pass those). One given none is not read back after: the session would
        // count as holding values it has not read for nothing.
        e.user_vars |= s.sets_user_vars || s.kind == Kind::Call && text.contains(&b'@');
        let word = |i: usize, w: &str| nth_word(text, i).eq_ignore_ascii_case(w.as_bytes());
        e.opaque |= matches!(s.kind, Kind::Call | Kind::Execute)
            || s.kind == Kind::Other && word(0, "EXECUTE") && word(1, "IMMEDIATE")
            || s.kind == Kind::Prepare && word(2, "FROM") && nth_word(text, 3).starts_with(b"@");
        e.next_transaction |= s.kind == Kind::Set && word(0, "SET") && word(1, "TRANSACTION");
        if s.sets_role {
            // Replayed as the client wrote it; bytes that are not UTF-8 could not be sent again
            // as they were, so the session stays on its connection instead.
            match std::str::from_utf8(text) {
                Ok(t) => e.role = Some(t.to_owned()),
                Err(_) => e.opaque = true,
            }
        }
    }
    // Locks taken in the same batch are held after it, whatever the order.
    e.release_all_locks = release_all_locks && e.lock_names.is_empty();
    e
}

/// Whether `word` appears in `text` as a whole word, in any case. Only for the rare statements
/// that need it: a match inside a string or comment errs on the side of keeping a pin.
fn contains_word(text: &[u8], word: &[u8]) -> bool {
    text.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// A statement's `i`th word, split on whitespace (empty past its end): enough to tell
/// `EXECUTE IMMEDIATE`, `SET TRANSACTION` (no scope) and `PREPARE s FROM @var` apart, without
/// allocating on every statement.
fn nth_word(text: &[u8], i: usize) -> &[u8] {
    text.split(u8::is_ascii_whitespace)
        .filter(|w| !w.is_empty())
        .nth(i)
        .unwrap_or_default()
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
        // The transaction that began used the characteristics set for it.
        state.next_transaction &= !state.in_transaction;
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

/// The `KILL`s of one query that the proxy rewrites to name backend threads; later ones go to
/// the server as written. Each looks through the sessions under their lock.
const KILLS_PER_BATCH: usize = 64;
