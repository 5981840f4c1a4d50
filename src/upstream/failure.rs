//! What a backend's failure counts as, for the serving and the shadow path
//! alike: an exchange that produced no response head
//! ([`UpstreamError::failure_kind`]), or an answer that says its gRPC call
//! failed ([`grpc_failed`]).

use super::UpstreamError;
use crate::labels::FailureKind;

impl UpstreamError {
    /// How this failure is counted.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            UpstreamError::Connect { .. } => FailureKind::Connect,
            // Busy comes only from the serving pools' slots, which the
            // proxy counts as its own queueing; the shadow pool has none.
            UpstreamError::Timeout { .. } | UpstreamError::Busy { .. } => FailureKind::Timeout,
            UpstreamError::Protocol { .. } => FailureKind::Protocol,
        }
    }
}

/// True when gRPC metadata (a response head or its trailers) says the call
/// failed: `grpc-status` present and not `0` (OK).
pub fn grpc_failed(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() != b"0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn with_status(status: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static(status));
        headers
    }

    #[test]
    fn only_a_grpc_status_other_than_ok_is_a_failure() {
        assert!(!grpc_failed(&HeaderMap::new()), "plain HTTP");
        assert!(!grpc_failed(&with_status("0")));
        assert!(grpc_failed(&with_status("14")));
    }

    #[test]
    fn a_busy_serving_queue_counts_as_a_timeout() {
        let busy = UpstreamError::Busy {
            backend: "stable",
            waited: std::time::Duration::from_secs(1),
        };
        assert_eq!(busy.failure_kind(), FailureKind::Timeout);
    }
}
