//! The backup controller: each `BackupSchedule` to backup Jobs ([`crate::backup_job`]), one at a
//! time, when its cron expression is due, by the same rule as one machine
//! ([`stratus_control::schedule::due`]); each Job's outcome to the schedule's status and a
//! Kubernetes Event, after which the Job is deleted. Retention is applied inside the Job, where
//! the backup volume is mounted.
//!
//! Like the database controller: a pure [`plan`] from the schedule and what the cluster says,
//! then the steps through the API, and the error policy's back-off on a failure. It watches the
//! Jobs it made (they are owned by their schedule), so a Job's end reconciles its schedule at
//! once. [Jobs](https://kubernetes.io/docs/concepts/workloads/controllers/job/),
//! [owner references](https://kubernetes.io/docs/concepts/overview/working-with-objects/owners-dependents/).

use super::Context;
use super::database::{LATER, SOON};
use crate::backup_job::{
    self, BACKUP_OF_LABEL, ID_ANNOTATION, JOBS_SELECTOR, JobSpec, STARTED_ANNOTATION,
};
use crate::instance::Instance;
use crate::objects;
use crate::runtime::KubeError;
use crate::v1alpha1::{BackupSchedule, BackupScheduleStatus, DatabaseService};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use std::time::Duration;
use stratus_control::copy::Source;
use stratus_core::ServiceName;
use stratus_core::time::{parse_rfc3339_us, rfc3339};

/// How a backup Job ended, or that it has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Running,
    Succeeded,
    /// With why: the failed container's last lines, or the Job's condition.
    Failed(String),
}

/// One of the schedule's Jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSeen {
    pub name: String,
    /// The backup's id (its annotation).
    pub id: String,
    /// When it started (its annotation; `None` for a Job without it).
    pub started_ms: Option<i64>,
    pub outcome: Outcome,
}

/// The database a schedule names, as far as a backup needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatabaseSeen {
    /// Its status's state (`""` before the operator wrote one).
    pub state: String,
    /// Its settings, recorded with each backup.
    pub source: Option<Source>,
    /// The image its running server's container runs, once its pod is ready.
    pub image: Option<String>,
    /// Why its server is about to go (a move to another node, a park): a backup must not
    /// start, and one under way is ended, since its pod holds the volume on the old node.
    pub leaving: Option<String>,
    /// The warm pool's server it took, as its status names it (`None`: its own objects).
    pub instance: Option<String>,
}

/// What the cluster says, for one look at a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Seen {
    pub now_ms: i64,
    /// `None`: no DatabaseService by the name the schedule gives.
    pub database: Option<DatabaseSeen>,
    /// Whether the claim `target` names exists.
    pub target_exists: bool,
    /// The Jobs the schedule made that are still there.
    pub jobs: Vec<JobSeen>,
    /// Backups of the same database by other schedules, under way: one waits for the other.
    pub others_running: Vec<String>,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A Job's end, told as an Event (`BackedUp`, `BackupFailed`).
    Report {
        id: String,
        outcome: Outcome,
    },
    /// Make the Job of backup `id`, started now.
    Start {
        id: String,
        started_ms: i64,
    },
    Status(BackupScheduleStatus),
    /// Delete a Job whose end the status has recorded.
    Delete(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// When to look again without a change: at the next due time, or soon while waiting.
    pub requeue: Option<Duration>,
}

/// What to do for schedule `bs`, given what the cluster says. Pure.
///
/// * A Job that ended is reported once (the status remembers it: `lastBackup` or `failed`),
///   then deleted. A failed backup is not tried again before the next due time.
/// * One backup at a time: while a Job runs nothing else starts.
/// * Due (a time of `cron` came since `lastRun`, or since the schedule was made): a Job when the
///   database's server runs (active or suspended). A parked database has no server and is
///   backed up once woken; one that is starting or moving is waited for; a missing one is said
///   in `message`.
pub fn plan(bs: &BackupSchedule, seen: &Seen) -> Plan {
    let now = seen.now_ms;
    let mut st = bs.status.clone().unwrap_or_default();
    let mut reports = Vec::new();
    let mut deletes = Vec::new();
    let mut jobs: Vec<JobSeen> = seen.jobs.clone();
    jobs.sort_by_key(|j| (j.started_ms, j.id.clone()));
    let leaving = seen.database.as_ref().and_then(|d| d.leaving.clone());
    // A backup under way holds the database's volume on its node: ended (reported as failed,
    // its Job deleted) when the database is to leave it.
    for job in &mut jobs {
        if let (Outcome::Running, Some(why)) = (&job.outcome, &leaving) {
            job.outcome = Outcome::Failed(format!("ended: {why}"));
        }
    }
    // Ids compare by the time in them, not as text (a schedule may be pointed at another
    // database, whose name sorts otherwise).
    let time_of = |id: &Option<String>| id.as_deref().map_or(i64::MIN, id_ms);
    for job in &jobs {
        let at = job.started_ms.unwrap_or_else(|| id_ms(&job.id));
        let newer = |than: &Option<String>| at > time_of(than);
        match &job.outcome {
            Outcome::Running => continue,
            Outcome::Succeeded if newer(&st.last_backup) => {
                if st.failed.is_some() && newer(&st.failed) {
                    st.failed = None;
                }
                st.last_backup = Some(job.id.clone());
                st.message = None;
                reports.push(job);
            }
            Outcome::Failed(why)
                if newer(&st.last_backup)
                    && newer(&st.failed)
                    && st.failed.as_ref() != Some(&job.id) =>
            {
                st.failed = Some(job.id.clone());
                st.message = Some(one_line(&format!("backup {} failed: {why}", job.id)));
                reports.push(job);
            }
            _ => {}
        }
        deletes.push(job.name.clone());
    }
    let running = jobs.iter().find(|j| j.outcome == Outcome::Running);
    st.running = running.map(|j| j.id.clone());
    let reports: Vec<Step> = reports
        .iter()
        .map(|j| Step::Report {
            id: j.id.clone(),
            outcome: j.outcome.clone(),
        })
        .collect();
    let mut steps = Vec::new();
    let mut requeue = None;
    let schedule = bs.spec.schedule();
    match schedule.cron() {
        Err(e) => {
            st.message = Some(one_line(&format!("cron {:?}: {e}", schedule.cron)));
            st.next_run = None;
        }
        Ok(None) => st.next_run = None,
        Ok(Some(cron)) => {
            let created = bs
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(now, |t| t.0.as_millisecond());
            // The last start: the status's, or a Job's whose start the status missed (its
            // write failed, or this look saw an older copy of the schedule).
            let recorded = st
                .last_run
                .as_deref()
                .and_then(|t| parse_rfc3339_us(t).ok())
                .map(|us| us / 1000);
            let latest_job = jobs.iter().filter_map(|j| j.started_ms).max();
            if latest_job > recorded {
                st.last_run = latest_job.map(rfc3339);
            }
            let mut last = recorded.max(latest_job).unwrap_or(created);
            if running.is_some() {
                // Its end is heard through the watch of the Jobs; this is the net.
                requeue = Some(LATER);
            } else if stratus_control::schedule::due(&cron, last, now) {
                match start(bs, seen) {
                    Ok(id) => {
                        steps.push(Step::Start {
                            id: id.clone(),
                            started_ms: now,
                        });
                        st.running = Some(id);
                        st.last_run = Some(rfc3339(now));
                        st.message = None;
                        last = now;
                        requeue = Some(LATER);
                    }
                    Err((why, wait)) => {
                        st.message = Some(why);
                        requeue = Some(wait);
                    }
                }
            }
            let next = cron.next_after(last);
            st.next_run = next.map(rfc3339);
            if requeue.is_none() {
                requeue =
                    next.map(|t| Duration::from_millis((t - now).clamp(1000, 3_600_000) as u64));
            }
        }
    }
    // Written only when it says something new: most looks change nothing.
    if bs.status.clone().unwrap_or_default() != st {
        steps.push(Step::Status(st));
    }
    // Told once the status records it: a status write that fails is tried again with the
    // reports, which are then told once, not twice.
    steps.extend(reports);
    steps.extend(deletes.into_iter().map(Step::Delete));
    Plan { steps, requeue }
}

/// The start time a backup id carries (`<database>-YYYYMMDDTHHMMSSmmmZ`), `i64::MIN` for one
/// that carries none.
fn id_ms(id: &str) -> i64 {
    let stamp = id.rsplit_once('-').map_or("", |(_, s)| s);
    let d: Vec<char> = stamp.chars().collect();
    if d.len() != 19 || d[8] != 'T' || d[18] != 'Z' {
        return i64::MIN;
    }
    let part = |a: usize, b: usize| d[a..b].iter().collect::<String>();
    let text = format!(
        "{}-{}-{}T{}:{}:{}.{}Z",
        part(0, 4),
        part(4, 6),
        part(6, 8),
        part(9, 11),
        part(11, 13),
        part(13, 15),
        part(15, 18)
    );
    parse_rfc3339_us(&text).map_or(i64::MIN, |us| us / 1000)
}

/// The id of a backup to start now, or why none can start and when to look again.
fn start(bs: &BackupSchedule, seen: &Seen) -> Result<String, (String, Duration)> {
    let name = ServiceName::parse(&bs.spec.database)
        .map_err(|e| (format!("database {:?}: {e}", bs.spec.database), LATER))?;
    let Some(db) = &seen.database else {
        return Err((format!("database {name} does not exist"), LATER));
    };
    if let Some(why) = &db.leaving {
        return Err((format!("waiting for database {name}: {why}"), SOON));
    }
    if let Some(other) = seen.others_running.first() {
        return Err((
            format!("waiting for backup {other} of database {name}, by another schedule"),
            LATER,
        ));
    }
    let target = bs.spec.schedule().target;
    if !seen.target_exists {
        return Err((
            format!("the backup volume claim {target} does not exist"),
            LATER,
        ));
    }
    match db.state.as_str() {
        "active" | "suspended" if db.source.is_some() && db.image.is_some() => {
            Ok(stratus_control::backup::backup_id(&name, seen.now_ms))
        }
        "active" | "suspended" => Err((
            format!("waiting for the pod of database {name} to be ready"),
            SOON,
        )),
        "parked" => Err((
            format!("database {name} is parked: it is backed up when it next wakes"),
            LATER,
        )),
        state => Err((
            format!(
                "waiting for database {name} to run (it is {})",
                if state.is_empty() { "new" } else { state }
            ),
            SOON,
        )),
    }
}

/// A text as one line of at most 1 KiB (what a status message and an Event note hold).
fn one_line(text: &str) -> String {
    super::note_of(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The Event of a Job's end. Pure.
pub fn event_of(id: &str, outcome: &Outcome) -> Option<Event> {
    let (type_, reason, note) = match outcome {
        Outcome::Running => return None,
        Outcome::Succeeded => (
            EventType::Normal,
            "BackedUp",
            format!("backup {id} taken, prepared, checksummed and read back"),
        ),
        Outcome::Failed(why) => (
            EventType::Warning,
            "BackupFailed",
            format!("backup {id} failed: {why}"),
        ),
    };
    Some(Event {
        type_,
        reason: reason.into(),
        note: Some(one_line(&note)),
        action: "Backup".into(),
        secondary: None,
    })
}

/// How a Job ended, from its conditions.
fn outcome_of(job: &Job) -> Outcome {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let holds = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if holds("Complete").is_some() {
        Outcome::Succeeded
    } else if let Some(c) = holds("Failed") {
        Outcome::Failed(
            c.message
                .clone()
                .or(c.reason.clone())
                .unwrap_or_else(|| "its pod failed".into()),
        )
    } else {
        Outcome::Running
    }
}

/// Why a Job's pod failed: the termination message (the log's tail) of the container that
/// exited with an error, its last lines.
fn failure_of(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let all = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    all.filter_map(|c| {
        let t = c.state.as_ref()?.terminated.as_ref()?;
        (t.exit_code != 0).then(|| {
            let text = t.message.clone().unwrap_or_default();
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(4)..].join(" / ");
            format!("{} exited with {}: {tail}", c.name, t.exit_code)
        })
    })
    .next()
}

fn api<K>(ctx: &Context) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    Api::namespaced(ctx.client.clone(), &ctx.settings.namespace)
}

/// What the cluster says of schedule `bs` now.
async fn look(bs: &BackupSchedule, ctx: &Context, now_ms: i64) -> Result<Seen, KubeError> {
    let name = ServiceName::parse(&bs.spec.database).ok();
    let mut database = None;
    if let Some(name) = &name {
        let ds = api::<DatabaseService>(ctx)
            .get_opt(name.as_str())
            .await
            .map_err(|e| KubeError::of("read", format!("databaseservice {name}"), e))?;
        if let Some(ds) = ds {
            let inst =
                Instance::of_database(name, ds.status.as_ref().and_then(|s| s.instance.as_deref()));
            let pod_name = inst.pod();
            // A pooled server's pod counts only when labelled for this database.
            let pod = api::<Pod>(ctx)
                .get_opt(&pod_name)
                .await
                .map_err(|e| KubeError::of("read", format!("pod {pod_name}"), e))?
                .filter(|p| {
                    !inst.is_pooled()
                        || p.labels().get(objects::DATABASE_LABEL) == Some(&name.to_string())
                });
            database = Some(database_seen(name, &ds, pod.as_ref()));
        }
    }
    let target = bs.spec.schedule().target;
    let target_exists = api::<PersistentVolumeClaim>(ctx)
        .get_opt(&target)
        .await
        .map_err(|e| KubeError::of("read", format!("persistentvolumeclaim {target}"), e))?
        .is_some();
    let uid = bs.metadata.uid.clone();
    let listed = api::<Job>(ctx)
        .list(&ListParams::default().labels(JOBS_SELECTOR))
        .await
        .map_err(|e| KubeError::of("list", "jobs", e))?;
    let mut jobs = Vec::new();
    let mut others_running = Vec::new();
    for job in listed.items {
        let Some(id) = job.annotations().get(ID_ANNOTATION).cloned() else {
            continue;
        };
        let mut outcome = outcome_of(&job);
        let mine = job
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref());
        if !mine {
            let same_database = job.labels().get(BACKUP_OF_LABEL).map(String::as_str)
                == Some(bs.spec.database.as_str());
            if same_database && outcome == Outcome::Running {
                others_running.push(id);
            }
            continue;
        }
        let reported = bs.status.as_ref().is_some_and(|s| {
            s.failed.as_deref() == Some(id.as_str())
                || s.last_backup.as_deref() == Some(id.as_str())
        });
        if matches!(outcome, Outcome::Failed(_)) && !reported {
            let pods = api::<Pod>(ctx)
                .list(
                    &ListParams::default()
                        .labels(&format!("batch.kubernetes.io/job-name={}", job.name_any())),
                )
                .await
                .map_err(|e| KubeError::of("list", format!("pods of job {}", job.name_any()), e))?;
            if let Some(why) = pods.items.iter().find_map(failure_of) {
                outcome = Outcome::Failed(why);
            }
        }
        jobs.push(JobSeen {
            name: job.name_any(),
            started_ms: job
                .annotations()
                .get(STARTED_ANNOTATION)
                .and_then(|t| parse_rfc3339_us(t).ok())
                .map(|us| us / 1000),
            id,
            outcome,
        });
    }
    Ok(Seen {
        now_ms,
        database,
        target_exists,
        jobs,
        others_running,
    })
}

/// What a backup needs to know of database `name`: its state and settings, its server's image
/// once its pod is ready, and whether it is about to leave its node.
fn database_seen(name: &ServiceName, ds: &DatabaseService, pod: Option<&Pod>) -> DatabaseSeen {
    let status = ds.status.as_ref();
    let ready = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let image = pod
        .filter(|p| ready && p.metadata.deletion_timestamp.is_none())
        .and_then(|p| p.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == "mariadb"))
        .and_then(|c| c.image.clone());
    let asked_node = ds.spec.node.as_deref().filter(|n| !n.is_empty());
    let moving_to = status
        .and_then(|s| s.moving.as_ref())
        .map(|m| m.to.clone())
        .or_else(|| {
            asked_node
                .filter(|n| status.is_some_and(|s| s.node != *n))
                .map(str::to_owned)
        });
    let leaving = if ds.spec.state == Some(crate::v1alpha1::Lifecycle::Parked) {
        Some("it is being parked".to_owned())
    } else {
        moving_to.map(|to| format!("it is moving to node {to}"))
    };
    DatabaseSeen {
        instance: status.and_then(|s| s.instance.clone()),
        state: status.map(|s| s.state.clone()).unwrap_or_default(),
        source: ds.spec.service_spec(name.clone()).ok().map(|spec| Source {
            tier: spec.tier,
            min_scu: spec.min_scu,
            max_scu: spec.max_scu,
            storage_gb: spec.storage_gb,
            require_tls: ds.spec.require_tls,
            schema: status
                .map(|s| s.database.clone())
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| name.to_string()),
            // The accounts are in the copied server's own tables.
            users: Vec::new(),
        }),
        image,
        leaving,
    }
}

/// Looks at schedule `bs` and does what its [`plan`] says; `Some(wait)`: look again then.
pub async fn reconcile(bs: &BackupSchedule, ctx: &Context) -> Result<Option<Duration>, KubeError> {
    reconcile_at(bs, ctx, stratus_core::time::now_ms()).await
}

pub(crate) async fn reconcile_at(
    bs: &BackupSchedule,
    ctx: &Context,
    now_ms: i64,
) -> Result<Option<Duration>, KubeError> {
    // Read afresh: the watch's copy may be older than this controller's last status write,
    // which a plan from it would undo.
    let resource = bs.name_any();
    let Some(bs) = api::<BackupSchedule>(ctx)
        .get_opt(&resource)
        .await
        .map_err(|e| KubeError::of("read", format!("backupschedule {resource}"), e))?
    else {
        return Ok(None);
    };
    let bs = &bs;
    let seen = look(bs, ctx, now_ms).await?;
    let plan = plan(bs, &seen);
    for step in plan.steps {
        match step {
            Step::Report { id, outcome } => {
                if let Some(event) = event_of(&id, &outcome) {
                    if let Err(e) = ctx.recorder.publish(&event, &bs.object_ref(&())).await {
                        tracing::warn!(schedule = %resource, "event not recorded: {e}");
                    }
                }
            }
            Step::Start { id, started_ms } => {
                // `plan` starts a backup only with all of these known.
                let db = ServiceName::parse(&bs.spec.database).ok();
                let database = seen.database.as_ref();
                let instance = db.as_ref().map(|db| {
                    Instance::of_database(db, database.and_then(|d| d.instance.as_deref()))
                });
                let source = database.and_then(|d| d.source.clone());
                let image = database.and_then(|d| d.image.as_deref());
                let owner = bs.controller_owner_ref(&());
                let (Some(db), Some(instance), Some(source), Some(image), Some(owner)) =
                    (db, instance, source, image, owner)
                else {
                    return Err(KubeError::Server {
                        db: bs.spec.database.clone(),
                        message: format!("backup {id}: what it needs was not seen"),
                    });
                };
                let schedule = bs.spec.schedule();
                let job = backup_job::job(
                    &JobSpec {
                        database: &db,
                        instance: &instance,
                        id: &id,
                        started_at_ms: started_ms,
                        schedule: &schedule,
                        schedule_name: &resource,
                        image,
                        source,
                        owner,
                    },
                    &ctx.settings,
                );
                api::<Job>(ctx)
                    .create(&PostParams::default(), &job)
                    .await
                    .map_err(|e| KubeError::of("create", format!("job {}", job.name_any()), e))?;
                tracing::info!(schedule = %resource, backup = %id, "backup started");
            }
            Step::Status(status) => {
                let patch = super::status_merge_patch(&status, STATUS_OPTIONAL);
                api::<BackupSchedule>(ctx)
                    .patch_status(&resource, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(|e| {
                        KubeError::of(
                            "update the status of",
                            format!("backupschedule {resource}"),
                            e,
                        )
                    })?;
            }
            Step::Delete(job) => match api::<Job>(ctx)
                .delete(&job, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(KubeError::of("delete", format!("job {job}"), e)),
            },
        }
    }
    Ok(plan.requeue)
}

/// The status fields that may be left out, sent as `null` when they are ([`super::status_merge_patch`]).
const STATUS_OPTIONAL: &[&str] = &[
    "lastBackup",
    "nextRun",
    "lastRun",
    "running",
    "failed",
    "message",
];

#[cfg(test)]
mod tests;
