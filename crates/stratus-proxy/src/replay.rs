//! Failover: what the proxy does with a statement whose backend vanished before answering.
//!
//! Modelled on MaxScale's `transaction_replay`
//! (<https://mariadb.com/kb/en/mariadb-maxscale-2402-maxscale-2402-readwritesplit/#transaction_replay>):
//! while a transaction is open its statements are kept, each with a checksum of the answer the
//! client saw; when the server dies mid-transaction the proxy opens a new backend, recreates the
//! session as it was when the transaction began, runs the statements again and compares each
//! answer with the one the client already has. Only if all match does the client carry on, none
//! the wiser; otherwise the new transaction is rolled back and the client gets the error it would
//! get for a deadlock, the standard signal to run the transaction again.
//!
//! A `COMMIT` cut off by the crash is answered truthfully: before it the proxy writes a marker
//! row, `stratus_meta.commits` (one row per session, the transaction's number), inside the
//! transaction. After recovery the row says whether the commit happened: if it did the client
//! gets its OK, if not the transaction is replayed and committed again. A transaction is thus
//! neither lost nor applied twice.
//!
//! This module holds the pure parts: the checksum, the transaction log and its limits, and the
//! decision of what an interrupted statement may get. The session drives them (`client.rs`).

use crate::session::SessionState;
use foldhash::fast::{FixedState, FoldHasher};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;
use stratus_core::commit_marker::TABLE as MARKER_TABLE;
use stratus_wire::classify::{Kind, Statement};
use stratus_wire::response::OkPacket;
use stratus_wire::tracker::{Expect, Tracker};

/// What the proxy records and how hard it tries, from `[proxy]` in the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLimits {
    /// Statement bytes kept per session; a larger transaction is not replayed (its client gets
    /// the failover error instead).
    pub max_bytes: usize,
    /// Backends tried for one interrupted statement before giving up.
    pub attempts: u32,
    /// Total time one failover may take, waiting for the restart included.
    pub timeout: Duration,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            attempts: 5,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A checksum of one answer as the client saw it: every row and column definition, and of each
/// OK the affected rows and insert id, of each ERR its code. Status flags, warnings counts and
/// info texts are left out: they may differ on a new server without the result differing.
pub struct Checksum(FoldHasher<'static>, Option<u64>);

/// The checksum's seed: fixed, since an answer and its replay's are compared, and only ever
/// within one process. Not SipHash (`DefaultHasher`): every answer of a transaction passes
/// through it, and SipHash's resistance to chosen keys buys nothing for a comparison.
static SEED: FixedState = FixedState::with_seed(0x5374_7261_7475_7321);

impl Default for Checksum {
    fn default() -> Self {
        Self(SEED.build_hasher(), None)
    }
}

impl Checksum {
    /// The auto-increment value the answer reports as generated (its first OK's nonzero
    /// insert id): a replay asks the new server for the same one (`SET insert_id`), since
    /// InnoDB does not hand out again a value a crash rolled back.
    pub fn insert_id(&self) -> Option<u64> {
        self.1
    }

    /// Adds one physical packet, after `tracker` was fed it.
    pub fn add(&mut self, tracker: &Tracker, payload: &[u8], backend_caps: u64) {
        if payload.first() == Some(&0xfe) && payload.len() < 9 {
            return; // a terminator: status and warnings only
        }
        if tracker.last_was_ok {
            if let Ok(ok) = OkPacket::decode(payload, backend_caps) {
                self.0.write_u64(ok.affected_rows);
                self.0.write_u64(ok.last_insert_id);
                if ok.last_insert_id != 0 && self.1.is_none() {
                    self.1 = Some(ok.last_insert_id);
                }
            }
        } else if tracker.error.is_some() && payload.first() == Some(&0xff) {
            self.0.write(payload.get(1..3).unwrap_or_default());
        } else {
            self.0.write(payload);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// One recorded command: its payload as the client sent it, with the proxy's virtual statement
/// id for binary commands (and, for `COM_STMT_EXECUTE`, the parameter types always included).
#[derive(Debug, Clone)]
pub struct Entry {
    pub payload: Vec<u8>,
    /// `None`: the command gets no answer (`COM_STMT_SEND_LONG_DATA`).
    pub expect: Option<Expect>,
    pub checksum: u64,
    /// The auto-increment value it generated ([`Checksum::insert_id`]).
    pub insert_id: Option<u64>,
}

/// The open transaction of a session, kept so it can be run again.
#[derive(Debug, Default)]
pub struct TxLog {
    pub entries: Vec<Entry>,
    bytes: usize,
    /// A transaction is open and being recorded.
    pub active: bool,
    /// Why it cannot be replayed, once that is known.
    pub unreplayable: Option<&'static str>,
    /// It changed data: its `COMMIT` needs a marker.
    pub wrote: bool,
    /// The session as it was when the transaction began.
    pub start: Option<SessionState>,
}

impl TxLog {
    /// A transaction began with the state the session had before it.
    pub fn begin(&mut self, before: SessionState) {
        self.clear();
        self.active = true;
        self.start = Some(before);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.active = false;
        self.unreplayable = None;
        self.wrote = false;
        self.start = None;
    }

    /// Records a statement of the open transaction, unless that would pass the limit.
    pub fn push(&mut self, entry: Entry, writes: bool, max_bytes: usize) {
        self.wrote |= writes;
        if self.unreplayable.is_some() {
            return;
        }
        self.bytes += entry.payload.len();
        if self.bytes > max_bytes {
            self.entries = Vec::new();
            self.unreplayable = Some("it is larger than the replay limit (replay_max_bytes)");
            return;
        }
        self.entries.push(entry);
    }

    pub fn forbid(&mut self, why: &'static str) {
        self.entries = Vec::new();
        self.unreplayable = Some(why);
    }
}

/// What an interrupted statement may get on a new backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLoss {
    /// Run it again: running it twice is the same as running it once (a read, `BEGIN`, `SET`,
    /// or a statement that opens a transaction only the crash could have ended).
    Retry,
    /// Part of a recorded transaction: replay the transaction, then run it again.
    Replay,
    /// The `COMMIT` of a transaction: find out whether it committed.
    Commit,
    /// `ROLLBACK`: the crash rolled the transaction back already.
    Rollback,
    /// Its effect is unknown: tell the client.
    Report,
}

/// Decides what a statement gets if its backend is lost before answering. `in_transaction`
/// and `autocommit` are the session's state before it; `pinned` is any session state other
/// than a transaction that a new backend would not have.
pub fn on_loss(
    stmts: &[Statement],
    sql: &[u8],
    in_transaction: bool,
    autocommit: bool,
    pinned: bool,
) -> OnLoss {
    if pinned {
        return OnLoss::Report;
    }
    let [s] = stmts else {
        return if !in_transaction && stmts.iter().all(|s| s.read_only) {
            OnLoss::Retry
        } else {
            OnLoss::Report
        };
    };
    let text = sql.get(s.span.clone()).unwrap_or_default();
    if in_transaction {
        return match s.kind {
            Kind::Commit if ends_plainly(text) => OnLoss::Commit,
            Kind::Rollback if ends_plainly(text) => OnLoss::Rollback,
            _ if replayable_in_transaction(s, text) => OnLoss::Replay,
            _ => OnLoss::Report,
        };
    }
    match s.kind {
        _ if s.read_only => OnLoss::Retry,
        Kind::Begin | Kind::Use => OnLoss::Retry,
        Kind::Set if !s.sets_global_vars => OnLoss::Retry,
        Kind::Commit | Kind::Rollback if ends_plainly(text) => OnLoss::Retry,
        // Without autocommit it opened a transaction, and the crash rolled that back.
        _ if !autocommit && replayable_in_transaction(s, text) => OnLoss::Retry,
        _ => OnLoss::Report,
    }
}

/// Whether a statement may change data, so that its transaction's `COMMIT` needs a marker.
/// Transaction control and session statements do not.
pub fn may_write(s: &Statement) -> bool {
    !s.read_only
        && !matches!(
            s.kind,
            Kind::Begin
                | Kind::Commit
                | Kind::Rollback
                | Kind::Savepoint
                | Kind::Set
                | Kind::Use
                | Kind::Show
                | Kind::Describe
        )
}

/// The marker cannot be written in this server at all (no table, no privilege), as opposed to
/// not in this transaction (a read-only one, say).
pub fn marker_unusable(code: u16) -> bool {
    matches!(code, 1044 | 1049 | 1142 | 1146)
}

/// Statements that run inside a transaction without ending it, so the transaction can be run
/// again with them: data reads and changes, savepoints and session variables (not
/// `autocommit`, whose change commits).
pub fn replayable_in_transaction(s: &Statement, text: &[u8]) -> bool {
    match s.kind {
        Kind::Select
        | Kind::Insert
        | Kind::Update
        | Kind::Delete
        | Kind::Replace
        | Kind::Do
        | Kind::Show
        | Kind::Describe
        | Kind::With
        | Kind::Savepoint => true,
        Kind::Set => !s.sets_global_vars && !contains_word(text, b"AUTOCOMMIT"),
        _ => false,
    }
}

/// `COMMIT` / `ROLLBACK` without `AND CHAIN` or `RELEASE`, which would leave the session in a
/// state the proxy would have to invent.
fn ends_plainly(text: &[u8]) -> bool {
    let no = |w: &[u8], negated: &[u8]| !contains_word(text, w) || contains_word(text, negated);
    no(b"CHAIN", b"NO CHAIN") && no(b"RELEASE", b"NO RELEASE")
}

fn contains_word(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// A session's row in the marker table.
#[derive(Debug)]
pub struct Marker {
    /// Random per session, so sessions of every proxy (and of every restart) differ.
    pub session: u64,
    /// The number of the session's last marked transaction.
    pub txn: u64,
    /// Off once the marker could not be written (no table, no privilege): commits then go
    /// unmarked, and one cut off by a crash is reported as of unknown outcome.
    pub enabled: bool,
    /// The `COMMIT` in flight was preceded by its marker (sent, and not refused).
    pub written: bool,
}

impl Default for Marker {
    fn default() -> Self {
        let seed = (std::time::SystemTime::now(), std::process::id());
        Self {
            session: std::collections::hash_map::RandomState::new().hash_one(seed),
            txn: 0,
            enabled: true,
            written: false,
        }
    }
}

/// How a statement cut off by a lost backend ended, as events and metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent again on a new backend and answered.
    Retried,
    /// Its transaction replayed with matching results, then it was answered.
    Replayed,
    /// A `COMMIT` found committed by its marker, and answered OK.
    CommitConfirmed,
    /// A `ROLLBACK` (or a read-only transaction's `COMMIT`) answered OK: the crash ended it.
    Ended,
    /// Replaying gave a different result: rolled back, the client got error 1213.
    Mismatch,
    /// The transaction could not be replayed (too large, or begun in a way that cannot be
    /// repeated): rolled back, the client got error 1213.
    NotReplayable,
    /// Its effect is unknown (a write outside a transaction, an implicit commit): error 1927.
    Unknown,
    /// No new backend within the limits: the client got an error.
    GaveUp,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Retried,
        Outcome::Replayed,
        Outcome::CommitConfirmed,
        Outcome::Ended,
        Outcome::Mismatch,
        Outcome::NotReplayable,
        Outcome::Unknown,
        Outcome::GaveUp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Retried => "retried",
            Outcome::Replayed => "replayed",
            Outcome::CommitConfirmed => "commit_confirmed",
            Outcome::Ended => "ended",
            Outcome::Mismatch => "mismatch",
            Outcome::NotReplayable => "not_replayable",
            Outcome::Unknown => "unknown",
            Outcome::GaveUp => "gave_up",
        }
    }

    /// The client got an error.
    pub fn failed(self) -> bool {
        matches!(
            self,
            Outcome::Mismatch | Outcome::NotReplayable | Outcome::Unknown | Outcome::GaveUp
        )
    }

    pub fn index(self) -> usize {
        Outcome::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// One failover of one client session, reported to the control plane.
#[derive(Debug, Clone)]
pub struct Failover {
    pub outcome: Outcome,
    /// New backends it took.
    pub attempts: u32,
    /// Statements of the transaction run again.
    pub replayed: usize,
    /// From noticing the lost backend to answering the client.
    pub duration: Duration,
    pub detail: String,
}

impl Failover {
    /// One line for an event: what became of the session, how long it took.
    pub fn summary(&self) -> String {
        let what = match self.outcome {
            Outcome::Retried => "statement sent again".to_owned(),
            Outcome::Replayed => format!(
                "transaction of {} statement(s) replayed with matching results",
                self.replayed
            ),
            Outcome::CommitConfirmed => "interrupted COMMIT found committed".to_owned(),
            Outcome::Ended => "transaction ended by the crash, as the client asked".to_owned(),
            _ => format!("client told: {}", self.detail),
        };
        format!(
            "client session carried over a lost server: {what} ({} ms, {} attempt(s))",
            self.duration.as_millis(),
            self.attempts
        )
    }
}

/// The marker statement for transaction `txn` of session `session`.
pub fn marker_sql(session: u64, txn: u64) -> String {
    format!(
        "INSERT INTO {MARKER_TABLE} (session, txn) VALUES ({session}, {txn}) ON DUPLICATE KEY UPDATE txn = VALUES(txn)"
    )
}

/// Removes the session's marker when it ends.
pub fn marker_delete_sql(session: u64) -> String {
    format!("DELETE FROM {MARKER_TABLE} WHERE session = {session}")
}

/// Reads the marker back. `FOR UPDATE` waits for a transaction that still holds the row (an old
/// connection the server has not finished closing), so the answer is final.
pub fn marker_check_sql(session: u64) -> String {
    format!("SELECT txn FROM {MARKER_TABLE} WHERE session = {session} FOR UPDATE")
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_wire::classify::{classify, classify_all};

    fn decide(sql: &str, in_trans: bool, autocommit: bool) -> OnLoss {
        let stmts = classify_all(sql.as_bytes());
        on_loss(&stmts, sql.as_bytes(), in_trans, autocommit, false)
    }

    #[test]
    fn outside_a_transaction_only_repeatable_statements_are_retried() {
        assert_eq!(decide("SELECT * FROM t", false, true), OnLoss::Retry);
        assert_eq!(decide("BEGIN", false, true), OnLoss::Retry);
        assert_eq!(decide("SET @a = @a + 1", false, true), OnLoss::Retry);
        assert_eq!(decide("SET GLOBAL x = 1", false, true), OnLoss::Report);
        assert_eq!(decide("UPDATE t SET a = 1", false, true), OnLoss::Report);
        assert_eq!(
            decide("CREATE TABLE t (a INT)", false, true),
            OnLoss::Report
        );
        // Without autocommit the update opened a transaction the crash rolled back.
        assert_eq!(decide("UPDATE t SET a = 1", false, false), OnLoss::Retry);
        assert_eq!(
            decide("CREATE TABLE t (a INT)", false, false),
            OnLoss::Report
        );
        assert_eq!(decide("SELECT 1; SELECT 2", false, true), OnLoss::Retry);
        assert_eq!(
            decide("SELECT 1; DELETE FROM t", false, true),
            OnLoss::Report
        );
    }

    #[test]
    fn inside_a_transaction() {
        assert_eq!(decide("UPDATE t SET a = 1", true, true), OnLoss::Replay);
        assert_eq!(
            decide("SELECT a FROM t FOR UPDATE", true, true),
            OnLoss::Replay
        );
        assert_eq!(decide("SAVEPOINT s", true, true), OnLoss::Replay);
        assert_eq!(decide("COMMIT", true, true), OnLoss::Commit);
        assert_eq!(decide("COMMIT WORK", true, true), OnLoss::Commit);
        assert_eq!(decide("COMMIT AND NO CHAIN", true, true), OnLoss::Commit);
        assert_eq!(decide("COMMIT AND CHAIN", true, true), OnLoss::Report);
        assert_eq!(decide("ROLLBACK", true, true), OnLoss::Rollback);
        // These end the transaction implicitly: whether they did before the crash is unknown.
        assert_eq!(decide("CREATE TABLE t (a INT)", true, true), OnLoss::Report);
        assert_eq!(decide("SET autocommit = 1", true, true), OnLoss::Report);
        assert_eq!(decide("BEGIN", true, true), OnLoss::Report);
        assert_eq!(decide("CALL p()", true, true), OnLoss::Report);
        assert_eq!(
            decide("UPDATE t SET a = 1; COMMIT", true, true),
            OnLoss::Report
        );
        let s = classify(b"UPDATE t SET a = 1");
        assert_eq!(
            on_loss(
                std::slice::from_ref(&s),
                b"UPDATE t SET a = 1",
                true,
                true,
                true
            ),
            OnLoss::Report
        );
    }

    #[test]
    fn the_log_keeps_to_its_limit() {
        let mut log = TxLog::default();
        log.begin(SessionState::default());
        let entry = |n: usize| Entry {
            payload: vec![3; n],
            expect: Some(Expect::ResultSets { binary: false }),
            checksum: 1,
            insert_id: None,
        };
        log.push(entry(60), false, 100);
        assert_eq!(
            (log.entries.len(), log.unreplayable, log.wrote),
            (1, None, false)
        );
        log.push(entry(60), true, 100);
        assert!(log.entries.is_empty() && log.unreplayable.is_some() && log.wrote);
        log.clear();
        assert!(!log.active && log.unreplayable.is_none() && !log.wrote);
    }

    #[test]
    fn checksums_see_rows_and_ok_counts_not_status() {
        let caps = stratus_wire::caps::PROTOCOL_41;
        let sum = |packets: &[Vec<u8>], expect: Expect| {
            let mut t = Tracker::new(expect, false);
            let mut c = Checksum::default();
            for p in packets {
                t.feed(p);
                c.add(&t, p, caps);
            }
            c.finish()
        };
        let one = Expect::One;
        let ok = |affected: u8, status: u8| vec![0, affected, 0, status, 0, 0, 0];
        assert_eq!(sum(&[ok(1, 2)], one), sum(&[ok(1, 3)], one));
        assert_ne!(sum(&[ok(1, 2)], one), sum(&[ok(2, 2)], one));
        let rs = Expect::ResultSets { binary: false };
        let rows = |v: u8, status: u8| {
            vec![
                vec![1],
                b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x01\x00\x00\x00\x03\x00\x00\x00\x00\x00"
                    .to_vec(),
                vec![0xfe, 0, 0, status, 0],
                vec![1, v],
                vec![0xfe, 0, 0, status, 0],
            ]
        };
        assert_eq!(sum(&rows(b'1', 2), rs), sum(&rows(b'1', 3), rs));
        assert_ne!(sum(&rows(b'1', 2), rs), sum(&rows(b'2', 2), rs));
    }

    #[test]
    fn the_first_generated_insert_id_is_kept_for_the_replay() {
        let caps = stratus_wire::caps::PROTOCOL_41 | stratus_wire::caps::MULTI_RESULTS;
        let id_of = |packets: &[Vec<u8>]| {
            let mut t = Tracker::new(Expect::ResultSets { binary: false }, false);
            let mut c = Checksum::default();
            for p in packets {
                t.feed(p);
                c.add(&t, p, caps);
            }
            c.insert_id()
        };
        // OK: affected rows, insert id, status (8 = more results), warnings.
        let ok = |id: u8, more: bool| vec![0, 1, id, if more { 8 } else { 2 }, 0, 0, 0];
        assert_eq!(id_of(&[ok(7, false)]), Some(7));
        assert_eq!(id_of(&[ok(0, false)]), None, "nothing generated");
        assert_eq!(id_of(&[ok(0, true), ok(9, true), ok(11, false)]), Some(9));
    }
}
