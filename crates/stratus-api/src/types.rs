//! Request and response bodies shared by the server and the client.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use stratus_control::backup::{BackupRequest, BackupView, RestoreRequest};
pub use stratus_control::branch::BranchRequest;
pub use stratus_control::lifecycle::CreateRequest;
pub use stratus_control::{CreatedDatabase, CreatedUser, DatabaseView, UserView};
pub use stratus_core::{BackupSchedule, Event};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub scu: u32,
}

/// `POST /v1/databases/{name}/park`; the body is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParkRequest {
    /// Park even if clients hold transactions, temporary tables or locks (they lose them).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventView {
    pub id: i64,
    pub time: String,
    /// The same instant in milliseconds since the Unix epoch, for programs.
    #[serde(default)]
    pub time_ms: i64,
    pub db: String,
    pub kind: String,
    pub message: String,
    pub data: serde_json::Value,
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        Self {
            id: e.id,
            time: stratus_core::time::rfc3339(e.time_ms),
            time_ms: e.time_ms,
            db: e.db,
            kind: e.kind.as_str().to_owned(),
            message: e.message,
            data: e.data,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub uptime_seconds: u64,
    pub data_dir: String,
    pub api: String,
    pub sql_listen: String,
    pub runtime: String,
    pub mariadb_version: String,
    /// `cgroup v2`, `cgroup v1 (hybrid)`, `cgroup v1`, or `none`.
    pub resource_control: String,
    /// Why there is no resource control, when there is none.
    pub resource_control_note: Option<String>,
    pub databases: usize,
    pub databases_by_state: BTreeMap<String, usize>,
    /// Spare servers ready for new databases.
    #[serde(default)]
    pub warm_pool: stratus_control::pool::PoolStatus,
    /// How data is encrypted at rest; `None`: it is not.
    #[serde(default)]
    pub encryption: Option<String>,
    /// Where databases' data lives, and why not on volumes of their own when it is not (their
    /// size limits are then not enforced).
    #[serde(default)]
    pub storage: String,
    #[serde(default)]
    pub storage_note: Option<String>,
}

/// The answer to a master key rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRotation {
    /// Database keys wrapped under the new master key.
    pub wrapped: usize,
    /// What encrypts data at rest now (names the new master key).
    pub encryption: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// `admin`, `developer` or `viewer`.
    pub role: String,
    /// Database names or `prefix*` patterns the token reaches; empty: every database.
    #[serde(default)]
    pub databases: Vec<String>,
    /// A label for people.
    #[serde(default)]
    pub name: Option<String>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: String,
    /// Names and `prefix*` patterns; `["*"]` for every database.
    pub databases: Vec<String>,
    pub created_at: String,
}

impl From<&stratus_core::ApiToken> for TokenView {
    fn from(t: &stratus_core::ApiToken) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role.as_str().to_owned(),
            databases: t.scope.entries().to_vec(),
            created_at: stratus_core::time::rfc3339(t.created_at_ms),
        }
    }
}

/// The answer to `POST /v1/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: TokenView,
    /// `stratus_…`: send it as `Authorization: Bearer <secret>`.
    pub secret: String,
}
