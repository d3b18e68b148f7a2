//! Stratus on Kubernetes.
//!
//! * [`v1alpha1`]: the custom resources, the same objects `stratus up` keeps in its catalog,
//!   and their `CustomResourceDefinition`s ([`crds`]), which `stratus operator crds` prints;
//! * [`objects`]: the objects that run one database (StatefulSet with its claim, Service,
//!   ConfigMap, Secrets), pure functions of its spec;
//! * [`runtime`]: the API requests for each thing done to a database (create, resize in place,
//!   park and wake, grow storage, observe, remove), tested against a mocked API server;
//! * [`operator`]: the controllers (`stratus operator run`), with leader election;
//! * [`backup_job`]: one backup as a Job, and its last step (`stratus operator backup-record`);
//! * [`accounts`] and [`directory`]: the proxy Deployment's view of the cluster (`stratus
//!   operator proxy`): logins, routes and wakes;
//! * [`rbac`]: what the operator and the proxy may do, which the tests hold them to;
//! * [`agent`]: the sidecar in each database pod that samples its server's CPU for the
//!   operator's autoscaler (`stratus operator agent`).
//!
//! The operator's controllers take their decisions from the same pure functions as
//! `stratus-control`'s, with executors of their own (`docs/decisions.md`, "Kubernetes").
//!
//! References: [custom resources](https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/),
//! [CEL validation rules](https://kubernetes.io/docs/reference/using-api/cel/),
//! [versioning](https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definition-versioning/),
//! kube-rs's [`CustomResource`](https://docs.rs/kube/latest/kube/derive.CustomResource.html).

pub mod accounts;
pub mod agent;
pub mod backup_job;
pub mod directory;
pub mod instance;
pub mod objects;
pub mod operator;
pub mod rbac;
pub mod runtime;
pub mod v1alpha1;

#[cfg(test)]
mod mock_api;
#[cfg(test)]
mod test_server;

pub use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
pub use kube::Client;

/// The API group of every Stratus resource.
pub const GROUP: &str = "stratus.dev";

/// Every custom resource definition Stratus installs.
pub fn crds() -> Vec<CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![
        v1alpha1::DatabaseService::crd(),
        v1alpha1::ScalingPolicy::crd(),
        v1alpha1::BackupSchedule::crd(),
    ]
}

/// The definitions as one YAML stream (`kubectl apply -f -`, Helm's `crds/`): each document is
/// JSON, which YAML reads as it is.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        // A definition is plain data: it always serializes.
        out.push_str(&serde_json::to_string_pretty(&crd).unwrap_or_default());
        out.push('\n');
    }
    out
}
