//! One client request on its way through the steps of `Proxy::handle`:
//! what every step after the choice of a backend needs to know, how the
//! proxy answers on its own ([`error_response`]) and the access-log line.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::Guard;
use http::{HeaderValue, Method, Response, Version};

use super::Settings;
use super::headers::{X_REQUEST_ID, X_UNDERSTUDY_BACKEND};
use super::pools::Pools;
use super::response::ProxyBody;
use crate::access_log::{AccessLog, Entry, now_rfc3339};
use crate::error::ProxyError;
use crate::split::Backend;
use crate::trace_context::TraceContext;

/// One request, as the steps after the choice of its backend see it.
pub(super) struct Exchange<'a> {
    /// The settings as they were when the request arrived: a reload
    /// applies to the next request, never halfway through this one.
    pub settings: Guard<Arc<Settings>>,
    pub request_id: HeaderValue,
    /// The id is the client's own (the mirror then keeps a copy of it).
    pub id_from_client: bool,
    /// The W3C trace the request belongs to, and the serving request's span.
    pub trace: TraceContext,
    pub serving: Backend,
    /// The serving backend's pools.
    pub pools: &'a Pools,
    /// The other backend's pools, when there is one to mirror to.
    pub other: Option<&'a Pools>,
    /// The client's HTTP version, which its response carries.
    pub client_version: Version,
    /// The access log's line, once the mirror is planned (when the log is
    /// on).
    pub access: Option<AccessLine<'a>>,
}

/// What the access log says of a request besides its outcome.
pub(super) struct AccessLine<'a> {
    pub log: &'a AccessLog,
    pub method: Method,
    pub path: String,
    /// The mirror plan's label.
    pub shadow: &'static str,
}

impl Exchange<'_> {
    /// The proxy's own answer for `error`.
    pub fn refuse(&self, error: &ProxyError) -> Response<ProxyBody> {
        error_response(
            error,
            self.serving.as_str(),
            &self.request_id,
            self.settings.backend_header,
        )
    }

    /// Writes the access-log line, when the log is on and the line planned.
    pub fn log(&self, status: u16, latency: Duration) {
        let Some(line) = &self.access else {
            return;
        };
        let trace_id = self.trace.trace_id_hex();
        line.log.log(&Entry {
            time: now_rfc3339(),
            request_id: self.request_id.to_str().unwrap_or("-"),
            trace_id: std::str::from_utf8(&trace_id).unwrap_or("-"),
            method: line.method.as_str(),
            path: &line.path,
            backend: self.serving.as_str(),
            status,
            latency_ms: latency.as_secs_f64() * 1000.0,
            shadow: line.shadow,
        });
    }

    /// How long a recording waits for its copies: the serving exchange's
    /// limit and the shadow's.
    pub fn record_wait(&self) -> Duration {
        self.pools.serve.timeout() + self.settings.shadow.timeout
    }
}

/// A response of the proxy's own, as SPEC §4 describes.
pub fn error_response(
    error: &ProxyError,
    backend: &str,
    request_id: &HeaderValue,
    backend_header: bool,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(error.body(backend)));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if let ProxyError::Connect = error {
        // RFC 9110 §15.5.6: a 405 says what is allowed; every method but
        // CONNECT is forwarded.
        headers.insert(
            http::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
        );
    }
    if backend_header && let Ok(value) = HeaderValue::from_str(backend) {
        headers.insert(X_UNDERSTUDY_BACKEND.clone(), value);
    }
    response
}
