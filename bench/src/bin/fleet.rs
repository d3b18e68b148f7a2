//! The fleet simulator (#12): thousands of databases on many nodes, in simulated time.
//!
//! It runs Stratus's own decisions, not copies of them: the scaler (`scaler::decide` over a
//! `scaler::Window` of CPU samples every `sample_interval_ms`), the lifecycle's idle decisions
//! (`monitor::suspend_due`, `monitor::park_due`), and placement and rebalancing
//! (`placement::place`, `placement::rebalance`). What it models is the rest: each database's
//! CPU demand from the load mixes in the fleet file, the CPU it gets (no more than its quota),
//! the memory it uses, and moves and wakes that take no time. Time advances by the sample
//! interval without sleeping.
//!
//! ```sh
//! cargo run --release -p stratus-bench --bin fleet -- bench/fleet.toml
//! ```
//!
//! It prints the SCU-hours used against provisioning every database at its peak, the
//! database-seconds spent throttled at the CPU quota, migrations per hour, and the node memory
//! above the high watermark.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::time::Instant;
use stratus_control::monitor::{park_due, suspend_due};
use stratus_control::placement::{self, Candidate, NodeLoad, Watermarks};
use stratus_control::scaler::{self, Bounds, Decision, Sample, Window};
use stratus_control::suspend::BUFFER_POOL_FLOOR;
use stratus_core::{ScalingPolicy, ScuSize};

const MIB: u64 = 1 << 20;
/// What a server uses besides its buffer pool (threads, dictionary, connections).
const SERVER_BASE_BYTES: u64 = 160 * MIB;

/// The fleet file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fleet {
    seed: u64,
    databases: usize,
    nodes: usize,
    node_memory_gib: u64,
    /// Simulated time.
    hours: f64,
    /// How often the rebalancer looks at the nodes.
    rebalance_every_s: u64,
    /// No database moves twice within this.
    cooldown_s: u64,
    #[serde(default)]
    watermarks: Watermarks,
    #[serde(default)]
    scu: ScuSize,
    #[serde(default)]
    policy: ScalingPolicy,
    mix: Vec<Mix>,
}

/// A kind of database, and its share of the fleet.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mix {
    name: String,
    share: f64,
    min_scu: u32,
    max_scu: u32,
    /// Share of its buffer pool an active database of this kind fills.
    working_set: f64,
    load: Load,
}

/// CPU demand over time, in millicores.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Load {
    /// Busy by day, quiet at night: a raised cosine from `trough_millis` to `peak_millis` over
    /// `period_hours`, each database at its own phase. No demand at all under 1 millicore.
    Diurnal {
        peak_millis: f64,
        trough_millis: f64,
        period_hours: f64,
    },
    /// Nothing, then bursts at random times (`per_hour` on average), `burst_s` long at
    /// `peak_millis`.
    Bursty {
        per_hour: f64,
        burst_s: f64,
        peak_millis: f64,
    },
    /// Short queries at random times (`per_hour` on average), `millis` for one sample each.
    MostlyIdle { per_hour: f64, millis: f64 },
}

/// splitmix64: reproducible from the seed, and no dependency for it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Suspended,
    Parked,
}

struct Db {
    mix: usize,
    phase: f64,
    node: Option<usize>,
    state: State,
    scu: u32,
    window: Window,
    last_change_ms: Option<i64>,
    active_since_ms: i64,
    last_statement_ms: i64,
    suspended_since_ms: i64,
    cpu_ns: u64,
    burst_until_ms: i64,
    moved_ms: Option<i64>,
    /// Most CPU it asked for, in millicores.
    peak_millis: f64,
}

#[derive(Default)]
struct Totals {
    scu_ms: u128,
    throttled_ms: u64,
    active_ms: u64,
    migrations: u64,
    suspends: u64,
    wakes: u64,
    parks: u64,
    resumes: u64,
    /// Parked databases asked for that found no node with room, summed over their wait.
    waiting_ms: u64,
    resizes: u64,
    over_watermark_ms: u64,
    most_nodes_over: usize,
    /// The whole fleet's memory use, in percent of its capacity, summed over ticks.
    fleet_pct_sum: f64,
    fleet_pct_max: f64,
    ticks: u64,
}

fn demand(load: &Load, db: &mut Db, now_ms: i64, dt_ms: i64, rng: &mut Rng) -> f64 {
    let tick_chance = |per_hour: f64| per_hour * dt_ms as f64 / 3_600_000.0;
    match *load {
        Load::Diurnal {
            peak_millis,
            trough_millis,
            period_hours,
        } => {
            let x = now_ms as f64 / (period_hours * 3_600_000.0) + db.phase;
            let d = trough_millis
                + (peak_millis - trough_millis) * 0.5 * (1.0 - (std::f64::consts::TAU * x).cos());
            if d < 1.0 { 0.0 } else { d }
        }
        Load::Bursty {
            per_hour,
            burst_s,
            peak_millis,
        } => {
            if now_ms >= db.burst_until_ms && rng.unit() < tick_chance(per_hour) {
                db.burst_until_ms = now_ms + (burst_s * 1000.0) as i64;
            }
            if now_ms < db.burst_until_ms {
                peak_millis
            } else {
                0.0
            }
        }
        Load::MostlyIdle { per_hour, millis } => {
            if rng.unit() < tick_chance(per_hour) {
                millis
            } else {
                0.0
            }
        }
    }
}

/// Memory a database uses now.
fn used_bytes(db: &Db, mix: &Mix, scu: &ScuSize) -> u64 {
    match db.state {
        State::Parked => 0,
        State::Suspended => SERVER_BASE_BYTES + BUFFER_POOL_FLOOR,
        State::Active => {
            let r = scu.resources(db.scu);
            (SERVER_BASE_BYTES + (r.buffer_pool_bytes as f64 * mix.working_set) as u64)
                .min(r.memory_bytes)
        }
    }
}

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bench/fleet.toml".into());
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let fleet: Fleet = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    fleet.watermarks.validate().map_err(anyhow::Error::msg)?;
    fleet.scu.validate().map_err(anyhow::Error::msg)?;
    let total_share: f64 = fleet.mix.iter().map(|m| m.share).sum();
    if fleet.mix.is_empty() || fleet.nodes == 0 || total_share <= 0.0 {
        bail!("{path}: a fleet needs nodes and at least one mix with a share");
    }
    if fleet.hours.is_nan()
        || fleet.hours <= 0.0
        || fleet.node_memory_gib == 0
        || fleet.databases == 0
    {
        bail!("{path}: hours, node_memory_gib and databases must be more than 0");
    }
    for m in &fleet.mix {
        if m.min_scu == 0 || m.min_scu > m.max_scu {
            bail!("{path}: mix {}: 0 < min_scu <= max_scu", m.name);
        }
    }

    let mut rng = Rng(fleet.seed);
    let mut dbs: Vec<Db> = (0..fleet.databases)
        .map(|i| {
            // Mixes by share, in order: the first databases are the first mix's.
            let mut at = (i as f64 + 0.5) / fleet.databases as f64 * total_share;
            let mix = fleet
                .mix
                .iter()
                .position(|m| {
                    at -= m.share;
                    at < 0.0
                })
                .unwrap_or(fleet.mix.len() - 1);
            Db {
                mix,
                phase: rng.unit(),
                node: None,
                state: State::Parked,
                scu: fleet.mix[mix].min_scu,
                window: Window::default(),
                last_change_ms: None,
                active_since_ms: 0,
                last_statement_ms: 0,
                suspended_since_ms: 0,
                cpu_ns: 0,
                burst_until_ms: 0,
                moved_ms: None,
                peak_millis: 0.0,
            }
        })
        .collect();
    let capacity = fleet.node_memory_gib << 30;
    let mut nodes: Vec<NodeLoad> = (0..fleet.nodes)
        .map(|i| NodeLoad {
            name: format!("n{i}"),
            capacity_bytes: capacity,
            used_bytes: 0,
        })
        .collect();

    let p = &fleet.policy;
    let dt = p.sample_interval_ms.max(1) as i64;
    let end_ms = (fleet.hours * 3_600_000.0) as i64;
    let rebalance_every = (fleet.rebalance_every_s * 1000) as i64;
    let cooldown = (fleet.cooldown_s * 1000) as i64;
    let mut t = Totals::default();
    let begin = Instant::now();
    let mut now = 0i64;
    while now < end_ms {
        for n in &mut nodes {
            n.used_bytes = 0;
        }
        for db in &dbs {
            if let Some(n) = db.node {
                nodes[n].used_bytes += used_bytes(db, &fleet.mix[db.mix], &fleet.scu);
            }
        }
        for db in dbs.iter_mut() {
            let mix = &fleet.mix[db.mix];
            let want = demand(&mix.load, db, now, dt, &mut rng);
            db.peak_millis = db.peak_millis.max(want);
            if want > 0.0 {
                db.last_statement_ms = now;
            }
            match db.state {
                State::Parked => {
                    if want > 0.0 {
                        let r = fleet.scu.resources(mix.min_scu);
                        let need = (SERVER_BASE_BYTES
                            + (r.buffer_pool_bytes as f64 * mix.working_set) as u64)
                            .min(r.memory_bytes);
                        match placement::place(&nodes, need, fleet.watermarks, None) {
                            Some(n) => {
                                db.node = Some(n);
                                db.state = State::Active;
                                db.scu = mix.min_scu;
                                db.active_since_ms = now;
                                db.window.clear();
                                nodes[n].used_bytes += need;
                                t.resumes += 1;
                            }
                            None => t.waiting_ms += dt as u64,
                        }
                    }
                }
                State::Suspended => {
                    if want > 0.0 {
                        db.state = State::Active;
                        db.active_since_ms = now;
                        t.wakes += 1;
                    } else if park_due(now - db.suspended_since_ms, p) {
                        db.state = State::Parked;
                        db.node = None;
                        t.parks += 1;
                    }
                }
                State::Active => {}
            }
            if db.state != State::Active {
                continue;
            }
            let alloc = f64::from(db.scu * fleet.scu.cpu_millis);
            let got = want.min(alloc);
            if want > alloc {
                t.throttled_ms += dt as u64;
            }
            t.active_ms += dt as u64;
            t.scu_ms += u128::from(db.scu) * dt as u128;
            db.cpu_ns += (got * dt as f64 * 1000.0) as u64;
            db.window.push(
                Sample {
                    at_ms: now,
                    cpu_ns: db.cpu_ns,
                },
                p.scale_down_window_ms as i64,
            );
            let idle_from = db.last_statement_ms.max(db.active_since_ms);
            if suspend_due(now - idle_from, want > 0.0, p) {
                db.state = State::Suspended;
                db.suspended_since_ms = now;
                // It wakes at its minimum, as a real suspend leaves it.
                db.scu = mix.min_scu;
                db.window.clear();
                t.suspends += 1;
                continue;
            }
            let bounds = Bounds {
                min_scu: mix.min_scu,
                max_scu: mix.max_scu,
                cpu_millis_per_scu: fleet.scu.cpu_millis,
            };
            if let Decision::Resize { to, .. } =
                scaler::decide(&db.window, now, db.scu, bounds, p, db.last_change_ms)
            {
                db.scu = to;
                db.last_change_ms = Some(now);
                db.window.clear();
                t.resizes += 1;
            }
        }
        let used: u64 = nodes.iter().map(|n| n.used_bytes).sum();
        let pct = used as f64 * 100.0 / (capacity as f64 * nodes.len() as f64);
        t.fleet_pct_sum += pct;
        t.fleet_pct_max = t.fleet_pct_max.max(pct);
        t.ticks += 1;
        let over = nodes
            .iter()
            .filter(|n| n.over_high(fleet.watermarks))
            .count();
        t.over_watermark_ms += over as u64 * dt as u64;
        t.most_nodes_over = t.most_nodes_over.max(over);
        if rebalance_every > 0 && now % rebalance_every == 0 && over > 0 {
            let placed: Vec<usize> = (0..dbs.len()).filter(|&i| dbs[i].node.is_some()).collect();
            let candidates: Vec<Candidate> = placed
                .iter()
                .map(|&i| {
                    let db = &dbs[i];
                    Candidate {
                        node: db.node.unwrap_or_default(),
                        used_bytes: used_bytes(db, &fleet.mix[db.mix], &fleet.scu),
                        cpu_millis: db
                            .window
                            .usage_millis(p.scale_down_window_ms as i64)
                            .unwrap_or(0.0),
                        moved_ms: db.moved_ms,
                    }
                })
                .collect();
            for m in placement::rebalance(&nodes, &candidates, fleet.watermarks, now, cooldown) {
                let db = &mut dbs[placed[m.db]];
                db.node = Some(m.to);
                db.moved_ms = Some(now);
                t.migrations += 1;
            }
        }
        now += dt;
    }

    let hours = end_ms as f64 / 3_600_000.0;
    let scu_hours = t.scu_ms as f64 / 3_600_000.0;
    let peak_hours: f64 = dbs
        .iter()
        .map(|db| {
            let m = &fleet.mix[db.mix];
            let need = (db.peak_millis / f64::from(fleet.scu.cpu_millis)).ceil() as u32;
            f64::from(need.clamp(m.min_scu, m.max_scu)) * hours
        })
        .sum();
    println!(
        "fleet: {} databases on {} nodes of {} GiB, {hours:.1} h simulated in {:.1} s ({path})",
        fleet.databases,
        fleet.nodes,
        fleet.node_memory_gib,
        begin.elapsed().as_secs_f64()
    );
    for m in &fleet.mix {
        let n = dbs
            .iter()
            .filter(|d| fleet.mix[d.mix].name == m.name)
            .count();
        println!(
            "  mix {:<12} {n:>6} databases, {}-{} SCU",
            m.name, m.min_scu, m.max_scu
        );
    }
    println!("  SCU-hours used             {scu_hours:>12.1}   (size x time active)");
    println!(
        "  SCU-hours at peak          {peak_hours:>12.1}   (every database at its peak size all the time)"
    );
    println!(
        "  used / at peak             {:>12.3}",
        if peak_hours > 0.0 {
            scu_hours / peak_hours
        } else {
            0.0
        }
    );
    println!(
        "  throttled at the quota     {:>12.0} database-seconds ({:.2} % of active time)",
        t.throttled_ms as f64 / 1000.0,
        if t.active_ms > 0 {
            t.throttled_ms as f64 * 100.0 / t.active_ms as f64
        } else {
            0.0
        }
    );
    println!(
        "  migrations                 {:>12}   ({:.1} per hour)",
        t.migrations,
        t.migrations as f64 / hours
    );
    println!(
        "  memory above watermark     {:>12.0} node-seconds (at most {} nodes at once; high {} %, low {} %)",
        t.over_watermark_ms as f64 / 1000.0,
        t.most_nodes_over,
        fleet.watermarks.high_pct,
        fleet.watermarks.low_pct
    );
    println!(
        "  fleet memory in use        {:>12.1} % on average, {:.1} % at most",
        t.fleet_pct_sum / t.ticks.max(1) as f64,
        t.fleet_pct_max
    );
    println!(
        "  waiting for room           {:>12.0} database-seconds (parked, asked for, no node under its high watermark with room)",
        t.waiting_ms as f64 / 1000.0
    );
    println!(
        "  resizes {}, suspends {}, wakes {}, parks {}, resumes from parked {}",
        t.resizes, t.suspends, t.wakes, t.parks, t.resumes
    );
    Ok(())
}
