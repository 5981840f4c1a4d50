//! The paired latency test of a replay: every request went to both
//! backends at the same moment, so its two latencies share the request's
//! size, the network's mood and the client's clock. A Wilcoxon signed-rank
//! test on `d = ln(candidate) − ln(tolerance(stable))` per request uses
//! that pairing; it sees a shift of the whole body of the distribution
//! from a few hundred pairs, where a tail quantile cannot.
//!
//! Pure arithmetic on the pairs; it never panics and never allocates more
//! than one vector of differences.

use super::latency::tolerance;
use super::{FAIL_CONFIDENCE, PASS_CONFIDENCE, Verdict, stats};
use serde::{Deserialize, Serialize};

/// Pairs below this give no signed-rank verdict (the normal approximation
/// of the statistic is poor under ~20 non-zero differences).
pub const MIN_PAIRS: usize = 20;

/// The signed-rank test's numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PairedTest {
    /// Pairs with a non-zero difference (ties at zero carry no sign).
    pub pairs: u64,
    /// Share of pairs where the candidate exceeded the tolerance.
    pub share_slower: Option<f64>,
    /// Standardized signed-rank statistic (tie-corrected); positive means
    /// the candidate tends to exceed the tolerance.
    pub z: Option<f64>,
}

/// Runs the test on `(stable_us, candidate_us)` pairs.
pub fn measure(pairs: &[(u64, u64)], increase: f64, slack_us: f64) -> PairedTest {
    let mut d: Vec<f64> = pairs
        .iter()
        .map(|&(s, c)| {
            let tol = tolerance(s.max(1) as f64, increase, slack_us);
            (c.max(1) as f64).ln() - tol.ln()
        })
        .filter(|d| d.is_finite() && *d != 0.0)
        .collect();
    let n = d.len();
    let mut t = PairedTest {
        pairs: n as u64,
        ..PairedTest::default()
    };
    if n == 0 {
        return t;
    }
    t.share_slower = Some(d.iter().filter(|x| **x > 0.0).count() as f64 / n as f64);
    if n < MIN_PAIRS {
        return t;
    }
    d.sort_unstable_by(|a, b| a.abs().total_cmp(&b.abs()));
    // Average ranks over ties of |d|; the variance loses (t³ − t)/48 per tie group.
    let (mut w_plus, mut ties, mut i) = (0.0, 0.0, 0);
    while i < n {
        let mut j = i + 1;
        while j < n && d[j].abs() == d[i].abs() {
            j += 1;
        }
        let rank = (i + j + 1) as f64 / 2.0;
        w_plus += rank * d[i..j].iter().filter(|x| **x > 0.0).count() as f64;
        let g = (j - i) as f64;
        ties += g * g * g - g;
        i = j;
    }
    let nf = n as f64;
    let mean = nf * (nf + 1.0) / 4.0;
    let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - ties / 48.0;
    if var > 0.0 {
        t.z = Some((w_plus - mean) / var.sqrt());
    }
    t
}

/// The paired test's verdict: pass when the candidate is credibly within
/// the tolerance ([`PASS_CONFIDENCE`]), fail when credibly beyond it
/// ([`FAIL_CONFIDENCE`]), hold otherwise.
pub fn rule(t: &PairedTest) -> (Verdict, String) {
    let Some(z) = t.z else {
        let msg = format!(
            "paired latency: need {MIN_PAIRS} pairs with different latencies, have {}",
            t.pairs
        );
        return (Verdict::Hold, msg);
    };
    let share = t.share_slower.unwrap_or(0.0) * 100.0;
    let what = format!(
        "paired latency: candidate beyond the tolerance in {share:.1}% of {} pairs, \
         signed-rank z {z:.2}",
        t.pairs
    );
    if z > stats::z_for(FAIL_CONFIDENCE) {
        let msg = format!(
            "{what} > {:.2}: credibly slower than allowed",
            stats::z_for(FAIL_CONFIDENCE)
        );
        (Verdict::Fail, msg)
    } else if z < -stats::z_for(PASS_CONFIDENCE) {
        let msg = format!(
            "{what} < -{:.2}: credibly within the tolerance",
            stats::z_for(PASS_CONFIDENCE)
        );
        (Verdict::Pass, msg)
    } else {
        let msg = format!(
            "{what}: not yet credibly within the tolerance (need z < -{:.2})",
            stats::z_for(PASS_CONFIDENCE)
        );
        (Verdict::Hold, msg)
    }
}

/// Combines the quantile rule with the paired test: fail if either fails,
/// pass if both pass, hold otherwise; the reason cites both.
pub fn combine(quantile: (Verdict, String), paired: (Verdict, String)) -> (Verdict, String) {
    let v = match (quantile.0, paired.0) {
        (Verdict::Fail, _) | (_, Verdict::Fail) => Verdict::Fail,
        (Verdict::Pass, Verdict::Pass) => Verdict::Pass,
        _ => Verdict::Hold,
    };
    (v, format!("{}; {}", quantile.1, paired.1))
}
