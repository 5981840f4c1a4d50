//! The relative match gate (`rollout.max_match_rate_drop`): the candidate's
//! match rate against stable's agreement with itself, measured on requests
//! sent to stable twice (`compare.noise_percent`). A model that is not
//! deterministic cannot be asked to match stable more often than stable
//! matches itself; it can be asked to match stable *nearly as often*.
//!
//! The test is on the difference d = p_candidate − p_self of two
//! independent proportions, each known only from its sample, with
//! Newcombe's hybrid score interval (his method 10: the two Wilson
//! intervals combined), which keeps its coverage at small samples and rates
//! near 0 or 1 where the Wald interval fails:
//!
//! * **fail** when the upper bound of d at `FAIL_CONFIDENCE` is below
//!   `−max_drop`: the candidate credibly agrees with stable less than
//!   stable agrees with itself, by more than the margin;
//! * **pass** when the lower bound of d at `PASS_CONFIDENCE` is at least
//!   `−max_drop`;
//! * **hold** otherwise, and while either side has no pairs.
//!
//! Pure, like the judge.

use serde::{Deserialize, Serialize};

use super::rules::Line;
use super::{FAIL_CONFIDENCE, PASS_CONFIDENCE, Verdict, stats};
use crate::units::pct;

/// Stable-vs-stable pairs of a window, as the judge reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoiseCounts {
    /// Pairs compared (match + mismatch).
    pub compared: u64,
    /// Pairs that matched.
    pub matched: u64,
}

/// The numbers behind the relative gate, recorded for audit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelativeEvidence {
    /// Candidate-vs-stable pairs: matched of compared.
    pub candidate_matched: u64,
    pub candidate_compared: u64,
    /// Stable-vs-stable pairs: matched of compared.
    pub self_matched: u64,
    pub self_compared: u64,
    /// The candidate's match rate; `None` without pairs.
    pub candidate_rate: Option<f64>,
    /// Stable's agreement with itself (the noise floor); `None` without pairs.
    pub self_agreement: Option<f64>,
    /// candidate_rate − self_agreement.
    pub difference: Option<f64>,
    /// `rollout.max_match_rate_drop`.
    pub max_drop: f64,
    /// Newcombe upper bound of the difference at `FAIL_CONFIDENCE`.
    pub fail_upper: Option<f64>,
    /// Newcombe lower bound of the difference at `PASS_CONFIDENCE`.
    pub pass_lower: Option<f64>,
}

/// Newcombe's hybrid score interval of `h1/n1 − h2/n2` at normal quantile
/// `z` (each side one-sided at that `z`); `None` when either side is empty.
pub fn newcombe_interval(h1: u64, n1: u64, h2: u64, n2: u64, z: f64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let p1 = h1.min(n1) as f64 / n1 as f64;
    let p2 = h2.min(n2) as f64 / n2 as f64;
    let (l1, u1) = stats::wilson(h1, n1, z);
    let (l2, u2) = stats::wilson(h2, n2, z);
    let d = p1 - p2;
    Some((
        d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
        d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
    ))
}

impl RelativeEvidence {
    pub fn measure(matched: u64, compared: u64, noise: NoiseCounts, max_drop: f64) -> Self {
        let rate = |h: u64, n: u64| (n > 0).then(|| h.min(n) as f64 / n as f64);
        let candidate_rate = rate(matched, compared);
        let self_agreement = rate(noise.matched, noise.compared);
        let bound = |confidence| {
            newcombe_interval(
                matched,
                compared,
                noise.matched,
                noise.compared,
                stats::z_for(confidence),
            )
        };
        Self {
            candidate_matched: matched.min(compared),
            candidate_compared: compared,
            self_matched: noise.matched.min(noise.compared),
            self_compared: noise.compared,
            candidate_rate,
            self_agreement,
            difference: candidate_rate.zip(self_agreement).map(|(c, s)| c - s),
            max_drop,
            fail_upper: bound(FAIL_CONFIDENCE).map(|(_, upper)| upper),
            pass_lower: bound(PASS_CONFIDENCE).map(|(lower, _)| lower),
        }
    }

    /// The match criterion's verdict under the relative gate.
    pub(super) fn rule(&self) -> Line {
        if self.candidate_compared == 0 {
            return (Verdict::Hold, "match: no compared responses yet".to_owned());
        }
        if self.self_compared == 0 {
            return (
                Verdict::Hold,
                "match (relative): no stable-vs-stable pairs yet (compare.noise_percent)"
                    .to_owned(),
            );
        }
        let points =
            |x: Option<f64>| x.map_or("n/a".to_owned(), |x| format!("{:+.1} pts", x * 100.0));
        let what = format!(
            "match (relative): candidate {} ({} of {}) vs stable's self-agreement {} ({} of {}), \
             difference {}",
            self.candidate_rate.map_or("n/a".into(), pct),
            self.candidate_matched,
            self.candidate_compared,
            self.self_agreement.map_or("n/a".into(), pct),
            self.self_matched,
            self.self_compared,
            points(self.difference),
        );
        let limit = -self.max_drop;
        let limit_text = format!("{:+.1} pts", limit * 100.0);
        if self.fail_upper.is_some_and(|u| u < limit) {
            let msg = format!(
                "{what}: credibly below the floor by more than {} ({}% upper bound {})",
                pct(self.max_drop),
                FAIL_CONFIDENCE * 100.0,
                points(self.fail_upper)
            );
            return (Verdict::Fail, msg);
        }
        if self.pass_lower.is_some_and(|l| l >= limit) {
            let msg = format!(
                "{what}: credibly within {} of the floor ({}% lower bound {} >= {limit_text})",
                pct(self.max_drop),
                PASS_CONFIDENCE * 100.0,
                points(self.pass_lower)
            );
            return (Verdict::Pass, msg);
        }
        let msg = format!(
            "{what}: not yet credibly within {} of the floor ({}% lower bound {}, need >= \
             {limit_text})",
            pct(self.max_drop),
            PASS_CONFIDENCE * 100.0,
            points(self.pass_lower)
        );
        (Verdict::Hold, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Newcombe (1998), "Interval estimation for the difference between
    /// independent proportions", Table II, example (a): 56/70 − 48/80, 95%
    /// two-sided interval by method 10 is 0.0524 to 0.3339.
    #[test]
    fn newcombe_interval_matches_the_published_example() {
        let (lower, upper) = newcombe_interval(56, 70, 48, 80, 1.959_964).unwrap();
        assert!((lower - 0.0524).abs() < 5e-5, "{lower}");
        assert!((upper - 0.3339).abs() < 5e-5, "{upper}");
        // Example (h): 10/10 − 0/10 runs into the boundary: 0.6075 to 1.
        let (lower, upper) = newcombe_interval(10, 10, 0, 10, 1.959_964).unwrap();
        assert!((lower - 0.6075).abs() < 5e-5, "{lower}");
        assert!((upper - 1.0).abs() < 1e-9, "{upper}");
        assert_eq!(newcombe_interval(1, 0, 1, 2, 1.96), None);
    }

    fn verdict(matched: u64, compared: u64, noise: (u64, u64), drop: f64) -> Verdict {
        let noise = NoiseCounts {
            matched: noise.0,
            compared: noise.1,
        };
        RelativeEvidence::measure(matched, compared, noise, drop)
            .rule()
            .0
    }

    #[test]
    fn passes_near_the_floor_fails_far_below_and_holds_between() {
        // 78% against a floor of 80%, 400 pairs each, margin 10 points:
        // the 95% lower bound of the difference is about −6.7 points.
        assert_eq!(verdict(312, 400, (320, 400), 0.10), Verdict::Pass);
        // 60% against 80%: the 99% upper bound is below −10 points.
        assert_eq!(verdict(240, 400, (320, 400), 0.10), Verdict::Fail);
        // The same rates on 40 pairs are not evidence either way.
        assert_eq!(verdict(24, 40, (32, 40), 0.10), Verdict::Hold);
        assert_eq!(verdict(31, 40, (32, 40), 0.10), Verdict::Hold);
        // No floor yet: hold, whatever the candidate does.
        assert_eq!(verdict(0, 400, (0, 0), 0.10), Verdict::Hold);
    }

    #[test]
    fn evidence_records_the_numbers() {
        let e = RelativeEvidence::measure(
            312,
            400,
            NoiseCounts {
                matched: 320,
                compared: 400,
            },
            0.10,
        );
        assert_eq!(e.candidate_rate, Some(0.78));
        assert_eq!(e.self_agreement, Some(0.8));
        assert!((e.difference.unwrap() + 0.02).abs() < 1e-12);
        let lower = e.pass_lower.unwrap();
        let upper = e.fail_upper.unwrap();
        assert!(lower > -0.068 && lower < -0.067, "{lower}");
        assert!(upper > 0.04 && upper < 0.05, "{upper}");
    }
}
