//! The body the proxy sends to clients: a backend's streamed body, or a
//! small body of the proxy's own (errors).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tokio::time::Instant;

use super::read_ahead::ReadAhead;
use crate::capture::TeeBody;
use crate::split::Backend;
use crate::stats::{Event, FailureKind, Role, StatsHandle};
use crate::upstream::{UpstreamBody, grpc_failed};

pub use crate::box_error::BoxError;

/// A serving backend's response body (its request body streams from the
/// client).
pub type ServedBody = UpstreamBody<super::pools::UploadBody>;

/// Reports a serving body that broke off after its head was sent.
struct BodyFailure {
    stats: StatsHandle,
    backend: Backend,
    started: Instant,
}

// The large variant is the common one (every proxied response); boxing it
// would cost an allocation per request to save bytes in the rare error case.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Upstream {
        body: ReadAhead<TeeBody<ServedBody>>,
        failure: Option<BodyFailure>,
    },
    Local(Full<Bytes>),
}

/// Response body to the client.
pub struct ProxyBody {
    kind: Kind,
}

impl ProxyBody {
    pub fn upstream(
        body: ReadAhead<TeeBody<ServedBody>>,
        stats: StatsHandle,
        backend: Backend,
        started: Instant,
    ) -> Self {
        Self {
            kind: Kind::Upstream {
                body,
                failure: Some(BodyFailure {
                    stats,
                    backend,
                    started,
                }),
            },
        }
    }

    pub fn local(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Local(Full::new(bytes)),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Upstream { body, failure } => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                let failed = match &frame {
                    Some(Err(error)) => {
                        tracing::warn!(%error, "serving response body broke off");
                        Some(FailureKind::Body)
                    }
                    Some(Ok(frame)) if frame.trailers_ref().is_some_and(grpc_failed) => {
                        Some(FailureKind::Grpc)
                    }
                    _ => None,
                };
                if let Some(kind) = failed
                    && let Some(f) = failure.take()
                {
                    f.stats.record(Event::Failure {
                        backend: f.backend,
                        role: Role::Serve,
                        kind,
                        latency: f.started.elapsed(),
                    });
                }
                Poll::Ready(frame)
            }
            Kind::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Local(full) => full.size_hint(),
        }
    }
}
