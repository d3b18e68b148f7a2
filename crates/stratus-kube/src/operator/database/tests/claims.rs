//! A new database taking a spare of the warm pool ([`crate::operator::pool`]): which spare, and
//! when none; the claim's requests; the claimed server made the database's under its own name;
//! a status that names another database's server; and a claim whose record was lost.

use super::*;
use crate::runtime::SpareView;

const SPARE: &str = "spare-00aa11bb";

fn shop() -> ServiceName {
    ServiceName::parse("shop").unwrap()
}

/// A database created just now: no status yet.
fn new_resource() -> DatabaseService {
    let mut ds = resource(&[FINALIZER], false);
    ds.status = None;
    ds
}

/// A spare that fits `resource()` (its 20 GB volume), ready on `node`, made at `made_ms`.
fn spare(id: &str, made_ms: i64, node: &str) -> SpareView {
    SpareView {
        instance: Instance::pooled(&format!("spare-{id}"), None).unwrap(),
        resource_version: "41".into(),
        made_ms,
        deleting: false,
        applied: None,
        claim_template_bytes: stratus_control::storage::max_bytes(20),
        pod: Some(PodView {
            node: Some(node.into()),
            ..ready_pod()
        }),
    }
}

/// What the cluster says of a database that has no server yet, with these spares.
fn unmade(spares: Vec<SpareView>) -> Seen {
    Seen {
        instance: Some(Instance::of(&shop())),
        spares,
        ..Seen::default()
    }
}

fn claimed(plan: &Plan) -> Option<String> {
    plan.steps.iter().find_map(|s| match s {
        Step::Claim(sp) => Some(sp.instance.name()),
        _ => None,
    })
}

#[test]
fn a_new_database_takes_the_oldest_ready_spare_that_fits() {
    let mut starting = spare("0001", 1, "node-a");
    starting.pod.as_mut().unwrap().ready = false;
    let mut small = spare("0002", 2, "node-a");
    small.claim_template_bytes = 10 << 30;
    let mut going = spare("0003", 3, "node-a");
    going.deleting = true;
    let seen = unmade(vec![
        starting,
        small,
        going,
        spare("0005", 5, "node-a"),
        spare("0004", 4, "node-a"),
    ]);
    let plan = plan(&new_resource(), &seen, &sizes());
    assert_eq!(claimed(&plan).as_deref(), Some("spare-0004"));
    assert!(
        !plan.steps.iter().any(|s| matches!(s, Step::Apply(_))),
        "nothing is made: {:?}",
        plan.steps
    );
    let st = status_of(&plan);
    assert_eq!(
        (st.state.as_str(), st.instance.as_deref(), st.scu),
        ("provisioning", Some("spare-0004"), 2)
    );
    assert_eq!(plan.requeue, Some(CLAIMED), "made the database's at once");
}

#[test]
fn no_spare_is_taken_where_it_would_lose_data_or_break_what_was_asked() {
    let spares = || vec![spare("0001", 1, "node-a")];
    // It had a server: its volume is where its data is.
    let mut ran = new_resource();
    ran.status = Some(made());
    // Its volume claim exists (its StatefulSet deleted by hand).
    let mut with_claim = unmade(spares());
    with_claim.claim = Some(ClaimView {
        requested_bytes: 20 << 30,
        deleting: false,
    });
    // Made from a backup: its volume is filled from it.
    let mut restored = new_resource();
    restored.spec.restore_from = Some(crate::v1alpha1::RestoreFrom {
        claim: "stratus-backups".into(),
        backup: "orders-20261130T030005000Z".into(),
    });
    // Made parked: nothing runs until it is woken.
    let parked = with_state(new_resource(), Lifecycle::Parked);
    // Asked for a node no spare is on.
    let mut pinned = new_resource();
    pinned.spec.node = Some("node-b".into());
    for (why, ds, seen) in [
        ("it ran before", ran, unmade(spares())),
        ("its claim exists", new_resource(), with_claim),
        ("made from a backup", restored, unmade(spares())),
        ("made parked", parked, unmade(spares())),
        ("pinned elsewhere", pinned.clone(), unmade(spares())),
        ("the pool is empty", new_resource(), unmade(Vec::new())),
    ] {
        let plan = plan(&ds, &seen, &sizes());
        assert_eq!(claimed(&plan), None, "{why}: {:?}", plan.steps);
    }
    // A spare on the node it asks for is taken.
    let plan = plan(&pinned, &unmade(vec![spare("0002", 2, "node-b")]), &sizes());
    assert_eq!(claimed(&plan).as_deref(), Some("spare-0002"));
}

#[test]
fn a_claimed_spare_is_made_the_databases_and_keeps_its_name_in_every_status() {
    let mut ds = new_resource();
    ds.status = Some(DatabaseServiceStatus {
        state: "provisioning".into(),
        instance: Some(SPARE.into()),
        ..DatabaseServiceStatus::default()
    });
    let seen = Seen {
        instance: Some(Instance::pooled(SPARE, Some(shop())).unwrap()),
        pod: Some(ready_pod()),
        set: Some(SetView {
            claim_template_bytes: stratus_control::storage::max_bytes(20),
            replicas: 1,
            applied: None,
            foreign: false,
        }),
        ..Seen::default()
    };
    let plan = plan(&ds, &seen, &sizes());
    assert!(matches!(plan.steps[0], Step::Apply(_)), "{:?}", plan.steps);
    assert!(
        plan.steps
            .iter()
            .any(|s| matches!(s, Step::Provision { .. })),
        "{:?}",
        plan.steps
    );
    assert_eq!(claimed(&plan), None);
    assert_eq!(status_of(&plan).instance.as_deref(), Some(SPARE));
}

#[test]
fn a_status_naming_another_databases_server_touches_nothing_and_is_cleared() {
    let mut ds = resource(&[FINALIZER], false);
    ds.status = Some(DatabaseServiceStatus {
        instance: Some(SPARE.into()),
        ..made()
    });
    let seen = Seen {
        instance: Some(Instance::pooled(SPARE, Some(shop())).unwrap()),
        foreign: true,
        ..Seen::default()
    };
    let plan = plan(&ds, &seen, &sizes());
    assert_eq!(plan.steps.len(), 1, "{:?}", plan.steps);
    let st = status_of(&plan);
    assert_eq!((st.state.as_str(), st.instance), ("failed", None));
    assert!(
        st.message.unwrap().contains("another database's server"),
        "says why"
    );
}

fn pool_context(script: Vec<Exchange>) -> (Context, Verifier) {
    let (ctx, verifier) = context(script);
    (
        ctx.with_pool(stratus_control::pool::PoolConfig {
            min: 1,
            max: 4,
            presized: 0,
        }),
        verifier,
    )
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "50"}, "items": items})
}

const SPARES: &str = "?&labelSelector=stratus.dev%2Fspare%3Dtrue";
const CLAIMED_BY_SHOP: &str =
    "?&labelSelector=stratus.dev%2Fdatabase%3Dshop%2Cstratus.dev%2Finstance";

/// A spare's StatefulSet as this operator makes it, as listed.
fn spare_set() -> Value {
    let inst = Instance::pooled(SPARE, None).unwrap();
    let spec = crate::operator::pool::spare_spec(&inst, &sizes());
    let mut set =
        serde_json::to_value(objects_of::stateful_set(&inst, &spec, &Settings::default())).unwrap();
    set["metadata"]["resourceVersion"] = json!("41");
    set["metadata"]["creationTimestamp"] = json!("2026-12-02T10:00:00Z");
    // Its volume is the one the database is to have (`resource()`: 20 GB).
    set["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
        json!(stratus_control::storage::max_bytes(20).to_string());
    set
}

/// The spare's pod, ready; `database`: the label a claim gave it.
fn spare_pod(database: Option<&str>) -> Value {
    let mut pod = pod_json("node-a", "1");
    pod["metadata"]["name"] = json!(format!("{SPARE}-0"));
    pod["metadata"]["labels"] = match database {
        Some(db) => json!({"stratus.dev/instance": SPARE, "stratus.dev/database": db}),
        None => json!({"stratus.dev/instance": SPARE, "stratus.dev/spare": "true"}),
    };
    pod
}

/// The reads of a database with no server yet, in a namespace with a warm pool: its own
/// objects (none), a claim of its that was not recorded (none), then the spares.
fn unmade_reads(spares: Vec<Value>, pods: Vec<Value>) -> Vec<Exchange> {
    let mut script = vec![no_pod()];
    // (its own objects, then a lost claim of its)
    script.extend(observe(None, false));
    script.push(
        expect("GET", &format!("{APPS}/statefulsets{SPARES}"))
            .answer(200, list("StatefulSetList", spares)),
    );
    script.push(expect("GET", &format!("{NS}/pods{SPARES}")).answer(200, list("PodList", pods)));
    script
}

fn relabelled() -> Value {
    json!({"stratus.dev/spare": null, "stratus.dev/database": "shop"})
}

#[tokio::test]
async fn claiming_a_spare_relabels_it_and_records_it_in_the_status() {
    let ds = new_resource();
    let mut script = unmade_reads(vec![spare_set()], vec![spare_pod(None)]);
    script.extend([
        // The StatefulSet first, against the version listed: it is the record.
        expect("PATCH", &format!("{APPS}/statefulsets/{SPARE}?"))
            .body(
                MERGE,
                json!({"metadata": {"resourceVersion": "41", "labels": relabelled(),
                                    "annotations": {"stratus.dev/claimed-by": "5f0c1a2e-shop"}}}),
            )
            .answer(200, spare_set()),
        expect("PATCH", &format!("{NS}/pods/{SPARE}-0?"))
            .body(MERGE, json!({"metadata": {"labels": relabelled()}}))
            .answer(200, spare_pod(Some("shop"))),
        expect("PATCH", &format!("{NS}/secrets/{SPARE}?"))
            .body(MERGE, json!({"metadata": {"labels": relabelled()}}))
            .answer(
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SPARE}}),
            ),
        expect(
            "PATCH",
            &format!("{NS}/persistentvolumeclaims/data-{SPARE}-0?"),
        )
        .body(MERGE, json!({"metadata": {"labels": relabelled()}}))
        .answer(200, pvc(Some("shop"))),
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, |body| {
                assert_eq!(body["status"]["state"], "provisioning", "{body}");
                assert_eq!(body["status"]["instance"], SPARE);
                assert_eq!(body["status"]["database"], "shop");
            })
            .answer(200, cr_answer(&ds)),
        expect_event(
            "stratus-operator",
            "pod-a",
            "Claimed",
            "Normal",
            Some(SPARE),
        ),
    ]);
    let (ctx, verifier) = pool_context(script);
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), Some(CLAIMED));
    assert_eq!(
        ctx.recent_creates(stratus_core::time::now_ms()),
        1,
        "demand"
    );
    drop(ctx);
    verifier.finished().await;
}

#[tokio::test]
async fn a_spare_taken_meanwhile_by_another_database_is_no_failure() {
    let ds = new_resource();
    let mut script = unmade_reads(vec![spare_set()], vec![spare_pod(None)]);
    script.push(
        expect("PATCH", &format!("{APPS}/statefulsets/{SPARE}?"))
            .body(
                MERGE,
                json!({"metadata": {"resourceVersion": "41", "labels": relabelled(),
                                    "annotations": {"stratus.dev/claimed-by": "5f0c1a2e-shop"}}}),
            )
            .answer(
                409,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
            ),
    );
    let (ctx, verifier) = pool_context(script);
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), Some(CLAIMED));
    assert_eq!(ctx.recent_creates(stratus_core::time::now_ms()), 0);
    drop(ctx);
    verifier.finished().await;
}

#[tokio::test]
async fn with_no_spare_that_fits_the_database_gets_a_server_of_its_own() {
    let mut ds = new_resource();
    ds.metadata.finalizers = None;
    let mut with_finalizer = ds.clone();
    with_finalizer.metadata.finalizers = Some(vec![FINALIZER.into()]);
    // The one spare has the default 10 GB volume; this database is to have 20.
    let mut small = spare_set();
    small["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
        json!((10u64 << 30).to_string());
    let mut script = unmade_reads(vec![small], vec![spare_pod(None)]);
    script.push(add_finalizer(&with_finalizer));
    script.extend(apply_requests());
    script.push(status_request("provisioning").answer(200, cr_answer(&ds)));
    script.push(event("Created", "Normal"));
    let (ctx, verifier) = pool_context(script);
    reconcile(&ds, &ctx).await.unwrap();
    drop(ctx);
    verifier.finished().await;
}

/// The look after the claim: every request goes to the spare's objects, which keep its name;
/// its server gets the database's schema and owner, and its Secret the accounts.
#[tokio::test]
async fn the_claimed_server_is_provisioned_under_the_spares_name() {
    let mut ds = new_resource();
    ds.status = Some(DatabaseServiceStatus {
        state: "provisioning".into(),
        instance: Some(SPARE.into()),
        ..DatabaseServiceStatus::default()
    });
    let inst = Instance::pooled(SPARE, Some(shop())).unwrap();
    let mut set = spare_set();
    set["metadata"]["labels"] = json!(inst.labels());
    let claim = pvc(Some("shop"));
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SPARE, "labels": inst.labels()}, "data": {"password": "cHc="}});
    let (cm, svc, sts) = claimed_objects();
    let mut script =
        vec![
        expect("GET", &format!("{NS}/pods/{SPARE}-0")).answer(200, spare_pod(Some("shop"))),
        expect("GET", &format!("{APPS}/statefulsets/{SPARE}")).answer(200, set),
        expect("GET", &format!("{NS}/persistentvolumeclaims/data-{SPARE}-0")).answer(200, claim),
        expect("GET", &format!("{NS}/secrets/{SPARE}")).answer(200, secret.clone()),
        expect("PATCH", &format!("{NS}/configmaps/{SPARE}{APPLIED}"))
            .body(APPLY, cm.clone())
            .answer(200, cm),
        expect("PATCH", &format!("{NS}/services/{SPARE}{APPLIED}"))
            .checked(APPLY, |body| {
                assert_eq!(body["spec"]["selector"], json!({"stratus.dev/instance": SPARE}));
            })
            .answer(200, svc),
        expect("PATCH", &format!("{APPS}/statefulsets/{SPARE}{APPLIED}"))
            .checked(APPLY, |body| {
                let labels = &body["spec"]["template"]["metadata"]["labels"];
                assert_eq!(labels["stratus.dev/database"], "shop", "{labels}");
                assert!(labels.get("stratus.dev/spare").is_none(), "{labels}");
                assert_eq!(
                    body["spec"]["selector"]["matchLabels"],
                    json!({"stratus.dev/instance": SPARE}),
                    "a selector cannot change"
                );
                assert_eq!(body["spec"]["serviceName"], SPARE);
            })
            .answer(200, sts),
        expect("GET", &format!("{NS}/secrets/shop-owner"))
            .answer(404, not_found("secrets \"shop-owner\"")),
        expect("POST", &format!("{NS}/secrets?"))
            .checked(JSON, |body| assert_eq!(body["metadata"]["name"], "shop-owner"))
            .answer(
                201,
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "shop-owner", "namespace": "stratus"}}),
            ),
        // The accounts, for the proxy, in the spare's Secret.
        expect("GET", &format!("{NS}/secrets/{SPARE}")).answer(200, secret),
        expect("PATCH", &format!("{NS}/secrets/{SPARE}?"))
            .body(
                MERGE,
                json!({"stringData": {"accounts": crate::accounts::encode(&server_accounts())}}),
            )
            .answer(
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SPARE}}),
            ),
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, |body| {
                assert_eq!(body["status"]["state"], "active", "{body}");
                assert_eq!(body["status"]["instance"], SPARE);
                assert_eq!(body["status"]["ownerCreated"], true);
            })
            .answer(200, cr_answer(&ds)),
    ];
    script.push(event("Provisioned", "Normal"));
    let sql = Arc::new(ScriptedSql::default());
    let (ctx, verifier) = scripted_context(script, sql.clone());
    let ctx = ctx.with_pool(stratus_control::pool::PoolConfig {
        min: 1,
        max: 4,
        presized: 0,
    });
    reconcile(&ds, &ctx).await.unwrap();
    drop(ctx);
    verifier.finished().await;
    let calls = sql.calls.lock().unwrap();
    assert!(
        calls[0].starts_with("provision shop at 10.0.0.7"),
        "{calls:?}"
    );
}

/// A status edited to name a server another database claimed: read, seen to be labelled for
/// the other one, and left alone; the record is cleared.
#[tokio::test]
async fn a_status_naming_another_databases_server_is_refused_with_nothing_touched() {
    let mut ds = resource(&[FINALIZER], false);
    ds.status = Some(DatabaseServiceStatus {
        instance: Some(SPARE.into()),
        ..made()
    });
    let mut theirs = spare_set();
    theirs["metadata"]["labels"] = json!(
        Instance::pooled(SPARE, Some(ServiceName::parse("other").unwrap()))
            .unwrap()
            .labels()
    );
    let script = vec![
        expect("GET", &format!("{NS}/pods/{SPARE}-0")).answer(200, spare_pod(Some("other"))),
        expect("GET", &format!("{APPS}/statefulsets/{SPARE}")).answer(200, theirs),
        expect(
            "GET",
            &format!("{NS}/persistentvolumeclaims/data-{SPARE}-0"),
        )
        .answer(404, not_found("persistentvolumeclaims")),
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, |body| {
                assert_eq!(body["status"]["state"], "failed", "{body}");
                assert_eq!(body["status"]["instance"], Value::Null, "cleared");
            })
            .answer(200, cr_answer(&ds)),
    ];
    let (ctx, verifier) = pool_context(script);
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), Some(SOON));
    drop(ctx);
    verifier.finished().await;
}

/// The ConfigMap, Service and StatefulSet of `shop` on the spare it claimed, as the operator
/// applies them (its 20 GB volume).
fn claimed_objects() -> (Value, Value, Value) {
    let inst = Instance::pooled(SPARE, Some(shop())).unwrap();
    let s = Settings::default();
    let mut spec = instance();
    spec.storage_bytes = stratus_control::storage::max_bytes(20);
    (
        serde_json::to_value(objects_of::config_map(&inst, &spec, &s)).unwrap(),
        serde_json::to_value(objects_of::service(&inst, &s)).unwrap(),
        serde_json::to_value(objects_of::stateful_set(&inst, &spec, &s)).unwrap(),
    )
}

/// The spare's StatefulSet as claimed by resource `uid` for database `shop`.
fn claimed_set(uid: &str) -> Value {
    let mut set = spare_set();
    set["metadata"]["labels"] = json!(Instance::pooled(SPARE, Some(shop())).unwrap().labels());
    set["metadata"]["annotations"]["stratus.dev/claimed-by"] = json!(uid);
    set
}

/// The spare's volume claim; `database`: the label a claim gave it.
fn pvc(database: Option<&str>) -> Value {
    let mut labels = json!({"stratus.dev/instance": SPARE});
    if let Some(db) = database {
        labels["stratus.dev/database"] = json!(db);
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": format!("data-{SPARE}-0"), "namespace": "stratus", "labels": labels},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}})
}

fn spare_secret(database: Option<&str>) -> Value {
    let mut labels = json!({"stratus.dev/instance": SPARE});
    match database {
        Some(db) => labels["stratus.dev/database"] = json!(db),
        None => labels["stratus.dev/spare"] = json!("true"),
    }
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": SPARE, "labels": labels}, "data": {"password": "cHc="}})
}

/// The reads of `shop` with no objects of its own, whose lost claim is `found`.
fn lost_claim(pod: bool, found: Vec<Value>) -> Vec<Exchange> {
    let mut script = Vec::new();
    if pod {
        script.push(no_pod());
    }
    script.extend([
        expect("GET", &format!("{APPS}/statefulsets/db-shop"))
            .answer(404, not_found("statefulsets.apps \"db-shop\"")),
        expect(
            "GET",
            &format!("{NS}/persistentvolumeclaims/data-db-shop-0"),
        )
        .answer(404, not_found("persistentvolumeclaims \"data-db-shop-0\"")),
        expect("GET", &format!("{APPS}/statefulsets{CLAIMED_BY_SHOP}"))
            .answer(200, list("StatefulSetList", found)),
    ]);
    script
}

/// The operator stopped between a claim and its status: the database is deleted before a look
/// recorded it. The spare it claimed is found (by its resource's uid) and removed with it,
/// volume last; the pool need not be on.
#[tokio::test]
async fn a_claim_whose_record_was_lost_is_found_and_removed_with_its_database() {
    let ds = resource(&[FINALIZER], true);
    let bg = json!({"propagationPolicy": "Background"});
    let deleted = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
    let mut script = lost_claim(false, vec![claimed_set("5f0c1a2e-shop")]);
    script.extend([
        expect("GET", &format!("{APPS}/statefulsets/{SPARE}"))
            .answer(200, claimed_set("5f0c1a2e-shop")),
        expect(
            "GET",
            &format!("{NS}/persistentvolumeclaims/data-{SPARE}-0"),
        )
        .answer(200, pvc(Some("shop"))),
        // Found this way, the claim is looked at: all of it labelled already.
        expect("GET", &format!("{NS}/pods/{SPARE}-0")).answer(404, not_found("pods")),
        expect("GET", &format!("{NS}/secrets/{SPARE}")).answer(200, spare_secret(Some("shop"))),
        expect(
            "GET",
            &format!("{NS}/persistentvolumeclaims/data-{SPARE}-0"),
        )
        .answer(200, pvc(Some("shop"))),
    ]);
    script.extend(
        [
            format!("{APPS}/statefulsets/{SPARE}?"),
            format!("{NS}/services/{SPARE}?"),
            format!("{NS}/configmaps/{SPARE}?"),
            format!("{NS}/secrets/{SPARE}?"),
            format!("{NS}/persistentvolumeclaims/data-{SPARE}-0?"),
        ]
        .iter()
        .map(|uri| {
            expect("DELETE", uri)
                .body(JSON, bg.clone())
                .answer(200, deleted.clone())
        }),
    );
    script.push(event("Deleting", "Normal"));
    let (ctx, verifier) = context(script);
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), Some(SOON));
    drop(ctx);
    verifier.finished().await;
}

/// A spare claimed by an earlier resource of the same name (its objects leaked, a finalizer
/// removed by hand) is not this database's: it is not taken up, and the database is made anew.
#[tokio::test]
async fn a_claim_by_an_earlier_database_of_the_same_name_is_not_taken_up() {
    let ds = resource(&[FINALIZER], true);
    let mut script = lost_claim(false, vec![claimed_set("an-earlier-uid")]);
    script.push(
        expect("PATCH", &format!("{CR}?"))
            .body(
                MERGE,
                json!({"metadata": {"finalizers": [], "resourceVersion": "100"}}),
            )
            .answer(200, cr_answer(&ds)),
    );
    let (ctx, verifier) = context(script);
    assert_eq!(reconcile(&ds, &ctx).await.unwrap(), None);
    drop(ctx);
    verifier.finished().await;
}

/// The operator stopped right after relabelling the StatefulSet: the pod, the Secret and the
/// volume claim still say spare. The next look finds the claim and finishes it, then goes on
/// as for any claimed server.
#[tokio::test]
async fn a_claim_cut_short_is_finished_at_the_next_look() {
    let ds = resource(&[FINALIZER], false);
    let set = claimed_set("5f0c1a2e-shop");
    let relabel = |uri: String, answer: Value| {
        expect("PATCH", &uri)
            .body(MERGE, json!({"metadata": {"labels": relabelled()}}))
            .answer(200, answer)
    };
    let mut script = lost_claim(true, vec![set.clone()]);
    script.extend([
        // Its own pod and volume claim are not yet its: seen as none.
        expect("GET", &format!("{NS}/pods/{SPARE}-0")).answer(200, spare_pod(None)),
        expect("GET", &format!("{APPS}/statefulsets/{SPARE}")).answer(200, set.clone()),
        expect(
            "GET",
            &format!("{NS}/persistentvolumeclaims/data-{SPARE}-0"),
        )
        .answer(200, pvc(None)),
        // Finished.
        expect("GET", &format!("{NS}/pods/{SPARE}-0")).answer(200, spare_pod(None)),
        relabel(format!("{NS}/pods/{SPARE}-0?"), spare_pod(Some("shop"))),
        expect("GET", &format!("{NS}/secrets/{SPARE}")).answer(200, spare_secret(None)),
        relabel(format!("{NS}/secrets/{SPARE}?"), spare_secret(Some("shop"))),
        expect(
            "GET",
            &format!("{NS}/persistentvolumeclaims/data-{SPARE}-0"),
        )
        .answer(200, pvc(None)),
        relabel(
            format!("{NS}/persistentvolumeclaims/data-{SPARE}-0?"),
            pvc(Some("shop")),
        ),
        // Seen again: its own now.
        expect("GET", &format!("{NS}/pods/{SPARE}-0")).answer(200, spare_pod(Some("shop"))),
        expect("GET", &format!("{APPS}/statefulsets/{SPARE}")).answer(200, set),
        expect(
            "GET",
            &format!("{NS}/persistentvolumeclaims/data-{SPARE}-0"),
        )
        .answer(200, pvc(Some("shop"))),
    ]);
    // Then what any look of a serving database does, under the spare's name: its objects
    // applied, its accounts (already published), its status with the instance recorded.
    let (cm, svc, sts) = claimed_objects();
    let accounts = crate::accounts::encode(&server_accounts());
    let mut published = spare_secret(Some("shop"));
    published["data"]["accounts"] = json!(base64(&accounts));
    script.extend([
        expect("GET", &format!("{NS}/secrets/{SPARE}")).answer(200, spare_secret(Some("shop"))),
        expect("PATCH", &format!("{NS}/configmaps/{SPARE}{APPLIED}"))
            .body(APPLY, cm.clone())
            .answer(200, cm),
        expect("PATCH", &format!("{NS}/services/{SPARE}{APPLIED}"))
            .body(APPLY, svc.clone())
            .answer(200, svc),
        expect("PATCH", &format!("{APPS}/statefulsets/{SPARE}{APPLIED}"))
            .body(APPLY, sts.clone())
            .answer(200, sts),
        expect("GET", &format!("{NS}/secrets/{SPARE}")).answer(200, published),
        expect("PATCH", &format!("{CR}/status?"))
            .checked(MERGE, |body| {
                assert_eq!(body["status"]["state"], "active", "{body}");
                assert_eq!(body["status"]["instance"], SPARE);
            })
            .answer(200, cr_answer(&ds)),
    ]);
    let (ctx, verifier) = context(script);
    reconcile(&ds, &ctx).await.unwrap();
    drop(ctx);
    verifier.finished().await;
}
