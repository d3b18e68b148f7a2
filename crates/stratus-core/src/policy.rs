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

/// When and where a service is backed up, and for how long backups are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSchedule {
    /// Five-field cron expression, UTC.
    pub cron: String,
    pub retention_days: u32,
    /// Where backups go: a directory for the local runtime.
    pub target: String,
}

impl Default for BackupSchedule {
    fn default() -> Self {
        Self {
            cron: "0 3 * * *".into(),
            retention_days: 7,
            target: "backups".into(),
        }
    }
}
