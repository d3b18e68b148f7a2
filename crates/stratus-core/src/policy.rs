//! `ScalingPolicy` and `BackupSchedule`, the per-service knobs of `DESIGN.md` with its defaults.

use serde::{Deserialize, Serialize};

/// How the autoscaler and the lifecycle controller treat one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingPolicy {
    pub sample_interval_ms: u64,
    pub scale_up_threshold_pct: u32,
    pub scale_up_window_ms: u64,
    pub scale_down_threshold_pct: u32,
    pub scale_down_window_ms: u64,
    pub idle_to_suspend_ms: u64,
    pub suspend_to_park_ms: u64,
}

impl Default for ScalingPolicy {
    fn default() -> Self {
        Self {
            sample_interval_ms: 200,
            scale_up_threshold_pct: 90,
            scale_up_window_ms: 1_000,
            scale_down_threshold_pct: 20,
            scale_down_window_ms: 30_000,
            idle_to_suspend_ms: 10_000,
            suspend_to_park_ms: 4 * 3_600_000,
        }
    }
}

/// When a service is backed up, and for how long backups are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSchedule {
    /// Cron expression in UTC (`crate::cron`: five fields, or six with seconds); empty turns
    /// scheduled backups off.
    pub cron: String,
    /// Backups older than this are deleted, except the newest verified one.
    pub retention_days: u32,
    /// At most this many backups are kept, the newest (0: no limit but their age).
    #[serde(default)]
    pub keep_last: u32,
    /// Where backups go; only the installation's backup directory so far.
    pub target: String,
    /// Cron expression in UTC for incremental backups between the full ones (on top of the
    /// newest verified backup); empty: none.
    #[serde(default)]
    pub incremental_cron: String,
}

impl Default for BackupSchedule {
    fn default() -> Self {
        Self {
            cron: "0 3 * * *".into(),
            retention_days: 7,
            keep_last: 0,
            target: "backups".into(),
            incremental_cron: String::new(),
        }
    }
}

impl BackupSchedule {
    /// The schedule's expression, `None` when scheduled backups are off.
    pub fn cron(&self) -> Result<Option<crate::cron::Cron>, crate::cron::CronError> {
        if self.cron.trim().is_empty() {
            return Ok(None);
        }
        crate::cron::Cron::parse(&self.cron).map(Some)
    }

    /// The incremental backups' expression, `None` when there are none.
    pub fn incremental_cron(&self) -> Result<Option<crate::cron::Cron>, crate::cron::CronError> {
        if self.incremental_cron.trim().is_empty() {
            return Ok(None);
        }
        crate::cron::Cron::parse(&self.incremental_cron).map(Some)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.cron().map_err(|e| e.to_string())?;
        self.incremental_cron()
            .map_err(|e| format!("incremental_cron: {e}"))?;
        if self.retention_days == 0 {
            return Err("retention_days must be at least 1".into());
        }
        Ok(())
    }
}
