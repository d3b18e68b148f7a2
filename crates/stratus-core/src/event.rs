//! Events: the durable record of everything that happened to a database, and why.

use serde::{Deserialize, Serialize};

/// What happened. Stored and served as the snake_case string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Adopted,
    Crashed,
    Restarted,
    StartFailed,
    Scaled,
    Parked,
    Suspended,
    Resumed,
    Woken,
    /// A woken database's buffer pool was read back to what it held before the suspend.
    Hydrated,
    Deleted,
    UserCreated,
    UserDeleted,
    /// A client session lived through the loss of its server (statement retried, transaction
    /// replayed, or the client told why not).
    Failover,
    /// Stratus found its own account inside a server removed, locked or changed, and restored it
    /// by restarting the server.
    AccessRestored,
    /// The master key of encryption at rest was replaced.
    KeyRotated,
    /// Repeated failed logins from one client source or for one account: their answers are
    /// delayed from now on.
    LoginThrottled,
    /// A backup was taken and verified.
    BackupTaken,
    /// A backup could not be taken, or failed its verification.
    BackupFailed,
    BackupDeleted,
    /// A database was made from a backup.
    Restored,
    /// A database's volume was grown.
    StorageGrown,
    /// A database's volume is full at its maximum.
    StorageFull,
    /// A database was made as a branch of another.
    Branched,
    /// The periodic resync found a database other than the catalog says, with no notice of
    /// why, and brought it back.
    Reconciled,
    /// A database moved to another node while it served, with each phase's duration and the
    /// pause its clients saw.
    Migrated,
    /// A move to another node did not happen; the database serves where it was, and this says
    /// why and in which phase.
    MigrationFailed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Stopped => "stopped",
            EventKind::Adopted => "adopted",
            EventKind::Crashed => "crashed",
            EventKind::Restarted => "restarted",
            EventKind::StartFailed => "start_failed",
            EventKind::Scaled => "scaled",
            EventKind::Parked => "parked",
            EventKind::Suspended => "suspended",
            EventKind::Resumed => "resumed",
            EventKind::Woken => "woken",
            EventKind::Hydrated => "hydrated",
            EventKind::Deleted => "deleted",
            EventKind::UserCreated => "user_created",
            EventKind::UserDeleted => "user_deleted",
            EventKind::Failover => "failover",
            EventKind::AccessRestored => "access_restored",
            EventKind::LoginThrottled => "login_throttled",
            EventKind::KeyRotated => "key_rotated",
            EventKind::BackupTaken => "backup_taken",
            EventKind::BackupFailed => "backup_failed",
            EventKind::BackupDeleted => "backup_deleted",
            EventKind::Restored => "restored",
            EventKind::StorageGrown => "storage_grown",
            EventKind::StorageFull => "storage_full",
            EventKind::Branched => "branched",
            EventKind::Reconciled => "reconciled",
            EventKind::Migrated => "migrated",
            EventKind::MigrationFailed => "migration_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// One recorded event. `data` carries the inputs of the decision (sizes, exit status, timings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub db: String,
    pub kind: EventKind,
    pub message: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in [
            EventKind::Created,
            EventKind::StartFailed,
            EventKind::UserCreated,
            EventKind::BackupTaken,
            EventKind::Restored,
            EventKind::Reconciled,
            EventKind::Migrated,
            EventKind::MigrationFailed,
            EventKind::Hydrated,
        ] {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nonsense"), None);
    }
}
