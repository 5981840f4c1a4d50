//! Confidence bounds used by the judge: exact binomial tail tests for rates
//! against thresholds, Wilson score intervals (for reading, and inside
//! Newcombe's hybrid score interval for a difference of rates), and
//! distribution-free order-statistic bounds for a latency quantile.
//!
//! Pure arithmetic on counts; distribution functions come from `statrs`. It
//! must never panic: degenerate inputs give the widest (least informative)
//! bounds, never NaN.

use hdrhistogram::Histogram;
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Normal};

/// One-sided standard-normal quantile for a confidence level, e.g. 0.95 → 1.645.
pub(crate) fn z_for(confidence: f64) -> f64 {
    let p = if confidence.is_finite() {
        confidence.clamp(0.5, 0.999_999)
    } else {
        0.5
    };
    Normal::standard().inverse_cdf(p)
}

/// Wilson score interval of `hits / total` at normal quantile `z`.
/// With no data it is `(0, 1)`: nothing is known.
pub(crate) fn wilson(hits: u64, total: u64, z: f64) -> (f64, f64) {
    if total == 0 {
        return (0.0, 1.0);
    }
    let n = total as f64;
    let p = hits.min(total) as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    (
        (centre - half).clamp(0.0, 1.0),
        (centre + half).clamp(0.0, 1.0),
    )
}

/// Tail probabilities of X ~ Binomial(total, p) at `hits`: (P(X >= hits),
/// P(X <= hits)). A small first one means the observed rate is credibly
/// above `p`, a small second one credibly below — exactly the test "the
/// Clopper–Pearson bound lies beyond `p`", which keeps its confidence at any
/// sample size. `(1, 1)` (no evidence) without data or with `p` not in 0..=1.
pub(super) fn binomial_tails(hits: u64, total: u64, p: f64) -> (f64, f64) {
    let Ok(dist) = Binomial::new(p, total) else {
        return (1.0, 1.0);
    };
    if total == 0 {
        return (1.0, 1.0);
    }
    let hits = hits.min(total);
    let at_least = if hits == 0 { 1.0 } else { dist.sf(hits - 1) };
    (at_least.clamp(0.0, 1.0), dist.cdf(hits).clamp(0.0, 1.0))
}

/// Lower bound of `p1 - p2` by Newcombe's hybrid score method (his method
/// 10), built from the two Wilson intervals at the same `z`. `None` when
/// either side has no data.
pub(super) fn newcombe_lower(h1: u64, n1: u64, h2: u64, n2: u64, z: f64) -> Option<f64> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let p1 = h1.min(n1) as f64 / n1 as f64;
    let p2 = h2.min(n2) as f64 / n2 as f64;
    let (l1, _) = wilson(h1, n1, z);
    let (_, u2) = wilson(h2, n2, z);
    Some(p1 - p2 - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt())
}

/// The count of samples above the true `q`-quantile is A ~ Binomial(n, 1-q),
/// so the `(n-a)`-th smallest sample is a lower bound of the quantile when
/// P(A <= a) >= confidence, and an upper bound when P(A <= a) <= 1 -
/// confidence. These return that 1-based rank, or `None` when `n` is too
/// small for a bound at that confidence (an upper p99 bound at 95% needs 299
/// samples). `z` is the normal quantile of `confidence`, used only as the
/// starting guess: statrs's generic inverse_cdf bisects from zero (~50 cdf
/// calls), while walking from the normal approximation takes 2-3.
pub(super) fn lower_rank(n: u64, q: f64, confidence: f64, z: f64) -> Option<u64> {
    let a = exceedances(n, q)?;
    // Smallest a with P(A <= a) >= confidence.
    let mut a_hi = a.guess(z);
    if a.cdf(a_hi) >= confidence {
        while a_hi > 0 && a.cdf(a_hi - 1) >= confidence {
            a_hi -= 1;
        }
    } else {
        while a_hi < n && a.cdf(a_hi) < confidence {
            a_hi += 1;
        }
    }
    (a_hi < n).then_some(n - a_hi)
}

/// See [`lower_rank`].
pub(super) fn upper_rank(n: u64, q: f64, confidence: f64, z: f64) -> Option<u64> {
    let a = exceedances(n, q)?;
    let alpha = 1.0 - confidence;
    // Largest a with P(A <= a) <= alpha.
    let mut a_lo = a.guess(-z);
    if a.cdf(a_lo) <= alpha {
        while a_lo < n && a.cdf(a_lo + 1) <= alpha {
            a_lo += 1;
        }
    } else {
        loop {
            if a_lo == 0 {
                return None;
            }
            a_lo -= 1;
            if a.cdf(a_lo) <= alpha {
                break;
            }
        }
    }
    (a_lo < n).then_some(n - a_lo)
}

/// The exceedance count distribution, with what the guess needs.
struct Exceedances {
    dist: Binomial,
    n: u64,
    mean: f64,
    sd: f64,
}

impl Exceedances {
    fn cdf(&self, a: u64) -> f64 {
        self.dist.cdf(a)
    }

    /// Normal approximation of the quantile at `z`, clamped to 0..=n.
    fn guess(&self, z: f64) -> u64 {
        // `as` saturates (NaN → 0), so any z is safe.
        ((self.mean + z * self.sd).max(0.0) as u64).min(self.n)
    }
}

fn exceedances(n: u64, q: f64) -> Option<Exceedances> {
    if n == 0 {
        return None;
    }
    let dist = Binomial::new(1.0 - q, n).ok()?;
    let mean = n as f64 * (1.0 - q);
    let sd = (mean * q).sqrt();
    Some(Exceedances { dist, n, mean, sd })
}

/// Smallest `n` for which [`upper_rank`] yields a bound: P(A = 0)
/// = q^n must be <= 1 - confidence.
#[cfg(test)]
pub(super) fn min_samples_for_upper(q: f64, confidence: f64) -> u64 {
    let n = ((1.0 - confidence).ln() / q.ln()).ceil();
    if n.is_finite() && n >= 1.0 {
        n as u64
    } else {
        1
    }
}

/// The value of the `rank`-th smallest sample (1-based). `low` picks the
/// lowest value of its histogram bucket (for lower bounds, so bucket width
/// never makes a bound less conservative), otherwise the highest.
pub(super) fn value_at_rank(h: &Histogram<u64>, rank: u64, low: bool) -> u64 {
    let n = h.len();
    if n == 0 {
        return 0;
    }
    // ceil(((rank - 0.5) / n) * n) == rank, which is how hdrhistogram ranks.
    let q = (rank.clamp(1, n) as f64 - 0.5) / n as f64;
    let v = h.value_at_quantile(q);
    if low { h.lowest_equivalent(v) } else { v }
}
