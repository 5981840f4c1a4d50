//! Sends one recorded request to both backends, compares the answers, and
//! counts the results into a [`WindowStats`] the way the proxy's stats task
//! does, so the rollout judge sees a replay exactly as it sees live traffic.
//!
//! Its one job is one exchange and its bookkeeping. It uses the backends'
//! own pools ([`Upstream`]), never the proxy's data path, and never retries
//! (a retried inference is a second inference).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use tokio::time::Instant;

use crate::compare::{Comparator, Comparison, Difference, Observed};
use crate::labels::{FailureKind, StatusClass};
use crate::sse;
use crate::stats::stream::{self, StreamSample};
use crate::stats::window::{RoleStats, WindowStats};
use crate::trace_context::TraceContext;
use crate::upstream::Upstream;

use super::input::Numbered;

/// Both backends, the comparison rules and the body cap.
pub struct Target {
    pub stable: Upstream<Full<Bytes>>,
    pub candidate: Upstream<Full<Bytes>>,
    pub comparator: Comparator,
    /// `shadow.max_body_bytes`: larger answers are uncomparable.
    pub max_body_bytes: usize,
}

/// One backend's answer.
#[derive(Debug)]
pub enum Answer {
    /// No response head: connect error, timeout, broken HTTP.
    Failed {
        kind: FailureKind,
        latency: Duration,
    },
    Response {
        status: u16,
        body: Bytes,
        truncated: bool,
        /// The body broke off (or outlasted the timeout) after the head.
        body_failed: bool,
        latency: Duration,
        /// An event stream's timing, as the proxy measures it.
        stream: Option<StreamSample>,
    },
}

impl Answer {
    fn observed(&self) -> Observed<'_> {
        match self {
            Answer::Failed { .. }
            | Answer::Response {
                body_failed: true, ..
            } => Observed::Failed,
            Answer::Response {
                status,
                body,
                truncated,
                ..
            } => Observed::Response {
                status: *status,
                body,
                truncated: *truncated,
            },
        }
    }

    /// Counts this answer as the stats task counts a serve event.
    fn count(&self, stats: &mut RoleStats) {
        match *self {
            Answer::Failed { kind, latency } => {
                stats.failures[kind.index()] += 1;
                stats.by_class[StatusClass::Error.index()] += 1;
                stats.latency_us.saturating_record(micros(latency));
            }
            Answer::Response {
                status,
                body_failed,
                latency,
                ref stream,
                ..
            } => {
                stats.by_class[StatusClass::of(status).index()] += 1;
                stats.latency_us.saturating_record(micros(latency));
                if let Some(sample) = stream {
                    stats.stream.get_or_insert_default().record(sample);
                }
                if body_failed {
                    stats.failures[FailureKind::Body.index()] += 1;
                }
            }
        }
    }
}

impl Answer {
    /// How long the backend took, answered or not.
    fn latency(&self) -> Duration {
        match *self {
            Answer::Failed { latency, .. } | Answer::Response { latency, .. } => latency,
        }
    }
}

fn micros(latency: Duration) -> u64 {
    latency.as_micros().max(1) as u64
}

/// One replayed request and what came of it.
pub struct Exchange {
    pub line: usize,
    pub method: String,
    pub path: String,
    pub request_id: Option<String>,
    pub trace: TraceContext,
    pub stable: Answer,
    pub candidate: Answer,
    pub comparison: Comparison,
}

/// Replays one request to both backends at once (so both latencies are
/// measured under the same conditions) and compares the answers.
pub async fn exchange(target: Arc<Target>, numbered: Numbered) -> Exchange {
    let request = &numbered.request;
    let request_id = request
        .request_id
        .clone()
        .unwrap_or_else(|| format!("validate-{}", numbered.line));
    // As the proxy does: the recorded trace continued (or a new one), each
    // backend's request a span of its own.
    let trace = TraceContext::for_request(&request.headers);
    let stable_span = (&trace, trace.serving_span);
    let candidate_span = (&trace, trace.shadow_span());
    let (stable, candidate) = tokio::join!(
        send(
            &target.stable,
            &numbered,
            &request_id,
            stable_span,
            target.max_body_bytes
        ),
        send(
            &target.candidate,
            &numbered,
            &request_id,
            candidate_span,
            target.max_body_bytes
        ),
    );
    let comparison = target.comparator.compare_call(
        request.path_and_query.path(),
        &stable.observed(),
        &candidate.observed(),
    );
    Exchange {
        line: numbered.line,
        method: request.method.to_string(),
        path: request.path_and_query.path().to_owned(),
        request_id: request.request_id.clone(),
        trace,
        stable,
        candidate,
        comparison,
    }
}

async fn send(
    upstream: &Upstream<Full<Bytes>>,
    numbered: &Numbered,
    request_id: &str,
    (trace, span): (&TraceContext, u64),
    max_body_bytes: usize,
) -> Answer {
    let r = &numbered.request;
    let mut request = Request::new(Full::new(r.body.clone()));
    *request.method_mut() = r.method.clone();
    *request.uri_mut() = upstream.uri_for(Some(&r.path_and_query));
    *request.version_mut() = upstream.version();
    let headers = request.headers_mut();
    headers.clone_from(&r.headers);
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", id);
    }
    trace.apply(headers, span);
    // Neither answer reaches a client: backends may skip side effects, as
    // they can for the proxy's mirrors.
    headers.insert("x-understudy-shadow", HeaderValue::from_static("1"));
    let started = Instant::now();
    let deadline = started + upstream.timeout();
    let response = match upstream.send(request, upstream.timeout()).await {
        Ok(response) => response,
        Err(error) => {
            return Answer::Failed {
                kind: error.failure_kind(),
                latency: started.elapsed(),
            };
        }
    };
    // Time to the response head, as the proxy measures it.
    let latency = started.elapsed();
    let status = response.status().as_u16();
    let mut frames = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|t| sse::is_event_stream(t.as_bytes()))
        .then(Vec::new);
    let mut body = response.into_body();
    let mut collected = BytesMut::new();
    let (mut truncated, mut body_failed) = (false, false);
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if collected.len() + data.len() > max_body_bytes {
                        truncated = true;
                        break;
                    }
                    collected.extend_from_slice(data);
                    if let Some(frames) = &mut frames {
                        frames.push((collected.len(), Instant::now()));
                    }
                }
            }
            Ok(None) => break,
            Ok(Some(Err(_))) | Err(_) => {
                body_failed = true;
                break;
            }
        }
    }
    let stream = frames.and_then(|frames| stream::measure(started, &collected, &frames));
    Answer::Response {
        status,
        body: collected.freeze(),
        truncated,
        body_failed,
        latency,
        stream,
    }
}

/// A mismatch, as `/mismatches` shows one, with the line it came from.
#[derive(Debug, Clone, Serialize)]
pub struct MismatchExample {
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The W3C trace both backends' requests were sent in.
    pub trace_id: String,
    pub method: String,
    pub path: String,
    #[serde(flatten)]
    pub difference: Difference,
}

/// Everything counted so far.
pub struct Tally {
    pub window: WindowStats,
    pub replayed: u64,
    pub mismatches: Vec<MismatchExample>,
    /// (stable, candidate) latency of every replayed request in µs, for the
    /// paired latency test: both went out at the same moment.
    pub latency_pairs: Vec<(u64, u64)>,
    keep: usize,
}

impl Tally {
    /// Keeps the first `keep` mismatches as examples.
    pub fn new(keep: usize) -> Tally {
        Tally {
            window: WindowStats::default(),
            replayed: 0,
            mismatches: Vec::new(),
            latency_pairs: Vec::new(),
            keep,
        }
    }

    pub fn add(&mut self, exchange: Exchange) {
        self.replayed += 1;
        self.latency_pairs.push((
            micros(exchange.stable.latency()),
            micros(exchange.candidate.latency()),
        ));
        let w = &mut self.window;
        exchange.stable.count(&mut w.stable.serve);
        exchange.candidate.count(&mut w.candidate.serve);
        let comparison = exchange.comparison;
        w.comparisons[comparison.outcome.index()] += 1;
        w.elements.matched += comparison.elements.matched;
        w.elements.mismatched += comparison.elements.mismatched;
        w.row_clusters.record(&comparison.elements);
        if let Some(difference) = comparison.difference
            && self.mismatches.len() < self.keep
        {
            self.mismatches.push(MismatchExample {
                line: exchange.line,
                request_id: exchange.request_id,
                trace_id: String::from_utf8_lossy(&exchange.trace.trace_id_hex()).into_owned(),
                method: exchange.method,
                path: exchange.path,
                difference,
            });
        }
    }
}
