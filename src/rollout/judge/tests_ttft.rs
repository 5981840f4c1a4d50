use std::time::Duration;

use super::tests::Window;
use super::ttft::StreamWindow;
use super::{Thresholds, Verdict, judge};
use crate::stats::window::latency_histogram;

fn ttft(ms: u64, n: u64) -> hdrhistogram::Histogram<u64> {
    let mut h = latency_histogram();
    for i in 0..n {
        // A little spread, as real first tokens have.
        h.record(ms * 1000 + (i % 50) * 100).expect("in range");
    }
    h
}

fn check(j: &super::Judgement) -> Option<(Verdict, String)> {
    j.checks
        .iter()
        .find(|c| c.criterion == "ttft")
        .map(|c| (c.verdict, c.reason.clone()))
}

#[test]
fn without_streams_there_is_no_ttft_criterion() {
    let j = Window::healthy(2000).judge();
    assert_eq!(check(&j), None);
    assert_eq!(j.evidence.criteria.ttft, None);
    assert!(j.evidence.ttft.is_none());
}

#[test]
fn a_much_slower_first_token_fails_and_an_equal_one_passes() {
    let w = Window::healthy(2000);
    let (stable, slow, same) = (ttft(200, 600), ttft(800, 600), ttft(200, 600));
    let judged = |candidate| {
        let mut input = w.input();
        input.ttft = Some(StreamWindow {
            stable: Some(&stable),
            candidate: Some(candidate),
        });
        judge(&input, &Thresholds::default())
    };
    let j = judged(&slow);
    let (verdict, reason) = check(&j).expect("streams were judged");
    assert_eq!(verdict, Verdict::Fail, "{reason}");
    assert!(reason.starts_with("time to first token"), "{reason}");
    assert_eq!(j.verdict, Verdict::Fail);
    assert_eq!(j.evidence.criteria.ttft, Some(Verdict::Fail));
    let e = j.evidence.ttft.expect("recorded");
    assert_eq!((e.stable_samples, e.candidate_samples), (600, 600));

    let j = judged(&same);
    assert_eq!(
        check(&j).map(|c| c.0),
        Some(Verdict::Pass),
        "{:?}",
        j.checks
    );
    assert_eq!(j.verdict, Verdict::Pass, "{:?}", j.reasons);
}

#[test]
fn too_few_streams_hold() {
    let w = Window::healthy(2000);
    let (stable, candidate) = (ttft(200, 20), ttft(200, 20));
    let mut input = w.input();
    input.ttft = Some(StreamWindow {
        stable: Some(&stable),
        candidate: Some(&candidate),
    });
    input.elapsed = Duration::from_secs(3600);
    let j = judge(&input, &Thresholds::default());
    let (verdict, reason) = check(&j).expect("streams were judged");
    assert_eq!(verdict, Verdict::Hold);
    assert!(reason.contains("need 500"), "{reason}");
}
