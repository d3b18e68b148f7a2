//! Backups and restore: full physical backups taken from the running server by the runtime
//! ([`Runtime::backup`]: `mariadb-backup` locally), checksummed and recorded beside their files,
//! and new databases made from them.
//!
//! The backup target is the record: `<backup_dir>/<database>/<id>/` holds `backup.json` (what,
//! when, the source's settings and accounts, the verification), `SHA256SUMS`, the prepared
//! `data/` and the wrapped data key. It outlives the database and the catalog, so a deleted
//! database can be restored while its backups are kept, and the layout is one of keys and
//! whole files, as an object store would hold it. A backup is written under a hidden name and
//! renamed into place once complete: a crash midway leaves no backup that looks whole.
//!
//! Every backup is verified as it is taken (prepared by the runtime, its files checksummed and
//! checked back) and again before a restore uses it: a damaged one is refused, never restored.

use crate::{ControlError, ControlPlane, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stratus_core::time::{now_ms, rfc3339, rfc3339_us};
use stratus_core::{EventKind, ServiceName};
use stratus_runtime::admin::ServerAdmin;
use stratus_runtime::commit_times::{self, BinlogPos, Cut};
use stratus_runtime::{LogReplay, RestoreFrom, Runtime};
use stratus_store::Store;

const RECORD: &str = "backup.json";
const SUMS: &str = "SHA256SUMS";

/// A backup as recorded beside its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: String,
    pub database: String,
    /// `full`, or `incremental` (the pages changed since `base`).
    pub kind: String,
    /// The backup an incremental one was taken on top of.
    #[serde(default)]
    pub base: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// Bytes of its files.
    pub bytes: u64,
    /// The source's GTID position at the backup's consistent point.
    pub gtid: Option<String>,
    /// The source's binary log file and position there: where a point-in-time restore
    /// starts replaying the archived log.
    #[serde(default)]
    pub binlog_file: Option<String>,
    #[serde(default)]
    pub binlog_pos: Option<u64>,
    /// The directory of the binary log archive of the source's incarnation
    /// (`schedule::archive_name`); unset for backups from before incarnations.
    #[serde(default)]
    pub archive: Option<String>,
    pub verified: bool,
    /// What the verification found.
    pub verification: String,
    /// On Kubernetes, the `BackupSchedule` that took it: each schedule's retention applies to
    /// its own backups only. Unset on one machine (one schedule per database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The source's settings and accounts (name, `SHA1(SHA1(password))`, owner: those of its
    /// server too), so that a restore needs nothing from the catalog.
    #[serde(flatten)]
    pub source: crate::copy::Source,
}

/// What the API shows of a backup (no password hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupView {
    pub id: String,
    pub database: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub bytes: u64,
    pub gtid: Option<String>,
    pub verified: bool,
    pub verification: String,
}

impl From<&BackupRecord> for BackupView {
    fn from(r: &BackupRecord) -> Self {
        Self {
            id: r.id.clone(),
            database: r.database.clone(),
            kind: r.kind.clone(),
            base: r.base.clone(),
            started_at: rfc3339(r.started_at_ms),
            finished_at: rfc3339(r.finished_at_ms),
            bytes: r.bytes,
            gtid: r.gtid.clone(),
            verified: r.verified,
            verification: r.verification.clone(),
        }
    }
}

/// A request to take a backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Only what changed since the newest verified backup of this database (which must exist).
    #[serde(default)]
    pub incremental: bool,
}

/// A request to make a database from a backup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The new database's name.
    pub to: String,
    /// The backup to use; the newest verified one of the source when unset.
    #[serde(default)]
    pub backup: Option<String>,
    /// A past time (RFC 3339): the new database holds every transaction the source committed
    /// at or before it and none after, from the newest backup before it and the archived
    /// binary log. Unset: the backup as it is.
    #[serde(default)]
    pub time: Option<String>,
}

impl BackupRecord {
    /// The directory name of its source's binary log archive.
    pub fn archive(&self) -> &str {
        self.archive.as_deref().unwrap_or(crate::schedule::ARCHIVE)
    }

    /// Its consistent point in the source's binary log, when known.
    pub fn binlog(&self) -> Option<BinlogPos> {
        Some(BinlogPos {
            file: self.binlog_file.clone()?,
            pos: self.binlog_pos?,
        })
    }
}

/// How long a restore to a time after the newest commit time waits for the source's newest
/// transactions to have theirs.
const COMMIT_TIMES_WAIT: Duration = Duration::from_secs(3);

/// What a point-in-time restore replays, found from the archive's commit times.
struct PointInTime {
    record: BackupRecord,
    replay: Option<LogReplay>,
    /// The last transaction it holds, if any was replayed.
    last: Option<commit_times::Commit>,
}

/// A backup id: `<database>-<UTC time to the millisecond>`, e.g. `shop-20261130T194512123Z`.
pub fn backup_id(db: &ServiceName, at_ms: i64) -> String {
    let t = rfc3339(at_ms); // 2026-11-30T19:45:12.123Z
    let digits: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    let (date, time) = digits.split_at(8.min(digits.len()));
    format!("{db}-{date}T{time}Z")
}

/// The database of a backup id, if the id is well formed; anything else (a path, a pattern)
/// is not an id.
pub fn parse_backup_id(id: &str) -> Option<ServiceName> {
    let (db, stamp) = id.rsplit_once('-')?;
    let (date, rest) = stamp.split_once('T')?;
    let time = rest.strip_suffix('Z')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    (digits(date, 8) && digits(time, 9))
        .then(|| ServiceName::parse(db).ok())
        .flatten()
}

/// SHA-256 of every file under `dir` but the record and the list itself, as `sha256sum` writes
/// it (`<hex>  <relative path>`), sorted by path.
pub fn checksums(dir: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut out = String::new();
    for rel in files {
        if rel == RECORD || rel == SUMS {
            continue;
        }
        let mut f = std::fs::File::open(dir.join(&rel))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        let hex: String = ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push_str(&format!("{hex}  {rel}\n"));
    }
    Ok(out)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            collect(root, &entry.path(), out)?;
        } else if ty.is_file() {
            let rel = entry.path();
            let rel = rel.strip_prefix(root).unwrap_or(&rel);
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Checks a backup's files against its list: `Ok` or the first difference.
pub fn verify_files(dir: &Path) -> std::result::Result<(), String> {
    let listed = std::fs::read_to_string(dir.join(SUMS))
        .map_err(|e| format!("its checksum list cannot be read: {e}"))?;
    let now = checksums(dir).map_err(|e| format!("its files cannot be read: {e}"))?;
    if listed == now {
        return Ok(());
    }
    let parse = |t: &str| -> Vec<(String, String)> {
        t.lines()
            .filter_map(|l| l.split_once("  "))
            .map(|(h, p)| (p.to_owned(), h.to_owned()))
            .collect()
    };
    let (was, is) = (parse(&listed), parse(&now));
    for (path, hash) in &was {
        match is.iter().find(|(p, _)| p == path) {
            None => return Err(format!("{path} is missing")),
            Some((_, h)) if h != hash => return Err(format!("{path} differs from its checksum")),
            _ => {}
        }
    }
    match is.iter().find(|(p, _)| !was.iter().any(|(q, _)| q == p)) {
        Some((path, _)) => Err(format!("{path} was not part of it")),
        None => Err("its checksum list is malformed".to_owned()),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut files = Vec::new();
    if collect(dir, dir, &mut files).is_err() {
        return 0;
    }
    files
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// The last steps of every backup, on one machine and in a Kubernetes Job: checksums the files
/// `mariadb-backup` left in `partial`, reads them back against the list, writes `record` beside
/// them (its size, end and verification filled in) and renames the directory to
/// `<parent>/<id>`, so a backup cut short never looks whole. A backup that reads back wrong is
/// still recorded, as not verified. Blocking: it reads every file.
pub fn seal(
    partial: &Path,
    parent: &Path,
    mut record: BackupRecord,
) -> std::io::Result<BackupRecord> {
    let sums = checksums(partial)?;
    stratus_core::fs::write_private(&partial.join(SUMS), sums.as_bytes())?;
    (record.verified, record.verification) = match verify_files(partial) {
        Ok(()) if record.base.is_some() => (
            true,
            "taken by mariadb-backup on top of its base (prepared with it at a restore); every file checksummed and read back".to_owned(),
        ),
        Ok(()) => (
            true,
            "prepared by mariadb-backup; every file checksummed and read back".to_owned(),
        ),
        Err(why) => (false, format!("read back wrong: {why}")),
    };
    record.bytes = dir_bytes(partial);
    record.finished_at_ms = now_ms();
    write_record(partial, &record)?;
    // On disk before it gets its name: a crash of the machine (or of a network file system's
    // server) after the rename must not leave a backup that looks whole with files cut short.
    sync_tree(partial)?;
    std::fs::rename(partial, parent.join(&record.id))?;
    std::fs::File::open(parent)?.sync_all()?;
    Ok(record)
}

/// `fsync` of every file and directory under `dir`, and of `dir` itself.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            sync_tree(&entry.path())?;
        } else if ty.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// The backups of database `db` recorded under `parent` (its directory of backups), oldest
/// first. Anything else there (a backup under way, an archive, a stray file) is not one.
pub fn records_in(parent: &Path, db: &str) -> Vec<BackupRecord> {
    let mut out: Vec<BackupRecord> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(parse_backup_id)
                .is_some_and(|n| n.as_str() == db)
        })
        .filter_map(|e| read_record(&e.path()))
        .collect();
    out.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
    out
}

fn read_record(dir: &Path) -> Option<BackupRecord> {
    let text = std::fs::read_to_string(dir.join(RECORD)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_record(dir: &Path, r: &BackupRecord) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    stratus_core::fs::write_private(&dir.join(RECORD), text.as_bytes())
}

fn internal(context: &str) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |e| ControlError::Internal(format!("{context}: {e}"))
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    pub(crate) fn backups_of(&self, db: &str) -> PathBuf {
        self.cfg.backup_dir.join(db)
    }

    /// The backup directory, made if missing: Stratus's alone, since it holds every tenant's
    /// data.
    pub(crate) fn backup_root(&self) -> Result<()> {
        let dir = &self.cfg.backup_dir;
        std::fs::create_dir_all(dir).map_err(internal("cannot create the backup directory"))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(internal("cannot restrict the backup directory"))
    }

    /// Takes a full backup of a database now (waking it if it sleeps), verifies it and records
    /// it. The database's lock is held throughout, so it is not suspended or parked under the
    /// backup (nor scaled meanwhile).
    pub async fn create_backup(&self, db: &str) -> Result<BackupView> {
        self.take_backup(db, BackupRequest::default()).await
    }

    /// Takes a backup now: full, or incremental on top of the newest verified backup of the
    /// same database (the same incarnation of its name: another's pages are not its base).
    pub async fn take_backup(&self, db: &str, req: BackupRequest) -> Result<BackupView> {
        let name = ServiceName::parse(db)?;
        let _guard = self.lock(&name).await;
        let base = if req.incremental {
            let svc = self.load(&name).await?;
            let archive = crate::schedule::archive_name(svc.log_epoch());
            let base = self
                .records(Some(name.as_str()))?
                .into_iter()
                .rev()
                .find(|r| r.verified && r.archive() == archive)
                .ok_or_else(|| {
                    ControlError::WrongState(format!(
                        "{name} has no verified backup to take an incremental one on top of; take a full one first"
                    ))
                })?;
            Some(base)
        } else {
            None
        };
        let svc = self
            .ensure_running(&name, EventKind::Resumed, "for a backup")
            .await?;
        let users = self.store.users(&name).await?;
        let started = now_ms();
        let begin = Instant::now();
        let id = backup_id(&name, started);
        self.backup_root()?;
        let parent = self.backups_of(name.as_str());
        std::fs::create_dir_all(&parent).map_err(internal("cannot create the backup directory"))?;
        let partial = parent.join(format!(".{id}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        let base_dir = base.as_ref().map(|b| parent.join(&b.id));
        let taken = self
            .runtime
            .backup(&name, &partial, base_dir.as_deref())
            .await;
        let taken = match taken {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                self.event(
                    &name,
                    EventKind::BackupFailed,
                    &format!("backup {id} failed: {e}"),
                    json!({"id": id}),
                )
                .await;
                return Err(e.into());
            }
        };
        let record = BackupRecord {
            id: id.clone(),
            database: name.to_string(),
            kind: if base.is_some() {
                "incremental"
            } else {
                "full"
            }
            .to_owned(),
            base: base.as_ref().map(|b| b.id.clone()),
            started_at_ms: started,
            finished_at_ms: started,
            bytes: 0,
            gtid: taken.gtid,
            binlog_file: taken.binlog.as_ref().map(|b| b.file.clone()),
            binlog_pos: taken.binlog.as_ref().map(|b| b.pos),
            archive: Some(crate::schedule::archive_name(svc.log_epoch())),
            verified: false,
            verification: String::new(),
            schedule: None,
            source: crate::copy::Source::of(&svc, &users),
        };
        let (files, dest) = (partial.clone(), parent.clone());
        let record = tokio::task::spawn_blocking(move || seal(&files, &dest, record))
            .await
            .map_err(|e| ControlError::Internal(format!("checksum task: {e}")))?
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&partial);
                ControlError::Internal(format!("cannot checksum and record the backup: {e}"))
            })?;
        let ms = begin.elapsed().as_millis() as u64;
        let (kind, message) = if record.verified {
            (
                EventKind::BackupTaken,
                format!(
                    "backup {id} taken and verified in {ms} ms ({} bytes)",
                    record.bytes
                ),
            )
        } else {
            (
                EventKind::BackupFailed,
                format!("backup {id} failed verification: {}", record.verification),
            )
        };
        self.event(
            &name,
            kind,
            &message,
            json!({"id": id, "bytes": record.bytes, "ms": ms, "gtid": record.gtid, "verified": record.verified}),
        )
        .await;
        Ok(BackupView::from(&record))
    }

    /// The backups of one database (deleted or not), or of every database, oldest first.
    pub fn backups(&self, db: Option<&str>) -> Result<Vec<BackupView>> {
        Ok(self.records(db)?.iter().map(BackupView::from).collect())
    }

    pub(crate) fn records(&self, db: Option<&str>) -> Result<Vec<BackupRecord>> {
        let dbs: Vec<String> = match db {
            Some(d) => vec![ServiceName::parse(d)?.to_string()],
            None => match std::fs::read_dir(&self.cfg.backup_dir) {
                Ok(rd) => rd
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| ServiceName::parse(n).is_ok())
                    .collect(),
                Err(_) => Vec::new(),
            },
        };
        let mut out: Vec<BackupRecord> = dbs
            .iter()
            .flat_map(|d| records_in(&self.backups_of(d), d))
            .collect();
        out.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
        Ok(out)
    }

    fn backup_dir(&self, id: &str) -> Result<(ServiceName, PathBuf)> {
        let db = parse_backup_id(id)
            .ok_or_else(|| ControlError::Invalid(format!("{id:?} is not a backup id")))?;
        let dir = self.backups_of(db.as_str()).join(id);
        if !dir.join(RECORD).is_file() {
            return Err(ControlError::NotFound(format!("backup {id}")));
        }
        Ok((db, dir))
    }

    /// A database's backup schedule.
    pub async fn backup_schedule(&self, db: &str) -> Result<stratus_core::BackupSchedule> {
        let name = ServiceName::parse(db)?;
        self.load(&name).await?;
        Ok(self.store.backup_schedule(&name).await?)
    }

    /// Replaces a database's backup schedule; its retention applies at once.
    pub async fn set_backup_schedule(
        &self,
        db: &str,
        schedule: stratus_core::BackupSchedule,
    ) -> Result<stratus_core::BackupSchedule> {
        let name = ServiceName::parse(db)?;
        schedule.validate().map_err(ControlError::Invalid)?;
        self.load(&name).await?;
        self.store.set_backup_schedule(&name, &schedule).await?;
        self.apply_retention(&name, &schedule).await;
        Ok(schedule)
    }

    /// The database a backup id belongs to (for the API's access check), if the id is valid.
    pub fn backup_database(id: &str) -> Option<ServiceName> {
        parse_backup_id(id)
    }

    /// Checks a backup's files against their checksums again and records the result: a
    /// damaged backup is marked failed, and never used for a restore.
    pub async fn verify_backup(&self, id: &str) -> Result<BackupView> {
        let (db, dir) = self.backup_dir(id)?;
        let mut record = read_record(&dir)
            .ok_or_else(|| ControlError::Internal(format!("backup {id} is unreadable")))?;
        let check = dir.clone();
        let found = tokio::task::spawn_blocking(move || verify_files(&check))
            .await
            .map_err(|e| ControlError::Internal(format!("verification task: {e}")))?;
        let was = record.verified;
        match found {
            Ok(()) if was => return Ok(BackupView::from(&record)),
            Ok(()) => {}
            Err(why) => {
                record.verified = false;
                record.verification = format!("checked again at {}: {why}", rfc3339(now_ms()));
                write_record(&dir, &record).map_err(internal("cannot record the verification"))?;
                self.event(
                    &db,
                    EventKind::BackupFailed,
                    &format!("backup {id} failed verification: {why}"),
                    json!({"id": id}),
                )
                .await;
            }
        }
        Ok(BackupView::from(&record))
    }

    pub async fn delete_backup(&self, id: &str) -> Result<()> {
        let (db, dir) = self.backup_dir(id)?;
        if let Some(on_top) = self
            .records(Some(db.as_str()))?
            .iter()
            .find(|r| r.base.as_deref() == Some(id))
        {
            return Err(ControlError::WrongState(format!(
                "backup {id} is the base of incremental backup {}; delete that one first",
                on_top.id
            )));
        }
        std::fs::remove_dir_all(&dir).map_err(internal("cannot delete the backup"))?;
        self.event(
            &db,
            EventKind::BackupDeleted,
            &format!("backup {id} deleted"),
            json!({"id": id}),
        )
        .await;
        Ok(())
    }

    /// Makes a new database from a backup of `source` (which may have been deleted since):
    /// its data, settings and accounts as they were at the backup. The backup is verified
    /// again first; a damaged one is refused.
    pub async fn restore(&self, source: &str, req: RestoreRequest) -> Result<crate::DatabaseView> {
        let source = ServiceName::parse(source)?;
        let to = ServiceName::parse_new(&req.to)?;
        let at = match &req.time {
            Some(t) => Some(
                self.point_in_time(&source, t, req.backup.as_deref())
                    .await?,
            ),
            None => None,
        };
        let record = match (&at, &req.backup) {
            (Some(p), _) => p.record.clone(),
            (None, backup) => match backup {
                Some(id) => {
                    // Whose it is before whether it exists: nothing is said about another's backups.
                    match parse_backup_id(id) {
                        Some(db) if db != source => {
                            return Err(ControlError::Invalid(format!(
                                "backup {id} is a backup of {db}, not of {source}"
                            )));
                        }
                        _ => {}
                    }
                    let (_, dir) = self.backup_dir(id)?;
                    read_record(&dir).ok_or_else(|| {
                        ControlError::Internal(format!("backup {id} is unreadable"))
                    })?
                }
                None => self
                    .records(Some(source.as_str()))?
                    .into_iter()
                    .rev()
                    .find(|r| r.verified)
                    .ok_or_else(|| {
                        ControlError::NotFound(format!("a verified backup of {source}"))
                    })?,
            },
        };
        // The backup and, for an incremental one, every backup under it down to a full one:
        // each verified again.
        let chain = self.chain(&source, &record)?;
        for r in &chain {
            if !r.verified {
                return Err(ControlError::WrongState(format!(
                    "backup {} failed verification when it was taken ({}); it is not used for a restore",
                    r.id, r.verification
                )));
            }
            let check = self.backups_of(source.as_str()).join(&r.id);
            tokio::task::spawn_blocking(move || verify_files(&check))
                .await
                .map_err(|e| ControlError::Internal(format!("verification task: {e}")))?
                .map_err(|why| {
                    ControlError::WrongState(format!(
                        "backup {} failed verification: {why}; it is not used for a restore",
                        r.id
                    ))
                })?;
        }
        let dirs: Vec<PathBuf> = chain
            .iter()
            .map(|r| self.backups_of(source.as_str()).join(&r.id))
            .collect();
        let bytes: u64 = chain.iter().map(|r| r.bytes).sum();

        let _guard = self.lock(&to).await;
        let begin = Instant::now();
        let message = format!(
            "database {to} requested as a restore of {source} from backup {}",
            record.id
        );
        let placed = self
            .place_new(self.need_of_new(record.source.min_scu, bytes))
            .await?;
        let (svc, instance) = self
            .make_copy(&to, &record.source, placed.node, &message, |mut spec| {
                // Room for the data and as much again, within the maximum.
                spec.storage_bytes = spec
                    .storage_bytes
                    .max(bytes.saturating_mul(2))
                    .min(crate::storage::max_bytes(record.source.storage_gb));
                let runtime = &self.runtime;
                let from = RestoreFrom {
                    full: dirs[0].clone(),
                    incrementals: dirs[1..].to_vec(),
                    replay: at.as_ref().and_then(|p| p.replay.clone()),
                };
                async move { runtime.restore(&spec, &from).await }
            })
            .await?;
        let ms = begin.elapsed().as_millis() as u64;
        let (upto, gtid) = match at.as_ref().and_then(|p| p.last.as_ref()) {
            Some(c) if matches!(c.kind, commit_times::Kind::Gap { .. }) => (
                format!(
                    " and its binary log up to transactions without times of their own (all committed by {})",
                    rfc3339_us(c.at_us)
                ),
                None,
            ),
            Some(c) => (
                format!(
                    " and its binary log up to {} (committed {})",
                    c.gtid,
                    rfc3339_us(c.at_us)
                ),
                Some(c.gtid.clone()),
            ),
            None => (String::new(), record.gtid.clone()),
        };
        let wanted = req
            .time
            .as_deref()
            .map(|t| format!(" as of {t}"))
            .unwrap_or_default();
        self.event(
            &to,
            EventKind::Restored,
            &format!(
                "restored{wanted} from backup {} of {source} (taken {}){upto} in {ms} ms",
                record.id,
                rfc3339(record.started_at_ms)
            ),
            json!({"source": source, "backup": record.id, "time": req.time, "gtid": gtid, "ms": ms, "pid": instance.pid}),
        )
        .await;
        Ok(self.view(&svc).await)
    }
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// For a restore to a time after the newest commit time: waits a moment until the lines of
    /// `archive` reach every transaction the running `source` has written (lines are written as
    /// transactions commit and archived every second), and refuses if they do not. Without
    /// this, transactions the clock has no lines for (it is behind, or turned off) would be
    /// left out of the restore without a word. A database that is not running, or is another
    /// incarnation of the name than the archive's, has nothing newer to wait for.
    async fn await_commit_times(
        &self,
        source: &ServiceName,
        record: &BackupRecord,
        archive: &Path,
    ) -> Result<()> {
        let Ok(Some(svc)) = self.store.service(source).await else {
            return Ok(());
        };
        let running = svc.state == stratus_core::DbState::Active
            && self.runtime.endpoint(source).is_some()
            && !self.is_suspended(source);
        if !running || record.archive() != crate::schedule::archive_name(svc.log_epoch()) {
            return Ok(());
        }
        let written = {
            let _guard = self.lock(source).await;
            let mut conn = self.admin(source).await?;
            let written = conn.gtid_binlog_pos().await;
            conn.close().await;
            written?
        };
        let deadline = Instant::now() + COMMIT_TIMES_WAIT;
        loop {
            let covered = commit_times::covers(archive, &written)
                .map_err(internal("cannot read the archive's commit times"))?;
            if covered {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ControlError::WrongState(format!(
                    "{source}'s newest transactions (up to {written}) have no commit times: Stratus's clock is behind its binary log or not following it ([mariadb] commit_clock); try again in a moment, restore to an earlier time, or a whole backup with --backup"
                )));
            }
            // Polled: the lines come from the clock and the archive's copier, which say nothing.
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.archive_logs(&svc).await;
        }
    }

    /// `record` and the backups it was taken on top of, full one first.
    fn chain(&self, source: &ServiceName, record: &BackupRecord) -> Result<Vec<BackupRecord>> {
        let all = self.records(Some(source.as_str()))?;
        let mut chain = vec![record.clone()];
        while let Some(base) = chain.last().and_then(|r| r.base.clone()) {
            let found = all.iter().find(|r| r.id == base).ok_or_else(|| {
                ControlError::WrongState(format!(
                    "backup {} is incremental on top of {base}, which is gone",
                    record.id
                ))
            })?;
            if chain.len() > all.len() {
                return Err(ControlError::Internal(format!(
                    "backup {} has a cycle of bases",
                    record.id
                )));
            }
            chain.push(found.clone());
        }
        chain.reverse();
        Ok(chain)
    }

    /// The backup and the stretch of archived binary log that make `source` as it was at
    /// `time`: the newest verified backup whose consistent point is at or before it, and every
    /// transaction after that point committed at or before it (`commit_times::cut`).
    async fn point_in_time(
        &self,
        source: &ServiceName,
        time: &str,
        backup: Option<&str>,
    ) -> Result<PointInTime> {
        let t_us = stratus_core::time::parse_rfc3339_us(time).map_err(ControlError::Invalid)?;
        if t_us > now_ms() * 1000 {
            return Err(ControlError::Invalid(format!("{time} is in the future")));
        }
        // What the running source committed by now reaches the archive first.
        if let Ok(Some(svc)) = self.store.service(source).await {
            self.archive_logs(&svc).await;
        }

        let records = self.records(Some(source.as_str()))?;
        let candidates = records
            .into_iter()
            .rev()
            .filter(|r| r.verified && backup.is_none_or(|id| r.id == id));
        for record in candidates {
            let Some(base) = record.binlog() else {
                continue;
            };
            let archive = self.backups_of(source.as_str()).join(record.archive());
            if commit_times::files(&archive).is_empty() {
                return Err(ControlError::WrongState(format!(
                    "point-in-time restore needs the commit times of {source}'s binary log, and none were noted: set [mariadb] commit_clock = true (or restore a whole backup with --backup)"
                )));
            }
            // The backup holds everything up to its consistent point: usable only if the last
            // transaction there committed at or before `time`.
            let before = commit_times::last_at_or_before(&archive, &base)
                .map_err(internal("cannot read the archive's commit times"))?;
            let usable = match &before {
                Some(c) => c.at_or_before(t_us),
                None => record.started_at_ms * 1000 <= t_us,
            };
            if !usable {
                continue;
            }
            let cut = commit_times::cut(&archive, &base, t_us)
                .map_err(internal("cannot read the archive's commit times"))?;
            // Past every line: the source's newest transactions must have theirs too.
            let past_all = commit_times::last(&archive).is_none_or(|(_, c)| c.at_or_before(t_us));
            if past_all && !matches!(cut, Cut::Untimed { .. }) {
                self.await_commit_times(source, &record, &archive).await?;
            }
            return match cut {
                Cut::Upto(to, last) => Ok(PointInTime {
                    replay: Some(LogReplay {
                        archive: archive.clone(),
                        from: base,
                        to,
                    }),
                    last: Some(last),
                    record,
                }),
                Cut::Nothing => Ok(PointInTime {
                    replay: None,
                    last: before,
                    record,
                }),
                Cut::Untimed {
                    not_before_us,
                    by_us,
                } => Err(ControlError::WrongState(format!(
                    "{source}'s binary log has transactions whose commit times are known only to lie {}: Stratus could not follow the server then; restore to a time {}, or a whole backup with --backup",
                    match not_before_us {
                        0 => format!("before {}", rfc3339_us(by_us)),
                        _ => format!(
                            "between {} and {}",
                            rfc3339_us(not_before_us),
                            rfc3339_us(by_us)
                        ),
                    },
                    match not_before_us {
                        0 => format!("from {} on", rfc3339_us(by_us)),
                        _ => format!(
                            "before {} or from {} on",
                            rfc3339_us(not_before_us),
                            rfc3339_us(by_us)
                        ),
                    },
                ))),
            };
        }
        Err(ControlError::NotFound(match backup {
            Some(id) => format!(
                "backup {id} of {source} usable for {time} (it must be verified and taken before it)"
            ),
            None => format!("a verified backup of {source} taken before {time}"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_database_and_nothing_else_is_an_id() {
        let shop = ServiceName::parse("shop-eu").unwrap();
        let id = backup_id(&shop, 1_796_068_712_123);
        assert_eq!(id, "shop-eu-20261130T195832123Z");
        assert_eq!(parse_backup_id(&id), Some(shop));
        for bad in [
            "../etc-20261130T194512123Z",
            "shop-20261130T194512123",
            "shop-2026113T194512123Z",
            "shop",
            "shop-*",
            "-20261130T194512123Z",
            "shop/x-20261130T194512123Z",
        ] {
            assert_eq!(parse_backup_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_changed_missing_or_added_file_fails_verification() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("data")).unwrap();
        std::fs::write(d.path().join("data/ibdata1"), b"pages").unwrap();
        std::fs::write(d.path().join("key"), b"wrapped").unwrap();
        let sums = checksums(d.path()).unwrap();
        std::fs::write(d.path().join(SUMS), &sums).unwrap();
        assert_eq!(verify_files(d.path()), Ok(()));
        std::fs::write(d.path().join("data/ibdata1"), b"pageS").unwrap();
        assert_eq!(
            verify_files(d.path()),
            Err("data/ibdata1 differs from its checksum".into())
        );
        std::fs::write(d.path().join("data/ibdata1"), b"pages").unwrap();
        std::fs::write(d.path().join("data/extra"), b"").unwrap();
        assert_eq!(
            verify_files(d.path()),
            Err("data/extra was not part of it".into())
        );
        std::fs::remove_file(d.path().join("data/extra")).unwrap();
        std::fs::remove_file(d.path().join("key")).unwrap();
        assert_eq!(verify_files(d.path()), Err("key is missing".into()));
    }
}
