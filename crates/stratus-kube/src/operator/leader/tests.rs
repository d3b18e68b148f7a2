//! The election's decisions (pure), then each path against the mocked API server.

use super::*;
use crate::mock_api::*;
use serde_json::{Value, json};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/stratus/leases";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn spec(holder: Option<&str>, renewed: &str) -> LeaseSpec {
    LeaseSpec {
        holder_identity: holder.map(str::to_owned),
        lease_duration_seconds: Some(15),
        acquire_time: Some(MicroTime(at("2026-12-01T22:00:00Z"))),
        renew_time: Some(MicroTime(at(renewed))),
        lease_transitions: Some(4),
        ..LeaseSpec::default()
    }
}

#[test]
fn a_lease_is_taken_only_when_seen_unchanged_for_its_whole_duration() {
    let live = spec(Some("a"), "2026-12-01T22:59:59Z");
    let s = Duration::from_secs;
    assert_eq!(decide(None, "b", None), Decision::Create);
    assert_eq!(
        decide(
            Some(&spec(Some("b"), "2026-12-01T22:00:00Z")),
            "b",
            Some(s(60))
        ),
        Decision::Renew
    );
    assert_eq!(
        decide(Some(&live), "b", None),
        Decision::Follow { holder: "a".into() },
        "just seen"
    );
    assert_eq!(
        decide(Some(&live), "b", Some(s(14))),
        Decision::Follow { holder: "a".into() }
    );
    assert_eq!(decide(Some(&live), "b", Some(s(15))), Decision::TakeOver);
    assert_eq!(
        decide(Some(&spec(None, "2026-12-01T22:59:59Z")), "b", None),
        Decision::TakeOver,
        "given up"
    );
    // The holder's own renewTime does not count: a clock far behind or ahead changes nothing.
    let skewed = spec(Some("a"), "2026-12-01T20:00:00Z");
    assert_eq!(
        decide(Some(&skewed), "b", Some(s(3))),
        Decision::Follow { holder: "a".into() }
    );
}

fn lease(holder: Option<&str>, renewed: &str, version: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "stratus-operator", "namespace": "stratus", "resourceVersion": version},
           "spec": serde_json::to_value(spec(holder, renewed)).unwrap()})
}

fn elector(script: Vec<Exchange>) -> (Elector, Verifier) {
    let (client, verifier) = serve(script);
    let e = Elector::new(
        client,
        "stratus",
        "stratus-operator",
        "pod-b",
        Duration::from_secs(15),
    );
    (e, verifier)
}

async fn finish(e: Elector, v: Verifier) {
    drop(e);
    v.finished().await;
}

const NOW: &str = "2026-12-01T23:00:00Z";

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": "leases.coordination.k8s.io \"stratus-operator\" not found"})
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
           "message": "Operation cannot be fulfilled on leases.coordination.k8s.io \"stratus-operator\": the object has been modified"})
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_leads() {
    let (e, v) = elector(vec![
        expect("GET", &format!("{LEASES}/stratus-operator")).answer(404, not_found()),
        expect("POST", &format!("{LEASES}?"))
            .body(JSON, json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "stratus-operator"},
                "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15,
                         "acquireTime": "2026-12-01T23:00:00.000000Z", "renewTime": "2026-12-01T23:00:00.000000Z",
                         "leaseTransitions": 0}}))
            .answer(201, lease(Some("pod-b"), NOW, "1")),
    ]);
    assert!(e.try_lead(at(NOW)).await.unwrap());
    finish(e, v).await;
}

#[tokio::test]
async fn the_holder_renews_with_the_version_it_read() {
    let (e, v) = elector(vec![
        expect("GET", &format!("{LEASES}/stratus-operator"))
            .answer(200, lease(Some("pod-b"), "2026-12-01T22:59:55Z", "7")),
        expect("PUT", &format!("{LEASES}/stratus-operator?"))
            .checked(JSON, |body| {
                assert_eq!(body["metadata"]["resourceVersion"], "7");
                assert_eq!(body["spec"]["holderIdentity"], "pod-b");
                assert_eq!(body["spec"]["renewTime"], "2026-12-01T23:00:00.000000Z");
                assert_eq!(
                    body["spec"]["acquireTime"], "2026-12-01T22:00:00.000000Z",
                    "kept"
                );
                assert_eq!(body["spec"]["leaseTransitions"], 4);
            })
            .answer(200, lease(Some("pod-b"), NOW, "8")),
    ]);
    assert!(e.try_lead(at(NOW)).await.unwrap());
    finish(e, v).await;
}

#[tokio::test]
async fn a_live_lease_of_another_replica_is_left_alone() {
    let (e, v) = elector(vec![
        expect("GET", &format!("{LEASES}/stratus-operator"))
            .answer(200, lease(Some("pod-a"), "2026-12-01T22:59:58Z", "7")),
    ]);
    assert!(!e.try_lead(at(NOW)).await.unwrap());
    finish(e, v).await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_and_of_two_racing_only_one_wins() {
    let get = |version: &str| {
        expect("GET", &format!("{LEASES}/stratus-operator"))
            .answer(200, lease(Some("pod-a"), "2026-12-01T22:59:00Z", version))
    };
    let (e, v) = elector(vec![
        get("7"),
        get("7"),
        expect("PUT", &format!("{LEASES}/stratus-operator?"))
            .checked(JSON, |body| {
                assert_eq!(body["metadata"]["resourceVersion"], "7");
                assert_eq!(body["spec"]["holderIdentity"], "pod-b");
                assert_eq!(body["spec"]["acquireTime"], "2026-12-01T23:00:00.000000Z");
                assert_eq!(body["spec"]["leaseTransitions"], 5);
            })
            .answer(200, lease(Some("pod-b"), NOW, "8")),
    ]);
    assert!(!e.try_lead(at(NOW)).await.unwrap(), "first sight: follow");
    tokio::time::advance(Duration::from_secs(15)).await;
    assert!(
        e.try_lead(at(NOW)).await.unwrap(),
        "unchanged for 15 s: taken over"
    );
    finish(e, v).await;

    let (e, v) = elector(vec![
        get("7"),
        get("7"),
        expect("PUT", &format!("{LEASES}/stratus-operator?"))
            .checked(JSON, |_| {})
            .answer(409, conflict()),
    ]);
    assert!(!e.try_lead(at(NOW)).await.unwrap());
    tokio::time::advance(Duration::from_secs(15)).await;
    assert!(
        !e.try_lead(at(NOW)).await.unwrap(),
        "lost the race: another replica leads"
    );
    finish(e, v).await;
}

#[tokio::test(start_paused = true)]
async fn a_lease_renewed_meanwhile_restarts_the_wait() {
    let (e, v) = elector(vec![
        expect("GET", &format!("{LEASES}/stratus-operator"))
            .answer(200, lease(Some("pod-a"), NOW, "7")),
        expect("GET", &format!("{LEASES}/stratus-operator"))
            .answer(200, lease(Some("pod-a"), NOW, "8")),
        expect("GET", &format!("{LEASES}/stratus-operator"))
            .answer(200, lease(Some("pod-a"), NOW, "8")),
    ]);
    assert!(!e.try_lead(at(NOW)).await.unwrap());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(!e.try_lead(at(NOW)).await.unwrap(), "renewed: seen changed");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(
        !e.try_lead(at(NOW)).await.unwrap(),
        "10 s since the change, not 15"
    );
    finish(e, v).await;
}

#[tokio::test]
async fn an_api_error_is_no_leadership_and_says_why() {
    let (e, v) = elector(vec![
        expect("GET", &format!("{LEASES}/stratus-operator")).answer(
            403,
            json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": "leases.coordination.k8s.io \"stratus-operator\" is forbidden"}),
        ),
    ]);
    let err = e.try_lead(at(NOW)).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Kubernetes refused to read lease stratus-operator"),
        "{err}"
    );
    finish(e, v).await;
}

#[tokio::test]
async fn stepping_down_clears_the_holder_only_if_it_is_us() {
    let (e, v) = elector(vec![
        expect("GET", &format!("{LEASES}/stratus-operator"))
            .answer(200, lease(Some("pod-b"), NOW, "9")),
        expect("PATCH", &format!("{LEASES}/stratus-operator?"))
            .body(
                MERGE,
                json!({"metadata": {"resourceVersion": "9"}, "spec": {"holderIdentity": null}}),
            )
            .answer(200, lease(None, NOW, "10")),
        expect("GET", &format!("{LEASES}/stratus-operator"))
            .answer(200, lease(Some("pod-a"), NOW, "11")),
    ]);
    e.step_down().await.unwrap();
    e.step_down().await.unwrap();
    finish(e, v).await;
}
