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
//!
//! A mirror's life follows the files: [`plan`] decides whether a request is
//! mirrored at all (before it costs anything), this module runs the mirror
//! job, `shadow` sends the copy and collects the other backend's answer,
//! and `pair` waits for the serving side's copy and judges the two.
//! The request and serving bodies arrive as `capture` copies; nothing here
//! knows the proxy.

pub mod compare_pool;
pub mod noise;
mod pair;
pub mod plan;
mod shadow;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::Full;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::budget::{ByteBudget, Reservation};
use crate::capture::Captured;
use crate::compare::{Comparator, Outcome};
use crate::split::Backend;
use crate::stats::{DropReason, Event, ShadowResult, StatsHandle};
use crate::upstream::Upstream;

use compare_pool::ComparePool;
use noise::{NoiseJob, NoisePair};
use pair::{Answer, Pair, record_dropped, wait_served};
pub use plan::MirrorPlan;
use shadow::send;

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
    /// A second request to stable, for the noise floor (see [`noise`]).
    pub noise: Option<NoiseJob>,
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
    let trace_id = crate::trace_context::trace_id(&job.headers);
    // The noise job leaves the job (its permit is held until this mirror
    // ends); the headers are cloned only for it.
    let noise_job = job.noise.take();
    let noise_headers = noise_job.as_ref().map(|_| job.headers.clone());
    // The headers go out once: moved into the request, not cloned.
    let headers = std::mem::take(&mut job.headers);
    let noise_send = async {
        match (&noise_job, noise_headers) {
            (Some(noise_job), Some(h)) => Some(noise::send(&job, noise_job, h, body.clone()).await),
            _ => None,
        }
    };
    let ((shadow, head), second) = tokio::join!(
        send(&job, headers, body.clone(), shadow_backend, stats),
        noise_send
    );
    let noise_dropped = || {
        if noise_job.is_some() {
            stats.record(Event::NoiseDropped);
        }
    };
    if matches!(shadow, Answer::OverBudget) {
        noise_dropped();
        return record_dropped(stats, head, DropReason::Budget);
    }
    let served = wait_served(pending.served, job.served_timeout).await;
    if matches!(served, Answer::OverBudget) {
        noise_dropped();
        return record_dropped(stats, head, DropReason::Budget);
    }
    let noise = noise_job
        .as_ref()
        .zip(second)
        .map(|(n, second)| NoisePair::new(&job, n, (served.clone(), second), stats.clone()));
    let pair = Pair::new(job, trace_id, served, shadow, head, stats.clone());
    let body_len = pair
        .body_len()
        .max(noise.as_ref().map_or(0, NoisePair::body_len));
    let judge = move || {
        pair.judge();
        if let Some(noise) = noise {
            noise.judge();
        }
    };
    if body_len <= INLINE_COMPARE_BYTES {
        return judge();
    }
    if comparisons.try_submit(judge).is_err() {
        noise_dropped();
        record_dropped(stats, head, DropReason::Busy);
    }
}

/// Bodies up to this size are compared inline, on the worker that ran the
/// mirror: a few microseconds, less than handing the pair to another
/// thread costs. Larger pairs go to the comparison pool, so that hundreds
/// of kilobytes of JSON never take a serving worker's time.
const INLINE_COMPARE_BYTES: usize = 16 * 1024;
