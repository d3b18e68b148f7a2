//! Restarting servers that exit on their own (crash, `kill -9`, OOM kill).
//!
//! The runtime reports such exits the moment they happen; the supervisor records them and hands
//! the database to the reconciler ([`crate::reconcile`]), which starts the server again (InnoDB
//! crash recovery runs on start). A server that keeps dying is restarted with exponential
//! back-off, so a broken one does not spin.

use crate::ControlPlane;
use crate::reconcile::Trigger;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stratus_core::{EventKind, ServiceName};
use stratus_runtime::{ExitNotice, Runtime};
use stratus_store::Store;
use tokio::sync::broadcast::error::RecvError;

/// Crashes further apart than this start the back-off afresh: a server that ran this long was
/// not crash-looping, and its clients are waiting, so it restarts at once (as after a `kill -9`
/// or an OOM kill). Only a server dying again within seconds of its start backs off.
const CALM: Duration = Duration::from_secs(5);

/// The wait before attempt number `n` (0-based) of a streak: 0, 1 s, 2 s, 4 s, … capped.
pub fn backoff(n: u32, max: Duration) -> Duration {
    if n == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs(1u64 << (n - 1).min(16)).min(max)
    }
}

/// The back-off of the loops that look at every database at each tick (storage growth,
/// scheduled backups): failures in a row per database, and when it may be tried again. Pure:
/// the caller gives the time.
#[derive(Debug)]
pub(crate) struct Retries {
    failed: HashMap<ServiceName, (u32, i64)>,
    max: Duration,
}

impl Retries {
    /// Waits double from 1 s up to `max`.
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            failed: HashMap::new(),
            max,
        }
    }

    /// Whether `name` is waiting out its back-off at `now_ms`.
    pub(crate) fn waiting(&self, name: &ServiceName, now_ms: i64) -> bool {
        self.failed.get(name).is_some_and(|(_, at)| *at > now_ms)
    }

    /// One more failure of `name` at `now_ms`; the wait before it is tried again.
    pub(crate) fn failed(&mut self, name: &ServiceName, now_ms: i64) -> Duration {
        let n = self.failed.get(name).map_or(1, |(n, _)| n + 1);
        let wait = backoff(n, self.max);
        self.failed
            .insert(name.clone(), (n, now_ms + wait.as_millis() as i64));
        wait
    }

    /// It worked: the next failure waits 1 s again.
    pub(crate) fn succeeded(&mut self, name: &ServiceName) {
        self.failed.remove(name);
    }
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Runs until the runtime goes away.
    pub async fn supervise(self: Arc<Self>) {
        let mut exits = self.runtime.exits();
        let mut streaks: HashMap<ServiceName, (u32, Instant)> = HashMap::new();
        loop {
            let notice = match exits.recv().await {
                Ok(n) => n,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!("missed {missed} exit notices; re-checking every database");
                    let _ = self.recover().await;
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let streak = streaks
                .entry(notice.name.clone())
                .or_insert((0, Instant::now()));
            if streak.1.elapsed() > CALM {
                streak.0 = 0;
            }
            let attempt = streak.0;
            *streak = (attempt + 1, Instant::now());
            let me = self.clone();
            tokio::spawn(async move { me.restart_after_crash(notice, attempt).await });
        }
    }

    /// How often the server of `name` exited unexpectedly since Stratus started.
    pub fn crashes(&self, name: &ServiceName) -> u64 {
        let crashes = self.crashes.lock().unwrap_or_else(|p| p.into_inner());
        crashes.get(name).copied().unwrap_or(0)
    }

    async fn restart_after_crash(&self, notice: ExitNotice, attempt: u32) {
        *self
            .crashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(notice.name.clone())
            .or_default() += 1;
        let first = backoff(attempt, self.cfg.restart_backoff_max);
        let when = if first.is_zero() {
            "now".to_owned()
        } else {
            format!("in {} s", first.as_secs())
        };
        self.event(
            &notice.name,
            EventKind::Crashed,
            &format!("mariadbd (pid {}) exited unexpectedly ({}); restarting {when}", notice.pid, notice.status),
            json!({"pid": notice.pid, "status": notice.status, "attempt": attempt + 1, "backoff_ms": first.as_millis() as u64}),
        )
        .await;
        self.reconcile_until_settled(&notice.name, Trigger::Crash, attempt)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::{Retries, backoff};
    use std::time::Duration;
    use stratus_core::ServiceName;

    #[test]
    fn a_failing_database_waits_longer_each_time_until_it_works() {
        let shop = ServiceName::parse("shop").unwrap();
        let other = ServiceName::parse("other").unwrap();
        let mut r = Retries::new(Duration::from_secs(4));
        assert!(!r.waiting(&shop, 0));
        let waits: Vec<u64> = (0..4).map(|_| r.failed(&shop, 0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 4], "doubling, capped");
        assert!(r.waiting(&shop, 3_999) && !r.waiting(&shop, 4_000));
        assert!(
            !r.waiting(&other, 0),
            "one database's failures hold no other back"
        );
        r.succeeded(&shop);
        assert!(!r.waiting(&shop, 0));
        assert_eq!(
            r.failed(&shop, 10_000),
            Duration::from_secs(1),
            "a new streak"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let max = Duration::from_secs(30);
        let steps: Vec<u64> = (0..8).map(|n| backoff(n, max).as_secs()).collect();
        assert_eq!(steps, [0, 1, 2, 4, 8, 16, 30, 30]);
    }
}
