//! The data-plane accept loop: HTTP/1.1 and HTTP/2 (prior knowledge) on one
//! port, a connection limit, and draining on shutdown.
//!
//! Shaped like mini-redis' server: a semaphore permit per connection bounds
//! how many are open; shutdown stops accepting first, then lets in-flight
//! requests finish within the grace period. It must never block the accept
//! loop on a slow client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
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

use crate::proxy::Proxy;
use crate::proxy::headers::ForwardedFor;
use crate::telemetry::Metrics;

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

/// hyper's smallest allowed read buffer.
const MIN_BUF_SIZE: usize = 8192;

/// Per-connection protection against slow or oversized clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
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
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    metrics: Arc<Metrics>,
    peer: SocketAddr,
}

impl Connection {
    async fn serve<I>(self, io: I, scheme: &'static str)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            proxy,
            builder,
            watcher,
            metrics,
            peer,
        } = self;
        let forwarded_for = ForwardedFor::new(peer.ip());
        let service = service_fn(move |request| {
            let proxy = proxy.clone();
            let forwarded_for = forwarded_for.clone();
            async move { Ok::<_, Infallible>(proxy.handle(request, &forwarded_for, scheme).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        metrics.connections.increment(1.0);
        if let Err(error) = watcher.watch(connection).await {
            tracing::debug!(%peer, %error, "client connection ended with an error");
        }
        metrics.connections.decrement(1.0);
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
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            // hyper-util's auto builder bounds the head through the read
            // buffer: a head that does not fit is answered 431.
            .max_buf_size(self.limits.max_header_bytes.max(MIN_BUF_SIZE));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.limits.max_header_bytes).unwrap_or(u32::MAX));
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
                builder: builder.clone(),
                watcher: graceful.watcher(),
                metrics: self.metrics.clone(),
                peer,
            };
            match &self.tls {
                None => {
                    tokio::spawn(async move {
                        connection.serve(stream, "http").await;
                        drop(permit);
                    });
                }
                Some(tls) => {
                    let acceptor = TlsAcceptor::from(tls.config.load_full());
                    let handshake_timeout = tls.handshake_timeout;
                    tokio::spawn(async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => connection.serve(stream, "https").await,
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

/// Binds `count` listening sockets on one address with `SO_REUSEPORT`, so
/// each data-plane worker accepts on its own queue and the kernel spreads
/// connections between them (nginx's `reuseport`). With port 0 the first
/// socket picks the port and the others join it.
pub fn bind_shared(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = reuseport_listener(addr)?;
    let actual = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count.max(1) {
        listeners.push(reuseport_listener(actual)?);
    }
    Ok(listeners)
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(named)?;
    socket.set_reuse_address(true).map_err(named)?;
    socket.set_reuse_port(true).map_err(named)?;
    socket.set_nonblocking(true).map_err(named)?;
    socket.bind(&addr.into()).map_err(named)?;
    socket.listen(LISTEN_BACKLOG).map_err(named)?;
    Ok(socket.into())
}

/// Pending connections per worker socket, as nginx's default `backlog` on
/// Linux (511) rounded up.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
