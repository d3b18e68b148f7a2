//! The template data directory every local database is copied from.
//!
//! `mariadb-install-db` runs once per data directory; Stratus's own account is then set up in
//! `--bootstrap` mode (SQL on stdin, no networking, <https://mariadb.com/kb/en/mariadbd-options/#-bootstrap>).
//! A new database is a file copy of the result (about 30 MB), far cheaper than the installer.

use super::config::{self, ServerOptions};
use super::server_user::ServerUser;
use crate::admin::quote_str;
use crate::binaries::MariaDb;
use crate::{Result, RuntimeError};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use stratus_core::commit_marker;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

pub struct Template {
    pub data: PathBuf,
    /// How many named time zones the template has (none without `tzdata` or the tool): a
    /// database with fewer is filled at its start.
    pub time_zones: u64,
}

/// Written to `READY` once the template is whole; a template of another format is rebuilt.
const FORMAT: &str = "4: unix_socket admin account, no TCP, time zone tables counted\n";

/// Beside `READY`: the number of named time zones the template was filled with.
const TIME_ZONES: &str = "TIME_ZONES";

/// Where the system keeps its time zone files (Debian's `tzdata`).
const ZONEINFO: &str = "/usr/share/zoneinfo";

/// Returns the template under `dir`, building it first if it is missing, half-built or of an
/// older format.
pub async fn ensure(
    dir: &Path,
    mariadb: &MariaDb,
    user: &ServerUser,
    plugin_dir: &Path,
) -> Result<Template> {
    let ready = dir.join("READY");
    if std::fs::read_to_string(&ready).is_ok_and(|f| f == FORMAT) {
        let time_zones = std::fs::read_to_string(dir.join(TIME_ZONES))
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        // Made without zones (no `tzdata` or tool then): made again once the system has them.
        let zones_now = mariadb.tzinfo_to_sql.is_some() && Path::new(ZONEINFO).is_dir();
        if time_zones > 0 || !zones_now {
            return Ok(Template {
                data: dir.join("data"),
                time_zones,
            });
        }
        tracing::info!("the template has no time zones and the system now has them: made again");
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| RuntimeError::io(format!("cannot clear {}", dir.display()), e))?;
    }
    for d in [dir.to_path_buf(), dir.join("tmp"), dir.join("files")] {
        std::fs::create_dir_all(&d)
            .map_err(|e| RuntimeError::io(format!("cannot create {}", d.display()), e))?;
    }
    user.share_dir(dir)?;
    user.give(&dir.join("tmp"))?;
    user.give(&dir.join("files"))?;
    let cnf = dir.join("my.cnf");
    let log = dir.join("install.log");
    let opts = ServerOptions {
        datadir: dir.join("data"),
        socket: dir.join("tmp/bootstrap.sock"),
        port: None,
        pid_file: dir.join("tmp/bootstrap.pid"),
        error_log: Some(log.clone()),
        tmpdir: dir.join("tmp"),
        binlog_dir: None,
        user: user.os_user.as_ref().map(|a| a.name.clone()),
        secure_file_priv: dir.join("files"),
        plugin_dir: plugin_dir.to_path_buf(),
        init_file: None,
        key_file: None,
        tls: None,
        server_id: 1,
        semi_sync: false,
        buffer_pool_bytes: 16 << 20,
        buffer_pool_max_bytes: None,
    };
    write_private(&cnf, &config::render(&opts))?;
    // The installer writes its log as the server's user.
    std::fs::write(&log, b"").map_err(|e| RuntimeError::io("install.log", e))?;
    user.give(&log)?;
    let defaults = format!("--defaults-file={}", cnf.display());

    let out = Command::new(&mariadb.install_db)
        .args([
            defaults.as_str(),
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| RuntimeError::io(format!("cannot run {}", mariadb.install_db.display()), e))?;
    if !out.status.success() {
        return Err(failed("mariadb-install-db", &out, &log));
    }

    // Only two accounts survive: MariaDB's own `mariadb.sys`, and Stratus's. The installer's
    // account for the server's OS user would let any process of that user in with every right.
    let sql = format!(
        "FLUSH PRIVILEGES;\n\
         DELETE FROM mysql.global_priv WHERE User <> 'mariadb.sys';\n\
         DELETE FROM mysql.proxies_priv;\n\
         FLUSH PRIVILEGES;\n\
         {}{}\n{};\n{};\n",
        access_sql(&user.admin_account),
        // Made here, not restored.
        format_args!("DELETE FROM {RESTORED_TABLE};"),
        commit_marker::DDL[0],
        commit_marker::DDL[1]
    );
    // Named time zones (`CONVERT_TZ(t, 'UTC', 'Europe/Helsinki')`, `SET time_zone =
    // 'America/New_York'`) need the `mysql` schema's time zone tables, which a new server has
    // empty and a tenant may not fill; managed databases come with them loaded. Every database
    // is a copy of the template, so they are loaded once, here (older databases get them at
    // their next start, from `login`).
    let zones = time_zone_sql(mariadb, &dir.join("zoneinfo"))
        .await
        .unwrap_or_default();
    let time_zones = time_zone_names(&zones);
    let sql = format!("{sql}USE mysql;\n{zones}");
    let mut child = Command::new(&mariadb.mariadbd)
        .args([defaults.as_str(), "--bootstrap"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::io(format!("cannot run {}", mariadb.mariadbd.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(sql.as_bytes())
            .await
            .map_err(|e| RuntimeError::io("bootstrap stdin", e))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| RuntimeError::io("mariadbd --bootstrap", e))?;
    if !out.status.success() {
        return Err(failed("mariadbd --bootstrap", &out, &log));
    }
    std::fs::write(dir.join(TIME_ZONES), format!("{time_zones}\n"))
        .map_err(|e| RuntimeError::io(format!("cannot write {TIME_ZONES}"), e))?;
    std::fs::write(&ready, FORMAT)
        .map_err(|e| RuntimeError::io(format!("cannot write {}", ready.display()), e))?;
    Ok(Template {
        data: dir.join("data"),
        time_zones,
    })
}

/// The system's time zones as statements filling the `mysql` schema's tables
/// (<https://mariadb.com/kb/en/mariadb-tzinfo-to-sql/>); none, with a warning, when the tool
/// or the files are missing (named time zones then stay unknown to the servers, as on a
/// server installed without them). Without the `posix/` and `right/` trees: the first repeats
/// every zone under a second name, the second counts leap seconds, which MariaDB's own time
/// does not; with them the tables take 7.4 MiB in every database instead of 2.7. The tool
/// reads a directory: `zones` is made for it (in Stratus's own, not the servers'), with links
/// to what it should read, and removed after.
pub(super) async fn time_zone_sql(mariadb: &MariaDb, zones: &Path) -> Option<String> {
    let Some(tool) = &mariadb.tzinfo_to_sql else {
        tracing::warn!("mariadb-tzinfo-to-sql not found: databases will know no named time zones");
        return None;
    };
    // Left over if an earlier run stopped half-way.
    let _ = std::fs::remove_dir_all(zones);
    let linked = std::fs::create_dir(zones).and_then(|()| {
        for entry in std::fs::read_dir(ZONEINFO)? {
            let entry = entry?;
            // `localtime` is this host's own zone, `posixrules` a copy of one: not names.
            if !matches!(
                entry.file_name().to_str(),
                Some("posix" | "right" | "localtime" | "posixrules")
            ) {
                std::os::unix::fs::symlink(entry.path(), zones.join(entry.file_name()))?;
            }
        }
        Ok(())
    });
    if let Err(e) = linked {
        tracing::warn!(
            "cannot read {ZONEINFO} ({e}; install tzdata): databases will know no named time zones"
        );
        let _ = std::fs::remove_dir_all(zones);
        return None;
    }
    let out = Command::new(tool)
        .arg(zones)
        .stdin(Stdio::null())
        .output()
        .await;
    let _ = std::fs::remove_dir_all(zones);
    match out {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => {
            tracing::warn!(
                "{} failed ({}): databases will know no named time zones",
                tool.display(),
                out.status
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                "cannot run {}: {e}: databases will know no named time zones",
                tool.display()
            );
            None
        }
    }
}

/// Records that databases need only `n` time zones (the system's became fewer than the
/// template's), so that the next start of Stratus knows it too. Best effort: otherwise it
/// learns it again at its first fill.
pub(super) fn record_time_zones(dir: &Path, n: u64) {
    let _ = std::fs::write(dir.join(TIME_ZONES), format!("{n}\n"));
}

/// How many named time zones [`time_zone_sql`]'s statements make: one row of
/// `mysql.time_zone_name` each.
pub(super) fn time_zone_names(sql: &str) -> u64 {
    sql.matches("INSERT INTO time_zone_name ").count() as u64
}

/// The statements that give Stratus its account back, whatever was done to it: run at every
/// start as the server's `init_file`, with every privilege, before any client can connect. One
/// statement per line, as `init_file` wants. When the account was not as Stratus left it
/// (missing, locked, another plugin, privileges taken), a row in [`RESTORED_TABLE`] (in the
/// `mysql` schema, which tenants can read but not write) says so, for Stratus to report. The
/// account of earlier versions, which logged in with a password over TCP, is removed.
pub fn access_sql(admin: &str) -> String {
    access_sql_for(admin, &Access::Socket)
}

/// How Stratus's own account logs in.
pub enum Access {
    /// `admin@localhost` through the server's socket, as the OS user of the same name (one
    /// machine: only Stratus runs as it).
    Socket,
    /// `admin@'%'` over the network with this `mysql_native_password` hash (Kubernetes, where
    /// network policy admits only the proxy and the operator to a database's port).
    Password(stratus_core::password::NativeHash),
}

/// [`access_sql`] for an account that logs in as `access` says.
pub fn access_sql_for(admin: &str, access: &Access) -> String {
    let user = quote_str(admin);
    // A changed password is a changed account too; a socket account has none.
    let (host, auth, secret) = match access {
        Access::Socket => ("localhost", "unix_socket".to_owned(), ""),
        Access::Password(hash) => (
            "%",
            format!(
                "mysql_native_password USING {}",
                quote_str(&hash.to_string())
            ),
            " JSON_VALUE(Priv, '$.authentication_string'),",
        ),
    };
    let a = format!("{user}@{}", quote_str(host));
    let state = format!(
        "(SELECT CONCAT_WS(' ', JSON_VALUE(Priv, '$.plugin'),{secret} IFNULL(JSON_VALUE(Priv, '$.account_locked'), 'false'), \
         JSON_VALUE(Priv, '$.access')) FROM mysql.global_priv WHERE User = {user} AND Host = {})",
        quote_str(host)
    );
    format!(
        "SET sql_log_bin = 0;\n\
         CREATE TABLE IF NOT EXISTS {RESTORED_TABLE} (restored_at DATETIME NOT NULL, was TEXT NOT NULL) ENGINE=InnoDB;\n\
         SET @stratus_was = IFNULL({state}, 'missing');\n\
         CREATE USER IF NOT EXISTS {a} IDENTIFIED VIA {auth};\n\
         ALTER USER {a} IDENTIFIED VIA {auth} WITH MAX_QUERIES_PER_HOUR 0 MAX_UPDATES_PER_HOUR 0 \
         MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 0 MAX_STATEMENT_TIME 0 PASSWORD EXPIRE NEVER ACCOUNT UNLOCK;\n\
         GRANT ALL PRIVILEGES ON *.* TO {a} WITH GRANT OPTION;\n\
         INSERT INTO {RESTORED_TABLE} SELECT NOW(), @stratus_was FROM DUAL WHERE @stratus_was <> IFNULL({state}, '');\n\
         DROP USER IF EXISTS 'stratus_admin'@'127.0.0.1';\n\
         SET sql_log_bin = 1;\n"
    )
}

/// Where the init file notes that it had to restore Stratus's account.
pub const RESTORED_TABLE: &str = "mysql.stratus_access_restored";

fn failed(what: &str, out: &std::process::Output, log: &Path) -> RuntimeError {
    let mut tail = super::process::log_tail(log, 8);
    tail.extend(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .take(8)
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
            .rev(),
    );
    RuntimeError::StartFailed {
        name: "template".into(),
        reason: format!("{what} failed ({})", out.status),
        log_tail: tail,
    }
}

/// Writes a file only its owner can read: option files.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    stratus_core::fs::write_private(path, contents.as_bytes())
        .map_err(|e| RuntimeError::io(format!("cannot write {}", path.display()), e))
}

/// Copies a directory tree (files, directories and symlinks), as `cp -a` would, minus ownership.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    copy_into(from, to)
}

/// [`copy_tree`] into a directory that exists (a mounted volume).
pub fn copy_into(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let ty = entry.file_type()?;
        if ty.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_core::password::NativeHash;

    #[test]
    fn the_account_is_restored_as_it_logs_in() {
        let local = access_sql("stratus_admin");
        assert!(local.contains(
            "CREATE USER IF NOT EXISTS 'stratus_admin'@'localhost' IDENTIFIED VIA unix_socket;"
        ));
        assert!(!local.contains("authentication_string"));
        let hash = NativeHash::of_password("pw");
        let net = access_sql_for("stratus_admin", &Access::Password(hash));
        assert!(net.contains(&format!(
            "ALTER USER 'stratus_admin'@'%' IDENTIFIED VIA mysql_native_password USING '{hash}' WITH"
        )));
        // A password changed by a tenant counts as a changed account, and is reported.
        assert!(net.contains("JSON_VALUE(Priv, '$.authentication_string')"));
        assert_eq!(net.lines().count(), local.lines().count());
    }
}
