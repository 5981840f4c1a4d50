//! Forwarding: answers each client from the serving backend and hands a
//! copy to `mirror`.
//!
//! [`Proxy::handle`] reads as the request's path, one module per step:
//! `admit` chooses the serving backend and admits the request (rewriting
//! its head with [`headers`]), `copies` plans the mirror and tees the
//! bodies for it and for the recording (through `crate::capture`),
//! `forward` buffers the upload ([`prebuffer`]) and sends it, and
//! `respond` streams the answer back ([`response`]) or answers the failure
//! (`crate::error`). `exchange` holds what those steps share about one
//! request; [`body`] holds the upload to the listener's limits.
//!
//! The serving response streams to the client as it arrives; when the
//! request is mirrored, both bodies are tee'd into capped copies on the way.
//! Nothing here ever waits for the shadow: the mirror is spawned before the
//! serving request is sent and only ever *receives* from this path.

mod admit;
pub mod body;
mod copies;
mod exchange;
mod forward;
pub mod headers;
mod ids;
mod pools;
pub mod prebuffer;
pub mod read_ahead;
mod respond;
pub mod response;
mod stream_timing;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::access_log::AccessLog;
use crate::budget::ByteBudget;
use crate::compare::Comparator;
use crate::config::{self, Config};
use crate::mirror::Mirror;
use crate::mirror::compare_pool::ComparePool;
use crate::record::Recorder;
use crate::routing::Routing;
use crate::split::StickyKey;
use crate::stats::StatsHandle;
use crate::tls::TlsError;
use crate::upstream::{ClientTls, ClientTlsFiles};
use body::LimitedBody;
pub use exchange::error_response;
use ids::RequestIds;
use pools::{BackendPools, Backends};
use read_ahead::ReadAheadSettings;
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
    /// `listen.response_buffer_bytes`, `response_spill_bytes`, `spill_dir`.
    pub read_ahead: ReadAheadSettings,
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
            read_ahead: ReadAheadSettings {
                memory_bytes: config.listen.response_buffer_bytes,
                spill_bytes: config.listen.response_spill_bytes,
                spill_dir: config.listen.spill_dir.clone(),
                direct_up_to: config::write_buffer_bytes(config.listen.max_header_bytes) as u64,
            },
            comparator: Arc::new(Comparator::new(&config.compare.spec)?),
            backend_header: config.listen.backend_header,
            sticky: config.split.sticky.clone(),
        })
    }
}

/// What the listener needs to know to read a small upload before the
/// request reaches the proxy (see `listener::first_request`).
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// `listen.request_buffer_bytes`.
    pub buffer_bytes: usize,
    /// `listen.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// `listen.request_buffer_timeout`.
    pub buffer_timeout: Duration,
    /// `listen.body_idle_timeout`.
    pub idle_timeout: Duration,
}

/// A request extension: the upload began before the request reached the
/// proxy (the listener waited for its body), at this instant. The request
/// buffering's deadline counts from it.
#[derive(Debug, Clone, Copy)]
pub struct UploadStarted(pub tokio::time::Instant);

/// Both backends' TLS files, read by a reload and not yet in use.
pub struct BackendTlsFiles {
    stable: ClientTlsFiles,
    candidate: Option<ClientTlsFiles>,
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
    /// The backends and their live TLS files, to build each worker's pools.
    backends: Backends,
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

impl Inner {
    fn metrics(&self) -> &crate::telemetry::Metrics {
        self.stats.metrics()
    }
}

impl Proxy {
    /// The upload limits in force now.
    pub fn upload_limits(&self) -> UploadLimits {
        let settings = self.inner.settings.load();
        UploadLimits {
            buffer_bytes: settings.request_buffer_bytes,
            max_body_bytes: settings.max_body_bytes,
            buffer_timeout: settings.request_buffer_timeout,
            idle_timeout: settings.body_idle_timeout,
        }
    }

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
        let backends = Backends::new(&config.stable, config.candidate.as_ref())?;
        Ok(Self {
            pools: Arc::new(BackendPools::new(&backends, config.listen.workers)),
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
        Ok(Self {
            inner: self.inner.clone(),
            pools: Arc::new(BackendPools::new(&self.inner.backends, self.inner.workers)),
        })
    }

    /// Reads the backends' TLS files (`ca`, `cert`, `key`) as `config`
    /// names them, without using them yet: the first unreadable or
    /// mismatched file fails the whole reload.
    pub fn load_backend_tls(&self, config: &Config) -> Result<BackendTlsFiles, TlsError> {
        let candidate = match (&self.inner.backends.candidate, &config.candidate) {
            (Some(_), Some(backend)) => Some(ClientTls::load(backend)?),
            _ => None,
        };
        Ok(BackendTlsFiles {
            stable: ClientTls::load(&config.stable)?,
            candidate,
        })
    }

    /// Connections opened from now on, by every worker, use `files`;
    /// open ones keep the handshake they made.
    pub fn store_backend_tls(&self, files: BackendTlsFiles) {
        let backends = &self.inner.backends;
        backends.stable.1.store(files.stable);
        if let (Some((_, tls)), Some(files)) = (&backends.candidate, files.candidate) {
            tls.store(files);
        }
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

    /// Serves one client request, step by step: choose the serving
    /// backend, admit the request, plan its mirror and copies, buffer the
    /// upload, forward it, then respond with the backend's answer or fail.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        peer: &headers::ForwardedFor,
        scheme: &'static str,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = request.into_parts();
        let mut exchange = self.choose_backend(&parts);
        let recording = match self.admit(&exchange, &mut parts, peer, scheme) {
            Ok(recording) => recording,
            Err(error) => return exchange.refuse(&error),
        };
        let plan = self.plan_mirror(&mut exchange, &parts);
        let settings = &exchange.settings;
        let (body, progress) = LimitedBody::new(body)
            .with_limit(settings.max_body_bytes)
            .with_idle_timeout(Some(settings.body_idle_timeout))
            .with_progress();
        let upload_started = parts.extensions.get::<UploadStarted>().map(|s| s.0);
        let (body, copies) = self.copy_request(&exchange, &parts, body, plan, recording);
        let body = match self.buffer_upload(&exchange, body, upload_started).await {
            Ok(body) => body,
            Err(error) => return exchange.refuse(&error),
        };
        match self.forward(&exchange, parts, body, progress).await {
            Ok((response, started)) => self.respond(&exchange, response, started, copies),
            Err((error, latency)) => self.fail(&exchange, error, latency, copies),
        }
    }
}
