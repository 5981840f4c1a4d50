//! [`TeeBody`]: a body that streams on unchanged while a capped copy of it
//! is kept.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::{Capture, Captured, FrameClock};
use crate::budget::Reservation;

/// A body that forwards `inner` frame by frame and, when capturing, hands
/// a capped copy of it to a receiver when it ends. Errors pass through
/// unchanged.
pub struct TeeBody<B> {
    inner: B,
    capture: Option<Capture>,
    /// Notes each data frame's arrival; dropped (which hands its notes on)
    /// when the body ends.
    clock: Option<Box<FrameClock>>,
}

impl<B: Body<Data = Bytes> + Unpin> TeeBody<B> {
    /// Forwards `inner` without capturing.
    pub fn passthrough(inner: B) -> Self {
        Self {
            inner,
            capture: None,
            clock: None,
        }
    }

    /// Forwards `inner` and captures up to `limit` bytes, delivered on the
    /// returned receiver when the body ends.
    pub fn capturing(inner: B, limit: usize) -> (Self, oneshot::Receiver<Captured>) {
        Self::capture(inner, limit, None)
    }

    /// As [`TeeBody::capturing`] when `wanted`, else as
    /// [`TeeBody::passthrough`] with no receiver: a recording's copy, taken
    /// only for the requests the recorder sampled.
    pub fn capturing_if(
        inner: B,
        wanted: bool,
        limit: usize,
    ) -> (Self, Option<oneshot::Receiver<Captured>>) {
        if wanted {
            let (body, copy) = Self::capturing(inner, limit);
            (body, Some(copy))
        } else {
            (Self::passthrough(inner), None)
        }
    }

    /// As [`TeeBody::capturing`], for a mirror: the copy's bytes are taken
    /// from the shadow's byte budget through `reservation` — a declared
    /// length up front, else as the chunks arrive — and a copy that does
    /// not fit is given up as [`Captured::OverBudget`] (the body itself
    /// still streams on untouched).
    pub fn capturing_within(
        inner: B,
        limit: usize,
        reservation: Arc<Reservation>,
    ) -> (Self, oneshot::Receiver<Captured>) {
        Self::capture(inner, limit, Some(reservation))
    }

    fn capture(
        inner: B,
        limit: usize,
        reservation: Option<Arc<Reservation>>,
    ) -> (Self, oneshot::Receiver<Captured>) {
        let declared = inner.size_hint().exact().unwrap_or(0);
        let (capture, receiver) = Capture::start(declared, limit, reservation);
        let mut body = Self {
            inner,
            capture,
            clock: None,
        };
        // An empty body may never be polled; finish it now.
        if body.inner.is_end_stream() {
            body.finish();
        }
        (body, receiver)
    }

    /// Also notes when each data frame passes, on `clock`.
    pub fn timed(mut self, clock: FrameClock) -> Self {
        self.clock = Some(Box::new(clock));
        self
    }

    fn finish(&mut self) {
        if let Some(capture) = self.capture.take() {
            capture.finish();
        }
        self.clock = None;
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                // Take the capture only for a data frame: a trailers frame
                // must leave it in place to be finished.
                if let Some(data) = frame.data_ref() {
                    if let Some(clock) = &mut this.clock {
                        clock.observe(data);
                    }
                    if let Some(capture) = this.capture.take() {
                        this.capture = capture.push(data);
                    }
                }
                if let (Some(trailers), Some(capture)) = (frame.trailers_ref(), &mut this.capture) {
                    capture.trailers = Some(trailers.clone());
                }
                // Length-delimited bodies are not polled past their last
                // frame, so the end must be noticed here.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            None => this.finish(),
            // The copy is incomplete: drop it and say why, so a peer that
            // broke off is told apart from a body dropped unread.
            Some(Err(_)) => {
                if let Some(capture) = this.capture.take() {
                    capture.give_up(Captured::Broken);
                }
                this.clock = None;
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
