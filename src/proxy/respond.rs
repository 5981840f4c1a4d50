//! The last step of a request: the serving backend's answer streamed back
//! to the client with its copies tee'd on the way, or the failure answered
//! and counted against whoever caused it.

use std::time::Duration;

use http::{HeaderValue, Response};
use tokio::time::Instant;

use super::body::BodyError;
use super::copies::Copies;
use super::exchange::Exchange;
use super::headers::{self, X_REQUEST_ID, X_UNDERSTUDY_BACKEND};
use super::read_ahead::ReadAhead;
use super::response::ServedBody;
use super::{Proxy, ProxyBody};
use crate::error::ProxyError;
use crate::stats::window::FailureKind;
use crate::stats::{Event, Role};
use crate::upstream::{self, UpstreamError};

impl Proxy {
    /// The serving backend answered: counts the answer, rewrites its head
    /// for the client and streams its body back, tee'd for the copies.
    pub(super) fn respond(
        &self,
        exchange: &Exchange<'_>,
        response: Response<ServedBody>,
        started: Instant,
        copies: Copies,
    ) -> Response<ProxyBody> {
        let stats = &self.inner.stats;
        let backend = exchange.serving;
        let latency = started.elapsed();
        let (mut parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        stats.record(Event::Response {
            backend,
            role: Role::Serve,
            status,
            latency,
        });
        let clock = super::stream_timing::clock(&parts.headers, stats, backend, started);
        let grpc_failed = upstream::grpc_failed(&parts.headers);
        if grpc_failed {
            stats.record(Event::Failure {
                backend,
                role: Role::Serve,
                kind: FailureKind::Grpc,
                latency,
            });
        }
        headers::prepare_response(&mut parts.headers);
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), exchange.request_id.clone());
        if exchange.settings.backend_header {
            let name = HeaderValue::from_static(backend.as_str());
            parts.headers.insert(X_UNDERSTUDY_BACKEND.clone(), name);
        }
        parts.version = exchange.client_version;
        let mut body = copies.copy_response(body, status, grpc_failed, exchange);
        if let Some(clock) = clock {
            body = body.timed(clock);
        }
        let body = ReadAhead::new(body, &exchange.settings.read_ahead, self.inner.metrics());
        exchange.log(status, latency);
        let body = ProxyBody::upstream(body, stats.clone(), backend, started);
        Response::from_parts(parts, body)
    }

    /// The exchange with the serving backend failed. A failure caused by
    /// the client's own body is the client's; all connection slots staying
    /// busy is the proxy's own queueing; only what remains counts against
    /// the backend.
    pub(super) fn fail(
        &self,
        exchange: &Exchange<'_>,
        error: UpstreamError,
        latency: Duration,
        copies: Copies,
    ) -> Response<ProxyBody> {
        // Neither the client's fault nor a busy queue hands the copies on:
        // the mirror sees the body closed or its pair without a stable
        // answer (uncomparable).
        if let Some(error) = BodyError::find(&error).map(|e| self.client_fault(e)) {
            exchange.log(error.status().as_u16(), latency);
            return exchange.refuse(&error);
        }
        if let UpstreamError::Busy { .. } = error {
            self.inner.metrics().backend_busy.increment(1);
            let error = ProxyError::from(error);
            exchange.log(error.status().as_u16(), latency);
            return exchange.refuse(&error);
        }
        copies.serving_failed(exchange.record_wait());
        self.inner.stats.record(Event::Failure {
            backend: exchange.serving,
            role: Role::Serve,
            kind: error.failure_kind(),
            latency,
        });
        tracing::warn!(
            request_id = ?exchange.request_id,
            backend = exchange.serving.as_str(),
            error = %crate::error::chain(&error),
            "serving backend failed"
        );
        let error = ProxyError::from(error);
        exchange.log(error.status().as_u16(), latency);
        exchange.refuse(&error)
    }

    /// The answer to a request whose own body failed, counted as the
    /// client's doing.
    pub(super) fn client_fault(&self, error: &BodyError) -> ProxyError {
        let metrics = self.inner.metrics();
        let counter = match error {
            BodyError::TooLarge { .. } => &metrics.body_too_large,
            BodyError::Source(_) => &metrics.client_aborted,
            BodyError::Idle { .. } | BodyError::Deadline { .. } => &metrics.client_timeout,
        };
        counter.increment(1);
        ProxyError::from(error)
    }
}
