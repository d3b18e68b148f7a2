//! `DatabaseService`, its users, and the lifecycle state machine of `DESIGN.md`:
//! `provisioning → active ⇄ suspended → parked → active`, plus `migrating` and `deleted`.

use crate::names::{ServiceName, UserName};
use crate::password::NativeHash;
use crate::scu::Tier;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a database is in its life. This is the *desired* state the control plane drives the
/// runtime towards; whether a process is actually up right now is observed separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbState {
    Provisioning,
    Active,
    Suspended,
    Parked,
    Migrating,
    Deleted,
}

impl DbState {
    pub fn as_str(self) -> &'static str {
        match self {
            DbState::Provisioning => "provisioning",
            DbState::Active => "active",
            DbState::Suspended => "suspended",
            DbState::Parked => "parked",
            DbState::Migrating => "migrating",
            DbState::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            DbState::Provisioning,
            DbState::Active,
            DbState::Suspended,
            DbState::Parked,
            DbState::Migrating,
            DbState::Deleted,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether the lifecycle allows going from `self` to `to`.
    pub fn can_become(self, to: DbState) -> bool {
        use DbState::*;
        matches!(
            (self, to),
            (Provisioning, Active)
                | (Active, Suspended)
                | (Active, Parked)
                | (Suspended, Active)
                | (Suspended, Parked)
                | (Parked, Active)
                | (Active, Migrating)
                | (Migrating, Active)
        ) || (to == Deleted && self != Deleted)
    }

    /// Whether a `mariadbd` process should exist in this state.
    pub fn wants_process(self) -> bool {
        matches!(
            self,
            DbState::Provisioning | DbState::Active | DbState::Suspended | DbState::Migrating
        )
    }
}

impl fmt::Display for DbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user asks for when creating a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: ServiceName,
    pub tier: Tier,
    pub min_scu: u32,
    pub max_scu: u32,
    pub storage_gb: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("min_scu must be at least 1")]
    MinTooSmall,
    #[error("min_scu ({min}) is greater than max_scu ({max})")]
    MinAboveMax { min: u32, max: u32 },
    #[error("max_scu {max} exceeds the {tier} tier's cap of {cap} SCU")]
    AboveTierCap { max: u32, tier: Tier, cap: u32 },
    #[error("{scu} SCU is outside this database's range of {min} to {max} SCU")]
    OutOfRange { scu: u32, min: u32, max: u32 },
    #[error("storage_gb must be between 1 and 65536, not {0}")]
    Storage(u32),
}

impl ServiceSpec {
    /// Builds a spec with the defaults a user gets when not saying: min 1, max the tier's cap.
    pub fn new(
        name: ServiceName,
        tier: Tier,
        min_scu: Option<u32>,
        max_scu: Option<u32>,
        storage_gb: Option<u32>,
    ) -> Result<Self, SpecError> {
        let min_scu = min_scu.unwrap_or(1);
        let max_scu = max_scu.unwrap_or_else(|| tier.max_scu().max(min_scu));
        let spec = Self {
            name,
            tier,
            min_scu,
            max_scu,
            storage_gb: storage_gb.unwrap_or(10),
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if self.min_scu < 1 {
            return Err(SpecError::MinTooSmall);
        }
        if self.min_scu > self.max_scu {
            return Err(SpecError::MinAboveMax {
                min: self.min_scu,
                max: self.max_scu,
            });
        }
        let cap = self.tier.max_scu();
        if self.max_scu > cap {
            return Err(SpecError::AboveTierCap {
                max: self.max_scu,
                tier: self.tier,
                cap,
            });
        }
        if !(1..=65_536).contains(&self.storage_gb) {
            return Err(SpecError::Storage(self.storage_gb));
        }
        Ok(())
    }

    /// Checks a requested size against this service's range (which already respects the tier).
    pub fn check_scu(&self, scu: u32) -> Result<(), SpecError> {
        if scu < self.min_scu || scu > self.max_scu {
            return Err(SpecError::OutOfRange {
                scu,
                min: self.min_scu,
                max: self.max_scu,
            });
        }
        Ok(())
    }
}

/// A database service as the catalog knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseService {
    pub spec: ServiceSpec,
    pub state: DbState,
    /// Current size in SCU.
    pub scu: u32,
    /// Buffer pool size the server last reported, in bytes.
    pub buffer_pool_bytes: u64,
    /// Clients must connect with TLS (`require_secure_transport` for this database).
    pub require_tls: bool,
    /// The schema its connection string names, when not its own name: a restored database
    /// keeps the source's schemas under their names, so its clients find their tables as before.
    pub default_schema: Option<String>,
    /// The node it is placed on (`stratus_runtime::NodeInfo`); `None` for a database made
    /// before nodes existed, which is on the runtime's first node.
    pub node: Option<String>,
    /// When its server's binary log began (ms since the epoch): its creation, or the move to
    /// another node that gave it a new server with a new log. `None`: its creation. Archives of
    /// the log are kept apart by it (`stratus_control::schedule::archive_name`).
    pub log_epoch_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl DatabaseService {
    pub fn name(&self) -> &ServiceName {
        &self.spec.name
    }

    /// When its server's binary log began ([`Self::log_epoch_ms`]).
    pub fn log_epoch(&self) -> i64 {
        self.log_epoch_ms.unwrap_or(self.created_at_ms)
    }

    /// The schema clients use by default.
    pub fn schema(&self) -> &str {
        self.default_schema
            .as_deref()
            .unwrap_or(self.spec.name.as_str())
    }
}

/// A database user, with the only credential Stratus keeps for it.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub service: ServiceName,
    pub name: UserName,
    pub hash: NativeHash,
    /// The owner was created with the service and may manage other users.
    pub owner: bool,
    pub created_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> ServiceName {
        ServiceName::parse("shop").unwrap()
    }

    #[test]
    fn defaults_follow_the_tier() {
        let free = ServiceSpec::new(name(), Tier::Free, None, None, None).unwrap();
        assert_eq!((free.min_scu, free.max_scu), (1, 2));
        let std = ServiceSpec::new(name(), Tier::Standard, Some(2), None, None).unwrap();
        assert_eq!((std.min_scu, std.max_scu), (2, Tier::STANDARD_MAX_SCU));
    }

    #[test]
    fn limits_are_enforced() {
        assert_eq!(
            ServiceSpec::new(name(), Tier::Free, None, Some(4), None),
            Err(SpecError::AboveTierCap {
                max: 4,
                tier: Tier::Free,
                cap: 2
            })
        );
        assert_eq!(
            ServiceSpec::new(name(), Tier::Free, Some(0), None, None),
            Err(SpecError::MinTooSmall)
        );
        assert!(matches!(
            ServiceSpec::new(name(), Tier::Standard, Some(3), Some(2), None),
            Err(SpecError::MinAboveMax { .. })
        ));
        let s = ServiceSpec::new(name(), Tier::Free, None, None, None).unwrap();
        assert!(s.check_scu(2).is_ok());
        assert!(s.check_scu(3).is_err());
        assert!(s.check_scu(0).is_err());
    }

    #[test]
    fn lifecycle_transitions() {
        use DbState::*;
        assert!(Provisioning.can_become(Active));
        assert!(Active.can_become(Parked));
        assert!(Parked.can_become(Active));
        assert!(Suspended.can_become(Active));
        assert!(!Parked.can_become(Suspended));
        assert!(!Deleted.can_become(Active));
        assert!(Parked.can_become(Deleted));
        for s in [Provisioning, Active, Suspended, Parked, Migrating, Deleted] {
            assert_eq!(DbState::parse(s.as_str()), Some(s));
        }
    }
}
