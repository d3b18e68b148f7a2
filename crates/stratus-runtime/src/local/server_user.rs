//! The OS account every local `mariadbd` runs as, and the MariaDB account Stratus manages it with.
//!
//! Run by root, Stratus starts each server as a dedicated unprivileged user (`stratus-db` by
//! default, created as a system account if missing; `mariadbd --user`,
//! <https://mariadb.com/kb/en/mariadbd-options/#-user>), so a server that is made to read or
//! write files can reach only its own directory. Run by anyone else, the servers run as that
//! same user: nothing else is possible without privileges.
//!
//! Stratus logs into its servers over their unix socket as the MariaDB account named after its
//! own OS user, authenticated by the kernel (`unix_socket`,
//! <https://mariadb.com/kb/en/authentication-plugin-unix-socket/>): there is no password to
//! store, leak or steal, and no process but Stratus's can use that account.

use crate::{Result, RuntimeError};
use rustix::fs::{Gid, Uid};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The default OS account servers run as when Stratus runs as root.
pub const DEFAULT_SERVER_USER: &str = "stratus-db";

#[derive(Debug, Clone)]
pub struct ServerUser {
    /// The account `mariadbd` switches to; `None` when Stratus is not root (servers then run as
    /// Stratus's own user).
    pub os_user: Option<OsAccount>,
    /// The MariaDB account Stratus manages each server with: its own OS user name.
    pub admin_account: String,
}

#[derive(Debug, Clone)]
pub struct OsAccount {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl ServerUser {
    /// Resolves (and, as root, creates if missing) the account servers run as.
    pub fn resolve(wanted: &str) -> Result<Self> {
        let me = rustix::process::geteuid();
        let admin_account = lookup_uid(me.as_raw())?.name;
        if !me.is_root() {
            return Ok(Self {
                os_user: None,
                admin_account,
            });
        }
        if wanted == "root" {
            return Err(RuntimeError::Other(
                "mariadb.user = \"root\" is refused: a server must not be able to act as root"
                    .into(),
            ));
        }
        let account = match getent(wanted)? {
            Some(a) => a,
            None => {
                create_system_user(wanted)?;
                getent(wanted)?.ok_or_else(|| {
                    RuntimeError::Other(format!("user {wanted} still missing after useradd"))
                })?
            }
        };
        if account.uid == 0 {
            return Err(RuntimeError::Other(format!(
                "OS user {wanted} has uid 0; servers must run unprivileged"
            )));
        }
        Ok(Self {
            os_user: Some(account),
            admin_account,
        })
    }

    /// Gives a directory tree to the server's user (after Stratus copied or created it).
    pub fn give(&self, path: &Path) -> Result<()> {
        let Some(a) = &self.os_user else {
            return Ok(());
        };
        chown_tree(path, a.uid, a.gid).map_err(|e| {
            RuntimeError::io(format!("cannot give {} to {}", path.display(), a.name), e)
        })
    }

    /// Makes a directory Stratus owns traversable by the server's user and by nobody else:
    /// mode 0710 with the server's group (0700 when both are one user).
    pub fn share_dir(&self, dir: &Path) -> Result<()> {
        let err = |e| RuntimeError::io(format!("cannot set the mode of {}", dir.display()), e);
        match &self.os_user {
            Some(a) => {
                rustix::fs::chown(dir, None, Some(Gid::from_raw(a.gid)))
                    .map_err(|e| err(e.into()))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710)).map_err(err)
            }
            None => {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
            }
        }
    }

    /// Refuses a data directory the server's user could not reach: every directory above it
    /// must let that user through, which home and temporary directories often do not.
    pub fn check_reachable(&self, root: &Path) -> Result<()> {
        let Some(a) = &self.os_user else {
            return Ok(());
        };
        let abs = std::path::absolute(root).map_err(|e| RuntimeError::io("data directory", e))?;
        let mut blocked: Option<PathBuf> = None;
        for dir in abs.ancestors().skip(1) {
            let Ok(meta) = std::fs::metadata(dir) else {
                continue;
            };
            let mode = meta.permissions().mode();
            let passes = if meta.uid() == a.uid {
                mode & 0o100 != 0
            } else if meta.gid() == a.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !passes {
                blocked = Some(dir.to_path_buf());
            }
        }
        match blocked {
            None => Ok(()),
            Some(dir) => Err(RuntimeError::Other(format!(
                "servers run as the unprivileged user {} and cannot reach the data directory {}: \
                 {} is closed to it (mode {:o}); use a data directory under a path others may \
                 traverse (for example /var/lib/stratus) or `chmod o+x {}`",
                a.name,
                abs.display(),
                dir.display(),
                std::fs::metadata(&dir)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .unwrap_or(0),
                dir.display()
            ))),
        }
    }

    pub fn uid(&self) -> Option<Uid> {
        self.os_user.as_ref().map(|a| Uid::from_raw(a.uid))
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    rustix::fs::chown(path, u, g)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// `getent passwd KEY`: the system's own lookup (NSS), as `mariadbd --user` does it.
fn getent(key: &str) -> Result<Option<OsAccount>> {
    let out = Command::new("getent")
        .args(["passwd", key])
        .output()
        .map_err(|e| RuntimeError::io("cannot run getent", e))?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(parse_passwd_line(&String::from_utf8_lossy(&out.stdout)))
}

fn lookup_uid(uid: u32) -> Result<OsAccount> {
    getent(&uid.to_string())?
        .ok_or_else(|| RuntimeError::Other(format!("uid {uid} has no user name")))
}

fn parse_passwd_line(line: &str) -> Option<OsAccount> {
    let mut f = line.trim().split(':');
    let name = f.next()?.to_owned();
    let _password = f.next()?;
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    (!name.is_empty()).then_some(OsAccount { name, uid, gid })
}

fn create_system_user(name: &str) -> Result<()> {
    tracing::info!("creating the system user {name} for mariadbd");
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "Stratus database servers",
            name,
        ])
        .output()
        .map_err(|e| RuntimeError::io("cannot run useradd", e))?;
    if !out.status.success() && getent(name)?.is_none() {
        return Err(RuntimeError::Other(format!(
            "cannot create the system user {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines() {
        let a = parse_passwd_line("stratus-db:x:998:997:Stratus:/nonexistent:/usr/sbin/nologin\n")
            .unwrap();
        assert_eq!((a.name.as_str(), a.uid, a.gid), ("stratus-db", 998, 997));
        assert!(parse_passwd_line("").is_none());
        assert!(parse_passwd_line("x:y:notanumber:1").is_none());
    }
}
