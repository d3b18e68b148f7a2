//! Each operation against a mocked API server (`tower_test`, as kube-rs's `controller-rs`
//! does): the server asserts every request in order (method, path and query, content type,
//! body) and answers with the JSON a real API server sends, errors included.

use super::*;
use crate::instance::Instance;
use crate::mock_api::*;
use crate::objects::{self, Settings};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use stratus_core::{NativeHash, ScuSize};
use tower_test::mock;

fn api_server(script: Vec<Exchange>) -> (KubeRuntime, Verifier) {
    let (client, verifier) = serve(script);
    (KubeRuntime::new(client, Settings::default()), verifier)
}

async fn finished(rt: KubeRuntime, verifier: Verifier) {
    drop(rt);
    verifier.finished().await;
}

fn db() -> ServiceName {
    ServiceName::parse("shop").unwrap()
}

fn inst() -> Instance {
    Instance::of(&db())
}

fn spec() -> InstanceSpec {
    let scu = ScuSize::default();
    InstanceSpec {
        name: db(),
        resources: scu.resources(1),
        max_resources: scu.resources(4),
        storage_bytes: 10 << 30,
        node: "node-a".into(),
    }
}

/// A `Status` as the API server writes it for a failure.
fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// An object as the server returns it: what was sent, with the server's metadata added.
fn stored(mut obj: Value) -> Value {
    obj["metadata"]["uid"] = json!("0b6c7d54-5a37-4b5e-9b1f-6f1d1c2a3e4f");
    obj["metadata"]["resourceVersion"] = json!("4711");
    obj["metadata"]["creationTimestamp"] = json!("2026-12-01T22:00:00Z");
    obj
}

fn secret_with(password: &str) -> Value {
    use base64_engine::encode;
    let mut s =
        serde_json::to_value(objects::secret(&inst(), &Settings::default(), password)).unwrap();
    let data = s["stringData"].take();
    s.as_object_mut().unwrap().remove("stringData");
    s["data"] = json!({
        "password": encode(data["password"].as_str().unwrap()),
        "init.sql": encode(data["init.sql"].as_str().unwrap()),
    });
    stored(s)
}

/// Base64 as Kubernetes puts Secret data on the wire (k8s-openapi's `ByteString`).
mod base64_engine {
    pub fn encode(s: &str) -> String {
        serde_json::to_value(k8s_openapi::ByteString(s.as_bytes().to_vec()))
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn applies(spec: &InstanceSpec) -> Vec<Exchange> {
    let s = Settings::default();
    let cm =
        serde_json::to_value(objects::config_map(&Instance::of(&spec.name), spec, &s)).unwrap();
    let svc = serde_json::to_value(objects::service(&Instance::of(&spec.name), &s)).unwrap();
    let sts =
        serde_json::to_value(objects::stateful_set(&Instance::of(&spec.name), spec, &s)).unwrap();
    vec![
        expect("PATCH", &format!("{NS}/configmaps/db-shop{APPLIED}"))
            .body(APPLY, cm.clone())
            .answer(200, stored(cm)),
        expect("PATCH", &format!("{NS}/services/db-shop{APPLIED}"))
            .body(APPLY, svc.clone())
            .answer(200, stored(svc)),
        expect("PATCH", &format!("{APPS}/statefulsets/db-shop{APPLIED}"))
            .body(APPLY, sts.clone())
            .answer(200, stored(sts)),
    ]
}

#[tokio::test]
async fn create_makes_the_secret_once_then_applies_config_service_and_statefulset() {
    let posted = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = posted.clone();
    let mut script = vec![
        expect("GET", &format!("{NS}/secrets/db-shop")).answer(
            404,
            failure(404, "NotFound", "secrets \"db-shop\" not found"),
        ),
        expect("POST", &format!("{NS}/secrets?"))
            .checked(JSON, move |body| {
                assert_eq!(body["metadata"]["name"], "db-shop");
                assert_eq!(body["metadata"]["namespace"], "stratus");
                let password = body["stringData"]["password"].as_str().unwrap();
                assert_eq!(password.len(), 24, "a generated password");
                let init = body["stringData"]["init.sql"].as_str().unwrap();
                assert!(init.contains(&NativeHash::of_password(password).to_string()));
                assert!(!init.contains(password));
                *seen.lock().unwrap() = password.to_owned();
            })
            .answer(
                201,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-shop"}}),
            ),
    ];
    script.extend(applies(&spec()));
    let (rt, verifier) = api_server(script);
    let password = rt.apply(&inst(), &spec()).await.unwrap();
    finished(rt, verifier).await;
    assert_eq!(password, *posted.lock().unwrap());
}

#[tokio::test]
async fn applying_again_keeps_the_password_the_server_knows() {
    let mut script = vec![
        expect("GET", &format!("{NS}/secrets/db-shop")).answer(200, secret_with("kept-password")),
    ];
    script.extend(applies(&spec()));
    let (rt, verifier) = api_server(script);
    assert_eq!(rt.apply(&inst(), &spec()).await.unwrap(), "kept-password");
    finished(rt, verifier).await;
}

#[tokio::test]
async fn a_secret_created_meanwhile_by_another_operator_wins() {
    let mut script = vec![
        expect("GET", &format!("{NS}/secrets/db-shop")).answer(
            404,
            failure(404, "NotFound", "secrets \"db-shop\" not found"),
        ),
        expect("POST", &format!("{NS}/secrets?"))
            .checked(JSON, |_| {})
            .answer(
                409,
                failure(409, "AlreadyExists", "secrets \"db-shop\" already exists"),
            ),
        expect("GET", &format!("{NS}/secrets/db-shop")).answer(200, secret_with("theirs")),
    ];
    script.extend(applies(&spec()));
    let (rt, verifier) = api_server(script);
    assert_eq!(rt.apply(&inst(), &spec()).await.unwrap(), "theirs");
    finished(rt, verifier).await;
}

#[tokio::test]
async fn an_api_error_stops_the_apply_and_says_what_was_refused() {
    let spec = spec();
    let mut script =
        vec![expect("GET", &format!("{NS}/secrets/db-shop")).answer(200, secret_with("pw"))];
    let mut rest = applies(&spec);
    rest.truncate(1);
    let refused = rest.pop().unwrap().answer(
        403,
        failure(403, "Forbidden", "configmaps \"db-shop\" is forbidden: User \"system:serviceaccount:stratus:operator\" cannot patch resource \"configmaps\""),
    );
    script.push(refused);
    let (rt, verifier) = api_server(script);
    let e = rt.apply(&inst(), &spec).await.unwrap_err();
    finished(rt, verifier).await;
    assert_eq!(e.code(), Some(403));
    let text = e.to_string();
    assert!(
        text.starts_with(
            "Kubernetes refused to apply configmap db-shop: configmaps \"db-shop\" is forbidden"
        ),
        "{text}"
    );
    assert!(text.ends_with("(403 Forbidden)"), "{text}");
}

#[tokio::test]
async fn resize_patches_the_pods_resize_subresource_then_the_template() {
    let r = ScuSize::default().resources(2);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-shop-0"}});
    let sts =
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db-shop"}});
    let (rt, verifier) = api_server(vec![
        expect("PATCH", &format!("{NS}/pods/db-shop-0/resize?"))
            .body(STRATEGIC, objects::resize_patch(&r))
            .answer(200, stored(pod)),
        expect("PATCH", &format!("{APPS}/statefulsets/db-shop?"))
            .body(
                STRATEGIC,
                json!({"spec": {"template": objects::resize_patch(&r)}}),
            )
            .answer(200, stored(sts)),
    ]);
    rt.resize(&inst(), &r).await.unwrap();
    finished(rt, verifier).await;
}

#[tokio::test]
async fn a_refused_resize_leaves_the_template_alone() {
    let r = ScuSize::default().resources(64);
    let (rt, verifier) = api_server(vec![
        expect("PATCH", &format!("{NS}/pods/db-shop-0/resize?"))
            .body(STRATEGIC, objects::resize_patch(&r))
            .answer(
                422,
                failure(422, "Invalid", "Pod \"db-shop-0\" is invalid: spec.containers[0].resources.requests: Invalid value: \"32\": must be less than or equal to cpu limit"),
            ),
    ]);
    let e = rt.resize(&inst(), &r).await.unwrap_err();
    finished(rt, verifier).await;
    assert_eq!(e.code(), Some(422));
    assert!(
        e.to_string().starts_with(
            "Kubernetes refused to resize pod db-shop-0: Pod \"db-shop-0\" is invalid"
        )
    );
}

fn scale(replicas: i32) -> Value {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": "db-shop", "namespace": "stratus", "resourceVersion": "4712"},
           "spec": {"replicas": replicas}, "status": {"replicas": 1, "selector": "stratus.dev/database=shop"}})
}

#[tokio::test]
async fn park_scales_to_zero_and_wake_back_to_one() {
    let (rt, verifier) = api_server(vec![
        expect("PATCH", &format!("{APPS}/statefulsets/db-shop/scale?"))
            .body(MERGE, json!({"spec": {"replicas": 0}}))
            .answer(200, scale(0)),
        expect("PATCH", &format!("{APPS}/statefulsets/db-shop/scale?"))
            .body(MERGE, json!({"spec": {"replicas": 1}}))
            .answer(200, scale(1)),
    ]);
    rt.set_replicas(&inst(), 0).await.unwrap();
    rt.set_replicas(&inst(), 1).await.unwrap();
    finished(rt, verifier).await;
}

#[tokio::test]
async fn a_conflicting_scale_is_reported_not_retried_blindly() {
    let (rt, verifier) = api_server(vec![
        expect("PATCH", &format!("{APPS}/statefulsets/db-shop/scale?"))
            .body(MERGE, json!({"spec": {"replicas": 0}}))
            .answer(409, failure(409, "Conflict", "Operation cannot be fulfilled on statefulsets.apps \"db-shop\": the object has been modified; please apply your changes to the latest version and try again")),
    ]);
    let e = rt.set_replicas(&inst(), 0).await.unwrap_err();
    finished(rt, verifier).await;
    assert_eq!(e.code(), Some(409));
}

#[tokio::test]
async fn storage_grows_by_expanding_the_claim() {
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-db-shop-0"}});
    let (rt, verifier) = api_server(vec![
        expect("PATCH", &format!("{NS}/persistentvolumeclaims/data-db-shop-0?"))
            .body(MERGE, json!({"spec": {"resources": {"requests": {"storage": "21474836480"}}}}))
            .answer(200, stored(pvc)),
        expect("PATCH", &format!("{NS}/persistentvolumeclaims/data-db-shop-0?"))
            .body(MERGE, json!({"spec": {"resources": {"requests": {"storage": "32212254720"}}}}))
            .answer(403, failure(403, "Forbidden", "persistentvolumeclaims \"data-db-shop-0\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize")),
    ]);
    rt.grow_storage(&inst(), 20 << 30).await.unwrap();
    let e = rt.grow_storage(&inst(), 30 << 30).await.unwrap_err();
    finished(rt, verifier).await;
    assert!(
        e.to_string()
            .contains("the storageclass that provisions the pvc must support resize"),
        "{e}"
    );
}

#[tokio::test]
async fn destroy_removes_every_object_claim_last_and_tolerates_ones_already_gone() {
    let gone = |kind: &str| failure(404, "NotFound", &format!("{kind} \"db-shop\" not found"));
    let deleted = json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": "db-shop"}});
    let bg = json!({"propagationPolicy": "Background"});
    let (rt, verifier) = api_server(vec![
        expect("DELETE", &format!("{APPS}/statefulsets/db-shop?"))
            .body(JSON, bg.clone())
            .answer(200, deleted.clone()),
        expect("DELETE", &format!("{NS}/services/db-shop?"))
            .body(JSON, bg.clone())
            .answer(404, gone("services")),
        expect("DELETE", &format!("{NS}/configmaps/db-shop?"))
            .body(JSON, bg.clone())
            .answer(200, deleted.clone()),
        expect("DELETE", &format!("{NS}/secrets/db-shop?"))
            .body(JSON, bg.clone())
            .answer(200, deleted.clone()),
        expect(
            "DELETE",
            &format!("{NS}/persistentvolumeclaims/data-db-shop-0?"),
        )
        .body(JSON, bg.clone())
        .answer(200, deleted),
    ]);
    rt.destroy(&inst()).await.unwrap();
    finished(rt, verifier).await;
}

#[tokio::test]
async fn a_failed_delete_stops_before_the_data_goes() {
    let bg = json!({"propagationPolicy": "Background"});
    let (rt, verifier) = api_server(vec![
        expect("DELETE", &format!("{APPS}/statefulsets/db-shop?"))
            .body(JSON, bg)
            .answer(
                500,
                failure(500, "InternalError", "etcdserver: request timed out"),
            ),
    ]);
    let e = rt.destroy(&inst()).await.unwrap_err();
    finished(rt, verifier).await;
    assert_eq!(e.code(), Some(500));
}

#[tokio::test]
async fn observe_reads_the_pods_applied_size_and_a_resize_it_cannot_do() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-shop-0", "namespace": "stratus"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "mariadb", "image": "mariadb:10.11",
                 "ports": [{"name": "mariadb", "containerPort": 3306}]}]},
        "status": {
            "phase": "Running",
            "podIP": "10.244.1.17",
            "conditions": [
                {"type": "PodResizePending", "status": "True", "reason": "Infeasible",
                 "message": "Node didn't have enough capacity: cpu, requested: 8000, capacity: 4000"},
                {"type": "Ready", "status": "True"},
            ],
            "containerStatuses": [{
                "name": "mariadb", "image": "mariadb:10.11", "imageID": "", "ready": true,
                "restartCount": 2, "started": true,
                "resources": {"limits": {"cpu": "1", "memory": "2Gi"}, "requests": {"cpu": "1", "memory": "2Gi"}},
            }],
        },
    });
    let (rt, verifier) = api_server(vec![
        expect("GET", &format!("{NS}/pods/db-shop-0")).answer(200, pod),
        expect("GET", &format!("{NS}/pods/db-shop-0")).answer(
            404,
            failure(404, "NotFound", "pods \"db-shop-0\" not found"),
        ),
    ]);
    let seen = rt.observe(&inst()).await.unwrap().unwrap();
    assert_eq!(
        seen,
        PodView {
            phase: "Running".into(),
            ready: true,
            node: Some("node-a".into()),
            cpu_limit_millis: Some(1000),
            memory_limit_bytes: Some(2 << 30),
            resize_pending: Some("Infeasible".into()),
            restarts: 2,
            ip: Some("10.244.1.17".into()),
            port: Some(3306),
            deleting: false,
            unschedulable: None,
            instance: None,
            restore_failed: None,
        }
    );
    assert_eq!(rt.observe(&inst()).await.unwrap(), None, "parked: no pod");
    finished(rt, verifier).await;
}

#[tokio::test]
async fn an_api_server_out_of_reach_is_an_error_not_a_hang() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let verifier = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
    });
    let rt = KubeRuntime::new(Client::new(service, "stratus"), Settings::default());
    let e = rt.set_replicas(&inst(), 1).await.unwrap_err();
    assert_eq!(e.code(), None);
    assert!(
        e.to_string()
            .starts_with("cannot scale statefulset db-shop: "),
        "{e}"
    );
    verifier.await.unwrap();
}

#[test]
fn quantities_read_as_the_api_server_writes_them() {
    use super::quantity::{bytes, millicores};
    assert_eq!(millicores("500m"), Some(500));
    assert_eq!(millicores("2"), Some(2000));
    assert_eq!(millicores("0.25"), Some(250));
    assert_eq!(millicores("lots"), None);
    assert_eq!(bytes("1Gi"), Some(1 << 30));
    assert_eq!(bytes("536870912"), Some(512 << 20));
    assert_eq!(bytes("2G"), Some(2_000_000_000));
    assert_eq!(bytes("1e3"), None, "exponents are not guessed at");
    assert_eq!(bytes("99999999999Pi"), None, "overflow is no size");
}

#[tokio::test]
async fn the_statefulset_says_its_claim_size_and_whether_it_is_parked() {
    let sts = |replicas: Option<i32>| {
        let mut v = serde_json::to_value(objects::stateful_set(
            &inst(),
            &spec(),
            &Settings::default(),
        ))
        .unwrap();
        if let Some(n) = replicas {
            v["spec"]["replicas"] = json!(n);
        }
        v
    };
    let (rt, verifier) = api_server(vec![
        expect("GET", &format!("{APPS}/statefulsets/db-shop")).answer(200, sts(Some(0))),
        expect("GET", &format!("{APPS}/statefulsets/db-shop")).answer(200, sts(None)),
        expect("GET", &format!("{APPS}/statefulsets/db-shop")).answer(
            404,
            failure(404, "NotFound", "statefulsets.apps \"db-shop\" not found"),
        ),
    ]);
    let bytes = spec().storage_bytes;
    assert_eq!(
        rt.stateful_set(&inst()).await.unwrap(),
        Some(SetView {
            claim_template_bytes: bytes,
            replicas: 0,
            applied: Some(objects::applied_hash(
                &inst(),
                &spec(),
                &Settings::default()
            )),
            foreign: false,
        })
    );
    assert_eq!(
        rt.stateful_set(&inst()).await.unwrap().map(|s| s.replicas),
        Some(1),
        "left out, the API server's default"
    );
    assert_eq!(rt.stateful_set(&inst()).await.unwrap(), None);
    finished(rt, verifier).await;
}

#[tokio::test]
async fn a_move_evicts_the_pod_and_a_pod_already_gone_is_no_error() {
    // kube-rs's body for the eviction subresource (the API server takes the kind from the
    // path): the pod's name, and no delete options.
    let eviction = || {
        expect("POST", &format!("{NS}/pods/db-shop-0/eviction?")).body(
            JSON,
            json!({"delete_options": null, "metadata": {"name": "db-shop-0"}}),
        )
    };
    let (rt, verifier) = api_server(vec![
        eviction().answer(
            201,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}),
        ),
        eviction().answer(
            404,
            failure(404, "NotFound", "pods \"db-shop-0\" not found"),
        ),
        eviction().answer(
            429,
            failure(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            ),
        ),
    ]);
    rt.evict(&inst()).await.unwrap();
    rt.evict(&inst()).await.unwrap();
    let e = rt.evict(&inst()).await.unwrap_err();
    assert_eq!(e.code(), Some(429), "a disruption budget is waited out");
    finished(rt, verifier).await;
}

/// A database made from a backup whose `restore` init container failed, or cannot start: the
/// reason, from what the kubelet reports.
#[test]
fn a_failed_restore_is_read_from_the_init_containers_status() {
    let pod = |init: serde_json::Value| -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-shop-0"},
            "status": {"phase": "Pending", "initContainerStatuses": [init]},
        }))
        .unwrap()
    };
    let base = json!({"name": "restore", "image": "mariadb:10.11", "imageID": "", "ready": false, "restartCount": 2});
    let mut failed = base.clone();
    failed["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error",
        "message": "data/shop/orders.ibd: FAILED\nsha256sum: WARNING: 1 computed checksum did NOT match\n"}});
    failed["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}});
    assert_eq!(
        pod_view(&pod(failed)).restore_failed.as_deref(),
        Some(
            "data/shop/orders.ibd: FAILED / sha256sum: WARNING: 1 computed checksum did NOT match"
        )
    );
    let mut unmountable = base.clone();
    unmountable["state"] = json!({"waiting": {"reason": "CreateContainerConfigError",
        "message": "failed to prepare subPath"}});
    assert_eq!(
        pod_view(&pod(unmountable)).restore_failed.as_deref(),
        Some("CreateContainerConfigError: failed to prepare subPath")
    );
    let mut waiting = base;
    waiting["state"] = json!({"waiting": {"reason": "PodInitializing"}});
    assert_eq!(pod_view(&pod(waiting)).restore_failed, None);
}
