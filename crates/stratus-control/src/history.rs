//! A bounded history of each database's samples: the last hour, one sample every 5 seconds,
//! in memory. It is what the console's charts draw (`GET /v1/databases/NAME/history`); a
//! restart of Stratus starts it again (the usage meter, which must survive restarts, is in the
//! catalog: `stratus_core::usage`). 720 samples of a few dozen bytes per database: about 50 KiB
//! each.

use crate::ControlPlane;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use stratus_core::ServiceName;
use stratus_core::time::now_ms;
use stratus_runtime::Runtime;
use stratus_store::Store;

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept per database: one hour.
pub const KEEP: usize = 720;

/// One database at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t_ms: i64,
    pub state: String,
    pub scu: u32,
    /// CPU use over the last second, and the size's quota, in millicores.
    pub cpu_millicores: Option<f64>,
    pub cpu_quota_millicores: u32,
    pub memory_bytes: Option<u64>,
    pub memory_limit_bytes: u64,
    pub buffer_pool_hit_ratio: Option<f64>,
    /// Statements relayed since Stratus started: per second is the difference between two
    /// samples over their distance.
    pub statements_total: u64,
    pub connections: u64,
}

/// The samples of every database.
#[derive(Debug, Default)]
pub struct History {
    by_db: std::sync::Mutex<HashMap<ServiceName, VecDeque<Sample>>>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceName, VecDeque<Sample>>> {
        self.by_db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a sample, dropping the oldest beyond [`KEEP`].
    pub fn push(&self, name: &ServiceName, sample: Sample) {
        let mut all = self.lock();
        let samples = all.entry(name.clone()).or_default();
        if samples.len() == KEEP {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// A database's samples, oldest first.
    pub fn of(&self, name: &ServiceName) -> Vec<Sample> {
        self.lock()
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops what is kept of databases not in `live` (deleted ones).
    pub fn retain(&self, live: &std::collections::HashSet<ServiceName>) {
        self.lock().retain(|name, _| live.contains(name));
    }
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Samples every database every [`INTERVAL`] into [`History`].
    pub async fn run_history(self: Arc<Self>) {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(services) = self.store().services().await else {
                continue;
            };
            let now = now_ms();
            for svc in &services {
                let name = svc.name();
                let measured = self.measured(name);
                let size = self.cfg.scu.resources(svc.scu);
                let activity = self.activity(name);
                self.history.push(
                    name,
                    Sample {
                        t_ms: now,
                        state: svc.state.to_string(),
                        scu: svc.scu,
                        cpu_millicores: measured.and_then(|m| m.cpu_millis),
                        cpu_quota_millicores: size.cpu_millis,
                        memory_bytes: measured.map(|m| m.memory_bytes),
                        memory_limit_bytes: size.memory_bytes,
                        buffer_pool_hit_ratio: measured.and_then(|m| m.buffer_pool_hit_ratio),
                        statements_total: activity.statements_total,
                        connections: activity.connections,
                    },
                );
            }
            self.history
                .retain(&services.iter().map(|s| s.name().clone()).collect());
        }
    }

    /// The last hour of a database's samples, oldest first.
    pub fn history(&self, name: &ServiceName) -> Vec<Sample> {
        self.history.of(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t_ms: i64) -> Sample {
        Sample {
            t_ms,
            state: "active".into(),
            scu: 1,
            cpu_millicores: None,
            cpu_quota_millicores: 500,
            memory_bytes: None,
            memory_limit_bytes: 2 << 30,
            buffer_pool_hit_ratio: None,
            statements_total: 0,
            connections: 0,
        }
    }

    #[test]
    fn an_hour_is_kept_the_oldest_goes_first() {
        let h = History::default();
        let shop = ServiceName::parse("shop").unwrap();
        for t in 0..(KEEP as i64 + 10) {
            h.push(&shop, at(t));
        }
        let kept = h.of(&shop);
        assert_eq!(kept.len(), KEEP);
        assert_eq!((kept[0].t_ms, kept[KEEP - 1].t_ms), (10, KEEP as i64 + 9));
        h.retain(&Default::default());
        assert!(h.of(&shop).is_empty(), "a deleted database's samples go");
    }
}
