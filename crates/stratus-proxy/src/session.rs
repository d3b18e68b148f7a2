//! What a client's session holds beyond its backend connection, so it can be recreated on any
//! new backend connection (after a wake, a crash, a move): current schema, session system
//! variables, user variables, text prepared statements; and what pins it to its backend.
//!
//! System variables and the schema are learnt from the backend's session tracking
//! (<https://mariadb.com/kb/en/session-tracking/>), which sees changes the lexer cannot (inside
//! procedures, `init_connect`) but not `SET @@x` without a scope, whose values are read back
//! (`client::user_vars`); user variables are read back from
//! `information_schema.USER_VARIABLES` after a statement that assigns them.

use stratus_core::sql::quote_str;
use stratus_wire::classify::Pin;

/// The tracking Stratus asks of every backend connection.
pub const BACKEND_TRACKING: &str = "SET session_track_system_variables='*', session_track_schema=ON, \
     session_track_state_change=ON, session_track_transaction_info='CHARACTERISTICS'";

/// The most lock names a session remembers ([`SessionState::lock_names`]): they are only
/// forgotten once the server says they are released, which a client that never idles never
/// lets happen, and all are asked about in one statement.
pub const LOCK_NAMES_MAX: usize = 64;

/// What a command does to the session beyond what session tracking reports, if it succeeds:
/// taken on as its answer goes out, before the client can act on that answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    pub pin: Vec<Pin>,
    pub unpin: Vec<Pin>,
    /// It assigned user variables, which are to be read back (`client::user_vars`).
    pub user_vars: bool,
    /// It opened a server-side cursor if its answer's status says one exists
    /// (`COM_STMT_EXECUTE` with a cursor flag).
    pub cursor_if_open: bool,
    /// It may have made state the proxy cannot see (see [`SessionState::opaque`]).
    pub opaque: bool,
    /// It set the characteristics of the next transaction only (`SET TRANSACTION` without a
    /// scope), which the server reports to no tracker Stratus reads.
    pub next_transaction: bool,
    /// Names of the named locks it took (see [`SessionState::lock_names`]); `None` for a name
    /// the proxy cannot read.
    pub lock_names: Vec<Option<String>>,
    /// It called `RELEASE_ALL_LOCKS()` and took none: no named lock is held after it.
    pub release_all_locks: bool,
    /// Its last `SET ROLE` statement, which a replay runs again (no variable tracks the
    /// current role).
    pub role: Option<String>,
    /// Its `DROP TEMPORARY TABLE IF EXISTS` dropped a table only if the answer has no warning
    /// (a missing table is a note).
    pub drop_if_exists: bool,
}

/// Variables that describe one statement or transaction, or that the server maintains itself
/// (read-only): tracked, never replayed.
pub(crate) const NOT_REPLAYED: &[&str] = &[
    "insert_id",
    "last_insert_id",
    "rand_seed1",
    "rand_seed2",
    "gtid_seq_no",
    "pseudo_thread_id",
    "last_gtid",
];

/// The client's own view of session tracking: what it would get from a server it talked to
/// directly. Entries beyond it, which exist because Stratus tracks everything, are filtered out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTracking {
    /// `None`: `*`.
    pub variables: Option<Vec<String>>,
    pub schema: bool,
    pub state_change: bool,
    pub transaction_info: bool,
}

impl Default for ClientTracking {
    /// MariaDB 10.11's defaults.
    fn default() -> Self {
        Self {
            variables: Some(
                [
                    "autocommit",
                    "character_set_client",
                    "character_set_connection",
                    "character_set_results",
                    "time_zone",
                ]
                .map(String::from)
                .to_vec(),
            ),
            schema: true,
            state_change: false,
            transaction_info: false,
        }
    }
}

impl ClientTracking {
    pub fn wants_variable(&self, name: &str) -> bool {
        match &self.variables {
            None => true,
            Some(list) => list.iter().any(|v| v.eq_ignore_ascii_case(name)),
        }
    }

    /// Learns a change of the client's own tracking settings.
    fn learn(&mut self, name: &str, value: &str) {
        let on = |v: &str| v.eq_ignore_ascii_case("ON") || v == "1";
        match name {
            "session_track_system_variables" => {
                self.variables = if value.trim() == "*" {
                    None
                } else {
                    Some(
                        value
                            .split(',')
                            .map(|s| s.trim().to_ascii_lowercase())
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                };
            }
            "session_track_schema" => self.schema = on(value),
            "session_track_state_change" => self.state_change = on(value),
            "session_track_transaction_info" => {
                self.transaction_info = !value.eq_ignore_ascii_case("OFF")
            }
            _ => {}
        }
    }
}

/// A user variable with its value as an SQL literal that recreates it with the same type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserVar {
    pub name: String,
    pub literal: String,
}

#[derive(Debug, Clone, Default)]
pub struct SessionState {
    pub schema: Option<String>,
    /// Session system variables changed by the client, in the order last changed.
    pub variables: Vec<(String, String)>,
    pub user_vars: Vec<UserVar>,
    /// Text prepared statements: name and the `PREPARE` statement that made it.
    pub text_prepared: Vec<(String, String)>,
    /// The last `SET ROLE` statement (`NONE` too: a new connection would take the account's
    /// default role).
    pub role: Option<String>,
    pub tracking: ClientTracking,
    pub in_transaction: bool,
    pub temp_tables: u32,
    pub named_locks: u32,
    pub table_locks: bool,
    pub handlers: u32,
    pub xa: bool,
    pub cursors: u32,
    /// A statement assigned user variables that the proxy has not read back yet (it waits, so
    /// as not to disturb the diagnostics the client may ask for next: `client::user_vars`).
    /// Until then they exist only on the backend connection: a lost backend cannot take them
    /// along (inside a transaction its replay assigns them again). Not a pin for the lifecycle:
    /// the idle monitor waits for the read, an operator's suspend or park does not.
    pub user_vars_unread: bool,
    /// A statement ran whose effects the proxy cannot see (`CALL`, `EXECUTE`,
    /// `EXECUTE IMMEDIATE`: locks or temporary tables made inside are not counted), or a text
    /// statement was prepared from a user variable (its replay would read the variable's later
    /// value). Until the session is reset, an idle release leaves its connection alone.
    pub opaque: bool,
    /// `SET TRANSACTION` without a scope, not yet used by a transaction: held by the
    /// connection alone.
    pub next_transaction: bool,
    /// `LAST_INSERT_ID()` of a backend connection given back while the client was idle, for
    /// the next one (a reset or a change of user forgets it with the rest).
    pub carried_insert_id: Option<u64>,
    /// Named locks taken by a literal name and not known to be released: `named_locks` counts
    /// calls, but a `RELEASE_LOCK` may release nothing (a lock not held, or held twice), so an
    /// idle release asks the server which of these it still holds.
    pub lock_names: Vec<String>,
    /// A named lock was taken by a name the proxy cannot read: held, as far as the proxy
    /// knows, until `RELEASE_ALL_LOCKS()` or a reset.
    pub unnamed_locks: bool,
}

impl SessionState {
    /// Why the session cannot move to another backend connection right now, if it cannot.
    pub fn pinned(&self) -> Option<&'static str> {
        if self.in_transaction {
            Some("open transaction")
        } else if self.temp_tables > 0 {
            Some("temporary tables")
        } else if self.may_hold_named_locks() {
            Some("named locks (GET_LOCK)")
        } else if self.table_locks {
            Some("LOCK TABLES")
        } else if self.handlers > 0 {
            Some("open HANDLER")
        } else if self.xa {
            Some("XA transaction")
        } else if self.cursors > 0 {
            Some("open cursor")
        } else {
            None
        }
    }

    /// [`Self::holds_connection_state`] but for named locks, which the idle release asks the
    /// server about.
    pub fn holds_besides_named_locks(&self) -> bool {
        self.temp_tables > 0 || self.table_locks || self.handlers > 0 || self.xa || self.cursors > 0
    }

    /// State other than a transaction that only its backend connection has: lost with it.
    pub fn pinned_besides_transaction(&self) -> bool {
        self.holds_connection_state() || (self.user_vars_unread && !self.in_transaction)
    }

    /// State that lives on its backend connection and that no replay brings back on another
    /// (an open transaction can be replayed; this cannot): what the `pinned` gauge counts.
    pub fn holds_connection_state(&self) -> bool {
        self.may_hold_named_locks() || self.holds_besides_named_locks()
    }

    /// Whether a named lock may still be held: calls counted, or a lock taken by name that
    /// the server has not yet said is free. A `RELEASE_LOCK` of a lock not held counts down
    /// but releases nothing, so a count of 0 alone does not tell (the client asks the server
    /// once idle: `lock_names`).
    pub fn may_hold_named_locks(&self) -> bool {
        self.named_locks > 0 || !self.lock_names.is_empty()
    }

    /// Takes on what a statement that succeeded did to the session; `status` and `warnings`
    /// are its answer's.
    pub fn apply(&mut self, e: Effects, status: u16, warnings: u16) {
        for p in e.pin {
            self.pin(p);
        }
        for p in e.unpin {
            // With `sql_notes` off, a missing table is not even a note: nothing tells.
            if p == Pin::TempTable && e.drop_if_exists && (warnings > 0 || self.notes_off()) {
                continue;
            }
            self.unpin(p);
        }
        if e.release_all_locks {
            self.named_locks = 0;
            self.lock_names.clear();
            self.unnamed_locks = false;
        }
        for name in e.lock_names {
            match name {
                Some(n) if self.lock_names.contains(&n) => {}
                // Past the bound, as a name the proxy cannot read: kept until all are released.
                Some(_) if self.lock_names.len() >= LOCK_NAMES_MAX => self.unnamed_locks = true,
                Some(n) => self.lock_names.push(n),
                None => self.unnamed_locks = true,
            }
        }
        if e.role.is_some() {
            self.role = e.role;
        }
        self.user_vars_unread |= e.user_vars;
        self.opaque |= e.opaque;
        self.next_transaction |= e.next_transaction;
        if e.cursor_if_open && status & stratus_wire::caps::STATUS_CURSOR_EXISTS != 0 {
            self.cursors += 1;
        }
    }

    /// The session turned `sql_notes` off (as `mariadb-dump`'s output does).
    fn notes_off(&self) -> bool {
        self.variables
            .iter()
            .any(|(n, v)| n == "sql_notes" && (v == "0" || v.eq_ignore_ascii_case("OFF")))
    }

    pub fn pin(&mut self, p: Pin) {
        match p {
            Pin::TempTable => self.temp_tables += 1,
            Pin::NamedLock => self.named_locks += 1,
            Pin::TableLock => self.table_locks = true,
            Pin::Handler => self.handlers += 1,
            Pin::Xa => self.xa = true,
        }
    }

    pub fn unpin(&mut self, p: Pin) {
        match p {
            Pin::TempTable => self.temp_tables = self.temp_tables.saturating_sub(1),
            Pin::NamedLock => self.named_locks = self.named_locks.saturating_sub(1),
            Pin::TableLock => self.table_locks = false,
            Pin::Handler => self.handlers = self.handlers.saturating_sub(1),
            Pin::Xa => self.xa = false,
        }
    }

    /// Records a tracked system variable change; returns whether the client's own view of
    /// tracking includes it.
    pub fn variable_changed(&mut self, name: &str, value: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if name.starts_with("session_track_") {
            self.tracking.learn(&name, value);
            return true;
        }
        let wanted = self.tracking.wants_variable(&name);
        if NOT_REPLAYED.contains(&name.as_str()) {
            return wanted;
        }
        self.variables.retain(|(n, _)| *n != name);
        self.variables.push((name, value.to_owned()));
        wanted
    }

    /// Everything reset (`COM_RESET_CONNECTION`, `COM_CHANGE_USER`), the schema kept.
    pub fn reset(&mut self) {
        *self = Self {
            schema: self.schema.take(),
            ..Self::default()
        };
    }

    /// Statements that recreate this state on a fresh backend connection (after tracking is set
    /// up and the schema selected at login).
    /// Each system variable alone, for when the combined statement of [`replay`](Self::replay)
    /// fails and the variables that can still be set should be.
    pub fn replay_variables_one_by_one(&self) -> Vec<String> {
        self.variables_in_replay_order()
            .map(|(n, v)| format!("SET SESSION `{n}` = {}", variable_literal(n, v)))
            .collect()
    }

    /// The variables in the order they are set again: a character set before the rest (setting
    /// one resets its collation to the set's default) and `max_join_size` too (it resets
    /// `sql_big_selects`), otherwise as they were last changed.
    fn variables_in_replay_order(&self) -> impl Iterator<Item = &(String, String)> {
        let resets_others = |n: &str| n.starts_with("character_set_") || n == "max_join_size";
        let (first, rest): (Vec<_>, Vec<_>) =
            self.variables.iter().partition(|(n, _)| resets_others(n));
        first.into_iter().chain(rest)
    }

    pub fn replay(&self) -> Vec<String> {
        // The client's own tracking settings are not replayed: the backend always tracks
        // everything, and `tracking` filters what the client is shown.
        let mut out = Vec::new();
        if !self.variables.is_empty() {
            let vars: Vec<String> = self
                .variables_in_replay_order()
                .map(|(n, v)| format!("SESSION `{n}` = {}", variable_literal(n, v)))
                .collect();
            out.push(format!("SET {}", vars.join(", ")));
        }
        // Second (the first statement is the variables', which have a fallback of their own):
        // the role's privileges may be what the prepared statements need.
        out.extend(self.role.clone());
        if !self.user_vars.is_empty() {
            let sets: Vec<String> = self
                .user_vars
                .iter()
                .map(|u| format!("@`{}` = {}", u.name.replace('`', "``"), u.literal))
                .collect();
            out.push(format!("SET {}", sets.join(", ")));
        }
        out.extend(self.text_prepared.iter().map(|(_, sql)| sql.clone()));
        out
    }
}

/// A tracked value as an SQL literal: numbers bare, `NULL` for the character-set variables a
/// client set to NULL (tracked as empty), everything else a quoted string.
fn variable_literal(name: &str, value: &str) -> String {
    // Tracking reports NULL as empty; these take NULL and refuse ''.
    let nullable = name.starts_with("character_set_")
        || name == "default_tmp_storage_engine"
        || name == "enforce_storage_engine";
    if value.is_empty() && nullable {
        return "NULL".into();
    }
    let numeric = !value.is_empty()
        && value
            .bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || b == b'.' || (i == 0 && b == b'-'))
        && value.bytes().filter(|&b| b == b'.').count() <= 1
        && value != "-";
    if numeric {
        value.to_owned()
    } else {
        quote_str(value)
    }
}

/// The literal that recreates a user variable from a row of `information_schema.USER_VARIABLES`.
pub fn user_var_literal(value: Option<&[u8]>, ty: &str, charset: Option<&str>) -> String {
    let Some(value) = value else {
        return "NULL".into();
    };
    let text = String::from_utf8_lossy(value);
    match ty {
        "INT" if text.parse::<i128>().is_ok() => text.into_owned(),
        "DECIMAL"
            if text
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') =>
        {
            text.into_owned()
        }
        "DOUBLE" if text.parse::<f64>().is_ok() => format!("CAST({} AS DOUBLE)", quote_str(&text)),
        _ => {
            let hex: String = value.iter().map(|b| format!("{b:02X}")).collect();
            match charset {
                Some(cs)
                    if cs != "binary"
                        && cs.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                {
                    format!("_{cs} X'{hex}'")
                }
                _ => format!("X'{hex}'"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_recreates_variables_in_order() {
        let mut s = SessionState::default();
        s.variable_changed("sql_mode", "ANSI_QUOTES");
        s.variable_changed("sort_buffer_size", "262144");
        s.variable_changed("SQL_MODE", "STRICT_ALL_TABLES");
        s.variable_changed("character_set_results", "");
        s.variable_changed("collation_connection", "latin1_bin");
        s.variable_changed("character_set_connection", "latin1");
        s.variable_changed("insert_id", "5");
        s.user_vars.push(UserVar {
            name: "a".into(),
            literal: "1".into(),
        });
        s.text_prepared
            .push(("s1".into(), "PREPARE s1 FROM 'SELECT 1'".into()));
        for role in ["SET ROLE a", "SET ROLE NONE"] {
            let e = Effects {
                role: Some(role.into()),
                ..Effects::default()
            };
            s.apply(e, 0, 0);
        }
        s.apply(Effects::default(), 0, 0);
        assert_eq!(
            s.replay(),
            [
                // Character sets first: each resets its collation.
                "SET SESSION `character_set_results` = NULL, SESSION `character_set_connection` = 'latin1', SESSION `sort_buffer_size` = 262144, SESSION `sql_mode` = 'STRICT_ALL_TABLES', SESSION `collation_connection` = 'latin1_bin'",
                "SET ROLE NONE",
                "SET @`a` = 1",
                "PREPARE s1 FROM 'SELECT 1'",
            ]
        );
    }

    #[test]
    fn client_tracking_view() {
        let mut s = SessionState::default();
        assert!(s.variable_changed("autocommit", "OFF"));
        assert!(!s.variable_changed("sort_buffer_size", "1"));
        s.variable_changed("session_track_system_variables", "*");
        assert!(s.variable_changed("sort_buffer_size", "2"));
        assert!(
            s.variables
                .iter()
                .all(|(n, _)| !n.starts_with("session_track"))
        );
    }

    #[test]
    fn pins() {
        let mut s = SessionState::default();
        assert_eq!(s.pinned(), None);
        s.pin(Pin::TempTable);
        assert_eq!(s.pinned(), Some("temporary tables"));
        s.unpin(Pin::TempTable);
        s.in_transaction = true;
        assert_eq!(s.pinned(), Some("open transaction"));
        s.user_vars_unread = true;
        assert!(
            !s.pinned_besides_transaction(),
            "the transaction's replay assigns them"
        );
        s.in_transaction = false;
        assert_eq!(
            s.pinned(),
            None,
            "an operator's suspend does not wait for them"
        );
        assert!(s.pinned_besides_transaction());
    }

    #[test]
    fn named_locks_are_held_until_all_are_released() {
        let mut s = SessionState::default();
        let take = |names: Vec<Option<&str>>| Effects {
            pin: vec![Pin::NamedLock; names.len()],
            lock_names: names.into_iter().map(|n| n.map(str::to_owned)).collect(),
            ..Effects::default()
        };
        s.apply(take(vec![Some("a"), Some("a"), Some("b")]), 0, 0);
        assert_eq!((s.named_locks, s.lock_names.len()), (3, 2));
        s.apply(take(vec![None]), 0, 0);
        assert!(s.unnamed_locks);
        let release_all = Effects {
            unpin: vec![Pin::NamedLock],
            release_all_locks: true,
            ..Effects::default()
        };
        s.apply(release_all, 0, 0);
        assert_eq!(
            (s.named_locks, s.lock_names.len(), s.unnamed_locks),
            (0, 0, false)
        );
    }

    #[test]
    fn a_drop_if_exists_with_a_note_drops_nothing_counted() {
        let mut s = SessionState::default();
        s.pin(Pin::TempTable);
        let drop = || Effects {
            unpin: vec![Pin::TempTable],
            drop_if_exists: true,
            ..Effects::default()
        };
        s.apply(drop(), 0, 1);
        assert_eq!(s.temp_tables, 1);
        s.apply(drop(), 0, 0);
        assert_eq!(s.temp_tables, 0);
        // With notes off, nothing tells a missing table.
        s.pin(Pin::TempTable);
        s.variable_changed("sql_notes", "OFF");
        s.apply(drop(), 0, 0);
        assert_eq!(s.temp_tables, 1);
    }

    #[test]
    fn lock_names_are_bounded() {
        let mut s = SessionState::default();
        let names = (0..=LOCK_NAMES_MAX)
            .map(|i| Some(format!("job-{i}")))
            .collect();
        s.apply(
            Effects {
                lock_names: names,
                ..Effects::default()
            },
            0,
            0,
        );
        assert_eq!(s.lock_names.len(), LOCK_NAMES_MAX);
        assert!(s.unnamed_locks, "the rest held until all are released");
    }

    #[test]
    fn user_var_literals() {
        assert_eq!(user_var_literal(Some(b"1"), "INT", Some("latin1")), "1");
        assert_eq!(user_var_literal(Some(b"1.5"), "DECIMAL", None), "1.5");
        assert_eq!(
            user_var_literal(Some(b"2000"), "DOUBLE", None),
            "CAST('2000' AS DOUBLE)"
        );
        assert_eq!(
            user_var_literal(Some(b"x'"), "VARCHAR", Some("utf8mb4")),
            "_utf8mb4 X'7827'"
        );
        assert_eq!(user_var_literal(None, "VARCHAR", Some("binary")), "NULL");
        assert_eq!(
            user_var_literal(Some(b"\x00"), "VARCHAR", Some("binary")),
            "X'00'"
        );
    }
}
