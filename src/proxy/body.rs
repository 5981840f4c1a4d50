//! The client's request body on its way to the serving backend, held to
//! the limits the listener sets: `listen.max_body_bytes` and
//! `listen.body_idle_timeout`.
//!
//! [`LimitedBody`] fails the body with a [`BodyError`] that says whose
//! fault it was, so a failed exchange caused by the client's own upload is
//! answered as the client's (`ProxyError`'s `From<&BodyError>`), never
//! counted against a backend. It also reports the body's progress to the
//! upstream client, so the backend's latency is timed from the end of the
//! upload. It never holds a frame back or copies one: the capped copy for
//! a mirror or a recording is `capture`'s job.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::upstream::{BodyProgress, ProgressReporter, body_progress};

pub use crate::box_error::BoxError;
pub use crate::error::BodyError;

/// A body that forwards `inner` and enforces an optional size limit and an
/// optional idle timeout, reporting its progress when asked to.
pub struct LimitedBody<B> {
    inner: B,
    /// Bytes forwarded so far, against `limit`.
    seen: u64,
    limit: u64,
    /// Counts polls, so the sender can tell a stalled peer (never polls)
    /// from a slow source (polled, but pending), and reports the end (or
    /// failure), so the head timeout of the request can start then: a slow
    /// upload is not the backend's latency.
    progress: Option<ProgressReporter>,
    /// Fails the body when its source sends nothing for this long.
    idle: Option<Idle>,
}

/// The idle timer, armed only while the source has nothing to give: a body
/// that is ready whenever it is polled (most request bodies arrive with
/// their head) never allocates a timer or touches the timer wheel.
struct Idle {
    timeout: Duration,
    /// Allocated at the first wait; later waits move its deadline.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` counts the current wait (a frame since disarms it).
    armed: bool,
}

impl Idle {
    /// The source has nothing now: `true` once it has had nothing for
    /// `timeout`, counted from the first poll that found it empty after its
    /// last frame (as nginx's `client_body_timeout`, between two reads: time
    /// the reader spent not asking is not the client's).
    fn waited_out(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if !self.armed {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl<B: Body<Data = Bytes> + Unpin> LimitedBody<B> {
    /// Forwards `inner` with no limit, no timeout and no progress reports.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            seen: 0,
            limit: u64::MAX,
            progress: None,
            idle: None,
        }
    }

    /// Fails the body with [`BodyError::TooLarge`] once more than `limit`
    /// bytes went through.
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit.unwrap_or(u64::MAX);
        self
    }

    /// Fails the body with [`BodyError::Idle`] when its source sends
    /// nothing for `timeout` while it is being read.
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle = timeout.map(|timeout| Idle {
            timeout,
            sleep: None,
            armed: false,
        });
        self
    }

    /// Reports the body's end and progress (see [`BodyProgress`]).
    pub fn with_progress(mut self) -> (Self, BodyProgress) {
        let (mut reporter, progress) = body_progress();
        if self.inner.is_end_stream() {
            reporter.end();
        }
        self.progress = Some(reporter);
        (self, progress)
    }

    fn signal_end(&mut self) {
        if let Some(progress) = &mut self.progress {
            progress.end();
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(progress) = &this.progress {
            progress.polled(polled.is_pending());
        }
        let frame = match polled {
            Poll::Ready(frame) => {
                if let Some(idle) = &mut this.idle {
                    idle.armed = false;
                }
                frame
            }
            Poll::Pending => {
                let timed_out = match &mut this.idle {
                    Some(idle) => idle.waited_out(cx).then_some(idle.timeout),
                    None => None,
                };
                let Some(timeout) = timed_out else {
                    return Poll::Pending;
                };
                this.signal_end();
                return Poll::Ready(Some(Err(BodyError::Idle { timeout })));
            }
        };
        let frame = frame.map(|f| f.map_err(|e| BodyError::Source(e.into())));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref))
            && let Some(data) = data
        {
            this.seen += data.len() as u64;
            if this.seen > this.limit {
                this.signal_end();
                return Poll::Ready(Some(Err(BodyError::TooLarge { limit: this.limit })));
            }
        }
        // Length-delimited bodies are not polled past their last frame, so
        // the end must be noticed with the last one.
        let ended = match &frame {
            Some(Ok(_)) => this.inner.is_end_stream(),
            None | Some(Err(_)) => true,
        };
        if ended {
            this.signal_end();
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

#[cfg(test)]
mod tests;
