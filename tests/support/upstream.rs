//! [`FakeUpstream`]: a controllable HTTP/1.1 + h2c server on `127.0.0.1`
//! that plays the stable or candidate model server in proxy tests, records
//! every request, and fails on demand.
//!
//! This file holds the public handle, its builder and the shared state; the
//! serving itself is in `server.rs`. Replies are chosen per request: the
//! one-shot queue first, then exact-path routes, then the default. This must
//! never bind anything but `127.0.0.1`.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::reply::Reply;
use super::server::accept_loop;

/// One request as the fake upstream saw it (body complete, or whatever
/// arrived before the client aborted it).
#[derive(Clone, Debug)]
pub struct Received {
    /// Request method.
    pub method: Method,
    /// Path plus `?query` if any, e.g. `/v2/models/iris/infer?x=1`.
    pub path_and_query: String,
    /// `HTTP/1.1` or `HTTP/2.0` (h2c).
    pub version: Version,
    /// Request headers as received.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
}

impl Received {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or_default()
    }

    /// A header value as a string, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Reply selection: one-shot queue first, then exact-path routes, then default.
struct Behaviour {
    default: Reply,
    routes: HashMap<String, Reply>,
    queue: VecDeque<Reply>,
}

pub(super) struct Shared {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    /// Number of recorded requests; a watch so waiters need no polling.
    count: watch::Sender<usize>,
    pub(super) open: AtomicUsize,
    pub(super) accepted: AtomicUsize,
    pub(super) shutdown: CancellationToken,
}

impl Shared {
    pub(super) fn pick(&self, path: &str) -> Reply {
        let mut behaviour = self.behaviour.lock().unwrap();
        if let Some(reply) = behaviour.queue.pop_front() {
            return reply;
        }
        behaviour
            .routes
            .get(path)
            .unwrap_or(&behaviour.default)
            .clone()
    }

    pub(super) fn record(&self, request: Received) {
        let mut received = self.received.lock().unwrap();
        received.push(request);
        self.count.send_replace(received.len());
    }
}

/// Configures a [`FakeUpstream`]; see [`FakeUpstream::builder`].
#[derive(Debug)]
pub struct FakeUpstreamBuilder {
    default: Reply,
    routes: HashMap<String, Reply>,
    port: u16,
}

impl FakeUpstreamBuilder {
    /// Reply for requests matching no route (initially `200` empty).
    pub fn respond(mut self, reply: Reply) -> Self {
        self.default = reply;
        self
    }

    /// Reply for requests whose path (without query) is exactly `path`.
    pub fn route(mut self, path: &str, reply: Reply) -> Self {
        self.routes.insert(path.to_owned(), reply);
        self
    }

    /// Listen on `127.0.0.1:port` instead of a free port (e.g. to bring an
    /// upstream back on the address a previous one used).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Bind and start serving. Panics if the port cannot be bound.
    pub async fn start(self) -> FakeUpstream {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, self.port))
            .await
            .expect("bind fake upstream on 127.0.0.1");
        let addr = listener.local_addr().expect("fake upstream local addr");
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Behaviour {
                default: self.default,
                routes: self.routes,
                queue: VecDeque::new(),
            }),
            received: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        FakeUpstream {
            addr,
            shared,
            task: Mutex::new(Some(task)),
        }
    }
}

/// A running fake upstream. Dropping it stops it (without waiting).
///
/// ```ignore
/// let up = FakeUpstream::builder()
///     .respond(Reply::json(200, r#"{"predictions":[1,2]}"#))
///     .route("/slow", Reply::json(200, "{}").delay(Duration::from_secs(3)))
///     .start()
///     .await;
/// let (status, _, body) = send(&http_client(), Method::POST, &up.url(), &[], "hi").await;
/// assert!(up.wait_for_requests(1, Duration::from_secs(1)).await);
/// assert_eq!(up.received().await[0].body, "hi");
/// up.set_default(Reply::reset()); // start failing from now on
/// up.shutdown().await;
/// ```
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl FakeUpstream {
    /// A builder whose default reply is `200` with an empty body.
    pub fn builder() -> FakeUpstreamBuilder {
        FakeUpstreamBuilder {
            default: Reply::empty(200),
            routes: HashMap::new(),
            port: 0,
        }
    }

    /// Shorthand for `builder().respond(reply).start()`.
    pub async fn start(reply: Reply) -> Self {
        Self::builder().respond(reply).start().await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every recorded request, in arrival order.
    pub async fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Number of recorded requests.
    pub fn request_count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Wait until at least `n` requests were recorded; false on timeout.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let mut count = self.shared.count.subscribe();
        tokio::time::timeout(timeout, count.wait_for(|&c| c >= n))
            .await
            .is_ok()
    }

    /// TCP connections currently open (for connection-leak checks).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// TCP connections accepted since start (for pooling/reuse checks).
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Poll until at most `n` connections are open; false on timeout.
    /// Closing is asynchronous, so leak checks should use this.
    pub async fn wait_for_open_connections_at_most(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.open_connections() > n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Replace the default reply at run time (e.g. to make it flap).
    pub fn set_default(&self, reply: Reply) {
        self.shared.behaviour.lock().unwrap().default = reply;
    }

    /// Add or replace the reply for an exact path at run time.
    pub fn set_route(&self, path: &str, reply: Reply) {
        self.shared
            .behaviour
            .lock()
            .unwrap()
            .routes
            .insert(path.to_owned(), reply);
    }

    /// Queue a one-shot reply, used (FIFO) by the next request on any path
    /// before routes and the default; e.g. "fail once, then succeed".
    pub fn enqueue(&self, reply: Reply) {
        self.shared.behaviour.lock().unwrap().queue.push_back(reply);
    }

    /// Stop: close the listener, drop every connection and end hanging
    /// replies, then wait for all of it. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
