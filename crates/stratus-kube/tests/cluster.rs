//! The operator against a real cluster: ignored on the build machine, where no API server can
//! run. To run it against kind or k3d (Kubernetes 1.33 or later, in-place pod resize on), see
//! `docs/kubernetes.md`:
//!
//! ```sh
//! kind create cluster
//! cargo test -p stratus-kube --test cluster -- --ignored --nocapture
//! ```

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use stratus_core::{ScuSize, ServiceName};
use stratus_kube::instance::Instance;
use stratus_kube::objects::Settings;
use stratus_kube::operator::database::Sizes;
use stratus_kube::operator::leader::Elector;
use stratus_kube::operator::{self, Context};
use stratus_kube::v1alpha1::{DatabaseService, DatabaseServiceSpec};

const WAIT: Duration = Duration::from_secs(300);

async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let begin = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(begin.elapsed() < WAIT, "never happened: {what}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes 1.33+ cluster (kind, k3d) and its kubeconfig; none can run on the build machine"]
async fn a_database_is_made_resized_parked_woken_and_removed() {
    let client = Client::try_default()
        .await
        .expect("a kubeconfig for a test cluster");
    let ns = std::env::var("STRATUS_TEST_NAMESPACE").unwrap_or_else(|_| "stratus-test".into());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let apply = PatchParams::apply("stratus-test").force();
    namespaces
        .patch(&ns, &apply, &Patch::Apply(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})))
        .await
        .unwrap();
    let crds: Api<stratus_kube::CustomResourceDefinition> = Api::all(client.clone());
    for crd in stratus_kube::crds() {
        crds.patch(&crd.name_any(), &apply, &Patch::Apply(&crd))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // the CRDs' established condition

    let settings = Settings {
        namespace: ns.clone(),
        ..Settings::default()
    };
    let sizes = Sizes {
        scu: ScuSize::default(),
        proxy_host: "stratus-proxy".into(),
        proxy_port: 3306,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings.clone(),
        sizes,
        "cluster-test",
    ));
    let elector = Elector::new(
        client.clone(),
        &ns,
        "stratus-operator",
        "cluster-test",
        Duration::from_secs(15),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(operator::run(ctx.clone(), elector, async move {
        let _ = stopped.await;
    }));

    let dbs: Api<DatabaseService> = Api::namespaced(client.clone(), &ns);
    let spec = DatabaseServiceSpec {
        max_scu: Some(4),
        storage_gb: Some(1),
        ..Default::default()
    };
    dbs.create(&PostParams::default(), &DatabaseService::new("e2e", spec))
        .await
        .unwrap();
    until("the database is active", || async {
        let ds = dbs.get("e2e").await.ok()?;
        (ds.status?.state == "active").then_some(())
    })
    .await;

    let name = Instance::of(&ServiceName::parse("e2e").unwrap());
    let two = ScuSize::default().resources(2);
    ctx.runtime.resize(&name, &two).await.unwrap();
    until("the pod runs at 2 SCU, not restarted", || async {
        let pod = ctx.runtime.observe(&name).await.ok()??;
        (pod.cpu_limit_millis == Some(two.cpu_millis) && pod.restarts == 0).then_some(())
    })
    .await;

    ctx.runtime.set_replicas(&name, 0).await.unwrap();
    until("parked: no pod", || async {
        ctx.runtime
            .observe(&name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    assert!(
        claims.get_opt(&name.claim()).await.unwrap().is_some(),
        "the claim outlives the pod"
    );
    ctx.runtime.set_replicas(&name, 1).await.unwrap();
    until("woken: ready again", || async {
        ctx.runtime.observe(&name).await.ok()??.ready.then_some(())
    })
    .await;

    dbs.delete("e2e", &DeleteParams::default()).await.unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    until("everything removed, the resource gone", || async {
        let gone = dbs.get_opt("e2e").await.ok()?.is_none()
            && sets.get_opt(&name.name()).await.ok()?.is_none()
            && claims.get_opt(&name.claim()).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    let _ = stop.send(());
    running.await.unwrap();
}
