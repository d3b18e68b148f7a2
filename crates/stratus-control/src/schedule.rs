//! The backup controller: takes each database's scheduled backups (its `BackupSchedule`, a cron
//! expression in UTC) and applies its retention. The decisions are pure ([`due`], [`expired`]);
//! the loop only feeds them what the catalog and the backup directory hold, so a backup missed
//! while Stratus was down is taken once when it is back, not once per missed time.
//!
//! Backups of one installation are taken one at a time. A parked database that has a verified
//! backup is skipped: nothing has changed since it was parked, and waking it to copy the same
//! data again would cost a start for nothing. A failed backup is tried again with back-off.

use crate::ControlPlane;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use stratus_core::cron::Cron;
use stratus_core::time::now_ms;
use stratus_core::{BackupSchedule, DbState, ServiceName};
use stratus_runtime::Runtime;
use stratus_store::Store;

/// The binary log archive's directory, beside a database's backups: `binlog-<ms>`, one per
/// binary log the database's servers began: at its creation (a database made later under a
/// deleted one's name starts again from file 1), and at each move to another node, whose new
/// server starts its own (`DatabaseService::log_epoch`; `binlog`: archives from before
/// incarnations).
pub const ARCHIVE: &str = "binlog";

/// The archive directory's name of a binary log begun at `epoch_ms`.
pub fn archive_name(epoch_ms: i64) -> String {
    format!("{ARCHIVE}-{epoch_ms}")
}
/// How often schedules are looked at.
const TICK: Duration = Duration::from_secs(1);
/// Longest wait before a failed scheduled backup is tried again.
const RETRY_MAX: Duration = Duration::from_secs(600);
/// How often a parked database's schedule is looked at. It writes nothing, so only a backup
/// coming due can change; that waits up to this long, where looking every second cost a catalog
/// read and a directory listing per parked database per second.
const PARKED_EVERY_MS: i64 = 60_000;

/// Whether a scheduled backup is due at `now_ms`: a time of `cron` has come since `last_ms` (the
/// last backup's start, or the database's creation).
pub fn due(cron: &Cron, last_ms: i64, now_ms: i64) -> bool {
    cron.next_after(last_ms).is_some_and(|t| t <= now_ms)
}

/// A backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub id: String,
    pub started_at_ms: i64,
    pub verified: bool,
}

/// The backups retention deletes: those older than `retention_days`, and beyond the newest
/// `keep_last` — but never the newest verified backup, whatever its age, so a database always
/// keeps one it can be restored from.
pub fn expired(backups: &[Kept], schedule: &BackupSchedule, now_ms: i64) -> Vec<String> {
    let mut newest_first: Vec<&Kept> = backups.iter().collect();
    newest_first.sort_by(|a, b| (b.started_at_ms, &b.id).cmp(&(a.started_at_ms, &a.id)));
    let keep_safe = newest_first
        .iter()
        .find(|b| b.verified)
        .map(|b| b.id.clone());
    let max_age = i64::from(schedule.retention_days) * 86_400_000;
    newest_first
        .iter()
        .enumerate()
        .filter(|(i, b)| {
            let too_old = now_ms - b.started_at_ms > max_age;
            let too_many = schedule.keep_last > 0 && *i >= schedule.keep_last as usize;
            (too_old || too_many) && Some(&b.id) != keep_safe.as_ref()
        })
        .map(|(_, b)| b.id.clone())
        .collect()
}

/// What retention deletes of a database's `records`, in the order to delete them: those
/// [`expired`], less every backup a kept incremental one is built on; incrementals first, so no
/// base is deleted under one.
pub fn retention(
    records: &[crate::backup::BackupRecord],
    schedule: &BackupSchedule,
    now_ms: i64,
) -> Vec<String> {
    let kept: Vec<Kept> = records
        .iter()
        .map(|r| Kept {
            id: r.id.clone(),
            started_at_ms: r.started_at_ms,
            verified: r.verified,
        })
        .collect();
    let mut gone = expired(&kept, schedule, now_ms);
    let mut needed: Vec<String> = records
        .iter()
        .filter(|r| !gone.contains(&r.id))
        .filter_map(|r| r.base.clone())
        .collect();
    while let Some(id) = needed.pop() {
        if let Some(i) = gone.iter().position(|g| *g == id) {
            gone.remove(i);
            if let Some(r) = records.iter().find(|r| r.id == id) {
                needed.extend(r.base.clone());
            }
        }
    }
    gone.sort_by_key(|id| std::cmp::Reverse(records.iter().position(|r| &r.id == id).unwrap_or(0)));
    gone
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// Runs the schedules until the process ends.
    pub async fn run_backups(self: Arc<Self>) {
        let mut retries = crate::supervisor::Retries::new(RETRY_MAX);
        // Parked databases whose binary log was archived since they parked: a parked database
        // writes nothing, so looking again every second would only cost (a thousand parked
        // databases, a thousand archive passes a second).
        let mut archived_parked: HashSet<(ServiceName, i64)> = HashSet::new();
        // When each parked database was last looked at (see [`PARKED_EVERY_MS`]).
        let mut parked_looked: HashMap<ServiceName, i64> = HashMap::new();
        let mut tick = Self::ticker(TICK);
        loop {
            tick.tick().await;
            let Ok(services) = self.store.services().await else {
                continue;
            };
            let parked: HashSet<&ServiceName> = (services.iter())
                .filter(|s| s.state == DbState::Parked)
                .map(|s| s.name())
                .collect();
            parked_looked.retain(|name, _| parked.contains(name));
            drop(parked);
            for svc in services {
                let name = svc.name().clone();
                if !matches!(
                    svc.state,
                    DbState::Active | DbState::Suspended | DbState::Parked
                ) {
                    continue;
                }
                if svc.state == DbState::Parked {
                    let now = now_ms();
                    let looked = parked_looked.entry(name.clone()).or_insert(i64::MIN);
                    if now.saturating_sub(*looked) < PARKED_EVERY_MS {
                        continue;
                    }
                    *looked = now;
                }
                let Ok(schedule) = self.store.backup_schedule(&name).await else {
                    continue;
                };
                let Ok(records) = self.records(Some(name.as_str())) else {
                    continue;
                };
                let cron = schedule.cron().ok().flatten();
                let incremental = schedule.incremental_cron().ok().flatten();
                let parked = (name.clone(), svc.created_at_ms);
                let archived = if svc.state == DbState::Parked {
                    !archived_parked.insert(parked)
                } else {
                    archived_parked.remove(&parked);
                    false
                };
                if !archived && (cron.is_some() || incremental.is_some() || !records.is_empty()) {
                    self.archive_logs(&svc).await;
                }
                let now = now_ms();
                if retries.waiting(&name, now) {
                    continue;
                }
                let last = records
                    .last()
                    .map_or(svc.created_at_ms, |r| r.started_at_ms);
                if svc.state == DbState::Parked && records.iter().any(|r| r.verified) {
                    continue;
                }
                // A full backup when one is due, else an incremental one when that is due and
                // there is a verified backup of this incarnation to build on.
                let archive = archive_name(svc.log_epoch());
                let has_base = records.iter().any(|r| r.verified && r.archive() == archive);
                // A database backed up before its binary log began again (a move) has no base
                // for point-in-time restore after that: a full backup is due at once.
                let new_log = !has_base && records.iter().any(|r| r.verified);
                let req = if new_log || cron.as_ref().is_some_and(|c| due(c, last, now)) {
                    crate::backup::BackupRequest::default()
                } else if has_base && incremental.as_ref().is_some_and(|c| due(c, last, now)) {
                    crate::backup::BackupRequest { incremental: true }
                } else {
                    continue;
                };
                match self.take_backup(name.as_str(), req).await {
                    Ok(b) if b.verified => {
                        retries.succeeded(&name);
                        self.apply_retention(&name, &schedule).await;
                    }
                    result => {
                        let wait = retries.failed(&name, now_ms());
                        tracing::warn!(db = %name, "scheduled backup failed ({}); trying again in {wait:?}",
                            result.err().map_or("its verification failed".to_owned(), |e| e.to_string()));
                    }
                }
            }
        }
    }

    /// Copies what is new in a database's binary log to its archive, beside its backups, so that
    /// every committed transaction is kept from a backup on (the base of point-in-time
    /// restore). Databases that neither have backups nor take them archive nothing.
    pub(crate) async fn archive_logs(&self, svc: &stratus_core::DatabaseService) {
        if let Err(e) = self.backup_root() {
            tracing::warn!("{e}");
            return;
        }
        let name = svc.name();
        let dest = self
            .backups_of(name.as_str())
            .join(archive_name(svc.log_epoch()));
        if let Err(e) = self.runtime.archive_logs(name, &dest).await {
            // A database deleted since the loop listed it has no log left to archive, and one
            // being changed (its lock held: a delete removing its files before the catalog
            // forgets it, a move) may lose files under the copy: a file gone then is no failure
            // to report; the next run copies what is new. Any other error is.
            let still_there = matches!(
                self.store.service(name).await,
                Ok(Some(now)) if now.state != DbState::Deleted && now.created_at_ms == svc.created_at_ms
            );
            let changing = e.is_not_found() && self.try_lock(name).is_none();
            if still_there && !changing {
                tracing::warn!(db = %name, "cannot archive the binary log: {e}");
            } else {
                tracing::debug!(db = %name, "not archived, deleted or changed meanwhile: {e}");
            }
        }
    }

    /// Deletes what the schedule's retention no longer keeps.
    pub async fn apply_retention(&self, name: &ServiceName, schedule: &BackupSchedule) {
        let Ok(records) = self.records(Some(name.as_str())) else {
            return;
        };
        let gone = retention(&records, schedule, now_ms());
        for id in &gone {
            if let Err(e) = self.delete_backup(id).await {
                tracing::warn!(db = %name, "retention cannot delete backup {id}: {e}");
            }
        }
        // In each archive, the binary log before the oldest kept backup's consistent point
        // holds nothing a restore from a kept backup needs: files numbered below its file go
        // (with their commit times). An archive no kept backup uses goes whole, unless it is
        // the live database's.
        let live = match self.store.service(name).await {
            Ok(Some(svc)) => Some(archive_name(svc.log_epoch())),
            _ => None,
        };
        let kept: Vec<&crate::backup::BackupRecord> =
            records.iter().filter(|r| !gone.contains(&r.id)).collect();
        let dirs = std::fs::read_dir(self.backups_of(name.as_str()))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n == ARCHIVE || n.starts_with(&format!("{ARCHIVE}-")));
        for dir in dirs {
            let path = self.backups_of(name.as_str()).join(&dir);
            let oldest = kept
                .iter()
                .filter(|r| r.archive() == dir)
                .min_by_key(|r| r.started_at_ms);
            let Some(oldest) = oldest else {
                if live.as_deref() != Some(dir.as_str()) {
                    let _ = std::fs::remove_dir_all(&path);
                }
                continue;
            };
            prune_archive(&path, oldest);
        }
    }
}

/// Deletes the files of an archive a restore from `oldest` (its oldest kept backup) and later
/// ones cannot need: those numbered below the file of its consistent point or, for a backup that
/// does not know its position, those last written before it began.
fn prune_archive(archive: &std::path::Path, oldest: &crate::backup::BackupRecord) {
    let first_needed = oldest.binlog().and_then(|b| b.file_number());
    for e in std::fs::read_dir(archive).into_iter().flatten().flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if file.ends_with(".index") {
            continue;
        }
        let log = file
            .strip_suffix(stratus_runtime::commit_times::SUFFIX)
            .unwrap_or(&file);
        let old = match (
            first_needed,
            stratus_runtime::commit_times::file_number(log),
        ) {
            (Some(first), Some(n)) => n < first,
            _ => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .is_some_and(|t| (t.as_millis() as i64) < oldest.started_at_ms),
        };
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn b(id: &str, day: i64, verified: bool) -> Kept {
        Kept {
            id: id.into(),
            started_at_ms: day * DAY,
            verified,
        }
    }

    #[test]
    fn a_backup_is_due_once_a_time_of_the_schedule_has_passed() {
        let nightly = Cron::parse("0 3 * * *").unwrap();
        let last = 10 * DAY + 3 * 3_600_000; // day 10, 03:00
        assert!(!due(&nightly, last, last + 23 * 3_600_000));
        assert!(due(&nightly, last, last + DAY));
        // Down for a week: due, once (the next backup resets `last`).
        assert!(due(&nightly, last, last + 7 * DAY));
        let off = BackupSchedule {
            cron: String::new(),
            ..BackupSchedule::default()
        };
        assert!(off.cron().unwrap().is_none());
    }

    #[test]
    fn retention_drops_the_old_and_the_surplus_but_keeps_one_good_backup() {
        let week = BackupSchedule::default();
        let all = [
            b("a", 1, true),
            b("b", 5, true),
            b("c", 9, true),
            b("d", 10, false),
        ];
        assert_eq!(expired(&all, &week, 10 * DAY), ["a"]);
        let three = BackupSchedule {
            keep_last: 2,
            ..week.clone()
        };
        assert_eq!(expired(&all, &three, 10 * DAY), ["b", "a"]);
        // Everything is old, and the newest backups failed verification: the newest good one stays.
        let stale = [b("a", 1, true), b("b", 2, false)];
        assert_eq!(expired(&stale, &week, 100 * DAY), ["b"]);
    }
}
