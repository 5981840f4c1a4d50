//! The match criterion per prediction row (`match_unit = "row"`): the share
//! of agreeing rows against `min_match_rate`, with a bound that accounts for
//! rows of one request being alike (one odd input often flips all of its
//! rows together).
//!
//! Pure arithmetic on the window's per-request sums; never panics.
//!
//! # Method
//! The agreement is the ratio estimator p = Σy / Σm over requests (m rows,
//! y matching). Its cluster-robust (sandwich) variance is
//! `k/(k−1) · Σ(y − p·m)² / (Σm)²` over k requests; divided by the binomial
//! variance `p(1−p)/Σm` it gives the design effect. The rows then count as
//! `Σm / deff` independent trials, and the exact binomial tail tests of the
//! request rule run on those effective counts (continuous, through the
//! regularized incomplete beta function). The design effect is kept between
//! 1 and `Σm²/Σm` — the value when whole requests agree or disagree — and
//! takes that upper value while it cannot be estimated (all rows agree, or
//! a single request), so an unseen correlation is never assumed away.
//! Each decision also needs a skewness-corrected t-test (Johnson's
//! correction in Hall's monotone form) on the per-request residuals to
//! agree: clustered disagreement is long-tailed.

use crate::stats::window::RowClusters;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::beta::beta_reg;

/// The per-row agreement tested against its threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowEvidence {
    /// Requests with compared rows.
    pub requests: u64,
    /// Rows compared.
    pub rows: u64,
    /// Rows that agree.
    pub matched: u64,
    /// matched / rows.
    pub rate: f64,
    /// Variance inflation from rows sharing a request (>= 1).
    pub design_effect: f64,
    /// rows / design_effect: how many independent rows the sample is worth.
    pub effective_rows: f64,
    /// The threshold (`min_match_rate`).
    pub threshold: f64,
    /// P(X >= hits) at the threshold on the effective counts.
    pub p_above: f64,
    /// P(X <= hits) at the threshold on the effective counts.
    pub p_below: f64,
}

/// Measures the window's rows; `None` without compared rows.
pub fn measure(c: &RowClusters, threshold: f64) -> Option<RowEvidence> {
    if c.rows == 0 || c.requests == 0 {
        return None;
    }
    let (rows, k) = (c.rows as f64, c.requests as f64);
    let p = c.matched.min(c.rows) as f64 / rows;
    let worst = (c.rows_sq / rows).max(1.0);
    let residual = c.matched_sq - 2.0 * p * c.rows_matched + p * p * c.rows_sq;
    let v_cluster = k / (k - 1.0).max(1.0) * residual.max(0.0) / (rows * rows);
    // The same around the threshold (what both decisions test): larger when
    // the rate is off it, so a lucky sample cannot shrink its own variance.
    let p0 = threshold;
    let residual0 = c.matched_sq - 2.0 * p0 * c.rows_matched + p0 * p0 * c.rows_sq;
    let v_cluster = v_cluster.max(k / (k - 1.0).max(1.0) * residual0.max(0.0) / (rows * rows));
    let v_binomial = p * (1.0 - p) / rows;
    let design_effect = if c.requests >= 2 && v_binomial > 0.0 && v_cluster.is_finite() {
        (v_cluster / v_binomial).clamp(1.0, worst)
    } else {
        worst
    };
    let n = rows / design_effect;
    let h = p * n;
    let (mut p_above, mut p_below) = tails(h, n, threshold);
    // A skewness-corrected t on the linearized residuals r = y − p·m, in
    // Hall's monotone form of Johnson's correction:
    // t1 = t + γ/(6√k) + γt²/(3√k) + γ²t³/(27k). A few requests that
    // disagree on most of their rows make r long-tailed to the left, and a
    // sample that happened to draw few of them shows both a high rate and
    // a low variance; without this the clustered bound passed 7% of
    // windows at the threshold (ρ = 0.2) instead of 5%.
    let skew = skewness(c, p, residual, k);
    let se = v_cluster.sqrt();
    let johnson = if c.requests >= 2 && se > 0.0 {
        let t = (p - threshold) / se;
        let a = skew / k.sqrt();
        let t1 = t + a / 6.0 + a * t * t / 3.0 + a * a * t * t * t / 27.0;
        let n01 = Normal::standard();
        Some((n01.sf(t1), n01.cdf(t1)))
    } else {
        None
    };
    if let Some((above, below)) = johnson {
        // Each decision needs both tests: the conservative p-value wins.
        p_above = p_above.max(above);
        p_below = p_below.max(below);
    }
    Some(RowEvidence {
        requests: c.requests,
        rows: c.rows,
        matched: c.matched,
        rate: p,
        design_effect,
        effective_rows: n,
        threshold,
        p_above,
        p_below,
    })
}

/// Sample skewness of the residuals r = y − p·m (their mean is 0 by the
/// choice of p); 0 when it cannot be estimated.
fn skewness(c: &RowClusters, p: f64, residual: f64, k: f64) -> f64 {
    let third = c.matched_cu - 3.0 * p * c.matched_sq_rows + 3.0 * p * p * c.matched_rows_sq
        - p * p * p * c.rows_cu;
    let var = residual / (k - 1.0).max(1.0);
    let g = (third / k) / var.powf(1.5);
    if g.is_finite() { g } else { 0.0 }
}

/// Binomial tails P(X >= h), P(X <= h) for X ~ Bin(n, p) at non-integer
/// h and n (the incomplete-beta form of the binomial CDF). `(1, 1)` for
/// inputs that carry no evidence.
fn tails(h: f64, n: f64, p: f64) -> (f64, f64) {
    if !(n > 0.0 && (0.0..=1.0).contains(&p) && h.is_finite()) {
        return (1.0, 1.0);
    }
    let h = h.clamp(0.0, n);
    let at_least = if h <= 0.0 || p >= 1.0 {
        1.0
    } else if p <= 0.0 {
        0.0
    } else {
        beta_reg(h, n - h + 1.0, p)
    };
    let at_most = if h >= n || p <= 0.0 {
        1.0
    } else if p >= 1.0 {
        0.0
    } else {
        1.0 - beta_reg(h + 1.0, n - h, p)
    };
    (at_least.clamp(0.0, 1.0), at_most.clamp(0.0, 1.0))
}
