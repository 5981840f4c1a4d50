//! Mirroring: sends a copy of a request to the other backend and compares
//! the two answers, entirely off the client's path.
//!
//! A mirror holds one permit of a fixed pool (`shadow.max_in_flight`) for its
//! whole life; when none is free the mirror is dropped and counted, so the
//! shadow's memory and connections stay bounded however slow or broken the
//! shadow backend is. A mirror's failure is an outcome and a counter — it
//! must never surface as a client error or delay a client response.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use crate::compare::{Comparator, ElementCounts, Observed, Outcome};
use crate::proxy::body::Captured;
use crate::split::Backend;
use crate::stats::window;
use crate::stats::{Event, FailureKind, MismatchRecord, Role, ShadowResult, StatsHandle, unix_ms};
use crate::upstream::{Upstream, UpstreamError};

/// What the serving backend answered, as the data path saw it.
#[derive(Debug)]
pub enum Served {
    /// No response head (the client got a 502/504).
    Failed,
    Response {
        status: u16,
        /// A trailers-only gRPC error (`grpc-status` in the head).
        grpc_failed: bool,
        /// The capped copy of the response body, once the client has it.
        body: oneshot::Receiver<Captured>,
    },
}

/// One mirrored request, handed over by the data path.
pub struct MirrorJob {
    pub request_id: HeaderValue,
    pub method: Method,
    pub path_and_query: Option<PathAndQuery>,
    /// Headers for the shadow request (already stripped and marked).
    pub headers: HeaderMap,
    /// Which backend served the client; the other one shadows.
    pub serving: Backend,
    pub target: Arc<Upstream<Full<Bytes>>>,
    pub comparator: Arc<Comparator>,
    /// Cap on the shadow response body kept for comparison.
    pub max_body_bytes: usize,
    /// Limit on the whole shadow exchange.
    pub timeout: Duration,
    /// How long to wait for the serving side's body before giving up on
    /// comparing.
    pub served_timeout: Duration,
}

/// What the data path delivers to a running mirror later.
pub struct Pending {
    /// The captured request body, when the client has sent all of it.
    pub request_body: oneshot::Receiver<Captured>,
    pub served: oneshot::Receiver<Served>,
}

/// The bounded pool of in-flight mirrors.
pub struct Mirror {
    permits: ArcSwap<Semaphore>,
    stats: StatsHandle,
}

impl Mirror {
    pub fn new(max_in_flight: usize, stats: StatsHandle) -> Self {
        Self {
            permits: ArcSwap::from_pointee(Semaphore::new(max_in_flight)),
            stats,
        }
    }

    /// Resizes the pool; mirrors holding permits of the old pool finish
    /// normally.
    pub fn resize(&self, max_in_flight: usize) {
        self.permits.store(Arc::new(Semaphore::new(max_in_flight)));
    }

    /// A permit when fewer than `max_in_flight` mirrors run, else `None`.
    pub fn try_reserve(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.load_full().try_acquire_owned().ok()
    }

    /// Mirrors currently holding a permit of the current pool.
    pub fn in_flight(&self, max_in_flight: usize) -> usize {
        max_in_flight.saturating_sub(self.permits.load().available_permits())
    }

    /// Starts the mirror in the background; returns at once.
    pub fn spawn(&self, job: MirrorJob, pending: Pending, permit: OwnedSemaphorePermit) {
        let stats = self.stats.clone();
        // Boxed: the task cell then holds a pointer, not the mirror's ~3 KiB
        // state, which tokio would otherwise copy in and out of the cell.
        let mirror = Box::pin(async move {
            run(job, pending, &stats).await;
            drop(permit);
        });
        tokio::spawn(mirror);
    }
}

async fn run(mut job: MirrorJob, pending: Pending, stats: &StatsHandle) {
    let body = match pending.request_body.await {
        Ok(Captured::Complete { body, .. }) => body,
        Ok(Captured::Overflow) => {
            stats.record(Event::Shadow(ShadowResult::SkippedBody));
            return;
        }
        // The body never completed: the client went away, or the serving
        // backend failed before reading it. There is nothing to replay, but
        // a serving failure is still that backend's error outcome.
        Ok(Captured::Broken) | Err(_) => {
            stats.record(Event::Shadow(ShadowResult::SkippedBody));
            let served = tokio::time::timeout(job.served_timeout, pending.served).await;
            if let Ok(Ok(Served::Failed)) = served {
                let outcome = match job.serving {
                    Backend::Stable => Outcome::StableError,
                    Backend::Candidate => Outcome::ShadowError,
                };
                stats.record(Event::Compared {
                    outcome,
                    elements: Default::default(),
                    mismatch: None,
                });
            }
            return;
        }
    };
    let shadow_backend = job.serving.other();
    // The headers go out once: moved into the request, not cloned.
    let headers = std::mem::take(&mut job.headers);
    let (shadow, head) = send(&job, headers, body, shadow_backend, stats).await;
    let served = wait_served(pending.served, job.served_timeout).await;
    let (stable, candidate) = match job.serving {
        Backend::Stable => (served, shadow),
        Backend::Candidate => (shadow, served),
    };
    let Some(comparison) = compare_off_the_hot_path(&job.comparator, stable, candidate).await
    else {
        // The serving side's body never completed: nothing to compare.
        record_judged(stats, head, Outcome::Uncomparable, Default::default(), None);
        return;
    };
    let mismatch = comparison.difference.map(|difference| {
        Box::new(MismatchRecord {
            at_ms: unix_ms(),
            request_id: String::from_utf8_lossy(job.request_id.as_bytes()).into_owned(),
            method: job.method.to_string(),
            path: job
                .path_and_query
                .as_ref()
                .map(|p| p.path().to_owned())
                .unwrap_or_else(|| "/".into()),
            difference,
        })
    });
    record_judged(
        stats,
        head,
        comparison.outcome,
        comparison.elements,
        mismatch,
    );
}

/// The shadow's response head, not yet recorded: a mirror whose shadow
/// answered cleanly reports it with its outcome, in one event.
struct ShadowHead {
    backend: Backend,
    status: u16,
    latency: Duration,
}

fn record_judged(
    stats: &StatsHandle,
    head: Option<ShadowHead>,
    outcome: Outcome,
    elements: ElementCounts,
    mismatch: Option<Box<MismatchRecord>>,
) {
    stats.record(match head {
        Some(head) => Event::Mirrored {
            backend: head.backend,
            status: head.status,
            latency: head.latency,
            outcome,
            elements,
            mismatch,
        },
        None => Event::Compared {
            outcome,
            elements,
            mismatch,
        },
    });
}

/// Bodies up to this size are compared inline (microseconds); larger ones on
/// the blocking pool, so a megabyte of JSON never stalls the worker that is
/// serving clients.
const INLINE_COMPARE_BYTES: usize = 64 * 1024;

/// Compares two answers; `None` when either is unknown.
async fn compare_off_the_hot_path(
    comparator: &Arc<Comparator>,
    stable: Answer,
    candidate: Answer,
) -> Option<crate::compare::Comparison> {
    let large = stable.body_len().max(candidate.body_len()) > INLINE_COMPARE_BYTES;
    if !large {
        return Some(comparator.compare(&stable.observed()?, &candidate.observed()?));
    }
    let comparator = comparator.clone();
    tokio::task::spawn_blocking(move || {
        Some(comparator.compare(&stable.observed()?, &candidate.observed()?))
    })
    .await
    .ok()
    .flatten()
}

/// A backend's answer with its body collected (up to a cap).
enum Answer {
    Failed,
    Response {
        status: u16,
        body: Bytes,
        truncated: bool,
        /// A gRPC call that failed: compared as a failed answer.
        grpc_failed: bool,
    },
    /// The exchange broke off on the serving side (client went away).
    Unknown,
}

impl Answer {
    fn body_len(&self) -> usize {
        match self {
            Answer::Response { body, .. } => body.len(),
            _ => 0,
        }
    }

    fn observed(&self) -> Option<Observed<'_>> {
        match self {
            Answer::Failed
            | Answer::Response {
                grpc_failed: true, ..
            } => Some(Observed::Failed),
            Answer::Response {
                status,
                body,
                truncated,
                ..
            } => Some(Observed::Response {
                status: *status,
                body,
                truncated: *truncated,
            }),
            Answer::Unknown => None,
        }
    }
}

/// Sends the shadow request and collects its answer. Every outcome but a
/// clean answer is recorded here; a clean answer's head is returned instead,
/// to be recorded with the comparison.
async fn send(
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
    let exchange = exchange(job, request, backend, started, &mut head);
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
    } = match result {
        Ok(collected) => collected,
        Err(Broke::Head(e)) => {
            tracing::debug!(
                request_id = ?job.request_id,
                error = %crate::error::chain(&e),
                "shadow request failed"
            );
            stats.record(failure(failure_kind(&e)));
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
    started: Instant,
    head: &mut Option<ShadowHead>,
) -> Result<Collected, Broke> {
    let response = job
        .target
        .send_unbounded(request)
        .await
        .map_err(Broke::Head)?;
    *head = Some(ShadowHead {
        backend,
        status: response.status().as_u16(),
        latency: started.elapsed(),
    });
    let mut grpc_failed = window::grpc_failed(response.headers());
    let mut body = response.into_body();
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Broke::Body)?;
        if let Some(trailers) = frame.trailers_ref() {
            grpc_failed |= window::grpc_failed(trailers);
        }
        if let Some(data) = frame.data_ref() {
            if collected.len() + data.len() > job.max_body_bytes {
                // Stop reading: the copy is uncomparable anyway, and
                // dropping the body closes the connection.
                return Ok(Collected {
                    body: collected.freeze(),
                    truncated: true,
                    grpc_failed,
                });
            }
            collected.extend_from_slice(data);
        }
    }
    Ok(Collected {
        body: collected.freeze(),
        truncated: false,
        grpc_failed,
    })
}

async fn wait_served(served: oneshot::Receiver<Served>, limit: Duration) -> Answer {
    let wait = async {
        match served.await {
            Ok(Served::Failed) => Answer::Failed,
            Ok(Served::Response {
                status,
                grpc_failed,
                body,
            }) => match body.await {
                Ok(Captured::Complete { body, trailers }) => Answer::Response {
                    status,
                    body,
                    truncated: false,
                    grpc_failed: grpc_failed || trailers.as_ref().is_some_and(window::grpc_failed),
                },
                Ok(Captured::Overflow) => Answer::Response {
                    status,
                    body: Bytes::new(),
                    truncated: true,
                    grpc_failed,
                },
                // The serving backend broke off mid-body: its failure, as a
                // shadow body that breaks off is the shadow's.
                Ok(Captured::Broken) => Answer::Failed,
                // The client went away before the body ended: unknown.
                Err(_) => Answer::Unknown,
            },
            Err(_) => Answer::Unknown,
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .unwrap_or(Answer::Unknown)
}

/// How an upstream failure is counted, for the serving and the shadow path
/// alike.
pub fn failure_kind(error: &UpstreamError) -> FailureKind {
    match error {
        UpstreamError::Connect { .. } => FailureKind::Connect,
        UpstreamError::Timeout { .. } => FailureKind::Timeout,
        UpstreamError::Protocol { .. } => FailureKind::Protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn served_with(body: Option<Captured>) -> Answer {
        let (body_tx, body_rx) = oneshot::channel();
        if let Some(captured) = body {
            body_tx.send(captured).unwrap();
        } else {
            drop(body_tx);
        }
        let (served_tx, served_rx) = oneshot::channel();
        served_tx
            .send(Served::Response {
                status: 200,
                grpc_failed: false,
                body: body_rx,
            })
            .unwrap();
        wait_served(served_rx, Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn serving_body_that_broke_off_is_a_failed_answer() {
        assert!(matches!(
            served_with(Some(Captured::Broken)).await,
            Answer::Failed
        ));
    }

    #[tokio::test]
    async fn serving_body_dropped_by_the_client_is_unknown() {
        assert!(matches!(served_with(None).await, Answer::Unknown));
    }
}
