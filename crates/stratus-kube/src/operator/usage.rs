//! Usage metering on Kubernetes: what each database used, as counters on the operator's
//! `/metrics`, from the states its reconciles record: the same meter as one machine's
//! ([`stratus_core::usage`]: SCU-seconds while serving, suspended and parked time, storage
//! GiB-hours in every state), over intervals kept in memory instead of a catalog.
//!
//! A database's usage over a window is the `increase` of its counters over it
//! ([Prometheus counters](https://prometheus.io/docs/concepts/metric_types/#counter)). The
//! counters start again at zero when the operator restarts or another replica leads (Prometheus
//! treats that as a reset); what is lost is the time between the last scrape before and the
//! first reconcile after, at most a scrape interval plus the lease's duration. Storage is metered
//! by the volume's size, which is what the cluster provisions and bills, not by bytes in use.

use std::collections::BTreeMap;
use std::sync::Mutex;
use stratus_core::DbState;
use stratus_core::metrics::header;
use stratus_core::usage::{Interval, Usage, total};

/// A database's meter: what closed intervals added up to, and the interval open now.
#[derive(Debug, Clone)]
struct Metered {
    totals: Usage,
    open: Interval,
}

/// Every database's meter, while this replica leads.
#[derive(Debug, Default)]
pub struct Meter {
    inner: Mutex<Meters>,
}

#[derive(Debug, Default)]
struct Meters {
    dbs: BTreeMap<String, Metered>,
    /// The latest time the counters were read up to: no interval closes before it, so a change
    /// seen late (a reconcile records its start after its steps) or a clock that steps back
    /// never makes a counter go down, which Prometheus would take for a reset.
    read_up_to: i64,
}

/// How long a deleted database's counters are still served, so the last scrapes see their
/// final values.
const KEEP_DELETED_MS: i64 = 3_600_000;

/// The meter's state of a DatabaseService's `status.state` (`invalid`, `failed` and anything
/// else run no server: not metered but for storage).
pub fn state_of(status_state: &str) -> DbState {
    match status_state {
        "active" => DbState::Active,
        "migrating" => DbState::Migrating,
        "suspended" => DbState::Suspended,
        "parked" => DbState::Parked,
        "provisioning" => DbState::Provisioning,
        _ => DbState::Deleted,
    }
}

impl Meter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Meters> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Database `db` is, from `at_ms` on, in `state` at `scu` with a volume of `storage_bytes`:
    /// the open interval is closed if anything metered changed. A deleted database's volume
    /// goes with it: pass `DbState::Deleted` and 0 bytes.
    pub fn observe(&self, db: &str, at_ms: i64, state: DbState, scu: u32, storage_bytes: u64) {
        let mut meters = self.lock();
        let at_ms = at_ms.max(meters.read_up_to);
        let dbs = &mut meters.dbs;
        // Open: its end is the time of the next change, or of a reading.
        let next = Interval {
            from_ms: at_ms,
            to_ms: at_ms,
            state,
            scu,
            storage_bytes,
            stopped: false,
        };
        match dbs.get_mut(db) {
            None => {
                dbs.insert(
                    db.to_owned(),
                    Metered {
                        totals: total(db, &[], at_ms, at_ms),
                        open: next,
                    },
                );
            }
            Some(m) => {
                let same =
                    (m.open.state, m.open.scu, m.open.storage_bytes) == (state, scu, storage_bytes);
                if same || at_ms < m.open.from_ms {
                    return;
                }
                let until = Interval {
                    to_ms: at_ms,
                    ..m.open
                };
                let closed = total(db, &[until], m.open.from_ms, at_ms);
                add(&mut m.totals, &closed);
                m.open = next;
            }
        }
    }

    /// Forgets every database: this replica no longer leads, and its open intervals must not
    /// run on beside the new leader's.
    pub fn clear(&self) {
        let mut meters = self.lock();
        meters.dbs.clear();
        meters.read_up_to = 0;
    }

    /// What each database used since it was first seen, up to `now_ms`.
    pub fn usage(&self, now_ms: i64) -> Vec<Usage> {
        let mut meters = self.lock();
        let now_ms = now_ms.max(meters.read_up_to);
        meters.read_up_to = now_ms;
        // A database deleted long enough ago is done with.
        meters.dbs.retain(|_, m| {
            m.open.state != DbState::Deleted || now_ms - m.open.from_ms < KEEP_DELETED_MS
        });
        meters
            .dbs
            .iter()
            .map(|(db, m)| {
                let mut u = m.totals.clone();
                let until = Interval {
                    to_ms: now_ms,
                    ..m.open
                };
                add(&mut u, &total(db, &[until], m.open.from_ms, now_ms));
                u.to_ms = now_ms;
                u
            })
            .collect()
    }

    /// The counters, in Prometheus text.
    pub fn render(&self, now_ms: i64) -> String {
        let usage = self.usage(now_ms);
        let mut out = String::new();
        let series: [Series; 5] = [
            (
                "stratus_database_scu_seconds_total",
                "Size in SCU times seconds while serving (active or moving).",
                |u| u.scu_seconds,
            ),
            (
                "stratus_database_active_seconds_total",
                "Seconds serving (active or moving).",
                |u| u.active_seconds,
            ),
            (
                "stratus_database_suspended_seconds_total",
                "Seconds suspended (the server at its floor).",
                |u| u.suspended_seconds,
            ),
            (
                "stratus_database_parked_seconds_total",
                "Seconds parked (only the volume kept).",
                |u| u.parked_seconds,
            ),
            (
                "stratus_database_storage_gib_hours_total",
                "The volume's size in GiB times hours, in every state.",
                |u| u.storage_gib_hours,
            ),
        ];
        for (name, help, value) in series {
            header(&mut out, name, "counter", help);
            for u in &usage {
                out.push_str(&format!("{name}{{db=\"{}\"}} {}\n", u.db, value(u)));
            }
        }
        out
    }
}

/// A counter: its name, its help, and its value in a database's usage.
type Series = (&'static str, &'static str, fn(&Usage) -> f64);

fn add(to: &mut Usage, u: &Usage) {
    to.active_seconds += u.active_seconds;
    to.scu_seconds += u.scu_seconds;
    to.suspended_seconds += u.suspended_seconds;
    to.parked_seconds += u.parked_seconds;
    to.stopped_seconds += u.stopped_seconds;
    to.storage_gib_hours += u.storage_gib_hours;
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_database_is_metered_by_the_states_it_was_seen_in() {
        let m = Meter::default();
        // Active at 2 SCU for 10 s, then 4 SCU for 5 s, suspended 20 s, parked 60 s.
        m.observe("shop", 0, DbState::Active, 2, 10 * GIB);
        m.observe("shop", 4_000, DbState::Active, 2, 10 * GIB); // nothing changed
        m.observe("shop", 10_000, DbState::Active, 4, 10 * GIB);
        m.observe("shop", 15_000, DbState::Suspended, 4, 10 * GIB);
        m.observe("shop", 35_000, DbState::Parked, 4, 10 * GIB);
        let u = &m.usage(95_000)[0];
        assert_eq!(u.scu_seconds, 2.0 * 10.0 + 4.0 * 5.0);
        assert_eq!(u.active_seconds, 15.0);
        assert_eq!(u.suspended_seconds, 20.0);
        assert_eq!(u.parked_seconds, 60.0);
        assert!((u.storage_gib_hours - 10.0 * 95.0 / 3600.0).abs() < 1e-9);
    }

    #[test]
    fn a_deleted_database_stops_counting_and_invalid_ones_never_start() {
        let m = Meter::default();
        m.observe("shop", 0, DbState::Active, 1, GIB);
        m.observe("shop", 3_600_000, DbState::Deleted, 1, 0);
        m.observe("typo", 3_000_000, state_of("invalid"), 1, 0);
        let later = m.usage(3_700_000);
        let shop = later.iter().find(|u| u.db == "shop").unwrap();
        assert_eq!(shop.scu_seconds, 3600.0);
        assert!((shop.storage_gib_hours - 1.0).abs() < 1e-9);
        let typo = later.iter().find(|u| u.db == "typo").unwrap();
        assert_eq!((typo.scu_seconds, typo.storage_gib_hours), (0.0, 0.0));
    }

    #[test]
    fn counters_never_go_down_when_a_change_is_seen_late() {
        let m = Meter::default();
        m.observe("shop", 0, DbState::Active, 4, GIB);
        // Read at 10 s, then a suspend recorded as of 8 s (its reconcile began then).
        let before = m.usage(10_000)[0].scu_seconds;
        m.observe("shop", 8_000, DbState::Suspended, 4, GIB);
        let after = m.usage(10_000)[0].scu_seconds;
        assert!(after >= before, "{after} < {before}");
        // A clock stepping back does not lower them either.
        assert!(m.usage(5_000)[0].scu_seconds >= after);
    }

    #[test]
    fn a_deleted_database_is_dropped_an_hour_later() {
        let m = Meter::default();
        m.observe("shop", 0, DbState::Active, 1, GIB);
        m.observe("shop", 1_000, DbState::Deleted, 1, 0);
        assert_eq!(m.usage(1_000 + KEEP_DELETED_MS - 1).len(), 1);
        assert!(m.usage(1_000 + KEEP_DELETED_MS).is_empty());
    }

    #[test]
    fn counters_render_per_database() {
        let m = Meter::default();
        m.observe("shop", 0, DbState::Active, 2, GIB);
        let text = m.render(1_500);
        assert!(text.contains("# TYPE stratus_database_scu_seconds_total counter\n"));
        assert!(
            text.contains("stratus_database_scu_seconds_total{db=\"shop\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("stratus_database_parked_seconds_total{db=\"shop\"} 0\n"));
    }
}
