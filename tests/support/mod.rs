//! Shared support for integration tests: the world outside the proxy.
//!
//! * [`FakeUpstream`] / [`Reply`]: a controllable upstream on `127.0.0.1`
//!   (HTTP/1.1 and h2c) that records requests and fails on demand.
//! * [`http_client`], [`h2c_client`], [`send`], [`try_send`]: a plain hyper
//!   client for talking to the proxy or an upstream.
//! * [`refused_addr`]: an address where nothing listens.
//! * [`raw_exchange`], [`RawUpstream`]: raw-socket client and upstream for
//!   bytes no HTTP library would send.
//!
//! Each integration test compiles this module separately and uses only part
//! of it, hence `dead_code` is allowed. It must never bind anything but
//! `127.0.0.1` and never depend on the proxy's own code.
//!
//! ```ignore
//! mod support;
//! use support::{FakeUpstream, Reply, http_client, send};
//!
//! let up = FakeUpstream::builder()
//!     .respond(Reply::json(200, r#"{"predictions":[1,2]}"#))
//!     .route("/boom", Reply::reset())
//!     .start()
//!     .await;
//! let (status, _headers, body) =
//!     send(&http_client(), Method::GET, &format!("{}/x", up.url()), &[], "").await;
//! assert_eq!(status, 200);
//! assert_eq!(body, r#"{"predictions":[1,2]}"#);
//! ```
#![allow(dead_code, unused_imports)]

/// The same full-disk helper the library's unit tests use.
#[path = "../../src/full_fs.rs"]
pub mod full_fs;
pub mod memory;
pub mod promtool;
mod raw;
mod raw_peer;
mod reply;
mod server;
pub mod tls;
mod upstream;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use raw_peer::{RawUpstream, header_of, raw_exchange, status_of};
pub use reply::{BoxError, Gate, Reply};
pub use upstream::{FakeUpstream, FakeUpstreamBuilder, Received};

/// The client type returned by [`http_client`] and [`h2c_client`].
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// Pooled HTTP/1.1 client (keep-alive), like most callers of the proxy.
pub fn http_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build_http()
}

/// HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Send a request and read the whole response. Panics on any transport
/// error; use [`try_send`] when the error is the point of the test.
pub async fn send(
    client: &TestClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Bytes) {
    match try_send(client, method.clone(), url, headers, body).await {
        Ok(response) => response,
        Err(error) => panic!("{method} {url} failed: {error}"),
    }
}

/// Send a request and read the whole response; transport errors (refused,
/// reset, truncated body, unparsable response) come back as `Err`.
pub async fn try_send(
    client: &TestClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<(StatusCode, HeaderMap, Bytes), BoxError> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(body.into()))?)
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// An address on `127.0.0.1` where nothing listens, so connecting is refused
/// (the port was free a moment ago; another process could grab it, but that
/// is vanishingly rare within one test).
pub async fn refused_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}
