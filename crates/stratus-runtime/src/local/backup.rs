//! Backups of a local server with `mariadb-backup`
//! (<https://mariadb.com/kb/en/full-backup-and-restore-with-mariadb-backup/>): copied from the
//! running server without blocking its writes (`BACKUP STAGE`), then prepared (its redo log
//! applied) so that a restore is a copy and a start. Data encrypted at rest stays encrypted in
//! the backup; `mariadb-backup` reads the redo log, so it gets the database's plain key the way
//! a server start does, in the private in-memory directory, for the length of the run only.

use super::{DbPaths, Inner, Removed, config, keys, template};
use crate::admin::AdminConn;
use crate::{BackupTaken, LogReplay, Result, RuntimeError};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The files a run of `mariadb-backup` needs beside its arguments, removed when it ends.
struct RunFiles {
    defaults: PathBuf,
    _removed: Removed,
}

impl Inner {
    /// The defaults file of one `mariadb-backup` run for the database whose key is in `dir`,
    /// and its plain key at `key_file`: where the running server read it at its start, since
    /// `mariadb-backup` takes the key plugin's settings from the server (and writes them into
    /// the backup for its `--prepare`).
    fn backup_files(
        &self,
        run: &str,
        dir: &Path,
        datadir: &Path,
        key_file: Option<PathBuf>,
    ) -> Result<RunFiles> {
        super::private_dir(&self.key_dir, &self.user)?;
        let defaults = self.key_dir.join(format!("{run}.backup.cnf"));
        let mut text = format!(
            "[mariadbd]\ndatadir = {}\nplugin_dir = {}\n",
            config::quoted(datadir),
            config::quoted(&self.plugin_dir)
        );
        let mut key = None;
        if let Some(ring) = &self.keys {
            let data_key = ring.lock().data_key(dir)?;
            let file = key_file
                .filter(|f| f.parent() == Some(self.key_dir.as_path()))
                .ok_or_else(|| {
                    RuntimeError::Other(format!(
                        "the server of {run} does not read its key from {}",
                        self.key_dir.display()
                    ))
                })?;
            template::write_private(&file, &keys::plugin_key_file(&data_key))?;
            text.push_str(&format!(
                "plugin_load_add = file_key_management\nfile_key_management_filename = {}\n\
                 file_key_management_encryption_algorithm = AES_CTR\n",
                config::quoted(&file)
            ));
            key = Some(file);
        }
        let files = RunFiles {
            _removed: Removed(std::iter::once(defaults.clone()).chain(key).collect()),
            defaults,
        };
        template::write_private(&files.defaults, &text)?;
        Ok(files)
    }

    async fn run_backup_tool(&self, what: &str, args: Vec<String>) -> Result<Vec<String>> {
        let tool = self.mariadb.backup.as_ref().ok_or_else(|| RuntimeError::MissingBinary {
            binary: "mariadb-backup",
            hint: "install the distribution's mariadb-backup package (apt-get install mariadb-backup)".into(),
        })?;
        let out = tokio::process::Command::new(tool)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| RuntimeError::io(format!("cannot run {}", tool.display()), e))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<String> = log
            .lines()
            .rev()
            .take(8)
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !out.status.success() {
            return Err(RuntimeError::Other(format!(
                "mariadb-backup {what} failed ({}):\n  {}",
                out.status,
                tail.join("\n  ")
            )));
        }
        Ok(tail)
    }

    pub(super) async fn backup(
        &self,
        key: &str,
        dest: &Path,
        base: Option<&Path>,
    ) -> Result<BackupTaken> {
        let proc = self
            .running(key)
            .ok_or_else(|| RuntimeError::NotRunning(key.to_owned()))?;
        let super::Endpoint::Unix(socket) = &proc.endpoint else {
            return Err(RuntimeError::Other(format!(
                "database {key}: a local server listens on a unix socket"
            )));
        };
        let paths: DbPaths = self.paths(key);
        std::fs::create_dir_all(dest)
            .map_err(|e| RuntimeError::io(format!("cannot create {}", dest.display()), e))?;
        let target = dest.join("data");
        let key_file = if self.keys.is_some() {
            let mut conn =
                AdminConn::connect(key, &proc.endpoint, &self.admin, super::LOGIN_TIMEOUT).await?;
            let file: Option<String> = conn
                .query_value("SELECT @@GLOBAL.file_key_management_filename")
                .await
                .ok()
                .flatten();
            conn.close().await;
            file.map(PathBuf::from)
        } else {
            None
        };
        let files = self.backup_files(key, &paths.dir, &paths.data, key_file)?;
        let defaults = format!("--defaults-file={}", files.defaults.display());
        let target_arg = format!("--target-dir={}", target.display());
        let mut args = vec![
            defaults.clone(),
            "--backup".into(),
            // The checkpoint it would force first (`innodb_log_checkpoint_now`) waits for the
            // server to have flushed everything, which under steady writes it never has: the
            // backup would wait as long as the writes go on. Without it, more redo log is copied.
            "--skip-innodb-log-checkpoint-now".into(),
            target_arg.clone(),
            format!("--socket={}", socket.display()),
            format!("--user={}", self.admin.user),
        ];
        if let Some(base) = base {
            args.push(format!(
                "--incremental-basedir={}",
                base.join("data").display()
            ));
        }
        let backed_up = self.run_backup_tool("--backup", args).await?;
        // An incremental backup is prepared only on top of its base, at a restore.
        let log_tail = match base {
            Some(_) => backed_up,
            None => {
                self.run_backup_tool("--prepare", vec![defaults, "--prepare".into(), target_arg])
                    .await?
            }
        };
        drop(files);
        if self.keys.is_some() {
            let wrapped = paths.dir.join(keys::WRAPPED_KEY_FILE);
            std::fs::copy(&wrapped, dest.join(keys::WRAPPED_KEY_FILE))
                .map_err(|e| RuntimeError::io(format!("cannot copy {}", wrapped.display()), e))?;
        }
        Ok(BackupTaken::read(&target, log_tail))
    }

    /// Makes the storage of `key` from a prepared backup: its data directory and its data key
    /// (the source's: the pages are encrypted with it), and the archived logs of a replay as
    /// the new server's relay logs.
    pub(super) fn restore_storage(
        &self,
        key: &str,
        from: &Path,
        bytes: u64,
        replay: Option<&LogReplay>,
    ) -> Result<()> {
        let paths = self.empty_storage(key, bytes)?;
        let made = (|| {
            template::copy_into(&from.join("data"), &paths.data)?;
            let wrapped = from.join(keys::WRAPPED_KEY_FILE);
            if wrapped.exists() {
                std::fs::copy(&wrapped, paths.dir.join(keys::WRAPPED_KEY_FILE))?;
            }
            if let Some(r) = replay {
                relay_logs(r, &paths.binlog)?;
            }
            Ok::<_, std::io::Error>(())
        })()
        .map_err(|e| RuntimeError::io(format!("cannot restore into {}", paths.dir.display()), e));
        self.finish_storage(key, &paths, made)
    }

    /// Makes the directory of `key` and its empty data directory (a volume of `bytes` where
    /// there are volumes), for a restore or a backup to fill; `finish_storage` ends it.
    pub(super) fn empty_storage(&self, key: &str, bytes: u64) -> Result<DbPaths> {
        let paths = self.paths(key);
        if std::fs::symlink_metadata(&paths.dir).is_ok() {
            return Err(RuntimeError::StorageExists(key.to_owned()));
        }
        let made = (|| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir(&paths.dir)?;
            std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o700))?;
            self.make_data_dir(key, bytes, &paths)
                .map_err(std::io::Error::other)
        })()
        .map_err(|e| RuntimeError::io(format!("cannot make {}", paths.dir.display()), e));
        if let Err(e) = made {
            self.remove_storage(key, &paths);
            return Err(e);
        }
        Ok(paths)
    }

    /// Gives the filled storage of `key` to the servers' user, or, if filling it failed
    /// (`filled`), removes it whole.
    pub(super) fn finish_storage<T>(
        &self,
        key: &str,
        paths: &DbPaths,
        filled: Result<T>,
    ) -> Result<T> {
        let given = filled.and_then(|t| self.user.give(&paths.dir).map(|()| t));
        if given.is_err() {
            self.remove_storage(key, paths);
        }
        given
    }

    fn remove_storage(&self, key: &str, paths: &DbPaths) {
        if let Ok(v) = &self.volumes {
            let _ = v.remove(key, &paths.data);
        }
        let _ = std::fs::remove_dir_all(&paths.dir);
    }

    /// Makes the storage of `key` a block-sharing copy of the running `source`'s: commits are
    /// held (`BACKUP STAGE BLOCK_COMMIT`, <https://mariadb.com/kb/en/backup-stage/>) and the
    /// source's file system frozen while its volume is copied by reflink, so the copy holds
    /// every committed transaction and no half of one; starting it is InnoDB's crash recovery.
    /// `Ok(false)`: no volumes here.
    pub(super) async fn branch_storage(&self, source: &str, key: &str) -> Result<bool> {
        let Ok(v) = &self.volumes else {
            return Ok(false);
        };
        let proc = self
            .running(source)
            .ok_or_else(|| RuntimeError::NotRunning(source.to_owned()))?;
        let (from, to) = (self.paths(source), self.paths(key));
        if std::fs::symlink_metadata(&to.dir).is_ok() {
            return Err(RuntimeError::StorageExists(key.to_owned()));
        }
        let mut conn =
            AdminConn::connect(source, &proc.endpoint, &self.admin, super::LOGIN_TIMEOUT).await?;
        conn.exec("BACKUP STAGE START").await?;
        // With commits held, InnoDB's log is made durable: a transaction the binary log has
        // committed may have its commit only in InnoDB's log buffer (the binary log is what
        // recovery trusts), and the copy has no binary log to recover it from.
        let held = match conn.exec("BACKUP STAGE BLOCK_COMMIT").await {
            Ok(()) => conn.exec("FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS").await,
            Err(e) => Err(e),
        };
        let copied = match held {
            Ok(()) => v.snapshot(&self.volume_key(source), &from.data, key),
            Err(e) => Err(e),
        };
        let _ = conn.exec("BACKUP STAGE END").await;
        conn.close().await;
        copied?;
        let made = (|| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir(&to.dir)
                .map_err(|e| RuntimeError::io("cannot create the branch", e))?;
            std::fs::set_permissions(&to.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| RuntimeError::io("cannot create the branch", e))?;
            std::fs::create_dir(&to.data)
                .map_err(|e| RuntimeError::io("cannot create the branch", e))?;
            v.mount(key, &to.data)?;
            let wrapped = from.dir.join(keys::WRAPPED_KEY_FILE);
            if wrapped.exists() {
                std::fs::copy(&wrapped, to.dir.join(keys::WRAPPED_KEY_FILE))
                    .map_err(|e| RuntimeError::io("cannot copy the data key", e))?;
            }
            self.user.give(&to.dir)
        })();
        if let Err(e) = made {
            let _ = v.remove(key, &to.data);
            let _ = std::fs::remove_dir_all(&to.dir);
            return Err(e);
        }
        Ok(true)
    }
}

/// Puts the archived binary log files a replay reads in `binlog_dir` as relay logs, with their
/// index: the server's own replication applier reads them as it would a primary's, decrypting
/// them with the data key it shares with the source
/// (<https://mariadb.com/kb/en/relay-log/>).
fn relay_logs(r: &LogReplay, binlog_dir: &Path) -> std::io::Result<()> {
    use crate::commit_times::file_number;
    let (Some(first), Some(last)) = (r.from.file_number(), r.to.file_number()) else {
        return Err(std::io::Error::other(
            "a replay's positions name no binary log file",
        ));
    };
    std::fs::create_dir_all(binlog_dir)?;
    // Under the same path as the server's `relay_log` (`config`), which is the real directory.
    let binlog_dir = &super::canonical(binlog_dir);
    let mut index = String::new();
    for n in first..=last {
        let name = format!("mariadb-bin.{n:06}");
        let from = r.archive.join(&name);
        if file_number(&name) != Some(n) || !from.is_file() {
            return Err(std::io::Error::other(format!(
                "the archive lacks {name}: the binary log between the backup and the time is incomplete"
            )));
        }
        let to = binlog_dir.join(relay_name(n));
        if n == last {
            // Only up to the last transaction to keep: nothing after it can be applied,
            // whatever the applier does, and its end is where the replay is over (`replay`).
            let mut src = std::io::Read::take(std::fs::File::open(&from)?, r.to.pos);
            std::io::copy(&mut src, &mut std::fs::File::create(&to)?)?;
        } else {
            std::fs::copy(&from, &to)?;
        }
        index.push_str(&format!("{}\n", to.display()));
    }
    std::fs::write(
        binlog_dir.join(format!("{}.index", config::RELAY_LOG)),
        index,
    )
}

/// The relay log file that holds the source's binary log file number `n`.
fn relay_name(n: u64) -> String {
    format!("{}.{n:06}", config::RELAY_LOG)
}

impl Inner {
    /// Applies the relay logs `relay_logs` placed to the started server `key`, from the
    /// backup's position to exactly `r.to` (`START SLAVE SQL_THREAD UNTIL`,
    /// <https://mariadb.com/kb/en/start-replica/>), then forgets the replication settings.
    /// The server applies under a server id no database has, since it skips events that carry
    /// its own.
    pub(super) async fn replay(
        &self,
        key: &str,
        endpoint: &super::Endpoint,
        r: &LogReplay,
    ) -> Result<()> {
        let (Some(first), Some(last)) = (r.from.file_number(), r.to.file_number()) else {
            return Err(RuntimeError::Other(
                "a replay's positions name no binary log file".into(),
            ));
        };
        let mut conn = AdminConn::connect(key, endpoint, &self.admin, super::LOGIN_TIMEOUT).await?;
        let own: Option<u32> = conn.query_value("SELECT @@GLOBAL.server_id").await?;
        conn.exec(&format!("SET GLOBAL server_id = {REPLAY_SERVER_ID}"))
            .await?;
        conn.exec(&format!(
            "CHANGE MASTER TO MASTER_HOST = 'stratus-archive', MASTER_USE_GTID = NO, \
             RELAY_LOG_FILE = '{}', RELAY_LOG_POS = {}",
            relay_name(first),
            r.from.pos
        ))
        .await?;
        conn.exec(&format!(
            "START SLAVE SQL_THREAD UNTIL RELAY_LOG_FILE = '{}', RELAY_LOG_POS = {}",
            relay_name(last),
            r.to.pos
        ))
        .await?;
        let mut seen = (String::new(), 0u64);
        let mut still = std::time::Instant::now();
        let outcome = loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let rows: Vec<mysql_async::Row> = conn.query_rows("SHOW SLAVE STATUS").await?;
            let Some(row) = rows.first() else {
                break Err("the replay's replication settings vanished".to_owned());
            };
            let text = |c: &str| {
                row.get_opt::<String, _>(c)
                    .and_then(|v| v.ok())
                    .unwrap_or_default()
            };
            let (file, pos) = (
                text("Relay_Log_File"),
                text("Relay_Log_Pos").parse().unwrap_or(0),
            );
            if text("Last_SQL_Errno") != "0" {
                break Err(format!(
                    "applying the binary log failed: {}",
                    text("Last_SQL_Error")
                ));
            }
            if text("Slave_SQL_Running_State").contains("read all relay log") {
                // The last relay log ends at the target (`relay_logs` cut it there), so having
                // read it all means having applied all of it. The server may not have stopped
                // by itself: it checks UNTIL before an event, and there is no next one.
                let past = crate::commit_times::file_number(&file).is_some_and(|n| n > last);
                if past || (file == relay_name(last) && pos >= r.to.pos) {
                    break Ok(());
                }
                break Err(format!(
                    "the archived binary log ends at {file}:{pos}, short of {}:{}",
                    relay_name(last),
                    r.to.pos
                ));
            }
            if text("Slave_SQL_Running") == "No" {
                break if (file.as_str(), pos) == (relay_name(last).as_str(), r.to.pos) {
                    Ok(())
                } else {
                    Err(format!(
                        "the replay stopped at {file}:{pos}, short of {}:{}",
                        relay_name(last),
                        r.to.pos
                    ))
                };
            }
            if (file.clone(), pos) != seen {
                seen = (file, pos);
                still = std::time::Instant::now();
            } else if still.elapsed() > REPLAY_STALL {
                break Err(format!(
                    "the replay made no progress for {REPLAY_STALL:?} at {}:{}",
                    seen.0, seen.1
                ));
            }
        };
        let _ = conn.exec("STOP SLAVE").await;
        conn.exec("RESET SLAVE ALL").await?;
        if let Some(id) = own {
            conn.exec(&format!("SET GLOBAL server_id = {id}")).await?;
        }
        conn.close().await;
        outcome.map_err(|why| RuntimeError::Other(format!("database {key}: {why}")))
    }
}

impl Inner {
    /// Applies incremental backups, in order, to the data directory `restore_storage` made of
    /// their full backup (<https://mariadb.com/kb/en/incremental-backup-and-restore-with-mariadb-backup/>),
    /// with the database's key (the source's) in the private key directory for the run only.
    pub(super) async fn apply_incrementals(
        &self,
        key: &str,
        incrementals: &[PathBuf],
    ) -> Result<()> {
        if incrementals.is_empty() {
            return Ok(());
        }
        let paths = self.paths(key);
        let key_file = self
            .keys
            .is_some()
            .then(|| self.key_dir.join(format!("{key}.key")));
        let files = self.backup_files(key, &paths.dir, &paths.data, key_file)?;
        let defaults = format!("--defaults-file={}", files.defaults.display());
        // The tool moves the incremental's files into the target: it gets a copy, on the
        // target's own file system (a rename cannot cross into a volume), never the backup.
        let scratch = paths.data.join(".stratus-incremental");
        for inc in incrementals {
            let (from, to) = (inc.join("data"), scratch.clone());
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(&to);
                std::fs::create_dir(&to).and_then(|()| template::copy_into(&from, &to))
            })
            .await
            .map_err(|e| RuntimeError::Other(format!("copy task: {e}")))?
            .map_err(|e| RuntimeError::io(format!("cannot copy {}", inc.display()), e))?;
            let applied = self
                .run_backup_tool(
                    "--prepare --incremental-dir",
                    vec![
                        defaults.clone(),
                        "--prepare".into(),
                        format!("--target-dir={}", paths.data.display()),
                        format!("--incremental-dir={}", scratch.display()),
                    ],
                )
                .await;
            let _ = std::fs::remove_dir_all(&scratch);
            applied?;
        }
        drop(files);
        // The tool wrote as Stratus: the server's user must own what it reads.
        self.user.give(&paths.data)
    }
}

/// The server id a restored server applies its source's log under: even, so no database's
/// (always odd) and not the commit clock's, and one a tenant's replica may not take.
const REPLAY_SERVER_ID: u32 = 0x7fff_fffe;
const _: () = assert!(*stratus_core::replication::STRATUS_REPLICA_IDS.start() <= REPLAY_SERVER_ID);
/// A replay that stops moving for this long has failed.
const REPLAY_STALL: std::time::Duration = std::time::Duration::from_secs(120);
