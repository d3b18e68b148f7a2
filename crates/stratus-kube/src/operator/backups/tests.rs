//! The backup controller's decisions (pure), then each reconcile path against the mocked API
//! server, with its exact requests: a due backup's Job made, a Job that succeeded and one that
//! failed reported and deleted, and the API refusing a Job.

use super::*;
use crate::backup_job::{BACKUP_OF_LABEL, STARTED_ANNOTATION};
use crate::mock_api::*;
use crate::objects::Settings;
use crate::operator::database::Sizes;
use crate::v1alpha1::BackupScheduleSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};
use stratus_core::time::parse_rfc3339_us;
use stratus_core::{ScuSize, Tier};

const BS: &str = "/apis/stratus.dev/v1alpha1/namespaces/stratus/backupschedules/nightly";
const DS: &str = "/apis/stratus.dev/v1alpha1/namespaces/stratus/databaseservices/shop";
const JOBS: &str = "/apis/batch/v1/namespaces/stratus/jobs";

fn ms(rfc3339: &str) -> i64 {
    parse_rfc3339_us(rfc3339).unwrap() / 1000
}

/// Made at midnight, backing `shop` up at 03:00 every day.
fn schedule(status: Option<BackupScheduleStatus>) -> BackupSchedule {
    let mut bs = BackupSchedule::new(
        "nightly",
        BackupScheduleSpec {
            database: "shop".into(),
            cron: Some("0 3 * * *".into()),
            target: Some("stratus-backups".into()),
            ..BackupScheduleSpec::default()
        },
    );
    bs.metadata.namespace = Some("stratus".into());
    bs.metadata.uid = Some("7d1e-nightly".into());
    bs.metadata.creation_timestamp = Some(Time("2026-11-30T00:00:00Z".parse().unwrap()));
    bs.status = status;
    bs
}

fn running_db(state: &str) -> Option<DatabaseSeen> {
    Some(DatabaseSeen {
        state: state.into(),
        source: Some(source()),
        image: Some("mariadb:10.11.9".into()),
        leaving: None,
        instance: None,
    })
}

use crate::backup_job::tests::source;

fn seen(now: &str, database: Option<DatabaseSeen>, jobs: Vec<JobSeen>) -> Seen {
    Seen {
        now_ms: ms(now),
        database,
        target_exists: true,
        jobs,
        others_running: Vec::new(),
    }
}

fn job_seen(id: &str, outcome: Outcome) -> JobSeen {
    JobSeen {
        name: format!("job-of-{id}"),
        id: id.into(),
        started_ms: Some(id_ms(id)),
        outcome,
    }
}

fn status_of(plan: &Plan) -> BackupScheduleStatus {
    plan.steps
        .iter()
        .find_map(|s| match s {
            Step::Status(st) => Some(st.clone()),
            _ => None,
        })
        .expect("a status step")
}

/// The status while the first backup (started 03:00:05, the next due a day later) runs.
fn under_way() -> BackupScheduleStatus {
    BackupScheduleStatus {
        last_run: Some("2026-11-30T03:00:05.000Z".into()),
        running: Some(FIRST.into()),
        next_run: Some("2026-12-01T03:00:00.000Z".into()),
        ..BackupScheduleStatus::default()
    }
}

/// The first thing a plan does beyond its status: start a backup, or tell of one.
fn acted(plan: &Plan) -> &Step {
    plan.steps
        .iter()
        .find(|s| matches!(s, Step::Start { .. } | Step::Report { .. }))
        .expect("a start or a report")
}

const FIRST: &str = "shop-20261130T030005000Z";

#[test]
fn a_due_schedule_starts_one_backup_of_a_running_database() {
    for state in ["active", "suspended"] {
        let plan = plan(
            &schedule(None),
            &seen("2026-11-30T03:00:05Z", running_db(state), vec![]),
        );
        assert_eq!(
            *acted(&plan),
            Step::Start {
                id: FIRST.into(),
                started_ms: ms("2026-11-30T03:00:05Z"),
            }
        );
        let st = status_of(&plan);
        assert_eq!(st.running.as_deref(), Some(FIRST));
        assert_eq!(st.last_run.as_deref(), Some("2026-11-30T03:00:05.000Z"));
        assert_eq!(st.next_run.as_deref(), Some("2026-12-01T03:00:00.000Z"));
        assert_eq!(plan.requeue, Some(LATER));
    }
}

#[test]
fn before_its_time_nothing_starts_and_the_next_look_is_at_that_time() {
    let plan = plan(
        &schedule(None),
        &seen("2026-11-30T02:59:00Z", running_db("active"), vec![]),
    );
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Start { .. })));
    assert_eq!(
        status_of(&plan).next_run.as_deref(),
        Some("2026-11-30T03:00:00.000Z")
    );
    assert_eq!(plan.requeue, Some(Duration::from_secs(60)));
    // Once the status says so, a look writes nothing.
    let st = status_of(&plan);
    let again = super::plan(
        &schedule(Some(st)),
        &seen("2026-11-30T02:59:30Z", running_db("active"), vec![]),
    );
    assert!(again.steps.is_empty(), "{:?}", again.steps);
    assert_eq!(again.requeue, Some(Duration::from_secs(30)));
}

#[test]
fn while_a_backup_runs_no_other_starts() {
    let status = BackupScheduleStatus {
        next_run: None,
        ..under_way()
    };
    // A day later the next is due, but the first has not ended.
    let plan = plan(
        &schedule(Some(status)),
        &seen(
            "2026-12-01T03:00:05Z",
            running_db("active"),
            vec![job_seen(FIRST, Outcome::Running)],
        ),
    );
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Start { .. })));
    assert_eq!(plan.requeue, Some(LATER));
}

#[test]
fn a_job_that_succeeded_is_reported_once_recorded_and_deleted() {
    let status = BackupScheduleStatus {
        last_run: Some("2026-11-30T03:00:05.000Z".into()),
        running: Some(FIRST.into()),
        failed: Some("shop-20261129T030005000Z".into()),
        message: Some("backup shop-20261129T030005000Z failed: copy exited with 1".into()),
        next_run: Some("2026-12-01T03:00:00.000Z".into()),
        ..BackupScheduleStatus::default()
    };
    let done = vec![job_seen(FIRST, Outcome::Succeeded)];
    let plan = plan(
        &schedule(Some(status)),
        &seen("2026-11-30T03:02:00Z", running_db("active"), done.clone()),
    );
    assert_eq!(
        *acted(&plan),
        Step::Report {
            id: FIRST.into(),
            outcome: Outcome::Succeeded
        }
    );
    let st = status_of(&plan);
    assert_eq!(st.last_backup.as_deref(), Some(FIRST));
    assert_eq!(
        (&st.running, &st.failed, &st.message),
        (&None, &None, &None)
    );
    assert_eq!(
        plan.steps.last(),
        Some(&Step::Delete(format!("job-of-{FIRST}")))
    );
    // Had the Job's deletion failed, the next look deletes it without a second report.
    let again = super::plan(
        &schedule(Some(st)),
        &seen("2026-11-30T03:02:01Z", running_db("active"), done),
    );
    assert_eq!(again.steps, vec![Step::Delete(format!("job-of-{FIRST}"))]);
}

#[test]
fn a_failed_backup_is_reported_and_not_tried_again_before_the_next_time() {
    let status = under_way();
    let why = "copy exited with 1: Access denied for user 'stratus_admin'";
    let plan = plan(
        &schedule(Some(status)),
        &seen(
            "2026-11-30T03:01:00Z",
            running_db("active"),
            vec![job_seen(FIRST, Outcome::Failed(why.into()))],
        ),
    );
    assert!(matches!(acted(&plan), Step::Report { outcome: Outcome::Failed(w), .. } if w == why));
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Start { .. })));
    let st = status_of(&plan);
    assert_eq!(st.failed.as_deref(), Some(FIRST));
    assert_eq!(
        st.message.as_deref(),
        Some(format!("backup {FIRST} failed: {why}").as_str())
    );
    assert_eq!(st.running, None);
    assert_eq!(st.next_run.as_deref(), Some("2026-12-01T03:00:00.000Z"));
    let event = event_of(FIRST, &Outcome::Failed(why.into())).unwrap();
    assert_eq!(
        (event.reason.as_str(), event.type_),
        ("BackupFailed", EventType::Warning)
    );
}

#[test]
fn a_database_without_a_server_gets_no_job_and_the_status_says_why() {
    let cases = [
        (
            running_db("parked"),
            "is parked: it is backed up when it next wakes",
            LATER,
        ),
        (
            running_db("provisioning"),
            "waiting for database shop to run (it is provisioning)",
            SOON,
        ),
        (running_db(""), "(it is new)", SOON),
        (None, "database shop does not exist", LATER),
    ];
    for (db, says, wait) in cases {
        let plan = plan(&schedule(None), &seen("2026-11-30T03:00:05Z", db, vec![]));
        assert!(!plan.steps.iter().any(|s| matches!(s, Step::Start { .. })));
        let st = status_of(&plan);
        assert!(st.message.as_deref().unwrap().contains(says), "{st:?}");
        assert_eq!(st.last_run, None, "still due once it can be taken");
        assert_eq!(plan.requeue, Some(wait));
    }
}

#[test]
fn a_schedule_turned_off_or_malformed_takes_nothing() {
    let mut off = schedule(None);
    off.spec.cron = Some(String::new());
    let plan_off = plan(
        &off,
        &seen("2026-11-30T03:00:05Z", running_db("active"), vec![]),
    );
    assert!(plan_off.steps.is_empty(), "{:?}", plan_off.steps);
    assert_eq!(plan_off.requeue, None);
    let mut bad = schedule(None);
    bad.spec.cron = Some("every night".into());
    let plan_bad = plan(
        &bad,
        &seen("2026-11-30T03:00:05Z", running_db("active"), vec![]),
    );
    assert!(
        !plan_bad
            .steps
            .iter()
            .any(|s| matches!(s, Step::Start { .. }))
    );
    assert!(
        status_of(&plan_bad)
            .message
            .unwrap()
            .starts_with("cron \"every night\"")
    );
}

#[test]
fn a_lost_status_write_does_not_start_a_second_backup_for_the_same_time() {
    // The Job was made, but the status that says so was never written (or this look saw an
    // older copy of the schedule): its start still counts.
    let plan = plan(
        &schedule(None),
        &seen(
            "2026-11-30T03:20:00Z",
            running_db("active"),
            vec![job_seen(FIRST, Outcome::Succeeded)],
        ),
    );
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::Start { .. })),
        "{:?}",
        plan.steps
    );
    let st = status_of(&plan);
    assert_eq!(st.last_run.as_deref(), Some("2026-11-30T03:00:05.000Z"));
    assert_eq!(st.last_backup.as_deref(), Some(FIRST));
}

#[test]
fn backups_compare_by_their_time_not_their_name() {
    // Pointed at another database whose name sorts first: its newer backup is still newer.
    let mut bs = schedule(Some(BackupScheduleStatus {
        last_backup: Some("shop-20261129T030005000Z".into()),
        last_run: Some("2026-11-30T03:00:05.000Z".into()),
        ..BackupScheduleStatus::default()
    }));
    bs.spec.database = "a-shop".into();
    let id = "a-shop-20261130T030005000Z";
    let plan = plan(
        &bs,
        &seen(
            "2026-11-30T03:02:00Z",
            running_db("active"),
            vec![job_seen(id, Outcome::Succeeded)],
        ),
    );
    assert_eq!(status_of(&plan).last_backup.as_deref(), Some(id));
}

#[test]
fn a_database_leaving_its_node_ends_its_backup_and_gets_no_new_one() {
    for why in ["it is moving to node node-b", "it is being parked"] {
        let leaving = Some(DatabaseSeen {
            leaving: Some(why.into()),
            ..running_db("active").unwrap()
        });
        let status = BackupScheduleStatus {
            next_run: None,
            ..under_way()
        };
        let under_way = vec![job_seen(FIRST, Outcome::Running)];
        let plan = plan(
            &schedule(Some(status)),
            &seen("2026-11-30T03:01:00Z", leaving.clone(), under_way),
        );
        assert!(
            matches!(acted(&plan), Step::Report { outcome: Outcome::Failed(w), .. } if w == &format!("ended: {why}"))
        );
        assert_eq!(
            plan.steps.last(),
            Some(&Step::Delete(format!("job-of-{FIRST}")))
        );
        // And none starts while it leaves.
        let next = super::plan(
            &schedule(None),
            &seen("2026-11-30T03:00:05Z", leaving, vec![]),
        );
        assert!(!next.steps.iter().any(|s| matches!(s, Step::Start { .. })));
        assert!(status_of(&next).message.unwrap().contains(why));
        assert_eq!(next.requeue, Some(SOON));
    }
}

#[test]
fn one_backup_of_a_database_at_a_time_across_schedules_and_only_to_a_claim_that_exists() {
    let mut busy = seen("2026-11-30T03:00:05Z", running_db("active"), vec![]);
    busy.others_running = vec!["shop-20261130T030000000Z".into()];
    let plan_busy = plan(&schedule(None), &busy);
    assert!(
        !plan_busy
            .steps
            .iter()
            .any(|s| matches!(s, Step::Start { .. }))
    );
    assert!(
        status_of(&plan_busy)
            .message
            .unwrap()
            .contains("by another schedule")
    );
    let mut no_claim = seen("2026-11-30T03:00:05Z", running_db("active"), vec![]);
    no_claim.target_exists = false;
    let plan_no_claim = plan(&schedule(None), &no_claim);
    assert!(
        !plan_no_claim
            .steps
            .iter()
            .any(|s| matches!(s, Step::Start { .. }))
    );
    assert_eq!(
        status_of(&plan_no_claim).message.as_deref(),
        Some("the backup volume claim stratus-backups does not exist")
    );
    let not_ready = Some(DatabaseSeen {
        image: None,
        ..running_db("active").unwrap()
    });
    let plan_not_ready = plan(
        &schedule(None),
        &seen("2026-11-30T03:00:05Z", not_ready, vec![]),
    );
    assert!(
        status_of(&plan_not_ready)
            .message
            .unwrap()
            .contains("pod of database shop to be ready")
    );
}

// Against the mocked API server.

fn context(script: Vec<Exchange>) -> (Context, Verifier) {
    let (client, verifier) = serve(script);
    let sizes = Sizes {
        scu: ScuSize::default(),
        proxy_host: "stratus-proxy.stratus.svc".into(),
        proxy_port: 3306,
    };
    (
        Context::new(client, Settings::default(), sizes, "pod-a"),
        verifier,
    )
}

fn database_answer(state: &str) -> Value {
    json!({"apiVersion": "stratus.dev/v1alpha1", "kind": "DatabaseService",
           "metadata": {"name": "shop", "namespace": "stratus"},
           "spec": {"tier": "standard", "maxScu": 4},
           "status": {"state": state, "database": "shop"}})
}

fn jobs_answer(items: Vec<Value>) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": "7"}, "items": items})
}

/// A Job of schedule `nightly` with `conditions`.
fn job_answer(id: &str, conditions: Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "shop-backup-20261130030005", "namespace": "stratus",
                        "labels": {BACKUP_OF_LABEL: "shop"},
                        "annotations": {ID_ANNOTATION: id, STARTED_ANNOTATION: "2026-11-30T03:00:05.000Z"},
                        "ownerReferences": [{"apiVersion": "stratus.dev/v1alpha1", "kind": "BackupSchedule",
                                             "name": "nightly", "uid": "7d1e-nightly", "controller": true}]},
           "status": {"conditions": conditions}})
}

/// The reads every look makes: the schedule afresh (`bs` as the API server holds it), the
/// database and its pod, the target claim, then the Jobs.
fn look_script(bs: &BackupSchedule, state: &str, jobs: Vec<Value>) -> Vec<Exchange> {
    vec![
        expect("GET", BS).answer(200, serde_json::to_value(bs).unwrap()),
        expect("GET", DS).answer(200, database_answer(state)),
        expect("GET", &format!("{NS}/pods/db-shop-0")).answer(
            200,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-shop-0"},
                   "spec": {"containers": [{"name": "mariadb", "image": "mariadb:10.11.9"},
                                           {"name": "agent", "image": "stratus:1"}]},
                   "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
        expect("GET", &format!("{NS}/persistentvolumeclaims/stratus-backups")).answer(
            200,
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": "stratus-backups"},
                   "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}}}}),
        ),
        expect(
            "GET",
            &format!(
                "{JOBS}?&labelSelector=app.kubernetes.io%2Fcomponent%3Dbackup%2Capp.kubernetes.io%2Fmanaged-by%3Dstratus"
            ),
        )
        .answer(200, jobs_answer(jobs)),
    ]
}

fn schedule_event(reason: &'static str, kind: &'static str, note_has: &'static str) -> Exchange {
    expect("POST", "/apis/events.k8s.io/v1/namespaces/stratus/events?")
        .checked(JSON, move |body| {
            assert_eq!(body["reason"], reason, "{body}");
            assert_eq!(body["type"], kind);
            assert_eq!(body["regarding"]["kind"], "BackupSchedule");
            assert_eq!(body["regarding"]["name"], "nightly");
            assert!(body["note"].as_str().unwrap().contains(note_has), "{body}");
        })
        .answer(
            201,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                   "metadata": {"name": "nightly.1", "namespace": "stratus"},
                   "eventTime": "2026-11-30T03:00:00.000000Z"}),
        )
}

/// The Job of the first backup deleted once its end is recorded.
fn job_deleted() -> Exchange {
    expect("DELETE", &format!("{JOBS}/shop-backup-20261130030005?"))
        .body(JSON, json!({"propagationPolicy": "Background"}))
        .answer(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        )
}

fn status_answer() -> Value {
    serde_json::to_value(schedule(None)).unwrap()
}

#[tokio::test]
async fn a_due_backup_is_a_job_on_the_databases_node_and_the_status_says_so() {
    let mut script = look_script(&schedule(None), "active", vec![]);
    script.push(
        expect("POST", &format!("{JOBS}?"))
            .checked(JSON, |body| {
                assert_eq!(
                    body["spec"]["template"]["spec"]["initContainers"][0]["image"],
                    "mariadb:10.11.9",
                    "the image the server runs"
                );
                assert_eq!(body["metadata"]["name"], "shop-backup-20261130030005");
                assert_eq!(body["metadata"]["annotations"][ID_ANNOTATION], FIRST);
                let owner = &body["metadata"]["ownerReferences"][0];
                assert_eq!(
                    (&owner["kind"], &owner["uid"], &owner["controller"]),
                    (
                        &json!("BackupSchedule"),
                        &json!("7d1e-nightly"),
                        &json!(true)
                    )
                );
                let pod = &body["spec"]["template"]["spec"];
                assert_eq!(
                    pod["volumes"][2]["persistentVolumeClaim"]["claimName"],
                    "stratus-backups"
                );
                let args = &pod["containers"][0]["args"];
                let source: Source = serde_json::from_str(
                    args[args.as_array().unwrap().len() - 1].as_str().unwrap(),
                )
                .unwrap();
                assert_eq!(
                    source,
                    Source {
                        max_scu: 4,
                        ..source_of_answer()
                    }
                );
            })
            .answer(201, job_answer(FIRST, json!([]))),
    );
    script.push(
        expect("PATCH", &format!("{BS}/status?"))
            .body(
                MERGE,
                json!({"status": {"lastBackup": null, "nextRun": "2026-12-01T03:00:00.000Z",
                                  "lastRun": "2026-11-30T03:00:05.000Z", "running": FIRST,
                                  "failed": null, "message": null}}),
            )
            .answer(200, status_answer()),
    );
    let (ctx, verifier) = context(script);
    let requeue = reconcile_at(&schedule(None), &ctx, ms("2026-11-30T03:00:05Z"))
        .await
        .unwrap();
    assert_eq!(requeue, Some(LATER));
    drop(ctx);
    verifier.finished().await;
}

/// The settings `database_answer` gives, as recorded.
fn source_of_answer() -> Source {
    Source {
        tier: Tier::Standard,
        min_scu: 1,
        max_scu: 16,
        storage_gb: 10,
        require_tls: false,
        schema: "shop".into(),
        users: Vec::new(),
    }
}

#[tokio::test]
async fn a_job_that_succeeded_is_reported_recorded_and_deleted() {
    let status = under_way();
    let mut script = look_script(
        &schedule(Some(status.clone())),
        "active",
        vec![job_answer(
            FIRST,
            json!([{"type": "Complete", "status": "True"}]),
        )],
    );
    script.push(
        expect("PATCH", &format!("{BS}/status?"))
            .body(
                MERGE,
                json!({"status": {"lastBackup": FIRST, "nextRun": "2026-12-01T03:00:00.000Z",
                                  "lastRun": "2026-11-30T03:00:05.000Z", "running": null,
                                  "failed": null, "message": null}}),
            )
            .answer(200, status_answer()),
    );
    script.push(schedule_event("BackedUp", "Normal", FIRST));
    script.push(job_deleted());
    let (ctx, verifier) = context(script);
    let requeue = reconcile_at(&schedule(Some(status)), &ctx, ms("2026-11-30T03:02:00Z"))
        .await
        .unwrap();
    // The next look is at the next time (capped at an hour).
    assert_eq!(requeue, Some(Duration::from_secs(3600)));
    drop(ctx);
    verifier.finished().await;
}

#[tokio::test]
async fn a_failed_job_is_reported_with_its_pods_last_lines() {
    let status = under_way();
    let mut script = look_script(
        &schedule(Some(status.clone())),
        "active",
        vec![job_answer(
            FIRST,
            json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit"}]),
        )],
    );
    script.push(
        expect(
            "GET",
            "/api/v1/namespaces/stratus/pods?&labelSelector=batch.kubernetes.io%2Fjob-name%3Dshop-backup-20261130030005",
        )
        .answer(
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shop-backup-20261130030005-x7k2p"},
                "status": {"phase": "Failed", "initContainerStatuses": [{
                    "name": "copy", "image": "mariadb:10.11", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 1, "reason": "Error",
                        "message": "[00] 2026-11-30 03:00:07 Connecting to server host: db-shop-0.db-shop, user: stratus_admin\nFailed to connect to MariaDB server: Access denied for user 'stratus_admin'@'10.0.0.9'\n"}}}]}}]}),
        ),
    );
    script.push(
        expect("PATCH", &format!("{BS}/status?"))
            .checked(MERGE, |body| {
                let st = &body["status"];
                assert_eq!(st["failed"], FIRST);
                assert_eq!(st["running"], Value::Null);
                assert_eq!(st["lastBackup"], Value::Null);
                assert!(
                    st["message"].as_str().unwrap().contains("Access denied"),
                    "{st}"
                );
            })
            .answer(200, status_answer()),
    );
    script.push(schedule_event(
        "BackupFailed",
        "Warning",
        "copy exited with 1: [00] 2026-11-30 03:00:07 Connecting to server host: db-shop-0.db-shop, user: stratus_admin / Failed to connect to MariaDB server: Access denied",
    ));
    script.push(job_deleted());
    let (ctx, verifier) = context(script);
    reconcile_at(&schedule(Some(status)), &ctx, ms("2026-11-30T03:01:00Z"))
        .await
        .unwrap();
    drop(ctx);
    verifier.finished().await;
}

#[tokio::test]
async fn a_job_the_api_refuses_is_an_error_and_the_status_is_left_as_it_was() {
    let mut script = look_script(&schedule(None), "active", vec![]);
    script.push(expect("POST", &format!("{JOBS}?")).checked(JSON, |_| {}).answer(
        403,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
               "message": "jobs.batch is forbidden: exceeded quota: compute-resources"}),
    ));
    let (ctx, verifier) = context(script);
    let e = reconcile_at(&schedule(None), &ctx, ms("2026-11-30T03:00:05Z"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(403));
    assert!(e.to_string().contains("exceeded quota"), "{e}");
    drop(ctx);
    verifier.finished().await;
}
