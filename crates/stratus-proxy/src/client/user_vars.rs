//! User variables, read back from the server after a statement assigns them, so that a new
//! backend connection can be given them again.
//!
//! The read is a `SELECT` of the proxy's own on the client's connection, and any statement
//! changes what `FOUND_ROWS()`, `ROW_COUNT()`, `SHOW WARNINGS` and the warning counts say about
//! the statement before it. So it never runs right after the assignment: it runs just before the
//! client's next command, or, while the client's commands read those diagnostics, after them;
//! and once the client has been idle for [`READ_DELAY`].
//!
//! Until then the values exist only on the backend connection
//! ([`SessionState::user_vars_unread`](crate::session::SessionState::user_vars_unread)): the idle
//! monitor does not suspend the database under it (an operator's suspend or park does not wait
//! for it), and a backend lost meanwhile is
//! reported to the client (error 1927) rather than the session going on silently with the
//! values read before.

use super::Session;
use crate::Directory;
use crate::backend::BackendError;
use crate::error::SqlError;
use crate::session::{BACKEND_TRACKING, NOT_REPLAYED, UserVar, user_var_literal};
use std::time::Duration;
use stratus_wire::command::*;
use stratus_wire::response::{self, OkPacket};

/// How long a client may sit idle before the user variables it assigned are read back anyway.
/// A timer alone cannot beat the monitor: it suspends a database idle for its policy's
/// `idle_to_suspend_ms` (10 s by default, less if a policy says so), and suspending closes the
/// server's sessions. The monitor waits for the read (`unread_user_variables` in its activity
/// view); this delay only bounds how long it waits, and leaves a person at a prompt time
/// to type `SELECT FOUND_ROWS()`.
pub(super) const READ_DELAY: Duration = Duration::from_secs(10);

/// Session variables whose value, read and assigned back, is not a no-op, besides those never
/// replayed ([`NOT_REPLAYED`]: one-shot ids, random seeds, which read as 0): `identity` (one
/// more name of `last_insert_id`), a timestamp read while it follows the clock would stop it,
/// the unscoped transaction characteristics (which apply to the next transaction only) would
/// be overwritten, a character set resets its collation and `max_join_size` resets
/// `sql_big_selects` (changes tracking does not report), `system_versioning_asof` set to
/// `DEFAULT` reads back as a value it refuses, and deprecated variables warn again (over what
/// a later statement of the same query left).
const NOT_REASSIGNED: &[&str] = &[
    "timestamp",
    "system_versioning_asof",
    "character_set_connection",
    "character_set_database",
    "character_set_server",
    "max_join_size",
    "big_tables",
    "keep_files_on_create",
    "max_tmp_tables",
    "old",
    "old_alter_table",
    "storage_engine",
    "identity",
    "tx_isolation",
    "transaction_isolation",
    "tx_read_only",
    "transaction_read_only",
    "debug_sync",
];

const READ_SQL: &str = "SELECT VARIABLE_NAME, VARIABLE_VALUE, VARIABLE_TYPE, CHARACTER_SET_NAME FROM information_schema.USER_VARIABLES";

/// The backend went away before the read could run.
pub(super) struct Lost;

impl<D: Directory> Session<D> {
    /// Before a command, with user variables not read back yet: reads them, unless the command
    /// reads the previous statement's diagnostics. The error, when the backend holding them was
    /// lost, answers the command instead (outside a transaction: inside one, its replay assigns
    /// them again).
    pub(super) async fn user_vars_before(&mut self, cmd: u8, payload: &[u8]) -> Option<SqlError> {
        if !self.state.user_vars_unread {
            return None;
        }
        let diagnostics = match cmd {
            // Answered by the proxy, answered by nobody, or the end of the session's state.
            COM_QUIT
            | COM_PING
            | COM_STMT_CLOSE
            | COM_STMT_SEND_LONG_DATA
            | COM_RESET_CONNECTION
            | COM_CHANGE_USER => return None,
            COM_QUERY | COM_STMT_PREPARE => is_diagnostics(payload.get(1..).unwrap_or_default()),
            COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => statement_id(payload)
                .and_then(|id| self.stmts.get_mut(self.stmts.resolve(id)))
                .is_some_and(|s| is_diagnostics(&s.sql)),
            _ => false,
        };
        if diagnostics {
            return None;
        }
        match self.read_user_vars().await {
            Ok(()) => None,
            Err(Lost) if self.state.in_transaction => None,
            Err(Lost) => {
                // Told once; the session goes on with the values read before.
                self.state.user_vars_unread = false;
                Some(SqlError::user_vars_lost(&self.service))
            }
        }
    }

    /// The client has been idle for [`READ_DELAY`] with user variables not read back, or with
    /// named locks the server has not said are free: both are asked once nothing the client
    /// does can be disturbed, so that the lifecycle sees the session as it is (a lock released
    /// by a `RELEASE_LOCK` the proxy could not count keeps the database awake until then).
    pub(super) async fn idle_reads(&mut self) {
        // A lost backend is reported at the next command.
        if self.state.user_vars_unread && self.read_user_vars().await.is_err() {
            return;
        }
        self.named_locks_released().await;
    }

    /// Asks the server for the session variables the client assigned as `SET @@x`, which
    /// MariaDB's session tracking does not report (`classify::Statement::untracked_vars`):
    /// without their values a new backend connection would lose them (an idle release after
    /// 10 s, a wake, a failover), and the proxy would not see a `wait_timeout` set so. Asked
    /// only after a statement that succeeded, whose names therefore exist.
    ///
    /// Each is assigned its own value at session scope, which the tracking does report: a
    /// `SET`, so `ROW_COUNT()` and `FOUND_ROWS()` answer as after the client's own, and the
    /// warnings it left stay (no table is used). The rest are read with a `SELECT` instead, which
    /// `ROW_COUNT()` and `FOUND_ROWS()` then describe: those whose assignment is not neutral
    /// ([`NOT_REASSIGNED`]), those the client's statement had warnings about (the assignment
    /// could repeat them, and replace the rest), those set inside a transaction (where the
    /// server refuses to change some, and an error would join the client's warnings), and any
    /// the assignment did not report.
    pub(super) async fn read_untracked(&mut self, names: &[String], warnings: u16) {
        let neutral = warnings == 0 && !self.state.in_transaction;
        let (assigned, mut left): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| {
            neutral
                && !(NOT_REPLAYED.iter().chain(NOT_REASSIGNED)).any(|r| n.eq_ignore_ascii_case(r))
        });
        if !assigned.is_empty() {
            let Some(b) = self.backend.as_mut() else {
                return;
            };
            // Names the lexer read as identifiers: no quote can be in them.
            let sets: Vec<String> = assigned
                .iter()
                .map(|n| format!("@@session.`{n}` = @@session.`{n}`"))
                .collect();
            match b.exec_ok(&format!("SET {}", sets.join(", "))).await {
                Ok(ok) => {
                    let mut reported = Vec::new();
                    if let Ok(ok) = OkPacket::decode(&ok, b.caps)
                        && let Ok(changes) = response::changes(ok.session_state)
                    {
                        for (n, v) in changes.iter().filter_map(|c| c.system_variable()) {
                            let name = String::from_utf8_lossy(n);
                            self.state
                                .variable_changed(&name, &String::from_utf8_lossy(v));
                            reported.push(name.into_owned());
                        }
                    }
                    left.extend(
                        assigned
                            .into_iter()
                            .filter(|n| !reported.iter().any(|r| r.eq_ignore_ascii_case(n))),
                    );
                }
                Err(BackendError::Server(e)) => {
                    tracing::debug!(db = %self.service, code = e.code, "session variables not assigned back: {}", e.message);
                    left.extend(assigned);
                }
                Err(e) => {
                    tracing::info!(db = %self.service, "backend lost before session variables were read back: {e:?}");
                    self.drop_backend();
                    return;
                }
            }
        }
        if !left.is_empty() {
            self.select_untracked(&left).await;
        }
        // The client changed its own session tracking: the backend must still track
        // everything, as after a tracked change.
        if names.iter().any(|n| n.starts_with("session_track_"))
            && let Some(b) = self.backend.as_mut()
            && let Err(e) = b.query(BACKEND_TRACKING).await
        {
            tracing::warn!(db = %self.service, "tracking setup failed: {e:?}");
        }
    }

    /// Reads session variables with a `SELECT` that reads no table (the warnings stay).
    async fn select_untracked(&mut self, names: &[&String]) {
        let Some(b) = self.backend.as_mut() else {
            return;
        };
        let columns: Vec<String> = names.iter().map(|n| format!("@@session.`{n}`")).collect();
        match b.query(&format!("SELECT {}", columns.join(", "))).await {
            Ok(rows) => {
                let row = rows.into_iter().next().unwrap_or_default();
                for (name, value) in names.iter().zip(row) {
                    if let Some(v) = value {
                        self.state
                            .variable_changed(name, &String::from_utf8_lossy(&v));
                    }
                }
            }
            Err(BackendError::Server(e)) => {
                tracing::debug!(db = %self.service, code = e.code, "session variables not read back: {}", e.message);
            }
            Err(e) => {
                tracing::info!(db = %self.service, "backend lost before session variables were read back: {e:?}");
                self.drop_backend();
            }
        }
    }

    /// Snapshots every user variable with its type, to recreate them on a new backend. A
    /// backend that is gone is dropped, its variables left unread.
    pub(super) async fn read_user_vars(&mut self) -> Result<(), Lost> {
        let Some(b) = self.backend.as_mut() else {
            return Err(Lost);
        };
        match b.query(READ_SQL).await {
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
            Err(BackendError::Server(e)) => {
                tracing::warn!(db = %self.service, code = e.code, "cannot read user variables back: {}", e.message);
                // Only this connection has their values now: not given up while idle.
                self.state.opaque = true;
            }
            Err(e) => {
                tracing::info!(db = %self.service, "backend lost before user variables were read back: {e:?}");
                self.drop_backend();
                return Err(Lost);
            }
        }
        self.state.user_vars_unread = false;
        Ok(())
    }
}

/// Fires at `at`; never without it.
pub(super) async fn due(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether a statement reads the previous statement's diagnostics (`FOUND_ROWS()`,
/// `ROW_COUNT()`, `SHOW WARNINGS|ERRORS`, `SHOW COUNT(*) …`, `GET DIAGNOSTICS`,
/// `@@warning_count`, `@@error_count`), so that no statement of the proxy's may run before it.
/// Words are matched anywhere, case-insensitively: a match in a string or a comment only makes
/// the read wait for a later command.
pub(super) fn is_diagnostics(sql: &[u8]) -> bool {
    let mut words = sql
        .split(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$'))
        .filter(|w| !w.is_empty());
    let mut after_show = false;
    words.any(|w| {
        let is = |k: &str| w.eq_ignore_ascii_case(k.as_bytes());
        let hit = is("FOUND_ROWS")
            || is("ROW_COUNT")
            || is("WARNING_COUNT")
            || is("ERROR_COUNT")
            || is("DIAGNOSTICS")
            || (after_show && (is("WARNINGS") || is("ERRORS") || is("COUNT")));
        after_show = is("SHOW");
        hit
    })
}

#[cfg(test)]
mod tests {
    use super::is_diagnostics;

    #[test]
    fn diagnostics_statements() {
        for sql in [
            "SELECT FOUND_ROWS()",
            "select found_rows()",
            "SELECT ROW_COUNT()",
            "/* c */ SHOW WARNINGS",
            "show errors limit 1",
            "SHOW COUNT(*) WARNINGS",
            "GET DIAGNOSTICS @n = NUMBER",
            "GET CURRENT DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT",
            "SELECT @@warning_count",
            "SELECT @@session.error_count, 1",
            "SELECT 1, row_count()",
        ] {
            assert!(is_diagnostics(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "SELECT my_found_rows FROM t",
            "SELECT row_counter FROM t",
            "SHOW TABLES",
            "SELECT warnings FROM t",
            "INSERT INTO t VALUES (1)",
            "",
        ] {
            assert!(!is_diagnostics(sql.as_bytes()), "{sql}");
        }
    }
}
