//! The copies of one exchange: whether the request is mirrored, the mirror
//! job started before the serving request is sent, and the capped copies
//! of both bodies handed to the mirror and the recording.
//!
//! Nothing here waits: the mirror and the recording only ever *receive*
//! from this path, through `capture`'s oneshots.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::request::Parts;
use http::uri::PathAndQuery;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::admit::declared_length;
use super::exchange::{AccessLine, Exchange};
use super::headers::X_UNDERSTUDY_SHADOW;
use super::pools::ClientBody;
use super::response::ServedBody;
use super::{LimitedBody, Proxy};
use crate::budget::Reservation;
use crate::capture::{self, Captured, TeeBody};
use crate::mirror::{MirrorJob, MirrorPlan, Pending, Served};
use crate::record::{ResponseCopy, Ticket};
use crate::stats::Event;

/// Where the copies of this exchange go once the serving backend answers.
pub(super) struct Copies {
    /// The running mirror, waiting for the serving side's answer.
    mirror: Option<MirrorHandoff>,
    /// The recording's ticket and its copy of the request body.
    recording: Option<(Ticket, oneshot::Receiver<Captured>)>,
}

/// What the running mirror still needs from this exchange.
struct MirrorHandoff {
    served: oneshot::Sender<Served>,
    /// The mirror's share of the byte budget, which the response's copy
    /// takes from too.
    reservation: Arc<Reservation>,
}

impl Proxy {
    /// Decides whether this request is mirrored (a skip is counted here)
    /// and plans its access-log line, which names the decision.
    pub(super) fn plan_mirror<'a>(
        &'a self,
        exchange: &mut Exchange<'a>,
        parts: &Parts,
    ) -> MirrorPlan {
        let inner = &*self.inner;
        let mirroring = exchange.other.is_some() && inner.routing.mirroring();
        let plan = inner.mirror.plan(
            &exchange.settings.shadow,
            mirroring,
            parts.uri.path(),
            declared_length(&parts.headers),
        );
        exchange.access = inner.access_log.as_ref().map(|log| AccessLine {
            log,
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            shadow: plan.label(),
        });
        if let MirrorPlan::Skip(result) = plan {
            inner.stats.record(Event::Shadow(result));
        }
        plan
    }

    /// Tees the request body as the plan and the recording ask, and starts
    /// the mirror when it goes.
    pub(super) fn copy_request(
        &self,
        exchange: &Exchange<'_>,
        parts: &Parts,
        body: LimitedBody<hyper::body::Incoming>,
        plan: MirrorPlan,
        recording: Option<Ticket>,
    ) -> (ClientBody, Copies) {
        let cap = exchange.settings.shadow.max_body_bytes;
        let (body, mirror, record_copy) = match plan {
            MirrorPlan::Go(permit, reservation) => {
                let (body, copy) = TeeBody::capturing_within(body, cap, reservation.clone());
                let (copy, record_copy) = capture::share(copy, recording.is_some());
                let served = self.start_mirror(exchange, parts, copy, permit, reservation.clone());
                let mirror = MirrorHandoff {
                    served,
                    reservation,
                };
                (body, Some(mirror), record_copy)
            }
            MirrorPlan::Skip(_) | MirrorPlan::Off | MirrorPlan::NotSampled => {
                let (body, copy) = TeeBody::capturing_if(body, recording.is_some(), cap);
                (body, None, copy)
            }
        };
        let recording = recording.zip(record_copy);
        (body, Copies { mirror, recording })
    }

    /// Spawns the mirror job; returns where the serving side's answer goes.
    fn start_mirror(
        &self,
        exchange: &Exchange<'_>,
        parts: &Parts,
        request_body: oneshot::Receiver<Captured>,
        permit: OwnedSemaphorePermit,
        reservation: Arc<Reservation>,
    ) -> oneshot::Sender<Served> {
        let settings = &exchange.settings;
        let (served_tx, served_rx) = oneshot::channel();
        let mut shadow_headers = parts.headers.clone();
        // A span of its own, a sibling of the serving request's; applied
        // before `strip_headers`, which may still take it away.
        let trace = &exchange.trace;
        trace.apply(&mut shadow_headers, trace.shadow_span());
        for name in &settings.shadow.strip_headers {
            shadow_headers.remove(name);
        }
        shadow_headers.insert(X_UNDERSTUDY_SHADOW.clone(), HeaderValue::from_static("1"));
        let target = exchange
            .other
            .expect("mirror planned only with another backend");
        let request_id = &exchange.request_id;
        let noise = self.inner.mirror.plan_noise(
            settings.noise.as_ref(),
            exchange.serving,
            &exchange.pools.shadow,
        );
        let job = MirrorJob {
            request_id: if exchange.id_from_client {
                owned_header_value(request_id)
            } else {
                request_id.clone()
            },
            method: parts.method.clone(),
            path_and_query: parts.uri.path_and_query().map(owned_path_and_query),
            headers: shadow_headers,
            serving: exchange.serving,
            target: target.shadow.clone(),
            comparator: settings.comparator.clone(),
            max_body_bytes: settings.shadow.max_body_bytes,
            timeout: settings.shadow.timeout,
            served_timeout: exchange.pools.serve.timeout() + settings.shadow.timeout,
            reservation,
            noise,
        };
        let pending = Pending {
            request_body,
            served: served_rx,
        };
        self.inner.mirror.spawn(job, pending, permit);
        served_tx
    }
}

impl Copies {
    /// Tees the serving backend's response body for the mirror and the
    /// recording, whichever want it, and hands them their copies.
    pub(super) fn copy_response(
        self,
        body: ServedBody,
        status: u16,
        grpc_failed: bool,
        exchange: &Exchange<'_>,
    ) -> TeeBody<ServedBody> {
        let cap = exchange.settings.shadow.max_body_bytes;
        let backend = exchange.serving.as_str();
        let record_wait = exchange.record_wait();
        match (self.mirror, self.recording) {
            (Some(mirror), recording) => {
                let (body, copy) = TeeBody::capturing_within(body, cap, mirror.reservation);
                let (copy, record_copy) = capture::share(copy, recording.is_some());
                let _ = mirror.served.send(Served::Response {
                    status,
                    grpc_failed,
                    body: copy,
                });
                if let (Some((ticket, request)), Some(copy)) = (recording, record_copy) {
                    let response = ResponseCopy::new(backend, status, copy);
                    ticket.finish(request, Some(response), record_wait);
                }
                body
            }
            (None, Some((ticket, request))) => {
                let (body, copy) = TeeBody::capturing(body, cap);
                let response = ResponseCopy::new(backend, status, copy);
                ticket.finish(request, Some(response), record_wait);
                body
            }
            (None, None) => TeeBody::passthrough(body),
        }
    }

    /// The serving backend failed: the mirror's pair has no serving answer,
    /// and the recording keeps the request without one.
    pub(super) fn serving_failed(self, record_wait: Duration) {
        if let Some(mirror) = self.mirror {
            let _ = mirror.served.send(Served::Failed);
        }
        if let Some((ticket, request)) = self.recording {
            ticket.finish(request, None, record_wait);
        }
    }
}

/// hyper hands out the parts of a request head as slices of the connection's
/// read buffer. A mirror keeps its request's path and id until its
/// comparison (50 ms or more beside a slow candidate), so it takes copies of
/// its own rather than pin that whole buffer for all that time.
fn owned_path_and_query(path: &PathAndQuery) -> PathAndQuery {
    PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(path.as_str().as_bytes()))
        .unwrap_or_else(|_| path.clone())
}

fn owned_header_value(value: &HeaderValue) -> HeaderValue {
    HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone())
}
