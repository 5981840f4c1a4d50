//! A backend's response body, which hands its pooled connection back the
//! moment it ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

use super::BoxError;
use super::h1pool::Lease;

/// The body of a response from [`super::Upstream`]. With the lean HTTP/1
/// pool it carries the connection it arrived on: once the last frame is
/// out the connection can take the next request, without a task spawned
/// to wait for that. A body dropped before its end closes the connection
/// (hyper cannot reuse it), as with any HTTP/1 client.
pub struct UpstreamBody<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    inner: Incoming,
    lease: Option<Lease<B>>,
    /// The pool's in-flight slot, held until the exchange is over.
    slot: Option<OwnedSemaphorePermit>,
}

impl<B> UpstreamBody<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(super) fn new(
        inner: Incoming,
        lease: Option<Lease<B>>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let mut body = Self { inner, lease, slot };
        // An empty body (204, Content-Length: 0, HEAD) may never be polled.
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
        self.slot = None;
    }
}

impl<B> Body for UpstreamBody<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            // Length-delimited bodies are not polled past their last frame.
            None => this.release(),
            Some(Ok(_)) if this.inner.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
            // A broken exchange leaves the connection unusable.
            Some(Err(_)) => {
                this.lease = None;
                this.slot = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for UpstreamBody<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn drop(&mut self) {
        // Ended but never polled past its end: still reusable.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
