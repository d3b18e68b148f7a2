//! Prepared statements under virtual ids. A client keeps the ids the proxy gave it; each maps to
//! the statement's id on the current backend connection, and after a change of backend the
//! statement is prepared again the first time it is used. Parameter types are remembered, since
//! a client that bound them once sends `new_params_bound = 0` afterwards and a new backend would
//! not know them.

use std::collections::HashMap;
use stratus_wire::tracker::PrepareOk;

#[derive(Debug, Clone)]
pub struct Statement {
    pub sql: Vec<u8>,
    /// What the statement does, for failover decisions when it is executed.
    pub class: stratus_wire::classify::Statement,
    pub params: u16,
    /// The parameter types the client last bound (2 bytes each).
    pub types: Option<Vec<u8>>,
    /// Its id on the current backend connection, if prepared there.
    pub backend_id: Option<u32>,
    /// The current backend has seen its types.
    pub types_sent: bool,
    /// Long data for its next execute.
    pub long_data: LongData,
}

/// Long data (`COM_STMT_SEND_LONG_DATA`) for a statement's next execute, which the server
/// keeps for that execute and no replay of the session recreates.
/// <https://mariadb.com/kb/en/com_stmt_send_long_data/>
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongData {
    #[default]
    None,
    /// On the current backend connection; `logged`: in the open transaction's log too, whose
    /// replay sends it again.
    Sent { logged: bool },
    /// Sent to a backend connection since lost and not sent again: an execute would run
    /// without it (its parameter read from bytes that are not there), so it is refused.
    Lost,
}

#[derive(Debug, Default)]
pub struct Statements {
    /// Looked up on every execute; ids are the proxy's own, so no hash flooding to resist.
    map: HashMap<u32, Statement, foldhash::fast::FixedState>,
    next: u32,
    /// Statements whose long data is on the current backend connection.
    long_data_sent: u32,
    /// The statement prepared last, which the id [`LAST_STMT_ID`] names.
    last: Option<u32>,
}

/// The statement id that names the statement prepared last on the connection (MariaDB's
/// `LAST_STMT_ID`): Connector/C's `mariadb_stmt_execute_direct` sends a prepare and an
/// execute of this id together, without waiting for the prepare's answer.
pub const LAST_STMT_ID: u32 = u32::MAX;
/// A server's statement ids stay below 2^31 (`STMT_ID_MASK`); so do the proxy's.
const MAX_ID: u32 = 0x7fff_ffff;

impl Statements {
    /// Registers a statement prepared on the current backend; returns its virtual id.
    pub fn add(&mut self, sql: Vec<u8>, ok: PrepareOk) -> u32 {
        let step = |n: u32| if n >= MAX_ID { 1 } else { n + 1 };
        self.next = step(self.next);
        while self.map.contains_key(&self.next) {
            self.next = step(self.next);
        }
        let stmt = Statement {
            class: stratus_wire::classify::classify(&sql),
            sql,
            params: ok.params,
            types: None,
            backend_id: Some(ok.statement_id),
            types_sent: false,
            long_data: LongData::None,
        };
        self.map.insert(self.next, stmt);
        self.last = Some(self.next);
        self.next
    }

    /// A prepare failed: as on the server, no statement is the last prepared one any more.
    pub fn prepare_failed(&mut self) {
        self.last = None;
    }

    /// The statement a command's id names: [`LAST_STMT_ID`] is the one prepared last (left as
    /// it is, so unknown, when there is none).
    pub fn resolve(&self, id: u32) -> u32 {
        match (id, self.last) {
            (LAST_STMT_ID, Some(last)) => last,
            _ => id,
        }
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Statement> {
        self.map.get_mut(&id)
    }

    /// The statement `id` for `cmd`, with what `cmd` does to its long data taken on: sent by
    /// `COM_STMT_SEND_LONG_DATA` (`logged` if the transaction log keeps the command), used by
    /// `COM_STMT_EXECUTE`, dropped by `COM_STMT_RESET`. Also its long data as it was before.
    pub fn for_command(
        &mut self,
        id: u32,
        cmd: u8,
        logged: bool,
    ) -> Option<(&mut Statement, LongData)> {
        use stratus_wire::command::{
            COM_STMT_BULK_EXECUTE, COM_STMT_EXECUTE, COM_STMT_RESET, COM_STMT_SEND_LONG_DATA,
        };
        let s = self.map.get_mut(&id)?;
        let before = s.long_data;
        let after = match (cmd, before) {
            (COM_STMT_SEND_LONG_DATA, LongData::Lost) => LongData::Lost,
            (COM_STMT_SEND_LONG_DATA, LongData::Sent { logged: earlier }) => LongData::Sent {
                logged: earlier && logged,
            },
            (COM_STMT_SEND_LONG_DATA, LongData::None) => LongData::Sent { logged },
            (COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE | COM_STMT_RESET, _) => LongData::None,
            (_, kept) => kept,
        };
        Self::set(&mut self.long_data_sent, s, after);
        Some((s, before))
    }

    /// Long data taken on by [`Self::for_command`] did not reach a backend connection (none
    /// could be had), and no transaction's log will send it: the next execute must not run.
    pub fn long_data_not_sent(&mut self, id: u32) {
        if let Some(s) = self.map.get_mut(&id) {
            Self::set(&mut self.long_data_sent, s, LongData::Lost);
        }
    }

    /// The transaction whose log held long data ended: a replay no longer sends it.
    pub fn log_ended(&mut self) {
        if self.long_data_sent == 0 {
            return;
        }
        for s in self.map.values_mut() {
            if let LongData::Sent { logged: true } = s.long_data {
                s.long_data = LongData::Sent { logged: false };
            }
        }
    }

    /// Sets `s`'s long data, keeping the count of those on the current connection.
    fn set(count: &mut u32, s: &mut Statement, to: LongData) {
        let sent = |l: LongData| u32::from(matches!(l, LongData::Sent { .. }));
        *count = (*count + sent(to)).saturating_sub(sent(s.long_data));
        s.long_data = to;
    }

    pub fn remove(&mut self, id: u32) -> Option<Statement> {
        let s = self.map.remove(&id)?;
        if self.last == Some(id) {
            self.last = None;
        }
        if matches!(s.long_data, LongData::Sent { .. }) {
            self.long_data_sent = self.long_data_sent.saturating_sub(1);
        }
        Some(s)
    }

    /// The backend connection changed: every statement must be prepared again there, and long
    /// data sent to the old one is lost unless a transaction's replay sends it again.
    pub fn backend_changed(&mut self) {
        for s in self.map.values_mut() {
            s.backend_id = None;
            s.types_sent = false;
            s.long_data = match s.long_data {
                LongData::Sent { logged: false } | LongData::Lost => LongData::Lost,
                LongData::Sent { logged: true } | LongData::None => LongData::None,
            };
        }
        self.long_data_sent = 0;
    }

    /// Some statement has long data on the backend connection, waiting for its execute: the
    /// connection holds what no replay recreates. O(1): asked after every command.
    pub fn long_data_pending(&self) -> bool {
        self.long_data_sent > 0
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.long_data_sent = 0;
        self.last = None;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_ids_survive_a_backend_change() {
        let mut s = Statements::default();
        let a = s.add(
            b"SELECT ?".to_vec(),
            PrepareOk {
                statement_id: 41,
                columns: 1,
                params: 1,
            },
        );
        let b = s.add(
            b"SELECT 2".to_vec(),
            PrepareOk {
                statement_id: 42,
                columns: 1,
                params: 0,
            },
        );
        assert_ne!(a, b);
        assert_eq!(s.get_mut(a).unwrap().backend_id, Some(41));
        s.backend_changed();
        assert_eq!(s.get_mut(a).unwrap().backend_id, None);
        assert!(s.remove(b).is_some());
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_last_statement_id_names_the_statement_prepared_last() {
        let mut s = Statements::default();
        let ok = |statement_id| PrepareOk {
            statement_id,
            columns: 0,
            params: 0,
        };
        assert_eq!(s.resolve(LAST_STMT_ID), LAST_STMT_ID, "none yet: unknown");
        let a = s.add(b"DO 1".to_vec(), ok(1));
        assert_eq!(s.resolve(LAST_STMT_ID), a);
        assert_eq!(s.resolve(a), a);
        s.prepare_failed();
        assert_eq!(s.resolve(LAST_STMT_ID), LAST_STMT_ID);
        let b = s.add(b"DO 2".to_vec(), ok(2));
        s.remove(b);
        assert_eq!(s.resolve(LAST_STMT_ID), LAST_STMT_ID, "closed");
        // Ids stay below 2^31, as a server's do, so never the last statement's id.
        s.next = MAX_ID - 1;
        assert_eq!(s.add(b"DO 3".to_vec(), ok(3)), MAX_ID);
        assert_eq!(
            s.add(b"DO 4".to_vec(), ok(4)),
            a + 1,
            "wrapped past {a}, still open"
        );
    }

    #[test]
    fn long_data_is_pending_until_used_and_lost_with_its_connection_unless_logged() {
        use stratus_wire::command::{COM_STMT_EXECUTE, COM_STMT_RESET, COM_STMT_SEND_LONG_DATA};
        let mut s = Statements::default();
        let ok = |statement_id| PrepareOk {
            statement_id,
            columns: 0,
            params: 1,
        };
        let (a, b) = (
            s.add(b"INSERT ?".to_vec(), ok(1)),
            s.add(b"DO ?".to_vec(), ok(2)),
        );
        let lost = |s: &mut Statements, id, cmd, logged| {
            s.for_command(id, cmd, logged).unwrap().1 == LongData::Lost
        };

        assert!(!lost(&mut s, a, COM_STMT_SEND_LONG_DATA, false));
        assert!(!lost(&mut s, a, COM_STMT_SEND_LONG_DATA, false));
        assert!(!lost(&mut s, b, COM_STMT_SEND_LONG_DATA, true));
        assert!(s.long_data_pending());
        assert!(!lost(&mut s, b, COM_STMT_EXECUTE, true));
        assert!(s.long_data_pending(), "a's is still waiting");
        assert!(!lost(&mut s, a, COM_STMT_RESET, false));
        assert!(!s.long_data_pending());

        // Part logged, part not: the log cannot recreate it all.
        assert!(!lost(&mut s, a, COM_STMT_SEND_LONG_DATA, false));
        assert!(!lost(&mut s, a, COM_STMT_SEND_LONG_DATA, true));
        assert!(!lost(&mut s, b, COM_STMT_SEND_LONG_DATA, true));
        s.backend_changed();
        assert!(!s.long_data_pending());
        assert_eq!(s.get_mut(a).unwrap().long_data, LongData::Lost);
        assert_eq!(
            s.get_mut(b).unwrap().long_data,
            LongData::None,
            "the replay sends it"
        );
        assert!(
            lost(&mut s, a, COM_STMT_SEND_LONG_DATA, false),
            "more of it"
        );
        s.backend_changed();
        assert!(lost(&mut s, a, COM_STMT_EXECUTE, false), "lost until used");
        assert!(!lost(&mut s, a, COM_STMT_EXECUTE, false));

        assert!(!lost(&mut s, a, COM_STMT_SEND_LONG_DATA, false));
        assert!(s.remove(a).is_some());
        assert!(
            !s.long_data_pending(),
            "a closed statement's data goes with it"
        );

        // Data no connection got is lost at once; logged data whose transaction ended is no
        // longer the log's to send again.
        assert!(!lost(&mut s, b, COM_STMT_SEND_LONG_DATA, false));
        s.long_data_not_sent(b);
        assert!(!s.long_data_pending());
        assert!(lost(&mut s, b, COM_STMT_EXECUTE, false));
        assert!(!lost(&mut s, b, COM_STMT_SEND_LONG_DATA, true));
        s.log_ended();
        s.backend_changed();
        assert_eq!(s.get_mut(b).unwrap().long_data, LongData::Lost);
    }
}
