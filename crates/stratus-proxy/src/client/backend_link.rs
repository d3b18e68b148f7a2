//! The session's link to its database's server: the backend connection (woken, pooled,
//! recreated with the session's state), the exchange of one command and the relay of its answer
//! to the client, and the backend's ids of the client's prepared statements.

use super::{Drained, Relayed, Reprepare, Session, settle};
use crate::Directory;
use crate::activity::mono_us;
use crate::backend::{Backend, BackendError};
use crate::error::{ER_LOCK_DEADLOCK, SqlError};
use crate::pool;
use crate::relay::{Pending, RelayError, STREAM_CHUNK, forward_infile, learn_ok};
use crate::replay::{self, Checksum};
use crate::session::BACKEND_TRACKING;
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use std::time::Instant;
use stratus_core::Endpoint;
use stratus_wire::caps;
use stratus_wire::command::{
    COM_QUERY, COM_STMT_PREPARE, executes, sent_types, set_statement_id, with_types,
};
use stratus_wire::packet::{self, HEADER_LEN};
use stratus_wire::tracker::{Expect, Step, Tracker};

impl<D: Directory> Session<D> {
    /// A statement command as the current backend must get it: the statement prepared there
    /// (if it was not), its id put in place of the virtual one in `raw`, and the parameter types
    /// supplied if this backend has not seen them, in which case the command is rebuilt and
    /// returned.
    pub(super) async fn statement_bytes(
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
        if executes(cmd) {
            let payload = packet::payload(raw, lp);
            if let Some(types) = sent_types(&payload, stmt.params) {
                stmt.types = payload.get(types).map(<[u8]>::to_vec);
                stmt.types_sent = true;
            } else if let (false, Some(types)) = (stmt.types_sent, &stmt.types)
                && let Some(mut p) = with_types(&payload, stmt.params, types)
            {
                set_statement_id(&mut p, backend_id);
                stmt.types_sent = true;
                let mut framed = Vec::with_capacity(p.len() + HEADER_LEN);
                packet::write(&mut framed, &mut { lp.seq }, &p);
                rebound = Some(framed);
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
    pub(super) async fn ensure_prepared(&mut self, id: u32) -> Result<u32, Reprepare> {
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

    /// Makes sure there is a backend connection, waking the database if it is not running, and
    /// recreates the session on it.
    pub(super) async fn ensure_backend(&mut self) -> Result<(), SqlError> {
        if self.backend.is_some() {
            return Ok(());
        }
        // Boxed: a session's task is as large as the largest future it ever awaits in place,
        // and connecting (waking the database, logging in, TLS) was most of it, held by every
        // idle client (`a_sessions_task_is_small`).
        Box::pin(self.open_backend()).await
    }

    /// [`Self::ensure_backend`] without a backend.
    async fn open_backend(&mut self) -> Result<(), SqlError> {
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
                    // The server is there; Stratus has no descriptor left for the session.
                    Err(BackendError::Io(e)) if crate::out_of_descriptors(&e) => {
                        return Err(SqlError::too_many_connections(
                            "Stratus has no file descriptor left",
                        ));
                    }
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
    pub(super) async fn connect(&mut self, addr: Endpoint) -> Result<(), BackendError> {
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
                    // server would. One never taken is the client's to hear about.
                    Err(BackendError::Server(e))
                        if e.code == 1049
                            && self.state.schema.is_some()
                            && !self.schema_unconfirmed =>
                    {
                        self.state.schema = None;
                        Backend::connect(addr, &self.login, None, timeout).await?
                    }
                    // One never taken is the client's error: at the login it is refused; after
                    // it (its database was asleep then) the statement that found out is, once,
                    // and the session goes on without a schema, free to `USE` another.
                    Err(BackendError::Server(e)) if e.code == 1049 && self.schema_unconfirmed => {
                        self.state.schema = None;
                        self.schema_unconfirmed = false;
                        return Err(BackendError::Server(e));
                    }
                    other => other?,
                };
                let mut b = b;
                b.query(BACKEND_TRACKING).await?;
                b
            }
        };
        self.schema_unconfirmed = false;
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
        if let Some(n) = self.state.carried_insert_id.take()
            && let Err(e) = b.query(&format!("DO LAST_INSERT_ID({n})")).await
        {
            tracing::warn!(db = %self.service, "could not carry LAST_INSERT_ID() over: {e:?}");
        }
        self.stmts.backend_changed();
        self.link
            .backend_thread
            .store(b.connection_id, Ordering::Relaxed);
        if self.backend.replace(b).is_none() {
            self.activity.backends.fetch_add(1, Ordering::Relaxed);
        }
        self.link.idle.connected();
        // A new connection runs nothing before the transactions cut off with the last server
        // are carried over and their cut-off statements sent again. A session that is part of
        // that recovery waits for its turn before sending instead.
        if self.ticket.is_none() {
            self.recovery.settled(self.proxy.cfg.replay.timeout).await;
        }
        Ok(())
    }

    pub(super) fn pool_key(&self, addr: Endpoint) -> pool::Key {
        pool::Key {
            service: self.service.clone(),
            addr,
            user: self.login.user.clone(),
            stage1: self.login.stage1.0,
            caps: self.login.client_caps,
            charset: self.login.charset,
            schema: self.state.schema.clone(),
            tls: self.login.tls.as_ref().map(|(_, n)| *n),
        }
    }

    /// A client idle for `release_idle_after` gives its backend connection back to the pool,
    /// as one that left does, when nothing ties its session to that connection: so idle
    /// clients do not each hold a server thread (ProxySQL's multiplexing, at idle boundaries
    /// rather than every transaction's, since taking a connection again costs a login and the
    /// session's replay). Its next command takes a connection as after a wake.
    ///
    /// What the session's replay does not recreate is the last statement's diagnostics
    /// (`FOUND_ROWS()`, `ROW_COUNT()`, `SHOW WARNINGS`), which the idle read of user variables
    /// already gives up at the same age; `LAST_INSERT_ID()` is carried over.
    pub(super) async fn release_idle(&mut self) {
        if self.backend.is_none()
            || self.ticket.is_some()
            || self.link.killed.any()
            || self.proxy.holds.is_held(&self.service)
            // A replica's registration would go with the connection.
            || self.backend.as_ref().is_some_and(|b| b.replica)
        {
            return;
        }
        if self.state.user_vars_unread && self.read_user_vars().await.is_err() {
            return;
        }
        // What the proxy knows first; the server is asked only when nothing else keeps it.
        if self.state.in_transaction
            || self.state.holds_besides_named_locks()
            || self.stmts.long_data_pending()
            || self.state.user_vars_unread
            || self.state.opaque
            || self.state.next_transaction
            || self.profiled()
            || !self.named_locks_released().await
            // The next connection would be refused: a session keeps its login through a
            // change of its password, as on a server.
            || !self.login_still_valid().await
        {
            return;
        }
        let Some(b) = self.backend.as_mut() else {
            return;
        };
        match b.query("SELECT LAST_INSERT_ID()").await {
            Ok(rows) => {
                self.state.carried_insert_id = rows
                    .first()
                    .and_then(|r| r.first())
                    .and_then(|v| std::str::from_utf8(v.as_deref()?).ok()?.parse().ok())
                    .filter(|&n: &u64| n != 0);
            }
            Err(_) => {
                // Gone: the next command connects anew.
                self.drop_backend();
                return;
            }
        }
        // Against a `KILL`, which marks the session before it reads the thread: one of the two
        // sees the other (`SeqCst` on both sides).
        self.link.backend_thread.store(0, Ordering::SeqCst);
        // A `KILL` that read the thread id before it was cleared must not reach whoever takes
        // the connection next.
        if self.link.killed.any() {
            self.drop_backend();
            return;
        }
        self.activity.idle_releases.fetch_add(1, Ordering::Relaxed);
        self.give_back_backend(false).await;
    }

    /// The session's connection holds what MariaDB keeps through a reset and a change of user,
    /// as far as the proxy saw it: a profile history, a role set, a replica's registration. (A
    /// role it did not see is asked of the server, `no_role`.)
    pub(super) fn holds_what_a_change_of_user_keeps(&self) -> bool {
        self.profiled()
            || self.state.role.is_some()
            || self
                .backend
                .as_ref()
                .is_some_and(|b| b.role_set || b.replica)
    }

    /// The session turned profiling on, or its connection did before a reset: the connection
    /// keeps the `SHOW PROFILES` history through a reset and a change of user.
    pub(super) fn profiled(&self) -> bool {
        self.backend.as_ref().is_some_and(|b| b.profiled)
            || self
                .state
                .variables
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("profiling"))
    }

    /// Whether the session holds no named lock. The calls counted cannot tell (a
    /// `RELEASE_LOCK` may release nothing), so the server is asked about each name taken;
    /// `IS_USED_LOCK` reads no table and leaves the client's diagnostics as they were.
    pub(super) async fn named_locks_released(&mut self) -> bool {
        if !self.state.lock_names.is_empty() {
            self.ask_about_lock_names().await;
        }
        !self.state.unnamed_locks && !self.state.may_hold_named_locks()
    }

    /// Forgets the names the server says this session no longer holds. Without locks taken by
    /// names the proxy cannot read, what is left is all the session holds.
    async fn ask_about_lock_names(&mut self) {
        let Some(b) = self.backend.as_mut() else {
            return;
        };
        // The names are the client's own literals, without quotes or backslashes.
        let held: Vec<String> = self
            .state
            .lock_names
            .iter()
            .map(|n| format!("IS_USED_LOCK('{n}') <=> CONNECTION_ID()"))
            .collect();
        let Ok(rows) = b.query(&format!("SELECT {}", held.join(", "))).await else {
            return;
        };
        let Some(row) = rows.first() else {
            return;
        };
        let mut still = row.iter().map(|v| v.as_deref() == Some(b"1".as_slice()));
        self.state
            .lock_names
            .retain(|_| still.next().unwrap_or(true));
        if !self.state.unnamed_locks {
            self.state.named_locks = self.state.lock_names.len() as u32;
        }
    }

    /// After the client left: keep a healthy backend connection for the next client.
    pub(super) async fn release_backend(&mut self) {
        self.give_back_backend(true).await
    }

    /// Gives the backend connection to the pool. `leaving`: the session ends, and its commit
    /// marker row goes (an idle session keeps it for its next transactions).
    async fn give_back_backend(&mut self, leaving: bool) {
        // A profiled connection would show the next client this one's statements, one with a
        // role set would give it that role. Not kept.
        let holds = self.holds_what_a_change_of_user_keeps();
        let Some(mut b) = self.backend.take() else {
            return;
        };
        self.activity.backends.fetch_sub(1, Ordering::Relaxed);
        if holds {
            return;
        }
        // A procedure or a dynamic statement may have set one unseen, and an account with a
        // `DEFAULT ROLE` has one from its login: the server is asked, always. (MariaDB keeps a
        // connection's role across the pool's change of user, even once the role is revoked,
        // so such a connection would serve the account's next session with it.)
        if !no_role(&mut b).await {
            return;
        }
        if leaving && self.marker.txn > 0 && !self.state.in_transaction {
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

    pub(super) fn drop_backend(&mut self) {
        if self.backend.take().is_some() {
            self.activity.backends.fetch_sub(1, Ordering::Relaxed);
        }
        self.link.backend_thread.store(0, Ordering::Relaxed);
        // Whatever was pinned to that connection is gone with it; a recorded transaction lives
        // on in its log, and the next command replays it.
        self.state.in_transaction = self.txlog.active;
        self.state.temp_tables = 0;
        self.state.named_locks = 0;
        self.state.lock_names.clear();
        self.state.unnamed_locks = false;
        self.state.table_locks = false;
        self.state.handlers = 0;
        self.state.xa = false;
        self.state.cursors = 0;
        self.state.opaque = false;
        self.state.next_transaction = false;
        self.stmts.backend_changed();
    }

    pub(super) async fn send_to_backend(&mut self, bytes: &[u8]) {
        if let Some(b) = self.backend.as_mut() {
            if b.write(bytes).await.is_err() {
                // Noticed when reading the answer.
            }
        }
    }

    /// Sends a command's packets to the backend and relays the answer, keeping the database's
    /// activity figures. With `marked`, the commit marker goes first, in the same write.
    pub(super) async fn exchange(
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
                    self.answered();
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
        let end = Instant::now();
        self.activity.latency.observe(end - begin);
        self.activity.statements.fetch_add(1, Ordering::Relaxed);
        self.activity
            .last_statement
            .store(mono_us(end), Ordering::Relaxed);
        if matches!(result, Ok(Relayed { error: Some(_), .. })) {
            self.activity.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Reads one answer from the backend without passing it on (the marker's, and those of a
    /// replayed transaction), with its checksum.
    pub(super) async fn drain(&mut self, expect: Expect) -> Result<Drained, RelayError> {
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

    /// Relays the backend's answer to the client as it arrives, learning session state from
    /// OK packets and rewriting the few packets whose client view differs. Unchanged packets
    /// go out straight from the read buffer; one write per response, or per chunk of a large
    /// one.
    pub(super) async fn relay(
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
                if step == Step::Done {
                    // The session as the answer leaves it, before anyone hears the answer.
                    settle(&mut self.state, &mut self.autocommit, &t, expect);
                    if let Some(e) = self.on_success.take()
                        && t.error.is_none()
                    {
                        self.state.apply(e, t.status, t.warnings);
                    }
                }
                match step {
                    Step::More => {}
                    Step::Done if self.hold_answer => {
                        relayed.held = Some(out.take(&mut b.buf, pos));
                        relayed.status = t.status;
                        relayed.warnings = t.warnings;
                        relayed.error = t.error;
                        relayed.insert_id = sum.as_ref().and_then(Checksum::insert_id);
                        relayed.checksum = sum.map(|s| s.finish());
                        return Ok(relayed);
                    }
                    Step::Done | Step::LocalInfile => {
                        if step == Step::Done {
                            // Over before the client can know it: the client may act on its
                            // answer at once (park the database, say).
                            self.share.running(&self.activity, false);
                            let long_data = self.stmts.long_data_pending();
                            self.share.publish(&self.activity, &self.state, long_data);
                        }
                        out.send(&mut self.client.stream, &mut b.buf, pos, true)
                            .await?;
                        pos = 0;
                        if step == Step::Done {
                            relayed.status = t.status;
                            relayed.warnings = t.warnings;
                            relayed.error = t.error;
                            relayed.insert_id = sum.as_ref().and_then(Checksum::insert_id);
                            relayed.checksum = sum.map(|s| s.finish());
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
}

/// Whether no role is active on `b`; `false` if it cannot tell.
pub(super) async fn no_role(b: &mut Backend) -> bool {
    match b.query("SELECT CURRENT_ROLE() IS NULL").await {
        Ok(rows) => rows
            .first()
            .and_then(|r| r.first())
            .is_some_and(|v| v.as_deref() == Some(b"1".as_slice())),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests;
