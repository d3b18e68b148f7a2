//! The proxy's directory against a mocked API server that allows only the proxy's Role
//! (`rbac::PROXY_PERMISSIONS`): the exact requests for a login, a route, a wake, a lost server
//! and accounts changed in SQL. Time is paused, so the 200 ms polls take no time.

use super::*;
use crate::mock_api::*;
use crate::objects::Settings;
use crate::operator::server::Pending;
use crate::runtime::KubeError;
use crate::v1alpha1::{DatabaseServiceSpec, DatabaseServiceStatus};
use serde_json::{Value, json};
use stratus_core::UserName;
use stratus_runtime::admin::Account as ServerAccount;

const CR: &str = "/apis/stratus.dev/v1alpha1/namespaces/stratus/databaseservices/shop";

/// A server whose only SQL is reading its accounts.
#[derive(Default)]
struct Server {
    accounts: Vec<ServerAccount>,
    calls: Mutex<Vec<String>>,
}

impl ServerSql for Server {
    fn empty<'a>(&'a self, _: &'a ServiceName, _: &'a PodView) -> Pending<'a, u64> {
        unreachable!("the proxy never empties a server")
    }
    fn fill<'a>(&'a self, _: &'a ServiceName, _: &'a PodView, _: u64) -> Pending<'a, ()> {
        unreachable!("the proxy never fills a server")
    }
    fn pool<'a>(&'a self, _: &'a ServiceName, _: &'a PodView, _: u64) -> Pending<'a, u64> {
        unreachable!("the proxy never resizes a buffer pool")
    }
    fn provision<'a>(
        &'a self,
        _: &'a ServiceName,
        _: &'a PodView,
        _: &'a UserName,
        _: &'a NativeHash,
    ) -> Pending<'a, bool> {
        unreachable!("the proxy never provisions")
    }
    fn activity<'a>(
        &'a self,
        _: &'a ServiceName,
        _: &'a PodView,
    ) -> Pending<'a, stratus_runtime::admin::ClientActivity> {
        unreachable!("the proxy knows its own sessions")
    }
    fn accounts<'a>(
        &'a self,
        db: &'a ServiceName,
        pod: &'a PodView,
    ) -> Pending<'a, Vec<ServerAccount>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!(
                "accounts {db} at {}",
                pod.ip.as_deref().unwrap_or("?")
            ));
            Ok::<_, KubeError>(self.accounts.clone())
        })
    }
}

fn native(user: &str, password: &str) -> ServerAccount {
    ServerAccount {
        user: user.into(),
        plugin: Some("mysql_native_password".into()),
        auth: Some(NativeHash::of_password(password).to_string()),
    }
}

fn directory(script: Vec<Exchange>, server: Arc<Server>) -> (KubeDirectory, Verifier) {
    let (client, verifier) = serve_as(script, crate::rbac::PROXY_PERMISSIONS, "proxy");
    (
        KubeDirectory::new(client, Settings::default(), "proxy-a").with_servers(server),
        verifier,
    )
}

async fn finished(dir: KubeDirectory, verifier: Verifier) {
    drop(dir);
    verifier.finished().await;
}

/// The resource as the API server returns it: `spec.state` and `status.state`.
fn resource(spec_state: Option<Lifecycle>, status: &str) -> Value {
    let mut ds = DatabaseService::new(
        "shop",
        DatabaseServiceSpec {
            state: spec_state,
            require_tls: true,
            ..DatabaseServiceSpec::default()
        },
    );
    ds.metadata.namespace = Some("stratus".into());
    ds.status = Some(DatabaseServiceStatus {
        state: status.into(),
        owner_created: true,
        ..DatabaseServiceStatus::default()
    });
    serde_json::to_value(ds).unwrap()
}

fn get_resource(spec_state: Option<Lifecycle>, status: &str) -> Exchange {
    expect("GET", CR).answer(200, resource(spec_state, status))
}

fn pod(ready: bool, ip: &str, restarts: i32) -> Exchange {
    let status = if ready { "True" } else { "False" };
    expect("GET", &format!("{NS}/pods/db-shop-0")).answer(
        200,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db-shop-0", "namespace": "stratus"},
               "spec": {"nodeName": "node-a", "containers": [{"name": "mariadb"}]},
               "status": {"phase": "Running", "podIP": ip,
                          "conditions": [{"type": "Ready", "status": status}],
                          "containerStatuses": [{"name": "mariadb", "image": "mariadb:10.11", "imageID": "",
                              "ready": ready, "restartCount": restarts}]}}),
    )
}

fn published(accounts: &[ServerAccount]) -> Exchange {
    let text = crate::accounts::encode(accounts);
    let bytes = serde_json::to_value(k8s_openapi::ByteString(text.into_bytes())).unwrap();
    expect("GET", &format!("{NS}/secrets/db-shop")).answer(
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-shop"},
               "data": {"password": "cHc=", "accounts": bytes}}),
    )
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
           "reason": "NotFound", "message": "databaseservices.stratus.dev \"shop\" not found"})
}

fn at(ip: &str) -> Endpoint {
    Endpoint::Tcp(SocketAddr::new(ip.parse().unwrap(), 3306))
}

#[tokio::test(start_paused = true)]
async fn a_login_is_checked_against_the_published_accounts_which_are_read_again_when_stale() {
    let script = vec![
        get_resource(Some(Lifecycle::Parked), "parked"),
        published(&[native("admin", "pw")]),
        // After FRESH: read again, and a login made meanwhile is there.
        get_resource(Some(Lifecycle::Parked), "parked"),
        published(&[native("admin", "pw"), native("app", "pw2")]),
    ];
    let (dir, verifier) = directory(script, Arc::default());
    let admin = dir.account("shop", "admin").await.expect("the owner");
    assert_eq!(admin.stage2, NativeHash::of_password("pw").0);
    assert!(admin.require_tls, "the spec's requireTls");
    // Remembered: no request, and no wake of the parked database for either answer.
    assert_eq!(dir.account("shop", "app").await, None);
    assert_eq!(dir.account("shop", "stratus_admin").await, None);
    tokio::time::advance(FRESH).await;
    let app = dir.account("shop", "app").await.expect("seen once stale");
    assert_eq!(app.stage2, NativeHash::of_password("pw2").0);
    finished(dir, verifier).await;
}

#[tokio::test(start_paused = true)]
async fn no_one_logs_in_to_a_database_that_does_not_exist_or_could_not() {
    let script = vec![expect("GET", CR).answer(404, not_found())];
    let (dir, verifier) = directory(script, Arc::default());
    assert_eq!(dir.account("shop", "admin").await, None);
    // Names no database can have never reach the API (a path of their own, a reserved name).
    for name in ["../secrets/db-shop", "shop/status", "", "a.b"] {
        assert_eq!(dir.account(name, "admin").await, None, "{name}");
    }
    assert!(dir.backend("../pods/x", true).await.is_err());
    finished(dir, verifier).await;
}

#[tokio::test(start_paused = true)]
async fn an_active_database_routes_to_its_ready_pod_and_a_pod_starting_is_waited_for() {
    let script = vec![
        get_resource(None, "active"),
        pod(true, "10.0.0.7", 0),
        // Made again after a drain: not ready yet, then ready at a new address.
        get_resource(None, "active"),
        pod(false, "10.0.1.9", 0),
        get_resource(None, "active"),
        pod(true, "10.0.1.9", 0),
    ];
    let (dir, verifier) = directory(script, Arc::default());
    assert_eq!(dir.backend("shop", false).await, Ok(Some(at("10.0.0.7"))));
    assert_eq!(dir.backend("shop", false).await, Ok(Some(at("10.0.1.9"))));
    finished(dir, verifier).await;
}

#[tokio::test(start_paused = true)]
async fn a_statement_wakes_a_parked_database_by_its_spec_and_waits_until_it_is_active() {
    let script = vec![
        // Looked up without a wake: asleep, and left so.
        get_resource(Some(Lifecycle::Parked), "parked"),
        // With: the spec set to active once, then the status followed until it is.
        get_resource(Some(Lifecycle::Parked), "parked"),
        expect("PATCH", &format!("{CR}?"))
            .body(MERGE, json!({"spec": {"state": "active"}}))
            .answer(200, resource(Some(Lifecycle::Active), "parked")),
        get_resource(Some(Lifecycle::Active), "parked"),
        get_resource(Some(Lifecycle::Active), "provisioning"),
        get_resource(Some(Lifecycle::Active), "active"),
        pod(true, "10.0.0.7", 0),
    ];
    let (dir, verifier) = directory(script, Arc::default());
    assert_eq!(dir.backend("shop", false).await, Ok(None));
    let woke = tokio::time::timeout(Duration::from_secs(60), dir.backend("shop", true)).await;
    assert_eq!(woke.expect("no hang"), Ok(Some(at("10.0.0.7"))));
    finished(dir, verifier).await;
}

#[tokio::test(start_paused = true)]
async fn a_session_that_lost_its_server_does_not_wake_a_database_put_to_sleep() {
    let script = vec![get_resource(Some(Lifecycle::Suspended), "suspended")];
    let (dir, verifier) = directory(script, Arc::default());
    assert_eq!(dir.backend_after_loss("shop").await, Ok(None));
    finished(dir, verifier).await;
}

#[tokio::test(start_paused = true)]
async fn a_wake_the_cluster_refuses_is_an_error_for_the_client() {
    let script = vec![
        get_resource(Some(Lifecycle::Parked), "parked"),
        expect("PATCH", &format!("{CR}?"))
            .body(MERGE, json!({"spec": {"state": "active"}}))
            .answer(
                403,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                   "reason": "Forbidden", "message": "forbidden"}),
            ),
    ];
    let (dir, verifier) = directory(script, Arc::default());
    assert_eq!(
        dir.backend("shop", true).await,
        Err("it cannot be woken: the cluster refused".into())
    );
    finished(dir, verifier).await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_server_is_waited_for_until_the_cluster_shows_it_gone() {
    let script = vec![
        get_resource(None, "active"),
        pod(true, "10.0.0.7", 0),
        pod(true, "10.0.0.7", 0),
        // The kubelet restarted the container in place.
        pod(true, "10.0.0.7", 1),
    ];
    let (dir, verifier) = directory(script, Arc::default());
    dir.unreachable("shop", &at("10.0.0.7")).await;
    finished(dir, verifier).await;
}

#[tokio::test(start_paused = true)]
async fn accounts_changed_in_sql_are_read_from_the_server_and_published_by_the_operator() {
    let server = Arc::new(Server {
        accounts: vec![native("admin", "pw"), native("new_user", "pw3")],
        ..Server::default()
    });
    let script = vec![
        get_resource(None, "active"),
        pod(true, "10.0.0.7", 0),
        expect("PATCH", &format!("{CR}?"))
            .checked(MERGE, |body| {
                let stamp = &body["metadata"]["annotations"][ACCOUNTS_CHANGED];
                assert!(
                    stamp.as_str().is_some_and(|s| s.parse::<u64>().is_ok()),
                    "{body}"
                );
                assert_eq!(
                    body.as_object().unwrap().len(),
                    1,
                    "only the annotation: {body}"
                );
            })
            .answer(200, resource(None, "active")),
    ];
    let (dir, verifier) = directory(script, server.clone());
    dir.accounts_changed("shop").await;
    // Known at once, without another request.
    let found = dir
        .account("shop", "new_user")
        .await
        .expect("the new login");
    assert_eq!(found.stage2, NativeHash::of_password("pw3").0);
    assert_eq!(*server.calls.lock().unwrap(), ["accounts shop at 10.0.0.7"]);
    finished(dir, verifier).await;
}

#[tokio::test(start_paused = true)]
async fn what_a_session_lived_through_is_an_event_on_its_database() {
    use stratus_proxy::replay::{Failover, Outcome};
    let event =
        |reason, kind| expect_event("stratus-proxy", "proxy-a", reason, kind, Some("replay"));
    let script = vec![event("Failover", "Normal"), event("Failover", "Warning")];
    let (dir, verifier) = directory(script, Arc::default());
    let report = |outcome, detail: &str| Failover {
        outcome,
        attempts: 1,
        replayed: 3,
        duration: Duration::from_millis(420),
        detail: detail.into(),
    };
    dir.failover("shop", report(Outcome::Replayed, ""));
    // One at a time, so the script's order is the events' order.
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    dir.failover(
        "shop",
        report(Outcome::Mismatch, "replaying it gave a different result"),
    );
    // A name no database can have records nothing.
    dir.failover("../x", report(Outcome::Retried, ""));
    tokio::time::sleep(Duration::from_millis(10)).await;
    finished(dir, verifier).await;
}

#[tokio::test(start_paused = true)]
async fn a_wake_undone_before_it_was_carried_out_is_asked_again() {
    let wake = || {
        expect("PATCH", &format!("{CR}?"))
            .body(MERGE, json!({"spec": {"state": "active"}}))
            .answer(200, resource(Some(Lifecycle::Active), "active"))
    };
    // The operator had asked for a suspend just before: it lands after the wake.
    let asleep = || get_resource(Some(Lifecycle::Suspended), "active");
    let mut script = vec![get_resource(Some(Lifecycle::Suspended), "active"), wake()];
    script.extend((0..4).map(|_| asleep()));
    script.extend([asleep(), wake()]);
    script.extend([get_resource(None, "active"), pod(true, "10.0.0.7", 0)]);
    let (dir, verifier) = directory(script, Arc::default());
    let woke = tokio::time::timeout(Duration::from_secs(60), dir.backend("shop", true)).await;
    assert_eq!(woke.expect("no hang"), Ok(Some(at("10.0.0.7"))));
    finished(dir, verifier).await;
}

#[tokio::test(start_paused = true)]
async fn logins_survive_a_short_outage_of_the_api_server() {
    let script = vec![
        get_resource(Some(Lifecycle::Parked), "parked"),
        published(&[native("admin", "pw")]),
        expect("GET", CR).answer(
            503,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503,
                   "reason": "ServiceUnavailable", "message": "etcdserver: request timed out"}),
        ),
    ];
    let (dir, verifier) = directory(script, Arc::default());
    assert!(dir.account("shop", "admin").await.is_some());
    tokio::time::advance(FRESH).await;
    let kept = dir.account("shop", "admin").await;
    assert_eq!(
        kept.map(|a| a.stage2),
        Some(NativeHash::of_password("pw").0),
        "what was known is kept"
    );
    finished(dir, verifier).await;
}

const SPARE: &str = "spare-00aa11bb";

/// A database serving from a spare of the warm pool it claimed (`status.instance`).
fn on_spare(instance: &str) -> Exchange {
    let mut ds = resource(None, "active");
    ds["status"]["instance"] = json!(instance);
    expect("GET", CR).answer(200, ds)
}

/// The spare's pod or Secret carries the label of the database that claimed it.
fn labelled(database: &str) -> Value {
    json!({"stratus.dev/instance": SPARE, "stratus.dev/database": database})
}

fn spare_secret(database: &str, accounts: &[ServerAccount]) -> Exchange {
    let text = crate::accounts::encode(accounts);
    let bytes = serde_json::to_value(k8s_openapi::ByteString(text.into_bytes())).unwrap();
    expect("GET", &format!("{NS}/secrets/{SPARE}")).answer(
        200,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": SPARE, "labels": labelled(database)},
               "data": {"password": "cHc=", "accounts": bytes}}),
    )
}

#[tokio::test(start_paused = true)]
async fn a_database_on_a_claimed_spare_is_reached_and_logged_into_under_the_spares_name() {
    let script = vec![
        on_spare(SPARE),
        spare_secret("shop", &[native("admin", "pw")]),
        on_spare(SPARE),
        expect("GET", &format!("{NS}/pods/{SPARE}-0")).answer(
            200,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("{SPARE}-0"), "namespace": "stratus", "labels": labelled("shop")},
                   "spec": {"nodeName": "node-a", "containers": [{"name": "mariadb"}]},
                   "status": {"phase": "Running", "podIP": "10.0.2.4",
                              "conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
    ];
    let (dir, verifier) = directory(script, Arc::default());
    let admin = dir.account("shop", "admin").await.expect("the owner");
    assert_eq!(admin.stage2, NativeHash::of_password("pw").0);
    assert_eq!(dir.backend("shop", false).await, Ok(Some(at("10.0.2.4"))));
    finished(dir, verifier).await;
}

/// A status edited to name a server another database claimed: its accounts are not this
/// database's, so no one logs in with them (and a name that is no spare's is not even read).
#[tokio::test(start_paused = true)]
async fn a_status_naming_another_databases_server_lets_no_one_in() {
    let script = vec![
        on_spare(SPARE),
        spare_secret("other", &[native("admin", "pw")]),
        // Not a spare's name: the database's own objects are read.
        on_spare("db-other"),
        published(&[native("owner", "pw")]),
    ];
    let (dir, verifier) = directory(script, Arc::default());
    assert_eq!(dir.account("shop", "admin").await, None);
    tokio::time::advance(FRESH).await;
    assert_eq!(dir.account("shop", "admin").await, None);
    assert!(dir.account("shop", "owner").await.is_some(), "its own");
    finished(dir, verifier).await;
}
