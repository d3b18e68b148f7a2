//! The database controller: for each `DatabaseService`, what should be done
//! ([`plan`], pure: the resource as the user wrote it and what its pod is doing, in; steps
//! out) and the doing of it ([`reconcile`]: the steps through [`KubeRuntime`] and the
//! resource's own finalizer and status), in the shape of kube-rs's
//! [`controller-rs`](https://github.com/kube-rs/controller-rs).
//!
//! A finalizer is put on the resource before anything is made for it, so deleting the
//! resource always removes what was made, volume last; the resource goes only once the
//! StatefulSet and the claim are gone.

use super::Context;
use crate::objects;
use crate::runtime::{ClaimView, KubeError, PodView};
use crate::v1alpha1::{DatabaseService, DatabaseServiceStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::time::Duration;
use stratus_core::{Resources, ScuSize, ServiceName};
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
    /// Resize its running pod in place to this size.
    Resize(Resources),
    /// Expand its volume claim to this many bytes.
    GrowStorage(u64),
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
    /// The size in its StatefulSet's claim template, fixed when the StatefulSet was made.
    pub claim_template_bytes: Option<u64>,
    pub claim: Option<ClaimView>,
}

/// What the operator is set up with, beyond where objects go (`objects::Settings`).
#[derive(Debug, Clone)]
pub struct Sizes {
    pub scu: ScuSize,
    /// Where clients connect: the proxy's Service, as `host:port`.
    pub proxy_host: String,
    pub proxy_port: u16,
}

/// The steps for `ds`, given what the cluster says of it. Pure.
pub fn plan(ds: &DatabaseService, seen: &Seen, sizes: &Sizes) -> Plan {
    let ours = ds.finalizers().iter().any(|f| f == FINALIZER);
    if ds.metadata.deletion_timestamp.is_some() {
        if !ours {
            return Plan {
                steps: Vec::new(),
                requeue: None,
            };
        }
        // The finalizer goes only once the StatefulSet and the claim are gone, so that a
        // database made again under the same name cannot meet the old volume.
        if seen.claim_template_bytes.is_some() || seen.claim.is_some() {
            let deleting = seen.claim.is_some_and(|c| c.deleting);
            return Plan {
                steps: if deleting {
                    Vec::new()
                } else {
                    vec![Step::Destroy]
                },
                requeue: Some(SOON),
            };
        }
        return Plan {
            steps: vec![Step::RemoveFinalizer],
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
    // The size is the one the status last gave, kept within the spec's bounds (a new database:
    // its minimum). No controller changes it on Kubernetes yet; an edit of the bounds does.
    let before = ds.status.as_ref().map_or(0, |s| s.scu);
    let scu = before.clamp(spec.min_scu, spec.max_scu);
    let resources = sizes.scu.resources(scu);
    let limit = stratus_control::storage::max_bytes(spec.storage_gb);
    steps.push(Step::Apply(InstanceSpec {
        name: spec.name.clone(),
        resources,
        max_resources: sizes.scu.resources(spec.max_scu),
        // The whole limit at once (docs/kubernetes.md); a template made earlier keeps its size,
        // since a StatefulSet's claim template cannot change.
        storage_bytes: seen.claim_template_bytes.unwrap_or(limit),
        // The scheduler places it; moves set a node (the migration controller, to come).
        node: String::new(),
    }));
    let mut messages = Vec::new();
    let volume = seen.claim.map_or(limit, |c| c.requested_bytes);
    if seen.claim.is_some() && volume < limit {
        steps.push(Step::GrowStorage(limit));
    } else if volume > limit {
        messages.push(format!(
            "storage cannot shrink: the volume stays at {} GiB",
            volume >> 30
        ));
    }
    let pod = seen.pod.as_ref();
    let ready = pod.is_some_and(|p| p.ready);
    if let Some(p) = pod.filter(|p| p.ready && p.resize_pending.is_none()) {
        let applied = (p.cpu_limit_millis, p.memory_limit_bytes);
        if applied != (Some(resources.cpu_millis), Some(resources.memory_bytes)) {
            steps.push(Step::Resize(resources));
        }
    }
    let mut st = status(if ready { "active" } else { "provisioning" }, None);
    st.scu = scu;
    st.host = sizes.proxy_host.clone();
    st.port = sizes.proxy_port;
    st.database = spec.name.to_string();
    st.buffer_pool_bytes = resources.buffer_pool_bytes;
    st.storage_limit_bytes = Some(volume.max(limit));
    if let Some(p) = pod {
        st.node = p.node.clone().unwrap_or_default();
        st.cpu_limit = p.cpu_limit_millis.map_or(0.0, |m| f64::from(m) / 1000.0);
        st.memory_limit_bytes = p.memory_limit_bytes.unwrap_or(0);
        if let Some(why) = &p.resize_pending {
            messages.push(format!("a resize is pending: {why}"));
        }
    }
    st.message = (!messages.is_empty()).then(|| messages.join("; "));
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
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let seen = match &name {
        Some(name) => Seen {
            pod: if deleting {
                None
            } else {
                ctx.runtime.observe(name).await?
            },
            claim_template_bytes: ctx.runtime.claim_template_bytes(name).await?,
            claim: ctx.runtime.claim(name).await?,
        },
        None => Seen::default(),
    };
    let plan = plan(ds, &seen, &ctx.sizes);
    let api: Api<DatabaseService> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let resource = ds.name_any();
    let events = events_of(&plan.steps, seen.pod.as_ref());
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
            Step::Resize(r) => {
                if let Some(name) = &name {
                    ctx.runtime.resize(name, &r).await?;
                }
            }
            Step::GrowStorage(bytes) => {
                if let Some(name) = &name {
                    ctx.runtime.grow_storage(name, bytes).await?;
                }
            }
            Step::Destroy => {
                if let Some(name) = &name {
                    ctx.runtime.destroy(name).await?;
                }
            }
            Step::Status(status) => {
                let patch = json!({"status": status_patch(&status)});
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
    // What was done, for `kubectl describe` and `kubectl events`: after it was done, and
    // never at the cost of the reconcile (a refused event is only logged).
    let reference = ds.object_ref(&());
    for event in events {
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(database = %resource, reason = %event.reason, "event not recorded: {e}");
        }
    }
    Ok(plan.requeue)
}

/// The Kubernetes Events for what a plan does: made, resized, storage grown, removed, or
/// refused. Pure.
pub fn events_of(steps: &[Step], pod: Option<&PodView>) -> Vec<Event> {
    let normal = |reason: &str, action: &str, note: String| Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    let mut out = Vec::new();
    for step in steps {
        match step {
            // The first reconcile: the objects are made in the same plan.
            Step::AddFinalizer => {
                let made = steps.iter().find_map(|s| match s {
                    Step::Apply(spec) => Some(spec),
                    _ => None,
                });
                if let Some(spec) = made {
                    out.push(normal(
                        "Created",
                        "Create",
                        format!(
                            "StatefulSet, Service, ConfigMap and Secret {} made, at {} SCU with {} GiB of storage",
                            objects::object_name(&spec.name),
                            spec.resources.scu,
                            spec.storage_bytes >> 30
                        ),
                    ));
                }
            }
            Step::Resize(r) => {
                let from = pod
                    .and_then(|p| p.cpu_limit_millis)
                    .map_or_else(|| "?".to_owned(), |m| format!("{m}m"));
                out.push(normal(
                    "Resized",
                    "Resize",
                    format!(
                        "resized in place to {} SCU ({}m CPU, {} MiB), from {from} CPU",
                        r.scu,
                        r.cpu_millis,
                        r.memory_bytes >> 20
                    ),
                ));
            }
            Step::GrowStorage(bytes) => out.push(normal(
                "StorageGrown",
                "Expand",
                format!("volume claim expanded to {} GiB", bytes >> 30),
            )),
            Step::Destroy => out.push(normal(
                "Deleting",
                "Delete",
                "removing the StatefulSet, Service, ConfigMap, Secret and volume claim".into(),
            )),
            Step::Status(st) if st.state == "invalid" => out.push(Event {
                type_: EventType::Warning,
                reason: "Invalid".into(),
                note: st.message.clone(),
                action: "Validate".into(),
                secondary: None,
            }),
            _ => {}
        }
    }
    out
}

/// The status as a merge patch: a field the status no longer has is sent as `null`, or the
/// API server would keep the old value (a message about a problem long mended).
fn status_patch(status: &DatabaseServiceStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        for key in [
            "message",
            "moving",
            "storageUsedBytes",
            "storageLimitBytes",
            "observedGeneration",
        ] {
            map.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    v
}

/// How long to wait before trying a resource again after its `attempts`-th failure in a row:
/// 1 s, doubling, at most 5 minutes.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests;
