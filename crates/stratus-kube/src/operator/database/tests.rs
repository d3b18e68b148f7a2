//! The controller's decisions (pure), then each reconcile path against the mocked API server:
//! the exact requests, in order, for a new database, one as it should be, a deletion, a
//! conflict on the finalizer, an API error in the middle, and a spec the operator refuses.

use super::*;
use crate::instance::Instance;
use crate::mock_api::*;
use crate::objects::{self as objects_of, Settings};
use crate::operator::{Context, server};
use crate::runtime::ClaimView;
use crate::v1alpha1::DatabaseServiceSpec;
use serde_json::{Value, json};
use std::sync::Arc;
use stratus_core::Tier;

const CR: &str = "/apis/stratus.dev/v1alpha1/namespaces/stratus/databaseservices/shop";

fn sizes() -> Sizes {
    Sizes {
        scu: ScuSize::default(),
        proxy_host: "stratus-proxy.stratus.svc".into(),
        proxy_port: 3306,
    }
}

/// A resource as the API server hands it to the controller.
fn resource(finalizers: &[&str], deleting: bool) -> DatabaseService {
    let mut ds = DatabaseService::new(
        "shop",
        DatabaseServiceSpec {
            tier: Tier::Standard,
            min_scu: Some(2),
            max_scu: Some(4),
            storage_gb: Some(20),
            ..DatabaseServiceSpec::default()
        },
    );
    ds.metadata.namespace = Some("stratus".into());
    ds.metadata.resource_version = Some("100".into());
    ds.metadata.generation = Some(3);
    ds.metadata.uid = Some("5f0c1a2e-shop".into());
    ds.status = Some(made());
    ds.metadata.finalizers =
        (!finalizers.is_empty()).then(|| finalizers.iter().map(|f| f.to_string()).collect());
    if deleting {
        ds.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-01T23:00:00Z".parse().unwrap(),
            ));
    }
    ds
}

/// When an active database that has just been seen busy is looked at again: when its policy's
/// idle time (10 s by default) would be up.
const IDLE: Duration = Duration::from_secs(10);

/// The status of a database whose owner was made: what every test but the provisioning ones
/// starts from.
fn made() -> DatabaseServiceStatus {
    DatabaseServiceStatus {
        owner_created: true,
        ..DatabaseServiceStatus::default()
    }
}

fn instance() -> InstanceSpec {
    let scu = ScuSize::default();
    InstanceSpec {
        name: ServiceName::parse("shop").unwrap(),
        resources: scu.resources(2),
        max_resources: scu.resources(4),
        storage_bytes: 20 << 30,
        node: String::new(),
    }
}

fn ready_pod() -> PodView {
    PodView {
        phase: "Running".into(),
        ready: true,
        node: Some("node-a".into()),
        cpu_limit_millis: Some(1000),
        memory_limit_bytes: Some(4 << 30),
        resize_pending: None,
        restarts: 0,
        ip: Some("10.0.0.7".into()),
        port: Some(3306),
        deleting: false,
        unschedulable: None,
        instance: None,
        restore_failed: None,
    }
}

/// What the cluster says when only the pod matters.
fn seen_pod(pod: PodView) -> Seen {
    Seen {
        pod: Some(pod),
        ..Seen::default()
    }
}

fn status_of(plan: &Plan) -> DatabaseServiceStatus {
    plan.steps
        .iter()
        .find_map(|s| match s {
            Step::Status(st) => Some(st.clone()),
            _ => None,
        })
        .expect("a status step")
}

#[test]
fn a_new_resource_gets_the_finalizer_before_anything_is_made() {
    let plan = plan(&resource(&[], false), &Seen::default(), &sizes());
    assert_eq!(plan.steps[0], Step::AddFinalizer);
    assert_eq!(plan.steps[1], Step::Apply(instance()));
    let st = status_of(&plan);
    assert_eq!(
        (st.state.as_str(), st.scu, st.observed_generation),
        ("provisioning", 2, Some(3))
    );
    assert_eq!(
        plan.requeue,
        Some(SOON),
        "looked at again until its pod is ready"
    );
}

#[test]
fn a_ready_database_reports_its_pod_and_is_looked_at_in_time_for_its_idle_clock() {
    let seen = Seen {
        pod: Some(ready_pod()),
        ..Seen::default()
    };
    let plan = plan(&resource(&[FINALIZER], false), &seen, &sizes());
    assert_eq!(
        plan.steps,
        [
            Step::Apply(instance()),
            Step::PublishAccounts,
            Step::Status(status_of(&plan))
        ],
        "apply (idempotent), the accounts for the proxy, status"
    );
    let st = status_of(&plan);
    assert_eq!(st.state, "active");
    assert_eq!(
        (st.node.as_str(), st.cpu_limit, st.memory_limit_bytes),
        ("node-a", 1.0, 4 << 30)
    );
    assert_eq!(
        (st.host.as_str(), st.port, st.database.as_str()),
        ("stratus-proxy.stratus.svc", 3306, "shop")
    );
    assert_eq!(plan.requeue, Some(IDLE));
}

#[test]
fn a_resize_the_node_cannot_do_shows_in_the_status() {
    let mut pod = ready_pod();
    pod.resize_pending = Some("Infeasible".into());
    let plan = plan(&resource(&[FINALIZER], false), &seen_pod(pod), &sizes());
    assert_eq!(
        status_of(&plan).message.as_deref(),
        Some("a resize is pending: Infeasible")
    );
}

#[test]
fn a_pod_no_node_can_take_shows_why_in_the_status() {
    let mut ds = resource(&[FINALIZER], false);
    ds.spec.node = Some("node-z".into());
    ds.status = Some(DatabaseServiceStatus {
        state: "migrating".into(),
        moving: Some(Moving {
            to: "node-z".into(),
            phase: "cut-over".into(),
        }),
        ..made()
    });
    let mut pod = ready_pod();
    (pod.ready, pod.node) = (false, None);
    pod.unschedulable = Some(
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.".into(),
    );
    let plan = plan(&ds, &seen_pod(pod), &sizes());
    let st = status_of(&plan);
    assert_eq!(st.state, "migrating");
    assert_eq!(
        st.message.as_deref(),
        Some(
            "the pod cannot be scheduled: 0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
        )
    );
}

#[test]
fn deletion_removes_everything_and_lets_the_resource_go_once_the_volume_is_gone() {
    let ds = resource(&["other.io/keep", FINALIZER], true);
    let made = Seen {
        set: Some(SetView {
            claim_template_bytes: 20 << 30,
            replicas: 1,
            applied: None,
            foreign: false,
        }),
        claim: Some(ClaimView {
            requested_bytes: 20 << 30,
            deleting: false,
        }),
        ..Seen::default()
    };
    let plan = plan(&ds, &made, &sizes());
    assert_eq!(
        (plan.steps, plan.requeue),
        (vec![Step::Destroy], Some(SOON))
    );
    let going = Seen {
        claim: Some(ClaimView {
            requested_bytes: 20 << 30,
            deleting: true,
        }),
        ..Seen::default()
    };
    let plan = super::plan(&ds, &going, &sizes());
    assert_eq!(
        (plan.steps, plan.requeue),
        (vec![], Some(SOON)),
        "waits for the claim to go"
    );
    let plan = super::plan(&ds, &Seen::default(), &sizes());
    assert_eq!(
        (plan.steps, plan.requeue),
        (vec![Step::RemoveFinalizer], None)
    );
    let plan = super::plan(&resource(&["other.io/keep"], true), &made, &sizes());
    assert!(plan.steps.is_empty(), "not ours to clean up");
}

#[test]
fn the_size_stays_what_the_status_says_within_the_bounds_and_the_pod_follows() {
    let mut ds = resource(&[FINALIZER], false);
    ds.status = Some(DatabaseServiceStatus {
        scu: 3,
        ..Default::default()
    });
    let three = ScuSize::default().resources(3);
    let seen = Seen {
        pod: Some(ready_pod()),
        ..Seen::default()
    };
    let plan = plan(&ds, &seen, &sizes());
    assert!(
        plan.steps.contains(&Step::Resize(three)),
        "the pod runs 2 SCU: {plan:?}"
    );
    assert_eq!(status_of(&plan).scu, 3);
    ds.spec.max_scu = Some(2);
    let plan = super::plan(&ds, &seen, &sizes());
    assert_eq!(
        status_of(&plan).scu,
        2,
        "an edit of the bounds moves the size into them"
    );
    let mut pending = ready_pod();
    pending.resize_pending = Some("Deferred".into());
    ds.spec.max_scu = Some(4);
    let plan = super::plan(&ds, &seen_pod(pending), &sizes());
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::Resize(_))),
        "one resize at a time"
    );
}

#[test]
fn storage_grows_by_the_claim_and_never_through_the_template() {
    let mut ds = resource(&[FINALIZER], false);
    ds.spec.storage_gb = Some(50);
    let seen = Seen {
        set: Some(SetView {
            claim_template_bytes: 20 << 30,
            replicas: 1,
            applied: None,
            foreign: false,
        }),
        claim: Some(ClaimView {
            requested_bytes: 20 << 30,
            deleting: false,
        }),
        ..Seen::default()
    };
    let plan = plan(&ds, &seen, &sizes());
    let Step::Apply(applied) = &plan.steps[0] else {
        panic!("{plan:?}")
    };
    assert_eq!(
        applied.storage_bytes,
        20 << 30,
        "a claim template cannot change"
    );
    assert!(plan.steps.contains(&Step::GrowStorage(50 << 30)));
    ds.spec.storage_gb = Some(10);
    let plan = super::plan(&ds, &seen, &sizes());
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::GrowStorage(_))));
    assert_eq!(
        status_of(&plan).message.as_deref(),
        Some("storage cannot shrink: the volume stays at 20 GiB")
    );
}

#[test]
fn a_spec_the_schema_let_through_but_stratus_refuses_makes_nothing() {
    let mut ds = resource(&[], false);
    ds.spec.tier = Tier::Free;
    ds.spec.max_scu = Some(8);
    let plan = plan(&ds, &Seen::default(), &sizes());
    assert_eq!(plan.steps.len(), 1, "{plan:?}");
    let st = status_of(&plan);
    assert_eq!(st.state, "invalid");
    assert!(st.message.unwrap().contains("exceeds the free tier's cap"));
    assert_eq!(plan.requeue, None, "only an edit can mend it");
}

#[test]
fn back_off_doubles_to_five_minutes() {
    let secs: Vec<u64> = [1, 2, 3, 4, 9, 10, 40]
        .map(|n| backoff(n).as_secs())
        .to_vec();
    assert_eq!(secs, [1, 2, 4, 8, 256, 300, 300]);
}

/// Reconciles `ds` once against `script`, and checks the script was followed to its end.
async fn reconcile_once(
    ds: &DatabaseService,
    script: Vec<Exchange>,
) -> Result<Option<Duration>, KubeError> {
    let (ctx, verifier) = context(script);
    let result = reconcile(ds, &ctx).await;
    drop(ctx);
    verifier.finished().await;
    result
}

/// A context whose servers are scripted: no test reaches a real one.
fn context(script: Vec<Exchange>) -> (Context, Verifier) {
    let (client, verifier) = serve(script);
    (
        Context::new(client, Settings::default(), sizes(), "pod-a")
            .with_servers(Arc::new(ScriptedSql::default())),
        verifier,
    )
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{what} not found"),
           "reason": "NotFound", "code": 404})
}

fn cr_answer(ds: &DatabaseService) -> Value {
    serde_json::to_value(ds).unwrap()
}

/// The finalizer put on a new resource (read at version 100); the server answers `answer`.
fn add_finalizer(answer: &DatabaseService) -> Exchange {
    expect("PATCH", &format!("{CR}?"))
        .body(
            MERGE,
            json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "100"}}),
        )
        .answer(200, cr_answer(answer))
}

/// The requests of `KubeRuntime::apply` for a database whose Secret exists.
fn apply_requests() -> Vec<Exchange> {
    apply_requests_of(&instance())
}

fn apply_requests_of(spec: &InstanceSpec) -> Vec<Exchange> {
    let s = Settings::default();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-shop"},
                        "data": {"password": "cHc=", "init.sql": "eA=="}});
    let cm =
        serde_json::to_value(objects_of::config_map(&Instance::of(&spec.name), spec, &s)).unwrap();
    let svc = serde_json::to_value(objects_of::service(&Instance::of(&spec.name), &s)).unwrap();
    let sts = serde_json::to_value(objects_of::stateful_set(
        &Instance::of(&spec.name),
        spec,
        &s,
    ))
    .unwrap();
    vec![
        expect("GET", &format!("{NS}/secrets/db-shop")).answer(200, secret),
        expect("PATCH", &format!("{NS}/configmaps/db-shop{APPLIED}"))
            .body(APPLY, cm.clone())
            .answer(200, cm),
        expect("PATCH", &format!("{NS}/services/db-shop{APPLIED}"))
            .body(APPLY, svc.clone())
            .answer(200, svc),
        expect("PATCH", &format!("{APPS}/statefulsets/db-shop{APPLIED}"))
            .body(APPLY, sts.clone())
            .answer(200, sts),
    ]
}

fn status_request(state: &str) -> Exchange {
    let want_state = state.to_owned();
    expect("PATCH", &format!("{CR}/status?")).checked(MERGE, move |body| {
        assert_eq!(body["status"]["state"], want_state.as_str(), "{body}");
        assert_eq!(body["status"]["observedGeneration"], 3);
        assert_eq!(body["status"]["database"], "shop");
    })
}

/// What `reconcile` reads first: the pod (not when deleting), the StatefulSet, the claim. The
/// StatefulSet records nothing applied (an earlier operator made it), so it is applied again.
fn observe(pod: Option<Value>, made: bool) -> Vec<Exchange> {
    observe_set(pod, made.then(|| unrecorded(&instance())))
}

/// The StatefulSet of `spec` without its record of what was applied.
fn unrecorded(spec: &InstanceSpec) -> Value {
    let mut sts = serde_json::to_value(objects_of::stateful_set(
        &Instance::of(&spec.name),
        spec,
        &Settings::default(),
    ))
    .unwrap();
    sts["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    sts
}

fn observe_set(pod: Option<Value>, set: Option<Value>) -> Vec<Exchange> {
    let mut out = Vec::new();
    if let Some(pod) = pod {
        out.push(expect("GET", &format!("{NS}/pods/db-shop-0")).answer(200, pod));
    }
    if let Some(sts) = set {
        out.push(expect("GET", &format!("{APPS}/statefulsets/db-shop")).answer(200, sts));
        out.push(expect("GET", &format!("{NS}/persistentvolumeclaims/data-db-shop-0")).answer(
            200,
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": "data-db-shop-0", "namespace": "stratus"},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
                   "status": {"phase": "Bound", "capacity": {"storage": "20Gi"}}}),
        ));
    } else {
        out.push(
            expect("GET", &format!("{APPS}/statefulsets/db-shop"))
                .answer(404, not_found("statefulsets.apps \"db-shop\"")),
        );
        out.push(
            expect(
                "GET",
                &format!("{NS}/persistentvolumeclaims/data-db-shop-0"),
            )
            .answer(404, not_found("persistentvolumeclaims \"data-db-shop-0\"")),
        );
        // No objects of its own: a spare it claimed whose record was lost is looked for.
        out.push(
            expect(
                "GET",
                &format!(
                    "{APPS}/statefulsets?&labelSelector=stratus.dev%2Fdatabase%3Dshop%2Cstratus.dev%2Finstance"
                ),
            )
            .answer(
                200,
                json!({"apiVersion": "apps/v1", "kind": "StatefulSetList",
                       "metadata": {"resourceVersion": "50"}, "items": []}),
            ),
        );
    }
    out
}

/// The Event the operator records for what it did.
fn event(reason: &'static str, kind: &'static str) -> Exchange {
    expect_event("stratus-operator", "pod-a", reason, kind, None)
}

fn no_pod() -> Exchange {
    expect("GET", &format!("{NS}/pods/db-shop-0")).answer(404, not_found("pods \"db-shop-0\""))
}

#[tokio::test]
async fn reconciling_a_new_resource_asks_for_exactly_this() {
    let ds = resource(&[], false);
    let mut with_finalizer = ds.clone();
    with_finalizer.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let mut script = vec![no_pod()];
    script.extend(observe(None, false));
    script.push(add_finalizer(&with_finalizer));
    script.extend(apply_requests());
    script.push(status_request("provisioning").answer(200, cr_answer(&with_finalizer)));
    script.push(event("Created", "Normal"));
    assert_eq!(reconcile_once(&ds, script).await.unwrap(), Some(SOON));
}

#[tokio::test]
async fn a_resource_changed_meanwhile_is_a_conflict_and_nothing_is_made() {
    let ds = resource(&[], false);
    let mut script = vec![no_pod()];
    script.extend(observe(None, false));
    script.push(
        expect("PATCH", &format!("{CR}?"))
            .body(MERGE, json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "100"}}))
            .answer(409, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                "message": "Operation cannot be fulfilled on databaseservices.stratus.dev \"shop\": the object has been modified; please apply your changes to the latest version and try again"})),
    );
    let e = reconcile_once(&ds, script).await.unwrap_err();
    assert_eq!(e.code(), Some(409));
}

#[tokio::test]
async fn a_failed_reconcile_says_why_in_a_warning_event_and_backs_off() {
    let ds = resource(&[], false);
    let mut script = vec![no_pod()];
    script.extend(observe(None, false));
    script.push(
        expect("PATCH", &format!("{CR}?"))
            .body(MERGE, json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "100"}}))
            .answer(503, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "ServiceUnavailable",
                "code": 503, "message": "the server is currently unable to handle the request"})),
    );
    script.push(
        expect("POST", "/apis/events.k8s.io/v1/namespaces/stratus/events?")
            .checked(JSON, |body| {
                assert_eq!((&body["type"], &body["reason"]), (&json!("Warning"), &json!("ReconcileFailed")));
                assert_eq!(
                    body["note"],
                    "Kubernetes refused to update the finalizers of databaseservice shop: the server is currently unable to handle the request (503 ServiceUnavailable)"
                );
            })
            .answer(201, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                                "metadata": {"name": "shop.2", "namespace": "stratus"},
                                "eventTime": "2026-12-01T23:00:00.000000Z"})),
    );
    let (ctx, verifier) = context(script);
    let ctx = Arc::new(ctx);
    let ds = Arc::new(ds);
    let e = crate::operator::reconcile(ds.clone(), ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(503));
    assert_eq!(
        ctx.metrics
            .failed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let action = crate::operator::error_policy(ds, &e, ctx.clone());
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(backoff(1))
    );
    drop(ctx);
    verifier.finished().await;
}

#[test]
fn an_events_note_is_cut_at_a_character_boundary_within_one_kib() {
    let long = "€".repeat(400); // 3 bytes each: 1,024 falls inside one
    let note = crate::operator::note_of(&long);
    assert_eq!(note.len(), 1023);
    assert!(long.starts_with(&note));
}

#[tokio::test]
async fn deleting_a_resource_removes_its_objects_and_waits_for_them_to_go() {
    let ds = resource(&["other.io/keep", FINALIZER], true);
    let bg = json!({"propagationPolicy": "Background"});
    let deleted = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
    let mut script = observe(None, true);
    script.extend(
        [
            format!("{APPS}/statefulsets/db-shop?"),
            format!("{NS}/services/db-shop?"),
            format!("{NS}/configmaps/db-shop?"),
            format!("{NS}/secrets/db-shop?"),
            format!("{NS}/persistentvolumeclaims/data-db-shop-0?"),
        ]
        .iter()
        .map(|uri| {
            expect("DELETE", uri)
                .body(JSON, bg.clone())
                .answer(200, deleted.clone())
        }),
    );
    script.push(event("Deleting", "Normal"));
    // The next look: all gone, so the finalizer goes (the other one stays).
    script.extend(observe(None, false));
    script.push(
        expect("PATCH", &format!("{CR}?"))
            .body(
                MERGE,
                json!({"metadata": {"finalizers": ["other.io/keep"], "resourceVersion": "100"}}),
            )
            .answer(200, cr_answer(&ds)),
    );
    let (ctx, verifier) = context(script);
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), Some(SOON));
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), None);
    drop(ctx);
    verifier.finished().await;
}

#[tokio::test]
async fn a_failed_removal_keeps_the_finalizer_so_it_is_tried_again() {
    let ds = resource(&[FINALIZER], true);
    let mut script = observe(None, true);
    script.push(
        expect("DELETE", &format!("{APPS}/statefulsets/db-shop?"))
            .body(JSON, json!({"propagationPolicy": "Background"}))
            .answer(503, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "ServiceUnavailable",
                "code": 503, "message": "the server is currently unable to handle the request"})),
    );
    let e = reconcile_once(&ds, script).await.unwrap_err();
    assert_eq!(e.code(), Some(503));
}

#[tokio::test]
async fn a_ready_database_is_applied_again_and_its_status_refreshed() {
    let ds = resource(&[FINALIZER], false);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-shop-0"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "mariadb"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "mariadb", "image": "mariadb:10.11", "imageID": "",
                       "ready": true, "restartCount": 0,
                       "resources": {"limits": {"cpu": "1", "memory": "4Gi"}}}]},
    });
    let mut script = observe(Some(pod), true);
    script.extend(apply_requests());
    script.push(accounts_already_published());
    // The whole status, exactly: what `kubectl get` and `db show` show. The fields it leaves
    // out are sent as null, or a merge patch would keep their old values (a message about a
    // problem long mended).
    script.push(
        expect("PATCH", &format!("{CR}/status?"))
            .body(
                MERGE,
                json!({"status": {
                    "state": "active",
                    "scu": 2,
                    "node": "node-a",
                    "host": "stratus-proxy.stratus.svc",
                    "port": 3306,
                    "database": "shop",
                    "cpuLimit": 1.0,
                    "memoryLimitBytes": 4u64 << 30,
                    "bufferPoolBytes": 2u64 << 30,
                    "storageLimitBytes": 20u64 << 30,
                    "clients": 0,
                    "ownerCreated": true,
                    "observedGeneration": 3,
                    "instance": null,
                    "message": null,
                    "moving": null,
                    "storageUsedBytes": null,
                    "suspendedAt": null,
                }}),
            )
            .answer(200, cr_answer(&ds)),
    );
    let (ctx, verifier) = context(script);
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), Some(IDLE));
    // Metered from now on, at the state and size the status gives.
    let used = ctx.metrics.usage.usage(i64::MAX / 4);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].db, "shop");
    assert!(used[0].scu_seconds > 0.0 && used[0].suspended_seconds == 0.0);
    drop(ctx);
    verifier.finished().await;
}

/// The ready pod `a_ready_database_is_applied_again_and_its_status_refreshed` sees: 2 SCU.
fn ready_pod_json() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-shop-0"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "mariadb"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "mariadb", "image": "mariadb:10.11", "imageID": "",
                       "ready": true, "restartCount": 0,
                       "resources": {"limits": {"cpu": "1", "memory": "4Gi"}}}]},
    })
}

/// A raised `storageGb` expands the volume claim through the reconcile, never the template.
#[tokio::test]
async fn a_raised_storage_limit_expands_the_claim_in_the_reconcile() {
    let mut ds = resource(&[FINALIZER], false);
    ds.spec.storage_gb = Some(30);
    let mut script = observe(Some(ready_pod_json()), true);
    script.extend(apply_requests());
    script.push(
        expect(
            "PATCH",
            &format!("{NS}/persistentvolumeclaims/data-db-shop-0?"),
        )
        .body(
            MERGE,
            json!({"spec": {"resources": {"requests": {"storage": (30u64 << 30).to_string()}}}}),
        )
        .answer(
            200,
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": "data-db-shop-0", "namespace": "stratus"}}),
        ),
    );
    script.push(accounts_already_published());
    script.push(
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, |body| {
                assert_eq!(body["status"]["storageLimitBytes"], 30u64 << 30, "{body}");
            })
            .answer(200, cr_answer(&ds)),
    );
    script.push(event("StorageGrown", "Normal"));
    let (ctx, verifier) = context(script);
    reconcile(&ds, &ctx).await.unwrap();
    drop(ctx);
    verifier.finished().await;
}

/// A status write refused with a conflict (another writer since the resource was read) is a
/// failure for the back-off: nothing after it runs, and the next look starts from the new
/// resource.
#[tokio::test]
async fn a_conflict_on_the_status_is_retried_from_the_new_resource() {
    let ds = resource(&[FINALIZER], false);
    let mut script = observe(Some(ready_pod_json()), true);
    script.extend(apply_requests());
    script.push(accounts_already_published());
    script.push(
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, |_| {})
            .answer(
                409,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
                       "code": 409, "message": "the object has been modified"}),
            ),
    );
    let e = reconcile_once(&ds, script).await.unwrap_err();
    assert_eq!(e.code(), Some(409));
}

#[tokio::test]
async fn an_invalid_spec_gets_a_status_and_nothing_else() {
    let mut ds = resource(&[], false);
    ds.spec.tier = Tier::Free;
    ds.spec.max_scu = Some(8);
    let mut script = vec![no_pod()];
    script.extend(observe(None, false));
    script.push(
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, |body| {
                assert_eq!(body["status"]["state"], "invalid");
                assert!(body["status"]["message"].as_str().unwrap().contains("cap"));
            })
            .answer(200, cr_answer(&ds)),
    );
    script.push(event("Invalid", "Warning"));
    assert_eq!(reconcile_once(&ds, script).await.unwrap(), None);
}

#[test]
fn events_say_what_was_done() {
    let three = ScuSize::default().resources(3);
    let steps = vec![
        Step::AddFinalizer,
        Step::Apply(instance()),
        Step::Resize(three),
        Step::GrowStorage(50 << 30),
    ];
    let notes: Vec<(String, String)> = events_of(&steps, Some(&ready_pod()))
        .into_iter()
        .map(|e| (e.reason, e.note.unwrap()))
        .collect();
    assert_eq!(
        notes,
        [
            ("Created".into(), "StatefulSet, Service, ConfigMap and Secret db-shop made, at 2 SCU with 20 GiB of storage".into()),
            ("Resized".into(), "resized in place to 3 SCU (1500m CPU, 6144 MiB), from 1000m CPU".into()),
            ("StorageGrown".into(), "volume claim expanded to 50 GiB".into()),
        ]
    );
    let again = vec![
        Step::Apply(instance()),
        Step::Status(DatabaseServiceStatus::default()),
    ];
    assert!(events_of(&again, None).is_empty(), "nothing new: no event");
}

fn with_state(mut ds: DatabaseService, state: Lifecycle) -> DatabaseService {
    ds.spec.state = Some(state);
    ds
}

fn at_floor(mut pod: PodView) -> PodView {
    pod.cpu_limit_millis = Some(CPU_FLOOR_MILLIS);
    pod
}

/// The steps beyond those of every look (apply, publish the accounts, status).
fn only_actions(plan: &Plan) -> Vec<Step> {
    plan.steps
        .iter()
        .filter(|s| !matches!(s, Step::Apply(_) | Step::PublishAccounts | Step::Status(_)))
        .cloned()
        .collect()
}

#[test]
fn a_suspend_empties_the_server_before_lowering_its_cpu_and_a_resume_does_the_reverse() {
    let two = ScuSize::default().resources(2);
    let floor = Resources {
        cpu_millis: CPU_FLOOR_MILLIS,
        buffer_pool_bytes: BUFFER_POOL_FLOOR,
        ..two
    };
    let suspended = with_state(resource(&[FINALIZER], false), Lifecycle::Suspended);
    let running = Seen {
        pod: Some(ready_pod()),
        ..Seen::default()
    };
    let plan = plan(&suspended, &running, &sizes());
    assert_eq!(
        only_actions(&plan),
        [Step::Empty, Step::Resize(floor)],
        "memory kept, as on one machine"
    );
    let Step::Apply(applied) = &plan.steps[0] else {
        panic!("{plan:?}")
    };
    assert_eq!(
        applied.resources, floor,
        "a pod made again while suspended starts so"
    );
    let st = status_of(&plan);
    assert_eq!(
        (st.state.as_str(), st.buffer_pool_bytes),
        ("suspended", BUFFER_POOL_FLOOR)
    );
    // The next look: the status records the suspend, so the server is not emptied again,
    // whether or not the kubelet has applied the floor yet.
    let mut suspended = suspended;
    suspended.status = Some(st);
    let plan = super::plan(&suspended, &running, &sizes());
    assert_eq!(
        only_actions(&plan),
        [Step::Resize(floor)],
        "sessions closed once"
    );
    let emptied = Seen {
        pod: Some(at_floor(ready_pod())),
        ..Seen::default()
    };
    let plan = super::plan(&suspended, &emptied, &sizes());
    assert_eq!(only_actions(&plan), [], "nothing more once there");
    assert_eq!(plan.requeue, Some(LATER));
    let mut pending = at_floor(ready_pod());
    pending.resize_pending = Some("Deferred".into());
    let plan = super::plan(
        &with_state(resource(&[FINALIZER], false), Lifecycle::Suspended),
        &seen_pod(pending.clone()),
        &sizes(),
    );
    assert_eq!(
        only_actions(&plan),
        [Step::Empty, Step::Resize(floor)],
        "a pending grow does not hold a suspend up"
    );
    // Resumed: the pod grows first; the pool only once the kubelet reports the size.
    let mut resumed = resource(&[FINALIZER], false);
    resumed.status = suspended.status.clone();
    let plan = super::plan(&resumed, &emptied, &sizes());
    assert_eq!(only_actions(&plan), [Step::Resize(two)]);
    let st = status_of(&plan);
    assert_eq!(
        (st.state.as_str(), st.message.as_deref(), plan.requeue),
        (
            "suspended",
            Some("resuming: waiting for the pod's new size"),
            Some(SOON)
        )
    );
    let plan = super::plan(&resumed, &seen_pod(pending), &sizes());
    assert_eq!(only_actions(&plan), [], "one resize at a time");
    assert_eq!(status_of(&plan).state, "suspended", "no flapping");
    let plan = super::plan(&resumed, &running, &sizes());
    assert_eq!(
        only_actions(&plan),
        [Step::Fill(two.buffer_pool_bytes)],
        "the pool grows into memory the pod has"
    );
    assert_eq!(status_of(&plan).state, "active");
    // A size that happens to equal the floor's CPU is no suspend.
    let mut active = resource(&[FINALIZER], false);
    active.status = Some(status_of(&plan));
    let plan = super::plan(&active, &emptied, &sizes());
    assert_eq!(only_actions(&plan), [Step::Resize(two)]);
    assert_eq!(status_of(&plan).state, "active");
}

#[test]
fn a_park_scales_to_zero_keeps_the_volume_and_a_wake_scales_back() {
    let parked = with_state(resource(&[FINALIZER], false), Lifecycle::Parked);
    let set = |replicas| SetView {
        claim_template_bytes: 20 << 30,
        replicas,
        applied: None,
        foreign: false,
    };
    let running = Seen {
        pod: Some(ready_pod()),
        set: Some(set(1)),
        ..Seen::default()
    };
    let plan = plan(&parked, &running, &sizes());
    assert_eq!(only_actions(&plan), [Step::SetReplicas(0)]);
    assert_eq!(
        (
            status_of(&plan).state.as_str(),
            status_of(&plan).node.as_str()
        ),
        ("parked", "")
    );
    assert_eq!(plan.requeue, Some(SOON), "until its pod is gone");
    let gone = Seen {
        set: Some(set(0)),
        ..Seen::default()
    };
    let plan = super::plan(&parked, &gone, &sizes());
    assert_eq!(only_actions(&plan), []);
    assert_eq!(plan.requeue, Some(LATER));
    let plan = super::plan(&resource(&[FINALIZER], false), &gone, &sizes());
    assert_eq!(only_actions(&plan), [Step::SetReplicas(1)]);
    assert_eq!(status_of(&plan).state, "provisioning");
    let plan = super::plan(
        &with_state(resource(&[FINALIZER], false), Lifecycle::Suspended),
        &gone,
        &sizes(),
    );
    assert_eq!(
        only_actions(&plan),
        [Step::SetReplicas(1)],
        "a parked database asked to be suspended wakes first"
    );
    // Created parked: nothing is made until it is woken, so no pod starts only to be scaled
    // away in the middle of initialising its volume.
    let plan = super::plan(
        &with_state(resource(&[], false), Lifecycle::Parked),
        &Seen::default(),
        &sizes(),
    );
    assert_eq!(plan.steps.len(), 2, "{plan:?}");
    assert_eq!(plan.steps[0], Step::AddFinalizer);
    assert_eq!(status_of(&plan).state, "parked");
}

#[test]
fn a_new_node_moves_the_database_by_evicting_its_pod_and_the_status_follows_the_move() {
    let mut ds = resource(&[FINALIZER], false);
    ds.spec.node = Some("node-b".into());
    let on_a = Seen {
        pod: Some(ready_pod()),
        ..Seen::default()
    };
    let plan = plan(&ds, &on_a, &sizes());
    let Step::Apply(applied) = &plan.steps[0] else {
        panic!("{plan:?}")
    };
    assert_eq!(applied.node, "node-b", "the template requires the new node");
    assert_eq!(only_actions(&plan), [Step::Evict]);
    let moving = |phase: &str| {
        Some(Moving {
            to: "node-b".into(),
            phase: phase.into(),
        })
    };
    let st = status_of(&plan);
    assert_eq!(
        (st.state.as_str(), st.moving.clone()),
        ("migrating", moving("cut-over"))
    );
    ds.status = Some(st);
    let mut leaving = ready_pod();
    leaving.deleting = true;
    let plan = super::plan(&ds, &seen_pod(leaving), &sizes());
    assert_eq!(only_actions(&plan), [], "evicted once");
    assert_eq!(status_of(&plan).moving, moving("starting"));
    let plan = super::plan(&ds, &Seen::default(), &sizes());
    assert_eq!(status_of(&plan).state, "migrating");
    let mut on_b = ready_pod();
    on_b.node = Some("node-b".into());
    on_b.ready = false;
    let mut seen = Seen {
        pod: Some(on_b),
        ..Seen::default()
    };
    let plan = super::plan(&ds, &seen, &sizes());
    assert_eq!(
        (status_of(&plan).state.as_str(), plan.requeue),
        ("migrating", Some(SOON))
    );
    seen.pod.as_mut().unwrap().ready = true;
    let plan = super::plan(&ds, &seen, &sizes());
    let st = status_of(&plan);
    assert_eq!(
        (st.state.as_str(), st.node.as_str(), st.moving),
        ("active", "node-b", None)
    );
    // A pod going away with no move under way (its node drained) is being replaced, even
    // when the spec pins the database to a node.
    let mut drained = ready_pod();
    drained.deleting = true;
    let mut pinned = resource(&[FINALIZER], false);
    pinned.spec.node = Some("node-a".into());
    let plan = super::plan(&pinned, &seen_pod(drained), &sizes());
    assert_eq!(
        (status_of(&plan).state.as_str(), status_of(&plan).moving),
        ("provisioning", None)
    );
    // A pod not yet scheduled has no node to be wrong about.
    let mut pending = ready_pod();
    pending.node = None;
    pending.ready = false;
    let plan = super::plan(&resource(&[FINALIZER], false), &seen_pod(pending), &sizes());
    assert_eq!(only_actions(&plan), []);
}

#[test]
fn suspend_resume_park_wake_and_move_say_so_in_events() {
    let two = ScuSize::default().resources(2);
    let mut to_b = instance();
    to_b.node = "node-b".into();
    let cases: Vec<(Vec<Step>, &str, &str)> = vec![
        (
            vec![Step::Empty, Step::Resize(two)],
            "Suspended",
            "suspended: sessions closed, buffer pool at 32 MiB, CPU at 50m",
        ),
        (
            vec![Step::Resize(two), Step::Fill(1 << 30)],
            "Resumed",
            "resumed: buffer pool back to 1024 MiB, hot pages reloading",
        ),
        (
            vec![Step::SetReplicas(0)],
            "Parked",
            "parked: the StatefulSet scaled to 0, the volume claim kept",
        ),
        (
            vec![Step::SetReplicas(1)],
            "Woken",
            "waking: the StatefulSet scaled back to 1",
        ),
        (
            vec![Step::Apply(to_b), Step::Evict],
            "Moving",
            "moving from node node-a to node node-b: the pod is evicted and made again there, with its volume",
        ),
    ];
    for (steps, reason, note) in cases {
        let events = events_of(&steps, Some(&ready_pod()));
        let got: Vec<(String, String)> = events
            .into_iter()
            .map(|e| (e.reason, e.note.unwrap()))
            .collect();
        assert_eq!(got, [(reason.to_owned(), note.to_owned())]);
    }
}

/// SQL in the servers, as a test scripts it: each call recorded, and failing when told.
#[derive(Default)]
struct ScriptedSql {
    calls: std::sync::Mutex<Vec<String>>,
    unreachable: bool,
    /// What its clients do; left out, one runs a statement.
    activity: Option<ClientActivity>,
    /// The largest buffer pool its server takes (`innodb_buffer_pool_size_max`); left out, any.
    pool_cap: Option<u64>,
}

impl server::ServerSql for ScriptedSql {
    fn empty<'a>(&'a self, db: &'a ServiceName, pod: &'a PodView) -> server::Pending<'a, u64> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!(
                "empty {db} at {}",
                pod.ip.as_deref().unwrap_or("?")
            ));
            if self.unreachable {
                return Err(KubeError::Server {
                    db: db.to_string(),
                    message: format!("database {db}: no login within 10s"),
                });
            }
            Ok(3)
        })
    }
    fn fill<'a>(
        &'a self,
        db: &'a ServiceName,
        pod: &'a PodView,
        bytes: u64,
    ) -> server::Pending<'a, ()> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!(
                "fill {db} at {} to {bytes}",
                pod.ip.as_deref().unwrap_or("?")
            ));
            Ok(())
        })
    }
    fn pool<'a>(
        &'a self,
        db: &'a ServiceName,
        pod: &'a PodView,
        bytes: u64,
    ) -> server::Pending<'a, u64> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!(
                "pool {db} at {} to {bytes}",
                pod.ip.as_deref().unwrap_or("?")
            ));
            Ok(self.pool_cap.map_or(bytes, |cap| bytes.min(cap)))
        })
    }
    fn provision<'a>(
        &'a self,
        db: &'a ServiceName,
        pod: &'a PodView,
        owner: &'a stratus_core::UserName,
        hash: &'a NativeHash,
    ) -> server::Pending<'a, bool> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!(
                "provision {db} at {} for {owner} with {hash}",
                pod.ip.as_deref().unwrap_or("?")
            ));
            Ok(true)
        })
    }
    fn activity<'a>(
        &'a self,
        db: &'a ServiceName,
        pod: &'a PodView,
    ) -> server::Pending<'a, ClientActivity> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!(
                "activity {db} at {}",
                pod.ip.as_deref().unwrap_or("?")
            ));
            Ok(self.activity.unwrap_or(ClientActivity {
                connections: 1,
                busy: true,
                idle_ms: None,
            }))
        })
    }
    fn accounts<'a>(
        &'a self,
        db: &'a ServiceName,
        pod: &'a PodView,
    ) -> server::Pending<'a, Vec<stratus_runtime::admin::Account>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!(
                "accounts {db} at {}",
                pod.ip.as_deref().unwrap_or("?")
            ));
            Ok(server_accounts())
        })
    }
}

/// The accounts a scripted server has: its owner.
fn server_accounts() -> Vec<stratus_runtime::admin::Account> {
    vec![stratus_runtime::admin::Account {
        user: "admin".into(),
        plugin: Some("mysql_native_password".into()),
        auth: Some(NativeHash::of_password("pw").to_string()),
    }]
}

/// Publishing the accounts when the Secret holds them already: one read, no write.
fn accounts_already_published() -> Exchange {
    let text = crate::accounts::encode(&server_accounts());
    expect("GET", &format!("{NS}/secrets/db-shop")).answer(
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-shop"},
               "data": {"password": "cHc=", "accounts": base64(&text)}}),
    )
}

fn base64(text: &str) -> String {
    serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// The pod as the API server returns it: on `node`, ready, with `cpu` applied.
fn pod_json(node: &str, cpu: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-shop-0", "namespace": "stratus"},
        "spec": {"nodeName": node, "containers": [{"name": "mariadb"}]},
        "status": {"phase": "Running", "podIP": "10.0.0.7",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "mariadb", "image": "mariadb:10.11", "imageID": "",
                       "ready": true, "restartCount": 0,
                       "resources": {"limits": {"cpu": cpu, "memory": "4Gi"}}}]},
    })
}

fn scripted_context(script: Vec<Exchange>, sql: Arc<ScriptedSql>) -> (Context, Verifier) {
    let (ctx, verifier) = context(script);
    (ctx.with_servers(sql), verifier)
}

fn resize_requests(r: &Resources) -> Vec<Exchange> {
    vec![
        expect("PATCH", &format!("{NS}/pods/db-shop-0/resize?"))
            .body(STRATEGIC, objects_of::resize_patch(r))
            .answer(200, pod_json("node-a", "1")),
        expect("PATCH", &format!("{APPS}/statefulsets/db-shop?"))
            .body(
                STRATEGIC,
                json!({"spec": {"template": objects_of::resize_patch(r)}}),
            )
            .answer(
                200,
                serde_json::to_value(objects_of::stateful_set(
                    &Instance::of(&instance().name),
                    &instance(),
                    &Settings::default(),
                ))
                .unwrap(),
            ),
    ]
}

#[tokio::test]
async fn suspending_empties_the_server_then_resizes_the_pod_to_the_floor() {
    let ds = with_state(resource(&[FINALIZER], false), Lifecycle::Suspended);
    let floor = Resources {
        cpu_millis: CPU_FLOOR_MILLIS,
        buffer_pool_bytes: BUFFER_POOL_FLOOR,
        ..ScuSize::default().resources(2)
    };
    let mut at_floor = instance();
    at_floor.resources = floor;
    let mut script = observe(Some(pod_json("node-a", "1")), true);
    script.extend(apply_requests_of(&at_floor));
    script.extend(resize_requests(&floor));
    script.push(status_request("suspended").answer(200, cr_answer(&ds)));
    script.push(event("Suspended", "Normal"));
    let sql = Arc::new(ScriptedSql::default());
    let (ctx, verifier) = scripted_context(script, sql.clone());
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), Some(LATER));
    drop(ctx);
    verifier.finished().await;
    assert_eq!(*sql.calls.lock().unwrap(), ["empty shop at 10.0.0.7"]);
}

#[tokio::test]
async fn a_server_out_of_reach_leaves_the_pod_at_its_size() {
    let ds = with_state(resource(&[FINALIZER], false), Lifecycle::Suspended);
    let mut at_floor = instance();
    at_floor.resources = Resources {
        cpu_millis: CPU_FLOOR_MILLIS,
        buffer_pool_bytes: BUFFER_POOL_FLOOR,
        ..at_floor.resources
    };
    let mut script = observe(Some(pod_json("node-a", "1")), true);
    script.extend(apply_requests_of(&at_floor));
    let sql = Arc::new(ScriptedSql {
        unreachable: true,
        ..ScriptedSql::default()
    });
    let (ctx, verifier) = scripted_context(script, sql.clone());
    let e = reconcile(&ds, &ctx).await.unwrap_err();
    assert_eq!(e.to_string(), "database shop: no login within 10s");
    drop(ctx);
    // No resize, no status: the back-off tries the whole suspend again.
    verifier.finished().await;
}

#[tokio::test]
async fn resuming_resizes_the_pod_then_fills_the_server_once_it_has_grown() {
    let mut ds = resource(&[FINALIZER], false);
    ds.status = Some(DatabaseServiceStatus {
        state: "suspended".into(),
        scu: 2,
        ..made()
    });
    let two = ScuSize::default().resources(2);
    // First look: the pod at the floor is resized; the pool waits for the kubelet.
    let mut script = observe(Some(pod_json("node-a", "50m")), true);
    script.extend(apply_requests());
    script.extend(resize_requests(&two));
    script.push(status_request("suspended").answer(200, cr_answer(&ds)));
    script.push(event("Resized", "Normal"));
    // Next look: the kubelet applied it; now the pool.
    script.extend(observe(Some(pod_json("node-a", "1")), true));
    script.extend(apply_requests());
    script.push(accounts_already_published());
    script.push(status_request("active").answer(200, cr_answer(&ds)));
    script.push(event("Resumed", "Normal"));
    let sql = Arc::new(ScriptedSql::default());
    let (ctx, verifier) = scripted_context(script, sql.clone());
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), Some(SOON));
    assert!(
        sql.calls.lock().unwrap().is_empty(),
        "no fill before the pod grew"
    );
    reconcile(&ds, &ctx).await.unwrap();
    drop(ctx);
    verifier.finished().await;
    assert_eq!(
        *sql.calls.lock().unwrap(),
        [
            format!("fill shop at 10.0.0.7 to {}", two.buffer_pool_bytes),
            "accounts shop at 10.0.0.7".into()
        ]
    );
}

fn scale_request(replicas: i32) -> Exchange {
    expect("PATCH", &format!("{APPS}/statefulsets/db-shop/scale?"))
        .body(MERGE, json!({"spec": {"replicas": replicas}}))
        .answer(
            200,
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                   "metadata": {"name": "db-shop", "namespace": "stratus"},
                   "spec": {"replicas": replicas}, "status": {"replicas": 1}}),
        )
}

/// What `reconcile` reads first, for a StatefulSet scaled to `replicas`.
fn observe_scaled(pod: Option<Value>, replicas: i32) -> Vec<Exchange> {
    let mut out = vec![match pod {
        Some(pod) => expect("GET", &format!("{NS}/pods/db-shop-0")).answer(200, pod),
        None => no_pod(),
    }];
    let mut sts = unrecorded(&instance());
    sts["spec"]["replicas"] = json!(replicas);
    out.push(expect("GET", &format!("{APPS}/statefulsets/db-shop")).answer(200, sts));
    out.extend(observe(None, true).into_iter().skip(1));
    out
}

#[tokio::test]
async fn parking_scales_the_statefulset_to_zero_and_waking_back_to_one() {
    let parked = with_state(resource(&[FINALIZER], false), Lifecycle::Parked);
    let mut script = observe_scaled(Some(pod_json("node-a", "1")), 1);
    script.extend(apply_requests());
    script.push(scale_request(0));
    script.push(status_request("parked").answer(200, cr_answer(&parked)));
    script.push(event("Parked", "Normal"));
    // Woken: no pod, scaled to 0, the spec active again.
    let woken = resource(&[FINALIZER], false);
    script.extend(observe_scaled(None, 0));
    script.extend(apply_requests());
    script.push(scale_request(1));
    script.push(status_request("provisioning").answer(200, cr_answer(&woken)));
    script.push(event("Woken", "Normal"));
    let (ctx, verifier) = context(script);
    assert_eq!(reconcile(&parked, &ctx).await.unwrap(), Some(SOON));
    assert_eq!(reconcile(&woken, &ctx).await.unwrap(), Some(SOON));
    drop(ctx);
    verifier.finished().await;
}

/// A database asked onto node-b while its pod runs on node-a: what `reconcile` reads and
/// applies up to the eviction, which answers `status` and `answer`.
fn a_move_to_node_b(status: u16, answer: Value) -> (DatabaseService, Vec<Exchange>) {
    let mut ds = resource(&[FINALIZER], false);
    ds.spec.node = Some("node-b".into());
    let mut to_b = instance();
    to_b.node = "node-b".into();
    let sts = serde_json::to_value(objects_of::stateful_set(
        &Instance::of(&to_b.name),
        &to_b,
        &Settings::default(),
    ))
    .unwrap();
    assert!(
        sts.to_string().contains("node-b"),
        "the template names the node"
    );
    let mut script = observe(Some(pod_json("node-a", "1")), true);
    script.extend(apply_requests_of(&to_b));
    script.push(
        expect("POST", &format!("{NS}/pods/db-shop-0/eviction?"))
            .body(
                JSON,
                json!({"delete_options": null, "metadata": {"name": "db-shop-0"}}),
            )
            .answer(status, answer),
    );
    (ds, script)
}

#[tokio::test]
async fn moving_requires_the_new_node_in_the_template_then_evicts_the_pod() {
    let (ds, mut script) = a_move_to_node_b(
        201,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}),
    );
    script.push(
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, |body| {
                let st = &body["status"];
                assert_eq!(st["state"], "migrating", "{body}");
                assert_eq!(st["moving"], json!({"to": "node-b", "phase": "cut-over"}));
                assert_eq!(st["node"], "node-a", "still there until the new pod runs");
            })
            .answer(200, cr_answer(&ds)),
    );
    script.push(event("Moving", "Normal"));
    assert_eq!(reconcile_once(&ds, script).await.unwrap(), Some(SOON));
}

#[tokio::test]
async fn an_eviction_a_disruption_budget_refuses_is_an_error_for_the_back_off() {
    let (ds, script) = a_move_to_node_b(
        429,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "TooManyRequests", "code": 429,
               "message": "Cannot evict pod as it would violate the pod's disruption budget."}),
    );
    let e = reconcile_once(&ds, script).await.unwrap_err();
    assert_eq!(e.code(), Some(429));
}

#[test]
fn a_database_made_from_a_backup_fills_its_volume_from_it_until_its_first_server_ran() {
    let mut fresh = resource(&[FINALIZER], false);
    fresh.status = None;
    fresh.spec.restore_from = Some(crate::v1alpha1::RestoreFrom {
        claim: "stratus-backups".into(),
        backup: "orders-20261130T030005000Z".into(),
    });
    let restore = objects_of::Restore {
        claim: "stratus-backups".into(),
        source: ServiceName::parse("orders").unwrap(),
        backup: "orders-20261130T030005000Z".into(),
    };
    // Before its server runs: the objects carry the restore, and its schema is the source's.
    let early = plan(&fresh, &Seen::default(), &sizes());
    assert_eq!(early.restore.as_ref(), Some(&restore));
    assert_eq!(status_of(&early).database, "orders");
    // Its first server ran on the backup's data: nothing provisioned (its schema and accounts
    // are the backup's), the accounts published, and the pod no longer mounts the backup.
    let first = plan(&fresh, &seen_pod(ready_pod()), &sizes());
    assert_eq!(
        only_actions(&first),
        [Step::Restored {
            backup: "orders-20261130T030005000Z".into()
        }]
    );
    assert!(first.steps.contains(&Step::PublishAccounts));
    assert_eq!(first.restore, None);
    assert!(status_of(&first).owner_created);
    let events = events_of(&first.steps, Some(&ready_pod()));
    assert!(events.iter().any(|e| e.reason == "Restored"));
    // And later looks: the same.
    let mut done = fresh.clone();
    done.status = Some(status_of(&first));
    let later = plan(&done, &seen_pod(ready_pod()), &sizes());
    assert_eq!(later.restore, None);
    assert_eq!(status_of(&later).database, "orders");
    // A restore that fails (a checksum, a backup not verified, a volume the kubelet cannot
    // mount) is said in the status, which stays provisioning.
    let failing = PodView {
        ready: false,
        restore_failed: Some("data/shop/orders.ibd: FAILED".into()),
        ..ready_pod()
    };
    let st = status_of(&plan(&fresh, &seen_pod(failing), &sizes()));
    assert_eq!(st.state, "provisioning");
    assert_eq!(
        st.message.as_deref(),
        Some("restore from the backup failed: data/shop/orders.ibd: FAILED")
    );
    // A backup id that is none: refused, nothing made.
    let mut wrong = fresh.clone();
    wrong.spec.restore_from = Some(crate::v1alpha1::RestoreFrom {
        claim: "stratus-backups".into(),
        backup: "../../etc".into(),
    });
    let refused = plan(&wrong, &Seen::default(), &sizes());
    assert!(!refused.steps.iter().any(|s| matches!(s, Step::Apply(_))));
    let st = status_of(&refused);
    assert_eq!(st.state, "invalid");
    assert!(st.message.unwrap().contains("is not a backup id"));
}

#[test]
fn a_database_is_made_ready_for_its_owner_once_when_its_first_server_runs() {
    let mut fresh = resource(&[FINALIZER], false);
    fresh.status = None;
    let first = plan(&fresh, &seen_pod(ready_pod()), &sizes());
    let provision = Step::Provision {
        secret: "shop-owner".into(),
        make: true,
    };
    assert_eq!(only_actions(&first), std::slice::from_ref(&provision));
    let publish_at = |p: &Plan| p.steps.iter().position(|s| *s == Step::PublishAccounts);
    let provision_at = first.steps.iter().position(|s| *s == provision);
    assert!(
        publish_at(&first) > provision_at,
        "the owner's account is published once it exists: {first:?}"
    );
    assert_eq!(publish_at(&plan(&fresh, &Seen::default(), &sizes())), None);
    assert!(status_of(&first).owner_created);
    // Before its pod is ready, nothing yet; and never again once done.
    let plan_early = plan(&fresh, &Seen::default(), &sizes());
    assert!(!only_actions(&plan_early).contains(&provision));
    assert!(!status_of(&plan_early).owner_created);
    let done = resource(&[FINALIZER], false);
    let again = plan(&done, &seen_pod(ready_pod()), &sizes());
    assert!(only_actions(&again).is_empty());
    assert!(status_of(&again).owner_created, "the record is kept");
    // A login of the user's own: named, never made.
    let mut own = fresh.clone();
    own.spec.owner_secret = Some("shop-login".into());
    assert_eq!(
        only_actions(&plan(&own, &seen_pod(ready_pod()), &sizes())),
        [Step::Provision {
            secret: "shop-login".into(),
            make: false,
        }]
    );
    // Being parked: not while its pod goes away.
    let parked = with_state(fresh, Lifecycle::Parked);
    assert!(!only_actions(&plan(&parked, &seen_pod(ready_pod()), &sizes())).contains(&provision));
}

#[tokio::test]
async fn the_first_server_gets_the_schema_and_an_owner_whose_login_the_operator_makes() {
    let mut ds = resource(&[FINALIZER], false);
    ds.status = None;
    let sent = Arc::new(std::sync::Mutex::new(String::new()));
    let mut script = observe(Some(pod_json("node-a", "1")), true);
    script.extend(apply_requests());
    script.push(
        expect("GET", &format!("{NS}/secrets/shop-owner"))
            .answer(404, not_found("secrets \"shop-owner\"")),
    );
    let password = sent.clone();
    script.push(
        expect("POST", &format!("{NS}/secrets?"))
            .checked(JSON, move |body| {
                assert_eq!(body["metadata"]["name"], "shop-owner");
                assert_eq!(body["type"], "kubernetes.io/basic-auth");
                assert_eq!(body["stringData"]["username"], "admin");
                let owner = &body["metadata"]["ownerReferences"][0];
                assert_eq!(
                    (&owner["kind"], &owner["name"], &owner["uid"]),
                    (
                        &json!("DatabaseService"),
                        &json!("shop"),
                        &json!("5f0c1a2e-shop")
                    )
                );
                let pw = body["stringData"]["password"].as_str().unwrap();
                assert!(pw.len() >= 16, "a random password: {pw}");
                *password.lock().unwrap() = pw.to_owned();
            })
            .answer(
                201,
                json!({"apiVersion": "v1", "kind": "Secret",
                                "metadata": {"name": "shop-owner", "namespace": "stratus"}}),
            ),
    );
    // Then the accounts, for the proxy: the Secret has none yet.
    script.push(expect("GET", &format!("{NS}/secrets/db-shop")).answer(
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-shop"},
               "data": {"password": "cHc="}}),
    ));
    script.push(
        expect("PATCH", &format!("{NS}/secrets/db-shop?"))
            .body(
                MERGE,
                json!({"stringData": {"accounts": crate::accounts::encode(&server_accounts())}}),
            )
            .answer(
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-shop"}}),
            ),
    );
    script.push(
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, |body| {
                assert_eq!(body["status"]["state"], "active");
                assert_eq!(body["status"]["ownerCreated"], true);
            })
            .answer(200, cr_answer(&ds)),
    );
    script.push(event("Provisioned", "Normal"));
    let sql = Arc::new(ScriptedSql::default());
    let (ctx, verifier) = scripted_context(script, sql.clone());
    reconcile(&ds, &ctx).await.unwrap();
    drop(ctx);
    verifier.finished().await;
    // The server got the hash of the password the Secret was made with, and only that.
    let hash = NativeHash::of_password(&sent.lock().unwrap());
    assert_eq!(
        *sql.calls.lock().unwrap(),
        [
            format!("provision shop at 10.0.0.7 for admin with {hash}"),
            "accounts shop at 10.0.0.7".into()
        ]
    );
}

#[tokio::test]
async fn an_owner_secret_the_spec_names_is_used_as_it_is_and_a_missing_one_is_an_error() {
    let mut ds = resource(&[FINALIZER], false);
    ds.status = None;
    ds.spec.owner_secret = Some("shop-login".into());
    // "app" / "s3cret-pass", as `kubectl create secret generic --type=kubernetes.io/basic-auth`.
    let own = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
                     "metadata": {"name": "shop-login", "namespace": "stratus"},
                     "data": {"username": "YXBw", "password": "czNjcmV0LXBhc3M="}});
    let mut script = observe(Some(pod_json("node-a", "1")), true);
    script.extend(apply_requests());
    script.push(expect("GET", &format!("{NS}/secrets/shop-login")).answer(200, own));
    script.push(accounts_already_published());
    script.push(status_request("active").answer(200, cr_answer(&ds)));
    script.push(event("Provisioned", "Normal"));
    let sql = Arc::new(ScriptedSql::default());
    let (ctx, verifier) = scripted_context(script, sql.clone());
    reconcile(&ds, &ctx).await.unwrap();
    drop(ctx);
    verifier.finished().await;
    let hash = NativeHash::of_password("s3cret-pass");
    assert_eq!(
        *sql.calls.lock().unwrap(),
        [
            format!("provision shop at 10.0.0.7 for app with {hash}"),
            "accounts shop at 10.0.0.7".into()
        ]
    );

    // Missing: nothing is made in its place, and the status waits for it.
    let mut script = observe(Some(pod_json("node-a", "1")), true);
    script.extend(apply_requests());
    script.push(
        expect("GET", &format!("{NS}/secrets/shop-login"))
            .answer(404, not_found("secrets \"shop-login\"")),
    );
    let sql = Arc::new(ScriptedSql::default());
    let (ctx, verifier) = scripted_context(script, sql.clone());
    let e = reconcile(&ds, &ctx).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "secret shop-login: it does not exist (the resource's ownerSecret names it)"
    );
    drop(ctx);
    verifier.finished().await;
    assert!(sql.calls.lock().unwrap().is_empty());
}

/// The list of `ScalingPolicy`s when none names a database: the default policy holds.
fn no_policies() -> Exchange {
    expect(
        "GET",
        "/apis/stratus.dev/v1alpha1/namespaces/stratus/scalingpolicies?",
    )
    .answer(
        200,
        json!({"apiVersion": "stratus.dev/v1alpha1", "kind": "ScalingPolicyList",
               "metadata": {"resourceVersion": "7"}, "items": []}),
    )
}

/// 2026-12-02T05:00:00Z, in Unix ms.
const T0: i64 = 1_796_187_600_000;

/// Seen at `now`: a ready pod, the default policy, `activity` if the server was read, and the
/// idle clock an earlier look set at `T0`.
fn seen_at(now: i64, activity: Option<ClientActivity>) -> Seen {
    Seen {
        pod: Some(ready_pod()),
        activity,
        now_ms: now,
        last_active: Some(T0),
        ..Seen::default()
    }
}

fn clients(busy: bool, idle_ms: Option<u64>) -> Option<ClientActivity> {
    Some(ClientActivity {
        connections: u64::from(idle_ms.is_some() || busy),
        busy,
        idle_ms,
    })
}

/// A database the last look saw `state`; suspended since `since`.
fn was(state: &str, since: i64) -> DatabaseService {
    let mut ds = resource(&[FINALIZER], false);
    ds.status = Some(DatabaseServiceStatus {
        state: state.into(),
        suspended_at: (state == "suspended").then(|| rfc3339(since)),
        ..made()
    });
    ds
}

fn requested(plan: &Plan) -> Option<(Lifecycle, i64)> {
    plan.steps.iter().find_map(|s| match s {
        Step::Request { state, idle_ms } => Some((*state, *idle_ms)),
        _ => None,
    })
}

#[test]
fn an_idle_database_is_asked_to_suspend_once_its_policy_allows_and_never_while_busy() {
    let ds = was("active", T0);
    let now = T0 + 11_000;
    // Sessions sleeping for 11 s: past the default 10 s.
    let idle = plan(&ds, &seen_at(now, clients(false, Some(11_000))), &sizes());
    assert_eq!(requested(&idle), Some((Lifecycle::Suspended, 11_000)));
    assert_eq!(idle.last_active, Some(T0));
    assert_eq!(
        status_of(&idle),
        status_of(&plan(
            &ds,
            &seen_at(now + 1, clients(false, Some(1))),
            &sizes()
        )),
        "the clock is not in the status: a look whose only news is activity writes nothing"
    );
    // No client connected: the recorded clock counts.
    let plan_gone = plan(&ds, &seen_at(now, clients(false, None)), &sizes());
    assert_eq!(requested(&plan_gone), Some((Lifecycle::Suspended, 11_000)));
    // A statement running, or a transaction open: the clock starts again.
    let busy = plan(&ds, &seen_at(now, clients(true, Some(11_000))), &sizes());
    assert_eq!(requested(&busy), None);
    assert_eq!(busy.last_active, Some(now));
    // A client's command 3 s ago: not yet, and looked at again in time for it.
    let recent = plan(&ds, &seen_at(now, clients(false, Some(3_000))), &sizes());
    assert_eq!(requested(&recent), None);
    assert_eq!(recent.requeue, Some(Duration::from_millis(7_000)));
    // Its server could not be read: nothing is decided on it.
    assert_eq!(requested(&plan(&ds, &seen_at(now, None), &sizes())), None);
    // A policy of its own.
    let mut patient = seen_at(now, clients(false, Some(11_000)));
    patient.policy.idle_to_suspend_ms = 60_000;
    assert_eq!(requested(&plan(&ds, &patient, &sizes())), None);
}

#[test]
fn a_woken_database_starts_its_idle_clock_afresh() {
    // Resumed by a client's statement: its last activity was long before the suspend, and no
    // client is connected yet. It must not be suspended again before that statement runs.
    let ds = was("suspended", T0);
    let now = T0 + 3_600_000;
    let woken = plan(&ds, &seen_at(now, clients(false, None)), &sizes());
    assert_eq!(status_of(&woken).state, "active");
    assert_eq!(requested(&woken), None);
    assert_eq!(woken.last_active, Some(now));
    assert_eq!(status_of(&woken).suspended_at, None);

    // Woken by a client before a suspend the operator asked for was carried out: the status
    // still says active, but the spec changed since the clock was set, so the look has no
    // clock (`Context::idle_clock`) and starts it again instead of asking again at once.
    let active = was("active", T0);
    let mut fresh = seen_at(now, clients(false, None));
    fresh.last_active = None;
    let again = plan(&active, &fresh, &sizes());
    assert_eq!(requested(&again), None);
    assert_eq!(again.last_active, Some(now));
}

#[tokio::test]
async fn the_idle_clock_is_forgotten_when_the_spec_changes() {
    let (ctx, _verifier) = context(Vec::new());
    ctx.set_idle_clock("shop", Some(3), Some(T0));
    assert_eq!(ctx.idle_clock("shop", Some(3)), Some(T0));
    assert_eq!(
        ctx.idle_clock("shop", Some(4)),
        None,
        "a wake, a resume, an edit"
    );
    assert_eq!(ctx.idle_clock("other", Some(3)), None);
    ctx.set_idle_clock("shop", Some(4), None);
    assert_eq!(ctx.idle_clock("shop", Some(3)), None);
}

#[test]
fn a_suspended_database_is_asked_to_park_after_its_policys_time() {
    let asleep = with_state(was("suspended", T0), Lifecycle::Suspended);
    let policy = ScalingPolicy::default();
    let pod = at_floor(ready_pod());
    let look = |now: i64| Seen {
        pod: Some(pod.clone()),
        now_ms: now,
        ..Seen::default()
    };
    let early = plan(&asleep, &look(T0 + 1_000), &sizes());
    assert_eq!(requested(&early), None);
    assert_eq!(status_of(&early).suspended_at, Some(rfc3339(T0)));
    let due = T0 + policy.suspend_to_park_ms as i64;
    assert_eq!(
        requested(&plan(&asleep, &look(due), &sizes())),
        Some((Lifecycle::Parked, policy.suspend_to_park_ms as i64))
    );
    // Its first look as suspended starts the clock.
    let mut first = asleep.clone();
    first.status.as_mut().unwrap().suspended_at = None;
    let plan_first = plan(&first, &look(due), &sizes());
    assert_eq!(requested(&plan_first), None);
    assert_eq!(status_of(&plan_first).suspended_at, Some(rfc3339(due)));
}

#[tokio::test]
async fn an_idle_database_is_suspended_through_its_spec_by_its_own_policy() {
    let ds = was("active", T0 - 5_000);
    let policies = json!({"apiVersion": "stratus.dev/v1alpha1", "kind": "ScalingPolicyList",
    "metadata": {"resourceVersion": "7"},
    "items": [
        {"apiVersion": "stratus.dev/v1alpha1", "kind": "ScalingPolicy",
         "metadata": {"name": "other", "namespace": "stratus"},
         "spec": {"database": "other", "idleToSuspendMs": 3600000}},
        {"apiVersion": "stratus.dev/v1alpha1", "kind": "ScalingPolicy",
         "metadata": {"name": "shop-fast", "namespace": "stratus"},
         "spec": {"database": "shop", "idleToSuspendMs": 2000}},
    ]});
    let mut script = observe(Some(pod_json("node-a", "1")), true);
    script.push(
        expect(
            "GET",
            "/apis/stratus.dev/v1alpha1/namespaces/stratus/scalingpolicies?",
        )
        .answer(200, policies),
    );
    script.extend(apply_requests());
    script.push(
        expect("PATCH", &format!("{CR}?"))
            .body(
                MERGE,
                json!({"metadata": {"resourceVersion": "100"}, "spec": {"state": "suspended"}}),
            )
            .answer(200, cr_answer(&ds)),
    );
    script.push(accounts_already_published());
    script.push(status_request("active").answer(200, cr_answer(&ds)));
    script.push(event("IdleSuspend", "Normal"));
    let sql = Arc::new(ScriptedSql {
        activity: clients(false, Some(4_000)),
        ..ScriptedSql::default()
    });
    let (ctx, verifier) = scripted_context(script, sql.clone());
    // An earlier look saw a client active 5 s ago.
    ctx.set_idle_clock("shop", ds.metadata.generation, Some(T0 - 5_000));
    reconcile_at(&ds, &ctx, T0).await.unwrap();
    drop(ctx);
    verifier.finished().await;
    assert_eq!(
        *sql.calls.lock().unwrap(),
        ["activity shop at 10.0.0.7", "accounts shop at 10.0.0.7"]
    );
}

#[tokio::test]
async fn a_look_that_changes_nothing_writes_nothing() {
    // Made by this operator (its StatefulSet records what was applied), serving, with a client
    // busy: the look reads the cluster and the server, and writes nothing to the cluster.
    let first = plan(
        &was("active", T0),
        &seen_at(T0 + 1_000, clients(true, Some(0))),
        &sizes(),
    );
    let mut ds = was("active", T0);
    ds.status = Some(status_of(&first));
    let recorded = serde_json::to_value(objects_of::stateful_set(
        &Instance::of(&instance().name),
        &instance(),
        &Settings::default(),
    ))
    .unwrap();
    let mut script = observe_set(Some(pod_json("node-a", "1")), Some(recorded));
    script.push(no_policies());
    script.push(accounts_already_published());
    let sql = Arc::new(ScriptedSql::default());
    let (ctx, verifier) = scripted_context(script, sql.clone());
    // The same second as the first look: busy, so the same status.
    let requeue = reconcile_at(&ds, &ctx, T0 + 1_000).await.unwrap();
    drop(ctx);
    verifier.finished().await;
    assert_eq!(
        requeue,
        Some(Duration::from_millis(10_000)),
        "looked at again when an idle suspend would be due"
    );
    assert_eq!(
        *sql.calls.lock().unwrap(),
        ["activity shop at 10.0.0.7", "accounts shop at 10.0.0.7"]
    );
}

#[test]
fn a_database_made_suspended_still_publishes_its_owner_so_a_login_can_wake_it() {
    let mut fresh = with_state(resource(&[FINALIZER], false), Lifecycle::Suspended);
    fresh.status = None;
    let steps = plan(&fresh, &seen_pod(ready_pod()), &sizes()).steps;
    let at = |want: &Step| steps.iter().position(|s| s == want);
    let provision = Step::Provision {
        secret: "shop-owner".into(),
        make: true,
    };
    assert!(at(&provision).is_some(), "{steps:?}");
    assert!(at(&Step::PublishAccounts) > at(&provision), "{steps:?}");
}

#[tokio::test]
async fn an_owner_secret_left_by_an_earlier_database_of_the_name_is_not_taken() {
    let mut ds = resource(&[FINALIZER], false);
    ds.status = None;
    let old = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
        "metadata": {"name": "shop-owner", "namespace": "stratus",
            "ownerReferences": [{"apiVersion": "stratus.dev/v1alpha1", "kind": "DatabaseService",
                                 "name": "shop", "uid": "0ld-shop", "controller": true}]},
        "data": {"username": "YWRtaW4=", "password": "b2xk"}});
    let mut script = observe(Some(pod_json("node-a", "1")), true);
    script.extend(apply_requests());
    script.push(expect("GET", &format!("{NS}/secrets/shop-owner")).answer(200, old));
    let sql = Arc::new(ScriptedSql::default());
    let (ctx, verifier) = scripted_context(script, sql.clone());
    let e = reconcile(&ds, &ctx).await.unwrap_err();
    assert!(
        e.to_string().contains("belongs to an earlier database"),
        "{e}"
    );
    drop(ctx);
    verifier.finished().await;
    assert!(
        sql.calls.lock().unwrap().is_empty(),
        "nothing made with its password"
    );
}

#[tokio::test]
async fn an_idle_suspend_that_loses_to_a_wake_is_no_failure() {
    let ds = was("active", T0 - 60_000);
    let mut script = observe(Some(pod_json("node-a", "1")), true);
    script.push(no_policies());
    script.extend(apply_requests());
    // The proxy set the spec to active a moment ago: this version is stale.
    script.push(
        expect("PATCH", &format!("{CR}?"))
            .checked(MERGE, |body| {
                assert_eq!(body["spec"]["state"], "suspended");
            })
            .answer(
                409,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
               "reason": "Conflict", "message": "the object has been modified"}),
            ),
    );
    let sql = Arc::new(ScriptedSql {
        activity: clients(false, None),
        ..ScriptedSql::default()
    });
    let (ctx, verifier) = scripted_context(script, sql);
    ctx.set_idle_clock("shop", ds.metadata.generation, Some(T0 - 60_000));
    let looked = reconcile_at(&ds, &ctx, T0).await;
    drop(ctx);
    verifier.finished().await;
    assert_eq!(
        looked.unwrap(),
        Some(Duration::from_secs(1)),
        "no error, no back-off"
    );
}

// The autoscaler's choices, carried out by the reconcile.

fn scaled(from: u32, to: u32) -> Scaled {
    Scaled {
        from,
        to,
        usage_pct: 99.0,
        window_ms: 1_000,
    }
}

/// Active at `scu`, its server's buffer pool recorded at `pool`.
fn active_at(scu: u32, pool: u64) -> DatabaseService {
    let mut ds = resource(&[FINALIZER], false);
    ds.status = Some(DatabaseServiceStatus {
        state: "active".into(),
        scu,
        buffer_pool_bytes: pool,
        ..made()
    });
    ds
}

/// A ready pod whose server container the kubelet runs at `r`.
fn pod_at(r: &Resources) -> PodView {
    PodView {
        cpu_limit_millis: Some(r.cpu_millis),
        memory_limit_bytes: Some(r.memory_bytes),
        ..ready_pod()
    }
}

fn applied_resources(plan: &Plan) -> Option<Resources> {
    plan.steps.iter().find_map(|s| match s {
        Step::Apply(spec) => Some(spec.resources),
        _ => None,
    })
}

fn sizing_steps(plan: &Plan) -> Vec<Step> {
    plan.steps
        .iter()
        .filter(|s| matches!(s, Step::Resize(_) | Step::Pool(_)))
        .cloned()
        .collect()
}

#[test]
fn a_scale_up_grows_the_pod_first_and_the_pool_once_the_kubelet_applied_it() {
    let size = ScuSize::default();
    let (two, three) = (size.resources(2), size.resources(3));
    let seen = Seen {
        pod: Some(pod_at(&two)),
        scaled: Some(scaled(2, 3)),
        ..Seen::default()
    };
    let grow = plan(&active_at(2, two.buffer_pool_bytes), &seen, &sizes());
    // The template gets the new CPU and memory; its option file keeps the pool the pod's
    // present memory holds, in case the server restarts before the kubelet grew the pod.
    let growing = Resources {
        buffer_pool_bytes: two.buffer_pool_bytes,
        ..three
    };
    assert_eq!(applied_resources(&grow), Some(growing));
    assert_eq!(grow.requeue, Some(SOON), "looked at again while it grows");
    assert_eq!(sizing_steps(&grow), [Step::Resize(three)]);
    let st = status_of(&grow);
    assert_eq!(
        (st.scu, st.buffer_pool_bytes),
        (3, two.buffer_pool_bytes),
        "the pool is still the old one"
    );
    assert_eq!(grow.scaled, Some(scaled(2, 3)));
    assert_eq!(grow.serving.as_ref().map(|s| s.scu), Some(3));
    // The kubelet has not applied it yet: nothing more.
    let waiting = plan(
        &active_at(3, two.buffer_pool_bytes),
        &seen_pod(pod_at(&two)),
        &sizes(),
    );
    assert_eq!(sizing_steps(&waiting), [Step::Resize(three)]);
    let pending = PodView {
        resize_pending: Some("InProgress".into()),
        ..pod_at(&two)
    };
    let waiting = plan(
        &active_at(3, two.buffer_pool_bytes),
        &seen_pod(pending),
        &sizes(),
    );
    assert_eq!(sizing_steps(&waiting), [], "one resize at a time");
    // Applied: now the pool.
    let filled = plan(
        &active_at(3, two.buffer_pool_bytes),
        &seen_pod(pod_at(&three)),
        &sizes(),
    );
    assert_eq!(sizing_steps(&filled), [Step::Pool(three.buffer_pool_bytes)]);
    assert_eq!(
        applied_resources(&filled),
        Some(three),
        "now the option file too"
    );
    assert_eq!(
        status_of(&filled).buffer_pool_bytes,
        three.buffer_pool_bytes
    );
    assert_eq!(filled.scaled, None);
    // And then the look is quiet again.
    let settled = plan(
        &active_at(3, three.buffer_pool_bytes),
        &seen_pod(pod_at(&three)),
        &sizes(),
    );
    assert_eq!(sizing_steps(&settled), []);
    assert_ne!(settled.requeue, Some(SOON));
    // A resize the node cannot do waits for the usual looks.
    let infeasible = PodView {
        resize_pending: Some("Infeasible".into()),
        ..pod_at(&two)
    };
    let stuck = plan(
        &active_at(3, two.buffer_pool_bytes),
        &seen_pod(infeasible),
        &sizes(),
    );
    assert_ne!(stuck.requeue, Some(SOON));
}

#[test]
fn a_scale_down_shrinks_the_pool_before_the_pod() {
    let size = ScuSize::default();
    let (two, three) = (size.resources(2), size.resources(3));
    let seen = Seen {
        pod: Some(pod_at(&three)),
        scaled: Some(scaled(3, 2)),
        ..Seen::default()
    };
    let shrink = plan(&active_at(3, three.buffer_pool_bytes), &seen, &sizes());
    assert_eq!(
        sizing_steps(&shrink),
        [Step::Pool(two.buffer_pool_bytes), Step::Resize(two)]
    );
    let st = status_of(&shrink);
    assert_eq!((st.scu, st.buffer_pool_bytes), (2, two.buffer_pool_bytes));
}

#[test]
fn a_choice_made_from_another_size_or_for_a_database_not_serving_is_dropped() {
    let two = ScuSize::default().resources(2);
    // Made at 3, but the status says 2 (the bounds were edited meanwhile).
    let stale = Seen {
        pod: Some(pod_at(&two)),
        scaled: Some(scaled(3, 4)),
        ..Seen::default()
    };
    let p = plan(&active_at(2, two.buffer_pool_bytes), &stale, &sizes());
    assert_eq!((status_of(&p).scu, p.scaled), (2, None));
    assert_eq!(sizing_steps(&p), []);
    // Asked to suspend meanwhile: the suspend wins, and the autoscaler lets it go.
    let mut ds = with_state(active_at(2, two.buffer_pool_bytes), Lifecycle::Suspended);
    ds.metadata.generation = Some(4);
    let p = plan(
        &ds,
        &Seen {
            pod: Some(pod_at(&two)),
            scaled: Some(scaled(2, 3)),
            ..Seen::default()
        },
        &sizes(),
    );
    assert_eq!((status_of(&p).scu, p.scaled.is_some()), (2, false));
    assert_eq!(p.serving, None);
}

#[test]
fn a_serving_database_is_watched_within_its_bounds() {
    let two = ScuSize::default().resources(2);
    let p = plan(
        &active_at(2, two.buffer_pool_bytes),
        &seen_pod(pod_at(&two)),
        &sizes(),
    );
    let s = p.serving.expect("watched while it serves");
    assert_eq!(s.ip, "10.0.0.7");
    assert_eq!(
        (
            s.scu,
            s.bounds.min_scu,
            s.bounds.max_scu,
            s.bounds.cpu_millis_per_scu
        ),
        (2, 2, 4, 500)
    );
    // Not while its pod is not ready.
    let starting = PodView {
        ready: false,
        ..pod_at(&two)
    };
    let p = plan(
        &active_at(2, two.buffer_pool_bytes),
        &seen_pod(starting),
        &sizes(),
    );
    assert_eq!(p.serving, None);
}

/// The pod's JSON with the server container at `r`.
fn pod_json_at(r: &Resources) -> Value {
    let mut pod = pod_json("node-a", &format!("{}m", r.cpu_millis));
    pod["status"]["containerStatuses"][0]["resources"]["limits"]["memory"] =
        json!(r.memory_bytes.to_string());
    pod
}

#[tokio::test]
async fn the_autoscalers_choice_is_carried_out_by_the_reconcile_with_its_event() {
    let size = ScuSize::default();
    let (two, three) = (size.resources(2), size.resources(3));
    let ds = active_at(2, two.buffer_pool_bytes);
    let mut at_three = instance();
    at_three.resources = Resources {
        buffer_pool_bytes: two.buffer_pool_bytes,
        ..three
    };
    let mut script = observe(Some(pod_json_at(&two)), true);
    script.push(no_policies());
    script.extend(apply_requests_of(&at_three));
    script.extend(resize_requests(&three));
    script.push(accounts_already_published());
    script.push(
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, move |body| {
                assert_eq!(body["status"]["state"], "active", "{body}");
                assert_eq!(body["status"]["scu"], 3, "{body}");
                assert_eq!(body["status"]["bufferPoolBytes"], two.buffer_pool_bytes);
            })
            .answer(200, cr_answer(&ds)),
    );
    script.push(event("Scaled", "Normal"));
    script.push(event("Resized", "Normal"));
    let sql = Arc::new(ScriptedSql::default());
    let (ctx, verifier) = scripted_context(script, sql.clone());
    // What the autoscaler's loop does with a busy database's samples.
    let serving = super::super::scaler::Serving {
        ip: "10.0.0.7".into(),
        scu: 2,
        bounds: stratus_control::scaler::Bounds {
            min_scu: 2,
            max_scu: 4,
            cpu_millis_per_scu: 500,
        },
        policy: ScalingPolicy::default(),
    };
    ctx.scaling.serve("shop", Some(serving.clone()));
    let busy = crate::agent::CpuSamples {
        now_ms: T0 + 2_000,
        pid: Some(7),
        samples: (0..=10)
            .map(|i| (T0 + i * 200, i as u64 * 200 * 950 * 1_000))
            .collect(),
    };
    let chosen = ctx.scaling.observe("shop", &serving, &busy).unwrap();
    assert_eq!((chosen.from, chosen.to), (2, 3), "950m of 1000m: one step");
    reconcile_at(&ds, &ctx, T0 + 2_000).await.unwrap();
    assert_eq!(ctx.scaling.decided("shop"), None, "done with");
    drop(ctx);
    verifier.finished().await;
    assert_eq!(
        *sql.calls.lock().unwrap(),
        ["activity shop at 10.0.0.7", "accounts shop at 10.0.0.7"]
    );
}

#[tokio::test]
async fn a_grown_pod_gets_its_pool_and_a_server_that_takes_less_says_so() {
    let size = ScuSize::default();
    let (two, three) = (size.resources(2), size.resources(3));
    // The look after a scale to 3: the kubelet applied the pod's size; the pool is still 2's.
    let ds = active_at(3, two.buffer_pool_bytes);
    let mut at_three = instance();
    at_three.resources = three;
    let mut script = observe_set(Some(pod_json_at(&three)), Some(unrecorded(&at_three)));
    script.push(no_policies());
    script.extend(apply_requests_of(&at_three));
    script.push(accounts_already_published());
    script.push(
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, move |body| {
                assert_eq!(body["status"]["scu"], 3, "{body}");
                assert_eq!(body["status"]["bufferPoolBytes"], three.buffer_pool_bytes);
            })
            .answer(200, cr_answer(&ds)),
    );
    script.push(event("BufferPoolLimited", "Warning"));
    // A server started from an older option file: its pool cannot pass 2's.
    let sql = Arc::new(ScriptedSql {
        pool_cap: Some(two.buffer_pool_bytes),
        ..ScriptedSql::default()
    });
    let (ctx, verifier) = scripted_context(script, sql.clone());
    reconcile_at(&ds, &ctx, T0).await.unwrap();
    drop(ctx);
    verifier.finished().await;
    assert_eq!(
        *sql.calls.lock().unwrap(),
        [
            "activity shop at 10.0.0.7".to_owned(),
            format!("pool shop at 10.0.0.7 to {}", three.buffer_pool_bytes),
            "accounts shop at 10.0.0.7".to_owned(),
        ]
    );
    assert!(
        pool_short(three.buffer_pool_bytes, three.buffer_pool_bytes - (1 << 20)).is_none(),
        "rounding is no shortfall"
    );
}

#[test]
fn only_the_pod_that_stays_keeps_a_small_pool_in_its_option_file_while_it_grows() {
    let size = ScuSize::default();
    let (two, three) = (size.resources(2), size.resources(3));
    let ds = active_at(3, two.buffer_pool_bytes);
    let capped = Resources {
        buffer_pool_bytes: two.buffer_pool_bytes,
        ..three
    };
    // The pod that stays, its memory not grown yet: capped.
    let p = plan(&ds, &seen_pod(pod_at(&two)), &sizes());
    assert_eq!(applied_resources(&p), Some(capped));
    // Its size not reported (its container waiting to restart): the pool it was given.
    let unknown = PodView {
        memory_limit_bytes: None,
        ..pod_at(&two)
    };
    let p = plan(&ds, &seen_pod(unknown), &sizes());
    assert_eq!(applied_resources(&p), Some(capped));
    // Going away (a drain, an eviction): its successor gets the template's memory, and the
    // whole pool.
    let going = PodView {
        deleting: true,
        ..pod_at(&two)
    };
    let p = plan(&ds, &seen_pod(going), &sizes());
    assert_eq!(applied_resources(&p), Some(three));
    // Moved to another node: evicted now, made anew there with the whole pool.
    let mut moved = ds.clone();
    moved.spec.node = Some("node-b".into());
    let p = plan(&moved, &seen_pod(pod_at(&two)), &sizes());
    assert!(p.steps.contains(&Step::Evict));
    assert_eq!(applied_resources(&p), Some(three));
}

mod claims;
