//! A lean connection pool for plain-HTTP/1.1 backends.
//!
//! hyper-util's legacy `Client` is general: a pool shared across threads
//! and hosts (a mutex around a hashed map keyed by scheme and authority), a
//! connect that races the checkout, and a task spawned per request to hand
//! the connection back once it is ready. Every worker here talks to one
//! backend from one thread, so this pool is one short list of ready
//! `SendRequest`s: a checkout pops the most recently used, and the
//! response body puts its connection back the moment it ends
//! ([`super::body::UpstreamBody`]); a task is spawned only when the
//! connection is not ready yet at that moment. Measured: fewer CPU-µs per
//! proxied request than the legacy client (see benches/PERFORMANCE.md).
//!
//! Behaviour kept from the legacy client: connections come from the same
//! `HttpConnector` (connect timeout, `TCP_NODELAY`, resolver); a request
//! that a reused connection closed before sending is retried once on
//! another (it was never written, so it is not a second inference); at most
//! `pool_max_idle` idle connections; none used after the idle timeout.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Uri;
use hyper::body::Body;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tower::ServiceExt;

use super::BoxError;

/// Idle connections to one backend, most recently used last.
pub(crate) struct Http1Pool<B> {
    connector: HttpConnector,
    /// The backend's `http://host:port`, which the connector dials.
    target: Uri,
    builder: http1::Builder,
    idle: Mutex<VecDeque<Idle<B>>>,
    max_idle: usize,
    idle_timeout: Duration,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

/// Why no connection could be had.
pub(crate) enum ConnectFailure {
    /// The TCP connect failed or timed out.
    Connect(BoxError),
    /// The HTTP/1 handshake failed (no I/O in practice).
    Handshake(BoxError),
}

impl<B> Http1Pool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub fn new(
        connector: HttpConnector,
        target: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            connector,
            target,
            builder: http1::Builder::new(),
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// Caps each connection's read buffer (hyper's default lets it grow to
    /// about 400 KiB while a large answer arrives).
    pub fn set_max_read_buffer(&mut self, bytes: usize) {
        self.builder.max_buf_size(bytes.max(8192));
    }

    /// The most recently used idle connection that is ready for a request.
    /// Connections past the idle timeout are closed instead: the backend
    /// may be closing them at the same moment.
    pub fn checkout(&self) -> Option<SendRequest<B>> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop_back() {
            if now.duration_since(entry.since) >= self.idle_timeout {
                // The rest are older still.
                idle.clear();
                return None;
            }
            // Not ready means closed or closing: only ready ones are put.
            if entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Opens a new connection and spawns its driver on the current runtime.
    pub async fn connect(&self) -> Result<SendRequest<B>, ConnectFailure> {
        let io = self
            .connector
            .clone()
            .oneshot(self.target.clone())
            .await
            .map_err(|e| ConnectFailure::Connect(e.into()))?;
        let (sender, connection) = self
            .builder
            .handshake(io)
            .await
            .map_err(|e| ConnectFailure::Handshake(e.into()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Takes a connection back after its response ended: into the idle
    /// list when it is ready for the next request, else once it is. The
    /// request's in-flight slot is freed only then, so a request waiting
    /// for a slot finds the connection idle instead of opening another.
    pub fn put_back(
        self: Arc<Self>,
        mut sender: SendRequest<B>,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        if sender.is_ready() {
            self.insert(sender);
            drop(slot);
            return;
        }
        // Still finishing the exchange (say, the rest of a request body
        // the backend answered early): wait for it off the request's path.
        if sender.is_closed() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    self.insert(sender);
                }
                drop(slot);
            });
        }
    }

    fn insert(&self, sender: SendRequest<B>) {
        if self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The oldest are at the front: drop the expired ones now rather
        // than keep their sockets open until the next checkout.
        while idle
            .front()
            .is_some_and(|e| now.duration_since(e.since) >= self.idle_timeout)
        {
            idle.pop_front();
        }
        if idle.len() < self.max_idle {
            idle.push_back(Idle { sender, since: now });
        }
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

/// A connection lent out for one exchange; handed back by the response
/// body when it ends (see [`super::body::UpstreamBody`]).
pub(crate) struct Lease<B> {
    pub sender: SendRequest<B>,
    pub pool: Arc<Http1Pool<B>>,
    /// The pool's in-flight slot, when it has a limit.
    pub slot: Option<OwnedSemaphorePermit>,
}

impl<B> Lease<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub fn release(self) {
        self.pool.put_back(self.sender, self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    /// A backend that answers "ok" on keep-alive connections and counts
    /// the connections it accepted.
    async fn backend() -> (Uri, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (format!("http://{addr}").parse().unwrap(), accepted)
    }

    fn pool(target: Uri, max_idle: usize, idle_timeout: Duration) -> Arc<Http1Pool<Full<Bytes>>> {
        Arc::new(Http1Pool::new(
            HttpConnector::new(),
            target,
            max_idle,
            idle_timeout,
        ))
    }

    async fn exchange(pool: &Arc<Http1Pool<Full<Bytes>>>) {
        let mut sender = match pool.checkout() {
            Some(sender) => sender,
            None => pool.connect().await.ok().unwrap(),
        };
        let request = http::Request::builder()
            .uri("/")
            .header(http::header::HOST, "backend")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        response.into_body().collect().await.unwrap();
        pool.clone().put_back(sender, None);
    }

    /// Lets the connection tasks run (the put-back may wait for one).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_finished_connection_is_reused() {
        let (target, accepted) = backend().await;
        let pool = pool(target, 4, Duration::from_secs(50));
        exchange(&pool).await;
        settle().await;
        exchange(&pool).await;
        settle().await;
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn no_idle_connections_are_kept_with_max_idle_zero() {
        let (target, _) = backend().await;
        let pool = pool(target, 0, Duration::from_secs(50));
        exchange(&pool).await;
        settle().await;
        assert_eq!(pool.idle_count(), 0);
        assert!(pool.checkout().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_connection_is_not_checked_out() {
        let (target, _) = backend().await;
        let pool = pool(target, 4, Duration::from_secs(50));
        exchange(&pool).await;
        settle().await;
        assert_eq!(pool.idle_count(), 1);
        tokio::time::advance(Duration::from_secs(51)).await;
        assert!(pool.checkout().is_none());
        assert_eq!(pool.idle_count(), 0);
    }
}
