//! The two answers of one mirror: the serving side's copy, waited for
//! within a limit, and the shadow's, judged together into one outcome
//! event (or one dropped pair).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method};
use tokio::sync::oneshot;

use super::{MirrorJob, Served};
use crate::budget::Reservation;
use crate::capture::Captured;
use crate::compare::{Comparator, ElementCounts, Observed, Outcome};
use crate::split::Backend;
use crate::stats::{DropReason, Event, MismatchRecord, ShadowAnswer, StatsHandle, unix_ms};
use crate::upstream;

/// Both answers of one mirrored request, ready to be judged, with what a
/// mismatch record needs and the budget reservation for their bytes.
pub(super) struct Pair {
    stable: Answer,
    candidate: Answer,
    head: Option<ShadowHead>,
    comparator: Arc<Comparator>,
    request_id: HeaderValue,
    /// The W3C trace id the shadow request carried, if it carried one.
    trace_id: Option<u128>,
    method: Method,
    path_and_query: Option<PathAndQuery>,
    stats: StatsHandle,
    /// Released when the pair (and so its bodies) is dropped.
    _bytes: Arc<Reservation>,
}

impl Pair {
    /// The pair of `job`: the serving backend's answer and the shadow's,
    /// put in their stable and candidate places. `trace_id` is the trace
    /// the shadow request carried.
    pub fn new(
        job: MirrorJob,
        trace_id: Option<u128>,
        served: Answer,
        shadow: Answer,
        head: Option<ShadowHead>,
        stats: StatsHandle,
    ) -> Self {
        let (stable, candidate) = match job.serving {
            Backend::Stable => (served, shadow),
            Backend::Candidate => (shadow, served),
        };
        Pair {
            stable,
            candidate,
            head,
            comparator: job.comparator,
            request_id: job.request_id,
            trace_id,
            method: job.method,
            path_and_query: job.path_and_query,
            stats,
            _bytes: job.reservation,
        }
    }

    pub fn body_len(&self) -> usize {
        self.stable.body_len().max(self.candidate.body_len())
    }

    /// Compares the two answers and records the outcome with the shadow's
    /// response, in one event.
    pub fn judge(self) {
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
        // The path tells a gRPC call (KServe V2's ModelInfer) from a REST one.
        let path = self.path_and_query.as_ref().map_or("/", |p| p.path());
        let comparison = self.comparator.compare_call(path, &stable, &candidate);
        let mismatch = comparison.difference.map(|difference| {
            Box::new(MismatchRecord {
                at_ms: unix_ms(),
                request_id: String::from_utf8_lossy(self.request_id.as_bytes()).into_owned(),
                trace_id: self.trace_id.map(|id| format!("{id:032x}")),
                method: self.method.to_string(),
                path: path.to_owned(),
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
pub(super) fn record_dropped(stats: &StatsHandle, head: Option<ShadowHead>, reason: DropReason) {
    stats.record(Event::CompareDropped {
        shadow: head,
        reason,
    });
}

/// The shadow's response head, not yet recorded: a mirror whose shadow
/// answered cleanly reports it with its outcome, in one event.
pub(super) type ShadowHead = ShadowAnswer;

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
pub(super) enum Answer {
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

pub(super) async fn wait_served(served: oneshot::Receiver<Served>, limit: Duration) -> Answer {
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
