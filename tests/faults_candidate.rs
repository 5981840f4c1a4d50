//! Fault injection, candidate side: every way a shadow backend can misbehave
//! (slow, hung, refusing, resetting, truncating, crashing, answering
//! nonsense or a 1 GB body, flapping), each checked for
//!
//! 1. the client's outcome: stable's answer, unchanged and not delayed;
//! 2. the counters that say what happened (`understudy_shadow_total`,
//!    `understudy_comparisons_total`, `understudy_upstream_failures_total`,
//!    `understudy_requests_total`), exactly;
//! 3. no leaks: mirrors in flight and client connections fall back to 0, and
//!    the fake upstreams' connections are closed (at once for broken
//!    exchanges, at shutdown for pooled ones);
//! 4. bounded memory (the proxy runs in this process, so its RSS is ours).
//!
//! `tests/mirror.rs` has the first, narrower versions of some of these
//! (client outcome and shadow/comparison counts only).

mod support;

use std::time::Duration;

use http::Method;
use support::harness;
use support::harness::series::{comparisons, failures, requests, shadow};
use support::memory::RssSampler;
use support::{FakeUpstream, Reply, http_client, refused_addr, send};
use tokio::task::JoinSet;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);
const STABLE_BODY: &str = r#"{"predictions":[0.1,0.9]}"#;
const STABLE_DELAY: Duration = Duration::from_millis(20);
/// Short, so hung mirrors end quickly.
const SHADOW: &str = "[shadow]\ntimeout = \"2s\"\n";
/// Sequential requests per case.
const REQUESTS: usize = 10;
/// What `REQUESTS` sequential client requests may take in all: about 20×
/// stable's latency, yet below what waiting for a 10× slower candidate
/// (2 s), a hung one (20 s) or a 1 GB body would cost.
const CLIENT_BUDGET: Duration = Duration::from_millis(1500);
/// How far RSS may rise while a case runs.
const RSS_BUDGET: u64 = 64 << 20;

const SHADOW_RESULTS: [&str; 5] = [
    "sent",
    "dropped_overload",
    "skipped_body",
    "skipped_route",
    "error",
];
const COMPARISONS: [&str; 5] = [
    "match",
    "mismatch",
    "stable_error",
    "shadow_error",
    "uncomparable",
];
const FAILURE_KINDS: [&str; 5] = ["connect", "timeout", "protocol", "body", "grpc"];
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// Asserts that, of `series(label)` for each label, `expected` is at `n`
/// and all the others are at 0.
fn assert_only(
    metrics: &str,
    case: &str,
    labels: &[&str],
    series: impl Fn(&str) -> String,
    expected: Option<&str>,
    n: usize,
) {
    for label in labels {
        let want = if Some(*label) == expected { n } else { 0 };
        let name = series(label);
        assert_eq!(
            harness::metric(metrics, &name),
            Some(want as f64),
            "{case}: {name}"
        );
    }
}

async fn stable() -> FakeUpstream {
    let reply = Reply::json(200, STABLE_BODY)
        .header("x-model", "stable")
        .delay(STABLE_DELAY);
    FakeUpstream::start(reply).await
}

/// Sends `n` sequential requests on one keep-alive client; each must get
/// exactly stable's answer. Returns the total and the slowest latency.
async fn client_gets_stable_answers(url: &str, n: usize, case: &str) -> (Duration, Duration) {
    let client = http_client();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let sent = Instant::now();
        let (status, headers, body) = send(&client, Method::POST, url, &[], "{}").await;
        slowest = slowest.max(sent.elapsed());
        assert_eq!(status, 200, "{case}: request {i}");
        assert_eq!(body, STABLE_BODY, "{case}: request {i}");
        assert_eq!(
            headers["x-understudy-backend"], "stable",
            "{case}: request {i}"
        );
        assert_eq!(headers["x-model"], "stable", "{case}: request {i}");
    }
    (started.elapsed(), slowest)
}

enum Candidate {
    Fake(Reply),
    Refused,
}

/// What every mirror of a case must be counted as.
struct Expect {
    /// `understudy_shadow_total{result}`.
    shadow: &'static str,
    /// `understudy_comparisons_total{result}`.
    comparison: &'static str,
    /// `understudy_upstream_failures_total{backend="candidate",role="shadow",kind}`.
    failure: Option<&'static str>,
    /// `understudy_requests_total{backend="candidate",role="shadow",status_class}`.
    class: &'static str,
    /// The exchange leaves the connection unusable, so the proxy must close
    /// it at once (not keep it pooled).
    closes: bool,
}

impl Expect {
    /// The candidate answered (any status): sent, then compared.
    fn answered(comparison: &'static str, class: &'static str, closes: bool) -> Self {
        Self {
            shadow: "sent",
            comparison,
            failure: None,
            class,
            closes,
        }
    }

    /// The exchange failed with `kind`: a shadow error, unusable connection.
    fn failed(kind: &'static str, class: &'static str) -> Self {
        Self {
            shadow: "error",
            comparison: "shadow_error",
            failure: Some(kind),
            class,
            closes: true,
        }
    }
}

async fn run(name: &'static str, candidate: Candidate, expect: Expect) {
    let stable = stable().await;
    let (candidate, candidate_url) = match candidate {
        Candidate::Fake(reply) => {
            let up = FakeUpstream::start(reply).await;
            let url = up.url();
            (Some(up), url)
        }
        Candidate::Refused => (None, format!("http://{}", refused_addr().await)),
    };
    let proxy = harness::start(&stable.url(), Some(&candidate_url), SHADOW).await;
    let rss = RssSampler::start();

    // 1. The client sees stable, promptly.
    let url = format!("{}/v1/models/m:predict", proxy.url);
    let (total, slowest) = client_gets_stable_answers(&url, REQUESTS, name).await;
    assert!(
        total < CLIENT_BUDGET,
        "{name}: {REQUESTS} requests took {total:?} (slowest {slowest:?})"
    );

    // 2. Every mirror is counted as what it was, and nothing else.
    let metrics = proxy
        .wait_metric(&comparisons(expect.comparison), REQUESTS as f64, WAIT)
        .await;
    assert_only(
        &metrics,
        name,
        &SHADOW_RESULTS,
        shadow,
        Some(expect.shadow),
        REQUESTS,
    );
    assert_only(
        &metrics,
        name,
        &COMPARISONS,
        comparisons,
        Some(expect.comparison),
        REQUESTS,
    );
    let candidate_failures = |kind: &str| failures("candidate", "shadow", kind);
    assert_only(
        &metrics,
        name,
        &FAILURE_KINDS,
        candidate_failures,
        expect.failure,
        REQUESTS,
    );
    let candidate_requests = |class: &str| requests("candidate", "shadow", class);
    assert_only(
        &metrics,
        name,
        &STATUS_CLASSES,
        candidate_requests,
        Some(expect.class),
        REQUESTS,
    );
    // Stable served every request and is blamed for nothing.
    let stable_failures = |kind: &str| failures("stable", "serve", kind);
    assert_only(&metrics, name, &FAILURE_KINDS, stable_failures, None, 0);
    let stable_requests = |class: &str| requests("stable", "serve", class);
    assert_only(
        &metrics,
        name,
        &STATUS_CLASSES,
        stable_requests,
        Some("2xx"),
        REQUESTS,
    );

    // 3. Nothing leaks: the client's connection was dropped with its client.
    proxy.wait_drained(WAIT).await;
    if let Some(candidate) = &candidate {
        assert_eq!(candidate.request_count(), REQUESTS, "{name}");
        let at_most = if expect.closes { 0 } else { REQUESTS };
        assert!(
            candidate
                .wait_for_open_connections_at_most(at_most, WAIT)
                .await,
            "{name}: {} candidate connections still open, expected at most {at_most}",
            candidate.open_connections()
        );
    }
    assert!(
        stable.open_connections() <= 2,
        "{name}: {} stable connections for sequential requests",
        stable.open_connections()
    );
    // 4. Bounded memory.
    let grew = rss.finish();
    assert!(grew < RSS_BUDGET, "{name}: RSS grew by {} MiB", grew >> 20);
    eprintln!(
        "{name}: {REQUESTS} requests in {total:?} (slowest {slowest:?}); RSS +{} KiB; \
         candidate connections open after: {:?}",
        grew >> 10,
        candidate.as_ref().map(FakeUpstream::open_connections)
    );

    // Pooled connections go with the proxy.
    proxy.stop().await;
    assert!(
        stable.wait_for_open_connections_at_most(0, WAIT).await,
        "{name}: stable connections outlived the proxy"
    );
    if let Some(candidate) = &candidate {
        assert!(
            candidate.wait_for_open_connections_at_most(0, WAIT).await,
            "{name}: candidate connections outlived the proxy"
        );
    }
}

#[tokio::test]
async fn slow_candidate() {
    let slow = Reply::json(200, STABLE_BODY).delay(STABLE_DELAY * 10);
    let expect = Expect::answered("match", "2xx", false);
    run("slow (10x stable's latency)", Candidate::Fake(slow), expect).await;
}

#[tokio::test]
async fn hung_candidate() {
    let expect = Expect::failed("timeout", "error");
    run("hung", Candidate::Fake(Reply::hang()), expect).await;
}

#[tokio::test]
async fn candidate_stalling_mid_body_past_the_shadow_timeout() {
    // The head comes at once, the rest of the body after shadow.timeout:
    // the deadline covers the whole exchange, not just the head.
    let chunks = [r#"{"predictions":"#, "[0.1,0.9]}"];
    let stalling = Reply::chunked(chunks, Duration::from_secs(5));
    let expect = Expect::failed("body", "2xx");
    run("stalled body", Candidate::Fake(stalling), expect).await;
}

#[tokio::test]
async fn candidate_refusing_connections() {
    let expect = Expect::failed("connect", "error");
    run("refusing connections", Candidate::Refused, expect).await;
}

#[tokio::test]
async fn candidate_resetting_before_the_head() {
    let expect = Expect::failed("protocol", "error");
    run(
        "reset (RST, no head)",
        Candidate::Fake(Reply::reset()),
        expect,
    )
    .await;
}

#[tokio::test]
async fn candidate_closing_right_after_the_head() {
    let expect = Expect::failed("body", "2xx");
    let reply = Reply::close_mid_body(0);
    run("close after headers", Candidate::Fake(reply), expect).await;
}

#[tokio::test]
async fn candidate_closing_mid_body() {
    let expect = Expect::failed("body", "2xx");
    let reply = Reply::close_mid_body(100_000);
    run("close mid-body", Candidate::Fake(reply), expect).await;
}

#[tokio::test]
async fn candidate_answering_garbage() {
    let expect = Expect::failed("protocol", "error");
    run(
        "garbage (not HTTP)",
        Candidate::Fake(Reply::garbage()),
        expect,
    )
    .await;
}

#[tokio::test]
async fn candidate_answering_5xx() {
    let expect = Expect::answered("shadow_error", "5xx", false);
    run("500", Candidate::Fake(Reply::status(500)), expect).await;
}

#[tokio::test]
async fn candidate_answering_non_json() {
    let html = Reply::bytes(200, "text/html", "<html>oops</html>");
    let expect = Expect::answered("uncomparable", "2xx", false);
    run("non-JSON 200", Candidate::Fake(html), expect).await;
}

#[tokio::test]
async fn candidate_answering_truncated_json() {
    // Complete HTTP (correct Content-Length), broken JSON.
    let truncated = Reply::json(200, r#"{"predictions":[1,2"#);
    let expect = Expect::answered("uncomparable", "2xx", false);
    run("truncated JSON", Candidate::Fake(truncated), expect).await;
}

#[tokio::test]
async fn candidate_answering_a_1_gib_body() {
    // The mirror keeps `shadow.max_body_bytes` (1 MiB) and stops reading:
    // the rest is never streamed, and the connection is closed.
    let expect = Expect::answered("uncomparable", "2xx", true);
    run("1 GiB body", Candidate::Fake(Reply::large(1 << 30)), expect).await;
}

/// A hung candidate holds every mirror permit until `shadow.timeout`;
/// later mirrors are dropped, not queued, and once the permits come back
/// mirroring resumes.
#[tokio::test]
async fn hung_candidate_saturating_max_in_flight_recovers() {
    let stable = stable().await;
    let candidate = FakeUpstream::start(Reply::hang()).await;
    let extra = "[shadow]\ntimeout = \"1s\"\nmax_in_flight = 2\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    let url = format!("{}/v1/models/m:predict", proxy.url);
    let (total, _) = client_gets_stable_answers(&url, 6, "saturated").await;
    assert!(total < CLIENT_BUDGET, "6 requests took {total:?}");
    let metrics = proxy.wait_metric(&shadow("error"), 2.0, WAIT).await;
    assert_eq!(
        harness::metric(&metrics, &shadow("dropped_overload")),
        Some(4.0)
    );
    proxy.wait_drained(WAIT).await;
    assert!(candidate.wait_for_open_connections_at_most(0, WAIT).await);

    candidate.set_default(Reply::json(200, STABLE_BODY));
    client_gets_stable_answers(&url, 2, "recovered").await;
    let metrics = proxy.wait_metric(&comparisons("match"), 2.0, WAIT).await;
    assert_eq!(
        harness::metric(&metrics, &shadow("dropped_overload")),
        Some(4.0)
    );
    assert_eq!(harness::metric(&metrics, &shadow("sent")), Some(2.0));
    proxy.wait_drained(WAIT).await;
    proxy.stop().await;
    assert!(candidate.wait_for_open_connections_at_most(0, WAIT).await);
}

/// A candidate that keeps changing its mind during a burst of concurrent
/// requests: every client still gets stable's answer, every mirror is
/// counted once, and nothing is left behind.
#[tokio::test]
async fn flapping_candidate() {
    const WAVES: usize = 8;
    const PER_WAVE: usize = 24;
    const CONCURRENCY: usize = 6;
    const TOTAL: usize = WAVES * PER_WAVE;
    let stable = stable().await;
    let good = Reply::json(200, STABLE_BODY);
    let candidate = FakeUpstream::start(good.clone()).await;
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), SHADOW).await;
    let url = format!("{}/v1/models/m:predict", proxy.url);
    let client = http_client();
    let modes = [good.clone(), Reply::reset(), good, Reply::hang()];
    let started = Instant::now();
    for wave in 0..WAVES {
        // Flip while earlier mirrors are still in flight.
        candidate.set_default(modes[wave % modes.len()].clone());
        let mut tasks = JoinSet::new();
        for worker in 0..CONCURRENCY {
            let (client, url) = (client.clone(), url.clone());
            tasks.spawn(async move {
                for i in 0..PER_WAVE / CONCURRENCY {
                    let (status, headers, body) =
                        send(&client, Method::POST, &url, &[], "{}").await;
                    let which = format!("wave {wave} worker {worker} request {i}");
                    assert_eq!(status, 200, "{which}");
                    assert_eq!(body, STABLE_BODY, "{which}");
                    assert_eq!(headers["x-understudy-backend"], "stable", "{which}");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("client task panicked");
        }
    }
    let elapsed = started.elapsed();
    // ~ TOTAL / CONCURRENCY × 20 ms if nothing waits for the shadow.
    assert!(elapsed < Duration::from_secs(10), "burst took {elapsed:?}");
    drop(client);

    // Hung mirrors end at shadow.timeout; then every pair is decided.
    let deadline = Instant::now() + WAIT;
    let metrics = loop {
        let metrics = proxy.metrics().await;
        let decided: f64 = COMPARISONS
            .iter()
            .filter_map(|c| harness::metric(&metrics, &comparisons(c)))
            .sum();
        if decided >= TOTAL as f64 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "only {decided} of {TOTAL} pairs decided"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let count = |series: &str| harness::metric(&metrics, series).unwrap_or(-1.0) as usize;
    let (sent, errors) = (count(&shadow("sent")), count(&shadow("error")));
    assert_eq!(sent + errors, TOTAL, "every mirror sent or failed");
    for result in ["dropped_overload", "skipped_body", "skipped_route"] {
        assert_eq!(count(&shadow(result)), 0, "{result}");
    }
    let (matched, shadow_errors) = (
        count(&comparisons("match")),
        count(&comparisons("shadow_error")),
    );
    assert_eq!(matched + shadow_errors, TOTAL, "{metrics}");
    assert!(
        matched > 0 && shadow_errors > 0,
        "no flapping seen: {metrics}"
    );
    assert_eq!(
        sent, matched,
        "answered mirrors match, failed ones are shadow errors"
    );
    let timeouts = count(&failures("candidate", "shadow", "timeout"));
    let protocol = count(&failures("candidate", "shadow", "protocol"));
    assert!(
        timeouts > 0 && protocol > 0,
        "timeouts {timeouts}, protocol {protocol}"
    );
    assert_eq!(timeouts + protocol, errors, "{metrics}");
    assert_eq!(count(&requests("stable", "serve", "2xx")), TOTAL);
    for kind in FAILURE_KINDS {
        assert_eq!(
            count(&failures("stable", "serve", kind)),
            0,
            "stable {kind}"
        );
    }

    proxy.wait_drained(WAIT).await;
    // Reset and hung connections are gone; answered ones may stay pooled.
    let open = candidate.open_connections();
    assert!(
        open <= CONCURRENCY * 2,
        "{open} candidate connections left open"
    );
    eprintln!(
        "flapping: {TOTAL} requests in {elapsed:?}; {matched} matched, {shadow_errors} \
         shadow errors ({timeouts} timeouts, {protocol} resets); {open} candidate connections \
         pooled afterwards"
    );
    proxy.stop().await;
    assert!(stable.wait_for_open_connections_at_most(0, WAIT).await);
    assert!(candidate.wait_for_open_connections_at_most(0, WAIT).await);
}
