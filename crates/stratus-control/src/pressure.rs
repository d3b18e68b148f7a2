//! Parking under memory pressure: a suspended database keeps its server, and the server its
//! memory (`bench/density`: about 75 MiB each), so enough of them would fill a node long before
//! their park window ends. When a node is over its high watermark ([`crate::placement`]), its
//! suspended databases are parked, the longest-suspended first, until what they free brings the
//! node to its low watermark. Parking loses nothing a client holds (a suspended database has
//! no server sessions; its clients stay connected to the proxy) and costs only a slower next
//! wake, as Aurora Serverless v1 and Neon do with idle compute.

use crate::placement::{NodeLoad, Watermarks};
use crate::{ControlPlane, Result};
use stratus_core::scu::MIB;
use stratus_core::{DbState, ServiceName};
use stratus_runtime::Runtime;
use stratus_store::Store;

/// A suspended database parking could free memory from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sleeper {
    /// The node it is on (an index into the nodes).
    pub node: usize,
    /// Memory its server uses: what parking it frees.
    pub used_bytes: u64,
    /// When it was suspended (ms since the epoch).
    pub suspended_ms: i64,
}

/// Which sleepers to park (indexes into `sleepers`): on each node over its high watermark, the
/// longest-suspended first until the node is projected at or under its low watermark, or none
/// is left there.
pub fn to_park(nodes: &[NodeLoad], sleepers: &[Sleeper], w: Watermarks) -> Vec<usize> {
    let mut chosen = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        if !node.over_high(w) {
            continue;
        }
        let low = crate::placement::share(node.capacity_bytes, w.low_pct);
        let mut here: Vec<usize> = (0..sleepers.len())
            .filter(|&i| sleepers[i].node == n)
            .collect();
        here.sort_by_key(|&i| (sleepers[i].suspended_ms, i));
        let mut used = node.used_bytes;
        for i in here {
            if used <= low {
                break;
            }
            used = used.saturating_sub(sleepers[i].used_bytes);
            chosen.push(i);
        }
    }
    chosen
}

impl<S: Store, R: Runtime> ControlPlane<S, R> {
    /// One look at the nodes' memory, parking the suspended databases [`to_park`] picks.
    /// Returns the names parked.
    pub async fn relieve_memory_pressure(&self) -> Result<Vec<ServiceName>> {
        let since: Vec<(ServiceName, i64)> = self
            .suspended_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if since.is_empty() {
            return Ok(Vec::new());
        }
        let nodes: Vec<NodeLoad> = self
            .node_loads()
            .await?
            .iter()
            .map(|(n, load)| crate::nodes::node_load((n, *load)))
            .collect();
        let w = self.cfg.watermarks;
        if !nodes.iter().any(|n| n.over_high(w)) {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        let mut sleepers = Vec::new();
        for (name, suspended_ms) in since {
            let Ok(svc) = self.load(&name).await else {
                continue;
            };
            if svc.state != DbState::Suspended {
                continue;
            }
            let node = self.node_of(&svc);
            let Some(node) = nodes.iter().position(|n| n.name == node) else {
                continue;
            };
            sleepers.push(Sleeper {
                node,
                used_bytes: self.runtime.usage(&name).map_or(0, |u| u.memory_bytes),
                suspended_ms,
            });
            names.push(name);
        }
        let mut parked = Vec::new();
        for i in to_park(&nodes, &sleepers, w) {
            let node = &nodes[sleepers[i].node];
            let why = format!(
                "memory pressure: node {} uses {:.0} of {:.0} MiB, over its high watermark ({} %)",
                node.name,
                node.used_bytes as f64 / MIB as f64,
                node.capacity_bytes as f64 / MIB as f64,
                w.high_pct
            );
            // Woken or parked meanwhile: left as it is.
            match self
                .park_because(names[i].as_str(), false, &why, true)
                .await
            {
                Ok(v) if v.state == DbState::Parked.as_str() => parked.push(names[i].clone()),
                Ok(_) => {}
                Err(e) => tracing::debug!(db = %names[i], "not parked for memory: {e}"),
            }
        }
        Ok(parked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::tests::node;
    use stratus_core::scu::GIB;

    fn sleeper(node: usize, used_gib: u64, suspended_ms: i64) -> Sleeper {
        Sleeper {
            node,
            used_bytes: used_gib * GIB,
            suspended_ms,
        }
    }

    #[test]
    fn the_longest_suspended_go_first_until_the_low_watermark() {
        // 80 of 100 GiB, over 70 %: 20 GiB to free to reach 60 %.
        let nodes = [node("a", 100, 80)];
        let sleepers = [
            sleeper(0, 8, 300),
            sleeper(0, 8, 100),
            sleeper(0, 8, 200),
            sleeper(0, 8, 50),
        ];
        assert_eq!(to_park(&nodes, &sleepers, Watermarks::default()), [3, 1, 2]);
    }

    #[test]
    fn a_node_under_its_high_watermark_parks_nothing() {
        let nodes = [node("a", 100, 70), node("b", 100, 90)];
        let sleepers = [sleeper(0, 10, 1), sleeper(1, 5, 2)];
        // b has only 5 GiB to give: all of it, even though that is not enough.
        assert_eq!(to_park(&nodes, &sleepers, Watermarks::default()), [1]);
        assert_eq!(
            to_park(&nodes, &[], Watermarks::default()),
            Vec::<usize>::new()
        );
    }
}
