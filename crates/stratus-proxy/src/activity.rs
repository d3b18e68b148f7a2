//! What the proxy tells the control plane about each database: whether anything is going on.
//! An open but idle connection is not activity (so a client's idle pool never keeps a database
//! awake); a running statement, an open transaction or a pinned session is.

use crate::replay::Outcome;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use stratus_core::metrics;

#[derive(Debug, Default)]
pub struct ServiceActivity {
    pub connections: AtomicU64,
    pub running: AtomicU64,
    pub in_transaction: AtomicU64,
    pub pinned: AtomicU64,
    /// Sessions whose user variables are not read back yet (`client::user_vars`).
    pub unread_vars: AtomicU64,
    /// When the last statement ended, on the monotonic clock ([`mono_us`]; 0: none yet). Kept
    /// monotonic because it is written on every statement, where reading the wall clock as
    /// well would cost a second clock read; [`ServiceActivity::snapshot`] converts it.
    pub last_statement: AtomicU64,
    pub statements: AtomicU64,
    pub errors: AtomicU64,
    pub wakes: AtomicU64,
    /// Backend connections kept for reuse.
    pub pooled: AtomicU64,
    /// Backend connections held by client sessions.
    pub backends: AtomicU64,
    /// Backend connections given back by sessions whose clients were idle.
    pub idle_releases: AtomicU64,
    /// Statement latency as the client sees it, wake time included.
    pub latency: Histogram,
    /// Time a held client waited for its database to wake.
    pub wake_latency: Histogram,
    /// Statements cut off by a lost backend, by how they ended ([`Outcome::ALL`] order).
    pub failovers: [AtomicU64; Outcome::ALL.len()],
    /// From noticing a lost backend to answering the cut-off statement.
    pub failover_latency: Histogram,
    /// Wrong passwords for an existing account of this database.
    pub login_failures: AtomicU64,
}

/// Upper bounds of the latency buckets, in microseconds.
pub const BUCKETS_US: [u64; 15] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// A fixed-bucket histogram of atomics: observing takes no lock, which matters on the
/// per-statement path (a mutex-based one would serialise every session of a database).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (as Prometheus wants them), total count, and sum in µs.
    pub fn cumulative(&self) -> ([u64; BUCKETS_US.len()], u64, u64) {
        let mut out = [0u64; BUCKETS_US.len()];
        let mut acc = 0;
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            acc += b.load(Ordering::Relaxed);
            *o = acc;
        }
        (
            out,
            self.count.load(Ordering::Relaxed),
            self.sum_us.load(Ordering::Relaxed),
        )
    }
}

/// A point-in-time copy, for the API and the lifecycle controller.
/// One session's share of its database's gauges, so that each is counted at most once and taken
/// back when the session stops holding it. A share that an answer ends is taken back before
/// that answer is written to the client: a client that has its answer and at once asks to
/// suspend or park the database must find nothing of its own still running.
#[derive(Debug, Default)]
pub(crate) struct SessionShare {
    running: bool,
    in_transaction: bool,
    pinned: bool,
    unread_vars: bool,
}

impl SessionShare {
    /// Counts (or stops counting) the session's statement as running.
    pub(crate) fn running(&mut self, a: &ServiceActivity, now: bool) {
        track(&a.running, &mut self.running, now);
    }

    /// Brings the transaction, pin and unread-variable gauges in line with the session's state;
    /// `long_data`: long data waits on its connection for an execute, which pins it too.
    pub(crate) fn publish(
        &mut self,
        a: &ServiceActivity,
        state: &crate::session::SessionState,
        long_data: bool,
    ) {
        track(
            &a.in_transaction,
            &mut self.in_transaction,
            state.in_transaction,
        );
        let pinned = state.holds_connection_state() || long_data;
        track(&a.pinned, &mut self.pinned, pinned);
        track(
            &a.unread_vars,
            &mut self.unread_vars,
            state.user_vars_unread,
        );
    }

    /// Takes back the transaction, pin and unread-variable shares (the session ends, or starts
    /// over as another identity).
    pub(crate) fn withdraw(&mut self, a: &ServiceActivity) {
        track(&a.in_transaction, &mut self.in_transaction, false);
        track(&a.pinned, &mut self.pinned, false);
        track(&a.unread_vars, &mut self.unread_vars, false);
    }
}

/// Moves one session's contribution to a shared gauge when its own flag changes.
fn track(gauge: &AtomicU64, reported: &mut bool, now: bool) {
    if now != *reported {
        if now {
            gauge.fetch_add(1, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
        *reported = now;
    }
}

/// The process's monotonic time origin, for instants kept in atomics.
fn origin() -> std::time::Instant {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

/// `at` as microseconds after the process's origin, never 0 (0 means "never").
pub(crate) fn mono_us(at: std::time::Instant) -> u64 {
    let us = at.saturating_duration_since(origin()).as_micros();
    u64::try_from(us).unwrap_or(u64::MAX).max(1)
}

/// A [`mono_us`] instant as milliseconds since the Unix epoch, by the wall clock now (0 stays
/// 0): what the control plane compares with its own clock.
fn wall_ms(mono: u64) -> i64 {
    if mono == 0 {
        return 0;
    }
    let ago_us = mono_us(std::time::Instant::now()).saturating_sub(mono);
    stratus_core::time::now_ms() - i64::try_from(ago_us / 1000).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActivitySnapshot {
    pub connections: u64,
    pub running: u64,
    pub in_transaction: u64,
    pub pinned: u64,
    pub unread_vars: u64,
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
            unread_vars: l(&self.unread_vars),
            last_statement_ms: wall_ms(self.last_statement.load(Ordering::Relaxed)),
            statements: l(&self.statements),
            errors: l(&self.errors),
            wakes: l(&self.wakes),
        }
    }
}

#[derive(Debug, Default)]
pub struct Activity {
    services: Mutex<HashMap<String, Arc<ServiceActivity>>>,
    /// Failed logins and the delays they earn.
    pub logins: crate::throttle::Logins,
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

    /// Every database the proxy has seen, sorted by name.
    pub fn all(&self) -> Vec<(String, Arc<ServiceActivity>)> {
        let map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map.iter().map(|(k, a)| (k.clone(), a.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The Prometheus text exposition of every database's figures
    /// (<https://prometheus.io/docs/instrumenting/exposition_formats/>).
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let all = self.all();
        let mut out = String::new();
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&ServiceActivity) -> u64| {
                metrics::header(&mut out, name, kind, help);
                for (db, a) in &all {
                    let _ = writeln!(out, "{name}{{db=\"{db}\"}} {}", value(a));
                }
            };
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            "stratus_proxy_connections",
            "gauge",
            "Client connections open.",
            &|a| l(&a.connections),
        );
        family(
            "stratus_proxy_statements_running",
            "gauge",
            "Statements in flight.",
            &|a| l(&a.running),
        );
        family(
            "stratus_proxy_pinned_sessions",
            "gauge",
            "Sessions that cannot move to another backend connection.",
            &|a| l(&a.pinned),
        );
        family(
            "stratus_proxy_open_transactions",
            "gauge",
            "Sessions inside a transaction.",
            &|a| l(&a.in_transaction),
        );
        family(
            "stratus_proxy_statements_total",
            "counter",
            "Statements relayed.",
            &|a| l(&a.statements),
        );
        family(
            "stratus_proxy_errors_total",
            "counter",
            "Statements answered with an error.",
            &|a| l(&a.errors),
        );
        family(
            "stratus_proxy_wakes_total",
            "counter",
            "Databases woken for a waiting client.",
            &|a| l(&a.wakes),
        );
        family(
            "stratus_proxy_pooled_connections",
            "gauge",
            "Backend connections kept for reuse.",
            &|a| l(&a.pooled),
        );
        family(
            "stratus_proxy_backend_connections",
            "gauge",
            "Backend connections held by client sessions.",
            &|a| l(&a.backends),
        );
        family(
            "stratus_proxy_idle_releases_total",
            "counter",
            "Backend connections given back to the pool because their client was idle.",
            &|a| l(&a.idle_releases),
        );
        let name = "stratus_proxy_failovers_total";
        metrics::header(
            &mut out,
            name,
            "counter",
            "Statements cut off by a lost backend, by outcome.",
        );
        for (db, a) in &all {
            for o in Outcome::ALL {
                let n = l(&a.failovers[o.index()]);
                let _ = writeln!(out, "{name}{{db=\"{db}\",outcome=\"{}\"}} {n}", o.as_str());
            }
        }
        let name = "stratus_proxy_login_failures_total";
        metrics::header(
            &mut out,
            name,
            "counter",
            "Failed logins: wrong passwords per database; db=\"_unknown\" for names of no existing account.",
        );
        for (db, a) in &all {
            let _ = writeln!(out, "{name}{{db=\"{db}\"}} {}", l(&a.login_failures));
        }
        let unknown = l(&self.logins.unknown_account_failures);
        let _ = writeln!(out, "{name}{{db=\"_unknown\"}} {unknown}");
        let name = "stratus_proxy_login_throttled";
        metrics::header(
            &mut out,
            name,
            "gauge",
            "Client sources and accounts whose logins are being delayed after repeated failures.",
        );
        let (sources, accounts) = self.logins.throttled();
        let _ = writeln!(out, "{name}{{kind=\"source\"}} {sources}");
        let _ = writeln!(out, "{name}{{kind=\"account\"}} {accounts}");
        let mut histogram = |name: &str, help: &str, h: &dyn Fn(&ServiceActivity) -> &Histogram| {
            metrics::header(&mut out, name, "histogram", help);
            for (db, a) in &all {
                let (buckets, count, sum_us) = h(a).cumulative();
                for (le, n) in BUCKETS_US.iter().zip(buckets) {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{db=\"{db}\",le=\"{}\"}} {n}",
                        *le as f64 / 1e6
                    );
                }
                let _ = writeln!(out, "{name}_bucket{{db=\"{db}\",le=\"+Inf\"}} {count}");
                let _ = writeln!(out, "{name}_sum{{db=\"{db}\"}} {}", sum_us as f64 / 1e6);
                let _ = writeln!(out, "{name}_count{{db=\"{db}\"}} {count}");
            }
        };
        histogram(
            "stratus_proxy_failover_seconds",
            "From a lost backend to the answer of the statement it cut off.",
            &|a| &a.failover_latency,
        );
        histogram(
            "stratus_proxy_statement_seconds",
            "Statement latency seen by clients.",
            &|a| &a.latency,
        );
        histogram(
            "stratus_proxy_wake_seconds",
            "Time held clients waited for their database to wake.",
            &|a| &a.wake_latency,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_is_cumulative_and_renders() {
        let a = Activity::default();
        let s = a.service("shop");
        s.latency.observe(Duration::from_micros(100));
        s.latency.observe(Duration::from_millis(3));
        s.statements.fetch_add(2, Ordering::Relaxed);
        let (b, count, sum) = s.latency.cumulative();
        assert_eq!((b[0], b[4], b[14], count, sum), (1, 2, 2, 2, 3100));
        let text = a.render();
        assert!(
            text.contains("stratus_proxy_statements_total{db=\"shop\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("stratus_proxy_statement_seconds_bucket{db=\"shop\",le=\"0.00025\"} 1"),
            "{text}"
        );
        assert!(text.contains("stratus_proxy_statement_seconds_count{db=\"shop\"} 2"));
    }

    #[test]
    fn the_last_statement_reads_as_wall_clock_milliseconds() {
        let s = ServiceActivity::default();
        assert_eq!(s.snapshot().last_statement_ms, 0, "none yet stays none");
        let before = stratus_core::time::now_ms();
        s.last_statement
            .store(mono_us(std::time::Instant::now()), Ordering::Relaxed);
        let seen = s.snapshot().last_statement_ms;
        let after = stratus_core::time::now_ms();
        // The conversion may round down by a millisecond.
        assert!(
            (before - 1..=after).contains(&seen),
            "{before} <= {seen} <= {after}"
        );
    }
}
