//! The database controller: for each `DatabaseService`, what should be done
//! ([`plan`], pure: the resource as the user wrote it and what its pod is doing, in; steps
//! out) and the doing of it ([`reconcile`]: the steps through [`KubeRuntime`](crate::runtime::KubeRuntime) and the
//! resource's own finalizer and status), in the shape of kube-rs's
//! [`controller-rs`](https://github.com/kube-rs/controller-rs).
//!
//! What the spec asks beyond its size: `state` suspended (the server emptied through SQL, then
//! its CPU lowered in place), parked (the StatefulSet scaled to 0) or active again, and `node`
//! (the template requires it, then the pod is evicted and made again there); see
//! `docs/kubernetes.md`.
//!
//! A finalizer is put on the resource before anything is made for it, so deleting the
//! resource always removes what was made, volume last; the resource goes only once the
//! StatefulSet and the claim are gone.

use super::Context;
use super::scaler::{Scaled, Serving};
use crate::instance::Instance;
use crate::objects;
use crate::runtime::{ClaimView, KubeError, PodView, SetView, SpareView};
use crate::v1alpha1::{DatabaseService, DatabaseServiceStatus, Lifecycle, Moving};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::time::Duration;
use stratus_control::suspend::{BUFFER_POOL_FLOOR, CPU_FLOOR_MILLIS};
use stratus_core::time::rfc3339;
use stratus_core::{NativeHash, Resources, ScalingPolicy, ScuSize, ServiceName};
use stratus_runtime::InstanceSpec;
use stratus_runtime::admin::ClientActivity;

/// The finalizer the operator puts on every `DatabaseService`.
pub const FINALIZER: &str = "stratus.dev/cleanup";

/// How soon to look again while a database is on its way (its pod not ready yet).
pub const SOON: Duration = Duration::from_secs(5);
/// How soon to look again after a spare was claimed, to make it the database's.
pub const CLAIMED: Duration = Duration::from_millis(100);
/// How soon to look again at a database that is as it should be: its status stays fresh.
pub const LATER: Duration = Duration::from_secs(60);

/// One thing to do for a database.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    AddFinalizer,
    /// Make or update its objects.
    Apply(InstanceSpec),
    /// Park (0) or wake (1): its StatefulSet's scale.
    SetReplicas(i32),
    /// Move it to the node its template now requires: its pod is evicted and made again there.
    Evict,
    /// Empty its running server for a suspend (SQL): sessions closed, buffer pool at its
    /// floor.
    Empty,
    /// Resize its running pod in place to this size.
    Resize(Resources),
    /// Set its running server's buffer pool to this many bytes (SQL): after the pod grew, or
    /// before it shrinks.
    Pool(u64),
    /// Give its buffer pool this many bytes again after a suspend (SQL).
    Fill(u64),
    /// Make its schema and its owner's account in its first running server (SQL), with the
    /// login from this Secret; `make`: the spec names none, and the operator makes it.
    Provision {
        secret: String,
        make: bool,
    },
    /// Its first server ran on the data of this backup, schema and accounts included: nothing
    /// to provision (the step only tells of it).
    Restored {
        backup: String,
    },
    /// Read its accounts from its running server and publish them for the proxy in its Secret
    /// ([`crate::accounts`]), if they changed.
    PublishAccounts,
    /// Ask for it to be suspended or parked (`spec.state`), its policy's idle time being up;
    /// `idle_ms`: how long it was idle, or suspended.
    Request {
        state: Lifecycle,
        idle_ms: i64,
    },
    /// Expand its volume claim to this many bytes.
    GrowStorage(u64),
    /// Take this spare of the warm pool as its server ([`crate::instance`]): relabelled, and
    /// recorded in the status; the next look makes it the database's.
    Claim(SpareView),
    /// Remove its objects, volume last.
    Destroy,
    RemoveFinalizer,
    Status(DatabaseServiceStatus),
}

/// What the controller does for one resource, and when it looks again (`None`: only when the
/// resource changes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub requeue: Option<Duration>,
    /// The idle clock to remember for the next look ([`Seen::last_active`]).
    pub last_active: Option<i64>,
    /// The autoscaler's choice this plan carries out ([`Seen::scaled`]).
    pub scaled: Option<Scaled>,
    /// What the autoscaler is to watch until the next look: set while the database serves as
    /// asked, its pod ready.
    pub serving: Option<Serving>,
    /// The backup its objects fill its volume from, until its first server has run.
    pub restore: Option<objects::Restore>,
}

/// What the cluster says of one database, read before planning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    pub pod: Option<PodView>,
    pub set: Option<SetView>,
    pub claim: Option<ClaimView>,
    /// What its clients are doing, read from its server while it serves.
    pub activity: Option<ClientActivity>,
    /// Its `ScalingPolicy` (the default when none names it).
    pub policy: ScalingPolicy,
    /// The start of its idle time as the operator's last look left it (kept in memory, not in
    /// the status: a status written at every look would trigger the next look at once). `None`
    /// after a restart of the operator or a change of the spec, which start the clock again.
    pub last_active: Option<i64>,
    /// When this was seen (Unix ms).
    pub now_ms: i64,
    /// A size the autoscaler chose and this reconcile is to carry out ([`super::scaler`]).
    pub scaled: Option<Scaled>,
    /// The objects it runs as (`None`: its name is no database's).
    pub instance: Option<Instance>,
    /// The pooled server its status names is labelled for another database: none of its.
    pub foreign: bool,
    /// The warm pool's spares that are as this operator makes them, read only for a database
    /// that has no server yet and may take one.
    pub spares: Vec<SpareView>,
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
            return Plan::default();
        }
        // The finalizer goes only once the StatefulSet and the claim are gone, so that a
        // database made again under the same name cannot meet the old volume.
        if seen.set.is_some() || seen.claim.is_some() {
            let deleting = seen.claim.is_some_and(|c| c.deleting);
            return Plan {
                steps: if deleting {
                    Vec::new()
                } else {
                    vec![Step::Destroy]
                },
                requeue: Some(SOON),
                ..Plan::default()
            };
        }
        return Plan {
            steps: vec![Step::RemoveFinalizer],
            ..Plan::default()
        };
    }
    let mut steps = Vec::new();
    // A database that took a spare keeps its name in every status: it is how the next look
    // finds its server.
    let pooled = seen
        .instance
        .as_ref()
        .filter(|i| i.is_pooled() && !seen.foreign)
        .map(Instance::name);
    let status = |state: &str, message: Option<String>| DatabaseServiceStatus {
        state: state.into(),
        observed_generation: ds.metadata.generation,
        message,
        instance: pooled.clone(),
        ..DatabaseServiceStatus::default()
    };
    let spec = ServiceName::parse(&ds.name_any())
        .map_err(|e| e.to_string())
        .and_then(|name| ds.spec.service_spec(name).map_err(|e| e.to_string()));
    // A database made from a backup: the backup's source, from its id.
    let restore = match &ds.spec.restore_from {
        None => Ok(None),
        Some(r) => stratus_control::backup::parse_backup_id(&r.backup)
            .map(|source| {
                Some(objects::Restore {
                    claim: r.claim.clone(),
                    source,
                    backup: r.backup.clone(),
                })
            })
            .ok_or_else(|| format!("restoreFrom.backup {:?} is not a backup id", r.backup)),
    };
    let (spec, restore) = match spec.and_then(|spec| restore.map(|r| (spec, r))) {
        Ok(both) => both,
        Err(why) => {
            // The schema's rules admit only what `db create` accepts; this is what they cannot
            // see. Nothing is made; the user's next edit brings the resource back here.
            steps.push(Step::Status(status("invalid", Some(why))));
            return Plan {
                steps,
                ..Plan::default()
            };
        }
    };
    if !ours {
        steps.push(Step::AddFinalizer);
    }
    if seen.foreign {
        // Named in its status (edited by hand, or a claim that lost a race), labelled for
        // another database: nothing of it is touched, and the record goes. The next look
        // starts from the database's own objects.
        let named = ds.status.as_ref().and_then(|s| s.instance.clone());
        steps.push(Step::Status(status(
            "failed",
            Some(format!(
                "status.instance {} is another database's server: not used",
                named.unwrap_or_default()
            )),
        )));
        return Plan {
            steps,
            requeue: Some(SOON),
            ..Plan::default()
        };
    }
    // The size is the one the status last gave, or the one the autoscaler chose from it, kept
    // within the spec's bounds (a new database: its minimum; an edit of the bounds moves it).
    // A choice made from another size than the status gives is stale (the bounds were edited,
    // or it was suspended meanwhile) and dropped.
    let was = ds.status.as_ref();
    let desired = ds.spec.state.unwrap_or_default();
    let was_scu = was.map_or(0, |s| s.scu);
    let scaled = seen
        .scaled
        .filter(|s| s.from == was_scu && desired == Lifecycle::Active);
    let scu = scaled
        .map_or(was_scu, |s| s.to)
        .clamp(spec.min_scu, spec.max_scu);
    let resources = sizes.scu.resources(scu);
    let limit = stratus_control::storage::max_bytes(spec.storage_gb);
    let node = ds.spec.node.clone().unwrap_or_default();
    // Suspended: the CPU at its floor, the memory kept (as on one machine), the buffer pool
    // emptied through SQL.
    let floor = Resources {
        cpu_millis: CPU_FLOOR_MILLIS,
        buffer_pool_bytes: BUFFER_POOL_FLOOR,
        ..resources
    };
    // A database created parked gets nothing until it is woken: a StatefulSet made now would
    // start a pod only to be scaled away, perhaps in the middle of initialising its volume.
    let unmade_and_parked = desired == Lifecycle::Parked && seen.set.is_none();
    // While the running pod grows in place, the option file keeps the pool its present memory
    // holds: a server restarted in that pod before the kubelet grew it (a crash, a resize the
    // node cannot do) must not start with a pool its memory limit cannot hold. A pod made anew
    // (evicted for a move, going away) gets the template's memory, and the whole pool.
    let recorded_pool = was
        .filter(|s| s.state == "active" && s.buffer_pool_bytes > 0)
        .map(|s| s.buffer_pool_bytes);
    // On another node than the spec names: evicted for a move.
    let misplaced =
        |p: &PodView| !node.is_empty() && p.node.as_deref().is_some_and(|on| on != node.as_str());
    let staying = |p: &&PodView| p.ready && !p.deleting && !misplaced(p);
    let file_pool = match seen.pod.as_ref().filter(staying) {
        Some(p) => match p.memory_limit_bytes {
            Some(memory) if memory < resources.memory_bytes => resources
                .buffer_pool_bytes
                .min(sizes.scu.buffer_pool_bytes(memory)),
            Some(_) => resources.buffer_pool_bytes,
            // Its size not reported (a container waiting to restart): the pool it was given.
            None => recorded_pool.map_or(resources.buffer_pool_bytes, |b| {
                b.min(resources.buffer_pool_bytes)
            }),
        },
        None => resources.buffer_pool_bytes,
    };
    let instance = InstanceSpec {
        name: spec.name.clone(),
        // The template and option file say what the server is to run with, so a pod made again
        // while suspended starts suspended.
        resources: if desired == Lifecycle::Suspended {
            floor
        } else {
            Resources {
                buffer_pool_bytes: file_pool,
                ..resources
            }
        },
        max_resources: sizes.scu.resources(spec.max_scu),
        // The whole limit at once (docs/kubernetes.md); a template made earlier keeps its size,
        // since a StatefulSet's claim template cannot change.
        storage_bytes: seen.set.map_or(limit, |s| s.claim_template_bytes),
        // Required node affinity when the spec names a node; else the scheduler places it.
        node: node.clone(),
    };
    // A database with no server yet takes a ready spare from the warm pool rather than wait
    // for a pod to be scheduled and initialised: one whose volume is the size it is to have
    // (a claim template cannot change), on the node it asks for. Never one that had a server
    // (its volume is where its data is) or is made from a backup.
    let never_ran = seen.set.is_none()
        && seen.claim.is_none()
        && !was.is_some_and(|s| s.owner_created)
        && seen.instance.as_ref().is_some_and(|i| !i.is_pooled());
    let fits = |sp: &&SpareView| {
        !sp.deleting
            && sp.claim_template_bytes == limit
            && sp.pod.as_ref().is_some_and(|p| {
                p.ready && !p.deleting && (node.is_empty() || p.node.as_deref() == Some(&node))
            })
    };
    let spare = seen
        .spares
        .iter()
        .filter(fits)
        .min_by_key(|sp| (sp.made_ms, sp.instance.name()));
    if let (true, Lifecycle::Active | Lifecycle::Suspended, None, Some(spare)) =
        (never_ran, desired, &restore, spare)
    {
        steps.push(Step::Claim(spare.clone()));
        let mut st = status("provisioning", None);
        st.instance = Some(spare.instance.name());
        st.scu = scu;
        st.host = sizes.proxy_host.clone();
        st.port = sizes.proxy_port;
        st.database = spec.name.to_string();
        steps.push(Step::Status(st));
        return Plan {
            steps,
            // The next look makes it the database's: at once.
            requeue: Some(CLAIMED),
            ..Plan::default()
        };
    }
    if !unmade_and_parked {
        steps.push(Step::Apply(instance));
    }
    let mut messages = Vec::new();
    if let Some(why) = seen.pod.as_ref().and_then(|p| p.restore_failed.as_ref()) {
        messages.push(format!("restore from the backup failed: {why}"));
    }
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
    let replicas = seen.set.map(|s| s.replicas);
    let sized = |p: &PodView, r: &Resources| {
        (p.cpu_limit_millis, p.memory_limit_bytes) == (Some(r.cpu_millis), Some(r.memory_bytes))
    };
    // The status is the record of a suspend: set once the server was emptied, kept until a
    // resume has filled it again. The applied size alone cannot tell (the kubelet lags, and a
    // size may equal the floor).
    let emptied = was.is_some_and(|s| s.state == "suspended");
    // The buffer pool its server runs with, as the last look left it (a server started since
    // has its option file's: the whole pool unless it started in a pod still growing);
    // `None` until one was recorded.
    let mut pool = recorded_pool;
    let moving = |phase: &str| {
        Some(Moving {
            to: node.clone(),
            phase: phase.into(),
        })
    };
    // Once, in the first server that runs: what `stratus db create` does inside it.
    let owner_created = was.is_some_and(|s| s.owner_created);
    let provision = desired != Lifecycle::Parked
        && !owner_created
        && pod.is_some_and(|p| p.ready && !p.deleting);
    if let (true, Some(r)) = (provision, &restore) {
        steps.push(Step::Restored {
            backup: r.backup.clone(),
        });
    } else if provision {
        steps.push(Step::Provision {
            secret: ds
                .spec
                .owner_secret
                .clone()
                .unwrap_or_else(|| objects::owner_secret_name(&spec.name)),
            make: ds.spec.owner_secret.is_none(),
        });
    }
    let (state, move_phase) = if desired == Lifecycle::Parked {
        // The pod goes, the claim stays (the StatefulSet's retention policy).
        if replicas.is_some_and(|n| n != 0) {
            steps.push(Step::SetReplicas(0));
        }
        ("parked", None)
    } else {
        if replicas == Some(0) {
            steps.push(Step::SetReplicas(1));
        }
        // A move under way, to the node the spec still names.
        let was_moving = was
            .and_then(|s| s.moving.as_ref())
            .is_some_and(|m| !node.is_empty() && m.to == node);
        match pod {
            // The template now requires the new node; the pod made after this one goes there.
            Some(p) if misplaced(p) && !p.deleting => {
                steps.push(Step::Evict);
                ("migrating", moving("cut-over"))
            }
            Some(p) if was_moving && (p.deleting || !p.ready) => ("migrating", moving("starting")),
            None if was_moving => ("migrating", moving("starting")),
            // Going away (its node drained): nothing is done to it; its successor follows.
            Some(p) if p.deleting => ("provisioning", None),
            Some(p) if p.ready && desired == Lifecycle::Suspended => {
                if !emptied {
                    // Emptied first, then the CPU lowered: the pool shrinks before the pod.
                    // Shrinking to the floor is always feasible, so a resize pending from
                    // before does not hold it up; the new one replaces it.
                    steps.push(Step::Empty);
                    steps.push(Step::Resize(floor));
                } else if !sized(p, &floor) && p.resize_pending.is_none() {
                    steps.push(Step::Resize(floor));
                }
                ("suspended", None)
            }
            // Resuming: the pod grows first, and the pool is filled only once the kubelet
            // reports the new size, so the pool never outgrows the memory it is given. Until
            // then the database is still the emptied one.
            Some(p) if p.ready && emptied => {
                if sized(p, &resources) {
                    steps.push(Step::Fill(resources.buffer_pool_bytes));
                    ("active", None)
                } else {
                    if p.resize_pending.is_none() {
                        steps.push(Step::Resize(resources));
                    }
                    messages.push("resuming: waiting for the pod's new size".into());
                    ("suspended", None)
                }
            }
            // A new size: the pool shrinks before the pod, and grows only once the kubelet
            // reports the pod's new size. One resize at a time: none while the kubelet reports
            // one pending.
            Some(p) if p.ready => {
                let mut now = pool.unwrap_or(resources.buffer_pool_bytes);
                if !sized(p, &resources) {
                    if resources.buffer_pool_bytes < now {
                        steps.push(Step::Pool(resources.buffer_pool_bytes));
                        now = resources.buffer_pool_bytes;
                    }
                    if p.resize_pending.is_none() {
                        steps.push(Step::Resize(resources));
                    }
                } else if now != resources.buffer_pool_bytes {
                    steps.push(Step::Pool(resources.buffer_pool_bytes));
                    now = resources.buffer_pool_bytes;
                }
                pool = Some(now);
                ("active", None)
            }
            _ => ("provisioning", None),
        }
    };
    // Idle suspend and park, by its policy (as `stratus up`'s monitor does): idleness is what the
    // server's process list shows, since each proxy replica sees only its own sessions.
    let idle = idleness(was, state, desired, seen);
    if let Some(step) = idle.request.clone() {
        steps.push(step);
    }
    // While it serves, its accounts are read again at each look (a client may have made or
    // changed one in SQL), so the proxy can check logins while it sleeps.
    // And once right after provisioning, whatever it was asked to be: a database made suspended
    // must let its owner in (through the proxy) to be woken.
    if provision || (state == "active" && owner_created && pod.is_some_and(|p| p.ready)) {
        steps.push(Step::PublishAccounts);
    }
    let mut st = status(state, None);
    st.scu = scu;
    st.host = sizes.proxy_host.clone();
    st.port = sizes.proxy_port;
    // A restored database keeps its source's schema: its clients find their tables there.
    st.database = restore
        .as_ref()
        .map_or_else(|| spec.name.to_string(), |r| r.source.to_string());
    st.buffer_pool_bytes = if state == "suspended" {
        BUFFER_POOL_FLOOR
    } else {
        pool.unwrap_or(resources.buffer_pool_bytes)
    };
    st.storage_limit_bytes = Some(volume.max(limit));
    st.moving = move_phase;
    st.owner_created = owner_created || provision;
    st.suspended_at = idle.suspended_at.map(rfc3339);
    if let Some(p) = pod.filter(|_| state != "parked") {
        st.node = p.node.clone().unwrap_or_default();
        st.cpu_limit = p.cpu_limit_millis.map_or(0.0, |m| f64::from(m) / 1000.0);
        st.memory_limit_bytes = p.memory_limit_bytes.unwrap_or(0);
        if let Some(why) = &p.resize_pending {
            messages.push(format!("a resize is pending: {why}"));
        }
        if let Some(why) = &p.unschedulable {
            messages.push(format!("the pod cannot be scheduled: {why}"));
        }
    }
    st.message = (!messages.is_empty()).then(|| messages.join("; "));
    steps.push(Step::Status(st));
    let settled = match state {
        "active" => desired == Lifecycle::Active,
        "suspended" => desired == Lifecycle::Suspended,
        "parked" => pod.is_none(),
        _ => false,
    };
    // A new size on its way (the kubelet resizing the pod, the pool to follow): looked at
    // again soon, since the controller is not told when the kubelet is done.
    // One the node cannot do at all (`Infeasible`) waits for the usual looks.
    let infeasible = |p: &PodView| p.resize_pending.as_deref() == Some("Infeasible");
    // (Once the pod has its size, the pool follows in the same look.)
    let resizing = pod.is_some_and(|p| p.ready && !sized(p, &resources) && !infeasible(p));
    let requeue = match idle.next_look_ms {
        _ if resizing && state == "active" => SOON,
        Some(ms) if settled => Duration::from_millis(ms.clamp(1_000, LATER.as_millis() as u64)),
        _ if settled => LATER,
        _ => SOON,
    };
    // Watched by the autoscaler while it serves as asked; its agent is at the pod's address.
    let serving = pod
        .filter(|p| state == "active" && desired == Lifecycle::Active && p.ready && !p.deleting)
        .and_then(|p| p.ip.clone())
        .map(|ip| Serving {
            ip,
            scu,
            bounds: stratus_control::scaler::Bounds {
                min_scu: spec.min_scu,
                max_scu: spec.max_scu,
                cpu_millis_per_scu: sizes.scu.cpu_millis,
            },
            policy: seen.policy.clone(),
        });
    Plan {
        steps,
        requeue: Some(requeue),
        last_active: idle.last_active,
        scaled: scaled.filter(|s| s.to == scu && s.from != scu),
        serving,
        // Once its first server ran on the backup's data, the pod no longer mounts the backup:
        // a backup deleted later by retention must not keep a restarted pod from starting.
        restore: restore.filter(|_| !owner_created && !provision),
    }
}

/// Where a database stands on its way to an idle suspend or park.
#[derive(Debug, Clone, Default, PartialEq)]
struct Idleness {
    /// The start of its idle time, while it serves.
    last_active: Option<i64>,
    /// The start of its suspension, while suspended.
    suspended_at: Option<i64>,
    request: Option<Step>,
    /// When to look again so the policy's time is met (ms from now).
    next_look_ms: Option<u64>,
}

/// Pure: the idle clock of a database in `state` (what this look reports) asked to be
/// `desired`, from its last status and what was seen now.
fn idleness(
    was: Option<&DatabaseServiceStatus>,
    state: &str,
    desired: Lifecycle,
    seen: &Seen,
) -> Idleness {
    let parse = |t: Option<&String>| {
        t.and_then(|t| stratus_core::time::parse_rfc3339_us(t).ok())
            .map(|us| us / 1000)
    };
    let now = seen.now_ms;
    let policy = &seen.policy;
    let mut out = Idleness::default();
    match (state, desired) {
        ("active", Lifecycle::Active) => {
            // Just (re)started, woken or resumed, or its spec changed since the clock was set
            // (a wake that came before a requested suspend was carried out): its idle clock
            // starts now, so a wake is never undone before the statement that asked for it ran.
            let recorded = seen
                .last_active
                .filter(|_| was.is_some_and(|w| w.state == "active"));
            let mut last = recorded.unwrap_or(now);
            if let Some(a) = seen.activity {
                let at = if a.busy {
                    now
                } else {
                    a.idle_ms.map_or(last, |idle| now - idle as i64)
                };
                last = last.max(at);
                let idle_ms = now - last;
                if stratus_control::monitor::suspend_due(idle_ms, a.busy, policy) {
                    out.request = Some(Step::Request {
                        state: Lifecycle::Suspended,
                        idle_ms,
                    });
                }
            }
            out.last_active = Some(last);
            // Looked at again when it would be due, if nothing happens meanwhile.
            let left = policy.idle_to_suspend_ms as i64 - (now - last);
            out.next_look_ms = Some(left.max(0) as u64);
        }
        ("suspended", Lifecycle::Suspended) => {
            let since = parse(was.and_then(|w| w.suspended_at.as_ref())).unwrap_or(now);
            if stratus_control::monitor::park_due(now - since, policy) {
                out.request = Some(Step::Request {
                    state: Lifecycle::Parked,
                    idle_ms: now - since,
                });
            }
            out.suspended_at = Some(since);
            let left = policy.suspend_to_park_ms as i64 - (now - since);
            out.next_look_ms = Some(left.max(0) as u64);
        }
        ("suspended", _) => out.suspended_at = parse(was.and_then(|w| w.suspended_at.as_ref())),
        _ => {}
    }
    out
}

/// What the cluster says of the server `inst`: its pod (unless the database is being deleted),
/// StatefulSet and volume claim. A pooled server labelled for another database is seen as none,
/// and said to be foreign.
async fn observe(ctx: &Context, inst: &Instance, deleting: bool) -> Result<Seen, KubeError> {
    let pod = if deleting {
        None
    } else {
        ctx.runtime.observe(inst).await?
    };
    let set = ctx.runtime.stateful_set(inst).await?;
    let claim = ctx.runtime.claim(inst).await?;
    let foreign = set.is_some_and(|s| s.foreign);
    Ok(Seen {
        pod: pod.filter(|_| !foreign),
        set: set.filter(|_| !foreign),
        claim: claim.filter(|_| !foreign),
        foreign,
        instance: Some(inst.clone()),
        ..Seen::default()
    })
}

/// Reads what the cluster says of `ds`, plans, and carries the plan out in order; the first
/// failure stops it (the controller's error policy retries with back-off).
pub async fn reconcile(ds: &DatabaseService, ctx: &Context) -> Result<Option<Duration>, KubeError> {
    reconcile_at(ds, ctx, stratus_core::time::now_ms()).await
}

/// [`reconcile`] as seen at `now_ms` (the idle clock's time).
pub(crate) async fn reconcile_at(
    ds: &DatabaseService,
    ctx: &Context,
    now_ms: i64,
) -> Result<Option<Duration>, KubeError> {
    let name = ServiceName::parse(&ds.name_any()).ok();
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let recorded = ds.status.as_ref().and_then(|s| s.instance.as_deref());
    let mut seen = match &name {
        Some(name) => {
            let inst = Instance::of_database(name, recorded);
            let mut seen = observe(ctx, &inst, deleting).await?;
            seen.now_ms = now_ms;
            seen.scaled = ctx.scaling.decided(name.as_str());
            let uid = ds.metadata.uid.as_deref();
            let mut adopted = false;
            if let (false, None, None, Some(uid)) = (inst.is_pooled(), seen.set, seen.claim, uid) {
                // Whether or not the pool is on now: a claim made while it was.
                if let Some(found) = ctx.runtime.claimed_by(name, uid).await? {
                    // A claim whose record in the status was lost: this database's server.
                    tracing::info!(database = %name, instance = %found.name(), "found the spare it claimed");
                    let mut again = observe(ctx, &found, deleting).await?;
                    (again.now_ms, again.scaled) = (seen.now_ms, seen.scaled);
                    seen = again;
                    adopted = true;
                } else if ctx.pool_on() && !deleting {
                    seen.spares = super::pool::current(ctx, ctx.runtime.spares().await?);
                }
            }
            // A claim cut short, or a pod made again from the spare's template: its pod, Secret
            // and volume claim get the database's label, once its StatefulSet has it.
            let running = seen.set.is_some_and(|s| s.replicas > 0);
            let pooled = seen.instance.clone().filter(Instance::is_pooled);
            if let (Some(pooled), true) = (pooled, adopted || (running && seen.pod.is_none())) {
                if ctx.runtime.finish_claim(&pooled).await? > 0 {
                    tracing::info!(database = %name, instance = %pooled.name(), "claim finished");
                    let mut again = observe(ctx, &pooled, deleting).await?;
                    (again.now_ms, again.scaled) = (seen.now_ms, seen.scaled);
                    seen = again;
                }
            }
            seen
        }
        None => Seen::default(),
    };
    let inst = seen.instance.clone();
    // The idle clock's inputs, only where it runs: a server serving as asked, or suspended as
    // asked (on its way to a park).
    if let (Some(name), Some(pod)) = (&name, seen.pod.clone().filter(|p| p.ready && !p.deleting)) {
        let desired = ds.spec.state.unwrap_or_default();
        let was = ds.status.as_ref().map(|s| s.state.as_str());
        let serving = was == Some("active") && desired == Lifecycle::Active;
        let asleep = was == Some("suspended") && desired == Lifecycle::Suspended;
        if serving || asleep {
            seen.policy = ctx.runtime.scaling_policy(name).await?;
        }
        seen.last_active = ctx.idle_clock(name.as_str(), ds.metadata.generation);
        if serving {
            // Unknown activity only stops the clock this time: nothing is suspended on it.
            seen.activity = match ctx.servers.activity(name, &pod).await {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(database = %name, "cannot read its clients' activity: {e}");
                    None
                }
            };
        }
    }
    let plan = plan(ds, &seen, &ctx.sizes);
    // What the meter records once the steps are done: the state the status gives, or gone.
    let metered = if deleting {
        Some((super::usage::state_of("deleted"), 0, 0))
    } else {
        plan.steps.iter().find_map(|s| match s {
            Step::Status(st) => Some((
                super::usage::state_of(&st.state),
                st.scu,
                st.storage_limit_bytes.unwrap_or(0),
            )),
            _ => None,
        })
    };
    let api: Api<DatabaseService> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let resource = ds.name_any();
    let events = events_of(&plan.steps, seen.pod.as_ref());
    // What the server did not do as asked, said after the steps.
    let mut warnings = Vec::new();
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
            // Written only when it says something new: most looks change nothing.
            Step::Status(status) if ds.status.as_ref() == Some(&status) => {}
            Step::Status(status) => {
                let patch = super::status_merge_patch(&status, STATUS_OPTIONAL);
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
            // The steps on a database's objects: planned only for a name that parsed, and the
            // SQL ones only for a running pod.
            step => {
                let (Some(name), Some(inst)) = (&name, &inst) else {
                    continue;
                };
                match (step, &seen.pod) {
                    // Applied again only when the objects would change (a new size, node,
                    // image, or operator), or were made by an operator that did not record
                    // them.
                    (Step::Apply(spec), _)
                        if seen.set.and_then(|s| s.applied)
                            == Some(objects::applied_hash_from(
                                inst,
                                &spec,
                                &ctx.settings,
                                plan.restore.as_ref(),
                            )) => {}
                    (Step::Apply(spec), _) => {
                        ctx.runtime
                            .apply_from(inst, &spec, plan.restore.as_ref())
                            .await?;
                        // A database made with a server of its own counts towards the pool's
                        // demand as one that claimed a spare does.
                        if seen.set.is_none() && ds.finalizers().iter().all(|f| f != FINALIZER) {
                            ctx.pool_demand(now_ms);
                        }
                    }
                    (Step::Claim(spare), _) => {
                        let uid = ds.metadata.uid.as_deref().unwrap_or_default();
                        if !ctx.runtime.claim_spare(&spare, name, uid).await? {
                            // Taken meanwhile by another database: the next look picks
                            // another, or makes a server.
                            tracing::info!(database = %resource, spare = %spare.instance.name(), "spare taken meanwhile");
                            return Ok(Some(CLAIMED));
                        }
                        ctx.pool_demand(now_ms);
                        tracing::info!(database = %resource, instance = %spare.instance.name(), "claimed a spare from the warm pool");
                    }
                    (Step::SetReplicas(n), _) => ctx.runtime.set_replicas(inst, n).await?,
                    (Step::Evict, _) => ctx.runtime.evict(inst).await?,
                    (Step::Empty, Some(pod)) => {
                        let closed = ctx.servers.empty(name, pod).await?;
                        tracing::info!(database = %resource, sessions_closed = closed, "emptied for a suspend");
                    }
                    (Step::Fill(bytes), Some(pod)) => ctx.servers.fill(name, pod, bytes).await?,
                    (Step::Pool(bytes), Some(pod)) => {
                        let took = ctx.servers.pool(name, pod, bytes).await?;
                        if let Some(event) = pool_short(bytes, took) {
                            warnings.push(event);
                        }
                    }
                    (Step::Request { state, .. }, _) => {
                        // With the version read: a wake or a user's resume meanwhile is a 409,
                        // and the next look starts from it.
                        let patch = json!({
                            "metadata": {"resourceVersion": ds.metadata.resource_version},
                            "spec": {"state": state},
                        });
                        match api
                            .patch(&resource, &PatchParams::default(), &Patch::Merge(patch))
                            .await
                        {
                            Ok(_) => {}
                            // Changed meanwhile (a client's wake, a user's resume): that wins,
                            // and is no failure; the next look starts from it.
                            Err(kube::Error::Api(s)) if s.code == 409 => {
                                tracing::info!(database = %resource, "idle request dropped: the resource changed meanwhile");
                                return Ok(Some(Duration::from_secs(1)));
                            }
                            Err(e) => {
                                return Err(KubeError::of(
                                    "update",
                                    format!("databaseservice {resource}"),
                                    e,
                                ));
                            }
                        }
                    }
                    (Step::PublishAccounts, Some(pod)) => {
                        let rows = ctx.servers.accounts(name, pod).await?;
                        let text = crate::accounts::encode(&rows);
                        if ctx.runtime.publish_accounts(inst, &text).await? {
                            tracing::info!(database = %resource, accounts = text.lines().count(), "accounts published for the proxy");
                        }
                    }
                    (Step::Provision { secret, make }, Some(pod)) => {
                        let owner =
                            ds.controller_owner_ref(&())
                                .ok_or_else(|| KubeError::Owner {
                                    secret: secret.clone(),
                                    why: "the resource has no uid to own it".into(),
                                })?;
                        let (user, password) =
                            ctx.runtime.owner_login(&secret, make, &owner, name).await?;
                        let hash = NativeHash::of_password(&password);
                        let made = ctx.servers.provision(name, pod, &user, &hash).await?;
                        tracing::info!(database = %resource, owner = %user, account_made = made, "ready for its owner");
                    }
                    (Step::Resize(r), _) => ctx.runtime.resize(inst, &r).await?,
                    (Step::GrowStorage(bytes), _) => ctx.runtime.grow_storage(inst, bytes).await?,
                    (Step::Destroy, _) => ctx.runtime.destroy(inst).await?,
                    _ => {}
                }
            }
        }
    }
    if let Some((state, scu, bytes)) = metered {
        ctx.metrics
            .usage
            .observe(&resource, now_ms, state, scu, bytes);
    }
    if let Some(name) = &name {
        ctx.set_idle_clock(name.as_str(), ds.metadata.generation, plan.last_active);
        // The autoscaler's choice is carried out, or was stale: either way it is done with.
        if let Some(s) = &seen.scaled {
            ctx.scaling.done(name.as_str(), s);
        }
        ctx.scaling.serve(name.as_str(), plan.serving.clone());
    }
    let events = plan
        .scaled
        .iter()
        .map(scaled_event)
        .chain(events)
        .chain(warnings);
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

/// Rounding aside (InnoDB sizes its pool in units of up to 8 MiB), a pool smaller than asked.
const POOL_ROUNDING: u64 = 8 << 20;

/// A Warning when the server took a smaller buffer pool than asked: its
/// `innodb_buffer_pool_size_max` is lower (a server started from an older operator's option
/// file). The status records what was asked, so the look does not ask again; the pod's next
/// start reads the new option file. Pure.
pub fn pool_short(asked: u64, took: u64) -> Option<Event> {
    (took + POOL_ROUNDING < asked).then(|| Event {
        type_: EventType::Warning,
        reason: "BufferPoolLimited".into(),
        note: Some(format!(
            "the server took a buffer pool of {} MiB for the {} MiB asked (its innodb_buffer_pool_size_max); it gets the whole size when its pod is next made",
            took >> 20,
            asked >> 20
        )),
        action: "Resize".into(),
        secondary: None,
    })
}

/// The Event of an autoscaling: the measurement behind it. Pure.
pub fn scaled_event(s: &Scaled) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "Scaled".into(),
        note: Some(format!(
            "autoscaled from {} to {} SCU: CPU at {:.0} % of its allocation over the last {:.1} s",
            s.from,
            s.to,
            s.usage_pct,
            s.window_ms as f64 / 1000.0
        )),
        action: "Scale".into(),
        secondary: None,
    }
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
                            Instance::of(&spec.name).name(),
                            spec.resources.scu,
                            spec.storage_bytes >> 30
                        ),
                    ));
                }
            }
            Step::SetReplicas(0) => out.push(normal(
                "Parked",
                "Park",
                "parked: the StatefulSet scaled to 0, the volume claim kept".into(),
            )),
            Step::SetReplicas(_) => out.push(normal(
                "Woken",
                "Wake",
                "waking: the StatefulSet scaled back to 1".into(),
            )),
            Step::Evict => {
                let to = steps.iter().find_map(|s| match s {
                    Step::Apply(spec) => Some(spec.node.as_str()),
                    _ => None,
                });
                let from = pod.and_then(|p| p.node.as_deref()).unwrap_or("?");
                out.push(normal(
                    "Moving",
                    "Move",
                    format!(
                        "moving from node {from} to node {}: the pod is evicted and made again there, with its volume",
                        to.unwrap_or("?")
                    ),
                ));
            }
            Step::Empty => out.push(normal(
                "Suspended",
                "Suspend",
                format!(
                    "suspended: sessions closed, buffer pool at {} MiB, CPU at {CPU_FLOOR_MILLIS}m",
                    BUFFER_POOL_FLOOR >> 20
                ),
            )),
            Step::Request { state, idle_ms } => {
                let (reason, action, what) = match state {
                    Lifecycle::Parked => ("IdlePark", "Park", "suspended"),
                    _ => ("IdleSuspend", "Suspend", "idle"),
                };
                out.push(normal(
                    reason,
                    action,
                    format!(
                        "{what} for {:.1} s, as long as its ScalingPolicy allows: spec.state set to {}",
                        *idle_ms as f64 / 1000.0,
                        serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
                    ),
                ));
            }
            Step::Provision { secret, .. } => out.push(normal(
                "Provisioned",
                "Provision",
                format!("schema and owner account made; the owner's login is in Secret {secret}"),
            )),
            Step::Restored { backup } => out.push(normal(
                "Restored",
                "Provision",
                format!(
                    "made from backup {backup}: its data, schema and accounts are the backup's"
                ),
            )),
            Step::Fill(bytes) => out.push(normal(
                "Resumed",
                "Resume",
                format!(
                    "resumed: buffer pool back to {} MiB, hot pages reloading",
                    bytes >> 20
                ),
            )),
            // Part of a suspend or a resume, which say so themselves.
            Step::Resize(_)
                if steps
                    .iter()
                    .any(|s| matches!(s, Step::Empty | Step::Fill(_))) => {}
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
            Step::Claim(spare) => out.push(normal(
                "Claimed",
                "Create",
                format!(
                    "took {} from the warm pool: its server is already running; it is resized and provisioned next",
                    spare.instance.name()
                ),
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

/// The status fields that may be left out, sent as `null` when they are ([`super::status_merge_patch`]).
const STATUS_OPTIONAL: &[&str] = &[
    "instance",
    "message",
    "moving",
    "storageUsedBytes",
    "storageLimitBytes",
    "observedGeneration",
    "suspendedAt",
];

/// How long to wait before trying a resource again after its `attempts`-th failure in a row:
/// 1 s, doubling, at most 5 minutes.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests;
