//! The warm pool on Kubernetes (the brief's "Pre-Fabricated Database Pools"): spare servers,
//! each a StatefulSet `spare-<id>` with its pod running and its volume initialised, owned by no
//! database. A new `DatabaseService` claims a ready one ([`super::database`]: relabelled, see
//! [`crate::instance`]) instead of waiting for a pod to be scheduled, its image started and its
//! data directory made; this loop, run by the leader, keeps the pool at its target.
//!
//! The target is one machine's ([`stratus_control::pool::target`]): the minimum plus one spare
//! per database created in the last five minutes, capped. A spare is made at one SCU with the
//! default volume (10 GB) and room to grow in place to the largest tier; a database whose
//! volume is to be another size, that asks for a node no ready spare is on, or that is made
//! from a backup gets a server of its own as before. Spares made with other settings (an
//! operator upgraded, another image) are removed and made again, so a claimed server runs
//! what this operator would make.

use super::Context;
use super::database::Sizes;
use crate::instance::Instance;
use crate::objects;
use crate::runtime::{KubeError, SpareView};
use std::sync::Arc;
use std::time::Duration;
use stratus_control::pool::{PoolConfig, PoolStep, next_step, target};
use stratus_core::{ServiceName, ServiceSpec, Tier};
use stratus_runtime::InstanceSpec;

/// How often the pool is looked at when no claim wakes it.
pub const EVERY: Duration = Duration::from_secs(5);

/// What the pool does in one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make this many spares.
    Make(usize),
    /// Remove this spare: beyond the target, or made with other settings.
    Remove(Box<SpareView>),
}

/// The server a spare runs: a database of the defaults (one SCU, 10 GB), with room to grow to
/// the largest tier in place.
pub fn spare_spec(inst: &Instance, sizes: &Sizes) -> InstanceSpec {
    let name = ServiceName::parse(&inst.name()).unwrap_or_else(|e| {
        unreachable!("a spare's name is a database name: {e}");
    });
    let defaults = ServiceSpec::new(name.clone(), Tier::Standard, None, None, None)
        .unwrap_or_else(|e| unreachable!("the defaults are a valid spec: {e}"));
    InstanceSpec {
        name,
        resources: sizes.scu.resources(defaults.min_scu),
        max_resources: sizes.scu.resources(Tier::STANDARD_MAX_SCU),
        storage_bytes: stratus_control::storage::max_bytes(defaults.storage_gb),
        node: String::new(),
    }
}

/// Whether `spare` is what this operator makes now (its recorded hash).
fn is_current(ctx: &Context, spare: &SpareView) -> bool {
    let spec = spare_spec(&spare.instance, &ctx.sizes);
    spare.applied == Some(objects::applied_hash(&spare.instance, &spec, &ctx.settings))
}

/// The spares a database may claim: those as this operator makes them.
pub fn current(ctx: &Context, spares: Vec<SpareView>) -> Vec<SpareView> {
    spares.into_iter().filter(|s| is_current(ctx, s)).collect()
}

/// The pool's steps, from its spares (`current`: each made as this operator makes them) and
/// the databases created recently. Pure. Spares starting count as made, so a slow start is not
/// doubled; only ready ones beyond the target are removed, the newest first (as on one
/// machine: a start under way is not wasted).
pub fn plan(cfg: PoolConfig, spares: &[(SpareView, bool)], recent: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut live: Vec<&SpareView> = Vec::new();
    for (spare, current) in spares {
        if spare.deleting {
            continue;
        }
        if *current {
            live.push(spare);
        } else {
            steps.push(Step::Remove(Box::new(spare.clone())));
        }
    }
    let ready = |s: &&SpareView| s.pod.as_ref().is_some_and(|p| p.ready && !p.deleting);
    let want = target(cfg, recent);
    let (mut up, starting): (Vec<&SpareView>, Vec<&SpareView>) = live.into_iter().partition(ready);
    loop {
        match next_step(up.len(), starting.len(), want) {
            PoolStep::Start => {
                let missing = want - up.len() - starting.len();
                steps.push(Step::Make(missing));
                break;
            }
            PoolStep::Remove => {
                up.sort_by_key(|s| (s.made_ms, s.instance.name()));
                if let Some(s) = up.pop() {
                    steps.push(Step::Remove(Box::new(s.clone())));
                }
            }
            PoolStep::Wait => break,
        }
    }
    steps
}

/// One look: lists the spares, plans, and carries the plan out. A spare claimed between the
/// listing and its removal is left alone (the removal is made against the version listed).
pub async fn look(ctx: &Context) -> Result<Vec<Step>, KubeError> {
    let spares = ctx.runtime.spares().await?;
    let marked: Vec<(SpareView, bool)> = spares
        .into_iter()
        .map(|s| {
            let current = is_current(ctx, &s);
            (s, current)
        })
        .collect();
    let now = stratus_core::time::now_ms();
    let steps = plan(ctx.pool, &marked, ctx.recent_creates(now));
    for step in &steps {
        match step {
            Step::Make(n) => {
                for _ in 0..*n {
                    let inst = Instance::new_spare();
                    ctx.runtime
                        .make_spare(&inst, &spare_spec(&inst, &ctx.sizes))
                        .await?;
                    tracing::info!(spare = %inst.name(), "warm pool: spare made");
                }
            }
            Step::Remove(spare) => {
                if ctx.runtime.remove_spare(spare).await? {
                    tracing::info!(spare = %spare.instance.name(), "warm pool: spare removed");
                }
            }
        }
    }
    Ok(steps)
}

/// The pool's loop, while this replica leads: a look every [`EVERY`], and at once after a
/// claim.
pub async fn run(ctx: Arc<Context>) {
    loop {
        if let Err(e) = look(&ctx).await {
            tracing::warn!("warm pool: {e}");
        }
        let _ = tokio::time::timeout(EVERY, ctx.pool_wake.notified()).await;
    }
}

#[cfg(test)]
mod tests;
