//! Nodes as the control plane sees them (#12, `docs/placement.md`): which node a database is
//! on, where a new one goes (the policy of [`crate::placement::place`], over the memory each
//! node's servers use now), and what `stratus node list` shows.

use crate::placement::{self, NodeLoad};
use crate::{ControlError, ControlPlane, Result};
use serde::{Deserialize, Serialize};
use stratus_core::{DatabaseService, DbState};
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
    pub(crate) fn place_new(&self, need_bytes: u64) -> Result<Placed> {
        self.place(need_bytes, None)
    }

    /// [`Self::place_new`], never on node `except` (the one a database moves off).
    pub(crate) fn place(&self, need_bytes: u64, except: Option<&str>) -> Result<Placed> {
        let nodes = self.runtime.nodes();
        let except = except.and_then(|e| nodes.iter().position(|n| n.name == e));
        let loads: Vec<NodeLoad> = nodes.iter().map(load).collect();
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
                describe(&nodes)
            )));
        };
        let chosen = &nodes[i];
        let reason = if nodes.len() == 1 && except.is_none() {
            format!("the only node, {}", chosen.name)
        } else {
            format!(
                "most memory left under the {} % watermark: {}",
                w.high_pct,
                describe(&nodes)
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
            .runtime
            .nodes()
            .into_iter()
            .map(|n| NodeView {
                memory_used_pct: pct(n.memory_used_bytes, n.memory_bytes),
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

fn load(n: &NodeInfo) -> NodeLoad {
    NodeLoad {
        name: n.name.clone(),
        capacity_bytes: n.memory_bytes,
        used_bytes: n.memory_used_bytes,
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

/// `n1 uses 1229 of 4096 MiB (30 %), n2 …`: the figures a placement compared.
fn describe(nodes: &[NodeInfo]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "{} uses {:.0} of {:.0} MiB ({} %)",
                n.name,
                n.memory_used_bytes as f64 / MIB,
                n.memory_bytes as f64 / MIB,
                pct(n.memory_used_bytes, n.memory_bytes)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
