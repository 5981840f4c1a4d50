//! Pooled HTTP clients to one backend, with connect and response timeouts.
//!
//! An [`Upstream`] knows how to reach a backend and nothing about why it is
//! asked: forwarding and mirroring both use it, each with its own pool, so a
//! flood of shadow traffic can never take the connections that serve
//! clients. It never retries a request a backend may have seen (a retried
//! inference is a second inference).
//!
//! Plain-HTTP/1.1 backends, the common case inside a cluster, go through a
//! lean per-worker pool ([`h1pool`]); TLS and HTTP/2 backends through
//! hyper-util's client, which handles ALPN and multiplexing. What a failed
//! exchange or a failed gRPC answer counts as is decided here too
//! ([`failure`]), so both paths count it the same way.

mod body;
mod cert_problem;
mod client_tls;
mod failure;
mod h1pool;
mod progress;

use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use hyper_rustls::HttpsConnector;

use std::sync::Arc;

pub use body::UpstreamBody;
pub use cert_problem::Trust;
pub use client_tls::{ClientTls, ClientTlsFiles};
pub use failure::grpc_failed;
use h1pool::{ConnectFailure, Http1Pool, Lease};
pub use progress::{BodyProgress, ProgressReporter, body_progress};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config;
use crate::tls::TlsError;

/// How long an idle pooled connection is kept: below the 60–75 s idle
/// timeouts of common model servers (uvicorn, nginx), so we close first and
/// never send on a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Why a request to a backend produced no response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {backend} ({url}): {source}")]
    Connect {
        backend: &'static str,
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("{backend} sent no response head within {timeout:?}")]
    Timeout {
        backend: &'static str,
        timeout: Duration,
    },
    /// Every connection slot to the backend (`max_connections`) stayed
    /// taken for the whole wait: the proxy's queue, not the backend's
    /// answer, ran out of time.
    #[error("all connection slots to {backend} stayed busy for {waited:?}")]
    Busy {
        backend: &'static str,
        waited: Duration,
    },
    #[error("{backend} failed the request: {source}")]
    Protocol {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
}

pub use crate::box_error::BoxError;

/// How requests reach the backend. Built once per worker and backend, so
/// the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Transport<B> {
    /// Plain HTTP/1.1: the lean pool, with the `Host` header it must set.
    Http1 {
        pool: Arc<Http1Pool<B>>,
        host: HeaderValue,
    },
    /// TLS or HTTP/2: hyper-util's client.
    Client(Client<HttpsConnector<HttpConnector>, B>),
}

/// A connection pool to one backend for request bodies of type `B`.
pub struct Upstream<B> {
    name: &'static str,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
    http2: bool,
    transport: Transport<B>,
    /// At most this many requests in flight at once (none: no limit); a
    /// request waits for a slot, within its timeout.
    slots: Option<Arc<Semaphore>>,
    /// The backend's live TLS files, which say what a refused certificate
    /// means in the error.
    tls: ClientTls,
}

impl<B> Upstream<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A pool with TLS files of its own (validation runs, tests).
    pub fn new(backend: &config::Backend) -> Result<Self, TlsError> {
        Ok(Self::sharing(backend, &ClientTls::new(backend)?))
    }

    /// A pool whose TLS connections use `tls`, the backend's live files
    /// shared with its other pools (a reload swaps them for all of them).
    pub fn sharing(backend: &config::Backend, tls: &ClientTls) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(backend.connect_timeout));
        // Inference requests are small and latency-bound: never wait for
        // Nagle's algorithm to batch them.
        http.set_nodelay(true);
        http.enforce_http(false);
        let parts = backend.url.clone().into_parts();
        let scheme = parts.scheme.unwrap_or(Scheme::HTTP);
        let authority = parts
            .authority
            .expect("config validation guarantees an authority");
        let transport = if scheme == Scheme::HTTP && !backend.http2 {
            let target = Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query("/")
                .build()
                .expect("scheme and authority make a valid URI");
            Transport::Http1 {
                pool: Arc::new(Http1Pool::new(
                    http,
                    target,
                    backend.pool_max_idle,
                    POOL_IDLE_TIMEOUT,
                )),
                host: host_header(&authority),
            }
        } else {
            Transport::Client(client(backend, tls, http))
        };
        Self {
            name: backend.name,
            scheme,
            authority,
            timeout: backend.timeout,
            http2: backend.http2,
            transport,
            slots: None,
            tls: tls.clone(),
        }
    }

    /// Limits this pool to `max` requests in flight at once. Over HTTP/1.1
    /// that bounds its connections too: a new one is opened only by a
    /// request holding a slot that finds none idle. Requests past the limit
    /// wait in order (as in Envoy's pending queue), inside their timeout.
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.slots = Some(Arc::new(Semaphore::new(max.max(1))));
        self
    }

    /// Caps the read buffer of each plain HTTP/1.1 connection of this pool
    /// at `bytes` (at least 8 KiB). A large answer is then read in pieces of
    /// that size instead of hyper's buffer growing to about 400 KiB per
    /// connection, which for hundreds of mirrors in flight is memory outside
    /// the shadow's byte budget.
    pub fn with_max_read_buffer(mut self, bytes: usize) -> Self {
        if let Transport::Http1 { pool, .. } = &mut self.transport
            && let Some(pool) = Arc::get_mut(pool)
        {
            pool.set_max_read_buffer(bytes);
        }
        self
    }

    /// `stable` or `candidate`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The backend's `host:port`, used as the Host of requests to it.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The HTTP version requests to this backend must carry.
    pub fn version(&self) -> Version {
        if self.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        }
    }

    /// Time allowed for the response head.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The URI of `path_and_query` on this backend, in the form its
    /// transport sends: origin-form (`/path?query`) on the HTTP/1 pool,
    /// absolute for hyper-util's client (which picks the pool from it).
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let mut parts = http::uri::Parts::default();
        if let Transport::Client(_) = self.transport {
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(self.authority.clone());
        }
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).expect("scheme, authority and path make a valid URI")
    }

    /// Sends `request` and waits at most `timeout` for the response head
    /// (and at most `timeout` before that for an in-flight slot).
    pub async fn send(
        &self,
        request: Request<B>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody<B>>, UpstreamError> {
        let slot = self.slot(timeout).await?;
        match tokio::time::timeout(timeout, self.request(request, slot)).await {
            Err(_) => Err(self.timed_out(timeout)),
            Ok(result) => result.map(|(response, _)| response),
        }
    }

    /// Sends `request` with no time limit of its own, for a caller that
    /// bounds the whole exchange, head and body, with one deadline. Waiting
    /// for an in-flight slot is still bounded by the backend's timeout.
    /// Returns the response and the instant the request went out on a
    /// ready connection: the backend's latency is measured from there, as
    /// [`Upstream::send_streaming`] measures it from the end of the body, so
    /// neither side's latency includes the proxy's own queueing, pool
    /// checkout or connection setup.
    pub async fn send_unbounded(
        &self,
        request: Request<B>,
    ) -> Result<(Response<UpstreamBody<B>>, Instant), UpstreamError> {
        let slot = self.slot(self.timeout).await?;
        self.request(request, slot).await
    }

    /// Sends a request whose body streams from a client. The head timeout
    /// starts only once the body has been sent (as Envoy does): a slow
    /// upload is the client's business, not the backend's latency. While
    /// the body is still going out, a backend that stops reading it (the
    /// body is not polled for `timeout` although it has data to give) is a
    /// timeout; a client that stops sending is the body's idle timeout. Returns the response
    /// and the instant the head timer started, which is where the backend's
    /// latency is measured from.
    pub async fn send_streaming(
        &self,
        request: Request<B>,
        timeout: Duration,
        progress: BodyProgress,
    ) -> Result<(Response<UpstreamBody<B>>, Instant), UpstreamError> {
        // Waiting for a slot is queueing here, not the backend's latency:
        // the clock starts once the request can go out.
        let slot = self.slot(timeout).await?;
        let started = Instant::now();
        let response = self.request(request, slot);
        tokio::pin!(response);
        // One timer for the whole exchange: moving its deadline later does
        // not touch the timer wheel, registering a second one would.
        let timer = tokio::time::sleep(timeout);
        tokio::pin!(timer);
        let mut last_polls = progress.polls();
        loop {
            tokio::select! {
                biased;
                result = &mut response => return result.map(|(r, _)| (r, started)),
                _ = progress.ended() => break,
                _ = &mut timer => {
                    let polls = progress.polls();
                    if polls == last_polls && !progress.waiting_on_source() {
                        return Err(self.timed_out(timeout));
                    }
                    last_polls = polls;
                    timer.as_mut().reset(Instant::now() + timeout);
                }
            }
        }
        let body_sent = Instant::now();
        timer.as_mut().reset(body_sent + timeout);
        tokio::select! {
            biased;
            result = &mut response => result.map(|(r, _)| (r, body_sent)),
            _ = &mut timer => Err(self.timed_out(timeout)),
        }
    }

    /// An in-flight slot when this pool has a limit, waiting at most
    /// `timeout` for one (in arrival order).
    async fn slot(&self, timeout: Duration) -> Result<Option<OwnedSemaphorePermit>, UpstreamError> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        // The common case takes a free slot without arming a timer.
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Ok(Some(slot));
        }
        match tokio::time::timeout(timeout, slots.clone().acquire_owned()).await {
            Ok(slot) => Ok(Some(slot.expect("the slots semaphore is never closed"))),
            Err(_) => Err(UpstreamError::Busy {
                backend: self.name,
                waited: timeout,
            }),
        }
    }

    /// One exchange up to the response head, without a time limit, and the
    /// instant the request went out: on the HTTP/1 pool once a connection
    /// is ready for it; through hyper-util's client (which checks out its
    /// connection inside) when it is handed over.
    async fn request(
        &self,
        request: Request<B>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(Response<UpstreamBody<B>>, Instant), UpstreamError> {
        match &self.transport {
            Transport::Http1 { pool, host } => self.request_http1(pool, host, request, slot).await,
            Transport::Client(client) => {
                let sent = Instant::now();
                match client.request(request).await {
                    Ok(response) => Ok((
                        response.map(|body| UpstreamBody::new(body, None, slot)),
                        sent,
                    )),
                    Err(source) if source.is_connect() => Err(self.unreachable(source.into())),
                    Err(source) => Err(self.failed(source.into())),
                }
            }
        }
    }

    async fn request_http1(
        &self,
        pool: &Arc<Http1Pool<B>>,
        host: &HeaderValue,
        mut request: Request<B>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(Response<UpstreamBody<B>>, Instant), UpstreamError> {
        // What hyper-util's client adds: the backend's own Host (the proxy
        // moved the client's to x-forwarded-host).
        request
            .headers_mut()
            .entry(HOST)
            .or_insert_with(|| host.clone());
        loop {
            let (mut sender, reused) = match pool.checkout() {
                Some(sender) => (sender, true),
                None => match pool.connect().await {
                    Ok(sender) => (sender, false),
                    Err(ConnectFailure::Connect(source)) => return Err(self.unreachable(source)),
                    Err(ConnectFailure::Handshake(source)) => return Err(self.failed(source)),
                },
            };
            let sent = Instant::now();
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        sender,
                        pool: pool.clone(),
                        slot,
                    };
                    let response = response.map(|body| UpstreamBody::new(body, Some(lease), None));
                    return Ok((response, sent));
                }
                Err(mut error) => match error.take_message() {
                    // A reused connection closed before the request was
                    // written (the backend timed it out just then): the
                    // backend never saw it, so another connection may try.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(self.failed(error.into_error().into())),
                },
            }
        }
    }

    /// The error for no response head within `timeout`.
    pub fn timed_out(&self, timeout: Duration) -> UpstreamError {
        UpstreamError::Timeout {
            backend: self.name,
            timeout,
        }
    }

    fn unreachable(&self, source: BoxError) -> UpstreamError {
        UpstreamError::Connect {
            backend: self.name,
            url: format!("{}://{}", self.scheme, self.authority),
            source: self.tls.explain(source),
        }
    }

    fn failed(&self, source: BoxError) -> UpstreamError {
        UpstreamError::Protocol {
            backend: self.name,
            source: self.tls.explain(source),
        }
    }
}

/// hyper-util's client for a TLS or HTTP/2 backend.
fn client<B>(
    backend: &config::Backend,
    tls: &ClientTls,
    http: HttpConnector,
) -> Client<HttpsConnector<HttpConnector>, B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // SNI comes from the URL's host; ALPN offers exactly the protocol
    // the backend is configured for.
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.client_config())
        .https_or_http();
    let connector = if backend.http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(backend.pool_max_idle)
        .http2_only(backend.http2)
        .build(connector)
}

/// The Host header for a plain-HTTP backend, as hyper-util's client writes
/// it: the host, with the port unless it is 80.
fn host_header(authority: &Authority) -> HeaderValue {
    let value = match authority.port_u16() {
        Some(80) | None => authority.host().to_owned(),
        Some(port) => format!("{}:{port}", authority.host()),
    };
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value))
        .expect("a URI's host and port are a valid header value")
}

#[cfg(test)]
mod tests;
