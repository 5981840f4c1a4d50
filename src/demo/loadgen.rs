//! Demo load generator: sends paced KServe V2 infer requests with random iris
//! rows and a sticky `x-user-id` to the proxy, and counts what comes back.
//!
//! Its one job is to produce steady, realistic-looking traffic and honest
//! counters. It must never panic on a failed request (every failure is
//! counted) and never run past its duration or its shutdown token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::box_error::BoxError;
use crate::toy::{infer_body, random_rows};

/// Header carrying the simulated user, for sticky traffic-split demos.
pub const USER_HEADER: &str = "x-user-id";
/// Response header the proxy sets to say which backend answered.
pub const BACKEND_HEADER: &str = "x-understudy-backend";
/// User ids are drawn uniformly from `1..=USERS`.
pub const USERS: u32 = 500;
/// A request (including reading its body) taking longer counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a transport error when running unpaced.
const UNPACED_ERROR_BACKOFF: Duration = Duration::from_millis(10);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// What to send, where, and how fast.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadConfig {
    /// Base URL, e.g. `http://127.0.0.1:8080` (trailing `/` is ignored).
    pub target: String,
    /// Request path, e.g. `/v2/models/iris/infer`.
    pub path: String,
    /// Overall requests per second. Zero, negative or non-finite means
    /// unpaced: every worker sends back-to-back (closed loop).
    pub rate: f64,
    /// Number of concurrent workers (at least 1 is used).
    pub concurrency: usize,
    /// How long to generate load.
    pub duration: Duration,
    /// Iris rows per request (at least 1 is used).
    pub rows_per_request: usize,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            target: "http://127.0.0.1:8080".to_owned(),
            path: "/v2/models/iris/infer".to_owned(),
            rate: 50.0,
            concurrency: 8,
            duration: Duration::from_secs(30),
            rows_per_request: 1,
        }
    }
}

/// Live counters, shared with whoever displays progress.
/// Invariant: `ok + failed <= sent` (requests cut off by cancellation are
/// counted as sent only).
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Requests started.
    pub sent: AtomicU64,
    /// Responses with a 2xx status.
    pub ok: AtomicU64,
    /// Non-2xx responses, transport errors and timeouts.
    pub failed: AtomicU64,
    /// Responses (any status) whose `x-understudy-backend` is `candidate`.
    pub served_by_candidate: AtomicU64,
    /// Pacing tickets dropped because every worker was busy (the target is
    /// slower than `rate` allows at this `concurrency`).
    pub skipped: AtomicU64,
}

/// A plain copy of [`LoadStats`] at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadSnapshot {
    /// See [`LoadStats::sent`].
    pub sent: u64,
    /// See [`LoadStats::ok`].
    pub ok: u64,
    /// See [`LoadStats::failed`].
    pub failed: u64,
    /// See [`LoadStats::served_by_candidate`].
    pub served_by_candidate: u64,
    /// See [`LoadStats::skipped`].
    pub skipped: u64,
}

impl LoadStats {
    /// Read all counters (each individually atomic, not as a group).
    pub fn snapshot(&self) -> LoadSnapshot {
        LoadSnapshot {
            sent: self.sent.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            served_by_candidate: self.served_by_candidate.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }
}

/// Generate load until `config.duration` elapses or `shutdown` is cancelled.
/// On expiry, in-flight requests finish (bounded by a 10 s timeout); on
/// cancellation they are abandoned. An invalid URL is logged and nothing is sent.
pub async fn run(config: LoadConfig, stats: Arc<LoadStats>, shutdown: CancellationToken) {
    let url = format!("{}{}", config.target.trim_end_matches('/'), config.path);
    let uri: Uri = match url.parse() {
        Ok(uri) => uri,
        Err(error) => {
            tracing::error!(%url, %error, "load generator: invalid target URL");
            return;
        }
    };
    let concurrency = config.concurrency.max(1);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .build_http();
    // `stop` ends ticket handout; only `shutdown` aborts in-flight requests.
    let stop = shutdown.child_token();
    let paced = config.rate.is_finite() && config.rate > 0.0;
    // Bounded ticket queue: at most `concurrency` tickets wait, the rest are
    // skipped, so a slow target cannot build an unbounded backlog.
    let (tickets_tx, tickets_rx) = mpsc::channel::<()>(concurrency);
    let tickets = paced.then(|| Arc::new(Mutex::new(tickets_rx)));
    let mut workers = JoinSet::new();
    for worker_id in 0..concurrency {
        let worker = Worker {
            id: worker_id,
            client: client.clone(),
            uri: uri.clone(),
            rows: config.rows_per_request.max(1),
            stats: Arc::clone(&stats),
            tickets: tickets.clone(),
        };
        workers.spawn(worker.run(stop.clone(), shutdown.clone()));
    }
    let deadline = tokio::time::sleep(config.duration);
    if paced {
        pace(config.rate, &tickets_tx, &stats, &stop, deadline).await;
    } else {
        tokio::select! {
            () = deadline => {}
            () = stop.cancelled() => {}
        }
    }
    stop.cancel();
    drop(tickets_tx);
    while let Some(result) = workers.join_next().await {
        if let Err(error) = result {
            tracing::warn!(%error, "load generator worker failed");
        }
    }
}

/// Issue tickets so that `rate × elapsed` have been handed out at any time,
/// catching up in batches when the timer (≥ 1 ms resolution) lags.
async fn pace(
    rate: f64,
    tickets: &mpsc::Sender<()>,
    stats: &LoadStats,
    stop: &CancellationToken,
    deadline: tokio::time::Sleep,
) {
    tokio::pin!(deadline);
    let start = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_secs_f64((1.0 / rate).max(0.001)));
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut issued: u64 = 0;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = &mut deadline => return,
            _ = interval.tick() => {}
        }
        // +1: the first ticket is due at t = 0.
        let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
        while issued < due {
            issued += 1;
            match tickets.try_send(()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(())) => {
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(())) => return,
            }
        }
    }
}

struct Worker {
    id: usize,
    client: HttpClient,
    uri: Uri,
    rows: usize,
    stats: Arc<LoadStats>,
    /// `None` when unpaced: send back-to-back.
    tickets: Option<Arc<Mutex<mpsc::Receiver<()>>>>,
}

impl Worker {
    async fn run(self, stop: CancellationToken, shutdown: CancellationToken) {
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        for seq in 0u64.. {
            let proceed = match &self.tickets {
                Some(tickets) => tokio::select! {
                    biased;
                    () = stop.cancelled() => false,
                    ticket = async { tickets.lock().await.recv().await } => ticket.is_some(),
                },
                None => !stop.is_cancelled(),
            };
            if !proceed {
                return;
            }
            let body = infer_body(
                &random_rows(&mut rng, self.rows),
                &format!("load-{}-{seq}", self.id),
            );
            let user = rng.random_range(1..=USERS);
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = tokio::time::timeout(REQUEST_TIMEOUT, self.send(body, user)) => outcome,
            };
            match outcome {
                Ok(Ok((success, by_candidate))) => {
                    let counter = if success {
                        &self.stats.ok
                    } else {
                        &self.stats.failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if by_candidate {
                        self.stats
                            .served_by_candidate
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "load generator request failed");
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    if self.tickets.is_none() {
                        // Unpaced against a dead target would otherwise spin
                        // a core on instant connection errors.
                        tokio::time::sleep(UNPACED_ERROR_BACKOFF).await;
                    }
                }
                Err(_elapsed) => {
                    tracing::debug!("load generator request timed out");
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// One request; returns (2xx?, answered by candidate?).
    async fn send(&self, body: String, user: u32) -> Result<(bool, bool), BoxError> {
        let request = Request::post(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(USER_HEADER, user)
            .body(Full::new(Bytes::from(body)))?;
        let response = self.client.request(request).await?;
        let success = response.status().is_success();
        let by_candidate = response
            .headers()
            .get(BACKEND_HEADER)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"candidate"));
        // Drain the body so the connection goes back to the pool.
        response.into_body().collect().await?;
        Ok((success, by_candidate))
    }
}
