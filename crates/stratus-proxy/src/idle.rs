//! The idle timers of each session, kept off the session threads: the client's `wait_timeout`,
//! and the release of its backend connection once it has been idle for a while (so that idle
//! clients do not each hold a server thread: see `client::backend_link::release_idle`).
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
    /// How long the client may be silent before its backend connection is released; zero:
    /// never.
    release_after: Duration,
    /// `last` + 1 of the idle period the release was last signalled for (0: none): signalled
    /// once per period, not again until the client has sent a command.
    released_for: AtomicU64,
    /// Set by the watcher when the release is due.
    release_due: AtomicBool,
}

impl IdleClock {
    pub(crate) fn new(timeout: Duration, release_after: Duration) -> Self {
        Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            timeout_secs: AtomicU64::new(timeout.as_secs()),
            due: AtomicBool::new(false),
            rearm: Notify::new(),
            release_after,
            released_for: AtomicU64::new(0),
            release_due: AtomicBool::new(false),
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

    /// When the backend connection is to be released, unless that was already signalled for
    /// this idle period (or releases are off); with the period's `last`.
    fn release_deadline(&self) -> Option<(Instant, u64)> {
        if self.release_after.is_zero() {
            return None;
        }
        let last = self.last.load(Ordering::Relaxed);
        (self.released_for.load(Ordering::Relaxed) != last.saturating_add(1))
            .then(|| (self.release_at(last), last))
    }

    /// When an idle period that began `last` µs after `origin` ends in a release.
    fn release_at(&self, last: u64) -> Instant {
        self.origin + Duration::from_micros(last) + self.release_after
    }

    /// The session has a new backend connection: its release is to be timed again.
    pub(crate) fn connected(&self) {
        if !self.release_after.is_zero() {
            self.rearm.notify_one();
        }
    }

    /// After the session was woken: whether its backend connection is due for release, the
    /// client having sent nothing since the watcher found it so.
    pub(crate) fn release_due(&self) -> bool {
        self.release_due.swap(false, Ordering::Relaxed)
            && Instant::now() >= self.release_at(self.last.load(Ordering::Relaxed))
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

/// Watches a session's idle deadlines, re-arming when they come early (the client sent
/// commands meanwhile), and wakes the session through its link when one has passed.
///
/// The release of a backend connection is signalled once per idle period, and only while the
/// session holds one. One that held on (a transaction, a temporary table) is looked at again
/// every `release_after` for a new idle period; one without a backend costs nothing until its
/// next connection, which re-arms the watcher ([`IdleClock::connected`]).
pub(crate) async fn watch(link: Arc<SessionLink>) {
    let clock = &link.idle;
    loop {
        let mut next = clock.deadline();
        if !clock.release_after.is_zero() && link.backend_thread.load(Ordering::Relaxed) != 0 {
            // Not sooner than a second, however short the setting.
            let again = Instant::now() + clock.release_after.max(Duration::from_secs(1));
            next = next.min(clock.release_deadline().map_or(again, |(at, _)| at));
        }
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = clock.rearm.notified() => continue,
        }
        let now = Instant::now();
        if now >= clock.deadline() {
            clock.due.store(true, Ordering::Relaxed);
            link.wake.notify_one();
            // The session ends, or tells us it moved on.
            clock.rearm.notified().await;
        } else if let Some((release, last)) = clock.release_deadline()
            && now >= release
            && link.backend_thread.load(Ordering::Relaxed) != 0
        {
            // The period looked at, not a newer one a command began meanwhile.
            clock
                .released_for
                .store(last.saturating_add(1), Ordering::Relaxed);
            clock.release_due.store(true, Ordering::Relaxed);
            link.wake.notify_one();
        }
    }
}
