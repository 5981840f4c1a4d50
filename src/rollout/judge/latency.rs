//! The latency criterion: which quantile a window can support, the tolerance
//! around stable's latency, and the pass/fail/hold line with its numbers.
//!
//! Pure arithmetic on two histograms; it never reads clocks and never
//! panics (degenerate input holds).
//!
//! # Why not always p99
//! A p99 is a statement about the slowest 1% of requests: 500 samples hold
//! five of them, and no test can tell a 20% difference from noise on five
//! points. The rule therefore judges the highest of p99, p98, p95 and p90
//! that has at least [`TAIL_SAMPLES`] expected samples above it — p90 from
//! 500 samples, p95 from 1 000, p98 from 2 500, p99 from 5 000 — and holds
//! below 500. A regression that only touches the slowest 1% can still fail
//! early: today's distribution-free p99 bounds are checked at every size.

use super::{FAIL_CONFIDENCE, Verdict, stats};
use crate::units::us_as_ms_or_na;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Expected samples above the judged quantile. 50 keeps the log-ratio
/// confidence interval near its nominal coverage at every candidate step
/// (a Monte-Carlo study of lognormal, mixture and sub-millisecond families
/// found 30 noticeably anti-conservative and 100 needlessly slow).
pub const TAIL_SAMPLES: f64 = 50.0;
/// The quantiles the rule may judge, highest first.
pub const QUANTILES: [f64; 4] = [0.99, 0.98, 0.95, 0.90];
/// The quantile a fail may always be shown at, whatever size the window.
pub const TAIL_QUANTILE: f64 = 0.99;
/// Normal quantile of the order-statistic interval the standard error of a
/// log-quantile is read from (two-sided 95%): `se = ln(hi/lo) / (2 * 1.96)`.
const SE_Z: f64 = 1.959_963_984_540_054;

/// The highest quantile of [`QUANTILES`] that `n` samples support, or
/// `None` below `TAIL_SAMPLES / 0.1` = 500 samples.
pub fn quantile_for(n: u64) -> Option<f64> {
    // The epsilon absorbs 1 - 0.9 = 0.0999…: 500 samples do support p90.
    QUANTILES
        .into_iter()
        .find(|q| n as f64 * (1.0 - q) >= TAIL_SAMPLES - 1e-9)
}

/// Fewest samples per side before the latency criterion can pass.
pub fn min_samples() -> u64 {
    (TAIL_SAMPLES / (1.0 - QUANTILES[QUANTILES.len() - 1])).round() as u64
}

/// The latency the candidate may have where stable has `x` µs:
/// `max((1 + increase) * x, x + slack_us)`. The absolute slack keeps
/// sub-millisecond backends, whose p99 moves by tens of microseconds
/// between hosts, from holding forever on a relative threshold.
pub fn tolerance(x: f64, increase: f64, slack_us: f64) -> f64 {
    ((1.0 + increase) * x).max(x + slack_us)
}

/// One side's numbers at one quantile (µs); `None` where too few samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantileSide {
    /// Point estimate (the histogram's value at the quantile).
    pub point_us: Option<u64>,
    /// The distribution-free bound at [`FAIL_CONFIDENCE`] a fail is checked
    /// with (lower for the candidate, upper for stable).
    pub fail_bound_us: Option<u64>,
    /// Standard error of ln(quantile), from the exact order-statistic
    /// interval at two-sided 95%.
    pub log_se: Option<f64>,
}

impl QuantileSide {
    /// Measures `h` at quantile `q`; `candidate` picks the fail bound's side.
    pub fn new(h: &Histogram<u64>, q: f64, candidate: bool) -> Self {
        let n = h.len();
        if n == 0 {
            return Self::default();
        }
        let zf = stats::z_for(FAIL_CONFIDENCE);
        let fail_bound_us = if candidate {
            stats::lower_rank(n, q, FAIL_CONFIDENCE, zf).map(|r| stats::value_at_rank(h, r, true))
        } else {
            stats::upper_rank(n, q, FAIL_CONFIDENCE, zf).map(|r| stats::value_at_rank(h, r, false))
        };
        let conf = 0.975;
        let lo = stats::lower_rank(n, q, conf, SE_Z).map(|r| stats::value_at_rank(h, r, true));
        let hi = stats::upper_rank(n, q, conf, SE_Z).map(|r| stats::value_at_rank(h, r, false));
        let log_se = match (lo, hi) {
            (Some(lo), Some(hi)) => {
                Some(((hi as f64).ln() - (lo.max(1) as f64).ln()) / (2.0 * SE_Z))
            }
            _ => None,
        };
        Self {
            point_us: Some(h.value_at_quantile(q)),
            fail_bound_us,
            log_se,
        }
    }
}

/// The latency test as judged: the quantile, both sides there, the log
/// ratio with its confidence interval and the limit it is held against.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyTest {
    /// The quantile judged (0.9 = p90); `None` below [`min_samples`].
    pub quantile: Option<f64>,
    /// Candidate at the quantile.
    pub candidate: QuantileSide,
    /// Stable at the quantile.
    pub stable: QuantileSide,
    /// ln(candidate / stable) of the point estimates.
    pub log_ratio: Option<f64>,
    /// Standard error of `log_ratio` (both sides' errors combined).
    pub log_ratio_se: Option<f64>,
    /// ln(tolerance(stable) / stable): the largest log ratio that passes.
    pub log_limit: Option<f64>,
    /// Upper confidence bound of the log ratio at the pass confidence.
    pub log_ratio_upper: Option<f64>,
    /// Lower confidence bound of the log ratio at [`FAIL_CONFIDENCE`]
    /// (used to fail only by a one-shot judgement such as a replay).
    pub log_ratio_lower: Option<f64>,
    /// One-sided confidence of the pass bound.
    pub pass_confidence: f64,
    /// Candidate p99 with its fail bound (always checked for a fail).
    pub candidate_p99: QuantileSide,
    /// Stable p99 with its fail bound.
    pub stable_p99: QuantileSide,
    /// One-look judgements only: the quantiles between the judged one and
    /// p99 with at least [`ONCE_TAIL_SAMPLES`] expected samples above, each
    /// of which may fail on its log-ratio interval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upper_tail: Vec<TailCheck>,
}

/// Both sides at one quantile above the judged one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TailCheck {
    /// The quantile.
    pub quantile: f64,
    /// Candidate there.
    pub candidate: QuantileSide,
    /// Stable there.
    pub stable: QuantileSide,
}

/// Expected samples above a quantile a one-look judgement may fail at:
/// fewer than [`TAIL_SAMPLES`] because a fail needs the ratio interval
/// entirely beyond the tolerance, and a replay looks only once.
pub const ONCE_TAIL_SAMPLES: f64 = 25.0;

/// How a window is looked at, which sets the latency test's confidence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Looks {
    /// A live rollout judges the growing window every tick: the pass needs
    /// 99% per look, and only the distribution-free bounds may fail it.
    #[default]
    EveryTick,
    /// A replay judges once: the pass needs 95%, and the log-ratio interval
    /// at [`FAIL_CONFIDENCE`] may fail it too.
    Once,
}

impl Looks {
    /// One-sided confidence a latency pass needs.
    pub fn pass_confidence(self) -> f64 {
        match self {
            Looks::EveryTick => 0.99,
            Looks::Once => super::PASS_CONFIDENCE,
        }
    }
}

impl LatencyTest {
    /// Measures both sides at the quantile their sizes support.
    pub fn measure(
        stable: &Histogram<u64>,
        candidate: &Histogram<u64>,
        increase: f64,
        slack_us: f64,
        looks: Looks,
    ) -> Self {
        let pass_confidence = looks.pass_confidence();
        let p99 = |h, c| QuantileSide::new(h, TAIL_QUANTILE, c);
        let mut t = LatencyTest {
            quantile: quantile_for(stable.len().min(candidate.len())),
            pass_confidence,
            candidate_p99: p99(candidate, true),
            stable_p99: p99(stable, false),
            ..Self::default()
        };
        let Some(q) = t.quantile else { return t };
        if looks == Looks::Once {
            let n = stable.len().min(candidate.len()) as f64;
            t.upper_tail = QUANTILES
                .into_iter()
                .filter(|&u| u > q && u < TAIL_QUANTILE)
                .filter(|&u| n * (1.0 - u) >= ONCE_TAIL_SAMPLES - 1e-9)
                .map(|u| TailCheck {
                    quantile: u,
                    candidate: QuantileSide::new(candidate, u, true),
                    stable: QuantileSide::new(stable, u, false),
                })
                .collect();
        }
        t.candidate = QuantileSide::new(candidate, q, true);
        t.stable = QuantileSide::new(stable, q, false);
        if let (Some(c), Some(s)) = (t.candidate.point_us, t.stable.point_us) {
            let (c, s) = (c.max(1) as f64, s.max(1) as f64);
            t.log_ratio = Some(c.ln() - s.ln());
            t.log_limit = Some((tolerance(s, increase, slack_us) / s).ln());
        }
        if let (Some(a), Some(b)) = (t.candidate.log_se, t.stable.log_se) {
            let se = a.hypot(b);
            t.log_ratio_se = Some(se);
            if let Some(d) = t.log_ratio {
                t.log_ratio_upper = Some(d + stats::z_for(pass_confidence) * se);
                t.log_ratio_lower = Some(d - stats::z_for(FAIL_CONFIDENCE) * se);
            }
        }
        t
    }
}

/// Name of a quantile as people write it: 0.99 → "p99".
pub fn name(q: f64) -> String {
    format!("p{}", (q * 100.0).round() as u64)
}

/// Lower confidence bound at [`FAIL_CONFIDENCE`] of ln(candidate / stable)
/// and the log limit, for one quantile; `None` without an interval.
fn ratio_lower(
    c: &QuantileSide,
    s: &QuantileSide,
    increase: f64,
    slack_us: f64,
) -> Option<(f64, f64)> {
    let (cp, sp) = (c.point_us?.max(1) as f64, s.point_us?.max(1) as f64);
    let se = c.log_se?.hypot(s.log_se?);
    let lower = cp.ln() - sp.ln() - stats::z_for(FAIL_CONFIDENCE) * se;
    Some((lower, (tolerance(sp, increase, slack_us) / sp).ln()))
}

/// The latency criterion's verdict and reason.
pub fn rule(
    t: &LatencyTest,
    samples: (u64, u64),
    increase: f64,
    slack_us: f64,
    looks: Looks,
) -> (Verdict, String) {
    let tol = |x: u64| tolerance(x as f64, increase, slack_us);
    let slack = format!("max({:.2}x, +{:.2}ms)", 1.0 + increase, slack_us / 1000.0);
    // Distribution-free fails: at the judged quantile and at p99.
    let mut sides = vec![(TAIL_QUANTILE, &t.candidate_p99, &t.stable_p99)];
    if let Some(q) = t.quantile {
        sides.insert(0, (q, &t.candidate, &t.stable));
    }
    for (q, c, s) in sides {
        if let (Some(lo), Some(hi)) = (c.fail_bound_us, s.fail_bound_us)
            && lo as f64 > tol(hi)
        {
            let msg = format!(
                "latency {}: candidate {} vs stable {}: candidate lower bound {} > stable upper \
                 bound {} plus tolerance {slack}",
                name(q),
                us_as_ms_or_na(c.point_us),
                us_as_ms_or_na(s.point_us),
                us_as_ms_or_na(Some(lo)),
                us_as_ms_or_na(Some(hi)),
            );
            return (Verdict::Fail, msg);
        }
    }
    let Some(q) = t.quantile else {
        let msg = format!(
            "latency: need {} latency samples per side to judge p90, have candidate {}, stable {}",
            min_samples(),
            samples.0,
            samples.1
        );
        return (Verdict::Hold, msg);
    };
    let what = format!(
        "latency {}: candidate {} vs stable {} (ratio {})",
        name(q),
        us_as_ms_or_na(t.candidate.point_us),
        us_as_ms_or_na(t.stable.point_us),
        t.log_ratio
            .map_or_else(|| "n/a".to_owned(), |d| format!("{:.2}", d.exp())),
    );
    let (Some(upper), Some(limit)) = (t.log_ratio_upper, t.log_limit) else {
        return (Verdict::Hold, format!("{what}: no interval yet"));
    };
    let conf = format!("{:.0}%", t.pass_confidence * 100.0);
    if looks == Looks::Once {
        // One look: the log-ratio interval may fail too, at the judged
        // quantile and at p99 (once p99 has an interval).
        let mut checks = vec![(q, &t.candidate, &t.stable)];
        checks.extend(
            t.upper_tail
                .iter()
                .map(|u| (u.quantile, &u.candidate, &u.stable)),
        );
        checks.push((TAIL_QUANTILE, &t.candidate_p99, &t.stable_p99));
        for (q, c, s) in checks {
            if let Some((lower, lim)) = ratio_lower(c, s, increase, slack_us)
                && lower > lim
            {
                let msg = format!(
                    "latency {}: candidate {} vs stable {}: {:.0}% lower bound of the ratio \
                     {:.2} > allowed {:.2} ({slack})",
                    name(q),
                    us_as_ms_or_na(c.point_us),
                    us_as_ms_or_na(s.point_us),
                    FAIL_CONFIDENCE * 100.0,
                    lower.exp(),
                    lim.exp()
                );
                return (Verdict::Fail, msg);
            }
        }
    }
    if upper <= limit {
        let msg = format!(
            "{what}: {conf} upper bound of the ratio {:.2} <= allowed {:.2} ({slack})",
            upper.exp(),
            limit.exp()
        );
        (Verdict::Pass, msg)
    } else {
        let msg = format!(
            "{what} not yet credibly within {slack}: {conf} upper bound of the ratio {:.2} > \
             allowed {:.2}",
            upper.exp(),
            limit.exp()
        );
        (Verdict::Hold, msg)
    }
}
