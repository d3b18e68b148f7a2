//! Failed logins, counted per source address and per account, and the delay they earn.
//!
//! After [`Policy::free_failures`] failures in a row (none older than [`Policy::window`] apart),
//! every further answer to that source or account — right or wrong password alike, so the
//! delay gives nothing away — waits [`Policy::first_delay`], doubling per failure up to
//! [`Policy::max_delay`]. A success resets its source and account; so does a quiet window. Only
//! the login's own task waits (the proxy's threads never sleep). Memory is bounded: at most
//! [`Policy::max_keys`] keys are kept, the longest quiet evicted first.
//!
//! The state machine ([`Throttle`]) is pure and takes the time as an argument, so its tests
//! need no clock; [`Logins`] wraps it in a lock for the session threads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How failed logins are slowed down. The defaults and why are in `docs/decisions.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures answered at once (a mistyped password or two costs nothing).
    pub free_failures: u32,
    /// The delay after the first failure beyond the free ones; it doubles with each failure.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A key with no failure for this long is forgotten.
    pub window: Duration,
    /// Most keys (sources and accounts together) tracked at once.
    pub max_keys: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            free_failures: 3,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            window: Duration::from_secs(600),
            max_keys: 10_000,
        }
    }
}

/// What failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A client address; IPv6 by its /64, the block one client usually holds.
    Source(IpAddr),
    /// The account a client named: `<database>.<user>` (or the raw user name when it named no
    /// database), at most [`ACCOUNT_KEY_MAX`] bytes.
    Account(Box<str>),
}

/// Longest account name kept: user names from the wire are bounded only by the packet.
pub const ACCOUNT_KEY_MAX: usize = 128;

impl Key {
    pub fn source(ip: IpAddr) -> Self {
        Key::Source(match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut o = v6.octets();
                    o[8..].fill(0);
                    IpAddr::V6(o.into())
                }
            },
            v4 => v4,
        })
    }

    pub fn account(name: &str) -> Self {
        let mut end = name.len().min(ACCOUNT_KEY_MAX);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        Key::Account(name[..end].into())
    }

    /// `source` or `account`, for metrics and events.
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Source(_) => "source",
            Key::Account(_) => "account",
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Source(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            Key::Source(ip) => write!(f, "{ip}"),
            Key::Account(a) => f.write_str(a),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// A key that has just started being throttled: reported once per episode, not per failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    pub key: Key,
    pub failures: u32,
    /// What the next attempt will wait.
    pub delay: Duration,
    pub window: Duration,
}

/// The pure state machine: failures per key, with the time passed in.
#[derive(Debug, Default)]
pub struct Throttle {
    policy: Policy,
    entries: HashMap<Key, Entry>,
}

impl Throttle {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
        }
    }

    /// Failures of `key` still counting at `now`.
    fn failures(&self, key: &Key, now: Instant) -> u32 {
        self.entries
            .get(key)
            .filter(|e| now.saturating_duration_since(e.last) < self.policy.window)
            .map_or(0, |e| e.failures)
    }

    /// The delay `failures` earn.
    pub fn delay_after(&self, failures: u32) -> Duration {
        let p = &self.policy;
        let Some(beyond) = failures.checked_sub(p.free_failures) else {
            return Duration::ZERO;
        };
        p.first_delay
            .checked_mul(1u32.checked_shl(beyond).unwrap_or(u32::MAX))
            .unwrap_or(p.max_delay)
            .min(p.max_delay)
    }

    /// How long an attempt from these keys waits before it is answered.
    pub fn delay(&self, keys: &[Key], now: Instant) -> Duration {
        keys.iter()
            .map(|k| self.delay_after(self.failures(k, now)))
            .max()
            .unwrap_or_default()
    }

    /// Counts a failure against each key; returns the keys that start being throttled with it.
    pub fn failed(&mut self, keys: &[Key], now: Instant) -> Vec<Throttled> {
        let mut started = Vec::new();
        for key in keys {
            let failures = self.failures(key, now) + 1;
            if !self.entries.contains_key(key) {
                self.make_room(now);
            }
            self.entries.insert(
                key.clone(),
                Entry {
                    failures,
                    last: now,
                },
            );
            if failures == self.policy.free_failures {
                started.push(Throttled {
                    key: key.clone(),
                    failures,
                    delay: self.delay_after(failures),
                    window: self.policy.window,
                });
            }
        }
        started
    }

    /// A login succeeded: its keys start afresh.
    pub fn succeeded(&mut self, keys: &[Key]) {
        for k in keys {
            self.entries.remove(k);
        }
    }

    /// Keys whose next attempt waits, as (sources, accounts).
    pub fn throttled(&self, now: Instant) -> (u64, u64) {
        let (mut sources, mut accounts) = (0, 0);
        for (k, e) in &self.entries {
            let live = now.saturating_duration_since(e.last) < self.policy.window;
            if live && e.failures >= self.policy.free_failures {
                match k {
                    Key::Source(_) => sources += 1,
                    Key::Account(_) => accounts += 1,
                }
            }
        }
        (sources, accounts)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Below the cap before a new key goes in: forgotten keys first, then the longest quiet.
    /// A scan, but only when full, and only on the failed-login path.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.policy.max_keys {
            return;
        }
        let window = self.policy.window;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last) < window);
        while self.entries.len() >= self.policy.max_keys.max(1) {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

/// The proxy's failed-login record, shared by its session threads. The lock is held only for a
/// map operation, and only on the login path.
#[derive(Debug, Default)]
pub struct Logins {
    throttle: Mutex<Throttle>,
    /// Failures that named no existing account (per database counts are in the database's
    /// activity; unknown names must not grow the metrics).
    pub unknown_account_failures: AtomicU64,
}

impl Logins {
    pub fn new(policy: Policy) -> Self {
        Self {
            throttle: Mutex::new(Throttle::new(policy)),
            unknown_account_failures: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Throttle> {
        self.throttle.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn delay(&self, keys: &[Key]) -> Duration {
        self.lock().delay(keys, Instant::now())
    }

    pub fn failed(&self, keys: &[Key], account_exists: bool) -> Vec<Throttled> {
        if !account_exists {
            self.unknown_account_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        self.lock().failed(keys, Instant::now())
    }

    pub fn succeeded(&self, keys: &[Key]) {
        self.lock().succeeded(keys)
    }

    /// (sources, accounts) whose next attempt waits.
    pub fn throttled(&self) -> (u64, u64) {
        self.lock().throttled(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn keys(ip: &str, account: &str) -> [Key; 2] {
        [Key::source(ip.parse().unwrap()), Key::account(account)]
    }

    #[test]
    fn free_failures_then_doubling_up_to_the_cap() {
        let mut t = Throttle::new(Policy::default());
        let now = Instant::now();
        let k = keys("10.0.0.1", "shop.admin");
        let mut waits = Vec::new();
        for _ in 0..10 {
            waits.push(t.delay(&k, now).as_millis());
            t.failed(&k, now);
        }
        assert_eq!(waits, [0, 0, 0, 250, 500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(t.delay_after(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn an_event_once_per_key_when_throttling_starts() {
        let mut t = Throttle::new(Policy::default());
        let now = Instant::now();
        let k = keys("10.0.0.1", "shop.admin");
        assert!(t.failed(&k, now).is_empty());
        assert!(t.failed(&k, now).is_empty());
        let started = t.failed(&k, now);
        assert_eq!(
            started.iter().map(|s| s.key.kind()).collect::<Vec<_>>(),
            ["source", "account"]
        );
        assert_eq!(started[0].delay, 250 * MS);
        assert!(t.failed(&k, now).is_empty(), "not one event per failure");
        assert_eq!(t.throttled(now), (1, 1));
    }

    #[test]
    fn success_and_a_quiet_window_reset() {
        let p = Policy::default();
        let mut t = Throttle::new(p);
        let now = Instant::now();
        let k = keys("10.0.0.1", "shop.admin");
        for _ in 0..5 {
            t.failed(&k, now);
        }
        assert_eq!(t.delay(&k, now), 1000 * MS);
        assert_eq!(t.delay(&k, now + p.window - MS), 1000 * MS);
        assert_eq!(t.delay(&k, now + p.window), Duration::ZERO, "window passed");
        assert_eq!(t.throttled(now + p.window), (0, 0));
        // Failing again after the window starts from one.
        t.failed(&k, now + p.window);
        assert_eq!(t.failures(&k[0], now + p.window), 1);
        for _ in 0..5 {
            t.failed(&k, now + p.window);
        }
        t.succeeded(&k);
        assert_eq!(t.delay(&k, now + p.window), Duration::ZERO);
        assert!(t.is_empty());
    }

    #[test]
    fn source_and_account_count_apart() {
        let mut t = Throttle::new(Policy::default());
        let now = Instant::now();
        // One source spraying accounts: the source is throttled, no single account.
        for i in 0..4 {
            t.failed(&keys("10.0.0.1", &format!("shop.u{i}")), now);
        }
        assert_eq!(t.delay(&keys("10.0.0.1", "shop.new"), now), 500 * MS);
        assert_eq!(t.delay(&keys("10.0.0.2", "shop.u0"), now), Duration::ZERO);
        // Many sources on one account: the account is throttled for every source.
        for i in 0..4 {
            t.failed(&keys(&format!("10.0.1.{i}"), "shop.admin"), now);
        }
        assert_eq!(t.delay(&keys("10.0.2.1", "shop.admin"), now), 500 * MS);
        assert_eq!(t.throttled(now), (1, 1));
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_v4_as_v4() {
        let a = Key::source("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Key::source("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = Key::source("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            Key::source("::ffff:10.0.0.1".parse().unwrap()),
            Key::source("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn memory_is_bounded_and_the_longest_quiet_goes_first() {
        let mut t = Throttle::new(Policy {
            max_keys: 4,
            ..Policy::default()
        });
        let now = Instant::now();
        let hot = [Key::account("shop.admin")];
        for _ in 0..3 {
            t.failed(&hot, now + 10 * MS);
        }
        for i in 0..100u32 {
            t.failed(&[Key::account(&format!("x{i}"))], now + MS * (20 + i));
            assert!(t.len() <= 4);
        }
        assert!(t.len() <= 4);
        assert_eq!(t.failures(&hot[0], now + 200 * MS), 0, "oldest evicted");
        assert_eq!(t.failures(&Key::account("x99"), now + 200 * MS), 1);
        // Expired keys go before live ones.
        let mut t = Throttle::new(Policy {
            max_keys: 2,
            window: 100 * MS,
            ..Policy::default()
        });
        t.failed(&[Key::account("old")], now);
        t.failed(&[Key::account("live")], now + 150 * MS);
        t.failed(&[Key::account("new")], now + 160 * MS);
        assert_eq!(t.failures(&Key::account("live"), now + 160 * MS), 1);
    }

    #[test]
    fn account_keys_are_bounded_and_cut_on_a_char_boundary() {
        let long = "é".repeat(200);
        let Key::Account(k) = Key::account(&long) else {
            unreachable!()
        };
        assert!(k.len() <= ACCOUNT_KEY_MAX);
        assert!(long.starts_with(&*k));
    }
}
