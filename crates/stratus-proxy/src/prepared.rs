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
    /// Long data was sent for its next execute: it exists only on the backend connection.
    pub long_data: bool,
}

#[derive(Debug, Default)]
pub struct Statements {
    /// Looked up on every execute; ids are the proxy's own, so no hash flooding to resist.
    map: HashMap<u32, Statement, foldhash::fast::FixedState>,
    next: u32,
}

impl Statements {
    /// Registers a statement prepared on the current backend; returns its virtual id.
    pub fn add(&mut self, sql: Vec<u8>, ok: PrepareOk) -> u32 {
        self.next = self.next.wrapping_add(1).max(1);
        while self.map.contains_key(&self.next) {
            self.next = self.next.wrapping_add(1).max(1);
        }
        let stmt = Statement {
            class: stratus_wire::classify::classify(&sql),
            sql,
            params: ok.params,
            types: None,
            backend_id: Some(ok.statement_id),
            types_sent: false,
            long_data: false,
        };
        self.map.insert(self.next, stmt);
        self.next
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Statement> {
        self.map.get_mut(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<Statement> {
        self.map.remove(&id)
    }

    /// The backend connection changed: every statement must be prepared again there.
    pub fn backend_changed(&mut self) {
        for s in self.map.values_mut() {
            s.backend_id = None;
            s.types_sent = false;
            s.long_data = false;
        }
    }

    /// Some statement has long data waiting for its execute.
    pub fn long_data_pending(&self) -> bool {
        self.map.values().any(|s| s.long_data)
    }

    pub fn clear(&mut self) {
        self.map.clear();
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
}
