//! The proxy's own errors, and the one place that maps them to a status.
//!
//! `Upstream` is the serving backend's failure (or its connection slots
//! staying busy); every other variant is the client's, including a request
//! body that failed on its way (`From<&BodyError>`). Of the backends'
//! failures only the serving backend's reach a client; shadow failures are
//! counted outcomes (see `mirror`), never errors here.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::box_error::BoxError;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The serving backend could not be reached or broke the exchange.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The request body is larger than `listen.max_body_bytes`.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The client's request body broke off before it was complete.
    #[error("client aborted the request body")]
    ClientAborted,
    /// The client stopped sending its request body.
    #[error("client sent no request body data for {timeout:?}")]
    ClientTimeout { timeout: std::time::Duration },
    /// `CONNECT`: the proxy forwards requests, it does not open tunnels.
    #[error("CONNECT is not supported")]
    Connect,
    /// A request head the proxy will not forward (the reason is the body's
    /// message), e.g. HTTP/1.1 without exactly one `Host`.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// A transfer coding other than `chunked`: the proxy would have to
    /// decode it to re-frame the body, and it does not.
    #[error("transfer coding not implemented")]
    TransferCoding,
}

impl ProxyError {
    /// The status the client sees: 504 when the backend was too slow, 502
    /// when it was unreachable or answered garbage, 503 when every
    /// connection slot to the backend stayed busy, 413 for a body over
    /// the limit, 400 for a body that broke off or a malformed head, 408 for
    /// an upload that stalled, 405 for `CONNECT`, 501 for a transfer coding
    /// other than chunked.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Upstream(UpstreamError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::Busy { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientAborted => StatusCode::BAD_REQUEST,
            ProxyError::ClientTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Connect => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Malformed(_) => StatusCode::BAD_REQUEST,
            ProxyError::TransferCoding => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The JSON body: `{"error": "...", "backend": "stable"}`. The message
    /// is short and fixed per kind; details go to the log, not the client.
    pub fn body(&self, backend: &str) -> Bytes {
        let message = match self {
            ProxyError::Upstream(UpstreamError::Timeout { .. }) => "upstream timed out",
            ProxyError::Upstream(UpstreamError::Connect { .. }) => "upstream unreachable",
            ProxyError::Upstream(UpstreamError::Protocol { .. }) => "upstream failed",
            ProxyError::Upstream(UpstreamError::Busy { .. }) => "upstream busy",
            ProxyError::BodyTooLarge { .. } => "request body too large",
            ProxyError::ClientAborted => "request body incomplete",
            ProxyError::ClientTimeout { .. } => "request body timed out",
            ProxyError::Connect => "CONNECT is not supported",
            ProxyError::Malformed(what) => what,
            ProxyError::TransferCoding => "transfer coding not implemented",
        };
        Bytes::from(serde_json::json!({ "error": message, "backend": backend }).to_string())
    }
}

/// A request body that failed on its way to the backend failed by the
/// client's doing: too large, broken off, or too slow.
/// Errors a forwarded body can end with, told apart so the proxy knows
/// whose fault a failed exchange was.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body grew past `listen.max_body_bytes`.
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body's source sent nothing for too long (a stalled upload).
    #[error("body sent nothing for {timeout:?}")]
    Idle { timeout: Duration },
    /// The buffered part of a request body did not arrive within
    /// `listen.request_buffer_timeout` (an upload too slow as a whole).
    #[error("body not received within {timeout:?}")]
    Deadline { timeout: Duration },
    /// The body's own source broke off (for a request: the client).
    #[error("body stream broke off: {0}")]
    Source(#[source] BoxError),
}

impl BodyError {
    /// Finds a `BodyError` anywhere in an error's source chain.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
        std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref())
    }
}

impl From<&BodyError> for ProxyError {
    fn from(error: &BodyError) -> Self {
        match error {
            BodyError::TooLarge { limit } => ProxyError::BodyTooLarge { limit: *limit },
            BodyError::Source(_) => ProxyError::ClientAborted,
            BodyError::Idle { timeout } | BodyError::Deadline { timeout } => {
                ProxyError::ClientTimeout { timeout: *timeout }
            }
        }
    }
}

/// An error and all its sources, joined with ": ", for logs: the useful
/// part of a failed connect (refused, "invalid peer certificate:
/// UnknownIssuer", "certificate expired") sits deep in the chain.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_request_body_that_failed_is_answered_as_the_client_s_fault() {
        let status = |error: BodyError| ProxyError::from(&error).status().as_u16();
        let timeout = Duration::from_secs(1);
        assert_eq!(status(BodyError::TooLarge { limit: 1 }), 413);
        assert_eq!(status(BodyError::Source("reset".into())), 400);
        assert_eq!(status(BodyError::Idle { timeout }), 408);
        assert_eq!(status(BodyError::Deadline { timeout }), 408);
    }
}
