//! The pool's decisions (pure), then one look's exact requests against the mocked API server.

use super::*;
use crate::mock_api::{APPLIED, APPLY, APPS, JSON, NS, expect, expect_named, serve};
use crate::runtime::PodView;
use serde_json::{Value, json};

fn cfg(min: usize, max: usize) -> PoolConfig {
    PoolConfig {
        min,
        max,
        presized: 0,
    }
}

fn spare(id: &str, made_ms: i64, ready: bool) -> SpareView {
    SpareView {
        instance: Instance::pooled(&format!("spare-{id}"), None).unwrap(),
        resource_version: "7".into(),
        made_ms,
        deleting: false,
        applied: None,
        claim_template_bytes: 10 << 30,
        pod: Some(PodView {
            ready,
            ..PodView::default()
        }),
    }
}

fn removed(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Remove(sp) => Some(sp.instance.name()),
            Step::Make(_) => None,
        })
        .collect()
}

#[test]
fn an_empty_pool_is_filled_to_its_minimum_at_once() {
    assert_eq!(plan(cfg(2, 8), &[], 0), [Step::Make(2)]);
    assert_eq!(plan(cfg(0, 0), &[], 5), [], "off");
}

#[test]
fn demand_raises_the_target_up_to_the_maximum() {
    let have = [(spare("aaaa", 1, true), true)];
    assert_eq!(plan(cfg(1, 4), &have, 2), [Step::Make(2)]);
    assert_eq!(plan(cfg(1, 4), &have, 10), [Step::Make(3)]);
}

#[test]
fn spares_still_starting_count_as_made() {
    let have = [
        (spare("aaaa", 1, true), true),
        (spare("bbbb", 2, false), true),
    ];
    assert_eq!(plan(cfg(2, 8), &have, 0), []);
}

#[test]
fn beyond_the_target_the_newest_ready_spares_go_and_a_start_under_way_is_kept() {
    let have = [
        (spare("aaaa", 1, true), true),
        (spare("bbbb", 3, true), true),
        (spare("cccc", 2, true), true),
        (spare("dddd", 4, false), true),
    ];
    assert_eq!(
        removed(&plan(cfg(1, 4), &have, 0)),
        ["spare-bbbb", "spare-cccc"]
    );
}

#[test]
fn a_spare_made_with_other_settings_is_replaced() {
    let have = [(spare("aaaa", 1, true), false)];
    let steps = plan(cfg(1, 4), &have, 0);
    assert_eq!(removed(&steps), ["spare-aaaa"]);
    assert!(steps.contains(&Step::Make(1)), "{steps:?}");
}

#[test]
fn a_spare_being_deleted_counts_for_nothing() {
    let mut going = spare("aaaa", 1, true);
    going.deleting = true;
    assert_eq!(plan(cfg(1, 4), &[(going, true)], 0), [Step::Make(1)]);
}

fn sizes() -> Sizes {
    Sizes {
        scu: stratus_core::ScuSize::default(),
        proxy_host: "stratus-proxy".into(),
        proxy_port: 3306,
    }
}

/// A spare's StatefulSet as the API server lists it: made by this operator (`current`) or by
/// one with other settings.
fn listed_set(id: &str, current: bool) -> Value {
    let inst = Instance::pooled(&format!("spare-{id}"), None).unwrap();
    let mut settings = objects::Settings::default();
    if !current {
        settings.image = "mariadb:10.6".into();
    }
    let mut set = serde_json::to_value(objects::stateful_set(
        &inst,
        &spare_spec(&inst, &sizes()),
        &settings,
    ))
    .unwrap();
    set["metadata"]["resourceVersion"] = json!("41");
    set["metadata"]["creationTimestamp"] = json!("2026-12-02T10:00:00Z");
    set
}

fn ready_pod(id: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("spare-{id}-0"), "namespace": "stratus",
                        "labels": {"stratus.dev/spare": "true", "stratus.dev/instance": format!("spare-{id}")}},
           "status": {"phase": "Running", "podIP": "10.0.0.9",
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "50"}, "items": items})
}

const SPARES: &str = "?&labelSelector=stratus.dev%2Fspare%3Dtrue";

/// One look with a minimum of 2: a spare an older configuration made is removed (against the
/// version listed, its volume last), and two are made (Secret, ConfigMap, StatefulSet each).
#[tokio::test]
async fn a_look_replaces_an_outdated_spare_and_fills_the_pool() {
    let make = || {
        vec![
            expect_named("GET", &format!("{NS}/secrets/"), "")
                .answer(404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "code": 404})),
            expect("POST", &format!("{NS}/secrets?"))
                .checked(JSON, |body| {
                    assert_eq!(body["metadata"]["labels"]["stratus.dev/spare"], "true");
                    let name = body["metadata"]["name"].as_str().unwrap();
                    assert!(Instance::pooled(name, None).is_some(), "{name}");
                    assert!(body["stringData"]["password"].as_str().unwrap().len() >= 20);
                })
                .answer(201, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "spare-x"}})),
            expect_named("PATCH", &format!("{NS}/configmaps/"), APPLIED)
                .checked(APPLY, |body| {
                    let cnf = body["data"]["my.cnf"].as_str().unwrap();
                    assert!(cnf.contains("innodb_buffer_pool_size"), "{cnf}");
                })
                .answer(200, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "spare-x"}})),
            expect_named("PATCH", &format!("{APPS}/statefulsets/"), APPLIED)
                .checked(APPLY, |body| {
                    let name = body["metadata"]["name"].as_str().unwrap();
                    assert_eq!(body["spec"]["selector"]["matchLabels"], json!({"stratus.dev/instance": name}));
                    let labels = &body["spec"]["template"]["metadata"]["labels"];
                    assert_eq!(labels["stratus.dev/spare"], "true");
                    assert!(labels.get("stratus.dev/database").is_none(), "{labels}");
                    assert_eq!(
                        body["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
                        "10737418240"
                    );
                })
                .answer(200, json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "spare-x"}})),
        ]
    };
    let mut script = vec![
        expect("GET", &format!("{APPS}/statefulsets{SPARES}"))
            .answer(200, list("StatefulSetList", vec![listed_set("0dd0", false)])),
        expect("GET", &format!("{NS}/pods{SPARES}"))
            .answer(200, list("PodList", vec![ready_pod("0dd0")])),
        expect("DELETE", &format!("{APPS}/statefulsets/spare-0dd0?"))
            .body(JSON, json!({"propagationPolicy": "Background", "preconditions": {"resourceVersion": "41"}}))
            .answer(200, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
        expect("DELETE", &format!("{NS}/configmaps/spare-0dd0?"))
            .body(JSON, json!({"propagationPolicy": "Background"}))
            .answer(200, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
        expect("DELETE", &format!("{NS}/secrets/spare-0dd0?"))
            .body(JSON, json!({"propagationPolicy": "Background"}))
            .answer(200, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
        expect("DELETE", &format!("{NS}/persistentvolumeclaims/data-spare-0dd0-0?"))
            .body(JSON, json!({"propagationPolicy": "Background"}))
            .answer(200, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
    ];
    script.extend(make());
    script.extend(make());
    let (client, verifier) = serve(script);
    let ctx =
        Context::new(client, objects::Settings::default(), sizes(), "pod-a").with_pool(cfg(2, 8));
    let steps = look(&ctx).await.unwrap();
    assert_eq!(steps.len(), 2, "{steps:?}");
    drop(ctx);
    verifier.finished().await;
}

/// A spare claimed by a database between the listing and its removal: the delete against the
/// version listed is refused, and nothing of it is touched.
#[tokio::test]
async fn a_spare_claimed_meanwhile_is_not_removed() {
    let script = vec![
        expect("GET", &format!("{APPS}/statefulsets{SPARES}")).answer(
            200,
            list("StatefulSetList", vec![listed_set("aaaa", true), listed_set("bbbb", true)]),
        ),
        expect("GET", &format!("{NS}/pods{SPARES}"))
            .answer(200, list("PodList", vec![ready_pod("aaaa"), ready_pod("bbbb")])),
        expect("DELETE", &format!("{APPS}/statefulsets/spare-bbbb?"))
            .body(JSON, json!({"propagationPolicy": "Background", "preconditions": {"resourceVersion": "41"}}))
            .answer(409, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "reason": "Conflict", "code": 409,
                                "message": "Precondition failed: ResourceVersion"})),
    ];
    let (client, verifier) = serve(script);
    let ctx =
        Context::new(client, objects::Settings::default(), sizes(), "pod-a").with_pool(cfg(1, 4));
    look(&ctx).await.unwrap();
    drop(ctx);
    verifier.finished().await;
}
