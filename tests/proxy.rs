//! Forwarding: what a client of the proxy sees, over real sockets.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Version};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::harness::{self, assert_proxy_error};
use support::{FakeUpstream, Gate, Reply, h2c_client, http_client, refused_addr, send};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn forwards_to_stable_and_marks_the_backend() {
    let stable = FakeUpstream::start(Reply::json(200, r#"{"predictions":[1]}"#)).await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let (status, headers, body) = send(
        &http_client(),
        Method::POST,
        &format!("{}/v1/models/m:predict?x=1", proxy.url),
        &[("content-type", "application/json")],
        r#"{"instances":[[1,2]]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"predictions":[1]}"#);
    assert_eq!(headers["x-understudy-backend"], "stable");
    let received = stable.received().await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path_and_query, "/v1/models/m:predict?x=1");
    assert_eq!(received[0].body, r#"{"instances":[[1,2]]}"#);
    proxy.stop().await;
}

#[tokio::test]
async fn every_method_reaches_stable_with_its_body() {
    let stable = FakeUpstream::start(Reply::echo()).await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let client = http_client();
    let cases = [
        (Method::GET, ""),
        (Method::POST, "post-body"),
        (Method::PUT, "put-body"),
        (Method::DELETE, ""),
        (Method::PATCH, "patch-body"),
        (Method::HEAD, ""),
    ];
    for (method, sent) in &cases {
        let url = format!("{}/items/7?m={method}", proxy.url);
        let (status, _, body) = send(&client, method.clone(), &url, &[], *sent).await;
        assert_eq!(status, 200, "{method}");
        if *method == Method::HEAD {
            assert!(body.is_empty(), "HEAD answered with a body: {body:?}");
        } else {
            let echo: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(echo["method"], method.as_str());
            assert_eq!(echo["body"], *sent, "{method}");
        }
    }
    let received = stable.received().await;
    assert_eq!(received.len(), cases.len());
    for ((method, sent), got) in cases.iter().zip(&received) {
        assert_eq!(&got.method, method);
        assert_eq!(got.path_and_query, format!("/items/7?m={method}"));
        assert_eq!(got.body, *sent);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn stable_status_codes_and_bodies_reach_the_client_unchanged_and_are_counted() {
    let stable = FakeUpstream::builder()
        .route("/created", Reply::json(201, r#"{"id":"abc"}"#))
        .route(
            "/missing",
            Reply::json(404, r#"{"error":"Model nope not found"}"#),
        )
        .route("/boom", Reply::status(500))
        .start()
        .await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let client = http_client();
    for (path, want_status, want_body) in [
        ("/created", 201, r#"{"id":"abc"}"#),
        ("/missing", 404, r#"{"error":"Model nope not found"}"#),
        ("/boom", 500, "Internal Server Error"),
    ] {
        let url = format!("{}{path}", proxy.url);
        let (status, headers, body) = send(&client, Method::POST, &url, &[], "{}").await;
        assert_eq!(status, want_status, "{path}");
        assert_eq!(body, want_body, "{path}");
        assert_eq!(headers["x-understudy-backend"], "stable", "{path}");
    }

    let status = proxy
        .wait_status(WAIT, |s| {
            s["cumulative"]["stable"]["serve"]["requests"] == 3
        })
        .await;
    let serve = &status["cumulative"]["stable"]["serve"];
    assert_eq!(serve["status"]["2xx"], 1, "{serve:#}");
    assert_eq!(serve["status"]["4xx"], 1, "{serve:#}");
    assert_eq!(serve["status"]["5xx"], 1, "{serve:#}");
    assert_eq!(serve["errors"], 1, "only the 500 is an error: {serve:#}");
    assert_eq!(serve["client_errors"], 1, "{serve:#}");
    let metrics = proxy.metrics().await;
    for class in ["2xx", "4xx", "5xx"] {
        let series = format!(
            r#"understudy_requests_total{{backend="stable",role="serve",status_class="{class}"}}"#
        );
        assert_eq!(harness::metric(&metrics, &series), Some(1.0), "{series}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn request_headers_reach_stable_without_hop_by_hop_and_with_forwarding_info() {
    let stable = FakeUpstream::start(Reply::empty(200)).await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let client = http_client();
    let url = format!("{}/v2/models/iris/infer", proxy.url);
    let headers = [
        ("x-tenant", "acme"),
        ("authorization", "Bearer end-to-end"),
        ("connection", "x-foo"),
        ("x-foo", "hop-only"),
        ("keep-alive", "timeout=5"),
        ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
        ("x-request-id", "client-chose-this"),
    ];
    send(&client, Method::POST, &url, &headers, "{}").await;
    // The Host the client used becomes x-forwarded-host.
    send(
        &client,
        Method::GET,
        &url,
        &[("host", "models.example.com")],
        "",
    )
    .await;

    // Control: the same request sent straight to stable does carry them, so
    // their absence below is the proxy's doing.
    send(&client, Method::POST, &stable.url(), &headers, "{}").await;
    let received = stable.received().await;
    for hop in ["x-foo", "keep-alive", "proxy-authorization"] {
        assert!(
            received[2].headers.get(hop).is_some(),
            "client never sent {hop}"
        );
    }
    let first = &received[0];
    assert_eq!(first.header("x-tenant"), Some("acme"));
    assert_eq!(first.header("authorization"), Some("Bearer end-to-end"));
    for hop in ["x-foo", "keep-alive", "proxy-authorization"] {
        assert!(
            first.headers.get(hop).is_none(),
            "{hop} reached stable: {first:?}"
        );
    }
    let connection = first.header("connection").unwrap_or_default();
    assert!(!connection.contains("x-foo"), "connection: {connection}");
    let forwarded_for = first.header("x-forwarded-for").unwrap_or_default();
    assert!(
        forwarded_for.contains("127.0.0.1"),
        "x-forwarded-for: {forwarded_for}"
    );
    assert_eq!(first.header("x-forwarded-proto"), Some("http"));
    let proxy_authority = proxy.url.trim_start_matches("http://");
    assert_eq!(first.header("x-forwarded-host"), Some(proxy_authority));
    // Stable is addressed by its own authority, not the proxy's.
    assert_eq!(
        first.header("host"),
        Some(stable.addr().to_string().as_str())
    );
    assert_eq!(first.header("x-request-id"), Some("client-chose-this"));

    let second = &received[1];
    assert_eq!(
        second.header("x-forwarded-host"),
        Some("models.example.com")
    );
    assert_eq!(
        second.header("host"),
        Some(stable.addr().to_string().as_str())
    );
    proxy.stop().await;
}

#[tokio::test]
async fn request_ids_are_generated_unique_when_absent() {
    let stable = FakeUpstream::start(Reply::empty(200)).await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let client = http_client();
    for _ in 0..3 {
        send(&client, Method::GET, &format!("{}/x", proxy.url), &[], "").await;
    }
    let ids: Vec<String> = stable
        .received()
        .await
        .iter()
        .map(|r| r.header("x-request-id").unwrap_or_default().to_owned())
        .collect();
    assert!(ids.iter().all(|id| !id.is_empty()), "missing ids: {ids:?}");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "ids repeat: {ids:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn response_headers_from_stable_reach_the_client_without_hop_by_hop() {
    let reply = Reply::json(200, "{}")
        .header("x-model-version", "v7")
        .header("set-cookie", "session=1")
        .header("keep-alive", "timeout=99")
        .header("connection", "x-upstream-hop")
        .header("x-upstream-hop", "secret");
    let stable = FakeUpstream::start(reply).await;
    let proxy = harness::start(&stable.url(), None, "").await;
    // Control: straight from stable the hop-by-hop headers are there.
    let (_, direct, _) = send(&http_client(), Method::GET, &stable.url(), &[], "").await;
    assert!(direct.get("keep-alive").is_some() && direct.get("x-upstream-hop").is_some());
    let (status, headers, _) = send(
        &http_client(),
        Method::GET,
        &format!("{}/x", proxy.url),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-model-version"], "v7");
    assert_eq!(headers["set-cookie"], "session=1");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-understudy-backend"], "stable");
    assert!(headers.get("keep-alive").is_none(), "{headers:?}");
    assert!(headers.get("x-upstream-hop").is_none(), "{headers:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let stable = FakeUpstream::start(Reply::echo()).await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let request = Request::post(format!("{}/v2/models/iris/infer", proxy.url))
        .body(Full::new(Bytes::from_static(b"{\"inputs\":[]}")))
        .unwrap();
    let response = h2c_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.headers()["x-understudy-backend"], "stable");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v2/models/iris/infer");
    assert_eq!(echo["body"], "{\"inputs\":[]}");
    let proxy_authority = proxy.url.trim_start_matches("http://");
    assert_eq!(echo["headers"]["x-forwarded-host"], proxy_authority);
    proxy.stop().await;
}

#[tokio::test]
async fn unreachable_stable_gives_502_json_and_is_counted() {
    let stable = format!("http://{}", refused_addr().await);
    let proxy = harness::start(&stable, None, "").await;
    let got = send(
        &http_client(),
        Method::GET,
        &format!("{}/x", proxy.url),
        &[],
        "",
    )
    .await;
    assert_proxy_error("refused", got, 502);

    let status = proxy
        .wait_status(WAIT, |s| {
            s["cumulative"]["stable"]["serve"]["requests"] == 1
        })
        .await;
    let serve = &status["cumulative"]["stable"]["serve"];
    assert_eq!(serve["errors"], 1, "{serve:#}");
    assert_eq!(serve["failures"]["connect"], 1, "{serve:#}");
    let metrics = proxy.metrics().await;
    let error_class =
        r#"understudy_requests_total{backend="stable",role="serve",status_class="error"}"#;
    assert_eq!(harness::metric(&metrics, error_class), Some(1.0));
    let connect =
        r#"understudy_upstream_failures_total{backend="stable",role="serve",kind="connect"}"#;
    assert_eq!(harness::metric(&metrics, connect), Some(1.0));
    proxy.stop().await;
}

#[tokio::test]
async fn hung_stable_gives_504_and_broken_stable_gives_502() {
    let stable = FakeUpstream::builder()
        .route("/hang", Reply::hang())
        .route("/garbage", Reply::garbage())
        .route("/reset", Reply::reset())
        .start()
        .await;
    let config = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n\n[admin]\naddr = \"127.0.0.1:0\"\n\n\
         [backends.stable]\nurl = \"{}\"\ntimeout = \"1s\"\n",
        stable.url()
    );
    let proxy = harness::start_text(&config).await;
    let client = http_client();

    let started = Instant::now();
    let got = send(
        &client,
        Method::POST,
        &format!("{}/hang", proxy.url),
        &[],
        "{}",
    )
    .await;
    let waited = started.elapsed();
    assert_proxy_error("hang", got, 504);
    assert!(
        waited >= Duration::from_millis(900),
        "gave up early: {waited:?}"
    );
    // Far below the 30 s default: the configured timeout is the one applied.
    assert!(waited < Duration::from_secs(10), "took {waited:?}");

    for path in ["/garbage", "/reset"] {
        let got = send(
            &client,
            Method::POST,
            &format!("{}{path}", proxy.url),
            &[],
            "{}",
        )
        .await;
        assert_proxy_error(path, got, 502);
    }

    let status = proxy
        .wait_status(WAIT, |s| {
            s["cumulative"]["stable"]["serve"]["requests"] == 3
        })
        .await;
    let serve = &status["cumulative"]["stable"]["serve"];
    assert_eq!(serve["errors"], 3, "{serve:#}");
    assert_eq!(serve["failures"]["timeout"], 1, "{serve:#}");
    assert_eq!(serve["failures"]["protocol"], 2, "{serve:#}");
    let metrics = proxy.metrics().await;
    for (kind, n) in [("timeout", 1.0), ("protocol", 2.0)] {
        let series = format!(
            r#"understudy_upstream_failures_total{{backend="stable",role="serve",kind="{kind}"}}"#
        );
        assert_eq!(harness::metric(&metrics, &series), Some(n), "{series}");
    }
    let error_class =
        r#"understudy_requests_total{backend="stable",role="serve",status_class="error"}"#;
    assert_eq!(harness::metric(&metrics, error_class), Some(3.0));
    proxy.stop().await;
}

/// A proxy with two data-plane workers whose stable backend has
/// `stable_keys` (TOML lines) set.
async fn two_workers(stable: &str, stable_keys: &str) -> harness::Proxy {
    harness::start_text(&format!(
        "[listen]\naddr = \"127.0.0.1:0\"\nworkers = 2\ndrain_timeout = \"5s\"\n\n\
         [admin]\naddr = \"127.0.0.1:0\"\n\n\
         [backends.stable]\nurl = \"{stable}\"\ntimeout = \"5s\"\n{stable_keys}\n"
    ))
    .await
}

/// Sends `n` requests at once, each on its own client connection, which
/// the kernel spreads over the workers' listening sockets. Join the set to
/// check that every one was answered.
fn concurrent_requests(proxy: &harness::Proxy, n: usize) -> tokio::task::JoinSet<u16> {
    let client = http_client();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url) = (client.clone(), format!("{}/v1/models/m:predict", proxy.url));
        requests.spawn(async move {
            send(&client, Method::POST, &url, &[], "{}")
                .await
                .0
                .as_u16()
        });
    }
    requests
}

async fn all_answered(mut requests: tokio::task::JoinSet<u16>) {
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
}

#[tokio::test]
async fn max_connections_bounds_the_backends_connections_across_workers() {
    let stable =
        FakeUpstream::start(Reply::json(200, "{}").delay(Duration::from_millis(300))).await;
    let proxy = two_workers(&stable.url(), "max_connections = 4").await;
    all_answered(concurrent_requests(&proxy, 16)).await;
    assert_eq!(stable.request_count(), 16);
    assert!(
        stable.connections_accepted() <= 4,
        "{} connections to a backend with max_connections = 4",
        stable.connections_accepted()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn pool_max_idle_bounds_the_idle_connections_across_workers() {
    let gate = Gate::new();
    let stable = FakeUpstream::start(Reply::json(200, "{}").held_by(&gate)).await;
    let proxy = two_workers(&stable.url(), "pool_max_idle = 2").await;
    // Held until all 16 have arrived, the requests need 16 connections;
    // afterwards only pool_max_idle of them may stay open, whichever
    // workers served them.
    let requests = concurrent_requests(&proxy, 16);
    assert!(stable.wait_for_requests(16, WAIT).await);
    gate.open();
    all_answered(requests).await;
    assert_eq!(stable.connections_accepted(), 16);
    assert!(
        stable.wait_for_open_connections_at_most(2, WAIT).await,
        "{} idle connections kept with pool_max_idle = 2",
        stable.open_connections()
    );
    proxy.stop().await;
}
