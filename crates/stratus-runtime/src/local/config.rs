//! The option file each local `mariadbd` is started with.
//!
//! Rendered afresh before every start from the catalog's view of the database, so the file on
//! disk never disagrees with it. Option-file syntax:
//! <https://mariadb.com/kb/en/configuring-mariadb-with-option-files/>; the InnoDB and binary
//! log settings are those of <https://mariadb.com/kb/en/innodb-system-variables/> and
//! <https://mariadb.com/kb/en/gtid/>.

use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The redo log is the template's and every copy's; small, since each database is small and a
/// small log makes crash recovery fast.
pub const REDO_LOG_BYTES: u64 = 32 << 20;

/// MyISAM's key cache; see `render`.
pub const KEY_CACHE_BYTES: u64 = 8 << 20;
/// Aria's page cache; see `render`.
pub const ARIA_CACHE_BYTES: u64 = 16 << 20;

/// The redo log buffer grows with the buffer pool the server starts with, from MariaDB's
/// smallest (2 MiB) to its default (16 MiB) at a 1 GiB pool: a server woken at a large size
/// gets the default, a spare at 16 MiB the smallest.
pub fn log_buffer_bytes(buffer_pool_bytes: u64) -> u64 {
    (buffer_pool_bytes / 64).clamp(2 << 20, 16 << 20)
}

/// The base name of relay log files (`<binlog dir>/relay-bin.000001`).
pub const RELAY_LOG: &str = "relay-bin";

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub datadir: PathBuf,
    /// The only way in on one machine: a socket in a directory only Stratus and the server's
    /// user may enter.
    pub socket: PathBuf,
    /// `None`: the server never listens on TCP, so nothing can bypass the proxy (one machine).
    /// On Kubernetes it listens on this port, and network policy admits only the proxy and the
    /// operator.
    pub port: Option<u16>,
    pub pid_file: PathBuf,
    /// `None`: standard error (a container's log). A path without a dot would get `.err`
    /// appended by the server, so `/dev/stderr` cannot stand for it.
    pub error_log: Option<PathBuf>,
    /// Its own temporary directory: servers sharing `/tmp` collide on temporary table names
    /// while bootstrapping, and temporary files belong with the database's storage.
    pub tmpdir: PathBuf,
    /// Where the binary log goes (`<dir>/mariadb-bin.*`): outside a database's volume, because
    /// a binary log write that meets a full disk makes the server wait for space, every client
    /// with it, where a full tablespace fails only the statement. `None`: the data directory.
    pub binlog_dir: Option<PathBuf>,
    /// The OS user mariadbd switches to (`None`: it stays the user that started it).
    pub user: Option<String>,
    /// The only directory `LOAD DATA INFILE` / `SELECT … INTO OUTFILE` may touch, for any account
    /// that ever gets `FILE`.
    pub secure_file_priv: PathBuf,
    /// Where plugins are loaded from: a directory holding only the ones Stratus allows.
    pub plugin_dir: PathBuf,
    /// SQL run at every start with full privileges: restores Stratus's own account, whatever a
    /// tenant did to it. `None` for the template bootstrap.
    pub init_file: Option<PathBuf>,
    /// Encryption at rest with the key `file_key_management` reads from this file at start
    /// (`keys.rs`); `None`: off (the template, which holds no tenant data).
    pub key_file: Option<PathBuf>,
    /// The certificate chain and key the server takes TLS with (the proxy's connections for
    /// clients that used TLS); `None`: no TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub server_id: u32,
    /// Wait at each commit for the commit clock (`commit_clock`): commit times exact to the
    /// transaction, at the cost `docs/storage.md` gives.
    pub semi_sync: bool,
    pub buffer_pool_bytes: u64,
    /// Reserve address space for growth (only where the server knows the option).
    pub buffer_pool_max_bytes: Option<u64>,
}

/// Option values are double-quoted; inside, backslash and quote are escaped. Paths with a
/// newline are refused earlier (they cannot be written at all).
pub(super) fn quoted(path: &Path) -> String {
    let s = path.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn render(o: &ServerOptions) -> String {
    let mut f = String::from(
        "# Written by Stratus before every start; edits are overwritten.\n[mariadbd]\n",
    );
    let mut line = |k: &str, v: &dyn std::fmt::Display| {
        let _ = writeln!(f, "{k} = {v}");
    };
    line("datadir", &quoted(&o.datadir));
    line("socket", &quoted(&o.socket));
    line("pid-file", &quoted(&o.pid_file));
    if let Some(log) = &o.error_log {
        line("log-error", &quoted(log));
    }
    line("tmpdir", &quoted(&o.tmpdir));
    match o.port {
        None => line("skip-networking", &"ON"),
        Some(port) => {
            line("port", &port);
            line("bind_address", &"0.0.0.0");
        }
    }
    if let Some(user) = &o.user {
        line("user", user);
    }
    line("secure_file_priv", &quoted(&o.secure_file_priv));
    line("plugin_dir", &quoted(&o.plugin_dir));
    if let Some(init) = &o.init_file {
        line("init_file", &quoted(init));
    }
    if let Some(keys) = &o.key_file {
        // Everything a tenant's data passes through: tables, redo and undo, temporary files
        // and tables, the binary log (<https://mariadb.com/kb/en/data-at-rest-encryption-overview/>).
        // `FORCE`: no table can be made with `ENCRYPTED=NO`.
        line("plugin_load_add", &"file_key_management");
        line("file_key_management_filename", &quoted(keys));
        line("file_key_management_encryption_algorithm", &"AES_CTR");
        line("innodb_encrypt_tables", &"FORCE");
        line("innodb_encrypt_log", &"ON");
        line("innodb_encrypt_temporary_tables", &"ON");
        line("innodb_encryption_threads", &1);
        line("encrypt_tmp_files", &"ON");
        line("encrypt_tmp_disk_tables", &"ON");
        line("encrypt_binlog", &"ON");
        line("aria_encrypt_tables", &"ON");
    }
    if let Some((cert, key)) = &o.tls {
        line("ssl_cert", &quoted(cert));
        line("ssl_key", &quoted(key));
    }
    // `DATA DIRECTORY` / `INDEX DIRECTORY` would let a table's files land anywhere the server's
    // user may write; without symbolic links the server ignores them.
    line("symbolic-links", &0);
    line("skip-name-resolve", &"ON");
    line("performance_schema", &"OFF");
    line("innodb_log_file_size", &REDO_LOG_BYTES);
    // Memory a small server touches whether it is used or not (`bench/density`: 98 → 54 MiB
    // resident for an idle server). MyISAM's key cache (128 MiB by default, 24 MiB of it
    // touched at start) serves only MyISAM indexes (a tenant's MyISAM tables work, with less
    // of their index cached); Aria's page cache (128 MiB, 6 MiB touched) holds the system
    // tables and temporary tables that spill to disk (a large sort or GROUP BY reads more);
    // the redo log buffer (16 MiB) only has to hold a transaction's redo between writes, and a
    // larger transaction just writes more often. The log buffer is fixed at start: a database
    // claimed from the pool keeps the spare's 2 MiB until its server next starts.
    line("key_buffer_size", &KEY_CACHE_BYTES);
    line("aria_pagecache_buffer_size", &ARIA_CACHE_BYTES);
    line(
        "innodb_log_buffer_size",
        &log_buffer_bytes(o.buffer_pool_bytes),
    );
    // The temporary tablespace is made afresh at every start, 12 MiB by default: written on
    // every start's path and held on disk by every running server, used by few. It grows when
    // a statement needs it.
    line("innodb_temp_data_file_path", &"ibtmp1:1M:autoextend");
    line("innodb_buffer_pool_size", &o.buffer_pool_bytes);
    // Without it MariaDB 10.11.12+ caps the pool at its size at start. `loose-`: a server that
    // does not know the option (older ones grow without it) warns instead of refusing to start.
    if let Some(max) = o.buffer_pool_max_bytes {
        line(
            "loose-innodb_buffer_pool_size_max",
            &max.max(o.buffer_pool_bytes),
        );
    }
    line("innodb_buffer_pool_dump_at_shutdown", &"ON");
    line("innodb_buffer_pool_load_at_startup", &"ON");
    // Suspend dumps the whole hot-page list, so resume can reload all of it.
    line("innodb_buffer_pool_dump_pct", &100);
    line("server_id", &o.server_id);
    match &o.binlog_dir {
        Some(dir) => line("log_bin", &quoted(&dir.join("mariadb-bin"))),
        None => line("log_bin", &"mariadb-bin"),
    }
    line("binlog_format", &"ROW");
    line("gtid_strict_mode", &"ON");
    line("log_slave_updates", &"ON");
    line("binlog_expire_logs_seconds", &(3 * 86_400));
    // Stratus follows every server as a replica to time each commit (`commit_clock`). With
    // `semi_sync` the server waits for its acknowledgement after writing a transaction to the
    // binary log and before committing it in the engine. Without a replica attached it does
    // not wait; a replica slower than a second is dropped to asynchronous until it catches up.
    line(
        "rpl_semi_sync_master_enabled",
        &if o.semi_sync { "ON" } else { "OFF" },
    );
    line("rpl_semi_sync_master_wait_point", &"AFTER_SYNC");
    line("rpl_semi_sync_master_wait_no_slave", &"OFF");
    line("rpl_semi_sync_master_timeout", &1000);
    // A point-in-time restore replays archived binary logs as relay logs; nothing else ever
    // replicates into a database, and nothing starts replicating by itself.
    match &o.binlog_dir {
        Some(dir) => line("relay_log", &quoted(&dir.join(RELAY_LOG))),
        None => line("relay_log", &RELAY_LOG),
    }
    line("skip_slave_start", &"ON");
    // Owners have no SUPER; with the binary log on, MariaDB would otherwise refuse them
    // stored functions and triggers.
    line("log_bin_trust_function_creators", &"ON");
    f
}

/// A stable, non-zero server id from the database name (FNV-1a), so replicas made from it later
/// are told apart.
pub fn server_id(name: &str) -> u32 {
    let h = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h.max(1) & 0x7fff_ffff | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ServerOptions {
        ServerOptions {
            datadir: "/d/my \"data\"".into(),
            socket: "/d/s.sock".into(),
            port: None,
            pid_file: "/d/p.pid".into(),
            error_log: Some("/d/e.log".into()),
            tmpdir: "/d/tmp".into(),
            binlog_dir: Some("/d/binlog".into()),
            user: Some("stratus-db".into()),
            secure_file_priv: "/d/files".into(),
            plugin_dir: "/d/plugins".into(),
            init_file: Some("/d/init.sql".into()),
            key_file: Some("/s/shop.key".into()),
            tls: None,
            server_id: 7,
            semi_sync: true,
            buffer_pool_bytes: 1 << 30,
            buffer_pool_max_bytes: Some(1 << 31),
        }
    }

    #[test]
    fn renders_the_settings_that_matter() {
        let cnf = render(&opts());
        for want in [
            "skip-networking = ON",
            "user = stratus-db",
            r#"secure_file_priv = "/d/files""#,
            r#"plugin_dir = "/d/plugins""#,
            r#"init_file = "/d/init.sql""#,
            "symbolic-links = 0",
            r#"file_key_management_filename = "/s/shop.key""#,
            "innodb_encrypt_tables = FORCE",
            "encrypt_binlog = ON",
            "innodb_buffer_pool_size = 1073741824",
            "loose-innodb_buffer_pool_size_max = 2147483648",
            r#"log_bin = "/d/binlog/mariadb-bin""#,
            "performance_schema = OFF",
            r#"datadir = "/d/my \"data\"""#,
        ] {
            assert!(cnf.contains(want), "missing {want:?} in\n{cnf}");
        }
    }

    #[test]
    fn never_listens_on_tcp_and_max_never_below_size() {
        let cnf = render(&ServerOptions {
            user: None,
            init_file: None,
            key_file: None,
            tls: None,
            buffer_pool_max_bytes: Some(1),
            ..opts()
        });
        assert!(!cnf.contains("port") && !cnf.contains("bind-address"));
        assert!(!cnf.contains("user =") && !cnf.contains("init_file"));
        assert!(!cnf.contains("encrypt"), "no encryption without a key");
        assert!(cnf.contains("loose-innodb_buffer_pool_size_max = 1073741824"));
    }

    #[test]
    fn a_networked_server_listens_on_its_port_only() {
        let cnf = render(&ServerOptions {
            port: Some(3306),
            ..opts()
        });
        assert!(
            cnf.contains("port = 3306\nbind_address = 0.0.0.0\n"),
            "{cnf}"
        );
        assert!(!cnf.contains("skip-networking"));
    }

    #[test]
    fn small_servers_get_small_caches() {
        let cnf = render(&ServerOptions {
            buffer_pool_bytes: 16 << 20,
            ..opts()
        });
        for want in [
            "key_buffer_size = 8388608",
            "aria_pagecache_buffer_size = 16777216",
            "innodb_log_buffer_size = 2097152",
            "innodb_temp_data_file_path = ibtmp1:1M:autoextend",
        ] {
            assert!(cnf.contains(want), "missing {want:?} in\n{cnf}");
        }
        assert_eq!(log_buffer_bytes(1 << 30), 16 << 20);
        assert_eq!(log_buffer_bytes(8 << 30), 16 << 20);
        assert_eq!(log_buffer_bytes(256 << 20), 4 << 20);
    }

    #[test]
    fn server_ids_are_positive_and_stable() {
        assert_eq!(server_id("shop"), server_id("shop"));
        assert_ne!(server_id("shop"), server_id("shop2"));
        assert!(server_id("") > 0);
    }
}
