//! The command line: `stratus up` and the verbs that mirror the API.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "stratus",
    version,
    about = "Serverless MariaDB",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The Stratus API: where the verbs call it, and where `up` serves it
    /// [default: http://127.0.0.1:8033].
    #[arg(long, global = true, env = "STRATUS_API")]
    pub api: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where the catalog and every database's files live; the verbs read `admin.token` there
    /// when no token is given [default: ./stratus-data].
    #[arg(long, global = true, env = "STRATUS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// API token sent as `Authorization: Bearer` (prefer the environment variable: command
    /// lines are visible to other users) [default: <data dir>/admin.token].
    #[arg(long, global = true, env = "STRATUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the certificate (or its CA) to trust for an https:// API
    /// [default: <data dir>/tls/ca.pem, else <data dir>/tls/cert.pem].
    #[arg(long, global = true, env = "STRATUS_CA")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Stratus on this machine: API, control plane and the databases.
    Up(UpArgs),
    /// Create, inspect, resize, park, resume and delete databases.
    #[command(subcommand)]
    Db(DbCommand),
    /// Manage a database's users.
    #[command(subcommand)]
    User(UserCommand),
    /// Back up databases, list and delete backups (`db restore` restores one).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Show what happened to databases, and why.
    Events(EventsArgs),
    /// Show what databases used: SCU-seconds, suspended and parked time, storage GiB-hours.
    Usage(UsageArgs),
    /// Open the mariadb client on a database, with the credential file `--save-credentials`
    /// wrote, or asking for the password.
    Connect {
        name: String,
        /// The account, without the database's prefix.
        #[arg(long, default_value = "admin")]
        user: String,
    },
    /// Show the installation: versions, resource control, databases by state.
    Status,
    /// Manage API tokens (admin only).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Encryption at rest (admin only).
    #[command(subcommand)]
    Key(KeyCommand),
    /// The nodes databases run on (a token for all databases only).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Stratus on Kubernetes.
    #[command(subcommand)]
    Operator(OperatorCommand),
}

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Print the custom resource definitions (DatabaseService, ScalingPolicy, BackupSchedule),
    /// for `kubectl apply -f -`.
    Crds,
    /// Run the operator against the cluster (in its pod's service account, or the kubeconfig's
    /// current context), until SIGTERM.
    Run(OperatorRun),
    /// Run the SQL proxy against the cluster: it routes `<database>.<user>` to the database's
    /// pod and wakes a database that sleeps, reading the operator's resources (the proxy
    /// Deployment of the Helm chart), until SIGTERM.
    Proxy(OperatorProxy),
    /// Run the agent beside a database's server in its pod: it samples the server's CPU time
    /// every 200 ms and serves the samples to the operator's autoscaler, until SIGTERM.
    Agent(OperatorAgent),
    /// The last step of a backup Job, after `mariadb-backup` copied and prepared the database:
    /// checksum the files, record the backup, rename it into place and apply the retention.
    /// Prints the record as JSON.
    BackupRecord(OperatorBackupRecord),
}

#[derive(Debug, clap::Args)]
pub struct OperatorBackupRecord {
    /// The database's directory on the backup volume (its backups are `<dir>/<id>`).
    #[arg(long)]
    pub dir: std::path::PathBuf,
    #[arg(long)]
    pub database: String,
    /// The backup's id; `mariadb-backup` left it in `<dir>/.<id>.partial`.
    #[arg(long)]
    pub id: String,
    /// When the backup started (ms since the epoch).
    #[arg(long)]
    pub started_at_ms: i64,
    /// Retention: backups older than this are deleted, but never the newest verified one.
    #[arg(long)]
    pub retention_days: u32,
    /// Retention: at most this many are kept (0: no limit but their age).
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    /// The `BackupSchedule` taking it: its retention applies to its own backups only.
    #[arg(long)]
    pub schedule: String,
    /// The database's settings (JSON), recorded with the backup.
    #[arg(long)]
    pub source: String,
}

#[derive(Debug, clap::Args)]
pub struct OperatorAgent {
    /// The server's pid file (its process is read in `/proc`: the pod shares its process
    /// namespace).
    #[arg(
        long,
        env = "STRATUS_PID_FILE",
        default_value = "/run/mysqld/mysqld.pid"
    )]
    pub pid_file: std::path::PathBuf,
    /// Where the operator fetches the samples (`GET /cpu?after=MS`); `[::]` is both IPv6 and
    /// IPv4, or IPv4 alone on a node without IPv6.
    #[arg(long, env = "STRATUS_AGENT_LISTEN", default_value = "[::]:9104")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, clap::Args)]
pub struct OperatorProxy {
    /// The namespace of the DatabaseServices it routes to.
    #[arg(long, env = "STRATUS_NAMESPACE", default_value = "stratus")]
    pub namespace: String,
    /// Where SQL clients connect.
    #[arg(long, env = "STRATUS_LISTEN", default_value = "0.0.0.0:3306")]
    pub listen: std::net::SocketAddr,
    /// The MariaDB version clients are greeted with: the databases' image's.
    #[arg(
        long,
        env = "STRATUS_SERVER_VERSION",
        default_value = "10.11.0-MariaDB"
    )]
    pub server_version: String,
    /// TLS for clients: a certificate chain and its key (PEM), e.g. a mounted
    /// `kubernetes.io/tls` Secret. Without them clients connect in plain TCP only.
    #[arg(long, env = "STRATUS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    #[arg(long, env = "STRATUS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Where `/metrics` is served (Prometheus text: the proxy's per-database activity).
    #[arg(long, env = "STRATUS_METRICS", default_value = "0.0.0.0:9090")]
    pub metrics: std::net::SocketAddr,
    /// On SIGTERM, how long running statements and open transactions get to finish.
    #[arg(long, env = "STRATUS_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// An idle client's server connection goes back to the pool after this long (unless a
    /// transaction, lock or temporary table ties it); 0: never.
    #[arg(long, env = "STRATUS_RELEASE_IDLE_AFTER_MS", default_value_t = 10_000)]
    pub release_idle_after_ms: u64,
    /// This replica's name in the Events it records (its pod's name).
    #[arg(long, env = "POD_NAME", default_value = "stratus-proxy")]
    pub identity: String,
}

#[derive(Debug, clap::Args)]
pub struct OperatorRun {
    /// The namespace whose DatabaseServices it runs, and where their objects go.
    #[arg(long, env = "STRATUS_NAMESPACE", default_value = "stratus")]
    pub namespace: String,
    /// The MariaDB image database pods run (with mariadbd and mariadb-install-db).
    #[arg(long, env = "STRATUS_MARIADB_IMAGE", default_value = "mariadb:10.11")]
    pub mariadb_image: String,
    /// The storage class of database volumes (the cluster's default when left out).
    #[arg(long, env = "STRATUS_STORAGE_CLASS")]
    pub storage_class: Option<String>,
    /// Stratus's image, which runs the agent in each database pod (the operator's own).
    #[arg(long, env = "STRATUS_AGENT_IMAGE", default_value = stratus_kube::objects::STRATUS_IMAGE)]
    pub agent_image: String,
    /// Where clients connect, shown in each DatabaseService's status: the proxy's Service.
    #[arg(long, env = "STRATUS_PROXY_HOST", default_value = "stratus-proxy")]
    pub proxy_host: String,
    #[arg(long, env = "STRATUS_PROXY_PORT", default_value_t = 3306)]
    pub proxy_port: u16,
    /// This replica's name in the leader election (its pod's name).
    #[arg(long, env = "POD_NAME", default_value = "stratus-operator")]
    pub identity: String,
    /// Where `/metrics` is served (Prometheus text), for the chart's ServiceMonitor.
    #[arg(long, env = "STRATUS_METRICS", default_value = "0.0.0.0:9090")]
    pub metrics: std::net::SocketAddr,
    /// Spare database servers kept ready for new databases to claim, at least (0 and 0 turn
    /// the warm pool off).
    #[arg(long, env = "STRATUS_POOL_MIN", default_value_t = 1)]
    pub pool_min: usize,
    /// At most, however fast databases are being created.
    #[arg(long, env = "STRATUS_POOL_MAX", default_value_t = 4)]
    pub pool_max: usize,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Each node's capacity, what is allocated on it, the memory in use and its databases.
    List,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Replace the master key: every database's key is wrapped again under a new one, and the
    /// old one is destroyed. Data stays readable; running servers are not disturbed.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints its secret, which is shown only now.
    Create {
        /// admin (everything), developer (its databases: create, change, users, delete) or
        /// viewer (read only).
        #[arg(long)]
        role: String,
        /// A database the token reaches, or a prefix pattern like `shop-*`; repeat for more
        /// [default: every database]. Not for admin tokens.
        #[arg(long = "db")]
        databases: Vec<String>,
        /// A label to recognise it by.
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Delete a token; requests with it fail from now on.
    Delete { id: String },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// SQL endpoint for clients [default: 127.0.0.1:6033].
    #[arg(long)]
    pub listen: Option<String>,
    /// TOML file with the same keys, and the SCU size.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create a database; prints how to connect.
    Create {
        name: String,
        /// free (up to 2 SCU) or standard.
        #[arg(long)]
        tier: Option<String>,
        #[arg(long)]
        min_scu: Option<u32>,
        #[arg(long)]
        max_scu: Option<u32>,
        #[arg(long)]
        storage_gb: Option<u32>,
        /// Owner account name [default: admin].
        #[arg(long)]
        user: Option<String>,
        /// Owner password [default: generated].
        #[arg(long)]
        password: Option<String>,
        /// Refuse clients that do not connect with TLS.
        #[arg(long)]
        require_tls: bool,
        /// Write the connection, password included, to a private credential file for
        /// `stratus connect` (~/.config/stratus/credentials/NAME.USER.cnf, mode 0600).
        #[arg(long)]
        save_credentials: bool,
    },
    /// List databases.
    List,
    /// Show one database.
    Show {
        name: String,
        /// Refresh like `top` until Ctrl-C (with --json: one JSON object per line).
        #[arg(long, short)]
        watch: bool,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2.0, requires = "watch")]
        interval: f64,
    },
    /// Delete a database and its data.
    Delete {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
    /// Set a database's size in SCU.
    Scale {
        name: String,
        #[arg(long)]
        scu: u32,
    },
    /// Stop a database's server, keeping its storage.
    Park {
        name: String,
        /// Park even while clients hold transactions, temporary tables or locks (they lose them).
        #[arg(long)]
        force: bool,
    },
    /// Suspend a database: sessions closed (clients stay connected), memory and CPU at their
    /// floor, frozen where the host allows. The next statement wakes it in milliseconds.
    Suspend {
        name: String,
        /// Suspend even while clients hold transactions, temporary tables or locks.
        #[arg(long)]
        force: bool,
    },
    /// Start a parked or suspended database again.
    Resume { name: String },
    /// Make a new database from a backup of SOURCE (which may have been deleted since): its
    /// data, settings and users as they were then, or, with --time, as they were at that time.
    Restore {
        source: String,
        /// The new database's name.
        #[arg(long)]
        to: String,
        /// The backup to use (`stratus backup list SOURCE`) [default: the newest verified one
        /// (before --time)].
        #[arg(long)]
        backup: Option<String>,
        /// A past time (RFC 3339, e.g. 2026-11-30T22:41:05.123Z): every transaction SOURCE
        /// committed at or before it and none after, from a backup and the archived binary log.
        #[arg(long)]
        time: Option<String>,
    },
    /// Make NEW a writable copy of SOURCE as it is now: in about a second whatever its size
    /// where volumes share blocks, through a backup where they cannot. Its own size, lifecycle
    /// and users (SOURCE's); deleting either leaves the other.
    /// Move a database to another node while it serves: a snapshot, replication, a cut-over
    /// of about a second at the proxy (a token for all databases).
    Migrate {
        name: String,
        /// The node to move to [default: the one with the most memory left].
        #[arg(long)]
        to: Option<String>,
    },
    Branch {
        source: String,
        new: String,
        /// A past time (RFC 3339) instead of now: a point-in-time restore (`db restore --time`).
        #[arg(long)]
        time: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a backup of a database now, from its running server, and verify it.
    Create {
        db: String,
        /// Only what changed since its newest verified backup (restored with the backups
        /// under it).
        #[arg(long)]
        incremental: bool,
    },
    /// List a database's backups (also of a deleted database), oldest first.
    List { db: String },
    /// Check a backup's files against their checksums again; a damaged one is marked failed.
    Verify { id: String },
    /// Delete a backup.
    Delete { id: String },
    /// Show a database's backup schedule, or change it with the options given.
    Schedule {
        db: String,
        /// Cron expression in UTC: five fields (minute hour day month weekday), or six with
        /// seconds first; "" turns scheduled backups off. Default "0 3 * * *".
        #[arg(long)]
        cron: Option<String>,
        /// Delete backups older than this many days (the newest verified one always stays).
        #[arg(long)]
        retention_days: Option<u32>,
        /// Keep at most this many backups, the newest (0: no limit but their age).
        #[arg(long)]
        keep_last: Option<u32>,
        /// Cron expression in UTC for incremental backups between the full ones ("" for none,
        /// the default).
        #[arg(long)]
        incremental_cron: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user with all privileges on the database's schema.
    Create {
        db: String,
        user: String,
        /// [default: generated]
        #[arg(long)]
        password: Option<String>,
        /// Write a private credential file for `stratus connect` (as `db create` does).
        #[arg(long)]
        save_credentials: bool,
    },
    /// List a database's users.
    List { db: String },
    /// Remove a user.
    Delete { db: String, user: String },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this database (a deleted one too).
    #[arg(long)]
    pub db: Option<String>,
    /// From this time: RFC 3339 (`2026-12-01T00:00:00Z`) or a span back from now (`90m`,
    /// `24h`, `7d`); the databases' whole lives when left out.
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only this database's events.
    #[arg(long)]
    pub db: Option<String>,
    /// How many of the newest events.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Keep printing new events as they happen.
    #[arg(long, short)]
    pub follow: bool,
}
