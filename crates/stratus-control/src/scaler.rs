//! The scaling decision: a pure function of CPU samples, the policy and the current size.
//!
//! The brief's algorithm: sample CPU use every 200 ms into a 30 s sliding window; scale up when
//! use is at or above 90 % of the allocation over the last second; scale down when the 30 s
//! average is at or below 20 %. Sizes move in whole SCUs within the database's range. Added so
//! it neither flaps nor crawls:
//! * a floor on evidence: a window must hold enough samples, and cover most of its span;
//! * a cooldown after every change, and a scale-down only once a full down-window has been
//!   measured at the new size;
//! * bigger steps when the load clearly needs them: a database pinned at its quota doubles
//!   (its true demand is hidden by throttling), and a scale-down goes straight to the size that
//!   would run at about half its allocation.

use std::collections::VecDeque;
use stratus_core::ScalingPolicy;

/// One reading of a database's cumulative CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: i64,
    pub cpu_ns: u64,
}

/// The sliding window of samples.
#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
}

/// Fewest samples a decision rests on.
pub const MIN_SAMPLES: usize = 4;

impl Window {
    /// Adds a sample and forgets those older than `keep_ms`. A sample that goes back in time
    /// (the process restarted, its counter reset) starts the window afresh.
    pub fn push(&mut self, s: Sample, keep_ms: i64) {
        if self
            .samples
            .back()
            .is_some_and(|last| s.cpu_ns < last.cpu_ns || s.at_ms <= last.at_ms)
        {
            self.samples.clear();
        }
        self.samples.push_back(s);
        while self
            .samples
            .front()
            .is_some_and(|f| s.at_ms - f.at_ms > keep_ms)
        {
            self.samples.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.samples.clear();
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Average CPU use in millicores over the last `span_ms`, if the window holds enough
    /// samples covering at least 80 % of that span.
    pub fn usage_millis(&self, span_ms: i64) -> Option<f64> {
        let last = *self.samples.back()?;
        let first = self
            .samples
            .iter()
            .find(|s| last.at_ms - s.at_ms <= span_ms)?;
        let n = self
            .samples
            .iter()
            .filter(|s| last.at_ms - s.at_ms <= span_ms)
            .count();
        let covered = last.at_ms - first.at_ms;
        if n < MIN_SAMPLES || covered * 5 < span_ms * 4 || covered <= 0 {
            return None;
        }
        let cpu_ms = (last.cpu_ns - first.cpu_ns) as f64 / 1e6;
        Some(cpu_ms / covered as f64 * 1000.0)
    }
}

/// What the scaler may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min_scu: u32,
    pub max_scu: u32,
    pub cpu_millis_per_scu: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold,
    Resize {
        to: u32,
        /// Measured use as a share of the current allocation, in percent.
        usage_pct: f64,
        /// The window the measurement covers.
        window_ms: i64,
    },
}

/// Time after any change before the next one.
pub const COOLDOWN_MS: i64 = 5_000;

/// Decides whether a database at `scu` should change size.
pub fn decide(
    w: &Window,
    now_ms: i64,
    scu: u32,
    b: Bounds,
    p: &ScalingPolicy,
    last_change_ms: Option<i64>,
) -> Decision {
    let since_change = last_change_ms.map_or(i64::MAX, |t| now_ms - t);
    if since_change < COOLDOWN_MS {
        return Decision::Hold;
    }
    let allocated = f64::from(scu.max(1) * b.cpu_millis_per_scu.max(1));
    let up_window = p.scale_up_window_ms as i64;
    if let Some(used) = w.usage_millis(up_window) {
        let pct = used / allocated * 100.0;
        if pct >= f64::from(p.scale_up_threshold_pct) && scu < b.max_scu {
            // At the quota the true demand is hidden by throttling: double. Near it: one step.
            let to = if pct >= 98.0 {
                scu.saturating_mul(2)
            } else {
                scu + 1
            };
            return Decision::Resize {
                to: to.clamp(b.min_scu, b.max_scu),
                usage_pct: pct,
                window_ms: up_window,
            };
        }
    }
    let down_window = p.scale_down_window_ms as i64;
    if since_change >= down_window && scu > b.min_scu {
        if let Some(used) = w.usage_millis(down_window) {
            let pct = used / allocated * 100.0;
            if pct <= f64::from(p.scale_down_threshold_pct) {
                // The size at which this load would use about half its allocation.
                let per = f64::from(b.cpu_millis_per_scu.max(1));
                let fit = (used / (per * 0.5)).ceil() as u32;
                let to = fit.clamp(b.min_scu, scu - 1);
                return Decision::Resize {
                    to,
                    usage_pct: pct,
                    window_ms: down_window,
                };
            }
        }
    }
    Decision::Hold
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: Bounds = Bounds {
        min_scu: 1,
        max_scu: 8,
        cpu_millis_per_scu: 500,
    };

    /// A window of `secs` seconds of samples every 200 ms at a steady `millis` of CPU.
    fn steady(millis: f64, secs: i64, end_ms: i64) -> Window {
        let mut w = Window::default();
        let start = end_ms - secs * 1000;
        for t in (start..=end_ms).step_by(200) {
            let cpu_ns = ((t - start) as f64 * millis * 1000.0) as u64;
            w.push(Sample { at_ms: t, cpu_ns }, 30_000);
        }
        w
    }

    #[test]
    fn usage_is_measured() {
        let w = steady(450.0, 30, 100_000);
        let u = w.usage_millis(1_000).unwrap();
        assert!((u - 450.0).abs() < 1.0, "{u}");
        assert!(Window::default().usage_millis(1_000).is_none());
    }

    #[test]
    fn scales_up_at_ninety_percent_and_doubles_when_pinned() {
        let p = ScalingPolicy::default();
        match decide(&steady(460.0, 2, 10_000), 10_000, 1, B, &p, None) {
            Decision::Resize {
                to,
                usage_pct,
                window_ms,
            } => {
                assert_eq!((to, window_ms), (2, 1000));
                assert!((usage_pct - 92.0).abs() < 0.5, "{usage_pct}");
            }
            d => panic!("{d:?}"),
        }
        match decide(&steady(500.0, 2, 10_000), 10_000, 1, B, &p, None) {
            Decision::Resize { to, .. } => assert_eq!(to, 2),
            d => panic!("{d:?}"),
        }
        match decide(&steady(1000.0, 2, 10_000), 10_000, 2, B, &p, None) {
            Decision::Resize { to, .. } => assert_eq!(to, 4, "pinned at quota: double"),
            d => panic!("{d:?}"),
        }
        assert_eq!(
            decide(&steady(400.0, 2, 10_000), 10_000, 1, B, &p, None),
            Decision::Hold,
            "80 % is fine"
        );
        assert_eq!(
            decide(&steady(4000.0, 2, 10_000), 10_000, 8, B, &p, None),
            Decision::Hold,
            "at max"
        );
    }

    #[test]
    fn scales_down_after_a_quiet_half_minute_to_a_fitting_size() {
        let p = ScalingPolicy::default();
        match decide(&steady(300.0, 30, 100_000), 100_000, 8, B, &p, Some(0)) {
            Decision::Resize { to, .. } => assert_eq!(to, 2, "300 millicores fit 2 SCU at 30 %"),
            d => panic!("{d:?}"),
        }
        assert_eq!(
            decide(&steady(300.0, 10, 100_000), 100_000, 8, B, &p, Some(0)),
            Decision::Hold,
            "not 30 s of evidence"
        );
        assert_eq!(
            decide(&steady(300.0, 30, 100_000), 100_000, 8, B, &p, Some(80_000)),
            Decision::Hold,
            "changed 20 s ago"
        );
        assert_eq!(
            decide(&steady(10.0, 30, 100_000), 100_000, 1, B, &p, None),
            Decision::Hold,
            "at min"
        );
    }

    #[test]
    fn cooldown_holds_everything() {
        let p = ScalingPolicy::default();
        assert_eq!(
            decide(&steady(500.0, 2, 10_000), 10_000, 1, B, &p, Some(7_000)),
            Decision::Hold
        );
    }

    #[test]
    fn a_restarted_counter_starts_the_window_afresh() {
        let mut w = steady(500.0, 5, 10_000);
        w.push(
            Sample {
                at_ms: 10_200,
                cpu_ns: 5,
            },
            30_000,
        );
        assert_eq!(w.len(), 1);
    }

    /// A load in bursts (1 s flat out every 3 s) for two minutes, sampled and applied as the
    /// monitor does: sizes change at most once per cooldown.
    #[test]
    fn a_flapping_load_changes_size_at_most_once_per_cooldown() {
        let p = ScalingPolicy::default();
        let (mut scu, mut last_change, mut changes) = (1u32, None::<i64>, Vec::new());
        let (mut w, mut cpu_ns) = (Window::default(), 0u64);
        for t in (0..120_000i64).step_by(200) {
            let busy = t % 3_000 < 1_000;
            let allocated = f64::from(scu * B.cpu_millis_per_scu);
            let used = if busy { allocated } else { allocated * 0.05 };
            cpu_ns += (used * 200.0 * 1_000.0) as u64;
            w.push(Sample { at_ms: t, cpu_ns }, p.scale_down_window_ms as i64);
            if let Decision::Resize { to, .. } = decide(&w, t, scu, B, &p, last_change) {
                changes.push(t);
                scu = to;
                last_change = Some(t);
                w.clear();
            }
        }
        assert!(!changes.is_empty(), "the bursts do call for more");
        for pair in changes.windows(2) {
            assert!(pair[1] - pair[0] >= COOLDOWN_MS, "changes at {changes:?}");
        }
    }

    proptest! {
        #[test]
        fn decisions_stay_in_bounds_and_respect_cooldown(
            millis in 0.0f64..10_000.0,
            scu in 1u32..=8,
            secs in 0i64..40,
            last in proptest::option::of(0i64..100_000),
        ) {
            let p = ScalingPolicy::default();
            let now = 100_000;
            let d = decide(&steady(millis, secs, now), now, scu, B, &p, last);
            if let Decision::Resize { to, .. } = d {
                prop_assert!((B.min_scu..=B.max_scu).contains(&to));
                prop_assert_ne!(to, scu);
                prop_assert!(last.is_none_or(|l| now - l >= COOLDOWN_MS));
            }
        }

        #[test]
        fn more_load_never_means_a_smaller_size(a in 0.0f64..5_000.0, b in 0.0f64..5_000.0, scu in 1u32..=8) {
            let p = ScalingPolicy::default();
            let size = |m: f64| match decide(&steady(m, 31, 100_000), 100_000, scu, B, &p, None) {
                Decision::Resize { to, .. } => to,
                Decision::Hold => scu,
            };
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(size(lo) <= size(hi));
        }
    }
}
