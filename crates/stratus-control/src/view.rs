//! What the API shows of a database: the catalog's record joined with what the runtime
//! observes right now.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseView {
    pub name: String,
    pub state: String,
    pub tier: String,
    pub scu: u32,
    pub min_scu: u32,
    pub max_scu: u32,
    pub storage_gb: u32,
    /// Clients must use TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Where clients connect.
    pub host: String,
    pub port: u16,
    /// The schema created for it.
    pub database: String,
    /// CPU quota in vCPU: as enforced by its cgroup when one exists, else as configured.
    pub cpu_limit: f64,
    /// Memory limit in bytes, likewise.
    pub memory_limit: u64,
    /// Whether the two limits above are enforced by the kernel.
    pub limits_enforced: bool,
    /// InnoDB buffer pool size in bytes, as the server last reported it.
    pub buffer_pool_size: u64,
    pub data_dir: Option<String>,
    /// The node it is placed on.
    #[serde(default)]
    pub node: String,
    /// Its `mariadbd`, while running.
    pub pid: Option<u32>,
    /// That server's own `host:port`, for benchmarks and debugging.
    pub backend: Option<String>,
    pub cpu_usage_seconds: Option<f64>,
    /// The resource monitor's latest figures: CPU over the last second, memory, hit ratio.
    #[serde(default)]
    pub measured: Option<crate::monitor::Measured>,
    /// Client activity seen by the proxy.
    #[serde(default)]
    pub activity: stratus_core::ActivityView,
    pub memory_usage: Option<u64>,
    /// Bytes in use on its volume, and the volume's size (`None` without volumes).
    #[serde(default)]
    pub storage_used_bytes: Option<u64>,
    #[serde(default)]
    pub storage_limit_bytes: Option<u64>,
    /// A move to another node under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<crate::migrate::MoveProgress>,
    pub created_at: String,
    pub updated_at: String,
}

/// What `db create` answers: everything needed to connect, once (the password is not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedDatabase {
    pub name: String,
    pub state: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
    /// `mysql://user:password@host:port/database`.
    pub connection_string: String,
    /// From the request to a server accepting logins.
    pub ready_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub database: String,
    pub name: String,
    pub owner: bool,
    pub created_at: String,
}

/// What `user create` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedUser {
    pub database: String,
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
    pub connection_string: String,
}

/// A `mysql://` URL; user and password are percent-encoded (RFC 3986 userinfo), since a
/// chosen password may hold `@`, `:` or `/`.
pub fn connection_string(
    user: &str,
    password: &str,
    host: &str,
    port: u16,
    database: &str,
) -> String {
    use stratus_core::names::percent_encode;
    format!(
        "mysql://{}:{}@{host}:{port}/{database}",
        percent_encode(user),
        percent_encode(password)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_strings_escape_userinfo() {
        assert_eq!(
            super::connection_string("shop.admin", "p@ss:w/rd", "127.0.0.1", 6033, "shop"),
            "mysql://shop.admin:p%40ss%3Aw%2Frd@127.0.0.1:6033/shop"
        );
    }
}
