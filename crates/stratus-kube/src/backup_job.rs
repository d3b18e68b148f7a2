//! One backup of a database on Kubernetes: a [Job](https://kubernetes.io/docs/concepts/workloads/controllers/job/)
//! the backup controller ([`crate::operator::backups`]) makes when a `BackupSchedule` is due,
//! and what its two containers do.
//!
//! * `copy` (an init container, the database's own MariaDB image, so `mariadb-backup` is the
//!   server's version): copies the running server with `mariadb-backup --backup` from its data
//!   volume mounted read-only, then prepares the copy (`--prepare`), into a hidden directory on
//!   the backup volume. It runs on the database's node (a required pod affinity): the data
//!   volume is `ReadWriteOnce`, which pods on one node may share.
//! * `record` (Stratus's image, `stratus operator backup-record`, [`record`]): checksums the
//!   files, reads them back, writes `backup.json` and renames the directory into place, the same
//!   last steps as one machine's `stratus backup` ([`stratus_control::backup::seal`]); then
//!   applies the schedule's retention.
//!
//! The layout on the backup volume is one machine's: `<database>/<id>/` with `backup.json`,
//! `SHA256SUMS` and the prepared `data/`, so the same tools read both
//! ([`mariadb-backup`](https://mariadb.com/kb/en/full-backup-and-restore-with-mariadb-backup/)).

use crate::instance::Instance;
use crate::objects::{self, ADMIN_USER, MYSQL_UID, OPTION_FILE, PORT, Settings, VOLUME_MOUNT};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;
use std::path::Path;
use stratus_control::backup::{BackupRecord, seal};
use stratus_control::copy::Source;
use stratus_core::{BackupSchedule, ServiceName};

/// Where the backup volume is mounted in the Job's pod.
pub const BACKUPS_MOUNT: &str = "/backups";

/// How long a backup may take, affinity wait included, before Kubernetes ends it: a database's
/// node that cannot take the Job's pod ends it rather than leaving it `Pending`.
pub const DEADLINE_SECS: i64 = 6 * 3600;

/// The label that names the database a backup Job copies. Not [`objects::DATABASE_LABEL`]: the
/// database's Service selects its pods by that one, and must never route to a backup's pod.
pub const BACKUP_OF_LABEL: &str = "stratus.dev/backup-of";

/// The annotation with the backup's id.
pub const ID_ANNOTATION: &str = "stratus.dev/backup-id";

/// The annotation with the time the backup started (RFC 3339): what the schedule's next due
/// time counts from, even if the status that says so was never written.
pub const STARTED_ANNOTATION: &str = "stratus.dev/backup-started";

/// Labels of every backup Job and its pod (the NetworkPolicy lets those pods reach their
/// database's server).
pub fn labels(db: &ServiceName) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        ("app.kubernetes.io/name".into(), "mariadb".into()),
        ("app.kubernetes.io/component".into(), "backup".into()),
        ("app.kubernetes.io/managed-by".into(), "stratus".into()),
        (BACKUP_OF_LABEL.into(), db.to_string()),
    ])
}

/// The selector of every backup Job, for the controller's watch.
pub const JOBS_SELECTOR: &str =
    "app.kubernetes.io/component=backup,app.kubernetes.io/managed-by=stratus";

/// The Job's name: `<database>-backup-<UTC time to the second>`, at most 62 characters (a
/// Job's name is a label value on its pods, 63 at most).
pub fn job_name(db: &ServiceName, started_ms: i64) -> String {
    let digits: String = stratus_core::time::rfc3339(started_ms)
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect();
    format!("{db}-backup-{digits}")
}

/// The directory a backup is made in before it is complete, beside the finished ones: hidden,
/// so no reader takes it for a backup (one machine's name for it too).
pub fn partial_name(id: &str) -> String {
    format!(".{id}.partial")
}

/// Where the `copy` container finds things: the pod's paths, or a test's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPaths {
    /// The server's option file (its data directory, as mounted read-only here).
    pub option_file: String,
    /// The backup volume's root.
    pub backups: String,
    /// The server's address and port.
    pub host: String,
    pub port: u16,
}

impl CopyPaths {
    /// In the Job's pod: the database's ConfigMap and claim where its own pod has them, the
    /// server by its pod's stable name (the headless Service's).
    pub fn in_pod(inst: &Instance) -> Self {
        let set = inst.name();
        Self {
            option_file: OPTION_FILE.into(),
            backups: BACKUPS_MOUNT.into(),
            host: format!("{set}-0.{set}"),
            port: PORT,
        }
    }
}

/// The `copy` container's script: `mariadb-backup` logs in as Stratus (the password comes in
/// `MYSQL_PWD`, from the database's Secret, so it is in neither the Job's spec nor the command
/// line), copies into the hidden directory and prepares the copy. A copy left by an earlier
/// attempt under the same id is removed first.
pub fn copy_script(db: &ServiceName, id: &str, p: &CopyPaths) -> String {
    let dir = format!("{}/{db}/{}", p.backups, partial_name(id));
    let defaults = format!("--defaults-file={}", p.option_file);
    // The checkpoint it would force first (`innodb_log_checkpoint_now`) waits for the server to
    // have flushed everything, which under steady writes it never has; without it, more redo
    // log is copied (as one machine does).
    format!(
        "set -eu\nrm -rf '{dir}'\nmkdir -p '{dir}'\n\
         mariadb-backup {defaults} --backup --skip-innodb-log-checkpoint-now \
         --target-dir='{dir}/data' --host='{host}' --port={port} --user={ADMIN_USER}\n\
         mariadb-backup {defaults} --prepare --target-dir='{dir}/data'\n",
        host = p.host,
        port = p.port,
    )
}

/// What the `record` container is told: everything it records and prunes by, none of it secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordArgs {
    /// The database's directory on the backup volume.
    pub dir: std::path::PathBuf,
    pub database: ServiceName,
    pub id: String,
    pub started_at_ms: i64,
    pub retention_days: u32,
    pub keep_last: u32,
    /// The `BackupSchedule` taking it: its retention applies to its own backups only.
    pub schedule: String,
    /// The database's settings, so a restore needs nothing else.
    pub source: Source,
}

impl RecordArgs {
    /// As arguments of `stratus operator backup-record`.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "operator".into(),
            "backup-record".into(),
            "--dir".into(),
            self.dir.display().to_string(),
            "--database".into(),
            self.database.to_string(),
            "--id".into(),
            self.id.clone(),
            "--started-at-ms".into(),
            self.started_at_ms.to_string(),
            "--retention-days".into(),
            self.retention_days.to_string(),
            "--keep-last".into(),
            self.keep_last.to_string(),
            "--schedule".into(),
            self.schedule.clone(),
            "--source".into(),
            serde_json::to_string(&self.source).unwrap_or_default(),
        ]
    }
}

/// What one Job is asked to do.
#[derive(Debug, Clone)]
pub struct JobSpec<'a> {
    pub database: &'a ServiceName,
    /// The objects its server runs as (a spare it claimed keeps the spare's name).
    pub instance: &'a Instance,
    pub id: &'a str,
    pub started_at_ms: i64,
    pub schedule: &'a BackupSchedule,
    /// The schedule's name.
    pub schedule_name: &'a str,
    /// The image the database's server runs: its `mariadb-backup` is the server's version,
    /// even when the operator's default image changed since the pod was made.
    pub image: &'a str,
    pub source: Source,
    /// The schedule that made it: deleting the schedule deletes its Jobs, and the controller
    /// hears of its Jobs' changes through this.
    pub owner: OwnerReference,
}

/// The Job of one backup.
pub fn job(spec: &JobSpec<'_>, s: &Settings) -> Job {
    let db = spec.database;
    let set = spec.instance.name();
    let record = RecordArgs {
        dir: Path::new(BACKUPS_MOUNT).join(db.as_str()),
        database: db.clone(),
        id: spec.id.to_owned(),
        started_at_ms: spec.started_at_ms,
        retention_days: spec.schedule.retention_days,
        keep_last: spec.schedule.keep_last,
        schedule: spec.schedule_name.to_owned(),
        source: spec.source.clone(),
    };
    let annotations = json!({
        ID_ANNOTATION: spec.id,
        STARTED_ANNOTATION: stratus_core::time::rfc3339(spec.started_at_ms),
    });
    let resources = json!({
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    });
    let labels = labels(db);
    objects::typed(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(db, spec.started_at_ms),
            "namespace": s.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [spec.owner],
        },
        "spec": {
            // A failed copy is not tried again in place: the controller reports it, and the
            // next due time makes a new Job.
            "backoffLimit": 0,
            "activeDeadlineSeconds": DEADLINE_SECS,
            // The controller deletes a Job once it has recorded its outcome; this is the net
            // for one it never saw end.
            "ttlSecondsAfterFinished": 86_400,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": MYSQL_UID,
                        "runAsGroup": MYSQL_UID,
                        "fsGroup": MYSQL_UID,
                        // A volume whose root has the group already is not walked again: the
                        // backup volume holds every database's backups.
                        "fsGroupChangePolicy": "OnRootMismatch",
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    // The data volume is `ReadWriteOnce`: only a pod on the database's node
                    // can mount it beside the server.
                    "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {
                            objects::DATABASE_LABEL: db.to_string(),
                            "app.kubernetes.io/component": "database",
                        }},
                        "topologyKey": "kubernetes.io/hostname",
                    }]}},
                    "initContainers": [{
                        "name": "copy",
                        "image": spec.image,
                        "command": ["sh", "-c", copy_script(db, spec.id, &CopyPaths::in_pod(spec.instance))],
                        "env": [{"name": "MYSQL_PWD", "valueFrom": {"secretKeyRef": {
                            "name": set, "key": "password",
                        }}}],
                        "resources": resources,
                        "securityContext": objects::restricted(),
                        // The log's tail is the pod's termination message, which the
                        // controller puts in its `BackupFailed` Event.
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "volumeMounts": [
                            {"name": "data", "mountPath": VOLUME_MOUNT, "readOnly": true},
                            {"name": "config", "mountPath": "/etc/stratus", "readOnly": true},
                            {"name": "backups", "mountPath": BACKUPS_MOUNT},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                    }],
                    "containers": [{
                        "name": "record",
                        "image": s.agent_image,
                        "args": record.to_args(),
                        "resources": resources,
                        "securityContext": objects::restricted(),
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "volumeMounts": [{"name": "backups", "mountPath": BACKUPS_MOUNT}],
                    }],
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {
                            "claimName": spec.instance.claim(), "readOnly": true}},
                        {"name": "config", "configMap": {"name": set,
                            "items": [{"key": "my.cnf", "path": "my.cnf"}]}},
                        {"name": "backups", "persistentVolumeClaim": {
                            "claimName": spec.schedule.target}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }))
}

/// What [`record`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub record: BackupRecord,
    /// Backups retention deleted.
    pub deleted: Vec<String>,
    /// What retention could not do (the backup is good all the same).
    pub warnings: Vec<String>,
}

/// The `record` container's work, once `copy` prepared the backup in its hidden directory:
/// seal it (checksums read back, `backup.json`, renamed into place), then apply the schedule's
/// retention to the backups of the same schedule, and remove hidden directories that Jobs older
/// than [`DEADLINE_SECS`] left (those Jobs have ended, so nothing writes there any more). Only
/// sealing can fail it: once the backup is whole, what retention cannot do is a warning.
pub fn record(args: &RecordArgs) -> std::io::Result<Recorded> {
    let partial = args.dir.join(partial_name(&args.id));
    let data = partial.join("data");
    if !data.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} holds no prepared copy", partial.display()),
        ));
    }
    let taken = stratus_runtime::BackupTaken::read(&data, Vec::new());
    let record = BackupRecord {
        id: args.id.clone(),
        database: args.database.to_string(),
        kind: "full".into(),
        base: None,
        started_at_ms: args.started_at_ms,
        finished_at_ms: args.started_at_ms,
        bytes: 0,
        gtid: taken.gtid,
        binlog_file: taken.binlog.as_ref().map(|b| b.file.clone()),
        binlog_pos: taken.binlog.as_ref().map(|b| b.pos),
        // The binary log is not archived on Kubernetes (yet): no point-in-time restore.
        archive: None,
        verified: false,
        verification: String::new(),
        schedule: Some(args.schedule.clone()),
        source: args.source.clone(),
    };
    let record = seal(&partial, &args.dir, record)?;
    let (deleted, warnings) = retain(args);
    Ok(Recorded {
        record,
        deleted,
        warnings,
    })
}

/// Retention for the schedule of `args`, and the removal of stale hidden directories: what it
/// deleted, and what it could not.
fn retain(args: &RecordArgs) -> (Vec<String>, Vec<String>) {
    let schedule = BackupSchedule {
        retention_days: args.retention_days,
        keep_last: args.keep_last,
        ..BackupSchedule::default()
    };
    let now = stratus_core::time::now_ms();
    let records: Vec<BackupRecord> =
        stratus_control::backup::records_in(&args.dir, args.database.as_str())
            .into_iter()
            .filter(|r| r.schedule.as_deref() == Some(args.schedule.as_str()))
            .collect();
    let mut warnings = Vec::new();
    let mut deleted = Vec::new();
    for id in stratus_control::schedule::retention(&records, &schedule, now) {
        match std::fs::remove_dir_all(args.dir.join(&id)) {
            Ok(()) => deleted.push(id),
            Err(e) => warnings.push(format!("retention cannot delete backup {id}: {e}")),
        }
    }
    let stale = std::time::Duration::from_secs(DEADLINE_SECS as u64);
    let entries = match std::fs::read_dir(&args.dir) {
        Ok(entries) => entries,
        Err(e) => {
            warnings.push(format!("cannot read {}: {e}", args.dir.display()));
            return (deleted, warnings);
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > stale);
        if name.starts_with('.') && name.ends_with(".partial") && old {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                warnings.push(format!("cannot remove {name}, left by an older Job: {e}"));
            }
        }
    }
    (deleted, warnings)
}

#[cfg(test)]
pub(crate) mod tests;
