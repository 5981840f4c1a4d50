//! Judge unit tests for the latency quantile rule, the paired test, the
//! per-row gate, every-criterion checks and durations as people read them.

use super::tests::{Window, has_reason, latencies};
use super::*;
use hdrhistogram::Histogram;
use statrs::distribution::{ContinuousCDF, LogNormal};

#[test]
fn judged_quantile_follows_the_sample_size() {
    use super::latency::quantile_for;
    assert_eq!(quantile_for(499), None);
    assert_eq!(quantile_for(500), Some(0.90));
    assert_eq!(quantile_for(999), Some(0.90));
    assert_eq!(quantile_for(1_000), Some(0.95));
    assert_eq!(quantile_for(2_500), Some(0.98));
    assert_eq!(quantile_for(4_999), Some(0.98));
    assert_eq!(quantile_for(5_000), Some(0.99));
    // The smaller side decides.
    let mut w = Window::healthy(5_000);
    w.stable = (1_200, 12, latencies(1_200, 1.0));
    let j = w.judge();
    assert_eq!(j.evidence.latency.quantile, Some(0.95));
    assert!(has_reason(&j, "latency p95:"), "{:?}", j.reasons);
}

#[test]
fn tolerance_is_the_larger_of_relative_and_absolute() {
    use super::latency::tolerance;
    assert_eq!(tolerance(10_000.0, 0.2, 500.0), 12_000.0);
    assert_eq!(tolerance(400.0, 0.2, 500.0), 900.0);
    assert_eq!(tolerance(400.0, 0.2, 0.0), 480.0);
}

#[test]
fn sub_millisecond_backends_pass_on_the_absolute_slack() {
    // p99 ~0.4 ms, candidate 30% slower: beyond 1.2x, within +0.5 ms.
    let sub_ms = |n: u64, scale: f64| {
        let dist = LogNormal::new(150f64.ln(), 0.4).expect("valid");
        let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid");
        for i in 0..n {
            h.saturating_record((dist.inverse_cdf((i as f64 + 0.5) / n as f64) * scale) as u64);
        }
        h
    };
    let mut w = Window::healthy(2_000);
    (w.stable.2, w.candidate.3) = (sub_ms(2_000, 1.0), sub_ms(2_000, 1.3));
    assert_eq!(w.judge().evidence.criteria.latency, Verdict::Pass);
    let t = Thresholds {
        max_latency_increase_ms: 0.0,
        ..Thresholds::default()
    };
    assert_ne!(
        judge(&w.input(), &t).evidence.criteria.latency,
        Verdict::Pass
    );
}

#[test]
fn a_tail_only_regression_fails_at_p99_while_p90_is_judged() {
    // 600 samples judge p90; the slowest 3% tripled must still fail.
    let n = 600;
    let dist = LogNormal::new(50_000f64.ln(), 0.4).expect("valid");
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid");
    for i in 0..n {
        let p = (i as f64 + 0.5) / n as f64;
        let us = dist.inverse_cdf(p) * if p > 0.97 { 3.0 } else { 1.0 };
        h.saturating_record(us as u64);
    }
    let mut w = Window::healthy(n);
    w.candidate.3 = h;
    let j = w.judge();
    assert_eq!(
        j.evidence.criteria.latency,
        Verdict::Fail,
        "{:?}",
        j.reasons
    );
    assert!(has_reason(&j, "latency p99:"), "{:?}", j.reasons);
}

#[test]
fn durations_read_like_a_person_writes_them() {
    assert_eq!(human_duration(Duration::ZERO), "0s");
    assert_eq!(human_duration(Duration::from_secs(60)), "60s");
    assert_eq!(human_duration(Duration::from_millis(1_500)), "1.5s");
    assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(human_duration(Duration::from_micros(500)), "500µs");
    let mut w = Window::healthy(2_000);
    w.elapsed_secs = 1;
    let t = Thresholds {
        interval: Duration::ZERO,
        ..Thresholds::default()
    };
    let j = judge(&w.input(), &t);
    assert!(
        j.checks
            .iter()
            .any(|c| c.reason == "interval: 1s in step >= 0s"),
        "{:?}",
        j.checks
    );
}

#[test]
fn every_criterion_is_checked_even_when_one_blocks() {
    let mut w = Window::healthy(2_000);
    w.elapsed_secs = 5;
    let j = w.judge();
    assert_eq!(j.verdict, Verdict::Hold);
    assert_eq!(j.reasons.len(), 1, "{:?}", j.reasons);
    let names: Vec<&str> = j.checks.iter().map(|c| c.criterion.as_str()).collect();
    assert_eq!(names, ["interval", "volume", "errors", "latency", "match"]);
    assert_eq!(j.checks[3].verdict, Verdict::Pass, "{:?}", j.checks[3]);
}

#[test]
fn signed_rank_test_sees_a_shift_and_passes_equal_pairs() {
    use super::paired::{measure, rule};
    let dist = LogNormal::new(20_000f64.ln(), 0.3).expect("valid");
    let n = 500;
    // Pairs drawn from two interleaved quantile grids: no common ranks.
    let pairs = |scale: f64| -> Vec<(u64, u64)> {
        (0..n)
            .map(|i| {
                let a = dist.inverse_cdf((i as f64 + 0.25) / n as f64);
                let b = dist.inverse_cdf(((i * 7919) % n) as f64 / n as f64 + 0.5 / n as f64);
                (a as u64, (b * scale) as u64)
            })
            .collect()
    };
    let equal = measure(&pairs(1.0), 0.2, 500.0);
    assert_eq!(rule(&equal).0, Verdict::Pass, "{equal:?}");
    let slow = measure(&pairs(1.5), 0.2, 500.0);
    assert_eq!(rule(&slow).0, Verdict::Fail, "{slow:?}");
    assert_eq!(
        rule(&measure(&pairs(1.0)[..10], 0.2, 500.0)).0,
        Verdict::Hold
    );
}

#[test]
fn row_unit_judges_rows_with_the_clustered_bound() {
    let mut w = Window::healthy(2_000);
    let mut rows = RowClusters::default();
    // 2 000 requests of 8 rows; 1 in 20 requests disagrees on every row.
    for i in 0..2_000u64 {
        let matched = if i % 20 == 0 { 0 } else { 8 };
        rows.record(&crate::compare::ElementCounts {
            matched,
            mismatched: 8 - matched,
        });
    }
    let t = Thresholds {
        match_unit: MatchUnit::Row,
        min_match_rate: 0.93,
        ..Thresholds::default()
    };
    let mut input = w.input();
    input.rows = rows;
    let j = judge(&input, &t);
    let r = j.evidence.row_matching.as_ref().expect("rows");
    assert!(
        (r.rate - 0.95).abs() < 1e-9 && r.design_effect > 7.0,
        "{r:?}"
    );
    assert!(
        has_reason(&j, "match (rows): agreement 95.00%"),
        "{:?}",
        j.checks
    );
    assert_eq!(
        j.evidence.criteria.matching,
        Verdict::Pass,
        "{:?}",
        j.checks
    );
    // Without rows the row unit holds rather than judging requests.
    w.matched = 2_000;
    assert_eq!(
        judge(&w.input(), &t).evidence.criteria.matching,
        Verdict::Hold
    );
}
