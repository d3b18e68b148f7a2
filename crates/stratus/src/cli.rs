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
    /// Show what happened to databases, and why.
    Events(EventsArgs),
    /// Show the installation: versions, resource control, databases by state.
    Status,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the catalog and every database's files live [default: ./stratus-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
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
    },
    /// List databases.
    List,
    /// Show one database.
    Show { name: String },
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
    },
    /// List a database's users.
    List { db: String },
    /// Remove a user.
    Delete { db: String, user: String },
}

#[derive(Debug, Args)]
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
