//! Usage metering: what each database used, from the intervals the catalog records.
//!
//! The catalog opens a new interval whenever a database's state or size changes (in the same
//! transaction as the change), and when its storage in use changes materially. So the meter is
//! exact to the millisecond for size and state, and follows the catalog through a restart of
//! Stratus: the interval open when Stratus stopped runs on, as its server did. This module
//! adds intervals up over a window; it is pure.
//!
//! * **SCU-seconds**: size × time in the states where the server serves at its size
//!   (`active`, `migrating`).
//! * **Suspended and parked time**: time in those states (a suspended database's server holds
//!   its memory at the floor; a parked one holds only its storage).
//! * **Stopped time**: time a database's state wanted a running server and none ran (Stratus
//!   stopped, which stops its servers, or a server that cannot start): not billed as active.
//! * **Storage GiB-hours**: bytes in use × time, in every state: storage is kept while parked.

use crate::DbState;
use serde::{Deserialize, Serialize};

/// One stretch of a database's life with nothing metered changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub from_ms: i64,
    pub to_ms: i64,
    pub state: DbState,
    pub scu: u32,
    pub storage_bytes: u64,
    /// Its state wants a running server and none ran: Stratus was stopped (it stops its
    /// servers), or the server could not be started. Only storage is metered.
    pub stopped: bool,
}

/// What one database used over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub db: String,
    /// The window: from `from_ms` (or the database's first interval, if later) to `to_ms`.
    pub from_ms: i64,
    pub to_ms: i64,
    pub active_seconds: f64,
    pub scu_seconds: f64,
    pub suspended_seconds: f64,
    pub parked_seconds: f64,
    /// Time its server was not running although its state wanted one (`Interval::stopped`).
    pub stopped_seconds: f64,
    pub storage_gib_hours: f64,
}

const GIB: f64 = (1u64 << 30) as f64;

/// Adds up `intervals` of database `db` clipped to `[from_ms, to_ms]`.
pub fn total(db: &str, intervals: &[Interval], from_ms: i64, to_ms: i64) -> Usage {
    let first = intervals.iter().map(|i| i.from_ms).min().unwrap_or(from_ms);
    let mut u = Usage {
        db: db.to_owned(),
        from_ms: from_ms.max(first).min(to_ms),
        to_ms,
        active_seconds: 0.0,
        scu_seconds: 0.0,
        suspended_seconds: 0.0,
        parked_seconds: 0.0,
        stopped_seconds: 0.0,
        storage_gib_hours: 0.0,
    };
    for i in intervals {
        let ms = i.to_ms.min(to_ms) - i.from_ms.max(from_ms);
        if ms <= 0 {
            continue;
        }
        let s = ms as f64 / 1000.0;
        u.storage_gib_hours += i.storage_bytes as f64 / GIB * (s / 3600.0);
        if i.stopped {
            u.stopped_seconds += s;
            continue;
        }
        match i.state {
            DbState::Active | DbState::Migrating => {
                u.active_seconds += s;
                u.scu_seconds += s * f64::from(i.scu);
            }
            DbState::Suspended => u.suspended_seconds += s,
            DbState::Parked => u.parked_seconds += s,
            DbState::Provisioning | DbState::Deleted => {}
        }
    }
    u
}

/// Whether a new storage measurement differs enough from the recorded one to start a new
/// interval: at least 1 MiB and 1 %. Smaller drifts are left out; each is at most 1 % of the
/// storage term for as long as it lasts.
pub fn storage_changed(recorded: u64, now: u64) -> bool {
    let diff = recorded.abs_diff(now);
    diff >= 1 << 20 && diff.saturating_mul(100) >= recorded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(from_ms: i64, to_ms: i64, state: DbState, scu: u32) -> Interval {
        Interval {
            from_ms,
            to_ms,
            state,
            scu,
            storage_bytes: 1 << 30,
            stopped: false,
        }
    }

    #[test]
    fn size_times_active_time_and_the_rest_by_state() {
        let life = [
            at(0, 1_000, DbState::Provisioning, 1),
            at(1_000, 11_000, DbState::Active, 1),
            at(11_000, 21_000, DbState::Active, 2),
            at(21_000, 31_000, DbState::Suspended, 2),
            at(31_000, 3_631_000, DbState::Parked, 2),
        ];
        let u = total("shop", &life, 0, 3_631_000);
        assert_eq!(u.active_seconds, 20.0);
        assert_eq!(u.scu_seconds, 10.0 + 20.0);
        assert_eq!((u.suspended_seconds, u.parked_seconds), (10.0, 3600.0));
        // 1 GiB for 3631 s.
        assert!((u.storage_gib_hours - 3631.0 / 3600.0).abs() < 1e-9);
    }

    #[test]
    fn a_stopped_server_is_not_billed_as_active() {
        let mut down = at(10_000, 70_000, DbState::Active, 2);
        down.stopped = true;
        let u = total(
            "shop",
            &[at(0, 10_000, DbState::Active, 2), down],
            0,
            70_000,
        );
        assert_eq!(
            (u.scu_seconds, u.active_seconds, u.stopped_seconds),
            (20.0, 10.0, 60.0)
        );
    }

    #[test]
    fn a_window_clips_the_intervals_it_cuts() {
        let life = [
            at(0, 10_000, DbState::Active, 4),
            at(10_000, 20_000, DbState::Parked, 4),
        ];
        let u = total("shop", &life, 5_000, 15_000);
        assert_eq!((u.scu_seconds, u.parked_seconds), (20.0, 5.0));
        assert_eq!((u.from_ms, u.to_ms), (5_000, 15_000));
        let before = total("shop", &life, -50_000, 20_000);
        assert_eq!(
            before.from_ms, 0,
            "a window starting earlier starts at the database's birth"
        );
        let none = total("shop", &[], 0, 10);
        assert_eq!(none.scu_seconds, 0.0);
    }

    #[test]
    fn storage_drift_below_a_mebibyte_or_a_percent_is_not_a_new_interval() {
        assert!(!storage_changed(100 << 20, (100 << 20) + (512 << 10)));
        assert!(
            !storage_changed(1 << 40, (1 << 40) + (1 << 20)),
            "1 MiB of 1 TiB"
        );
        assert!(storage_changed(100 << 20, 102 << 20));
        assert!(storage_changed(0, 2 << 20));
        assert!(storage_changed(50 << 20, 10 << 20));
    }
}
