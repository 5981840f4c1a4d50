//! The numbers behind a judgement: sample sizes, rates, confidence bounds,
//! p99s and the thresholds in force, gathered from one window. Recorded with
//! every decision so a verdict can be audited later. Gathering only measures;
//! it never decides (the rules live in `judge.rs`).

use super::{
    FAIL_CONFIDENCE, JudgeInput, LATENCY_QUANTILE, PASS_CONFIDENCE, SideWindow, Thresholds,
    Verdict, latency, stats,
};
use serde::{Deserialize, Serialize};

/// A rate tested against its threshold. The decisions use the exact
/// binomial tail probabilities; the Wilson interval is there for reading.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateEvidence {
    /// Events counted (errors, matches).
    pub hits: u64,
    /// Sample size.
    pub total: u64,
    /// `hits / total`; `None` without data.
    pub rate: Option<f64>,
    /// The threshold tested against (`max_error_rate`, `min_match_rate`).
    pub threshold: f64,
    /// P(X >= hits) for X ~ Binomial(total, threshold): the p-value of "the
    /// rate is above the threshold".
    pub p_above: f64,
    /// P(X <= hits): the p-value of "the rate is below the threshold".
    pub p_below: f64,
    /// Wilson score lower bound at [`FAIL_CONFIDENCE`].
    pub wilson_lower: f64,
    /// Wilson score upper bound at [`FAIL_CONFIDENCE`].
    pub wilson_upper: f64,
}

impl RateEvidence {
    fn new(hits: u64, total: u64, threshold: f64, z: &Z) -> Self {
        let hits = hits.min(total);
        let (p_above, p_below) = stats::binomial_tails(hits, total, threshold);
        let (wilson_lower, wilson_upper) = stats::wilson(hits, total, z.fail);
        Self {
            hits,
            total,
            rate: (total > 0).then(|| hits as f64 / total as f64),
            threshold,
            p_above,
            p_below,
            wilson_lower,
            wilson_upper,
        }
    }
}

/// One backend's p99 with the distribution-free bounds the rules use
/// (microseconds); a bound is `None` while there are too few samples for it.
/// Each bound is the one that makes its decision harder: a fail compares the
/// candidate's *lower* bound with the stable *upper* bound, a pass the
/// candidate's *upper* bound with the stable *lower* bound.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyEvidence {
    /// Latency samples in the window.
    pub samples: u64,
    /// Point estimate of the p99.
    pub p99_us: Option<u64>,
    /// The p99 bound at [`FAIL_CONFIDENCE`] a fail is checked with.
    pub fail_bound_us: Option<u64>,
    /// The p99 bound at [`PASS_CONFIDENCE`] a pass is checked with.
    pub pass_bound_us: Option<u64>,
}

impl LatencyEvidence {
    fn new(h: &hdrhistogram::Histogram<u64>, candidate: bool, z: &Z) -> Self {
        let n = h.len();
        let q = LATENCY_QUANTILE;
        let lower =
            |conf, z| stats::lower_rank(n, q, conf, z).map(|r| stats::value_at_rank(h, r, true));
        let upper =
            |conf, z| stats::upper_rank(n, q, conf, z).map(|r| stats::value_at_rank(h, r, false));
        // Only the two bounds the rules use: each costs a histogram scan.
        let (fail_bound_us, pass_bound_us) = if candidate {
            (
                lower(FAIL_CONFIDENCE, z.fail),
                upper(PASS_CONFIDENCE, z.pass),
            )
        } else {
            (
                upper(FAIL_CONFIDENCE, z.fail),
                lower(PASS_CONFIDENCE, z.pass),
            )
        };
        Self {
            samples: n,
            p99_us: (n > 0).then(|| h.value_at_quantile(q)),
            fail_bound_us,
            pass_bound_us,
        }
    }
}

/// Normal quantiles of the two confidence levels, computed once per judgement.
struct Z {
    fail: f64,
    pass: f64,
}

/// Everything measured about one backend in the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SideEvidence {
    /// Requests handled (served + shadow).
    pub requests: u64,
    /// Errors (5xx, timeouts, transport) over requests.
    pub errors: RateEvidence,
    /// 4xx responses (reported, not judged).
    pub client_errors: u64,
    /// 4xx over requests; `None` without requests.
    pub client_error_rate: Option<f64>,
    /// p99 and its bounds.
    pub latency: LatencyEvidence,
}

impl SideEvidence {
    fn new(w: &SideWindow, t: &Thresholds, candidate: bool, z: &Z) -> Self {
        let client_errors = w.client_errors.min(w.requests);
        Self {
            requests: w.requests,
            errors: RateEvidence::new(w.errors, w.requests, t.max_error_rate, z),
            client_errors,
            client_error_rate: (w.requests > 0).then(|| client_errors as f64 / w.requests as f64),
            latency: LatencyEvidence::new(w.latency_us, candidate, z),
        }
    }
}

/// The verdict of each criterion on its own (interval and volume never fail).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Criteria {
    /// Time in step vs `interval`.
    pub interval: Verdict,
    /// Candidate requests and compared responses vs `min_requests`.
    pub volume: Verdict,
    /// Candidate error rate.
    pub errors: Verdict,
    /// Candidate p99 vs stable p99.
    pub latency: Verdict,
    /// Response match rate.
    pub matching: Verdict,
    /// Candidate time to first token vs stable's; only for windows with
    /// event-stream answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft: Option<Verdict>,
}

/// Every number behind a judgement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Time since the step started, in seconds.
    pub elapsed_secs: f64,
    /// The stable backend.
    pub stable: SideEvidence,
    /// The candidate backend.
    pub candidate: SideEvidence,
    /// Newcombe lower bound of (candidate − stable) error rate at
    /// [`FAIL_CONFIDENCE`]; `None` if either side has no requests.
    pub error_excess_lower: Option<f64>,
    /// Matched over compared responses.
    pub matching: RateEvidence,
    /// Candidate p99 / stable p99 (point estimates).
    pub p99_ratio: Option<f64>,
    /// Samples each side needs before a latency pass is possible.
    pub latency_min_samples: u64,
    /// Per-row agreement with its clustered bound (`None` without rows).
    #[serde(default)]
    pub row_matching: Option<super::rows::RowEvidence>,
    /// The latency test as judged: quantile, log ratio, interval, limit.
    #[serde(default)]
    pub latency: latency::LatencyTest,
    /// The time-to-first-token test, for windows with event streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft: Option<super::ttft::TtftEvidence>,
    /// Per-criterion verdicts.
    pub criteria: Criteria,
    /// Thresholds in force.
    pub thresholds: Thresholds,
    /// [`FAIL_CONFIDENCE`] at the time.
    pub fail_confidence: f64,
    /// [`PASS_CONFIDENCE`] at the time.
    pub pass_confidence: f64,
}

impl Evidence {
    /// Measures the window; `criteria` starts as all-hold and is filled in by
    /// the rules.
    pub(super) fn gather(input: &JudgeInput, t: &Thresholds) -> Self {
        let z = Z {
            fail: stats::z_for(FAIL_CONFIDENCE),
            pass: stats::z_for(PASS_CONFIDENCE),
        };
        let stable = SideEvidence::new(&input.stable, t, false, &z);
        let candidate = SideEvidence::new(&input.candidate, t, true, &z);
        let p99_ratio = match (candidate.latency.p99_us, stable.latency.p99_us) {
            (Some(c), Some(s)) if s > 0 => Some(c as f64 / s as f64),
            _ => None,
        };
        let error_excess_lower = stats::newcombe_lower(
            candidate.errors.hits,
            candidate.requests,
            stable.errors.hits,
            stable.requests,
            z.fail,
        );
        Self {
            elapsed_secs: input.elapsed.as_secs_f64(),
            error_excess_lower,
            matching: RateEvidence::new(input.matched, input.compared, t.min_match_rate, &z),
            p99_ratio,
            latency_min_samples: latency::min_samples(),
            row_matching: super::rows::measure(&input.rows, t.min_match_rate),
            latency: latency::LatencyTest::measure(
                input.stable.latency_us,
                input.candidate.latency_us,
                t.max_latency_increase,
                super::slack_us(t),
                input.looks,
            ),
            criteria: Criteria {
                interval: Verdict::Hold,
                volume: Verdict::Hold,
                errors: Verdict::Hold,
                latency: Verdict::Hold,
                matching: Verdict::Hold,
                ttft: None,
            },
            ttft: None,
            thresholds: t.clone(),
            fail_confidence: FAIL_CONFIDENCE,
            pass_confidence: PASS_CONFIDENCE,
            stable,
            candidate,
        }
    }
}
