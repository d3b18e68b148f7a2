//! Cut-over holds (#12): while a database moves to another server, each of its sessions' next
//! command outside a transaction waits here, before anything of it reaches a server, until the
//! move is done. Running statements and open transactions finish on the old server meanwhile,
//! so the control plane sees the database go quiet, switches servers and releases the hold; the
//! held commands then go to the new server, on which each session's state is replayed as after
//! a failover.
//!
//! A command checks one atomic flag when nothing is held anywhere, so the hold costs the
//! per-statement path nothing in the common case.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct Holds {
    /// Whether any database is held: the only thing a command reads otherwise.
    any: AtomicBool,
    held: Mutex<HashMap<String, watch::Receiver<()>>>,
}

/// A database's hold; released when dropped (so every way out of a cut-over releases it).
#[must_use = "the hold ends when this is dropped"]
pub struct HoldGuard {
    holds: Arc<Holds>,
    service: String,
    /// Dropping it wakes every waiter.
    _release: watch::Sender<()>,
}

impl Holds {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<()>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the next command of every session of `service` until the guard is dropped.
    /// `None` when it is held already (one cut-over at a time).
    pub fn hold(self: &Arc<Self>, service: &str) -> Option<HoldGuard> {
        let mut map = self.map();
        if map.contains_key(service) {
            return None;
        }
        let (tx, rx) = watch::channel(());
        map.insert(service.to_owned(), rx);
        self.any.store(true, Ordering::SeqCst);
        Some(HoldGuard {
            holds: self.clone(),
            service: service.to_owned(),
            _release: tx,
        })
    }

    /// Returns at once unless `service` is held; then when the hold ends.
    pub async fn wait(&self, service: &str) {
        if !self.any.load(Ordering::SeqCst) {
            return;
        }
        let Some(mut rx) = self.map().get(service).cloned() else {
            return;
        };
        // Ends with an error when the guard's sender is dropped: the release.
        while rx.changed().await.is_ok() {}
    }

    pub fn is_held(&self, service: &str) -> bool {
        self.any.load(Ordering::SeqCst) && self.map().contains_key(service)
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        let mut map = self.holds.map();
        map.remove(&self.service);
        self.holds.any.store(!map.is_empty(), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_held_database_waits_until_released_and_others_never_wait() {
        let holds = Arc::new(Holds::default());
        holds.wait("shop").await; // nothing held: at once
        let guard = holds.hold("shop").unwrap();
        assert!(holds.hold("shop").is_none(), "one hold at a time");
        holds.wait("other").await;
        let waiter = {
            let holds = holds.clone();
            tokio::spawn(async move { holds.wait("shop").await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "held");
        assert!(holds.is_held("shop"));
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .unwrap();
        assert!(!holds.is_held("shop"));
        assert!(!holds.any.load(Ordering::SeqCst));
        let _again = holds.hold("shop").expect("held again after the release");
    }
}
