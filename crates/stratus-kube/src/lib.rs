//! Stratus on Kubernetes.
//!
//! So far: the custom resources, the same objects `stratus up` keeps in its catalog
//! ([`v1alpha1`]), and their `CustomResourceDefinition`s ([`crds`]), which `stratus operator
//! crds` prints. The operator that reconciles them, its runtime (pods, in-place resize, volume
//! expansion) and its store are the rest of issue #10.
//!
//! References: [custom resources](https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/),
//! [CEL validation rules](https://kubernetes.io/docs/reference/using-api/cel/),
//! [versioning](https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definition-versioning/),
//! kube-rs's [`CustomResource`](https://docs.rs/kube/latest/kube/derive.CustomResource.html).

pub mod objects;
pub mod v1alpha1;

pub use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

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
