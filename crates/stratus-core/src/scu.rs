//! Service Compute Units and tiers.
//!
//! One SCU is a slice of CPU and memory (0.5 vCPU + 2 GiB unless the installation says
//! otherwise); a database is always sized in whole SCUs, and its InnoDB buffer pool follows its
//! memory allowance in proportion.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// What one SCU buys; an installation setting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScuSize {
    /// CPU per SCU in millicores (500 = half a vCPU).
    pub cpu_millis: u32,
    /// Memory per SCU in bytes.
    pub memory_bytes: u64,
    /// Share of the memory allowance given to the InnoDB buffer pool. The rest covers
    /// per-connection buffers, the log buffer and the server itself, so the cgroup's OOM killer
    /// is not the one to size the pool.
    pub buffer_pool_fraction: f64,
}

impl Default for ScuSize {
    fn default() -> Self {
        Self {
            cpu_millis: 500,
            memory_bytes: 2 * GIB,
            buffer_pool_fraction: 0.5,
        }
    }
}

/// The resources of a database at a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub scu: u32,
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub buffer_pool_bytes: u64,
}

impl ScuSize {
    pub fn validate(&self) -> Result<(), String> {
        if self.cpu_millis < 10 {
            return Err(format!(
                "scu.cpu_millis must be at least 10, not {}",
                self.cpu_millis
            ));
        }
        if self.memory_bytes < 256 * MIB {
            return Err(format!(
                "scu.memory_bytes must be at least 256 MiB, not {}",
                self.memory_bytes
            ));
        }
        if !(0.05..=0.9).contains(&self.buffer_pool_fraction) {
            return Err(format!(
                "scu.buffer_pool_fraction must be between 0.05 and 0.9, not {}",
                self.buffer_pool_fraction
            ));
        }
        Ok(())
    }

    pub fn resources(&self, scu: u32) -> Resources {
        let memory_bytes = self.memory_bytes.saturating_mul(u64::from(scu));
        Resources {
            scu,
            cpu_millis: self.cpu_millis.saturating_mul(scu),
            memory_bytes,
            buffer_pool_bytes: self.buffer_pool_bytes(memory_bytes),
        }
    }

    /// The pool for a memory allowance, in whole MiB (the unit InnoDB resizes in) and never
    /// below InnoDB's 8 MiB floor.
    pub fn buffer_pool_bytes(&self, memory_bytes: u64) -> u64 {
        let raw = (memory_bytes as f64 * self.buffer_pool_fraction) as u64;
        (raw / MIB * MIB).max(8 * MIB)
    }
}

/// A service's tier: what it may grow to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Capped at 2 SCU.
    #[default]
    Free,
    /// Capped at [`Tier::STANDARD_MAX_SCU`].
    Standard,
}

impl Tier {
    pub const STANDARD_MAX_SCU: u32 = 16;

    pub fn max_scu(self) -> u32 {
        match self {
            Tier::Free => 2,
            Tier::Standard => Self::STANDARD_MAX_SCU,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Standard => "standard",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "free" => Ok(Tier::Free),
            "standard" => Ok(Tier::Standard),
            other => Err(format!(
                "unknown tier {other:?} (expected free or standard)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_scu_is_one_vcpu_and_four_gib() {
        let r = ScuSize::default().resources(2);
        assert_eq!(r.cpu_millis, 1000);
        assert_eq!(r.memory_bytes, 4 * GIB);
        assert_eq!(r.buffer_pool_bytes, 2 * GIB);
    }

    #[test]
    fn buffer_pool_is_whole_mib_with_a_floor() {
        let s = ScuSize {
            buffer_pool_fraction: 0.3,
            ..ScuSize::default()
        };
        assert_eq!(s.buffer_pool_bytes(1000 * MIB + 12345) % MIB, 0);
        assert_eq!(s.buffer_pool_bytes(1), 8 * MIB);
    }

    #[test]
    fn invalid_sizes_are_refused() {
        assert!(
            ScuSize {
                cpu_millis: 0,
                ..ScuSize::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            ScuSize {
                buffer_pool_fraction: 1.5,
                ..ScuSize::default()
            }
            .validate()
            .is_err()
        );
        assert!(ScuSize::default().validate().is_ok());
    }
}
