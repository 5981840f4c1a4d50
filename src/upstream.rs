//! Pooled HTTP clients to one backend, with connect and response timeouts.
//!
//! An [`Upstream`] knows how to reach a backend and nothing about why it is
//! asked: forwarding and mirroring both use it, each with its own pool, so a
//! flood of shadow traffic can never take the connections that serve
//! clients. It never retries (a retried inference is a second inference).

use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use hyper_rustls::HttpsConnector;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config;
use crate::tls::{self, TlsError};

/// How long an idle pooled connection is kept: below the 60–75 s idle
/// timeouts of common model servers (uvicorn, nginx), so we close first and
/// never send on a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Watches a request body's progress while it is being sent, so the head
/// timeout can start when the body is done.
#[derive(Debug)]
pub struct BodyProgress {
    /// Resolves when the body has ended or failed (or was dropped).
    pub ended: oneshot::Receiver<()>,
    /// Increases every time the body is polled.
    pub polls: Arc<AtomicU64>,
    /// True while the body waits for its own source (the client), which
    /// is the client's slowness, not the backend's.
    pub waiting_on_source: Arc<AtomicBool>,
}

/// Why a request to a backend produced no response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {backend} ({url}): {source}")]
    Connect {
        backend: &'static str,
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{backend} sent no response head within {timeout:?}")]
    Timeout {
        backend: &'static str,
        timeout: Duration,
    },
    #[error("{backend} failed the request: {source}")]
    Protocol {
        backend: &'static str,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
}

/// A connection pool to one backend for request bodies of type `B`.
pub struct Upstream<B> {
    name: &'static str,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
    http2: bool,
    client: Client<HttpsConnector<HttpConnector>, B>,
}

impl<B> Upstream<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(backend: &config::Backend) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(backend.connect_timeout));
        // Inference requests are small and latency-bound: never wait for
        // Nagle's algorithm to batch them.
        http.set_nodelay(true);
        http.enforce_http(false);
        let cert_pair = backend
            .client_cert
            .as_ref()
            .map(|(cert, key)| (cert.as_path(), key.as_path()));
        let tls = tls::client_config(backend.ca.as_deref(), cert_pair)?;
        // SNI comes from the URL's host; ALPN offers exactly the protocol
        // the backend is configured for.
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if backend.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(backend.pool_max_idle)
            .http2_only(backend.http2)
            .build(connector);
        let parts = backend.url.clone().into_parts();
        Ok(Self {
            name: backend.name,
            scheme: parts.scheme.unwrap_or(Scheme::HTTP),
            authority: parts
                .authority
                .expect("config validation guarantees an authority"),
            timeout: backend.timeout,
            http2: backend.http2,
            client,
        })
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

    /// The absolute URI of `path_and_query` on this backend.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            path_and_query
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).expect("scheme, authority and path make a valid URI")
    }

    /// Sends `request` and waits at most `timeout` for the response head.
    pub async fn send(
        &self,
        request: Request<B>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(self.timed_out(timeout)),
            Ok(result) => self.classify(result),
        }
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
        mut progress: BodyProgress,
    ) -> Result<(Response<Incoming>, Instant), UpstreamError> {
        let started = Instant::now();
        let response = self.client.request(request);
        tokio::pin!(response);
        let mut last_polls = progress.polls.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                biased;
                result = &mut response => return self.classify(result).map(|r| (r, started)),
                _ = &mut progress.ended => break,
                _ = tokio::time::sleep(timeout) => {
                    let polls = progress.polls.load(Ordering::Relaxed);
                    let waiting = progress.waiting_on_source.load(Ordering::Relaxed);
                    if polls == last_polls && !waiting {
                        return Err(self.timed_out(timeout));
                    }
                    last_polls = polls;
                }
            }
        }
        let body_sent = Instant::now();
        match tokio::time::timeout(timeout, response).await {
            Err(_) => Err(self.timed_out(timeout)),
            Ok(result) => self.classify(result).map(|r| (r, body_sent)),
        }
    }

    fn timed_out(&self, timeout: Duration) -> UpstreamError {
        UpstreamError::Timeout {
            backend: self.name,
            timeout,
        }
    }

    fn classify(
        &self,
        result: Result<Response<Incoming>, hyper_util::client::legacy::Error>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match result {
            Ok(response) => Ok(response),
            Err(source) if source.is_connect() => Err(UpstreamError::Connect {
                backend: self.name,
                url: format!("{}://{}", self.scheme, self.authority),
                source,
            }),
            Err(source) => Err(UpstreamError::Protocol {
                backend: self.name,
                source,
            }),
        }
    }
}
