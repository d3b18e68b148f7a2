//! A mocked Kubernetes API server for tests (`tower_test`, as kube-rs's `controller-rs` does):
//! it asserts every request in order (method, path and query, content type, body) and answers
//! with the JSON a real API server sends, errors included; then that nothing more was asked.
//! It also refuses any request the operator's Role (`rbac::PERMISSIONS`) would not allow.

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use std::time::Duration;
use tower_test::mock;

/// One request the operator must make, and the server's answer.
pub(crate) struct Exchange {
    method: &'static str,
    uri: String,
    /// The URI's end after a name the test cannot know (a random one): `uri` is then the part
    /// before it, and the name is any run of lowercase letters, digits and `-`.
    after_name: Option<String>,
    content_type: Option<&'static str>,
    body: WantBody,
    status: u16,
    answer: Value,
}

/// What the request's body must be.
pub(crate) enum WantBody {
    None,
    Exact(Value),
    Check(Box<dyn Fn(&Value) + Send>),
}

pub(crate) fn expect(method: &'static str, uri: &str) -> Exchange {
    Exchange {
        method,
        uri: uri.to_owned(),
        after_name: None,
        content_type: None,
        body: WantBody::None,
        status: 200,
        answer: json!({}),
    }
}

/// A request whose URI is `before`, a name made at random (a spare's), then `after`.
pub(crate) fn expect_named(method: &'static str, before: &str, after: &str) -> Exchange {
    Exchange {
        after_name: Some(after.to_owned()),
        ..expect(method, before)
    }
}

impl Exchange {
    pub(crate) fn body(mut self, content_type: &'static str, body: Value) -> Self {
        self.content_type = Some(content_type);
        self.body = WantBody::Exact(body);
        self
    }
    pub(crate) fn checked(
        mut self,
        content_type: &'static str,
        check: impl Fn(&Value) + Send + 'static,
    ) -> Self {
        self.content_type = Some(content_type);
        self.body = WantBody::Check(Box::new(check));
        self
    }
    pub(crate) fn answer(mut self, status: u16, answer: Value) -> Self {
        self.status = status;
        self.answer = answer;
        self
    }
}

/// A Kubernetes Event that `controller` (replica `instance`) records on DatabaseService `shop`,
/// with `reason` and `kind` (`Normal`, `Warning`), and, if given, `note_has` in its note.
pub(crate) fn expect_event(
    controller: &'static str,
    instance: &'static str,
    reason: &'static str,
    kind: &'static str,
    note_has: Option<&'static str>,
) -> Exchange {
    expect("POST", "/apis/events.k8s.io/v1/namespaces/stratus/events?")
        .checked(JSON, move |body| {
            assert_eq!(body["reason"], reason, "{body}");
            assert_eq!(body["type"], kind);
            assert_eq!(body["regarding"]["kind"], "DatabaseService");
            assert_eq!(body["regarding"]["name"], "shop");
            assert_eq!(body["reportingController"], controller);
            assert_eq!(body["reportingInstance"], instance);
            if let Some(part) = note_has {
                assert!(body["note"].as_str().unwrap().contains(part), "{body}");
            }
        })
        .answer(
            201,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                   "metadata": {"name": "shop.1", "namespace": "stratus"},
                   "eventTime": "2026-12-01T23:00:00.000000Z"}),
        )
}

pub(crate) const APPLY: &str = "application/apply-patch+yaml";
pub(crate) const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub(crate) const MERGE: &str = "application/merge-patch+json";
pub(crate) const JSON: &str = "application/json";

pub(crate) const NS: &str = "/api/v1/namespaces/stratus";
pub(crate) const APPS: &str = "/apis/apps/v1/namespaces/stratus";
pub(crate) const APPLIED: &str = "?&force=true&fieldManager=stratus";

/// A client whose API server is `script`, and the task that checks it was followed to the end
/// and nothing more was asked.
pub(crate) fn serve(script: Vec<Exchange>) -> (Client, Verifier) {
    serve_as(script, crate::rbac::PERMISSIONS, "operator")
}

/// The same, for a client with the rules `role` (named `who` in failures).
pub(crate) fn serve_as(
    script: Vec<Exchange>,
    role: &'static [crate::rbac::Permission],
    who: &'static str,
) -> (Client, Verifier) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let verifier = tokio::spawn(async move {
        for (i, e) in script.into_iter().enumerate() {
            let Some((request, send)) = handle.next_request().await else {
                panic!("request {i} never came: {} {}", e.method, e.uri);
            };
            let uri = request.uri().to_string();
            match &e.after_name {
                None => assert_eq!(
                    (request.method().as_str(), uri.as_str()),
                    (e.method, e.uri.as_str()),
                    "request {i}"
                ),
                Some(after) => {
                    let name = uri
                        .strip_prefix(e.uri.as_str())
                        .and_then(|rest| rest.strip_suffix(after.as_str()));
                    let named = name.is_some_and(|n| {
                        !n.is_empty()
                            && n.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    });
                    assert!(
                        request.method().as_str() == e.method && named,
                        "request {i}: {} {uri}, expected {} {}<name>{after}",
                        request.method(),
                        e.method,
                        e.uri
                    );
                }
            }
            // The chart's Role allows exactly `role`: a request beyond it
            // would be refused in a cluster.
            let asked = crate::rbac::request_of(e.method, &uri)
                .unwrap_or_else(|| panic!("not a namespaced request: {uri}"));
            let mut verbs = vec![asked.verb];
            if e.content_type == Some(APPLY) {
                // An apply that creates is authorized as a create too.
                verbs.push("create");
            }
            for verb in verbs {
                let name = if verb == "create" {
                    None
                } else {
                    asked.name.as_deref()
                };
                assert!(
                    crate::rbac::allows_in(role, &asked.group, &asked.resource, verb, name),
                    "the {who}'s Role does not allow {verb} on {}/{} {name:?}",
                    asked.group,
                    asked.resource
                );
            }
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                content_type.as_deref(),
                e.content_type,
                "content type of {}",
                e.uri
            );
            let bytes = request.into_body().collect_bytes().await.unwrap();
            match e.body {
                WantBody::None => assert!(bytes.is_empty(), "no body expected for {}", e.uri),
                WantBody::Exact(want) => {
                    let got: Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(got, want, "body of {} {}", e.method, e.uri);
                }
                WantBody::Check(check) => check(&serde_json::from_slice(&bytes).unwrap()),
            }
            let answer = Response::builder()
                .status(StatusCode::from_u16(e.status).unwrap())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(&e.answer).unwrap()))
                .unwrap();
            send.send_response(answer);
        }
        assert!(
            handle.next_request().await.is_none(),
            "a request beyond the script"
        );
    });
    (Client::new(service, "stratus"), Verifier(verifier))
}

pub(crate) struct Verifier(tokio::task::JoinHandle<()>);

impl Verifier {
    /// Waits for the script's end; every client of the server must be dropped by then.
    pub(crate) async fn finished(self) {
        tokio::time::timeout(Duration::from_secs(10), self.0)
            .await
            .expect("the verifier hangs")
            .expect("the API server saw what it should");
    }
}
