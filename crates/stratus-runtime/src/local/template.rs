//! The template data directory every local database is copied from.
//!
//! `mariadb-install-db` runs once per data directory; Stratus's own account is then added in
//! `--bootstrap` mode (SQL on stdin, no networking, <https://mariadb.com/kb/en/mariadbd-options/#-bootstrap>).
//! A new database is a file copy of the result (about 30 MB), far cheaper than the installer.

use super::config::{self, ServerOptions};
use crate::admin::{ADMIN_USER, quote_str};
use crate::binaries::MariaDb;
use crate::{Result, RuntimeError};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use stratus_core::commit_marker;
use stratus_core::random_password;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

pub struct Template {
    pub data: PathBuf,
    /// The admin password every fresh copy starts with; rotated right after the first start.
    pub admin_password: String,
}

/// Returns the template under `dir`, building it first if it is missing or half-built.
pub async fn ensure(dir: &Path, mariadb: &MariaDb, run_as_root: bool) -> Result<Template> {
    let ready = dir.join("READY");
    let password_file = dir.join("admin-password");
    if ready.exists() {
        let admin_password = std::fs::read_to_string(&password_file)
            .map_err(|e| RuntimeError::io(format!("cannot read {}", password_file.display()), e))?
            .trim()
            .to_owned();
        return Ok(Template {
            data: dir.join("data"),
            admin_password,
        });
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| RuntimeError::io(format!("cannot clear {}", dir.display()), e))?;
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| RuntimeError::io(format!("cannot create {}", dir.display()), e))?;
    let cnf = dir.join("my.cnf");
    std::fs::create_dir_all(dir.join("tmp"))
        .map_err(|e| RuntimeError::io(format!("cannot create {}/tmp", dir.display()), e))?;
    let log = dir.join("install.log");
    let opts = ServerOptions {
        datadir: dir.join("data"),
        port: None,
        socket: dir.join("bootstrap.sock"),
        pid_file: dir.join("bootstrap.pid"),
        error_log: log.clone(),
        tmpdir: dir.join("tmp"),
        run_as_root,
        server_id: 1,
        buffer_pool_bytes: 16 << 20,
        buffer_pool_max_bytes: None,
    };
    write_private(&cnf, &config::render(&opts))?;
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

    let admin_password = random_password();
    let pw = quote_str(&admin_password);
    let sql = format!(
        "FLUSH PRIVILEGES;\n\
         DELETE FROM mysql.global_priv WHERE User = '';\n\
         CREATE USER '{ADMIN_USER}'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD({pw});\n\
         GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'127.0.0.1' WITH GRANT OPTION;\n\
         {};\n{};\n",
        commit_marker::DDL[0],
        commit_marker::DDL[1]
    );
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
    write_private(&dir.join("admin-password"), &admin_password)?;
    std::fs::write(&ready, b"")
        .map_err(|e| RuntimeError::io(format!("cannot write {}", ready.display()), e))?;
    Ok(Template {
        data: dir.join("data"),
        admin_password,
    })
}

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

/// Writes a file only its owner can read: option files and passwords.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    stratus_core::fs::write_private(path, contents.as_bytes())
        .map_err(|e| RuntimeError::io(format!("cannot write {}", path.display()), e))
}

/// Copies a directory tree (files, directories and symlinks), as `cp -a` would, minus ownership.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
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
