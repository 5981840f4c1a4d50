//! The admin listener: the live rollout page, metrics, health, status,
//! config reload and (with a rollout) control.
//!
//! It runs on its own port, apart from the data plane, so scraping or
//! operating the proxy never competes with client traffic for a connection
//! slot. POSTs need the bearer token when one is configured; the token is
//! compared in constant time. Rollout commands are parsed, routed (to the
//! fleet in fleet mode, else to the local controller) and mapped to HTTP
//! statuses in [`commands`]. `POST /reload` runs the same reload as SIGHUP
//! ([`crate::reload`]) and answers what it did. `GET /` serves the page in
//! [`page`], which shows and drives all of this in a browser.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod commands;
mod page;

use crate::proxy::Proxy;
use crate::stats::StatsHandle;
use crate::status::WindowReport;
use crate::telemetry::Metrics;

/// Admin request bodies are tiny JSON commands.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// The way into the fleet, in fleet mode.
#[cfg(feature = "fleet")]
pub type FleetHandle = crate::fleet::FleetHandle;
/// A build without the `fleet` feature has no fleet mode: no value of
/// this type exists.
#[cfg(not(feature = "fleet"))]
pub type FleetHandle = std::convert::Infallible;

/// What the admin API reads from and acts on.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub stats: StatsHandle,
    pub proxy: Proxy,
    /// False while starting and once draining: `/readyz` answers 503.
    pub ready: Arc<AtomicBool>,
    pub token: Option<String>,
    pub rollout: Option<crate::rollout::RolloutHandle>,
    /// Re-reads the config file on `POST /reload`, as SIGHUP does.
    pub reloader: Arc<crate::reload::Reloader>,
    /// Fleet mode: the rollout is the fleet's; commands go through etcd to
    /// every replica, and `/status` shows the fleet.
    pub fleet: Option<FleetHandle>,
    pub stable_url: String,
    pub candidate_url: Option<String>,
}

pub struct AdminListener {
    pub listener: TcpListener,
    pub state: Arc<AdminState>,
}

impl AdminListener {
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(addr = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin listener started");
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let state = self.state.clone();
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, request).await) }
            });
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = connection => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
        tracing::info!("admin listener stopped");
    }
}

type AdminResponse = Response<Full<Bytes>>;

async fn route(state: &AdminState, request: Request<Incoming>) -> AdminResponse {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match (&method, path.as_str()) {
        (&Method::GET, "/") => page::response(),
        (&Method::GET, "/metrics") => {
            state.stats.flush().await;
            let metrics = &state.metrics;
            metrics
                .shadow_in_flight
                .set(state.proxy.mirrors_in_flight() as f64);
            metrics
                .shadow_buffered_bytes
                .set(state.proxy.mirror_bytes_held() as f64);
            metrics
                .compare_queue_depth
                .set(state.proxy.comparisons_queued() as f64);
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(state),
        (&Method::GET, "/status") => match status(state).await {
            Some(value) => json_response(StatusCode::OK, &value),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "stats are not available (shutting down)",
            ),
        },
        (&Method::GET, "/mismatches") => match state.stats.snapshot().await {
            Some(snapshot) => json_response(
                StatusCode::OK,
                &json!({ "mismatches": snapshot.mismatches }),
            ),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "stats are not available (shutting down)",
            ),
        },
        (&Method::POST, "/reload") => {
            if !authorized(state, &request) {
                return unauthorized();
            }
            reload(state).await
        }
        (&Method::POST, p) if p.starts_with("/rollout/") => {
            if !authorized(state, &request) {
                return unauthorized();
            }
            let command = p.trim_start_matches("/rollout/").to_owned();
            let body = match Limited::new(request.into_body(), MAX_ADMIN_BODY)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            };
            rollout_command(state, &command, &body).await
        }
        (_, "/" | "/metrics" | "/healthz" | "/readyz" | "/status" | "/mismatches") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "use GET")
        }
        (_, "/reload") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// `/readyz`: 503 while starting or draining. A state file that is behind
/// answers 200 with `degraded: ...`: the proxy serves correctly from the
/// state in memory (a rollback is in effect there), and taking it out of
/// the Service would not bring the disk back; with one replica, or all of
/// them on the same full volume, it would stop all traffic. The condition
/// is for humans and alerts (`understudy_state_file_behind`), not for the
/// load balancer. A liveness probe must not restart the pod over it
/// either: a restart would resume from the older state on disk.
fn readyz(state: &AdminState) -> AdminResponse {
    if !state.ready.load(Ordering::Relaxed) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n");
    }
    match &state.rollout {
        Some(rollout) if rollout.state_file_behind() => text(
            StatusCode::OK,
            "degraded: the rollout state file is behind (writes failing, retrying); \
             the state in memory is in effect but not durable\n",
        ),
        _ => text(StatusCode::OK, "ready\n"),
    }
}

async fn status(state: &AdminState) -> Option<Value> {
    let snapshot = state.stats.snapshot().await?;
    let cumulative = WindowReport::from_window(&snapshot.cumulative);
    let mut value = json!({
        "backends": {
            "stable": { "url": state.stable_url },
            "candidate": { "url": state.candidate_url },
        },
        "requests": cumulative.stable.serve.requests + cumulative.candidate.serve.requests,
        "match_rate": cumulative.comparisons.match_rate,
        "self_agreement": cumulative.noise.as_ref().and_then(|n| n.self_agreement),
        "mirrors_in_flight": state.proxy.mirrors_in_flight(),
        "cumulative": cumulative,
        "window": WindowReport::from_window(&snapshot.sliding),
        "step_window": WindowReport::from_window(&snapshot.step),
    });
    let rollout = match &state.rollout {
        Some(rollout) => rollout.status_json(),
        None => json!({
            "phase": "shadow",
            "weight": 0.0,
            "step": null,
            "rollout_configured": false,
            "decisions": [],
        }),
    };
    if let (Some(object), Value::Object(extra)) = (value.as_object_mut(), rollout) {
        object.extend(extra);
    }
    #[cfg(feature = "fleet")]
    if let Some(fleet) = &state.fleet {
        value["fleet"] = fleet.status_json();
    }
    Some(value)
}

async fn rollout_command(state: &AdminState, command: &str, body: &[u8]) -> AdminResponse {
    match commands::run(state, command, body).await {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(e) => error(e.status(), &e.to_string()),
    }
}

/// `POST /reload`: 200 with the keys applied and those that need a
/// restart, or the reason the file was rejected (the running config stays).
async fn reload(state: &AdminState) -> AdminResponse {
    // Reading and validating the file is blocking work; the lock inside
    // keeps it from racing a SIGHUP.
    let reloader = state.reloader.clone();
    match tokio::task::spawn_blocking(move || reloader.reload()).await {
        Ok(Ok(report)) => json_response(StatusCode::OK, &json!(report)),
        Ok(Err(e)) => error(e.status(), &e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the reload task failed"),
    }
}

fn unauthorized() -> AdminResponse {
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Constant-time check of `Authorization: Bearer TOKEN`.
fn authorized(state: &AdminState, request: &Request<Incoming>) -> bool {
    let Some(expected) = &state.token else {
        return true;
    };
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), expected.as_bytes())
}

/// Compares without an early exit, so response time does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn json_response(status: StatusCode, value: &Value) -> AdminResponse {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> AdminResponse {
    json_response(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison_needs_every_byte_and_the_length() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(constant_time_eq(b"", b""));
    }
}
