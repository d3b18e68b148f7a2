//! The database controller: for each `DatabaseService`, what should be done
//! ([`plan`], pure: the resource as the user wrote it and what its pod is doing, in; steps
//! out) and the doing of it ([`reconcile`]: the steps through [`KubeRuntime`] and the
//! resource's own finalizer and status), in the shape of kube-rs's
//! [`controller-rs`](https://github.com/kube-rs/controller-rs).
//!
//! A finalizer is put on the resource before anything is made for it, so deleting the
//! resource always removes what was made, volume last; the resource goes only once that
//! worked.

use super::Context;
use crate::runtime::{KubeError, PodView};
use crate::v1alpha1::{DatabaseService, DatabaseServiceStatus};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::time::Duration;
use stratus_core::{ScuSize, ServiceName};
use stratus_runtime::InstanceSpec;

/// The finalizer the operator puts on every `DatabaseService`.
pub const FINALIZER: &str = "stratus.dev/cleanup";

/// How soon to look again while a database is on its way (its pod not ready yet).
pub const SOON: Duration = Duration::from_secs(5);
/// How soon to look again at a database that is as it should be: its status stays fresh.
pub const LATER: Duration = Duration::from_secs(60);

/// One thing to do for a database.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    AddFinalizer,
    /// Make or update its objects.
    Apply(InstanceSpec),
    /// Remove its objects, volume last.
    Destroy,
    RemoveFinalizer,
    Status(DatabaseServiceStatus),
}

/// What the controller does for one resource, and when it looks again (`None`: only when the
/// resource changes).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub requeue: Option<Duration>,
}

/// What the cluster says of one database, read before planning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    pub pod: Option<PodView>,
}

/// What the operator is set up with, beyond where objects go (`objects::Settings`).
#[derive(Debug, Clone)]
pub struct Sizes {
    pub scu: ScuSize,
    /// Where clients connect: the proxy's Service, as `host:port`.
    pub proxy_host: String,
    pub proxy_port: u16,
}

/// The steps for `ds`, given what its pod is doing. Pure.
pub fn plan(ds: &DatabaseService, seen: &Seen, sizes: &Sizes) -> Plan {
    let ours = ds.finalizers().iter().any(|f| f == FINALIZER);
    if ds.metadata.deletion_timestamp.is_some() {
        let steps = if ours {
            vec![Step::Destroy, Step::RemoveFinalizer]
        } else {
            Vec::new()
        };
        return Plan {
            steps,
            requeue: None,
        };
    }
    let mut steps = Vec::new();
    let status = |state: &str, message: Option<String>| DatabaseServiceStatus {
        state: state.into(),
        observed_generation: ds.metadata.generation,
        message,
        ..DatabaseServiceStatus::default()
    };
    let spec = ServiceName::parse(&ds.name_any())
        .map_err(|e| e.to_string())
        .and_then(|name| ds.spec.service_spec(name).map_err(|e| e.to_string()));
    let spec = match spec {
        Ok(spec) => spec,
        Err(why) => {
            // The schema's rules admit only what `db create` accepts; this is what they cannot
            // see. Nothing is made; the user's next edit brings the resource back here.
            steps.push(Step::Status(status("invalid", Some(why))));
            return Plan {
                steps,
                requeue: None,
            };
        }
    };
    if !ours {
        steps.push(Step::AddFinalizer);
    }
    let resources = sizes.scu.resources(spec.min_scu);
    steps.push(Step::Apply(InstanceSpec {
        name: spec.name.clone(),
        resources,
        max_resources: sizes.scu.resources(spec.max_scu),
        // The whole limit at once: growing a claim is slow and some storage classes do it
        // only offline (docs/kubernetes.md).
        storage_bytes: stratus_control::storage::max_bytes(spec.storage_gb),
        // The scheduler places it; moves set a node (the migration controller, to come).
        node: String::new(),
    }));
    let pod = seen.pod.as_ref();
    let ready = pod.is_some_and(|p| p.ready);
    let mut st = status(if ready { "active" } else { "provisioning" }, None);
    st.scu = spec.min_scu;
    st.host = sizes.proxy_host.clone();
    st.port = sizes.proxy_port;
    st.database = spec.name.to_string();
    st.buffer_pool_bytes = resources.buffer_pool_bytes;
    if let Some(p) = pod {
        st.node = p.node.clone().unwrap_or_default();
        st.cpu_limit = p.cpu_limit_millis.map_or(0.0, |m| f64::from(m) / 1000.0);
        st.memory_limit_bytes = p.memory_limit_bytes.unwrap_or(0);
        st.message = p
            .resize_pending
            .as_ref()
            .map(|why| format!("a resize is pending: {why}"));
    }
    steps.push(Step::Status(st));
    Plan {
        steps,
        requeue: Some(if ready { LATER } else { SOON }),
    }
}

/// Reads what the cluster says of `ds`, plans, and carries the plan out in order; the first
/// failure stops it (the controller's error policy retries with back-off).
pub async fn reconcile(ds: &DatabaseService, ctx: &Context) -> Result<Option<Duration>, KubeError> {
    let name = ServiceName::parse(&ds.name_any()).ok();
    let seen = match (&name, ds.metadata.deletion_timestamp.is_some()) {
        (Some(name), false) => Seen {
            pod: ctx.runtime.observe(name).await?,
        },
        _ => Seen::default(),
    };
    let plan = plan(ds, &seen, &ctx.sizes);
    let api: Api<DatabaseService> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let resource = ds.name_any();
    for step in plan.steps {
        match step {
            Step::AddFinalizer | Step::RemoveFinalizer => {
                let mut finalizers: Vec<String> = ds
                    .finalizers()
                    .iter()
                    .filter(|f| *f != FINALIZER)
                    .cloned()
                    .collect();
                if step == Step::AddFinalizer {
                    finalizers.push(FINALIZER.into());
                }
                // With the version read: a resource changed meanwhile is a 409, and the next
                // reconcile starts from the new one.
                let patch = json!({"metadata": {
                    "finalizers": finalizers,
                    "resourceVersion": ds.metadata.resource_version,
                }});
                api.patch(&resource, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(|e| {
                        KubeError::of(
                            "update the finalizers of",
                            format!("databaseservice {resource}"),
                            e,
                        )
                    })?;
            }
            Step::Apply(spec) => {
                ctx.runtime.apply(&spec).await?;
            }
            Step::Destroy => {
                if let Some(name) = &name {
                    ctx.runtime.destroy(name).await?;
                }
            }
            Step::Status(status) => {
                let patch = json!({"status": status});
                api.patch_status(&resource, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map_err(|e| {
                        KubeError::of(
                            "update the status of",
                            format!("databaseservice {resource}"),
                            e,
                        )
                    })?;
            }
        }
    }
    Ok(plan.requeue)
}

/// How long to wait before trying a resource again after its `attempts`-th failure in a row:
/// 1 s, doubling, at most 5 minutes.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests;
