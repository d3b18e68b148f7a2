//! The controller's decisions (pure), then each reconcile path against the mocked API server:
//! the exact requests, in order, for a new database, one as it should be, a deletion, a
//! conflict on the finalizer, an API error in the middle, and a spec the operator refuses.

use super::*;
use crate::mock_api::*;
use crate::objects::{self as objects_of, Settings};
use crate::operator::Context;
use crate::runtime::ClaimView;
use crate::v1alpha1::DatabaseServiceSpec;
use serde_json::{Value, json};
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
fn a_ready_database_reports_its_pod_and_is_looked_at_less_often() {
    let seen = Seen {
        pod: Some(ready_pod()),
        ..Seen::default()
    };
    let plan = plan(&resource(&[FINALIZER], false), &seen, &sizes());
    assert_eq!(
        plan.steps.len(),
        2,
        "apply (idempotent) and status: {plan:?}"
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
    assert_eq!(plan.requeue, Some(LATER));
}

#[test]
fn a_resize_the_node_cannot_do_shows_in_the_status() {
    let mut pod = ready_pod();
    pod.resize_pending = Some("Infeasible".into());
    let plan = plan(
        &resource(&[FINALIZER], false),
        &Seen {
            pod: Some(pod),
            ..Seen::default()
        },
        &sizes(),
    );
    assert_eq!(
        status_of(&plan).message.as_deref(),
        Some("a resize is pending: Infeasible")
    );
}

#[test]
fn deletion_removes_everything_and_lets_the_resource_go_once_the_volume_is_gone() {
    let ds = resource(&["other.io/keep", FINALIZER], true);
    let made = Seen {
        claim_template_bytes: Some(20 << 30),
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
    let plan = super::plan(
        &ds,
        &Seen {
            pod: Some(pending),
            ..Seen::default()
        },
        &sizes(),
    );
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
        claim_template_bytes: Some(20 << 30),
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

fn context(script: Vec<Exchange>) -> (Context, Verifier) {
    let (client, verifier) = serve(script);
    (
        Context::new(client, Settings::default(), sizes(), "pod-a"),
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

/// The requests of `KubeRuntime::apply` for a database whose Secret exists.
fn apply_requests() -> Vec<Exchange> {
    let s = Settings::default();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-shop"},
                        "data": {"password": "cHc=", "init.sql": "eA=="}});
    let cm = serde_json::to_value(objects_of::config_map(&instance(), &s)).unwrap();
    let svc = serde_json::to_value(objects_of::service(&instance().name, &s)).unwrap();
    let sts = serde_json::to_value(objects_of::stateful_set(&instance(), &s)).unwrap();
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

/// What `reconcile` reads first: the pod (not when deleting), the StatefulSet, the claim.
fn observe(pod: Option<Value>, made: bool) -> Vec<Exchange> {
    let mut out = Vec::new();
    if let Some(pod) = pod {
        out.push(expect("GET", &format!("{NS}/pods/db-shop-0")).answer(200, pod));
    }
    if made {
        let sts = serde_json::to_value(objects_of::stateful_set(&instance(), &Settings::default()))
            .unwrap();
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
    }
    out
}

/// The Event the operator records for what it did.
fn event(reason: &'static str, kind: &'static str) -> Exchange {
    expect("POST", "/apis/events.k8s.io/v1/namespaces/stratus/events?")
        .checked(JSON, move |body| {
            assert_eq!(body["reason"], reason, "{body}");
            assert_eq!(body["type"], kind);
            assert_eq!(body["regarding"]["kind"], "DatabaseService");
            assert_eq!(body["regarding"]["name"], "shop");
            assert_eq!(body["reportingController"], "stratus-operator");
            assert_eq!(body["reportingInstance"], "pod-a");
        })
        .answer(
            201,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                            "metadata": {"name": "shop.1", "namespace": "stratus"},
                            "eventTime": "2026-12-01T23:00:00.000000Z"}),
        )
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
    script.push(
        expect("PATCH", &format!("{CR}?"))
            .body(
                MERGE,
                json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "100"}}),
            )
            .answer(200, cr_answer(&with_finalizer)),
    );
    script.extend(apply_requests());
    script.push(status_request("provisioning").answer(200, cr_answer(&with_finalizer)));
    script.push(event("Created", "Normal"));
    let (ctx, verifier) = context(script);
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), Some(SOON));
    drop(ctx);
    verifier.finished().await;
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
    let (ctx, verifier) = context(script);
    let e = reconcile(&ds, &ctx).await.unwrap_err();
    assert_eq!(e.code(), Some(409));
    drop(ctx);
    verifier.finished().await;
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
    let (ctx, verifier) = context(script);
    let e = reconcile(&ds, &ctx).await.unwrap_err();
    assert_eq!(e.code(), Some(503));
    drop(ctx);
    verifier.finished().await;
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
    script.push(
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, |body| {
                let st = &body["status"];
                assert_eq!(st["state"], "active");
                assert_eq!(
                    (st["scu"].as_u64(), st["cpuLimit"].as_f64()),
                    (Some(2), Some(1.0))
                );
                assert_eq!(st["storageLimitBytes"], 20u64 << 30);
                // Cleared, not left as it was: a merge patch keeps what it does not name.
                assert!(st["message"].is_null() && st.as_object().unwrap().contains_key("message"));
            })
            .answer(200, cr_answer(&ds)),
    );
    let (ctx, verifier) = context(script);
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), Some(LATER));
    drop(ctx);
    verifier.finished().await;
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
    let (ctx, verifier) = context(script);
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), None);
    drop(ctx);
    verifier.finished().await;
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
