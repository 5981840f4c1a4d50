//! Request buffering (nginx's `proxy_request_buffering`): a request body is
//! read up to `listen.request_buffer_bytes` before the request takes one of
//! the serving backend's connection slots, so a client that uploads slowly
//! holds only its own connection, never a slot other clients need.
//!
//! The buffered part must arrive within `listen.request_buffer_timeout`
//! (a whole-body deadline: an upload trickled a byte every few seconds never
//! trips the idle timeout, but does trip this one). A body larger than the
//! buffer streams on from where the buffer ends. It must never reorder or
//! drop a frame, never copy one that was there when it was read, and never
//! arm a timer for such a body (the common case of a small request); only
//! the frames of a client that made it wait are copied (see `compact`).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::body::BodyError;

/// A request body with its first frames already read.
pub struct Prebuffered<B> {
    /// Frames read ahead, oldest last (popped from the end).
    frames: Vec<Frame<Bytes>>,
    /// Data bytes in `frames`.
    buffered: u64,
    /// The rest of the body; `None` once it has ended.
    rest: Option<B>,
}

/// Reads `body` until it ends or `limit` bytes have arrived, within
/// `timeout` of `started` (the call, or earlier when the listener already
/// waited for part of the upload). A failed body fails here, with its own
/// error.
pub async fn prebuffer<B>(
    mut body: B,
    limit: usize,
    timeout: Duration,
    started: Instant,
) -> Result<Prebuffered<B>, BodyError>
where
    B: Body<Data = Bytes, Error = BodyError> + Unpin,
{
    let mut deadline: Option<Pin<Box<Sleep>>> = None;
    let mut frames = Vec::new();
    let mut buffered = 0u64;
    let mut ended = false;
    while !body.is_end_stream() && buffered < limit as u64 {
        let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Ok(frame)),
            Poll::Pending => {
                // Only a client that makes us wait costs a timer.
                let sleep = deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(BodyError::Deadline { timeout })),
                    Poll::Pending => Poll::Pending,
                }
            }
        })
        .await?;
        match next {
            None => {
                ended = true;
                break;
            }
            Some(Err(error)) => return Err(error),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    buffered += data.len() as u64;
                }
                frames.push(match deadline {
                    // A frame that arrived after a wait is a trickle: a few
                    // bytes cut from the connection's read buffer, which the
                    // slice would keep alive (8 KiB each) while hyper reads
                    // on into a new one. A copy holds only its bytes.
                    Some(_) => compact(frame),
                    None => frame,
                });
            }
        }
    }
    frames.reverse();
    let ended = ended || body.is_end_stream();
    Ok(Prebuffered {
        frames,
        buffered,
        rest: (!ended).then_some(body),
    })
}

/// `frame` with its data in an allocation of its own size.
fn compact(frame: Frame<Bytes>) -> Frame<Bytes> {
    match frame.into_data() {
        Ok(data) => Frame::data(Bytes::copy_from_slice(&data)),
        Err(frame) => frame,
    }
}

impl<B> Prebuffered<B> {
    /// Whether the whole body is in memory (the backend then gets it at once).
    pub fn is_complete(&self) -> bool {
        self.rest.is_none()
    }
}

impl<B> Body for Prebuffered<B>
where
    B: Body<Data = Bytes, Error = BodyError> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(frame) = self.frames.pop() {
            if let Some(data) = frame.data_ref() {
                self.buffered -= data.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let next = Pin::new(rest).poll_frame(cx);
        if let Poll::Ready(None) = next {
            self.rest = None;
        }
        next
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or(SizeHint::with_exact(0), Body::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + self.buffered);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + self.buffered);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A body fed by a channel: pending until the sender sends or leaves.
    struct Fed(mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = BodyError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
        }
    }

    fn fed(chunks: &[&'static str]) -> Fed {
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        for chunk in chunks {
            tx.try_send(Bytes::from_static(chunk.as_bytes())).unwrap();
        }
        Fed(rx)
    }

    #[tokio::test]
    async fn a_body_within_the_buffer_is_read_whole_before_it_is_sent() {
        let body = prebuffer(
            fed(&["ab", "cd"]),
            64,
            Duration::from_secs(1),
            Instant::now(),
        )
        .await
        .unwrap();
        assert!(body.is_complete());
        assert_eq!(body.size_hint().exact(), Some(4));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abcd");
    }

    #[tokio::test]
    async fn a_larger_body_streams_on_after_the_buffer() {
        let (tx, rx) = mpsc::channel(4);
        for chunk in ["abc", "def", "ghi"] {
            tx.send(Bytes::from_static(chunk.as_bytes())).await.unwrap();
        }
        let body = prebuffer(Fed(rx), 5, Duration::from_secs(1), Instant::now())
            .await
            .unwrap();
        assert!(!body.is_complete(), "stopped at the buffer's size");
        tx.send(Bytes::from_static(b"jkl")).await.unwrap();
        drop(tx);
        assert_eq!(
            &body.collect().await.unwrap().to_bytes()[..],
            b"abcdefghijkl"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_slower_than_the_deadline_fails_even_if_never_idle_long() {
        let (tx, rx) = mpsc::channel(64);
        // A byte every second: no pause is long, the whole is too slow.
        tokio::spawn(async move {
            for _ in 0..60 {
                if tx.send(Bytes::from_static(b"x")).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let started = Instant::now();
        let error = prebuffer(Fed(rx), 1024, Duration::from_secs(10), Instant::now())
            .await
            .err()
            .expect("the deadline passes first");
        assert!(matches!(error, BodyError::Deadline { .. }), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_failing_body_fails_with_its_own_error() {
        struct Broken;
        impl Body for Broken {
            type Data = Bytes;
            type Error = BodyError;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
                Poll::Ready(Some(Err(BodyError::TooLarge { limit: 1 })))
            }
        }
        let error = prebuffer(Broken, 64, Duration::from_secs(1), Instant::now())
            .await
            .err()
            .expect("fails");
        assert!(matches!(error, BodyError::TooLarge { limit: 1 }));
    }
}
