//! Malformed and hostile HTTP over raw TCP: every case gets a 4xx or a
//! closed connection, nothing ambiguous reaches the backend (no request
//! smuggling), and the proxy keeps serving afterwards.

mod support;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::harness;
use support::{FakeUpstream, Reply, raw_exchange, status_of};

async fn proxy_with(extra: &str) -> (FakeUpstream, harness::Proxy, String) {
    let stable = FakeUpstream::start(Reply::echo()).await;
    let proxy = harness::start(&stable.url(), None, extra).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    (stable, proxy, addr)
}

async fn assert_still_serving(addr: &str) {
    let response = raw_exchange(
        addr,
        b"GET /healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&response), Some(200), "{response}");
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_and_never_reach_the_backend() {
    let (stable, proxy, addr) = proxy_with("").await;
    let cases: [(&str, &[u8]); 6] = [
        ("bad request line", b"GARBAGE\r\n\r\n"),
        ("invalid header bytes", b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Name: y\r\n\r\n"),
        (
            "duplicate content-length with different values",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "content-length that is not a number",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello",
        ),
        (
            "chunk size beyond any integer",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        ),
        (
            "transfer-encoding that is not chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        ),
    ];
    for (name, request) in cases {
        let response = raw_exchange(&addr, request, Duration::from_secs(3)).await;
        let status = status_of(&response);
        assert!(
            status.is_none_or(|s| (400..500).contains(&s)),
            "{name}: expected a 4xx or a closed connection, got {response:?}"
        );
    }
    // Only complete, unambiguous requests may have reached the backend:
    // none of the above is one.
    let received = stable.received().await;
    assert!(
        received.is_empty(),
        "forwarded: {:?}",
        received
            .iter()
            .map(|r| &r.path_and_query)
            .collect::<Vec<_>>()
    );
    assert_still_serving(&addr).await;
    proxy.stop().await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_never_forwarded_ambiguously() {
    let (stable, proxy, addr) = proxy_with("").await;
    // A smuggling attempt: the front sees one request, a naive back end
    // would see a second one hidden in the body.
    let request = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let response = raw_exchange(&addr, request, Duration::from_secs(3)).await;
    let status = status_of(&response);
    assert!(
        status.is_none_or(|s| s == 200 || (400..500).contains(&s)),
        "unexpected answer {response:?}"
    );
    let paths: Vec<String> = stable
        .received()
        .await
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert!(
        !paths.iter().any(|p| p.contains("smuggled")),
        "smuggled request reached the backend: {paths:?}"
    );
    for request in stable.received().await {
        // Whatever was forwarded was re-framed by the proxy: one framing only.
        let has_cl = request.headers.contains_key("content-length");
        let has_te = request.headers.contains_key("transfer-encoding");
        assert!(
            !(has_cl && has_te),
            "forwarded with both framings: {:?}",
            request.headers
        );
    }
    assert_still_serving(&addr).await;
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_header_gets_431() {
    let (stable, proxy, addr) = proxy_with("").await;
    let big = "a".repeat(100 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let response = raw_exchange(&addr, request.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status_of(&response), Some(431), "{response}");
    assert_eq!(stable.request_count(), 0);
    assert_still_serving(&addr).await;
    proxy.stop().await;
}

#[tokio::test]
async fn slowloris_connection_is_closed_after_the_header_timeout() {
    let stable = FakeUpstream::start(Reply::echo()).await;
    let text = harness::config_text(&stable.url(), None, "").replace(
        "drain_timeout = \"5s\"",
        "drain_timeout = \"5s\"\nheader_read_timeout = \"1s\"",
    );
    let proxy = harness::start_text(&text).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    // Keep trickling a header byte now and then, as slowloris does; the
    // proxy must close the connection anyway.
    let closed = loop {
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => continue,
            Err(_) => {
                if started.elapsed() > Duration::from_secs(10) {
                    break false;
                }
                if stream.write_all(b"X-a: b\r\n").await.is_err() {
                    break true;
                }
            }
        }
    };
    assert!(closed, "slow client was never disconnected");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(stable.request_count(), 0);
    assert_still_serving(&addr).await;
    proxy.stop().await;
}

#[tokio::test]
async fn body_over_listen_max_body_bytes_gets_413() {
    let stable = FakeUpstream::start(Reply::echo()).await;
    let text = harness::config_text(&stable.url(), None, "").replace(
        "drain_timeout = \"5s\"",
        "drain_timeout = \"5s\"\nmax_body_bytes = 1000",
    );
    let proxy = harness::start_text(&text).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    // Declared too large: refused before anything is forwarded.
    let body = "x".repeat(2000);
    let request = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = raw_exchange(&addr, request.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status_of(&response), Some(413), "{response}");
    assert!(response.contains("\"error\""), "{response}");
    // Chunked, growing past the limit while streaming.
    let chunk = "y".repeat(600);
    let request = format!(
        "POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    let response = raw_exchange(&addr, request.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status_of(&response), Some(413), "{response}");
    // Within the limit still works.
    let request =
        "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let response = raw_exchange(&addr, request.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status_of(&response), Some(200), "{response}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        harness::metric(
            &metrics,
            r#"understudy_requests_rejected_total{reason="body_too_large"}"#
        ),
        Some(2.0)
    );
    proxy.stop().await;
}

#[tokio::test]
async fn stalled_upload_gets_408_and_is_not_blamed_on_the_backend() {
    let stable = FakeUpstream::start(Reply::echo()).await;
    let text = harness::config_text(&stable.url(), None, "").replace(
        "drain_timeout = \"5s\"",
        "drain_timeout = \"5s\"\nbody_idle_timeout = \"1s\"",
    );
    let proxy = harness::start_text(&text).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"partial\":")
        .await
        .unwrap();
    // Never send the rest: the proxy must give up on the client.
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    assert!(
        read.is_ok(),
        "the proxy kept waiting for the stalled upload"
    );
    let response = String::from_utf8_lossy(&response);
    assert_eq!(status_of(&response), Some(408), "{response}");
    let metrics = proxy.metrics().await;
    assert_eq!(
        harness::metric(
            &metrics,
            r#"understudy_requests_rejected_total{reason="client_timeout"}"#
        ),
        Some(1.0)
    );
    for kind in ["timeout", "protocol", "connect"] {
        let series = format!(
            r#"understudy_upstream_failures_total{{backend="stable",role="serve",kind="{kind}"}}"#
        );
        assert_eq!(harness::metric(&metrics, &series), Some(0.0), "{series}");
    }
    assert_still_serving(&addr).await;
    proxy.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_are_refused_and_counted() {
    let stable = FakeUpstream::start(Reply::echo()).await;
    let text = harness::config_text(&stable.url(), None, "").replace(
        "drain_timeout = \"5s\"",
        "drain_timeout = \"5s\"\nmax_connections = 2",
    );
    let proxy = harness::start_text(&text).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    // Two idle connections take both slots.
    let first = TcpStream::connect(&addr).await.unwrap();
    let _second = TcpStream::connect(&addr).await.unwrap();
    proxy
        .wait_metric("understudy_connections_open", 2.0, Duration::from_secs(5))
        .await;
    // The third is closed at once, without an answer.
    let response = raw_exchange(
        &addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(
        response.is_empty(),
        "the third connection was served: {response}"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        harness::metric(&metrics, "understudy_connections_rejected_total"),
        Some(1.0)
    );
    // A freed slot serves again.
    drop(first);
    proxy
        .wait_metric_at_most("understudy_connections_open", 1.0, Duration::from_secs(5))
        .await;
    assert_still_serving(&addr).await;
    proxy.stop().await;
}
