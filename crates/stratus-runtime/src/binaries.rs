//! Finding the distribution's MariaDB programs and what the installed server supports.

use crate::{Result, RuntimeError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The MariaDB programs the local runtime uses, and facts probed from them once.
#[derive(Debug, Clone)]
pub struct MariaDb {
    pub mariadbd: PathBuf,
    pub install_db: PathBuf,
    /// `10.11.19-MariaDB-0+deb12u1`.
    pub version: String,
    /// The server knows `innodb_buffer_pool_size_max` (10.11.12+, 11.4.6+, 11.8.2+), which
    /// reserves address space for growing the pool without a restart.
    pub has_buffer_pool_size_max: bool,
    /// The distribution's plugin directory (where `file_key_management.so` is).
    pub plugin_dir: Option<PathBuf>,
    /// `mariadb-backup` (package `mariadb-backup`), for backups; `None` when not installed.
    pub backup: Option<PathBuf>,
    /// `mariadb-tzinfo-to-sql`, which turns the system's time zone files into the `mysql`
    /// schema's time zone tables; `None` when not installed.
    pub tzinfo_to_sql: Option<PathBuf>,
}

const HINT: &str = "install the distribution's mariadb-server package (apt-get install mariadb-server), \
                    or set mariadb.bin_dir in the config";

impl MariaDb {
    /// Looks in `bin_dir` if given, else in `PATH`, `/usr/sbin` and `/usr/bin`.
    pub fn locate(bin_dir: Option<&Path>) -> Result<Self> {
        let mariadbd = find("mariadbd", bin_dir)?;
        let install_db = find("mariadb-install-db", bin_dir)?;
        let out = Command::new(&mariadbd)
            .args(["--no-defaults", "--verbose", "--help"])
            .output()
            .map_err(|e| RuntimeError::io(format!("cannot run {}", mariadbd.display()), e))?;
        let help = String::from_utf8_lossy(&out.stdout);
        let version = Command::new(&mariadbd)
            .arg("--version")
            .output()
            .map_err(|e| RuntimeError::io(format!("cannot run {}", mariadbd.display()), e))?;
        let version =
            parse_version(&String::from_utf8_lossy(&version.stdout)).ok_or_else(|| {
                RuntimeError::Other(format!(
                    "{} --version printed no version",
                    mariadbd.display()
                ))
            })?;
        Ok(Self {
            has_buffer_pool_size_max: help.contains("--innodb-buffer-pool-size-max"),
            plugin_dir: help_value(&help, "plugin-dir").map(PathBuf::from),
            backup: find("mariadb-backup", bin_dir).ok(),
            tzinfo_to_sql: find("mariadb-tzinfo-to-sql", bin_dir).ok(),
            mariadbd,
            install_db,
            version,
        })
    }
}

fn find(binary: &'static str, bin_dir: Option<&Path>) -> Result<PathBuf> {
    let dirs: Vec<PathBuf> = match bin_dir {
        Some(dir) => vec![dir.to_owned()],
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(["/usr/sbin".into(), "/usr/bin".into()])
            .collect(),
    };
    dirs.iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .ok_or_else(|| RuntimeError::MissingBinary {
            binary,
            hint: match bin_dir {
                Some(d) => format!("not in {}; {HINT}", d.display()),
                None => HINT.to_owned(),
            },
        })
}

/// The value of one option in `mariadbd --verbose --help`'s closing table (`name   value`).
fn help_value<'a>(help: &'a str, name: &str) -> Option<&'a str> {
    help.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(name)).then(|| w.next()).flatten()
    })
}

/// `mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64` → `10.11.19-MariaDB-0+deb12u1`.
fn parse_version(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "Ver")?;
    words.next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_values() {
        let help = "Variables (--variable-name=value)\nplugin-dir                     /usr/lib/mysql/plugin/\nport 3306\n";
        assert_eq!(
            help_value(help, "plugin-dir"),
            Some("/usr/lib/mysql/plugin/")
        );
        assert_eq!(help_value(help, "plugin"), None);
    }

    #[test]
    fn version_line() {
        assert_eq!(
            parse_version(
                "mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)\n"
            ),
            Some("10.11.19-MariaDB-0+deb12u1".into())
        );
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn missing_binary_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let err = MariaDb::locate(Some(dir.path())).unwrap_err().to_string();
        assert!(
            err.contains("mariadbd not found") && err.contains("mariadb-server"),
            "{err}"
        );
    }
}
