//! Request and response bodies shared by the server and the client.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use stratus_control::lifecycle::CreateRequest;
pub use stratus_control::{CreatedDatabase, CreatedUser, DatabaseView, UserView};
pub use stratus_core::Event;

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
