//! What the proxy tells the control plane about each database: whether anything is going on.
//! An open but idle connection is not activity (so a client's idle pool never keeps a database
//! awake); a running statement, an open transaction or a pinned session is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct ServiceActivity {
    pub connections: AtomicU64,
    pub running: AtomicU64,
    pub in_transaction: AtomicU64,
    pub pinned: AtomicU64,
    /// Milliseconds since the Unix epoch of the last statement's end (0: none yet).
    pub last_statement_ms: AtomicI64,
    pub statements: AtomicU64,
    pub errors: AtomicU64,
    pub wakes: AtomicU64,
}

/// A point-in-time copy, for the API and the lifecycle controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActivitySnapshot {
    pub connections: u64,
    pub running: u64,
    pub in_transaction: u64,
    pub pinned: u64,
    pub last_statement_ms: i64,
    pub statements: u64,
    pub errors: u64,
    pub wakes: u64,
}

impl ServiceActivity {
    pub fn snapshot(&self) -> ActivitySnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ActivitySnapshot {
            connections: l(&self.connections),
            running: l(&self.running),
            in_transaction: l(&self.in_transaction),
            pinned: l(&self.pinned),
            last_statement_ms: self.last_statement_ms.load(Ordering::Relaxed),
            statements: l(&self.statements),
            errors: l(&self.errors),
            wakes: l(&self.wakes),
        }
    }
}

#[derive(Debug, Default)]
pub struct Activity {
    services: Mutex<HashMap<String, Arc<ServiceActivity>>>,
}

impl Activity {
    pub fn service(&self, name: &str) -> Arc<ServiceActivity> {
        let mut map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    }

    pub fn snapshot(&self, name: &str) -> ActivitySnapshot {
        let map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        map.get(name).map(|a| a.snapshot()).unwrap_or_default()
    }

    pub fn all(&self) -> Vec<(String, ActivitySnapshot)> {
        let map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map.iter().map(|(k, a)| (k.clone(), a.snapshot())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
