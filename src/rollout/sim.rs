//! Decision-quality acceptance test: seeded, simulated request streams pushed
//! through the real judge and state machine (no sockets, no sleeps, no wall
//! clock). Each request is handled by both backends (served + shadow) at 5
//! requests per simulated second; `evaluate` runs once per simulated second
//! and windows reset when the machine says so. Latency is lognormal (median
//! 50 ms, sigma 0.4, so p99 ≈ 2.5 × median) drawn by inverse CDF from statrs.
//! It only measures and asserts; it must stay deterministic (fixed seeds).

use super::judge::{JudgeInput, Looks, SideWindow};
use super::machine::{Phase, RolloutMachine, RolloutSettings};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use statrs::distribution::{ContinuousCDF, LogNormal};
use std::time::Duration;

const RPS: u64 = 5;
const RUNS: u64 = 500;
const MEDIAN_US: f64 = 50_000.0;
const SIGMA: f64 = 0.4;
const START_MS: u64 = 1_700_000_000_000;

/// How one backend behaves.
#[derive(Clone, Copy)]
struct Model {
    error_rate: f64,
    latency_scale: f64,
}

const HEALTHY: Model = Model {
    error_rate: 0.01,
    latency_scale: 1.0,
};

#[derive(Clone, Copy)]
struct Scenario {
    stable: Model,
    candidate: Model,
    match_rate: f64,
    max_secs: u64,
}

/// One backend's window counters.
struct Side {
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

impl Side {
    fn new() -> Self {
        // 2 significant digits (1% resolution) is plenty against a 20%
        // threshold and keeps quantile scans cheap in debug builds.
        let latency_us = Histogram::new_with_bounds(1_000, 60_000_000, 2).expect("valid bounds");
        Self {
            requests: 0,
            errors: 0,
            latency_us,
        }
    }

    /// Handles one request; returns whether it failed.
    fn handle(&mut self, rng: &mut SmallRng, m: &Model, lat: &LogNormal) -> bool {
        let failed = rng.random::<f64>() < m.error_rate;
        let us = lat.inverse_cdf(rng.random::<f64>()) * m.latency_scale;
        self.requests += 1;
        self.errors += u64::from(failed);
        self.latency_us.saturating_record(us as u64);
        failed
    }

    fn window(&self) -> SideWindow<'_> {
        SideWindow {
            requests: self.requests,
            errors: self.errors,
            client_errors: 0,
            latency_us: &self.latency_us,
        }
    }

    fn reset(&mut self) {
        self.requests = 0;
        self.errors = 0;
        self.latency_us.reset();
    }
}

/// How one run ended.
struct Outcome {
    phase: Phase,
    secs: u64,
    reached_canary: bool,
    /// Candidate requests in the window when it was rolled back.
    rollback_requests: Option<u64>,
    /// Why it was rolled back (printed for unexpected rollbacks).
    rollback_reasons: Vec<String>,
}

fn run(s: &Scenario, seed: u64) -> Outcome {
    let mut rng = SmallRng::seed_from_u64(seed);
    let lat = LogNormal::new(MEDIAN_US.ln(), SIGMA).expect("valid lognormal");
    let mut m = RolloutMachine::new(RolloutSettings::default(), START_MS);
    let (mut stable, mut cand) = (Side::new(), Side::new());
    let (mut compared, mut matched, mut window_start) = (0, 0, START_MS);
    let mut out = Outcome {
        phase: Phase::Shadow,
        secs: 0,
        reached_canary: false,
        rollback_requests: None,
        rollback_reasons: Vec::new(),
    };
    for sec in 1..=s.max_secs {
        for _ in 0..RPS {
            let stable_failed = stable.handle(&mut rng, &s.stable, &lat);
            let cand_failed = cand.handle(&mut rng, &s.candidate, &lat);
            if !stable_failed && !cand_failed {
                compared += 1;
                matched += u64::from(rng.random::<f64>() < s.match_rate);
            }
        }
        let now = START_MS + sec * 1000;
        let input = JudgeInput {
            stable: stable.window(),
            candidate: cand.window(),
            compared,
            matched,
            elapsed: Duration::from_millis(now - window_start),
            looks: Looks::EveryTick,
            rows: Default::default(),
            ttft: None,
        };
        out.secs = sec;
        if let Some(change) = m.evaluate(now, &input) {
            out.reached_canary |= change.to == Phase::Canary;
            if change.to == Phase::RolledBack {
                out.rollback_requests = Some(cand.requests);
                out.rollback_reasons = change.decision.map(|d| d.reasons).unwrap_or_default();
            }
            if change.reset_window {
                stable.reset();
                cand.reset();
                (compared, matched, window_start) = (0, 0, now);
            }
        }
        out.phase = m.state().phase;
        if out.phase.is_finished() {
            break;
        }
    }
    out
}

/// Runs every seed of a scenario on two threads (the machine has two cores).
fn run_all(s: Scenario, scenario_id: u64) -> Vec<Outcome> {
    let seeds: Vec<u64> = (0..RUNS).map(|r| scenario_id * 1_000_000 + r).collect();
    let (a, b) = seeds.split_at(seeds.len() / 2);
    std::thread::scope(|scope| {
        let h = scope.spawn(|| a.iter().map(|&seed| run(&s, seed)).collect::<Vec<_>>());
        let mut out: Vec<Outcome> = b.iter().map(|&seed| run(&s, seed)).collect();
        let mut first = h.join().expect("simulation thread");
        first.append(&mut out);
        first
    })
}

fn share(outcomes: &[Outcome], pred: impl Fn(&Outcome) -> bool) -> f64 {
    outcomes.iter().filter(|o| pred(o)).count() as f64 / outcomes.len() as f64
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[test]
fn healthy_candidate_is_rarely_rolled_back() {
    let s = Scenario {
        stable: HEALTHY,
        candidate: HEALTHY,
        match_rate: 0.995,
        max_secs: 2 * 3600,
    };
    let out = run_all(s, 1);
    for o in out.iter().filter(|o| o.phase == Phase::RolledBack) {
        println!(
            "healthy run rolled back after {}s: {:?}",
            o.secs, o.rollback_reasons
        );
    }
    let false_rollback = share(&out, |o| o.phase == Phase::RolledBack);
    let promoted = share(&out, |o| o.phase == Phase::Promoted);
    let secs = median(
        out.iter()
            .filter(|o| o.phase == Phase::Promoted)
            .map(|o| o.secs)
            .collect(),
    );
    let msg = format!(
        "healthy: false rollback {:.1}%, promoted {:.1}%, median time to promotion {secs}s ({RUNS} runs)",
        false_rollback * 100.0,
        promoted * 100.0
    );
    println!("{msg}");
    assert!(false_rollback <= 0.01, "{msg}");
}

#[test]
fn erroring_candidate_is_rolled_back_early() {
    let s = Scenario {
        stable: HEALTHY,
        candidate: Model {
            error_rate: 0.10,
            ..HEALTHY
        },
        match_rate: 0.995,
        max_secs: 2 * 3600,
    };
    let out = run_all(s, 2);
    let rolled_back = share(&out, |o| o.phase == Phase::RolledBack);
    let reqs = median(out.iter().filter_map(|o| o.rollback_requests).collect());
    let msg = format!(
        "10% errors: rolled back {:.1}%, median {reqs} candidate requests at rollback ({RUNS} runs)",
        rolled_back * 100.0
    );
    println!("{msg}");
    assert!(rolled_back >= 0.99 && reqs <= 150, "{msg}");
}

#[test]
fn slow_candidate_is_rolled_back() {
    let s = Scenario {
        stable: HEALTHY,
        candidate: Model {
            latency_scale: 1.5,
            ..HEALTHY
        },
        match_rate: 0.995,
        max_secs: 2 * 3600,
    };
    let out = run_all(s, 3);
    let rolled_back = share(&out, |o| o.phase == Phase::RolledBack);
    let secs = median(
        out.iter()
            .filter(|o| o.phase == Phase::RolledBack)
            .map(|o| o.secs)
            .collect(),
    );
    let msg = format!(
        "p99 x1.5: rolled back {:.1}%, median {secs}s to rollback ({RUNS} runs)",
        rolled_back * 100.0
    );
    println!("{msg}");
    assert!(rolled_back >= 0.95, "{msg}");
}

#[test]
fn mismatching_candidate_never_leaves_shadow() {
    let s = Scenario {
        stable: HEALTHY,
        candidate: HEALTHY,
        match_rate: 0.80,
        max_secs: 30 * 60,
    };
    let out = run_all(s, 4);
    let left_shadow = share(&out, |o| o.reached_canary || o.phase == Phase::Promoted);
    let rolled_back = share(&out, |o| o.phase == Phase::RolledBack);
    let msg = format!(
        "80% match: left shadow {:.1}%, rolled back in shadow {:.1}% ({RUNS} runs)",
        left_shadow * 100.0,
        rolled_back * 100.0
    );
    println!("{msg}");
    assert!(left_shadow == 0.0, "{msg}");
}
