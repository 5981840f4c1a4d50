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

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;
use crate::telemetry::Metrics;

/// Accepts client connections and serves them with the proxy.
pub struct DataListener {
    pub listener: TcpListener,
    pub proxy: Proxy,
    pub max_connections: usize,
    pub drain_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

impl DataListener {
    /// Serves until `shutdown`, then drains open connections for at most
    /// the drain timeout.
    pub async fn run(self, shutdown: CancellationToken) {
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new());
        builder.http2().timer(TokioTimer::new());
        tracing::info!(addr = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "data listener started");
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
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
            let proxy = self.proxy.clone();
            let service = service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(request, peer, "http").await) }
            });
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                metrics.connections.increment(1.0);
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "client connection ended with an error");
                }
                metrics.connections.decrement(1.0);
                drop(permit);
            });
        }
        drop(self.listener);
        tracing::info!("data listener stopped accepting; draining");
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("all client connections drained"),
            _ = tokio::time::sleep(self.drain_timeout) => {
                tracing::warn!(timeout = ?self.drain_timeout, "drain timeout reached; closing remaining connections");
            }
        }
    }
}

/// Binds a TCP listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
