use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn chunk(text: &str) -> String {
    format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n")
}

/// A body sent in `parts`, the i-th arriving at `t0 + at[i]` ms.
fn frames_of(t0: Instant, parts: &[(&str, u64)]) -> (Vec<u8>, Vec<(usize, Instant)>) {
    let mut body = Vec::new();
    let mut frames = Vec::new();
    for (part, at) in parts {
        body.extend_from_slice(part.as_bytes());
        frames.push((body.len(), t0 + ms(*at)));
    }
    (body, frames)
}

#[test]
fn an_offset_maps_to_the_frame_that_completed_it() {
    let t0 = Instant::now();
    let frames = [(10, t0), (25, t0 + ms(5)), (40, t0 + ms(9))];
    assert_eq!(arrival(&frames, 1), Some(t0));
    assert_eq!(arrival(&frames, 10), Some(t0));
    // One byte into the second frame: it arrived with the second.
    assert_eq!(arrival(&frames, 11), Some(t0 + ms(5)));
    assert_eq!(arrival(&frames, 25), Some(t0 + ms(5)));
    assert_eq!(arrival(&frames, 40), Some(t0 + ms(9)));
    assert_eq!(arrival(&frames, 41), None);
    assert_eq!(arrival(&frames, 0), None);
    assert_eq!(arrival(&[], 5), None);
}

#[test]
fn ttft_counts_from_the_request_to_the_first_output_event() {
    let t0 = Instant::now();
    let role = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
    let (a, b, c) = (chunk("Hel"), chunk("lo"), chunk("!"));
    let usage = "data: {\"choices\":[],\"usage\":{\"completion_tokens\":5}}\n\ndata: [DONE]\n\n";
    let parts = [(role, 3), (&a, 200), (&b, 230), (&c, 250), (usage, 251)];
    let (body, frames) = frames_of(t0, &parts);
    let sample = measure(t0, &body, &frames).expect("a stream with output");
    // The role chunk came first but carries no output.
    assert_eq!(sample.ttft, ms(200));
    assert_eq!(sample.gaps, [ms(30), ms(20)]);
    // Four tokens after the first, over the 50 ms between the first and
    // the last output event.
    let rate = sample.tokens_per_second.expect("usage was sent");
    assert!((rate - 4.0 / 0.050).abs() < 1e-6, "{rate}");
}

#[test]
fn an_event_split_across_frames_arrives_with_its_blank_line() {
    let t0 = Instant::now();
    let a = chunk("x");
    let (head, tail) = a.split_at(a.len() - 1);
    let (body, frames) = frames_of(t0, &[(head, 100), (tail, 140)]);
    let sample = measure(t0, &body, &frames).expect("output");
    assert_eq!(sample.ttft, ms(140));
    assert!(sample.gaps.is_empty());
    assert_eq!(sample.tokens_per_second, None);
}

#[test]
fn events_in_one_frame_have_no_gap_and_no_output_means_no_sample() {
    let t0 = Instant::now();
    let both = format!("{}{}", chunk("a"), chunk("b"));
    let (body, frames) = frames_of(t0, &[(&both, 50)]);
    let sample = measure(t0, &body, &frames).expect("output");
    assert_eq!((sample.ttft, sample.gaps), (ms(50), vec![Duration::ZERO]));
    let (body, frames) = frames_of(t0, &[("data: [DONE]\n\n", 50)]);
    assert_eq!(measure(t0, &body, &frames), None);
    let (body, frames) = frames_of(t0, &[("{\"not\":\"sse\"}", 50)]);
    assert_eq!(measure(t0, &body, &frames), None);
}

#[test]
fn stream_stats_merge_and_report_in_milliseconds() {
    let sample = StreamSample {
        ttft: ms(200),
        gaps: vec![ms(20), ms(20)],
        tokens_per_second: Some(50.0),
    };
    let mut a = StreamStats::default();
    a.record(&sample);
    let mut merged = None;
    StreamStats::merge_into(&mut merged, Some(&a));
    StreamStats::merge_into(&mut merged, None);
    StreamStats::merge_into(&mut merged, Some(&a));
    let report = StreamReport::of(&merged.expect("created by the first merge"));
    assert_eq!(report.streams, 2);
    let near = |v: Option<f64>, want: f64| (v.expect("a value") - want).abs() <= want * 0.01;
    assert!(near(report.ttft_p99_ms, 200.0), "{report:?}");
    assert!(near(report.itl_p50_ms, 20.0), "{report:?}");
    assert!(near(report.tokens_per_second_p50, 50.0), "{report:?}");
}
