//! The proxy over [`KubeDirectory`], end to end: the real `stratus-proxy`, a real `mariadbd`
//! on 127.0.0.1 standing for a database's pod, and the mocked API server standing for the
//! cluster (allowing only the proxy's Role). A client logs in to a parked database with the
//! login the operator published; its first statement wakes the database through its spec and
//! runs on the pod's server.

use super::*;
use crate::mock_api::*;
use crate::objects::Settings;
use crate::test_server;
use crate::v1alpha1::{DatabaseServiceSpec, DatabaseServiceStatus};
use serde_json::{Value, json};
use stratus_proxy::{Proxy, ProxyConfig};
use stratus_runtime::admin::{AdminConn, AdminLogin};

const CR: &str = "/apis/stratus.dev/v1alpha1/namespaces/stratus/databaseservices/shop";

fn resource(spec_state: Lifecycle, status: &str) -> Value {
    let mut ds = DatabaseService::new(
        "shop",
        DatabaseServiceSpec {
            state: Some(spec_state),
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

fn get(spec_state: Lifecycle, status: &str) -> Exchange {
    expect("GET", CR).answer(200, resource(spec_state, status))
}

#[tokio::test]
async fn a_client_wakes_a_parked_database_and_runs_on_its_pod() {
    let server = test_server::mariadbd(&[]).await;
    // What the operator published: the owner's hash, read from the server.
    let published = crate::accounts::encode(&[stratus_runtime::admin::Account {
        user: "admin".into(),
        plugin: Some("mysql_native_password".into()),
        auth: Some(NativeHash::of_password("pw").to_string()),
    }]);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-shop"},
        "data": {"accounts": serde_json::to_value(k8s_openapi::ByteString(published.into_bytes())).unwrap()}});
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-shop-0", "namespace": "stratus"},
        "spec": {"containers": [{"name": "mariadb",
                 "ports": [{"name": "mariadb", "containerPort": server.port}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}]}});
    let script = vec![
        // The login, checked against the published accounts: no wake.
        get(Lifecycle::Parked, "parked"),
        expect("GET", &format!("{NS}/secrets/db-shop")).answer(200, secret),
        // Not running: the login answers without a server.
        get(Lifecycle::Parked, "parked"),
        // The first statement: asleep, so woken through the spec, then followed until active.
        get(Lifecycle::Parked, "parked"),
        get(Lifecycle::Parked, "parked"),
        expect("PATCH", &format!("{CR}?"))
            .body(MERGE, json!({"spec": {"state": "active"}}))
            .answer(200, resource(Lifecycle::Active, "parked")),
        get(Lifecycle::Active, "provisioning"),
        get(Lifecycle::Active, "active"),
        expect("GET", &format!("{NS}/pods/db-shop-0")).answer(200, pod),
    ];
    let (client, verifier) = serve_as(script, crate::rbac::PROXY_PERMISSIONS, "proxy");
    let proxy = Proxy::new(
        ProxyConfig {
            threads: 0,
            ..ProxyConfig::default()
        },
        KubeDirectory::new(client, Settings::default(), "proxy-a"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = Endpoint::Tcp(listener.local_addr().unwrap());
    let serving = tokio::spawn(proxy.clone().serve(listener));

    let login = |password: &str| AdminLogin {
        user: "shop.admin".into(),
        password: Some(password.into()),
    };
    let wrong = AdminConn::connect("shop", &at, &login("not-pw"), Duration::from_secs(10)).await;
    let e = wrong
        .err()
        .expect("a wrong password is refused")
        .to_string();
    assert!(e.contains("1045"), "{e}");
    let mut conn = AdminConn::connect("shop", &at, &login("pw"), Duration::from_secs(60))
        .await
        .unwrap();
    let port: Option<u16> = conn.query_value("SELECT @@port").await.unwrap();
    assert_eq!(port, Some(server.port), "answered by the pod's server");
    conn.exec("USE shop").await.unwrap();
    let schema: Option<String> = conn
        .query_value("SELECT CONCAT(CURRENT_USER(), ' ', DATABASE())")
        .await
        .unwrap();
    assert_eq!(schema.as_deref(), Some("admin@% shop"));
    conn.close().await;
    // Nothing more was asked of the cluster: the proxy (and with it the API client) goes.
    proxy.drain(Duration::from_secs(1)).await;
    serving.abort();
    let _ = serving.await;
    drop(proxy);
    verifier.finished().await;
}
