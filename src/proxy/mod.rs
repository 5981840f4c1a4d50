//! Forwarding: answers each client from the serving backend and hands a
//! copy to `mirror`.
//!
//! The serving response streams to the client as it arrives; when the
//! request is mirrored, both bodies are tee'd into capped copies on the way.
//! Nothing here ever waits for the shadow: the mirror is spawned before the
//! serving request is sent and only ever *receives* from this path.

pub mod body;
pub mod headers;
mod ids;
mod pools;
pub mod prebuffer;
pub mod response;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::access_log::{AccessLog, Entry, now_rfc3339};
use crate::budget::ByteBudget;
use crate::capture::{self, TeeBody};
use crate::compare::Comparator;
use crate::config::{self, Config};
use crate::error::ProxyError;
use crate::mirror::compare_pool::ComparePool;
use crate::mirror::{Mirror, MirrorJob, Pending, Served};
use crate::record::{Recorder, ResponseCopy};
use crate::routing::Routing;
use crate::split::{self, Backend, StickyKey};
use crate::stats::{Event, FailureKind, Role, ShadowResult, StatsHandle};
use crate::tls::TlsError;
use crate::upstream::UpstreamError;
use body::{BodyError, LimitedBody};
use headers::{X_REQUEST_ID, X_UNDERSTUDY_BACKEND, X_UNDERSTUDY_SHADOW};
use ids::RequestIds;
use pools::BackendPools;
use prebuffer::prebuffer;
pub use response::ProxyBody;

/// Settings that a config reload replaces at once.
pub struct Settings {
    pub shadow: config::Shadow,
    /// `listen.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// `listen.body_idle_timeout`.
    pub body_idle_timeout: Duration,
    /// `listen.request_buffer_bytes`.
    pub request_buffer_bytes: usize,
    /// `listen.request_buffer_timeout`.
    pub request_buffer_timeout: Duration,
    pub comparator: Arc<Comparator>,
    pub backend_header: bool,
    pub sticky: Option<StickyKey>,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Self, crate::compare::SpecError> {
        Ok(Self {
            shadow: config.shadow.clone(),
            max_body_bytes: config.listen.max_body_bytes,
            body_idle_timeout: config.listen.body_idle_timeout,
            request_buffer_bytes: config.listen.request_buffer_bytes,
            request_buffer_timeout: config.listen.request_buffer_timeout,
            comparator: Arc::new(Comparator::new(&config.compare.spec)?),
            backend_header: config.listen.backend_header,
            sticky: config.split.sticky.clone(),
        })
    }
}

/// The request handler shared by all connections.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
    /// This worker's connection pools (each worker has its own, driven by
    /// its own runtime).
    pools: Arc<BackendPools>,
}

struct Inner {
    /// The backends, to build each worker's pools.
    backends: (config::Backend, Option<config::Backend>),
    /// Data-plane workers, which share each backend's `max_connections`.
    workers: usize,
    settings: ArcSwap<Settings>,
    routing: Arc<Routing>,
    mirror: Mirror,
    stats: StatsHandle,
    request_ids: RequestIds,
    access_log: Option<AccessLog>,
    /// Set once at startup when `[record]` is on.
    recorder: std::sync::OnceLock<Recorder>,
}

/// Decides what happens to a copy of this request.
enum MirrorPlan {
    /// Mirroring is off (no candidate, percent 0, rolled back, promoted).
    Off,
    /// Not drawn by `shadow.percent`.
    NotSampled,
    Skip(ShadowResult),
    Go(tokio::sync::OwnedSemaphorePermit),
}

impl MirrorPlan {
    /// The access log's `shadow` field.
    fn label(&self) -> &'static str {
        match self {
            MirrorPlan::Off => "off",
            MirrorPlan::NotSampled => "not_sampled",
            MirrorPlan::Skip(result) => result.as_str(),
            MirrorPlan::Go(_) => "mirrored",
        }
    }
}

impl Inner {
    fn metrics(&self) -> &crate::telemetry::Metrics {
        self.stats.metrics()
    }
}

impl Proxy {
    pub fn new(
        config: &Config,
        settings: Settings,
        routing: Arc<Routing>,
        stats: StatsHandle,
        access_log: Option<AccessLog>,
    ) -> Result<Self, TlsError> {
        let mirror = Mirror::new(
            config.shadow.max_in_flight,
            ByteBudget::new(config.shadow.max_buffered_bytes),
            ComparePool::start(
                config.compare.threads,
                config.compare.queue,
                config.compare.priority,
            ),
            stats.clone(),
        );
        let backends = (config.stable.clone(), config.candidate.clone());
        Ok(Self {
            pools: Arc::new(BackendPools::new(
                &backends.0,
                backends.1.as_ref(),
                config.listen.workers,
            )?),
            inner: Arc::new(Inner {
                backends,
                workers: config.listen.workers,
                settings: ArcSwap::from_pointee(settings),
                routing,
                mirror,
                stats,
                request_ids: RequestIds::new(),
                access_log,
                recorder: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Turns recording on (`[record]`); only the first call has an effect.
    pub fn set_recorder(&self, recorder: Recorder) {
        let _ = self.inner.recorder.set(recorder);
    }

    /// A handle for one data-plane worker: shares settings, routing,
    /// mirror slots and stats, with connection pools of its own so every
    /// upstream connection is driven by the worker that uses it.
    pub fn for_worker(&self) -> Result<Proxy, TlsError> {
        let (stable, candidate) = &self.inner.backends;
        Ok(Self {
            inner: self.inner.clone(),
            pools: Arc::new(BackendPools::new(
                stable,
                candidate.as_ref(),
                self.inner.workers,
            )?),
        })
    }

    /// Applies reloaded settings to the next request.
    pub fn update_settings(&self, settings: Settings) {
        let old = self.inner.settings.load();
        if old.shadow.max_in_flight != settings.shadow.max_in_flight {
            self.inner.mirror.resize(settings.shadow.max_in_flight);
        }
        self.inner
            .mirror
            .budget()
            .set_limit(settings.shadow.max_buffered_bytes);
        self.inner.settings.store(Arc::new(settings));
    }

    /// Mirrors currently in flight.
    pub fn mirrors_in_flight(&self) -> usize {
        let max = self.inner.settings.load().shadow.max_in_flight;
        self.inner.mirror.in_flight(max)
    }

    /// Bytes held by mirrors in flight, of `shadow.max_buffered_bytes`.
    pub fn mirror_bytes_held(&self) -> usize {
        self.inner.mirror.budget().used()
    }

    /// Large mirrored pairs waiting for a comparison thread.
    pub fn comparisons_queued(&self) -> usize {
        self.inner.mirror.comparisons_queued()
    }

    /// Serves one client request.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: &headers::ForwardedFor,
        scheme: &'static str,
    ) -> Response<ProxyBody> {
        let inner = &*self.inner;
        let settings = inner.settings.load();
        let (mut parts, body) = request.into_parts();

        let (request_id, id_from_client) = inner
            .request_ids
            .for_request(parts.headers.get(&X_REQUEST_ID));
        let serving = match &self.pools.candidate {
            Some(_) => {
                let key = settings
                    .sticky
                    .as_ref()
                    .and_then(|k| k.extract(&parts.headers));
                split::choose(inner.routing.weight_bp(), key)
            }
            None => Backend::Stable,
        };
        let (pools, other) = match serving {
            Backend::Stable => (&self.pools.stable, self.pools.candidate.as_ref()),
            Backend::Candidate => (
                self.pools
                    .candidate
                    .as_ref()
                    .expect("candidate chosen only when configured"),
                Some(&self.pools.stable),
            ),
        };
        if let Some(error) = headers::refuse_request(&parts) {
            inner.metrics().malformed.increment(1);
            return error_response(
                &error,
                serving.as_str(),
                &request_id,
                settings.backend_header,
            );
        }

        // Sampled before the headers are rewritten: the recording keeps the
        // client's own headers.
        let recording = inner
            .recorder
            .get()
            .and_then(|r| r.sample(&parts, &request_id));
        let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
        headers::prepare_request(&mut parts.headers, peer, scheme, authority.as_deref());
        // After the hop-by-hop removal: `Connection: x-request-id` cannot
        // take the id away from the backends.
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        let client_version = parts.version;

        if let Some(limit) = settings.max_body_bytes
            && declared_length(&parts.headers).is_some_and(|len| len > limit)
        {
            inner.metrics().body_too_large.increment(1);
            let error = ProxyError::BodyTooLarge { limit };
            return error_response(
                &error,
                serving.as_str(),
                &request_id,
                settings.backend_header,
            );
        }
        let plan = self.plan_mirror(&settings, &parts, other.is_some());
        let access = inner.access_log.as_ref().map(|log| {
            (
                log,
                parts.method.clone(),
                parts.uri.path().to_owned(),
                plan.label(),
            )
        });
        // Limited first, tee'd on top: a body that fails its limits leaves
        // an incomplete copy, never one a mirror would replay.
        let (body, progress) = LimitedBody::new(body)
            .with_limit(settings.max_body_bytes)
            .with_idle_timeout(Some(settings.body_idle_timeout))
            .with_progress();
        let (body, mirror_channels, record_copy) = match plan {
            MirrorPlan::Go(permit) => {
                let reservation = inner.mirror.budget().reservation();
                let (body, request_copy) = TeeBody::capturing_within(
                    body,
                    settings.shadow.max_body_bytes,
                    reservation.clone(),
                );
                let (request_copy, record_copy) = capture::share(request_copy, recording.is_some());
                let (served_tx, served_rx) = oneshot::channel();
                let mut shadow_headers = parts.headers.clone();
                for name in &settings.shadow.strip_headers {
                    shadow_headers.remove(name);
                }
                shadow_headers.insert(X_UNDERSTUDY_SHADOW.clone(), HeaderValue::from_static("1"));
                let target = other.expect("mirror planned only with another backend");
                inner.mirror.spawn(
                    MirrorJob {
                        request_id: if id_from_client {
                            owned_header_value(&request_id)
                        } else {
                            request_id.clone()
                        },
                        method: parts.method.clone(),
                        path_and_query: parts.uri.path_and_query().map(owned_path_and_query),
                        headers: shadow_headers,
                        serving,
                        target: target.shadow.clone(),
                        comparator: settings.comparator.clone(),
                        max_body_bytes: settings.shadow.max_body_bytes,
                        timeout: settings.shadow.timeout,
                        served_timeout: pools.serve.timeout() + settings.shadow.timeout,
                        reservation: reservation.clone(),
                    },
                    Pending {
                        request_body: request_copy,
                        served: served_rx,
                    },
                    permit,
                );
                (body, Some((served_tx, reservation)), record_copy)
            }
            MirrorPlan::Skip(result) => {
                inner.stats.record(Event::Shadow(result));
                let (body, copy) = TeeBody::capturing_if(
                    body,
                    recording.is_some(),
                    settings.shadow.max_body_bytes,
                );
                (body, None, copy)
            }
            MirrorPlan::Off | MirrorPlan::NotSampled => {
                let (body, copy) = TeeBody::capturing_if(
                    body,
                    recording.is_some(),
                    settings.shadow.max_body_bytes,
                );
                (body, None, copy)
            }
        };
        let recording = recording.zip(record_copy);
        let record_wait = pools.serve.timeout() + settings.shadow.timeout;

        let buffering = prebuffer(
            body,
            settings.request_buffer_bytes,
            settings.request_buffer_timeout,
        );
        let body = match buffering.await {
            Ok(body) => body,
            Err(error) => {
                // The client's body failed before any backend saw it: its
                // fault, and nothing to count against a backend.
                let error = self.client_fault(&error);
                log_access(
                    &access,
                    &request_id,
                    serving,
                    error.status().as_u16(),
                    Duration::ZERO,
                );
                let backend = serving.as_str();
                return error_response(&error, backend, &request_id, settings.backend_header);
            }
        };
        parts.uri = pools.serve.uri_for(parts.uri.path_and_query());
        parts.version = pools.serve.version();
        let upstream_request = Request::from_parts(parts, Box::new(body));
        let called = Instant::now();
        let result = pools
            .serve
            .send_streaming(upstream_request, pools.serve.timeout(), progress)
            .await
            .and_then(
                |(response, started)| match headers::unforwardable(&response) {
                    Some(problem) => Err(crate::upstream::UpstreamError::Protocol {
                        backend: serving.as_str(),
                        source: problem.into(),
                    }),
                    None => Ok((response, started)),
                },
            );
        // The backend's latency runs from the end of the upload (see
        // `send_streaming`); a failure is timed from the call.
        let (result, started) = match result {
            Ok((response, started)) => (Ok(response), started),
            Err(error) => (Err(error), called),
        };
        let latency = started.elapsed();
        let log = |status: u16| log_access(&access, &request_id, serving, status, latency);

        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                inner.stats.record(Event::Response {
                    backend: serving,
                    role: Role::Serve,
                    status: parts.status.as_u16(),
                    latency,
                });
                let grpc_failed = crate::upstream::grpc_failed(&parts.headers);
                if grpc_failed {
                    inner.stats.record(Event::Failure {
                        backend: serving,
                        role: Role::Serve,
                        kind: FailureKind::Grpc,
                        latency,
                    });
                }
                headers::prepare_response(&mut parts.headers);
                parts
                    .headers
                    .insert(X_REQUEST_ID.clone(), request_id.clone());
                if settings.backend_header {
                    parts.headers.insert(
                        X_UNDERSTUDY_BACKEND.clone(),
                        HeaderValue::from_static(serving.as_str()),
                    );
                }
                parts.version = client_version;
                let status = parts.status.as_u16();
                let body = match (mirror_channels, recording) {
                    (Some((served, reservation)), recording) => {
                        let (body, copy) = TeeBody::capturing_within(
                            body,
                            settings.shadow.max_body_bytes,
                            reservation,
                        );
                        let (copy, record_copy) = capture::share(copy, recording.is_some());
                        let _ = served.send(Served::Response {
                            status,
                            grpc_failed,
                            body: copy,
                        });
                        if let (Some((ticket, request)), Some(copy)) = (recording, record_copy) {
                            let response = ResponseCopy::new(serving.as_str(), status, copy);
                            ticket.finish(request, Some(response), record_wait);
                        }
                        body
                    }
                    (None, Some((ticket, request))) => {
                        let (body, copy) = TeeBody::capturing(body, settings.shadow.max_body_bytes);
                        let response = ResponseCopy::new(serving.as_str(), status, copy);
                        ticket.finish(request, Some(response), record_wait);
                        body
                    }
                    (None, None) => TeeBody::passthrough(body),
                };
                log(parts.status.as_u16());
                let body = ProxyBody::upstream(body, inner.stats.clone(), serving, started);
                Response::from_parts(parts, body)
            }
            Err(error) => {
                // A failure caused by the client's own body is not the
                // backend's: answer for the client and count nothing
                // against the backend (the mirror sees the body closed).
                let client_fault = BodyError::find(&error).map(|e| self.client_fault(e));
                if let Some(error) = client_fault {
                    log(error.status().as_u16());
                    return error_response(
                        &error,
                        serving.as_str(),
                        &request_id,
                        settings.backend_header,
                    );
                }
                if let UpstreamError::Busy { .. } = error {
                    // The proxy's own queue ran out, not the backend: no
                    // failure to count against it, and the mirror's pair is
                    // left without a stable answer (uncomparable).
                    inner.metrics().backend_busy.increment(1);
                    let error = ProxyError::from(error);
                    log(error.status().as_u16());
                    let backend = serving.as_str();
                    return error_response(&error, backend, &request_id, settings.backend_header);
                }
                if let Some((served, _)) = mirror_channels {
                    let _ = served.send(Served::Failed);
                }
                if let Some((ticket, request)) = recording {
                    ticket.finish(request, None, record_wait);
                }
                let kind = error.failure_kind();
                inner.stats.record(Event::Failure {
                    backend: serving,
                    role: Role::Serve,
                    kind,
                    latency,
                });
                tracing::warn!(
                    request_id = ?request_id,
                    backend = serving.as_str(),
                    error = %crate::error::chain(&error),
                    "serving backend failed"
                );
                let error = ProxyError::from(error);
                log(error.status().as_u16());
                error_response(
                    &error,
                    serving.as_str(),
                    &request_id,
                    settings.backend_header,
                )
            }
        }
    }

    /// The answer to a request whose own body failed, counted as the
    /// client's doing.
    fn client_fault(&self, error: &BodyError) -> ProxyError {
        let metrics = self.inner.metrics();
        let counter = match error {
            BodyError::TooLarge { .. } => &metrics.body_too_large,
            BodyError::Source(_) => &metrics.client_aborted,
            BodyError::Idle { .. } | BodyError::Deadline { .. } => &metrics.client_timeout,
        };
        counter.increment(1);
        ProxyError::from(error)
    }

    fn plan_mirror(
        &self,
        settings: &Settings,
        parts: &http::request::Parts,
        has_other: bool,
    ) -> MirrorPlan {
        let shadow = &settings.shadow;
        if !has_other || shadow.percent <= 0.0 || !self.inner.routing.mirroring() {
            return MirrorPlan::Off;
        }
        if !shadow.routes.is_empty() && !shadow.routes.iter().any(|r| r.matches(parts.uri.path())) {
            return MirrorPlan::Skip(ShadowResult::SkippedRoute);
        }
        if shadow.percent < 100.0 && rand::random::<f64>() * 100.0 >= shadow.percent {
            return MirrorPlan::NotSampled;
        }
        if declared_length(&parts.headers).is_some_and(|len| len > shadow.max_body_bytes as u64) {
            return MirrorPlan::Skip(ShadowResult::SkippedBody);
        }
        // Shed before it costs anything: with the comparison queue full, or
        // half the byte budget held by mirrors already running (the other
        // half is for their answers, still arriving), the other backend's
        // answer could only be dropped.
        if self.inner.mirror.comparisons_saturated() {
            return MirrorPlan::Skip(ShadowResult::DroppedBusy);
        }
        if self.inner.mirror.budget().half_spent() {
            return MirrorPlan::Skip(ShadowResult::DroppedBudget);
        }
        match self.inner.mirror.try_reserve() {
            Some(permit) => MirrorPlan::Go(permit),
            None => MirrorPlan::Skip(ShadowResult::DroppedOverload),
        }
    }
}

/// Writes one access-log line, when the access log is on.
fn log_access(
    access: &Option<(&AccessLog, http::Method, String, &'static str)>,
    request_id: &HeaderValue,
    serving: Backend,
    status: u16,
    latency: Duration,
) {
    if let Some((log, method, path, shadow)) = access {
        log.log(&Entry {
            time: now_rfc3339(),
            request_id: request_id.to_str().unwrap_or("-"),
            method: method.as_str(),
            path,
            backend: serving.as_str(),
            status,
            latency_ms: latency.as_secs_f64() * 1000.0,
            shadow,
        });
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

/// The request's `Content-Length`, when it has a valid one.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// A response of the proxy's own, as SPEC §4 describes.
pub fn error_response(
    error: &ProxyError,
    backend: &str,
    request_id: &HeaderValue,
    backend_header: bool,
) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(error.body(backend)));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    if let ProxyError::Connect = error {
        // RFC 9110 §15.5.6: a 405 says what is allowed; every method but
        // CONNECT is forwarded.
        headers.insert(
            http::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
        );
    }
    if backend_header && let Ok(value) = HeaderValue::from_str(backend) {
        headers.insert(X_UNDERSTUDY_BACKEND.clone(), value);
    }
    response
}
