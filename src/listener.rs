//! The data-plane accept loop: HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! port, a connection limit, and draining on shutdown.
//!
//! Shaped like mini-redis' server: a semaphore permit per connection bounds
//! how many are open; shutdown stops accepting first, then lets in-flight
//! requests finish within the grace period. Idle connections are closed
//! after `listen.header_read_timeout`: HTTP/1.1 by hyper, HTTP/2 by
//! [`idle`]. It must never block the accept loop on a slow client.

mod bind;
mod first_request;
mod idle;
mod replay;

pub use bind::{PortClaim, bind, bind_shared, claim};

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::proxy::headers::ForwardedFor;
use crate::proxy::{Proxy, UploadStarted};
use crate::send_timeout::SendTimeout;
use crate::telemetry::Metrics;
use idle::{Activity, Tracked};
use replay::Replay;

/// Accepts client connections and serves them with the proxy.
pub struct DataListener {
    /// A non-blocking std listener, registered with the runtime that runs
    /// this data listener (each worker has its own).
    pub listener: std::net::TcpListener,
    pub proxy: Proxy,
    pub drain_timeout: Duration,
    pub metrics: Arc<Metrics>,
    pub tls: Option<ListenerTls>,
    pub limits: Limits,
    /// Connection slots shared by all workers (`listen.max_connections`).
    pub limit: Arc<Semaphore>,
}

/// Per-connection protection against slow or oversized clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    /// A connection whose writes stall this long is closed.
    pub send_timeout: Duration,
}

impl Limits {
    /// hyper's builders with these limits, the same for every protocol.
    fn builders(&self) -> Builders {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // A head longer than this is answered 431, however the reads
            // that brought it were cut.
            .max_header_size(self.max_header_bytes)
            .max_buf_size(config::write_buffer_bytes(self.max_header_bytes))
            // A client that shuts down its sending side after its request
            // is waiting for the answer. Without this, hyper also reads the
            // socket while every request is in flight, to spot that case
            // as an abort; each such read reserves a fresh 8 KiB buffer,
            // because the request head still borrows the old one (peak RSS
            // at 1,000 busy connections ~6 MiB higher, a malloc per request).
            // A client that vanishes is then noticed when its answer is
            // written (README: half-closed clients).
            .half_close(true);
        let max_header_list = u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX);
        // Pings after the idle timeout without a frame from the client, and
        // a connection whose client does not answer within another idle
        // timeout is closed: that frees the slot of a peer that vanished
        // while a request was still open. (Idle connections are closed by
        // `idle` either way.)
        let ping = self.header_read_timeout;
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(max_header_list)
            .keep_alive_interval(ping)
            .keep_alive_timeout(ping);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        // hyper-util's auto builder has no `max_header_size`: it bounds the
        // head through the read buffer only.
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(config::write_buffer_bytes(self.max_header_bytes))
            .half_close(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(max_header_list)
            .keep_alive_interval(ping)
            .keep_alive_timeout(ping);
        Builders { http1, http2, auto }
    }
}

/// The listener's TLS settings. The server config sits behind an
/// `ArcSwap` so a SIGHUP can swap certificates: new handshakes use the new
/// ones, established connections keep theirs.
#[derive(Clone)]
pub struct ListenerTls {
    pub config: Arc<ArcSwap<ServerConfig>>,
    pub handshake_timeout: Duration,
}

/// One accepted client connection, ready to be served.
struct Connection {
    proxy: Proxy,
    builders: Arc<Builders>,
    watcher: Watcher,
    metrics: Arc<Metrics>,
    peer: SocketAddr,
    /// The listener's shutdown, for connections [`idle`] serves.
    shutdown: CancellationToken,
    /// `listen.header_read_timeout`, also the idle timeout of HTTP/2.
    idle: Duration,
    /// `listen.send_timeout`.
    send_timeout: Duration,
}

/// hyper's connection builders, configured once per worker.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// Reads the first bytes itself to choose; used only when they did not
    /// tell (see [`Protocol::Undecided`]).
    auto: auto::Builder<TokioExecutor>,
}

/// What a client connection speaks, known before hyper reads from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c), or ALPN `h2` over TLS.
    Http2,
    /// Too few bytes yet to tell: hyper-util's auto builder waits for more.
    Undecided,
}

/// The first bytes every HTTP/2 connection sends (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol of a plaintext connection from its first bytes. Serving
/// HTTP/1 directly instead of through the auto builder matters for memory:
/// the auto builder reads 24 bytes first and replays them through a
/// wrapper, after which hyper's read buffer grows to 16 KiB per connection
/// (massif, 1,000 connections) instead of 8.
fn protocol_of(first: &[u8]) -> Protocol {
    if first.len() >= H2_PREFACE.len() && first[..H2_PREFACE.len()] == H2_PREFACE[..] {
        Protocol::Http2
    } else if !H2_PREFACE.starts_with(&first[..first.len().min(H2_PREFACE.len())]) {
        Protocol::Http1
    } else {
        Protocol::Undecided
    }
}

/// The protocol a TLS client agreed to through ALPN; without ALPN the
/// bytes decide.
fn negotiated<I>(stream: &tokio_rustls::server::TlsStream<I>) -> Protocol {
    match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        Some(_) => Protocol::Http1,
        None => Protocol::Undecided,
    }
}

impl Connection {
    /// Serves a connection. `upload_started`: the listener waited for the
    /// first request's body, which had not all arrived in time (see
    /// `first_request`); that request's upload deadline counts from then.
    async fn serve<I>(
        self,
        io: I,
        scheme: &'static str,
        protocol: Protocol,
        upload_started: Option<tokio::time::Instant>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            proxy,
            builders,
            watcher,
            metrics: _,
            peer,
            shutdown,
            idle,
            send_timeout,
        } = self;
        let forwarded_for = ForwardedFor::new(peer.ip());
        let io = TokioIo::new(SendTimeout::new(io, send_timeout));
        let ended = match protocol {
            Protocol::Http1 => {
                let upload_started = Cell::new(upload_started);
                let service = service_fn(move |mut request: hyper::Request<_>| {
                    if let Some(started) = upload_started.take() {
                        request.extensions_mut().insert(UploadStarted(started));
                    }
                    let proxy = proxy.clone();
                    let forwarded_for = forwarded_for.clone();
                    async move {
                        Ok::<_, Infallible>(proxy.handle(request, &forwarded_for, scheme).await)
                    }
                });
                watcher
                    .watch(builders.http1.serve_connection(io, service))
                    .await
                    .map_err(|e| e.to_string())
            }
            Protocol::Http2 | Protocol::Undecided => {
                // Held until the connection ends: the drain waits for it.
                let _watcher = watcher;
                let activity = Activity::default();
                let counted = activity.clone();
                let service = service_fn(move |request| {
                    let in_flight = counted.start();
                    let proxy = proxy.clone();
                    let forwarded_for = forwarded_for.clone();
                    async move {
                        let response = proxy.handle(request, &forwarded_for, scheme).await;
                        Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
                    }
                });
                if protocol == Protocol::Http2 {
                    let connection = builders.http2.serve_connection(io, service);
                    idle::serve(
                        connection,
                        |c: Pin<&mut _>| c.graceful_shutdown(),
                        &activity,
                        idle,
                        &shutdown,
                    )
                    .await
                    .map_err(|e| e.to_string())
                } else {
                    let connection = builders.auto.serve_connection(io, service).into_owned();
                    idle::serve(
                        connection,
                        |c: Pin<&mut _>| c.graceful_shutdown(),
                        &activity,
                        idle,
                        &shutdown,
                    )
                    .await
                    .map_err(|e| e.to_string())
                }
            }
        };
        if let Err(error) = ended {
            tracing::debug!(%peer, %error, "client connection ended with an error");
        }
    }
}

/// Counts a client connection in `understudy_connections_open` for as
/// long as it lives.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.connections.increment(1.0);
        Self(metrics.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.decrement(1.0);
    }
}

impl DataListener {
    /// Serves until `shutdown`, then drains open connections for at most
    /// the drain timeout.
    pub async fn run(self, shutdown: CancellationToken) {
        let listener = match TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "cannot register the data listener");
                return;
            }
        };
        let limit = self.limit.clone();
        let graceful = GracefulShutdown::new();
        let builders = Arc::new(self.limits.builders());
        tracing::debug!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "data listener started");
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.cancelled() => break,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of
                    // spinning on the error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                self.metrics.connections_rejected.increment(1);
                tracing::debug!(%peer, "connection limit reached, closing");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = Connection {
                proxy: self.proxy.clone(),
                builders: builders.clone(),
                watcher: graceful.watcher(),
                metrics: self.metrics.clone(),
                peer,
                shutdown: shutdown.clone(),
                idle: self.limits.header_read_timeout,
                send_timeout: self.limits.send_timeout,
            };
            match &self.tls {
                None => {
                    let limits = self.limits;
                    tokio::spawn(async move {
                        // Open from accept on, as before any byte arrives.
                        let _open = OpenConnection::new(&connection.metrics);
                        let first = first_request::read(
                            &stream,
                            limits.header_read_timeout,
                            limits.max_header_bytes,
                            connection.proxy.upload_limits(),
                        );
                        if let Some(first) = first.await {
                            let io = Replay::new(first.bytes, stream);
                            let protocol = first.protocol;
                            // Boxed: hyper's connection state is several
                            // KiB, and inline it would be part of every
                            // task from accept on, waiting or not.
                            Box::pin(connection.serve(io, "http", protocol, first.upload_started))
                                .await;
                        }
                        drop(permit);
                    });
                }
                Some(tls) => {
                    let acceptor = TlsAcceptor::from(tls.config.load_full());
                    let handshake_timeout = tls.handshake_timeout;
                    tokio::spawn(async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => {
                                let _open = OpenConnection::new(&connection.metrics);
                                let protocol = negotiated(&stream);
                                connection.serve(stream, "https", protocol, None).await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                connection.metrics.tls_handshake_failures.increment(1);
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                connection.metrics.tls_handshake_failures.increment(1);
                            }
                        }
                        drop(permit);
                    });
                }
            }
        }
        drop(listener);
        tracing::debug!("data listener stopped accepting; draining");
        tokio::select! {
            _ = graceful.shutdown() => tracing::debug!("client connections drained"),
            _ = tokio::time::sleep(self.drain_timeout) => {
                tracing::warn!(timeout = ?self.drain_timeout, "drain timeout reached; closing remaining connections");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_http1_from_http2() {
        assert_eq!(
            protocol_of(b"POST /v1/models/m:predict HTTP/1.1\r\n"),
            Protocol::Http1
        );
        assert_eq!(
            protocol_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Protocol::Http1
        );
        // Shares its first letter with the preface but not its second.
        assert_eq!(protocol_of(b"PUT"), Protocol::Http1);
        assert_eq!(protocol_of(H2_PREFACE), Protocol::Http2);
        let mut preface_and_frame = H2_PREFACE.to_vec();
        preface_and_frame.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(protocol_of(&preface_and_frame), Protocol::Http2);
    }

    #[test]
    fn a_prefix_of_the_preface_is_left_undecided() {
        assert_eq!(protocol_of(b""), Protocol::Undecided);
        assert_eq!(protocol_of(b"P"), Protocol::Undecided);
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n"), Protocol::Undecided);
    }
}
