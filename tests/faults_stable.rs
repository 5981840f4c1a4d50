//! Fault injection, stable side: the serving backend down, hung past its
//! timeout, or breaking off mid-body. Each case checks the client's outcome
//! (a 502/504 JSON error of the proxy's own, or a body that ends with an
//! error rather than hanging), the counters, and that nothing leaks: no
//! mirror in flight, no client connection, no upstream connection left
//! behind by the failed exchange. A candidate is configured throughout, so
//! the mirror path runs alongside every failure.
//!
//! `tests/proxy.rs` has the stable-only basics (502 on refused, reset and
//! garbage, 504 on hang) without a mirror or leak checks.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use support::harness::series::{comparisons, failures, requests, shadow};
use support::harness::{self, assert_proxy_error};
use support::{FakeUpstream, Reply, http_client, refused_addr, send};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);
const CANDIDATE_BODY: &str = r#"{"predictions":[0.1,0.9]}"#;
const SHADOW: &str = "[shadow]\ntimeout = \"2s\"\n";
const FAILURE_KINDS: [&str; 5] = ["connect", "timeout", "protocol", "body", "grpc"];

/// Asserts stable's serve failures: `kind` at `n`, every other kind at 0.
fn assert_stable_failures(metrics: &str, kind: &str, n: f64) {
    for other in FAILURE_KINDS {
        let want = if other == kind { n } else { 0.0 };
        let series = failures("stable", "serve", other);
        assert_eq!(harness::metric(metrics, &series), Some(want), "{series}");
    }
}

/// Config with `backends.stable.timeout = "{timeout}"` and a short shadow
/// timeout.
fn config(stable: &str, candidate: &str, timeout: &str) -> String {
    let text = harness::config_text(stable, Some(candidate), SHADOW);
    let from = format!("url = \"{stable}\"\ntimeout = \"5s\"");
    assert!(text.contains(&from), "harness config changed:\n{text}");
    text.replacen(
        &from,
        &format!("url = \"{stable}\"\ntimeout = \"{timeout}\""),
        1,
    )
}

#[tokio::test]
async fn stable_down_gives_502_json() {
    let stable = format!("http://{}", refused_addr().await);
    let candidate = FakeUpstream::start(Reply::json(200, CANDIDATE_BODY)).await;
    let proxy = harness::start_text(&config(&stable, &candidate.url(), "1s")).await;
    let client = http_client();
    let url = format!("{}/v1/models/m:predict", proxy.url);
    for (method, body) in [(Method::GET, ""), (Method::POST, r#"{"instances":[[1]]}"#)] {
        let started = Instant::now();
        let got = send(&client, method.clone(), &url, &[], body).await;
        let took = started.elapsed();
        assert_proxy_error(method.as_str(), got, 502);
        assert!(
            took < Duration::from_secs(2),
            "{method}: refused took {took:?}"
        );
    }

    let metrics = proxy
        .wait_metric(&comparisons("stable_error"), 2.0, WAIT)
        .await;
    assert_stable_failures(&metrics, "connect", 2.0);
    let error_class = requests("stable", "serve", "error");
    assert_eq!(harness::metric(&metrics, &error_class), Some(2.0));
    // Both were mirrored: the POST's body is read (buffered) before stable
    // is tried, so it could be replayed although stable never took it.
    assert_eq!(harness::metric(&metrics, &shadow("sent")), Some(2.0));
    assert_eq!(
        harness::metric(&metrics, &shadow("skipped_body")),
        Some(0.0)
    );
    assert_eq!(harness::metric(&metrics, &shadow("error")), Some(0.0));
    assert_eq!(candidate.request_count(), 2);

    drop(client);
    proxy.wait_drained(WAIT).await;
    // One shadow connection per mirror at most (the two may overlap).
    assert!(candidate.open_connections() <= 2);
    proxy.stop().await;
    assert!(candidate.wait_for_open_connections_at_most(0, WAIT).await);
}

#[tokio::test]
async fn stable_timeout_gives_504_and_closes_the_hung_connection() {
    let stable = FakeUpstream::start(Reply::hang()).await;
    let candidate = FakeUpstream::start(Reply::json(200, CANDIDATE_BODY)).await;
    let proxy = harness::start_text(&config(&stable.url(), &candidate.url(), "1s")).await;
    let client = http_client();
    let url = format!("{}/v1/models/m:predict", proxy.url);
    let one = || async {
        let started = Instant::now();
        let got = send(&client, Method::POST, &url, &[], r#"{"instances":[[1]]}"#).await;
        (got, started.elapsed())
    };
    let ((a, took_a), (b, took_b)) = tokio::join!(one(), one());
    for (got, took) in [(a, took_a), (b, took_b)] {
        assert_proxy_error("hung stable", got, 504);
        assert!(
            took >= Duration::from_millis(900),
            "gave up early: {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "took {took:?} for a 1 s timeout"
        );
    }

    let metrics = proxy
        .wait_metric(&comparisons("stable_error"), 2.0, WAIT)
        .await;
    assert_stable_failures(&metrics, "timeout", 2.0);
    let error_class = requests("stable", "serve", "error");
    assert_eq!(harness::metric(&metrics, &error_class), Some(2.0));
    // Stable read the bodies before hanging, so both were mirrored.
    assert_eq!(harness::metric(&metrics, &shadow("sent")), Some(2.0));

    drop(client);
    proxy.wait_drained(WAIT).await;
    // The proxy gave up on the exchanges: their connections must not stay
    // open (a hung backend would otherwise pin one socket per request).
    assert!(
        stable.wait_for_open_connections_at_most(0, WAIT).await,
        "{} timed-out stable connections still open",
        stable.open_connections()
    );
    proxy.stop().await;
    assert!(candidate.wait_for_open_connections_at_most(0, WAIT).await);
}

#[tokio::test]
async fn stable_breaking_off_mid_body_breaks_the_client_stream() {
    const SENT: usize = 100_000;
    let stable = FakeUpstream::start(Reply::close_mid_body(SENT)).await;
    let candidate = FakeUpstream::start(Reply::json(200, CANDIDATE_BODY)).await;
    let proxy = harness::start_text(&config(&stable.url(), &candidate.url(), "1s")).await;
    let client = http_client();
    let request = Request::post(format!("{}/v1/models/m:predict", proxy.url))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let started = Instant::now();
    let response = client.request(request).await.expect("response head");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-understudy-backend"], "stable");
    // Stable announced SENT + 1024 bytes; the proxy passes that on.
    let announced = (SENT + 1024).to_string();
    assert_eq!(response.headers()["content-length"], announced.as_str());
    let mut body = response.into_body();
    let mut received = 0usize;
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => received += frame.data_ref().map_or(0, Bytes::len),
                Err(error) => return Err(error),
            }
        }
        Ok(())
    })
    .await;
    let took = started.elapsed();
    match read {
        Err(_) => panic!("client body hung after {received} bytes ({took:?})"),
        Ok(Ok(())) => panic!("client body ended cleanly after {received} of {announced} bytes"),
        Ok(Err(error)) => eprintln!("client body broke off after {received} bytes: {error}"),
    }
    assert!(received <= SENT, "{received} bytes");
    assert!(
        took < Duration::from_secs(5),
        "broken stream noticed after {took:?}"
    );

    let metrics = proxy
        .wait_metric(&failures("stable", "serve", "body"), 1.0, WAIT)
        .await;
    assert_stable_failures(&metrics, "body", 1.0);
    // The head was counted as a 2xx answer, the body as the failure.
    let ok_class = requests("stable", "serve", "2xx");
    assert_eq!(harness::metric(&metrics, &ok_class), Some(1.0));
    // The mirror went out and the candidate answered; stable broke off,
    // so the pair is stable's error (as a candidate body that breaks off
    // is a shadow error), never uncomparable.
    let metrics = proxy
        .wait_metric(&comparisons("stable_error"), 1.0, WAIT)
        .await;
    for result in ["match", "mismatch", "shadow_error", "uncomparable"] {
        let series = comparisons(result);
        assert_eq!(harness::metric(&metrics, &series), Some(0.0), "{series}");
    }
    assert_eq!(harness::metric(&metrics, &shadow("sent")), Some(1.0));

    drop(body);
    drop(client);
    proxy.wait_drained(WAIT).await;
    assert!(
        stable.wait_for_open_connections_at_most(0, WAIT).await,
        "broken stable connection still open"
    );
    proxy.stop().await;
    assert!(candidate.wait_for_open_connections_at_most(0, WAIT).await);
}
