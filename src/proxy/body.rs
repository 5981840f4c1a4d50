//! Bodies that stream through the proxy while keeping a capped copy.
//!
//! [`TeeBody`] passes every frame on as it arrives (nothing is held back
//! from the peer) and, when capturing, keeps the data frames until the cap;
//! the finished copy is handed over once, through a oneshot, when the
//! stream ends. Past the cap the copy is dropped at once and `Overflow` is
//! sent, so a 100 MB upload costs no more memory than a small one. A body
//! whose source errors sends `Broken`; one dropped before its end sends
//! nothing: the receiver sees the channel closed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Sleep;

use crate::budget::Reservation;

use crate::upstream::{BodyProgress, ProgressReporter, body_progress};

/// The copy of a body, once the stream has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Captured {
    Complete {
        body: Bytes,
        /// Trailers, when the body ended with them (gRPC status lives here).
        trailers: Option<http::HeaderMap>,
    },
    /// The body was larger than the cap; no copy was kept.
    Overflow,
    /// The body's source failed before its end (the peer broke off
    /// mid-body): the copy is incomplete and was dropped.
    Broken,
    /// The copy did not fit the shadow's byte budget and was dropped.
    OverBudget,
}

/// Collects data frames up to a cap.
struct Capture {
    /// A copy, never a slice: a chunk is a slice of its connection's whole
    /// read buffer (8 KiB or more), and a mirror keeps the copy until its
    /// comparison — 50 ms or more beside a slow candidate. A slice would pin
    /// that buffer for all that time and make the connection allocate a new
    /// one (massif, 512 mirrors in flight: ~16 KiB pinned per mirror, the
    /// request's and the response's). Copied as the chunks pass, so the
    /// usual one-chunk body costs one allocation of its own size.
    body: BytesMut,
    /// The body's declared length (capped), reserved at the first chunk so
    /// a body sent in many chunks still takes one allocation of its size,
    /// not up to twice that by doubling.
    expected: usize,
    trailers: Option<http::HeaderMap>,
    limit: usize,
    /// The mirror's share of the shadow's byte budget, when the copy is
    /// for a mirror, and how much of it this copy has taken.
    budget: Option<(Arc<Reservation>, usize)>,
    done: oneshot::Sender<Captured>,
}

impl Capture {
    /// Adds a chunk; returns `None` (after reporting why) once the body no
    /// longer fits the cap or the budget, or nobody waits for the copy.
    fn push(self, chunk: &Bytes) -> Option<Self> {
        let mut this = self;
        if this.done.is_closed() {
            // The mirror gave up (its other side broke or did not fit):
            // copying on would only hold bytes nobody reads.
            return None;
        }
        if this.body.len() + chunk.len() > this.limit {
            let _ = this.done.send(Captured::Overflow);
            return None;
        }
        if this.body.capacity() == 0 {
            this.body.reserve(this.expected.max(chunk.len()));
        } else {
            this.body.reserve(chunk.len());
        }
        if !this.account() {
            let _ = this.done.send(Captured::OverBudget);
            return None;
        }
        this.body.extend_from_slice(chunk);
        Some(this)
    }

    /// Takes budget for the buffer's capacity: what it really holds, not
    /// just its length. `false` when the budget cannot take it.
    fn account(&mut self) -> bool {
        let capacity = self.body.capacity().max(self.expected);
        match &mut self.budget {
            Some((reservation, taken)) if capacity > *taken => {
                if !reservation.grow(capacity - *taken) {
                    return false;
                }
                *taken = capacity;
                true
            }
            _ => true,
        }
    }

    fn finish(self) {
        let _ = self.done.send(Captured::Complete {
            body: self.body.freeze(),
            trailers: self.trailers,
        });
    }
}

/// Errors a forwarded body can end with, told apart so the proxy knows
/// whose fault a failed exchange was.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body grew past `listen.max_body_bytes`.
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The body's source sent nothing for too long (a stalled upload).
    #[error("body sent nothing for {timeout:?}")]
    Idle { timeout: Duration },
    /// The buffered part of a request body did not arrive within
    /// `listen.request_buffer_timeout` (an upload too slow as a whole).
    #[error("body not received within {timeout:?}")]
    Deadline { timeout: Duration },
    /// The body's own source broke off (for a request: the client).
    #[error("body stream broke off: {0}")]
    Source(#[source] BoxError),
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl BodyError {
    /// Finds a `BodyError` anywhere in an error's source chain.
    pub fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyError> {
        std::iter::successors(Some(error), |e| e.source()).find_map(|e| e.downcast_ref())
    }
}

/// A body that forwards `inner`, optionally captures a copy, and enforces
/// an optional size limit and an idle timeout.
pub struct TeeBody<B> {
    inner: B,
    capture: Option<Capture>,
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

impl<B: Body<Data = Bytes> + Unpin> TeeBody<B> {
    /// Forwards `inner` without capturing.
    pub fn passthrough(inner: B) -> Self {
        Self {
            inner,
            capture: None,
            seen: 0,
            limit: u64::MAX,
            progress: None,
            idle: None,
        }
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

    fn signal_end(&mut self) {
        if let Some(progress) = &mut self.progress {
            progress.end();
        }
    }

    /// Fails the body with [`BodyError::TooLarge`] once more than `limit`
    /// bytes went through.
    pub fn with_limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit.unwrap_or(u64::MAX);
        self
    }

    /// Forwards `inner` and captures up to `limit` bytes, delivered on the
    /// returned receiver when the body ends.
    pub fn capturing(inner: B, limit: usize) -> (Self, oneshot::Receiver<Captured>) {
        Self::capture(inner, limit, None)
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
        let (done, receiver) = oneshot::channel();
        let declared = inner.size_hint().exact().unwrap_or(0);
        let expected = usize::try_from(declared).unwrap_or(usize::MAX);
        let mut capture = Capture {
            body: BytesMut::new(),
            // Past the cap nothing is kept, so nothing is reserved either.
            expected: if expected > limit { 0 } else { expected },
            trailers: None,
            limit,
            budget: reservation.map(|r| (r, 0)),
            done,
        };
        let capture = if capture.account() {
            Some(capture)
        } else {
            let _ = capture.done.send(Captured::OverBudget);
            None
        };
        let mut body = Self {
            inner,
            capture,
            seen: 0,
            limit: u64::MAX,
            progress: None,
            idle: None,
        };
        // An empty body may never be polled; finish it now.
        if body.inner.is_end_stream() {
            body.finish();
        }
        (body, receiver)
    }

    fn finish(&mut self) {
        if let Some(capture) = self.capture.take() {
            capture.finish();
        }
    }
}

impl<B> Body for TeeBody<B>
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
                // The source went quiet: the copy is incomplete.
                this.capture = None;
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
                this.capture = None;
                this.signal_end();
                return Poll::Ready(Some(Err(BodyError::TooLarge { limit: this.limit })));
            }
        }
        match &frame {
            Some(Ok(frame)) => {
                // Take the capture only for a data frame: a trailers frame
                // must leave it in place to be finished.
                if let Some(data) = frame.data_ref()
                    && let Some(capture) = this.capture.take()
                {
                    this.capture = capture.push(data);
                }
                if let (Some(trailers), Some(capture)) = (frame.trailers_ref(), &mut this.capture) {
                    capture.trailers = Some(trailers.clone());
                }
                // Length-delimited bodies are not polled past their last
                // frame, so the end must be noticed here.
                if this.inner.is_end_stream() {
                    this.finish();
                    this.signal_end();
                }
            }
            None => {
                this.finish();
                this.signal_end();
            }
            // The copy is incomplete: drop it and say why, so a peer that
            // broke off is told apart from a body dropped unread.
            Some(Err(_)) => {
                if let Some(capture) = this.capture.take() {
                    let _ = capture.done.send(Captured::Broken);
                }
                this.signal_end();
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    fn complete(body: Bytes) -> Captured {
        Captured::Complete {
            body,
            trailers: None,
        }
    }

    /// A body of several data frames, as a chunked upload arrives.
    struct Chunks(std::collections::VecDeque<Bytes>);

    fn chunks(parts: &[&'static str]) -> Chunks {
        Chunks(
            parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
        )
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn concatenates_chunks_of_a_streamed_body() {
        let (body, copy) = TeeBody::capturing(chunks(&["{\"a\":", "[1,2]", "}"]), 64);
        let forwarded = body.collect().await.unwrap().to_bytes();
        assert_eq!(forwarded, Bytes::from_static(b"{\"a\":[1,2]}"));
        assert_eq!(copy.await.unwrap(), complete(forwarded));
    }

    #[tokio::test]
    async fn captures_a_small_body_and_forwards_it_unchanged() {
        let (body, copy) = TeeBody::capturing(Full::new(Bytes::from_static(b"{\"x\":1}")), 64);
        let forwarded = body.collect().await.unwrap().to_bytes();
        assert_eq!(forwarded, Bytes::from_static(b"{\"x\":1}"));
        assert_eq!(copy.await.unwrap(), complete(forwarded));
    }

    #[tokio::test]
    async fn a_single_chunk_is_copied_not_shared() {
        // As hyper hands it out: a small slice of a larger read buffer.
        let read_buffer = Bytes::from(vec![b'x'; 8192]);
        let frame = read_buffer.slice(0..40);
        let (body, copy) = TeeBody::capturing(Full::new(frame.clone()), 64);
        let forwarded = body.collect().await.unwrap().to_bytes();
        assert_eq!(forwarded.as_ptr(), frame.as_ptr(), "forwarded as it came");
        let Captured::Complete { body: captured, .. } = copy.await.unwrap() else {
            panic!("the copy is complete");
        };
        assert_eq!(captured, frame);
        // A copy of its own: holding it does not keep the 8 KiB buffer alive.
        assert!(!read_buffer.as_ptr_range().contains(&captured.as_ptr()));
    }

    #[tokio::test]
    async fn a_body_of_declared_length_is_copied_into_one_buffer_of_its_size() {
        // Ten chunks of 1000 bytes with their total declared up front.
        let source = Chunks((0..10).map(|_| Bytes::from(vec![b'x'; 1000])).collect());
        let declared = Declared(source, 10_000);
        let (body, copy) = TeeBody::capturing(declared, 1 << 20);
        body.collect().await.unwrap();
        let Captured::Complete { body: captured, .. } = copy.await.unwrap() else {
            panic!("the copy is complete");
        };
        assert_eq!(captured.len(), 10_000);
        // Converted back without a copy only when it owns exactly its bytes.
        let owned = BytesMut::from(captured);
        assert_eq!(
            owned.capacity(),
            10_000,
            "one allocation of the body's size"
        );
    }

    /// A body with an exact size hint, as hyper gives one with Content-Length.
    struct Declared<B>(B, u64);

    impl<B: Body<Data = Bytes> + Unpin> Body for Declared<B> {
        type Data = Bytes;
        type Error = B::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
            Pin::new(&mut self.0).poll_frame(cx)
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.1)
        }
    }

    #[tokio::test]
    async fn empty_body_completes_without_being_polled() {
        let (_body, copy) = TeeBody::capturing(Full::new(Bytes::new()), 64);
        assert_eq!(copy.await.unwrap(), complete(Bytes::new()));
    }

    #[tokio::test]
    async fn body_over_the_cap_reports_overflow_but_still_streams() {
        let data = Bytes::from(vec![7u8; 100]);
        let (body, copy) = TeeBody::capturing(Full::new(data.clone()), 99);
        assert_eq!(body.collect().await.unwrap().to_bytes(), data);
        assert_eq!(copy.await.unwrap(), Captured::Overflow);
    }

    /// Data frames, then trailers, as a gRPC response ends.
    struct WithTrailers(std::collections::VecDeque<Frame<Bytes>>);

    impl Body for WithTrailers {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    #[tokio::test]
    async fn trailers_complete_the_copy_and_are_kept() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames = [
            Frame::data(Bytes::from_static(b"\0\0\0\0\x01a")),
            Frame::trailers(trailers.clone()),
        ];
        let (body, copy) = TeeBody::capturing(WithTrailers(frames.into_iter().collect()), 64);
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(
            copy.await.unwrap(),
            Captured::Complete {
                body: Bytes::from_static(b"\0\0\0\0\x01a"),
                trailers: Some(trailers),
            }
        );
    }

    #[tokio::test]
    async fn body_over_the_limit_fails_with_too_large() {
        let body = TeeBody::passthrough(chunks(&["12345", "67890"])).with_limit(Some(7));
        let error = body.collect().await.unwrap_err();
        assert!(matches!(error, BodyError::TooLarge { limit: 7 }), "{error}");
    }

    /// A data frame, then the source fails, as when a backend closes the
    /// connection mid-body.
    struct BreaksOff(Option<Bytes>);

    impl Body for BreaksOff {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(match self.0.take() {
                Some(data) => Ok(Frame::data(data)),
                None => Err(std::io::ErrorKind::UnexpectedEof.into()),
            }))
        }
    }

    #[tokio::test]
    async fn body_whose_source_fails_reports_broken() {
        let (body, copy) = TeeBody::capturing(BreaksOff(Some(Bytes::from_static(b"{\"a\":"))), 64);
        let error = body.collect().await.unwrap_err();
        assert!(matches!(error, BodyError::Source(_)), "{error}");
        assert_eq!(copy.await.unwrap(), Captured::Broken);
    }

    #[tokio::test]
    async fn a_copy_past_the_budget_is_given_up_while_the_body_streams_on() {
        let budget = crate::budget::ByteBudget::new(6);
        let reservation = budget.reservation();
        let (body, copy) =
            TeeBody::capturing_within(chunks(&["abc", "def", "ghi"]), 64, reservation.clone());
        let forwarded = body.collect().await.unwrap().to_bytes();
        assert_eq!(&forwarded[..], b"abcdefghi");
        assert_eq!(copy.await.unwrap(), Captured::OverBudget);
        assert!(budget.used() <= 6, "{} bytes held", budget.used());
        drop(reservation);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_declared_length_is_reserved_up_front() {
        let budget = crate::budget::ByteBudget::new(100);
        let (_body, copy) = TeeBody::capturing_within(
            Declared(chunks(&["0123456789"]), 150),
            1000,
            budget.reservation(),
        );
        assert_eq!(
            copy.await.unwrap(),
            Captured::OverBudget,
            "150 declared bytes never fit a budget of 100"
        );
        let held = budget.reservation();
        let (body, copy) =
            TeeBody::capturing_within(Declared(chunks(&["0123456789"]), 10), 1000, held.clone());
        assert_eq!(held.held(), 10, "reserved before any byte arrived");
        body.collect().await.unwrap();
        assert_eq!(
            copy.await.unwrap(),
            complete(Bytes::from_static(b"0123456789"))
        );
    }

    #[tokio::test]
    async fn a_copy_within_the_budget_completes_and_holds_its_bytes() {
        let budget = crate::budget::ByteBudget::new(1000);
        let reservation = budget.reservation();
        let (body, copy) =
            TeeBody::capturing_within(chunks(&["abc", "def"]), 64, reservation.clone());
        body.collect().await.unwrap();
        assert_eq!(copy.await.unwrap(), complete(Bytes::from_static(b"abcdef")));
        assert!(budget.used() >= 6, "the copy's bytes stay reserved");
        drop(reservation);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn dropped_body_closes_the_channel() {
        let (body, copy) = TeeBody::capturing(chunks(&["a", "b"]), 64);
        drop(body);
        assert!(copy.await.is_err());
    }

    /// A body fed by a channel: pending until the sender sends or leaves.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
        }
    }

    const IDLE: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn a_source_quiet_for_the_idle_timeout_fails_the_body() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Bytes::from_static(b"{")).await.unwrap();
        let body = TeeBody::passthrough(Fed(rx)).with_idle_timeout(Some(IDLE));
        let started = tokio::time::Instant::now();
        let error = body.collect().await.unwrap_err();
        assert!(matches!(error, BodyError::Idle { .. }), "{error}");
        let waited = started.elapsed();
        assert!(
            (IDLE..IDLE + Duration::from_millis(50)).contains(&waited),
            "{waited:?}"
        );
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn each_frame_restarts_the_idle_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(IDLE * 3 / 4).await;
                tx.send(Bytes::from_static(b"x")).await.unwrap();
            }
        });
        let body = TeeBody::passthrough(Fed(rx)).with_idle_timeout(Some(IDLE));
        let collected = body.collect().await.expect("never quiet for the timeout");
        assert_eq!(collected.to_bytes(), "xxxxx");
    }

    #[tokio::test]
    async fn a_body_ready_at_every_poll_never_starts_a_timer() {
        let mut body = TeeBody::passthrough(chunks(&["a", "b"])).with_idle_timeout(Some(IDLE));
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
        assert!(body.idle.as_ref().is_some_and(|idle| idle.sleep.is_none()));
    }
}
