//! The autoscaler on Kubernetes: the decision `stratus up` makes
//! ([`stratus_control::scaler::decide`], the brief's 200 ms samples in a sliding window), over
//! samples from the agent in each database's pod ([`crate::agent`]).
//!
//! Every second the leader fetches from each serving database's agent the samples it has not
//! seen, and decides. A decision is not carried out here: it is handed to the database's
//! reconcile ([`super::database`], through the controller's `reconcile_on` trigger), which
//! alone writes the status and resizes, in the order the buffer pool needs (the pod grows
//! before the pool, the pool shrinks before the pod). Which databases serve, at what size,
//! within which bounds, is what their last reconcile found ([`Scaling::serve`]).

use crate::agent::{self, CpuSamples};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use stratus_control::scaler::{Bounds, Decision, Sample, Window, decide};
use stratus_core::ScalingPolicy;

/// How often the samples are fetched and a decision made.
pub const EVERY: Duration = Duration::from_secs(1);

/// How long an agent has to answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_millis(500);

/// Agents asked at once in a round: a thousand databases are a thousand small requests a
/// second, not a thousand sockets opened together.
pub const CONCURRENT_FETCHES: usize = 32;

/// Samples older than this (by the agent's clock when it answered) are not decided on: the
/// agent stopped sampling (its server gone) and the window would describe the past.
pub const STALE_MS: i64 = 2_000;

/// A database the autoscaler looks after, as its last reconcile found it: active as asked,
/// its pod ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Serving {
    /// Where its agent is: the pod's address.
    pub ip: String,
    /// Its size now (`status.scu`).
    pub scu: u32,
    pub bounds: Bounds,
    pub policy: ScalingPolicy,
}

/// A size the autoscaler chose, until the database's reconcile carried it out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaled {
    pub from: u32,
    pub to: u32,
    /// Measured CPU use as a share of `from`'s allocation, in percent.
    pub usage_pct: f64,
    /// The window that was measured.
    pub window_ms: i64,
}

/// One database's samples and last change, in its agent's clock.
#[derive(Debug, Default)]
struct Track {
    ip: String,
    window: Window,
    /// The newest sample seen: the next fetch asks for what came after.
    after_ms: i64,
    last_change_ms: Option<i64>,
}

/// What the autoscaler knows of one database.
#[derive(Debug, Default)]
struct Entry {
    /// Set while its last reconcile found it serving.
    serving: Option<Serving>,
    track: Track,
    /// Chosen, not carried out yet.
    decided: Option<Scaled>,
}

/// What the autoscaler knows, shared by the reconciles and the loop ([`super::Context`]).
#[derive(Debug, Default)]
pub struct Scaling {
    dbs: Mutex<HashMap<String, Entry>>,
}

impl Scaling {
    fn dbs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.dbs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `db`'s reconcile found: serving (`Some`), or not (suspended, parked, moving, its
    /// pod not ready, deleted), which forgets its samples and any decision not carried out.
    pub fn serve(&self, db: &str, serving: Option<Serving>) {
        let mut dbs = self.dbs();
        match serving {
            Some(s) => dbs.entry(db.to_owned()).or_default().serving = Some(s),
            None => {
                dbs.remove(db);
            }
        }
    }

    /// The size chosen for `db` that its reconcile is to carry out.
    pub fn decided(&self, db: &str) -> Option<Scaled> {
        self.dbs().get(db).and_then(|e| e.decided)
    }

    /// `db`'s reconcile has carried `scaled` out (or found it stale): it is dropped.
    pub fn done(&self, db: &str, scaled: &Scaled) {
        if let Some(e) = self.dbs().get_mut(db)
            && e.decided.as_ref() == Some(scaled)
        {
            e.decided = None;
        }
    }

    /// The databases to fetch samples for, and after which sample.
    fn targets(&self) -> Vec<(String, Serving, i64)> {
        self.dbs()
            .iter()
            .filter_map(|(db, e)| {
                let s = e.serving.clone()?;
                let after = if e.track.ip == s.ip {
                    e.track.after_ms
                } else {
                    0
                };
                Some((db.clone(), s, after))
            })
            .collect()
    }

    /// Takes in what `db`'s agent answered and decides; a decision is kept for its reconcile.
    pub fn observe(&self, db: &str, serving: &Serving, got: &CpuSamples) -> Option<Scaled> {
        let mut dbs = self.dbs();
        let e = dbs.entry(db.to_owned()).or_default();
        if e.decided.is_some() {
            // One change at a time: the last one is not carried out yet.
            return None;
        }
        if e.track.ip != serving.ip {
            // Another pod (made again, moved): another process, another clock.
            e.track = Track {
                ip: serving.ip.clone(),
                ..Track::default()
            };
        }
        let scaled = step(&mut e.track, serving, got)?;
        e.decided = Some(scaled);
        Some(scaled)
    }
}

/// Pure: adds the agent's samples to `track`'s window and decides, as one machine does.
fn step(track: &mut Track, s: &Serving, got: &CpuSamples) -> Option<Scaled> {
    let keep = s
        .policy
        .scale_up_window_ms
        .max(s.policy.scale_down_window_ms) as i64
        + 1_000;
    for &(at_ms, cpu_ns) in &got.samples {
        track.window.push(Sample { at_ms, cpu_ns }, keep);
        track.after_ms = track.after_ms.max(at_ms);
    }
    let newest = got.samples.last().map(|&(at, _)| at)?;
    if got.now_ms - newest > STALE_MS {
        return None;
    }
    match decide(
        &track.window,
        got.now_ms,
        s.scu,
        s.bounds,
        &s.policy,
        track.last_change_ms,
    ) {
        Decision::Hold => None,
        Decision::Resize {
            to,
            usage_pct,
            window_ms,
        } => {
            // As on one machine: the next decision rests on samples at the new size only.
            track.window.clear();
            track.last_change_ms = Some(got.now_ms);
            Some(Scaled {
                from: s.scu,
                to,
                usage_pct,
                window_ms,
            })
        }
    }
}

/// Fetches from the agent at `addr` (`host:port`) the samples after `after_ms`.
pub async fn fetch(
    http: &reqwest::Client,
    addr: &str,
    after_ms: i64,
) -> Result<CpuSamples, reqwest::Error> {
    http.get(format!("http://{addr}/cpu?after={after_ms}"))
        .timeout(FETCH_TIMEOUT)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
}

/// The agent's address in a pod at `ip`.
pub fn agent_addr(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{}", agent::PORT),
        _ => format!("{ip}:{}", agent::PORT),
    }
}

/// One round: every serving database's agent asked ([`CONCURRENT_FETCHES`] at a time); the databases with a new decision
/// are returned, for their reconcile to be triggered. An agent that does not answer (a pod
/// made before the agent existed, a network policy, a slow node) is only skipped this time.
pub async fn round(scaling: &Scaling, http: &reqwest::Client) -> Vec<String> {
    use futures::StreamExt;
    let asks = scaling
        .targets()
        .into_iter()
        .map(|(db, s, after)| async move {
            let got = fetch(http, &agent_addr(&s.ip), after).await;
            (db, s, got)
        });
    let answers: Vec<_> = futures::stream::iter(asks)
        .buffer_unordered(CONCURRENT_FETCHES)
        .collect()
        .await;
    let mut out = Vec::new();
    for (db, s, got) in answers {
        match got {
            Ok(got) => {
                if let Some(scaled) = scaling.observe(&db, &s, &got) {
                    tracing::info!(database = %db, from = scaled.from, to = scaled.to,
                        usage_pct = scaled.usage_pct, "autoscaling");
                    out.push(db);
                }
            }
            Err(e) => tracing::debug!(database = %db, "no CPU samples from its agent: {e}"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving(scu: u32) -> Serving {
        Serving {
            ip: "10.0.0.7".into(),
            scu,
            bounds: Bounds {
                min_scu: 1,
                max_scu: 4,
                cpu_millis_per_scu: 500,
            },
            policy: ScalingPolicy::default(),
        }
    }

    /// `secs` of samples 200 ms apart from `start_ms`, at a steady `millis` of CPU, from
    /// `cpu_ns` on.
    fn samples(start_ms: i64, secs: i64, millis: u64, cpu_ns: u64) -> CpuSamples {
        let samples: Vec<(i64, u64)> = (0..=secs * 5)
            .map(|i| {
                (
                    start_ms + i * 200,
                    cpu_ns + (i as u64) * 200 * millis * 1000,
                )
            })
            .collect();
        CpuSamples {
            now_ms: samples.last().unwrap().0,
            pid: Some(42),
            samples,
        }
    }

    #[test]
    fn a_busy_database_is_scaled_up_once_until_its_reconcile_carried_it_out() {
        let scaling = Scaling::default();
        let s = serving(1);
        scaling.serve("shop", Some(s.clone()));
        // 495m of CPU on a 500m allocation: pinned, so the size doubles.
        let busy = samples(10_000, 2, 495, 0);
        let scaled = scaling.observe("shop", &s, &busy).unwrap();
        assert_eq!((scaled.from, scaled.to), (1, 2));
        assert!(scaled.usage_pct > 98.0, "{scaled:?}");
        assert_eq!(scaling.decided("shop"), Some(scaled));
        // Until its reconcile has it, nothing more is decided.
        let more = samples(12_200, 1, 495, busy.samples.last().unwrap().1);
        assert_eq!(scaling.observe("shop", &s, &more), None);
        scaling.done("shop", &scaled);
        assert_eq!(scaling.decided("shop"), None);
        // At the new size, the cooldown holds the next change back.
        assert_eq!(scaling.observe("shop", &serving(2), &more), None);
        // The next fetch asks for what came after the newest sample.
        let targets = scaling.targets();
        assert_eq!(targets[0].2, more.samples.last().unwrap().0);
    }

    #[test]
    fn an_idle_database_is_scaled_down_only_after_a_whole_window() {
        let scaling = Scaling::default();
        let s = serving(4);
        // 100m on 2000m: 5 %. 20 s of it is not enough evidence for the 30 s window.
        let quiet = samples(0, 20, 100, 0);
        assert_eq!(scaling.observe("shop", &s, &quiet), None);
        let later = samples(
            20_200,
            12,
            100,
            quiet.samples.last().unwrap().1 + 20_000_000,
        );
        let scaled = scaling.observe("shop", &s, &later).unwrap();
        // To the size that runs it at about half its allocation, within the bounds.
        assert_eq!((scaled.from, scaled.to), (4, 1));
    }

    #[test]
    fn stale_samples_decide_nothing() {
        let scaling = Scaling::default();
        let s = serving(1);
        let mut busy = samples(10_000, 2, 495, 0);
        // The agent answered 3 s after its newest sample: its server is gone.
        busy.now_ms += 3_000;
        assert_eq!(scaling.observe("shop", &s, &busy), None);
        // Fresh samples of the same load decide.
        let fresh = samples(13_000, 2, 495, busy.samples.last().unwrap().1);
        assert!(scaling.observe("shop", &s, &fresh).is_some());
    }

    #[test]
    fn a_new_pod_or_a_restarted_server_starts_a_new_window() {
        // 0.6 s of a pinned load: too little for the 1 s window on its own, enough with the
        // next 0.6 s.
        let first = samples(10_000, 0, 495, 0);
        let first = CpuSamples {
            samples: (0..=3)
                .map(|i| (10_000 + i * 200, i as u64 * 200 * 495 * 1_000))
                .collect(),
            now_ms: 10_600,
            ..first
        };
        let next = |cpu_from: u64| CpuSamples {
            samples: (4..=6)
                .map(|i| {
                    (
                        10_000 + i * 200,
                        cpu_from + (i as u64 - 3) * 200 * 495 * 1_000,
                    )
                })
                .collect(),
            now_ms: 11_200,
            pid: Some(42),
        };
        let continued = next(first.samples.last().unwrap().1);
        // The same pod: the window joins both and decides.
        let same = Scaling::default();
        assert_eq!(same.observe("shop", &serving(1), &first), None);
        assert!(same.observe("shop", &serving(1), &continued).is_some());
        // Another pod's address: the first samples are not its.
        let moved = Scaling::default();
        assert_eq!(moved.observe("shop", &serving(1), &first), None);
        let elsewhere = Serving {
            ip: "10.0.0.8".into(),
            ..serving(1)
        };
        assert_eq!(moved.observe("shop", &elsewhere, &continued), None);
        // A counter that went back (the server restarted in its pod): a new window too.
        let restarted = Scaling::default();
        assert_eq!(restarted.observe("shop", &serving(1), &first), None);
        assert_eq!(restarted.observe("shop", &serving(1), &next(0)), None);
    }

    #[test]
    fn a_database_no_longer_serving_is_forgotten() {
        let scaling = Scaling::default();
        let s = serving(1);
        scaling.serve("shop", Some(s.clone()));
        let chosen = scaling.observe("shop", &s, &samples(10_000, 2, 495, 0));
        assert!(chosen.is_some());
        scaling.serve("shop", None);
        assert!(scaling.targets().is_empty());
        assert_eq!(scaling.decided("shop"), None);
    }

    #[test]
    fn agents_are_reached_on_their_port_in_v4_and_v6() {
        assert_eq!(agent_addr("10.0.0.7"), "10.0.0.7:9104");
        assert_eq!(agent_addr("fd00::7"), "[fd00::7]:9104");
    }

    #[test]
    fn no_samples_no_decision() {
        let scaling = Scaling::default();
        let empty = CpuSamples {
            now_ms: 5_000,
            pid: None,
            samples: Vec::new(),
        };
        assert_eq!(scaling.observe("shop", &serving(1), &empty), None);
    }
}
