//! The idle timer of each session (`wait_timeout`), kept off the session threads.
//!
//! A tokio timer armed on a session thread turns every sleep of that thread's event loop into an
//! `epoll_wait` with a timeout: the kernel arms and cancels a high-resolution timer each time the
//! thread goes idle, and the runtime consults its timer wheel at every park — under load about
//! once per statement, for a timeout that almost never fires. So the timer runs on the proxy's
//! main runtime instead: the session stores the end of each command (one atomic store) and is
//! woken through its link once the deadline has passed.

use crate::SessionLink;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// When a session stopped hearing from its client, and how long it may wait.
pub(crate) struct IdleClock {
    origin: Instant,
    /// Microseconds from `origin` to the end of the client's last command.
    last: AtomicU64,
    /// The timeout in force, in seconds.
    timeout_secs: AtomicU64,
    /// Set by the watcher when it found the deadline passed and woke the session.
    due: AtomicBool,
    /// Wakes the watcher: the timeout shrank, or the session moved on after being woken.
    rearm: Notify,
}

impl IdleClock {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            timeout_secs: AtomicU64::new(timeout.as_secs()),
            due: AtomicBool::new(false),
            rearm: Notify::new(),
        }
    }

    /// The client's last command ended at `now`.
    pub(crate) fn touch(&self, now: Instant) {
        let us = now.saturating_duration_since(self.origin).as_micros();
        self.last
            .store(u64::try_from(us).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Puts `timeout` in force. A shorter one wakes the watcher; a longer one is found when the
    /// old deadline comes.
    pub(crate) fn set_timeout(&self, timeout: Duration) {
        let secs = timeout.as_secs();
        let old = self.timeout_secs.swap(secs, Ordering::Relaxed);
        if secs < old {
            self.rearm.notify_one();
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.origin
            + Duration::from_micros(self.last.load(Ordering::Relaxed))
            + Duration::from_secs(self.timeout_secs.load(Ordering::Relaxed))
    }

    /// After the session was woken: whether the watcher found the deadline passed. If the
    /// deadline has moved since (a command ran meanwhile), the watcher is re-armed.
    pub(crate) fn expired(&self) -> bool {
        if !self.due.swap(false, Ordering::Relaxed) {
            return false;
        }
        if Instant::now() >= self.deadline() {
            return true;
        }
        self.rearm.notify_one();
        false
    }
}

/// Watches a session's idle deadline, re-arming when it comes early (the client sent commands
/// meanwhile), and wakes the session through its link when it has passed.
pub(crate) async fn watch(link: Arc<SessionLink>) {
    let clock = &link.idle;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(clock.deadline()) => {}
            () = clock.rearm.notified() => continue,
        }
        if Instant::now() >= clock.deadline() {
            clock.due.store(true, Ordering::Relaxed);
            link.wake.notify_one();
            // The session ends, or tells us it moved on.
            clock.rearm.notified().await;
        }
    }
}
