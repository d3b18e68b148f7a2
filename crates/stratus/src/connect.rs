//! `stratus connect`: the `mariadb` client on a database, and the per-user credential files
//! `db create --save-credentials` and `user create --save-credentials` write for it.
//!
//! A credential file is a MariaDB option file (`[client]` group: user, password, host, port,
//! database; <https://mariadb.com/kb/en/configuring-mariadb-with-option-files/>), mode 0600,
//! under `$XDG_CONFIG_HOME/stratus/credentials` (default `~/.config/…`), named
//! `<database>.<user>.cnf`. The client reads it alone (`--defaults-file`: a `~/.my.cnf` with
//! another user or password must not override it), so the password is never on a command line.
//! Without one, the client asks for the password on the terminal.

use anyhow::{Context, bail};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// What a credential file holds.
pub struct Credentials<'a> {
    /// The Stratus database (names the file).
    pub service: &'a str,
    /// The schema the client starts in.
    pub schema: &'a str,
    /// The database-qualified account, `shop.admin`.
    pub user: &'a str,
    pub password: &'a str,
    pub host: &'a str,
    pub port: u16,
}

/// Where credential files live.
fn dir() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?,
        )
        .join(".config"),
    };
    Ok(base.join("stratus").join("credentials"))
}

/// The credential file of `database` and `user` (the short name, `admin`). Both must be valid
/// names, so no path can be made of them but one in the credentials directory.
pub fn path(database: &str, user: &str) -> anyhow::Result<PathBuf> {
    let database = stratus_core::ServiceName::parse(database)?;
    let user = stratus_core::UserName::parse(user)?;
    Ok(dir()?.join(format!("{database}.{user}.cnf")))
}

/// The credentials directory must be this user's and closed to others.
fn check_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_dir() || meta.uid() != rustix::process::geteuid().as_raw() || mode & 0o077 != 0 {
        bail!(
            "{} must be a directory of yours that only you can open (chmod 700 it)",
            dir.display()
        );
    }
    Ok(())
}

/// A value in an option file: double-quoted, backslash and quote escaped.
fn quoted(value: &str) -> anyhow::Result<String> {
    if value.contains(['\n', '\r']) {
        bail!("a value with a line break cannot go into an option file");
    }
    Ok(format!(
        "\"{}\"",
        value.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// Writes the credential file (mode 0600, its directory 0700); returns its path.
pub fn save(c: &Credentials<'_>) -> anyhow::Result<PathBuf> {
    let short = c.user.split_once('.').map_or(c.user, |(_, u)| u);
    let file = path(c.service, short)?;
    let dir = dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", dir.display()))?;
    check_dir(&dir)?;
    if std::fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink()) {
        bail!(
            "{} is a symbolic link; not writing through it",
            file.display()
        );
    }
    let text = format!(
        "# Written by `stratus` for `stratus connect {service}`; keep it private (mode 0600).\n\
         [client]\nuser = {user}\npassword = {password}\nhost = {host}\nport = {port}\ndatabase = {schema}\n",
        service = c.service,
        schema = quoted(c.schema)?,
        user = quoted(c.user)?,
        password = quoted(c.password)?,
        host = quoted(c.host)?,
        port = c.port,
    );
    stratus_core::fs::write_private(&file, text.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(file)
}

/// Replaces this process with the `mariadb` client on database `service` (schema `schema`) as
/// `user`: with the credential file if there is one (it must be private), else asking for the
/// password.
pub fn exec(
    service: &str,
    schema: &str,
    user: &str,
    host: &str,
    port: u16,
    tls: bool,
) -> anyhow::Result<()> {
    let file = path(service, user)?;
    let mut client = std::process::Command::new("mariadb");
    match std::fs::symlink_metadata(&file) {
        Ok(meta) => {
            if !meta.is_file() {
                bail!("{} is not a plain file", file.display());
            }
            check_dir(&dir()?)?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by others (mode {mode:o}); run chmod 600 on it",
                    file.display()
                );
            }
            if meta.uid() != rustix::process::geteuid().as_raw() {
                bail!("{} belongs to another user", file.display());
            }
            // Must come first; the only option file read, so nothing else overrides it.
            client.arg(format!("--defaults-file={}", file.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            client.args([
                "-h",
                host,
                "-P",
                &port.to_string(),
                "-u",
                &format!("{service}.{user}"),
                "-p",
                schema,
            ]);
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
    if tls {
        client.arg("--ssl");
    }
    let err = client.exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        bail!(
            "the mariadb client is not installed (Debian and Ubuntu: apt install mariadb-client)"
        );
    }
    Err(err).context("cannot start the mariadb client")
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn option_values_are_quoted_so_any_password_survives() {
        assert_eq!(quoted("pl@in").unwrap(), "\"pl@in\"");
        assert_eq!(quoted(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(quoted("two\nlines").is_err());
    }
}
