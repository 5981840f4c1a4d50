//! The one HTTP client of the integration tests, for talking to the proxy
//! (data plane or admin API) or to an upstream.
//!
//! * [`http_client`], [`h2c_client`]: pooled hyper clients.
//! * [`send`], [`try_send`]: one request on a given client, whole response.
//! * [`get_text`], [`get_json`], [`post_json`], [`wait_json`]: one-shot
//!   calls on a fresh connection each, for admin APIs.
//!
//! It knows nothing of the proxy: plain HTTP to a URL.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::BoxError;

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

/// One request on a client of its own, so no connection outlives the call;
/// `token` goes in `Authorization: Bearer`. Panics on transport errors.
async fn call(method: Method, url: &str, body: &str, token: Option<&str>) -> (StatusCode, Bytes) {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    let (status, _, body) = send(&http_client(), method, url, &headers, body.to_owned()).await;
    (status, body)
}

/// `GET url` as text, whatever the status.
pub async fn get_text(url: &str) -> String {
    let (_, body) = call(Method::GET, url, "", None).await;
    String::from_utf8_lossy(&body).into_owned()
}

/// `GET url` as JSON, whatever the status; panics when it is not JSON.
pub async fn get_json(url: &str) -> Value {
    let (status, body) = call(Method::GET, url, "", None).await;
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{url} answered {status} with non-JSON ({e}): {body:?}"))
}

/// `POST url` with `body` (and a bearer `token`); the status and the answer
/// as JSON (`Null` when it is not JSON).
pub async fn post_json(url: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = call(Method::POST, url, body, token).await;
    (
        status.as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// Polls `url` until its JSON satisfies `done`; panics after `timeout`.
pub async fn wait_json(url: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let value = get_json(url).await;
        if done(&value) {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("condition not reached within {timeout:?}; last {url}:\n{value:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
