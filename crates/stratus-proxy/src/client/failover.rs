//! The failover engine: a command whose backend was lost before it answered is sent again,
//! its session's transaction replayed first, or the client told truthfully what happened, as
//! `replay` decides (the rules, pure) and `recovery` orders (across the database's sessions).
//! See `docs/failover.md`.

use super::{Next, Outgoing, Relayed, ReplayError, Reprepare, Session};
use crate::Directory;
use crate::backend::BackendError;
use crate::error::SqlError;
use crate::relay::RelayError;
use crate::replay::{self, Entry, Failover, OnLoss, Outcome};
use crate::stream::End;
use std::sync::atomic::Ordering;
use std::time::Instant;
use stratus_wire::command::{COM_QUERY, query, sent_types, set_statement_id, statement_id};
use stratus_wire::packet::{self, HEADER_LEN};
use stratus_wire::response;
use stratus_wire::tracker::Expect;

impl<D: Directory> Session<D> {
    /// Forwards a command that is safe to repeat and relays its answer.
    pub(super) async fn forward(
        &mut self,
        raw: &[u8],
        seq: u8,
        expect: Expect,
    ) -> Result<Relayed, End> {
        self.hashing = false;
        self.forward_retrying(Outgoing::Raw(raw), seq, expect, OnLoss::Retry)
            .await
    }

    /// Sends a command and relays its answer. When the backend is lost before the client saw
    /// any of the answer, `on_loss` says what the command may get on a new one (see
    /// [`replay`]); a transaction the session had open is replayed first.
    pub(super) async fn forward_retrying(
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
        if std::mem::take(&mut self.recovered) && self.ticket.is_none() {
            // Its part in a recovery is over (its transaction carried over while it sat idle,
            // its cut-off COMMIT found committed, its statement sent again) and it already has
            // the new server; what it sends now is new, and goes after every other session's
            // part, as a new connection's first statement does (`ensure_backend`). Sent before,
            // it could take locks that a transaction still to be replayed had held, and that
            // replay would differ. Only sessions that took part wait: one that has not noticed
            // its loss yet must send, fail and join at once, or the recovery would go on
            // without it (and, waiting here, it would never notice).
            self.recovery.settled(limits.timeout).await;
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
                self.join_recovery(true, None);
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
        self.share.running(&self.activity, true);
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
                    // The server closes its connection after such an error (a packet past
                    // `max_allowed_packet`, out of order); when it has, so does the proxy: the
                    // client was told why, and going on over a new connection would hide a
                    // lost session.
                    self.after_net_error = r.error.is_some_and(response::closes_connection);
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
                Err(RelayError::LostBeforeAnswer) if self.link.killed.any() => {
                    // Killed on purpose, not lost: no failover, and no answer either, as the
                    // server shuts the killed connection down mid-statement (the client sees
                    // 2013, the connection lost during its query).
                    self.drop_backend();
                    self.txlog.clear();
                    break Err(End::Killed);
                }
                Err(RelayError::LostBeforeAnswer) if std::mem::take(&mut self.after_net_error) => {
                    // Closed after the network error it answered last (before the session
                    // noticed): the session ends with it.
                    self.drop_backend();
                    self.txlog.clear();
                    break Err(End::Protocol);
                }
                Err(RelayError::LostBeforeAnswer) => {
                    self.drop_backend();
                    let resent = matches!(on_loss, OnLoss::Retry | OnLoss::Replay | OnLoss::Commit);
                    self.join_recovery(self.holds_locks(), resent.then_some(self.last_sent));
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
        self.share.running(&self.activity, false);
        result
    }

    /// Takes (or keeps) this session's place in its database's recovery: see `recovery`.
    fn join_recovery(&mut self, holds_locks: bool, cut_off: Option<Instant>) {
        let ticket = self.ticket.take();
        self.ticket = Some(self.recovery.lost(ticket, self.id, holds_locks, cut_off));
        self.recovered = true;
    }

    /// The open transaction took locks (it wrote, or read with a locking clause) and can be
    /// replayed: after a crash it goes before anything that may have waited for those locks.
    pub(super) fn holds_locks(&self) -> bool {
        self.txlog.active && self.txlog.wrote && self.txlog.unreplayable.is_none()
    }

    /// Carries the open transaction over to a new server as soon as the session notices its
    /// backend gone, while its client is idle: statements of other sessions that were waiting
    /// for its locks must not get them first. If it cannot be carried over the client hears
    /// why at its next command; if there is no server to carry it to (the database was put to
    /// sleep), the next command tries again.
    pub(super) async fn recover_idle(&mut self) {
        let limits = self.proxy.cfg.replay;
        self.join_recovery(true, None);
        self.share.running(&self.activity, true);
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
        self.share.running(&self.activity, false);
    }

    /// Carries the session's open transaction over to a new backend: the session as it was when
    /// the transaction began, then each recorded command, its answer compared with the one the
    /// client saw.
    pub(super) async fn replay_transaction(&mut self) -> Result<(), ReplayError> {
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

    pub(super) async fn replay_entries(&mut self, entries: &[Entry]) -> Result<(), ReplayError> {
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
                if let Some(stmt) = self.stmts.get_mut(vid)
                    && let Some(types) =
                        sent_types(&payload, stmt.params).and_then(|t| payload.get(t))
                {
                    stmt.types = Some(types.to_vec());
                    stmt.types_sent = true;
                }
                set_statement_id(&mut payload, bid);
            }
            if let Some(id) = e.insert_id {
                // The value the client was told, not the next one the new server would give.
                let set = query(format!("SET insert_id = {id}").as_bytes());
                self.send_to_backend(&set).await;
                let d = self
                    .drain(Expect::ResultSets { binary: false })
                    .await
                    .map_err(|_| ReplayError::Lost)?;
                if d.error.is_some() {
                    return Err(ReplayError::Mismatch(i));
                }
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
    pub(super) async fn commit_resolved(&mut self) -> Result<bool, ReplayError> {
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
    pub(super) async fn ended(
        &mut self,
        seq: u8,
        failover: Option<(Instant, u32)>,
        outcome: Outcome,
    ) -> Result<Relayed, End> {
        self.forget_transaction();
        let status = self.status();
        self.answered();
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
    pub(super) async fn replay_failed(
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

    pub(super) fn rolled_back(&self, why: &str) -> SqlError {
        SqlError::rolled_back_by_failover(&self.service, why)
    }

    /// Out of attempts or time.
    pub(super) async fn give_up(
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
    pub(super) async fn unknown_outcome(
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

    pub(super) fn lost_during_statement(&self, why: &str) -> SqlError {
        SqlError::connection_lost(&self.service, why)
    }

    /// The client's transaction is over, whatever ended it.
    pub(super) fn forget_transaction(&mut self) {
        self.txlog.clear();
        self.state.in_transaction = false;
    }

    /// Answers the command with an error; the session goes on.
    pub(super) async fn answer_error(&mut self, seq: u8, err: SqlError) -> Result<Relayed, End> {
        self.activity.errors.fetch_add(1, Ordering::Relaxed);
        self.answered();
        self.client.send(seq, &err.packet()).await?;
        Ok(Relayed {
            error: Some(err.code),
            ..Relayed::default()
        })
    }

    /// Counts a failover and tells the control plane.
    pub(super) fn report_failover(&self, f: (Instant, u32), outcome: Outcome, detail: String) {
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
}

#[cfg(test)]
mod tests;
