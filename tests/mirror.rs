//! Mirroring: what the candidate receives, and proof that no shadow
//! behaviour (slow, hung, dead, broken, overloaded) reaches the client.

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::harness;
use support::harness::series::{comparisons, shadow};
use support::{FakeUpstream, Gate, Received, Reply, http_client, refused_addr, send};

const WAIT: Duration = Duration::from_secs(10);
const STABLE_BODY: &str = r#"{"predictions":[0.1,0.9]}"#;

fn find<'a>(received: &'a [Received], path_and_query: &str) -> &'a Received {
    received
        .iter()
        .find(|r| r.path_and_query == path_and_query)
        .unwrap_or_else(|| panic!("no request for {path_and_query} in {received:?}"))
}

/// Sends `n` sequential requests on one keep-alive client and checks that
/// each got exactly stable's answer.
async fn client_gets_stable_answers(proxy: &harness::Proxy, n: usize) {
    let client = http_client();
    let url = format!("{}/v1/models/m:predict", proxy.url);
    for i in 0..n {
        let (status, headers, body) = send(&client, Method::POST, &url, &[], "{}").await;
        assert_eq!(status, 200, "request {i}");
        assert_eq!(body, STABLE_BODY, "request {i}");
        assert_eq!(headers["x-understudy-backend"], "stable", "request {i}");
        assert_eq!(headers["x-model"], "stable", "request {i}");
    }
}

async fn stable() -> FakeUpstream {
    FakeUpstream::start(Reply::json(200, STABLE_BODY).header("x-model", "stable")).await
}

#[tokio::test]
async fn candidate_receives_the_same_request_marked_as_shadow() {
    let stable = stable().await;
    let candidate = FakeUpstream::start(Reply::json(200, STABLE_BODY)).await;
    let extra = "[shadow]\nstrip_headers = [\"authorization\", \"cookie\"]\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    let client = http_client();
    let body = r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP64","data":[1.5,2.5]}]}"#;
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer secret"),
        ("cookie", "session=s3cr3t"),
        ("x-tenant", "acme"),
        ("x-request-id", "req-42"),
        ("connection", "x-hop"),
        ("x-hop", "1"),
    ];
    let infer = "/v2/models/iris/infer?trace=1&b=2";
    let url = format!("{}{infer}", proxy.url);
    send(&client, Method::POST, &url, &headers, body).await;
    let url = format!("{}/items/9", proxy.url);
    send(&client, Method::PUT, &url, &[], "put-body").await;
    assert!(candidate.wait_for_requests(2, WAIT).await);

    let (on_stable, on_candidate) = (stable.received().await, candidate.received().await);
    let (s, c) = (find(&on_stable, infer), find(&on_candidate, infer));
    assert_eq!(c.method, Method::POST);
    assert_eq!(c.body, body);
    assert_eq!(c.header("x-understudy-shadow"), Some("1"));
    assert_eq!(
        c.header("host"),
        Some(candidate.addr().to_string().as_str())
    );
    assert_eq!(c.header("x-request-id"), Some("req-42"));
    assert_eq!(c.header("x-tenant"), Some("acme"));
    assert_eq!(c.header("content-type"), Some("application/json"));
    assert!(c.headers.get("authorization").is_none(), "{c:?}");
    assert!(c.headers.get("cookie").is_none(), "{c:?}");
    assert!(
        c.headers.get("x-hop").is_none(),
        "hop-by-hop mirrored: {c:?}"
    );
    // Stripping is for the mirror only; stable is not marked as shadow.
    assert_eq!(s.header("authorization"), Some("Bearer secret"));
    assert_eq!(s.header("cookie"), Some("session=s3cr3t"));
    assert!(s.headers.get("x-understudy-shadow").is_none(), "{s:?}");

    let (s, c) = (
        find(&on_stable, "/items/9"),
        find(&on_candidate, "/items/9"),
    );
    assert_eq!(c.method, Method::PUT);
    assert_eq!(c.body, "put-body");
    let id = s.header("x-request-id").expect("generated request id");
    assert_eq!(
        c.header("x-request-id"),
        Some(id),
        "both backends see one id"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn client_answers_never_wait_for_the_candidate() {
    let stable = stable().await;
    let gate = Gate::new();
    let candidate = FakeUpstream::start(Reply::json(200, STABLE_BODY).held_by(&gate)).await;
    let extra = "[shadow]\ntimeout = \"60s\"\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    // The candidate answers nothing until the gate opens: a client answer
    // that waited for its mirror would never arrive.
    tokio::time::timeout(WAIT, client_gets_stable_answers(&proxy, 20))
        .await
        .expect("the client's answers waited for the candidate");
    // Every mirror went out, and none has been answered yet.
    assert!(candidate.wait_for_requests(20, WAIT).await);
    let metrics = proxy.metrics().await;
    assert_eq!(harness::metric(&metrics, &comparisons("match")), Some(0.0));
    assert_eq!(
        harness::metric(&metrics, "understudy_shadow_in_flight"),
        Some(20.0)
    );
    // Answered late, they are still compared.
    gate.open();
    proxy
        .wait_metric(&comparisons("match"), 20.0, Duration::from_secs(15))
        .await;
    proxy.stop().await;
}

#[tokio::test]
async fn hung_candidate_never_delays_the_client() {
    let stable = stable().await;
    let candidate = FakeUpstream::start(Reply::hang()).await;
    let extra = "[shadow]\ntimeout = \"3s\"\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    // Had each request waited for its mirror's timeout, 20 would take a
    // minute; the bound is far from both that and a normal run.
    tokio::time::timeout(WAIT, client_gets_stable_answers(&proxy, 20))
        .await
        .expect("the client's answers waited for the hung candidate");
    assert!(candidate.wait_for_requests(20, WAIT).await);
    // Each hung mirror ends at shadow.timeout as a counted shadow error.
    let metrics = proxy
        .wait_metric(&comparisons("shadow_error"), 20.0, Duration::from_secs(15))
        .await;
    assert_eq!(harness::metric(&metrics, &shadow("error")), Some(20.0));
    let timeouts =
        r#"understudy_upstream_failures_total{backend="candidate",role="shadow",kind="timeout"}"#;
    assert_eq!(harness::metric(&metrics, timeouts), Some(20.0));
    proxy.stop().await;
}

#[tokio::test]
async fn failing_candidates_never_change_the_client_response() {
    let refused = format!("http://{}", refused_addr().await);
    let reset = FakeUpstream::start(Reply::reset()).await;
    let crashing = FakeUpstream::start(Reply::status(500)).await;
    let garbage = FakeUpstream::start(Reply::garbage()).await;
    let stable = stable().await;
    // (case, candidate url, shadow result of each mirror)
    let cases = [
        ("refused", refused, "error"),
        ("reset", reset.url(), "error"),
        ("500", crashing.url(), "sent"),
        ("garbage", garbage.url(), "error"),
    ];
    for (case, url, result) in cases {
        let proxy = harness::start(&stable.url(), Some(&url), "").await;
        client_gets_stable_answers(&proxy, 5).await;
        let metrics = proxy
            .wait_metric(&comparisons("shadow_error"), 5.0, WAIT)
            .await;
        assert_eq!(
            harness::metric(&metrics, &shadow(result)),
            Some(5.0),
            "{case}"
        );
        let errors = harness::metric(&metrics, &comparisons("shadow_error"));
        assert_eq!(errors, Some(5.0), "{case}");
        assert_eq!(
            harness::metric(&metrics, &comparisons("match")),
            Some(0.0),
            "{case}"
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn mirrors_over_max_in_flight_are_dropped_and_counted() {
    let stable = stable().await;
    let candidate = FakeUpstream::start(Reply::hang()).await;
    let extra = "[shadow]\nmax_in_flight = 2\ntimeout = \"60s\"\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    // Waiting for a mirror here would mean waiting for the 60 s timeout.
    tokio::time::timeout(WAIT, client_gets_stable_answers(&proxy, 10))
        .await
        .expect("the client's answers waited for a mirror");
    let metrics = proxy
        .wait_metric(&shadow("dropped_overload"), 8.0, WAIT)
        .await;
    assert_eq!(
        harness::metric(&metrics, &shadow("dropped_overload")),
        Some(8.0)
    );
    assert_eq!(
        harness::metric(&metrics, "understudy_shadow_in_flight"),
        Some(2.0)
    );
    assert!(candidate.wait_for_requests(2, WAIT).await);
    assert!(
        !candidate
            .wait_for_requests(3, Duration::from_millis(500))
            .await,
        "a dropped mirror reached the candidate"
    );
    let status = proxy.status().await;
    assert_eq!(status["mirrors_in_flight"], 2, "{status:#}");
    assert_eq!(
        status["cumulative"]["shadow"]["dropped_overload"], 8,
        "{status:#}"
    );
    proxy.stop().await;
}

/// A body of two chunks with no declared length (sent chunked).
struct TwoChunks(Option<Bytes>, Option<Bytes>);

impl Body for TwoChunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.0.take().or_else(|| self.1.take());
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[tokio::test]
async fn bodies_over_max_body_bytes_are_forwarded_but_not_mirrored() {
    let stable = FakeUpstream::start(Reply::json(200, STABLE_BODY)).await;
    let candidate = FakeUpstream::start(Reply::json(200, STABLE_BODY)).await;
    let extra = "[shadow]\nmax_body_bytes = 1024\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    let client = http_client();
    let small = "s".repeat(100);
    let big = "b".repeat(4096);
    for (path, body) in [("/small", &small), ("/big", &big)] {
        let url = format!("{}{path}", proxy.url);
        let (status, _, got) = send(&client, Method::POST, &url, &[], body.clone()).await;
        assert_eq!(
            (status.as_u16(), got.as_ref()),
            (200, STABLE_BODY.as_bytes())
        );
    }
    // The same without content-length: the cap is only found while
    // streaming. A chunked body under the cap is mirrored whole.
    let chunked = Client::builder(TokioExecutor::new()).build_http();
    for (path, a, b) in [("/chunked-big", "c", "d"), ("/chunked-small", "e", "f")] {
        let n = if path == "/chunked-big" { 3000 } else { 400 };
        let body = TwoChunks(Some(a.repeat(n).into()), Some(b.repeat(n).into()));
        let request = Request::post(format!("{}{path}", proxy.url))
            .body(body)
            .unwrap();
        let response = chunked.request(request).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }

    let metrics = proxy.wait_metric(&shadow("skipped_body"), 2.0, WAIT).await;
    assert_eq!(
        harness::metric(&metrics, &shadow("skipped_body")),
        Some(2.0)
    );
    let on_stable = stable.received().await;
    assert_eq!(find(&on_stable, "/big").body, big);
    let chunked_big = "c".repeat(3000) + &"d".repeat(3000);
    assert_eq!(find(&on_stable, "/chunked-big").body, chunked_big);
    assert!(candidate.wait_for_requests(2, WAIT).await);
    proxy.wait_metric(&shadow("sent"), 2.0, WAIT).await;
    let on_candidate = candidate.received().await;
    assert_eq!(on_candidate.len(), 2, "{on_candidate:?}");
    assert_eq!(find(&on_candidate, "/small").body, small);
    let chunked_small = "e".repeat(400) + &"f".repeat(400);
    assert_eq!(find(&on_candidate, "/chunked-small").body, chunked_small);
    proxy.stop().await;
}

#[tokio::test]
async fn only_listed_routes_are_mirrored() {
    let stable = stable().await;
    let candidate = FakeUpstream::start(Reply::json(200, STABLE_BODY)).await;
    let extra = "[shadow]\nroutes = [\"/v2/models/*/infer\"]\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    let client = http_client();
    let paths = [
        "/v2/models/iris/infer",
        "/v2/models/iris/ready",
        "/v2/models/iris/infer/extra",
        "/healthz",
    ];
    for path in paths {
        let url = format!("{}{path}", proxy.url);
        let (status, _, body) = send(&client, Method::POST, &url, &[], "{}").await;
        assert_eq!(
            (status.as_u16(), body.as_ref()),
            (200, STABLE_BODY.as_bytes())
        );
    }
    let metrics = proxy.wait_metric(&shadow("skipped_route"), 3.0, WAIT).await;
    assert_eq!(
        harness::metric(&metrics, &shadow("skipped_route")),
        Some(3.0)
    );
    assert!(candidate.wait_for_requests(1, WAIT).await);
    proxy.wait_metric(&comparisons("match"), 1.0, WAIT).await;
    let on_candidate = candidate.received().await;
    assert_eq!(on_candidate.len(), 1, "{on_candidate:?}");
    assert_eq!(on_candidate[0].path(), "/v2/models/iris/infer");
    proxy.stop().await;
}

#[tokio::test]
async fn percent_zero_mirrors_nothing() {
    let stable = stable().await;
    let candidate = FakeUpstream::start(Reply::json(200, STABLE_BODY)).await;
    let extra = "[shadow]\npercent = 0\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    client_gets_stable_answers(&proxy, 10).await;
    assert!(
        !candidate.wait_for_requests(1, Duration::from_secs(1)).await,
        "percent = 0 mirrored a request"
    );
    let status = proxy
        .wait_status(WAIT, |s| {
            s["cumulative"]["stable"]["serve"]["requests"] == 10
        })
        .await;
    let shadow = &status["cumulative"]["shadow"];
    for result in [
        "sent",
        "dropped_overload",
        "skipped_body",
        "skipped_route",
        "error",
    ] {
        assert_eq!(shadow[result], 0, "{result}: {shadow:#}");
    }
    assert_eq!(status["cumulative"]["candidate"]["shadow"]["requests"], 0);
    proxy.stop().await;
}

/// A mirrored request whose serving backend is down is a `stable_error`
/// pair, whatever its method: the request body is buffered before stable
/// is tried, so a POST (every inference call) is replayed to the candidate
/// and judged like a GET.
#[tokio::test]
async fn unreachable_stable_is_a_stable_error_for_posts_too() {
    let stable = format!("http://{}", refused_addr().await);
    let candidate = FakeUpstream::start(Reply::json(200, STABLE_BODY)).await;
    let proxy = harness::start(&stable, Some(&candidate.url()), "").await;
    let client = http_client();
    let url = format!("{}/v1/models/m:predict", proxy.url);
    for (method, body) in [(Method::GET, ""), (Method::POST, r#"{"instances":[[1]]}"#)] {
        let (status, _, _) = send(&client, method, &url, &[], body).await;
        assert_eq!(status, 502);
    }
    let decided = |s: &serde_json::Value| {
        s["cumulative"]["comparisons"]["outcomes"]["stable_error"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    };
    let status = proxy.wait_status(WAIT, decided).await;
    let cumulative = &status["cumulative"];
    assert_eq!(cumulative["shadow"]["skipped_body"], 0, "{cumulative:#}");
    assert_eq!(cumulative["shadow"]["sent"], 2, "{cumulative:#}");
    assert_eq!(
        cumulative["comparisons"]["outcomes"]["stable_error"], 2,
        "{cumulative:#}"
    );
    proxy.stop().await;
}
