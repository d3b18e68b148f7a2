//! Where Stratus objects live.
//!
//! The control plane is written against [`Store`]; [`SqliteStore`] is the embedded catalog of
//! `stratus up`, and a Kubernetes implementation (custom resources) can stand in its place.

mod sqlite;

pub use sqlite::SqliteStore;

use std::future::Future;
use stratus_core::usage::Interval;
use stratus_core::{
    ApiToken, BackupSchedule, DatabaseService, Event, EventKind, ScalingPolicy, ServiceName, User,
    UserName,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("catalog holds an unreadable {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error(
        "catalog at {path} was written by a newer Stratus (schema version {found}, this build knows {known})"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("catalog error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub db: Option<String>,
    /// Only events with a larger id (for following).
    pub after_id: Option<i64>,
    /// The newest `limit` events, in id order.
    pub limit: Option<usize>,
    /// Only events of databases these scope entries cover (names, `prefix*`, `*`); `None`: all.
    pub scope: Option<Vec<String>>,
}

/// The catalog of services, their users and policies, and the event log.
pub trait Store: Send + Sync + 'static {
    /// Adds a service together with its owner, its default policies and a `created` event, in
    /// one transaction: either all of it is recorded or none.
    fn create_service(
        &self,
        service: &DatabaseService,
        owner: &User,
        message: &str,
    ) -> impl Future<Output = Result<Event>> + Send;
    fn service(
        &self,
        name: &ServiceName,
    ) -> impl Future<Output = Result<Option<DatabaseService>>> + Send;
    fn services(&self) -> impl Future<Output = Result<Vec<DatabaseService>>> + Send;
    fn update_service(&self, service: &DatabaseService) -> impl Future<Output = Result<()>> + Send;
    /// Removes the service with its users and policies; its events stay.
    fn delete_service(&self, name: &ServiceName) -> impl Future<Output = Result<()>> + Send;

    fn create_user(&self, user: &User) -> impl Future<Output = Result<()>> + Send;
    fn users(&self, service: &ServiceName) -> impl Future<Output = Result<Vec<User>>> + Send;
    /// Replaces a user's stored hash (its password changed).
    fn set_user_hash(
        &self,
        service: &ServiceName,
        user: &UserName,
        hash: &stratus_core::NativeHash,
    ) -> impl Future<Output = Result<()>> + Send;
    fn delete_user(
        &self,
        service: &ServiceName,
        user: &UserName,
    ) -> impl Future<Output = Result<()>> + Send;

    fn scaling_policy(
        &self,
        service: &ServiceName,
    ) -> impl Future<Output = Result<ScalingPolicy>> + Send;
    fn set_scaling_policy(
        &self,
        service: &ServiceName,
        policy: &ScalingPolicy,
    ) -> impl Future<Output = Result<()>> + Send;
    fn backup_schedule(
        &self,
        service: &ServiceName,
    ) -> impl Future<Output = Result<BackupSchedule>> + Send;
    fn set_backup_schedule(
        &self,
        service: &ServiceName,
        schedule: &BackupSchedule,
    ) -> impl Future<Output = Result<()>> + Send;

    /// What a database's buffer pool held when it was last emptied or parked (a list the
    /// control plane writes and reads; opaque here), for its next wake to read back.
    fn hot_indexes(
        &self,
        service: &ServiceName,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Replaces that list, or removes it (`None`). Nothing is kept for a database not in the
    /// catalog.
    fn set_hot_indexes(
        &self,
        service: &ServiceName,
        list: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;

    fn record_event(
        &self,
        db: &str,
        kind: EventKind,
        message: &str,
        data: serde_json::Value,
    ) -> impl Future<Output = Result<Event>> + Send;
    fn events(&self, filter: &EventFilter) -> impl Future<Output = Result<Vec<Event>>> + Send;

    /// Adds an API token (its hash; the secret is never stored).
    fn create_token(&self, token: &ApiToken) -> impl Future<Output = Result<()>> + Send;
    fn token(&self, id: &str) -> impl Future<Output = Result<Option<ApiToken>>> + Send;
    /// Every token, oldest first.
    fn tokens(&self) -> impl Future<Output = Result<Vec<ApiToken>>> + Send;
    fn delete_token(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// The usage intervals (`stratus_core::usage`) of one database or all, deleted ones
    /// included, that end after `from_ms`; a database's open interval ends at `now_ms`.
    /// The catalog starts a new interval in the same transaction as every change of a
    /// database's state or size, so these are exact.
    fn usage_intervals(
        &self,
        service: Option<&ServiceName>,
        from_ms: i64,
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<(String, Interval)>>> + Send;

    /// Records a measurement of a database's storage in use: a new usage interval starts when
    /// it differs materially from the recorded one (`usage::storage_changed`), at most once a
    /// minute.
    fn record_storage(
        &self,
        service: &ServiceName,
        used_bytes: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records whether a database whose state wants a running server has none
    /// (`usage::Interval::stopped`): a new usage interval starts when that changes.
    fn usage_stopped(
        &self,
        service: &ServiceName,
        stopped: bool,
    ) -> impl Future<Output = Result<()>> + Send;
}
