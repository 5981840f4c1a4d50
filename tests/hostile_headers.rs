//! Heads a client (or a backend) can abuse, over raw TCP where a normal
//! client library would not send them: the proxy's own headers cannot be
//! forged, the request id cannot be removed or blown up, and requests or
//! answers the proxy cannot forward faithfully are refused with a status
//! that says why.

mod support;

use std::time::Duration;

use support::harness;
use support::{FakeUpstream, RawUpstream, Reply, header_of, raw_exchange, status_of};

const WAIT: Duration = Duration::from_secs(5);

/// A proxy serving from `stable` and mirroring every request to `candidate`.
async fn mirroring_proxy(stable: &FakeUpstream, candidate: &FakeUpstream) -> harness::Proxy {
    let shadow_all = "[shadow]\npercent = 100\n";
    harness::start(&stable.url(), Some(&candidate.url()), shadow_all).await
}

/// Writes `request` to the proxy's data port as is and reads the raw answer.
async fn exchange(proxy: &harness::Proxy, request: &[u8]) -> String {
    raw_exchange(proxy.url.trim_start_matches("http://"), request, WAIT).await
}

/// Waits (bounded) until `upstream` has received `n` requests.
async fn wait_requests(upstream: &FakeUpstream, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while upstream.request_count() < n {
        assert!(tokio::time::Instant::now() < deadline, "no request arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_proxys_own_headers_cannot_be_forged_in_either_direction() {
    let stable = FakeUpstream::start(
        Reply::json(200, "{}")
            .header("x-understudy-shadow", "1")
            .header("x-understudy-backend", "candidate"),
    )
    .await;
    let candidate = FakeUpstream::start(Reply::json(200, "{}")).await;
    let proxy = mirroring_proxy(&stable, &candidate).await;
    let response = exchange(
        &proxy,
        b"POST /p HTTP/1.1\r\nHost: x\r\nX-Understudy-Shadow: 1\r\nX-Understudy-Backend: candidate\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await;
    assert_eq!(status_of(&response), Some(200), "{response}");
    let served = &stable.received().await[0];
    assert_eq!(served.header("x-understudy-shadow"), None, "{served:?}");
    assert_eq!(served.header("x-understudy-backend"), None, "{served:?}");
    // The mirror carries the proxy's own marker, once.
    wait_requests(&candidate, 1).await;
    let mirrored = &candidate.received().await[0];
    let marks: Vec<_> = mirrored
        .headers
        .get_all("x-understudy-shadow")
        .iter()
        .collect();
    assert_eq!(marks, ["1"], "{mirrored:?}");
    // The backend cannot claim to be another backend or a shadow.
    assert_eq!(header_of(&response, "x-understudy-backend"), Some("stable"));
    assert_eq!(
        header_of(&response, "x-understudy-shadow"),
        None,
        "{response}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn connection_cannot_take_the_request_id_from_either_backend() {
    let stable = FakeUpstream::start(Reply::json(200, "{}")).await;
    let candidate = FakeUpstream::start(Reply::json(200, "{}")).await;
    let proxy = mirroring_proxy(&stable, &candidate).await;
    let response = exchange(
        &proxy,
        b"GET /p HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123\r\nConnection: x-request-id, close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), Some(200), "{response}");
    assert_eq!(
        header_of(&response, "x-request-id"),
        Some("abc-123"),
        "{response}"
    );
    assert_eq!(
        stable.received().await[0].header("x-request-id"),
        Some("abc-123")
    );
    wait_requests(&candidate, 1).await;
    assert_eq!(
        candidate.received().await[0].header("x-request-id"),
        Some("abc-123")
    );
    proxy.stop().await;
}

#[tokio::test]
async fn every_answer_carries_a_bounded_request_id() {
    let stable = FakeUpstream::start(Reply::json(200, "{}")).await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let send = |id: String| {
        let proxy = &proxy;
        async move {
            let header = if id.is_empty() {
                String::new()
            } else {
                format!("X-Request-Id: {id}\r\n")
            };
            let request =
                format!("GET /p HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n");
            exchange(proxy, request.as_bytes()).await
        }
    };
    // A success without an id of the client's gets the generated one.
    let response = send(String::new()).await;
    assert_eq!(status_of(&response), Some(200), "{response}");
    let generated = header_of(&response, "x-request-id")
        .expect("no id on a success")
        .to_owned();
    assert_eq!(
        stable.received().await[0].header("x-request-id"),
        Some(generated.as_str())
    );
    // 200 bytes are kept; 201 are replaced, for the backend and the client.
    let fits = "f".repeat(200);
    let response = send(fits.clone()).await;
    assert_eq!(header_of(&response, "x-request-id"), Some(fits.as_str()));
    let long = "l".repeat(201);
    let response = send(long.clone()).await;
    let replaced = header_of(&response, "x-request-id").unwrap();
    assert!(replaced != long && replaced.len() < 200, "{replaced}");
    assert_eq!(
        stable.received().await[2].header("x-request-id"),
        Some(replaced)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn requests_the_proxy_cannot_forward_faithfully_are_refused() {
    let stable = FakeUpstream::start(Reply::echo()).await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let cases: [(&str, &[u8], u16); 6] = [
        (
            "CONNECT",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
            405,
        ),
        ("HTTP/1.1 without Host", b"GET /p HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
        (
            "two Host headers",
            b"GET /p HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "a transfer coding besides chunked",
            b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            501,
        ),
        (
            "a second transfer-encoding line",
            b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            501,
        ),
        (
            "chunked twice",
            b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            400,
        ),
    ];
    for (name, request, status) in cases {
        let response = exchange(&proxy, request).await;
        assert_eq!(status_of(&response), Some(status), "{name}: {response}");
        assert!(
            header_of(&response, "x-request-id").is_some(),
            "{name}: {response}"
        );
        if status == 405 {
            let allow = header_of(&response, "allow").unwrap_or_default();
            assert!(
                allow.contains("GET") && !allow.contains("CONNECT"),
                "{response}"
            );
        }
    }
    assert_eq!(stable.request_count(), 0, "{:?}", stable.received().await);
    let metrics = proxy.metrics().await;
    assert_eq!(
        harness::metric(
            &metrics,
            r#"understudy_requests_rejected_total{reason="malformed"}"#
        ),
        Some(6.0)
    );
    // HTTP/1.0 needs no Host.
    let response = exchange(&proxy, b"GET /p HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&response), Some(200), "{response}");
    proxy.stop().await;
}

/// The client's answer when the only backend sends `raw`.
async fn answer_to(raw: &'static [u8]) -> (String, String) {
    let backend = RawUpstream::start(raw).await;
    let proxy = harness::start(&backend.url(), None, "").await;
    let response = exchange(
        &proxy,
        b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(backend.request_count(), 1);
    let metrics = proxy.metrics().await;
    proxy.stop().await;
    (response, metrics)
}

#[tokio::test]
async fn an_unrequested_101_from_the_backend_is_a_502() {
    let (response, metrics) = answer_to(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), Some(502), "{response}");
    assert!(header_of(&response, "x-request-id").is_some(), "{response}");
    let series =
        r#"understudy_upstream_failures_total{backend="stable",role="serve",kind="protocol"}"#;
    assert_eq!(harness::metric(&metrics, series), Some(1.0));
}

#[tokio::test]
async fn a_backend_answer_with_two_framings_is_a_502_not_a_truncated_200() {
    let (response, metrics) = answer_to(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          10\r\n0123456789abcdef\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), Some(502), "{response}");
    let series =
        r#"understudy_upstream_failures_total{backend="stable",role="serve",kind="protocol"}"#;
    assert_eq!(harness::metric(&metrics, series), Some(1.0));
}
