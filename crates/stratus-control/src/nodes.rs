//! Nodes as the control plane sees them (#12, `docs/placement.md`): which node a database is
//! on, how much of its memory a node has taken ([`ControlPlane::node_loads`]), where a new
//! database goes ([`crate::placement::place`]), which databases rebalancing moves
//! ([`crate::placement::rebalance`], run by [`ControlPlane::run_rebalance`]), and what
//! `stratus node list` shows.

use crate::placement::{self, NodeLoad};
use crate::{ControlError, ControlPlane, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use stratus_core::{DatabaseService, DbState, ServiceName};
use stratus_runtime::{NodeInfo, Runtime};
use stratus_store::Store;

/// One node, for `stratus node list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// Where its databases' data lives.
    pub storage: String,
    /// What it offers databases.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// The sizes its active databases have now, summed.
    pub allocated_cpu_millis: u64,
    pub allocated_memory_bytes: u64,
    /// Memory its servers use now (spares included), and that in percent of its capacity.
    pub memory_used_bytes: u64,
    pub memory_used_pct: f64,
    /// What placement and rebalancing weigh: the memory used, plus the part of each active
    /// database's buffer pool not filled yet (it fills, and is never given back) that its data
    /// can fill ([`placement::database_load`]).
    pub memory_load_bytes: u64,
    pub memory_load_pct: f64,
    /// Databases placed on it, in name order.
    pub databases: Vec<String>,
}

/// Where a database was placed, and why (for its event).
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub node: String,
    /// One line: the rule and the figures it compared.
    pub reason: String,
    pub data: serde_json::Value,
}

const MIB: f64 = 1024.0 * 1024.0;

/// A new database's files before its owner writes anything (system tables, time zones, undo, a
/// 32 MiB redo log): 165 MiB on its volume (measured in session 32, `bench/README.md`), rounded
/// up. Its pool can come to hold as much.
const NEW_DATABASE_FILES: u64 = 192 << 20;

/// What a new server uses after its first query: 84–92 MiB measured, rounded up.
const NEW_SERVER_BYTES: u64 = 128 << 20;

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// The node a database is on: the catalog's, else where its storage is, else the first.
    pub(crate) fn node_of(&self, svc: &DatabaseService) -> String {
        svc.node
            .clone()
            .or_else(|| self.runtime.node_of(svc.name()))
            .unwrap_or_else(|| self.first_node())
    }

    fn first_node(&self) -> String {
        self.runtime
            .nodes()
            .into_iter()
            .next()
            .map(|n| n.name)
            .unwrap_or_default()
    }

    /// The node for a new database that starts with `need_bytes` of memory: the most memory
    /// left under the high watermark once it is added. Fails when no node has that room.
    pub(crate) async fn place_new(&self, need_bytes: u64) -> Result<Placed> {
        self.place(need_bytes, None).await
    }

    /// What a database not running yet will weigh in its node's load once started at `scu`
    /// with `data_bytes` of data ([`placement::database_load`] of a new server): 0 for a new
    /// database, a backup's size for a restore. Never more than its memory allowance.
    pub(crate) fn need_of_new(&self, scu: u32, data_bytes: u64) -> u64 {
        let r = self.resources(scu);
        placement::database_load(
            NEW_SERVER_BYTES,
            r.buffer_pool_bytes,
            Some(data_bytes.max(NEW_DATABASE_FILES)),
        )
        .min(r.memory_bytes)
    }

    /// What a database weighs in its node's load now ([`placement::database_load`]), and the
    /// memory its server uses. Its data is its volume's use or, if more, what its server last
    /// said its pool could hold of its files (compressed tables take more room in the pool
    /// than on disk).
    pub(crate) fn load_of(&self, svc: &DatabaseService) -> (u64, u64) {
        let used = self.runtime.usage(svc.name()).map_or(0, |u| u.memory_bytes);
        let fillable = self
            .measured(svc.name())
            .and_then(|m| m.pool_fillable_bytes)
            .unwrap_or(0);
        let data = self
            .runtime
            .storage(svc.name())
            .map(|s| s.used_bytes.max(fillable));
        (
            placement::database_load(used, svc.buffer_pool_bytes, data),
            used,
        )
    }

    /// Every node with its load ([`NodeView::memory_load_bytes`]): the memory its servers use
    /// now, plus what its active databases' buffer pools can still fill with their data.
    pub async fn node_loads(&self) -> Result<Vec<(NodeInfo, u64)>> {
        let services = self.store.services().await?;
        Ok(self.weigh(self.runtime.nodes(), &services).0)
    }

    /// [`Self::node_loads`] of `nodes`, and what each active database among `services` weighs
    /// in its node's load ([`Self::load_of`]: a `statfs` per database, so read once a look).
    fn weigh(
        &self,
        nodes: Vec<NodeInfo>,
        services: &[DatabaseService],
    ) -> (Vec<(NodeInfo, u64)>, HashMap<ServiceName, u64>) {
        let mut nodes: Vec<(NodeInfo, u64)> = nodes
            .into_iter()
            .map(|n| {
                let used = n.memory_used_bytes;
                (n, used)
            })
            .collect();
        let mut weights = HashMap::new();
        for svc in services.iter().filter(|s| s.state == DbState::Active) {
            let node = self.node_of(svc);
            let Some((_, load)) = nodes.iter_mut().find(|(n, _)| n.name == node) else {
                continue;
            };
            let (weight, used) = self.load_of(svc);
            *load += weight - used;
            weights.insert(svc.name().clone(), weight);
        }
        (nodes, weights)
    }

    /// [`Self::place_new`], never on node `except` (the one a database moves off).
    pub(crate) async fn place(&self, need_bytes: u64, except: Option<&str>) -> Result<Placed> {
        let (nodes, loads): (Vec<NodeInfo>, Vec<u64>) =
            self.node_loads().await?.into_iter().unzip();
        let except = except.and_then(|e| nodes.iter().position(|n| n.name == e));
        let loads: Vec<NodeLoad> = nodes.iter().zip(loads).map(node_load).collect();
        let w = self.cfg.watermarks;
        let figures: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node": n.name,
                    "memory_bytes": n.memory_bytes,
                    "memory_used_bytes": n.memory_used_bytes,
                })
            })
            .collect();
        let Some(i) = placement::place(&loads, need_bytes, w, except) else {
            return Err(ControlError::NoCapacity(format!(
                "no node has room for {:.0} MiB more without passing its high watermark ({} % of its memory): {}",
                need_bytes as f64 / MIB,
                w.high_pct,
                describe(&loads)
            )));
        };
        let chosen = &nodes[i];
        let reason = if nodes.len() == 1 && except.is_none() {
            format!("the only node, {}", chosen.name)
        } else {
            format!(
                "most memory left under the {} % watermark: {}",
                w.high_pct,
                describe(&loads)
            )
        };
        Ok(Placed {
            node: chosen.name.clone(),
            reason,
            data: serde_json::json!({
                "node": chosen.name,
                "need_bytes": need_bytes,
                "high_pct": w.high_pct,
                "nodes": figures,
            }),
        })
    }

    /// Every node with what it offers, what is allocated on it and what it uses.
    pub async fn nodes_view(&self) -> Result<Vec<NodeView>> {
        let services = self.store.services().await?;
        let mut views: Vec<NodeView> = self
            .weigh(self.runtime.nodes(), &services)
            .0
            .into_iter()
            .map(|(n, load)| NodeView {
                memory_used_pct: pct(n.memory_used_bytes, n.memory_bytes),
                memory_load_bytes: load,
                memory_load_pct: pct(load, n.memory_bytes),
                name: n.name,
                storage: n.storage,
                cpu_millis: n.cpu_millis,
                memory_bytes: n.memory_bytes,
                allocated_cpu_millis: 0,
                allocated_memory_bytes: 0,
                memory_used_bytes: n.memory_used_bytes,
                databases: Vec::new(),
            })
            .collect();
        for svc in &services {
            let node = self.node_of(svc);
            let Some(v) = views.iter_mut().find(|v| v.name == node) else {
                continue;
            };
            v.databases.push(svc.name().to_string());
            if matches!(svc.state, DbState::Active | DbState::Provisioning) {
                let r = self.resources(svc.scu);
                v.allocated_cpu_millis += u64::from(r.cpu_millis);
                v.allocated_memory_bytes += r.memory_bytes;
            }
        }
        Ok(views)
    }
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// The rebalancing controller: every `rebalance_every`, each node over its high watermark
    /// has its cheapest databases to move (per byte freed) moved to the nodes with room, one
    /// at a time, until it is under its low watermark (`placement::rebalance`). Only active
    /// databases move (a sleeping one would be woken by its move); one moved within the
    /// cooldown stays.
    pub async fn run_rebalance(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(self.cfg.rebalance_every).await;
            if let Err(e) = self.rebalance_once().await {
                tracing::warn!("rebalancing: {e}");
            }
        }
    }

    /// One look at the nodes, and the moves it calls for. Returns how many databases moved.
    pub async fn rebalance_once(&self) -> Result<usize> {
        let nodes = self.runtime.nodes();
        if nodes.len() < 2 {
            return Ok(0);
        }
        let services = self.store.services().await?;
        let (nodes, weights) = self.weigh(nodes, &services);
        let loads: Vec<NodeLoad> = nodes.iter().map(|(n, l)| node_load((n, *l))).collect();
        let w = self.cfg.watermarks;
        if !loads.iter().any(|n| n.over_high(w)) {
            return Ok(0);
        }
        let moved_at = self
            .moved_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut names = Vec::new();
        let mut candidates = Vec::new();
        for svc in &services {
            let node = self.node_of(svc);
            let Some(i) = loads.iter().position(|n| n.name == node) else {
                continue;
            };
            candidates.push(placement::Candidate {
                node: i,
                // What moving it frees: its load; nothing for one that is not active.
                used_bytes: weights.get(svc.name()).copied().unwrap_or(0),
                cpu_millis: self
                    .measured(svc.name())
                    .and_then(|m| m.cpu_millis)
                    .unwrap_or(0.0),
                moved_ms: moved_at.get(svc.name()).copied(),
            });
            names.push(svc.name().clone());
        }
        let plan = placement::rebalance(
            &loads,
            &candidates,
            w,
            stratus_core::time::now_ms(),
            self.cfg.move_cooldown.as_millis() as i64,
        );
        // One move per look: a move takes a while, and the next look plans from what the nodes
        // use after it (another node may have filled, the database may have moved by hand).
        let mut moved = 0;
        for m in plan.into_iter().take(1) {
            let from = &loads[m.from];
            let why = format!(
                "rebalancing: node {} uses {:.0} of {:.0} MiB ({} %), over its high watermark ({} %)",
                from.name,
                from.used_bytes as f64 / MIB,
                from.capacity_bytes as f64 / MIB,
                pct(from.used_bytes, from.capacity_bytes),
                w.high_pct
            );
            let db = names[m.db].as_str();
            match self
                .migrate_for(db, Some(&loads[m.to].name), Some(why))
                .await
            {
                Ok(_) => moved += 1,
                // Its event says why. The cooldown counts from the attempt, so a move that keeps
                // failing is not tried again at every look.
                Err(e) => {
                    tracing::warn!(db, "rebalancing could not move it: {e}");
                    self.moved_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(names[m.db].clone(), stratus_core::time::now_ms());
                }
            }
        }
        Ok(moved)
    }
}

/// A node as placement weighs it: its capacity and its load.
pub(crate) fn node_load((n, load): (&NodeInfo, u64)) -> NodeLoad {
    NodeLoad {
        name: n.name.clone(),
        capacity_bytes: n.memory_bytes,
        used_bytes: load,
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

/// `n1 uses 1229 of 4096 MiB (30 %), n2 …`: the loads a placement compared.
pub(crate) fn describe(nodes: &[NodeLoad]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "{} uses {:.0} of {:.0} MiB ({} %)",
                n.name,
                n.used_bytes as f64 / MIB,
                n.capacity_bytes as f64 / MIB,
                pct(n.used_bytes, n.capacity_bytes)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
