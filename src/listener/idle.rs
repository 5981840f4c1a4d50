//! Closing client connections that sit idle, for the connections hyper has
//! no idle timeout for: HTTP/2 (h2c and ALPN `h2`) and those the auto
//! builder serves.
//!
//! HTTP/1.1 connections are closed by hyper's `header_read_timeout` while
//! they wait for a request head. An HTTP/2 connection waits for frames
//! instead, and one that opens and then says nothing would hold its
//! `listen.max_connections` slot forever. Here each such connection counts
//! its requests in flight (from the service call until the response body
//! is dropped); once none has been in flight for the idle timeout, the
//! connection is shut down gracefully (GOAWAY, so a request the client
//! is just sending is refused cleanly rather than cut off), and closed
//! outright if the client does not finish that within [`GOAWAY_GRACE`].
//! A busy connection is never touched. This must never delay a request:
//! its cost is two atomic operations and a reference count per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a connection asked to go away may take to finish before it is
/// closed anyway: the GOAWAY handshake waits for one ping round trip, which
/// a client that has gone silent never answers.
pub const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// One connection's requests in flight.
#[derive(Clone, Default)]
pub struct Activity(Arc<Counts>);

#[derive(Default)]
struct Counts {
    in_flight: AtomicUsize,
    /// Requests started so far: tells a quiet spell from a busy one that
    /// happens to be between requests.
    started: AtomicU64,
    /// Woken when the last request in flight ends.
    quiet: Notify,
}

/// Held by a request from the service call until its response body is
/// dropped.
pub struct InFlight(Arc<Counts>);

impl Activity {
    /// Counts a request as in flight until the returned guard drops.
    pub fn start(&self) -> InFlight {
        self.0.started.fetch_add(1, Ordering::Relaxed);
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.0.clone())
    }

    /// Resolves once no request has been in flight or started for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            while self.0.in_flight.load(Ordering::Acquire) > 0 {
                // `notify_one` keeps a permit when nobody waits yet, so an
                // end between the load and this wait is not missed.
                self.0.quiet.notified().await;
            }
            let started = self.0.started.load(Ordering::Relaxed);
            tokio::time::sleep(idle).await;
            if self.0.in_flight.load(Ordering::Acquire) == 0
                && self.0.started.load(Ordering::Relaxed) == started
            {
                return;
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Acquire)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.quiet.notify_one();
        }
    }
}

/// A response body that keeps its request counted as in flight.
pub struct Tracked<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Drives `connection` to its end. It is shut down gracefully (`close`)
/// on `shutdown`, or once it has been idle for `idle`; an idle one that has
/// not finished [`GOAWAY_GRACE`] later, with still nothing in flight, is
/// dropped (closing the socket).
pub async fn serve<C, E>(
    connection: C,
    close: impl Fn(Pin<&mut C>),
    activity: &Activity,
    idle: Duration,
    shutdown: &CancellationToken,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => return ended,
        _ = shutdown.cancelled() => {
            // Draining: requests in flight finish; the listener's drain
            // timeout bounds how long.
            close(connection.as_mut());
            return connection.await;
        }
        _ = activity.idle_for(idle) => {}
    }
    tracing::debug!(?idle, "closing an idle client connection");
    close(connection.as_mut());
    loop {
        tokio::select! {
            ended = connection.as_mut() => return ended,
            _ = tokio::time::sleep(GOAWAY_GRACE) => {
                if activity.in_flight() == 0 {
                    return Ok(());
                }
            }
        }
    }
}
