//! Decision-quality test of the latency criterion alone: seeded latency
//! families pushed through the real latency rule, as `understudy validate`
//! sees them (one look at a fixed number of paired requests) and as a live
//! rollout sees them (a growing window judged every simulated second).
//! Prints its tables (`cargo test --lib rollout::sim -- --nocapture`) and
//! asserts the targets. It only measures; it must stay deterministic.

use super::judge::latency::{LatencyTest, Looks, rule};
use super::judge::{Thresholds, Verdict, paired, slack_us};
use crate::stats::window::latency_histogram;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use statrs::distribution::{ContinuousCDF, Normal};

/// Points of the tabulated quantile functions (interpolated between).
const GRID: usize = 8192;
/// Median of the millisecond-scale families, µs.
const MEDIAN_US: f64 = 20_000.0;
/// z of the 99th percentile: the tail effect doubles latency there.
const Z99: f64 = 2.326_347_874;

/// A latency family as a quantile function of a standard-normal z.
#[derive(Clone, Copy, Debug)]
enum Family {
    /// Lognormal with this sigma.
    LogNormal(f64),
    /// 98% LN(20 ms, 0.3) + 2% five times slower.
    Mixture,
    /// Sub-millisecond: LN(75 µs, 0.25) plus, on 20% of requests, an
    /// exponential delay (p50 ~0.08 ms, p99 ~0.4 ms); each side's delay is
    /// scaled so its p99 sits 0.4 ± 0.05 ms (equal servers, different hosts).
    SubMs,
}

/// What the candidate does differently.
#[derive(Clone, Copy, Debug)]
enum Effect {
    Equal,
    Scale(f64),
    /// p50 unchanged, p99 doubled, smooth in between: `x · 2^(max(z,0)/z99)`.
    Tail2,
}

/// Tabulated z and x for one family (so a draw is one uniform and a lookup).
struct Sampler {
    family: Family,
    z: Vec<f64>,
    x: Vec<f64>,
}

/// Exponential delay scale giving the sub-ms family a 0.4 ms p99:
/// 0.2 · exp(−(400 − 75)/θ) = 0.01.
const SUBMS_THETA: f64 = 325.0 / 2.995_732_27;

impl Sampler {
    fn new(family: Family) -> Self {
        let n = Normal::standard();
        let z: Vec<f64> = (0..GRID)
            .map(|i| n.inverse_cdf((i as f64 + 0.5) / GRID as f64))
            .collect();
        let x = z
            .iter()
            .map(|&z| match family {
                Family::LogNormal(s) => MEDIAN_US * (s * z).exp(),
                Family::Mixture => mixture_quantile(n.cdf(z)),
                Family::SubMs => 0.0,
            })
            .collect();
        Self { family, z, x }
    }

    /// One latency in µs; `host` scales the sub-ms delay of this side.
    fn draw(&self, rng: &mut SmallRng, effect: Effect, host: f64) -> f64 {
        let pos = rng.random::<f64>() * (GRID - 1) as f64;
        let (i, f) = (pos as usize, pos.fract());
        let z = self.z[i] + f * (self.z[i + 1] - self.z[i]);
        let x = match self.family {
            Family::SubMs => {
                let jitter = if rng.random::<f64>() < 0.2 {
                    -SUBMS_THETA * host * (1.0 - rng.random::<f64>()).ln()
                } else {
                    0.0
                };
                75.0 * (0.25 * z).exp() + jitter
            }
            _ => self.x[i] + f * (self.x[i + 1] - self.x[i]),
        };
        match effect {
            Effect::Equal => x,
            Effect::Scale(k) => k * x,
            Effect::Tail2 => x * (z.max(0.0) / Z99).exp2(),
        }
    }
}

/// Quantile of the mixture by bisection on its CDF (table building only).
fn mixture_quantile(u: f64) -> f64 {
    let n = Normal::standard();
    let (mu, s) = (MEDIAN_US.ln(), 0.3);
    let cdf = |lx: f64| 0.98 * n.cdf((lx - mu) / s) + 0.02 * n.cdf((lx - mu - 5f64.ln()) / s);
    let (mut lo, mut hi) = (mu - 3.0, mu + 5f64.ln() + 3.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) < u {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (0.5 * (lo + hi)).exp()
}

/// A host's p99 offset for the sub-ms family: U(−50, +50) µs as a delay scale.
fn host_scale(rng: &mut SmallRng, family: Family) -> f64 {
    match family {
        Family::SubMs => 1.0 + rng.random_range(-50.0..50.0) / 325.0,
        _ => 1.0,
    }
}

/// Share of verdicts: (pass, hold, fail).
#[derive(Clone, Copy, Debug, Default)]
struct Shares {
    pass: f64,
    hold: f64,
    fail: f64,
}

impl Shares {
    fn of(v: &[Verdict]) -> Self {
        let share = |x| v.iter().filter(|y| **y == x).count() as f64 / v.len() as f64;
        Self {
            pass: share(Verdict::Pass),
            hold: share(Verdict::Hold),
            fail: share(Verdict::Fail),
        }
    }
}

impl std::fmt::Display for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pass {:5.1}%  hold {:5.1}%  fail {:5.1}%",
            self.pass * 100.0,
            self.hold * 100.0,
            self.fail * 100.0
        )
    }
}

/// Splits `runs` seeds over two threads (the CI machine has two cores).
fn on_two_threads<T: Send>(runs: u64, seed: u64, f: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let seeds: Vec<u64> = (0..runs).map(|r| seed * 1_000_000 + r).collect();
    let (a, b) = seeds.split_at(seeds.len() / 2);
    std::thread::scope(|scope| {
        let h = scope.spawn(|| a.iter().map(|&s| f(s)).collect::<Vec<_>>());
        let mut out: Vec<T> = b.iter().map(|&s| f(s)).collect();
        let mut first = h.join().expect("simulation thread");
        first.append(&mut out);
        first
    })
}

/// One `understudy validate` run: `n` requests sent to both backends.
fn validate_once(sampler: &Sampler, effect: Effect, n: usize, seed: u64) -> Verdict {
    let t = Thresholds::default();
    let mut rng = SmallRng::seed_from_u64(seed);
    let (hs, hc) = (
        host_scale(&mut rng, sampler.family),
        host_scale(&mut rng, sampler.family),
    );
    let (mut s, mut c) = (latency_histogram(), latency_histogram());
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        // Validate truncates to whole microseconds, at least 1.
        let a = (sampler.draw(&mut rng, Effect::Equal, hs) as u64).max(1);
        let b = (sampler.draw(&mut rng, effect, hc) as u64).max(1);
        s.saturating_record(a);
        c.saturating_record(b);
        pairs.push((a, b));
    }
    let (inc, slack) = (t.max_latency_increase, slack_us(&t));
    let test = LatencyTest::measure(&s, &c, inc, slack, Looks::Once);
    let quantile = rule(&test, (c.len(), s.len()), inc, slack, Looks::Once);
    let p = paired::measure(&pairs, inc, slack);
    paired::combine(quantile, paired::rule(&p)).0
}

fn validate_shares(family: Family, effect: Effect, n: usize, runs: u64, seed: u64) -> Shares {
    let sampler = Sampler::new(family);
    let v = on_two_threads(runs, seed, |s| validate_once(&sampler, effect, n, s));
    let shares = Shares::of(&v);
    println!("validate {family:?} {effect:?} n={n:5}: {shares}  ({runs} runs)");
    shares
}

#[test]
fn validate_meets_its_targets_at_500_pairs() {
    let mut failed = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failed.push(what);
        }
    };
    let families = [
        Family::LogNormal(0.3),
        Family::LogNormal(0.4),
        Family::Mixture,
    ];
    for (i, fam) in families.into_iter().enumerate() {
        let seed = 100 + 10 * i as u64;
        let eq = validate_shares(fam, Effect::Equal, 500, 400, seed);
        check(
            eq.fail <= 0.01 && eq.pass >= 0.95,
            format!("{fam:?} equal {eq}"),
        );
        let k12 = validate_shares(fam, Effect::Scale(1.2), 500, 400, seed + 1);
        check(k12.pass <= 0.05, format!("{fam:?} x1.2 {k12}"));
        let k15 = validate_shares(fam, Effect::Scale(1.5), 500, 400, seed + 2);
        check(k15.fail >= 0.95, format!("{fam:?} x1.5 {k15}"));
        let tail = validate_shares(fam, Effect::Tail2, 500, 400, seed + 3);
        check(
            tail.pass <= 0.01 && tail.fail >= 0.80,
            format!("{fam:?} tail2 {tail}"),
        );
    }
    assert!(failed.is_empty(), "targets missed: {failed:#?}");
}

#[test]
fn live_latency_rule_meets_its_targets_at_5_rps() {
    live_targets(5, 200, 300);
}

#[test]
fn live_latency_rule_meets_its_targets_at_100_rps() {
    live_targets(100, 200, 310);
}

#[test]
fn live_latency_rule_meets_its_targets_at_1000_rps() {
    live_targets(1_000, 60, 320);
}

#[test]
fn validate_with_a_wide_distribution_fails_rarely_and_passes_with_more_pairs() {
    let fam = Family::LogNormal(0.8);
    let small = validate_shares(fam, Effect::Equal, 500, 400, 200);
    let large = validate_shares(fam, Effect::Equal, 2_000, 200, 201);
    assert!(
        small.fail <= 0.01 && large.pass >= 0.90,
        "sigma 0.8: 500 pairs {small}; 2000 pairs {large}"
    );
}

/// How one live episode ended and when (simulated seconds).
struct Episode {
    verdict: Verdict,
    secs: u64,
}

/// Interval and minimum requests of the default thresholds.
const INTERVAL_SECS: u64 = 60;
const MIN_REQUESTS: u64 = 100;

/// One live window judged every second until a fail, a pass (allowed once
/// the interval and volume are met) or the horizon.
fn live_once(sampler: &Sampler, effect: Effect, rate: u64, horizon: u64, seed: u64) -> Episode {
    let t = Thresholds::default();
    let (inc, slack) = (t.max_latency_increase, slack_us(&t));
    let mut rng = SmallRng::seed_from_u64(seed);
    let (hs, hc) = (
        host_scale(&mut rng, sampler.family),
        host_scale(&mut rng, sampler.family),
    );
    let (mut s, mut c): (Histogram<u64>, Histogram<u64>) =
        (latency_histogram(), latency_histogram());
    for sec in 1..=horizon {
        for _ in 0..rate {
            s.saturating_record((sampler.draw(&mut rng, Effect::Equal, hs) as u64).max(1));
            c.saturating_record((sampler.draw(&mut rng, effect, hc) as u64).max(1));
        }
        let test = LatencyTest::measure(&s, &c, inc, slack, Looks::EveryTick);
        let (v, _) = rule(&test, (c.len(), s.len()), inc, slack, Looks::EveryTick);
        let can_pass = sec >= INTERVAL_SECS && c.len() >= MIN_REQUESTS;
        if v == Verdict::Fail || (v == Verdict::Pass && can_pass) {
            return Episode {
                verdict: v,
                secs: sec,
            };
        }
    }
    Episode {
        verdict: Verdict::Hold,
        secs: horizon,
    }
}

/// A pass must come by then; a fail may come later (until [`live_horizon`]).
const PASS_BY_SECS: u64 = INTERVAL_SECS + 60;

/// How long an episode runs: 10 minutes at 5 req/s (3 000 samples, p95),
/// else [`PASS_BY_SECS`].
fn live_horizon(rate: u64) -> u64 {
    PASS_BY_SECS.max(3_000 / rate)
}

/// (shares over the horizon, share passed by [`PASS_BY_SECS`]).
fn live_shares(
    family: Family,
    effect: Effect,
    rate: u64,
    episodes: u64,
    seed: u64,
) -> (Shares, f64) {
    let horizon = live_horizon(rate);
    let sampler = Sampler::new(family);
    let out = on_two_threads(episodes, seed, |s| {
        live_once(&sampler, effect, rate, horizon, s)
    });
    let v: Vec<Verdict> = out.iter().map(|e| e.verdict).collect();
    let mut secs: Vec<u64> = out.iter().map(|e| e.secs).collect();
    secs.sort_unstable();
    let shares = Shares::of(&v);
    let passed_in_time = out
        .iter()
        .filter(|e| e.verdict == Verdict::Pass && e.secs <= PASS_BY_SECS)
        .count() as f64
        / out.len() as f64;
    println!(
        "live {family:?} {effect:?} {rate:4} req/s: {shares}  passed by {PASS_BY_SECS}s {:5.1}%  \
         median {}s to the end ({episodes} episodes, {horizon}s)",
        passed_in_time * 100.0,
        secs[secs.len() / 2]
    );
    (shares, passed_in_time)
}

/// Asserts the live targets at one rate (one test per rate, so they run
/// side by side).
fn live_targets(rate: u64, episodes: u64, seed: u64) {
    let mut failed = Vec::new();
    {
        let fam = Family::LogNormal(0.4);
        let (eq, in_time) = live_shares(fam, Effect::Equal, rate, episodes, seed);
        if !(eq.fail <= 0.005 && in_time >= 0.99) {
            failed.push(format!("{rate} req/s equal {eq}"));
        }
        for (j, effect) in [Effect::Scale(1.5), Effect::Tail2].into_iter().enumerate() {
            let (bad, _) = live_shares(fam, effect, rate, episodes, seed + 1 + j as u64);
            if !(bad.fail >= 0.99 && bad.pass <= 0.01) {
                failed.push(format!("{rate} req/s {effect:?} {bad}"));
            }
        }
        let (subms, in_time) = live_shares(Family::SubMs, Effect::Equal, rate, episodes, seed + 5);
        if in_time < 0.99 {
            failed.push(format!("{rate} req/s sub-ms hosts {subms}"));
        }
    }
    assert!(failed.is_empty(), "targets missed: {failed:#?}");
}
