//! W3C trace context: both backends get the client's trace (or a new one),
//! each request in a span of its own, and the access log and `/mismatches`
//! name the trace.

mod support;

use std::time::Duration;

use http::Method;
use support::harness;
use support::harness::series::comparisons;
use support::{FakeUpstream, Received, Reply, http_client, send};

const WAIT: Duration = Duration::from_secs(10);
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";
const PATH: &str = "/v1/models/m:predict";

/// A `traceparent` as the proxy sends it: `(trace id, span id, flags)`.
fn fields(traceparent: &str) -> (&str, &str, &str) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && s.bytes().any(|b| b != b'0')
    };
    assert!(lower_hex(parts[1], 32), "trace id of {traceparent}");
    assert!(lower_hex(parts[2], 16), "span id of {traceparent}");
    assert!(parts[3].len() == 2, "flags of {traceparent}");
    (parts[1], parts[2], parts[3])
}

/// The one request each backend received.
async fn one_each(stable: &FakeUpstream, candidate: &FakeUpstream) -> (Received, Received) {
    assert!(candidate.wait_for_requests(1, WAIT).await);
    let (mut s, mut c) = (stable.received().await, candidate.received().await);
    assert_eq!((s.len(), c.len()), (1, 1));
    (s.remove(0), c.remove(0))
}

/// Both backends' `traceparent` fields, after checking that they share the
/// trace and flags but not the span.
fn sibling_spans<'a>(stable: &'a Received, candidate: &'a Received) -> [(&'a str, &'a str); 2] {
    let (s_trace, s_span, s_flags) = fields(stable.header("traceparent").expect("stable's"));
    let (c_trace, c_span, c_flags) = fields(candidate.header("traceparent").expect("candidate's"));
    assert_eq!(s_trace, c_trace);
    assert_eq!(s_flags, c_flags);
    assert_ne!(s_span, c_span, "the two backend requests share a span");
    [(s_trace, s_span), (c_trace, c_span)]
}

#[tokio::test]
async fn the_client_trace_reaches_both_backends_the_log_and_the_mismatch() {
    let stable = FakeUpstream::start(Reply::json(200, r#"{"predictions":[1]}"#)).await;
    let candidate = FakeUpstream::start(Reply::json(200, r#"{"predictions":[2]}"#)).await;
    let dir = harness::TempDir::new("trace-context");
    let log_path = dir.path("access.jsonl");
    let extra = format!(
        "[log]\naccess = \"{}\"\n\n[compare]\npointer = \"/predictions\"\n",
        log_path.display()
    );
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), &extra).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");
    let headers = [
        ("x-request-id", "traced-1"),
        ("traceparent", traceparent.as_str()),
        ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ];
    let url = format!("{}{PATH}", proxy.url);
    let (status, _, _) = send(&http_client(), Method::POST, &url, &headers, "{}").await;
    assert_eq!(status, 200);

    let (s, c) = one_each(&stable, &candidate).await;
    for (trace, span) in sibling_spans(&s, &c) {
        assert_eq!(trace, CLIENT_TRACE);
        assert_ne!(
            span, CLIENT_PARENT,
            "a backend request reuses the client's span"
        );
    }
    assert_eq!(fields(s.header("traceparent").unwrap()).2, "01");
    for received in [&s, &c] {
        assert_eq!(
            received.header("tracestate"),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
    }

    proxy.wait_metric(&comparisons("mismatch"), 1.0, WAIT).await;
    let mismatches = proxy.mismatches().await;
    let record = &mismatches["mismatches"][0];
    assert_eq!(record["request_id"], "traced-1", "{mismatches:#}");
    assert_eq!(record["trace_id"], CLIENT_TRACE, "{mismatches:#}");

    proxy.stop().await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["request_id"], "traced-1", "{text}");
    assert_eq!(line["trace_id"], CLIENT_TRACE, "{text}");
}

#[tokio::test]
async fn a_missing_or_invalid_traceparent_starts_a_new_trace_for_both_backends() {
    let body = r#"{"predictions":[1]}"#;
    let uppercase = format!("00-{}-{CLIENT_PARENT}-01", CLIENT_TRACE.to_uppercase());
    let zero_trace = format!("00-{}-{CLIENT_PARENT}-01", "0".repeat(32));
    let cases: [&[(&str, &str)]; 3] = [
        &[],
        &[
            ("traceparent", uppercase.as_str()),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
        &[("traceparent", zero_trace.as_str())],
    ];
    let mut traces = Vec::new();
    for headers in cases {
        let stable = FakeUpstream::start(Reply::json(200, body)).await;
        let candidate = FakeUpstream::start(Reply::json(200, body)).await;
        let proxy = harness::start(&stable.url(), Some(&candidate.url()), "").await;
        let url = format!("{}{PATH}", proxy.url);
        let (status, _, _) = send(&http_client(), Method::POST, &url, headers, "{}").await;
        assert_eq!(status, 200);
        let (s, c) = one_each(&stable, &candidate).await;
        let [(trace, _), _] = sibling_spans(&s, &c);
        assert_ne!(trace, CLIENT_TRACE, "{headers:?}");
        assert_eq!(fields(s.header("traceparent").unwrap()).2, "01");
        // A new trace continues no one's vendor state.
        assert_eq!(s.header("tracestate"), None, "{headers:?}");
        assert_eq!(c.header("tracestate"), None, "{headers:?}");
        traces.push(trace.to_owned());
        proxy.stop().await;
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 3, "new traces repeat an id: {traces:?}");
}

#[tokio::test]
async fn a_shadow_stripped_of_its_traceparent_leaves_the_mismatch_without_a_trace() {
    let stable = FakeUpstream::start(Reply::json(200, r#"{"predictions":[1]}"#)).await;
    let candidate = FakeUpstream::start(Reply::json(200, r#"{"predictions":[2]}"#)).await;
    let extra = "[shadow]\nstrip_headers = [\"traceparent\", \"tracestate\"]\n\n\
                 [compare]\npointer = \"/predictions\"\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01");
    let headers = [("traceparent", traceparent.as_str()), ("tracestate", "a=1")];
    let url = format!("{}{PATH}", proxy.url);
    send(&http_client(), Method::POST, &url, &headers, "{}").await;
    let (s, c) = one_each(&stable, &candidate).await;
    assert_eq!(fields(s.header("traceparent").unwrap()).0, CLIENT_TRACE);
    assert_eq!(s.header("tracestate"), Some("a=1"));
    assert_eq!(c.header("traceparent"), None);
    assert_eq!(c.header("tracestate"), None);
    proxy.wait_metric(&comparisons("mismatch"), 1.0, WAIT).await;
    let mismatches = proxy.mismatches().await;
    let record = &mismatches["mismatches"][0];
    assert!(record.get("trace_id").is_none(), "{mismatches:#}");
    proxy.stop().await;
}
