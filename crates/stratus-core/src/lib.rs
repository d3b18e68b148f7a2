//! The Stratus object model, shared by the store, the runtime, the control plane and the API.
//!
//! Everything here is pure: names and their validation, tiers and the SCU arithmetic, the
//! lifecycle states of a database and which transitions between them are legal, the policy
//! objects (`ScalingPolicy`, `BackupSchedule`) with the defaults of `DESIGN.md`, events, and the
//! `mysql_native_password` hash the proxy authenticates against.

pub mod activity;
pub mod commit_marker;
pub mod cron;
pub mod endpoint;
pub mod event;
pub mod fs;
pub mod metrics;
pub mod names;
pub mod password;
pub mod policy;
pub mod replication;
pub mod scu;
pub mod service;
pub mod sql;
pub mod time;
pub mod token;
pub mod usage;

pub use activity::ActivityView;
pub use endpoint::Endpoint;
pub use event::{Event, EventKind};
pub use names::{NameError, ServiceName, UserName};
pub use password::{NativeHash, random_hex, random_password};
pub use policy::{BackupSchedule, ScalingPolicy};
pub use scu::{Resources, ScuSize, Tier};
pub use service::{DatabaseService, DbState, ServiceSpec, SpecError, User};
pub use token::{Action, ApiToken, Role, Scope};
