//! Mirroring: sends a copy of a request to the other backend and compares
//! the two answers, entirely off the client's path.
//!
//! A mirror holds one permit of a fixed pool (`shadow.max_in_flight`) for its
//! whole life, and one reservation on the shadow's byte budget
//! (`shadow.max_buffered_bytes`) for every byte it keeps; when either runs
//! out the mirror is dropped and counted, so the shadow's memory and
//! connections stay bounded however large the payloads and however slow or
//! broken the shadow backend is. Small pairs are compared inline; large
//! ones go to the [`compare_pool`], whose threads only take CPU time that
//! serving leaves idle. A mirror's failure is an outcome and a counter — it
//! must never surface as a client error or delay a client response.

pub mod compare_pool;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use crate::budget::{ByteBudget, Reservation};
use crate::capture::Captured;
use crate::compare::{Comparator, ElementCounts, Observed, Outcome};
use crate::split::Backend;
use crate::stats::{
    DropReason, Event, FailureKind, MismatchRecord, Role, ShadowAnswer, ShadowResult, StatsHandle,
    unix_ms,
};
use crate::upstream::{self, Upstream, UpstreamError};

use compare_pool::ComparePool;

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
    /// The bytes this mirror holds, shared with the captures that feed it.
    pub reservation: Arc<Reservation>,
}

/// What the data path delivers to a running mirror later.
pub struct Pending {
    /// The captured request body, when the client has sent all of it.
    pub request_body: oneshot::Receiver<Captured>,
    pub served: oneshot::Receiver<Served>,
}

/// The bounded pool of in-flight mirrors, their byte budget and the
/// threads that compare their large pairs.
pub struct Mirror {
    permits: ArcSwap<Semaphore>,
    stats: StatsHandle,
    budget: Arc<ByteBudget>,
    comparisons: Arc<ComparePool>,
}

impl Mirror {
    pub fn new(
        max_in_flight: usize,
        budget: Arc<ByteBudget>,
        comparisons: Arc<ComparePool>,
        stats: StatsHandle,
    ) -> Self {
        Self {
            permits: ArcSwap::from_pointee(Semaphore::new(max_in_flight)),
            stats,
            budget,
            comparisons,
        }
    }

    /// The shadow's byte budget, from which each mirror reserves.
    pub fn budget(&self) -> &Arc<ByteBudget> {
        &self.budget
    }

    /// Whether the comparison queue is full: a mirror started now would
    /// make the other backend answer only to be dropped at its comparison.
    pub fn comparisons_saturated(&self) -> bool {
        self.comparisons.saturated()
    }

    /// Large pairs waiting for a comparison thread.
    pub fn comparisons_queued(&self) -> usize {
        self.comparisons.queued()
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
        let comparisons = self.comparisons.clone();
        // Boxed: the task cell then holds a pointer, not the mirror's ~3 KiB
        // state, which tokio would otherwise copy in and out of the cell.
        let mirror = Box::pin(async move {
            run(job, pending, &stats, &comparisons).await;
            drop(permit);
        });
        tokio::spawn(mirror);
    }
}

async fn run(mut job: MirrorJob, pending: Pending, stats: &StatsHandle, comparisons: &ComparePool) {
    let body = match pending.request_body.await {
        Ok(Captured::Complete { body, .. }) => body,
        Ok(Captured::Overflow) => {
            stats.record(Event::Shadow(ShadowResult::SkippedBody));
            return;
        }
        Ok(Captured::OverBudget) => {
            stats.record(Event::Shadow(ShadowResult::DroppedBudget));
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
    if matches!(shadow, Answer::OverBudget) {
        return record_dropped(stats, head, DropReason::Budget);
    }
    let served = wait_served(pending.served, job.served_timeout).await;
    if matches!(served, Answer::OverBudget) {
        return record_dropped(stats, head, DropReason::Budget);
    }
    let (stable, candidate) = match job.serving {
        Backend::Stable => (served, shadow),
        Backend::Candidate => (shadow, served),
    };
    let pair = Pair {
        stable,
        candidate,
        head,
        comparator: job.comparator,
        request_id: job.request_id,
        method: job.method,
        path_and_query: job.path_and_query,
        stats: stats.clone(),
        _bytes: job.reservation,
    };
    if pair.body_len() <= INLINE_COMPARE_BYTES {
        return pair.judge();
    }
    if comparisons.try_submit(move || pair.judge()).is_err() {
        record_dropped(stats, head, DropReason::Busy);
    }
}

/// Bodies up to this size are compared inline, on the worker that ran the
/// mirror: a few microseconds, less than handing the pair to another
/// thread costs. Larger pairs go to the comparison pool, so that hundreds
/// of kilobytes of JSON never take a serving worker's time.
const INLINE_COMPARE_BYTES: usize = 16 * 1024;

/// Both answers of one mirrored request, ready to be judged, with what a
/// mismatch record needs and the budget reservation for their bytes.
struct Pair {
    stable: Answer,
    candidate: Answer,
    head: Option<ShadowHead>,
    comparator: Arc<Comparator>,
    request_id: HeaderValue,
    method: Method,
    path_and_query: Option<PathAndQuery>,
    stats: StatsHandle,
    /// Released when the pair (and so its bodies) is dropped.
    _bytes: Arc<Reservation>,
}

impl Pair {
    fn body_len(&self) -> usize {
        self.stable.body_len().max(self.candidate.body_len())
    }

    /// Compares the two answers and records the outcome with the shadow's
    /// response, in one event.
    fn judge(self) {
        let (Some(stable), Some(candidate)) = (self.stable.observed(), self.candidate.observed())
        else {
            // The serving side's body never completed: nothing to compare.
            return record_judged(
                &self.stats,
                self.head,
                Outcome::Uncomparable,
                Default::default(),
                None,
            );
        };
        let comparison = self.comparator.compare(&stable, &candidate);
        let mismatch = comparison.difference.map(|difference| {
            Box::new(MismatchRecord {
                at_ms: unix_ms(),
                request_id: String::from_utf8_lossy(self.request_id.as_bytes()).into_owned(),
                method: self.method.to_string(),
                path: self
                    .path_and_query
                    .as_ref()
                    .map(|p| p.path().to_owned())
                    .unwrap_or_else(|| "/".into()),
                difference,
            })
        });
        record_judged(
            &self.stats,
            self.head,
            comparison.outcome,
            comparison.elements,
            mismatch,
        );
    }
}

/// A pair that will not be compared: the shadow's answer still counts as
/// latency evidence, but the pair is no comparison.
fn record_dropped(stats: &StatsHandle, head: Option<ShadowHead>, reason: DropReason) {
    stats.record(Event::CompareDropped {
        shadow: head,
        reason,
    });
}

/// The shadow's response head, not yet recorded: a mirror whose shadow
/// answered cleanly reports it with its outcome, in one event.
type ShadowHead = ShadowAnswer;

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
    /// The body did not fit the shadow's byte budget: not compared.
    OverBudget,
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
            Answer::Unknown | Answer::OverBudget => None,
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
        over_budget,
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
    let mut grpc_failed = upstream::grpc_failed(response.headers());
    let mut body = response.into_body();
    let stop = |collected: BytesMut, truncated, over_budget, grpc_failed| Collected {
        body: collected.freeze(),
        truncated,
        grpc_failed,
        over_budget,
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
            return Ok(stop(collected, false, true, grpc_failed));
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
                return Ok(stop(collected, true, false, grpc_failed));
            }
            collected.reserve(data.len());
            if collected.capacity() > reserved {
                if !job.reservation.grow(collected.capacity() - reserved) {
                    return Ok(stop(BytesMut::new(), false, true, grpc_failed));
                }
                reserved = collected.capacity();
            }
            collected.extend_from_slice(data);
        }
    }
    Ok(stop(collected, false, false, grpc_failed))
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
                    grpc_failed: grpc_failed
                        || trailers.as_ref().is_some_and(upstream::grpc_failed),
                },
                Ok(Captured::OverBudget) => Answer::OverBudget,
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
