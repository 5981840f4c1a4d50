//! The HTTP side of a toy model server: accept loop, per-connection hyper
//! (HTTP/1.1 or h2c, auto-detected), routing, and the latency / error knobs.
//!
//! It must never outlive its shutdown token: cancelling closes the listener,
//! drops every connection and ends every in-flight handler promptly.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rand::Rng;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::ToyModelConfig;
use super::protocol;

/// Largest request body accepted; the demo sends a few KiB at most.
const MAX_BODY: usize = 8 << 20;

/// Shared by the accept loop, every connection and the `ToyModel` handle.
pub(super) struct State {
    pub config: ToyModelConfig,
    pub requests: AtomicU64,
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Serves the toy model until its shutdown token is cancelled.
pub(super) async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let shutdown = state.shutdown.clone();
    let handle = move |req| handle(Arc::clone(&state), req);
    super::serve::accept_until(listener, shutdown, "toy model", handle).await;
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    respond(status, "application/json", body)
}

fn not_found_model(name: &str) -> Response<Full<Bytes>> {
    let body = json!({ "error": format!("Model {name} not found") }).to_string();
    json_response(StatusCode::NOT_FOUND, body)
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let config = &state.config;
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let known = |name: &str| name == config.name;
    let response = match (req.method(), segments.as_slice()) {
        (&Method::GET, ["v2", "health", "ready" | "live"]) => {
            respond(StatusCode::OK, "text/plain", "")
        }
        (&Method::GET, ["v2", "models", name, "ready"]) if known(name) => {
            respond(StatusCode::OK, "text/plain", "")
        }
        (&Method::GET, ["v2", "models", name]) if known(name) => {
            let body = json!({
                "name": config.name, "versions": [config.version], "platform": "understudy-toy",
                "inputs": [{"name": "predict", "datatype": "FP64", "shape": [-1, 4]}],
                "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
            });
            json_response(StatusCode::OK, body.to_string())
        }
        (&Method::GET, ["v2", "models", name, ..]) => not_found_model(name),
        (&Method::POST, ["v2", "models", name, "infer"]) => {
            let name = name.to_string();
            infer(&state, &name, None, req).await
        }
        (&Method::POST, ["v2", "models", name, "versions", version, "infer"]) => {
            let (name, version) = (name.to_string(), version.to_string());
            infer(&state, &name, Some(&version), req).await
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"detail": "Not Found"}).to_string(),
        ),
    };
    Ok(response)
}

async fn infer(
    state: &State,
    name: &str,
    version: Option<&str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let config = &state.config;
    state.requests.fetch_add(1, Ordering::Relaxed);
    if name != config.name || version.is_some_and(|v| v != config.version) {
        return not_found_model(name);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "Payload Too Large",
            );
        }
        Err(error) => return respond(StatusCode::BAD_REQUEST, "text/plain", error.to_string()),
    };
    // Simulated inference time; give up early if the server is going away.
    let delay = simulated_latency(config);
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = state.shutdown.cancelled() => {
                return respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "Service Unavailable");
            }
        }
    }
    if config.error_rate > 0.0 && rand::rng().random::<f64>() < config.error_rate {
        // Exactly what MLServer/uvicorn send for an unhandled exception.
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "Internal Server Error",
        );
    }
    match protocol::parse_infer(&body) {
        Ok(request) => {
            let id = request.id.clone().unwrap_or_else(protocol::new_request_id);
            let body = protocol::infer_response(
                &config.name,
                &config.version,
                &id,
                &request,
                config.disagree_rate,
            );
            json_response(StatusCode::OK, body)
        }
        Err(error) => {
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
            json_response(status, error.body())
        }
    }
}

/// `latency` plus a uniform draw from `[0, jitter]`.
fn simulated_latency(config: &ToyModelConfig) -> Duration {
    let max = u64::try_from(config.jitter.as_nanos()).unwrap_or(u64::MAX);
    let jitter = match max {
        0 => Duration::ZERO,
        max => Duration::from_nanos(rand::rng().random_range(0..=max)),
    };
    config.latency + jitter
}
