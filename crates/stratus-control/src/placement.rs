//! Where databases run (#12): which node a database is placed on, and which databases move off
//! a node whose memory is over its watermark. Both are pure decisions over what is measured, in
//! the shape of the other controllers (`docs/controllers.md`); the fleet simulator
//! (`bench/src/bin/fleet.rs`) runs them as they are, over thousands of databases.
//!
//! The policy (`docs/placement.md`):
//! * **Placement** of a new database, or of a parked one that wakes, goes to the node with the
//!   most memory left once the database's own allowance is added to what the node uses now,
//!   among the nodes that stay at or under their high watermark with it. None such: no room,
//!   and the caller says so rather than overfilling a node.
//! * **Rebalancing** looks at each node over its high watermark and moves its least-used
//!   databases first until the node is at or under its low watermark. "Least used" is per byte
//!   the move frees: the CPU a database used lately, plus a fixed cost that every move has
//!   ([`MOVE_COST_MILLIS`]), over its memory. Ordered by CPU alone, a node relieves itself by
//!   moving dozens of suspended databases of a few hundred MiB each (the fleet simulator showed
//!   22,000 moves an hour on 100 nodes); per byte, it moves the few idle databases that hold the
//!   most memory. A move goes where placement would put the database, except that the target
//!   must stay at or under its *low* watermark: a node that takes databases keeps the whole gap
//!   between the watermarks to grow in before it sheds any, so the moves of a fleet near its
//!   watermark do not chase each other from node to node. When the whole fleet uses more than
//!   its low watermark, a node sheds only down to its high watermark ([`shed_to`]). A database
//!   moved within the cooldown is not moved again, and one that uses no memory (parked) frees
//!   nothing and is never moved.

use serde::{Deserialize, Serialize};

/// Memory watermarks of a node, in percent of its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watermarks {
    /// Over this, databases move off the node, and none is placed on it.
    pub high_pct: u32,
    /// Rebalancing moves databases off a node until it is at or under this.
    pub low_pct: u32,
}

impl Default for Watermarks {
    /// The brief's 70 %, and 10 points of gap under it.
    fn default() -> Self {
        Self {
            high_pct: 70,
            low_pct: 60,
        }
    }
}

impl Watermarks {
    pub fn validate(&self) -> Result<(), String> {
        if self.low_pct == 0 || self.low_pct >= self.high_pct || self.high_pct > 100 {
            return Err(format!(
                "watermarks must satisfy 0 < low_pct < high_pct <= 100, not low_pct = {} and high_pct = {}",
                self.low_pct, self.high_pct
            ));
        }
        Ok(())
    }
}

/// One node's memory as measured now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLoad {
    pub name: String,
    /// Memory offered to databases.
    pub capacity_bytes: u64,
    /// Memory its databases use now.
    pub used_bytes: u64,
}

/// Bytes of `capacity` under `pct` percent of it.
pub(crate) fn share(capacity: u64, pct: u32) -> u64 {
    (u128::from(capacity) * u128::from(pct) / 100) as u64
}

impl NodeLoad {
    /// What the node could still take before it passes `pct` percent of its capacity.
    fn room_under(&self, pct: u32) -> i128 {
        i128::from(share(self.capacity_bytes, pct)) - i128::from(self.used_bytes)
    }

    pub fn over_high(&self, w: Watermarks) -> bool {
        self.room_under(w.high_pct) < 0
    }
}

/// What an active database weighs in its node's load: the memory it uses now or, if more, what
/// its buffer pool can still come to hold. InnoDB fills its pool as pages are read and never
/// gives the memory back, so a pool just granted is as good as used; but it fills only with
/// pages of the database's own files, so a pool larger than its data never fills.
/// `data_bytes` is what its files could put in the pool (its volume's use, or more for
/// compressed tables), `None` where that is not measured: then the whole pool counts.
pub fn database_load(used_bytes: u64, pool_bytes: u64, data_bytes: Option<u64>) -> u64 {
    let can_fill = data_bytes.map_or(pool_bytes, |d| d.min(pool_bytes));
    used_bytes.max(can_fill)
}

/// The node for a database that needs `need_bytes`: the most room under the high watermark
/// once it is added, among the nodes it fits on; `None` when it fits on none. Ties go to the
/// earlier node, so the choice is the same for the same loads. `except` is never chosen (the
/// node a database moves off).
pub fn place(
    nodes: &[NodeLoad],
    need_bytes: u64,
    w: Watermarks,
    except: Option<usize>,
) -> Option<usize> {
    let mut best: Option<(usize, i128)> = None;
    for (i, n) in nodes.iter().enumerate() {
        if Some(i) == except || n.capacity_bytes == 0 {
            continue;
        }
        let left = n.room_under(w.high_pct) - i128::from(need_bytes);
        if left >= 0 && best.is_none_or(|(_, b)| left > b) {
            best = Some((i, left));
        }
    }
    best.map(|(i, _)| i)
}

/// What any move costs, in the terms of the CPU a database uses: a copy, a catch-up and a
/// cut-over whatever its load.
pub const MOVE_COST_MILLIS: f64 = 100.0;

/// A database rebalancing may move.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The node it runs on (an index into the nodes).
    pub node: usize,
    /// Memory it uses now: what moving it frees.
    pub used_bytes: u64,
    /// CPU it used lately, in millicores: the busier, the later it moves.
    pub cpu_millis: f64,
    /// When it was last moved.
    pub moved_ms: Option<i64>,
}

/// One planned move: database `db` (an index into the candidates) from node `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub db: usize,
    pub from: usize,
    pub to: usize,
}

/// How far a node over its high watermark sheds, in percent: to its low watermark, unless the
/// fleet as a whole uses more than that. Then not every node can be under it, and shedding to
/// it only starts the next node over its high watermark on the way back up: such a node sheds
/// just enough to be under its high watermark again (the fleet needs nodes, not moves).
pub fn shed_to(nodes: &[NodeLoad], w: Watermarks) -> u32 {
    let used: u128 = nodes.iter().map(|n| u128::from(n.used_bytes)).sum();
    let capacity: u128 = nodes.iter().map(|n| u128::from(n.capacity_bytes)).sum();
    if used * 100 > capacity * u128::from(w.low_pct) {
        w.high_pct
    } else {
        w.low_pct
    }
}

/// The moves that bring every node over its high watermark to at or under its low one, as far
/// as the other nodes have room (see the module's policy). The loads the plan works from are
/// updated move by move, so two moves never count on the same room.
pub fn rebalance(
    nodes: &[NodeLoad],
    dbs: &[Candidate],
    w: Watermarks,
    now_ms: i64,
    cooldown_ms: i64,
) -> Vec<Move> {
    let mut loads = nodes.to_vec();
    let mut moves = Vec::new();
    let shed_to = shed_to(nodes, w);
    for from in 0..loads.len() {
        if !loads[from].over_high(w) {
            continue;
        }
        let mut order: Vec<usize> = (0..dbs.len())
            .filter(|&d| {
                let c = &dbs[d];
                c.node == from
                    && c.used_bytes > 0
                    && c.moved_ms.is_none_or(|t| now_ms - t >= cooldown_ms)
            })
            .collect();
        let cost =
            |d: usize| (dbs[d].cpu_millis.max(0.0) + MOVE_COST_MILLIS) / dbs[d].used_bytes as f64;
        order.sort_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(a.cmp(&b)));
        for d in order {
            if loads[from].room_under(shed_to) >= 0 {
                break;
            }
            let need = dbs[d].used_bytes;
            let target_mark = Watermarks {
                high_pct: w.low_pct,
                ..w
            };
            let Some(to) = place(&loads, need, target_mark, Some(from)) else {
                continue;
            };
            // (a database may weigh more than its node's measured use where the two are
            // measured apart)
            loads[from].used_bytes = loads[from].used_bytes.saturating_sub(need);
            loads[to].used_bytes += need;
            moves.push(Move { db: d, from, to });
        }
    }
    moves
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    pub(crate) fn node(name: &str, capacity_gib: u64, used_gib: u64) -> NodeLoad {
        NodeLoad {
            name: name.into(),
            capacity_bytes: capacity_gib * GIB,
            used_bytes: used_gib * GIB,
        }
    }

    fn db(node: usize, used_gib: u64, cpu: f64) -> Candidate {
        Candidate {
            node,
            used_bytes: used_gib * GIB,
            cpu_millis: cpu,
            moved_ms: None,
        }
    }

    #[test]
    fn a_database_weighs_what_its_pool_can_still_fill_with_its_own_data() {
        const MIB: u64 = 1 << 20;
        // A 1 GiB pool over 165 MiB of files: it can hold those, no more.
        assert_eq!(
            database_load(92 * MIB, 1024 * MIB, Some(165 * MIB)),
            165 * MIB
        );
        // More data than pool: the pool is the bound.
        assert_eq!(
            database_load(92 * MIB, 1024 * MIB, Some(5 << 30)),
            1024 * MIB
        );
        // Sessions' buffers and temporary tables beyond the pool: what it uses counts.
        assert_eq!(
            database_load(300 * MIB, 128 * MIB, Some(165 * MIB)),
            300 * MIB
        );
        // Files not measured: the whole pool.
        assert_eq!(database_load(92 * MIB, 1024 * MIB, None), 1024 * MIB);
    }

    #[test]
    fn placement_takes_the_most_room_and_never_passes_the_high_watermark() {
        let w = Watermarks::default();
        let nodes = [node("a", 10, 5), node("b", 20, 12), node("c", 10, 1)];
        // Room under 70 % once 1 GiB is added: a 1, b 1, c 5.
        assert_eq!(place(&nodes, GIB, w, None), Some(2));
        assert_eq!(place(&nodes, GIB, w, Some(2)), Some(0), "ties: the first");
        // 6 GiB fits only on c (7 − 1 = 6): exactly at the watermark is allowed.
        assert_eq!(place(&nodes, 6 * GIB, w, None), Some(2));
        assert_eq!(place(&nodes, 7 * GIB, w, None), None, "no room anywhere");
        assert_eq!(place(&[], GIB, w, None), None);
    }

    #[test]
    fn rebalancing_moves_the_least_used_until_under_the_low_watermark() {
        let w = Watermarks::default();
        // a: 8 of 10 GiB (over 70 %); must reach 6 GiB (60 %).
        let nodes = [node("a", 10, 8), node("b", 10, 1)];
        let dbs = [
            db(0, 3, 900.0), // busy: last
            db(0, 1, 5.0),   // idle but small: 105 per GiB
            db(0, 2, 50.0),  // 75 per GiB: first, and enough
            db(0, 0, 0.0),   // parked: frees nothing
            db(1, 1, 0.0),   // on b: not a's to move
        ];
        assert_eq!(
            rebalance(&nodes, &dbs, w, 0, 60_000),
            [Move {
                db: 2,
                from: 0,
                to: 1
            }]
        );
        // Needing 3 GiB: then the next cheapest per byte.
        let fuller = [node("a", 10, 9), node("b", 10, 1)];
        assert_eq!(
            rebalance(&fuller, &dbs, w, 0, 60_000),
            [
                Move {
                    db: 2,
                    from: 0,
                    to: 1
                },
                Move {
                    db: 1,
                    from: 0,
                    to: 1
                }
            ]
        );
    }

    #[test]
    fn a_recent_move_is_not_repeated_and_a_full_fleet_moves_nothing() {
        let w = Watermarks::default();
        let nodes = [node("a", 10, 8), node("b", 10, 1)];
        let mut recent = db(0, 2, 1.0);
        recent.moved_ms = Some(50_000);
        let dbs = [recent, db(0, 1, 9.0)];
        let moves = rebalance(&nodes, &dbs, w, 100_000, 60_000);
        assert_eq!(
            moves,
            [Move {
                db: 1,
                from: 0,
                to: 1
            }]
        );
        // Every other node at its high watermark: nowhere to go.
        let full = [node("a", 10, 8), node("b", 10, 7)];
        assert_eq!(rebalance(&full, &[db(0, 1, 0.0)], w, 0, 0), []);
    }

    #[test]
    fn a_fleet_fuller_than_its_low_watermark_sheds_only_to_the_high_one() {
        let w = Watermarks::default();
        // The fleet at 40 %: a sheds to 6 GiB.
        let roomy = [node("a", 10, 8), node("b", 10, 0)];
        let dbs = [db(0, 1, 0.0), db(0, 1, 0.0), db(0, 1, 0.0)];
        assert_eq!(shed_to(&roomy, w), 60);
        assert_eq!(rebalance(&roomy, &dbs, w, 0, 0).len(), 2);
        // The fleet at 65 %, over its low watermark: a sheds to 7 GiB, one move, to b (5 GiB,
        // under its low watermark with it).
        let full = [node("a", 10, 8), node("b", 10, 5)];
        assert_eq!(shed_to(&full, w), 70);
        assert_eq!(
            rebalance(&full, &dbs, w, 0, 0),
            [Move {
                db: 0,
                from: 0,
                to: 1
            }]
        );
    }

    #[test]
    fn watermarks_must_leave_a_gap() {
        assert!(Watermarks::default().validate().is_ok());
        for (high_pct, low_pct) in [(70, 70), (70, 80), (101, 60), (70, 0)] {
            assert!(Watermarks { high_pct, low_pct }.validate().is_err());
        }
    }

    proptest! {
        /// Whatever the loads: no move takes a target over its high watermark, no database
        /// moves twice, every move leaves a node that was over its high watermark, and a node
        /// still over its low watermark afterwards had nothing left it could move.
        #[test]
        fn rebalancing_keeps_its_promises(
            caps in proptest::collection::vec(1u64..64, 2..6),
            sizes in proptest::collection::vec((0usize..6, 0u64..8, 0u32..2000), 0..40),
        ) {
            let w = Watermarks::default();
            let mut nodes: Vec<NodeLoad> =
                caps.iter().enumerate().map(|(i, c)| node(&i.to_string(), *c, 0)).collect();
            let dbs: Vec<Candidate> = sizes
                .iter()
                .map(|&(n, used, cpu)| db(n % nodes.len(), used, f64::from(cpu)))
                .collect();
            for d in &dbs {
                nodes[d.node].used_bytes += d.used_bytes;
            }
            let moves = rebalance(&nodes, &dbs, w, 0, 0);
            let mut after = nodes.clone();
            let mut moved = std::collections::HashSet::new();
            let mut targets = std::collections::HashSet::new();
            for m in &moves {
                prop_assert!(moved.insert(m.db), "moved twice");
                targets.insert(m.to);
                prop_assert!(nodes[m.from].over_high(w));
                prop_assert_eq!(dbs[m.db].node, m.from);
                after[m.from].used_bytes -= dbs[m.db].used_bytes;
                after[m.to].used_bytes += dbs[m.db].used_bytes;
            }
            for (i, n) in after.iter().enumerate() {
                if nodes[i].over_high(w) {
                    // (A node drained first may take others' databases later, up to its high
                    // watermark: then it is a target, and what is left on it is not the point.)
                    if n.room_under(shed_to(&nodes, w)) < 0 && !targets.contains(&i) {
                        // Every database left on it either frees nothing or fits nowhere.
                        for (d, c) in dbs.iter().enumerate() {
                            if c.node == i && c.used_bytes > 0 && !moved.contains(&d) {
                                let low = Watermarks { high_pct: w.low_pct, ..w };
                                prop_assert_eq!(place(&after, c.used_bytes, low, Some(i)), None);
                            }
                        }
                    }
                } else {
                    prop_assert!(!n.over_high(w), "a target went over its high watermark");
                }
                if targets.contains(&i) {
                    prop_assert!(n.room_under(w.low_pct) >= 0, "a target went over its low watermark");
                }
            }
        }
    }
}
