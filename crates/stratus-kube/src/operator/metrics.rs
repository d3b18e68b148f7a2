//! What the operator says of itself on `/metrics`
//! ([Prometheus text format](https://prometheus.io/docs/instrumenting/exposition_formats/)),
//! scraped through the chart's ServiceMonitor: whether this replica leads, how its reconciles
//! go, and what each database used ([`super::usage`]). A follower says it does not lead and
//! counts nothing, so a dashboard sums over replicas.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use stratus_core::metrics::header;

#[derive(Debug, Default)]
pub struct OperatorMetrics {
    pub leading: AtomicBool,
    pub reconciled: AtomicU64,
    pub failed: AtomicU64,
    /// What each database used ([`super::usage`]), metered while this replica leads.
    pub usage: super::usage::Meter,
}

impl OperatorMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "stratus_operator_leading",
            "gauge",
            "1 while this replica holds the lease and runs the controllers.",
        );
        out.push_str(&format!(
            "stratus_operator_leading {}\n",
            u8::from(self.leading.load(Ordering::Relaxed))
        ));
        header(
            &mut out,
            "stratus_operator_reconciles_total",
            "counter",
            "Reconciles of DatabaseServices, by result (a failed one is retried with back-off).",
        );
        for (result, n) in [("ok", &self.reconciled), ("failed", &self.failed)] {
            out.push_str(&format!(
                "stratus_operator_reconciles_total{{result=\"{result}\"}} {}\n",
                n.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&self.usage.render(stratus_core::time::now_ms()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_leadership_and_reconciles_by_result() {
        let m = OperatorMetrics::default();
        m.leading.store(true, Ordering::Relaxed);
        m.reconciled.fetch_add(3, Ordering::Relaxed);
        m.failed.fetch_add(1, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("\nstratus_operator_leading 1\n"), "{text}");
        assert!(text.contains("stratus_operator_reconciles_total{result=\"ok\"} 3\n"));
        assert!(text.contains("stratus_operator_reconciles_total{result=\"failed\"} 1\n"));
        assert!(text.contains("# TYPE stratus_operator_reconciles_total counter\n"));
    }
}
