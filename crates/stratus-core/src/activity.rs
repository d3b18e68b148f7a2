//! What the data plane reports about a database's use, for the lifecycle controller and the API.

use serde::{Deserialize, Serialize};

/// A point-in-time view of a database's client activity. Idle connections are not activity;
/// running statements, open transactions and pinned sessions are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityView {
    pub connections: u64,
    pub statements_running: u64,
    pub open_transactions: u64,
    /// Sessions holding state that cannot move to another backend connection (temporary
    /// tables, named locks, an open cursor…); an open transaction, which can, is counted apart.
    pub pinned_sessions: u64,
    /// Sessions whose user variables the proxy has not read back yet (it waits for the client's
    /// next command, at most 10 s): the idle monitor waits for them, so a database that sleeps
    /// by itself never loses them; an operator's suspend or park does not (the session's next
    /// command then hears that they were lost).
    #[serde(default)]
    pub unread_user_variables: u64,
    /// Milliseconds since the Unix epoch of the last statement's end; 0 if none.
    pub last_statement_ms: i64,
    /// Statements relayed since Stratus started (a counter: its rate is statements per second).
    #[serde(default)]
    pub statements_total: u64,
}

impl ActivityView {
    /// Whether stopping the server now would lose something a client holds.
    pub fn holds_state(&self) -> bool {
        self.statements_running > 0 || self.open_transactions > 0 || self.pinned_sessions > 0
    }
}
