//! The shadow exchange: sends the mirrored request to the other backend
//! under one deadline and collects its answer's body up to the cap, within
//! the mirror's share of the byte budget.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::MirrorJob;
use super::pair::{Answer, ShadowHead};
use crate::split::Backend;
use crate::sse;
use crate::stats::stream::{self, StreamSample};
use crate::stats::{Event, FailureKind, Role, ShadowResult, StatsHandle};
use crate::upstream::{self, UpstreamError};

/// Sends the shadow request and collects its answer. Every outcome but a
/// clean answer is recorded here; a clean answer's head is returned instead,
/// to be recorded with the comparison.
pub(super) async fn send(
    job: &MirrorJob,
    headers: HeaderMap,
    body: Bytes,
    backend: Backend,
    stats: &StatsHandle,
) -> (Answer, Option<ShadowHead>) {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = job.method.clone();
    *request.uri_mut() = job.target.uri_for(job.path_and_query.as_ref());
    *request.headers_mut() = headers;
    *request.version_mut() = job.target.version();
    let started = Instant::now();
    let failure = |kind| Event::Failure {
        backend,
        role: Role::Shadow,
        kind,
        latency: started.elapsed(),
    };
    // One deadline and one timer for the whole exchange, head and body. A
    // timeout per step (the head, then each body frame) builds a new timer
    // each time and registers it in tokio's timer wheel whenever that step
    // has to wait.
    let mut head = None;
    let exchange = exchange(job, request, backend, &mut head);
    let result = match tokio::time::timeout_at(started + job.timeout, exchange).await {
        Ok(result) => result,
        Err(_) if head.is_none() => Err(Broke::Head(job.target.timed_out(job.timeout))),
        Err(_) => Err(Broke::Body),
    };
    let record_head = |head: ShadowHead| {
        stats.record(Event::Response {
            backend,
            role: Role::Shadow,
            status: head.status,
            latency: head.latency,
        })
    };
    let Collected {
        body,
        truncated,
        grpc_failed,
        over_budget,
        stream,
    } = match result {
        Ok(collected) => collected,
        Err(Broke::Head(e)) => {
            tracing::debug!(
                request_id = ?job.request_id,
                error = %crate::error::chain(&e),
                "shadow request failed"
            );
            stats.record(failure(e.failure_kind()));
            stats.record(Event::Shadow(ShadowResult::Error));
            return (Answer::Failed, None);
        }
        Err(Broke::Body) => {
            record_head(head.expect("a broken body follows a head"));
            stats.record(failure(FailureKind::Body));
            stats.record(Event::Shadow(ShadowResult::Error));
            return (Answer::Failed, None);
        }
    };
    let head = head.expect("a collected body follows a head");
    if let Some(sample) = stream {
        stats.record(Event::Stream {
            backend,
            role: Role::Shadow,
            sample: Box::new(sample),
        });
    }
    if over_budget {
        return (Answer::OverBudget, Some(head));
    }
    let answer = Answer::Response {
        status: head.status,
        body,
        truncated,
        grpc_failed,
    };
    if grpc_failed {
        record_head(head);
        stats.record(failure(FailureKind::Grpc));
        stats.record(Event::Shadow(ShadowResult::Sent));
        return (answer, None);
    }
    (answer, Some(head))
}

/// What a shadow exchange that did not break off read.
struct Collected {
    /// The body, up to `shadow.max_body_bytes`.
    body: Bytes,
    /// The body went past the cap and was cut there.
    truncated: bool,
    /// A gRPC call that failed, by its head or its trailers.
    grpc_failed: bool,
    /// The body did not fit the byte budget; reading stopped there.
    over_budget: bool,
    /// An event stream's timing (of the part read, when truncated).
    stream: Option<StreamSample>,
}

/// How a shadow exchange broke off.
enum Broke {
    /// No response head: the request failed or timed out.
    Head(UpstreamError),
    /// The body broke off or timed out after the head.
    Body,
}

/// The shadow exchange without a time limit: the response head (left in
/// `head` as soon as it arrives), then the body up to the cap.
async fn exchange(
    job: &MirrorJob,
    request: Request<Full<Bytes>>,
    backend: Backend,
    head: &mut Option<ShadowHead>,
) -> Result<Collected, Broke> {
    let (response, sent) = job
        .target
        .send_unbounded(request)
        .await
        .map_err(Broke::Head)?;
    // Timed from the request going out, as the serving side is: a shadow
    // that waited for a connection is not a slower model.
    *head = Some(ShadowHead {
        backend,
        status: response.status().as_u16(),
        latency: sent.elapsed(),
    });
    let mut grpc_failed = upstream::grpc_failed(response.headers());
    // An event stream's frames are timed as they arrive, as the serving
    // side's are; the stream is read once it has ended.
    let mut frames = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| sse::is_event_stream(t.as_bytes()))
        .then(Vec::new);
    let mut body = response.into_body();
    let stop = |collected: BytesMut, truncated, over_budget, grpc_failed, stream| Collected {
        body: collected.freeze(),
        truncated,
        grpc_failed,
        over_budget,
        stream,
    };
    // A declared length is reserved (and allocated) up front; otherwise the
    // reservation follows the buffer's capacity as the chunks arrive.
    let declared = body
        .size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok());
    let mut collected = BytesMut::new();
    let mut reserved = 0;
    if let Some(length) = declared.filter(|n| *n <= job.max_body_bytes) {
        if !job.reservation.grow(length) {
            // Dropping the unread body closes the connection: a 10 MB answer
            // that does not fit is never read at all.
            return Ok(stop(collected, false, true, grpc_failed, None));
        }
        reserved = length;
        collected.reserve(length);
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Broke::Body)?;
        if let Some(trailers) = frame.trailers_ref() {
            grpc_failed |= upstream::grpc_failed(trailers);
        }
        if let Some(data) = frame.data_ref() {
            if collected.len() + data.len() > job.max_body_bytes {
                // Stop reading: the copy is uncomparable anyway, and
                // dropping the body closes the connection.
                let stream = timed(sent, frames.as_deref(), &collected);
                return Ok(stop(collected, true, false, grpc_failed, stream));
            }
            collected.reserve(data.len());
            if collected.capacity() > reserved {
                if !job.reservation.grow(collected.capacity() - reserved) {
                    return Ok(stop(BytesMut::new(), false, true, grpc_failed, None));
                }
                reserved = collected.capacity();
            }
            collected.extend_from_slice(data);
            if let Some(frames) = &mut frames {
                frames.push((collected.len(), Instant::now()));
            }
        }
    }
    let stream = timed(sent, frames.as_deref(), &collected);
    Ok(stop(collected, false, false, grpc_failed, stream))
}

/// An event stream's timing from its frames' arrivals; `None` for other
/// answers.
fn timed(sent: Instant, frames: Option<&[(usize, Instant)]>, body: &[u8]) -> Option<StreamSample> {
    stream::measure(sent, body, frames?)
}
