//! Where databases run.
//!
//! The control plane drives databases through [`Runtime`]: create storage and start a server,
//! stop it, set its CPU and memory limits, observe it, destroy it, and hear when it exits on its
//! own. [`LocalRuntime`] runs `mariadbd` processes in cgroups on this machine; a Kubernetes
//! runtime (pods, in-place resize, PVCs) implements the same trait.
//!
//! SQL-level work that is the same everywhere (buffer pool, sessions, accounts) is
//! [`admin::ServerAdmin`], which a runtime hands out logged in as Stratus and the control plane
//! drives. [`fake::FakeRuntime`] is the in-memory runtime the controllers are tested against.

pub mod admin;
pub mod binaries;
pub mod commit_times;
pub mod failpoint;
#[cfg(feature = "fake")]
pub mod fake;
pub mod hot_pages;
pub mod local;

pub use local::{LocalConfig, LocalNodes, LocalRuntime, ServerTls};
pub use stratus_cgroup::Usage;

use std::future::Future;
use std::time::Duration;
use stratus_core::{Endpoint, Resources, ServiceName};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{binary} not found ({hint})")]
    MissingBinary { binary: &'static str, hint: String },
    #[error("database {name}: mariadbd did not start: {reason}{}", log_tail_suffix(.log_tail))]
    StartFailed {
        name: String,
        reason: String,
        log_tail: Vec<String>,
    },
    #[error("database {0} has no storage here")]
    NoStorage(String),
    #[error("database {0} already has storage here")]
    StorageExists(String),
    #[error("database {0} is not running")]
    NotRunning(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("resource control: {0}")]
    Cgroup(#[from] stratus_cgroup::Error),
    #[error("database {name}: {source}")]
    Sql {
        name: String,
        source: mysql_async::Error,
    },
    /// The server refused Stratus's own login (someone removed, locked or changed its account).
    #[error("database {name}: Stratus's login refused: {reason}")]
    AccessDenied { name: String, reason: String },
    #[error("{0}")]
    Other(String),
}

fn log_tail_suffix(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last lines of its error log:\n  {}", tail.join("\n  "))
    }
}

impl RuntimeError {
    /// A file or directory it needed was not there (removed meanwhile, or never made).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// The server refused the login itself (as opposed to being unreachable).
    pub fn is_access_denied(&self) -> bool {
        // 1045 access denied, 1698 socket user mismatch, 4151 account locked, 1862 expired,
        // 1226 a resource limit on the account.
        match self {
            RuntimeError::AccessDenied { .. } => true,
            RuntimeError::Sql {
                source: mysql_async::Error::Server(s),
                ..
            } => matches!(s.code, 1045 | 1698 | 4151 | 1862 | 1820 | 1226 | 1044),
            _ => false,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// Everything a runtime needs to start one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    pub name: ServiceName,
    /// The size to start at.
    pub resources: Resources,
    /// The largest size this database may reach: the buffer pool's address space is reserved
    /// for it at start (`innodb_buffer_pool_size_max`), so later grows need no restart.
    pub max_resources: Resources,
    /// The size of the volume a new database's data gets (where the runtime has volumes); it
    /// grows from there ([`Runtime::grow_storage`]).
    pub storage_bytes: u64,
    /// The node it runs on ([`NodeInfo::name`]): where new storage is made, and where existing
    /// storage is looked for.
    pub node: String,
}

/// A place databases run: locally a data root with a cgroup budget of its own, on Kubernetes a
/// node. Placement and rebalancing (`stratus_control::placement`) weigh one against another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// CPU offered to databases, in millicores.
    pub cpu_millis: u64,
    /// Memory offered to databases.
    pub memory_bytes: u64,
    /// Where its databases' data lives (a directory, a storage class).
    pub storage: String,
    /// Memory its servers use now, spares included.
    pub memory_used_bytes: u64,
}

/// A database's storage as the runtime measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageUse {
    pub used_bytes: u64,
    /// What its file system holds at most: a hard limit.
    pub limit_bytes: u64,
    /// The size of its volume, the file system's own structures included (what
    /// [`Runtime::grow_storage`] sets).
    pub volume_bytes: u64,
    /// Bytes of its binary log, which is kept outside the volume.
    pub log_bytes: u64,
    /// No volume holds it: `used_bytes` is measured (the files' blocks), `limit_bytes` and
    /// `volume_bytes` are 0, and only Stratus can keep it within its limit.
    pub measured: bool,
}

/// A started (or adopted) server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub pid: u32,
    pub endpoint: Endpoint,
    /// True when an already running server was taken over instead of started.
    pub adopted: bool,
    /// The start found Stratus's own account removed, locked or changed inside the server
    /// (by a tenant) and restored it; `Some` says how it was found.
    pub access_restored: Option<String>,
    /// From spawn to the first successful login.
    pub startup: Duration,
}

/// What a runtime sees of a database right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub pid: Option<u32>,
    /// Where the server itself is reached (for `db show`; only Stratus can connect there).
    pub backend: Option<String>,
    /// CPU quota in millicores as enforced, `None` when not limited or not enforceable.
    pub cpu_limit_millis: Option<u32>,
    /// Memory limit in bytes as enforced.
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage_bytes: Option<u64>,
    pub frozen: bool,
    /// Where its data lives (a directory, a volume).
    pub storage: Option<String>,
}

/// A server exited without being asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitNotice {
    pub name: ServiceName,
    pub pid: u32,
    /// `exit code 1`, `signal 9 (SIGKILL)`, or `unknown` for an adopted process.
    pub status: String,
}

/// Facts about the runtime for `stratus status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub kind: &'static str,
    /// `cgroup v2`, `cgroup v1 (hybrid)`, or `none`.
    pub resource_control: String,
    /// Why resource control is off, when it is.
    pub resource_control_note: Option<String>,
    pub mariadb_version: String,
    /// How data is encrypted at rest, `None` when it is not.
    pub encryption: Option<String>,
    /// Where databases' data lives: `XFS volumes (loop devices)`, or `plain directories`.
    pub storage: String,
    /// Why there are no volumes, when there are none: size limits are then kept by measuring.
    pub storage_note: Option<String>,
}

/// Where databases run. Methods are cancel-safe only where they say so; the control plane
/// serialises calls per database.
pub trait Runtime: Send + Sync + 'static {
    /// Stratus's own connection to one of this runtime's servers.
    type Admin: admin::ServerAdmin + 'static;

    fn info(&self) -> RuntimeInfo;

    /// The nodes databases can run on, with what they offer and use now. Never empty.
    fn nodes(&self) -> Vec<NodeInfo>;

    /// The node holding a database's storage, `None` when it has none anywhere. Cheap.
    fn node_of(&self, name: &ServiceName) -> Option<String>;

    /// Logs in to the running server of `name` as Stratus, giving up after `timeout`. A refused
    /// login is an error for which [`RuntimeError::is_access_denied`] holds.
    fn admin(
        &self,
        name: &ServiceName,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Admin>> + Send;

    /// Creates storage for a new database and starts it; returns once Stratus can log in. On
    /// failure nothing is left behind.
    fn provision(&self, spec: &InstanceSpec) -> impl Future<Output = Result<Instance>> + Send;

    /// Starts a database on its existing storage, or adopts its server if one is already
    /// running (after a restart of Stratus). Returns once Stratus can log in: a start also
    /// restores Stratus's own account, whatever a tenant did to it.
    fn start(&self, spec: &InstanceSpec) -> impl Future<Output = Result<Instance>> + Send;

    /// Stops the server gracefully, killing it after `grace`. Returns whether it stopped in time.
    fn stop(
        &self,
        name: &ServiceName,
        grace: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Sets the enforced CPU quota and memory limit. A no-op without resource control.
    fn set_limits(
        &self,
        name: &ServiceName,
        cpu_millis: u32,
        memory_bytes: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    fn observe(&self, name: &ServiceName) -> impl Future<Output = Observed> + Send;

    /// Cumulative CPU time and current memory use, cheaply: the resource monitor asks every
    /// 200 ms.
    fn usage(&self, name: &ServiceName) -> Option<Usage>;

    /// Stops the server's processes from being scheduled at all (suspend). Returns false where
    /// the host cannot freeze. A frozen server is thawed before it is stopped.
    fn freeze(&self, name: &ServiceName) -> impl Future<Output = Result<bool>> + Send;

    fn thaw(&self, name: &ServiceName) -> impl Future<Output = Result<()>> + Send;

    /// Where the running server listens, or `None` if it is not running. Cheap: the proxy asks
    /// on every new client connection.
    fn endpoint(&self, name: &ServiceName) -> Option<Endpoint>;

    /// Waits, at most `limit`, for the server to be seen gone: a client found it refusing
    /// connections, which a dying server does a moment before its exit can be observed. True if
    /// it is gone.
    fn wait_gone(&self, name: &ServiceName, limit: Duration) -> impl Future<Output = bool> + Send;

    /// Stops the server if it runs and deletes its storage and resource group.
    fn destroy(&self, name: &ServiceName) -> impl Future<Output = Result<()>> + Send;

    /// Exits that nobody asked for (crashes, kills, OOM).
    fn exits(&self) -> tokio::sync::broadcast::Receiver<ExitNotice>;

    /// Starts a spare server owned by nobody on `node`, for the warm pool: minimal, but with
    /// room to grow to `max_resources` without a restart. `setup` runs on it as Stratus before
    /// it is returned: work every database needs, done while nobody waits for it.
    fn provision_spare(
        &self,
        max_resources: Resources,
        node: &str,
        setup: &[String],
    ) -> impl Future<Output = Result<Spare>> + Send;

    /// Makes a spare the server of `spec.name`, at its size, without restarting it. The spare
    /// must be on `spec.node`.
    fn claim_spare(
        &self,
        spare: &Spare,
        spec: &InstanceSpec,
    ) -> impl Future<Output = Result<Instance>> + Send;

    /// Grows an unclaimed spare's buffer pool to `resources`' while nobody waits for it, so a
    /// database of that size claims it without a resize on its create path. Growing InnoDB's
    /// pool makes the kernel zero the new memory there and then (`MAP_POPULATE`): about 0.3 s
    /// of CPU per GiB, during which the server answers no query. Returns the pool the server
    /// reports.
    fn presize_spare(
        &self,
        spare: &Spare,
        resources: Resources,
    ) -> impl Future<Output = Result<u64>> + Send;

    fn destroy_spare(&self, key: &str) -> impl Future<Output = Result<()>> + Send;

    /// Spares left on this runtime's storage by an earlier run and never claimed.
    fn unclaimed_spares(&self) -> Vec<String>;

    /// Replaces the master key of encryption at rest: every database's data key is wrapped
    /// again under a new one. Returns how many were. Running servers are not disturbed (their
    /// key is in memory); the next start opens the key with the new master key.
    fn rotate_master_key(&self) -> impl Future<Output = Result<usize>> + Send;

    /// The storage of a database: used and limit, where the runtime can measure it. Cheap on a
    /// volume (the file system's own figures); without volumes the files are walked.
    fn storage(&self, name: &ServiceName) -> Option<StorageUse>;

    /// Grows the volume of a database to `bytes`, online. Returns the new limit.
    fn grow_storage(
        &self,
        name: &ServiceName,
        bytes: u64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Copies what is new in a database's binary log files into `dest` (created if missing), so
    /// that every committed transaction reaches the archive: files are only ever appended to,
    /// so a copy by offset resumes where the last one stopped, across crashes and restarts. The
    /// files stay as the server wrote them (encrypted at rest). Returns the bytes copied.
    fn archive_logs(
        &self,
        name: &ServiceName,
        dest: &std::path::Path,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Whether [`Runtime::branch`] can share blocks here.
    fn shares_blocks(&self) -> bool;

    /// Makes the storage of a new database a copy of a running one's, sharing its blocks, and
    /// starts it: a writable, independent copy of the source as it was at one consistent point,
    /// in about a second whatever its size. `Ok(None)` where this runtime cannot share blocks
    /// (the caller copies through a backup instead).
    fn branch(
        &self,
        source: &ServiceName,
        spec: &InstanceSpec,
    ) -> impl Future<Output = Result<Option<Instance>>> + Send;

    /// Takes a full physical backup of the running server into the new directory `dest`,
    /// without blocking its writes, and prepares it (crash recovery applied), so that it can be
    /// started as it is. The files: `data/` (the prepared data directory) and, where data is
    /// encrypted at rest, the database's data key still wrapped by the master key.
    /// With `base` (an earlier backup of the same server, full or incremental), the backup is
    /// incremental: only the pages changed since `base`, not prepared (it is applied on top of
    /// its base at a restore).
    fn backup(
        &self,
        name: &ServiceName,
        dest: &std::path::Path,
        base: Option<&std::path::Path>,
    ) -> impl Future<Output = Result<BackupTaken>> + Send;

    /// Live migration, first step: a copy of the running database `spec.name` on `spec.node`,
    /// replicating from its server by GTID from a physical snapshot taken without stopping it.
    /// Calls about the database still go to its server until [`Runtime::promote_replica`]. On
    /// failure nothing is left on the target. One replica per database at a time.
    fn start_replica(
        &self,
        spec: &InstanceSpec,
    ) -> impl Future<Output = Result<ReplicaStarted>> + Send;

    /// Stratus's login to the copy of `name` on `node` (its replica, before the promotion).
    fn admin_on(
        &self,
        name: &ServiceName,
        node: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Admin>> + Send;

    /// Makes the replica of `name` on `node` its server (its replication stopped first): every
    /// call about it goes there from now on. The old server runs on until
    /// [`Runtime::stop_copy`].
    fn promote_replica(
        &self,
        name: &ServiceName,
        node: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Stops, at once, the server of a copy of `name` on `node` that is not its server (the old
    /// one after a promotion), keeping its storage.
    fn stop_copy(&self, name: &ServiceName, node: &str) -> impl Future<Output = Result<()>> + Send;

    /// Stops and deletes a copy of `name` on `node` that is not its server: an abandoned
    /// replica, or the old server once the new one has served.
    fn remove_copy(
        &self,
        name: &ServiceName,
        node: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Creates the storage of a new database from backups [`Runtime::backup`] took (a full one,
    /// then the incrementals on top of it, in order), and starts it; with a replay, the archived
    /// binary logs are applied on top, up to an exact position. On failure nothing is left
    /// behind.
    fn restore(
        &self,
        spec: &InstanceSpec,
        from: &RestoreFrom,
    ) -> impl Future<Output = Result<Instance>> + Send;
}

/// What a restore is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFrom {
    /// A full backup's directory.
    pub full: std::path::PathBuf,
    /// Incremental backups' directories, each taken on top of the one before (the first on
    /// `full`).
    pub incrementals: Vec<std::path::PathBuf>,
    pub replay: Option<LogReplay>,
}

/// Archived binary logs ([`Runtime::archive_logs`]) to apply on top of a restored backup:
/// every transaction after `from` (the backup's consistent point) up to and including the one
/// ending at `to`, both positions in the source's binary log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReplay {
    pub archive: std::path::PathBuf,
    pub from: commit_times::BinlogPos,
    pub to: commit_times::BinlogPos,
}

/// What a backup found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackupTaken {
    /// The server's GTID position at the backup's consistent point (`xtrabackup_binlog_info`).
    pub gtid: Option<String>,
    /// Its binary log position there: where a point-in-time replay starts.
    pub binlog: Option<commit_times::BinlogPos>,
    /// `mariadb-backup`'s last lines, for the record.
    pub log_tail: Vec<String>,
}

impl BackupTaken {
    /// What `mariadb-backup` wrote of its consistent point into the backup's `data` directory
    /// `target` (`binlog-file  position  gtid`; the file keeps its XtraBackup name in MariaDB
    /// 10.11, later versions renamed it). A server without a binary log has none.
    pub fn read(target: &std::path::Path, log_tail: Vec<String>) -> Self {
        let info = ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"]
            .iter()
            .find_map(|f| std::fs::read_to_string(target.join(f)).ok())
            .unwrap_or_default();
        let mut fields = info.split_whitespace();
        let (file, pos, gtid) = (fields.next(), fields.next(), fields.next());
        Self {
            gtid: gtid.map(str::to_owned),
            binlog: match (file, pos.and_then(|p| p.parse().ok())) {
                (Some(file), Some(pos)) => Some(commit_times::BinlogPos {
                    file: file.to_owned(),
                    pos,
                }),
                _ => None,
            },
            log_tail,
        }
    }
}

/// What [`Runtime::start_replica`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStarted {
    /// The source's GTID position at the snapshot: the replica replicates from there.
    pub snapshot_gtid: String,
    /// Bytes of data the snapshot copied.
    pub copied_bytes: u64,
}

/// A running spare server.
#[derive(Debug, Clone)]
pub struct Spare {
    pub key: String,
    pub endpoint: Endpoint,
    /// The node it runs on: it can only become a database placed there.
    pub node: String,
    /// The buffer pool it was last sized for: the spare's small one as started, or a new
    /// database's once presized (see [`Runtime::presize_spare`]).
    pub buffer_pool_bytes: u64,
}
